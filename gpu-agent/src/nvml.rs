//! The NVML shell: initialisation, the reading of every GPU, and the XID watcher. Every function here blocks
//! (NVML is synchronous FFI); the agent calls them from `spawn_blocking` or its own thread, never on the
//! async runtime. Decisions are elsewhere; this turns NVML answers into [`Inventory`] and [`HealthBook`] data.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_api::gpunode::{GpuMemory, GpuProcess, GpuUtilization};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, P2pCapabilitiesIndex, P2pStatus, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};

use crate::health::{HealthBook, XidPolicy};
use crate::inventory::{CallFailure, DeviceReading, EccReading, Inventory, NvmlState, normalize_bus_id};
use crate::xid;

/// `NVML_NVLINK_MAX_LINKS`.
const MAX_NVLINKS: u32 = 18;

/// Loads NVML: `library` (a path) or, by default, `libnvidia-ml.so.1` through the dynamic linker.
pub fn init(library: Option<&Path>) -> Result<Nvml, NvmlError> {
    let mut builder = Nvml::builder();
    if let Some(path) = library {
        builder.lib_path(path.as_os_str());
    }
    builder.init()
}

/// Why NVML is unavailable, for the status and the log.
pub fn describe_init_error(library: Option<&Path>, error: &NvmlError) -> String {
    let name = library.map_or_else(|| "libnvidia-ml.so.1".to_string(), |p| p.display().to_string());
    match error {
        NvmlError::LibloadingError(e) => format!("cannot load {name}: {e}"),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".into(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".into(),
        other => format!("NVML initialisation failed: {other}"),
    }
}

/// One pass over the GPUs.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub inventory: Inventory,
    pub failures: Vec<CallFailure>,
}

/// Reads every GPU. Holds what does not change between readings (NVLink topology) and the last identities
/// (so a GPU that is lost keeps its UUID).
pub struct InventoryReader {
    nvml: Arc<Nvml>,
    processes_readable: bool,
    /// NVLink peers by GPU, valid while the GPUs (by UUID, in order) are these.
    topology: Option<(Vec<String>, Vec<Vec<String>>)>,
    previous: Vec<DeviceReading>,
}

impl InventoryReader {
    pub fn new(nvml: Arc<Nvml>, processes_readable: bool) -> Self {
        InventoryReader { nvml, processes_readable, topology: None, previous: Vec::new() }
    }

    pub fn read(&mut self) -> Reading {
        let nvml = self.nvml.clone();
        let mut failures = Vec::new();
        let driver_version = nvml.sys_driver_version().ok();
        let cuda_driver_version = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!("{}.{}", nvml_wrapper::cuda_driver_version_major(v), nvml_wrapper::cuda_driver_version_minor(v))
        });
        let state = NvmlState::Up { driver_version, cuda_driver_version };
        let count = match nvml.device_count() {
            Ok(count) => count,
            Err(error) => {
                failures.push(CallFailure { call: "device_count", gpu: None, error: error.to_string() });
                return Reading { inventory: Inventory { nvml: state, devices: Vec::new() }, failures };
            }
        };
        let mut handles: Vec<Option<Device<'_>>> = Vec::with_capacity(count as usize);
        let mut devices = Vec::with_capacity(count as usize);
        for index in 0..count {
            match nvml.device_by_index(index) {
                Ok(device) => {
                    devices.push(read_device(index, &device, self.processes_readable, &mut failures));
                    handles.push(Some(device));
                }
                Err(error) => {
                    let known = self.previous.iter().find(|d| d.index == index);
                    let mut reading = DeviceReading {
                        index,
                        uuid: known.map_or_else(|| format!("GPU-UNKNOWN-{index}"), |d| d.uuid.clone()),
                        name: known.map(|d| d.name.clone()).unwrap_or_default(),
                        pci_bus_id: known.map(|d| d.pci_bus_id.clone()).unwrap_or_default(),
                        ..Default::default()
                    };
                    match error {
                        NvmlError::GpuLost => reading.lost = true,
                        other => reading.inaccessible = Some(other.to_string()),
                    }
                    devices.push(reading);
                    handles.push(None);
                }
            }
        }
        // A GPU whose UUID could not be read this time keeps the one it had.
        for device in &mut devices {
            if device.uuid.starts_with("GPU-UNKNOWN-")
                && let Some(known) = self.previous.iter().find(|d| d.index == device.index)
            {
                device.uuid = known.uuid.clone();
            }
        }

        let uuids: Vec<String> = devices.iter().map(|d| d.uuid.clone()).collect();
        let cached =
            self.topology.as_ref().filter(|(for_uuids, _)| *for_uuids == uuids).map(|(_, peers)| peers.clone());
        let peers = match cached {
            Some(peers) => peers,
            None => {
                let peers = nvlink_peers(&handles, &devices, &mut failures);
                // A lost GPU's links are unknown; read the topology again next time rather than cache a hole.
                if devices.iter().all(|d| !d.lost && d.inaccessible.is_none()) {
                    self.topology = Some((uuids, peers.clone()));
                }
                peers
            }
        };
        for (device, peers) in devices.iter_mut().zip(peers) {
            device.nvlink_peers = peers;
        }
        drop(handles);
        self.previous = devices.clone();
        Reading { inventory: Inventory { nvml: state, devices }, failures }
    }
}

/// Turns an NVML answer into a value: "not supported" and, on old drivers, "function not found" are simply
/// absent; "GPU lost" marks the GPU; anything else is recorded as a failure.
struct Calls<'a> {
    gpu: u32,
    lost: bool,
    failures: &'a mut Vec<CallFailure>,
}

impl Calls<'_> {
    fn take<T>(&mut self, call: &'static str, result: Result<T, NvmlError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(NvmlError::NotSupported | NvmlError::FunctionNotFound) => None,
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(error) => {
                self.failures.push(CallFailure { call, gpu: Some(self.gpu), error: error.to_string() });
                None
            }
        }
    }
}

fn read_device(
    index: u32,
    device: &Device<'_>,
    processes_readable: bool,
    failures: &mut Vec<CallFailure>,
) -> DeviceReading {
    let mut calls = Calls { gpu: index, lost: false, failures };
    let uuid = calls.take("uuid", device.uuid()).unwrap_or_else(|| format!("GPU-UNKNOWN-{index}"));
    let name = calls.take("name", device.name()).unwrap_or_default();
    let pci_bus_id = calls.take("pci_info", device.pci_info()).map(|p| normalize_bus_id(&p.bus_id)).unwrap_or_default();
    let memory = calls.take("memory_info", device.memory_info()).map(|m| GpuMemory {
        total_bytes: m.total,
        used_bytes: m.used,
        free_bytes: m.free,
        reserved_bytes: m.reserved,
    });
    let utilization = calls
        .take("utilization_rates", device.utilization_rates())
        .map(|u| GpuUtilization { gpu_percent: u.gpu, memory_percent: u.memory });
    let temperature_celsius = calls.take("temperature", device.temperature(TemperatureSensor::Gpu));
    let power_milliwatts = calls.take("power_usage", device.power_usage());
    let ecc = calls.take("is_ecc_enabled", device.is_ecc_enabled()).map(|mode| {
        let enabled = mode.currently_enabled;
        EccReading {
            enabled,
            corrected_volatile: enabled
                .then(|| {
                    calls
                        .take("total_ecc_errors", device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile))
                })
                .flatten(),
            uncorrected_volatile: enabled
                .then(|| {
                    calls.take(
                        "total_ecc_errors",
                        device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
                    )
                })
                .flatten(),
            retired_pages_pending: enabled
                .then(|| calls.take("are_pages_pending_retired", device.are_pages_pending_retired()))
                .flatten(),
        }
    });
    let mig_enabled = calls.take("mig_mode", device.mig_mode()).map(|m| m.current == 1);
    let mut mig_devices = Vec::new();
    if mig_enabled == Some(true) {
        // The count is the maximum the GPU supports; unused slots answer "not found".
        let max = calls.take("mig_device_count", device.mig_device_count()).unwrap_or(0);
        for slot in 0..max {
            match device.mig_device_by_index(slot) {
                Ok(mig) => {
                    if let Some(uuid) = calls.take("uuid", mig.uuid()) {
                        mig_devices.push(uuid);
                    }
                }
                Err(NvmlError::NotFound | NvmlError::InvalidArg) => {}
                Err(error) => {
                    calls.take::<()>("mig_device_by_index", Err(error));
                }
            }
        }
    }
    let (processes, processes_known) = if processes_readable {
        match calls.take("running_compute_processes", device.running_compute_processes()) {
            Some(list) => (
                list.into_iter()
                    .map(|p| GpuProcess {
                        pid: p.pid,
                        used_memory_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(bytes) => bytes,
                            UsedGpuMemory::Unavailable => 0,
                        },
                    })
                    .collect(),
                true,
            ),
            None => (Vec::new(), false),
        }
    } else {
        (Vec::new(), false)
    };
    DeviceReading {
        index,
        uuid,
        name,
        pci_bus_id,
        memory,
        utilization,
        temperature_celsius,
        power_milliwatts,
        ecc,
        mig_enabled,
        mig_devices,
        nvlink_peers: Vec::new(),
        processes,
        processes_known,
        lost: calls.lost,
        inaccessible: None,
    }
}

/// Each GPU's NVLink peers, by bus id. A link whose far end is another GPU names it directly. On NVSwitch
/// systems the far end is the switch, so a GPU with a switch link asks NVML, for every other GPU, whether
/// they can talk over NVLink (`P2P_CAPS_INDEX_NVLINK`).
fn nvlink_peers(
    handles: &[Option<Device<'_>>],
    devices: &[DeviceReading],
    failures: &mut Vec<CallFailure>,
) -> Vec<Vec<String>> {
    let gpu_bus_ids: Vec<&str> = devices.iter().map(|d| d.pci_bus_id.as_str()).collect();
    handles
        .iter()
        .enumerate()
        .map(|(i, handle)| {
            let Some(device) = handle else { return Vec::new() };
            let mut peers = BTreeSet::new();
            let mut via_switch = false;
            for number in 0..MAX_NVLINKS {
                let link = device.link_wrapper_for(number);
                match link.is_active() {
                    Ok(true) => {}
                    Ok(false) | Err(NvmlError::NotSupported | NvmlError::InvalidArg) => continue,
                    Err(error) => {
                        failures.push(CallFailure {
                            call: "nvlink.is_active",
                            gpu: Some(devices[i].index),
                            error: error.to_string(),
                        });
                        continue;
                    }
                }
                match link.remote_pci_info() {
                    Ok(remote) => {
                        let remote = normalize_bus_id(&remote.bus_id);
                        match gpu_bus_ids.iter().position(|b| *b == remote) {
                            Some(j) if j != i => {
                                peers.insert(remote);
                            }
                            Some(_) => {}
                            None => via_switch = true,
                        }
                    }
                    Err(NvmlError::NotSupported) => {}
                    Err(error) => failures.push(CallFailure {
                        call: "nvlink.remote_pci_info",
                        gpu: Some(devices[i].index),
                        error: error.to_string(),
                    }),
                }
            }
            if via_switch {
                for (j, other) in handles.iter().enumerate() {
                    let Some(other) = other.as_ref().filter(|_| j != i) else { continue };
                    if let Ok(P2pStatus::Ok) = device.p2p_status(other, P2pCapabilitiesIndex::NvLink) {
                        peers.insert(devices[j].pci_bus_id.clone());
                    }
                }
            }
            peers.into_iter().collect()
        })
        .collect()
}

/// How the watcher waits.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// One `nvmlEventSetWait` call; also how quickly the watcher notices `stop` and `rescan`.
    pub wait: Duration,
    /// Return at the first wait that times out (for `--dump-json`: take what is pending, then stop).
    pub until_idle: bool,
}

/// Flags the agent sets for the watcher thread.
#[derive(Debug, Default)]
pub struct WatchControl {
    pub stop: AtomicBool,
    /// The GPUs changed: register again.
    pub rescan: AtomicBool,
}

/// The events that can matter to health. The device plugin registers the same three; only XIDs change
/// health, but an ECC event bit that is supported must be registered for NVML to raise the XID that follows.
fn wanted_events() -> EventTypes {
    EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR | EventTypes::SINGLE_BIT_ECC_ERROR
}

/// Watches for XID events and writes what it sees into `book`, calling `on_change` when a GPU's health
/// changes. Blocks until `control.stop` (or, with `until_idle`, until nothing is pending).
pub fn watch_xids(
    nvml: &Nvml,
    book: &Mutex<HealthBook>,
    policy: &XidPolicy,
    options: WatchOptions,
    control: &WatchControl,
    on_change: &dyn Fn(),
) {
    let wait_ms = u32::try_from(options.wait.as_millis()).unwrap_or(u32::MAX);
    'register: loop {
        if control.stop.load(Ordering::Relaxed) {
            return;
        }
        control.rescan.store(false, Ordering::Relaxed);
        let set = match register(nvml, book) {
            Ok(set) => set,
            Err(error) => {
                tracing::error!(%error, "cannot create an NVML event set; every GPU is marked unhealthy");
                mark(book, |b| b.watch_failed(format!("cannot create an NVML event set: {error}")));
                on_change();
                if options.until_idle {
                    return;
                }
                sleep_unless_stopped(Duration::from_secs(10), control);
                continue 'register;
            }
        };
        loop {
            if control.stop.load(Ordering::Relaxed) {
                return;
            }
            if control.rescan.load(Ordering::Relaxed) {
                continue 'register;
            }
            match set.wait(wait_ms) {
                Ok(event) => {
                    if !event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        continue;
                    }
                    let xid = match event.event_data {
                        Some(XidError::Value(value)) => value,
                        Some(XidError::Unknown) => xid::UNKNOWN,
                        None => continue,
                    };
                    match event.device.uuid() {
                        Ok(uuid) => {
                            let mut changed = false;
                            mark(book, |b| changed = b.record_xid(&uuid, xid, policy));
                            if changed {
                                tracing::warn!(gpu = %uuid, xid, reason = %xid::describe(xid), "critical XID: GPU marked unhealthy");
                            } else {
                                tracing::info!(gpu = %uuid, xid, reason = %xid::describe(xid), "XID event (ignored or GPU already unhealthy)");
                            }
                            on_change();
                        }
                        Err(error) => {
                            // As the device plugin does: an XID we cannot place taints every GPU.
                            tracing::error!(xid, %error, "XID event on a GPU whose UUID cannot be read; every GPU is marked unhealthy");
                            mark(book, |b| {
                                b.watch_failed(format!("{} on a GPU NVML cannot identify: {error}", xid::describe(xid)))
                            });
                            on_change();
                        }
                    }
                }
                Err(NvmlError::Timeout) => {
                    if options.until_idle {
                        return;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "waiting for NVML events failed; every GPU is marked unhealthy");
                    mark(book, |b| b.watch_failed(error.to_string()));
                    on_change();
                    if options.until_idle {
                        return;
                    }
                    sleep_unless_stopped(Duration::from_secs(1), control);
                }
            }
        }
    }
}

fn mark(book: &Mutex<HealthBook>, f: impl FnOnce(&mut HealthBook)) {
    f(&mut book.lock().unwrap_or_else(|p| p.into_inner()));
}

fn sleep_unless_stopped(duration: Duration, control: &WatchControl) {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < duration && !control.stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

/// Registers every GPU on a new event set. A GPU that cannot be registered is recorded in the book (unless
/// it simply does not support events, which the device plugin also tolerates); since `nvml-wrapper` frees
/// the set when a registration fails, the set is rebuilt with the GPUs registered so far.
fn register<'n>(nvml: &'n Nvml, book: &Mutex<HealthBook>) -> Result<EventSet<'n>, NvmlError> {
    let mut set = nvml.create_event_set()?;
    let mut registered: Vec<(u32, EventTypes)> = Vec::new();
    let count = nvml.device_count()?;
    for index in 0..count {
        // A GPU NVML cannot open or identify is already unhealthy through the inventory.
        let Ok(device) = nvml.device_by_index(index) else { continue };
        let Ok(uuid) = device.uuid() else { continue };
        let events = match device.supported_event_types() {
            Ok(supported) => supported & wanted_events(),
            Err(NvmlError::NotSupported) => {
                tracing::warn!(gpu = %uuid, "GPU does not support NVML events: XIDs on it go unseen");
                continue;
            }
            Err(error) => {
                mark(book, |b| b.registration_failed(&uuid, error.to_string()));
                continue;
            }
        };
        if !events.contains(EventTypes::CRITICAL_XID_ERROR) {
            tracing::warn!(gpu = %uuid, "GPU does not support XID events: XIDs on it go unseen");
        }
        if events.is_empty() {
            continue;
        }
        match device.register_events(events, set) {
            Ok(kept) => {
                set = kept;
                registered.push((index, events));
            }
            Err(failed) => {
                if matches!(failed.error, NvmlError::NotSupported) {
                    tracing::warn!(gpu = %uuid, "GPU refused event registration as unsupported: XIDs on it go unseen");
                } else {
                    tracing::error!(gpu = %uuid, error = %failed.error, "cannot register the GPU for XID events; it is marked unhealthy");
                    mark(book, |b| b.registration_failed(&uuid, failed.error.to_string()));
                }
                set = nvml.create_event_set()?;
                for (again, events) in &registered {
                    let device = nvml.device_by_index(*again)?;
                    set = device.register_events(*events, set).map_err(|e| e.error)?;
                }
            }
        }
    }
    tracing::info!(gpus = registered.len(), "watching for XID events");
    Ok(set)
}
