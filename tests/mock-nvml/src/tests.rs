//! The fidelity rules, exercised through the C exports themselves. (The agent's tests exercise the same
//! library through `nvml-wrapper`.) The exports share one global state, so these tests take turns.

use std::path::PathBuf;
use std::sync::Mutex;

use super::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// Initialises the mock with `fixture` for the duration of `f`.
fn with_fixture(fixture: &str, f: impl FnOnce(&PathBuf)) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let path = std::env::temp_dir().join(format!("muster-mock-nvml-unit-{}.json", std::process::id()));
    std::fs::write(&path, fixture).expect("write fixture");
    // SAFETY: tests take turns (SERIAL), and nothing else in this process reads the environment concurrently.
    unsafe { std::env::set_var(state::FIXTURE_ENV, &path) };
    assert_eq!(unsafe { nvmlInit_v2() }, abi::SUCCESS);
    // Shut down even when `f` panics, so one failure does not leave the next test initialised.
    struct Shutdown(PathBuf);
    impl Drop for Shutdown {
        fn drop(&mut self) {
            unsafe { nvmlShutdown() };
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let guard = Shutdown(path);
    f(&guard.0);
}

const TWO_GPUS: &str = r#"{
  "devices": [
    {"uuid": "GPU-a", "pciBusId": "00000000:18:00.0", "processes": [{"pid": 1, "usedMemory": 10}, {"pid": 2}],
     "nvlinks": [{"remotePciBusId": "00000000:2A:00.0"}]},
    {"uuid": "GPU-b", "pciBusId": "00000000:2A:00.0", "mig": {"enabled": true, "devices": [{"uuid": "MIG-b0"}]}}
  ],
  "xidEvents": [{"gpu": 1, "xid": 79}]
}"#;

fn handle(index: c_uint) -> NvmlDevice {
    let mut device = std::ptr::null_mut();
    assert_eq!(unsafe { nvmlDeviceGetHandleByIndex_v2(index, &mut device) }, abi::SUCCESS);
    device
}

#[test]
fn uninitialised_calls_say_so() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut count = 0;
    assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut count) }, abi::ERROR_UNINITIALIZED);
}

#[test]
fn processes_need_two_calls() {
    with_fixture(TWO_GPUS, |_| {
        let gpu = handle(0);
        let mut count = 0;
        let rc = unsafe { nvmlDeviceGetComputeRunningProcesses_v3(gpu, &mut count, std::ptr::null_mut()) };
        assert_eq!((rc, count), (abi::ERROR_INSUFFICIENT_SIZE, 2));
        let mut infos =
            [abi::ProcessInfo { pid: 0, used_gpu_memory: 0, gpu_instance_id: 0, compute_instance_id: 0 }; 4];
        count = 4;
        let rc = unsafe { nvmlDeviceGetComputeRunningProcesses_v3(gpu, &mut count, infos.as_mut_ptr()) };
        assert_eq!((rc, count), (abi::SUCCESS, 2));
        assert_eq!((infos[0].pid, infos[0].used_gpu_memory), (1, 10));
        assert_eq!(infos[1].used_gpu_memory, abi::VALUE_NOT_AVAILABLE);
        // No processes: success with zero, not INSUFFICIENT_SIZE.
        count = 0;
        let rc = unsafe { nvmlDeviceGetComputeRunningProcesses_v3(handle(1), &mut count, std::ptr::null_mut()) };
        assert_eq!((rc, count), (abi::SUCCESS, 0));
    });
}

#[test]
fn memory_v2_checks_the_version_word() {
    with_fixture(TWO_GPUS, |_| {
        let mut memory = abi::MemoryV2 { version: 2, total: 0, reserved: 0, free: 0, used: 0 };
        assert_eq!(unsafe { nvmlDeviceGetMemoryInfo_v2(handle(0), &mut memory) }, abi::ERROR_FUNCTION_NOT_FOUND);
        memory.version = abi::MEMORY_V2_VERSION;
        assert_eq!(unsafe { nvmlDeviceGetMemoryInfo_v2(handle(0), &mut memory) }, abi::SUCCESS);
        assert_eq!(memory.reserved, 501_481_472);
        assert_eq!(memory.total, memory.reserved + memory.used + memory.free);
    });
}

#[test]
fn utilisation_is_not_supported_on_a_mig_enabled_gpu() {
    with_fixture(TWO_GPUS, |_| {
        let mut rates = abi::Utilization { gpu: 0, memory: 0 };
        assert_eq!(unsafe { nvmlDeviceGetUtilizationRates(handle(1), &mut rates) }, abi::ERROR_NOT_SUPPORTED);
        let mut mig = std::ptr::null_mut();
        assert_eq!(unsafe { nvmlDeviceGetMigDeviceHandleByIndex(handle(1), 0, &mut mig) }, abi::SUCCESS);
        assert_eq!(unsafe { nvmlDeviceGetMigDeviceHandleByIndex(handle(1), 1, &mut mig) }, abi::ERROR_NOT_FOUND);
    });
}

#[test]
fn an_xid_is_delivered_once_then_waits_time_out() {
    with_fixture(TWO_GPUS, |_| {
        let mut set = std::ptr::null_mut();
        assert_eq!(unsafe { nvmlEventSetCreate(&mut set) }, abi::SUCCESS);
        // Unsupported bits are refused.
        assert_eq!(unsafe { nvmlDeviceRegisterEvents(handle(1), 0x8000, set) }, abi::ERROR_NOT_SUPPORTED);
        assert_eq!(unsafe { nvmlDeviceRegisterEvents(handle(1), abi::EVENT_XID, set) }, abi::SUCCESS);
        let mut data = abi::EventData {
            device: std::ptr::null_mut(),
            event_type: 0,
            event_data: 0,
            gpu_instance_id: 0,
            compute_instance_id: 0,
        };
        assert_eq!(unsafe { nvmlEventSetWait_v2(set, &mut data, 1000) }, abi::SUCCESS);
        assert_eq!((data.event_type, data.event_data, data.gpu_instance_id), (abi::EVENT_XID, 79, abi::NO_INSTANCE));
        assert_eq!(data.device, handle(1));
        let started = Instant::now();
        assert_eq!(unsafe { nvmlEventSetWait_v2(set, &mut data, 120) }, abi::ERROR_TIMEOUT);
        assert!(started.elapsed() >= Duration::from_millis(120), "a wait with nothing queued blocks");
        assert_eq!(unsafe { nvmlEventSetFree(set) }, abi::SUCCESS);
    });
}

#[test]
fn a_changed_fixture_is_picked_up() {
    with_fixture(TWO_GPUS, |path| {
        let mut count = 0;
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut count) }, abi::SUCCESS);
        assert_eq!(count, 2);
        let one_gpu = r#"{"devices":[{"uuid":"GPU-a","pciBusId":"00000000:18:00.0"}], "driverVersion": "999.1"}"#;
        let staged = path.with_extension("staged");
        std::fs::write(&staged, one_gpu).expect("write");
        std::fs::rename(&staged, path).expect("rename");
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut count) }, abi::SUCCESS);
        assert_eq!(count, 1);
    });
}

#[test]
fn nvlink_peers_and_p2p() {
    with_fixture(TWO_GPUS, |_| {
        let mut pci = std::mem::MaybeUninit::<abi::PciInfo>::uninit();
        assert_eq!(unsafe { nvmlDeviceGetNvLinkRemotePciInfo_v2(handle(0), 0, pci.as_mut_ptr()) }, abi::SUCCESS);
        let pci = unsafe { pci.assume_init() };
        assert_eq!((pci.domain, pci.bus, pci.device), (0, 0x2a, 0));
        let bus_id = unsafe { CStr::from_ptr(pci.bus_id.as_ptr()) };
        assert_eq!(bus_id.to_str(), Ok("00000000:2A:00.0"));
        let mut active = 9;
        assert_eq!(unsafe { nvmlDeviceGetNvLinkState(handle(0), 1, &mut active) }, abi::ERROR_NOT_SUPPORTED);
        let mut status = 9;
        assert_eq!(
            unsafe { nvmlDeviceGetP2PStatus(handle(1), handle(0), abi::P2P_CAPS_INDEX_NVLINK, &mut status) },
            abi::SUCCESS
        );
        assert_eq!(status, abi::P2P_STATUS_OK);
    });
}

#[test]
fn init_without_a_fixture_is_a_missing_driver() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: as in `with_fixture`.
    unsafe { std::env::remove_var(state::FIXTURE_ENV) };
    assert_eq!(unsafe { nvmlInit_v2() }, abi::ERROR_DRIVER_NOT_LOADED);
}
