//! All-or-nothing placement of a gang: every pod slot gets a node, or the gang is not placed and nothing changes.
//!
//! Per Job, in this order of preference:
//! 1. all its pods on one node — the node with the least free GPUs that holds them (best fit), so that partly
//!    used nodes fill up first and whole nodes stay free for whole-node Jobs;
//! 2. all its pods within one topology domain (per configured label key, narrowest first) — the domain with the
//!    fewest free GPUs that holds them, filled largest-room node first and best fit for the last pods;
//! 3. anywhere: largest-room nodes first, best fit for the rest.
//!
//! A pod set with exclusive placement on a topology key (upstream's `alpha.jobset.sigs.k8s.io/exclusive-topology`,
//! affinity strategy) first gets a domain per Job — the free domain with the least GPU room that holds the Job —
//! and its pods are then placed inside that domain as above. Exactly what the scheduler will enforce through the
//! pod webhooks' affinity and anti-affinity (reference §3.12), as far as the model knows pods:
//! - only nodes carrying the key qualify, and all pods of a Job share one value of it;
//! - a domain is free when no other Job of this gang uses any of its nodes, and (on the current view) no bound pod
//!   or reservation of another JobSet is there. The leader's anti-affinity matches pods of other Jobs carrying a
//!   `job-key` label *with its own priority*; the model does not know pod priorities, so any other JobSet's pods
//!   block the domain: a gang may wait where the scheduler would have let it share with lower-priority work, but it
//!   is never admitted where its leader cannot be scheduled;
//! - the domain of an exclusive Job is closed to the gang's other Jobs (the leader's anti-affinity is symmetric for
//!   the scheduler).
//!
//! Not modelled: the same symmetry for *other* gangs. A gang without exclusive placement may still be placed in a
//! domain where another gang's exclusive Job runs (the model does not record which reservations are exclusive);
//! the scheduler then refuses its pods if they have that Job's priority, and the gang is requeued after the
//! pods-ready timeout.
//!
//! The node-selector strategy (`alpha.jobset.sigs.k8s.io/node-selector` too) pins Job `i` to the nodes labelled
//! for it; placement honours that per-Job nodeSelector ([`PodSetDemand::job_constraints`]) and nothing more.
//!
//! Nodes this gang already uses are preferred on ties, which keeps a gang's Jobs together. Pod sets are placed
//! largest Job first (big pieces before small ones). Iteration follows the model's name-ordered indexes and every
//! tie is broken by node name, so the same model and gang always give the same placement.
//!
//! The same algorithm runs against two views: the current free room ([`place`]) and the room of an empty cluster
//! ([`place_on_empty`]), which decides whether a gang can ever fit and which nodes a head gang holds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use muster_api::gang::SlotPlacement;

use super::demand::{Constraints, Exclusive, GangDemand, Operator, PodSetDemand, Requirement, SelectorTerm};
use super::model::{ClusterModel, Domain, ModelError};
use super::nodeset::{NodeId, NodeSet};
use super::{GangKey, Resources};

/// Where a gang may go, besides its own constraints.
#[derive(Clone, Copy, Debug, Default)]
pub struct Restrict<'a> {
    /// Nodes it must not use (e.g. held for a head gang).
    pub excluded: Option<&'a NodeSet>,
    /// If set, the only nodes it may use.
    pub only: Option<&'a NodeSet>,
}

impl Restrict<'_> {
    fn allows(&self, id: NodeId) -> bool {
        !self.excluded.is_some_and(|s| s.contains(id)) && self.only.is_none_or(|s| s.contains(id))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Ordered by pod set (as in the gang), Job index, pod index.
    pub slots: Vec<SlotPlacement>,
    /// What the gang takes per node; what [`ClusterModel::reserve`] needs.
    pub per_node: BTreeMap<String, Resources>,
}

/// The first Job that could not be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoFit {
    pub pod_set: String,
    pub job_index: u32,
}

/// Places `gang` on the current free room of `model`, outside the domains other gangs' exclusive Jobs took.
pub fn place(model: &ClusterModel, gang: &GangDemand, restrict: Restrict<'_>) -> Result<Placement, NoFit> {
    if let Some(no) = cannot_fit_now(model, gang) {
        return Err(no);
    }
    let claimed = model.claimed_by_others(&gang.key);
    if claimed.is_empty() {
        return place_with(&Current(model), gang, restrict);
    }
    let mut excluded = restrict.excluded.cloned().unwrap_or_default();
    for (_, _, members) in &claimed {
        excluded.union_with(members);
    }
    place_with(&Current(model), gang, Restrict { excluded: Some(&excluded), ..restrict })
}

/// A placement names a pod set the gang does not have (a stored placement of an older spec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error("the placement names pod set {0}, which the gang does not have")]
    UnknownPodSet(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Reserves `slots` (a fresh placement, or one recorded in `Gang.status`) for `gang`: the room per node, and the
/// domains its exclusive Jobs take, which other gangs' pods may not enter. Nothing changes on error.
pub fn reserve_slots(model: &mut ClusterModel, gang: &GangDemand, slots: &[SlotPlacement]) -> Result<(), ReserveError> {
    let per_node = per_node_of(gang, slots).map_err(ReserveError::UnknownPodSet)?;
    model.reserve(&gang.key, &per_node)?;
    let claims = exclusive_claims(model, gang, slots);
    model.claim_domains(&gang.key, claims);
    Ok(())
}

/// The domains (topology key, value) that the exclusive Jobs of `gang` take with `slots`: the value of the key on
/// each of their nodes. (The node-selector strategy needs none: its nodes are tainted for the Job.)
fn exclusive_claims(model: &ClusterModel, gang: &GangDemand, slots: &[SlotPlacement]) -> BTreeSet<(String, String)> {
    let mut claims = BTreeSet::new();
    for slot in slots {
        let Some(ps) = gang.pod_sets.iter().find(|p| p.name == slot.pod_set) else { continue };
        let Some(Exclusive::Domain(key)) = &ps.exclusive else { continue };
        let labels = model.slot_by_name(&slot.node).and_then(|s| s.node.as_ref()).map(|n| &n.labels);
        if let Some(value) = labels.and_then(|l| l.get(&**key)) {
            claims.insert(((**key).to_owned(), value.clone()));
        }
    }
    claims
}

/// A cheap necessary condition from the free-GPU buckets alone (no eligibility, no CPU): most gangs that do not
/// fit a busy cluster are turned away here without a search.
fn cannot_fit_now(model: &ClusterModel, gang: &GangDemand) -> Option<NoFit> {
    if gang.total_gpus() > model.total_free_gpus() {
        let ps = gang.pod_sets.iter().find(|p| p.per_pod.gpus > 0)?;
        return Some(NoFit { pod_set: ps.name.clone(), job_index: 0 });
    }
    for ps in gang.pod_sets.iter().filter(|p| p.per_pod.gpus > 0) {
        let g = ps.per_pod.gpus;
        let pods: u64 = model.buckets().range(g..).map(|(&b, nodes)| u64::from(b / g) * nodes.len() as u64).sum();
        if pods < u64::from(ps.pods()) {
            return Some(NoFit { pod_set: ps.name.clone(), job_index: 0 });
        }
    }
    None
}

/// What an empty cluster offers, for [`place_on_empty`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyBasis {
    /// Nothing held at all: trusted healthy GPUs, allocatable CPU, memory and pods. "Can this ever fit?"
    Everything,
    /// Gangs hold nothing, but pods that belong to no gang stay: what a head gang can count on once the gangs
    /// on its held nodes finish.
    KeepForeignPods,
}

/// Node orders of an empty cluster, built once (a sort of all nodes) and reused for many gangs while the set of
/// nodes does not change.
#[derive(Clone, Debug)]
pub struct EmptyOrder {
    basis: EmptyBasis,
    /// (capacity GPUs, id) by capacity GPUs, then most free now, then name.
    up: Vec<(u32, NodeId)>,
    /// By capacity GPUs descending, then most free now, then name.
    down: Vec<NodeId>,
}

impl EmptyOrder {
    pub fn new(model: &ClusterModel, basis: EmptyBasis) -> Self {
        let room = |id| empty_room(model, basis, id).gpus;
        let mut nodes: Vec<(u32, Reverse<u32>, &str, NodeId)> =
            model.nodes().iter().map(|id| (room(id), Reverse(model.free(id).gpus), model.name(id), id)).collect();
        nodes.sort_unstable();
        let up = nodes.iter().map(|&(cap, _, _, id)| (cap, id)).collect();
        nodes.sort_unstable_by(|a, b| (Reverse(a.0), a.1, a.2).cmp(&(Reverse(b.0), b.1, b.2)));
        let down = nodes.iter().map(|n| n.3).collect();
        EmptyOrder { basis, up, down }
    }
}

fn empty_room(model: &ClusterModel, basis: EmptyBasis, id: NodeId) -> Resources {
    match (basis, model.slot(id)) {
        (EmptyBasis::KeepForeignPods, Some(slot)) => slot.capacity.saturating_sub(slot.foreign),
        (_, slot) => slot.map_or(Resources::ZERO, |s| s.capacity),
    }
}

/// Places `gang` on an empty cluster (see [`EmptyBasis`]). Among equal fits it prefers nodes with more room free
/// now, so that a head gang holds the nodes it can have soonest.
pub fn place_on_empty(
    model: &ClusterModel,
    gang: &GangDemand,
    basis: EmptyBasis,
    restrict: Restrict<'_>,
) -> Result<Placement, NoFit> {
    place_on_empty_ordered(model, &EmptyOrder::new(model, basis), gang, restrict)
}

/// [`place_on_empty`] with a prebuilt order (valid while no node is added, removed or changes capacity).
pub fn place_on_empty_ordered(
    model: &ClusterModel,
    order: &EmptyOrder,
    gang: &GangDemand,
    restrict: Restrict<'_>,
) -> Result<Placement, NoFit> {
    place_with(&Empty { model, order }, gang, restrict)
}

/// Per-node totals of a recorded placement (e.g. `Gang.status.placement` after a restart), for
/// [`ClusterModel::reserve`]. Slots of pod sets the gang does not have are an error.
pub fn per_node_of(gang: &GangDemand, slots: &[SlotPlacement]) -> Result<BTreeMap<String, Resources>, String> {
    let mut per_node: BTreeMap<String, Resources> = BTreeMap::new();
    for slot in slots {
        let ps = gang.pod_sets.iter().find(|p| p.name == slot.pod_set).ok_or_else(|| slot.pod_set.clone())?;
        let total = per_node.entry(slot.node.clone()).or_default();
        *total = total.saturating_add(ps.per_pod);
    }
    Ok(per_node)
}

/// New nodes for the `moving` slots of an admitted gang, on the model's current room (the caller has released
/// what the gang held for them), never on `avoid`. The moving pods of one Job are placed as one Job, so they stay
/// together where they can. `kept` are the gang's slots that stay: a Job placed exclusively stays in the domain of
/// its kept pods (or, moving whole, gets a domain no kept Job uses), and no moving pod enters the domain of another
/// exclusive Job. The result keeps each slot's pod set, Job and pod index.
pub fn replace_slots(
    model: &ClusterModel,
    gang: &GangDemand,
    moving: &[SlotPlacement],
    kept: &[SlotPlacement],
    avoid: &NodeSet,
) -> Result<Vec<SlotPlacement>, NoFit> {
    // One single-Job pod set per (pod set, Job) that moves, remembering which pods it stands for.
    let mut jobs: BTreeMap<(&str, i32), Vec<i32>> = BTreeMap::new();
    for slot in moving {
        jobs.entry((slot.pod_set.as_str(), slot.job_index)).or_default().push(slot.pod_index);
    }
    let kept_domains = kept_domains(model, gang, kept);
    let mut pod_sets = Vec::with_capacity(jobs.len());
    let mut origin = Vec::with_capacity(jobs.len());
    for ((pod_set, job), pods) in &mut jobs {
        let Some(ps) = gang.pod_sets.iter().find(|p| p.name == *pod_set) else {
            return Err(NoFit { pod_set: (*pod_set).to_owned(), job_index: u32::try_from(*job).unwrap_or(0) });
        };
        pods.sort_unstable();
        let (constraints, exclusive) = moving_job_constraints(gang, ps, *job, &kept_domains);
        pod_sets.push(PodSetDemand {
            name: format!("{pod_set}/{job}"),
            jobs: 1,
            pods_per_job: u32::try_from(pods.len()).unwrap_or(u32::MAX),
            per_pod: ps.per_pod,
            constraints,
            exclusive,
        });
        origin.push((*pod_set, *job, pods.clone()));
    }
    let sub = GangDemand { key: gang.key.clone(), queue: gang.queue.clone(), priority: gang.priority, pod_sets };
    let placed = place(model, &sub, Restrict { excluded: Some(avoid), only: None }).map_err(|no| {
        let job = origin.iter().zip(&sub.pod_sets).find(|(_, ps)| ps.name == no.pod_set).map(|((p, j, _), _)| (*p, *j));
        NoFit {
            pod_set: job.map_or(no.pod_set.clone(), |(p, _)| p.to_owned()),
            job_index: job.map_or(0, |(_, j)| u32::try_from(j).unwrap_or(0)),
        }
    })?;
    let mut out = Vec::with_capacity(placed.slots.len());
    for slot in placed.slots {
        let Some(i) = sub.pod_sets.iter().position(|p| p.name == slot.pod_set) else { continue };
        let (pod_set, job, pods) = &origin[i];
        let Some(&pod_index) = usize::try_from(slot.pod_index).ok().and_then(|k| pods.get(k)) else { continue };
        out.push(SlotPlacement { pod_set: (*pod_set).to_owned(), job_index: *job, pod_index, node: slot.node });
    }
    Ok(out)
}

/// Per topology key of the gang's exclusive pod sets: the domain (label value) of each kept slot, with its Job and
/// whether that Job is exclusive on the key.
type KeptDomains<'a> = BTreeMap<&'a str, Vec<(String, (&'a str, i32), bool)>>;

fn kept_domains<'a>(model: &ClusterModel, gang: &'a GangDemand, kept: &'a [SlotPlacement]) -> KeptDomains<'a> {
    let mut out: KeptDomains<'a> = BTreeMap::new();
    let keys: std::collections::BTreeSet<&str> =
        gang.pod_sets.iter().filter_map(PodSetDemand::exclusive_domain_key).map(|k| &**k).collect();
    for key in keys {
        let entry = out.entry(key).or_default();
        for slot in kept {
            let labels = model.slot_by_name(&slot.node).and_then(|s| s.node.as_ref()).map(|n| &n.labels);
            let Some(value) = labels.and_then(|l| l.get(key)) else { continue };
            let exclusive = gang
                .pod_sets
                .iter()
                .any(|p| p.name == slot.pod_set && p.exclusive_domain_key().is_some_and(|k| **k == *key));
            entry.push((value.clone(), (slot.pod_set.as_str(), slot.job_index), exclusive));
        }
    }
    out
}

/// The constraints of a moving Job: its own, kept inside the domain of its kept pods when it is exclusive (or
/// placed exclusively again when it moves whole), and kept out of the domains its exclusivity, or another kept
/// Job's, forbids.
fn moving_job_constraints(
    gang: &GangDemand,
    ps: &PodSetDemand,
    job: i32,
    kept: &KeptDomains<'_>,
) -> (Arc<Constraints>, Option<Exclusive>) {
    let base = ps.job_constraints(&gang.key, u32::try_from(job).unwrap_or(0));
    let own_key = ps.exclusive_domain_key();
    let mut c = (*base).clone();
    let mut exclusive = None;
    for (key, slots) in kept {
        let is_own_key = own_key.is_some_and(|k| &**k == *key);
        let mine = |s: &(String, (&str, i32), bool)| s.1 == (ps.name.as_str(), job);
        if is_own_key {
            match slots.iter().find(|s| mine(s)) {
                Some((value, _, _)) => {
                    c.node_selector.insert((*key).to_owned(), value.clone());
                }
                None => exclusive = ps.exclusive.clone(),
            }
        }
        // Domains of other Jobs that this Job may not enter: those of exclusive Jobs, and for an exclusive Job
        // those of any other Job.
        let closed: std::collections::BTreeSet<&str> =
            slots.iter().filter(|s| !mine(s) && (s.2 || is_own_key)).map(|s| s.0.as_str()).collect();
        if !closed.is_empty() {
            let values: Vec<&str> = closed.into_iter().collect();
            and_requirement(&mut c, Requirement::new(key, Operator::NotIn, &values));
        }
    }
    // The node-selector strategy's per-Job selector is in `base` already: the stand-in pod set needs no strategy.
    let c = if c == *base { base } else { Arc::new(c) };
    (c, exclusive)
}

/// ANDs a requirement into the required node affinity (an OR of terms).
fn and_requirement(c: &mut Constraints, r: Requirement) {
    match &mut c.affinity {
        None => c.affinity = Some(vec![SelectorTerm { match_expressions: vec![r], match_fields: Vec::new() }]),
        Some(terms) => {
            // An empty term matches no node; it must stay empty.
            for t in terms.iter_mut().filter(|t| !t.match_expressions.is_empty() || !t.match_fields.is_empty()) {
                t.match_expressions.push(r.clone());
            }
        }
    }
}

/// The room placement sees, and node orders to search it in.
trait View {
    fn model(&self) -> &ClusterModel;
    fn room(&self, id: NodeId) -> Resources;
    /// Nodes with at least `min_gpus` GPUs of room, least room first, ties by name.
    fn ascending(&self, min_gpus: u32) -> impl Iterator<Item = NodeId> + '_;
    /// Nodes by most GPU room first, ties by name.
    fn descending(&self) -> impl Iterator<Item = NodeId> + '_;
    /// An upper bound of the GPU room of a domain, to skip domains cheaply.
    fn domain_gpu_bound(&self, domain: &Domain) -> u64;
    /// Whether another JobSet's pods or reservation on the node close its domain to an exclusive Job of `gang`.
    fn closed_to_exclusive(&self, id: NodeId, gang: &GangKey) -> bool;
}

struct Current<'m>(&'m ClusterModel);

impl View for Current<'_> {
    fn model(&self) -> &ClusterModel {
        self.0
    }
    fn room(&self, id: NodeId) -> Resources {
        self.0.free(id)
    }
    fn ascending(&self, min_gpus: u32) -> impl Iterator<Item = NodeId> + '_ {
        self.0.buckets().range(min_gpus..).flat_map(|(_, set)| set.iter().map(|r| r.id))
    }
    fn descending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.buckets().iter().rev().flat_map(|(_, set)| set.iter().map(|r| r.id))
    }
    fn domain_gpu_bound(&self, domain: &Domain) -> u64 {
        domain.free_gpus
    }
    fn closed_to_exclusive(&self, id: NodeId, gang: &GangKey) -> bool {
        self.0.used_by_other_jobsets(id, gang)
    }
}

struct Empty<'m> {
    model: &'m ClusterModel,
    order: &'m EmptyOrder,
}

impl View for Empty<'_> {
    fn model(&self) -> &ClusterModel {
        self.model
    }
    fn room(&self, id: NodeId) -> Resources {
        empty_room(self.model, self.order.basis, id)
    }
    fn ascending(&self, min_gpus: u32) -> impl Iterator<Item = NodeId> + '_ {
        let start = self.order.up.partition_point(|&(cap, _)| cap < min_gpus);
        self.order.up[start..].iter().map(|&(_, id)| id)
    }
    fn descending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.order.down.iter().copied()
    }
    fn domain_gpu_bound(&self, _domain: &Domain) -> u64 {
        u64::MAX
    }
    /// The empty cluster holds nobody else's pods.
    fn closed_to_exclusive(&self, _id: NodeId, _gang: &GangKey) -> bool {
        false
    }
}

/// What this gang has taken so far, per node.
struct Tentative<'v, V> {
    view: &'v V,
    used: HashMap<NodeId, Resources>,
    /// The keys of `used`, for the hot membership test of the node walks.
    touched: NodeSet,
}

impl<V: View> Tentative<'_, V> {
    fn room(&self, id: NodeId) -> Resources {
        let room = self.view.room(id);
        self.used.get(&id).map_or(room, |u| room.saturating_sub(*u))
    }

    fn take(&mut self, id: NodeId, r: Resources) {
        let u = self.used.entry(id).or_default();
        *u = u.saturating_add(r);
        self.touched.insert(id);
    }

    /// The node with the least GPU room that holds `n` pods (best fit); nodes this gang uses win ties.
    fn best_single(&self, allowed: &dyn Fn(NodeId) -> bool, per_pod: Resources, n: u32) -> Option<NodeId> {
        let need = per_pod.times(n);
        let model = self.view.model();
        let touched = self
            .used
            .keys()
            .copied()
            .filter(|&id| allowed(id))
            .filter_map(|id| {
                let room = self.room(id);
                need.fits_in(&room).then(|| (room.gpus - need.gpus, model.name(id), id))
            })
            .min();
        let fresh = self
            .view
            .ascending(need.gpus)
            .filter(|&id| allowed(id) && !self.touched.contains(id))
            .find(|&id| need.fits_in(&self.view.room(id)))
            .map(|id| (self.view.room(id).gpus - need.gpus, id));
        match (touched, fresh) {
            (Some((t_left, _, t)), Some((f_left, f))) => Some(if t_left <= f_left { t } else { f }),
            (Some((_, _, t)), None) => Some(t),
            (None, Some((_, f))) => Some(f),
            (None, None) => None,
        }
    }

    /// Takes `n` pods from `candidates` (id, pods that fit), most room first and best fit for the rest.
    fn fill(&mut self, mut candidates: Vec<(NodeId, u32)>, per_pod: Resources, n: u32) -> Option<Vec<(NodeId, u32)>> {
        let model = self.view.model();
        // Most pods first; then nodes this gang uses; then name.
        candidates.sort_by(|a, b| {
            (Reverse(a.1), !self.touched.contains(a.0), model.name(a.0)).cmp(&(
                Reverse(b.1),
                !self.touched.contains(b.0),
                model.name(b.0),
            ))
        });
        let mut picks = Vec::new();
        let mut remaining = n;
        let mut next = 0;
        while remaining > 0 {
            let rest = candidates.get(next..)?;
            if rest.is_empty() {
                return None;
            }
            // Those holding all the remaining pods form a prefix; the best fit is the smallest of them, i.e. the
            // first of the prefix's last run of equal counts.
            let holding = rest.partition_point(|c| c.1 >= remaining);
            let (id, count) = if holding > 0 {
                let k = rest[holding - 1].1;
                let first_of_run = rest[..holding].partition_point(|c| c.1 > k);
                (rest[first_of_run].0, remaining)
            } else {
                next += 1;
                (rest[0].0, rest[0].1)
            };
            self.take(id, per_pod.times(count));
            picks.push((id, count));
            remaining -= count;
        }
        Some(picks)
    }

    fn place_job(
        &mut self,
        allowed: &dyn Fn(NodeId) -> bool,
        per_pod: Resources,
        n: u32,
    ) -> Option<Vec<(NodeId, u32)>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if let Some(id) = self.best_single(allowed, per_pod, n) {
            self.take(id, per_pod.times(n));
            return Some(vec![(id, n)]);
        }
        let model = self.view.model();
        let need_gpus = u64::from(per_pod.gpus) * u64::from(n);
        for level in 0..model.config().topology_keys.len() {
            let Some(domains) = model.domains(level) else { continue };
            // Best fit among domains: the one with the fewest free GPUs that holds the Job. Checking domains in that
            // order stops at the first that holds it, instead of summing the room of every domain.
            let mut by_room: Vec<(u64, &Domain)> = domains
                .values()
                .map(|d| (self.view.domain_gpu_bound(d), d))
                .filter(|(bound, _)| *bound >= need_gpus)
                .collect();
            by_room.sort_by_key(|(bound, _)| *bound);
            let best = by_room.into_iter().map(|(_, d)| d).find(|domain| {
                let mut room = 0u64;
                domain.members.iter().filter(|m| allowed(m.id)).any(|m| {
                    room += u64::from(self.room(m.id).how_many(&per_pod).min(n));
                    room >= u64::from(n)
                })
            });
            if let Some(domain) = best {
                let candidates = domain
                    .members
                    .iter()
                    .filter(|m| allowed(m.id))
                    .map(|m| (m.id, self.room(m.id).how_many(&per_pod).min(n)))
                    .filter(|c| c.1 > 0)
                    .collect();
                return self.fill(candidates, per_pod, n);
            }
        }
        self.spread(allowed, per_pod, n)
    }

    /// An exclusive Job: the free domain with the least GPU room that holds all `n` pods (ties by label value,
    /// the order of `domains`), then the Job inside it. Returns the picks and the index of the domain.
    fn place_in_domain(
        &mut self,
        domains: &[ExclusiveDomain<'_>],
        allowed: &dyn Fn(NodeId) -> bool,
        per_pod: Resources,
        n: u32,
    ) -> Option<(Vec<(NodeId, u32)>, usize)> {
        let mut best: Option<(u64, usize)> = None;
        for (i, d) in domains.iter().enumerate() {
            // Another Job of this gang there (its domain, or any pod of a Job placed before) closes it.
            if d.members.iter().any(|id| self.touched.contains(id)) {
                continue;
            }
            let (mut pods, mut gpus) = (0u64, 0u64);
            for id in d.members.iter().filter(|&id| allowed(id)) {
                let room = self.room(id);
                pods += u64::from(room.how_many(&per_pod).min(n));
                gpus += u64::from(room.gpus);
            }
            if pods >= u64::from(n) && best.is_none_or(|(least, _)| gpus < least) {
                best = Some((gpus, i));
            }
        }
        let (_, i) = best?;
        let members = domains[i].members;
        let inside = |id: NodeId| members.contains(id) && allowed(id);
        self.place_job(&inside, per_pod, n).map(|picks| (picks, i))
    }

    /// Anywhere: most GPU room first (least for CPU-only pods, which should not take GPU nodes' CPU), best fit for
    /// the remainder.
    fn spread(&mut self, allowed: &dyn Fn(NodeId) -> bool, per_pod: Resources, n: u32) -> Option<Vec<(NodeId, u32)>> {
        let view = self.view;
        let mut order: Box<dyn Iterator<Item = NodeId> + '_> =
            if per_pod.gpus > 0 { Box::new(view.descending()) } else { Box::new(view.ascending(0)) };
        let mut picks = Vec::new();
        let mut remaining = n;
        while remaining > 0 {
            if let Some(id) = self.best_single(allowed, per_pod, remaining) {
                self.take(id, per_pod.times(remaining));
                picks.push((id, remaining));
                break;
            }
            // best_single found no node for all `remaining`, so every node takes fewer: take all it holds.
            let (id, k) = order
                .by_ref()
                .filter(|&id| allowed(id))
                .map(|id| (id, self.room(id).how_many(&per_pod)))
                .find(|c| c.1 > 0)?;
            let k = k.min(remaining);
            self.take(id, per_pod.times(k));
            picks.push((id, k));
            remaining -= k;
        }
        Some(picks)
    }
}

/// One domain of an exclusive pod set's topology key.
struct ExclusiveDomain<'m> {
    members: &'m NodeSet,
}

/// The domains of `key` an exclusive Job of `gang` may take on this view, by label value: the others are used by
/// other JobSets.
fn exclusive_domains<'m, V: View>(view: &'m V, key: &str, gang: &GangKey) -> Vec<ExclusiveDomain<'m>> {
    let Some(values) = view.model().label_values(key) else { return Vec::new() };
    let mut domains: Vec<(&str, &NodeSet)> = values
        .iter()
        .filter(|(_, members)| !members.is_empty() && !members.iter().any(|id| view.closed_to_exclusive(id, gang)))
        .map(|(value, members)| (value.as_str(), members))
        .collect();
    domains.sort_unstable_by_key(|d| d.0);
    domains.into_iter().map(|(_, members)| ExclusiveDomain { members }).collect()
}

fn place_with<V: View>(view: &V, gang: &GangDemand, restrict: Restrict<'_>) -> Result<Placement, NoFit> {
    let model = view.model();
    // Hardest first: the biggest GPU Jobs, then the pod sets fewest nodes admit, then the biggest CPU Jobs. A
    // greedy pass that placed an easy pod set first could take the only room a pickier one had (a small pod set
    // that tolerates a taint filling the untainted nodes a big one needs), and call a gang that fits unplaceable.
    let mut order: Vec<usize> = (0..gang.pod_sets.len()).collect();
    order.sort_by_cached_key(|&i| {
        let ps = &gang.pod_sets[i];
        (
            Reverse(u64::from(ps.per_pod.gpus) * u64::from(ps.pods_per_job)),
            Reverse(ps.per_pod.gpus),
            model.eligible(&ps.constraints).len(),
            Reverse(ps.per_pod.cpu_milli.saturating_mul(u64::from(ps.pods_per_job))),
            Reverse(ps.pods()),
            i,
        )
    });
    // "Hardest" is a guess: a big GPU Job packed onto one node can still take the CPU that two CPU-heavy Jobs of
    // another pod set each needed a different node for. So when a pod set fails, it goes first and the search runs
    // again (at most once per pod set; the first failure is the one reported). Single-pod-set gangs never retry.
    let mut first_failure = None;
    for _ in 0..gang.pod_sets.len() {
        match place_in_order(view, gang, restrict, &order) {
            Ok(chosen) => return Ok(placement_of(model, gang, chosen)),
            Err((i, no)) => {
                let failure = first_failure.get_or_insert(no);
                if order.first() == Some(&i) {
                    return Err(failure.clone());
                }
                order.retain(|&j| j != i);
                order.insert(0, i);
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| NoFit { pod_set: String::new(), job_index: 0 }))
}

/// Per pod set, per Job: the nodes of its pods in pod-index order.
type Chosen = Vec<Vec<Vec<NodeId>>>;

/// One greedy pass over the pod sets in `order`; on failure, the index of the pod set that failed.
fn place_in_order<V: View>(
    view: &V,
    gang: &GangDemand,
    restrict: Restrict<'_>,
    order: &[usize],
) -> Result<Chosen, (usize, NoFit)> {
    let model = view.model();
    let mut t = Tentative { view, used: HashMap::new(), touched: NodeSet::new() };
    // Nodes in the domains this gang's exclusive Jobs took: closed to its other Jobs.
    let mut claimed = NodeSet::new();
    let mut chosen: Chosen = vec![Vec::new(); gang.pod_sets.len()];
    for &i in order {
        let ps = &gang.pod_sets[i];
        let per_job = ps.exclusive == Some(Exclusive::NodeSelector);
        let shared = (!per_job).then(|| model.eligible(&ps.constraints));
        let domains = ps.exclusive_domain_key().map(|key| exclusive_domains(view, key, &gang.key));
        for job in 0..ps.jobs {
            let eligible = match &shared {
                Some(set) => Arc::clone(set),
                None => model.eligible(&ps.job_constraints(&gang.key, job)),
            };
            let allowed = |id: NodeId| eligible.contains(id) && restrict.allows(id) && !claimed.contains(id);
            let picks = match &domains {
                None => t.place_job(&allowed, ps.per_pod, ps.pods_per_job),
                Some(domains) => t.place_in_domain(domains, &allowed, ps.per_pod, ps.pods_per_job).map(|(picks, d)| {
                    claimed.union_with(domains[d].members);
                    picks
                }),
            };
            let picks = picks.ok_or_else(|| (i, NoFit { pod_set: ps.name.clone(), job_index: job }))?;
            chosen[i].push(picks.into_iter().flat_map(|(id, k)| std::iter::repeat_n(id, k as usize)).collect());
        }
    }
    Ok(chosen)
}

fn placement_of(model: &ClusterModel, gang: &GangDemand, chosen: Chosen) -> Placement {
    let mut placement = Placement::default();
    for (ps, jobs) in gang.pod_sets.iter().zip(chosen) {
        for (job_index, pods) in jobs.into_iter().enumerate() {
            for (pod_index, id) in pods.into_iter().enumerate() {
                let node = model.name(id).to_owned();
                let total = placement.per_node.entry(node.clone()).or_default();
                *total = total.saturating_add(ps.per_pod);
                placement.slots.push(SlotPlacement {
                    pod_set: ps.name.clone(),
                    job_index: i32::try_from(job_index).unwrap_or(i32::MAX),
                    pod_index: i32::try_from(pod_index).unwrap_or(i32::MAX),
                    node,
                });
            }
        }
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::testutil::*;

    fn nodes_of(p: &Placement, pod_set: &str, job: i32) -> Vec<String> {
        p.slots.iter().filter(|s| s.pod_set == pod_set && s.job_index == job).map(|s| s.node.clone()).collect()
    }

    #[test]
    fn best_fit_prefers_partly_used_nodes() {
        let mut m = model(&[]);
        for n in ["a", "b", "c"] {
            add_gpu_node(&mut m, n, 8, &[]);
        }
        m.apply_pod(pod("p", "b", 6, None));
        // 2 GPUs fit on b (2 free) — leaves a and c whole.
        let p = place(&m, &gang("ml/x", &[("w", 1, 1, 2)]), Restrict::default()).expect("fits");
        assert_eq!(nodes_of(&p, "w", 0), vec!["b"]);
        // 4 GPUs: b is too small, a is the first whole node by name.
        let p = place(&m, &gang("ml/x", &[("w", 1, 1, 4)]), Restrict::default()).expect("fits");
        assert_eq!(nodes_of(&p, "w", 0), vec!["a"]);
    }

    #[test]
    fn job_pods_stay_on_one_node_then_one_domain() {
        let mut m = model(&["rack"]);
        for (n, rack) in [("a1", "r1"), ("a2", "r1"), ("b1", "r2"), ("b2", "r2"), ("b3", "r2")] {
            add_gpu_node(&mut m, n, 8, &[("rack", rack)]);
        }
        m.apply_pod(pod("p", "a1", 4, None));
        // 4 pods × 2 GPUs fit one node: a1 (4 free) is too small, a2 is the first whole node by name.
        let p = place(&m, &gang("ml/x", &[("w", 1, 4, 2)]), Restrict::default()).expect("fits");
        assert_eq!(nodes_of(&p, "w", 0), vec!["a2"; 4]);
        // 3 pods × 4 GPUs = 12: r1 has 4 + 8 = 12 free, the smallest rack that holds it.
        let p = place(&m, &gang("ml/x", &[("w", 1, 3, 4)]), Restrict::default()).expect("fits");
        let mut nodes = nodes_of(&p, "w", 0);
        nodes.sort();
        assert_eq!(nodes, vec!["a1", "a2", "a2"]);
        // 4 pods × 8 GPUs: no rack has 4 whole nodes; spreads, biggest room first.
        let p = place(&m, &gang("ml/x", &[("w", 1, 4, 8)]), Restrict::default()).expect("fits");
        let mut nodes = nodes_of(&p, "w", 0);
        nodes.sort();
        assert_eq!(nodes, vec!["a2", "b1", "b2", "b3"]);
    }

    #[test]
    fn all_or_nothing_and_model_unchanged() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        add_gpu_node(&mut m, "b", 8, &[]);
        let before = m.generation();
        let g = gang("ml/x", &[("leader", 1, 1, 4), ("w", 2, 1, 8)]);
        assert_eq!(place(&m, &g, Restrict::default()), Err(NoFit { pod_set: "leader".into(), job_index: 0 }));
        assert_eq!(m.generation(), before);
        // On an empty 3-node cluster it fits.
        add_gpu_node(&mut m, "c", 8, &[]);
        let p = place(&m, &g, Restrict::default()).expect("fits");
        assert_eq!(p.slots.len(), 3);
        assert_eq!(p.slots[0].pod_set, "leader");
        assert_eq!(p.per_node.values().map(|r| r.gpus).sum::<u32>(), 20);
    }

    #[test]
    fn a_pod_set_that_fails_goes_first_on_the_next_try() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        add_gpu_node(&mut m, "b", 8, &[]);
        // The 2 × 4-GPU Job goes first (most GPUs) and fills node a; then the two 40-core Jobs need a node each
        // (64 cores per node), and a has no GPU left. The retry places them first, and the big Job across both.
        let mut g = gang("ml/x", &[("cpu", 2, 1, 1), ("big", 1, 2, 4)]);
        g.pod_sets[0].per_pod.cpu_milli = 40_000;
        let p = place(&m, &g, Restrict::default()).expect("fits after the retry");
        assert_eq!((nodes_of(&p, "cpu", 0), nodes_of(&p, "cpu", 1)), (vec!["a".to_owned()], vec!["b".to_owned()]));
        assert_eq!(nodes_of(&p, "big", 0), vec!["a", "b"]);
        // What failed first is what is reported when no order works.
        add_gpu_node(&mut m, "c", 0, &[]);
        g.pod_sets[0].jobs = 3;
        assert_eq!(place(&m, &g, Restrict::default()), Err(NoFit { pod_set: "cpu".into(), job_index: 1 }));
    }

    #[test]
    fn respects_constraints_cpu_memory_and_restrictions() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[("pool", "h100")]);
        add_gpu_node(&mut m, "b", 8, &[("pool", "a100")]);
        let mut g = gang("ml/x", &[("w", 1, 1, 8)]);
        g.pod_sets[0].constraints = selector(&[("pool", "a100")]);
        let p = place(&m, &g, Restrict::default()).expect("fits");
        assert_eq!(nodes_of(&p, "w", 0), vec!["b"]);
        let held: NodeSet = [id(&m, "b")].into_iter().collect();
        assert!(place(&m, &g, Restrict { excluded: Some(&held), only: None }).is_err());
        let only: NodeSet = [id(&m, "a")].into_iter().collect();
        assert!(place(&m, &g, Restrict { excluded: None, only: Some(&only) }).is_err());
        // CPU bound: nodes have 64 cores; 3 pods of 30 cores need two nodes.
        let mut cpu = gang("ml/y", &[("w", 1, 3, 1)]);
        cpu.pod_sets[0].per_pod.cpu_milli = 30_000;
        let p = place(&m, &cpu, Restrict::default()).expect("fits");
        let mut nodes = nodes_of(&p, "w", 0);
        nodes.sort();
        assert_eq!(nodes, vec!["a", "a", "b"]);
        cpu.pod_sets[0].per_pod.cpu_milli = 40_000;
        assert!(place(&m, &cpu, Restrict::default()).is_err());
    }

    #[test]
    fn cpu_only_pods_prefer_nodes_without_free_gpus() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "gpu", 8, &[]);
        m.apply_node(crate::gang::model::NodeInfo::new("cpu", 16_000, 64 << 30));
        let mut g = gang("ml/x", &[("coord", 1, 1, 0)]);
        g.pod_sets[0].per_pod.cpu_milli = 1000;
        let p = place(&m, &g, Restrict::default()).expect("fits");
        assert_eq!(nodes_of(&p, "coord", 0), vec!["cpu"]);
    }

    #[test]
    fn deterministic_regardless_of_event_order() {
        let build = |names: &[&str]| {
            let mut m = model(&["rack"]);
            for (i, n) in names.iter().enumerate() {
                add_gpu_node(&mut m, n, 8, &[("rack", if n.starts_with('a') { "r1" } else { "r2" })]);
                if i % 2 == 0 {
                    m.apply_pod(pod(&format!("p{n}"), n, 3, None));
                }
            }
            m
        };
        let g = gang("ml/x", &[("l", 1, 1, 2), ("w", 3, 2, 4)]);
        let m1 = build(&["a1", "a2", "b1", "b2", "b3"]);
        let p1 = place(&m1, &g, Restrict::default()).expect("fits");
        let p2 = place(&m1, &g, Restrict::default()).expect("fits");
        assert_eq!(p1, p2);
        // Same state, different insertion order (pods on the same nodes).
        let mut m3 = model(&["rack"]);
        for n in ["b3", "b2", "b1", "a2", "a1"] {
            add_gpu_node(&mut m3, n, 8, &[("rack", if n.starts_with('a') { "r1" } else { "r2" })]);
        }
        for n in ["a1", "b1", "b3"] {
            m3.apply_pod(pod(&format!("p{n}"), n, 3, None));
        }
        assert_eq!(place(&m3, &g, Restrict::default()).expect("fits"), p1);
    }

    #[test]
    fn empty_view_ignores_usage() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        add_gpu_node(&mut m, "b", 8, &[]);
        m.apply_pod(pod("p", "a", 8, None));
        m.apply_pod(pod("q", "b", 2, None));
        let g = gang("ml/x", &[("w", 2, 1, 8)]);
        assert!(place(&m, &g, Restrict::default()).is_err());
        let all = EmptyBasis::Everything;
        let p = place_on_empty(&m, &g, all, Restrict::default()).expect("fits empty");
        assert_eq!(p.per_node.len(), 2);
        // Foreign pods stay: then it does not fit.
        assert!(place_on_empty(&m, &g, EmptyBasis::KeepForeignPods, Restrict::default()).is_err());
        // One 8-GPU pod: b is preferred, it has more free now.
        let p = place_on_empty(&m, &gang("ml/y", &[("w", 1, 1, 8)]), all, Restrict::default()).expect("fits");
        assert_eq!(nodes_of(&p, "w", 0), vec!["b"]);
        assert!(place_on_empty(&m, &gang("ml/z", &[("w", 1, 1, 9)]), all, Restrict::default()).is_err());
        // Gangs' reservations are ignored too.
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        m.reserve(&crate::gang::GangKey::new("ml", "r"), &per_node(&[("a", 8)])).expect("reserve");
        assert!(place(&m, &gang("ml/y", &[("w", 1, 1, 8)]), Restrict::default()).is_err());
        let keep = EmptyBasis::KeepForeignPods;
        assert!(place_on_empty(&m, &gang("ml/y", &[("w", 1, 1, 8)]), keep, Restrict::default()).is_ok());
    }

    fn exclusive(mut g: GangDemand, pod_set: usize, key: &str) -> GangDemand {
        g.pod_sets[pod_set].exclusive = Some(Exclusive::Domain(key.into()));
        g
    }

    fn racks(m: &mut ClusterModel, racks: &[(&str, &[&str])]) {
        for (rack, nodes) in racks {
            for n in *nodes {
                add_gpu_node(m, n, 8, &[("rack", rack)]);
            }
        }
    }

    fn rack_of(n: &str) -> String {
        n.chars().take(2).collect()
    }

    #[test]
    fn exclusive_jobs_each_take_a_whole_domain_of_their_own() {
        let mut m = model(&[]);
        racks(&mut m, &[("r1", &["r1a", "r1b"]), ("r2", &["r2a", "r2b", "r2c"]), ("r3", &["r3a", "r3b"])]);
        // Unlabelled nodes never take exclusive Jobs, however much room they have.
        add_gpu_node(&mut m, "loose", 8, &[]);
        let g = exclusive(gang("ml/x", &[("w", 3, 2, 4)]), 0, "rack");
        let p = place(&m, &g, Restrict::default()).expect("three racks for three Jobs");
        let mut seen = Vec::new();
        for job in 0..3 {
            let nodes = nodes_of(&p, "w", job);
            assert!(!nodes.contains(&"loose".to_owned()), "{nodes:?}");
            let rack = rack_of(&nodes[0]);
            assert!(nodes.iter().all(|n| rack_of(n) == rack), "Job {job} spans racks: {nodes:?}");
            seen.push(rack);
        }
        seen.sort();
        assert_eq!(seen, vec!["r1", "r2", "r3"]);
        // Without exclusivity the same gang packs onto fewer racks.
        let p = place(&m, &gang("ml/x", &[("w", 3, 2, 4)]), Restrict::default()).expect("fits");
        assert_eq!(p.per_node.len(), 3, "one node per Job");
        // A Job bigger than every rack does not fit, although the cluster has room for it spread out.
        let big = exclusive(gang("ml/y", &[("w", 1, 4, 8)]), 0, "rack");
        assert!(place(&m, &big, Restrict::default()).is_err());
        assert!(place(&m, &gang("ml/y", &[("w", 1, 4, 8)]), Restrict::default()).is_ok());
    }

    #[test]
    fn exclusive_jobs_avoid_domains_other_jobsets_use_and_close_theirs_to_the_gang() {
        let mut m = model(&[]);
        racks(&mut m, &[("r1", &["r1a"]), ("r2", &["r2a"]), ("r3", &["r3a"])]);
        add_gpu_node(&mut m, "spare", 8, &[]);
        // Another gang's reservation of 1 GPU in r1 closes r1, although 7 GPUs are free there.
        m.reserve(&crate::gang::GangKey::new("ml", "other"), &per_node(&[("r1a", 1)])).expect("reserve");
        let two = exclusive(gang("ml/x", &[("w", 2, 1, 4)]), 0, "rack");
        let p = place(&m, &two, Restrict::default()).expect("r2 and r3 are free");
        assert_eq!(nodes_of(&p, "w", 0), vec!["r2a"]);
        assert_eq!(nodes_of(&p, "w", 1), vec!["r3a"]);
        let three = exclusive(gang("ml/x", &[("w", 3, 1, 4)]), 0, "rack");
        assert!(place(&m, &three, Restrict::default()).is_err(), "only two free racks");
        assert!(place_on_empty(&m, &three, EmptyBasis::Everything, Restrict::default()).is_ok(), "fits once r1 frees");
        // The gang's own bound pods (from before a requeue) do not close a domain.
        m.apply_pod(pod("mine", "r2a", 1, Some(&crate::gang::GangKey::new("ml", "x"))));
        assert!(place(&m, &two, Restrict::default()).is_ok());
        // A pod set without exclusivity stays out of the exclusive Jobs' racks, even where it would fit best.
        let mut mixed = exclusive(gang("ml/z", &[("driver", 1, 1, 1), ("w", 2, 1, 4)]), 1, "rack");
        mixed.pod_sets[0].name = "driver".into();
        m.release(&crate::gang::GangKey::new("ml", "other"));
        m.delete_pod("ns", "mine");
        let p = place(&m, &mixed, Restrict::default()).expect("fits");
        let worker_racks: Vec<String> = (0..2).map(|j| rack_of(&nodes_of(&p, "w", j)[0])).collect();
        let driver = nodes_of(&p, "driver", 0);
        assert!(!worker_racks.contains(&rack_of(&driver[0])), "driver {driver:?} in a worker rack {worker_racks:?}");
    }

    #[test]
    fn domains_taken_exclusively_are_closed_to_every_other_gang() {
        use crate::gang::explain::{Basis, explain};
        let mut m = model(&[]);
        racks(&mut m, &[("r1", &["r1a"]), ("r2", &["r2a", "r2b"])]);
        // ml/ex's one exclusive Job takes r1 with 4 GPUs on r1a; 4 GPUs stay free there.
        let ex = exclusive(gang("ml/ex", &[("w", 1, 1, 4)]), 0, "rack");
        let p = place(&m, &ex, Restrict::default()).expect("fits");
        reserve_slots(&mut m, &ex, &p.slots).expect("reserve");
        let rack = nodes_of(&p, "w", 0)[0].clone();
        assert_eq!(rack_of(&rack), "r1", "the smallest rack that holds it");
        // A plain gang fits r1a best, but the scheduler would refuse its pods there: r2 it is.
        let plain = gang("ml/plain", &[("w", 1, 1, 4)]);
        let p = place(&m, &plain, Restrict::default()).expect("fits r2");
        assert_eq!(nodes_of(&p, "w", 0), vec!["r2a"]);
        // 20 GPUs: r2's 16 and r1a's 4. No fit, and the explanation names who took r1.
        let big = gang("ml/big", &[("w", 1, 5, 4)]);
        assert!(place(&m, &big, Restrict::default()).is_err());
        let why = explain(&m, &big, Basis::Now, &[]);
        assert!(why.message.contains("; 1 node in rack=r1, taken exclusively by ml/ex"), "{}", why.message);
        // The claim goes with the reservation; a recorded placement claims the same on reserving.
        assert!(m.release(&ex.key));
        assert!(place(&m, &big, Restrict::default()).is_ok());
        reserve_slots(&mut m, &ex, &[SlotPlacement { pod_set: "w".into(), job_index: 0, pod_index: 0, node: rack }])
            .expect("reserve");
        assert!(place(&m, &big, Restrict::default()).is_err());
        assert_eq!(
            reserve_slots(
                &mut m,
                &plain,
                &[SlotPlacement { pod_set: "x".into(), job_index: 0, pod_index: 0, node: "r2a".into() }]
            ),
            Err(ReserveError::UnknownPodSet("x".into()))
        );
        assert!(m.reservation(&plain.key).is_none(), "nothing reserved on error");
    }

    #[test]
    fn the_domain_of_a_bound_exclusive_leader_is_closed_to_other_jobsets() {
        let mut m = model(&[]);
        racks(&mut m, &[("r1", &["r1a"]), ("r2", &["r2a", "r2b"])]);
        // The leader of an exclusive Job of a JobSet outside gang admission runs on r1a, with no GPUs.
        let outsider = crate::gang::GangKey::new("ml", "outsider");
        let mut leader = pod("outsider-w-0-0", "r1a", 0, Some(&outsider));
        leader.exclusive_leader = Some("rack".into());
        m.apply_pod(leader);
        let one = gang("ml/one", &[("w", 1, 1, 8)]);
        let p = place(&m, &one, Restrict::default()).expect("fits r2");
        assert_eq!(rack_of(&nodes_of(&p, "w", 0)[0]), "r2");
        let three = gang("ml/three", &[("w", 3, 1, 8)]);
        assert!(place(&m, &three, Restrict::default()).is_err(), "r1a is free but closed");
        // Its own JobSet may still use the domain; once the leader is gone, anyone may.
        let mut own = gang("ml/outsider", &[("w", 3, 1, 8)]);
        own.key = outsider;
        assert!(place(&m, &own, Restrict::default()).is_ok());
        m.delete_pod("ns", "outsider-w-0-0");
        assert!(place(&m, &three, Restrict::default()).is_ok());
    }

    #[test]
    fn node_selector_strategy_pins_each_job_to_its_labelled_nodes() {
        use crate::gang::demand::{Taint, TaintEffect};
        let mut m = model(&[]);
        let pinned = |m: &mut ClusterModel, n: &str, job: &str| {
            let node = crate::gang::model::NodeInfo::new(n, 64_000, 512 << 30)
                .label(muster_api::keys::NAMESPACED_JOB, job)
                .taint(Taint::new(muster_api::keys::NO_SCHEDULE_TAINT, "", TaintEffect::NoSchedule));
            m.apply_node(node);
            m.apply_gpunode(crate::gang::model::GpuReport::healthy(n, 8, T0));
        };
        add_gpu_node(&mut m, "a-free", 8, &[]);
        pinned(&mut m, "b-job1", "ml_train-w-1");
        pinned(&mut m, "c-job0", "ml_train-w-0");
        let mut g = gang("ml/train", &[("w", 2, 1, 8)]);
        g.pod_sets[0].exclusive = Some(Exclusive::NodeSelector);
        let p = place(&m, &g, Restrict::default()).expect("each Job has its node");
        assert_eq!(nodes_of(&p, "w", 0), vec!["c-job0"]);
        assert_eq!(nodes_of(&p, "w", 1), vec!["b-job1"]);
        // Job 2 has no labelled node: the gang can never fit, and the explanation names the selector.
        g.pod_sets[0].jobs = 3;
        assert!(place_on_empty(&m, &g, EmptyBasis::Everything, Restrict::default()).is_err());
        let why = crate::gang::explain::explain(&m, &g, crate::gang::explain::Basis::Empty, &[]);
        assert!(
            why.message.contains("nodeSelector alpha.jobset.sigs.k8s.io/namespaced-job=ml_train-w-2"),
            "{}",
            why.message
        );
    }

    #[test]
    fn replaced_slots_of_exclusive_jobs_stay_in_their_domain() {
        let mut m = model(&[]);
        racks(&mut m, &[("r1", &["r1a", "r1b", "r1c"]), ("r2", &["r2a", "r2b"]), ("r3", &["r3a"])]);
        let g = exclusive(gang("ml/x", &[("w", 2, 2, 8)]), 0, "rack");
        let slot = |job, pod, node: &str| SlotPlacement {
            pod_set: "w".into(),
            job_index: job,
            pod_index: pod,
            node: node.into(),
        };
        let kept = vec![slot(0, 0, "r1a"), slot(1, 0, "r2a"), slot(1, 1, "r2b")];
        m.reserve(&g.key, &per_node_of(&g, &kept).expect("known")).expect("reserve");
        let avoid: NodeSet = [id(&m, "r1b")].into_iter().collect();
        // Job 0's pod 1 leaves r1b: it must stay in r1 (r1c), not go to the emptier r3.
        let new = replace_slots(&m, &g, &[slot(0, 1, "r1b")], &kept, &avoid).expect("r1c is free");
        assert_eq!(new, vec![slot(0, 1, "r1c")]);
        // Job 1 moves whole: a rack no other Job of the gang uses.
        let kept0 = vec![slot(0, 0, "r1a"), slot(0, 1, "r1b")];
        let mut m = model(&[]);
        racks(&mut m, &[("r1", &["r1a", "r1b", "r1c", "r1d"]), ("r2", &["r2a", "r2b"]), ("r3", &["r3a", "r3b"])]);
        m.reserve(&g.key, &per_node_of(&g, &kept0).expect("known")).expect("reserve");
        let avoid: NodeSet = [id(&m, "r2a")].into_iter().collect();
        let new = replace_slots(&m, &g, &[slot(1, 0, "r2a"), slot(1, 1, "r2b")], &kept0, &avoid).expect("r3 is free");
        let mut nodes: Vec<&str> = new.iter().map(|s| s.node.as_str()).collect();
        nodes.sort();
        assert_eq!(nodes, vec!["r3a", "r3b"], "not r1c and r1d, in Job 0's rack");
    }

    #[test]
    fn per_node_of_recorded_slots() {
        let g = gang("ml/x", &[("w", 1, 2, 4)]);
        let slots = vec![
            SlotPlacement { pod_set: "w".into(), job_index: 0, pod_index: 0, node: "a".into() },
            SlotPlacement { pod_set: "w".into(), job_index: 0, pod_index: 1, node: "a".into() },
        ];
        let per_node = per_node_of(&g, &slots).expect("known pod set");
        assert_eq!(per_node.get("a").map(|r| r.gpus), Some(8));
        let bad = vec![SlotPlacement { pod_set: "x".into(), ..slots[0].clone() }];
        assert_eq!(per_node_of(&g, &bad), Err("x".to_owned()));
    }
}
