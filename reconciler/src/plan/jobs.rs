//! The observed child Jobs, sorted into attempts and counted per ReplicatedJob.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use muster_api::jobset::ReplicatedJobStatus;
use muster_api::keys::*;
use muster_api::{JobSet, JobSetStatus};

/// Child Jobs by attempt and outcome. Only current-attempt Jobs count for success, failure and status.
#[derive(Debug, Default)]
pub struct Buckets<'a> {
    pub active: Vec<&'a Job>,
    pub successful: Vec<&'a Job>,
    pub failed: Vec<&'a Job>,
    /// Jobs of an earlier restart attempt: deleted, then recreated.
    pub previous: Vec<&'a Job>,
}

impl<'a> Buckets<'a> {
    pub fn current(&self) -> impl Iterator<Item = &'a Job> + '_ {
        self.active.iter().chain(&self.successful).chain(&self.failed).copied()
    }

    pub fn all(&self) -> impl Iterator<Item = &'a Job> + '_ {
        self.current().chain(self.previous.iter().copied())
    }

    pub fn contains_name(&self, name: &str) -> bool {
        self.all().any(|j| j.metadata.name.as_deref() == Some(name))
    }
}

pub fn label<'j>(job: &'j Job, key: &str) -> Option<&'j str> {
    job.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

pub fn label_int(job: &Job, key: &str) -> Option<i32> {
    label(job, key)?.parse().ok()
}

/// The Job condition of `type_` when its status is True.
pub fn true_condition<'j>(job: &'j Job, type_: &str) -> Option<&'j k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

pub fn is_finished(job: &Job) -> bool {
    true_condition(job, "Complete").is_some() || true_condition(job, "Failed").is_some()
}

/// When the Job failed (its `Failed` condition's transition time), for "first failed job".
pub fn failed_at(job: &Job) -> Option<Timestamp> {
    true_condition(job, "Failed").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)
}

/// Sorts Jobs into buckets. A Job whose `restart-attempt` label is missing or not a number cannot be tied to an
/// attempt; upstream errors on every reconcile for it, we treat it as previous so it is replaced.
pub fn bucket<'a>(jobs: &'a [Job], status: &JobSetStatus, restart_job_gate: bool) -> Buckets<'a> {
    let mut out = Buckets::default();
    for job in jobs {
        let previous_attempt = label_int(job, RESTART_ATTEMPT).is_none_or(|attempt| attempt < status.restarts);
        let previous_job_attempt = restart_job_gate && is_previous_job_attempt(job, status);
        if previous_attempt || previous_job_attempt {
            out.previous.push(job);
        } else if true_condition(job, "Failed").is_some() {
            out.failed.push(job);
        } else if true_condition(job, "Complete").is_some() {
            out.successful.push(job);
        } else {
            out.active.push(job);
        }
    }
    out
}

/// With the `RestartJob` gate, a Job whose `job-restart-attempt` is below its index's `jobRestarts` is stale.
fn is_previous_job_attempt(job: &Job, status: &JobSetStatus) -> bool {
    let (Some(rjob), Some(index), Some(attempt)) =
        (label(job, REPLICATED_JOB_NAME), label_int(job, JOB_INDEX), label_int(job, JOB_RESTART_ATTEMPT))
    else {
        return false;
    };
    attempt < super::children::job_restart_attempt(status, rjob, index)
}

/// Pods a Job needs ready to count as ready: min(parallelism, completions), parallelism defaulting to 1.
fn pods_needed(job: &Job) -> i32 {
    let spec = job.spec.as_ref();
    let parallelism = spec.and_then(|s| s.parallelism).unwrap_or(1);
    spec.and_then(|s| s.completions).map_or(parallelism, |c| c.min(parallelism))
}

/// One entry per ReplicatedJob in spec order (zeros included), carrying `jobRestarts*` over.
pub fn replicated_job_statuses(jobset: &JobSet, buckets: &Buckets<'_>) -> Vec<ReplicatedJobStatus> {
    let old = jobset.status.as_ref();
    jobset
        .spec
        .replicated_jobs
        .iter()
        .map(|rjob| {
            let mine = |job: &&&Job| label(job, REPLICATED_JOB_NAME) == Some(rjob.name.as_str());
            let mut s = ReplicatedJobStatus { name: rjob.name.clone(), ..ReplicatedJobStatus::default() };
            for job in buckets.active.iter().filter(mine) {
                let st = job.status.as_ref();
                let ready_pods = st.and_then(|s| s.ready).unwrap_or(0) + st.and_then(|s| s.succeeded).unwrap_or(0);
                if ready_pods >= pods_needed(job) {
                    s.ready += 1;
                }
                if st.and_then(|s| s.active).unwrap_or(0) > 0 {
                    s.active += 1;
                }
                if job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false) {
                    s.suspended += 1;
                }
            }
            s.succeeded = count(buckets.successful.iter().filter(mine));
            s.failed = count(buckets.failed.iter().filter(mine));
            if let Some(previous) = old.and_then(|o| o.replicated_jobs_status.iter().find(|p| p.name == rjob.name)) {
                s.job_restarts.clone_from(&previous.job_restarts);
                s.job_restarts_count_towards_max.clone_from(&previous.job_restarts_count_towards_max);
            }
            s
        })
        .collect()
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    i32::try_from(items.count()).unwrap_or(i32::MAX)
}

/// Same counters, ignoring order (upstream builds the list from a map, so order carries no meaning).
pub fn same_statuses(a: &[ReplicatedJobStatus], b: &[ReplicatedJobStatus]) -> bool {
    let sorted = |v: &[ReplicatedJobStatus]| {
        let mut v = v.to_vec();
        v.sort_by(|x, y| x.name.cmp(&y.name));
        v
    };
    sorted(a) == sorted(b)
}
