//! What the extender knows of the cluster, fed from its watches: the gang core's [`ClusterModel`] (nodes, GPU
//! health, bound pods, and every admitted gang's reservation from `Gang.status.placement`), each gang's slots, and
//! which slots bound pods already hold. No I/O: the watch shell calls `apply_*` / `delete_*`.
//!
//! It also keeps the free-GPU index: every node's [`Room`] for pods outside gangs, so that `filter` and
//! `prioritize` of an ordinary GPU pod read one small entry per candidate instead of working it out from the model
//! per request (bench/README.md). Each `apply_*` / `delete_*` recomputes the rooms of exactly the nodes it
//! touched, from the model, with the same function the index is checked against ([`Room::of`]); the clock
//! ([`ExtenderState::set_time`]) recomputes them all, since a heartbeat going stale changes a node's room without
//! any event.
//!
//! And the pods it has *assumed*: where `filter` sent a pod that could otherwise race another for GPUs the
//! scheduler's own accounting does not protect (see [`super::decide`]), until the pod watch shows the pod bound or
//! gone, the same pod is filtered again, or [`ASSUMPTION_TTL`] passes. An assumed pod outside gangs counts in its
//! node's room as a bound one would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Pod};
use muster_api::{GPUNode, Gang};

use super::slots::{GangRecord, JobRef, pod_slot};
use crate::gang::demand::GangDemand;
use crate::gang::model::{ClusterModel, GpuReport, ModelConfig};
use crate::gang::objects::{node_info, pod_info};
use crate::gang::placement::per_node_of;
use crate::gang::snapshot::recorded_holds;
use crate::gang::{GangKey, Resources};

/// GPUs on a node as a pod outside gangs sees them. Gangs are charged as the admission model charges them, per gang
/// `max(reserved, bound)`: `reserved` plus the gang's pods beyond it, which count as ordinary pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Healthy GPUs when the node's GPUNode is trusted; else the device plugin's count, since health is unknown
    /// (the node may simply run no agent) and only reservations are the extender's to protect.
    pub usable: u32,
    /// Held by pods outside reservations: what preemption could free.
    pub preemptible: u32,
    /// Reserved for gangs, whether their pods run yet or not: preempting a gang's pod frees nothing.
    pub reserved: u32,
    /// kube-scheduler's own accounting of `nvidia.com/gpu` (NodeResourcesFit: the device plugin's count minus the
    /// pods it has bound or assumed) would let a pod onto GPUs this room keeps from it: some are reserved for a gang
    /// whose pods are not bound yet, or fewer GPUs are healthy than the device plugin advertises. On a node that is
    /// not exposed, the scheduler's count is this room's `free` minus the pods it has placed and we have not seen
    /// yet, so its own check keeps two pods from sharing GPUs; on an exposed one, only we can.
    pub exposed: bool,
}

impl Room {
    /// GPUs a pod outside gangs may take now.
    pub fn free(&self) -> u32 {
        self.usable.saturating_sub(self.preemptible).saturating_sub(self.reserved)
    }

    /// The room of `name` worked out from the model; `None` for a node whose Node object is not known. This is the
    /// definition the index keeps, computed from scratch.
    pub fn of(model: &ClusterModel, name: &str) -> Option<Room> {
        let slot = model.slot_by_name(name)?;
        let node = slot.node.as_ref()?;
        let usable = if slot.distrust.is_none() { slot.capacity.gpus } else { node.device_plugin_gpus.unwrap_or(0) };
        let mut r = Room { usable, preemptible: slot.foreign.gpus, reserved: 0, exposed: false };
        let mut awaiting = 0u32;
        for u in slot.gangs.values() {
            r.reserved = r.reserved.saturating_add(u.reserved.gpus);
            r.preemptible = r.preemptible.saturating_add(u.bound.gpus.saturating_sub(u.reserved.gpus));
            awaiting = awaiting.saturating_add(u.reserved.gpus.saturating_sub(u.bound.gpus));
        }
        r.exposed = awaiting > 0 || usable < node.device_plugin_gpus.unwrap_or(0);
        Some(r)
    }
}

/// How long an assumed pod counts without the pod watch confirming it. kube-scheduler binds within a second or so
/// of filtering; a pod whose scheduling cycle failed after our filter is filtered again (which replaces its
/// assumption) on its next attempt, within the scheduler's 10 s maximum backoff; a pod deleted before binding
/// never shows up in the bound-pod watch, and this is how its assumption ends.
pub const ASSUMPTION_TTL: Duration = Duration::from_secs(30);

/// Where `filter` sent a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assumption {
    pub namespace: String,
    pub name: String,
    pub node: Arc<str>,
    /// GPUs charged to the node's room: a pod outside gangs'; zero for a gang pod, whose GPUs are reserved.
    pub gpus: u32,
    /// The slot's Job, for a gang pod without a completion index: it takes one of the Job's open slots there.
    pub job: Option<(GangKey, JobRef)>,
}

#[derive(Debug)]
struct Assumed {
    assumption: Assumption,
    until: SystemTime,
}

/// Node name → [`Room`]. foldhash rather than SipHash: the keys are node names the operator's cluster chose, the
/// map is read 5,000 times per request, and a flooding attack would need control of node names.
type RoomIndex = HashMap<Arc<str>, Room, foldhash::fast::RandomState>;

/// See the module documentation.
#[derive(Debug)]
pub struct ExtenderState {
    model: ClusterModel,
    rooms: RoomIndex,
    /// By pod (namespace, name).
    assumed: HashMap<(String, String), Assumed>,
    gangs: HashMap<GangKey, GangEntry>,
    /// Bound pods of JobSets: the Job they belong to and their node.
    bound: HashMap<(String, String), (GangKey, JobRef, Arc<str>)>,
    /// Per Job of a gang, bound pods per node (what NonIndexed pods need to find a free slot).
    job_pods: HashMap<(GangKey, JobRef), BTreeMap<Arc<str>, u32>>,
    /// Nodes held for the heads of queues (their Gangs' `status.heldNodes`): no other GPU pod may take GPUs there,
    /// or a stream of small pods could keep a big head gang from ever gathering its nodes.
    held: HashMap<Arc<str>, GangKey>,
}

#[derive(Debug)]
struct GangEntry {
    record: GangRecord,
    /// What is reserved in the model for this gang, to skip the common update that changes nothing we use.
    reserved: Option<BTreeMap<String, Resources>>,
}

impl ExtenderState {
    pub fn new(config: ModelConfig, now: SystemTime) -> Self {
        let mut model = ClusterModel::new(config);
        model.set_time(now);
        ExtenderState {
            model,
            rooms: RoomIndex::default(),
            assumed: HashMap::new(),
            gangs: HashMap::new(),
            bound: HashMap::new(),
            job_pods: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// The gang `node` is held for, if any.
    pub fn held_for(&self, node: &str) -> Option<&GangKey> {
        self.held.get(node)
    }

    pub fn model(&self) -> &ClusterModel {
        &self.model
    }

    /// The room of a node for pods outside gangs, from the index; `None` for a node not known.
    pub fn room(&self, name: &str) -> Option<Room> {
        self.rooms.get(name).copied()
    }

    /// The room of `name` from scratch: [`Room::of`] plus the pods assumed there. What the index must equal.
    pub fn room_from_scratch(&self, name: &str) -> Option<Room> {
        let mut room = Room::of(&self.model, name)?;
        for a in self.assumed.values().filter(|a| &*a.assumption.node == name) {
            room.preemptible = room.preemptible.saturating_add(a.assumption.gpus);
        }
        Some(room)
    }

    /// Recomputes the index entry of `name`. Every change to the model or to the assumed pods goes through a
    /// method that calls this for each node the change touched.
    fn refresh_room(&mut self, name: &str) {
        match (self.room_from_scratch(name), self.rooms.get_mut(name)) {
            (Some(room), Some(entry)) => *entry = room,
            (Some(room), None) => {
                self.rooms.insert(Arc::from(name), room);
            }
            (None, _) => {
                self.rooms.remove(name);
            }
        }
    }

    pub fn gang(&self, key: &GangKey) -> Option<&GangRecord> {
        self.gangs.get(key).map(|e| &e.record)
    }

    /// Bound pods of this Job of this gang, per node.
    pub fn bound_in_job(&self, gang: &GangKey, job: &JobRef) -> Option<&BTreeMap<Arc<str>, u32>> {
        self.job_pods.get(&(gang.clone(), job.clone()))
    }

    /// Nodes of the pods of this Job of this gang that `filter` sent somewhere and the watch has not shown bound.
    pub fn assumed_in_job<'s>(&'s self, gang: &'s GangKey, job: &'s JobRef) -> impl Iterator<Item = &'s Arc<str>> {
        self.assumed.values().filter_map(move |a| match &a.assumption.job {
            Some((g, j)) if g == gang && j == job => Some(&a.assumption.node),
            _ => None,
        })
    }

    /// Counts a pod where `filter` sent it, replacing what was assumed for it before.
    pub fn assume(&mut self, assumption: Assumption) {
        let key = (assumption.namespace.clone(), assumption.name.clone());
        let node = Arc::clone(&assumption.node);
        let until = self.model.now() + ASSUMPTION_TTL;
        let old = self.assumed.insert(key, Assumed { assumption, until });
        self.refresh_room(&node);
        if let Some(old) = old.filter(|old| old.assumption.node != node) {
            self.refresh_room(&old.assumption.node);
        }
    }

    /// Drops what was assumed for a pod: it is being filtered again, or the watch now speaks for it.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self.assumed.remove(&(namespace.to_owned(), name.to_owned())) {
            self.refresh_room(&old.assumption.node);
        }
    }

    /// Heartbeats are judged against this time; the shell advances it periodically.
    pub fn set_time(&mut self, now: SystemTime) {
        self.model.set_time(now);
        // Expired assumptions go first; the refresh of every room below covers their nodes.
        self.assumed.retain(|_, a| a.until > now);
        // Only nodes with a Node object have a room, and the clock adds none.
        let names: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for name in names {
            self.refresh_room(&name);
        }
    }

    pub fn apply_node(&mut self, node: &Node) {
        if let Some(info) = node_info(node) {
            let name = info.name.clone();
            self.model.apply_node(info);
            self.refresh_room(&name);
        }
    }

    pub fn delete_node(&mut self, name: &str) {
        self.model.delete_node(name);
        self.refresh_room(name);
    }

    /// A GPUNode without status reads as "NVML unavailable": its node offers no trusted GPUs.
    pub fn apply_gpunode(&mut self, gpunode: &GPUNode) {
        let name = gpunode_node_name(gpunode);
        let status = gpunode.status.clone().unwrap_or_default();
        self.model.apply_gpunode(GpuReport::from_status(name, &status));
        self.refresh_room(name);
    }

    /// The GPUNode of `node` is gone.
    pub fn delete_gpunode(&mut self, node: &str) {
        self.model.delete_gpunode(node);
        self.refresh_room(node);
    }

    /// A pod from the bound, non-terminated watch; a pod that is not (any more) is removed.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let (Some(namespace), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
            return;
        };
        let Some(info) = pod_info(pod) else {
            self.delete_pod(namespace, name);
            return;
        };
        self.forget(namespace, name);
        let key = (namespace.to_owned(), name.to_owned());
        self.unbind(&key);
        if let Some(Ok(slot)) = pod_slot(pod) {
            let node: Arc<str> = Arc::from(info.node.as_str());
            let count = self.job_pods.entry((slot.gang.clone(), slot.job.clone())).or_default();
            *count.entry(Arc::clone(&node)).or_default() += 1;
            self.bound.insert(key, (slot.gang, slot.job, node));
        }
        let old_node = self.model.pod(namespace, name).map(|old| old.node.clone()).filter(|old| *old != info.node);
        let node = info.node.clone();
        self.model.apply_pod(info);
        self.refresh_room(&node);
        if let Some(old) = old_node {
            self.refresh_room(&old);
        }
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.forget(namespace, name);
        self.unbind(&(namespace.to_owned(), name.to_owned()));
        let node = self.model.pod(namespace, name).map(|old| old.node.clone());
        self.model.delete_pod(namespace, name);
        if let Some(node) = node {
            self.refresh_room(&node);
        }
    }

    fn unbind(&mut self, key: &(String, String)) {
        let Some((gang, job, node)) = self.bound.remove(key) else { return };
        let job_key = (gang, job);
        if let Some(per_node) = self.job_pods.get_mut(&job_key) {
            if let Some(n) = per_node.get_mut(&node) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_node.remove(&node);
                }
            }
            if per_node.is_empty() {
                self.job_pods.remove(&job_key);
            }
        }
    }

    /// A Gang: its slots, and while it is Admitted or Running its reservation, exactly as the admission
    /// controller's model charges it (per node, the pod sets' requests of the slots placed there).
    pub fn apply_gang(&mut self, gang: &Gang) {
        let (Some(namespace), Some(name)) = (gang.metadata.namespace.as_deref(), gang.metadata.name.as_deref()) else {
            return;
        };
        let key = GangKey::new(namespace, name);
        let record = GangRecord::from_gang(gang);
        let reserved = if record.holds_reservation() {
            let placement = gang.status.as_ref().map(|s| s.placement.as_slice()).unwrap_or_default();
            match GangDemand::from_spec(key.clone(), &gang.spec) {
                Ok(demand) => match per_node_of(&demand, placement) {
                    Ok(per_node) => Some(per_node),
                    Err(pod_set) => {
                        tracing::warn!(gang = %key, pod_set, "placement names a pod set the spec lacks; not reserved");
                        None
                    }
                },
                // Admission never admits such a gang; its pods are still steered by their slots.
                Err(e) => {
                    tracing::warn!(gang = %key, error = %e, "gang spec unreadable; not reserved");
                    None
                }
            }
        } else {
            None
        };
        let unchanged = self.gangs.get(&key).is_some_and(|old| old.reserved == reserved);
        if !unchanged {
            let released = self.release(&key);
            if let Some(per_node) = &reserved {
                // Cannot fail: the gang's reservation was released just above.
                let _ = self.model.reserve(&key, per_node);
                for node in per_node.keys() {
                    self.refresh_room(node);
                }
            }
            for node in released {
                self.refresh_room(&node);
            }
        }
        self.held.retain(|_, holder| *holder != key);
        for (node, holder) in recorded_holds(std::slice::from_ref(gang)) {
            self.held.insert(Arc::from(node), holder);
        }
        self.gangs.insert(key, GangEntry { record, reserved });
    }

    pub fn delete_gang(&mut self, namespace: &str, name: &str) {
        let key = GangKey::new(namespace, name);
        for node in self.release(&key) {
            self.refresh_room(&node);
        }
        self.held.retain(|_, holder| *holder != key);
        self.gangs.remove(&key);
    }

    /// Releases the gang's reservation in the model; the nodes it was on, whose rooms the caller refreshes.
    fn release(&mut self, gang: &GangKey) -> Vec<String> {
        let nodes = self.model.reservation(gang).map(|per_node| per_node.keys().cloned().collect());
        self.model.release(gang);
        nodes.unwrap_or_default()
    }
}

/// The node a GPUNode describes: `spec.nodeName`, else its own name (they are named after their Node).
pub fn gpunode_node_name(gpunode: &GPUNode) -> &str {
    match gpunode.spec.node_name.as_str() {
        "" => gpunode.metadata.name.as_deref().unwrap_or_default(),
        name => name,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::extender::slots::tests::{gang_object, jobset_pod};
    use muster_api::gang::{GangPhase, PodSet};
    use muster_api::gpunode::{GPUNodeSpec, GPUNodeStatus, GpuDevice, GpuHealth};
    use serde_json::json;
    use std::time::Duration;

    pub const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    pub fn node(name: &str, gpus: u32) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node")
    }

    pub fn gpunode(name: &str, healthy: u32, unhealthy: u32) -> GPUNode {
        let device = |index: u32, healthy: bool| GpuDevice {
            index,
            health: GpuHealth { healthy, reason: None, xid: (!healthy).then_some(79) },
            ..GpuDevice::default()
        };
        let mut g = GPUNode::new(name, GPUNodeSpec { node_name: name.into() });
        g.status = Some(GPUNodeStatus {
            nvml_available: true,
            devices: (0..healthy + unhealthy).map(|i| device(i, i < healthy)).collect(),
            heartbeat_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            ..GPUNodeStatus::default()
        });
        g
    }

    /// `pod` renamed `name`, its first container asking for `gpus` GPUs.
    pub fn with_gpus(mut pod: Pod, name: &str, gpus: u32) -> Pod {
        pod.metadata.name = Some(name.into());
        let limits = json!({"nvidia.com/gpu": gpus.to_string()});
        if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.resources = Some(serde_json::from_value(json!({"limits": limits})).expect("resources"));
        }
        pod
    }

    pub fn bound(mut pod: Pod, node: &str) -> Pod {
        pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        pod
    }

    /// A gang whose single pod set `workers` has `jobs` Jobs of `pods` pods of `gpus` GPUs.
    pub fn gang_with_spec(name: &str, phase: GangPhase, gpus: i64, slots: &[(&str, i32, i32, &str)]) -> Gang {
        let mut g = gang_object("ml", name, phase, slots);
        let jobs = slots.iter().map(|s| s.1 + 1).max().unwrap_or(1);
        let pods = slots.iter().map(|s| s.2 + 1).max().unwrap_or(1);
        g.spec.pod_sets =
            vec![PodSet { name: "workers".into(), jobs, pods_per_job: pods, gpus_per_pod: gpus, ..PodSet::default() }];
        g
    }

    pub fn cluster(nodes: &[(&str, u32)]) -> ExtenderState {
        let mut s =
            ExtenderState::new(ModelConfig { heartbeat_timeout: Duration::from_secs(90), ..Default::default() }, NOW);
        for (n, gpus) in nodes {
            s.apply_node(&node(n, *gpus));
            s.apply_gpunode(&gpunode(n, *gpus, 0));
        }
        s
    }

    fn free(s: &ExtenderState, node: &str) -> u32 {
        s.model().id(node).map_or(0, |id| s.model().free(id).gpus)
    }

    #[test]
    fn admitted_gangs_reserve_and_finished_ones_release() {
        let mut s = cluster(&[("a", 8), ("b", 8)]);
        let slots = [("workers", 0, 0, "a"), ("workers", 1, 0, "b")];
        s.apply_gang(&gang_with_spec("t", GangPhase::Pending, 4, &slots));
        assert_eq!((free(&s, "a"), free(&s, "b")), (8, 8), "pending gangs reserve nothing");
        s.apply_gang(&gang_with_spec("t", GangPhase::Admitted, 4, &slots));
        assert_eq!((free(&s, "a"), free(&s, "b")), (4, 4));
        // The same again (a status reason update, say) changes nothing; Running keeps the reservation.
        s.apply_gang(&gang_with_spec("t", GangPhase::Running, 4, &slots));
        assert_eq!((free(&s, "a"), free(&s, "b")), (4, 4));
        // The gang's own pod on its reserved node is not counted twice.
        s.apply_pod(&bound(with_gpus(jobset_pod("ml", "t", "workers", "0", Some("0")), "t0", 4), "a"));
        assert_eq!(free(&s, "a"), 4);
        // A re-placement moves the reservation.
        s.apply_gang(&gang_with_spec("t", GangPhase::Admitted, 4, &[("workers", 0, 0, "a"), ("workers", 1, 0, "a")]));
        assert_eq!((free(&s, "a"), free(&s, "b")), (0, 8));
        s.apply_gang(&gang_with_spec("t", GangPhase::Finished, 4, &slots));
        assert_eq!((free(&s, "a"), free(&s, "b")), (4, 8), "the bound pod still holds its 4");
        s.delete_pod("ml", "t0");
        assert_eq!(free(&s, "a"), 8);
        s.apply_gang(&gang_with_spec("t", GangPhase::Admitted, 4, &slots));
        s.delete_gang("ml", "t");
        assert_eq!((free(&s, "a"), free(&s, "b")), (8, 8));
        assert!(s.gang(&GangKey::new("ml", "t")).is_none());
    }

    #[test]
    fn bound_pods_are_counted_per_job_and_node() {
        let mut s = cluster(&[("a", 8)]);
        let job = JobRef { pod_set: "workers".into(), job_index: 0 };
        let key = GangKey::new("ml", "t");
        let mut p1 = bound(jobset_pod("ml", "t", "workers", "0", None), "a");
        p1.metadata.name = Some("p1".into());
        let mut p2 = p1.clone();
        p2.metadata.name = Some("p2".into());
        s.apply_pod(&p1);
        s.apply_pod(&p2);
        s.apply_pod(&p2);
        assert_eq!(s.bound_in_job(&key, &job).and_then(|m| m.get("a")), Some(&2));
        // Terminated: no longer holds its slot.
        p2.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Failed".into()), ..Default::default() });
        s.apply_pod(&p2);
        assert_eq!(s.bound_in_job(&key, &job).and_then(|m| m.get("a")), Some(&1));
        s.delete_pod("ml", "p1");
        assert_eq!(s.bound_in_job(&key, &job), None);
    }

    /// One watch event (or clock tick) over a small cluster: 4 nodes, 2 gangs, 6 pods, so events collide often.
    #[derive(Clone, Debug)]
    enum Event {
        Node {
            node: u8,
            gpus: u32,
        },
        NodeGone(u8),
        /// `heartbeat`: seconds after [`NOW`], or none; `status: false` publishes no status at all.
        GpuNode {
            node: u8,
            healthy: u32,
            unhealthy: u32,
            heartbeat: Option<u64>,
            status: bool,
        },
        GpuNodeGone(u8),
        /// A bound pod, of gang `gang` (Job `job`) or of no JobSet; terminated pods leave the watch.
        Pod {
            pod: u8,
            node: u8,
            gpus: u32,
            gang: Option<(u8, i32)>,
            terminated: bool,
        },
        PodGone(u8),
        /// Slots `(job, node)`, pod indexes in order.
        Gang {
            gang: u8,
            phase: GangPhase,
            gpus: i64,
            slots: Vec<(i32, u8)>,
        },
        GangGone(u8),
        Tick(u64),
        /// `filter` sent pod `pod` to `node`.
        Assume {
            pod: u8,
            node: u8,
            gpus: u32,
        },
        Forget(u8),
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        let phase = prop_oneof![
            Just(GangPhase::Pending),
            Just(GangPhase::Admitted),
            Just(GangPhase::Running),
            Just(GangPhase::Requeued),
            Just(GangPhase::Finished),
            Just(GangPhase::Inadmissible),
        ];
        prop_oneof![
            (0u8..4, 0u32..=8).prop_map(|(node, gpus)| Event::Node { node, gpus }),
            (0u8..4).prop_map(Event::NodeGone),
            (0u8..4, 0u32..=8, 0u32..=2, prop::option::of(0u64..300), any::<bool>()).prop_map(
                |(node, healthy, unhealthy, heartbeat, status)| Event::GpuNode {
                    node,
                    healthy,
                    unhealthy,
                    heartbeat,
                    status
                }
            ),
            (0u8..4).prop_map(Event::GpuNodeGone),
            (0u8..6, 0u8..4, 0u32..=4, prop::option::of((0u8..2, 0i32..2)), prop::bool::weighted(0.1))
                .prop_map(|(pod, node, gpus, gang, terminated)| Event::Pod { pod, node, gpus, gang, terminated }),
            (0u8..6).prop_map(Event::PodGone),
            (0u8..2, phase, 1i64..=4, prop::collection::vec((0i32..2, 0u8..4), 1..4))
                .prop_map(|(gang, phase, gpus, slots)| Event::Gang { gang, phase, gpus, slots }),
            (0u8..2).prop_map(Event::GangGone),
            (0u64..120).prop_map(Event::Tick),
            (0u8..6, 0u8..5, 0u32..=4).prop_map(|(pod, node, gpus)| Event::Assume { pod, node, gpus }),
            (0u8..6).prop_map(Event::Forget),
        ]
    }

    fn apply(s: &mut ExtenderState, clock: &mut u64, event: &Event) {
        let node_name = |n: u8| format!("n{n}");
        let at = |secs: u64| NOW + Duration::from_secs(secs);
        match event {
            Event::Node { node: n, gpus } => s.apply_node(&node(&node_name(*n), *gpus)),
            Event::NodeGone(n) => s.delete_node(&node_name(*n)),
            Event::GpuNode { node: n, healthy, unhealthy, heartbeat, status } => {
                let mut g = gpunode(&node_name(*n), *healthy, *unhealthy);
                if let Some(st) = g.status.as_mut() {
                    st.heartbeat_time = heartbeat.map(|secs| {
                        let ts = k8s_openapi::jiff::Timestamp::try_from(at(secs)).expect("time in range");
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts)
                    });
                }
                if !status {
                    g.status = None;
                }
                s.apply_gpunode(&g);
            }
            Event::GpuNodeGone(n) => s.delete_gpunode(&node_name(*n)),
            Event::Pod { pod, node: n, gpus, gang, terminated } => {
                let mut p = match gang {
                    Some((g, job)) => jobset_pod("ml", &format!("g{g}"), "workers", &job.to_string(), Some("0")),
                    None => {
                        let mut p = jobset_pod("ml", "x", "workers", "0", None);
                        p.metadata.labels = None;
                        p
                    }
                };
                p = bound(with_gpus(p, &format!("p{pod}"), *gpus), &node_name(*n));
                if *terminated {
                    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                        phase: Some("Succeeded".into()),
                        ..Default::default()
                    });
                }
                s.apply_pod(&p);
            }
            Event::PodGone(pod) => s.delete_pod("ml", &format!("p{pod}")),
            Event::Gang { gang, phase, gpus, slots } => {
                let names: Vec<String> = slots.iter().map(|(_, n)| node_name(*n)).collect();
                let slots: Vec<(&str, i32, i32, &str)> = slots
                    .iter()
                    .zip(&names)
                    .enumerate()
                    .map(|(i, ((job, _), node))| ("workers", *job, i32::try_from(i).unwrap_or(0), node.as_str()))
                    .collect();
                s.apply_gang(&gang_with_spec(&format!("g{gang}"), *phase, *gpus, &slots));
            }
            Event::GangGone(gang) => s.delete_gang("ml", &format!("g{gang}")),
            Event::Tick(secs) => {
                *clock += secs;
                s.set_time(at(*clock));
            }
            Event::Assume { pod, node: n, gpus } => s.assume(Assumption {
                namespace: "ml".into(),
                name: format!("p{pod}"),
                node: Arc::from(node_name(*n)),
                gpus: *gpus,
                job: None,
            }),
            Event::Forget(pod) => s.forget("ml", &format!("p{pod}")),
        }
    }

    proptest::proptest! {
        /// The free-GPU index never goes stale: after every event, each node's indexed room is the one worked out
        /// from scratch from the model and the assumed pods, and nodes without a Node object have none.
        #[test]
        fn the_room_index_matches_the_model_after_every_event(
            events in proptest::collection::vec(event(), 1..60),
        ) {
            let mut s = ExtenderState::new(
                ModelConfig { heartbeat_timeout: Duration::from_secs(90), ..Default::default() },
                NOW,
            );
            let mut clock = 0;
            for (i, e) in events.iter().enumerate() {
                apply(&mut s, &mut clock, e);
                let mut known = 0;
                for n in 0..5 {
                    let name = format!("n{n}");
                    let mut scratch = Room::of(s.model(), &name);
                    let assumed: u32 = s.assumed.values()
                        .filter(|a| *a.assumption.node == *name && a.until > s.model().now())
                        .map(|a| a.assumption.gpus)
                        .sum();
                    if let Some(r) = scratch.as_mut() {
                        r.preemptible += assumed;
                    }
                    proptest::prop_assert_eq!(s.room(&name), scratch, "node {} after event {}: {:?}", name, i, e);
                    known += usize::from(scratch.is_some());
                }
                proptest::prop_assert_eq!(s.rooms.len(), known);
            }
        }
    }

    #[test]
    fn gpunodes_without_status_are_not_trusted() {
        let mut s = cluster(&[("a", 8)]);
        let mut g = gpunode("a", 8, 0);
        g.status = None;
        s.apply_gpunode(&g);
        assert_eq!(free(&s, "a"), 0);
        s.apply_gpunode(&gpunode("a", 6, 2));
        assert_eq!(free(&s, "a"), 6);
        s.delete_gpunode("a");
        assert_eq!(free(&s, "a"), 0);
    }
}
