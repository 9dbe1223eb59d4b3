//! Group restarts: `Recreate` against `BlockingRecreate`, the default action when no rule matches, and every
//! transition of the `RestartingJobSet` condition.

use super::*;

/// Fails `<name>-b-0` and checks the default action (no rules) restarted the JobSet.
async fn fail_and_expect_default_restart(ns: &TestNamespace<'_>, name: &str) {
    let jobs = wait_jobs(ns, name, 4, "0").await;
    fail(ns, &jobs[1], "BackoffLimitExceeded", "Job has reached the specified backoff limit").await;
    let message = format!("applying RestartJobSet failure policy action (first failed job: {name}-b-0)");
    let restarting = wait_condition(ns, name, CONDITION_RESTARTING_JOBSET, "True").await;
    assert_eq!(restarting, ("True".into(), "DefaultFailurePolicy".into(), message.clone()));
    let status = get(ns, name).await.status.expect("status");
    assert_eq!((status.restarts, status.restarts_count_towards_max), (1, Some(1)));
    assert_eq!(
        wait_event(ns, name, "RestartJobSetFailurePolicyAction").await,
        ("Warning".into(), "RestartJobSetFailurePolicyAction".into(), message)
    );
    let all: Vec<String> = ["a-0", "b-0", "b-1", "b-2"].iter().map(|j| format!("{name}-{j}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_terminating(ns, name, &all).await;
}

async fn restarting(ns: &TestNamespace<'_>, name: &str) -> Option<(String, String, String)> {
    condition(&get(ns, name).await, CONDITION_RESTARTING_JOBSET)
}

#[tokio::test]
async fn recreate_replaces_each_job_once_gone_blocking_recreate_waits_for_all() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("recreate").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(&ns, &jobset("recreate", json!({"failurePolicy": {"maxRestarts": 2}}))).await;
    let blocking = json!({"failurePolicy": {"maxRestarts": 2, "restartStrategy": "BlockingRecreate"}});
    create(&ns, &jobset("blocking", blocking)).await;
    fail_and_expect_default_restart(&ns, "recreate").await;
    fail_and_expect_default_restart(&ns, "blocking").await;

    // Recreate: a Job of the next attempt follows as soon as its predecessor is gone, while the others still
    // terminate.
    finish_deletion_of(&ns, "recreate-a-0").await;
    let first = wait_jobs(&ns, "recreate", 1, "1").await;
    assert_eq!(first[0].name_any(), "recreate-a-0");
    assert_eq!(first[0].annotations().get(RESTART_ATTEMPT).map(String::as_str), Some("1"));
    assert_eq!(terminating(&ns, "recreate").await, ["recreate-b-0", "recreate-b-1", "recreate-b-2"]);

    // BlockingRecreate: nothing while any Job of the previous attempt remains, then all at once.
    for job in ["blocking-a-0", "blocking-b-0", "blocking-b-1"] {
        finish_deletion_of(&ns, job).await;
    }
    settle().await;
    assert_eq!(jobs_of(&ns, "blocking").await.len(), 1, "only blocking-b-2, still terminating");
    finish_deletion_of(&ns, "blocking-b-2").await;
    let blocking_jobs = wait_jobs(&ns, "blocking", 4, "1").await;

    finish_foreground_deletion(&ns, "recreate").await;
    let jobs = wait_jobs(&ns, "recreate", 4, "1").await;
    let pod_labels = jobs[2].spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
    assert_eq!(pod_labels.and_then(|l| l.get(RESTART_ATTEMPT).cloned()).as_deref(), Some("1"), "pods know the attempt");

    // RestartingJobSet: True until every Job of the new attempt is ready...
    for job in &jobs[..3] {
        make_ready(&ns, job).await;
    }
    settle().await;
    assert_eq!(restarting(&ns, "recreate").await.map(|c| c.0), Some("True".into()), "one Job not ready yet");
    make_ready(&ns, &jobs[3]).await;
    let ready = wait_condition(&ns, "recreate", CONDITION_RESTARTING_JOBSET, "False").await;
    assert_eq!(ready, ("False".into(), "JobsReady".into(), "all jobs are ready".into()));
    assert_eq!(wait_event(&ns, "recreate", "JobsReady").await.0, "Normal");
    // ...then JobSetCompleted once it completes...
    for job in &jobs {
        complete(&ns, job).await;
    }
    wait_condition(&ns, "recreate", CONDITION_COMPLETED, "True").await;
    assert_eq!(
        restarting(&ns, "recreate").await,
        Some(("False".into(), "JobSetCompleted".into(), "jobset completed successfully".into()))
    );
    // ...or JobSetSuspended when suspended mid-restart.
    ns.api::<JobSet>()
        .patch("blocking", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": true}})))
        .await
        .expect("suspend");
    wait_condition(&ns, "blocking", CONDITION_SUSPENDED, "True").await;
    assert_eq!(
        restarting(&ns, "blocking").await,
        Some(("False".into(), "JobSetSuspended".into(), "jobset is suspended".into()))
    );
    eventually("blocking's jobs suspended", WAIT, || async {
        let jobs = jobs_of(&ns, "blocking").await;
        let suspended = jobs.iter().filter(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true)).count();
        if suspended == blocking_jobs.len() { Ok(()) } else { Err(format!("{suspended} suspended")) }
    })
    .await
    .expect("suspended");
}
