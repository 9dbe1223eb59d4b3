//! The JSON fixture: what the fake driver reports. Field names are camelCase; every field but a device's
//! `uuid` and `pciBusId` has a default, so a fixture states only what a test cares about. Unknown fields are
//! rejected, so a typo fails loudly instead of silently testing the default.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::abi::{self, Return};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fixture {
    /// `nvmlSystemGetDriverVersion`. Below 510 the `_v2` memory and `_v3` process calls answer
    /// `FUNCTION_NOT_FOUND`, as those symbols do on drivers older than R510.
    #[serde(default = "default_driver_version")]
    pub driver_version: String,
    /// `nvmlSystemGetNVMLVersion`; default `12.<driverVersion>`.
    #[serde(default)]
    pub nvml_version: Option<String>,
    /// `nvmlSystemGetCudaDriverVersion_v2`, e.g. 12080 for CUDA 12.8.
    #[serde(default = "default_cuda_driver_version")]
    pub cuda_driver_version: i32,
    /// Make `nvmlInit_v2` fail with this code (e.g. `DRIVER_NOT_LOADED`).
    #[serde(default)]
    pub init_error: Option<ReturnCode>,
    #[serde(default)]
    pub devices: Vec<Device>,
    /// XID events, delivered in order, each once: to the first event set that waits with the event's GPU
    /// registered for XIDs. Appending to this list in a running test (rewrite the file) delivers the new ones.
    #[serde(default)]
    pub xid_events: Vec<XidEvent>,
    /// Make every `nvmlEventSetWait_v2` fail with this code instead of delivering or timing out.
    #[serde(default)]
    pub event_wait_error: Option<ReturnCode>,
    /// Symbol name → return code, for every device (a device's own `errors` win).
    #[serde(default)]
    pub errors: BTreeMap<String, ReturnCode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub uuid: String,
    #[serde(default = "default_name")]
    pub name: String,
    /// `DDDDDDDD:BB:DD.F`, the form `nvmlDeviceGetPciInfo_v3` reports.
    pub pci_bus_id: String,
    #[serde(default = "default_pci_device_id")]
    pub pci_device_id: u32,
    #[serde(default)]
    pub pci_sub_system_id: u32,
    /// `/dev/nvidiaN`; defaults to the device's index.
    #[serde(default)]
    pub minor_number: Option<u32>,
    #[serde(default)]
    pub memory: Memory,
    #[serde(default)]
    pub utilization: Utilization,
    /// GPU core temperature, °C.
    #[serde(default = "default_temperature")]
    pub temperature: u32,
    /// `nvmlDeviceGetPowerUsage`, milliwatts.
    #[serde(default = "default_power")]
    pub power_milliwatts: u32,
    #[serde(default)]
    pub ecc: Ecc,
    #[serde(default)]
    pub mig: Mig,
    /// Link number = position in the list (at most 18 links).
    #[serde(default)]
    pub nvlinks: Vec<NvLink>,
    /// Compute processes (`nvmlDeviceGetComputeRunningProcesses_v3`).
    #[serde(default)]
    pub processes: Vec<Process>,
    /// `nvmlDeviceGetSupportedEventTypes` bitmask; default single/double-bit ECC, P-state, XID, clock.
    #[serde(default = "default_supported_events")]
    pub supported_events: u64,
    /// The GPU fell off the bus: every telemetry call answers `GPU_IS_LOST` (identity calls still work, as
    /// they are served from the driver's cache).
    #[serde(default)]
    pub lost: bool,
    /// Symbol name → return code for this device only.
    #[serde(default)]
    pub errors: BTreeMap<String, ReturnCode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Memory {
    /// Bytes.
    #[serde(default = "default_memory_total")]
    pub total: u64,
    #[serde(default = "default_memory_reserved")]
    pub reserved: u64,
    #[serde(default)]
    pub used: u64,
    /// Default: total − reserved − used.
    #[serde(default)]
    pub free: Option<u64>,
}

impl Default for Memory {
    fn default() -> Self {
        Self { total: default_memory_total(), reserved: default_memory_reserved(), used: 0, free: None }
    }
}

impl Memory {
    pub fn free(&self) -> u64 {
        self.free.unwrap_or_else(|| self.total.saturating_sub(self.reserved).saturating_sub(self.used))
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Utilization {
    /// Percent.
    #[serde(default)]
    pub gpu: u32,
    #[serde(default)]
    pub memory: u32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ecc {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub pending_enabled: Option<bool>,
    #[serde(default)]
    pub corrected_volatile: u64,
    #[serde(default)]
    pub uncorrected_volatile: u64,
    #[serde(default)]
    pub corrected_aggregate: u64,
    #[serde(default)]
    pub uncorrected_aggregate: u64,
    #[serde(default)]
    pub retired_pages_pending: bool,
}

impl Default for Ecc {
    fn default() -> Self {
        Self {
            enabled: true,
            pending_enabled: None,
            corrected_volatile: 0,
            uncorrected_volatile: 0,
            corrected_aggregate: 0,
            uncorrected_aggregate: 0,
            retired_pages_pending: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mig {
    #[serde(default)]
    pub enabled: bool,
    /// Default: same as `enabled`.
    #[serde(default)]
    pub pending: Option<bool>,
    /// MIG devices (only reported while `enabled`).
    #[serde(default)]
    pub devices: Vec<MigDevice>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigDevice {
    /// `MIG-...`.
    pub uuid: String,
    #[serde(default)]
    pub memory: Memory,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NvLink {
    #[serde(default = "yes")]
    pub active: bool,
    pub remote_pci_bus_id: String,
    #[serde(default)]
    pub remote_type: RemoteType,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RemoteType {
    #[default]
    Gpu,
    Switch,
    Ibmnpu,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Process {
    pub pid: u32,
    /// Bytes; absent means NVML's "not available".
    #[serde(default)]
    pub used_memory: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XidEvent {
    /// Device index.
    pub gpu: u32,
    pub xid: u64,
    #[serde(default)]
    pub gpu_instance_id: Option<u32>,
    #[serde(default)]
    pub compute_instance_id: Option<u32>,
}

/// An NVML return code, written as its name (`"GPU_IS_LOST"`, `"NVML_ERROR_NOT_SUPPORTED"`) or its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnCode(pub Return);

impl<'de> Deserialize<'de> for ReturnCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ReturnCode(n)),
            Raw::Name(name) => abi::return_code_by_name(&name)
                .map(ReturnCode)
                .ok_or_else(|| de::Error::custom(format!("unknown NVML return code {name:?}"))),
        }
    }
}

fn default_driver_version() -> String {
    "570.124.06".into()
}
fn default_cuda_driver_version() -> i32 {
    12080
}
fn default_name() -> String {
    "NVIDIA H100 80GB HBM3".into()
}
fn default_pci_device_id() -> u32 {
    0x2330_10DE
}
fn default_temperature() -> u32 {
    35
}
fn default_power() -> u32 {
    70_000
}
/// An H100 80GB HBM3: 81559 MiB total, 501481472 bytes reserved (a real capture, see gpu-nvml.md §2).
fn default_memory_total() -> u64 {
    81_559 * 1024 * 1024
}
fn default_memory_reserved() -> u64 {
    501_481_472
}
fn default_supported_events() -> u64 {
    abi::EVENT_SINGLE_BIT_ECC | abi::EVENT_DOUBLE_BIT_ECC | abi::EVENT_PSTATE | abi::EVENT_XID | abi::EVENT_CLOCK
}
fn yes() -> bool {
    true
}

/// Splits `DDDDDDDD:BB:DD.F` (or `DDDD:BB:DD.F`) into domain, bus, device numbers.
pub fn parse_bus_id(bus_id: &str) -> Option<(u32, u32, u32)> {
    let mut parts = bus_id.split(':');
    let domain = u32::from_str_radix(parts.next()?, 16).ok()?;
    let bus = u32::from_str_radix(parts.next()?, 16).ok()?;
    let (device, _function) = parts.next()?.split_once('.')?;
    let device = u32::from_str_radix(device, 16).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((domain, bus, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_fixture_gets_h100_defaults() {
        let fixture: Fixture =
            serde_json::from_str(r#"{"devices":[{"uuid":"GPU-0","pciBusId":"00000000:18:00.0"}]}"#).expect("parse");
        let device = &fixture.devices[0];
        assert_eq!(device.memory.total, 85_520_809_984);
        assert_eq!(device.memory.free(), 85_520_809_984 - 501_481_472);
        assert!(device.ecc.enabled);
        assert_eq!(fixture.driver_version, "570.124.06");
    }

    #[test]
    fn return_codes_by_name_or_number() {
        let fixture: Fixture = serde_json::from_str(
            r#"{"errors":{"nvmlDeviceGetPowerUsage":"NOT_SUPPORTED","nvmlDeviceGetTemperature":"NVML_ERROR_GPU_IS_LOST","nvmlDeviceGetName":999}}"#,
        )
        .expect("parse");
        assert_eq!(fixture.errors["nvmlDeviceGetPowerUsage"], ReturnCode(abi::ERROR_NOT_SUPPORTED));
        assert_eq!(fixture.errors["nvmlDeviceGetTemperature"], ReturnCode(abi::ERROR_GPU_IS_LOST));
        assert_eq!(fixture.errors["nvmlDeviceGetName"], ReturnCode(abi::ERROR_UNKNOWN));
    }

    #[test]
    fn typos_are_rejected() {
        let err = serde_json::from_str::<Fixture>(r#"{"devices":[{"uuid":"GPU-0","pciBusId":"0:1:2.0","lsot":true}]}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("lsot"), "{err}");
    }

    #[test]
    fn bus_ids() {
        assert_eq!(parse_bus_id("00000000:18:00.0"), Some((0, 0x18, 0)));
        assert_eq!(parse_bus_id("0001:AB:1F.3"), Some((1, 0xab, 0x1f)));
        assert_eq!(parse_bus_id("18:00.0"), None);
    }
}
