//! The planner, rule by rule, on plain objects.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use muster_api::JobSet;
use muster_api::keys::*;
use serde_json::json;

use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("valid time")
}

/// A JobSet `train` in `ml`: `leader` (1 Job) and `workers` (`workers` Jobs), each Job 2 pods, DNS on.
fn jobset(workers: i32, extra_spec: serde_json::Value) -> JobSet {
    let template = json!({"spec": {"parallelism": 2, "completions": 2, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    let mut spec = json!({
        "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
        "successPolicy": {"operator": "All"},
        "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
        "replicatedJobs": [
            {"name": "leader", "replicas": 1, "template": template},
            {"name": "workers", "replicas": workers, "template": template},
        ]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "train", "namespace": "ml", "uid": "uid-1"},
        "spec": spec
    }))
    .expect("valid JobSet")
}

fn with_status(mut js: JobSet, status: serde_json::Value) -> JobSet {
    js.status = Some(serde_json::from_value(status).expect("valid status"));
    js
}

/// The Job the planner would create, as the API server would return it.
fn child(js: &JobSet, rjob: &str, index: i32) -> Job {
    let family = children::Family::new(js);
    let pos = js.spec.replicated_jobs.iter().position(|r| r.name == rjob).expect("rjob exists");
    children::build_job(&family, &js.status.clone().unwrap_or_default(), pos, index, js.suspended(), false)
}

fn job_condition(type_: &str, reason: &str, message: &str, when: i64) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(at(when))),
        ..JobCondition::default()
    }
}

fn completed(mut job: Job) -> Job {
    job.status = Some(JobStatus {
        succeeded: Some(2),
        conditions: Some(vec![job_condition("Complete", "CompletionsReached", "", 10)]),
        ..JobStatus::default()
    });
    job
}

fn failed(mut job: Job, reason: &str, message: &str, when: i64) -> Job {
    job.status = Some(JobStatus {
        conditions: Some(vec![job_condition("Failed", reason, message, when)]),
        ..JobStatus::default()
    });
    job
}

/// A plan for a JobSet with no Jobs yet and no Service of its subdomain's name.
fn plan_without_service(js: &JobSet) -> Plan {
    plan(Input {
        jobset: js,
        jobs: &[],
        service_exists: false,
        now: at(0),
        gates: FeatureGates::default(),
        placed: None,
    })
    .expect("plans")
}

fn ready(mut job: Job) -> Job {
    job.status = Some(JobStatus { active: Some(2), ready: Some(2), ..JobStatus::default() });
    job
}

fn run(js: &JobSet, jobs: &[Job]) -> Plan {
    run_with(js, jobs, FeatureGates::default())
}

fn run_with(js: &JobSet, jobs: &[Job], gates: FeatureGates) -> Plan {
    plan(Input { jobset: js, jobs, service_exists: true, now: at(100), gates, placed: None }).expect("plans")
}

fn created(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| if let Action::CreateJobs(jobs) = a { Some(jobs) } else { None })
        .flatten()
        .filter_map(|j| j.metadata.name.clone())
        .collect()
}

fn deleted(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| if let Action::DeleteJobs(n) = a { Some(n.clone()) } else { None })
        .flatten()
        .collect()
}

fn condition<'p>(plan: &'p Plan, type_: &str) -> Option<&'p Condition> {
    plan.status.conditions.iter().find(|c| c.type_ == type_)
}

fn cond(plan: &Plan, type_: &str) -> Option<(String, String, String)> {
    condition(plan, type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn triple(status: &str, reason: &str, message: &str) -> Option<(String, String, String)> {
    Some((status.into(), reason.into(), message.into()))
}

fn all_jobs(js: &JobSet, map: impl Fn(Job) -> Job) -> Vec<Job> {
    let mut out = vec![map(child(js, "leader", 0))];
    let workers = js.spec.replicated_jobs[1].replicas();
    out.extend((0..workers).map(|i| map(child(js, "workers", i))));
    out
}

// === creation ===

#[test]
fn creates_every_job_with_upstream_labels_indexes_and_subdomain() {
    let mut js = jobset(2, json!({"coordinator": {"replicatedJob": "leader"}}));
    js.spec.replicated_jobs[1].group_name = Some("pool".into());
    let plan = run(&js, &[]);
    assert_eq!(created(&plan), ["train-leader-0", "train-workers-0", "train-workers-1"]);
    let Some(Action::CreateJobs(jobs)) = plan.actions.iter().find(|a| matches!(a, Action::CreateJobs(_))) else {
        panic!("no jobs created")
    };
    let worker = &jobs[2];
    let labels = worker.metadata.labels.as_ref().expect("labels");
    let expect = BTreeMap::from([
        (JOBSET_NAME, "train"),
        (JOBSET_UID, "uid-1"),
        (REPLICATED_JOB_NAME, "workers"),
        (REPLICATED_JOB_REPLICAS, "2"),
        (GLOBAL_REPLICAS, "3"),
        (JOB_INDEX, "1"),
        (JOB_GLOBAL_INDEX, "2"),
        (JOB_KEY, "9758140d1b2c3c8dbaebb0783352de84ca2874b5"),
        (RESTART_ATTEMPT, "0"),
        (GROUP_NAME, "pool"),
        (GROUP_REPLICAS, "2"),
        (JOB_GROUP_INDEX, "1"),
        (COORDINATOR, "train-leader-0-0.train"),
    ]);
    for (key, value) in &expect {
        assert_eq!(labels.get(*key).map(String::as_str), Some(*value), "label {key}");
        let annotations = worker.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.get(*key).map(String::as_str), Some(*value), "annotation {key}");
        let pod_labels =
            worker.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.as_ref());
        assert_eq!(pod_labels.and_then(|l| l.get(*key)).map(String::as_str), Some(*value), "pod label {key}");
    }
    assert!(!labels.contains_key(JOB_RESTART_ATTEMPT), "only with the RestartJob gate");
    let spec = worker.spec.as_ref().expect("spec");
    assert_eq!(spec.suspend, Some(false));
    assert_eq!(spec.template.spec.as_ref().and_then(|p| p.subdomain.as_deref()), Some("train"));
    let owner = &worker.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("JobSet", "uid-1", Some(true)));
    // The leader is in the default group.
    let leader_labels = jobs[0].metadata.labels.as_ref().expect("labels");
    assert_eq!(leader_labels.get(GROUP_NAME).map(String::as_str), Some("default"));
    assert_eq!(leader_labels.get(JOB_GROUP_INDEX).map(String::as_str), Some("0"));
}

#[test]
fn creates_the_headless_service_only_when_missing_and_dns_enabled() {
    let js = jobset(
        1,
        json!({"network": {"enableDNSHostnames": true, "subdomain": "mesh", "publishNotReadyAddresses": false}}),
    );
    let first = plan_without_service(&js);
    let Some(Action::CreateService(svc)) = first.actions.iter().find(|a| matches!(a, Action::CreateService(_))) else {
        panic!("no service")
    };
    assert_eq!(svc.metadata.name.as_deref(), Some("mesh"));
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(false));
    assert_eq!(spec.selector.as_ref().and_then(|s| s.get(JOBSET_NAME)).map(String::as_str), Some("train"));
    assert_eq!(run(&js, &[]).actions.iter().filter(|a| matches!(a, Action::CreateService(_))).count(), 0);

    let mut no_network = jobset(1, json!({}));
    no_network.spec.network = None;
    let bare = plan_without_service(&no_network);
    assert!(!bare.actions.iter().any(|a| matches!(a, Action::CreateService(_))));
}

#[test]
fn volume_claim_policies_create_owned_and_retained_claims_and_mount_them() {
    let mut js = jobset(
        1,
        json!({"volumeClaimPolicies": [
            {"templates": [{"metadata": {"name": "ckpt", "labels": {"team": "nlp"}}, "spec": {"accessModes": ["ReadWriteMany"]}}],
             "retentionPolicy": {"whenDeleted": "Retain"}},
            {"templates": [{"metadata": {"name": "scratch"}, "spec": {}}]}
        ]}),
    );
    let worker_pod =
        js.spec.replicated_jobs[1].template.spec.as_mut().and_then(|s| s.template.spec.as_mut()).expect("pod");
    worker_pod.containers[0].volume_mounts =
        Some(vec![serde_json::from_value(json!({"name": "ckpt", "mountPath": "/ckpt"})).expect("mount")]);
    let plan = run(&js, &[]);
    let Some(Action::CreateClaims(claims)) = plan.actions.iter().find(|a| matches!(a, Action::CreateClaims(_))) else {
        panic!("no claims")
    };
    let names: Vec<_> = claims.iter().map(|c| c.metadata.name.as_deref().unwrap_or_default()).collect();
    assert_eq!(names, ["ckpt-train", "scratch-train"]);
    assert!(claims[0].metadata.owner_references.is_none(), "Retain claims outlive the JobSet");
    assert!(claims[1].metadata.owner_references.is_some(), "Delete claims are garbage-collected with it");
    let labels = claims[0].metadata.labels.as_ref().expect("labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("nlp"));
    assert_eq!(labels.get(JOBSET_NAME).map(String::as_str), Some("train"));

    let volumes = |job: &Job| -> Vec<(String, String)> {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.volumes.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name, v.persistent_volume_claim.map(|c| c.claim_name).unwrap_or_default()))
            .collect()
    };
    assert_eq!(volumes(&child(&js, "workers", 0)), [("ckpt".to_string(), "ckpt-train".to_string())]);
    assert!(volumes(&child(&js, "leader", 0)).is_empty(), "only pods that mount a claim get its volume");
}

#[test]
fn existing_jobs_are_not_created_again() {
    let js = jobset(2, json!({}));
    let jobs = vec![child(&js, "leader", 0), child(&js, "workers", 1)];
    assert_eq!(created(&run(&js, &jobs)), ["train-workers-0"]);
}

// === success ===

#[test]
fn success_all_needs_every_job() {
    let js = jobset(2, json!({}));
    let mut jobs = all_jobs(&js, completed);
    jobs[2] = ready(child(&js, "workers", 1));
    let plan = run(&js, &jobs);
    assert_eq!(condition(&plan, CONDITION_COMPLETED), None);
    let plan = run(&js, &all_jobs(&js, completed));
    assert_eq!(cond(&plan, CONDITION_COMPLETED), triple("True", "AllJobsCompleted", "jobset completed successfully"));
    assert_eq!(plan.status.terminal_state.as_deref(), Some("Completed"));
    assert_eq!(plan.finished, Some(Finish::Completed));
    assert!(plan.events.iter().any(|e| e.reason == "AllJobsCompleted" && e.type_ == EventType::Normal));
    assert!(created(&plan).is_empty());
}

#[test]
fn success_any_and_targets() {
    let js = jobset(2, json!({"successPolicy": {"operator": "Any"}}));
    let jobs =
        vec![ready(child(&js, "leader", 0)), completed(child(&js, "workers", 0)), ready(child(&js, "workers", 1))];
    assert_eq!(run(&js, &jobs).finished, Some(Finish::Completed));

    let js = jobset(2, json!({"successPolicy": {"operator": "All", "targetReplicatedJobs": ["leader"]}}));
    let jobs =
        vec![completed(child(&js, "leader", 0)), ready(child(&js, "workers", 0)), ready(child(&js, "workers", 1))];
    assert_eq!(run(&js, &jobs).finished, Some(Finish::Completed));
    let jobs =
        vec![ready(child(&js, "leader", 0)), completed(child(&js, "workers", 0)), completed(child(&js, "workers", 1))];
    assert_eq!(run(&js, &jobs).finished, None, "workers are not targeted");

    let js = jobset(2, json!({"successPolicy": {"operator": "Any", "targetReplicatedJobs": ["workers"]}}));
    let jobs = vec![completed(child(&js, "leader", 0)), ready(child(&js, "workers", 0))];
    assert_eq!(run(&js, &jobs).finished, None);
}

#[test]
fn missing_success_policy_means_all() {
    let mut js = jobset(1, json!({}));
    js.spec.success_policy = None;
    assert_eq!(run(&js, &all_jobs(&js, completed)).finished, Some(Finish::Completed));
}

// === failure ===

#[test]
fn failure_without_policy_fails_naming_the_first_failed_job() {
    let js = jobset(2, json!({}));
    let jobs = vec![
        ready(child(&js, "leader", 0)),
        failed(child(&js, "workers", 0), "BackoffLimitExceeded", "boom", 50),
        failed(child(&js, "workers", 1), "BackoffLimitExceeded", "boom", 20),
    ];
    let plan = run(&js, &jobs);
    assert_eq!(
        cond(&plan, CONDITION_FAILED),
        triple(
            "True",
            "FailedJobs",
            "jobset failed due to one or more job failures (first failed job: train-workers-1)"
        )
    );
    assert_eq!(plan.status.terminal_state.as_deref(), Some("Failed"));
    assert_eq!(plan.finished, Some(Finish::Failed));
    assert!(plan.events.iter().any(|e| e.reason == "FailedJobs" && e.type_ == EventType::Warning));
    assert!(created(&plan).is_empty(), "no creation on a failure pass");
}

#[test]
fn failure_beats_success_in_the_same_pass() {
    let js = jobset(1, json!({"successPolicy": {"operator": "Any"}}));
    let jobs =
        vec![completed(child(&js, "leader", 0)), failed(child(&js, "workers", 0), "BackoffLimitExceeded", "", 1)];
    assert_eq!(run(&js, &jobs).finished, Some(Finish::Failed));
}

#[test]
fn restart_jobset_bumps_counters_and_sets_restarting() {
    let js = jobset(1, json!({"failurePolicy": {"maxRestarts": 2}}));
    let jobs = vec![ready(child(&js, "leader", 0)), failed(child(&js, "workers", 0), "BackoffLimitExceeded", "", 1)];
    let plan = run(&js, &jobs);
    assert_eq!(plan.status.restarts, 1);
    assert_eq!(plan.status.restarts_count_towards_max, Some(1));
    let message = "applying RestartJobSet failure policy action (first failed job: train-workers-0)";
    assert_eq!(cond(&plan, CONDITION_RESTARTING_JOBSET), triple("True", "DefaultFailurePolicy", message));
    assert!(plan.events.iter().any(|e| e.reason == "RestartJobSetFailurePolicyAction" && e.message == message));
    assert_eq!(plan.finished, None);
}

#[test]
fn restart_budget_exhausted_fails_with_reached_max_restarts() {
    let js = with_status(
        jobset(1, json!({"failurePolicy": {"maxRestarts": 1}})),
        json!({"restarts": 1, "restartsCountTowardsMax": 1}),
    );
    let jobs = vec![failed(child(&js, "workers", 0), "BackoffLimitExceeded", "", 1)];
    let plan = run(&js, &jobs);
    assert_eq!(
        cond(&plan, CONDITION_FAILED),
        triple(
            "True",
            "ReachedMaxRestarts",
            "jobset failed due to reaching max number of restarts (first failed job: train-workers-0)"
        )
    );
    // Ignoring max restarts keeps going regardless of the budget.
    let js = with_status(
        jobset(
            1,
            json!({"failurePolicy": {"maxRestarts": 1, "rules": [{"name": "r", "action": "RestartJobSetAndIgnoreMaxRestarts"}]}}),
        ),
        json!({"restarts": 1, "restartsCountTowardsMax": 1}),
    );
    let jobs = vec![failed(child(&js, "workers", 0), "BackoffLimitExceeded", "", 1)];
    let plan = run(&js, &jobs);
    assert_eq!((plan.status.restarts, plan.status.restarts_count_towards_max), (2, Some(1)));
    assert_eq!(condition(&plan, CONDITION_RESTARTING_JOBSET).map(|c| c.reason.as_str()), Some("FailurePolicy_r"));
    assert!(plan.events.iter().any(|e| e.reason == "RestartJobSetAndIgnoreMaxRestartsFailurePolicyAction"));
}

#[test]
fn rules_match_on_reason_pattern_and_target_in_order() {
    let policy = json!({"failurePolicy": {"maxRestarts": 5, "rules": [
        {"name": "leaderFails", "action": "FailJobSet", "targetReplicatedJobs": ["leader"]},
        {"name": "evicted", "action": "RestartJobSetAndIgnoreMaxRestarts",
         "onJobFailureReasons": ["PodFailurePolicy"], "onJobFailureMessagePatterns": ["DisruptionTarget", "(invalid"]},
        {"name": "deadline", "action": "FailJobSet", "onJobFailureReasons": ["DeadlineExceeded"]}
    ]}});
    let js = jobset(1, policy);
    let decide = |jobs: Vec<Job>| run(&js, &jobs);

    let plan = decide(vec![failed(child(&js, "leader", 0), "BackoffLimitExceeded", "", 5)]);
    assert_eq!(
        cond(&plan, CONDITION_FAILED),
        triple(
            "True",
            "FailJobSetFailurePolicyAction",
            "applying FailJobSet failure policy action (first failed job: train-leader-0)"
        )
    );

    let plan =
        decide(vec![failed(child(&js, "workers", 0), "PodFailurePolicy", "pod has condition DisruptionTarget", 5)]);
    assert_eq!(condition(&plan, CONDITION_RESTARTING_JOBSET).map(|c| c.reason.as_str()), Some("FailurePolicy_evicted"));

    // Right reason, wrong message: the pattern does not match, so the next rules are tried.
    let plan = decide(vec![failed(child(&js, "workers", 0), "PodFailurePolicy", "OOMKilled", 5)]);
    assert_eq!(condition(&plan, CONDITION_RESTARTING_JOBSET).map(|c| c.reason.as_str()), Some("DefaultFailurePolicy"));

    let plan = decide(vec![failed(child(&js, "workers", 0), "DeadlineExceeded", "", 5)]);
    assert_eq!(condition(&plan, CONDITION_FAILED).map(|c| c.reason.as_str()), Some("FailJobSetFailurePolicyAction"));

    // The first rule wins even when a later-failing Job matches it and an earlier one matches a later rule.
    let plan = decide(vec![
        failed(child(&js, "workers", 0), "DeadlineExceeded", "", 1),
        failed(child(&js, "leader", 0), "BackoffLimitExceeded", "", 9),
    ]);
    assert_eq!(
        condition(&plan, CONDITION_FAILED).map(|c| c.message.as_str()),
        Some("applying FailJobSet failure policy action (first failed job: train-leader-0)")
    );
}

#[test]
fn restart_job_needs_its_gate_and_counts_per_index() {
    let js =
        jobset(2, json!({"failurePolicy": {"maxRestarts": 3, "rules": [{"name": "one", "action": "RestartJob"}]}}));
    let with_gate = children::build_job(&children::Family::new(&js), &Default::default(), 1, 1, false, true);
    let jobs = vec![failed(with_gate, "BackoffLimitExceeded", "", 1)];
    let err = plan(Input {
        jobset: &js,
        jobs: &jobs,
        service_exists: true,
        now: at(0),
        gates: FeatureGates::default(),
        placed: None,
    });
    assert_eq!(err, Err(PlanError::RestartJobGateDisabled("RestartJob")));

    let gates = FeatureGates { restart_job: true, ..FeatureGates::default() };
    let plan = run_with(&js, &jobs, gates);
    let workers = plan.status.replicated_jobs_status.iter().find(|s| s.name == "workers").expect("status");
    assert_eq!(workers.job_restarts, [0, 1]);
    assert_eq!(workers.job_restarts_count_towards_max, [0, 1]);
    assert_eq!(plan.status.restarts, 0, "a single-Job restart is not a global restart");
    assert_eq!(condition(&plan, CONDITION_RESTARTING_JOBSET), None, "RestartJob sets no condition");
    assert!(plan.events.iter().any(|e| e.reason == "RestartJobFailurePolicyAction"));

    // Next pass: the failed Job is now of a previous per-Job attempt; it is deleted and recreated alone.
    let js = with_status(js, serde_json::to_value(&plan.status).expect("status"));
    let plan = run_with(&js, &jobs, gates);
    assert_eq!(deleted(&plan), ["train-workers-1"]);
}

// === restarts: previous attempts ===

#[test]
fn previous_attempt_jobs_are_deleted_and_recreated_once_gone() {
    let js0 = jobset(1, json!({"failurePolicy": {"maxRestarts": 3}}));
    let old = all_jobs(&js0, ready);
    let js = with_status(js0, json!({"restarts": 1, "restartsCountTowardsMax": 1}));
    let plan = run(&js, &old);
    assert_eq!(deleted(&plan), ["train-leader-0", "train-workers-0"]);
    assert!(created(&plan).is_empty(), "Recreate waits until the old object is gone");

    let plan = run(&js, &old[..1]);
    assert_eq!(created(&plan), ["train-workers-0"]);
    let Some(Action::CreateJobs(jobs)) = plan.actions.iter().find(|a| matches!(a, Action::CreateJobs(_))) else {
        panic!()
    };
    assert_eq!(jobs[0].metadata.labels.as_ref().and_then(|l| l.get(RESTART_ATTEMPT)).map(String::as_str), Some("1"));
}

#[test]
fn blocking_recreate_creates_nothing_while_any_previous_job_exists() {
    let js0 = jobset(1, json!({"failurePolicy": {"restartStrategy": "BlockingRecreate"}}));
    let old = all_jobs(&js0, ready);
    let js = with_status(js0, json!({"restarts": 1}));
    assert!(created(&run(&js, &old[..1])).is_empty());
    assert_eq!(created(&run(&js, &[])), ["train-leader-0", "train-workers-0"]);
}

#[test]
fn terminating_previous_jobs_are_not_deleted_twice() {
    let js0 = jobset(1, json!({}));
    let mut old = all_jobs(&js0, ready);
    old[0].metadata.deletion_timestamp = Some(Time(at(1)));
    let js = with_status(js0, json!({"restarts": 1}));
    assert_eq!(deleted(&run(&js, &old)), ["train-workers-0"]);
}

#[test]
fn jobs_ready_clears_restarting() {
    let js = with_status(
        jobset(1, json!({})),
        json!({"restarts": 1, "conditions": [{
        "type": "RestartingJobSet", "status": "True", "reason": "DefaultFailurePolicy", "message": "m",
        "lastTransitionTime": "2023-11-14T22:13:20Z"}]}),
    );
    let plan = run(&js, &all_jobs(&js, ready));
    assert_eq!(cond(&plan, CONDITION_RESTARTING_JOBSET), triple("False", "JobsReady", "all jobs are ready"));
}

#[test]
fn status_counters_per_replicated_job() {
    let js = jobset(3, json!({}));
    let mut suspended = child(&js, "workers", 2);
    if let Some(spec) = suspended.spec.as_mut() {
        spec.suspend = Some(true);
    }
    let jobs = vec![
        completed(child(&js, "leader", 0)),
        ready(child(&js, "workers", 0)),
        {
            let mut j = child(&js, "workers", 1);
            j.status = Some(JobStatus { active: Some(2), ready: Some(1), ..JobStatus::default() });
            j
        },
        suspended,
    ];
    let plan = run(&js, &jobs);
    let workers = plan.status.replicated_jobs_status.iter().find(|s| s.name == "workers").expect("workers");
    assert_eq!((workers.ready, workers.active, workers.suspended, workers.succeeded, workers.failed), (1, 2, 1, 0, 0));
    let leader = plan.status.replicated_jobs_status.iter().find(|s| s.name == "leader").expect("leader");
    assert_eq!(leader.succeeded, 1);
    assert!(plan.status_changed);
}

// === finished ===

#[test]
fn finished_jobsets_delete_active_jobs_and_honour_ttl() {
    let finished = json!({"terminalState": "Completed", "conditions": [{"type": "Completed", "status": "True",
        "reason": "AllJobsCompleted", "message": "jobset completed successfully", "lastTransitionTime": "2023-11-14T22:13:20Z"}]});
    let js = with_status(jobset(1, json!({"ttlSecondsAfterFinished": 300})), finished.clone());
    let jobs = vec![completed(child(&js, "leader", 0)), ready(child(&js, "workers", 0))];
    let plan = run(&js, &jobs);
    assert_eq!(deleted(&plan), ["train-workers-0"]);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(200)), "finished at t=0, now t=100");
    assert!(created(&plan).is_empty());

    let js = with_status(jobset(1, json!({"ttlSecondsAfterFinished": 60})), finished);
    assert!(run(&js, &jobs).actions.contains(&Action::DeleteJobSet));
}

#[test]
fn managed_by_others_and_deleting_jobsets_are_left_alone() {
    let js = jobset(1, json!({"managedBy": "kueue.x-k8s.io/multikueue"}));
    assert_eq!(run(&js, &[]), Plan::default());
    let js = jobset(1, json!({"managedBy": "jobset.sigs.k8s.io/jobset-controller"}));
    assert_eq!(created(&run(&js, &[])).len(), 2);
    let mut js = jobset(1, json!({}));
    js.metadata.deletion_timestamp = Some(Time(at(0)));
    assert_eq!(run(&js, &[]), Plan::default());
}

// === suspend / resume ===

#[test]
fn suspended_jobsets_create_suspended_jobs_and_suspend_running_ones() {
    let js = jobset(1, json!({"suspend": true}));
    let plan = run(&js, &[]);
    let Some(Action::CreateJobs(jobs)) = plan.actions.iter().find(|a| matches!(a, Action::CreateJobs(_))) else {
        panic!()
    };
    assert!(jobs.iter().all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true)));
    assert_eq!(cond(&plan, CONDITION_SUSPENDED), triple("True", "SuspendedJobs", "jobset is suspended"));

    let running = all_jobs(&jobset(1, json!({})), ready);
    let plan = run(&js, &running);
    assert!(plan.actions.contains(&Action::SuspendJobs(vec!["train-leader-0".into(), "train-workers-0".into()])));
}

#[test]
fn resume_clears_start_time_and_merges_template_changes() {
    let suspended_js = jobset(1, json!({"suspend": true}));
    let mut jobs = all_jobs(&suspended_js, |j| j);
    jobs[1].status = Some(JobStatus { start_time: Some(Time(at(1))), ..JobStatus::default() });
    if let Some(pod) = jobs[1].spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.node_selector = Some(BTreeMap::from([("keep".to_string(), "me".to_string())]));
    }
    // While suspended, admission rewrote the workers' pod template.
    let mut js = with_status(
        jobset(1, json!({})),
        json!({"conditions": [{"type": "Suspended", "status": "True", "reason": "SuspendedJobs",
            "message": "jobset is suspended", "lastTransitionTime": "2023-11-14T22:13:20Z"}]}),
    );
    let pod = js.spec.replicated_jobs[1].template.spec.as_mut().map(|s| &mut s.template).expect("template");
    pod.metadata.get_or_insert_default().labels = Some(BTreeMap::from([("kueue".to_string(), "yes".to_string())]));
    let pod_spec = pod.spec.as_mut().expect("pod spec");
    pod_spec.node_selector = Some(BTreeMap::from([("gpu".to_string(), "h100".to_string())]));
    pod_spec.tolerations =
        Some(vec![serde_json::from_value(json!({"key": "gpu", "operator": "Exists"})).expect("toleration")]);

    let plan = run(&js, &jobs);
    let resumed: Vec<(&Job, bool)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::ResumeJob { job, clear_start_time } => Some((job.as_ref(), *clear_start_time)),
            _ => None,
        })
        .collect();
    // Clearing the start time and the update are one action: the update must carry the resourceVersion of the
    // status write, or it conflicts with it (found by the integration test of a preempted JobSet).
    assert_eq!(resumed.len(), 2);
    assert_eq!(plan.actions.len(), 2, "nothing else: {:?}", plan.actions);
    assert_eq!((resumed[0].1, resumed[1].1), (false, true), "only the started Job has a start time to clear");
    let worker = resumed[1].0;
    let spec = worker.spec.as_ref().expect("spec");
    assert_eq!(spec.suspend, Some(false));
    let pod = spec.template.spec.as_ref().expect("pod");
    let selector = pod.node_selector.as_ref().expect("selector");
    assert_eq!((selector.get("gpu"), selector.get("keep")), (Some(&"h100".to_string()), Some(&"me".to_string())));
    assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()).expect("labels");
    assert_eq!(labels.get("kueue").map(String::as_str), Some("yes"));
    assert_eq!(labels.get(JOBSET_NAME).map(String::as_str), Some("train"), "existing keys are never removed");
    assert_eq!(cond(&plan, CONDITION_SUSPENDED), triple("False", "ResumeJobs", "jobset is resumed"));
}

// === startup order ===

#[test]
fn in_order_starts_each_replicated_job_after_the_previous_is_ready() {
    let js = jobset(2, json!({"startupPolicy": {"startupPolicyOrder": "InOrder"}}));
    let plan = run(&js, &[]);
    assert_eq!(created(&plan), ["train-leader-0"]);
    assert_eq!(
        cond(&plan, CONDITION_STARTUP_POLICY_IN_PROGRESS),
        triple("True", "InOrderStartupPolicyInProgress", "in order startup policy is in progress")
    );

    let plan = run(&js, &[child(&js, "leader", 0)]);
    assert!(created(&plan).is_empty(), "the leader is not ready yet");

    let plan = run(&js, &[ready(child(&js, "leader", 0))]);
    assert_eq!(created(&plan), ["train-workers-0", "train-workers-1"]);

    let plan = run(&js, &all_jobs(&js, ready));
    assert_eq!(
        cond(&plan, CONDITION_STARTUP_POLICY_COMPLETED),
        triple("True", "InOrderStartupPolicyCompleted", "in order startup policy has completed")
    );
}

#[test]
fn in_order_is_ignored_while_suspended() {
    let js = jobset(2, json!({"suspend": true, "startupPolicy": {"startupPolicyOrder": "InOrder"}}));
    assert_eq!(created(&run(&js, &[])).len(), 3);
}

#[test]
fn depends_on_gates_creation_on_ready_or_complete() {
    let mut js = jobset(1, json!({}));
    js.spec.replicated_jobs[1].depends_on =
        vec![serde_json::from_value(json!({"name": "leader", "status": "Complete"})).expect("dependsOn")];
    assert_eq!(created(&run(&js, &[])), ["train-leader-0"]);
    assert!(created(&run(&js, &[ready(child(&js, "leader", 0))])).is_empty());
    assert_eq!(created(&run(&js, &[completed(child(&js, "leader", 0))])), ["train-workers-0"]);

    js.spec.replicated_jobs[1].depends_on =
        vec![serde_json::from_value(json!({"name": "leader", "status": "Ready"})).expect("dependsOn")];
    assert_eq!(created(&run(&js, &[ready(child(&js, "leader", 0))])), ["train-workers-0"]);
    // Suspended: Jobs are created only as their dependencies allow (suspended Jobs are never ready).
    js.spec.suspend = Some(true);
    assert_eq!(created(&run(&js, &[])), ["train-leader-0"]);
}

// === gang admission: leader first ===

fn gang(js: JobSet) -> JobSet {
    let mut js = js;
    js.metadata.annotations = Some(BTreeMap::from([(ADMISSION_OWNS_SUSPEND.to_string(), "true".to_string())]));
    js
}

#[test]
fn gang_admitted_jobsets_release_the_leader_first() {
    let suspended = gang(jobset(2, json!({"suspend": true})));
    let created_suspended = all_jobs(&suspended, |j| j);
    let admitted = gang(jobset(2, json!({})));
    let resumed = |plan: &Plan| -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| if let Action::ResumeJob { job, .. } = a { job.metadata.name.clone() } else { None })
            .collect()
    };
    let plan = run(&admitted, &created_suspended);
    assert_eq!(resumed(&plan), ["train-leader-0"], "workers wait for the leader");

    let mut leader_up = created_suspended.clone();
    leader_up[0] = ready(child(&admitted, "leader", 0));
    let plan = run(&admitted, &leader_up);
    assert_eq!(resumed(&plan), ["train-workers-0", "train-workers-1"]);

    // Recreated after a group restart: workers are created held (suspended) until the leader is ready again.
    let plan = run(&admitted, &[]);
    let Some(Action::CreateJobs(jobs)) = plan.actions.iter().find(|a| matches!(a, Action::CreateJobs(_))) else {
        panic!()
    };
    let suspend: Vec<_> = jobs.iter().map(|j| j.spec.as_ref().and_then(|s| s.suspend)).collect();
    assert_eq!(suspend, [Some(false), Some(true), Some(true)]);
}

#[test]
fn leader_first_follows_the_coordinator_and_defers_to_explicit_order() {
    let js = gang(jobset(1, json!({"coordinator": {"replicatedJob": "workers"}})));
    let plan = run(&js, &[]);
    let Some(Action::CreateJobs(jobs)) = plan.actions.iter().find(|a| matches!(a, Action::CreateJobs(_))) else {
        panic!()
    };
    let suspend: Vec<_> = jobs.iter().map(|j| j.spec.as_ref().and_then(|s| s.suspend)).collect();
    assert_eq!(suspend, [Some(true), Some(false)], "the coordinator's ReplicatedJob leads");

    let js = gang(jobset(1, json!({"startupPolicy": {"startupPolicyOrder": "InOrder"}})));
    assert_eq!(created(&run(&js, &[])), ["train-leader-0"], "InOrder decides, not the gang hook");
}

// === feature gates ===

#[test]
fn elastic_jobset_scales_active_jobs_to_the_template() {
    let mut js = jobset(1, json!({}));
    let jobs = all_jobs(&js, ready);
    if let Some(spec) = js.spec.replicated_jobs[1].template.spec.as_mut() {
        spec.parallelism = Some(4);
        spec.completions = Some(4);
    }
    let gates = FeatureGates { elastic_jobset: true, ..FeatureGates::default() };
    let plan = run_with(&js, &jobs, gates);
    assert_eq!(
        plan.actions.iter().filter(|a| matches!(a, Action::ScaleJob { .. })).collect::<Vec<_>>(),
        [&Action::ScaleJob { name: "train-workers-0".into(), parallelism: 4, completions: 4 }]
    );
    assert!(!run(&js, &jobs).actions.iter().any(|a| matches!(a, Action::ScaleJob { .. })), "gate off");
}

#[test]
fn a_gangs_jobs_grow_only_as_far_as_their_pods_have_slots_and_shrink_at_once() {
    let mut js = gang(jobset(1, json!({})));
    let jobs = all_jobs(&js, ready);
    let scale_to = |js: &mut JobSet, pods: i32| {
        if let Some(spec) = js.spec.replicated_jobs[1].template.spec.as_mut() {
            (spec.parallelism, spec.completions) = (Some(pods), Some(pods));
        }
    };
    let gates = FeatureGates { elastic_jobset: true, ..FeatureGates::default() };
    let scaled = |js: &JobSet, placed: &PlacedPods| -> Vec<(String, i32)> {
        let input = Input { jobset: js, jobs: &jobs, service_exists: true, now: at(100), gates, placed: Some(placed) };
        plan(input)
            .expect("plans")
            .actions
            .into_iter()
            .filter_map(|a| match a {
                Action::ScaleJob { name, parallelism, completions } if parallelism == completions => {
                    Some((name, parallelism))
                }
                _ => None,
            })
            .collect()
    };
    let slots = |n: i32| PlacedPods::from([(("leader".to_owned(), 0), 1), (("workers".to_owned(), 0), n)]);
    scale_to(&mut js, 4);
    assert!(scaled(&js, &slots(2)).is_empty(), "no slot for the added pods yet: the Job keeps its 2 pods");
    assert!(scaled(&js, &PlacedPods::new()).is_empty(), "no Gang seen yet");
    assert_eq!(scaled(&js, &slots(3)), [("train-workers-0".to_owned(), 3)], "as far as the slots go");
    assert_eq!(scaled(&js, &slots(4)), [("train-workers-0".to_owned(), 4)]);
    scale_to(&mut js, 1);
    assert_eq!(scaled(&js, &slots(2)), [("train-workers-0".to_owned(), 1)], "shrinking needs no slot");

    // Recreated by a group restart while 2 added pods wait for room: the Job starts with the 2 that have slots.
    scale_to(&mut js, 4);
    let placed = slots(2);
    let input = Input { jobset: &js, jobs: &[], service_exists: true, now: at(100), gates, placed: Some(&placed) };
    let plan = plan(input).expect("plans");
    let Some(Action::CreateJobs(jobs)) = plan.actions.iter().find(|a| matches!(a, Action::CreateJobs(_))) else {
        panic!("no Jobs created: {:?}", plan.actions)
    };
    let workers = jobs.iter().find(|j| j.metadata.name.as_deref() == Some("train-workers-0")).expect("workers");
    let spec = workers.spec.as_ref().expect("spec");
    assert_eq!((spec.parallelism, spec.completions), (Some(2), Some(2)));
}

#[test]
fn restart_job_gate_stamps_the_per_job_attempt() {
    let js = with_status(
        jobset(2, json!({})),
        json!({"replicatedJobsStatus": [
        {"name": "workers", "ready": 0, "succeeded": 0, "failed": 0, "active": 0, "suspended": 0, "jobRestarts": [0, 3]}]}),
    );
    let family = children::Family::new(&js);
    let job = children::build_job(&family, js.status.as_ref().expect("status"), 1, 1, false, true);
    assert_eq!(job.metadata.labels.as_ref().and_then(|l| l.get(JOB_RESTART_ATTEMPT)).map(String::as_str), Some("3"));
}

#[test]
fn jobs_without_a_restart_attempt_label_are_replaced() {
    let js = jobset(1, json!({}));
    let mut stray = child(&js, "workers", 0);
    stray.metadata.labels.as_mut().map(|l| l.remove(RESTART_ATTEMPT));
    let plan = run(&js, &[child(&js, "leader", 0), stray]);
    assert_eq!(deleted(&plan), ["train-workers-0"]);
}

#[test]
fn exclusive_node_selector_strategy_pins_each_job() {
    let mut js = jobset(1, json!({}));
    js.metadata.annotations = Some(BTreeMap::from([
        (EXCLUSIVE_TOPOLOGY.to_string(), "cloud.google.com/gke-nodepool".to_string()),
        (NODE_SELECTOR_STRATEGY.to_string(), "true".to_string()),
    ]));
    let job = child(&js, "workers", 0);
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod");
    assert_eq!(
        pod.node_selector.as_ref().and_then(|s| s.get(NAMESPACED_JOB)).map(String::as_str),
        Some("ml_train-workers-0")
    );
    assert_eq!(pod.tolerations.as_ref().map(|t| t[0].key.clone()), Some(Some(NO_SCHEDULE_TAINT.to_string())));
    let annotations = job.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.get(EXCLUSIVE_TOPOLOGY).map(String::as_str), Some("cloud.google.com/gke-nodepool"));
    assert!(!job.metadata.labels.as_ref().expect("labels").contains_key(EXCLUSIVE_TOPOLOGY), "annotation only");
}

#[test]
fn job_spec_is_a_copy_of_the_template_with_suspend_set() {
    let js = jobset(1, json!({}));
    let job = child(&js, "workers", 0);
    let spec: &JobSpec = job.spec.as_ref().expect("spec");
    assert_eq!((spec.parallelism, spec.completions), (Some(2), Some(2)));
    assert_eq!(spec.template.spec.as_ref().map(|p| p.containers[0].image.clone()), Some(Some("busybox".into())));
}
