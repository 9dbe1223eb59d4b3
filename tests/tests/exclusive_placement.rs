//! Exclusive placement per topology domain (`alpha.jobset.sigs.k8s.io/exclusive-topology`, upstream's affinity
//! strategy) end to end: Muster's pod webhooks registered with the real API server, the reconciler's two
//! controllers running with the RBAC deploy/controller/reconciler.yaml grants, the real Job controller and
//! kube-scheduler, KWOK nodes in three racks. Nothing writes pod status or binds pods by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use muster_admission::kube_io::KubePlacementReads;
use muster_admission::webhook::config::{mutating_configuration, validating_configuration};
use muster_admission::{RunningServer, ServeConfig, serve};
use muster_api::{JobSet, keys};
use muster_reconciler::plan::FeatureGates;
use muster_tests::{
    ClusterConfig, DEFAULT_CONTROLLERS, FakeNode, InProcessReconciler, TestCluster, TestNamespace, eventually, serial,
};
use serde_json::{Value, json};

const RACK: &str = "example.com/rack";
const RACKS: [&str; 3] = ["rack-a", "rack-b", "rack-c"];
const WAIT: Duration = Duration::from_secs(120);
/// The deployed reconciler's identity, impersonated so that its ClusterRole is what the controllers get.
const RECONCILER_USER: &str = "system:serviceaccount:muster-system:muster-reconciler";

/// Three racks of two nodes each. The pod garbage collector finishes deleting unscheduled pods that carry the Job
/// controller's finalizer (it marks them Failed, which a Job with a podFailurePolicy waits for), as in any cluster.
fn cluster_config() -> ClusterConfig {
    let crd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds/jobset.x-k8s.io_jobsets.yaml");
    let controllers = DEFAULT_CONTROLLERS.iter().copied().chain(["pod-garbage-collector-controller"]);
    let mut config = ClusterConfig::full().controllers(controllers).crd(crd);
    for rack in RACKS {
        for i in 0..2 {
            config = config.node(FakeNode::new(format!("{rack}-{i}")).cpu("16").memory("64Gi").label(RACK, rack));
        }
    }
    config
}

/// The pod webhooks (and the JobSet ones) served in-process and registered; returns once the API server calls them.
async fn webhooks(client: &Client, ns: &TestNamespace<'_>) -> RunningServer {
    let server =
        serve(ServeConfig { placement_reads: Arc::new(KubePlacementReads(client.clone())), ..ServeConfig::loopback() })
            .await
            .expect("webhook server");
    let (target, ca) = (server.webhook_target(), server.ca_pem().map(str::as_bytes));
    let pp = PostParams::default();
    Api::all(client.clone()).create(&pp, &mutating_configuration(&target, ca)).await.expect("mutating configuration");
    Api::all(client.clone()).create(&pp, &validating_configuration(&target, ca)).await.expect("validating");
    // A dry-run leader comes back with the affinity once the API server calls the webhook.
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe-w-0-0-abcde", "labels": {keys::JOBSET_NAME: "probe", keys::JOB_KEY: "k"},
            "annotations": {keys::JOBSET_NAME: "probe", keys::EXCLUSIVE_TOPOLOGY: RACK, keys::JOB_COMPLETION_INDEX: "0"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:never-pulled"}]}
    }))
    .expect("probe");
    let pods: Api<Pod> = ns.api();
    let (pods, probe) = (&pods, &probe);
    eventually("the API server to call the pod webhook", WAIT, || async move {
        let dry_run = PostParams { dry_run: true, ..PostParams::default() };
        let pod = pods.create(&dry_run, probe).await.map_err(|e| e.to_string())?;
        let affinity = pod.spec.and_then(|s| s.affinity).and_then(|a| a.pod_affinity);
        affinity.map(|_| ()).ok_or_else(|| "no pod affinity yet".to_owned())
    })
    .await
    .expect("pod webhook registered");
    server
}

/// The reconciler's controllers as the deployed ServiceAccount, with the ClusterRole and binding of
/// deploy/controller/reconciler.yaml.
async fn reconciler(cluster: &TestCluster, client: &Client) -> InProcessReconciler {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/reconciler.yaml");
    let text = std::fs::read_to_string(path).expect("reconciler.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("reconciler.yaml parses");
    let of_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned().expect(kind);
    let pp = PostParams::default();
    let role: ClusterRole = serde_json::from_value(of_kind("ClusterRole")).expect("ClusterRole");
    Api::<ClusterRole>::all(client.clone()).create(&pp, &role).await.expect("create ClusterRole");
    let binding: ClusterRoleBinding = serde_json::from_value(of_kind("ClusterRoleBinding")).expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone()).create(&pp, &binding).await.expect("create binding");
    let mut config = cluster.kube_config();
    config.auth_info.impersonate = Some(RECONCILER_USER.into());
    InProcessReconciler::start(Client::try_from(config).expect("client"), FeatureGates::default())
}

/// Two Jobs of two pods each, one rack per Job; pods run for an hour. A podFailurePolicy ignores pods that were
/// disrupted (evicted, or deleted by the exclusive-placement repair), as upstream recommends.
fn jobset(name: &str) -> JobSet {
    serde_json::from_value(json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name, "annotations": {keys::EXCLUSIVE_TOPOLOGY: RACK}},
        "spec": {"replicatedJobs": [{"name": "w", "replicas": 2, "template": {"spec": {
            "parallelism": 2, "completions": 2, "completionMode": "Indexed", "backoffLimit": 0,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {"metadata": {"annotations": {"muster.dev/test-duration": "1h"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c",
                    "image": "registry.invalid/train:never-pulled", "resources": {"requests": {"cpu": "1"}}}]}}}}}]}
    }))
    .expect("JobSet")
}

fn rack_of_node(node: &str) -> Option<&'static str> {
    RACKS.into_iter().find(|r| node.starts_with(&format!("{r}-")))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.annotations().get(key).map(String::as_str)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn selected_rack(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_selector.as_ref()?.get(RACK).map(String::as_str)
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The live pods of the JobSet by (job index, completion index), once all four are running.
async fn running_pods(ns: &TestNamespace<'_>) -> Result<BTreeMap<(String, String), Pod>, String> {
    let pods = ns.api::<Pod>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
    let all: Vec<String> = pods
        .iter()
        .map(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            let deleting = if p.metadata.deletion_timestamp.is_some() { " (deleting)" } else { "" };
            format!("{} {phase}{deleting} on {:?} selecting {:?}", p.name_any(), node_of(p), selected_rack(p))
        })
        .collect();
    let live: BTreeMap<(String, String), Pod> = pods
        .into_iter()
        .filter(running)
        .map(|p| {
            let job = p.labels().get(keys::JOB_INDEX).cloned().unwrap_or_default();
            let index = annotation(&p, keys::JOB_COMPLETION_INDEX).unwrap_or_default().to_owned();
            ((job, index), p)
        })
        .collect();
    if live.len() == 4 { Ok(live) } else { Err(format!("{} of 4 pods running: {all:?}", live.len())) }
}

/// The rack each Job's running pods are on; fails unless every Job is in exactly one rack.
fn racks_by_job(pods: &BTreeMap<(String, String), Pod>) -> BTreeMap<String, &'static str> {
    let mut racks: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for ((job, _), pod) in pods {
        let rack = node_of(pod).and_then(rack_of_node).expect("running pods are on a rack node");
        racks.entry(job.clone()).or_default().insert(rack);
    }
    racks
        .into_iter()
        .map(|(job, set)| {
            assert_eq!(set.len(), 1, "Job {job} spans racks {set:?}");
            (job, set.into_iter().next().expect("one rack"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_gets_a_rack_of_its_own() {
    let _serial = serial().await;
    let cluster = TestCluster::start(cluster_config()).await.expect("start cluster");
    let client = cluster.client().expect("client");
    let ns = cluster.namespace("exclusive").await.expect("namespace");
    let _webhooks = webhooks(&client, &ns).await;
    let _reconciler = reconciler(&cluster, &client).await;
    ns.api::<JobSet>().create(&PostParams::default(), &jobset("train")).await.expect("create JobSet");

    let pods = eventually("all four pods running", WAIT, || running_pods(&ns)).await.expect("pods running");
    let racks = racks_by_job(&pods);
    assert_eq!(racks.len(), 2, "{racks:?}");
    assert_ne!(racks["0"], racks["1"], "two Jobs share a rack: {racks:?}");

    for ((job, index), pod) in &pods {
        assert_eq!(pod.labels().get(keys::PRIORITY).map(String::as_str), Some("0"), "priority label on {job}/{index}");
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.clone());
        if index == "0" {
            let affinity = affinity.expect("leader affinity");
            let term = |required: Option<Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>| {
                let terms = required.expect("required terms");
                assert_eq!(terms.len(), 1);
                assert_eq!(terms[0].topology_key, RACK);
                serde_json::to_value(&terms[0].label_selector).expect("json")
            };
            let key = pod.labels()[keys::JOB_KEY].clone();
            assert_eq!(
                term(affinity.pod_affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution)),
                json!({"matchExpressions": [{"key": keys::JOB_KEY, "operator": "In", "values": [key]}]})
            );
            assert_eq!(
                term(affinity.pod_anti_affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution)),
                json!({"matchExpressions": [{"key": keys::JOB_KEY, "operator": "Exists"},
                    {"key": keys::JOB_KEY, "operator": "NotIn", "values": [key]},
                    {"key": keys::PRIORITY, "operator": "In", "values": ["0"]}]})
            );
            assert_eq!(selected_rack(pod), None, "leaders get no nodeSelector");
        } else {
            assert!(affinity.is_none(), "followers get no affinity: {affinity:?}");
            assert_eq!(selected_rack(pod), Some(racks[job]), "follower of Job {job} selects its leader's rack");
        }
    }

    // A follower made by hand is held to the same protocol: one claiming another Job (owner UID) has no leader.
    let leader = &pods[&("0".to_owned(), "0".to_owned())];
    let mut stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "train-w-0-5-stray", "labels": leader.labels(), "annotations": leader.annotations(),
            "ownerReferences": leader.owner_references()},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:never-pulled"}]}}))
    .expect("stray");
    stray.annotations_mut().insert(keys::JOB_COMPLETION_INDEX.into(), "5".into());
    let refused = |e: kube::Error| match e {
        kube::Error::Api(status) => status.message,
        other => panic!("not an API error: {other}"),
    };
    let mut foreign = stray.clone();
    foreign.spec.get_or_insert_with(Default::default).node_selector =
        Some(BTreeMap::from([(RACK.to_owned(), "rack-x".to_owned())]));
    if let Some(owner) = foreign.metadata.owner_references.as_mut().and_then(|o| o.first_mut()) {
        owner.uid = "00000000-0000-0000-0000-000000000000".into();
    }
    let message = refused(ns.api::<Pod>().create(&PostParams::default(), &foreign).await.expect_err("refused"));
    let leader_uid = &leader.owner_references()[0].uid;
    assert_eq!(
        message,
        format!(
            "admission webhook \"vpod.kb.io\" denied the request: follower pod owner UID \
             (00000000-0000-0000-0000-000000000000) != leader pod owner UID ({leader_uid})"
        )
    );
    // The real follower's twin is admitted with the leader's rack (dry run: the Job does not own it).
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let twin = ns.api::<Pod>().create(&dry_run, &stray).await.expect("admitted");
    assert_eq!(selected_rack(&twin), Some(racks["0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_left_behind_by_a_moved_leader_are_marked_and_deleted() {
    let _serial = serial().await;
    let cluster = TestCluster::start(cluster_config()).await.expect("start cluster");
    let client = cluster.client().expect("client");
    let ns = cluster.namespace("repair").await.expect("namespace");
    let _webhooks = webhooks(&client, &ns).await;
    let reconciler = reconciler(&cluster, &client).await;

    // Every pod that ever carried the repair's condition, seen by a watch (the pods themselves are gone at once).
    let marked: Arc<Mutex<BTreeMap<String, (String, String)>>> = Arc::default();
    let seen = marked.clone();
    let watch = tokio::spawn(
        watcher(ns.api::<Pod>(), watcher::Config::default()).default_backoff().applied_objects().for_each(move |pod| {
            if let Ok(pod) = pod {
                let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                for c in conditions.into_iter().filter(|c| c.type_ == keys::CONDITION_DISRUPTION_TARGET) {
                    if c.reason.as_deref() == Some(keys::REASON_EXCLUSIVE_PLACEMENT_VIOLATION) && c.status == "True" {
                        let entry = (c.reason.unwrap_or_default(), c.message.unwrap_or_default());
                        seen.lock().expect("lock").insert(pod.name_any(), entry);
                    }
                }
            }
            std::future::ready(())
        }),
    );

    ns.api::<JobSet>().create(&PostParams::default(), &jobset("train")).await.expect("create JobSet");
    let pods = eventually("all four pods running", WAIT, || running_pods(&ns)).await.expect("pods running");
    let racks = racks_by_job(&pods);
    let (old_rack, other_rack) = (racks["0"], racks["1"]);
    let free_rack = RACKS.into_iter().find(|r| *r != old_rack && *r != other_rack).expect("a free rack");
    let job1_uids: BTreeSet<String> =
        pods.iter().filter(|((job, _), _)| job == "1").filter_map(|(_, p)| p.uid()).collect();

    // Job 0's rack is drained: its follower is evicted and comes back selecting the leader's (old) rack, where it
    // cannot go now.
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..2 {
        let taint = json!({"spec": {"taints": [{"key": "muster.dev/test-drain", "effect": "NoSchedule"}]}});
        nodes.patch(&format!("{old_rack}-{i}"), &PatchParams::default(), &Patch::Merge(taint)).await.expect("taint");
    }
    let pod_api: Api<Pod> = ns.api();
    let old_follower = pods[&("0".to_owned(), "1".to_owned())].name_any();
    pod_api.evict(&old_follower, &EvictParams::default()).await.expect("evict follower");
    let stuck = eventually("the new follower, pending with the old rack", WAIT, || async {
        let list = pod_api.list(&ListParams::default().labels(&format!("{}=0", keys::JOB_INDEX))).await;
        let list = list.map_err(|e| e.to_string())?.items;
        list.into_iter()
            .find(|p| {
                annotation(p, keys::JOB_COMPLETION_INDEX) == Some("1")
                    && p.name_any() != old_follower
                    && node_of(p).is_none()
                    && selected_rack(p) == Some(old_rack)
            })
            .map(|p| p.name_any())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
    .expect("pending follower");

    // The leader is evicted too. Its replacement has no scheduled pod of its Job to join, so it takes the one rack
    // no other Job uses; the pending follower now selects the wrong rack and is repaired.
    let old_leader = pods[&("0".to_owned(), "0".to_owned())].name_any();
    pod_api.evict(&old_leader, &EvictParams::default()).await.expect("evict leader");
    let repaired = eventually("Job 0 running again", WAIT, || running_pods(&ns)).await.expect("Job 0 running again");
    let racks = racks_by_job(&repaired);
    assert_eq!(racks["0"], free_rack, "the new leader's rack is the free one");
    assert_eq!(racks["1"], other_rack, "Job 1 stays");
    let follower = &repaired[&("0".to_owned(), "1".to_owned())];
    assert_ne!(follower.name_any(), stuck, "the stuck follower was replaced");
    assert_eq!(selected_rack(follower), Some(free_rack), "the replacement selects the new leader's rack");
    let job1_now: BTreeSet<String> =
        repaired.iter().filter(|((job, _), _)| job == "1").filter_map(|(_, p)| p.uid()).collect();
    assert_eq!(job1_now, job1_uids, "Job 1's pods were not touched");

    let marked = marked.lock().expect("lock").clone();
    assert_eq!(
        marked.get(&stuck),
        Some(&(
            keys::REASON_EXCLUSIVE_PLACEMENT_VIOLATION.to_owned(),
            keys::MESSAGE_EXCLUSIVE_PLACEMENT_VIOLATION.to_owned()
        )),
        "the stuck follower carried the condition before it was deleted: {marked:?}"
    );
    assert_eq!(marked.len(), 1, "only the stuck follower was repaired: {marked:?}");
    assert_eq!(reconciler.exclusive_evictions(), 1, "muster_reconciler_exclusive_placement_evictions_total");
    watch.abort();
}
