//! `muster-mock-nvml`: a fake `libnvidia-ml.so.1` driven by a JSON fixture.
//!
//! The gpu-agent reads GPUs through `nvml-wrapper`, which `dlopen`s the NVML library and looks its symbols up by
//! name. Loading this library instead (by path, or as a `libnvidia-ml.so.1` symlink on `LD_LIBRARY_PATH`) runs
//! the agent's unchanged production code against a machine described in a file: devices, memory (v2, with
//! the driver's reserved memory), utilisation, temperature, power, ECC, MIG mode and instances, NVLinks,
//! compute processes, and XID events to deliver.
//!
//! - The fixture path comes from `MUSTER_MOCK_NVML_FIXTURE`, read at `nvmlInit_v2`. Without it the library
//!   behaves like a node without a driver (`NVML_ERROR_DRIVER_NOT_LOADED`). The file is re-read whenever it
//!   changes (checked on `nvmlDeviceGetCount_v2` and while waiting for events), so a test can change the
//!   machine under a running agent; replace the file atomically.
//! - See [`fixture`] for the format; `fixtures/` holds ready-made machines.
//! - Fidelity rules, each something the agent must cope with: a `NULL` or too-small process array answers
//!   `INSUFFICIENT_SIZE` with the needed count; memory v2 checks the struct version word; utilisation on a
//!   MIG-enabled GPU is `NOT_SUPPORTED`; registering unsupported event bits is `NOT_SUPPORTED`; an event
//!   wait with nothing queued blocks for its full timeout; a `lost` GPU answers `GPU_IS_LOST`; a driver
//!   below 510 lacks the `_v2` memory and `_v3` process calls; any symbol can be made to fail via `errors`.
//!
//! Only the symbols the agent calls are exported (plus the three that `nvml-wrapper`'s `Drop` impls call
//! unconditionally: `nvmlShutdown`, `nvmlEventSetFree`, `nvmlGpmSampleFree`). `nvml-wrapper` resolves all of
//! its ~400 symbols when it loads the library but keeps a missing one as an error for the call that needs it,
//! so an agent that starts calling something new fails loudly in tests (`FailedToLoadSymbol`) until it is
//! added here.

// This crate *is* a C library: every export takes raw pointers from its caller, as NVML's do.
#![allow(unsafe_code)]
// Each export's safety contract is the one NVML documents for the C function of the same name.
#![allow(clippy::missing_safety_doc)]
#![allow(non_snake_case)]

pub mod abi;
pub mod fixture;
mod state;

use std::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong, c_void};
use std::time::{Duration, Instant};

use abi::{Handle, Return};
use fixture::{Device, MigDevice, RemoteType};
use state::Mock;

type NvmlDevice = *mut c_void;
type NvmlEventSet = *mut c_void;

fn code(result: Result<(), Return>) -> Return {
    match result {
        Ok(()) => abi::SUCCESS,
        Err(code) => code,
    }
}

/// Writes one value through an out-pointer.
fn put<T>(ptr: *mut T, value: T) -> Result<(), Return> {
    if ptr.is_null() {
        return Err(abi::ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: NVML's contract: a non-NULL out-pointer points to a writable `T` owned by the caller.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Copies a string with its NUL into a caller buffer of `length` bytes.
fn put_str(buffer: *mut c_char, length: c_uint, text: &str) -> Result<(), Return> {
    if buffer.is_null() {
        return Err(abi::ERROR_INVALID_ARGUMENT);
    }
    let bytes = text.as_bytes();
    if bytes.len() + 1 > length as usize {
        return Err(abi::ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: the caller's buffer holds `length` bytes, and we write `bytes.len() + 1 <= length`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buffer, bytes.len());
        buffer.add(bytes.len()).write(0);
    }
    Ok(())
}

fn c_string<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (slot, byte) in out.iter_mut().zip(text.bytes().take(N - 1)) {
        *slot = byte as c_char;
    }
    out
}

fn read_str<'a>(ptr: *const c_char) -> Result<&'a str, Return> {
    if ptr.is_null() {
        return Err(abi::ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: NVML's contract: string arguments are NUL-terminated.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| abi::ERROR_INVALID_ARGUMENT)
}

fn driver_major(mock: &Mock) -> u32 {
    mock.fixture.driver_version.split('.').next().and_then(|major| major.parse().ok()).unwrap_or(0)
}

fn pci_info(bus_id: &str, pci_device_id: u32, pci_sub_system_id: u32) -> Result<abi::PciInfo, Return> {
    let (domain, bus, device) = fixture::parse_bus_id(bus_id).ok_or(abi::ERROR_UNKNOWN)?;
    let legacy = format!("{domain:04X}:{bus:02X}:{device:02X}.{}", bus_id.rsplit('.').next().unwrap_or("0"));
    Ok(abi::PciInfo {
        bus_id_legacy: c_string(&legacy),
        domain,
        bus,
        device,
        pci_device_id,
        pci_sub_system_id,
        bus_id: c_string(bus_id),
    })
}

/// A device handle the mock handed out, resolved against the current fixture.
enum Target<'a> {
    Gpu(usize, &'a Device),
    Mig(usize, &'a Device, &'a MigDevice),
}

impl<'a> Target<'a> {
    fn gpu(&self) -> &'a Device {
        match self {
            Target::Gpu(_, device) | Target::Mig(_, device, _) => device,
        }
    }
}

fn resolve(mock: &Mock, handle: *const c_void) -> Result<Target<'_>, Return> {
    match Handle::from_ptr(handle) {
        Some(Handle::Gpu(index)) => {
            mock.fixture.devices.get(index).map(|d| Target::Gpu(index, d)).ok_or(abi::ERROR_INVALID_ARGUMENT)
        }
        Some(Handle::Mig { gpu, index }) => {
            let device = mock.fixture.devices.get(gpu).ok_or(abi::ERROR_INVALID_ARGUMENT)?;
            let mig = device.mig.devices.get(index).ok_or(abi::ERROR_INVALID_ARGUMENT)?;
            Ok(Target::Mig(gpu, device, mig))
        }
        _ => Err(abi::ERROR_INVALID_ARGUMENT),
    }
}

/// What kind of call a device export is, for the fixture's `lost` flag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Served from the driver's cache: works on a lost GPU.
    Identity,
    /// Talks to the GPU: `GPU_IS_LOST` on a lost one.
    Telemetry,
}

/// The common prologue of every device export: initialised, a valid handle, injected errors, lost GPUs.
fn on_device<R>(
    symbol: &str,
    kind: Kind,
    handle: *const c_void,
    f: impl FnOnce(&Mock, Target<'_>) -> Result<R, Return>,
) -> Result<R, Return> {
    state::with(|mock| {
        let target = resolve(mock, handle)?;
        let device = target.gpu();
        if let Some(injected) = device.errors.get(symbol).or_else(|| mock.fixture.errors.get(symbol)) {
            return Err(injected.0);
        }
        if kind == Kind::Telemetry && device.lost {
            return Err(abi::ERROR_GPU_IS_LOST);
        }
        f(mock, target)
    })
}

/// Like [`on_device`], for calls that only make sense on a whole GPU.
fn on_gpu<R>(
    symbol: &str,
    kind: Kind,
    handle: *const c_void,
    f: impl FnOnce(&Mock, usize, &Device) -> Result<R, Return>,
) -> Result<R, Return> {
    on_device(symbol, kind, handle, |mock, target| match target {
        Target::Gpu(index, device) => f(mock, index, device),
        Target::Mig(..) => Err(abi::ERROR_NOT_SUPPORTED),
    })
}

fn injected_global(mock: &Mock, symbol: &str) -> Result<(), Return> {
    match mock.fixture.errors.get(symbol) {
        Some(injected) => Err(injected.0),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Lifecycle and system queries.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInit_v2() -> Return {
    state::init()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Return {
    state::init()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlShutdown() -> Return {
    state::shutdown()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlErrorString(result: Return) -> *const c_char {
    abi::error_string(result).as_ptr().cast()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> Return {
    code(state::with(|mock| {
        injected_global(mock, "nvmlSystemGetDriverVersion")?;
        put_str(version, length, &mock.fixture.driver_version)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> Return {
    code(state::with(|mock| {
        let text = mock.fixture.nvml_version.clone().unwrap_or_else(|| format!("12.{}", mock.fixture.driver_version));
        put_str(version, length, &text)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> Return {
    code(state::with(|mock| put(version, mock.fixture.cuda_driver_version)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> Return {
    code(state::with(|mock| {
        injected_global(mock, "nvmlSystemGetCudaDriverVersion_v2")?;
        put(version, mock.fixture.cuda_driver_version)
    }))
}

// ---------------------------------------------------------------------------------------------------------
// Enumeration and identity.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Return {
    code(state::with(|mock| {
        mock.refresh();
        injected_global(mock, "nvmlDeviceGetCount_v2")?;
        put(count, mock.fixture.devices.len() as c_uint)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut NvmlDevice) -> Return {
    code(state::with(|mock| {
        let gpu = mock.fixture.devices.get(index as usize).ok_or(abi::ERROR_INVALID_ARGUMENT)?;
        if let Some(injected) = gpu.errors.get("nvmlDeviceGetHandleByIndex_v2") {
            return Err(injected.0);
        }
        put(device, Handle::Gpu(index as usize).to_ptr())
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut NvmlDevice) -> Return {
    code(state::with(|mock| {
        let uuid = read_str(uuid)?;
        for (gpu, d) in mock.fixture.devices.iter().enumerate() {
            if d.uuid == uuid {
                return put(device, Handle::Gpu(gpu).to_ptr());
            }
            if d.mig.enabled
                && let Some(index) = d.mig.devices.iter().position(|m| m.uuid == uuid)
            {
                return put(device, Handle::Mig { gpu, index }.to_ptr());
            }
        }
        Err(abi::ERROR_NOT_FOUND)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(bus_id: *const c_char, device: *mut NvmlDevice) -> Return {
    code(state::with(|mock| {
        let wanted = fixture::parse_bus_id(read_str(bus_id)?).ok_or(abi::ERROR_INVALID_ARGUMENT)?;
        let gpu = mock
            .fixture
            .devices
            .iter()
            .position(|d| fixture::parse_bus_id(&d.pci_bus_id) == Some(wanted))
            .ok_or(abi::ERROR_NOT_FOUND)?;
        put(device, Handle::Gpu(gpu).to_ptr())
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: NvmlDevice, index: *mut c_uint) -> Return {
    code(on_gpu("nvmlDeviceGetIndex", Kind::Identity, device, |_, i, _| put(index, i as c_uint)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(device: NvmlDevice, minor: *mut c_uint) -> Return {
    code(on_gpu("nvmlDeviceGetMinorNumber", Kind::Identity, device, |_, i, d| {
        put(minor, d.minor_number.unwrap_or(i as c_uint))
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: NvmlDevice, uuid: *mut c_char, length: c_uint) -> Return {
    code(on_device("nvmlDeviceGetUUID", Kind::Identity, device, |_, target| match target {
        Target::Gpu(_, d) => put_str(uuid, length, &d.uuid),
        Target::Mig(_, _, m) => put_str(uuid, length, &m.uuid),
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: NvmlDevice, name: *mut c_char, length: c_uint) -> Return {
    code(on_device("nvmlDeviceGetName", Kind::Identity, device, |_, target| put_str(name, length, &target.gpu().name)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: NvmlDevice, pci: *mut abi::PciInfo) -> Return {
    code(on_gpu("nvmlDeviceGetPciInfo_v3", Kind::Identity, device, |_, _, d| {
        put(pci, pci_info(&d.pci_bus_id, d.pci_device_id, d.pci_sub_system_id)?)
    }))
}

// ---------------------------------------------------------------------------------------------------------
// Telemetry.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: NvmlDevice, memory: *mut abi::MemoryV1) -> Return {
    code(on_device("nvmlDeviceGetMemoryInfo", Kind::Telemetry, device, |_, target| {
        let m = match target {
            Target::Gpu(_, d) => &d.memory,
            Target::Mig(_, _, mig) => &mig.memory,
        };
        // v1 `used` is "reserved + allocated".
        put(memory, abi::MemoryV1 { total: m.total, free: m.free(), used: m.used + m.reserved })
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(device: NvmlDevice, memory: *mut abi::MemoryV2) -> Return {
    code(on_device("nvmlDeviceGetMemoryInfo_v2", Kind::Telemetry, device, |mock, target| {
        if driver_major(mock) < 510 {
            return Err(abi::ERROR_FUNCTION_NOT_FOUND);
        }
        if memory.is_null() {
            return Err(abi::ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: non-NULL, and the caller's struct starts with the version word it must have set.
        let version = unsafe { (*memory).version };
        if version != abi::MEMORY_V2_VERSION {
            return Err(abi::ERROR_FUNCTION_NOT_FOUND);
        }
        let m = match target {
            Target::Gpu(_, d) => &d.memory,
            Target::Mig(_, _, mig) => &mig.memory,
        };
        put(memory, abi::MemoryV2 { version, total: m.total, reserved: m.reserved, free: m.free(), used: m.used })
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(device: NvmlDevice, rates: *mut abi::Utilization) -> Return {
    code(on_gpu("nvmlDeviceGetUtilizationRates", Kind::Telemetry, device, |_, _, d| {
        if d.mig.enabled {
            return Err(abi::ERROR_NOT_SUPPORTED);
        }
        put(rates, abi::Utilization { gpu: d.utilization.gpu, memory: d.utilization.memory })
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: NvmlDevice,
    sensor: c_uint,
    temperature: *mut c_uint,
) -> Return {
    code(on_gpu("nvmlDeviceGetTemperature", Kind::Telemetry, device, |_, _, d| {
        if sensor != abi::TEMPERATURE_GPU {
            return Err(abi::ERROR_INVALID_ARGUMENT);
        }
        put(temperature, d.temperature)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: NvmlDevice, milliwatts: *mut c_uint) -> Return {
    code(on_gpu("nvmlDeviceGetPowerUsage", Kind::Telemetry, device, |_, _, d| put(milliwatts, d.power_milliwatts)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEccMode(
    device: NvmlDevice,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Return {
    code(on_gpu("nvmlDeviceGetEccMode", Kind::Identity, device, |_, _, d| {
        put(current, c_uint::from(d.ecc.enabled))?;
        put(pending, c_uint::from(d.ecc.pending_enabled.unwrap_or(d.ecc.enabled)))
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: NvmlDevice,
    error_type: c_uint,
    counter_type: c_uint,
    count: *mut c_ulonglong,
) -> Return {
    code(on_gpu("nvmlDeviceGetTotalEccErrors", Kind::Telemetry, device, |_, _, d| {
        if !d.ecc.enabled {
            return Err(abi::ERROR_NOT_SUPPORTED);
        }
        let value = match (error_type, counter_type) {
            (abi::MEMORY_ERROR_CORRECTED, abi::ECC_COUNTER_VOLATILE) => d.ecc.corrected_volatile,
            (abi::MEMORY_ERROR_UNCORRECTED, abi::ECC_COUNTER_VOLATILE) => d.ecc.uncorrected_volatile,
            (abi::MEMORY_ERROR_CORRECTED, abi::ECC_COUNTER_AGGREGATE) => d.ecc.corrected_aggregate,
            (abi::MEMORY_ERROR_UNCORRECTED, abi::ECC_COUNTER_AGGREGATE) => d.ecc.uncorrected_aggregate,
            _ => return Err(abi::ERROR_INVALID_ARGUMENT),
        };
        put(count, value)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPagesPendingStatus(device: NvmlDevice, pending: *mut c_uint) -> Return {
    code(on_gpu("nvmlDeviceGetRetiredPagesPendingStatus", Kind::Telemetry, device, |_, _, d| {
        if !d.ecc.enabled {
            return Err(abi::ERROR_NOT_SUPPORTED);
        }
        put(pending, c_uint::from(d.ecc.retired_pages_pending))
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut abi::ProcessInfo,
) -> Return {
    code(on_gpu("nvmlDeviceGetComputeRunningProcesses_v3", Kind::Telemetry, device, |mock, _, d| {
        if driver_major(mock) < 510 {
            return Err(abi::ERROR_FUNCTION_NOT_FOUND);
        }
        if count.is_null() {
            return Err(abi::ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: non-NULL in/out count.
        let capacity = unsafe { count.read() } as usize;
        let needed = d.processes.len();
        if needed == 0 {
            return put(count, 0);
        }
        if infos.is_null() || capacity < needed {
            put(count, needed as c_uint)?;
            return Err(abi::ERROR_INSUFFICIENT_SIZE);
        }
        for (slot, process) in d.processes.iter().enumerate() {
            let info = abi::ProcessInfo {
                pid: process.pid,
                used_gpu_memory: process.used_memory.unwrap_or(abi::VALUE_NOT_AVAILABLE),
                gpu_instance_id: abi::NO_INSTANCE,
                compute_instance_id: abi::NO_INSTANCE,
            };
            // SAFETY: the caller's array has `capacity >= needed` entries.
            unsafe { infos.add(slot).write(info) };
        }
        put(count, needed as c_uint)
    }))
}

// ---------------------------------------------------------------------------------------------------------
// MIG.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: NvmlDevice,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Return {
    code(on_gpu("nvmlDeviceGetMigMode", Kind::Identity, device, |_, _, d| {
        put(current, c_uint::from(d.mig.enabled))?;
        put(pending, c_uint::from(d.mig.pending.unwrap_or(d.mig.enabled)))
    }))
}

/// Like an H100: up to seven MIG devices, whatever is configured.
const MAX_MIG_DEVICES: c_uint = 7;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(device: NvmlDevice, count: *mut c_uint) -> Return {
    code(on_gpu("nvmlDeviceGetMaxMigDeviceCount", Kind::Identity, device, |_, _, d| {
        put(count, MAX_MIG_DEVICES.max(d.mig.devices.len() as c_uint))
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: NvmlDevice,
    index: c_uint,
    mig: *mut NvmlDevice,
) -> Return {
    code(on_gpu("nvmlDeviceGetMigDeviceHandleByIndex", Kind::Identity, device, |_, gpu, d| {
        if !d.mig.enabled {
            return Err(abi::ERROR_INVALID_ARGUMENT);
        }
        if index as usize >= d.mig.devices.len() {
            return Err(abi::ERROR_NOT_FOUND);
        }
        put(mig, Handle::Mig { gpu, index: index as usize }.to_ptr())
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    mig: NvmlDevice,
    device: *mut NvmlDevice,
) -> Return {
    code(on_device("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", Kind::Identity, mig, |_, target| match target {
        Target::Mig(gpu, _, _) => put(device, Handle::Gpu(gpu).to_ptr()),
        Target::Gpu(..) => Err(abi::ERROR_INVALID_ARGUMENT),
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(device: NvmlDevice, is_mig: *mut c_uint) -> Return {
    code(on_device("nvmlDeviceIsMigDeviceHandle", Kind::Identity, device, |_, target| {
        put(is_mig, c_uint::from(matches!(target, Target::Mig(..))))
    }))
}

// ---------------------------------------------------------------------------------------------------------
// NVLink and P2P.

fn link(d: &Device, link: c_uint) -> Result<&fixture::NvLink, Return> {
    if link >= abi::NVLINK_MAX_LINKS {
        return Err(abi::ERROR_INVALID_ARGUMENT);
    }
    d.nvlinks.get(link as usize).ok_or(abi::ERROR_NOT_SUPPORTED)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(device: NvmlDevice, number: c_uint, active: *mut c_uint) -> Return {
    code(on_gpu("nvmlDeviceGetNvLinkState", Kind::Telemetry, device, |_, _, d| {
        put(active, c_uint::from(link(d, number)?.active))
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    device: NvmlDevice,
    number: c_uint,
    pci: *mut abi::PciInfo,
) -> Return {
    code(on_gpu("nvmlDeviceGetNvLinkRemotePciInfo_v2", Kind::Telemetry, device, |_, _, d| {
        put(pci, pci_info(&link(d, number)?.remote_pci_bus_id, 0, 0)?)
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemoteDeviceType(
    device: NvmlDevice,
    number: c_uint,
    kind: *mut c_uint,
) -> Return {
    code(on_gpu("nvmlDeviceGetNvLinkRemoteDeviceType", Kind::Telemetry, device, |_, _, d| {
        put(
            kind,
            match link(d, number)?.remote_type {
                RemoteType::Gpu => abi::NVLINK_DEVICE_TYPE_GPU,
                RemoteType::Ibmnpu => abi::NVLINK_DEVICE_TYPE_IBMNPU,
                RemoteType::Switch => abi::NVLINK_DEVICE_TYPE_SWITCH,
            },
        )
    }))
}

/// NVLink P2P between two GPUs: a direct active link either way, or both on an NVSwitch.
fn nvlinked(a: &Device, b: &Device) -> bool {
    let direct = |from: &Device, to: &Device| {
        from.nvlinks.iter().any(|l| {
            l.active
                && l.remote_type == RemoteType::Gpu
                && fixture::parse_bus_id(&l.remote_pci_bus_id) == fixture::parse_bus_id(&to.pci_bus_id)
        })
    };
    let on_switch = |d: &Device| d.nvlinks.iter().any(|l| l.active && l.remote_type == RemoteType::Switch);
    direct(a, b) || direct(b, a) || (on_switch(a) && on_switch(b))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetP2PStatus(
    device1: NvmlDevice,
    device2: NvmlDevice,
    index: c_uint,
    status: *mut c_uint,
) -> Return {
    code(on_gpu("nvmlDeviceGetP2PStatus", Kind::Telemetry, device1, |mock, _, a| {
        let Target::Gpu(_, b) = resolve(mock, device2)? else {
            return Err(abi::ERROR_INVALID_ARGUMENT);
        };
        let ok = index != abi::P2P_CAPS_INDEX_NVLINK || nvlinked(a, b);
        put(status, if ok { abi::P2P_STATUS_OK } else { abi::P2P_STATUS_NOT_SUPPORTED })
    }))
}

// ---------------------------------------------------------------------------------------------------------
// Events.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(device: NvmlDevice, types: *mut c_ulonglong) -> Return {
    code(on_gpu("nvmlDeviceGetSupportedEventTypes", Kind::Identity, device, |_, _, d| put(types, d.supported_events)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut NvmlEventSet) -> Return {
    code(state::with(|mock| {
        injected_global(mock, "nvmlEventSetCreate")?;
        if set.is_null() {
            return Err(abi::ERROR_INVALID_ARGUMENT);
        }
        let id = mock.create_set();
        put(set, Handle::EventSet(id).to_ptr())
    }))
}

fn set_id(set: *const c_void) -> Result<u64, Return> {
    match Handle::from_ptr(set) {
        Some(Handle::EventSet(id)) => Ok(id),
        _ => Err(abi::ERROR_INVALID_ARGUMENT),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(device: NvmlDevice, types: c_ulonglong, set: NvmlEventSet) -> Return {
    let registered = on_gpu("nvmlDeviceRegisterEvents", Kind::Identity, device, |_, index, d| {
        if types & !d.supported_events != 0 {
            return Err(abi::ERROR_NOT_SUPPORTED);
        }
        Ok(index)
    });
    code(registered.and_then(|index| {
        state::with(|mock| {
            let events = mock.sets.get_mut(&set_id(set)?).ok_or(abi::ERROR_INVALID_ARGUMENT)?;
            *events.registered.entry(index).or_default() |= types;
            Ok(())
        })
    }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: NvmlEventSet,
    data: *mut abi::EventData,
    timeout_ms: c_uint,
) -> Return {
    let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    loop {
        let next = state::with(|mock| {
            mock.refresh();
            if let Some(injected) = mock.fixture.event_wait_error {
                return Err(injected.0);
            }
            let id = set_id(set)?;
            let Mock { fixture, sets, delivered, .. } = mock;
            let events = sets.get(&id).ok_or(abi::ERROR_INVALID_ARGUMENT)?;
            delivered.resize(fixture.xid_events.len(), false);
            for (event, done) in fixture.xid_events.iter().zip(delivered.iter_mut()) {
                let mask = events.registered.get(&(event.gpu as usize)).copied().unwrap_or(0);
                if !*done && mask & abi::EVENT_XID != 0 {
                    *done = true;
                    return Ok(Some(*event));
                }
            }
            Ok(None)
        });
        match next {
            Ok(Some(event)) => {
                return code(put(
                    data,
                    abi::EventData {
                        device: Handle::Gpu(event.gpu as usize).to_ptr(),
                        event_type: abi::EVENT_XID,
                        event_data: event.xid,
                        gpu_instance_id: event.gpu_instance_id.unwrap_or(abi::NO_INSTANCE),
                        compute_instance_id: event.compute_instance_id.unwrap_or(abi::NO_INSTANCE),
                    },
                ));
            }
            Ok(None) => {}
            Err(failed) => return failed,
        }
        // Nothing queued: block for the timeout like the real driver (callers loop on this; returning at once
        // would spin a core), re-checking for newly added events.
        let now = Instant::now();
        if now >= deadline {
            return abi::ERROR_TIMEOUT;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetFree(set: NvmlEventSet) -> Return {
    code(state::with(|mock| mock.sets.remove(&set_id(set)?).map(|_| ()).ok_or(abi::ERROR_INVALID_ARGUMENT)))
}

/// Called unconditionally by `nvml-wrapper`'s `Drop for GpmSample`; the mock has no GPM.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleFree(_sample: *mut c_void) -> Return {
    abi::ERROR_NOT_SUPPORTED
}

#[cfg(test)]
mod tests;
