//! The extender's HTTP routes, called through the router without a network: the wire format kube-scheduler speaks
//! (PascalCase keys, `null` for nil), answers before the initial lists are in, transport errors, metrics — and,
//! as properties, that whatever arrives (random bytes, random JSON, plausible ExtenderArgs with random pods,
//! unknown fields, empty, duplicated and huge node lists) the answer is a well-formed reply or a 4xx/503, never
//! a panic, and passing nodes are always a subset of the candidates.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
use muster_admission::extender::http::{
    Cache, FILTER_PATH, Limits, Metrics, PRIORITIZE_PATH, ops_router, router, serve,
};
use muster_admission::extender::new_cache;
use muster_admission::gang::model::ModelConfig;
use muster_admission::tls::{CertStore, Validity, generate_certs, server_config};
use muster_api::gang::{GangPhase, GangSpec, GangStatus, PodSet, SlotPlacement};
use muster_api::gpunode::{GPUNodeSpec, GPUNodeStatus, GpuDevice, GpuHealth};
use muster_api::{GPUNode, Gang};
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tower::ServiceExt;

const NODES: [&str; 4] = ["gpu-0", "gpu-1", "gpu-2", "gpu-3"];

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}, "status": {
        "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
        "conditions": [{"type": "Ready", "status": "True"}]}}))
    .expect("node")
}

fn gpunode(name: &str) -> GPUNode {
    let mut g = GPUNode::new(name, GPUNodeSpec { node_name: name.into() });
    g.status = Some(GPUNodeStatus {
        nvml_available: true,
        devices: (0..8)
            .map(|index| GpuDevice {
                index,
                health: GpuHealth { healthy: true, ..Default::default() },
                ..Default::default()
            })
            .collect(),
        heartbeat_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    });
    g
}

/// Four 8-GPU nodes; gang ml/train (Admitted) holds workers-0/0 on gpu-3 and workers-1/0 on gpu-1, 8 GPUs each.
fn cache(synced: bool) -> Arc<Cache> {
    let cache = new_cache(ModelConfig::default());
    {
        let mut state = cache.write();
        for n in NODES {
            state.apply_node(&node(n));
            state.apply_gpunode(&gpunode(n));
        }
        let mut gang = Gang::new(
            "train",
            GangSpec {
                queue: "default".into(),
                pod_sets: vec![PodSet {
                    name: "workers".into(),
                    jobs: 2,
                    pods_per_job: 1,
                    gpus_per_pod: 8,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        gang.metadata.namespace = Some("ml".into());
        let slot = |job_index, node: &str| SlotPlacement {
            pod_set: "workers".into(),
            job_index,
            pod_index: 0,
            node: node.into(),
        };
        gang.status = Some(GangStatus {
            phase: GangPhase::Admitted,
            placement: vec![slot(0, "gpu-3"), slot(1, "gpu-1")],
            ..Default::default()
        });
        state.apply_gang(&gang);
    }
    if synced {
        cache.set_synced();
    }
    cache
}

fn app(cache: Arc<Cache>, limits: Limits) -> (Router, Arc<Registry>) {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    (router(cache, limits, metrics), Arc::new(registry))
}

async fn post(app: &Router, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let request = Request::post(path).header("content-type", content_type).body(Body::from(body)).expect("request");
    let response = app.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    (status, response.into_body().collect().await.expect("body").to_bytes().to_vec())
}

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = app.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A pod as kube-scheduler sends it: the usual lowerCamel Kubernetes JSON inside PascalCase ExtenderArgs.
fn gang_pod(job: &str) -> Value {
    json!({"metadata": {"name": format!("train-workers-{job}-0-abcde"), "namespace": "ml",
        "labels": {"jobset.sigs.k8s.io/jobset-name": "train", "jobset.sigs.k8s.io/replicatedjob-name": "workers",
                   "jobset.sigs.k8s.io/job-index": job, "batch.kubernetes.io/job-completion-index": "0"},
        "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
      "spec": {"schedulerName": "muster-scheduler",
        "containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
      "status": {"phase": "Pending"}})
}

fn args(pod: &Value, names: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({"Pod": pod, "Nodes": null, "NodeNames": names})).expect("json")
}

#[tokio::test]
async fn filter_and_prioritize_speak_the_schedulers_json() {
    let (app, registry) = app(cache(true), Limits::default());
    let (status, body) = post(&app, FILTER_PATH, "application/json", args(&gang_pod("0"), &NODES)).await;
    assert_eq!(status, StatusCode::OK);
    let reply: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert_eq!(reply["NodeNames"], json!(["gpu-3"]));
    assert_eq!(reply["Error"], "");
    let unresolvable = reply["FailedAndUnresolvableNodes"].as_object().expect("map");
    assert_eq!(unresolvable.len(), 3);
    assert_eq!(unresolvable["gpu-0"], "gang ml/train reserved node gpu-3 for slot workers-0/0");
    assert_eq!(reply["FailedNodes"], json!({}));

    let (status, body) = post(&app, PRIORITIZE_PATH, "application/json", args(&gang_pod("1"), &NODES)).await;
    assert_eq!(status, StatusCode::OK);
    let scores: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert_eq!(
        scores,
        json!([{"Host": "gpu-0", "Score": 0}, {"Host": "gpu-1", "Score": 10}, {"Host": "gpu-2", "Score": 0},
               {"Host": "gpu-3", "Score": 0}])
    );

    // A plain 8-GPU pod: only the nodes no gang reserved.
    let plain = json!({"metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "8"}}}]}});
    let (_, body) = post(&app, FILTER_PATH, "application/json; charset=utf-8", args(&plain, &NODES)).await;
    let reply: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert_eq!(reply["NodeNames"], json!(["gpu-0", "gpu-2"]));
    assert_eq!(reply["FailedAndUnresolvableNodes"]["gpu-1"], "nvidia.com/gpu reserved for admitted gangs");

    let (status, text) = get(&ops_router(cache(true), registry), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"muster_extender_requests_total{verb="filter",outcome="ok"} 2"#,
        r#"muster_extender_requests_total{verb="prioritize",outcome="ok"} 1"#,
        r#"muster_extender_request_duration_seconds_count{verb="filter"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn before_the_initial_lists_nothing_is_decided() {
    let cache = cache(false);
    let (app, _) = app(cache.clone(), Limits::default());
    let (status, body) = post(&app, FILTER_PATH, "application/json", args(&gang_pod("0"), &NODES)).await;
    assert_eq!(status, StatusCode::OK);
    let reply: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert_eq!(reply["Error"], "the Muster extender has not finished its initial lists yet");
    assert_eq!(reply["NodeNames"], Value::Null, "no node passes");
    let (status, _) = post(&app, PRIORITIZE_PATH, "application/json", args(&gang_pod("0"), &NODES)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let ops = ops_router(cache.clone(), Arc::new(Registry::default()));
    assert_eq!(get(&ops, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&ops, "/healthz").await.0, StatusCode::OK);
    cache.set_synced();
    assert_eq!(get(&ops, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn transport_problems_are_http_errors() {
    let limits = Limits { max_body_bytes: 1024, request_timeout: Duration::from_secs(5) };
    let (app, _) = app(cache(true), limits);
    for path in [FILTER_PATH, PRIORITIZE_PATH] {
        assert_eq!(post(&app, path, "text/plain", b"{}".to_vec()).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(post(&app, path, "application/json", vec![b' '; 2048]).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Not JSON: filter says so in Error (the scheduler shows it on the pod), prioritize with a 400.
    let (status, body) = post(&app, FILTER_PATH, "application/json", b"{\"Pod\":".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let reply: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert!(reply["Error"].as_str().is_some_and(|e| e.starts_with("request is not ExtenderArgs: ")), "{reply}");
    assert_eq!(post(&app, PRIORITIZE_PATH, "application/json", b"[]".to_vec()).await.0, StatusCode::BAD_REQUEST);
    // No Pod.
    let (_, body) = post(&app, FILTER_PATH, "application/json", br#"{"NodeNames":["gpu-0"]}"#.to_vec()).await;
    let reply: Value = serde_json::from_slice(&body).expect("JSON reply");
    assert_eq!(reply["Error"], "the request carries no Pod");
    let (status, body) = post(&app, GET_NOTHING, "application/json", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));
}

const GET_NOTHING: &str = "/bind";

/// One HTTP/1.1 POST of a filter request on `stream`; the raw response.
async fn raw_filter<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> String {
    let body = args(&gang_pod("0"), &NODES);
    let head = format!(
        "POST {FILTER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&body).await.expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn served_over_plain_http_or_tls_and_stopped_when_dropped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (plain_app, _) = app(cache(true), Limits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = serve(listener, None, plain_app, Duration::from_secs(5)).expect("serve");
    let addr = server.local_addr();
    assert_eq!(server.url_prefix(false), format!("http://{addr}"));
    let response = raw_filter(TcpStream::connect(addr).await.expect("connect")).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""NodeNames":["gpu-3"]"#), "{response}");
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "the port is closed once the server is dropped");

    // TLS (--tls-cert-dir): the webhook server's certificate store and acceptor.
    let certs = generate_certs(&["127.0.0.1".to_owned()], Validity::default()).expect("certs");
    let store = CertStore::new();
    store.load_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).expect("load");
    let acceptor = TlsAcceptor::from(server_config(store).expect("server config"));
    let (tls_app, _) = app(cache(true), Limits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = serve(listener, Some(acceptor), tls_app, Duration::from_secs(5)).expect("serve");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(certs.ca_cert_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.local_addr()).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1".to_owned()).expect("name");
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake verifies");
    let response = raw_filter(tls).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""NodeNames":["gpu-3"]"#), "{response}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------------

const KEYS: &[&str] = &[
    "Pod",
    "Nodes",
    "NodeNames",
    "items",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "containers",
    "initContainers",
    "resources",
    "limits",
    "requests",
    "nvidia.com/gpu",
    "cpu",
    "overhead",
    "restartPolicy",
    "nodeName",
    "status",
    "phase",
    "jobset.sigs.k8s.io/jobset-name",
    "jobset.sigs.k8s.io/replicatedjob-name",
    "jobset.sigs.k8s.io/job-index",
    "batch.kubernetes.io/job-completion-index",
];

const WORDS: &[&str] =
    &["", "train", "workers", "0", "1", "-1", "8", "lots", "1e3", "0.5", "gpu-1", "gpu-3", "ml", "Always", "x/y"];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => "[a-zA-Z]{0,8}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Candidate names: known nodes, unknown ones, duplicates, empty strings, and sometimes thousands.
fn names() -> impl Strategy<Value = Vec<String>> {
    let one = prop_oneof![
        3 => prop::sample::select(&NODES[..]).prop_map(str::to_owned),
        1 => "[a-z0-9.-]{0,12}",
    ];
    prop_oneof![
        8 => prop::collection::vec(one, 0..12),
        1 => (1000usize..6000).prop_map(|n| (0..n).map(|i| format!("node-{i}")).collect()),
    ]
}

/// A plausible pod: the gang pod or a plain one, with random values dropped into the places that matter.
fn pod() -> impl Strategy<Value = Value> {
    let places = prop::collection::vec(
        (
            prop::sample::select(
                &[
                    "/metadata/labels/jobset.sigs.k8s.io~1job-index",
                    "/metadata/labels/jobset.sigs.k8s.io~1jobset-name",
                    "/metadata/labels/batch.kubernetes.io~1job-completion-index",
                    "/metadata/annotations",
                    "/metadata/namespace",
                    "/spec/containers/0/resources/limits/nvidia.com~1gpu",
                    "/spec/containers/0/resources",
                    "/spec/containers",
                    "/spec/overhead",
                    "/spec",
                    "/status",
                    "/x-unknown",
                ][..],
            ),
            json_value(),
        ),
        0..4,
    );
    (prop_oneof![Just("0"), Just("1"), Just("9")], places).prop_map(|(job, edits)| {
        let mut pod = gang_pod(job);
        for (pointer, value) in edits {
            let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
            let last = last.replace("~1", "/");
            if let Some(Value::Object(map)) = pod.pointer_mut(parent) {
                map.insert(last, value);
            }
        }
        pod
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A filter reply is well-formed: its passing names are candidates; or the request was refused with a 4xx.
fn check_filter(status: StatusCode, body: &[u8], candidates: Option<&[String]>) -> Result<(), TestCaseError> {
    if status != StatusCode::OK {
        prop_assert!(status.is_client_error(), "unexpected {status}: {}", String::from_utf8_lossy(body));
        return Ok(());
    }
    let reply: Value = serde_json::from_slice(body).map_err(|e| TestCaseError::fail(format!("200 not JSON: {e}")))?;
    let result: muster_api::extender::ExtenderFilterResult =
        serde_json::from_value(reply).map_err(|e| TestCaseError::fail(format!("not a filter result: {e}")))?;
    if let Some(candidates) = candidates {
        let allowed: BTreeSet<&str> = candidates.iter().map(String::as_str).collect();
        for n in result.node_names.iter().flatten() {
            prop_assert!(allowed.contains(n.as_str()), "{n} was not a candidate");
        }
        if result.error.is_empty() {
            // Every candidate is answered: passed or failed with a reason.
            for c in candidates {
                let answered = result.node_names.iter().flatten().any(|n| n == c)
                    || result.failed_nodes.contains_key(c)
                    || result.failed_and_unresolvable_nodes.contains_key(c);
                prop_assert!(answered, "{c} got no answer");
            }
        }
    }
    Ok(())
}

fn check_prioritize(status: StatusCode, body: &[u8], candidates: Option<&[String]>) -> Result<(), TestCaseError> {
    if status != StatusCode::OK {
        prop_assert!(status.is_client_error(), "unexpected {status}: {}", String::from_utf8_lossy(body));
        return Ok(());
    }
    let scores: muster_api::extender::HostPriorityList =
        serde_json::from_slice(body).map_err(|e| TestCaseError::fail(format!("200 not a priority list: {e}")))?;
    for h in &scores {
        prop_assert!((0..=10).contains(&h.score), "score {} out of range", h.score);
    }
    if let Some(candidates) = candidates {
        prop_assert_eq!(scores.len(), candidates.len());
    }
    Ok(())
}

fn call_both(app: &Router, body: Vec<u8>, candidates: Option<&[String]>) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let (status, reply) = post(app, FILTER_PATH, "application/json", body.clone()).await;
        check_filter(status, &reply, candidates)?;
        let (status, reply) = post(app, PRIORITIZE_PATH, "application/json", body).await;
        check_prioritize(status, &reply, candidates)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let (app, _) = app(cache(true), Limits::default());
        call_both(&app, body, None)?;
    }

    #[test]
    fn random_json_never_panics(value in json_value()) {
        let (app, _) = app(cache(true), Limits::default());
        call_both(&app, serde_json::to_vec(&value).expect("json"), None)?;
    }

    #[test]
    fn plausible_requests_get_well_formed_answers(
        pod in pod(),
        names in names(),
        unknown in prop::option::of(json_value()),
        nodes_null in any::<bool>(),
    ) {
        let (app, _) = app(cache(true), Limits::default());
        let mut args = json!({"Pod": pod, "NodeNames": names});
        if nodes_null {
            args["Nodes"] = Value::Null;
        }
        if let Some(extra) = unknown {
            args["FutureField"] = extra;
        }
        call_both(&app, serde_json::to_vec(&args).expect("json"), Some(&names))?;
    }

    #[test]
    fn full_node_lists_are_answered_in_kind(pod in pod(), count in 0usize..6) {
        let (app, _) = app(cache(true), Limits::default());
        let items: Vec<Value> = (0..count).map(|i| json!({"metadata": {"name": format!("gpu-{i}")}})).collect();
        let args = json!({"Pod": pod, "Nodes": {"items": items}, "NodeNames": null});
        runtime().block_on(async {
            let (status, body) = post(&app, FILTER_PATH, "application/json", serde_json::to_vec(&args).expect("json")).await;
            prop_assert_eq!(status, StatusCode::OK);
            let reply: Value = serde_json::from_slice(&body).expect("JSON");
            if reply["Error"] == "" {
                prop_assert!(reply["NodeNames"].is_null(), "names answer a names request only");
                prop_assert!(reply["Nodes"]["items"].as_array().is_some_and(|a| a.len() <= count));
            }
            Ok(())
        })?;
    }
}
