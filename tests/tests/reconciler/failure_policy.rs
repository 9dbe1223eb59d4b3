//! Failure-policy rules: matching on reasons, message patterns and targets, in rule order, and the actions
//! `RestartJobSetAndIgnoreMaxRestarts` and `FailJobSet`.

use super::*;

#[tokio::test]
async fn rules_match_on_reasons_patterns_and_targets_in_rule_order() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("rules").await.expect("namespace");
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    create(
        &ns,
        &jobset(
            "js",
            json!({"failurePolicy": {"maxRestarts": 0, "rules": [
                {"name": "deadline", "action": "FailJobSet", "onJobFailureReasons": ["DeadlineExceeded"]},
                // "(" is not a valid RE2 pattern: skipped at run time, the other pattern still matches.
                {"name": "oom", "action": "RestartJobSetAndIgnoreMaxRestarts",
                 "onJobFailureMessagePatterns": ["(", "OOMKill(ed)?"]},
                {"name": "workers", "action": "RestartJobSet", "targetReplicatedJobs": ["b"]}]}}),
        ),
    )
    .await;
    let jobs = wait_jobs(&ns, "js", 4, "0").await;

    // b-0 matches "oom" (pattern) and "workers" (target); the earlier rule wins. Its action ignores maxRestarts 0.
    fail(&ns, &jobs[1], "BackoffLimitExceeded", "container train was OOMKilled").await;
    let message = "applying RestartJobSetAndIgnoreMaxRestarts failure policy action (first failed job: js-b-0)";
    let restarting = wait_condition(&ns, "js", CONDITION_RESTARTING_JOBSET, "True").await;
    assert_eq!(restarting, ("True".into(), "FailurePolicy_oom".into(), message.into()));
    let status = get(&ns, "js").await.status.expect("status");
    assert_eq!((status.restarts, status.restarts_count_towards_max), (1, None), "not counted towards max");
    let event = wait_event(&ns, "js", "RestartJobSetAndIgnoreMaxRestartsFailurePolicyAction").await;
    assert_eq!(
        event,
        ("Warning".into(), "RestartJobSetAndIgnoreMaxRestartsFailurePolicyAction".into(), message.into())
    );
    wait_event(&ns, "js", "FailurePolicy_oom").await;
    wait_terminating(&ns, "js", &["js-a-0", "js-b-0", "js-b-1", "js-b-2"]).await;
    finish_foreground_deletion(&ns, "js").await;
    let jobs = wait_jobs(&ns, "js", 4, "1").await;

    // Two failures seen in one pass (the reconciler is stopped while they happen): b-2 failed first and matches
    // "workers", a-0 failed later but matches "deadline", which comes first in the rules. Rule order beats failure
    // order, so the JobSet fails rather than running out of restarts.
    drop(reconciler);
    let t0 = Timestamp::now();
    fail_at(&ns, &jobs[3], "BackoffLimitExceeded", "exit code 1", t0).await;
    let later = t0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1)).expect("time");
    fail_at(&ns, &jobs[0], "DeadlineExceeded", "Job was active longer than specified deadline", later).await;
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let failed = wait_condition(&ns, "js", CONDITION_FAILED, "True").await;
    let message = "applying FailJobSet failure policy action (first failed job: js-a-0)";
    assert_eq!(failed, ("True".into(), "FailJobSetFailurePolicyAction".into(), message.into()));
    let js = get(&ns, "js").await;
    assert_eq!(
        condition(&js, CONDITION_RESTARTING_JOBSET),
        Some(("False".into(), "JobSetFailed".into(), "jobset failed".into()))
    );
    let status = js.status.expect("status");
    assert_eq!((status.terminal_state.as_deref(), status.restarts), (Some("Failed"), 1));
    let a = replicated_status(&get(&ns, "js").await, "a");
    assert_eq!(a.failed, 1);
    assert_eq!(
        wait_event(&ns, "js", "FailJobSetFailurePolicyAction").await,
        ("Warning".into(), "FailJobSetFailurePolicyAction".into(), message.into())
    );
    assert_eq!(reconciler.failed_total(ns.name(), "js"), 1);
    // The two running Jobs of the attempt are deleted; the failed ones stay for inspection.
    eventually("active jobs deleted", WAIT, || async {
        let now = live(&ns, "js").await;
        if now == ["js-a-0", "js-b-2"] { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await
    .expect("active jobs deleted");
}
