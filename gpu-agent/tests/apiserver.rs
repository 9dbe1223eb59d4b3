//! The agent against a real kube-apiserver: its `GPUNode` appears, follows the fixture, keeps a heartbeat, and a
//! second agent for another node never touches the first's object.
//!
//! Needs the control plane (`tests/build-control-plane.sh`); fails, never skips, without it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use muster_api::GPUNode;
use muster_tests::{ClusterConfig, FakeNode, SharedCluster, eventually};
use serde_json::{Value, json};

use common::{FIXTURE_ENV, FixtureFile, agent_binary, hgx_h100x8, mock_library, no_kubelet};

static CLUSTER: SharedCluster = SharedCluster::new(|| {
    ClusterConfig::apiserver_only()
        .crd(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds/muster.dev_gpunodes.yaml"))
});

const WAIT: Duration = Duration::from_secs(30);

/// One agent process publishing for `node`, killed when dropped.
struct Agent {
    _child: tokio::process::Child,
}

fn start_agent(kubeconfig: &Path, node: &str, fixture: &Path) -> Agent {
    let child = tokio::process::Command::new(agent_binary())
        .args([
            "--node-name",
            node,
            "--poll-interval",
            "200ms",
            "--heartbeat-interval",
            "1s",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--nvml-library")
        .arg(mock_library())
        .arg("--pod-resources-socket")
        .arg(no_kubelet())
        .env("KUBECONFIG", kubeconfig)
        .env(FIXTURE_ENV, fixture)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("starting the agent");
    Agent { _child: child }
}

async fn create_node(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &FakeNode::new(name).gpus(8).to_node())
        .await
        .expect("create node")
}

async fn gpunode_where(client: &Client, name: &str, what: &str, check: impl Fn(&GPUNode) -> bool) -> GPUNode {
    let api: Api<GPUNode> = Api::all(client.clone());
    eventually(what, WAIT, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            Some(g) if check(&g) => Ok(g),
            Some(g) => Err(format!("{:?}", g.status.map(|s| s.summary))),
            None => Err("absent".to_string()),
        }
    })
    .await
    .expect("GPUNode as expected")
}

fn summary(g: &GPUNode) -> (u32, u32, u32, u32) {
    let s = g.status.as_ref().map(|s| s.summary).unwrap_or_default();
    (s.total, s.healthy, s.allocated, s.free)
}

fn heartbeat(g: &GPUNode) -> Option<k8s_openapi::jiff::Timestamp> {
    g.status.as_ref()?.heartbeat_time.as_ref().map(|t| t.0)
}

#[tokio::test]
async fn gpunode_appears_follows_the_fixture_and_keeps_a_heartbeat() {
    let cluster = CLUSTER.lock().await;
    let client = cluster.client().expect("client");
    let kubeconfig: PathBuf = cluster.kubeconfig_path().to_path_buf();
    let node0 = create_node(&client, "gpu-0").await;
    create_node(&client, "gpu-1").await;

    let fixture0 = FixtureFile::new(&hgx_h100x8());
    let agent0 = start_agent(&kubeconfig, "gpu-0", &fixture0.path);
    let first = gpunode_where(&client, "gpu-0", "8 healthy free GPUs", |g| summary(g) == (8, 8, 0, 8)).await;
    let owner = &first.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "gpu-0"));
    assert_eq!(Some(owner.uid.clone()), node0.metadata.uid, "owned by the Node, so it goes with it");
    let status = first.status.clone().expect("status");
    assert_eq!(status.devices.len(), 8);
    assert_eq!(status.devices[0].model, "NVIDIA H100 80GB HBM3");
    assert!(status.nvml_available);

    // The fixture changes under the running agent: GPU 3 falls off the bus.
    let mut broken: Value = hgx_h100x8();
    broken["xidEvents"] = json!([{"gpu": 3, "xid": 79}]);
    fixture0.write(&broken);
    let after = gpunode_where(&client, "gpu-0", "GPU 3 unhealthy", |g| summary(g).1 == 7).await;
    let gpu3 = &after.status.as_ref().expect("status").devices[3];
    assert!(!gpu3.health.healthy);
    assert_eq!(gpu3.health.xid, Some(79));
    assert!(gpu3.health.reason.as_deref().is_some_and(|r| r.contains("XID 79")), "{:?}", gpu3.health.reason);

    // The heartbeat advances with nothing else changing.
    let before = heartbeat(&after).expect("heartbeat");
    gpunode_where(&client, "gpu-0", "a later heartbeat", |g| heartbeat(g).is_some_and(|t| t > before)).await;

    // A second agent, for another node, publishes its own object and leaves gpu-0's alone.
    drop(agent0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let api: Api<GPUNode> = Api::all(client.clone());
    let frozen = api.get("gpu-0").await.expect("gpu-0").resource_version();
    let fixture1 = FixtureFile::new(&hgx_h100x8());
    let _agent1 = start_agent(&kubeconfig, "gpu-1", &fixture1.path);
    let other = gpunode_where(&client, "gpu-1", "gpu-1 published", |g| summary(g) == (8, 8, 0, 8)).await;
    let first_heartbeat = heartbeat(&other).expect("heartbeat");
    gpunode_where(&client, "gpu-1", "gpu-1 heartbeats", |g| heartbeat(g).is_some_and(|t| t > first_heartbeat)).await;
    let gpu0 = api.get("gpu-0").await.expect("gpu-0");
    assert_eq!(gpu0.resource_version(), frozen, "agent for gpu-1 wrote to gpu-0's object");
    assert_eq!(summary(&gpu0).1, 7);
}
