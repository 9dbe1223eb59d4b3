//! Gang admission of JobSets placed exclusively per topology domain (`alpha.jobset.sigs.k8s.io/exclusive-topology`)
//! end to end: the real API server, Job controller and kube-scheduler, KWOK GPU nodes in three racks; Muster's
//! webhooks (gang mutation and the exclusive-placement pod webhooks), admission controller and reconciler
//! in-process. GPUNodes are written by the test as the gpu-agent publishes them.
//!
//! Run: `cargo test -p muster-tests --test gang_exclusive` (after `tests/build-control-plane.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{ListParams, PostParams};
use muster_admission::admission::state::Settings;
use muster_admission::gang::model::ModelConfig;
use muster_admission::gang::queue::{PodsReadyConfig, QueueConfig};
use muster_api::JobSet;
use muster_api::gang::{GangPhase, GangStatus};
use muster_api::keys;
use muster_reconciler::plan::FeatureGates;
use muster_tests::{
    ClusterConfig, FakeNode, InProcessAdmission, InProcessReconciler, SharedCluster, TestNamespace, eventually,
    gang_in, publish_gpu_node,
};
use serde_json::json;

const RACK: &str = "example.com/rack";
const RACKS: [&str; 3] = ["rack-a", "rack-b", "rack-c"];
const WAIT: Duration = Duration::from_secs(120);

/// Three racks of two 8-GPU nodes each.
static CLUSTER: SharedCluster = SharedCluster::new(|| {
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds");
    let mut config = ClusterConfig::full().crds([
        crds.join("jobset.x-k8s.io_jobsets.yaml"),
        crds.join("muster.dev_gangs.yaml"),
        crds.join("muster.dev_gpunodes.yaml"),
    ]);
    for rack in RACKS {
        for i in 0..2 {
            config =
                config.node(FakeNode::new(format!("{rack}-{i}")).gpus(8).cpu("64").memory("512Gi").label(RACK, rack));
        }
    }
    config
});

fn settings() -> Settings {
    Settings {
        model: ModelConfig { heartbeat_timeout: Duration::from_secs(3600), ..ModelConfig::default() },
        default_queue: QueueConfig {
            head_hold_after: Duration::from_secs(600),
            pods_ready: PodsReadyConfig { timeout: Duration::from_secs(120), ..PodsReadyConfig::default() },
            ..QueueConfig::default()
        },
        ..Settings::default()
    }
}

/// Publishes every node's GPUs and starts the reconciler and admission in-process; they stop when dropped.
async fn start_muster(ns: &TestNamespace<'_>) -> (InProcessReconciler, InProcessAdmission) {
    let client = ns.client();
    for rack in RACKS {
        for i in 0..2 {
            publish_gpu_node(&client, &format!("{rack}-{i}"), 8, &[]).await.expect("GPUNode");
        }
    }
    let reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let admission = InProcessAdmission::start(client, settings()).await.expect("admission");
    (reconciler, admission)
}

/// `jobs` Indexed Jobs of two 8-GPU pods each (a whole rack), one rack per Job; pods run for an hour.
fn jobset(name: &str, jobs: u32) -> JobSet {
    gpu_jobset(name, jobs, 2, true)
}

/// `jobs` Indexed Jobs of `pods` 8-GPU pods each, placed exclusively per rack or not; pods run for an hour.
fn gpu_jobset(name: &str, jobs: u32, pods: u32, exclusive: bool) -> JobSet {
    let annotations = if exclusive { json!({keys::EXCLUSIVE_TOPOLOGY: RACK}) } else { json!({}) };
    serde_json::from_value(json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicatedJobs": [{"name": "w", "replicas": jobs, "template": {"spec": {
            "parallelism": pods, "completions": pods, "completionMode": "Indexed", "backoffLimit": 0,
            "template": {"metadata": {"annotations": {"muster.dev/test-duration": "1h"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c",
                    "image": "registry.invalid/train:never-pulled",
                    "resources": {"limits": {"nvidia.com/gpu": 8}, "requests": {"cpu": "1"}}}]}}}}}]}
    }))
    .expect("JobSet")
}

fn rack_of(node: &str) -> String {
    RACKS.into_iter().find(|r| node.starts_with(&format!("{r}-"))).unwrap_or("none").to_owned()
}

/// The racks of each Job of a placement.
fn racks_per_job(status: &GangStatus) -> BTreeMap<i32, BTreeSet<String>> {
    let mut out: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for slot in &status.placement {
        out.entry(slot.job_index).or_default().insert(rack_of(&slot.node));
    }
    out
}

#[tokio::test]
async fn exclusive_jobs_get_a_rack_each_run_and_a_gang_wanting_more_racks_waits_or_is_inadmissible() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-exclusive").await.expect("namespace");
    let _muster = start_muster(&ns).await;
    let pp = PostParams::default();

    // Two Jobs of a whole rack each: admitted with a rack per Job, and every pod runs under the pod webhooks'
    // affinity and anti-affinity, so the gang is Running without a requeue.
    ns.api::<JobSet>().create(&pp, &jobset("pair", 2)).await.expect("pair");
    let admitted =
        eventually("pair admitted", WAIT, || gang_in(&ns, "pair", &[GangPhase::Admitted, GangPhase::Running]))
            .await
            .expect("pair admitted");
    let racks = racks_per_job(&admitted);
    assert_eq!(racks.len(), 2, "{:?}", admitted.placement);
    assert!(racks.values().all(|r| r.len() == 1), "each Job within one rack: {racks:?}");
    let used: BTreeSet<&String> = racks.values().flatten().collect();
    assert_eq!(used.len(), 2, "the Jobs in different racks: {racks:?}");
    let running = eventually("pair Running", WAIT, || gang_in(&ns, "pair", &[GangPhase::Running]))
        .await
        .expect("all pods of the gang ready");
    assert_eq!(running.requeue_count, 0);
    let pods = ns.api::<Pod>().list(&ListParams::default()).await.expect("pods").items;
    let mut pod_racks: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let job = pod.labels().get(keys::JOB_INDEX).cloned().unwrap_or_default();
        pod_racks.entry(job).or_default().insert(rack_of(&node));
    }
    assert_eq!(pod_racks.len(), 2, "both Jobs' pods run: {pod_racks:?}");
    assert!(pod_racks.values().all(|r| r.len() == 1), "the scheduler kept each Job in one rack: {pod_racks:?}");

    // Two more Jobs of a rack each: one rack is free, so the gang waits and says which racks are missing.
    ns.api::<JobSet>().create(&pp, &jobset("more", 2)).await.expect("more");
    let waiting = eventually("more pending with a reason", WAIT, || async {
        let s = gang_in(&ns, "more", &[GangPhase::Pending]).await?;
        let reason = s.reason.clone().unwrap_or_default();
        if reason.contains("domains of") { Ok(s) } else { Err(format!("reason: {reason}")) }
    })
    .await
    .expect("more waits");
    let reason = waiting.reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("needs 2 free domains of {RACK} for its exclusive Jobs; 1 free with room for one")),
        "{reason}"
    );
    assert!(reason.contains("2 domains used by other jobs"), "{reason}");
    assert!(ns.api::<JobSet>().get("more").await.expect("more").suspended());

    // Four Jobs of a rack each can never fit three racks.
    ns.api::<JobSet>().create(&pp, &jobset("four", 4)).await.expect("four");
    let never = eventually("four inadmissible", WAIT, || gang_in(&ns, "four", &[GangPhase::Inadmissible]))
        .await
        .expect("inadmissible");
    let reason = never.reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("needs 4 domains of {RACK} for its exclusive Jobs; the cluster has 3")),
        "{reason}"
    );
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn a_rack_taken_by_an_exclusive_job_is_closed_to_other_gangs() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-exclusive-closed").await.expect("namespace");
    let _muster = start_muster(&ns).await;
    let pp = PostParams::default();
    let admitted = |name: &'static str| {
        let ns = &ns;
        async move {
            eventually(name, WAIT, || gang_in(ns, name, &[GangPhase::Running])).await.expect("admitted and running")
        }
    };

    // One exclusive Job of one 8-GPU pod takes a rack and leaves its other node free.
    ns.api::<JobSet>().create(&pp, &gpu_jobset("half", 1, 1, true)).await.expect("half");
    let half = admitted("half").await;
    let taken = rack_of(&half.placement[0].node);
    // Four plain 8-GPU pods fit only the two other racks: the pods of other Jobs may not enter the taken rack
    // (the leader's anti-affinity), and admission knows it, so every pod runs where it was placed.
    ns.api::<JobSet>().create(&pp, &gpu_jobset("fill", 1, 4, false)).await.expect("fill");
    let fill = admitted("fill").await;
    let fill_racks: BTreeSet<String> = fill.placement.iter().map(|s| rack_of(&s.node)).collect();
    assert!(!fill_racks.contains(&taken), "fill placed in {taken}: {:?}", fill.placement);
    assert_eq!(fill.requeue_count, 0);
    // One more plain pod: the only free GPUs are in the taken rack, so it waits and says who took it.
    ns.api::<JobSet>().create(&pp, &gpu_jobset("one", 1, 1, false)).await.expect("one");
    let key = format!("{}/half", ns.name());
    let reason = eventually("one pending with a reason", WAIT, || async {
        let s = gang_in(&ns, "one", &[GangPhase::Pending]).await?;
        let reason = s.reason.unwrap_or_default();
        if reason.contains("taken exclusively") { Ok(reason) } else { Err(format!("reason: {reason}")) }
    })
    .await
    .expect("one waits");
    assert!(reason.contains(&format!("2 nodes in {RACK}={taken}, taken exclusively by {key}")), "{reason}");
    // Once the exclusive JobSet is gone, the rack is open again.
    ns.api::<JobSet>().delete("half", &Default::default()).await.expect("delete half");
    let one = admitted("one").await;
    assert_eq!(rack_of(&one.placement[0].node), taken);
    ns.delete(WAIT).await.expect("cleanup");
}
