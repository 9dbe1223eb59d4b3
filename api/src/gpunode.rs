//! `GPUNode` (`muster.dev/v1alpha1`, cluster-scoped, one per node, named after and owned by its Node): the
//! node's GPUs as NVML sees them, published by the gpu-agent. Admission trusts a node's GPUs only while its
//! heartbeat is fresh.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "muster.dev",
    version = "v1alpha1",
    kind = "GPUNode",
    plural = "gpunodes",
    singular = "gpunode",
    status = "GPUNodeStatus",
    doc = "One node's GPUs as NVML sees them: health, memory, utilisation, allocation, published by the gpu-agent",
    category = "muster",
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.summary.total"}"#,
    printcolumn = r#"{"name":"Healthy","type":"integer","jsonPath":".status.summary.healthy"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.summary.allocated"}"#,
    printcolumn = r#"{"name":"Free","type":"integer","jsonPath":".status.summary.free"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.heartbeatTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GPUNodeSpec {
    /// The Node this object describes (also its name).
    pub node_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GPUNodeStatus {
    /// Whether the agent could initialise NVML; without it the node reports zero GPUs.
    #[serde(default)]
    pub nvml_available: bool,
    /// Why NVML is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<GpuDevice>,
    #[serde(default)]
    pub summary: GpuSummary,
    /// Refreshed on every publish; admission ignores nodes whose heartbeat is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<Time>,
}

/// Counts over the node's GPUs. `free` = healthy, not allocated to a pod, not busy with a foreign process.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSummary {
    pub total: u32,
    pub healthy: u32,
    pub allocated: u32,
    #[serde(default)]
    pub busy: u32,
    pub free: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// NVML device index (`nvidia-smi -i`).
    pub index: u32,
    #[serde(rename = "uuid")]
    pub uuid: String,
    pub model: String,
    pub pci_bus_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<GpuMemory>,
    /// GPU and memory-controller busy time over the last sample period, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<GpuUtilization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    pub health: GpuHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc: Option<GpuEcc>,
    /// PCI bus ids of the GPUs this one reaches over active NVLinks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlink_peers: Vec<String>,
    /// The pod the kubelet allocated this GPU to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_to: Option<PodRef>,
    /// Compute processes on this GPU that belong to no pod; any makes the GPU busy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_processes: Vec<GpuProcess>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuMemory {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Driver-reserved memory (NVML memory info v2).
    #[serde(default)]
    pub reserved_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuUtilization {
    pub gpu_percent: u32,
    pub memory_percent: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuHealth {
    pub healthy: bool,
    /// Why the GPU is unhealthy, e.g. `XID 79 (GPU has fallen off the bus)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The critical XID that made it unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuEcc {
    pub enabled: bool,
    #[serde(default)]
    pub volatile_uncorrected: u64,
    #[serde(default)]
    pub retired_pages_pending: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuProcess {
    pub pid: u32,
    #[serde(default)]
    pub used_memory_bytes: u64,
}
