//! The JobSet reconciler against a real kube-apiserver (etcd + apiserver only, like upstream's envtest suite):
//! the test plays the Job controller by writing Job status, and checks Jobs, Services, PVCs, status counters,
//! conditions, events and metrics.
//!
//! This file holds the fixture, the helpers and the basic lifecycle; the modules below hold the rest. All of them
//! share one control plane (one binary), each test in its own namespace.
//!
//! Run one: `cargo test -p muster-tests --test reconciler -- <name>` (build the control plane first with
//! `tests/build-control-plane.sh`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use muster_api::JobSet;
use muster_api::jobset::ReplicatedJobStatus;
use muster_api::keys::*;
use muster_reconciler::plan::FeatureGates;
use muster_tests::{ClusterConfig, InProcessReconciler, SharedCluster, TestNamespace, eventually};
use serde_json::{Value, json};

mod failure_policy;
mod gates;
mod ordering;
mod process;
mod restarts;
mod success;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds")
}

static CLUSTER: SharedCluster =
    SharedCluster::new(|| ClusterConfig::apiserver_only().crd(crd_dir().join("jobset.x-k8s.io_jobsets.yaml")));

const WAIT: Duration = Duration::from_secs(20);

/// Upstream's integration fixture, with DNS hostnames on and an explicit success policy (no webhook runs).
fn jobset(name: &str, extra: Value) -> JobSet {
    let template = |replicas: i32| {
        json!({"replicas": replicas, "template": {"spec": {"parallelism": 1, "completions": 1, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:latest"}]}}}}})
    };
    let mut a = template(1);
    a["name"] = json!("a");
    let mut b = template(3);
    b["name"] = json!("b");
    let mut spec = json!({
        "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
        "successPolicy": {"operator": "All"},
        "replicatedJobs": [a, b]
    });
    merge(&mut spec, extra);
    serde_json::from_value(json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name}, "spec": spec}))
    .expect("valid JobSet")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn create(ns: &TestNamespace<'_>, js: &JobSet) -> JobSet {
    ns.api::<JobSet>().create(&PostParams::default(), js).await.expect("JobSet accepted")
}

async fn jobs_of(ns: &TestNamespace<'_>, name: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&format!("{JOBSET_NAME}={name}"));
    let mut jobs = ns.api::<Job>().list(&lp).await.expect("list jobs").items;
    jobs.sort_by_key(|j| j.name_any());
    jobs
}

async fn wait_jobs(ns: &TestNamespace<'_>, name: &str, want: usize, attempt: &str) -> Vec<Job> {
    eventually(&format!("{want} jobs of attempt {attempt}"), WAIT, || async {
        let jobs: Vec<Job> = jobs_of(ns, name)
            .await
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| j.labels().get(RESTART_ATTEMPT).map(String::as_str) == Some(attempt))
            .collect();
        if jobs.len() == want { Ok(jobs) } else { Err(format!("{} jobs", jobs.len())) }
    })
    .await
    .expect("jobs created")
}

/// The claims a Job's pods mount.
fn claim_volumes(job: &Job) -> Vec<String> {
    let volumes = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.volumes.clone());
    volumes.unwrap_or_default().into_iter().filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name)).collect()
}

async fn get(ns: &TestNamespace<'_>, name: &str) -> JobSet {
    ns.api::<JobSet>().get(name).await.expect("get JobSet")
}

fn condition(js: &JobSet, type_: &str) -> Option<(String, String, String)> {
    js.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_condition(ns: &TestNamespace<'_>, name: &str, type_: &str, status: &str) -> (String, String, String) {
    eventually(&format!("{type_}={status}"), WAIT, || async {
        let js = get(ns, name).await;
        match condition(&js, type_) {
            Some(c) if c.0 == status => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("condition reached")
}

fn now() -> String {
    Timestamp::now().to_string()
}

/// The Job's start time once set (it is immutable from then on), else now.
async fn start_time(ns: &TestNamespace<'_>, job: &Job) -> String {
    let current = ns.api::<Job>().get(&job.name_any()).await.expect("get job");
    current.status.and_then(|s| s.start_time).map_or_else(now, |t| t.0.to_string())
}

/// What the Job controller writes when a Job completes.
async fn complete(ns: &TestNamespace<'_>, job: &Job) {
    let start = start_time(ns, job).await;
    let t = now();
    let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
    let status = json!({"status": {"startTime": start, "completionTime": t, "active": 0, "ready": 0,
        "succeeded": completions, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": t, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
        {"type": "Complete", "status": "True", "lastTransitionTime": t, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"}]}});
    patch_status(ns, job, status).await;
}

/// What the Job controller writes when a Job fails.
async fn fail(ns: &TestNamespace<'_>, job: &Job, reason: &str, message: &str) {
    fail_at(ns, job, reason, message, Timestamp::now()).await;
}

/// A failure at a given time: the failure policy names the earliest-failed Job.
async fn fail_at(ns: &TestNamespace<'_>, job: &Job, reason: &str, message: &str, at: Timestamp) {
    let start = start_time(ns, job).await;
    let t = at.to_string();
    let status = json!({"status": {"startTime": start, "active": 0, "ready": 0, "failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "lastTransitionTime": t, "reason": reason, "message": message},
        {"type": "Failed", "status": "True", "lastTransitionTime": t, "reason": reason, "message": message}]}});
    patch_status(ns, job, status).await;
}

async fn make_ready(ns: &TestNamespace<'_>, job: &Job) {
    let status = json!({"status": {"startTime": start_time(ns, job).await, "active": 1, "ready": 1}});
    patch_status(ns, job, status).await;
}

async fn patch_status(ns: &TestNamespace<'_>, job: &Job, status: Value) {
    ns.api::<Job>()
        .patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap_or_else(|e| panic!("patch status of {}: {e}", job.name_any()));
}

/// Without a garbage collector, foreground deletion never finishes; do what it would.
async fn finish_foreground_deletion(ns: &TestNamespace<'_>, name: &str) {
    for job in jobs_of(ns, name).await {
        if job.metadata.deletion_timestamp.is_some() {
            finish_deletion_of(ns, &job.name_any()).await;
        }
    }
}

/// Lets one terminating Job go, as the garbage collector would once its pods are gone.
async fn finish_deletion_of(ns: &TestNamespace<'_>, job: &str) {
    let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let _ = ns.api::<Job>().patch(job, &PatchParams::default(), &patch).await;
}

/// Names of the JobSet's Jobs that are being deleted.
async fn terminating(ns: &TestNamespace<'_>, name: &str) -> Vec<String> {
    let jobs = jobs_of(ns, name).await;
    jobs.into_iter().filter(|j| j.metadata.deletion_timestamp.is_some()).map(|j| j.name_any()).collect()
}

async fn wait_terminating(ns: &TestNamespace<'_>, name: &str, want: &[&str]) {
    eventually(&format!("{want:?} terminating"), WAIT, || async {
        let now = terminating(ns, name).await;
        if now == want { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await
    .expect("jobs terminating");
}

/// Names of the JobSet's Jobs that are not being deleted.
async fn live(ns: &TestNamespace<'_>, name: &str) -> Vec<String> {
    let jobs = jobs_of(ns, name).await;
    jobs.into_iter().filter(|j| j.metadata.deletion_timestamp.is_none()).map(|j| j.name_any()).collect()
}

/// Long enough for a reconciler that would act on the last change to have acted (it reacts in milliseconds).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn replicated_status(js: &JobSet, rjob: &str) -> ReplicatedJobStatus {
    js.status
        .as_ref()
        .and_then(|s| s.replicated_jobs_status.iter().find(|r| r.name == rjob).cloned())
        .unwrap_or_else(|| panic!("no status for {rjob}"))
}

async fn events(ns: &TestNamespace<'_>, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(ns.client(), ns.name());
    let mut out: Vec<(String, String, String)> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

async fn wait_event(ns: &TestNamespace<'_>, name: &str, reason: &str) -> (String, String, String) {
    eventually(&format!("event {reason}"), WAIT, || async {
        let all = events(ns, name).await;
        all.iter().find(|e| e.1 == reason).cloned().ok_or_else(|| format!("{all:?}"))
    })
    .await
    .expect("event emitted")
}

#[tokio::test]
async fn creates_jobs_service_and_status_then_completes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("create").await.expect("namespace");
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("test-js", json!({}))).await;

    let jobs = wait_jobs(&ns, "test-js", 4, "0").await;
    let names: Vec<_> = jobs.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, ["test-js-a-0", "test-js-b-0", "test-js-b-1", "test-js-b-2"]);
    let b2 = &jobs[3];
    for (key, value) in [
        (REPLICATED_JOB_NAME, "b"),
        (REPLICATED_JOB_REPLICAS, "3"),
        (GLOBAL_REPLICAS, "4"),
        (JOB_INDEX, "2"),
        (JOB_GLOBAL_INDEX, "3"),
        (GROUP_NAME, "default"),
        (RESTART_ATTEMPT, "0"),
    ] {
        assert_eq!(b2.labels().get(key).map(String::as_str), Some(value), "{key}");
    }
    let pod = b2.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec");
    assert_eq!(pod.subdomain.as_deref(), Some("test-js"));

    let service = eventually("headless service", WAIT, || async {
        ns.api::<Service>().get_opt("test-js").await.map_err(|e| e.to_string())?.ok_or_else(|| "absent".to_string())
    })
    .await
    .expect("service created");
    assert_eq!(service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), Some("None"));

    for job in &jobs {
        make_ready(&ns, job).await;
    }
    eventually("ready counters", WAIT, || async {
        let js = get(&ns, "test-js").await;
        let b = js.status.as_ref().and_then(|s| s.replicated_jobs_status.iter().find(|r| r.name == "b").cloned());
        match b {
            Some(b) if b.ready == 3 && b.active == 3 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("status counters");

    for job in &jobs {
        complete(&ns, job).await;
    }
    let completed = wait_condition(&ns, "test-js", CONDITION_COMPLETED, "True").await;
    assert_eq!(completed, ("True".into(), "AllJobsCompleted".into(), "jobset completed successfully".into()));
    assert_eq!(get(&ns, "test-js").await.status.and_then(|s| s.terminal_state).as_deref(), Some("Completed"));
    let event = wait_event(&ns, "test-js", "AllJobsCompleted").await;
    assert_eq!(event.0, "Normal");
    assert_eq!(reconciler.completed_total(ns.name(), "test-js"), 1);
}

#[tokio::test]
async fn failure_without_policy_fails_the_jobset() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("fail").await.expect("namespace");
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("js", json!({}))).await;
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    fail(&ns, &jobs[1], "BackoffLimitExceeded", "Job has reached the specified backoff limit").await;
    let failed = wait_condition(&ns, "js", CONDITION_FAILED, "True").await;
    assert_eq!(
        failed,
        (
            "True".into(),
            "FailedJobs".into(),
            "jobset failed due to one or more job failures (first failed job: js-b-0)".into()
        )
    );
    assert_eq!(wait_event(&ns, "js", "FailedJobs").await.0, "Warning");
    assert_eq!(reconciler.failed_total(ns.name(), "js"), 1);
    // Finished: the still-active Jobs are deleted, the failed one is kept.
    eventually("active jobs deleted", WAIT, || async {
        let live: Vec<String> = jobs_of(&ns, "js")
            .await
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .map(|j| j.name_any())
            .collect();
        if live == ["js-b-0"] { Ok(()) } else { Err(format!("{live:?}")) }
    })
    .await
    .expect("active jobs deleted");
}

#[tokio::test]
async fn restart_jobset_recreates_every_job_with_the_next_attempt() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("restart").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(
        &ns,
        &jobset(
            "js",
            json!({"failurePolicy": {"maxRestarts": 1, "rules": [
        {"name": "leaderFails", "action": "FailJobSet", "targetReplicatedJobs": ["a"]},
        {"name": "workerFails", "action": "RestartJobSet", "onJobFailureReasons": ["BackoffLimitExceeded"]}]}}),
        ),
    )
    .await;
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    fail(&ns, &jobs[2], "BackoffLimitExceeded", "boom").await;

    let restarting = wait_condition(&ns, "js", CONDITION_RESTARTING_JOBSET, "True").await;
    assert_eq!(
        restarting,
        (
            "True".into(),
            "FailurePolicy_workerFails".into(),
            "applying RestartJobSet failure policy action (first failed job: js-b-1)".into()
        )
    );
    let status = get(&ns, "js").await.status.expect("status");
    assert_eq!((status.restarts, status.restarts_count_towards_max), (1, Some(1)));
    wait_event(&ns, "js", "RestartJobSetFailurePolicyAction").await;

    // The old Jobs are deleted in the foreground; once gone, the new attempt is created.
    eventually("old jobs terminating", WAIT, || async {
        let terminating = jobs_of(&ns, "js").await.iter().filter(|j| j.metadata.deletion_timestamp.is_some()).count();
        if terminating == 4 { Ok(()) } else { Err(format!("{terminating} terminating")) }
    })
    .await
    .expect("old attempt deleted");
    finish_foreground_deletion(&ns, "js").await;
    let jobs = wait_jobs(&ns, "js", 4, "1").await;
    for job in &jobs {
        make_ready(&ns, job).await;
    }
    let ready = wait_condition(&ns, "js", CONDITION_RESTARTING_JOBSET, "False").await;
    assert_eq!(ready, ("False".into(), "JobsReady".into(), "all jobs are ready".into()));

    // Budget spent: the next failure fails the JobSet.
    fail(&ns, &jobs[1], "BackoffLimitExceeded", "boom").await;
    let failed = wait_condition(&ns, "js", CONDITION_FAILED, "True").await;
    assert_eq!(failed.1, "ReachedMaxRestarts");
    assert_eq!(failed.2, "jobset failed due to reaching max number of restarts (first failed job: js-b-0)");
}

#[tokio::test]
async fn suspend_and_resume_propagate_template_changes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("suspend").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("js", json!({"suspend": true}))).await;
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    assert!(jobs.iter().all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true)));
    let suspended = wait_condition(&ns, "js", CONDITION_SUSPENDED, "True").await;
    assert_eq!(suspended, ("True".into(), "SuspendedJobs".into(), "jobset is suspended".into()));

    // As Kueue or Muster's admission would: add a node selector to b's pods, then unsuspend.
    let current = get(&ns, "js").await;
    let mut rjobs = serde_json::to_value(&current.spec.replicated_jobs).expect("json");
    rjobs[1]["template"]["spec"]["template"]["spec"]["nodeSelector"] = json!({"pool": "h100"});
    let patch = json!({"spec": {"suspend": false, "replicatedJobs": rjobs}});
    ns.api::<JobSet>().patch("js", &PatchParams::default(), &Patch::Merge(patch)).await.expect("resume");
    let resumed = wait_condition(&ns, "js", CONDITION_SUSPENDED, "False").await;
    assert_eq!(resumed, ("False".into(), "ResumeJobs".into(), "jobset is resumed".into()));
    let jobs = eventually("jobs resumed", WAIT, || async {
        let jobs = jobs_of(&ns, "js").await;
        if jobs.iter().all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(false)) {
            Ok(jobs)
        } else {
            Err("some jobs still suspended".to_string())
        }
    })
    .await
    .expect("resumed");
    let selector =
        |j: &Job| j.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.node_selector.clone());
    assert_eq!(selector(&jobs[1]), Some(BTreeMap::from([("pool".to_string(), "h100".to_string())])));
    assert_eq!(selector(&jobs[0]), None);
}

#[tokio::test]
async fn in_order_startup_creates_replicated_jobs_one_after_another() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("inorder").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("js", json!({"startupPolicy": {"startupPolicyOrder": "InOrder"}}))).await;
    let first = wait_jobs(&ns, "js", 1, "0").await;
    let progress = wait_condition(&ns, "js", CONDITION_STARTUP_POLICY_IN_PROGRESS, "True").await;
    assert_eq!(progress.1, "InOrderStartupPolicyInProgress");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(jobs_of(&ns, "js").await.len(), 1, "b waits until a is ready");
    make_ready(&ns, &first[0]).await;
    let all = wait_jobs(&ns, "js", 4, "0").await;
    for job in &all[1..] {
        make_ready(&ns, job).await;
    }
    let done = wait_condition(&ns, "js", CONDITION_STARTUP_POLICY_COMPLETED, "True").await;
    assert_eq!(done.2, "in order startup policy has completed");
    assert_eq!(
        condition(&get(&ns, "js").await, CONDITION_STARTUP_POLICY_IN_PROGRESS).map(|c| c.0),
        Some("False".into())
    );
}

#[tokio::test]
async fn volume_claims_by_retention_policy() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("pvc").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let mut js = jobset(
        "js",
        json!({"volumeClaimPolicies": [
        {"templates": [{"metadata": {"name": "ckpt"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
         "retentionPolicy": {"whenDeleted": "Retain"}},
        {"templates": [{"metadata": {"name": "scratch"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
         "retentionPolicy": {"whenDeleted": "Delete"}}]}),
    );
    let pod = js.spec.replicated_jobs[1].template.spec.as_mut().and_then(|s| s.template.spec.as_mut()).expect("pod");
    pod.containers[0].volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "ckpt", "mountPath": "/ckpt"})).expect("mount"),
        serde_json::from_value(json!({"name": "scratch", "mountPath": "/scratch"})).expect("mount"),
    ]);
    create(&ns, &js).await;
    let claims: Api<PersistentVolumeClaim> = ns.api();
    let (ckpt, scratch) = eventually("claims", WAIT, || async {
        let c = claims.get_opt("ckpt-js").await.map_err(|e| e.to_string())?;
        let s = claims.get_opt("scratch-js").await.map_err(|e| e.to_string())?;
        match (c, s) {
            (Some(c), Some(s)) => Ok((c, s)),
            other => Err(format!("{:?}", (other.0.is_some(), other.1.is_some()))),
        }
    })
    .await
    .expect("claims created");
    assert!(ckpt.metadata.owner_references.is_none(), "Retain: not owned, survives the JobSet");
    assert_eq!(scratch.owner_references().len(), 1, "Delete: owned, collected with the JobSet");
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    assert_eq!(claim_volumes(&jobs[1]), ["ckpt-js", "scratch-js"]);
}

#[tokio::test]
async fn managed_by_another_controller_is_left_alone_and_foreign_jobs_are_ignored() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("managedby").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("other", json!({"managedBy": "kueue.x-k8s.io/multikueue"}))).await;
    // A Job that looks like ours by name and label but has no owner reference to the JobSet.
    let foreign: Job = serde_json::from_value(json!({"metadata": {"name": "mine-a-0", "labels": {JOBSET_NAME: "mine"}},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .expect("job");
    ns.api::<Job>().create(&PostParams::default(), &foreign).await.expect("foreign job");
    create(&ns, &jobset("mine", json!({}))).await;
    // "mine" gets its other Jobs; its own a-0 collides with the foreign Job, which is never adopted or counted.
    wait_jobs(&ns, "mine", 3, "0").await;
    let a0 = ns.api::<Job>().get("mine-a-0").await.expect("job");
    assert!(a0.owner_references().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(jobs_of(&ns, "other").await.is_empty(), "managedBy elsewhere: no Jobs");
    assert!(get(&ns, "other").await.status.is_none(), "managedBy elsewhere: no status writes");
    // The collision is a creation failure, reported as upstream reports it.
    let event = wait_event(&ns, "mine", EVENT_JOB_CREATION_FAILED).await;
    assert!(event.2.contains("job \"mine-a-0\" creation failed with error"), "{}", event.2);
    // ...and the foreign Job is neither adopted nor deleted.
    let a0 = ns.api::<Job>().get("mine-a-0").await.expect("foreign job still there");
    assert!(a0.owner_references().is_empty() && a0.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn invalid_job_template_emits_job_creation_failed() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("invalid").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    // restartPolicy Always is valid in a pod template but not in a Job: the Job create is rejected.
    let mut js = jobset("js", json!({}));
    if let Some(pod) = js.spec.replicated_jobs[0].template.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.restart_policy = Some("Always".into());
    }
    create(&ns, &js).await;
    let event = wait_event(&ns, "js", EVENT_JOB_CREATION_FAILED).await;
    assert_eq!(event.0, "Warning");
    assert!(event.2.contains("job \"js-a-0\" creation failed with error"), "{}", event.2);
}

#[tokio::test]
async fn deleted_service_is_recreated_and_ttl_deletes_finished_jobsets() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("svc-ttl").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("js", json!({"ttlSecondsAfterFinished": 2}))).await;
    let services: Api<Service> = ns.api();
    let has_service =
        || async { services.get_opt("js").await.map_err(|e| e.to_string())?.ok_or_else(|| "absent".to_string()) };
    eventually("service", WAIT, has_service).await.expect("service created");
    services.delete("js", &DeleteParams::default()).await.expect("delete service");
    // Any change to the JobSet's Jobs triggers a reconcile that recreates it.
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    make_ready(&ns, &jobs[0]).await;
    eventually("service recreated", WAIT, has_service).await.expect("service recreated");

    for job in &jobs {
        complete(&ns, job).await;
    }
    wait_condition(&ns, "js", CONDITION_COMPLETED, "True").await;
    eventually("JobSet deleted after its TTL", WAIT, || async {
        match ns.api::<JobSet>().get_opt("js").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(js) if js.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await
    .expect("TTL honoured");
}

#[tokio::test]
async fn generate_name_coordinator_and_depends_on() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("genname").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let mut js = jobset("", json!({"coordinator": {"replicatedJob": "a", "jobIndex": 0, "podIndex": 0}}));
    js.metadata.name = None;
    js.metadata.generate_name = Some("train-".into());
    js.spec.replicated_jobs[1].depends_on =
        vec![serde_json::from_value(json!({"name": "a", "status": "Complete"})).expect("dependsOn")];
    let created = create(&ns, &js).await;
    let name = created.name_any();
    assert!(name.starts_with("train-") && name.len() == "train-".len() + 5, "{name}");

    // Only a's Job exists until it completes; the subdomain and coordinator use the generated name.
    let first = wait_jobs(&ns, &name, 1, "0").await;
    let coordinator = format!("{name}-a-0-0.{name}");
    assert_eq!(first[0].labels().get(COORDINATOR), Some(&coordinator));
    assert_eq!(first[0].annotations().get(COORDINATOR), Some(&coordinator));
    let pod = first[0].spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod");
    assert_eq!(pod.subdomain.as_deref(), Some(name.as_str()));
    // Pods learn the coordinator through the Downward API: it is on the pod template too.
    let pod_meta = first[0].spec.as_ref().and_then(|s| s.template.metadata.as_ref()).expect("pod metadata");
    assert_eq!(pod_meta.labels.as_ref().and_then(|l| l.get(COORDINATOR)), Some(&coordinator));
    assert_eq!(pod_meta.annotations.as_ref().and_then(|a| a.get(COORDINATOR)), Some(&coordinator));
    make_ready(&ns, &first[0]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(jobs_of(&ns, &name).await.len(), 1, "b depends on a being Complete, not Ready");
    complete(&ns, &first[0]).await;
    let all = wait_jobs(&ns, &name, 4, "0").await;
    assert!(all.iter().all(|j| j.labels().get(COORDINATOR) == Some(&coordinator)));
    assert!(ns.api::<Service>().get_opt(&name).await.expect("get").is_some(), "service named after the JobSet");
}

#[tokio::test]
async fn retained_claim_is_reused_by_the_next_jobset() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("reuse").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let with_claim = |name: &str| {
        let mut js = jobset(
            name,
            json!({"volumeClaimPolicies": [{"templates": [{"metadata": {"name": "ckpt"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            "retentionPolicy": {"whenDeleted": "Retain"}}]}),
        );
        let pod =
            js.spec.replicated_jobs[0].template.spec.as_mut().and_then(|s| s.template.spec.as_mut()).expect("pod");
        pod.containers[0].volume_mounts =
            Some(vec![serde_json::from_value(json!({"name": "ckpt", "mountPath": "/ckpt"})).expect("mount")]);
        js
    };
    create(&ns, &with_claim("run")).await;
    let claims: Api<PersistentVolumeClaim> = ns.api();
    let first = eventually("claim", WAIT, || async {
        claims.get_opt("ckpt-run").await.map_err(|e| e.to_string())?.ok_or_else(|| "absent".to_string())
    })
    .await
    .expect("claim created");
    ns.api::<JobSet>().delete("run", &DeleteParams::default()).await.expect("delete");
    eventually("JobSet gone", WAIT, || async {
        match ns.api::<JobSet>().get_opt("run").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await
    .expect("deleted");
    // Same name again: the retained claim is mounted as it is, not recreated.
    create(&ns, &with_claim("run")).await;
    let jobs = wait_jobs(&ns, "run", 4, "0").await;
    assert_eq!(claim_volumes(&jobs[0]), ["ckpt-run"]);
    let again = claims.get("ckpt-run").await.expect("claim");
    assert_eq!(again.uid(), first.uid(), "the same claim, carrying the previous run's checkpoint");
}
