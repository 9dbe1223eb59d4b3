//! Success policies: `All` and `Any`, each with and without `targetReplicatedJobs`.

use super::*;

/// Completes `jobs` (by name) of JobSet `name`.
async fn complete_named(ns: &TestNamespace<'_>, name: &str, which: &[&str]) {
    for job in jobs_of(ns, name).await.iter().filter(|j| which.contains(&j.name_any().as_str())) {
        complete(ns, job).await;
    }
}

/// The JobSet completed as upstream reports it, and its still-active Jobs were deleted.
async fn assert_completed(ns: &TestNamespace<'_>, reconciler: &InProcessReconciler, name: &str, kept: &[&str]) {
    let completed = wait_condition(ns, name, CONDITION_COMPLETED, "True").await;
    assert_eq!(completed, ("True".into(), "AllJobsCompleted".into(), "jobset completed successfully".into()));
    let js = get(ns, name).await;
    assert_eq!(js.status.as_ref().and_then(|s| s.terminal_state.as_deref()), Some("Completed"));
    // RestartingJobSet=False is only ever an update of an existing condition, never added on its own.
    assert_eq!(condition(&js, CONDITION_RESTARTING_JOBSET), None);
    assert_eq!(wait_event(ns, name, "AllJobsCompleted").await.0, "Normal");
    assert_eq!(reconciler.completed_total(ns.name(), name), 1);
    assert_eq!(reconciler.failed_total(ns.name(), name), 0);
    eventually("active jobs deleted after completion", WAIT, || async {
        let now = live(ns, name).await;
        if now == kept { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await
    .expect("only finished jobs kept");
}

#[tokio::test]
async fn success_policies_all_and_any_with_and_without_targets() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("success").await.expect("namespace");
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("any", json!({"successPolicy": {"operator": "Any"}}))).await;
    create(&ns, &jobset("any-a", json!({"successPolicy": {"operator": "Any", "targetReplicatedJobs": ["a"]}}))).await;
    create(&ns, &jobset("all-b", json!({"successPolicy": {"operator": "All", "targetReplicatedJobs": ["b"]}}))).await;
    for name in ["any", "any-a", "all-b"] {
        wait_jobs(&ns, name, 4, "0").await;
    }

    // Any, no targets: the first Job to succeed, from any ReplicatedJob, completes the JobSet.
    complete_named(&ns, "any", &["any-b-1"]).await;
    assert_completed(&ns, &reconciler, "any", &["any-b-1"]).await;
    let b = replicated_status(&get(&ns, "any").await, "b");
    assert_eq!((b.succeeded, b.failed), (1, 0));

    // Any of a: successes outside the targets do not count...
    complete_named(&ns, "any-a", &["any-a-b-0", "any-a-b-1", "any-a-b-2"]).await;
    eventually("b's successes counted", WAIT, || async {
        let b = replicated_status(&get(&ns, "any-a").await, "b");
        if b.succeeded == 3 { Ok(()) } else { Err(format!("{b:?}")) }
    })
    .await
    .expect("status counters");
    settle().await;
    assert_eq!(condition(&get(&ns, "any-a").await, CONDITION_COMPLETED), None, "b is not a target");
    // ...the target's does.
    complete_named(&ns, "any-a", &["any-a-a-0"]).await;
    assert_completed(&ns, &reconciler, "any-a", &["any-a-a-0", "any-a-b-0", "any-a-b-1", "any-a-b-2"]).await;

    // All of b: two of three is not enough; the third completes it while a's Job is still running, which is then
    // deleted.
    complete_named(&ns, "all-b", &["all-b-b-0", "all-b-b-1"]).await;
    eventually("two of b succeeded", WAIT, || async {
        let b = replicated_status(&get(&ns, "all-b").await, "b");
        if b.succeeded == 2 { Ok(()) } else { Err(format!("{b:?}")) }
    })
    .await
    .expect("status counters");
    settle().await;
    assert_eq!(condition(&get(&ns, "all-b").await, CONDITION_COMPLETED), None, "one of b still running");
    complete_named(&ns, "all-b", &["all-b-b-2"]).await;
    assert_completed(&ns, &reconciler, "all-b", &["all-b-b-0", "all-b-b-1", "all-b-b-2"]).await;
    assert_eq!(terminating(&ns, "all-b").await, ["all-b-a-0"]);
}
