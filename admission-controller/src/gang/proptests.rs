//! Property tests of the engine, checked against the tests' own arithmetic on the cluster description, never
//! against the model's indexes:
//! (a) a placement is complete and valid (constraints, capacity); a gang that does not fit leaves the model alone,
//!     and for single-pod-set gangs placement finds a fit exactly when one exists;
//! (b) no node is ever over-committed, across many passes;
//! (c) a pass tries gangs in priority-then-arrival order, admits exactly those that fit at their turn, and
//!     nothing admitted behind a held head uses its held nodes;
//! (d) under random arrivals and completions, every gang that fits the empty cluster is eventually admitted,
//!     and a head gang is not starved by a stream of small gangs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::demand::{Constraints, Exclusive, GangDemand, PodSetDemand, Taint, TaintEffect, Toleration};
use super::explain::{Basis, explain};
use super::model::{ClusterModel, GpuReport, ModelConfig, NodeInfo, PodInfo, UnhealthyGpu};
use super::placement::{EmptyBasis, Restrict, place, place_on_empty};
use super::queue::{Outcome, QueueConfig, Queues};
use super::testutil::{T0, at};
use super::{GangKey, Resources};

#[derive(Clone, Debug)]
struct NodeSpec {
    gpus: u32,
    unhealthy: u32,
    stale: bool,
    cores: u64,
    pool: u8,
    rack: u8,
    ready: bool,
    tainted: bool,
    foreign_gpus: u32,
    foreign_cores: u64,
}

#[derive(Clone, Debug)]
struct SetSpec {
    jobs: u32,
    pods_per_job: u32,
    gpus: u32,
    cores: u64,
    pool: Option<u8>,
    tolerates: bool,
    /// Placed exclusively per domain of [`EXCLUSIVE_KEY`].
    exclusive: bool,
}

/// The topology key of exclusive pod sets: only the nodes given it by the test carry it (value: their rack).
const EXCLUSIVE_KEY: &str = "zone";

#[derive(Clone, Debug)]
struct GangSpecT {
    priority: i32,
    arrival: u64,
    sets: Vec<SetSpec>,
    /// Passes it runs once admitted (simulation only).
    duration: u64,
}

const NOW: u64 = 1000;

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        prop_oneof![Just(0u32), Just(2), Just(4), Just(8), Just(8)],
        0u32..3,
        prop::bool::weighted(0.1),
        prop_oneof![Just(8u64), Just(32), Just(64)],
        0u8..2,
        0u8..3,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.2),
        0u32..4,
        0u64..8,
    )
        .prop_map(|(gpus, unhealthy, stale, cores, pool, rack, ready, tainted, foreign_gpus, foreign_cores)| {
            NodeSpec {
                gpus,
                unhealthy: unhealthy.min(gpus),
                stale,
                cores,
                pool,
                rack,
                ready,
                tainted,
                foreign_gpus,
                foreign_cores,
            }
        })
}

fn set_spec() -> impl Strategy<Value = SetSpec> {
    (
        1u32..4,
        1u32..4,
        prop_oneof![Just(0u32), Just(1), Just(2), Just(4), Just(8)],
        0u64..20,
        prop::option::weighted(0.3, 0u8..2),
        any::<bool>(),
    )
        .prop_map(|(jobs, pods_per_job, gpus, cores, pool, tolerates)| SetSpec {
            jobs,
            pods_per_job,
            gpus,
            cores,
            pool,
            tolerates,
            exclusive: false,
        })
}

fn gang_spec(max_sets: usize) -> impl Strategy<Value = GangSpecT> {
    (0i32..3, 0u64..50, prop::collection::vec(set_spec(), 1..=max_sets), 1u64..6)
        .prop_map(|(priority, arrival, sets, duration)| GangSpecT { priority, arrival, sets, duration })
}

fn node_name(i: usize) -> String {
    format!("node-{i:02}")
}

fn build(nodes: &[NodeSpec]) -> ClusterModel {
    let mut m = ClusterModel::new(ModelConfig { topology_keys: vec!["rack".into()], ..ModelConfig::default() });
    m.set_time(at(NOW));
    for (i, n) in nodes.iter().enumerate() {
        let name = node_name(i);
        m.apply_node(node_info(i, n));
        let mut report = GpuReport::healthy(&name, n.gpus, if n.stale { T0 } else { at(NOW) });
        report.unhealthy = (0..n.unhealthy).map(|i| UnhealthyGpu { index: i, xid: Some(79), reason: None }).collect();
        m.apply_gpunode(report);
        if n.foreign_gpus > 0 || n.foreign_cores > 0 {
            m.apply_pod(PodInfo {
                namespace: "other".into(),
                name: format!("foreign-{i}"),
                node: name.clone(),
                requests: Resources::new(n.foreign_gpus, n.foreign_cores * 1000, 0, 1),
                gang: None,
                exclusive_leader: None,
            });
        }
    }
    m
}

fn node_info(i: usize, n: &NodeSpec) -> NodeInfo {
    let mut info = NodeInfo::new(&node_name(i), n.cores * 1000, 1 << 40)
        .label("pool", &n.pool.to_string())
        .label("rack", &n.rack.to_string());
    info.ready = n.ready;
    if n.tainted {
        info = info.taint(Taint::new("dedicated", "x", TaintEffect::NoSchedule));
    }
    info
}

fn demand(i: usize, g: &GangSpecT) -> GangDemand {
    GangDemand {
        key: GangKey::new("ns", &format!("g{i:03}")),
        queue: "default".into(),
        priority: g.priority,
        pod_sets: g
            .sets
            .iter()
            .enumerate()
            .map(|(j, s)| PodSetDemand {
                name: format!("ps{j}"),
                jobs: s.jobs,
                pods_per_job: s.pods_per_job,
                per_pod: Resources::new(s.gpus, s.cores * 1000, 0, 1),
                constraints: Arc::new(Constraints {
                    node_selector: s
                        .pool
                        .map(|p| [("pool".to_owned(), p.to_string())].into_iter().collect())
                        .unwrap_or_default(),
                    affinity: None,
                    tolerations: if s.tolerates { vec![Toleration::exists("dedicated", None)] } else { Vec::new() },
                }),
                exclusive: (s.exclusive).then(|| Exclusive::Domain(EXCLUSIVE_KEY.into())),
            })
            .collect(),
    }
}

// === The tests' own arithmetic ===

/// (GPUs, cores in millis, pods) a node offers when empty.
fn capacity(n: &NodeSpec) -> Resources {
    let gpus = if n.stale { 0 } else { n.gpus - n.unhealthy };
    Resources::new(gpus, n.cores * 1000, 1 << 40, 110)
}

fn foreign(n: &NodeSpec) -> Resources {
    if n.foreign_gpus > 0 || n.foreign_cores > 0 {
        Resources::new(n.foreign_gpus, n.foreign_cores * 1000, 0, 1)
    } else {
        Resources::ZERO
    }
}

fn eligible(n: &NodeSpec, s: &SetSpec) -> bool {
    n.ready && s.pool.is_none_or(|p| p == n.pool) && (!n.tainted || s.tolerates)
}

fn per_pod(s: &SetSpec) -> Resources {
    Resources::new(s.gpus, s.cores * 1000, 0, 1)
}

/// How many pods of `s` fit in `room`, counted by hand.
fn pods_in(room: Resources, s: &SetSpec) -> u64 {
    let mut k = u64::from(room.pods);
    if let Some(n) = room.gpus.checked_div(s.gpus) {
        k = k.min(u64::from(n));
    }
    if s.cores > 0 {
        k = k.min(room.cpu_milli / (s.cores * 1000));
    }
    k
}

/// Whether a single-pod-set gang fits `rooms` on the allowed nodes.
fn oracle_fits(nodes: &[NodeSpec], rooms: &[Resources], allowed: &dyn Fn(usize) -> bool, s: &SetSpec) -> bool {
    let total: u64 =
        (0..nodes.len()).filter(|&i| allowed(i) && eligible(&nodes[i], s)).map(|i| pods_in(rooms[i], s)).sum();
    total >= u64::from(s.jobs * s.pods_per_job)
}

fn index_of(name: &str) -> usize {
    name.trim_start_matches("node-").parse().expect("node name")
}

/// Checks a placement against the description and the room left, and returns the room after it.
fn check_placement(
    nodes: &[NodeSpec],
    rooms: &[Resources],
    g: &GangSpecT,
    slots: &[muster_api::gang::SlotPlacement],
) -> Result<Vec<Resources>, TestCaseError> {
    let mut rooms = rooms.to_vec();
    let mut seen = std::collections::BTreeSet::new();
    for slot in slots {
        let j: usize = slot.pod_set.trim_start_matches("ps").parse().expect("pod set name");
        let s = &g.sets[j];
        prop_assert!(slot.job_index >= 0 && (slot.job_index as u32) < s.jobs, "job index {slot:?}");
        prop_assert!(slot.pod_index >= 0 && (slot.pod_index as u32) < s.pods_per_job, "pod index {slot:?}");
        prop_assert!(seen.insert((j, slot.job_index, slot.pod_index)), "slot twice: {slot:?}");
        let i = index_of(&slot.node);
        prop_assert!(eligible(&nodes[i], s), "{slot:?} on ineligible {:?}", nodes[i]);
        let need = per_pod(s);
        prop_assert!(need.fits_in(&rooms[i]), "over-commit on {}: room {:?}, pod {:?}", slot.node, rooms[i], need);
        rooms[i] = rooms[i].saturating_sub(need);
    }
    let expected: u32 = g.sets.iter().map(|s| s.jobs * s.pods_per_job).sum();
    prop_assert_eq!(seen.len() as u32, expected, "every slot placed");
    Ok(rooms)
}

fn initial_rooms(nodes: &[NodeSpec]) -> Vec<Resources> {
    nodes.iter().map(|n| capacity(n).saturating_sub(foreign(n))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (a) and (b) for one gang.
    #[test]
    fn placement_is_valid_complete_and_atomic(
        nodes in prop::collection::vec(node_spec(), 1..8),
        g in gang_spec(3),
    ) {
        let m = build(&nodes);
        let d = demand(0, &g);
        let generation = m.generation();
        let rooms = initial_rooms(&nodes);
        match place(&m, &d, Restrict::default()) {
            Ok(p) => {
                check_placement(&nodes, &rooms, &g, &p.slots)?;
                let total: Resources = p.per_node.values().fold(Resources::ZERO, |a, r| a.saturating_add(*r));
                let want: Resources =
                    g.sets.iter().fold(Resources::ZERO, |a, s| a.saturating_add(per_pod(s).times(s.jobs * s.pods_per_job)));
                prop_assert_eq!(total, want);
            }
            Err(_) => {
                prop_assert_eq!(m.generation(), generation, "a failed placement changes nothing");
                if g.sets.len() == 1 {
                    prop_assert!(!oracle_fits(&nodes, &rooms, &|_| true, &g.sets[0]), "a fit exists but was not found");
                }
            }
        }
        // Determinism.
        prop_assert_eq!(place(&m, &d, Restrict::default()), place(&m, &d, Restrict::default()));
    }

    /// (c), with (a) and (b) along the way: one pass over a queue of single-pod-set gangs, replayed by hand.
    #[test]
    fn pass_order_priority_arrival_and_backfill(
        nodes in prop::collection::vec(node_spec(), 1..8),
        gangs in prop::collection::vec(gang_spec(1), 1..12),
        hold_at_once in any::<bool>(),
    ) {
        let mut m = build(&nodes);
        let hold_after = if hold_at_once { Duration::ZERO } else { Duration::from_secs(1_000_000) };
        let mut q = Queues::new(QueueConfig { head_hold_after: hold_after, ..QueueConfig::default() });
        for (i, g) in gangs.iter().enumerate() {
            q.enqueue(demand(i, g), at(g.arrival));
        }
        let r = q.pass(&mut m, at(NOW));

        // The order, independently: priority desc, arrival asc, enqueue order.
        let mut order: Vec<usize> = (0..gangs.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(gangs[i].priority), gangs[i].arrival, i));
        let tried: Vec<usize> = r.attempts.iter().map(|a| a.key.as_str().trim_start_matches("ns/g").parse().expect("key")).collect();
        prop_assert_eq!(&tried, &order, "every gang tried once, in order");

        let mut rooms = initial_rooms(&nodes);
        let empty: Vec<Resources> = nodes.iter().map(capacity).collect();
        let mut held: Vec<bool> = vec![false; nodes.len()];
        let mut head_seen = false;
        let mut admitted = r.admitted.iter();
        for (attempt, &i) in r.attempts.iter().zip(&order) {
            let s = &g_set(&gangs[i]);
            let not_held = |n: usize| !held[n];
            let fits_now = oracle_fits(&nodes, &rooms, &not_held, s);
            let fits_empty = oracle_fits(&nodes, &empty, &|_| true, s);
            match &attempt.outcome {
                Outcome::Admitted => {
                    prop_assert!(fits_now, "admitted g{i} without a fit");
                    let a = admitted.next().expect("admitted in order");
                    prop_assert_eq!(&a.key, &attempt.key);
                    for slot in &a.placement.slots {
                        prop_assert!(!held[index_of(&slot.node)], "g{i} backfilled onto held {}", slot.node);
                    }
                    rooms = check_placement(&nodes, &rooms, &gangs[i], &a.placement.slots)?;
                }
                Outcome::Inadmissible => prop_assert!(!fits_empty, "g{i} fits the empty cluster"),
                Outcome::NoFit | Outcome::Head { .. } => {
                    prop_assert!(!fits_now, "g{i} fits at its turn but was passed over");
                    prop_assert!(fits_empty);
                    let is_head = matches!(attempt.outcome, Outcome::Head { .. });
                    prop_assert_eq!(is_head, !head_seen, "the first gang that does not fit is the head");
                    head_seen = true;
                    if let Outcome::Head { held: true } = attempt.outcome {
                        prop_assert!(hold_at_once);
                        let hold = r.holds.get("default").expect("hold reported");
                        prop_assert_eq!(&hold.gang, &attempt.key);
                        // The head fits its held nodes once the gangs there are gone.
                        let on_hold = |n: usize| hold.nodes.contains(&node_name(n));
                        let without_gangs: Vec<Resources> = nodes.iter().map(|n| capacity(n).saturating_sub(foreign(n))).collect();
                        prop_assert!(oracle_fits(&nodes, &without_gangs, &on_hold, s));
                        for (n, h) in held.iter_mut().enumerate() {
                            *h = on_hold(n);
                        }
                    }
                }
                Outcome::AlreadyReserved => prop_assert!(false, "nothing was reserved before"),
            }
        }
        prop_assert!(admitted.next().is_none());
    }

    /// (d) and (b): random arrivals, gangs finish after a while; every gang that fits the empty cluster is
    /// admitted in the end, nothing is ever over-committed.
    #[test]
    fn every_gang_that_fits_is_eventually_admitted(
        nodes in prop::collection::vec(node_spec(), 1..6),
        gangs in prop::collection::vec(gang_spec(2), 1..16),
        hold_after_passes in prop_oneof![Just(0u64), Just(3), Just(1_000_000)],
    ) {
        simulate_arrivals(&nodes, &gangs, hold_after_passes)?;
    }

    /// (d), no starvation: a big gang at the head is admitted while small gangs keep arriving.
    #[test]
    fn head_is_not_starved_by_small_gangs(
        node_count in 2usize..6,
        busy in prop::collection::vec((0u32..9, 1u64..5), 2..6),
        stream in prop::collection::vec((1u32..5, 1u64..5), 60),
    ) {
        let nodes: Vec<NodeSpec> = (0..node_count)
            .map(|i| NodeSpec {
                gpus: 8, unhealthy: 0, stale: false, cores: 64, pool: 0, rack: (i % 2) as u8, ready: true,
                tainted: false, foreign_gpus: 0, foreign_cores: 0,
            })
            .collect();
        let mut m = build(&nodes);
        let mut q = Queues::new(QueueConfig { head_hold_after: Duration::ZERO, ..QueueConfig::default() });
        let mut running: BTreeMap<u64, Vec<GangKey>> = BTreeMap::new();
        // Some gangs already running, for a few passes each.
        for (i, (gpus, dur)) in busy.iter().enumerate() {
            let key = GangKey::new("run", &i.to_string());
            let node = node_name(i % node_count);
            let free = m.free(m.id(&node).expect("node")).gpus;
            let gpus = (*gpus).min(free);
            m.reserve(&key, &[(node, Resources::new(gpus, 0, 0, 1))].into_iter().collect()).expect("reserve");
            running.entry(*dur).or_default().push(key);
        }
        let whole = u32::try_from(node_count).expect("small");
        let big = GangDemand { key: GangKey::new("ns", "big"), ..demand(999, &GangSpecT {
            priority: 0, arrival: 0, duration: 1,
            sets: vec![SetSpec { jobs: whole, pods_per_job: 1, gpus: 8, cores: 0, pool: None, tolerates: false, exclusive: false }],
        }) };
        q.enqueue(big, at(NOW));
        let mut admitted_big = None;
        for (p, (gpus, dur)) in stream.iter().enumerate() {
            let p = p as u64 + 1;
            let now = at(NOW + 10 * p);
            for key in running.remove(&p).unwrap_or_default() {
                m.release(&key);
            }
            // A small gang arrives every pass, behind the big one.
            let small = demand(p as usize, &GangSpecT {
                priority: 0, arrival: p, duration: *dur,
                sets: vec![SetSpec { jobs: 1, pods_per_job: 1, gpus: *gpus, cores: 0, pool: None, tolerates: false, exclusive: false }],
            });
            q.enqueue(small, now);
            let r = q.pass(&mut m, now);
            for a in r.admitted {
                if a.key.as_str() == "ns/big" {
                    admitted_big = Some(p);
                }
                running.entry(p + dur).or_default().push(a.key);
            }
            if admitted_big.is_some() {
                break;
            }
        }
        // Everything that ran when it became head ends within 5 passes; nothing new lands on its held nodes.
        prop_assert!(admitted_big.is_some_and(|p| p <= 6), "big admitted at {admitted_big:?}");
    }
}

/// The body of [`every_gang_that_fits_is_eventually_admitted`], callable with fixed cases.
fn simulate_arrivals(nodes: &[NodeSpec], gangs: &[GangSpecT], hold_after_passes: u64) -> Result<(), TestCaseError> {
    let mut m = build(nodes);
    let mut q = Queues::new(QueueConfig {
        head_hold_after: Duration::from_secs(hold_after_passes * 10),
        ..QueueConfig::default()
    });
    // Arrivals spread over the first 50 passes; pass p is at NOW + 10 p seconds.
    let mut running: BTreeMap<u64, Vec<GangKey>> = BTreeMap::new();
    let mut admitted_at: BTreeMap<GangKey, u64> = BTreeMap::new();
    let mut reservations: BTreeMap<GangKey, BTreeMap<String, Resources>> = BTreeMap::new();
    let base = initial_rooms(nodes);
    let last = 50 + 400;
    for p in 0..last {
        let now = at(NOW + 10 * p);
        m.set_time(now);
        // Keep the agents fresh (stale ones stay stale).
        for (i, n) in nodes.iter().enumerate().filter(|(_, n)| !n.stale) {
            let mut report = GpuReport::healthy(&node_name(i), n.gpus, now);
            report.unhealthy =
                (0..n.unhealthy).map(|u| UnhealthyGpu { index: u, xid: Some(79), reason: None }).collect();
            m.apply_gpunode(report);
        }
        for key in running.remove(&p).unwrap_or_default() {
            prop_assert!(m.release(&key));
            reservations.remove(&key);
        }
        for (i, g) in gangs.iter().enumerate().filter(|(_, g)| g.arrival == p) {
            q.enqueue(demand(i, g), now);
        }
        let r = q.pass(&mut m, now);
        for a in r.admitted {
            let i: usize = a.key.as_str().trim_start_matches("ns/g").parse().expect("key");
            running.entry(p + gangs[i].duration).or_default().push(a.key.clone());
            admitted_at.insert(a.key.clone(), p);
            reservations.insert(a.key, a.placement.per_node);
        }
        // (b): what the running gangs hold fits every node, by hand.
        let mut rooms = base.clone();
        for per_node in reservations.values() {
            for (node, r) in per_node {
                let i = index_of(node);
                prop_assert!(r.fits_in(&rooms[i]), "{node} over-committed at pass {p}");
                rooms[i] = rooms[i].saturating_sub(*r);
            }
        }
        if p > 50 && q.is_empty() && running.is_empty() {
            break;
        }
    }
    // "Fits the empty cluster": pods of no gang never leave in this simulation, so empty means empty of gangs.
    // Single-pod-set gangs are judged by hand; for several pod sets (where a fit is a packing problem), by
    // whether placement finds one on a cluster with no gangs.
    let empty = build(nodes);
    for (i, g) in gangs.iter().enumerate() {
        let key = GangKey::new("ns", &format!("g{i:03}"));
        let fits = if g.sets.len() == 1 {
            oracle_fits(nodes, &base, &|_| true, &g.sets[0])
        } else {
            place(&empty, &demand(i, g), Restrict::default()).is_ok()
        };
        if fits {
            prop_assert!(admitted_at.contains_key(&key), "g{i} {g:?} fits the empty cluster but was never admitted");
        } else {
            prop_assert!(!admitted_at.contains_key(&key) || g.sets.len() > 1, "g{i} admitted without a fit");
        }
    }
    Ok(())
}

fn g_set(g: &GangSpecT) -> SetSpec {
    g.sets[0].clone()
}

/// A cluster for exclusive placement: `zoned[i]` gives node `i` the label [`EXCLUSIVE_KEY`] = its rack; `other[i]`
/// puts a pod of another JobSet there (no GPUs), which closes its domain to exclusive Jobs.
fn build_exclusive(nodes: &[NodeSpec], zoned: &[bool], other: &[bool]) -> ClusterModel {
    let mut m = build(nodes);
    for (i, n) in nodes.iter().enumerate() {
        if zoned[i] {
            m.apply_node(node_info(i, n).label(EXCLUSIVE_KEY, &n.rack.to_string()));
        }
        if other[i] {
            m.apply_pod(PodInfo {
                namespace: "ns".into(),
                name: format!("other-{i}"),
                node: node_name(i),
                requests: Resources::new(0, 0, 0, 1),
                gang: Some(GangKey::new("ns", "other")),
                exclusive_leader: None,
            });
        }
    }
    m
}

fn exclusive_case() -> impl Strategy<Value = (Vec<NodeSpec>, Vec<bool>, Vec<bool>, GangSpecT)> {
    prop::collection::vec((node_spec(), prop::bool::weighted(0.8), prop::bool::weighted(0.15)), 1..10)
        .prop_flat_map(|nodes| {
            let sets = prop::collection::vec((set_spec(), prop::bool::weighted(0.7)), 1..=2)
                .prop_map(|sets| sets.into_iter().map(|(s, exclusive)| SetSpec { exclusive, ..s }).collect::<Vec<_>>());
            (Just(nodes), sets)
        })
        .prop_map(|(nodes, sets)| {
            let (specs, flags): (Vec<NodeSpec>, Vec<(bool, bool)>) =
                nodes.into_iter().map(|(n, z, o)| (n, (z, o))).unzip();
            let (zoned, other) = flags.into_iter().unzip();
            (specs, zoned, other, GangSpecT { priority: 0, arrival: 0, sets, duration: 1 })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Exclusive pod sets: each Job in one domain of the key (labelled nodes only), no two Jobs of the gang sharing
    /// one, no other Job of the gang in an exclusive Job's domain, no domain where another JobSet runs; for a
    /// single pod set a fit is found exactly when enough domains hold a Job each, and the empty-cluster verdict
    /// agrees with the explanation's domain count.
    #[test]
    fn exclusive_jobs_get_free_domains_of_their_own((nodes, zoned, other, g) in exclusive_case()) {
        let m = build_exclusive(&nodes, &zoned, &other);
        let d = demand(0, &g);
        let mut rooms = initial_rooms(&nodes);
        for (i, o) in other.iter().enumerate() {
            if *o {
                rooms[i] = rooms[i].saturating_sub(Resources::new(0, 0, 0, 1));
            }
        }
        let domain_of = |i: usize| zoned[i].then_some(nodes[i].rack);
        match place(&m, &d, Restrict::default()) {
            Ok(p) => {
                check_placement(&nodes, &rooms, &g, &p.slots)?;
                // Per Job: its nodes.
                let mut jobs: BTreeMap<(usize, i32), Vec<usize>> = BTreeMap::new();
                for slot in &p.slots {
                    let j: usize = slot.pod_set.trim_start_matches("ps").parse().expect("pod set name");
                    jobs.entry((j, slot.job_index)).or_default().push(index_of(&slot.node));
                }
                for (&(j, job), on) in &jobs {
                    if !g.sets[j].exclusive {
                        continue;
                    }
                    let domain = domain_of(on[0]);
                    prop_assert!(domain.is_some(), "ps{j} Job {job} on unlabelled node-{:02}", on[0]);
                    prop_assert!(on.iter().all(|&i| domain_of(i) == domain), "ps{j} Job {job} spans domains: {on:?}");
                    for (i, n) in nodes.iter().enumerate() {
                        if domain_of(i) == domain {
                            prop_assert!(!other[i], "ps{j} Job {job} in a domain another JobSet uses (node-{i:02}, rack {})", n.rack);
                        }
                    }
                    for (&(j2, job2), on2) in &jobs {
                        if (j2, job2) != (j, job) {
                            prop_assert!(on2.iter().all(|&i| domain_of(i) != domain),
                                "ps{j2} Job {job2} shares the domain of exclusive ps{j} Job {job}");
                        }
                    }
                }
            }
            Err(_) => {
                if g.sets.len() == 1 && g.sets[0].exclusive {
                    let s = &g.sets[0];
                    let mut racks: BTreeMap<u8, (u64, bool)> = BTreeMap::new();
                    for (i, n) in nodes.iter().enumerate() {
                        if !zoned[i] {
                            continue;
                        }
                        let e = racks.entry(n.rack).or_default();
                        e.1 |= other[i];
                        if eligible(n, s) {
                            e.0 += pods_in(rooms[i], s).min(u64::from(s.pods_per_job));
                        }
                    }
                    let free = racks.values().filter(|(pods, used)| !used && *pods >= u64::from(s.pods_per_job)).count();
                    prop_assert!(free < s.jobs as usize, "{free} free domains hold a Job each for {} Jobs, but no fit", s.jobs);
                }
            }
        }
        if g.sets.len() == 1 && g.sets[0].exclusive {
            let never = place_on_empty(&m, &d, EmptyBasis::Everything, Restrict::default()).is_err();
            let why = explain(&m, &d, Basis::Empty, &[]);
            prop_assert_eq!(never, !why.domains.is_empty(), "empty-cluster verdict vs explanation: {}", why.message);
        }
        prop_assert_eq!(place(&m, &d, Restrict::default()), place(&m, &d, Restrict::default()));
    }
}

/// Found by CI: a CPU-only gang ahead splits no room for two 17-core pods, the gang waits at the head with nodes
/// held, and must be admitted once the CPU gang ends.
#[test]
fn regression_two_pod_sets_behind_a_cpu_gang() {
    let node = NodeSpec {
        gpus: 8,
        unhealthy: 0,
        stale: false,
        cores: 32,
        pool: 0,
        rack: 0,
        ready: true,
        tainted: false,
        foreign_gpus: 1,
        foreign_cores: 0,
    };
    let set = |jobs, pods_per_job, gpus, cores| SetSpec {
        jobs,
        pods_per_job,
        gpus,
        cores,
        pool: None,
        tolerates: false,
        exclusive: false,
    };
    let gangs = [
        GangSpecT { priority: 0, arrival: 3, sets: vec![set(2, 1, 1, 17), set(1, 2, 4, 0)], duration: 1 },
        GangSpecT { priority: 1, arrival: 0, sets: vec![set(1, 2, 0, 8)], duration: 4 },
    ];
    simulate_arrivals(&[node.clone(), node], &gangs, 0).expect("every gang that fits is admitted");
}
