//! The agent through the real `nvml-wrapper` code path, against the mock `libnvidia-ml` (built on demand from
//! `tests/mock-nvml`), one agent process per fixture: `muster-gpu-agent --dump-json --nvml-library <mock>`.

mod common;

use common::{FakeKubelet, FixtureFile, dump, dump_with_log, hgx_h100x8, mock_library, no_kubelet};
use muster_api::gpunode::{GpuSummary, PodRef};
use serde_json::json;

const GIB: u64 = 1 << 30;

fn uuid(fixture: &serde_json::Value, index: usize) -> String {
    fixture["devices"][index]["uuid"].as_str().expect("uuid").to_string()
}

fn all_uuids(fixture: &serde_json::Value) -> Vec<String> {
    (0..8).map(|i| uuid(fixture, i)).collect()
}

/// The node: 8 GPUs, 2 allocated to pods (by the kubelet), 1 raised XID 79, 1 runs a process that
/// belongs to no pod → {total 8, healthy 7, allocated 2, free 4}.
#[tokio::test(flavor = "multi_thread")]
async fn eight_gpus_two_allocated_one_xid_79_one_foreign_process() {
    let mut fixture = hgx_h100x8();
    fixture["xidEvents"] = json!([{ "gpu": 3, "xid": 79 }]);
    fixture["devices"][5]["processes"] = json!([{ "pid": 4242, "usedMemory": GIB }]);
    // The pods' own processes on their GPUs do not make those GPUs busy.
    fixture["devices"][0]["processes"] = json!([{ "pid": 100, "usedMemory": 20 * GIB }]);
    fixture["devices"][0]["memory"]["used"] = json!(20 * GIB);
    let file = FixtureFile::new(&fixture);
    let uuids = all_uuids(&fixture);
    let all: Vec<&str> = uuids.iter().map(String::as_str).collect();
    let kubelet = FakeKubelet::start(
        &[("ml", "train-0", &[uuids[0].as_str()]), ("ml", "train-1", &[uuids[1].as_str()])],
        Some(&all),
    );

    let status = dump(&file.path, mock_library(), &kubelet.socket).await;

    assert!(status.nvml_available);
    assert_eq!(status.summary, GpuSummary { total: 8, healthy: 7, allocated: 2, busy: 1, free: 4 });
    let xid = &status.devices[3];
    assert!(!xid.health.healthy);
    assert_eq!(xid.health.xid, Some(79));
    assert_eq!(xid.health.reason.as_deref(), Some("XID 79 (GPU has fallen off the bus)"));
    let pod = |name: &str| Some(PodRef { namespace: "ml".into(), name: name.into(), uid: None });
    assert_eq!(status.devices[0].allocated_to, pod("train-0"));
    assert_eq!(status.devices[1].allocated_to, pod("train-1"));
    assert!(status.devices[0].foreign_processes.is_empty());
    let foreign = &status.devices[5].foreign_processes;
    assert_eq!((foreign.len(), foreign[0].pid, foreign[0].used_memory_bytes), (1, 4242, GIB));
    for (i, device) in status.devices.iter().enumerate() {
        assert_eq!(device.health.healthy, i != 3, "GPU {i}: {:?}", device.health);
    }
}

/// XID 13 is on the device plugin's ignore list: the status is exactly the idle node's.
#[tokio::test(flavor = "multi_thread")]
async fn an_ignored_xid_changes_nothing() {
    let base = hgx_h100x8();
    let mut with_13 = base.clone();
    with_13["xidEvents"] = json!([{ "gpu": 2, "xid": 13 }]);
    let (idle, ignored) = (FixtureFile::new(&base), FixtureFile::new(&with_13));

    let mut before = dump(&idle.path, mock_library(), &no_kubelet()).await;
    let mut after = dump(&ignored.path, mock_library(), &no_kubelet()).await;

    assert_eq!(after.summary, GpuSummary { total: 8, healthy: 8, allocated: 0, busy: 0, free: 8 });
    before.heartbeat_time = None;
    after.heartbeat_time = None;
    assert_eq!(before, after);
}

/// Every field the agent reports equals the fixture's value (bytes, percent, °C, W), read through
/// nvml-wrapper's v2 memory, utilisation, temperature, power, ECC, MIG and NVLink calls.
#[tokio::test(flavor = "multi_thread")]
async fn every_field_equals_the_fixture() {
    let mut fixture = hgx_h100x8();
    for (i, device) in fixture["devices"].as_array_mut().expect("devices").iter_mut().enumerate() {
        let i = i as u64;
        device["memory"]["used"] = json!(i * 3 * GIB + 12_345);
        device["utilization"] = json!({ "gpu": 10 * i + 1, "memory": 5 * i });
        device["powerMilliwatts"] = json!(300_123 + 1_000 * i);
        device["ecc"] = json!({ "uncorrectedVolatile": i, "correctedVolatile": 2 * i });
    }
    let file = FixtureFile::new(&fixture);

    let (status, log) = dump_with_log(&file.path, mock_library(), &no_kubelet()).await;

    // Every NVML call the agent makes is one the mock serves: a symbol the mock lacks would show up here as
    // `FailedToLoadSymbol`, not silently as a missing field.
    assert!(!log.contains("NVML call failed"), "{log}");
    assert_eq!(status.driver_version.as_deref(), Some("570.124.06"));
    assert_eq!(status.cuda_driver_version.as_deref(), Some("12.8"));
    assert_eq!(status.devices.len(), 8);
    let bus_ids: Vec<String> =
        (0..8).map(|i| fixture["devices"][i]["pciBusId"].as_str().unwrap_or_default().into()).collect();
    for (i, device) in status.devices.iter().enumerate() {
        let f = &fixture["devices"][i];
        let memory = device.memory.expect("memory");
        assert_eq!(device.index, i as u32);
        assert_eq!(device.uuid, f["uuid"].as_str().unwrap_or_default());
        assert_eq!(device.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(device.pci_bus_id, bus_ids[i]);
        assert_eq!(memory.total_bytes, 85_520_809_984);
        assert_eq!(memory.reserved_bytes, 501_481_472);
        assert_eq!(memory.used_bytes, f["memory"]["used"].as_u64().unwrap_or_default());
        assert_eq!(memory.free_bytes, memory.total_bytes - memory.reserved_bytes - memory.used_bytes);
        let utilization = device.utilization.expect("utilization");
        assert_eq!(u64::from(utilization.gpu_percent), f["utilization"]["gpu"].as_u64().unwrap_or_default());
        assert_eq!(u64::from(utilization.memory_percent), f["utilization"]["memory"].as_u64().unwrap_or_default());
        assert_eq!(device.temperature_celsius.map(u64::from), f["temperature"].as_u64());
        assert_eq!(device.power_watts, f["powerMilliwatts"].as_u64().map(|mw| mw as f64 / 1000.0));
        assert_eq!(device.mig_enabled, Some(false));
        let ecc = device.ecc.expect("ecc");
        assert!(ecc.enabled);
        assert_eq!(ecc.volatile_uncorrected, i as u64);
        // Every GPU hangs off the same NVSwitches: each reaches all the others.
        let others: Vec<String> = bus_ids.iter().filter(|b| **b != bus_ids[i]).cloned().collect();
        assert_eq!(device.nvlink_peers, others);
        assert!(device.health.healthy);
    }
}

/// No library (a CPU node, or the driver not installed yet): zero GPUs and NVML down, not a crash.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_library_is_zero_gpus() {
    let file = FixtureFile::new(&hgx_h100x8());
    let status = dump(&file.path, std::path::Path::new("/nonexistent/libnvidia-ml.so.1"), &no_kubelet()).await;
    assert!(!status.nvml_available);
    assert!(status.nvml_error.as_deref().unwrap_or_default().contains("cannot load"), "{:?}", status.nvml_error);
    assert!(status.devices.is_empty());
    assert_eq!(status.summary, GpuSummary::default());
}

/// The library loads but the driver is not there.
#[tokio::test(flavor = "multi_thread")]
async fn a_driver_that_is_not_loaded_is_zero_gpus() {
    let mut fixture = hgx_h100x8();
    fixture["initError"] = json!("DRIVER_NOT_LOADED");
    let file = FixtureFile::new(&fixture);
    let status = dump(&file.path, mock_library(), &no_kubelet()).await;
    assert!(!status.nvml_available);
    assert_eq!(status.nvml_error.as_deref(), Some("the NVIDIA driver is not loaded"));
    assert_eq!(status.summary.total, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_gpu_is_unhealthy_and_others_are_not() {
    let mut fixture = hgx_h100x8();
    fixture["devices"][6]["lost"] = json!(true);
    let file = FixtureFile::new(&fixture);
    let status = dump(&file.path, mock_library(), &no_kubelet()).await;
    assert_eq!(status.summary, GpuSummary { total: 8, healthy: 7, allocated: 0, busy: 0, free: 7 });
    let lost = &status.devices[6];
    assert!(lost.health.reason.as_deref().unwrap_or_default().contains("lost"), "{:?}", lost.health);
    assert_eq!(lost.uuid, uuid(&fixture, 6), "identity survives");
    assert_eq!(lost.memory, None);
}

/// If waiting for events fails, no GPU can be trusted (the device plugin's rule).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_event_wait_marks_every_gpu_unhealthy() {
    let mut fixture = hgx_h100x8();
    fixture["eventWaitError"] = json!("UNKNOWN");
    let file = FixtureFile::new(&fixture);
    let status = dump(&file.path, mock_library(), &no_kubelet()).await;
    assert_eq!(status.summary.healthy, 0);
    assert!(status.devices.iter().all(|d| d.health.reason.as_deref().unwrap_or_default().contains("XID events")));
}

/// MIG: utilisation is not supported on the parent, and a pod holding a MIG device holds its GPU.
#[tokio::test(flavor = "multi_thread")]
async fn a_mig_device_allocated_to_a_pod_holds_its_gpu() {
    let mut fixture = hgx_h100x8();
    fixture["devices"][7]["mig"] = json!({ "enabled": true, "devices": [{ "uuid": "MIG-11111111-2222-3333-4444-555555555555" }, { "uuid": "MIG-b" }] });
    let file = FixtureFile::new(&fixture);
    let uuids = all_uuids(&fixture);
    let mut allocatable: Vec<&str> = uuids[..7].iter().map(String::as_str).collect();
    allocatable.extend(["MIG-11111111-2222-3333-4444-555555555555", "MIG-b"]);
    let kubelet =
        FakeKubelet::start(&[("ml", "notebook", &["MIG-11111111-2222-3333-4444-555555555555"])], Some(&allocatable));

    let status = dump(&file.path, mock_library(), &kubelet.socket).await;

    let mig = &status.devices[7];
    assert_eq!(mig.mig_enabled, Some(true));
    assert_eq!(mig.utilization, None);
    assert_eq!(mig.allocated_to.as_ref().map(|p| p.name.as_str()), Some("notebook"));
    assert_eq!(status.summary, GpuSummary { total: 8, healthy: 8, allocated: 1, busy: 0, free: 7 });
}

/// A GPU the device plugin does not offer (absent from the kubelet's allocatable devices) cannot be given to a
/// pod, so it is not counted healthy.
#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_the_kubelet_cannot_allocate_is_not_healthy() {
    let fixture = hgx_h100x8();
    let file = FixtureFile::new(&fixture);
    let uuids = all_uuids(&fixture);
    let allocatable: Vec<&str> = uuids[1..].iter().map(String::as_str).collect();
    let kubelet = FakeKubelet::start(&[], Some(&allocatable));
    let status = dump(&file.path, mock_library(), &kubelet.socket).await;
    assert_eq!(status.summary, GpuSummary { total: 8, healthy: 7, allocated: 0, busy: 0, free: 7 });
    assert!(!status.devices[0].health.healthy);
}

/// A driver older than R510 has neither the v2 memory call nor the v3 process call: memory is unknown, the
/// agent carries on.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_driver_reports_what_it_can() {
    let mut fixture = hgx_h100x8();
    fixture["driverVersion"] = json!("470.223.02");
    let file = FixtureFile::new(&fixture);
    let status = dump(&file.path, mock_library(), &no_kubelet()).await;
    assert_eq!(status.driver_version.as_deref(), Some("470.223.02"));
    assert_eq!(status.summary.total, 8);
    assert!(status.devices.iter().all(|d| d.memory.is_none() && d.temperature_celsius.is_some()));
}
