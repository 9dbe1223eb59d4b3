//! The real `muster-reconciler` binary as a process: two replicas with leader election on a Lease, fail-over when
//! the leader dies, the health endpoints, and `/metrics` after JobSets complete and fail.

use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use muster_tests::{Profile, ReconcilerProcess, metric_value};

use super::*;

/// Upstream's Lease name, which ours keeps so that the two controllers never lead at once.
const LEASE_NAME: &str = "6d4f6a47.jobset.x-k8s.io";
const LEASE_SECONDS: u64 = 4;

fn binary() -> PathBuf {
    ReconcilerProcess::binary(Profile::Dev).expect("muster-reconciler builds")
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt(LEASE_NAME).await.ok().flatten()?.spec?.holder_identity
}

async fn wait_holder(leases: &Api<Lease>, identity: &str, timeout: Duration) {
    eventually(&format!("{identity} holds the lease"), timeout, || async {
        match holder(leases).await {
            Some(h) if h == identity => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await
    .expect("lease held");
}

async fn scrape(replica: &ReconcilerProcess) -> String {
    let (status, body) = replica.get_metrics("/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

async fn reconciles(replica: &ReconcilerProcess) -> f64 {
    metric_value(&scrape(replica).await, "muster_reconciler_reconciles_total", &[]).expect("reconciles metric")
}

async fn assert_healthy(replica: &ReconcilerProcess) {
    for path in ["/healthz", "/readyz"] {
        assert_eq!(replica.get_health(path).await.expect(path), (200, "ok".to_string()), "{path}");
    }
}

#[tokio::test]
async fn two_replicas_one_leader_and_the_standby_takes_over_when_it_dies() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("replicas").await.expect("namespace");
    let binary = binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "apiVersion: config.jobset.x-k8s.io/v1alpha1\nkind: Configuration\nleaderElection:\n  leaderElect: true\n  \
         resourceNamespace: {}\n  leaseDuration: {LEASE_SECONDS}s\n",
        ns.name()
    );
    std::fs::write(&config, yaml).expect("write config");
    let config = format!("--config={}", config.display());
    let leases: Api<Lease> = ns.api();

    let mut first = ReconcilerProcess::start(&binary, &cluster, "replica-1", &[&config]).expect("start replica-1");
    first.wait_ready(WAIT).await.expect("replica-1 ready");
    wait_holder(&leases, "replica-1", WAIT).await;
    let mut second = ReconcilerProcess::start(&binary, &cluster, "replica-2", &[&config]).expect("start replica-2");
    second.wait_ready(WAIT).await.expect("replica-2 ready");
    // A standby is ready too (it serves), or a rolling update of two replicas would never finish.
    assert_healthy(&first).await;
    assert_healthy(&second).await;

    // Only the leader acts.
    create(&ns, &jobset("before", json!({}))).await;
    wait_jobs(&ns, "before", 4, "0").await;
    assert!(reconciles(&first).await >= 1.0);
    assert_eq!(reconciles(&second).await, 0.0, "the standby reconciled:\n{}", second.log_tail(20));
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-1"));

    // The leader dies without releasing the Lease; the standby takes it once it expires and carries on.
    first.kill();
    let killed = Instant::now();
    create(&ns, &jobset("after", json!({}))).await;
    wait_holder(&leases, "replica-2", Duration::from_secs(3 * LEASE_SECONDS) + WAIT).await;
    let takeover = killed.elapsed();
    let jobs = wait_jobs(&ns, "after", 4, "0").await;
    let first_jobs = killed.elapsed();
    eprintln!("takeover after {takeover:?}, the new JobSet's Jobs after {first_jobs:?} (lease {LEASE_SECONDS} s)");
    // The Lease was renewed at most LEASE_SECONDS before the kill; the margin is the standby's retry jitter.
    assert!(takeover < Duration::from_secs(LEASE_SECONDS + 3), "takeover took {takeover:?}");
    assert!(second.running(), "replica-2 exited:\n{}", second.log_tail(20));
    for job in &jobs {
        complete(&ns, job).await;
    }
    wait_condition(&ns, "after", CONDITION_COMPLETED, "True").await;
    assert!(reconciles(&second).await >= 1.0);
    assert_healthy(&second).await;
}

#[tokio::test]
async fn metrics_endpoint_counts_completed_and_failed_jobsets() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("scrape").await.expect("namespace");
    let mut replica = ReconcilerProcess::start(&binary(), &cluster, "metrics", &[]).expect("start");
    replica.wait_ready(WAIT).await.expect("ready");
    create(&ns, &jobset("good", json!({}))).await;
    create(&ns, &jobset("bad", json!({}))).await;
    for job in &wait_jobs(&ns, "good", 4, "0").await {
        complete(&ns, job).await;
    }
    let bad = wait_jobs(&ns, "bad", 4, "0").await;
    fail(&ns, &bad[0], "BackoffLimitExceeded", "Job has reached the specified backoff limit").await;
    wait_condition(&ns, "good", CONDITION_COMPLETED, "True").await;
    wait_condition(&ns, "bad", CONDITION_FAILED, "True").await;

    let namespace = ns.name();
    let text = eventually("counters scraped", WAIT, || async {
        let text = scrape(&replica).await;
        let failed = metric_value(&text, "jobset_failed_total", &[("jobset_name", "bad"), ("namespace", namespace)]);
        if failed == Some(1.0) { Ok(text) } else { Err(format!("jobset_failed_total {failed:?}")) }
    })
    .await
    .expect("metrics");
    let value =
        |name: &str, jobset: &str| metric_value(&text, name, &[("jobset_name", jobset), ("namespace", namespace)]);
    assert_eq!(value("jobset_completed_total", "good"), Some(1.0), "{text}");
    assert_eq!(value("jobset_completed_total", "bad"), None);
    assert_eq!(value("jobset_failed_total", "good"), None);
    assert!(text.contains("# TYPE jobset_completed counter") && text.contains("# TYPE jobset_failed counter"));
    let reconciled = metric_value(&text, "muster_reconciler_reconciles_total", &[]).expect("reconciles");
    let timed = metric_value(&text, "muster_reconciler_reconcile_duration_seconds_count", &[]).expect("histogram");
    assert!(reconciled >= 4.0 && timed >= 4.0, "reconciles {reconciled}, timed {timed}");
}
