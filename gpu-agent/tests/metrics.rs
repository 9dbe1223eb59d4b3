//! `/metrics` of a running agent on the mock NVML library: every value equals the fixture's, in base units,
//! on dcgm-exporter's labels; a changed fixture shows up live; without NVML the agent says so.

mod common;

use std::time::Duration;

use common::{FakeKubelet, FixtureFile, ServingAgent, eventually, hgx_h100x8, http_get, mock_library, no_kubelet};
use serde_json::json;

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread")]
async fn metric_values_equal_the_fixture() {
    let mut fixture = hgx_h100x8();
    for (i, device) in fixture["devices"].as_array_mut().expect("devices").iter_mut().enumerate() {
        let i = i as u64;
        device["memory"]["used"] = json!(i * 5 * GIB + 4_321);
        device["utilization"] = json!({ "gpu": 12 * i + 3, "memory": 7 * i });
        device["temperature"] = json!(40 + i);
        device["powerMilliwatts"] = json!(123_456 + 10_001 * i);
        device["ecc"] = json!({ "correctedVolatile": 10 + i, "uncorrectedVolatile": 0 });
    }
    fixture["devices"][5]["processes"] = json!([{ "pid": 4242, "usedMemory": GIB }]);
    fixture["xidEvents"] = json!([{ "gpu": 3, "xid": 79 }, { "gpu": 2, "xid": 13 }, { "gpu": 2, "xid": 13 }]);
    let file = FixtureFile::new(&fixture);
    let uuid = |i: usize| fixture["devices"][i]["uuid"].as_str().unwrap_or_default().to_string();
    let kubelet =
        FakeKubelet::start(&[("ml", "train-0", &[uuid(0).as_str()]), ("ml", "train-1", &[uuid(1).as_str()])], None);
    let agent = ServingAgent::start(&file.path, mock_library(), &kubelet.socket).await;

    // XIDs arrive on the watcher thread; wait until all three are counted.
    let metrics = eventually(Duration::from_secs(20), "three XIDs counted", || async {
        let m = agent.metrics().await;
        let counted = m.value("muster_gpu_xid_errors_total", &[("gpu", "2"), ("xid", "13")]) == Some(2.0)
            && m.value("muster_gpu_xid_errors_total", &[("gpu", "3"), ("xid", "79")]) == Some(1.0);
        counted.then_some(m)
    })
    .await;

    for i in 0..8 {
        let f = &fixture["devices"][i];
        let gpu = i.to_string();
        let bus_id = f["pciBusId"].as_str().unwrap_or_default();
        let uuid = uuid(i);
        let labels = [
            ("gpu", gpu.as_str()),
            ("UUID", uuid.as_str()),
            ("pci_bus_id", bus_id),
            ("modelName", "NVIDIA H100 80GB HBM3"),
            ("hostname", "gpu-node-1"),
        ];
        let used = f["memory"]["used"].as_u64().unwrap_or_default();
        let value = |name: &str| metrics.expect(name, &labels);
        assert_eq!(value("muster_gpu_memory_total_bytes"), 85_520_809_984.0);
        assert_eq!(value("muster_gpu_memory_reserved_bytes"), 501_481_472.0);
        assert_eq!(value("muster_gpu_memory_used_bytes"), used as f64);
        assert_eq!(value("muster_gpu_memory_free_bytes"), (85_520_809_984 - 501_481_472 - used) as f64);
        assert_eq!(value("muster_gpu_utilization_ratio"), f["utilization"]["gpu"].as_f64().unwrap_or_default() / 100.0);
        assert_eq!(
            value("muster_gpu_memory_utilization_ratio"),
            f["utilization"]["memory"].as_f64().unwrap_or_default() / 100.0
        );
        assert_eq!(value("muster_gpu_temperature_celsius"), f["temperature"].as_f64().unwrap_or_default());
        assert_eq!(value("muster_gpu_power_usage_watts"), f["powerMilliwatts"].as_f64().unwrap_or_default() / 1000.0);
        assert_eq!(
            metrics.expect("muster_gpu_ecc_volatile_errors", &[("gpu", gpu.as_str()), ("type", "corrected")]),
            f["ecc"]["correctedVolatile"].as_f64().unwrap_or_default()
        );
        assert_eq!(value("muster_gpu_healthy"), if i == 3 { 0.0 } else { 1.0 });
        assert_eq!(value("muster_gpu_allocated"), if i < 2 { 1.0 } else { 0.0 });
        assert_eq!(value("muster_gpu_busy"), if i == 5 { 1.0 } else { 0.0 });
        assert_eq!(value("muster_gpu_mig_enabled"), 0.0);
    }
    for (state, n) in [("total", 8.0), ("healthy", 7.0), ("allocated", 2.0), ("busy", 1.0), ("free", 4.0)] {
        assert_eq!(
            metrics.expect("muster_gpu_node_gpus", &[("hostname", "gpu-node-1"), ("state", state)]),
            n,
            "{state}"
        );
    }
    assert_eq!(metrics.expect("muster_gpu_agent_nvml_up", &[("hostname", "gpu-node-1")]), 1.0);
    assert_eq!(
        metrics.expect("muster_gpu_agent_info", &[("driver_version", "570.124.06"), ("allocation_source", "kubelet")]),
        1.0
    );
    assert!(metrics.text.contains("# UNIT muster_gpu_memory_total_bytes bytes"));
    assert!(metrics.text.contains("# TYPE muster_gpu_xid_errors counter"));
    assert!(metrics.value("muster_gpu_agent_polls_total", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(metrics.value("muster_gpu_agent_nvml_errors_total", &[]), None, "no NVML call failed");

    let (status, _, body) = http_get(&agent.address, "/healthz").await.expect("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok"));
    agent.stop().await;
}

/// The agent picks up a changed machine while it runs: an XID injected after start marks the GPU unhealthy,
/// a new foreign process makes a GPU busy.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_agent_sees_the_fixture_change() {
    let mut fixture = hgx_h100x8();
    let file = FixtureFile::new(&fixture);
    let agent = ServingAgent::start(&file.path, mock_library(), &no_kubelet()).await;
    let metrics = agent.metrics().await;
    assert_eq!(metrics.expect("muster_gpu_node_gpus", &[("state", "free")]), 8.0);

    fixture["xidEvents"] = json!([{ "gpu": 4, "xid": 48 }]);
    fixture["devices"][6]["processes"] = json!([{ "pid": 31337 }]);
    file.write(&fixture);

    eventually(Duration::from_secs(20), "GPU 4 unhealthy and GPU 6 busy", || async {
        let m = agent.metrics().await;
        let done = m.value("muster_gpu_healthy", &[("gpu", "4")]) == Some(0.0)
            && m.value("muster_gpu_busy", &[("gpu", "6")]) == Some(1.0)
            && m.value("muster_gpu_node_gpus", &[("state", "free")]) == Some(6.0);
        done.then_some(())
    })
    .await;
    agent.stop().await;
}

/// A GPU that appears later (e.g. after a reset brings it back) is watched for XIDs too.
#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_that_appears_later_is_watched_for_xids() {
    let mut fixture = hgx_h100x8();
    let eighth = fixture["devices"].as_array_mut().and_then(|d| d.pop()).expect("8 GPUs");
    let file = FixtureFile::new(&fixture);
    let agent = ServingAgent::start(&file.path, mock_library(), &no_kubelet()).await;
    assert_eq!(agent.metrics().await.expect("muster_gpu_node_gpus", &[("state", "total")]), 7.0);

    fixture["devices"].as_array_mut().expect("devices").push(eighth);
    file.write(&fixture);
    eventually(Duration::from_secs(20), "8 GPUs", || async {
        (agent.metrics().await.value("muster_gpu_node_gpus", &[("state", "total")]) == Some(8.0)).then_some(())
    })
    .await;
    fixture["xidEvents"] = json!([{ "gpu": 7, "xid": 79 }]);
    file.write(&fixture);
    eventually(Duration::from_secs(20), "GPU 7 unhealthy", || async {
        (agent.metrics().await.value("muster_gpu_healthy", &[("gpu", "7")]) == Some(0.0)).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_nvml_the_agent_serves_nvml_up_0() {
    let file = FixtureFile::new(&hgx_h100x8());
    let agent =
        ServingAgent::start(&file.path, std::path::Path::new("/nonexistent/libnvidia-ml.so.1"), &no_kubelet()).await;
    let metrics = agent.metrics().await;
    assert_eq!(metrics.expect("muster_gpu_agent_nvml_up", &[("hostname", "gpu-node-1")]), 0.0);
    assert_eq!(metrics.expect("muster_gpu_node_gpus", &[("state", "total")]), 0.0);
    assert!(metrics.value("muster_gpu_memory_total_bytes", &[]).is_none());
    agent.stop().await;
}
