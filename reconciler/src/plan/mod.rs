//! The pure planner: JobSet spec + the Jobs it owns + whether its Service exists → actions, a new status and
//! the events to emit after the status write. It follows upstream's reconcile step by step
//! (`reference/jobset-upstream.md` §3.2), so the order of checks and early returns is API.

pub mod children;
pub mod conditions;
pub mod failure;
pub mod jobs;
pub mod order;
pub mod success;
pub mod suspend;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::jiff::Timestamp;
use muster_api::jobset::FailurePolicyAction;
use muster_api::keys::*;
use muster_api::{JobSet, JobSetStatus};

use self::children::Family;
use self::conditions::Wanted;
use self::jobs::Buckets;

/// Alpha upstream feature gates, off by default, set in the controller configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates {
    /// `RestartJob` and `RestartJobAndIgnoreMaxRestarts` actions, per-Job restart counters.
    pub restart_job: bool,
    /// Mutable `parallelism`/`completions` on Indexed ReplicatedJobs.
    pub elastic_jobset: bool,
}

/// What the planner sees.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub jobset: &'a JobSet,
    /// Jobs whose controller owner reference carries this JobSet's UID; foreign Jobs never get here.
    pub jobs: &'a [Job],
    /// Whether an object with the headless Service's name exists (an existing one is never adopted or patched).
    pub service_exists: bool,
    pub now: Timestamp,
    pub gates: FeatureGates,
    /// For a gang-admitted JobSet: the pods per Job that admission has placed (its Gang's slots, by ReplicatedJob
    /// and Job index). `None` when admission does not manage it, or its Gang is not known yet.
    pub placed: Option<&'a PlacedPods>,
}

/// Pods with a slot, per (ReplicatedJob name, Job index).
pub type PlacedPods = std::collections::BTreeMap<(String, i32), i32>;

/// A change to make in the cluster, in the order the plan lists them.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Delete with foreground propagation, so a Job lingers until its pods are gone (that is what makes
    /// `Recreate` wait for the old pods).
    DeleteJobs(Vec<String>),
    CreateService(Box<Service>),
    /// Create each claim; one that already exists is fine.
    CreateClaims(Vec<PersistentVolumeClaim>),
    /// `ElasticJobSet`: patch an active Job's parallelism and completions to the template's.
    ScaleJob {
        name: String,
        parallelism: i32,
        completions: i32,
    },
    CreateJobs(Vec<Job>),
    SuspendJobs(Vec<String>),
    /// Update the Job to this object (unsuspended, template merged). With `clear_start_time`, clear
    /// `status.startTime` first: Kubernetes only lets the pod template of a suspended Job change while the Job has
    /// not started. One action, because the update must carry the resourceVersion that status write returns.
    ResumeJob {
        job: Box<Job>,
        clear_start_time: bool,
    },
    /// `ttlSecondsAfterFinished` expired: delete the JobSet with foreground propagation.
    DeleteJobSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// How the JobSet finished in this pass, for `jobset_completed_total` / `jobset_failed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Completed,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The status to write when `status_changed`.
    pub status: JobSetStatus,
    pub status_changed: bool,
    /// Emitted only after the status write succeeds.
    pub events: Vec<Event>,
    pub requeue_after: Option<Duration>,
    pub finished: Option<Finish>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The webhook normally prevents this; a JobSet that bypassed it must not be restarted per Job.
    #[error("failure policy action {0} is not allowed when the RestartJob feature gate is disabled")]
    RestartJobGateDisabled(&'static str),
}

impl PlanError {
    /// Stable, low-cardinality label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::RestartJobGateDisabled(_) => "restart_job_gate_disabled",
        }
    }
}

struct Planner<'a> {
    input: Input<'a>,
    family: Family<'a>,
    plan: Plan,
}

impl Planner<'_> {
    fn set(&mut self, wanted: &Wanted) {
        if let Some(event) = conditions::set(&mut self.plan.status, wanted, self.input.now) {
            self.plan.status_changed = true;
            self.plan.events.push(event);
        }
    }

    fn event(&mut self, type_: EventType, reason: &str, message: String) {
        self.plan.events.push(Event { type_, reason: reason.into(), message });
    }

    fn fail(&mut self, reason: &str, message: &str) {
        self.set(&Wanted::failed(reason, message));
        self.set(&Wanted::not_restarting(REASON_JOBSET_FAILED, MESSAGE_JOBSET_FAILED));
        self.plan.status.terminal_state = Some(TERMINAL_STATE_FAILED.into());
        self.plan.status_changed = true;
        self.plan.finished = Some(Finish::Failed);
    }
}

/// Plans one reconcile of a JobSet.
pub fn plan(input: Input<'_>) -> Result<Plan, PlanError> {
    let jobset = input.jobset;
    let old_status = jobset.status.clone().unwrap_or_default();
    let mut p =
        Planner { input, family: Family::new(jobset), plan: Plan { status: old_status.clone(), ..Plan::default() } };
    // Children of a JobSet being deleted must not be recreated; another controller's JobSet is not ours at
    // all, not even its status (MultiKueue writes it).
    if jobset.metadata.deletion_timestamp.is_some() || !jobset.managed_by_us() {
        return Ok(Plan::default());
    }

    let buckets = jobs::bucket(input.jobs, &old_status, input.gates.restart_job);
    let statuses = jobs::replicated_job_statuses(jobset, &buckets);
    if !jobs::same_statuses(&statuses, &old_status.replicated_jobs_status) {
        p.plan.status.replicated_jobs_status = statuses;
        p.plan.status_changed = true;
    }

    if let Some(finished) = conditions::find_true(&old_status, CONDITION_COMPLETED)
        .or_else(|| conditions::find_true(&old_status, CONDITION_FAILED))
    {
        let active: Vec<String> = buckets.active.iter().filter_map(|j| live_name(j)).collect();
        if !active.is_empty() {
            p.plan.actions.push(Action::DeleteJobs(active));
        }
        if let Some(ttl) = jobset.spec.ttl_seconds_after_finished {
            let finished_at = finished.last_transition_time.0;
            let elapsed = input.now.duration_since(finished_at).as_secs();
            let remaining = i64::from(ttl.max(0)) - elapsed.max(0);
            if remaining <= 0 {
                p.plan.actions.push(Action::DeleteJobSet);
            } else {
                p.plan.requeue_after = Some(Duration::from_secs(remaining.unsigned_abs()));
            }
        }
        return Ok(p.plan);
    }

    let previous: Vec<String> = buckets.previous.iter().filter_map(|j| live_name(j)).collect();
    if !previous.is_empty() {
        p.plan.actions.push(Action::DeleteJobs(previous));
    }

    let statuses = p.plan.status.replicated_jobs_status.clone();
    let replicas: i32 = jobset.spec.replicated_jobs.iter().map(|r| r.replicas()).sum();
    let ready: i32 = statuses.iter().map(|s| s.ready + s.succeeded).sum();
    if !jobset.suspended() && ready == replicas {
        p.set(&Wanted::not_restarting(REASON_JOBS_READY, MESSAGE_ALL_JOBS_READY));
    }

    if !buckets.failed.is_empty() {
        apply_failure_policy(&mut p, &buckets)?;
        return Ok(p.plan);
    }

    if !buckets.successful.is_empty() && success::satisfied(jobset, &buckets.successful) {
        p.set(&Wanted::completed());
        p.set(&Wanted::not_restarting(REASON_JOBSET_COMPLETED, MESSAGE_JOBSET_COMPLETED));
        p.plan.status.terminal_state = Some(TERMINAL_STATE_COMPLETED.into());
        p.plan.status_changed = true;
        p.plan.finished = Some(Finish::Completed);
        return Ok(p.plan);
    }

    if p.family.dns_hostnames() && !input.service_exists {
        p.plan.actions.push(Action::CreateService(Box::new(children::headless_service(&p.family))));
    }
    let claims = children::claims(&p.family);
    if !claims.is_empty() {
        p.plan.actions.push(Action::CreateClaims(claims));
    }
    if input.gates.elastic_jobset {
        scale_active_jobs(&mut p, &buckets);
    }
    create_missing_jobs(&mut p, &buckets, &statuses);
    if jobset.suspended() {
        suspend_jobs(&mut p, &buckets);
    } else {
        resume_jobs(&mut p, &buckets, &statuses);
    }
    Ok(p.plan)
}

/// The Job's name unless it is already being deleted.
fn live_name(job: &Job) -> Option<String> {
    job.metadata.deletion_timestamp.is_none().then(|| job.metadata.name.clone()).flatten()
}

fn apply_failure_policy(p: &mut Planner<'_>, buckets: &Buckets<'_>) -> Result<(), PlanError> {
    let jobset = p.input.jobset;
    let Some(decision) = failure::decide(jobset, &buckets.failed) else { return Ok(()) };
    let Some(policy) = &jobset.spec.failure_policy else {
        p.fail(REASON_FAILED_JOBS, &message_failed_jobs(&decision.job));
        return Ok(());
    };
    let status = &p.plan.status;
    let mut budget_used = status.restarts_count_towards_max.unwrap_or(0);
    if p.input.gates.restart_job {
        budget_used +=
            status.replicated_jobs_status.iter().flat_map(|s| &s.job_restarts_count_towards_max).sum::<i32>();
    }
    let out_of_budget = budget_used >= policy.max_restarts();
    let action = decision.action;
    let message = message_failure_policy_action(action.as_str(), &decision.job);
    match action {
        FailurePolicyAction::FailJobSet => p.fail(REASON_FAIL_JOBSET_ACTION, &message),
        FailurePolicyAction::RestartJobSet | FailurePolicyAction::RestartJob if out_of_budget => {
            p.fail(REASON_REACHED_MAX_RESTARTS, &message_reached_max_restarts(&decision.job));
        }
        FailurePolicyAction::RestartJobSet | FailurePolicyAction::RestartJobSetAndIgnoreMaxRestarts => {
            let status = &mut p.plan.status;
            status.restarts += 1;
            if action == FailurePolicyAction::RestartJobSet {
                status.restarts_count_towards_max = Some(status.restarts_count_towards_max.unwrap_or(0) + 1);
            }
            p.plan.status_changed = true;
            p.set(&Wanted::restarting(&failure::restarting_reason(&decision), &message));
            if let Some(reason) = failure::restart_event_reason(action) {
                p.event(EventType::Warning, reason, message);
            }
        }
        FailurePolicyAction::RestartJob | FailurePolicyAction::RestartJobAndIgnoreMaxRestarts => {
            if !p.input.gates.restart_job {
                return Err(PlanError::RestartJobGateDisabled(action.as_str()));
            }
            restart_one_job(p, &decision.job, action, buckets);
            if let Some(reason) = failure::restart_event_reason(action) {
                p.event(EventType::Warning, reason, message);
            }
        }
    }
    Ok(())
}

/// `RestartJob*`: bump the failed Job's per-index counters so only that Job becomes previous and is recreated.
fn restart_one_job(p: &mut Planner<'_>, job_name: &str, action: FailurePolicyAction, buckets: &Buckets<'_>) {
    let Some(job) = buckets.failed.iter().find(|j| j.metadata.name.as_deref() == Some(job_name)) else { return };
    let (Some(rjob), Some(index)) = (
        jobs::label(job, REPLICATED_JOB_NAME).map(str::to_string),
        jobs::label(job, JOB_INDEX).and_then(|i| i.parse::<usize>().ok()),
    ) else {
        return;
    };
    let replicas = p.input.jobset.spec.replicated_jobs.iter().find(|r| r.name == rjob).map(|r| r.replicas());
    let len = usize::try_from(replicas.unwrap_or(0)).unwrap_or(0).max(index + 1);
    let Some(status) = p.plan.status.replicated_jobs_status.iter_mut().find(|s| s.name == rjob) else { return };
    status.job_restarts.resize(len, 0);
    status.job_restarts[index] += 1;
    status.job_restarts_count_towards_max.resize(len, 0);
    if action == FailurePolicyAction::RestartJob {
        status.job_restarts_count_towards_max[index] += 1;
    }
    p.plan.status_changed = true;
}

fn scale_active_jobs(p: &mut Planner<'_>, buckets: &Buckets<'_>) {
    for job in &buckets.active {
        let Some(rjob) = p
            .input
            .jobset
            .spec
            .replicated_jobs
            .iter()
            .find(|r| Some(r.name.as_str()) == jobs::label(job, REPLICATED_JOB_NAME))
        else {
            continue;
        };
        let template = rjob.template.spec.as_ref();
        // Only explicit, equal values are elastic; patching server-defaulted values back to null (upstream's
        // quirk when both are unset) would be rejected.
        let (Some(parallelism), Some(completions)) =
            (template.and_then(|s| s.parallelism), template.and_then(|s| s.completions))
        else {
            continue;
        };
        let spec = job.spec.as_ref();
        if parallelism != completions {
            continue;
        }
        // A gang's Job grows only as far as admission has placed its pods. A pod created before its slot exists
        // is turned away (by the extender, or refused by the pod webhook), and the scheduler may not try it again
        // for minutes once the slot appears; admission places the added pods in a second at most, or says in the
        // Gang's status that they wait for room. Shrinking needs no slot and goes at once.
        let current = spec.and_then(|s| s.parallelism).unwrap_or(parallelism);
        let scaled = match (p.input.placed, jobs::label_int(job, JOB_INDEX)) {
            (Some(placed), Some(index)) if parallelism > current => {
                placed.get(&(rjob.name.clone(), index)).copied().unwrap_or(0).clamp(current, parallelism)
            }
            _ => parallelism,
        };
        if (spec.and_then(|s| s.parallelism) != Some(scaled) || spec.and_then(|s| s.completions) != Some(scaled))
            && let Some(name) = job.metadata.name.clone()
        {
            p.plan.actions.push(Action::ScaleJob { name, parallelism: scaled, completions: scaled });
        }
    }
}

fn create_missing_jobs(
    p: &mut Planner<'_>,
    buckets: &Buckets<'_>,
    statuses: &[muster_api::jobset::ReplicatedJobStatus],
) {
    let jobset = p.input.jobset;
    let suspended = jobset.suspended();
    let in_order = order::in_order(jobset);
    let blocking = jobset
        .spec
        .failure_policy
        .as_ref()
        .is_some_and(|f| f.restart_strategy() == muster_api::jobset::RestartStrategy::BlockingRecreate);
    if blocking && !buckets.previous.is_empty() {
        return;
    }
    let mut created = Vec::new();
    for (pos, rjob) in jobset.spec.replicated_jobs.iter().enumerate() {
        if !order::depends_on_satisfied(jobset, rjob, statuses) {
            continue;
        }
        if !suspended && in_order && order::all_started(rjob, statuses) {
            continue;
        }
        let held = order::held_for_leader(jobset, rjob, statuses);
        for index in 0..rjob.replicas() {
            let name = children::job_name(p.family.name, &rjob.name, index);
            if !buckets.contains_name(&name) {
                let mut job = children::build_job(
                    &p.family,
                    &p.plan.status,
                    pos,
                    index,
                    suspended || held,
                    p.input.gates.restart_job,
                );
                if !suspended {
                    hold_pods_without_slots(p, &mut job, &rjob.name, index);
                }
                created.push(job);
            }
        }
        if !suspended && in_order {
            flush_created(p, created);
            p.set(&Wanted::startup_in_progress());
            return;
        }
    }
    flush_created(p, created);
    if !suspended && in_order {
        p.set(&Wanted::startup_completed());
    }
}

/// A running gang's Job recreated (a group restart) while pods added by an `ElasticJobSet` scale-up still wait for
/// room starts with the pods that have slots; it grows as they get theirs (see `scale_active_jobs`).
fn hold_pods_without_slots(p: &Planner<'_>, job: &mut Job, rjob: &str, index: i32) {
    let (Some(placed), true) = (p.input.placed, p.input.gates.elastic_jobset) else { return };
    let Some(spec) = job.spec.as_mut() else { return };
    let slots = placed.get(&(rjob.to_owned(), index)).copied().unwrap_or(0);
    if let (Some(parallelism), Some(completions)) = (spec.parallelism, spec.completions)
        && parallelism == completions
        && (1..parallelism).contains(&slots)
    {
        (spec.parallelism, spec.completions) = (Some(slots), Some(slots));
    }
}

fn flush_created(p: &mut Planner<'_>, created: Vec<Job>) {
    if !created.is_empty() {
        p.plan.actions.push(Action::CreateJobs(created));
    }
}

fn suspend_jobs(p: &mut Planner<'_>, buckets: &Buckets<'_>) {
    let to_suspend: Vec<String> = buckets
        .active
        .iter()
        .filter(|j| !j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false))
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    if !to_suspend.is_empty() {
        p.plan.actions.push(Action::SuspendJobs(to_suspend));
    }
    p.set(&Wanted::suspended());
    p.set(&Wanted::not_restarting(REASON_JOBSET_SUSPENDED, MESSAGE_JOBSET_SUSPENDED));
}

fn resume_jobs(p: &mut Planner<'_>, buckets: &Buckets<'_>, statuses: &[muster_api::jobset::ReplicatedJobStatus]) {
    let jobset = p.input.jobset;
    let in_order = order::in_order(jobset);
    for rjob in &jobset.spec.replicated_jobs {
        if !order::depends_on_satisfied(jobset, rjob, statuses)
            || (in_order && order::all_started(rjob, statuses))
            || order::held_for_leader(jobset, rjob, statuses)
        {
            continue;
        }
        let suspended = buckets.active.iter().filter(|j| {
            jobs::label(j, REPLICATED_JOB_NAME) == Some(rjob.name.as_str())
                && j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
        });
        for job in suspended {
            let clear_start_time = job.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some();
            p.plan.actions.push(Action::ResumeJob { job: Box::new(suspend::resumed(job, rjob)), clear_start_time });
        }
        if in_order {
            p.set(&Wanted::startup_in_progress());
            return;
        }
    }
    p.set(&Wanted::resumed());
}

#[cfg(test)]
mod tests;
