//! Gang decision latency of the placement engine (`muster_admission::gang`) at 5,000 nodes × 8 GPUs with 1,000
//! queued gangs of mixed sizes (1–64 pods, 1–8 GPUs per pod, a quarter with a nodeSelector), against a naive
//! baseline measured in the same run on the same cluster and the same gangs in the same order:
//!
//! - **engine**: `placement::place` + `ClusterModel::reserve` per gang — the decision the admission pass makes;
//! - **naive**: for every pod, scan every node (in name order) for the first one with room that matches the
//!   selector; all or nothing with rollback. No indexes, no packing preferences.
//!
//! Gangs are decided in queue order on a cluster that fills up, so later decisions are mostly "does not fit":
//! the reported percentiles cover both outcomes, and each outcome separately. Then the whole 1,000-gang queue
//! pass (`Queues::pass`, with shape caching, feasibility verdicts and the head hold) is timed, and a steady-state
//! pass after 50 admitted gangs finish. The same gangs with a CPU-only leader pod set in front (two pod sets, as
//! JobSets with a coordinator are) are decided too. Finally 3-pod gangs, the shape of native gang scheduling's
//! published scheduler_perf numbers (3.7–5.7 ms per PodGroup attempt at 5,000 nodes).
//!
//! `cargo bench -p muster-bench --bench placement` (`MUSTER_BENCH_ROUNDS`, default 5, rounds of 1,000 gangs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use muster_admission::gang::demand::{Constraints, GangDemand, PodSetDemand};
use muster_admission::gang::model::{ClusterModel, GpuReport, ModelConfig, NodeInfo, PodInfo, UnhealthyGpu};
use muster_admission::gang::placement::{Restrict, place};
use muster_admission::gang::queue::{QueueConfig, Queues};
use muster_admission::gang::{GangKey, Resources};

const NODES: usize = 5_000;
const GPUS_PER_NODE: u32 = 8;
const NODES_PER_RACK: usize = 32;
const GANGS: usize = 1_000;
const CORES: u64 = 128;
const MEMORY: u64 = 1 << 40;

/// xorshift64*: a fixed seed gives the same cluster and gangs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

struct NodeSpec {
    name: String,
    pool: &'static str,
    rack: String,
    unhealthy: u32,
    foreign_gpus: u32,
}

fn cluster(rng: &mut Rng) -> Vec<NodeSpec> {
    (0..NODES)
        .map(|i| NodeSpec {
            name: format!("gpu-node-{i:04}"),
            pool: if i % 4 == 0 { "h200" } else { "h100" },
            rack: format!("rack-{:03}", i / NODES_PER_RACK),
            // 1 % of nodes have an unhealthy GPU; 10 % run a foreign GPU pod.
            unhealthy: u32::from(rng.below(100) == 0),
            foreign_gpus: if rng.below(10) == 0 { 1 + rng.below(4) as u32 } else { 0 },
        })
        .collect()
}

const T: SystemTime = SystemTime::UNIX_EPOCH;

fn engine_model(nodes: &[NodeSpec]) -> ClusterModel {
    let mut m = ClusterModel::new(ModelConfig { topology_keys: vec!["rack".into()], ..ModelConfig::default() });
    m.set_time(T);
    for n in nodes {
        m.apply_node(NodeInfo::new(&n.name, CORES * 1000, MEMORY).label("pool", n.pool).label("rack", &n.rack));
        let mut report = GpuReport::healthy(&n.name, GPUS_PER_NODE, T);
        report.unhealthy = (0..n.unhealthy).map(|i| UnhealthyGpu { index: i, xid: Some(79), reason: None }).collect();
        m.apply_gpunode(report);
        if n.foreign_gpus > 0 {
            m.apply_pod(PodInfo {
                namespace: "other".into(),
                name: format!("p-{}", n.name),
                node: n.name.clone(),
                requests: Resources::new(n.foreign_gpus, 4000, 16 << 30, 1),
                gang: None,
                exclusive_leader: None,
            });
        }
    }
    m
}

fn gang(i: usize, pods: u32, gpus: u32, selector: Option<&str>, rng: &mut Rng) -> GangDemand {
    // Jobs of as many pods as one node holds (whole-node Jobs for 8-GPU pods), as JobSets for training are shaped.
    let pods_per_job = (GPUS_PER_NODE / gpus).clamp(1, pods);
    let jobs = pods.div_ceil(pods_per_job);
    let constraints = Constraints {
        node_selector: selector.map(|p| [("pool".to_owned(), p.to_owned())].into_iter().collect()).unwrap_or_default(),
        ..Constraints::default()
    };
    GangDemand {
        key: GangKey::new("bench", &format!("g{i:04}")),
        queue: "default".into(),
        priority: rng.below(3) as i32,
        pod_sets: vec![PodSetDemand {
            name: "workers".into(),
            jobs,
            pods_per_job,
            per_pod: Resources::new(gpus, u64::from(gpus) * 12_000, u64::from(gpus) * (96 << 30), 1),
            constraints: Arc::new(constraints),
            exclusive: None,
        }],
    }
}

fn mixed_gangs(rng: &mut Rng) -> Vec<GangDemand> {
    (0..GANGS)
        .map(|i| {
            // Mostly small gangs, some very large ones.
            let pods = rng.pick(&[1, 1, 2, 2, 3, 4, 4, 8, 8, 16, 16, 32, 64]);
            let gpus = rng.pick(&[1, 2, 4, 8, 8]);
            let selector = (rng.below(4) == 0).then(|| rng.pick(&["h100", "h200"]));
            gang(i, pods, gpus, selector, rng)
        })
        .collect()
}

/// Another draw of mixed gangs, as JobSets with a coordinator: a first pod set of one CPU-only pod (8 cores,
/// 32 GiB), so every gang has two pod sets, and placement's retry (a failing pod set goes first) can come into play.
fn leader_worker_gangs(rng: &mut Rng) -> Vec<GangDemand> {
    mixed_gangs(rng)
        .into_iter()
        .map(|mut g| {
            let leader = PodSetDemand {
                name: "leader".into(),
                jobs: 1,
                pods_per_job: 1,
                per_pod: Resources::new(0, 8_000, 32 << 30, 1),
                constraints: Arc::clone(&g.pod_sets[0].constraints),
                exclusive: None,
            };
            g.pod_sets.insert(0, leader);
            g
        })
        .collect()
}

// === The naive baseline ===

struct NaiveNode {
    name: String,
    labels: BTreeMap<String, String>,
    free: Resources,
}

fn naive_cluster(nodes: &[NodeSpec]) -> Vec<NaiveNode> {
    let mut out: Vec<NaiveNode> = nodes
        .iter()
        .map(|n| NaiveNode {
            name: n.name.clone(),
            labels: [("pool".to_owned(), n.pool.to_owned()), ("rack".to_owned(), n.rack.clone())].into_iter().collect(),
            free: Resources::new(GPUS_PER_NODE - n.unhealthy, CORES * 1000, MEMORY, 110).saturating_sub(
                if n.foreign_gpus > 0 { Resources::new(n.foreign_gpus, 4000, 16 << 30, 1) } else { Resources::ZERO },
            ),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every pod scans every node for the first with room; undone if any pod finds none.
fn naive_place(nodes: &mut [NaiveNode], gang: &GangDemand) -> bool {
    let mut taken: Vec<(usize, Resources)> = Vec::new();
    for ps in &gang.pod_sets {
        for _ in 0..ps.pods() {
            let found = nodes
                .iter()
                .position(|n| ps.constraints.node_selector_matches(&n.labels) && ps.per_pod.fits_in(&n.free));
            match found {
                Some(i) => {
                    nodes[i].free = nodes[i].free.saturating_sub(ps.per_pod);
                    taken.push((i, ps.per_pod));
                }
                None => {
                    for (i, r) in taken {
                        nodes[i].free = nodes[i].free.saturating_add(r);
                    }
                    return false;
                }
            }
        }
    }
    true
}

// === Measurement ===

#[derive(Default)]
struct Samples {
    all: Vec<Duration>,
    fit: Vec<Duration>,
    no_fit: Vec<Duration>,
}

impl Samples {
    fn add(&mut self, d: Duration, fit: bool) {
        self.all.push(d);
        if fit { self.fit.push(d) } else { self.no_fit.push(d) }
    }
}

/// One gang decided by the engine (`place` + `reserve`) and then by the naive baseline, each timed into its
/// samples; returns the engine's time and both verdicts.
fn decide(
    m: &mut ClusterModel,
    n: &mut [NaiveNode],
    g: &GangDemand,
    engine: &mut Samples,
    naive: &mut Samples,
) -> (Duration, bool, bool) {
    let t = Instant::now();
    let fit = match place(m, g, Restrict::default()) {
        Ok(p) => m.reserve(&g.key, &p.per_node).is_ok(),
        Err(_) => false,
    };
    let took = t.elapsed();
    engine.add(took, fit);
    let t = Instant::now();
    let naive_fit = naive_place(n, g);
    naive.add(t.elapsed(), naive_fit);
    (took, fit, naive_fit)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, v: &mut [Duration]) -> (Duration, Duration) {
    let (p50, p99, max) = (pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
    println!("| {name} | {} | {} | {} | {} |", v.len(), us(p50), us(p99), us(max));
    (p50, p99)
}

fn ratio(naive: Duration, engine: Duration) -> String {
    format!("{:.1}×", naive.as_secs_f64() / engine.as_secs_f64().max(1e-12))
}

fn main() {
    let rounds: usize = std::env::var("MUSTER_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let nodes = cluster(&mut rng);
    let gangs = mixed_gangs(&mut rng);
    let with_leaders = leader_worker_gangs(&mut rng);
    let mut order: Vec<usize> = (0..gangs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(gangs[i].priority), i));

    let build = Instant::now();
    let model = engine_model(&nodes);
    let build = build.elapsed();
    drop(model);

    let mut engine = Samples::default();
    let mut naive = Samples::default();
    let (mut engine_admitted, mut naive_admitted) = (0, 0);
    let mut led = Samples::default();
    let mut led_naive = Samples::default();
    let (mut led_admitted, mut led_naive_admitted) = (0, 0);
    let mut pass_times = Vec::new();
    let mut steady_times = Vec::new();
    let mut slowest: Vec<(Duration, usize, bool)> = Vec::new();
    for _ in 0..rounds {
        // Engine and baseline alternate gang by gang, so background noise hits both alike.
        let mut m = engine_model(&nodes);
        let mut n = naive_cluster(&nodes);
        for &i in &order {
            let (took, fit, naive_fit) = decide(&mut m, &mut n, &gangs[i], &mut engine, &mut naive);
            slowest.push((took, i, fit));
            engine_admitted += usize::from(fit);
            naive_admitted += usize::from(naive_fit);
        }

        // The same again for gangs with a leader pod set, in their own queue order.
        let mut m = engine_model(&nodes);
        let mut n = naive_cluster(&nodes);
        let mut led_order: Vec<usize> = (0..with_leaders.len()).collect();
        led_order.sort_by_key(|&i| (std::cmp::Reverse(with_leaders[i].priority), i));
        for &i in &led_order {
            let (_, fit, naive_fit) = decide(&mut m, &mut n, &with_leaders[i], &mut led, &mut led_naive);
            led_admitted += usize::from(fit);
            led_naive_admitted += usize::from(naive_fit);
        }

        // The whole queue in one admission pass, then a steady-state pass after some gangs finish.
        let mut m = engine_model(&nodes);
        m.set_time(T + Duration::from_secs(30));
        let mut q = Queues::new(QueueConfig { head_hold_after: Duration::ZERO, ..QueueConfig::default() });
        for (i, g) in gangs.iter().enumerate() {
            q.enqueue(g.clone(), T + Duration::from_millis(i as u64));
        }
        let t = Instant::now();
        let r = q.pass(&mut m, T + Duration::from_secs(30));
        pass_times.push((t.elapsed(), r.admitted.len(), r.attempts.len()));
        for a in r.admitted.iter().take(50) {
            m.release(&a.key);
        }
        let t = Instant::now();
        let r2 = q.pass(&mut m, T + Duration::from_secs(40));
        steady_times.push((t.elapsed(), r2.admitted.len(), r2.attempts.len()));
    }

    // 3-pod gangs of 1 GPU each: native gang scheduling's scheduler_perf shape, on a cluster half full.
    let mut small = Samples::default();
    let mut small_naive = Samples::default();
    {
        let mut m = engine_model(&nodes);
        let mut n = naive_cluster(&nodes);
        for i in 0..3_000 {
            let g = gang(i, 3, 1, None, &mut rng);
            decide(&mut m, &mut n, &g, &mut small, &mut small_naive);
        }
    }

    println!("## Gang decision latency: {NODES} nodes × {GPUS_PER_NODE} GPUs, {GANGS} mixed gangs × {rounds} rounds\n");
    println!("Model build (5,000 Node + GPUNode + 500 pod events): {:.1} ms\n", build.as_secs_f64() * 1e3);
    println!("| decision | samples | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let (e50, e99) = row("engine, all", &mut engine.all);
    let (n50, n99) = row("naive, all", &mut naive.all);
    let (ef50, ef99) = row("engine, admitted", &mut engine.fit);
    let (nf50, nf99) = row("naive, admitted", &mut naive.fit);
    let (en50, en99) = row("engine, does not fit", &mut engine.no_fit);
    let (nn50, nn99) = row("naive, does not fit", &mut naive.no_fit);
    let (s50, s99) = row("engine, 3-pod gangs (1 GPU each)", &mut small.all);
    let (sn50, sn99) = row("naive, 3-pod gangs (1 GPU each)", &mut small_naive.all);
    let (l50, l99) = row("engine, leader + workers", &mut led.all);
    let (ln50, ln99) = row("naive, leader + workers", &mut led_naive.all);
    row("engine, leader + workers, does not fit", &mut led.no_fit);
    row("naive, leader + workers, does not fit", &mut led_naive.no_fit);
    println!();
    println!("Admitted per round: engine {}, naive {}", engine_admitted / rounds, naive_admitted / rounds);
    println!(
        "Admitted per round, leader + workers: engine {}, naive {}\n",
        led_admitted / rounds,
        led_naive_admitted / rounds
    );
    println!("| ratio naive / engine | p50 | p99 |");
    println!("|---|---|---|");
    println!("| all decisions | {} | {} |", ratio(n50, e50), ratio(n99, e99));
    println!("| admitted | {} | {} |", ratio(nf50, ef50), ratio(nf99, ef99));
    println!("| does not fit | {} | {} |", ratio(nn50, en50), ratio(nn99, en99));
    println!("| 3-pod gangs | {} | {} |", ratio(sn50, s50), ratio(sn99, s99));
    println!("| leader + workers | {} | {} |", ratio(ln50, l50), ratio(ln99, l99));
    println!();
    let native_ms = [3.7, 5.0, 5.7];
    println!(
        "3-pod gangs vs native gang scheduling (3.7 / 5.0 / 5.7 ms average per PodGroup attempt at 5,000 nodes): \
         engine p99 {} is {:.0}× / {:.0}× / {:.0}× below",
        us(s99),
        native_ms[0] / (s99.as_secs_f64() * 1e3),
        native_ms[1] / (s99.as_secs_f64() * 1e3),
        native_ms[2] / (s99.as_secs_f64() * 1e3)
    );
    println!();
    if std::env::var_os("MUSTER_BENCH_SLOWEST").is_some() {
        slowest.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        for (d, i, fit) in slowest.iter().take(10) {
            let ps = &gangs[*i].pod_sets[0];
            let selector = ps.constraints.selector_text();
            println!(
                "slow: {} g{i:04} {} jobs × {} pods × {} GPUs, selector {selector:?}, fit {fit}",
                us(*d),
                ps.jobs,
                ps.pods_per_job,
                ps.per_pod.gpus
            );
        }
        println!();
    }
    println!("| queue pass (Queues::pass) | wall | admitted | gangs tried | per gang tried |");
    println!("|---|---|---|---|---|");
    for (name, v) in [("1,000 queued gangs, first pass", &pass_times), ("steady state, after 50 finish", &steady_times)]
    {
        let mut walls: Vec<Duration> = v.iter().map(|x| x.0).collect();
        let wall = pct(&mut walls, 0.5);
        let (admitted, tried) = (v[0].1, v[0].2);
        println!(
            "| {name} (median of {rounds}) | {:.2} ms | {admitted} | {tried} | {} |",
            wall.as_secs_f64() * 1e3,
            us(wall / u32::try_from(tried.max(1)).unwrap_or(1))
        );
    }
}
