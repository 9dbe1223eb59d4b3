//! Suspend and resume of running Jobs (Kueue's preemption flow), and the start-up order of `dependsOn` chains and
//! `InOrder` when the JobSet starts suspended.

use super::*;

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

async fn set_suspend(ns: &TestNamespace<'_>, name: &str, suspend: bool) {
    let patch = Patch::Merge(json!({"spec": {"suspend": suspend}}));
    ns.api::<JobSet>().patch(name, &PatchParams::default(), &patch).await.expect("patch suspend");
}

/// The JobSet's Jobs, once `check` holds for all of them.
async fn wait_all(ns: &TestNamespace<'_>, name: &str, what: &str, check: impl Fn(&Job) -> bool) -> Vec<Job> {
    eventually(what, WAIT, || async {
        let jobs = jobs_of(ns, name).await;
        let failing: Vec<String> = jobs.iter().filter(|j| !check(j)).map(|j| j.name_any()).collect();
        if failing.is_empty() { Ok(jobs) } else { Err(format!("not yet: {failing:?}")) }
    })
    .await
    .expect(what)
}

fn pod_spec(job: &Job) -> &k8s_openapi::api::core::v1::PodSpec {
    job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
}

fn job_suspended_by_the_job_controller() -> Value {
    let t = now();
    json!({"status": {"active": 0, "ready": 0, "conditions": [
        {"type": "Suspended", "status": "True", "lastTransitionTime": t, "reason": "JobSuspended", "message": "Job suspended"}]}})
}

#[tokio::test]
async fn suspending_running_jobs_then_resuming_with_a_new_template_clears_start_time() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("preempt").await.expect("namespace");
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("js", json!({}))).await;
    for job in &wait_jobs(&ns, "js", 4, "0").await {
        make_ready(&ns, job).await;
    }

    // Preempted: every running Job is suspended; the Job controller stops the pods but keeps startTime.
    set_suspend(&ns, "js", true).await;
    let suspended_condition = wait_condition(&ns, "js", CONDITION_SUSPENDED, "True").await;
    assert_eq!(suspended_condition, ("True".into(), "SuspendedJobs".into(), "jobset is suspended".into()));
    for job in &wait_all(&ns, "js", "jobs suspended", suspended).await {
        patch_status(&ns, job, job_suspended_by_the_job_controller()).await;
    }
    eventually("suspended counters", WAIT, || async {
        let b = replicated_status(&get(&ns, "js").await, "b");
        if (b.suspended, b.active, b.ready) == (3, 0, 0) { Ok(()) } else { Err(format!("{b:?}")) }
    })
    .await
    .expect("counters");

    // Re-admitted elsewhere: new scheduling directives for b, then unsuspend.
    let current = get(&ns, "js").await;
    let mut rjobs = serde_json::to_value(&current.spec.replicated_jobs).expect("json");
    let pod = &mut rjobs[1]["template"]["spec"]["template"];
    pod["metadata"] = json!({"labels": {"kueue.x-k8s.io/podset": "b"}});
    pod["spec"]["nodeSelector"] = json!({"pool": "h100"});
    pod["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]);
    let patch = json!({"spec": {"suspend": false, "replicatedJobs": rjobs}});
    ns.api::<JobSet>().patch("js", &PatchParams::default(), &Patch::Merge(patch)).await.expect("resume");

    let resumed = wait_condition(&ns, "js", CONDITION_SUSPENDED, "False").await;
    assert_eq!(resumed, ("False".into(), "ResumeJobs".into(), "jobset is resumed".into()));
    let jobs = wait_all(&ns, "js", "jobs resumed", |j| !suspended(j)).await;
    for job in &jobs {
        // Kubernetes only accepts template changes on a suspended Job that has not started: startTime was cleared.
        assert_eq!(job.status.as_ref().and_then(|s| s.start_time.as_ref()), None, "{}", job.name_any());
    }
    let b0 = pod_spec(&jobs[1]);
    assert_eq!(b0.node_selector.as_ref().and_then(|n| n.get("pool")).map(String::as_str), Some("h100"));
    assert_eq!(b0.tolerations.as_ref().map(Vec::len), Some(1));
    let labels = jobs[1].spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
    let labels = labels.expect("pod labels");
    assert_eq!(labels.get("kueue.x-k8s.io/podset").map(String::as_str), Some("b"));
    assert_eq!(labels.get(JOB_INDEX).map(String::as_str), Some("0"), "merged, nothing removed");
    assert_eq!(pod_spec(&jobs[0]).node_selector, None, "a's template did not change");
    // Each Job was resumed in one pass: no update conflicted with the reconciler's own status write.
    assert_eq!(reconciler.reconcile_errors("resume_job"), 0);
    assert_eq!(get(&ns, "js").await.status.expect("status").restarts, 0, "suspend/resume is not a restart");
}

#[tokio::test]
async fn depends_on_chain_starts_after_resume_one_replicated_job_at_a_time() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("depends").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    // a → b (when a is Ready) → c (when b is Complete); created suspended.
    let mut js = jobset("js", json!({"suspend": true}));
    let mut c = js.spec.replicated_jobs[0].clone();
    c.name = "c".into();
    c.depends_on = vec![serde_json::from_value(json!({"name": "b", "status": "Complete"})).expect("dependsOn")];
    js.spec.replicated_jobs[1].depends_on =
        vec![serde_json::from_value(json!({"name": "a", "status": "Ready"})).expect("dependsOn")];
    js.spec.replicated_jobs.push(c);
    create(&ns, &js).await;

    // Suspended Jobs are never ready, so only a's Job exists, suspended.
    let a = wait_jobs(&ns, "js", 1, "0").await;
    assert!(suspended(&a[0]));
    wait_condition(&ns, "js", CONDITION_SUSPENDED, "True").await;
    settle().await;
    assert_eq!(jobs_of(&ns, "js").await.len(), 1);

    set_suspend(&ns, "js", false).await;
    wait_all(&ns, "js", "a resumed", |j| !suspended(j)).await;
    wait_condition(&ns, "js", CONDITION_SUSPENDED, "False").await;
    settle().await;
    assert_eq!(jobs_of(&ns, "js").await.len(), 1, "b waits for a to be ready");

    make_ready(&ns, &a[0]).await;
    let ab = wait_jobs(&ns, "js", 4, "0").await;
    assert!(ab.iter().all(|j| !suspended(j)), "created running");
    for job in &ab[1..3] {
        complete(&ns, job).await;
    }
    settle().await;
    assert_eq!(jobs_of(&ns, "js").await.len(), 4, "c waits for all of b to complete");
    complete(&ns, &ab[3]).await;
    let all = wait_jobs(&ns, "js", 5, "0").await;
    assert_eq!(all[4].name_any(), "js-c-0");
    assert_eq!(all[4].labels().get(JOB_GLOBAL_INDEX).map(String::as_str), Some("4"));

    complete(&ns, &all[0]).await;
    complete(&ns, &all[4]).await;
    wait_condition(&ns, "js", CONDITION_COMPLETED, "True").await;
}

#[tokio::test]
async fn in_order_creates_all_jobs_while_suspended_and_resumes_them_in_order() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("inorder-suspend").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("js", json!({"suspend": true, "startupPolicy": {"startupPolicyOrder": "InOrder"}}))).await;
    // The order does not apply while suspended: every Job exists, suspended.
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    assert!(jobs.iter().all(suspended));
    wait_condition(&ns, "js", CONDITION_SUSPENDED, "True").await;
    assert_eq!(condition(&get(&ns, "js").await, CONDITION_STARTUP_POLICY_IN_PROGRESS), None);

    set_suspend(&ns, "js", false).await;
    let progress = wait_condition(&ns, "js", CONDITION_STARTUP_POLICY_IN_PROGRESS, "True").await;
    assert_eq!(
        progress,
        ("True".into(), "InOrderStartupPolicyInProgress".into(), "in order startup policy is in progress".into())
    );
    let jobs = wait_all(&ns, "js", "a resumed", |j| j.name_any() != "js-a-0" || !suspended(j)).await;
    settle().await;
    let still: Vec<String> = jobs_of(&ns, "js").await.iter().filter(|j| suspended(j)).map(|j| j.name_any()).collect();
    assert_eq!(still, ["js-b-0", "js-b-1", "js-b-2"], "b waits until a is ready");

    make_ready(&ns, &jobs[0]).await;
    wait_all(&ns, "js", "b resumed", |j| !suspended(j)).await;
    for job in &jobs[1..] {
        make_ready(&ns, job).await;
    }
    let done = wait_condition(&ns, "js", CONDITION_STARTUP_POLICY_COMPLETED, "True").await;
    assert_eq!(
        done,
        ("True".into(), "InOrderStartupPolicyCompleted".into(), "in order startup policy has completed".into())
    );
    let js = get(&ns, "js").await;
    assert_eq!(condition(&js, CONDITION_STARTUP_POLICY_IN_PROGRESS).map(|c| c.0), Some("False".into()));
    assert_eq!(condition(&js, CONDITION_SUSPENDED).map(|c| c.1), Some("ResumeJobs".into()));
}
