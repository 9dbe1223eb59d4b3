//! Scheduler-extender latency over loopback HTTP with 5,000 candidate nodes per request, next to the ~2 ms per-pod
//! budget of gang-anchors.md §5.4 (at 500 pods/s the scheduler's synchronous callout must stay well under 2 ms for
//! filter + prioritize together). The real extender (`muster_admission::extender`: its router, the same accept
//! loop and hyper settings as the webhook server, the cache the watches would fill) against baselines measured in
//! the same run:
//!
//! - **trivial handler, same stack**: the same request bodies to a route that does not parse them and answers
//!   with the real answer's bytes, precomputed: what HTTP, the body transfer both ways and axum cost alone;
//! - **pure decision**: `decide::filter` / `decide::prioritize` on already decoded arguments, no JSON.
//!
//! The cluster: 5,000 nodes × 8 GPUs with GPUNodes; 1,000 admitted gangs of 4 single-node Jobs (8 GPUs each) hold
//! 4,000 nodes, half of them with their pods bound; 300 nodes run a plain 4-GPU pod. Requests name all 5,000 nodes
//! (`nodeCacheCapable`), as with `percentageOfNodesToScore: 100`:
//!
//! - a gang pod's filter: one node passes, 4,999 fail as unresolvable (the largest answer); the scheduler skips
//!   prioritize when one node is left, so this is all a gang pod costs;
//! - a plain 4-GPU pod's filter: the 700 empty and the 300 half-used nodes pass, the rest fail (reserved);
//! - its prioritize, over what the scheduler sends: the 1,000 nodes filter passed (best fit); and, as a worst
//!   case, over all 5,000;
//! - once, with fewer samples, a gang pod's filter with full Node objects instead of names (an extender that is
//!   not `nodeCacheCapable`): the payload problem of kubernetes#72634.
//!
//! Scenarios take turns request by request. The server runs on its own 2-worker runtime, the client on a
//! current-thread runtime with one kept-alive connection and `TCP_NODELAY`, like kube-scheduler's Go client.
//!
//! `cargo bench -p muster-bench --bench extender_latency` (`MUSTER_BENCH_ROUNDS`, default 1000 samples per row).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::post;
use k8s_openapi::api::core::v1::{Node, Pod};
use muster_admission::extender::decide;
use muster_admission::extender::http::{self, Cache, FILTER_PATH, Limits, Metrics, PRIORITIZE_PATH};
use muster_admission::extender::new_cache;
use muster_admission::extender::state::{ExtenderState, Room};
use muster_admission::gang::model::ModelConfig;
use muster_api::extender::{ExtenderArgs, NodeList};
use muster_api::gang::{GangPhase, GangSpec, GangStatus, PodSet, SlotPlacement};
use muster_api::gpunode::{GPUNodeSpec, GPUNodeStatus, GpuDevice, GpuHealth};
use muster_api::{GPUNode, Gang};
use muster_bench::{Summary, load_average, ms};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{Connection, Error};

const NODES: usize = 5_000;
const GANGS: usize = 1_000;
const JOBS_PER_GANG: usize = 4;
const PLAIN_PODS: usize = 300;
/// gang-anchors.md §5.4: filter + prioritize per pod, on average, at 500 pods/s.
const BUDGET_MS: f64 = 2.0;

fn node_name(i: usize) -> String {
    format!("gpu-{i:04}")
}

fn node(i: usize) -> Node {
    serde_json::from_value(json!({"metadata": {"name": node_name(i), "labels": {
            "kubernetes.io/hostname": node_name(i), "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {"allocatable": {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "capacity": {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}))
    .unwrap_or_default()
}

fn gpunode(i: usize) -> GPUNode {
    let mut g = GPUNode::new(&node_name(i), GPUNodeSpec { node_name: node_name(i) });
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

fn pod(name: &str, gpus: u32, labels: Value, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ml", "labels": labels,
            "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "spec": {"schedulerName": "muster-scheduler", "nodeName": node,
            "containers": [{"name": "trainer", "image": "registry.example.com/ml/trainer:2026.08",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string(), "cpu": "96", "memory": "900Gi"}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}}))
    .unwrap_or_default()
}

fn gang_labels(gang: usize, job: usize) -> Value {
    json!({"jobset.sigs.k8s.io/jobset-name": format!("train-{gang}"), "jobset.sigs.k8s.io/replicatedjob-name": "workers",
        "jobset.sigs.k8s.io/job-index": job.to_string(), "batch.kubernetes.io/job-completion-index": "0"})
}

fn cluster() -> Arc<Cache> {
    let cache = new_cache(ModelConfig::default());
    {
        let mut state = cache.write();
        for i in 0..NODES {
            state.apply_node(&node(i));
            state.apply_gpunode(&gpunode(i));
        }
        for g in 0..GANGS {
            let mut gang = Gang::new(
                &format!("train-{g}"),
                GangSpec {
                    queue: "default".into(),
                    pod_sets: vec![PodSet {
                        name: "workers".into(),
                        jobs: JOBS_PER_GANG as i32,
                        pods_per_job: 1,
                        gpus_per_pod: 8,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            gang.metadata.namespace = Some("ml".into());
            let placement = (0..JOBS_PER_GANG)
                .map(|job| SlotPlacement {
                    pod_set: "workers".into(),
                    job_index: job as i32,
                    pod_index: 0,
                    node: node_name(g * JOBS_PER_GANG + job),
                })
                .collect();
            gang.status = Some(GangStatus { phase: GangPhase::Running, placement, ..Default::default() });
            state.apply_gang(&gang);
            // Half the gangs have their pods running.
            if g % 2 == 0 {
                for job in 0..JOBS_PER_GANG {
                    let name = format!("train-{g}-workers-{job}-0");
                    state.apply_pod(&pod(&name, 8, gang_labels(g, job), Some(&node_name(g * JOBS_PER_GANG + job))));
                }
            }
        }
        for p in 0..PLAIN_PODS {
            let node = node_name(GANGS * JOBS_PER_GANG + p);
            state.apply_pod(&pod(&format!("plain-{p}"), 4, json!({}), Some(&node)));
        }
    }
    cache.set_synced();
    cache
}

// ---------------------------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------------------------

/// A kept-alive HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> Result<Connection, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Connection::over(tcp).await
}

// ---------------------------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Server,
    Trivial,
    InProcess,
    Pure,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::Server => "extender over HTTP",
            How::Trivial => "trivial handler, same stack",
            How::InProcess => "handler in-process (bytes in, bytes out)",
            How::Pure => "pure decision (decoded request)",
        }
    }
}

struct Request {
    what: &'static str,
    path: &'static str,
    args: ExtenderArgs,
    body: Bytes,
    /// The real answer, which the trivial handler replays.
    answer: Bytes,
    /// A check that the answer is the one this scenario is about.
    expect: fn(&Value) -> bool,
    rounds: usize,
}

struct Row {
    request: usize,
    how: How,
    samples: Vec<Duration>,
}

fn main() -> Result<(), Error> {
    let load_before = load_average();
    let rounds: usize = std::env::var("MUSTER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1000);
    let warmup = (rounds / 10).max(10);

    let build = Instant::now();
    let cache = cluster();
    let built = build.elapsed();
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let with_names = |pod: Pod| ExtenderArgs { pod: Some(Box::new(pod)), nodes: None, node_names: Some(names.clone()) };
    // A pod of a gang whose pods are not bound yet (odd gangs): its node is reserved and still free.
    let gang_pod = pod("train-7-workers-2-0-x1", 8, gang_labels(7, 2), None);
    let plain = pod("plain-x", 4, json!({}), None);
    // What the scheduler sends to prioritize: the nodes filter passed (700 empty, 300 half used).
    let passed: Vec<String> = match decide::filter(&cache.read(), &(&with_names(plain.clone())).into()).into_result() {
        result if result.error.is_empty() => result.node_names.unwrap_or_default(),
        result => return Err(result.error.into()),
    };
    let mut requests = vec![
        (
            "filter, gang pod, 5,000 names",
            FILTER_PATH,
            with_names(gang_pod.clone()),
            (|v: &Value| v["NodeNames"] == json!([node_name(7 * JOBS_PER_GANG + 2)])) as fn(&Value) -> bool,
            rounds,
        ),
        (
            "filter, plain 4-GPU pod, 5,000 names",
            FILTER_PATH,
            with_names(plain.clone()),
            |v: &Value| v["NodeNames"].as_array().is_some_and(|a| a.len() == NODES - GANGS * JOBS_PER_GANG),
            rounds,
        ),
        (
            "prioritize, plain 4-GPU pod, the 1,000 nodes filter passed",
            PRIORITIZE_PATH,
            ExtenderArgs { pod: Some(Box::new(plain.clone())), nodes: None, node_names: Some(passed) },
            // Best fit: the nodes with a plain 4-GPU pod score 10, the empty ones 5.
            |v: &Value| {
                v.as_array().is_some_and(|a| {
                    a.len() == NODES - GANGS * JOBS_PER_GANG
                        && a.iter().filter(|h| h["Score"] == 10).count() == PLAIN_PODS
                })
            },
            rounds,
        ),
        (
            "prioritize, plain 4-GPU pod, 5,000 names (worst case)",
            PRIORITIZE_PATH,
            with_names(plain),
            |v: &Value| v.as_array().is_some_and(|a| a.len() == NODES),
            rounds,
        ),
        (
            "filter, gang pod, 5,000 full Nodes",
            FILTER_PATH,
            ExtenderArgs {
                pod: Some(Box::new(gang_pod)),
                nodes: Some(NodeList { items: (0..NODES).map(node).collect() }),
                node_names: None,
            },
            |v: &Value| v["Nodes"]["items"].as_array().is_some_and(|a| a.len() == 1),
            (rounds / 20).max(20),
        ),
    ];

    // Bodies and the real answers (computed once through the pure functions, checked below over HTTP too).
    let requests: Vec<Request> = requests
        .drain(..)
        .map(|(what, path, args, expect, rounds)| {
            let body = Bytes::from(serde_json::to_vec(&args)?);
            let answer = if path == FILTER_PATH {
                serde_json::to_vec(&decide::filter(&cache.read(), &(&args).into()))?
            } else {
                serde_json::to_vec(&decide::prioritize(&cache.read(), &(&args).into())?)?
            };
            Ok::<_, Error>(Request { what, path, args, body, answer: Bytes::from(answer), expect, rounds })
        })
        .collect::<Result<_, _>>()?;

    // Servers on their own runtime, as another process would be.
    let server_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let limits = Limits { max_body_bytes: 64 << 20, request_timeout: Duration::from_secs(10) };
    let (server, trivial) = server_runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server =
            http::serve(listener, None, http::router(cache.clone(), limits, metrics), Duration::from_secs(10))?;
        // The trivial handler replays the answer of the request it gets, chosen by a header-free key: the path
        // and the body length (distinct per scenario), without reading the JSON.
        let answers: Vec<(&'static str, usize, Bytes)> =
            requests.iter().map(|r| (r.path, r.body.len(), r.answer.clone())).collect();
        let answers = Arc::new(answers);
        let replay = |path: &'static str| {
            let answers = answers.clone();
            post(move |body: Bytes| async move {
                let answer = answers
                    .iter()
                    .find(|(p, len, _)| *p == path && *len == body.len())
                    .map(|(_, _, a)| a.clone())
                    .unwrap_or_default();
                ([(header::CONTENT_TYPE, "application/json")], answer)
            })
        };
        // The extender reads bodies up to its own limit; axum's 2 MB default for `Bytes` would refuse full Nodes.
        let app = Router::new()
            .route("/trivial/filter", replay(FILTER_PATH))
            .route("/trivial/prioritize", replay(PRIORITIZE_PATH))
            .layer(DefaultBodyLimit::disable());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let trivial = http::serve(listener, None, app, Duration::from_secs(10))?;
        Ok::<_, Error>((server, trivial))
    })?;

    let client = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rows = client.block_on(async {
        let mut ours = connect(server.local_addr()).await?;
        let mut base = connect(trivial.local_addr()).await?;
        for r in &requests {
            let answer = ours.post(r.path, &r.body).await?;
            let value: Value = serde_json::from_slice(&answer)?;
            if !(r.expect)(&value) || answer != r.answer {
                return Err::<_, Error>(format!("{}: unexpected answer", r.what).into());
            }
            let replayed = base.post(&format!("/trivial{}", r.path), &r.body).await?;
            if replayed != r.answer {
                return Err(format!("{}: the trivial handler did not replay the answer", r.what).into());
            }
        }
        let mut rows: Vec<Row> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            for how in [How::Trivial, How::Server, How::InProcess, How::Pure] {
                rows.push(Row { request: i, how, samples: Vec::with_capacity(r.rounds) });
            }
        }
        for round in 0..warmup + rounds {
            for row in &mut rows {
                let r = &requests[row.request];
                if round >= warmup + r.rounds {
                    continue;
                }
                let start = Instant::now();
                match row.how {
                    How::Server => {
                        std::hint::black_box(ours.post(r.path, &r.body).await?);
                    }
                    How::Trivial => {
                        std::hint::black_box(base.post(&format!("/trivial{}", r.path), &r.body).await?);
                    }
                    How::InProcess => {
                        let answer = if r.path == FILTER_PATH {
                            http::filter_body(&cache, &r.body)
                        } else {
                            http::prioritize_body(&cache, &r.body)
                        };
                        std::hint::black_box(answer);
                    }
                    How::Pure => {
                        if r.path == FILTER_PATH {
                            std::hint::black_box(decide::filter(&cache.read(), &(&r.args).into()));
                        } else {
                            std::hint::black_box(decide::prioritize(&cache.read(), &(&r.args).into())?);
                        }
                    }
                }
                if round >= warmup {
                    row.samples.push(start.elapsed());
                }
            }
        }
        Ok(rows)
    })?;

    println!("cluster: {NODES} nodes × 8 GPUs, {GANGS} gangs × {JOBS_PER_GANG} nodes reserved, built in {built:.2?}");
    println!(
        "samples per row: {rounds} (full-Nodes rows: {}), load average {load_before} before, {} after\n",
        (rounds / 20).max(20),
        load_average()
    );
    println!("| request | body in / out | measured | p50 ms | p99 ms | mean ms | p50 vs trivial |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let summary = |i: usize, how: How| {
        rows.iter().find(|r| r.request == i && r.how == how).map(|r| Summary::of(&r.samples)).unwrap_or_default()
    };
    for row in &rows {
        let st = Summary::of(&row.samples);
        let r = &requests[row.request];
        let trivial = summary(row.request, How::Trivial).p50;
        let ratio = match row.how {
            How::Trivial => "1.00× (baseline)".to_owned(),
            _ if !trivial.is_zero() => format!("{:.2}×", st.p50.as_secs_f64() / trivial.as_secs_f64()),
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {} KiB / {} KiB | {} | {} | {} | {} | {ratio} |",
            r.what,
            r.body.len() / 1024,
            r.answer.len() / 1024,
            row.how.name(),
            ms(st.p50),
            ms(st.p99),
            ms(st.mean),
        );
    }
    // Per pod: a gang pod costs one filter (one node passes, so the scheduler skips scoring); a plain pod that
    // several nodes pass costs filter + prioritize.
    let (gang, filter, prioritize) = (summary(0, How::Server), summary(1, How::Server), summary(2, How::Server));
    println!("\nper pod against the {BUDGET_MS} ms budget (gang-anchors.md §5.4), over HTTP:");
    println!("- gang pod (filter of 5,000 only): p50 {} ms, p99 {} ms", ms(gang.p50), ms(gang.p99));
    println!(
        "- plain GPU pod (filter of 5,000, then prioritize of the 1,000 passed): sum of p50s {} ms, of p99s {} ms, \
         of means {} ms",
        ms(filter.p50 + prioritize.p50),
        ms(filter.p99 + prioritize.p99),
        ms(filter.mean + prioritize.mean)
    );
    println!("\n{}", room_lookups(&cache.read(), &names, rounds));
    drop((server, trivial));
    Ok(())
}

/// The rooms of all 5,000 candidates, as an ordinary GPU pod's filter needs them: from the extender's free-GPU
/// index, and worked out per request from the cluster model as before the index (`Room::of`, which the index is
/// tested against). The two take turns round by round.
fn room_lookups(state: &ExtenderState, names: &[String], rounds: usize) -> String {
    let (mut indexed, mut scratch) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        let start = Instant::now();
        let free: u64 = names.iter().filter_map(|n| state.room(n)).map(|r| u64::from(r.free())).sum();
        indexed.push(start.elapsed());
        std::hint::black_box(free);
        let start = Instant::now();
        let free: u64 = names.iter().filter_map(|n| Room::of(state.model(), n)).map(|r| u64::from(r.free())).sum();
        scratch.push(start.elapsed());
        std::hint::black_box(free);
    }
    let (indexed, scratch) = (Summary::of(&indexed), Summary::of(&scratch));
    let mut table = String::from("| rooms of 5,000 candidates | p50 ms | p99 ms | mean ms | p50 vs index |\n");
    table.push_str("|---|---:|---:|---:|---:|\n");
    for (what, st) in [("free-GPU index (`ExtenderState::room`)", indexed), ("from the model (`Room::of`)", scratch)] {
        let ratio = st.p50.as_secs_f64() / indexed.p50.as_secs_f64().max(f64::MIN_POSITIVE);
        table.push_str(&format!("| {what} | {} | {} | {} | {ratio:.2}× |\n", ms(st.p50), ms(st.p99), ms(st.mean)));
    }
    table
}
