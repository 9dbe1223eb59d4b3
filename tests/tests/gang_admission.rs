//! Gang admission end to end: the real API server, Job controller, garbage collector, kube-scheduler and KWOK GPU
//! nodes; Muster's webhooks (with the gang mutation), admission controller and JobSet reconciler in-process.
//!
//! The GPUNode objects are written by the tests, exactly as the gpu-agent publishes them (the agent's own path
//! from NVML to GPUNode is tested in gpu-agent/tests/apiserver.rs), so each test sets the health it needs.
//!
//! Run: `cargo test -p muster-tests --test gang_admission` (after `tests/build-control-plane.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use muster_admission::admission::state::Settings;
use muster_admission::gang::model::ModelConfig;
use muster_admission::gang::queue::{PodsReadyConfig, QueueConfig};
use muster_api::JobSet;
use muster_api::gang::{Gang, GangPhase, GangStatus};
use muster_api::gpunode::GPUNode;
use muster_api::keys;
use muster_reconciler::plan::FeatureGates;
use muster_tests::{
    ClusterConfig, InProcessAdmission, InProcessReconciler, SharedCluster, TestNamespace, edit_jobset, eventually,
    gang_in, gang_status, publish_gpu_node,
};
use serde_json::{Value, json};

const NODES: [&str; 3] = ["gpu-0", "gpu-1", "gpu-2"];

static CLUSTER: SharedCluster = SharedCluster::new(|| ClusterConfig::gpu_fleet(&NODES));

const WAIT: Duration = Duration::from_secs(90);

fn settings() -> Settings {
    Settings {
        // The tests publish each GPUNode once; a test must not outlive its heartbeat.
        model: ModelConfig { heartbeat_timeout: Duration::from_secs(3600), ..ModelConfig::default() },
        default_queue: QueueConfig {
            head_hold_after: Duration::from_secs(60),
            pods_ready: PodsReadyConfig { timeout: Duration::from_secs(120), ..PodsReadyConfig::default() },
            ..QueueConfig::default()
        },
        ..Settings::default()
    }
}

/// Publishes a node's GPUNode (see [`publish_gpu_node`]); `None` removes it (no agent: the node's GPUs are not
/// trusted).
async fn publish(client: &Client, node: &str, unhealthy: Option<&[(u32, u64)]>) {
    let Some(unhealthy) = unhealthy else {
        let api: Api<GPUNode> = Api::all(client.clone());
        let _ = api.delete(node, &DeleteParams::default()).await;
        eventually("GPUNode gone", WAIT, || async {
            match api.get_opt(node).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        .expect("GPUNode deleted");
        return;
    };
    publish_gpu_node(client, node, 8, unhealthy).await.expect("GPUNode published");
}

/// Unhealthy GPUs of a node as (index, XID); `None` for a node without an agent.
type NodeHealth<'a> = (&'a str, Option<&'a [(u32, u64)]>);

/// Every node healthy except as given.
async fn fleet(client: &Client, unhealthy: &[NodeHealth<'_>]) {
    for node in NODES {
        let state = unhealthy.iter().find(|(n, _)| *n == node).map_or(Some(&[][..]), |(_, s)| *s);
        publish(client, node, state).await;
    }
}

/// `jobs` Jobs of one pod with 8 GPUs each, running for `duration`; plus optional extra spec.
fn gang_jobset(name: &str, jobs: u32, duration: &str, annotations: Value, extra: Value) -> JobSet {
    let mut pod_annotations = json!({"muster.dev/test-duration": duration});
    if let (Some(a), Some(extra)) = (pod_annotations.as_object_mut(), annotations.as_object()) {
        a.extend(extra.clone());
    }
    let mut spec = json!({"replicatedJobs": [{"name": "workers", "replicas": jobs, "template": {"spec": {
        "parallelism": 1, "completions": 1, "backoffLimit": 0,
        "template": {"metadata": {"annotations": pod_annotations}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "train", "image": "registry.invalid/train:never-pulled",
                "resources": {"limits": {"nvidia.com/gpu": 8}, "requests": {"cpu": "1"}}}]}}}}}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name}, "spec": spec}))
    .expect("valid JobSet")
}

async fn jobset_condition(ns: &TestNamespace<'_>, name: &str, type_: &str) -> Result<JobSet, String> {
    let js = ns.api::<JobSet>().get(name).await.map_err(|e| e.to_string())?;
    let conditions = js.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    if conditions.iter().any(|c| c.type_ == type_ && c.status == "True") {
        Ok(js)
    } else {
        Err(format!("conditions {conditions:?}"))
    }
}

fn placed_nodes(status: &GangStatus) -> BTreeSet<String> {
    status.placement.iter().map(|s| s.node.clone()).collect()
}

#[tokio::test]
async fn two_16_gpu_gangs_on_16_free_gpus_run_one_after_the_other() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-two").await.expect("namespace");
    let client = ns.client();
    // Two trusted nodes: gpu-2 has no agent, so its GPUs do not count.
    fleet(&client, &[("gpu-2", None)]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let pp = PostParams::default();
    ns.api::<JobSet>().create(&pp, &gang_jobset("first", 2, "4s", json!({}), json!({}))).await.expect("first");
    ns.api::<JobSet>().create(&pp, &gang_jobset("second", 2, "1s", json!({}), json!({}))).await.expect("second");

    let first =
        eventually("first admitted", WAIT, || gang_in(&ns, "first", &[GangPhase::Admitted, GangPhase::Running]))
            .await
            .expect("first admitted");
    assert_eq!(placed_nodes(&first), BTreeSet::from(["gpu-0".to_owned(), "gpu-1".to_owned()]));
    let second = eventually("second pending with a reason", WAIT, || async {
        let s = gang_in(&ns, "second", &[GangPhase::Pending]).await?;
        if s.reason.is_some() { Ok(s) } else { Err("no reason yet".into()) }
    })
    .await
    .expect("second pending");
    let reason = second.reason.unwrap_or_default();
    assert!(reason.contains("GPU"), "the reason names the GPU shortfall: {reason}");
    assert_eq!(second.queue_position, Some(1));
    let js = ns.api::<JobSet>().get("second").await.expect("second");
    assert!(js.suspended(), "a pending gang's JobSet stays suspended");
    assert_eq!(js.annotation(keys::ADMISSION_OWNS_SUSPEND), Some("true"), "the webhook marked it");

    eventually("first completed", WAIT, || jobset_condition(&ns, "first", keys::CONDITION_COMPLETED))
        .await
        .expect("first completes");
    eventually("first finished", WAIT, || gang_in(&ns, "first", &[GangPhase::Finished])).await.expect("finished");
    eventually("second admitted", WAIT, || gang_in(&ns, "second", &[GangPhase::Admitted, GangPhase::Running]))
        .await
        .expect("second admitted once the first released its GPUs");
    eventually("second completed", WAIT, || jobset_condition(&ns, "second", keys::CONDITION_COMPLETED))
        .await
        .expect("second completes");
    let text = admission.metrics_text();
    assert!(text.contains("muster_admission_admissions_total{queue=\"default\"} 2"), "{text}");
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn a_node_with_an_unhealthy_gpu_is_not_used_and_the_reason_names_its_xid() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-xid").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[("gpu-1", Some(&[(3, 79)]))]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let pp = PostParams::default();
    ns.api::<JobSet>().create(&pp, &gang_jobset("pair", 2, "6s", json!({}), json!({}))).await.expect("pair");
    let pair = eventually("pair admitted", WAIT, || gang_in(&ns, "pair", &[GangPhase::Admitted, GangPhase::Running]))
        .await
        .expect("admitted");
    assert_eq!(placed_nodes(&pair), BTreeSet::from(["gpu-0".to_owned(), "gpu-2".to_owned()]), "gpu-1 has 7 healthy");

    // One more 8-GPU pod cannot fit now; the reason says gpu-1 lacks a GPU because of XID 79.
    ns.api::<JobSet>().create(&pp, &gang_jobset("one", 1, "1s", json!({}), json!({}))).await.expect("one");
    let one = eventually("one pending", WAIT, || async {
        let s = gang_in(&ns, "one", &[GangPhase::Pending]).await?;
        let reason = s.reason.clone().unwrap_or_default();
        if reason.contains("XID 79") { Ok(s) } else { Err(format!("reason: {reason}")) }
    })
    .await
    .expect("pending naming the XID");
    assert!(one.reason.unwrap_or_default().contains("gpu-1"));
    eventually("pair completed", WAIT, || jobset_condition(&ns, "pair", keys::CONDITION_COMPLETED))
        .await
        .expect("pair");
    let one = eventually("one admitted", WAIT, || gang_in(&ns, "one", &[GangPhase::Admitted, GangPhase::Running]))
        .await
        .expect("one admitted");
    assert!(!placed_nodes(&one).contains("gpu-1"));
    eventually("one completed", WAIT, || jobset_condition(&ns, "one", keys::CONDITION_COMPLETED)).await.expect("one");
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn the_leaders_job_is_resumed_before_the_workers() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-leader").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    // The driver (coordinator) takes 3 s to become ready; the workers must wait for it.
    let driver = json!({"name": "driver", "replicas": 1, "template": {"spec": {"parallelism": 1, "completions": 1,
        "template": {"metadata": {"annotations": {"muster.dev/test-start-delay": "3s", "muster.dev/test-duration": "8s"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "driver", "image": "registry.invalid/d:1",
                "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}});
    let mut js = gang_jobset("lead", 2, "2s", json!({}), json!({"coordinator": {"replicatedJob": "driver"}}));
    let worker = serde_json::to_value(&js.spec.replicated_jobs[0]).expect("rjob");
    js.spec.replicated_jobs =
        vec![serde_json::from_value(worker).expect("w"), serde_json::from_value(driver).expect("d")];
    ns.api::<JobSet>().create(&PostParams::default(), &js).await.expect("create");

    // Watch the Jobs: record when each was first seen unsuspended, and whether the driver was ready then.
    let jobs: Api<Job> = ns.api();
    let mut first_running: BTreeMap<String, (std::time::Instant, bool)> = BTreeMap::new();
    let started = std::time::Instant::now();
    while first_running.len() < 3 && started.elapsed() < WAIT {
        let list = jobs.list(&ListParams::default()).await.expect("jobs").items;
        let driver_ready = list
            .iter()
            .find(|j| j.name_any().starts_with("lead-driver"))
            .and_then(|j| j.status.as_ref()?.ready)
            .unwrap_or(0)
            > 0;
        for job in &list {
            let unsuspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(false);
            if unsuspended {
                first_running.entry(job.name_any()).or_insert((std::time::Instant::now(), driver_ready));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first_running.len(), 3, "every Job was resumed: {first_running:?}");
    let driver_at = first_running.get("lead-driver-0").expect("driver").0;
    for (name, (at, driver_ready)) in &first_running {
        if name.starts_with("lead-workers") {
            assert!(*at > driver_at, "{name} resumed before the driver");
            assert!(*driver_ready, "{name} resumed before the driver was ready");
        }
    }
    eventually("lead completed", WAIT, || jobset_condition(&ns, "lead", keys::CONDITION_COMPLETED))
        .await
        .expect("done");
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn a_group_restart_keeps_the_placement() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-restart").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let js = gang_jobset(
        "ckpt",
        2,
        "2s",
        json!({"muster.dev/test-fail": "first-attempt"}),
        json!({"failurePolicy": {"maxRestarts": 2}}),
    );
    ns.api::<JobSet>().create(&PostParams::default(), &js).await.expect("create");
    let admitted = eventually("admitted", WAIT, || gang_in(&ns, "ckpt", &[GangPhase::Admitted, GangPhase::Running]))
        .await
        .expect("admitted");
    let done =
        eventually("completed after a restart", WAIT, || jobset_condition(&ns, "ckpt", keys::CONDITION_COMPLETED))
            .await
            .expect("completed");
    assert_eq!(done.status.map(|s| s.restarts), Some(1));
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.expect("jobs").items;
    assert!(jobs.iter().all(|j| j.labels().get(keys::RESTART_ATTEMPT).map(String::as_str) == Some("1")));
    let finished = eventually("finished", WAIT, || gang_in(&ns, "ckpt", &[GangPhase::Finished])).await.expect("fin");
    assert_eq!(finished.placement, admitted.placement, "the restart kept every slot where it was");
    assert_eq!(finished.admitted_at, admitted.admitted_at, "admitted once, not again after the restart");
    assert_eq!(finished.requeue_count, 0);
    let text = admission.metrics_text();
    assert!(text.contains("muster_admission_admissions_total{queue=\"default\"} 1"), "{text}");
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn a_crash_between_placement_and_release_admits_the_gang_exactly_once() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-crash").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[]).await;
    // The controller first runs as a user that may do everything admission does except release a JobSet: it
    // stores the placement, fails to un-suspend, and is killed right there.
    let user = format!("system:serviceaccount:{}:no-release", ns.name());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": ns.name()}, "rules": [
        {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["muster.dev"], "resources": ["gangs"], "verbs": ["get", "list", "watch", "create"]},
        {"apiGroups": ["muster.dev"], "resources": ["gangs/status"], "verbs": ["patch", "update"]},
        {"apiGroups": ["muster.dev"], "resources": ["gpunodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get", "list", "watch"]}]}))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": ns.name()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ns.name()},
        "subjects": [{"kind": "User", "name": user}]}))
    .expect("binding");
    let pp = PostParams::default();
    Api::<ClusterRole>::all(client.clone()).create(&pp, &role).await.expect("role");
    Api::<ClusterRoleBinding>::all(client.clone()).create(&pp, &binding).await.expect("binding");
    let mut limited = cluster.kube_config();
    limited.auth_info.impersonate = Some(user);
    let limited = Client::try_from(limited).expect("client");

    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let mut admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    admission.restart_controller_as(limited);

    ns.api::<JobSet>().create(&pp, &gang_jobset("once", 2, "2s", json!({}), json!({}))).await.expect("create");
    let stored =
        eventually("placement stored", WAIT, || gang_in(&ns, "once", &[GangPhase::Admitted])).await.expect("admitted");
    // The controller keeps trying to release and keeps being refused; give it a few tries, then kill it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ns.api::<JobSet>().get("once").await.expect("get").suspended(), "the release was refused");
    assert!(admission.metrics_text().contains("muster_admission_errors_total{category=\"set_suspend\"}"));
    admission.crash();

    // A JobSet that would take the same GPUs if the first admission were lost.
    ns.api::<JobSet>().create(&pp, &gang_jobset("rival", 3, "1s", json!({}), json!({}))).await.expect("rival");
    admission.restart_controller();
    eventually("released after the restart", WAIT, || async {
        let js = ns.api::<JobSet>().get("once").await.map_err(|e| e.to_string())?;
        if js.suspended() { Err("still suspended".into()) } else { Ok(()) }
    })
    .await
    .expect("released");
    let after = gang_status(&ns, "once").await.expect("status");
    assert_eq!(after.placement, stored.placement, "the stored placement is the one used");
    assert_eq!(after.admitted_at, stored.admitted_at, "not admitted a second time");
    let rival = eventually("rival waits", WAIT, || gang_in(&ns, "rival", &[GangPhase::Pending])).await.expect("rival");
    assert!(rival.placement.is_empty(), "the rival got nothing while the first gang holds its GPUs");
    let text = admission.metrics_text();
    assert!(!text.contains("muster_admission_admissions_total{queue=\"default\"} 1"), "nothing newly admitted: {text}");
    eventually("once completed", WAIT, || jobset_condition(&ns, "once", keys::CONDITION_COMPLETED))
        .await
        .expect("once");
    eventually("rival admitted after", WAIT, || {
        gang_in(&ns, "rival", &[GangPhase::Admitted, GangPhase::Running, GangPhase::Finished])
    })
    .await
    .expect("rival admitted");
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn a_gang_bigger_than_the_cluster_is_inadmissible_and_does_not_block_smaller_ones() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-huge").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let pp = PostParams::default();
    ns.api::<JobSet>().create(&pp, &gang_jobset("huge", 4, "1s", json!({}), json!({}))).await.expect("huge");
    ns.api::<JobSet>().create(&pp, &gang_jobset("small", 1, "1s", json!({}), json!({}))).await.expect("small");
    let huge = eventually("huge inadmissible", WAIT, || gang_in(&ns, "huge", &[GangPhase::Inadmissible]))
        .await
        .expect("inadmissible");
    let reason = huge.reason.unwrap_or_default();
    assert!(reason.contains('4') && reason.contains('3'), "the reason names 4 pods and 3 nodes: {reason}");
    eventually("small completed", WAIT, || jobset_condition(&ns, "small", keys::CONDITION_COMPLETED))
        .await
        .expect("the small gang ran behind the huge one");
    assert!(ns.api::<JobSet>().get("huge").await.expect("huge").suspended());
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn a_suspended_jobsets_new_node_selector_reaches_its_gang_and_it_is_admitted() {
    const HOSTNAME: &str = "kubernetes.io/hostname";
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-follows").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let on_node = |js: &mut JobSet, node: &str| {
        let job = js.spec.replicated_jobs[0].template.spec.as_mut().expect("job spec");
        let pod = job.template.spec.as_mut().expect("pod spec");
        pod.node_selector = Some(BTreeMap::from([(HOSTNAME.to_owned(), node.to_owned())]));
    };
    let mut picky = gang_jobset("picky", 1, "1s", json!({}), json!({}));
    on_node(&mut picky, "gpu-9");
    ns.api::<JobSet>().create(&PostParams::default(), &picky).await.expect("picky");
    let waiting = eventually("picky inadmissible", WAIT, || gang_in(&ns, "picky", &[GangPhase::Inadmissible]))
        .await
        .expect("no such node");
    assert!(waiting.reason.unwrap_or_default().contains(&format!("{HOSTNAME}=gpu-9")));
    // Upstream lets a suspended JobSet's nodeSelector change (as Kueue does); the Gang follows, and the gang runs
    // where the new selector points (resuming merges the new value into the Job, whose pods then go there).
    assert!(ns.api::<JobSet>().get("picky").await.expect("picky").suspended());
    edit_jobset(&ns, "picky", |js| on_node(js, "gpu-1")).await.expect("nodeSelector changed");
    let gang = eventually("the Gang's spec follows", WAIT, || async {
        let gang = ns.api::<Gang>().get("picky").await.map_err(|e| e.to_string())?;
        let selector = &gang.spec.pod_sets[0].node_selector;
        if selector.get(HOSTNAME).map(String::as_str) == Some("gpu-1") {
            Ok(gang)
        } else {
            Err(format!("{selector:?}"))
        }
    })
    .await
    .expect("Gang spec rewritten");
    assert_eq!(gang.spec.pod_sets[0].gpus_per_pod, 8);
    let done = eventually("picky completed", WAIT, || jobset_condition(&ns, "picky", keys::CONDITION_COMPLETED)).await;
    let placed = gang_status(&ns, "picky").await.map(|s| placed_nodes(&s));
    ns.delete(WAIT).await.expect("cleanup");
    done.expect("admitted on the new demand and ran");
    assert_eq!(placed.expect("status"), BTreeSet::from(["gpu-1".to_owned()]));
}

#[tokio::test]
async fn an_admitted_gang_moves_only_the_slots_whose_gpu_died() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gang-replace").await.expect("namespace");
    let client = ns.client();
    fleet(&client, &[]).await;
    let _reconciler = InProcessReconciler::start(client.clone(), FeatureGates::default());
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    ns.api::<JobSet>()
        .create(&PostParams::default(), &gang_jobset("steady", 2, "30s", json!({}), json!({})))
        .await
        .expect("create");
    // Running first: a gang still Admitted when its slot moves would say "every pod of the gang is ready" as soon
    // as its pods are, and the re-placement's reason would be gone before this test reads it.
    let admitted =
        eventually("running", WAIT, || gang_in(&ns, "steady", &[GangPhase::Running])).await.expect("running");
    let before = placed_nodes(&admitted);
    assert_eq!(before.len(), 2);
    let sick = before.iter().next_back().cloned().expect("a node");
    publish(&client, &sick, Some(&[(3, 79)])).await;
    let moved = eventually("re-placed", WAIT, || async {
        let s = gang_in(&ns, "steady", &[GangPhase::Admitted, GangPhase::Running]).await?;
        if placed_nodes(&s).contains(&sick) { Err(format!("still on {sick}: {:?}", s.reason)) } else { Ok(s) }
    })
    .await
    .expect("the slot on the sick node moved");
    let after = placed_nodes(&moved);
    assert_eq!(before.intersection(&after).count(), 1, "the healthy slot stayed: {before:?} → {after:?}");
    assert_eq!(moved.admitted_at, admitted.admitted_at, "the same admission, not a new one");
    assert!(moved.reason.unwrap_or_default().contains(&sick));
    eventually("completed", WAIT, || jobset_condition(&ns, "steady", keys::CONDITION_COMPLETED)).await.expect("done");
    fleet(&client, &[]).await;
    ns.delete(WAIT).await.expect("cleanup");
}
