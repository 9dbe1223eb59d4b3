//! Which pod holds which GPU.
//!
//! The kubelet knows exactly: its pod-resources API lists, per container, the device ids the NVIDIA device
//! plugin handed out (GPU UUIDs; `MIG-...` UUIDs; `<uuid>::<n>` for shared replicas; plain indices under the
//! plugin's `index` id strategy), and which devices it can hand out at all. When its socket is absent, the
//! API server still knows which pods on this node asked for how many GPUs, but not which ones; then the
//! agent counts those GPUs as held without naming them, and treats every process it sees as possibly
//! foreign — conservative, so admission never counts a GPU that may be taken.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use muster_api::gpunode::PodRef;
use muster_api::keys::GPU_RESOURCE;

use crate::inventory::DeviceReading;

/// Where allocations came from, and what they say.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Allocations {
    /// The kubelet's pod-resources API.
    Kubelet(KubeletView),
    /// Pods bound to this node, from the API server (no device ids).
    ApiServer(Vec<PodGpus>),
    /// Neither is available (e.g. `--dump-json` without a kubelet socket).
    #[default]
    Unknown,
}

impl Allocations {
    /// For logs and the `allocation_source` label.
    pub fn source(&self) -> &'static str {
        match self {
            Allocations::Kubelet(_) => "kubelet",
            Allocations::ApiServer(_) => "apiserver",
            Allocations::Unknown => "none",
        }
    }
}

/// The kubelet's pod-resources answers, reduced to NVIDIA devices.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KubeletView {
    /// Device ids of NVIDIA resources the kubelet can allocate (`GetAllocatableResources`); `None` when the
    /// kubelet does not serve that call.
    pub allocatable: Option<Vec<String>>,
    /// Pods holding NVIDIA devices (`List`).
    pub pods: Vec<PodDevices>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDevices {
    pub pod: PodRef,
    pub device_ids: Vec<String>,
}

/// A pod on this node and the GPUs it requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodGpus {
    pub pod: PodRef,
    pub gpus: u32,
}

/// Resources the NVIDIA device plugin serves: whole GPUs and MIG profiles (`nvidia.com/mig-1g.10gb`).
pub fn is_nvidia_resource(name: &str) -> bool {
    name == GPU_RESOURCE || name.starts_with("nvidia.com/mig-")
}

/// The devices an id from the device plugin names: a GPU by UUID (any case, replica suffix `::n` ignored),
/// a MIG device by its UUID (→ its parent GPU), or a GPU by NVML index.
pub fn resolve_device_id(id: &str, devices: &[DeviceReading]) -> Option<usize> {
    let id = id.split("::").next().unwrap_or(id).trim();
    devices
        .iter()
        .position(|d| d.uuid.eq_ignore_ascii_case(id))
        .or_else(|| devices.iter().position(|d| d.mig_devices.iter().any(|m| m.eq_ignore_ascii_case(id))))
        .or_else(|| id.parse::<u32>().ok().and_then(|index| devices.iter().position(|d| d.index == index)))
}

/// Allocations laid over the devices (same order as `devices`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attribution {
    /// The pod holding each GPU, when known.
    pub allocated_to: Vec<Option<PodRef>>,
    /// Whether the kubelet offers each GPU; `None` when unknown.
    pub advertised: Vec<Option<bool>>,
    /// Whether processes on each GPU may be attributed to its pod (only with the kubelet's view).
    pub attributable: bool,
    /// GPUs held by pods without knowing which (API-server fallback), capped at the GPU count.
    pub unattributed: u32,
    /// Device ids the kubelet reported that match no GPU NVML sees.
    pub unmatched_ids: Vec<String>,
}

pub fn attribute(devices: &[DeviceReading], allocations: &Allocations) -> Attribution {
    let mut out = Attribution {
        allocated_to: vec![None; devices.len()],
        advertised: vec![None; devices.len()],
        ..Default::default()
    };
    match allocations {
        Allocations::Kubelet(view) => {
            out.attributable = true;
            let mut unmatched = BTreeSet::new();
            for pod in &view.pods {
                for id in &pod.device_ids {
                    match resolve_device_id(id, devices) {
                        // A GPU split into MIG devices or shared replicas may hold several pods; the first
                        // (in the kubelet's order) names it.
                        Some(i) => {
                            out.allocated_to[i].get_or_insert_with(|| pod.pod.clone());
                        }
                        None => {
                            unmatched.insert(id.clone());
                        }
                    }
                }
            }
            if let Some(allocatable) = &view.allocatable {
                out.advertised = vec![Some(false); devices.len()];
                for id in allocatable {
                    match resolve_device_id(id, devices) {
                        Some(i) => out.advertised[i] = Some(true),
                        None => {
                            unmatched.insert(id.clone());
                        }
                    }
                }
            }
            out.unmatched_ids = unmatched.into_iter().collect();
        }
        Allocations::ApiServer(pods) => {
            let requested: u64 = pods.iter().map(|p| u64::from(p.gpus)).sum();
            out.unattributed = requested.min(devices.len() as u64) as u32;
        }
        Allocations::Unknown => {}
    }
    out
}

/// The whole GPUs a pod holds while it is on the node: what its containers request of `nvidia.com/gpu`
/// (limits, which equal requests for extended resources), counting init containers the way the scheduler
/// does — the larger of (app containers + sidecars) and any single run-to-completion init container.
/// Pods that finished hold nothing.
pub fn pod_gpus(pod: &Pod) -> u32 {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    let Some(spec) = &pod.spec else { return 0 };
    let gpus = |c: &Container| -> u32 {
        let resources = c.resources.as_ref();
        let quantity = resources
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(GPU_RESOURCE))
            .or_else(|| resources.and_then(|r| r.requests.as_ref()).and_then(|r| r.get(GPU_RESOURCE)));
        quantity.and_then(|q| q.0.trim().parse::<u32>().ok()).unwrap_or(0)
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let is_sidecar = |c: &&Container| c.restart_policy.as_deref() == Some("Always");
    let running: u32 =
        spec.containers.iter().map(gpus).sum::<u32>() + init.iter().filter(is_sidecar).map(gpus).sum::<u32>();
    let init_peak = init.iter().filter(|c| !is_sidecar(c)).map(gpus).max().unwrap_or(0);
    running.max(init_peak)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodSpec, PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn gpu(index: u32) -> DeviceReading {
        DeviceReading { index, uuid: format!("GPU-{index:04}"), ..Default::default() }
    }

    fn pod(name: &str) -> PodRef {
        PodRef { namespace: "ml".into(), name: name.into(), uid: None }
    }

    #[test]
    fn device_ids_in_every_shape_the_device_plugin_uses() {
        let mut devices = vec![gpu(0), gpu(1), gpu(2)];
        devices[2].mig_devices = vec!["MIG-abc".into()];
        assert_eq!(resolve_device_id("GPU-0001", &devices), Some(1));
        assert_eq!(resolve_device_id("gpu-0001", &devices), Some(1));
        assert_eq!(resolve_device_id("GPU-0000::3", &devices), Some(0));
        assert_eq!(resolve_device_id("MIG-abc", &devices), Some(2));
        assert_eq!(resolve_device_id("2", &devices), Some(2));
        assert_eq!(resolve_device_id("GPU-ffff", &devices), None);
    }

    #[test]
    fn the_kubelet_names_the_pod_of_each_gpu() {
        let devices: Vec<_> = (0..4).map(gpu).collect();
        let view = KubeletView {
            allocatable: Some(vec!["GPU-0000".into(), "GPU-0001".into(), "GPU-0002".into(), "GPU-9999".into()]),
            pods: vec![
                PodDevices { pod: pod("a"), device_ids: vec!["GPU-0000".into()] },
                PodDevices { pod: pod("b"), device_ids: vec!["GPU-0002".into(), "GPU-7777".into()] },
            ],
        };
        let out = attribute(&devices, &Allocations::Kubelet(view));
        assert_eq!(out.allocated_to, vec![Some(pod("a")), None, Some(pod("b")), None]);
        assert_eq!(out.advertised, vec![Some(true), Some(true), Some(true), Some(false)]);
        assert_eq!(out.unmatched_ids, vec!["GPU-7777".to_string(), "GPU-9999".to_string()]);
        assert!(out.attributable);
        assert_eq!(out.unattributed, 0);
    }

    #[test]
    fn without_allocatable_nothing_is_judged_unadvertised() {
        let devices = vec![gpu(0)];
        let out = attribute(&devices, &Allocations::Kubelet(KubeletView { allocatable: None, pods: vec![] }));
        assert_eq!(out.advertised, vec![None]);
    }

    #[test]
    fn the_api_server_fallback_counts_without_naming() {
        let devices: Vec<_> = (0..2).map(gpu).collect();
        let pods = vec![PodGpus { pod: pod("a"), gpus: 1 }, PodGpus { pod: pod("b"), gpus: 4 }];
        let out = attribute(&devices, &Allocations::ApiServer(pods));
        assert_eq!(out.allocated_to, vec![None, None]);
        assert_eq!(out.unattributed, 2, "capped at the GPUs there are");
        assert!(!out.attributable);
    }

    fn container(gpus: Option<&str>, restart_policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            restart_policy: restart_policy.map(Into::into),
            resources: gpus.map(|g| ResourceRequirements {
                limits: Some(BTreeMap::from([(GPU_RESOURCE.to_string(), Quantity(g.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn gpu_pod(containers: Vec<Container>, init: Vec<Container>, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec { containers, init_containers: Some(init), ..Default::default() }),
            status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_gpu_requests() {
        let two = gpu_pod(
            vec![container(Some("1"), None), container(Some("1"), None), container(None, None)],
            vec![],
            "Running",
        );
        assert_eq!(pod_gpus(&two), 2);
        let init_peak = gpu_pod(vec![container(Some("1"), None)], vec![container(Some("4"), None)], "Pending");
        assert_eq!(pod_gpus(&init_peak), 4);
        let sidecar = gpu_pod(vec![container(Some("2"), None)], vec![container(Some("1"), Some("Always"))], "Running");
        assert_eq!(pod_gpus(&sidecar), 3);
        let done = gpu_pod(vec![container(Some("8"), None)], vec![], "Succeeded");
        assert_eq!(pod_gpus(&done), 0);
        let bad = gpu_pod(vec![container(Some("lots"), None)], vec![], "Running");
        assert_eq!(pod_gpus(&bad), 0);
    }

    #[test]
    fn nvidia_resources() {
        assert!(is_nvidia_resource("nvidia.com/gpu"));
        assert!(is_nvidia_resource("nvidia.com/mig-1g.10gb"));
        assert!(!is_nvidia_resource("amd.com/gpu"));
    }
}
