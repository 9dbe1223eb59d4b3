//! The alpha feature gates `RestartJob` and `ElasticJobSet`: off by default, each changes behaviour when on.

use super::*;

const RESTART_JOB: FeatureGates = FeatureGates { restart_job: true, elastic_jobset: false };
const ELASTIC: FeatureGates = FeatureGates { restart_job: false, elastic_jobset: true };

fn job_restart_attempt(job: &Job) -> Option<&str> {
    job.labels().get(JOB_RESTART_ATTEMPT).map(String::as_str)
}

#[tokio::test]
async fn restart_job_recreates_only_the_failed_job_and_only_with_the_gate() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("restart-job").await.expect("namespace");

    // Gate off (the default): a JobSet that bypassed the webhook with a RestartJob rule is a reconcile error, and
    // nothing is deleted or marked.
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let policy = json!({"failurePolicy": {"maxRestarts": 1, "rules": [
        {"name": "leader", "action": "RestartJobAndIgnoreMaxRestarts", "targetReplicatedJobs": ["a"]},
        {"name": "workers", "action": "RestartJob", "targetReplicatedJobs": ["b"]}]}});
    create(&ns, &jobset("off", policy.clone())).await;
    let jobs = wait_jobs(&ns, "off", 4, "0").await;
    assert!(jobs.iter().all(|j| job_restart_attempt(j).is_none()), "no per-Job attempt without the gate");
    fail(&ns, &jobs[2], "BackoffLimitExceeded", "boom").await;
    eventually("reconcile error", WAIT, || async {
        let errors = reconciler.reconcile_errors("restart_job_gate_disabled");
        if errors > 0 { Ok(()) } else { Err("no error yet".to_string()) }
    })
    .await
    .expect("gate error counted");
    let off = get(&ns, "off").await;
    assert_eq!((condition(&off, CONDITION_FAILED), condition(&off, CONDITION_RESTARTING_JOBSET)), (None, None));
    assert!(terminating(&ns, "off").await.is_empty());
    ns.api::<JobSet>().delete("off", &DeleteParams::default()).await.expect("delete");
    drop(reconciler);

    // Gate on: every Job carries job-restart-attempt, and a failure restarts only that Job.
    let reconciler = InProcessReconciler::start(ns.client(), RESTART_JOB);
    create(&ns, &jobset("js", policy)).await;
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    assert!(jobs.iter().all(|j| job_restart_attempt(j) == Some("0")));
    fail(&ns, &jobs[2], "BackoffLimitExceeded", "boom").await;
    let message = "applying RestartJob failure policy action (first failed job: js-b-1)";
    let event = wait_event(&ns, "js", "RestartJobFailurePolicyAction").await;
    assert_eq!(event, ("Warning".into(), "RestartJobFailurePolicyAction".into(), message.into()));
    wait_terminating(&ns, "js", &["js-b-1"]).await;
    let js = get(&ns, "js").await;
    let b = replicated_status(&js, "b");
    assert_eq!((b.job_restarts, b.job_restarts_count_towards_max), (vec![0, 1, 0], vec![0, 1, 0]));
    let status = js.status.as_ref().expect("status");
    assert_eq!((status.restarts, status.restarts_count_towards_max), (0, None), "not a JobSet restart");
    assert_eq!(condition(&js, CONDITION_RESTARTING_JOBSET), None, "RestartJob sets no condition");

    finish_deletion_of(&ns, "js-b-1").await;
    let b1 = eventually("js-b-1 recreated", WAIT, || async {
        let jobs = jobs_of(&ns, "js").await;
        let b1 = jobs.into_iter().find(|j| j.name_any() == "js-b-1" && j.metadata.deletion_timestamp.is_none());
        b1.filter(|j| job_restart_attempt(j) == Some("1")).ok_or_else(|| "not yet".to_string())
    })
    .await
    .expect("recreated");
    assert_eq!(b1.labels().get(RESTART_ATTEMPT).map(String::as_str), Some("0"));
    let untouched = jobs_of(&ns, "js").await;
    for (before, after) in jobs.iter().zip(&untouched).filter(|(j, _)| j.name_any() != "js-b-1") {
        assert_eq!(before.uid(), after.uid(), "{} kept", before.name_any());
    }

    // RestartJobAndIgnoreMaxRestarts counts the restart but not towards the budget.
    fail(&ns, &jobs[0], "BackoffLimitExceeded", "boom").await;
    wait_event(&ns, "js", "RestartJobAndIgnoreMaxRestartsFailurePolicyAction").await;
    wait_terminating(&ns, "js", &["js-a-0"]).await;
    let a = replicated_status(&get(&ns, "js").await, "a");
    assert_eq!((a.job_restarts, a.job_restarts_count_towards_max), (vec![1], vec![0]));
    finish_deletion_of(&ns, "js-a-0").await;
    wait_jobs(&ns, "js", 4, "0").await;

    // The budget (maxRestarts 1) was spent by b-1's RestartJob: the next RestartJob fails the JobSet.
    fail(&ns, &b1, "BackoffLimitExceeded", "boom").await;
    let failed = wait_condition(&ns, "js", CONDITION_FAILED, "True").await;
    assert_eq!(
        failed,
        (
            "True".into(),
            "ReachedMaxRestarts".into(),
            "jobset failed due to reaching max number of restarts (first failed job: js-b-1)".into()
        )
    );
    assert_eq!(reconciler.failed_total(ns.name(), "js"), 1);
}

#[tokio::test]
async fn elastic_jobset_scales_running_jobs_only_with_the_gate() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("elastic").await.expect("namespace");
    let indexed = json!({"completionMode": "Indexed", "parallelism": 2, "completions": 2});
    let mut js = jobset("js", json!({}));
    let b = js.spec.replicated_jobs[1].template.spec.as_mut().expect("job spec");
    let mut spec = serde_json::to_value(&*b).expect("json");
    merge(&mut spec, indexed);
    *b = serde_json::from_value(spec).expect("job spec");
    create(&ns, &js).await;

    let sizes = |jobs: &[Job]| -> Vec<(Option<i32>, Option<i32>)> {
        jobs.iter().map(|j| j.spec.as_ref().map_or((None, None), |s| (s.parallelism, s.completions))).collect()
    };
    let reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let jobs = wait_jobs(&ns, "js", 4, "0").await;
    assert_eq!(sizes(&jobs), [(Some(1), Some(1)), (Some(2), Some(2)), (Some(2), Some(2)), (Some(2), Some(2))]);
    let mut rjobs = serde_json::to_value(&get(&ns, "js").await.spec.replicated_jobs).expect("json");
    rjobs[1]["template"]["spec"]["parallelism"] = json!(3);
    rjobs[1]["template"]["spec"]["completions"] = json!(3);
    let patch = Patch::Merge(json!({"spec": {"replicatedJobs": rjobs}}));
    ns.api::<JobSet>().patch("js", &PatchParams::default(), &patch).await.expect("scale b");
    settle().await;
    assert_eq!(sizes(&jobs_of(&ns, "js").await)[1..], [(Some(2), Some(2)); 3], "gate off: Jobs keep their size");
    drop(reconciler);

    let _reconciler = InProcessReconciler::start(ns.client(), ELASTIC);
    eventually("b's Jobs scaled", WAIT, || async {
        let now = sizes(&jobs_of(&ns, "js").await);
        if now[1..] == [(Some(3), Some(3)); 3] { Ok(()) } else { Err(format!("{now:?}")) }
    })
    .await
    .expect("scaled");
    assert_eq!(sizes(&jobs_of(&ns, "js").await)[0], (Some(1), Some(1)), "a untouched");
}
