//! Fluent fixtures for the gang tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::demand::{Constraints, GangDemand, PodSetDemand};
use super::model::{ClusterModel, GpuReport, ModelConfig, NodeInfo, PodInfo};
use super::nodeset::NodeId;
use super::{GangKey, Resources};

pub const T0: SystemTime = SystemTime::UNIX_EPOCH;

pub fn at(secs: u64) -> SystemTime {
    T0 + Duration::from_secs(secs)
}

pub fn model(topology_keys: &[&str]) -> ClusterModel {
    let mut m = ClusterModel::new(ModelConfig {
        topology_keys: topology_keys.iter().map(|k| (*k).to_owned()).collect(),
        ..ModelConfig::default()
    });
    m.set_time(T0);
    m
}

/// A ready node with 64 cores, 512 GiB and `gpus` healthy GPUs reported at T0.
pub fn add_gpu_node(m: &mut ClusterModel, name: &str, gpus: u32, labels: &[(&str, &str)]) {
    let mut node = NodeInfo::new(name, 64_000, 512 << 30);
    for (k, v) in labels {
        node = node.label(k, v);
    }
    m.apply_node(node);
    m.apply_gpunode(GpuReport::healthy(name, gpus, T0));
}

pub fn id(m: &ClusterModel, name: &str) -> NodeId {
    m.id(name).expect("known node")
}

pub fn pod(name: &str, node: &str, gpus: u32, gang: Option<&GangKey>) -> PodInfo {
    PodInfo {
        namespace: "ns".into(),
        name: name.into(),
        node: node.into(),
        requests: Resources::new(gpus, 0, 0, 1),
        gang: gang.cloned(),
        exclusive_leader: None,
    }
}

pub fn per_node(pairs: &[(&str, u32)]) -> BTreeMap<String, Resources> {
    pairs.iter().map(|(n, g)| ((*n).to_owned(), Resources::new(*g, 0, 0, 1))).collect()
}

/// `key` is `ns/name`; pod sets are (name, jobs, pods per job, GPUs per pod), no CPU or memory.
pub fn gang(key: &str, pod_sets: &[(&str, u32, u32, u32)]) -> GangDemand {
    GangDemand {
        key: GangKey::parse(key),
        queue: "default".into(),
        priority: 0,
        pod_sets: pod_sets
            .iter()
            .map(|&(name, jobs, pods_per_job, gpus)| PodSetDemand {
                name: name.into(),
                jobs,
                pods_per_job,
                per_pod: Resources::new(gpus, 0, 0, 1),
                constraints: Arc::new(Constraints::default()),
                exclusive: None,
            })
            .collect(),
    }
}

pub fn selector(pairs: &[(&str, &str)]) -> Arc<Constraints> {
    Arc::new(Constraints {
        node_selector: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Constraints::default()
    })
}
