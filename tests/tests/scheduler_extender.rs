//! The real kube-scheduler calls a scheduler extender configured through the harness, only for pods that
//! request a managed resource, and binds pods where the extender's filter allows. This is the hook
//! Muster's extender sidecar uses; here a stub stands in for it.
//!
//! Run: `cargo test -p muster-tests --test scheduler_extender` (after `tests/build-control-plane.sh`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use muster_tests::{ClusterConfig, Extender, FakeNode, GPU_RESOURCE, SchedulerConfig, TestCluster, eventually, serial};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

const ALLOWED_NODE: &str = "gpu-b";

/// Answers one extender request: `POST /stub/filter` with `ExtenderArgs` (PascalCase JSON, node names
/// only because the extender is nodeCacheCapable); keeps only [`ALLOWED_NODE`]. Records the pod name.
async fn handle(stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pod = args.pointer("/Pod/metadata/name").and_then(Value::as_str).unwrap_or("?").to_owned();
    seen.lock().expect("seen lock").push(format!("{} {pod}", request_line.trim_end()));
    let names: Vec<String> = args["NodeNames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let (allowed, failed): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| n == ALLOWED_NODE);
    let result = json!({
        "NodeNames": allowed,
        "FailedNodes": failed.iter().map(|n| (n.clone(), json!("reserved by the stub extender"))).collect::<serde_json::Map<_, _>>(),
        "Error": "",
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{result}",
        result.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/muster/x:never-pulled", "resources": resources}]},
    }))
    .expect("pod manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_consults_extender_for_gpu_pods_only() {
    let _serial = serial().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub extender");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server_seen = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, server_seen.clone()));
        }
    });

    let extender = Extender::new(format!("http://127.0.0.1:{port}/stub"))
        .filter("filter")
        .managed_resource(GPU_RESOURCE, false)
        .node_cache_capable(true);
    let cluster = TestCluster::start(
        ClusterConfig::full()
            .scheduler(SchedulerConfig::default().extender(extender))
            .node(FakeNode::new("gpu-a").gpus(8))
            .node(FakeNode::new(ALLOWED_NODE).gpus(8)),
    )
    .await
    .expect("start cluster");
    let ns = cluster.namespace("extender").await.expect("namespace");
    let pods: Api<Pod> = ns.api();

    pods.create(&PostParams::default(), &pod("gpu-pod", json!({"limits": {GPU_RESOURCE: "1"}}))).await.expect("create");
    pods.create(&PostParams::default(), &pod("cpu-pod", json!({"requests": {"cpu": "1"}}))).await.expect("create");
    for name in ["gpu-pod", "cpu-pod"] {
        let node = eventually(&format!("{name} to be bound"), Duration::from_secs(60), || async {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            pod.spec.and_then(|s| s.node_name).ok_or_else(|| format!("{:?}", pod.status.and_then(|s| s.conditions)))
        })
        .await
        .expect("pod bound");
        if name == "gpu-pod" {
            assert_eq!(node, ALLOWED_NODE, "the extender's filter decides where GPU pods go");
        }
    }

    let seen = seen.lock().expect("seen lock").clone();
    assert!(seen.iter().any(|r| r == "POST /stub/filter HTTP/1.1 gpu-pod"), "extender calls: {seen:?}");
    assert!(!seen.iter().any(|r| r.ends_with(" cpu-pod")), "pods without GPUs skip the extender: {seen:?}");
}
