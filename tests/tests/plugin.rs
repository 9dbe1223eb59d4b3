//! `kubectl-muster` against the real control plane: the API server, Job controller, kube-scheduler and KWOK GPU
//! nodes, with Muster's webhooks and admission controller in-process (as in gang_admission.rs).
//!
//! The JobSet reconciler is left out on purpose: without it an admitted gang creates no pods, so the cluster holds
//! exactly what admission reserved plus the pods a test binds itself, and every number asserted here is known.
//! (These tests run without the scheduling sidecar, so the default scheduler would bind gang pods to any node with
//! room, which is not what this file tests; gang_admission.rs runs gangs to completion.)
//!
//! The commands run through the plugin's library entry point ([`plugin::run`], the whole program but the exit
//! status, connecting through the cluster's kubeconfig file); the last test runs the built binary for its exit codes,
//! `$KUBECONFIG` and errors.
//!
//! Run: `cargo test -p muster-tests --test plugin` (after `tests/build-control-plane.sh`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{ListParams, PostParams};
use muster_admission::admission::state::Settings;
use muster_admission::gang::model::ModelConfig;
use muster_admission::gang::queue::{PodsReadyConfig, QueueConfig};
use muster_admission::plugin::{self, Cli, EXIT_DOES_NOT_FIT, Outcome, PluginError};
use muster_api::JobSet;
use muster_api::gang::{GangPhase, GangStatus, SlotPlacement};
use muster_tests::{
    ClusterConfig, InProcessAdmission, Profile, SharedCluster, TestCluster, TestNamespace, eventually, gang_in,
    publish_gpu_node, workspace_binary,
};
use serde_json::{Value, json};

const NODES: [&str; 3] = ["gpu-0", "gpu-1", "gpu-2"];

static CLUSTER: SharedCluster = SharedCluster::new(|| ClusterConfig::gpu_fleet(&NODES));

const WAIT: Duration = Duration::from_secs(90);

/// The GPUNodes are published once per test, so heartbeats must not go stale during one: the admission controller
/// and the plugin are both told the same long timeout (as in production they share the flag's value).
const HEARTBEAT_TIMEOUT_SECS: u64 = 3600;

fn settings() -> Settings {
    Settings {
        model: ModelConfig { heartbeat_timeout: Duration::from_secs(HEARTBEAT_TIMEOUT_SECS), ..ModelConfig::default() },
        default_queue: QueueConfig {
            head_hold_after: Duration::from_secs(600),
            pods_ready: PodsReadyConfig { timeout: Duration::from_secs(120), ..PodsReadyConfig::default() },
            ..QueueConfig::default()
        },
        ..Settings::default()
    }
}

/// Every node with 8 GPUs and a fresh heartbeat; gpu-1's GPU 3 is unhealthy with XID 79.
async fn fleet(client: &Client) {
    for node in NODES {
        let unhealthy: &[(u32, u64)] = if node == "gpu-1" { &[(3, 79)] } else { &[] };
        publish_gpu_node(client, node, 8, unhealthy).await.expect("GPUNode published");
    }
}

/// `jobs` Jobs of one pod with `gpus` GPUs each, running for `duration`, as YAML (the form `simulate -f` reads).
fn gang_yaml(name: &str, jobs: u32, gpus: u32, duration: &str) -> String {
    format!(
        "apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: {name}
spec:
  replicatedJobs:
  - name: workers
    replicas: {jobs}
    template:
      spec:
        parallelism: 1
        completions: 1
        backoffLimit: 0
        template:
          metadata:
            annotations:
              muster.dev/test-duration: {duration}
          spec:
            restartPolicy: Never
            containers:
            - name: train
              image: registry.invalid/train:never-pulled
              resources:
                limits:
                  nvidia.com/gpu: {gpus}
                requests:
                  cpu: '1'
"
    )
}

fn jobset(yaml: &str) -> JobSet {
    serde_saphyr::from_str(yaml).expect("valid JobSet YAML")
}

/// Runs `kubectl muster <args>` through the library entry point.
async fn muster(cluster: &TestCluster, args: &[&str]) -> Result<(String, Outcome), PluginError> {
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let timeout = HEARTBEAT_TIMEOUT_SECS.to_string();
    let mut argv = vec!["kubectl-muster", "--kubeconfig", &kubeconfig, "--gpu-heartbeat-timeout", &timeout];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).expect("valid arguments");
    plugin::run(&cli).await
}

/// `muster` with `-o json`, parsed.
async fn muster_json(cluster: &TestCluster, args: &[&str]) -> (Value, Outcome) {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let (text, outcome) = muster(cluster, &args).await.unwrap_or_else(|e| panic!("kubectl muster {args:?}: {e}"));
    (serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")), outcome)
}

/// `pending` with a reason written (its position and reason come in the same status write).
async fn pending_with_reason(ns: &TestNamespace<'_>, name: &str) -> Result<GangStatus, String> {
    let s = gang_in(ns, name, &[GangPhase::Pending]).await?;
    if s.reason.is_some() && s.queue_position.is_some() { Ok(s) } else { Err("no reason yet".into()) }
}

fn nodes_of(placement: &[SlotPlacement]) -> BTreeSet<String> {
    placement.iter().map(|s| s.node.clone()).collect()
}

fn row<'a>(rows: &'a Value, key: &str, name: &str) -> &'a Value {
    rows.as_array()
        .and_then(|rows| rows.iter().find(|r| r[key] == name))
        .unwrap_or_else(|| panic!("no {key} {name} in {rows}"))
}

#[tokio::test]
async fn queue_nodes_and_explain_show_the_shortfall_node_by_node_with_the_xid() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("plugin-explain").await.expect("namespace");
    let client = ns.client();
    fleet(&client).await;
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let pp = PostParams::default();
    // A pod of no gang, bound by hand, holds 2 of gpu-1's 7 healthy GPUs.
    let inference: Pod =
        serde_json::from_value(json!({"metadata": {"name": "inference"}, "spec": {"nodeName": "gpu-1",
        "containers": [{"name": "serve", "image": "registry.invalid/serve:never-pulled",
            "resources": {"limits": {"nvidia.com/gpu": 2}}}]}}))
        .expect("pod");
    ns.api::<Pod>().create(&pp, &inference).await.expect("inference pod");
    // pair takes the two nodes with 8 healthy GPUs; one more 8-GPU pod then has nowhere to go.
    ns.api::<JobSet>().create(&pp, &jobset(&gang_yaml("pair", 2, 8, "120s"))).await.expect("pair");
    let pair = eventually("pair admitted", WAIT, || gang_in(&ns, "pair", &[GangPhase::Admitted]))
        .await
        .expect("pair admitted");
    ns.api::<JobSet>().create(&pp, &jobset(&gang_yaml("one", 1, 8, "1s"))).await.expect("one");
    eventually("one pending", WAIT, || pending_with_reason(&ns, "one")).await.expect("one pending");
    let (n, pair_key, one_key) = (ns.name(), format!("{}/pair", ns.name()), format!("{}/one", ns.name()));

    // queue: the pending gang at position 1 with its wait and reason, the admitted one after it.
    let (queue, outcome) = muster_json(&cluster, &["queue"]).await;
    assert_eq!(outcome, Outcome::Done);
    let one = row(&queue["gangs"], "gang", &one_key);
    assert_eq!(
        (one["queue"].as_str(), one["position"].as_i64(), one["gpus"].as_i64()),
        (Some("default"), Some(1), Some(8))
    );
    assert_eq!(one["phase"], "Pending");
    assert!(one["waitingSeconds"].as_u64().is_some(), "{one}");
    assert!(one["reason"].as_str().is_some_and(|r| r.contains("GPU")), "{one}");
    let pair_row = row(&queue["gangs"], "gang", &pair_key);
    assert!(pair_row.get("position").is_none() && pair_row.get("waitingSeconds").is_none(), "{pair_row}");
    let (table, _) = muster(&cluster, &["queue"]).await.expect("queue table");
    let line = table.lines().find(|l| l.contains(&one_key)).expect("a line for one");
    assert!(line.starts_with("default ") && line.contains(" Pending "), "{table}");

    // nodes: gpu-1 has 7 healthy GPUs and says which one is not, with its XID, and 2 allocated to the bound pod;
    // the others are reserved for pair.
    let (nodes, _) = muster_json(&cluster, &["nodes"]).await;
    let gpu1 = row(&nodes["nodes"], "node", "gpu-1");
    let counts = |r: &Value| ["total", "healthy", "allocated", "reserved", "free"].map(|k| r[k].as_u64().unwrap_or(99));
    assert_eq!(counts(gpu1), [8, 7, 2, 0, 5], "{gpu1}");
    assert_eq!(gpu1["unhealthy"], json!([{"index": 3, "xid": 79, "reason": "XID 79"}]));
    assert_eq!(gpu1["agent"], json!({"state": "ok"}));
    assert_eq!(gpu1["nvml"], true);
    for node in nodes_of(&pair.placement) {
        let r = row(&nodes["nodes"], "node", &node);
        assert_eq!(counts(r), [8, 8, 0, 8, 0], "{r}");
        assert_eq!(r["gangs"][0]["gang"], pair_key.as_str());
        assert!(r["heartbeatAgeSeconds"].as_u64().is_some_and(|s| s < HEARTBEAT_TIMEOUT_SECS));
    }
    let (table, _) = muster(&cluster, &["nodes"]).await.expect("nodes table");
    assert!(table.starts_with("NODE "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("gpu-1 ") && l.contains("3:XID 79")), "{table}");

    // explain: does not fit now; gpu-1 is short of a GPU because of XID 79, the others are reserved for pair.
    let (x, _) = muster_json(&cluster, &["explain", "one", "-n", n]).await;
    assert_eq!(x["jobset"], one_key.as_str());
    assert_eq!(x["gang"]["phase"], "Pending");
    assert_eq!(x["fit"]["verdict"], "doesNotFitNow");
    let causes = &x["fit"]["explanation"]["podSets"][0]["causes"];
    let xid = row(causes, "cause", "unhealthy_gpus");
    assert_eq!((xid["xid"].as_u64(), xid["nodes"].as_u64()), (Some(79), Some(1)), "{causes}");
    assert!(xid["examples"][0].as_str().is_some_and(|e| e.starts_with("gpu-1")), "{xid}");
    assert_eq!(row(causes, "cause", "reserved")["gang"], pair_key.as_str());
    assert_eq!(row(causes, "cause", "used_by_pods")["gpus"], 2, "the bound pod's GPUs: {causes}");
    let per_node = &x["podSets"][0]["nodes"];
    let gpu1 = row(per_node, "node", "gpu-1");
    assert_eq!(
        (gpu1["matches"].as_bool(), gpu1["free"].as_u64(), gpu1["podsFit"].as_u64()),
        (Some(true), Some(5), Some(0))
    );
    assert_eq!(gpu1["unhealthy"][0]["xid"], 79);
    for node in nodes_of(&pair.placement) {
        assert_eq!(row(per_node, "node", &node)["gangs"][0]["gang"], pair_key.as_str());
    }
    let (table, _) = muster(&cluster, &["explain", "one", "--namespace", n]).await.expect("explain table");
    assert!(table.contains("Now: does not fit now:"), "{table}");
    assert!(table.contains("unhealthy_gpus (XID 79)"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("gpu-1 ") && l.contains("3:XID 79")), "{table}");

    // explain of the admitted gang: its recorded placement.
    let (x, _) = muster_json(&cluster, &["explain", "pair", "-n", n]).await;
    assert_eq!(x["fit"]["verdict"], "admitted");
    let placed: BTreeSet<String> = x["fit"]["placement"]
        .as_array()
        .expect("placement")
        .iter()
        .filter_map(|s| s["node"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(placed, nodes_of(&pair.placement));

    match muster(&cluster, &["explain", "nope", "-n", n]).await {
        Err(e @ PluginError::JobSetNotFound { .. }) => assert_eq!(e.to_string(), format!("JobSet {n}/nope not found")),
        other => panic!("expected not found, got {other:?}"),
    }
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn simulate_predicts_the_placement_admission_then_makes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("plugin-simulate").await.expect("namespace");
    let client = ns.client();
    fleet(&client).await;
    let _admission = InProcessAdmission::start(client.clone(), settings()).await.expect("admission");
    let pp = PostParams::default();
    // One node busy with another gang, so the prediction depends on the live state.
    ns.api::<JobSet>().create(&pp, &jobset(&gang_yaml("busy", 1, 8, "120s"))).await.expect("busy");
    let busy = eventually("busy admitted", WAIT, || gang_in(&ns, "busy", &[GangPhase::Admitted]))
        .await
        .expect("busy admitted");
    let n = ns.name();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, yaml: String| -> String {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("manifest written");
        path.display().to_string()
    };

    // Two Jobs of 4 GPUs: best fit puts the first on gpu-1 (7 healthy), the second where 8 are free.
    let train = gang_yaml("train", 2, 4, "2s");
    let file = write("train", train.clone());
    let (sim, outcome) = muster_json(&cluster, &["simulate", "-f", &file, "-n", n]).await;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(sim["fit"]["verdict"], "fitsNow", "{sim}");
    assert_eq!(sim["jobset"], format!("{n}/train"));
    assert_eq!(sim["gpus"], 8);
    let predicted: Vec<SlotPlacement> = serde_json::from_value(sim["fit"]["placement"].clone()).expect("placement");
    assert_eq!(predicted.len(), 2);
    assert!(!nodes_of(&predicted).iter().any(|node| nodes_of(&busy.placement).contains(node)), "{predicted:?}");
    assert!(nodes_of(&predicted).contains("gpu-1"), "the partly healthy node is the best fit: {predicted:?}");
    assert!(ns.api::<JobSet>().list(&ListParams::default()).await.expect("list").items.len() == 1, "nothing submitted");
    let (table, _) = muster(&cluster, &["simulate", "-f", &file, "-n", n]).await.expect("simulate table");
    assert!(table.contains("fits now: 2 pods with 8 GPUs on 2 nodes"), "{table}");
    assert!(table.contains("POD SET   JOB   POD   NODE"), "{table}");

    // Now submit it: admission places every slot exactly where the simulation said.
    ns.api::<JobSet>().create(&pp, &jobset(&train)).await.expect("train");
    let admitted = eventually("train admitted", WAIT, || gang_in(&ns, "train", &[GangPhase::Admitted]))
        .await
        .expect("train admitted");
    assert_eq!(admitted.placement, predicted, "simulate and admission agree slot by slot");

    // What does not fit: two more whole nodes now (only gpu-0 and gpu-2 have 8 healthy GPUs, one is busy), and
    // three whole nodes ever.
    let two = write("two", gang_yaml("two", 2, 8, "1s"));
    let (sim, outcome) = muster_json(&cluster, &["simulate", "-f", &two, "-n", n]).await;
    assert_eq!(outcome, Outcome::DoesNotFit);
    assert_eq!(sim["fit"]["verdict"], "doesNotFitNow", "{sim}");
    assert!(sim["fit"]["message"].as_str().is_some_and(|m| m.contains("reserved for")), "{sim}");
    let three = write("three", gang_yaml("three", 3, 8, "1s"));
    let (sim, _) = muster_json(&cluster, &["simulate", "-f", &three, "-n", n]).await;
    assert_eq!(sim["fit"]["verdict"], "neverFits", "{sim}");
    assert_eq!(sim["fit"]["explanation"]["basis"], "emptyCluster");
    let causes = &sim["fit"]["explanation"]["podSets"][0]["causes"];
    assert_eq!(row(causes, "cause", "unhealthy_gpus")["xid"], 79, "{causes}");

    // A JobSet without GPUs is no gang, and a bad manifest is named.
    let cpu = write("cpu", gang_yaml("cpu", 1, 0, "1s").replace("nvidia.com/gpu: 0", "memory: 1Gi"));
    let err = muster(&cluster, &["simulate", "-f", &cpu, "-n", n]).await.expect_err("not a gang");
    assert!(matches!(err, PluginError::NotAGang(..)), "{err}");
    let pod = write("pod", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n".to_owned());
    let err = muster(&cluster, &["simulate", "-f", &pod]).await.expect_err("a Pod");
    assert!(err.to_string().contains("expected a jobset.x-k8s.io/v1alpha2 JobSet"), "{err}");
    ns.delete(WAIT).await.expect("cleanup");
}

#[tokio::test]
async fn nodes_held_for_the_queue_head_show_in_nodes_and_keep_a_simulated_gang_out_as_admission_does() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("plugin-holds").await.expect("namespace");
    let client = ns.client();
    fleet(&client).await;
    let mut hold_at_once = settings();
    hold_at_once.default_queue.head_hold_after = Duration::ZERO;
    let _admission = InProcessAdmission::start(client.clone(), hold_at_once).await.expect("admission");
    let pp = PostParams::default();
    ns.api::<JobSet>().create(&pp, &jobset(&gang_yaml("busy", 1, 8, "120s"))).await.expect("busy");
    let busy = eventually("busy admitted", WAIT, || gang_in(&ns, "busy", &[GangPhase::Admitted]))
        .await
        .expect("busy admitted");
    // big needs both nodes with 8 healthy GPUs; one is busy, so big waits at the head with both held for it.
    ns.api::<JobSet>().create(&pp, &jobset(&gang_yaml("big", 2, 8, "1s"))).await.expect("big");
    let big = eventually("big holds nodes", WAIT, || async {
        let s = pending_with_reason(&ns, "big").await?;
        if s.held_nodes.is_empty() { Err("nothing held yet".to_owned()) } else { Ok(s) }
    })
    .await
    .expect("big holds nodes");
    let held: BTreeSet<String> = big.held_nodes.iter().cloned().collect();
    assert_eq!(held, BTreeSet::from(["gpu-0".to_owned(), "gpu-2".to_owned()]));
    assert!(nodes_of(&busy.placement).is_subset(&held), "the busy node is held too: its GPUs go to big next");
    let (n, big_key) = (ns.name(), format!("{}/big", ns.name()));

    let (nodes, _) = muster_json(&cluster, &["nodes"]).await;
    for node in &held {
        assert_eq!(row(&nodes["nodes"], "node", node)["heldFor"], big_key.as_str());
    }
    assert!(row(&nodes["nodes"], "node", "gpu-1").get("heldFor").is_none());
    let (table, _) = muster(&cluster, &["nodes"]).await.expect("nodes table");
    assert!(table.lines().any(|l| l.starts_with("gpu-0 ") && l.contains(&format!("held for {big_key}"))), "{table}");

    // One more 8-GPU pod: the free node is held, so it does not fit now, and the plugin says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one.yaml");
    std::fs::write(&one, gang_yaml("one", 1, 8, "1s")).expect("manifest");
    let (sim, outcome) = muster_json(&cluster, &["simulate", "-f", &one.display().to_string(), "-n", n]).await;
    assert_eq!(outcome, Outcome::DoesNotFit);
    assert_eq!(sim["fit"]["verdict"], "doesNotFitNow", "{sim}");
    let causes = &sim["fit"]["explanation"]["podSets"][0]["causes"];
    assert_eq!(row(causes, "cause", "held_for_head")["gang"], big_key.as_str(), "{causes}");
    // Admission agrees: submitted, it waits behind big's hold.
    ns.api::<JobSet>().create(&pp, &jobset(&gang_yaml("one", 1, 8, "1s"))).await.expect("one");
    let waiting = eventually("one pending", WAIT, || pending_with_reason(&ns, "one")).await.expect("one pending");
    assert!(waiting.reason.as_deref().is_some_and(|r| r.contains(&format!("held for {big_key}"))), "{waiting:?}");
    let (x, _) = muster_json(&cluster, &["explain", "one", "-n", n]).await;
    assert_eq!(x["fit"]["verdict"], "doesNotFitNow", "{x}");
    ns.delete(WAIT).await.expect("cleanup");
}

/// Overrides the `kubectl-muster` binary the binary test builds.
const PLUGIN_BIN_ENV: &str = "MUSTER_KUBECTL_MUSTER_BIN";

fn run_binary(binary: &Path, args: &[&str], kubeconfig_env: Option<&Path>) -> (i32, String, String) {
    let mut command = std::process::Command::new(binary);
    command.args(args).env_remove("KUBECONFIG");
    if let Some(path) = kubeconfig_env {
        command.env("KUBECONFIG", path);
    }
    let output = command.output().expect("kubectl-muster runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_finds_the_cluster_like_kubectl_and_exits_non_zero_on_errors() {
    let binary = workspace_binary("muster-admission", "kubectl-muster", Profile::Dev, PLUGIN_BIN_ENV)
        .expect("kubectl-muster builds");
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("plugin-binary").await.expect("namespace");
    fleet(&ns.client()).await;
    let kubeconfig = cluster.kubeconfig_path();
    let timeout = HEARTBEAT_TIMEOUT_SECS.to_string();

    // $KUBECONFIG, as kubectl hands it down to a plugin.
    let (code, out, err) = run_binary(&binary, &["nodes", "--gpu-heartbeat-timeout", &timeout], Some(kubeconfig));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NODE "), "{out}");
    for node in NODES {
        assert!(out.lines().any(|l| l.starts_with(node) && l.contains(" ok ")), "{out}");
    }
    // --kubeconfig and --context; the context's namespace is the default.
    let path = kubeconfig.display().to_string();
    let (code, out, err) =
        run_binary(&binary, &["--kubeconfig", &path, "--context", "muster-test", "queue", "-o", "yaml"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("gangs:"), "{out}");
    let (code, _, err) = run_binary(&binary, &["--kubeconfig", &path, "explain", "nope"], None);
    assert_eq!((code, err.trim()), (1, "error: JobSet default/nope not found"));
    let (code, _, err) = run_binary(&binary, &["--kubeconfig", &path, "--context", "elsewhere", "nodes"], None);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: no usable kubeconfig:"), "{err}");

    // No cluster behind the kubeconfig.
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.kubeconfig");
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let server = text.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("server line").to_owned();
    std::fs::write(&dead, text.replace(&server, "https://127.0.0.1:1")).expect("dead kubeconfig");
    let (code, _, err) = run_binary(&binary, &["queue"], Some(&dead));
    assert_eq!(code, 1);
    assert!(err.starts_with("error: cannot reach the cluster at https://127.0.0.1:1/"), "{err}");

    // simulate: 2 when it does not fit (four whole nodes in a three-node cluster), 1 for a missing file.
    let four = dir.path().join("four.yaml");
    std::fs::write(&four, gang_yaml("four", 4, 8, "1s")).expect("manifest");
    let four = four.display().to_string();
    let (code, out, err) = run_binary(&binary, &["--kubeconfig", &path, "simulate", "-f", &four], None);
    assert_eq!(code, i32::from(EXIT_DOES_NOT_FIT), "{out}{err}");
    assert!(out.contains("never fits as specified"), "{out}");
    let (code, _, err) = run_binary(&binary, &["--kubeconfig", &path, "simulate", "-f", "/nonexistent.yaml"], None);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: reading /nonexistent.yaml:"), "{err}");
    ns.delete(WAIT).await.expect("cleanup");
}
