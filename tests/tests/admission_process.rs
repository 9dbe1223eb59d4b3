//! The real `muster-admission` binary as processes: two replicas on the Lease `muster-admission`; only the holder
//! admits, and when it is killed the standby takes over and admits what comes next. Its /metrics, /healthz and
//! /readyz answer.
//!
//! The JobSets are created the way the gang webhook leaves them (suspended, `muster.dev/admission-suspended`);
//! the webhook itself is tested in webhook.rs and gang_admission.rs.
//!
//! Run: `cargo test -p muster-tests --test admission_process` (after `tests/build-control-plane.sh`).

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use muster_api::JobSet;
use muster_api::gang::{Gang, GangPhase};
use muster_tests::{
    ClusterConfig, FakeNode, Profile, ReconcilerProcess, SharedCluster, eventually, metric_value, publish_gpu_node,
    workspace_binary,
};
use serde_json::json;

static CLUSTER: SharedCluster = SharedCluster::new(|| {
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds");
    ClusterConfig::apiserver_only().crds([
        crds.join("jobset.x-k8s.io_jobsets.yaml"),
        crds.join("muster.dev_gangs.yaml"),
        crds.join("muster.dev_gpunodes.yaml"),
    ])
});

const WAIT: Duration = Duration::from_secs(60);
const LEASE: &str = "muster-admission";

/// A gang JobSet as the webhook leaves it: one Job of one 8-GPU pod, suspended by admission.
fn gang(name: &str) -> JobSet {
    serde_json::from_value(json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name, "annotations": {"muster.dev/admission-suspended": "true"}},
        "spec": {"suspend": true, "replicatedJobs": [{"name": "w", "replicas": 1, "template": {"spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}}}}]}}))
    .expect("JobSet")
}

async fn admissions(replica: &ReconcilerProcess) -> f64 {
    let (status, body) = replica.get_metrics("/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    metric_value(&body, "muster_admission_admissions_total", &[("queue", "default")]).unwrap_or(0.0)
}

#[tokio::test]
async fn two_replicas_admit_once_and_the_standby_takes_over() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("admission-replicas").await.expect("namespace");
    let client = ns.client();
    for node in ["gpu-0", "gpu-1"] {
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &FakeNode::new(node).gpus(8).to_node())
            .await
            .expect("node");
        // No KWOK here: say Ready as a kubelet would, or admission would not trust the node.
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": Time(Timestamp::now()), "lastTransitionTime": Time(Timestamp::now())}]}});
        Api::<Node>::all(client.clone())
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .expect("node Ready");
        publish_gpu_node(&client, node, 8, &[]).await.expect("GPUNode");
    }
    // The webhook server needs a serving certificate even though nothing calls it here.
    let certs = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::write(certs.path().join("tls.crt"), cert.cert.pem()).expect("tls.crt");
    std::fs::write(certs.path().join("tls.key"), cert.signing_key.serialize_pem()).expect("tls.key");
    let cert_dir = format!("--cert-dir={}", certs.path().display());
    let namespace = format!("--namespace={}", ns.name());
    let args = [
        cert_dir.as_str(),
        namespace.as_str(),
        "--webhook-host=127.0.0.1",
        "--webhook-port=0",
        "--lease-duration-seconds=3",
        "--gpu-heartbeat-timeout=1h",
    ];
    let binary = workspace_binary("muster-admission", "muster-admission", Profile::Dev, "MUSTER_ADMISSION_BIN")
        .expect("muster-admission builds");
    let mut first = ReconcilerProcess::start(&binary, &cluster, "admission-a", &args).expect("first replica");
    first.wait_ready(WAIT).await.expect("first ready");
    let leases: Api<Lease> = ns.api();
    eventually("admission-a holds the lease", WAIT, || async {
        let holder = leases.get_opt(LEASE).await.map_err(|e| e.to_string())?.and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some("admission-a") { Ok(()) } else { Err(format!("holder {holder:?}")) }
    })
    .await
    .expect("first leads");
    let mut second = ReconcilerProcess::start(&binary, &cluster, "admission-b", &args).expect("second replica");
    second.wait_ready(WAIT).await.expect("standby ready: it serves the webhooks while it waits");
    for replica in [&first, &second] {
        assert_eq!(replica.get_health("/healthz").await.expect("healthz").0, 200);
    }

    let jobsets: Api<JobSet> = ns.api();
    jobsets.create(&PostParams::default(), &gang("one")).await.expect("one");
    eventually("one released", WAIT, || async {
        let js = jobsets.get("one").await.map_err(|e| e.to_string())?;
        if js.suspended() { Err("suspended".into()) } else { Ok(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("the leader admits and releases: {e}\n{}", first.log_tail(40)));
    assert_eq!(admissions(&first).await, 1.0);
    assert_eq!(admissions(&second).await, 0.0, "the standby admits nothing");

    first.kill();
    jobsets.create(&PostParams::default(), &gang("two")).await.expect("two");
    let gangs: Api<Gang> = ns.api();
    eventually("two admitted by the standby", WAIT, || async {
        let phase = gangs.get_opt("two").await.map_err(|e| e.to_string())?.and_then(|g| g.status).map(|s| s.phase);
        if phase == Some(GangPhase::Admitted) { Ok(()) } else { Err(format!("{phase:?}")) }
    })
    .await
    .expect("the standby took over");
    assert_eq!(admissions(&second).await, 1.0, "the new leader admitted exactly the new gang");
    let one = gangs.get("one").await.expect("one").status.expect("status");
    assert_eq!(one.phase, GangPhase::Admitted, "the first admission survives the fail-over");
    let two = gangs.get("two").await.expect("two").status.expect("status");
    let nodes = |s: &muster_api::gang::GangStatus| s.placement.iter().map(|p| p.node.clone()).collect::<Vec<_>>();
    assert_ne!(nodes(&one), nodes(&two), "the new leader did not place onto GPUs the first gang holds");
}
