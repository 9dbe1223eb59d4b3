//! A whole-cluster snapshot (plain lists of Nodes, GPUNodes, bound Pods and Gangs) turned into a [`ClusterModel`]
//! in one go, with the same converters the admission controller feeds its model with event by event.
//!
//! For tools that look at the cluster once (the `kubectl-muster` plugin) and for a controller that rebuilds its
//! model from a fresh list. What counts as a reservation is decided by [`recorded_reservation`], the rule the
//! admission controller also follows after a restart: an Admitted or Running gang holds what its
//! `status.placement` says.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Pod};
use muster_api::gang::{Gang, GangPhase, SlotPlacement};
use muster_api::gpunode::GPUNode;

use super::GangKey;
use super::demand::GangDemand;
use super::model::{ClusterModel, GpuReport, ModelConfig};
use super::objects;
use super::placement::{per_node_of, reserve_slots};

/// The objects a model is built from, as listed. Pods may be all pods or only the bound, non-terminated ones
/// (field selector `spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed`): the others hold nothing and are
/// skipped either way.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot<'a> {
    pub nodes: &'a [Node],
    pub gpunodes: &'a [GPUNode],
    pub pods: &'a [Pod],
    pub gangs: &'a [Gang],
}

/// Something in the snapshot that could not be taken into account; the model is built without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotIssue {
    #[error("gang {gang} is {phase:?} but its demand cannot be read ({reason}); its reservation is not counted")]
    UnreadableDemand { gang: GangKey, phase: GangPhase, reason: String },
    #[error("gang {gang}'s placement names pod set {pod_set}, which its spec lacks; its reservation is not counted")]
    UnknownPodSet { gang: GangKey, pod_set: String },
    #[error("gang {0} has no placement recorded although it is admitted; it reserves nothing")]
    NoPlacement(GangKey),
}

/// What an Admitted or Running gang reserves: its demand and recorded `status.placement` (every slot of a pod set
/// the demand has); `Ok(None)` for gangs in any other phase (or without name or namespace), which reserve nothing.
pub fn recorded_reservation(gang: &Gang) -> Result<Option<(GangDemand, &[SlotPlacement])>, SnapshotIssue> {
    let (Some(name), Some(namespace)) = (gang.metadata.name.as_deref(), gang.metadata.namespace.as_deref()) else {
        return Ok(None);
    };
    let Some(status) = gang.status.as_ref().filter(|s| matches!(s.phase, GangPhase::Admitted | GangPhase::Running))
    else {
        return Ok(None);
    };
    let key = GangKey::new(namespace, name);
    if status.placement.is_empty() {
        return Err(SnapshotIssue::NoPlacement(key));
    }
    let demand = GangDemand::from_spec(key.clone(), &gang.spec).map_err(|e| SnapshotIssue::UnreadableDemand {
        gang: key.clone(),
        phase: status.phase,
        reason: e.to_string(),
    })?;
    per_node_of(&demand, &status.placement).map_err(|pod_set| SnapshotIssue::UnknownPodSet { gang: key, pod_set })?;
    Ok(Some((demand, &status.placement)))
}

/// Nodes held for the heads of queues, as their Gangs' statuses publish them: node name → the gang it is held for.
pub type HeldNodes = BTreeMap<String, GangKey>;

/// The holds of waiting gangs (`status.heldNodes`); admission clears them once a gang stops waiting.
pub fn recorded_holds(gangs: &[Gang]) -> HeldNodes {
    let mut held = HeldNodes::new();
    for gang in gangs {
        let (Some(name), Some(namespace)) = (gang.metadata.name.as_deref(), gang.metadata.namespace.as_deref()) else {
            continue;
        };
        let Some(status) = gang.status.as_ref().filter(|s| matches!(s.phase, GangPhase::Pending | GangPhase::Requeued))
        else {
            continue;
        };
        for node in &status.held_nodes {
            held.insert(node.clone(), GangKey::new(namespace, name));
        }
    }
    held
}

/// The model of the snapshot at `now` (heartbeats are judged against it), and what had to be left out.
pub fn build_model(
    config: ModelConfig,
    now: SystemTime,
    snapshot: &Snapshot<'_>,
) -> (ClusterModel, Vec<SnapshotIssue>) {
    let mut model = ClusterModel::new(config);
    model.set_time(now);
    let mut issues = Vec::new();
    for node in snapshot.nodes {
        if let Some(info) = objects::node_info(node) {
            model.apply_node(info);
        }
    }
    for gpunode in snapshot.gpunodes {
        if let (Some(name), Some(status)) = (gpunode.metadata.name.as_deref(), gpunode.status.as_ref()) {
            model.apply_gpunode(GpuReport::from_status(name, status));
        }
    }
    for pod in snapshot.pods {
        if let Some(info) = objects::pod_info(pod) {
            model.apply_pod(info);
        }
    }
    for gang in snapshot.gangs {
        match recorded_reservation(gang) {
            // Keys are unique in a list, so a reservation is never refused as a duplicate.
            Ok(Some((demand, slots))) => {
                let _ = reserve_slots(&mut model, &demand, slots);
            }
            Ok(None) => {}
            Err(issue) => issues.push(issue),
        }
    }
    (model, issues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn rfc3339(t: SystemTime) -> String {
        k8s_openapi::jiff::Timestamp::try_from(t).expect("time").to_string()
    }

    fn node(name: &str, ready: bool) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"pool": "h100"}},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .expect("node")
    }

    fn gpunode(name: &str, unhealthy: &[(u32, u64)], heartbeat: SystemTime) -> GPUNode {
        let devices: Vec<Value> = (0..8u32)
            .map(|i| {
                let health = match unhealthy.iter().find(|(g, _)| *g == i) {
                    Some((_, xid)) => json!({"healthy": false, "xid": xid, "reason": format!("XID {xid}")}),
                    None => json!({"healthy": true}),
                };
                json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "model": "H100", "pciBusId": "0", "health": health})
            })
            .collect();
        serde_json::from_value(json!({"apiVersion": "muster.dev/v1alpha1", "kind": "GPUNode",
            "metadata": {"name": name}, "spec": {"nodeName": name},
            "status": {"nvmlAvailable": true, "devices": devices, "heartbeatTime": rfc3339(heartbeat)}}))
        .expect("gpunode")
    }

    fn pod(name: &str, node: &str, gpus: u32, jobset: Option<&str>, phase: &str) -> Pod {
        let labels = jobset.map_or_else(|| json!({}), |j| json!({"jobset.sigs.k8s.io/jobset-name": j}));
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ml", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
            "status": {"phase": phase}}))
        .expect("pod")
    }

    fn gang(name: &str, phase: &str, placement: &[(&str, &str)]) -> Gang {
        let placement: Vec<Value> = placement
            .iter()
            .enumerate()
            .map(|(i, (ps, node))| json!({"podSet": ps, "jobIndex": i, "podIndex": 0, "node": node}))
            .collect();
        serde_json::from_value(json!({"apiVersion": "muster.dev/v1alpha1", "kind": "Gang",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"queue": "default", "totalGPUs": 8 * placement.len(),
                     "podSets": [{"name": "workers", "jobs": 2, "podsPerJob": 1, "gpusPerPod": 8}]},
            "status": {"phase": phase, "placement": placement}}))
        .expect("gang")
    }

    #[test]
    fn every_kind_of_object_lands_in_the_model() {
        let nodes = [node("gpu-0", true), node("gpu-1", true), node("gpu-2", true), node("gpu-3", false)];
        let gpunodes = [
            gpunode("gpu-0", &[], at(0)),
            gpunode("gpu-1", &[(3, 79)], at(0)),
            // Fresh at 60 s, stale at 100 s (the default timeout is 90 s).
            gpunode("gpu-2", &[], at(0)),
        ];
        let pods = [
            pod("foreign", "gpu-1", 2, None, "Running"),
            pod("done", "gpu-1", 4, None, "Succeeded"),
            pod("a-w-0", "gpu-0", 8, Some("a"), "Running"),
        ];
        let gangs = [
            gang("a", "Running", &[("workers", "gpu-0"), ("workers", "gpu-1")]),
            gang("waiting", "Pending", &[]),
            gang("done", "Finished", &[("workers", "gpu-0")]),
        ];
        let snapshot = Snapshot { nodes: &nodes, gpunodes: &gpunodes, pods: &pods, gangs: &gangs };
        let (m, issues) = build_model(ModelConfig::default(), at(60), &snapshot);
        assert!(issues.is_empty(), "{issues:?}");
        let free = |n: &str| m.slot_by_name(n).map(|s| (s.capacity.gpus, s.free.gpus));
        // The gang's pod on its reserved node counts once.
        assert_eq!(free("gpu-0"), Some((8, 0)));
        // 7 healthy; 2 held by a running pod of no gang, 8 reserved for ml/a: nothing free. The finished pod holds
        // nothing.
        assert_eq!(free("gpu-1"), Some((7, 0)));
        assert_eq!(free("gpu-2"), Some((8, 8)));
        assert_eq!(free("gpu-3"), Some((0, 0)), "no GPUNode: no trusted GPUs");
        let reserved = m.reservation(&GangKey::new("ml", "a")).expect("ml/a reserves");
        assert_eq!(reserved.keys().map(String::as_str).collect::<Vec<_>>(), ["gpu-0", "gpu-1"]);
        assert_eq!(m.reservations().count(), 1, "pending and finished gangs reserve nothing");
        assert!(m.slot_by_name("gpu-3").is_some_and(|s| s.node.as_ref().is_some_and(|n| !n.ready)));

        // Judged later, gpu-2's heartbeat is stale and its GPUs are not offered.
        let (m, _) = build_model(ModelConfig::default(), at(100), &snapshot);
        assert_eq!(m.slot_by_name("gpu-2").map(|s| s.free.gpus), Some(0));
    }

    #[test]
    fn unreadable_reservations_are_reported_not_fatal() {
        let nodes = [node("gpu-0", true)];
        let gpunodes = [gpunode("gpu-0", &[], at(0))];
        let bad_pod_set = gang("x", "Admitted", &[("nope", "gpu-0")]);
        let mut bad_spec = gang("y", "Running", &[("workers", "gpu-0")]);
        bad_spec.spec.pod_sets[0].jobs = -1;
        let unplaced = gang("z", "Admitted", &[]);
        let good = gang("ok", "Admitted", &[("workers", "gpu-0")]);
        let gangs = [bad_pod_set, bad_spec, unplaced, good];
        let snapshot = Snapshot { nodes: &nodes, gpunodes: &gpunodes, pods: &[], gangs: &gangs };
        let (m, issues) = build_model(ModelConfig::default(), at(1), &snapshot);
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert!(matches!(&issues[0], SnapshotIssue::UnknownPodSet { pod_set, .. } if pod_set == "nope"));
        assert!(matches!(&issues[1], SnapshotIssue::UnreadableDemand { gang, .. } if gang.as_str() == "ml/y"));
        assert_eq!(issues[2], SnapshotIssue::NoPlacement(GangKey::new("ml", "z")));
        assert!(issues[1].to_string().contains("not counted"), "{}", issues[1]);
        assert_eq!(m.slot_by_name("gpu-0").map(|s| s.free.gpus), Some(0), "the readable one still counts");
    }

    #[test]
    fn only_waiting_gangs_hold_nodes() {
        let with_hold = |name: &str, phase: &str, nodes: &[&str]| {
            let mut g = gang(name, phase, &[]);
            if let Some(s) = g.status.as_mut() {
                s.held_nodes = nodes.iter().map(|n| (*n).to_owned()).collect();
            }
            g
        };
        let gangs = [
            with_hold("head", "Pending", &["gpu-0", "gpu-1"]),
            with_hold("other-queue-head", "Requeued", &["gpu-2"]),
            // Stale: a gang that stopped waiting holds nothing, whatever its status still says.
            with_hold("admitted", "Admitted", &["gpu-3"]),
        ];
        let held = recorded_holds(&gangs);
        let held: Vec<(&str, &str)> = held.iter().map(|(n, g)| (n.as_str(), g.as_str())).collect();
        assert_eq!(held, [("gpu-0", "ml/head"), ("gpu-1", "ml/head"), ("gpu-2", "ml/other-queue-head")]);
    }
}
