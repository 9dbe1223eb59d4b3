//! The scheduling sidecar on the real control plane: gang pods land exactly on the nodes admission reserved, other
//! GPU pods keep off reserved GPUs, pods of gangs that are not admitted wait — once with the real kube-scheduler
//! consulting Muster's extender (started in-process, fed by its own watches), once in pod-pinning mode with the
//! stock scheduler alone and Muster's pod webhook.
//!
//! Five fake 8-GPU nodes with GPUNodes published (the test writes their status, as the gpu-agent would). The
//! admission controller is not running: the test creates the Gang objects and writes their status (phase and
//! placement) through the status subresource, as admission does, and creates the gang's Jobs itself with the labels
//! the JobSet reconciler puts on them. The reserved nodes are deliberately not in name order, so landing there by
//! chance is unlikely: for one pod on five nodes 1 in 5, for the four gang pods 1 in 120.
//!
//! Run: `cargo test -p muster-tests --test extender_e2e` (after `tests/build-control-plane.sh`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use muster_admission::extender::http::{self, Cache, Limits, Metrics};
use muster_admission::extender::{SCHEDULER_NAME, new_cache, watch};
use muster_admission::gang::GangKey;
use muster_admission::gang::model::ModelConfig;
use muster_admission::webhook::config::mutating_configuration;
use muster_admission::webhook::pod::KubeGangs;
use muster_admission::{ServeConfig, serve};
use muster_api::gang::{GangPhase, GangSpec, PodSet};
use muster_api::{GPUNode, Gang, keys};
use muster_tests::{
    ClusterConfig, Extender, FakeNode, GPU_RESOURCE, SchedulerConfig, TestCluster, TestNamespace, eventually, serial,
};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const NODES: [&str; 5] = ["gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-4"];
/// Job index → reserved node of gang `train`; gpu-2 stays free.
const PLACEMENT: [&str; 4] = ["gpu-3", "gpu-1", "gpu-4", "gpu-0"];
const FREE_NODE: &str = "gpu-2";
const WAIT: Duration = Duration::from_secs(90);

fn crd(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds").join(name)
}

fn cluster_config() -> ClusterConfig {
    let mut config = ClusterConfig::full()
        .crd(crd("jobset.x-k8s.io_jobsets.yaml"))
        .crd(crd("muster.dev_gangs.yaml"))
        .crd(crd("muster.dev_gpunodes.yaml"));
    for n in NODES {
        config = config.node(FakeNode::new(n).gpus(8));
    }
    config
}

// ---------------------------------------------------------------------------------------------------------------
// What the gpu-agent and the admission controller would write
// ---------------------------------------------------------------------------------------------------------------

/// Publishes a healthy 8-GPU GPUNode per node and keeps its heartbeat fresh while the returned task runs.
async fn publish_gpunodes(client: &Client) -> tokio::task::JoinHandle<()> {
    let api: Api<GPUNode> = Api::all(client.clone());
    for n in NODES {
        let object = json!({"apiVersion": "muster.dev/v1alpha1", "kind": "GPUNode",
            "metadata": {"name": n}, "spec": {"nodeName": n}});
        api.create(&PostParams::default(), &serde_json::from_value(object).expect("GPUNode"))
            .await
            .expect("create GPUNode");
    }
    let beat = |api: Api<GPUNode>| async move {
        for n in NODES {
            let devices: Vec<Value> = (0..8)
                .map(|i| {
                    json!({"index": i, "uuid": format!("GPU-{n}-{i}"), "model": "NVIDIA H100 80GB HBM3",
                    "pciBusId": format!("0000:{i:02x}:00.0"), "health": {"healthy": true}})
                })
                .collect();
            let status = json!({"status": {"nvmlAvailable": true, "devices": devices,
                "summary": {"total": 8, "healthy": 8, "allocated": 0, "free": 8},
                "heartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string()}});
            api.patch_status(n, &PatchParams::default(), &Patch::Merge(&status)).await.expect("GPUNode status");
        }
    };
    beat(api.clone()).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            beat(api.clone()).await;
        }
    })
}

/// A Gang as the admission controller writes it: one pod set `workers` of `jobs` single-pod Jobs of 8 GPUs, and
/// its status (phase, placement) through the status subresource.
async fn write_gang(ns: &TestNamespace<'_>, name: &str, phase: GangPhase, nodes: &[&str]) {
    write_gang_of(ns, name, phase, nodes, 8).await;
}

/// [`write_gang`] with pods of `gpus` GPUs.
async fn write_gang_of(ns: &TestNamespace<'_>, name: &str, phase: GangPhase, nodes: &[&str], gpus: i64) {
    let api: Api<Gang> = ns.api();
    let spec = GangSpec {
        queue: "default".into(),
        priority: 0,
        pod_sets: vec![PodSet {
            name: "workers".into(),
            jobs: i32::try_from(nodes.len().max(1)).expect("small"),
            pods_per_job: 1,
            gpus_per_pod: gpus,
            ..PodSet::default()
        }],
        total_gpus: gpus * i64::try_from(nodes.len().max(1)).expect("small"),
    };
    if api.get_opt(name).await.expect("read gang").is_none() {
        api.create(&PostParams::default(), &Gang::new(name, spec)).await.expect("create gang");
    }
    let placement: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(job, node)| json!({"podSet": "workers", "jobIndex": job, "podIndex": 0, "node": node}))
        .collect();
    let status = json!({"status": {"phase": phase, "placement": placement}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("gang status");
}

/// Job `<gang>-workers-<index>` as the JobSet reconciler makes it: Indexed, one 8-GPU pod labelled with its
/// JobSet, ReplicatedJob and Job index; running for an hour once started.
fn gang_job(gang: &str, index: usize, scheduler: Option<&str>) -> Job {
    let labels =
        json!({keys::JOBSET_NAME: gang, keys::REPLICATED_JOB_NAME: "workers", keys::JOB_INDEX: index.to_string()});
    let mut pod_spec = json!({"restartPolicy": "Never",
        "containers": [{"name": "trainer", "image": "registry.invalid/muster/x:never-pulled",
            "resources": {"limits": {GPU_RESOURCE: "8"}}}]});
    if let Some(s) = scheduler {
        pod_spec["schedulerName"] = json!(s);
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("{gang}-workers-{index}"), "labels": labels},
        "spec": {"completionMode": "Indexed", "completions": 1, "parallelism": 1, "backoffLimit": 0,
            "template": {"metadata": {"labels": labels, "annotations": {"muster.dev/test-duration": "1h"}},
                "spec": pod_spec}}
    }))
    .expect("job")
}

fn plain_pod(name: &str, scheduler: Option<&str>) -> Pod {
    plain_pod_of(name, scheduler, 8)
}

fn plain_pod_of(name: &str, scheduler: Option<&str>, gpus: u32) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "registry.invalid/muster/x:never-pulled",
        "resources": {"limits": {GPU_RESOURCE: gpus.to_string()}}}]});
    if let Some(s) = scheduler {
        spec["schedulerName"] = json!(s);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

// ---------------------------------------------------------------------------------------------------------------
// Observing pods
// ---------------------------------------------------------------------------------------------------------------

async fn bound_node(pods: &Api<Pod>, name: &str) -> String {
    eventually(&format!("{name} to be bound"), WAIT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        pod.spec.and_then(|s| s.node_name).ok_or_else(|| unschedulable_message(pod.status.as_ref()))
    })
    .await
    .expect("pod bound")
}

fn unschedulable_message(status: Option<&k8s_openapi::api::core::v1::PodStatus>) -> String {
    status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.clone())
        .unwrap_or_else(|| "not scheduled yet".to_owned())
}

/// Waits until the pod is reported unschedulable with a message containing `needle`; it must still be unbound.
async fn unschedulable_with(pods: &Api<Pod>, name: &str, needle: &str) -> String {
    eventually(&format!("{name} to be unschedulable because {needle:?}"), WAIT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            return Ok(Err(node));
        }
        let message = unschedulable_message(pod.status.as_ref());
        if message.contains(needle) { Ok(Ok(message)) } else { Err(message) }
    })
    .await
    .expect("unschedulable")
    .unwrap_or_else(|node| panic!("{name} was bound to {node}"))
}

/// The single pod of Job `job`, once the Job controller has created it.
async fn pod_of(pods: &Api<Pod>, job: &str) -> String {
    eventually(&format!("the pod of Job {job}"), WAIT, || async {
        let list =
            pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await.map_err(|e| e.to_string())?;
        list.items.first().map(ResourceExt::name_any).ok_or_else(|| "no pod yet".to_owned())
    })
    .await
    .expect("job pod")
}

/// Creates the four Jobs of gang `train` and checks each pod lands on its reserved node.
async fn gang_lands_on_its_reserved_nodes(ns: &TestNamespace<'_>, scheduler: Option<&str>) -> Vec<Pod> {
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    for index in 0..PLACEMENT.len() {
        jobs.create(&PostParams::default(), &gang_job("train", index, scheduler)).await.expect("create job");
    }
    let mut landed = Vec::new();
    for (index, reserved) in PLACEMENT.iter().enumerate() {
        let name = pod_of(&pods, &format!("train-workers-{index}")).await;
        let node = bound_node(&pods, &name).await;
        assert_eq!(&node, reserved, "pod {name} (workers-{index}/0) went to {node}, admission reserved {reserved}");
        landed.push(pods.get(&name).await.expect("pod"));
    }
    landed
}

// ---------------------------------------------------------------------------------------------------------------
// Extender mode
// ---------------------------------------------------------------------------------------------------------------

/// Waits until the extender's watch has brought the gang in `phase`.
async fn seen(cache: &Cache, gang: &GangKey, phase: GangPhase) {
    eventually(&format!("the extender to see gang {gang} {phase:?}"), WAIT, || async {
        match cache.read().gang(gang).map(|g| g.phase) {
            Some(p) if p == phase => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("gang seen by the extender");
}

/// A cluster whose Muster scheduler consults an in-process extender, synced; the extender's metrics registry.
struct ExtenderCluster {
    cluster: TestCluster,
    cache: Arc<Cache>,
    registry: Registry,
    watches: tokio::task::JoinHandle<()>,
    _heartbeats: tokio::task::JoinHandle<()>,
    _server: http::RunningServer,
}

async fn extender_cluster() -> ExtenderCluster {
    // The extender listens before the scheduler starts (its URL goes into the scheduler's configuration); it
    // answers "not synced" until its watches have listed the cluster.
    let cache = new_cache(ModelConfig::default());
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind extender");
    let app = http::router(cache.clone(), Limits::default(), metrics);
    let server = http::serve(listener, None, app, Duration::from_secs(10)).expect("serve extender");
    let mut extender = Extender::new(server.url_prefix(false))
        .filter("filter")
        .prioritize("prioritize", 10)
        .managed_resource(GPU_RESOURCE, false)
        .node_cache_capable(true);
    extender.http_timeout = Duration::from_secs(1);
    let cluster = TestCluster::start(
        cluster_config().scheduler(SchedulerConfig::default().profile(SCHEDULER_NAME).extender(extender)),
    )
    .await
    .expect("start cluster");
    let client = cluster.client().expect("client");
    let heartbeats = publish_gpunodes(&client).await;
    let watches = tokio::spawn(watch::run(client.clone(), cache.clone()));
    eventually("the extender to list the cluster", WAIT, || async {
        if cache.is_synced() { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await
    .expect("synced");
    ExtenderCluster { cluster, cache, registry, watches, _heartbeats: heartbeats, _server: server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_steers_gang_pods_and_keeps_other_gpu_pods_off_reservations() {
    let _serial = serial().await;
    // Bound, not `..`: fields left out of a pattern are dropped at once, and with them the server.
    let ExtenderCluster { cluster, cache, registry, watches, _heartbeats, _server } = extender_cluster().await;
    let ns = cluster.namespace("extender").await.expect("namespace");
    let pods: Api<Pod> = ns.api();
    write_gang(&ns, "train", GangPhase::Admitted, &PLACEMENT).await;
    seen(&cache, &GangKey::new(ns.name(), "train"), GangPhase::Admitted).await;

    // A gang that is not admitted: its pod passes nowhere, and says why.
    // (In the real flow the Gang exists long before its pods: the JobSet stays suspended until admission.)
    let queued_gang = GangKey::new(ns.name(), "queued");
    write_gang(&ns, "queued", GangPhase::Pending, &[]).await;
    seen(&cache, &queued_gang, GangPhase::Pending).await;
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &gang_job("queued", 0, Some(SCHEDULER_NAME))).await.expect("create job");
    let queued = pod_of(&pods, "queued-workers-0").await;
    let waiting = format!("5 gang {}/queued is Pending, not admitted", ns.name());
    unschedulable_with(&pods, &queued, &waiting).await;

    // While the workers' GPUs are reserved but none of their pods exists, a plain 8-GPU pod gets the one free
    // node, and a second one none, although the scheduler itself sees four empty nodes.
    pods.create(&PostParams::default(), &plain_pod("plain-1", Some(SCHEDULER_NAME))).await.expect("create");
    assert_eq!(bound_node(&pods, "plain-1").await, FREE_NODE);
    pods.create(&PostParams::default(), &plain_pod("plain-2", Some(SCHEDULER_NAME))).await.expect("create");
    unschedulable_with(&pods, "plain-2", "4 nvidia.com/gpu reserved for admitted gangs").await;

    // The gang's pods: each on its reserved node.
    gang_lands_on_its_reserved_nodes(&ns, Some(SCHEDULER_NAME)).await;

    // Admission places the queued gang on gpu-2, where plain-1 runs; once plain-1 is gone the queued pod lands
    // there, and plain-2, waiting for 8 GPUs all along, still does not get them.
    write_gang(&ns, "queued", GangPhase::Admitted, &[FREE_NODE]).await;
    seen(&cache, &queued_gang, GangPhase::Admitted).await;
    pods.delete("plain-1", &DeleteParams::default()).await.expect("delete plain-1");
    assert_eq!(bound_node(&pods, &queued).await, FREE_NODE);
    let plain_2 = pods.get("plain-2").await.expect("plain-2");
    assert_eq!(plain_2.spec.and_then(|s| s.node_name), None, "plain-2 must not take reserved GPUs");

    // The scheduler really asked (prioritize only runs when more than one node passes filter, which none of the
    // pods here leaves it).
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    let filters = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"muster_extender_requests_total{verb="filter",outcome="ok"} "#))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(filters >= 7, "{filters} filter calls answered\n{text}");
    watches.abort();
}

/// Plain GPU pods created together, onto nodes whose GPUs are half reserved for a gang whose pods are not bound
/// yet: the scheduler's own count sees 8 free GPUs on each node, and asks about the next pod before the extender's
/// watch can show the last one bound. One 4-GPU pod per node may run, so exactly five of the ten are bound, one per
/// node, and the rest wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_plain_pods_do_not_share_gpus_reserved_for_a_gang() {
    let _serial = serial().await;
    let ExtenderCluster { cluster, cache, watches, _heartbeats, _server, .. } = extender_cluster().await;
    let ns = cluster.namespace("extender-race").await.expect("namespace");
    let pods: Api<Pod> = ns.api();
    write_gang_of(&ns, "half", GangPhase::Admitted, &NODES, 4).await;
    seen(&cache, &GangKey::new(ns.name(), "half"), GangPhase::Admitted).await;

    let names: Vec<String> = (0..10).map(|i| format!("plain-{i}")).collect();
    let mut creates = tokio::task::JoinSet::new();
    for name in &names {
        let (pods, pod) = (pods.clone(), plain_pod_of(name, Some(SCHEDULER_NAME), 4));
        creates.spawn(async move { pods.create(&PostParams::default(), &pod).await.map(|_| ()) });
    }
    for created in creates.join_all().await {
        created.expect("create plain pod");
    }
    let placed = || async {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let bound: Vec<String> = list.items.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
        Ok::<_, String>(bound)
    };
    eventually("five plain pods to be bound", WAIT, || async {
        let bound = placed().await?;
        if bound.len() >= 5 { Ok(bound) } else { Err(format!("bound to {bound:?}")) }
    })
    .await
    .expect("bound");
    // Settled: whatever the scheduler still tries, nothing more fits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut bound = placed().await.expect("pods");
    bound.sort();
    assert_eq!(bound, NODES, "4-GPU pods bound per node, with 4 of each node's 8 GPUs reserved");
    let list = pods.list(&ListParams::default()).await.expect("pods");
    let unbound = list.items.iter().find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none());
    let message = unschedulable_message(unbound.and_then(|p| p.status.as_ref()));
    assert!(message.contains("Insufficient nvidia.com/gpu outside gang reservations"), "{message}");
    watches.abort();
}

// ---------------------------------------------------------------------------------------------------------------
// Pod-pinning mode
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_pinning_steers_gang_pods_with_the_stock_scheduler() {
    let _serial = serial().await;
    let cluster = TestCluster::start(cluster_config()).await.expect("start cluster");
    let client = cluster.client().expect("client");
    let _heartbeats = publish_gpunodes(&client).await;
    let (gangs, reflector) = KubeGangs::spawn(client.clone());
    let server = serve(ServeConfig { pod_pinning: Some(Arc::new(gangs)), ..ServeConfig::loopback() })
        .await
        .expect("webhook server");
    // mpod.kb.io pins in this mode; the configuration also holds mjobset.kb.io, which this test does not use.
    let configuration = mutating_configuration(&server.webhook_target(), server.ca_pem().map(str::as_bytes));
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .expect("register pod webhook");

    let ns = cluster.namespace("pinning").await.expect("namespace");
    let pods: Api<Pod> = ns.api();
    write_gang(&ns, "train", GangPhase::Admitted, &PLACEMENT).await;

    // Until the API server calls the new webhook, a dry-run gang pod comes back unpinned.
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe", "labels": {keys::JOBSET_NAME: "train", keys::REPLICATED_JOB_NAME: "workers",
            keys::JOB_INDEX: "0", keys::JOB_COMPLETION_INDEX: "0"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/muster/x:never-pulled"}]}
    }))
    .expect("probe pod");
    let probe = &probe;
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    eventually("the API server to call the pod webhook", WAIT, || async {
        let pod = pods.create(&dry_run, probe).await.map_err(|e| e.to_string())?;
        match pod.annotations().get(keys::RESERVED_NODE) {
            Some(node) if node == PLACEMENT[0] => Ok(()),
            other => Err(format!("reserved-node annotation {other:?}")),
        }
    })
    .await
    .expect("webhook registered");

    // The gang's pods, scheduled by the stock scheduler: each on its reserved node, pinned by required affinity.
    for pod in gang_lands_on_its_reserved_nodes(&ns, None).await {
        let node = pod.annotations().get(keys::RESERVED_NODE).cloned().expect("reserved-node annotation");
        let terms = pod
            .spec
            .and_then(|s| s.affinity)
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .expect("required node affinity");
        let fields = terms[0].match_fields.clone().unwrap_or_default();
        assert_eq!(fields.len(), 1);
        assert_eq!((fields[0].key.as_str(), fields[0].operator.as_str()), ("metadata.name", "In"));
        assert_eq!(fields[0].values, Some(vec![node]));
    }

    // A gang that is not admitted: the Job controller cannot create its pod, and the event says why. Once
    // admitted, the Job controller's retry creates it, pinned to its node.
    write_gang(&ns, "queued", GangPhase::Pending, &[]).await;
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &gang_job("queued", 0, None)).await.expect("create job");
    let events: Api<Event> = ns.api();
    let waiting = format!("gang {}/queued is Pending, not admitted", ns.name());
    eventually("the Job controller to report the refused pod", WAIT, || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let refused = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("FailedCreate") && e.message.as_deref().is_some_and(|m| m.contains(&waiting))
        });
        let pods =
            pods.list(&ListParams::default().labels("job-name=queued-workers-0")).await.map_err(|e| e.to_string())?;
        if !pods.items.is_empty() {
            return Err(format!("a pod of the queued gang exists: {}", pods.items[0].name_any()));
        }
        if refused { Ok(()) } else { Err("no FailedCreate event yet".to_owned()) }
    })
    .await
    .expect("pod refused");
    write_gang(&ns, "queued", GangPhase::Admitted, &[FREE_NODE]).await;
    let queued = eventually("the queued gang's pod after admission", Duration::from_secs(180), || async {
        let list =
            pods.list(&ListParams::default().labels("job-name=queued-workers-0")).await.map_err(|e| e.to_string())?;
        list.items.first().map(ResourceExt::name_any).ok_or_else(|| "no pod yet".to_owned())
    })
    .await
    .expect("queued pod created");
    assert_eq!(bound_node(&pods, &queued).await, FREE_NODE);
    reflector.abort();
    drop(server);
}

// ---------------------------------------------------------------------------------------------------------------
// The whole chain: admission, reconciler, webhooks and extender
// ---------------------------------------------------------------------------------------------------------------

/// `ElasticJobSet` scale-up of a running gang with the extender. A pod created before its slot exists is turned
/// away, and once other nodes have also refused it (full), kube-scheduler does not try it again when the slot
/// appears, only at its five-minute flush. So the reconciler grows a gang's Job only as far as its Gang's slots:
/// with admission down, the Job keeps its pods; once admission places the added pod, the Job grows and the pod lands
/// on its slot's node at the first try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_pod_of_a_scaled_gang_lands_on_its_new_slot() {
    use muster_admission::admission::state::Settings;
    use muster_admission::webhook::jobset::gang::GangMutation;
    use muster_api::JobSet;
    use muster_tests::{InProcessAdmission, InProcessReconciler, edit_jobset, gang_in};

    let _serial = serial().await;
    let ExtenderCluster { cluster, watches, _heartbeats, _server, .. } = extender_cluster().await;
    let ns = cluster.namespace("extender-elastic").await.expect("namespace");
    let client = ns.client();
    let reconciler_gates = muster_reconciler::plan::FeatureGates { elastic_jobset: true, ..Default::default() };
    let _reconciler = InProcessReconciler::start(client.clone(), reconciler_gates);
    let mutation = GangMutation { scheduler_name: Some(SCHEDULER_NAME.to_owned()) };
    let webhook_gates = muster_admission::FeatureGates { elastic_jobset: true, ..Default::default() };
    let mut admission = InProcessAdmission::start_with(client.clone(), Settings::default(), mutation, webhook_gates)
        .await
        .expect("admission");
    let jobset: JobSet = serde_json::from_value(json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "elastic"}, "spec": {"replicatedJobs": [{"name": "workers", "replicas": 1,
            "template": {"spec": {"parallelism": 2, "completions": 2, "completionMode": "Indexed", "backoffLimit": 0,
                "template": {"metadata": {"annotations": {"muster.dev/test-duration": "1h"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "train",
                        "image": "registry.invalid/train:never-pulled",
                        "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}}}}]}}))
    .expect("JobSet");
    let jobsets: Api<JobSet> = ns.api();
    jobsets.create(&PostParams::default(), &jobset).await.expect("create");
    eventually("running", WAIT, || gang_in(&ns, "elastic", &[GangPhase::Running])).await.expect("running");

    // Admission is down when the JobSet scales: its slot comes late, as after a restart or a slow round.
    admission.crash();
    edit_jobset(&ns, "elastic", |js| {
        if let Some(job) = js.spec.replicated_jobs[0].template.spec.as_mut() {
            (job.parallelism, job.completions) = (Some(3), Some(3));
        }
    })
    .await
    .expect("scaled");
    let pods: Api<Pod> = ns.api();
    let third = ListParams::default().labels("batch.kubernetes.io/job-completion-index=2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = ns.api::<Job>().get("elastic-workers-0").await.expect("Job");
    assert_eq!(job.spec.and_then(|s| s.parallelism), Some(2), "no slot for a third pod: the Job does not grow");
    assert!(pods.list(&third).await.expect("pods").items.is_empty());
    admission.restart_controller();
    let grown = eventually("a slot for the added pod", WAIT, || async {
        let s = gang_in(&ns, "elastic", &[GangPhase::Admitted, GangPhase::Running]).await?;
        if s.placement.len() == 3 { Ok(s) } else { Err(format!("{:?}", s.reason)) }
    })
    .await
    .expect("grown");
    let slot = grown.placement.iter().find(|s| s.pod_index == 2).map(|s| s.node.clone()).expect("slot of pod 2");
    let added = eventually("the added pod", WAIT, || async {
        let list = pods.list(&third).await.map_err(|e| e.to_string())?;
        list.items.first().map(ResourceExt::name_any).ok_or_else(|| "not created".to_owned())
    })
    .await
    .expect("added pod");
    assert_eq!(bound_node(&pods, &added).await, slot, "the added pod is on its slot's node");
    let events: Api<Event> = ns.api();
    let refused = events.list(&ListParams::default()).await.expect("events").items.into_iter().any(|e| {
        e.involved_object.name.as_deref() == Some(added.as_str()) && e.reason.as_deref() == Some("FailedScheduling")
    });
    assert!(!refused, "the added pod was created after its slot, and never turned away");

    // Down to 1: the slots of pods 1 and 2 go at once, and the Job shrinks with them.
    edit_jobset(&ns, "elastic", |js| {
        if let Some(job) = js.spec.replicated_jobs[0].template.spec.as_mut() {
            (job.parallelism, job.completions) = (Some(1), Some(1));
        }
    })
    .await
    .expect("scaled down");
    let shrunk = eventually("slots given back", WAIT, || async {
        let s = gang_in(&ns, "elastic", &[GangPhase::Admitted, GangPhase::Running]).await?;
        if s.placement.len() == 1 { Ok(s) } else { Err(format!("{:?}", s.reason)) }
    })
    .await
    .expect("shrunk");
    assert_eq!(shrunk.placement[0].pod_index, 0);
    assert_eq!(shrunk.reason.as_deref(), Some("scaled to 1 pod: 2 pods removed, GPUs given back"));
    eventually("the Job to shrink", WAIT, || async {
        let job = ns.api::<Job>().get("elastic-workers-0").await.map_err(|e| e.to_string())?;
        let parallelism = job.spec.and_then(|s| s.parallelism);
        if parallelism == Some(1) { Ok(()) } else { Err(format!("parallelism {parallelism:?}")) }
    })
    .await
    .expect("Job scaled down");
    watches.abort();
}
