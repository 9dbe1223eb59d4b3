//! NVML's C ABI as far as the mock serves it: return codes, event bits, the structs it fills, and the opaque
//! handles it hands out. Written from the documented `nvml.h` layouts, independently of `nvml-wrapper-sys`,
//! so that a layout mistake on either side shows up as a failing test rather than agreeing with itself.

use std::ffi::{c_char, c_uint, c_ulonglong, c_void};

pub type Return = c_uint;

pub const SUCCESS: Return = 0;
pub const ERROR_UNINITIALIZED: Return = 1;
pub const ERROR_INVALID_ARGUMENT: Return = 2;
pub const ERROR_NOT_SUPPORTED: Return = 3;
pub const ERROR_NO_PERMISSION: Return = 4;
pub const ERROR_NOT_FOUND: Return = 6;
pub const ERROR_INSUFFICIENT_SIZE: Return = 7;
pub const ERROR_DRIVER_NOT_LOADED: Return = 9;
pub const ERROR_TIMEOUT: Return = 10;
pub const ERROR_LIBRARY_NOT_FOUND: Return = 12;
pub const ERROR_FUNCTION_NOT_FOUND: Return = 13;
pub const ERROR_GPU_IS_LOST: Return = 15;
pub const ERROR_RESET_REQUIRED: Return = 16;
pub const ERROR_UNKNOWN: Return = 999;

const RETURN_NAMES: &[(&str, Return)] = &[
    ("SUCCESS", SUCCESS),
    ("UNINITIALIZED", ERROR_UNINITIALIZED),
    ("INVALID_ARGUMENT", ERROR_INVALID_ARGUMENT),
    ("NOT_SUPPORTED", ERROR_NOT_SUPPORTED),
    ("NO_PERMISSION", ERROR_NO_PERMISSION),
    ("NOT_FOUND", ERROR_NOT_FOUND),
    ("INSUFFICIENT_SIZE", ERROR_INSUFFICIENT_SIZE),
    ("DRIVER_NOT_LOADED", ERROR_DRIVER_NOT_LOADED),
    ("TIMEOUT", ERROR_TIMEOUT),
    ("LIBRARY_NOT_FOUND", ERROR_LIBRARY_NOT_FOUND),
    ("FUNCTION_NOT_FOUND", ERROR_FUNCTION_NOT_FOUND),
    ("GPU_IS_LOST", ERROR_GPU_IS_LOST),
    ("RESET_REQUIRED", ERROR_RESET_REQUIRED),
    ("UNKNOWN", ERROR_UNKNOWN),
];

/// `"GPU_IS_LOST"`, `"NVML_ERROR_GPU_IS_LOST"` and `"NVML_SUCCESS"` all work.
pub fn return_code_by_name(name: &str) -> Option<Return> {
    let bare = name.strip_prefix("NVML_ERROR_").or_else(|| name.strip_prefix("NVML_")).unwrap_or(name);
    RETURN_NAMES.iter().find(|(n, _)| *n == bare).map(|(_, code)| *code)
}

/// NUL-terminated, for `nvmlErrorString`.
pub fn error_string(code: Return) -> &'static [u8] {
    match code {
        SUCCESS => b"Success\0",
        ERROR_UNINITIALIZED => b"Uninitialized\0",
        ERROR_INVALID_ARGUMENT => b"Invalid Argument\0",
        ERROR_NOT_SUPPORTED => b"Not Supported\0",
        ERROR_NO_PERMISSION => b"Insufficient Permissions\0",
        ERROR_NOT_FOUND => b"Not Found\0",
        ERROR_INSUFFICIENT_SIZE => b"Insufficient Size\0",
        ERROR_DRIVER_NOT_LOADED => b"Driver Not Loaded\0",
        ERROR_TIMEOUT => b"Timeout\0",
        ERROR_FUNCTION_NOT_FOUND => b"Function Not Found\0",
        ERROR_GPU_IS_LOST => b"GPU is lost\0",
        _ => b"Unknown Error\0",
    }
}

pub const EVENT_SINGLE_BIT_ECC: u64 = 0x1;
pub const EVENT_DOUBLE_BIT_ECC: u64 = 0x2;
pub const EVENT_PSTATE: u64 = 0x4;
pub const EVENT_XID: u64 = 0x8;
pub const EVENT_CLOCK: u64 = 0x10;

pub const NVLINK_MAX_LINKS: c_uint = 18;
pub const NVLINK_DEVICE_TYPE_GPU: c_uint = 0;
pub const NVLINK_DEVICE_TYPE_IBMNPU: c_uint = 1;
pub const NVLINK_DEVICE_TYPE_SWITCH: c_uint = 2;
pub const P2P_CAPS_INDEX_NVLINK: c_uint = 2;
pub const P2P_STATUS_OK: c_uint = 0;
pub const P2P_STATUS_NOT_SUPPORTED: c_uint = 5;
pub const TEMPERATURE_GPU: c_uint = 0;
pub const MEMORY_ERROR_CORRECTED: c_uint = 0;
pub const MEMORY_ERROR_UNCORRECTED: c_uint = 1;
pub const ECC_COUNTER_VOLATILE: c_uint = 0;
pub const ECC_COUNTER_AGGREGATE: c_uint = 1;
/// `gpuInstanceId`/`computeInstanceId` when an event or process is not attributed to a MIG instance.
pub const NO_INSTANCE: c_uint = 0xFFFF_FFFF;
/// `usedGpuMemory` when the driver cannot tell (`NVML_VALUE_NOT_AVAILABLE`).
pub const VALUE_NOT_AVAILABLE: c_ulonglong = c_ulonglong::MAX;

/// `nvmlPciInfo_t` (the `_v3` layout).
#[repr(C)]
pub struct PciInfo {
    pub bus_id_legacy: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pci_device_id: c_uint,
    pub pci_sub_system_id: c_uint,
    pub bus_id: [c_char; 32],
}

/// `nvmlMemory_t` (v1): `used` includes the reserved memory.
#[repr(C)]
pub struct MemoryV1 {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct MemoryV2 {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `NVML_STRUCT_VERSION(Memory, 2)`: the struct size in the low bits, the version in the top byte.
pub const MEMORY_V2_VERSION: c_uint = (size_of::<MemoryV2>() as c_uint) | (2 << 24);

/// `nvmlUtilization_t`.
#[repr(C)]
pub struct Utilization {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// `nvmlProcessInfo_t` (= `nvmlProcessInfo_v2_t`), what the `_v3` process calls fill.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessInfo {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

/// `nvmlEventData_t`.
#[repr(C)]
pub struct EventData {
    pub device: *mut c_void,
    pub event_type: c_ulonglong,
    pub event_data: c_ulonglong,
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

// The sizes nvml.h gives these structs on LP64; nvml-wrapper-sys allocates exactly these.
const _: () = assert!(size_of::<PciInfo>() == 68);
const _: () = assert!(size_of::<MemoryV1>() == 24);
const _: () = assert!(size_of::<MemoryV2>() == 40);
const _: () = assert!(MEMORY_V2_VERSION == 0x0200_0028);
const _: () = assert!(size_of::<Utilization>() == 8);
const _: () = assert!(size_of::<ProcessInfo>() == 24);
const _: () = assert!(size_of::<EventData>() == 32);

/// What an opaque handle the mock handed out refers to. Handles are small integers dressed as pointers:
/// NVML's are opaque, nobody dereferences them, and integers stay valid across fixture reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    Gpu(usize),
    Mig { gpu: usize, index: usize },
    EventSet(u64),
}

const GPU_BASE: usize = 0x1000;
const MIG_BASE: usize = 0x10_0000;
const MIG_STRIDE: usize = 0x100;
const SET_BASE: usize = 0x1000_0000;

impl Handle {
    pub fn to_ptr(self) -> *mut c_void {
        let addr = match self {
            Handle::Gpu(index) => GPU_BASE + index,
            Handle::Mig { gpu, index } => MIG_BASE + gpu * MIG_STRIDE + index,
            Handle::EventSet(id) => SET_BASE + id as usize,
        };
        std::ptr::without_provenance_mut(addr)
    }

    pub fn from_ptr(ptr: *const c_void) -> Option<Handle> {
        let addr = ptr.addr();
        if (GPU_BASE..MIG_BASE).contains(&addr) {
            Some(Handle::Gpu(addr - GPU_BASE))
        } else if (MIG_BASE..SET_BASE).contains(&addr) {
            let offset = addr - MIG_BASE;
            Some(Handle::Mig { gpu: offset / MIG_STRIDE, index: offset % MIG_STRIDE })
        } else if addr >= SET_BASE {
            Some(Handle::EventSet((addr - SET_BASE) as u64))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        for handle in [Handle::Gpu(0), Handle::Gpu(7), Handle::Mig { gpu: 3, index: 6 }, Handle::EventSet(42)] {
            assert_eq!(Handle::from_ptr(handle.to_ptr()), Some(handle));
        }
        assert_eq!(Handle::from_ptr(std::ptr::null()), None);
    }

    #[test]
    fn return_code_names() {
        assert_eq!(return_code_by_name("GPU_IS_LOST"), Some(ERROR_GPU_IS_LOST));
        assert_eq!(return_code_by_name("NVML_ERROR_NOT_SUPPORTED"), Some(ERROR_NOT_SUPPORTED));
        assert_eq!(return_code_by_name("NVML_SUCCESS"), Some(SUCCESS));
        assert_eq!(return_code_by_name("BOGUS"), None);
    }
}
