//! The cluster as admission sees it, fed incrementally and indexed for fast decisions.
//!
//! Per node: its Node (labels, taints, allocatable CPU/memory/pods, readiness), its GPUNode (healthy GPUs, the
//! unhealthy ones with their XID, the heartbeat), what bound pods that belong to no gang hold, and per gang what
//! admission reserved and what the gang's bound pods hold. A gang is charged `max(reserved, bound)` per node, so
//! its pods landing on their reserved node are not counted twice, and pods that outlive a released reservation
//! still count.
//!
//! Every input is keyed by node name and may arrive in any order (a pod before its Node, a reservation recovered
//! from `Gang.status` before the GPUNode); a node can be placed on only once its Node is known.
//!
//! Indexes kept up to date on every change, so that one decision does not scan the cluster:
//! - nodes bucketed by free GPU count, name-ordered within a bucket (best fit is "first fitting node in the lowest
//!   bucket that is large enough", and the order does not depend on event history, so placement is reproducible);
//! - label → value → node set, for nodeSelectors;
//! - topology domains (per configured label key) with their members and free GPU sums;
//! - eligibility (selector, affinity, taints, readiness) per distinct constraint set, cached until a node's labels,
//!   taints or readiness change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use muster_api::gpunode::GPUNodeStatus;

use super::demand::{Constraints, Taint, TaintEffect};
use super::nodeset::{NodeId, NodeSet};
use super::{GangKey, Resources};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// A GPUNode whose heartbeat is older than this is not trusted: its node offers no GPUs.
    pub heartbeat_timeout: Duration,
    /// Label keys of topology domains, narrowest first (e.g. an NVLink clique label, then a rack label).
    /// Placement keeps a Job's pods on one node, else within one domain of the first key that can hold it.
    pub topology_keys: Vec<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        // The agent publishes at least every 30 s; three missed heartbeats make it stale.
        ModelConfig { heartbeat_timeout: Duration::from_secs(90), topology_keys: Vec::new() }
    }
}

/// What admission needs of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    /// Allocatable pods.
    pub max_pods: u32,
    /// `nvidia.com/gpu` in allocatable, when the device plugin advertises it: usable GPUs never exceed it, because
    /// the kubelet would refuse a pod beyond it.
    pub device_plugin_gpus: Option<u32>,
    /// The Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

impl NodeInfo {
    pub fn new(name: &str, cpu_milli: u64, memory_bytes: u64) -> Self {
        NodeInfo {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu_milli,
            memory_bytes,
            max_pods: 110,
            device_plugin_gpus: None,
            ready: true,
            unschedulable: false,
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn taint(mut self, taint: Taint) -> Self {
        self.taints.push(taint);
        self
    }
}

/// What admission needs of a GPUNode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuReport {
    pub node_name: String,
    pub nvml_available: bool,
    pub nvml_error: Option<String>,
    pub total: u32,
    pub unhealthy: Vec<UnhealthyGpu>,
    /// Healthy GPUs running a process that belongs to no pod: somebody outside Kubernetes uses them.
    pub busy: u32,
    pub heartbeat: Option<SystemTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnhealthyGpu {
    pub index: u32,
    pub xid: Option<u64>,
    pub reason: Option<String>,
}

impl GpuReport {
    /// `total` healthy, idle GPUs with the given heartbeat.
    pub fn healthy(node_name: &str, total: u32, heartbeat: SystemTime) -> Self {
        GpuReport {
            node_name: node_name.to_owned(),
            nvml_available: true,
            nvml_error: None,
            total,
            unhealthy: Vec::new(),
            busy: 0,
            heartbeat: Some(heartbeat),
        }
    }

    pub fn from_status(node_name: &str, status: &GPUNodeStatus) -> Self {
        let total = u32::try_from(status.devices.len()).unwrap_or(u32::MAX);
        let unhealthy = status
            .devices
            .iter()
            .filter(|d| !d.health.healthy)
            .map(|d| UnhealthyGpu { index: d.index, xid: d.health.xid, reason: d.health.reason.clone() })
            .collect();
        let busy = status
            .devices
            .iter()
            .filter(|d| d.health.healthy && d.allocated_to.is_none() && !d.foreign_processes.is_empty())
            .count();
        GpuReport {
            node_name: node_name.to_owned(),
            nvml_available: status.nvml_available,
            nvml_error: status.nvml_error.clone(),
            total,
            unhealthy,
            busy: u32::try_from(busy).unwrap_or(u32::MAX),
            heartbeat: status.heartbeat_time.as_ref().map(|t| SystemTime::from(t.0)),
        }
    }

    pub fn healthy_count(&self) -> u32 {
        self.total.saturating_sub(u32::try_from(self.unhealthy.len()).unwrap_or(u32::MAX))
    }
}

/// A bound, non-terminated pod. Pods of a gang name its JobSet in their `jobset-name` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// `pods` is 1.
    pub requests: Resources,
    pub gang: Option<GangKey>,
    /// For the leader of a Job placed exclusively (affinity strategy): the topology key. Its required
    /// anti-affinity keeps other Jobs' pods out of its node's domain, whether admission placed its JobSet or not.
    pub exclusive_leader: Option<String>,
}

/// Why the GPUs of a node are not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Distrust {
    /// No GPUNode for the node.
    NoReport,
    /// The agent could not initialise NVML.
    NvmlUnavailable(Option<String>),
    /// The heartbeat is older than the timeout (or absent); `age` is `None` without a heartbeat.
    Stale { age: Option<Duration> },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GangUse {
    pub reserved: Resources,
    pub bound: Resources,
}

impl GangUse {
    fn charged(&self) -> Resources {
        self.reserved.max(self.bound)
    }
}

/// A node in a bucket or domain: ordered by name, so iteration order is independent of event history.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRef {
    pub name: Arc<str>,
    pub id: NodeId,
}

#[derive(Clone, Debug, Default)]
pub struct Domain {
    pub members: BTreeSet<NodeRef>,
    pub free_gpus: u64,
}

/// Everything the model knows about one node name.
#[derive(Clone, Debug)]
pub struct Slot {
    pub name: Arc<str>,
    pub node: Option<NodeInfo>,
    pub gpu: Option<GpuReport>,
    pub distrust: Option<Distrust>,
    /// Held by bound pods of no gang.
    pub foreign: Resources,
    pub gangs: BTreeMap<GangKey, GangUse>,
    gang_total: Resources,
    /// What admission may use on the node at all: trusted healthy GPUs, allocatable CPU/memory/pods.
    pub capacity: Resources,
    /// `capacity` minus foreign pods minus gangs.
    pub free: Resources,
    bucket: Option<u32>,
    domains: Vec<Option<(Arc<str>, u32)>>,
}

impl Slot {
    fn new(name: Arc<str>, levels: usize) -> Self {
        Slot {
            name,
            node: None,
            gpu: None,
            distrust: Some(Distrust::NoReport),
            foreign: Resources::ZERO,
            gangs: BTreeMap::new(),
            gang_total: Resources::ZERO,
            capacity: Resources::ZERO,
            free: Resources::ZERO,
            bucket: None,
            domains: vec![None; levels],
        }
    }

    fn is_empty(&self) -> bool {
        self.node.is_none() && self.gpu.is_none() && self.foreign.is_zero() && self.gangs.is_empty()
    }

    /// Healthy GPUs the agent reports, whether or not they are trusted.
    pub fn reported_healthy(&self) -> u32 {
        self.gpu.as_ref().map_or(0, |g| g.healthy_count().saturating_sub(g.busy))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("gang {0} already holds a reservation")]
    AlreadyReserved(GangKey),
}

#[derive(Debug, Default)]
struct EligibilityCache {
    generation: u64,
    sets: HashMap<Constraints, Arc<NodeSet>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ClusterModel {
    config: ModelConfig,
    now: SystemTime,
    ids: HashMap<Arc<str>, NodeId>,
    slots: Vec<Option<Slot>>,
    free_ids: Vec<NodeId>,
    buckets: BTreeMap<u32, BTreeSet<NodeRef>>,
    present: NodeSet,
    label_index: HashMap<String, HashMap<String, NodeSet>>,
    domains: Vec<BTreeMap<Arc<str>, Domain>>,
    pods: HashMap<(String, String), PodInfo>,
    reservations: HashMap<GangKey, BTreeMap<String, Resources>>,
    /// Per reserved gang: the domains its exclusive Jobs took, as (topology key, value).
    claims: HashMap<GangKey, BTreeSet<(String, String)>>,
    /// Bound leaders of exclusive Jobs, by (namespace, name): their JobSet and topology key.
    leader_claims: HashMap<(String, String), (GangKey, String)>,
    total_free_gpus: u64,
    eligibility: Mutex<EligibilityCache>,
    eligibility_generation: u64,
    capacity_generation: u64,
    generation: u64,
}

impl ClusterModel {
    pub fn new(config: ModelConfig) -> Self {
        let levels = config.topology_keys.len();
        ClusterModel {
            config,
            now: SystemTime::UNIX_EPOCH,
            ids: HashMap::new(),
            slots: Vec::new(),
            free_ids: Vec::new(),
            buckets: BTreeMap::new(),
            present: NodeSet::new(),
            label_index: HashMap::new(),
            domains: vec![BTreeMap::new(); levels],
            pods: HashMap::new(),
            reservations: HashMap::new(),
            claims: HashMap::new(),
            leader_claims: HashMap::new(),
            total_free_gpus: 0,
            eligibility: Mutex::new(EligibilityCache::default()),
            eligibility_generation: 1,
            capacity_generation: 1,
            generation: 1,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// Advances the clock that heartbeats are judged by; call before each pass.
    pub fn set_time(&mut self, now: SystemTime) {
        self.now = now;
        let ids: Vec<NodeId> = self.ids.values().copied().collect();
        for id in ids {
            self.refresh(id);
        }
    }

    // === Inputs ===

    pub fn apply_node(&mut self, node: NodeInfo) {
        let id = self.slot_id(&node.name);
        let old = self.slot_mut(id).and_then(|s| s.node.take());
        let eligibility_changed = old.as_ref().is_none_or(|o| {
            o.labels != node.labels
                || o.taints != node.taints
                || o.ready != node.ready
                || o.unschedulable != node.unschedulable
        });
        if let Some(old) = &old {
            for (k, v) in &old.labels {
                if let Some(set) = self.label_index.get_mut(k).and_then(|vals| vals.get_mut(v)) {
                    set.remove(id);
                }
            }
        }
        for (k, v) in &node.labels {
            self.label_index.entry(k.clone()).or_default().entry(v.clone()).or_default().insert(id);
        }
        self.present.insert(id);
        if let Some(slot) = self.slot_mut(id) {
            slot.node = Some(node);
        }
        if eligibility_changed {
            self.eligibility_generation += 1;
            self.capacity_generation += 1;
        }
        self.refresh(id);
    }

    pub fn delete_node(&mut self, name: &str) {
        let Some(&id) = self.ids.get(name) else { return };
        let Some(old) = self.slot_mut(id).and_then(|s| s.node.take()) else { return };
        for (k, v) in &old.labels {
            if let Some(set) = self.label_index.get_mut(k).and_then(|vals| vals.get_mut(v)) {
                set.remove(id);
            }
        }
        self.present.remove(id);
        self.eligibility_generation += 1;
        self.capacity_generation += 1;
        self.refresh(id);
        self.collect(id);
    }

    pub fn apply_gpunode(&mut self, report: GpuReport) {
        let id = self.slot_id(&report.node_name);
        if let Some(slot) = self.slot_mut(id) {
            slot.gpu = Some(report);
        }
        self.refresh(id);
    }

    pub fn delete_gpunode(&mut self, node_name: &str) {
        let Some(&id) = self.ids.get(node_name) else { return };
        if let Some(slot) = self.slot_mut(id) {
            slot.gpu = None;
        }
        self.refresh(id);
        self.collect(id);
    }

    /// A bound, non-terminated pod; re-applying replaces it (also when it moved). Terminated pods are deleted.
    pub fn apply_pod(&mut self, pod: PodInfo) {
        let key = (pod.namespace.clone(), pod.name.clone());
        if let Some(old) = self.pods.remove(&key) {
            self.charge_pod(&old, false);
        }
        self.charge_pod(&pod, true);
        match (&pod.gang, &pod.exclusive_leader) {
            (Some(jobset), Some(topology_key)) => {
                self.leader_claims.insert(key.clone(), (jobset.clone(), topology_key.clone()));
            }
            _ => {
                self.leader_claims.remove(&key);
            }
        }
        self.pods.insert(key, pod);
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        self.leader_claims.remove(&key);
        if let Some(old) = self.pods.remove(&key) {
            self.charge_pod(&old, false);
        }
    }

    fn charge_pod(&mut self, pod: &PodInfo, add: bool) {
        let id = self.slot_id(&pod.node);
        let Some(slot) = self.slot_mut(id) else { return };
        match &pod.gang {
            None if add => slot.foreign = slot.foreign.saturating_add(pod.requests),
            None => slot.foreign = slot.foreign.saturating_sub(pod.requests),
            Some(gang) => update_gang_use(slot, gang, |u| {
                u.bound = if add { u.bound.saturating_add(pod.requests) } else { u.bound.saturating_sub(pod.requests) }
            }),
        }
        self.refresh(id);
        self.collect(id);
    }

    /// Reserves `per_node` for `gang`, e.g. a fresh placement or one recovered from `Gang.status` after a restart.
    /// Capacity is not checked: placement guarantees fit, and a recovered reservation is the truth either way.
    pub fn reserve(&mut self, gang: &GangKey, per_node: &BTreeMap<String, Resources>) -> Result<(), ModelError> {
        if self.reservations.contains_key(gang) {
            return Err(ModelError::AlreadyReserved(gang.clone()));
        }
        for (node, r) in per_node {
            let id = self.slot_id(node);
            if let Some(slot) = self.slot_mut(id) {
                update_gang_use(slot, gang, |u| u.reserved = u.reserved.saturating_add(*r));
            }
            self.refresh(id);
        }
        self.reservations.insert(gang.clone(), per_node.clone());
        Ok(())
    }

    /// Records the domains (topology key, value) the exclusive Jobs of a reserved gang take; they go with the
    /// reservation. No-op for a gang without a reservation.
    pub fn claim_domains(&mut self, gang: &GangKey, claims: BTreeSet<(String, String)>) {
        if !self.reservations.contains_key(gang) {
            return;
        }
        if claims.is_empty() {
            self.claims.remove(gang);
        } else {
            self.claims.insert(gang.clone(), claims);
        }
        self.generation += 1;
    }

    /// Releases the gang's reservation; its pods that are still bound keep counting. Returns whether it had one.
    pub fn release(&mut self, gang: &GangKey) -> bool {
        self.claims.remove(gang);
        let Some(per_node) = self.reservations.remove(gang) else { return false };
        for (node, r) in &per_node {
            let Some(&id) = self.ids.get(node.as_str()) else { continue };
            if let Some(slot) = self.slot_mut(id) {
                update_gang_use(slot, gang, |u| u.reserved = u.reserved.saturating_sub(*r));
            }
            self.refresh(id);
            self.collect(id);
        }
        true
    }

    // === Queries ===

    pub fn reservation(&self, gang: &GangKey) -> Option<&BTreeMap<String, Resources>> {
        self.reservations.get(gang)
    }

    pub fn reservations(&self) -> impl Iterator<Item = (&GangKey, &BTreeMap<String, Resources>)> {
        self.reservations.iter()
    }

    /// A bound pod the model counts.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods.get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.ids.get(name).copied()
    }

    /// The ids of the named nodes the model knows; unknown names are left out.
    pub fn node_set<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> NodeSet {
        names.into_iter().filter_map(|n| self.id(n)).collect()
    }

    pub fn slot(&self, id: NodeId) -> Option<&Slot> {
        self.slots.get(id).and_then(Option::as_ref)
    }

    pub fn slot_by_name(&self, name: &str) -> Option<&Slot> {
        self.id(name).and_then(|id| self.slot(id))
    }

    /// Name of a node id; empty for an unknown id.
    pub fn name(&self, id: NodeId) -> &str {
        self.slot(id).map_or("", |s| &s.name)
    }

    /// What admission may still use on the node now.
    pub fn free(&self, id: NodeId) -> Resources {
        self.slot(id).map_or(Resources::ZERO, |s| s.free)
    }

    /// GPUs reserved for gangs on the node beyond the healthy GPUs its agent now reports: above zero, a GPU died
    /// under a reservation. Only reservations count: pods bound where nothing was reserved for them are the
    /// scheduler's business, not a sign of a dead GPU. Zero for a node whose agent is not trusted: a stale agent
    /// is no evidence of a dead GPU.
    pub fn gpu_deficit(&self, id: NodeId) -> u32 {
        let Some(slot) = self.slot(id) else { return 0 };
        if slot.distrust.is_some() {
            return 0;
        }
        let reserved = slot.gangs.values().fold(0u32, |sum, u| sum.saturating_add(u.reserved.gpus));
        reserved.saturating_sub(slot.capacity.gpus)
    }

    pub fn capacity(&self, id: NodeId) -> Resources {
        self.slot(id).map_or(Resources::ZERO, |s| s.capacity)
    }

    /// Nodes whose Node object is known.
    pub fn nodes(&self) -> &NodeSet {
        &self.present
    }

    pub fn node_count(&self) -> usize {
        self.present.len()
    }

    /// Known nodes by free GPU count, name order within a count.
    pub fn buckets(&self) -> &BTreeMap<u32, BTreeSet<NodeRef>> {
        &self.buckets
    }

    pub fn total_free_gpus(&self) -> u64 {
        self.total_free_gpus
    }

    /// Domains of the `level`-th topology key.
    pub fn domains(&self, level: usize) -> Option<&BTreeMap<Arc<str>, Domain>> {
        self.domains.get(level)
    }

    /// The nodes per value of any node label (not only the configured topology keys); sets may be empty.
    pub fn label_values(&self, key: &str) -> Option<&HashMap<String, NodeSet>> {
        self.label_index.get(key)
    }

    /// The nodes of domains that exclusive Jobs of gangs other than `gang` took, per domain: `gang`'s pods may not
    /// go there. Upstream's exclusive placement gives each exclusive Job's leader a required anti-affinity against
    /// the pods of other Jobs in its domain, and the scheduler enforces it for pods arriving later too. Upstream
    /// scopes that to pods of the same `jobset.sigs.k8s.io/priority`; admission does not, so it never admits a
    /// gang the scheduler would refuse, at the cost of a gang of another priority waiting for such a domain.
    pub fn claimed_by_others(&self, gang: &GangKey) -> Vec<(&GangKey, String, NodeSet)> {
        let mut out = self.claimed_domains();
        out.retain(|(owner, _, _)| *owner != gang);
        out
    }

    /// Every domain taken by an exclusive Job, as (its JobSet, `key=value`, the domain's nodes), by JobSet and
    /// domain: those a reserved gang's placement claims, and those where the leader of an exclusive Job is bound
    /// (JobSets outside gang admission included).
    pub fn claimed_domains(&self) -> Vec<(&GangKey, String, NodeSet)> {
        let mut taken: BTreeSet<(&GangKey, &str, &str)> = BTreeSet::new();
        for (owner, claims) in &self.claims {
            for (key, value) in claims {
                taken.insert((owner, key, value));
            }
        }
        for (pod, (owner, key)) in &self.leader_claims {
            let node = self.pods.get(pod).and_then(|p| self.slot_by_name(&p.node)).and_then(|s| s.node.as_ref());
            if let Some(value) = node.and_then(|n| n.labels.get(key)) {
                taken.insert((owner, key, value));
            }
        }
        taken
            .into_iter()
            .filter_map(|(owner, key, value)| {
                let members = self.label_values(key)?.get(value)?;
                Some((owner, format!("{key}={value}"), members.clone()))
            })
            .collect()
    }

    /// Whether bound pods or reservations of JobSets other than `gang` hold room on the node.
    pub fn used_by_other_jobsets(&self, id: NodeId, gang: &GangKey) -> bool {
        self.slot(id).is_some_and(|s| s.gangs.keys().any(|k| k != gang))
    }

    pub fn domain_of(&self, id: NodeId, level: usize) -> Option<&Arc<str>> {
        self.slot(id)?.domains.get(level)?.as_ref().map(|(d, _)| d)
    }

    /// Bumped by every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bumped when what could ever fit changes: nodes added or removed, their labels, taints, readiness,
    /// allocatable or trusted healthy GPUs — not when usage changes. Inadmissible verdicts stay valid until then.
    pub fn capacity_generation(&self) -> u64 {
        self.capacity_generation
    }

    /// Nodes the pods of a constraint set may go to: Node known and Ready, nodeSelector and required affinity
    /// match, every NoSchedule/NoExecute taint tolerated (cordoned nodes count as tainted `unschedulable`).
    pub fn eligible(&self, constraints: &Constraints) -> Arc<NodeSet> {
        let mut cache = self.eligibility.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.generation != self.eligibility_generation {
            cache.sets.clear();
            cache.generation = self.eligibility_generation;
        }
        if let Some(set) = cache.sets.get(constraints) {
            return Arc::clone(set);
        }
        let set = Arc::new(self.compute_eligible(constraints));
        // Bounded: distinct constraint sets are few, but a flood of unique ones must not grow it forever.
        if cache.sets.len() >= 4096 {
            cache.sets.clear();
        }
        cache.sets.insert(constraints.clone(), Arc::clone(&set));
        set
    }

    fn compute_eligible(&self, constraints: &Constraints) -> NodeSet {
        let mut candidates = self.present.clone();
        for (k, v) in &constraints.node_selector {
            match self.label_index.get(k).and_then(|vals| vals.get(v)) {
                Some(set) => candidates.intersect_with(set),
                None => return NodeSet::new(),
            }
        }
        candidates.iter().filter(|&id| self.slot(id).is_some_and(|s| node_admits(s, constraints).is_ok())).collect()
    }

    // === Internals ===

    fn slot_id(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name: Arc<str> = name.into();
        let slot = Slot::new(Arc::clone(&name), self.config.topology_keys.len());
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.slots[id] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.ids.insert(name, id);
        id
    }

    fn slot_mut(&mut self, id: NodeId) -> Option<&mut Slot> {
        self.slots.get_mut(id).and_then(Option::as_mut)
    }

    /// Drops a slot nothing refers to any more.
    fn collect(&mut self, id: NodeId) {
        if self.slot(id).is_some_and(Slot::is_empty)
            && let Some(slot) = self.slots.get_mut(id).and_then(Option::take)
        {
            self.ids.remove(&slot.name);
            self.free_ids.push(id);
        }
    }

    /// Recomputes a node's trust, capacity and free room, and moves it between buckets and domain sums.
    fn refresh(&mut self, id: NodeId) {
        self.generation += 1;
        let now = self.now;
        let timeout = self.config.heartbeat_timeout;
        let topology_keys = &self.config.topology_keys;
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else { return };
        slot.distrust = match &slot.gpu {
            None => Some(Distrust::NoReport),
            Some(g) if !g.nvml_available => Some(Distrust::NvmlUnavailable(g.nvml_error.clone())),
            Some(g) => match g.heartbeat {
                None => Some(Distrust::Stale { age: None }),
                // A heartbeat from the future (clock skew) counts as fresh.
                Some(hb) => match now.duration_since(hb) {
                    Ok(age) if age > timeout => Some(Distrust::Stale { age: Some(age) }),
                    _ => None,
                },
            },
        };
        let old_capacity = slot.capacity;
        slot.capacity = match &slot.node {
            None => Resources::ZERO,
            Some(n) => {
                let gpus = if slot.distrust.is_none() {
                    slot.reported_healthy().min(n.device_plugin_gpus.unwrap_or(u32::MAX))
                } else {
                    0
                };
                Resources::new(gpus, n.cpu_milli, n.memory_bytes, n.max_pods)
            }
        };
        if slot.capacity != old_capacity {
            self.capacity_generation += 1;
        }
        slot.free = slot.capacity.saturating_sub(slot.foreign).saturating_sub(slot.gang_total);
        let name = Arc::clone(&slot.name);
        let new_bucket = slot.node.as_ref().map(|_| slot.free.gpus);
        let old_bucket = std::mem::replace(&mut slot.bucket, new_bucket);
        let new_domains: Vec<Option<(Arc<str>, u32)>> = topology_keys
            .iter()
            .map(|k| slot.node.as_ref().and_then(|n| n.labels.get(k)).map(|v| (Arc::from(v.as_str()), slot.free.gpus)))
            .collect();
        let old_domains = std::mem::replace(&mut slot.domains, new_domains.clone());

        if old_bucket != new_bucket {
            let node_ref = NodeRef { name: Arc::clone(&name), id };
            if let Some(b) = old_bucket {
                self.total_free_gpus -= u64::from(b);
                if let Some(set) = self.buckets.get_mut(&b) {
                    set.remove(&node_ref);
                    if set.is_empty() {
                        self.buckets.remove(&b);
                    }
                }
            }
            if let Some(b) = new_bucket {
                self.total_free_gpus += u64::from(b);
                self.buckets.entry(b).or_default().insert(node_ref);
            }
        }
        for (level, (old, new)) in old_domains.into_iter().zip(new_domains).enumerate() {
            if old == new {
                continue;
            }
            let domains = &mut self.domains[level];
            if let Some((d, free)) = old
                && let Some(domain) = domains.get_mut(&d)
            {
                domain.free_gpus -= u64::from(free);
                domain.members.remove(&NodeRef { name: Arc::clone(&name), id });
                if domain.members.is_empty() {
                    domains.remove(&d);
                }
            }
            if let Some((d, free)) = new {
                let domain = domains.entry(d).or_default();
                domain.free_gpus += u64::from(free);
                domain.members.insert(NodeRef { name: Arc::clone(&name), id });
            }
        }
    }
}

fn update_gang_use(slot: &mut Slot, gang: &GangKey, change: impl FnOnce(&mut GangUse)) {
    let entry = slot.gangs.entry(gang.clone()).or_default();
    let before = entry.charged();
    change(entry);
    let after = entry.charged();
    if entry.reserved.is_zero() && entry.bound.is_zero() {
        slot.gangs.remove(gang);
    }
    slot.gang_total = slot.gang_total.saturating_sub(before).saturating_add(after);
}

/// Why a node does not take pods of a constraint set, regardless of capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ineligible {
    NoNode,
    NotReady,
    Cordoned,
    NodeSelector,
    Affinity,
    Taint(Taint),
}

/// The order matters for explanations: the first reason found is the one reported.
pub fn node_admits(slot: &Slot, constraints: &Constraints) -> Result<(), Ineligible> {
    let Some(node) = &slot.node else { return Err(Ineligible::NoNode) };
    if !node.ready {
        return Err(Ineligible::NotReady);
    }
    if !constraints.node_selector_matches(&node.labels) {
        return Err(Ineligible::NodeSelector);
    }
    if !constraints.affinity_matches(&node.name, &node.labels) {
        return Err(Ineligible::Affinity);
    }
    if node.unschedulable {
        let cordon = Taint::new("node.kubernetes.io/unschedulable", "", TaintEffect::NoSchedule);
        if constraints.untolerated(std::slice::from_ref(&cordon)).is_some() {
            return Err(Ineligible::Cordoned);
        }
    }
    if let Some(t) = constraints.untolerated(&node.taints) {
        return Err(Ineligible::Taint(t.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::testutil::*;

    #[test]
    fn free_gpus_follow_health_pods_and_reservations() {
        let mut m = model(&[]);
        m.apply_node(NodeInfo::new("n1", 64_000, 512 << 30));
        assert_eq!(m.free(id(&m, "n1")).gpus, 0, "no GPUNode yet");
        let mut report = GpuReport::healthy("n1", 8, T0);
        report.unhealthy.push(UnhealthyGpu { index: 3, xid: Some(79), reason: None });
        m.apply_gpunode(report);
        assert_eq!(m.free(id(&m, "n1")).gpus, 7);
        m.apply_pod(pod("p1", "n1", 2, None));
        assert_eq!(m.free(id(&m, "n1")).gpus, 5);
        let g = GangKey::new("ml", "a");
        m.reserve(&g, &per_node(&[("n1", 4)])).expect("reserve");
        assert_eq!(m.free(id(&m, "n1")).gpus, 1);
        assert_eq!(m.reserve(&g, &per_node(&[("n1", 1)])), Err(ModelError::AlreadyReserved(g.clone())));
        // The gang's pods landing on the reserved node are not counted twice...
        m.apply_pod(pod("g1", "n1", 2, Some(&g)));
        m.apply_pod(pod("g2", "n1", 2, Some(&g)));
        assert_eq!(m.free(id(&m, "n1")).gpus, 1);
        // ...a pod beyond the reservation is.
        m.apply_pod(pod("g3", "n1", 1, Some(&g)));
        assert_eq!(m.free(id(&m, "n1")).gpus, 0);
        // Released with pods still bound: they keep counting until deleted.
        assert!(m.release(&g));
        assert!(!m.release(&g));
        assert_eq!(m.free(id(&m, "n1")).gpus, 0);
        for p in ["g1", "g2", "g3", "p1"] {
            m.delete_pod("ns", p);
        }
        assert_eq!(m.free(id(&m, "n1")).gpus, 7);
        assert_eq!(m.total_free_gpus(), 7);
        assert_eq!(m.buckets().get(&7).map(BTreeSet::len), Some(1));
    }

    #[test]
    fn stale_heartbeat_distrusts_node() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "n1", 8, &[]);
        assert_eq!(m.free(id(&m, "n1")).gpus, 8);
        let generation = m.capacity_generation();
        m.set_time(T0 + Duration::from_secs(91));
        assert_eq!(m.free(id(&m, "n1")).gpus, 0);
        assert!(matches!(m.slot(id(&m, "n1")).and_then(|s| s.distrust.clone()), Some(Distrust::Stale { .. })));
        assert_ne!(m.capacity_generation(), generation);
        m.apply_gpunode(GpuReport::healthy("n1", 8, T0 + Duration::from_secs(90)));
        assert_eq!(m.free(id(&m, "n1")).gpus, 8);
        let mut off = GpuReport::healthy("n1", 8, T0 + Duration::from_secs(90));
        off.nvml_available = false;
        m.apply_gpunode(off);
        assert_eq!(m.free(id(&m, "n1")).gpus, 0);
    }

    #[test]
    fn device_plugin_caps_gpus() {
        let mut m = model(&[]);
        let mut n = NodeInfo::new("n1", 64_000, 512 << 30);
        n.device_plugin_gpus = Some(4);
        m.apply_node(n);
        m.apply_gpunode(GpuReport::healthy("n1", 8, T0));
        assert_eq!(m.free(id(&m, "n1")).gpus, 4);
    }

    #[test]
    fn inputs_in_any_order_and_slots_collected() {
        let mut m = model(&["rack"]);
        let g = GangKey::new("ml", "a");
        m.reserve(&g, &per_node(&[("late", 4)])).expect("reserve");
        m.apply_pod(pod("p", "late", 1, None));
        assert_eq!(m.node_count(), 0);
        add_gpu_node(&mut m, "late", 8, &[("rack", "r1")]);
        assert_eq!(m.free(id(&m, "late")).gpus, 3);
        assert_eq!(m.domains(0).and_then(|d| d.get("r1")).map(|d| d.free_gpus), Some(3));
        m.delete_node("late");
        assert_eq!(m.domains(0).map(BTreeMap::len), Some(0));
        assert_eq!(m.total_free_gpus(), 0);
        m.delete_gpunode("late");
        m.delete_pod("ns", "p");
        assert!(m.id("late").is_some(), "reservation still refers to it");
        m.release(&g);
        assert!(m.id("late").is_none());
        // The id is reused without stale index entries.
        add_gpu_node(&mut m, "other", 8, &[("rack", "r2")]);
        assert_eq!(m.nodes().len(), 1);
        assert_eq!(m.eligible(&Constraints::default()).len(), 1);
    }

    #[test]
    fn eligibility_and_label_index() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[("pool", "h100")]);
        add_gpu_node(&mut m, "b", 8, &[("pool", "a100")]);
        let mut tainted = NodeInfo::new("c", 64_000, 512 << 30).label("pool", "h100");
        tainted.taints.push(Taint::new("dedicated", "x", TaintEffect::NoSchedule));
        m.apply_node(tainted);
        let sel = Constraints {
            node_selector: [("pool".to_owned(), "h100".to_owned())].into_iter().collect(),
            ..Constraints::default()
        };
        fn names(m: &ClusterModel, c: &Constraints) -> Vec<String> {
            m.eligible(c).iter().map(|i| m.name(i).to_owned()).collect()
        }
        assert_eq!(names(&m, &sel), vec!["a"]);
        let mut tol = sel.clone();
        tol.tolerations.push(crate::gang::demand::Toleration::exists("dedicated", None));
        assert_eq!(names(&m, &tol).len(), 2);
        // Relabel: the cache notices.
        m.apply_node(NodeInfo::new("b", 64_000, 512 << 30).label("pool", "h100"));
        assert_eq!(names(&m, &sel).len(), 2);
        let mut cordoned = NodeInfo::new("a", 64_000, 512 << 30).label("pool", "h100");
        cordoned.unschedulable = true;
        m.apply_node(cordoned);
        assert_eq!(names(&m, &sel), vec!["b"]);
        let missing = Constraints {
            node_selector: [("pool".to_owned(), "none".to_owned())].into_iter().collect(),
            ..Constraints::default()
        };
        assert!(m.eligible(&missing).is_empty());
    }
}
