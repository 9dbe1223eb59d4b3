//! Gang queues: priority, then arrival; head-gang holds with backfill; requeue backoff.
//!
//! Each queue is a [`PriorityQueue`] keyed by gang, ordered by `(priority, earlier arrival, earlier enqueue)`, so
//! the order is total and FIFO within a priority. A pass ([`Queues::pass`]) walks every queue in that order and
//! admits each gang that fits, all or nothing, reserving its placement in the model at once so later gangs see it.
//!
//! No head-of-line deadlock, no starvation:
//! - a gang that fails is simply passed over (best-effort FIFO), so one big gang does not block smaller ones;
//! - but the first gang that fails (the head) and has waited at least `head_hold_after` gets nodes *held*: the
//!   nodes it would take on a cluster empty of gangs, preferring those with the most room free now. Gangs behind it
//!   may backfill only outside those nodes, so whatever frees up there stays for the head, and it is admitted once
//!   the gangs running there finish. Gangs ahead of it (higher priority) are not restricted. Other queues never use
//!   a queue's held nodes.
//! - queues share by weight: a pass ([`Queues::pass_fair`]) gives each queue its turn in order of the GPUs its
//!   admitted gangs hold per unit of weight, least first (ties by name), counting what earlier turns of the same
//!   pass admitted. So capacity that frees up goes first to the queue with the smallest share, and no queue wins
//!   every race because of its name.
//! - a gang that provably cannot fit even the empty cluster is Inadmissible, with the reason, and is neither head
//!   nor obstacle; the verdict is revisited when the cluster's capacity changes (see [`never_fits`]).
//!
//! Gangs of one shape fit or fail together within a pass (room only shrinks during a pass), so a pass tries each
//! shape once per queue after its first failure — a deep queue of similar gangs costs little.
//!
//! Requeue after an admitted gang's pods were not all ready in time follows Kueue's `waitForPodsReady`:
//! [`on_pods_ready_timeout`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use priority_queue::PriorityQueue;

use super::GangKey;
use super::demand::{GangDemand, GangShape};
use super::explain::{Basis, Explanation, explain, never_fits};
use super::model::ClusterModel;
use super::nodeset::NodeSet;
use super::placement::{EmptyBasis, EmptyOrder, Placement, Restrict, place, place_on_empty, reserve_slots};

/// Kueue's `waitForPodsReady`, per queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodsReadyConfig {
    /// How long an admitted gang's pods have to become ready.
    pub timeout: Duration,
    /// How long a running gang that lost readiness (a pod failed, a group restart recreated its pods) has to be
    /// ready again (Kueue's `recoveryTimeout`); `None` is the same as `timeout`, zero turns it off.
    pub recovery_timeout: Option<Duration>,
    /// First requeue delay; doubles per consecutive timeout.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Requeues allowed before the gang is deactivated; `None` requeues forever.
    pub requeuing_limit: Option<u32>,
    pub requeue_timestamp: RequeueTimestamp,
}

/// Where a requeued gang goes in its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequeueTimestamp {
    /// To the back of its priority (Kueue's default).
    Eviction,
    /// Back to its original place.
    Creation,
}

impl Default for PodsReadyConfig {
    fn default() -> Self {
        PodsReadyConfig {
            timeout: Duration::from_secs(5 * 60),
            recovery_timeout: None,
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            requeuing_limit: None,
            requeue_timestamp: RequeueTimestamp::Eviction,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long the head gang waits before nodes are held for it. Zero holds at once (strict order, at the cost
    /// of idle GPUs while the held nodes drain); longer lets small gangs backfill freely for a while.
    pub head_hold_after: Duration,
    pub pods_ready: PodsReadyConfig,
    /// The queue's share of the GPUs relative to other queues' (at least 1): a queue of weight 2 gets its turn
    /// before a queue of weight 1 until it holds twice the GPUs.
    pub weight: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { head_hold_after: Duration::from_secs(60), pods_ready: PodsReadyConfig::default(), weight: 1 }
    }
}

/// The queue whose turn is next: least GPUs in use per weight, first by position (names sorted) on a tie.
fn next_turn(waiting: &[(String, u32)], in_use: &BTreeMap<String, u64>) -> Option<usize> {
    let share = |(name, weight): &(String, u32)| (in_use.get(name).copied().unwrap_or(0), u128::from((*weight).max(1)));
    let mut best: Option<usize> = None;
    for (i, q) in waiting.iter().enumerate() {
        let (used, weight) = share(q);
        // used / weight < best_used / best_weight, without division.
        if best.is_none_or(|b| {
            let (b_used, b_weight) = share(&waiting[b]);
            u128::from(used) * b_weight < u128::from(b_used) * weight
        }) {
            best = Some(i);
        }
    }
    best
}

/// What to do with an admitted gang whose pods were not all ready in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequeueDecision {
    /// Suspend, release, and queue again; not eligible before `eligible_at`.
    Requeue { requeue_count: u32, eligible_at: SystemTime },
    /// The requeuing limit is used up: suspend, release, and stop trying (Kueue deactivates the workload).
    Deactivate { requeue_count: u32 },
}

impl PodsReadyConfig {
    /// The recovery timeout in force, or `None` when it is turned off.
    pub fn recovery(&self) -> Option<Duration> {
        Some(self.recovery_timeout.unwrap_or(self.timeout)).filter(|t| !t.is_zero())
    }
}

/// The delay before the `requeue_count`-th requeue (1-based): `base × 2^(count-1)`, at most `max`.
pub fn backoff(config: &PodsReadyConfig, requeue_count: u32) -> Duration {
    let doublings = requeue_count.saturating_sub(1).min(63);
    let factor = 1u64 << doublings;
    let secs = config.backoff_base.as_secs_f64() * factor as f64;
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX).min(config.backoff_max)
}

/// When an admitted gang's pods must all be ready.
pub fn pods_ready_deadline(config: &PodsReadyConfig, admitted_at: SystemTime) -> SystemTime {
    admitted_at.checked_add(config.timeout).unwrap_or(admitted_at)
}

/// `requeue_count` is how often the gang was requeued before this timeout.
pub fn on_pods_ready_timeout(config: &PodsReadyConfig, requeue_count: u32, now: SystemTime) -> RequeueDecision {
    let requeue_count = requeue_count.saturating_add(1);
    if config.requeuing_limit.is_some_and(|limit| requeue_count > limit) {
        return RequeueDecision::Deactivate { requeue_count };
    }
    let eligible_at = now.checked_add(backoff(config, requeue_count)).unwrap_or(now);
    RequeueDecision::Requeue { requeue_count, eligible_at }
}

/// Queue order: higher priority first, then earlier arrival, then earlier enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    priority: i32,
    arrival: Reverse<SystemTime>,
    seq: Reverse<u64>,
}

#[derive(Clone, Debug)]
struct Entry {
    demand: GangDemand,
    shape: GangShape,
    arrival: SystemTime,
    eligible_at: Option<SystemTime>,
    requeue_count: u32,
    /// The verdict and the capacity generation it was reached at.
    inadmissible: Option<(u64, Explanation)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub gang: GangKey,
    /// Node names, sorted.
    pub nodes: BTreeSet<String>,
    pub since: SystemTime,
}

#[derive(Debug, Default)]
struct Queue {
    config: QueueConfig,
    pq: PriorityQueue<GangKey, Order>,
    entries: HashMap<GangKey, Entry>,
    hold: Option<Hold>,
}

/// A queued gang, read-only.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedGang<'a> {
    pub demand: &'a GangDemand,
    pub arrival: SystemTime,
    pub eligible_at: Option<SystemTime>,
    pub requeue_count: u32,
    /// Set while the gang cannot fit even the empty cluster.
    pub inadmissible: Option<&'a Explanation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Admitted {
    pub key: GangKey,
    pub queue: String,
    pub placement: Placement,
    pub arrival: SystemTime,
    pub requeue_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    /// Did not fit now (possibly known from an earlier gang of the same shape in this pass).
    NoFit,
    /// Did not fit, and became or stayed the head: `held` says whether nodes are held for it.
    Head {
        held: bool,
    },
    /// Cannot fit even the empty cluster.
    Inadmissible,
    /// The model already holds a reservation for this key; the gang is left queued untouched.
    AlreadyReserved,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub key: GangKey,
    pub queue: String,
    pub outcome: Outcome,
}

/// What a pass did. Gangs not mentioned were not eligible yet (backing off) or stayed Inadmissible.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    /// In admission order; each placement is already reserved in the model.
    pub admitted: Vec<Admitted>,
    /// Gangs found not to fit the empty cluster in this pass, with the reason.
    pub inadmissible: Vec<(GangKey, Explanation)>,
    /// Per queue with a held head, after the pass.
    pub holds: BTreeMap<String, Hold>,
    /// Every gang tried, in the order tried.
    pub attempts: Vec<Attempt>,
}

/// All queues. See the module documentation.
#[derive(Debug, Default)]
pub struct Queues {
    default_config: QueueConfig,
    configs: HashMap<String, QueueConfig>,
    queues: BTreeMap<String, Queue>,
    queue_of: HashMap<GangKey, String>,
    seq: u64,
    /// Feasibility on the empty cluster per shape, valid for one capacity generation.
    feasibility: HashMap<GangShape, Option<Explanation>>,
    feasibility_generation: u64,
}

impl Queues {
    pub fn new(default_config: QueueConfig) -> Self {
        Queues { default_config, ..Queues::default() }
    }

    pub fn set_config(&mut self, queue: &str, config: QueueConfig) {
        if let Some(q) = self.queues.get_mut(queue) {
            q.config = config.clone();
        }
        self.configs.insert(queue.to_owned(), config);
    }

    pub fn config(&self, queue: &str) -> &QueueConfig {
        self.configs.get(queue).unwrap_or(&self.default_config)
    }

    /// Queues a gang, or updates its demand in place (same arrival, same position) when already queued.
    pub fn enqueue(&mut self, demand: GangDemand, arrival: SystemTime) {
        let existing = self.remove_entry(&demand.key);
        let (arrival, eligible_at, requeue_count, seq) = match existing {
            Some((e, order)) => (e.arrival, e.eligible_at, e.requeue_count, order.seq.0),
            None => (arrival, None, 0, self.next_seq()),
        };
        self.insert(demand, arrival, eligible_at, requeue_count, seq);
    }

    /// Queues an admitted gang again after [`on_pods_ready_timeout`] said `Requeue`; `original_arrival` is where
    /// it stood before (kept with [`RequeueTimestamp::Creation`]). Returns the arrival it now stands at, or `None`
    /// for `Deactivate`.
    pub fn requeue(
        &mut self,
        demand: GangDemand,
        original_arrival: SystemTime,
        decision: RequeueDecision,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let RequeueDecision::Requeue { requeue_count, eligible_at } = decision else { return None };
        let arrival = match self.config(&demand.queue).pods_ready.requeue_timestamp {
            RequeueTimestamp::Eviction => now,
            RequeueTimestamp::Creation => original_arrival,
        };
        self.restore(demand, arrival, Some(eligible_at), requeue_count);
        Some(arrival)
    }

    /// Queues a gang as a restarted controller finds it recorded: at `arrival`, not before `eligible_at` (the
    /// rest of a requeue backoff), with its requeues so far.
    pub fn restore(
        &mut self,
        demand: GangDemand,
        arrival: SystemTime,
        eligible_at: Option<SystemTime>,
        requeue_count: u32,
    ) {
        self.remove_entry(&demand.key);
        let seq = self.next_seq();
        self.insert(demand, arrival, eligible_at, requeue_count, seq);
    }

    /// Drops a gang (its JobSet was deleted, or it was admitted elsewhere).
    pub fn remove(&mut self, key: &GangKey) -> Option<GangDemand> {
        self.remove_entry(key).map(|(e, _)| e.demand)
    }

    pub fn get(&self, key: &GangKey) -> Option<QueuedGang<'_>> {
        let e = self.queues.get(self.queue_of.get(key)?)?.entries.get(key)?;
        Some(QueuedGang {
            demand: &e.demand,
            arrival: e.arrival,
            eligible_at: e.eligible_at,
            requeue_count: e.requeue_count,
            inadmissible: e.inadmissible.as_ref().map(|(_, x)| x),
        })
    }

    pub fn len(&self) -> usize {
        self.queue_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue_of.is_empty()
    }

    /// Queue names with at least one gang.
    pub fn queue_names(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().filter(|(_, q)| !q.entries.is_empty()).map(|(n, _)| n.as_str())
    }

    /// A queue's gangs in order (1-based position = index + 1).
    pub fn order(&self, queue: &str) -> Vec<GangKey> {
        self.queues.get(queue).map_or_else(Vec::new, |q| q.pq.clone().into_sorted_iter().map(|(k, _)| k).collect())
    }

    pub fn hold(&self, queue: &str) -> Option<&Hold> {
        self.queues.get(queue).and_then(|q| q.hold.as_ref())
    }

    /// Every held node, with the gang it is held for: what the scheduler extender should keep other GPU pods off.
    pub fn held_nodes(&self) -> BTreeMap<&str, &GangKey> {
        self.queues
            .values()
            .filter_map(|q| q.hold.as_ref())
            .flat_map(|h| h.nodes.iter().map(move |n| (n.as_str(), &h.gang)))
            .collect()
    }

    /// Why a queued gang does not fit now (or, when Inadmissible, ever); holds for other gangs count against it.
    pub fn explain(&self, model: &ClusterModel, key: &GangKey) -> Option<Explanation> {
        let e = self.queues.get(self.queue_of.get(key)?)?.entries.get(key)?;
        if let Some((_, x)) = &e.inadmissible {
            return Some(x.clone());
        }
        let holds: Vec<(GangKey, NodeSet)> = self
            .queues
            .values()
            .filter_map(|q| q.hold.as_ref())
            .filter(|h| h.gang != *key)
            .map(|h| (h.gang.clone(), model.node_set(&h.nodes)))
            .collect();
        let holds: Vec<(&GangKey, &NodeSet)> = holds.iter().map(|(g, s)| (g, s)).collect();
        Some(explain(model, &e.demand, Basis::Now, &holds))
    }

    /// [`Self::pass_fair`] with no GPUs in use by any queue: the queues take their turns by name.
    pub fn pass(&mut self, model: &mut ClusterModel, now: SystemTime) -> PassReport {
        self.pass_fair(model, now, &BTreeMap::new())
    }

    /// One admission pass at `now` (set the model's clock first); `in_use` is the GPUs each queue's admitted gangs
    /// hold. See the module documentation.
    pub fn pass_fair(
        &mut self,
        model: &mut ClusterModel,
        now: SystemTime,
        in_use: &BTreeMap<String, u64>,
    ) -> PassReport {
        let mut report = PassReport::default();
        if self.feasibility_generation != model.capacity_generation() {
            self.feasibility.clear();
            self.feasibility_generation = model.capacity_generation();
        }
        let mut empty_order: Option<EmptyOrder> = None;
        // Held nodes per queue, from the last pass until the queue's own turn recomputes them.
        let mut holds: BTreeMap<String, NodeSet> = self
            .queues
            .iter()
            .filter_map(|(n, q)| Some((n.clone(), model.node_set(&q.hold.as_ref()?.nodes))))
            .collect();
        let mut in_use = in_use.clone();
        let mut waiting: Vec<(String, u32)> = self.queues.iter().map(|(n, q)| (n.clone(), q.config.weight)).collect();
        while let Some(turn) = next_turn(&waiting, &in_use) {
            let (name, _) = waiting.remove(turn);
            let Some(queue) = self.queues.get_mut(&name) else { continue };
            let mut excluded = NodeSet::new();
            for (other, set) in &holds {
                if *other != name {
                    excluded.union_with(set);
                }
            }
            let mut failed: HashSet<GangShape> = HashSet::new();
            let mut head_found = false;
            let mut new_hold: Option<Hold> = None;
            let mut keep: Vec<(GangKey, Order)> = Vec::with_capacity(queue.pq.len());
            while let Some((key, order)) = queue.pq.pop() {
                let Some(entry) = queue.entries.get_mut(&key) else { continue };
                if entry.eligible_at.is_some_and(|t| t > now) {
                    keep.push((key, order));
                    continue;
                }
                entry.eligible_at = None;
                if entry.inadmissible.as_ref().is_some_and(|(g, _)| *g == model.capacity_generation()) {
                    keep.push((key, order));
                    continue;
                }
                if model.reservation(&key).is_some() {
                    report.attempts.push(Attempt {
                        key: key.clone(),
                        queue: name.clone(),
                        outcome: Outcome::AlreadyReserved,
                    });
                    keep.push((key, order));
                    continue;
                }
                let restrict = Restrict { excluded: (!excluded.is_empty()).then_some(&excluded), only: None };
                let placed =
                    if failed.contains(&entry.shape) { None } else { place(model, &entry.demand, restrict).ok() };
                if let Some(placement) = placed
                    && reserve_slots(model, &entry.demand, &placement.slots).is_ok()
                {
                    report.attempts.push(Attempt { key: key.clone(), queue: name.clone(), outcome: Outcome::Admitted });
                    *in_use.entry(name.clone()).or_default() += entry.demand.total_gpus();
                    let entry = queue.entries.remove(&key);
                    self.queue_of.remove(&key);
                    report.admitted.push(Admitted {
                        key,
                        queue: name.clone(),
                        placement,
                        arrival: entry.as_ref().map_or(now, |e| e.arrival),
                        requeue_count: entry.map_or(0, |e| e.requeue_count),
                    });
                    continue;
                }
                failed.insert(entry.shape.clone());
                // Can it ever fit?
                let verdict = match self.feasibility.get(&entry.shape) {
                    Some(v) => v.clone(),
                    None => {
                        let order = empty_order.get_or_insert_with(|| EmptyOrder::new(model, EmptyBasis::Everything));
                        let v = never_fits(model, &entry.demand, order);
                        self.feasibility.insert(entry.shape.clone(), v.clone());
                        v
                    }
                };
                if let Some(why) = verdict {
                    let newly = entry.inadmissible.is_none();
                    entry.inadmissible = Some((model.capacity_generation(), why.clone()));
                    if newly {
                        report.inadmissible.push((key.clone(), why));
                    }
                    report.attempts.push(Attempt {
                        key: key.clone(),
                        queue: name.clone(),
                        outcome: Outcome::Inadmissible,
                    });
                    keep.push((key, order));
                    continue;
                }
                entry.inadmissible = None;
                let mut outcome = Outcome::NoFit;
                if !head_found {
                    head_found = true;
                    let waited = now.duration_since(entry.arrival).unwrap_or(Duration::ZERO);
                    let mut held = false;
                    if waited >= queue.config.head_hold_after {
                        let previous = queue.hold.as_ref().filter(|h| h.gang == key);
                        if let Some(h) = hold_for(model, &entry.demand, previous, &excluded, now) {
                            excluded.union_with(&model.node_set(&h.nodes));
                            new_hold = Some(h);
                            held = true;
                        }
                    }
                    outcome = Outcome::Head { held };
                }
                report.attempts.push(Attempt { key: key.clone(), queue: name.clone(), outcome });
                keep.push((key, order));
            }
            for (key, order) in keep {
                queue.pq.push(key, order);
            }
            match &new_hold {
                Some(h) => {
                    holds.insert(name.clone(), model.node_set(&h.nodes));
                    report.holds.insert(name.clone(), h.clone());
                }
                None => {
                    holds.remove(&name);
                }
            }
            queue.hold = new_hold;
        }
        report
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn insert(
        &mut self,
        demand: GangDemand,
        arrival: SystemTime,
        eligible_at: Option<SystemTime>,
        requeue_count: u32,
        seq: u64,
    ) {
        let key = demand.key.clone();
        let name = demand.queue.clone();
        let config = self.config(&name).clone();
        let queue = self.queues.entry(name.clone()).or_insert_with(|| Queue { config, ..Queue::default() });
        queue.pq.push(key.clone(), Order { priority: demand.priority, arrival: Reverse(arrival), seq: Reverse(seq) });
        let shape = demand.shape();
        queue
            .entries
            .insert(key.clone(), Entry { demand, shape, arrival, eligible_at, requeue_count, inadmissible: None });
        self.queue_of.insert(key, name);
    }

    fn remove_entry(&mut self, key: &GangKey) -> Option<(Entry, Order)> {
        let name = self.queue_of.remove(key)?;
        let queue = self.queues.get_mut(&name)?;
        let (_, order) = queue.pq.remove(key)?;
        let entry = queue.entries.remove(key)?;
        if queue.hold.as_ref().is_some_and(|h| h.gang == *key) {
            queue.hold = None;
        }
        Some((entry, order))
    }
}

/// The nodes to hold for a head gang: its previous hold while the gang still fits there (so that what has
/// drained is not given away), else a fresh choice on a cluster empty of gangs, avoiding other queues' holds.
/// `None` when the gang fits nowhere even with all gangs gone; it then waits without a hold.
fn hold_for(
    model: &ClusterModel,
    gang: &GangDemand,
    previous: Option<&Hold>,
    excluded: &NodeSet,
    now: SystemTime,
) -> Option<Hold> {
    let restrict = Restrict { excluded: Some(excluded), only: None };
    if let Some(prev) = previous {
        let only = model.node_set(&prev.nodes);
        let on_prev = Restrict { only: Some(&only), ..restrict };
        if place_on_empty(model, gang, EmptyBasis::KeepForeignPods, on_prev).is_ok() {
            return Some(prev.clone());
        }
    }
    // Not on a cluster that is merely empty of gangs: pods of no gang may never leave, and a hold that waits for
    // them would keep its nodes from everybody for good.
    let placement = place_on_empty(model, gang, EmptyBasis::KeepForeignPods, restrict).ok()?;
    Some(Hold { gang: gang.key.clone(), nodes: placement.per_node.into_keys().collect(), since: now })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::testutil::*;

    fn queues(hold_after: u64) -> Queues {
        Queues::new(QueueConfig { head_hold_after: Duration::from_secs(hold_after), ..QueueConfig::default() })
    }

    fn admitted(r: &PassReport) -> Vec<&str> {
        r.admitted.iter().map(|a| a.key.as_str()).collect()
    }

    #[test]
    fn kueue_backoff_defaults() {
        let c = PodsReadyConfig::default();
        assert_eq!(c.timeout, Duration::from_secs(300));
        let secs: Vec<u64> = (1..=8).map(|n| backoff(&c, n).as_secs()).collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(&c, 200), Duration::from_secs(3600));
        assert_eq!(
            on_pods_ready_timeout(&c, 0, at(1000)),
            RequeueDecision::Requeue { requeue_count: 1, eligible_at: at(1060) }
        );
        assert_eq!(
            on_pods_ready_timeout(&c, 2, at(1000)),
            RequeueDecision::Requeue { requeue_count: 3, eligible_at: at(1240) }
        );
        let limited = PodsReadyConfig { requeuing_limit: Some(2), ..c.clone() };
        assert!(matches!(on_pods_ready_timeout(&limited, 1, at(0)), RequeueDecision::Requeue { requeue_count: 2, .. }));
        assert_eq!(on_pods_ready_timeout(&limited, 2, at(0)), RequeueDecision::Deactivate { requeue_count: 3 });
        assert_eq!(pods_ready_deadline(&c, at(10)), at(310));
    }

    #[test]
    fn priority_then_arrival() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        let mut q = queues(3600);
        let mut low = gang("ml/low", &[("w", 1, 1, 8)]);
        low.priority = 0;
        let mut high = gang("ml/high", &[("w", 1, 1, 8)]);
        high.priority = 10;
        q.enqueue(low, at(1));
        q.enqueue(gang("ml/early", &[("w", 1, 1, 8)]), at(0));
        q.enqueue(high, at(5));
        assert_eq!(
            q.order("default").iter().map(GangKey::as_str).collect::<Vec<_>>(),
            vec!["ml/high", "ml/early", "ml/low"]
        );
        let r = q.pass(&mut m, at(10));
        assert_eq!(admitted(&r), vec!["ml/high"]);
        assert_eq!(m.free(id(&m, "a")).gpus, 0);
        m.release(&GangKey::parse("ml/high"));
        assert_eq!(admitted(&q.pass(&mut m, at(11))), vec!["ml/early"]);
        // Re-enqueueing a queued gang keeps its place.
        q.enqueue(gang("ml/low", &[("w", 1, 1, 4)]), at(99));
        assert_eq!(q.get(&GangKey::parse("ml/low")).map(|g| g.arrival), Some(at(1)));
    }

    #[test]
    fn big_gang_does_not_block_and_inadmissible_is_reported() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        add_gpu_node(&mut m, "b", 8, &[]);
        let mut q = queues(3600);
        q.enqueue(gang("ml/huge", &[("w", 3, 1, 8)]), at(0));
        q.enqueue(gang("ml/big", &[("w", 2, 1, 8)]), at(1));
        q.enqueue(gang("ml/small", &[("w", 1, 1, 1)]), at(2));
        m.apply_pod(pod("p", "a", 1, None));
        let r = q.pass(&mut m, at(10));
        assert_eq!(admitted(&r), vec!["ml/small"]);
        assert_eq!(r.inadmissible.len(), 1);
        assert_eq!(r.inadmissible[0].0.as_str(), "ml/huge");
        assert!(
            r.inadmissible[0].1.message.starts_with("does not fit even the empty cluster: needs 3 nodes"),
            "{}",
            r.inadmissible[0].1.message
        );
        let huge = q.get(&GangKey::parse("ml/huge")).expect("still queued");
        assert!(huge.inadmissible.is_some());
        // ml/big was the head (huge is not a head), not held yet.
        assert!(r.attempts.iter().any(|a| a.key.as_str() == "ml/big" && a.outcome == Outcome::Head { held: false }));
        // A third node: huge becomes admissible again.
        add_gpu_node(&mut m, "c", 8, &[]);
        m.delete_pod("ns", "p");
        m.release(&GangKey::parse("ml/small"));
        let r = q.pass(&mut m, at(20));
        assert_eq!(admitted(&r), vec!["ml/huge"]);
        assert!(q.explain(&m, &GangKey::parse("ml/big")).is_some_and(|e| e.gpu_shortfall == 16));
    }

    #[test]
    fn inadmissible_needs_a_proof_not_a_failed_search() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        add_gpu_node(&mut m, "b", 8, &[]);
        let mut q = queues(3600);
        // 24 GPUs on a 16-GPU cluster: proven, although each pod set fits alone.
        q.enqueue(gang("ml/over", &[("x", 1, 1, 8), ("y", 1, 1, 8), ("z", 1, 1, 8)]), at(0));
        // 15 GPUs, but no node holds two 5-GPU pods: no packing exists, and nothing short on its own proves it.
        q.enqueue(gang("ml/three", &[("x", 1, 1, 5), ("y", 1, 1, 5), ("z", 1, 1, 5)]), at(1));
        let r = q.pass(&mut m, at(10));
        assert_eq!(r.inadmissible.len(), 1);
        assert_eq!(r.inadmissible[0].0.as_str(), "ml/over");
        let why = &r.inadmissible[0].1;
        assert!(why.message.contains("not all together") && why.message.ends_with("the cluster has 16 healthy GPUs"));
        assert_eq!(why.gpu_shortfall, 8);
        assert!(r.attempts.iter().any(|a| a.key.as_str() == "ml/three" && a.outcome == Outcome::Head { held: false }));
        let three = q.explain(&m, &GangKey::parse("ml/three")).expect("queued");
        assert!(three.message.starts_with("each pod set fits on its own but not all together"), "{}", three.message);
    }

    #[test]
    fn queues_take_turns_by_gpus_in_use_per_weight() {
        let waiting = |names: &[(&str, u32)]| -> Vec<(String, u32)> {
            names.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
        };
        let in_use = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(n, g)| ((*n).to_owned(), *g)).collect()
        };
        let q = waiting(&[("a", 1), ("b", 1), ("c", 2)]);
        assert_eq!(next_turn(&q, &BTreeMap::new()), Some(0), "nothing in use: by name");
        assert_eq!(next_turn(&q, &in_use(&[("a", 8)])), Some(1), "b and c hold nothing; b comes first by name");
        assert_eq!(next_turn(&q, &in_use(&[("a", 8), ("b", 8), ("c", 16)])), Some(0), "c's 16 on weight 2 ties");
        assert_eq!(next_turn(&q, &in_use(&[("a", 8), ("b", 8), ("c", 8)])), Some(2), "c holds half as much per weight");
        assert_eq!(next_turn(&[], &BTreeMap::new()), None);
    }

    #[test]
    fn freed_gpus_go_first_to_the_queue_that_holds_the_fewest() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        let mut q = queues(3600);
        // Both queues want the node's 8 GPUs; "alpha" would win every race by name.
        let mut first = gang("ml/alpha-1", &[("w", 1, 1, 8)]);
        first.queue = "alpha".into();
        let mut other = gang("ml/zulu-1", &[("w", 1, 1, 8)]);
        other.queue = "zulu".into();
        q.enqueue(first, at(0));
        q.enqueue(other, at(0));
        let alpha_holds: BTreeMap<String, u64> = [("alpha".to_owned(), 16)].into_iter().collect();
        let r = q.pass_fair(&mut m, at(1), &alpha_holds);
        assert_eq!(admitted(&r), ["ml/zulu-1"], "alpha already holds 16 GPUs elsewhere, zulu none");
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        let r = q.pass(&mut m, at(2));
        assert_eq!(admitted(&r), ["ml/alpha-1"], "without usage, by name");
    }

    #[test]
    fn head_hold_stops_backfill_on_held_nodes() {
        let mut m = model(&[]);
        for n in ["a", "b", "c"] {
            add_gpu_node(&mut m, n, 8, &[]);
        }
        // Running gangs use 4 GPUs on a and b each.
        for (g, n) in [("ml/r1", "a"), ("ml/r2", "b")] {
            m.reserve(&GangKey::parse(g), &per_node(&[(n, 4)])).expect("reserve");
        }
        let mut q = queues(0);
        q.enqueue(gang("ml/head", &[("w", 1, 2, 8)]), at(0));
        for i in 0..4 {
            q.enqueue(gang(&format!("ml/s{i}"), &[("w", 1, 1, 4)]), at(1 + i));
        }
        let r = q.pass(&mut m, at(10));
        let hold = r.holds.get("default").expect("held");
        assert_eq!(hold.gang.as_str(), "ml/head");
        // The nodes it can have soonest: c (free now) and a.
        assert_eq!(hold.nodes.iter().map(String::as_str).collect::<Vec<_>>(), vec!["a", "c"]);
        // Backfill lands only outside the held nodes.
        for a in &r.admitted {
            for n in a.placement.per_node.keys() {
                assert!(!hold.nodes.contains(n), "{} on held {n}", a.key);
            }
        }
        assert_eq!(admitted(&r), vec!["ml/s0"], "one 4-GPU gang fits on the unheld node b");
        // The gang running on a held node finishes; the head gets in although small gangs keep coming.
        let r = q.pass(&mut m, at(11));
        assert!(r.admitted.is_empty());
        assert_eq!(q.hold("default").map(|h| h.since), Some(at(10)), "the same hold is kept");
        m.release(&GangKey::parse("ml/r1"));
        q.enqueue(gang("ml/late", &[("w", 1, 1, 4)]), at(11));
        let r = q.pass(&mut m, at(12));
        assert_eq!(admitted(&r)[0], "ml/head");
        assert!(q.hold("default").is_none_or(|h| h.gang.as_str() != "ml/head"));
    }

    #[test]
    fn backoff_and_requeue() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        let mut q = queues(3600);
        let g = gang("ml/x", &[("w", 1, 1, 8)]);
        q.enqueue(g.clone(), at(0));
        let r = q.pass(&mut m, at(1));
        assert_eq!(admitted(&r), vec!["ml/x"]);
        // Pods not ready in time: release and requeue with backoff.
        m.release(&g.key);
        let decision = on_pods_ready_timeout(&q.config("default").pods_ready, 0, at(400));
        assert_eq!(q.requeue(g.clone(), at(0), decision, at(400)), Some(at(400)), "Eviction: queued anew");
        assert!(q.pass(&mut m, at(420)).attempts.is_empty(), "backing off");
        let r = q.pass(&mut m, at(460));
        assert_eq!(admitted(&r), vec!["ml/x"]);
        assert_eq!(r.admitted[0].requeue_count, 1);
        assert_eq!(q.requeue(g, at(0), RequeueDecision::Deactivate { requeue_count: 4 }, at(500)), None);
    }

    #[test]
    fn same_shape_tried_once_per_pass() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        m.apply_pod(pod("p", "a", 4, None));
        let mut q = queues(3600);
        for i in 0..100 {
            q.enqueue(gang(&format!("ml/g{i:03}"), &[("w", 1, 1, 8)]), at(i));
        }
        let r = q.pass(&mut m, at(200));
        assert_eq!(r.attempts.len(), 100);
        assert!(r.admitted.is_empty());
        assert_eq!(q.len(), 100);
        assert_eq!(q.order("default").len(), 100);
    }

    #[test]
    fn other_queues_respect_a_hold() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        m.reserve(&GangKey::parse("ml/run"), &per_node(&[("a", 4)])).expect("reserve");
        let mut q = queues(0);
        let mut head = gang("ml/head", &[("w", 1, 1, 8)]);
        head.queue = "a-queue".into();
        q.enqueue(head, at(0));
        let mut other = gang("ml/other", &[("w", 1, 1, 2)]);
        other.queue = "b-queue".into();
        q.enqueue(other, at(1));
        let r = q.pass(&mut m, at(5));
        assert!(r.admitted.is_empty(), "{:?}", admitted(&r));
        assert_eq!(
            q.held_nodes().into_iter().map(|(n, g)| (n, g.as_str())).collect::<Vec<_>>(),
            vec![("a", "ml/head")]
        );
        let why = q.explain(&m, &GangKey::parse("ml/other")).expect("queued");
        assert!(why.message.contains("held for ml/head"), "{}", why.message);
    }
}
