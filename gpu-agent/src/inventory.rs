//! What NVML reported, as plain data: the input of every decision the agent makes. [`crate::nvml`] fills it;
//! nothing here calls NVML.

use muster_api::gpunode::{GpuMemory, GpuProcess, GpuUtilization};
use serde::Serialize;

/// One reading of the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub nvml: NvmlState,
    /// By NVML index.
    pub devices: Vec<DeviceReading>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NvmlState {
    /// NVML initialised.
    Up {
        driver_version: Option<String>,
        /// `major.minor`, e.g. `12.8`.
        cuda_driver_version: Option<String>,
    },
    /// No NVML: no library, no driver, no permission. The node reports zero GPUs.
    Down { error: String },
}

impl Default for NvmlState {
    fn default() -> Self {
        NvmlState::Down { error: "not read yet".into() }
    }
}

impl NvmlState {
    pub fn is_up(&self) -> bool {
        matches!(self, NvmlState::Up { .. })
    }
}

impl Inventory {
    /// The reading of a node where NVML could not be initialised.
    pub fn down(error: impl Into<String>) -> Self {
        Inventory { nvml: NvmlState::Down { error: error.into() }, devices: Vec::new() }
    }

    pub fn driver_version(&self) -> Option<&str> {
        match &self.nvml {
            NvmlState::Up { driver_version, .. } => driver_version.as_deref(),
            NvmlState::Down { .. } => None,
        }
    }

    /// The GPUs' UUIDs in index order; when this changes, the XID watcher must register again.
    pub fn uuids(&self) -> Vec<&str> {
        self.devices.iter().map(|d| d.uuid.as_str()).collect()
    }
}

/// One GPU. `None` means NVML does not support the query on this GPU (or it failed; see `failures`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReading {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// Normalised by [`normalize_bus_id`].
    pub pci_bus_id: String,
    /// NVML memory info v2: `used` excludes the driver-reserved memory, as nvidia-smi's `memory.used` does.
    pub memory: Option<GpuMemory>,
    pub utilization: Option<GpuUtilization>,
    pub temperature_celsius: Option<u32>,
    pub power_milliwatts: Option<u32>,
    pub ecc: Option<EccReading>,
    pub mig_enabled: Option<bool>,
    /// UUIDs (`MIG-...`) of the MIG devices on this GPU, for matching the device plugin's MIG resources.
    pub mig_devices: Vec<String>,
    /// Bus ids of the GPUs this one reaches over active NVLinks (directly or through an NVSwitch), sorted.
    pub nvlink_peers: Vec<String>,
    /// Running compute processes. Empty when unknown; see `processes_known`.
    pub processes: Vec<GpuProcess>,
    /// Whether `processes` was read (false on drivers whose process reporting is unsafe, or on error).
    pub processes_known: bool,
    /// NVML answered `GPU_IS_LOST` for this GPU.
    pub lost: bool,
    /// NVML could not give a handle for this GPU (e.g. no permission); its identity is a placeholder.
    pub inaccessible: Option<String>,
}

/// An NVML call that failed with something other than "not supported" or "GPU lost".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallFailure {
    /// The wrapper method, e.g. `power_usage`.
    pub call: &'static str,
    pub gpu: Option<u32>,
    pub error: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EccReading {
    pub enabled: bool,
    pub corrected_volatile: Option<u64>,
    pub uncorrected_volatile: Option<u64>,
    pub retired_pages_pending: Option<bool>,
}

/// NVML writes bus ids as `DDDDDDDD:BB:DD.F` with upper-case hex; older forms use a 4-digit domain. One
/// spelling for comparisons (NVLink remote ends, pod-resources ids) and for labels.
pub fn normalize_bus_id(bus_id: &str) -> String {
    let trimmed = bus_id.trim();
    let mut parts = trimmed.splitn(2, ':');
    let (Some(domain), Some(rest)) = (parts.next(), parts.next()) else {
        return trimmed.to_ascii_uppercase();
    };
    match u32::from_str_radix(domain, 16) {
        Ok(domain) if rest.contains(':') => format!("{domain:08X}:{}", rest.to_ascii_uppercase()),
        _ => trimmed.to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_have_one_spelling() {
        assert_eq!(normalize_bus_id("00000000:18:00.0"), "00000000:18:00.0");
        assert_eq!(normalize_bus_id("0000:1b:00.0"), "00000000:1B:00.0");
        assert_eq!(normalize_bus_id(" 00000001:ab:1f.3 "), "00000001:AB:1F.3");
        assert_eq!(normalize_bus_id("nonsense"), "NONSENSE");
    }

    #[test]
    fn a_down_inventory_has_no_gpus() {
        let inventory = Inventory::down("libnvidia-ml.so.1: cannot open shared object file");
        assert!(!inventory.nvml.is_up());
        assert!(inventory.devices.is_empty());
        assert_eq!(inventory.driver_version(), None);
    }
}
