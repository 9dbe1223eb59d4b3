//! What the extender knows of the cluster, fed from its watches: the gang core's [`ClusterModel`] (nodes, GPU
//! health, bound pods, and every admitted gang's reservation from `Gang.status.placement`), each gang's slots, and
//! which slots bound pods already hold. No I/O: the watch shell calls `apply_*` / `delete_*`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Pod};
use muster_api::{GPUNode, Gang};

use super::slots::{GangRecord, JobRef, pod_slot};
use crate::gang::demand::GangDemand;
use crate::gang::model::{ClusterModel, GpuReport, ModelConfig};
use crate::gang::objects::{node_info, pod_info};
use crate::gang::placement::per_node_of;
use crate::gang::{GangKey, Resources};

/// See the module documentation.
#[derive(Debug)]
pub struct ExtenderState {
    model: ClusterModel,
    gangs: HashMap<GangKey, GangEntry>,
    /// Bound pods of JobSets: the Job they belong to and their node.
    bound: HashMap<(String, String), (GangKey, JobRef, Arc<str>)>,
    /// Per Job of a gang, bound pods per node (what NonIndexed pods need to find a free slot).
    job_pods: HashMap<(GangKey, JobRef), BTreeMap<Arc<str>, u32>>,
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
        ExtenderState { model, gangs: HashMap::new(), bound: HashMap::new(), job_pods: HashMap::new() }
    }

    pub fn model(&self) -> &ClusterModel {
        &self.model
    }

    pub fn gang(&self, key: &GangKey) -> Option<&GangRecord> {
        self.gangs.get(key).map(|e| &e.record)
    }

    /// Bound pods of this Job of this gang, per node.
    pub fn bound_in_job(&self, gang: &GangKey, job: &JobRef) -> Option<&BTreeMap<Arc<str>, u32>> {
        self.job_pods.get(&(gang.clone(), job.clone()))
    }

    /// Heartbeats are judged against this time; the shell advances it periodically.
    pub fn set_time(&mut self, now: SystemTime) {
        self.model.set_time(now);
    }

    pub fn apply_node(&mut self, node: &Node) {
        if let Some(info) = node_info(node) {
            self.model.apply_node(info);
        }
    }

    pub fn delete_node(&mut self, name: &str) {
        self.model.delete_node(name);
    }

    /// A GPUNode without status reads as "NVML unavailable": its node offers no trusted GPUs.
    pub fn apply_gpunode(&mut self, gpunode: &GPUNode) {
        let name = gpunode_node_name(gpunode);
        let status = gpunode.status.clone().unwrap_or_default();
        self.model.apply_gpunode(GpuReport::from_status(name, &status));
    }

    /// The GPUNode of `node` is gone.
    pub fn delete_gpunode(&mut self, node: &str) {
        self.model.delete_gpunode(node);
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
        let key = (namespace.to_owned(), name.to_owned());
        self.unbind(&key);
        if let Some(Ok(slot)) = pod_slot(pod) {
            let node: Arc<str> = Arc::from(info.node.as_str());
            let count = self.job_pods.entry((slot.gang.clone(), slot.job.clone())).or_default();
            *count.entry(Arc::clone(&node)).or_default() += 1;
            self.bound.insert(key, (slot.gang, slot.job, node));
        }
        self.model.apply_pod(info);
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.unbind(&(namespace.to_owned(), name.to_owned()));
        self.model.delete_pod(namespace, name);
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
            self.model.release(&key);
            if let Some(per_node) = &reserved {
                // Cannot fail: the gang's reservation was released just above.
                let _ = self.model.reserve(&key, per_node);
            }
        }
        self.gangs.insert(key, GangEntry { record, reserved });
    }

    pub fn delete_gang(&mut self, namespace: &str, name: &str) {
        let key = GangKey::new(namespace, name);
        self.model.release(&key);
        self.gangs.remove(&key);
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
