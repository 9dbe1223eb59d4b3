//! Prometheus metrics, OpenMetrics text.
//!
//! Per GPU, the `nvidia-smi --query-gpu` fields in base units (bytes, ratio, celsius, watts), health,
//! allocation and XID counts, labelled as dcgm-exporter labels its series (`gpu` = NVML index, `UUID`,
//! `pci_bus_id`, `modelName`, `hostname`) so dashboards can join the two. Per node, the GPU counts admission
//! uses, and whether NVML is up. nvidia-smi prints MiB rounded *up* per field: `ceil(bytes / 2^20)` of these
//! byte values is what it shows (dcgm-exporter's `DCGM_FI_DEV_FB_*` round down instead).
//!
//! The GPU series are a pure function of the latest reading ([`families`]), served by a [`Collector`] that
//! encodes the current snapshot at scrape time, so a GPU that disappears takes its series with it. The
//! agent's own counters ([`AgentMetrics`]) are ordinary registered metrics.

use std::sync::{Arc, RwLock};

use muster_api::gpunode::{GPUNodeStatus, GpuDevice};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::inventory::{DeviceReading, Inventory};

/// Everything the GPU series are computed from.
#[derive(Debug, Clone, Default)]
pub struct MetricsView {
    /// The node name (dcgm-exporter's `hostname` label).
    pub hostname: String,
    pub inventory: Inventory,
    /// Built from `inventory`, in the same device order.
    pub status: GPUNodeStatus,
    /// (GPU UUID, XID, count).
    pub xid_counts: Vec<(String, u64, u64)>,
    pub allocation_source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Gauge(f64),
    GaugeInt(i64),
    Counter(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// Without the unit suffix (and without `_total` for counters); the encoder appends them.
    pub name: &'static str,
    pub help: &'static str,
    /// `bytes`, `ratio`, `celsius`, `watts`.
    pub unit: Option<&'static str>,
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    fn new(name: &'static str, unit: Option<&'static str>, help: &'static str) -> Self {
        MetricFamily { name, help, unit, samples: Vec::new() }
    }
}

fn gpu_labels(hostname: &str, d: &GpuDevice) -> Vec<(String, String)> {
    vec![
        ("gpu".into(), d.index.to_string()),
        ("UUID".into(), d.uuid.clone()),
        ("pci_bus_id".into(), d.pci_bus_id.clone()),
        ("modelName".into(), d.model.clone()),
        ("hostname".into(), hostname.to_string()),
    ]
}

fn with(mut labels: Vec<(String, String)>, key: &str, value: impl ToString) -> Vec<(String, String)> {
    labels.push((key.into(), value.to_string()));
    labels
}

fn bool_value(b: bool) -> Value {
    Value::GaugeInt(i64::from(b))
}

fn bytes(b: u64) -> Value {
    Value::GaugeInt(i64::try_from(b).unwrap_or(i64::MAX))
}

/// The metric families for one reading. Families without samples are left out.
pub fn families(view: &MetricsView) -> Vec<MetricFamily> {
    let host = view.hostname.as_str();
    let mut memory_total =
        MetricFamily::new("muster_gpu_memory_total", Some("bytes"), "Total GPU memory (nvidia-smi memory.total)");
    let mut memory_used = MetricFamily::new(
        "muster_gpu_memory_used",
        Some("bytes"),
        "GPU memory allocated by active contexts, excluding driver-reserved memory (nvidia-smi memory.used)",
    );
    let mut memory_free =
        MetricFamily::new("muster_gpu_memory_free", Some("bytes"), "Free GPU memory (nvidia-smi memory.free)");
    let mut memory_reserved = MetricFamily::new(
        "muster_gpu_memory_reserved",
        Some("bytes"),
        "GPU memory reserved by the driver and firmware (nvidia-smi memory.reserved)",
    );
    let mut utilization = MetricFamily::new(
        "muster_gpu_utilization",
        Some("ratio"),
        "Fraction of the last sample period a kernel was running (nvidia-smi utilization.gpu / 100)",
    );
    let mut memory_utilization = MetricFamily::new(
        "muster_gpu_memory_utilization",
        Some("ratio"),
        "Fraction of the last sample period device memory was read or written (nvidia-smi utilization.memory / 100)",
    );
    let mut temperature = MetricFamily::new(
        "muster_gpu_temperature",
        Some("celsius"),
        "GPU core temperature (nvidia-smi temperature.gpu)",
    );
    let mut power = MetricFamily::new("muster_gpu_power_usage", Some("watts"), "Power draw (nvidia-smi power.draw)");
    let mut healthy =
        MetricFamily::new("muster_gpu_healthy", None, "1 if the GPU is healthy (no critical XID, not lost)");
    let mut allocated = MetricFamily::new("muster_gpu_allocated", None, "1 if the kubelet allocated the GPU to a pod");
    let mut busy = MetricFamily::new(
        "muster_gpu_busy",
        None,
        "1 if the GPU is not allocated but runs processes that belong to no pod",
    );
    let mut foreign =
        MetricFamily::new("muster_gpu_foreign_processes", None, "Compute processes on the GPU that belong to no pod");
    let mut ecc_volatile = MetricFamily::new(
        "muster_gpu_ecc_volatile_errors",
        None,
        "ECC errors since the driver loaded, by type (nvidia-smi ecc.errors.*.volatile.total)",
    );
    let mut retired_pending =
        MetricFamily::new("muster_gpu_retired_pages_pending", None, "1 if retired pages await a GPU reset");
    let mut mig =
        MetricFamily::new("muster_gpu_mig_enabled", None, "1 if MIG mode is enabled (nvidia-smi mig.mode.current)");
    let mut xids = MetricFamily::new(
        "muster_gpu_xid_errors",
        None,
        "XID events seen since the agent started, by XID (ignored ones too)",
    );

    let readings: std::collections::BTreeMap<&str, &DeviceReading> =
        view.inventory.devices.iter().map(|r| (r.uuid.as_str(), r)).collect();
    for d in &view.status.devices {
        let labels = gpu_labels(host, d);
        let sample = |value: Value| Sample { labels: labels.clone(), value };
        if let Some(m) = &d.memory {
            memory_total.samples.push(sample(bytes(m.total_bytes)));
            memory_used.samples.push(sample(bytes(m.used_bytes)));
            memory_free.samples.push(sample(bytes(m.free_bytes)));
            memory_reserved.samples.push(sample(bytes(m.reserved_bytes)));
        }
        if let Some(u) = &d.utilization {
            utilization.samples.push(sample(Value::Gauge(f64::from(u.gpu_percent) / 100.0)));
            memory_utilization.samples.push(sample(Value::Gauge(f64::from(u.memory_percent) / 100.0)));
        }
        if let Some(t) = d.temperature_celsius {
            temperature.samples.push(sample(Value::GaugeInt(i64::from(t))));
        }
        if let Some(w) = d.power_watts {
            power.samples.push(sample(Value::Gauge(w)));
        }
        healthy.samples.push(sample(bool_value(d.health.healthy)));
        allocated.samples.push(sample(bool_value(d.allocated_to.is_some())));
        busy.samples.push(sample(bool_value(d.allocated_to.is_none() && !d.foreign_processes.is_empty())));
        foreign.samples.push(sample(Value::GaugeInt(d.foreign_processes.len() as i64)));
        if let Some(mig_enabled) = d.mig_enabled {
            mig.samples.push(sample(bool_value(mig_enabled)));
        }
        if let Some(ecc) = readings.get(d.uuid.as_str()).and_then(|r| r.ecc).filter(|e| e.enabled) {
            for (kind, value) in [("corrected", ecc.corrected_volatile), ("uncorrected", ecc.uncorrected_volatile)] {
                if let Some(v) = value {
                    ecc_volatile.samples.push(Sample { labels: with(labels.clone(), "type", kind), value: bytes(v) });
                }
            }
            if let Some(pending) = ecc.retired_pages_pending {
                retired_pending.samples.push(sample(bool_value(pending)));
            }
        }
        for (uuid, xid, count) in &view.xid_counts {
            if *uuid == d.uuid {
                xids.samples.push(Sample { labels: with(labels.clone(), "xid", xid), value: Value::Counter(*count) });
            }
        }
    }

    let node = vec![("hostname".to_string(), host.to_string())];
    let summary = &view.status.summary;
    let mut node_gpus = MetricFamily::new(
        "muster_gpu_node_gpus",
        None,
        "GPUs on the node by state: total, healthy, allocated (held by pods), busy (foreign processes), free",
    );
    for (state, n) in [
        ("total", summary.total),
        ("healthy", summary.healthy),
        ("allocated", summary.allocated),
        ("busy", summary.busy),
        ("free", summary.free),
    ] {
        node_gpus
            .samples
            .push(Sample { labels: with(node.clone(), "state", state), value: Value::GaugeInt(i64::from(n)) });
    }
    let mut nvml_up = MetricFamily::new("muster_gpu_agent_nvml_up", None, "1 if the agent could initialise NVML");
    nvml_up.samples.push(Sample { labels: node.clone(), value: bool_value(view.status.nvml_available) });
    let mut info = MetricFamily::new("muster_gpu_agent_info", None, "Driver versions and where allocations come from");
    info.samples.push(Sample {
        labels: with(
            with(
                with(node.clone(), "driver_version", view.status.driver_version.as_deref().unwrap_or("")),
                "cuda_driver_version",
                view.status.cuda_driver_version.as_deref().unwrap_or(""),
            ),
            "allocation_source",
            view.allocation_source,
        ),
        value: Value::GaugeInt(1),
    });

    [
        memory_total,
        memory_used,
        memory_free,
        memory_reserved,
        utilization,
        memory_utilization,
        temperature,
        power,
        healthy,
        allocated,
        busy,
        foreign,
        ecc_volatile,
        retired_pending,
        mig,
        xids,
        node_gpus,
        nvml_up,
        info,
    ]
    .into_iter()
    .filter(|f| !f.samples.is_empty())
    .collect()
}

/// Serves [`families`] of the latest [`MetricsView`] at scrape time.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCollector {
    view: Arc<RwLock<Option<MetricsView>>>,
}

impl SnapshotCollector {
    pub fn set(&self, view: MetricsView) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let guard = self.view.read().unwrap_or_else(|p| p.into_inner());
        let Some(view) = guard.as_ref() else { return Ok(()) };
        for family in families(view) {
            let kind = match family.samples.first().map(|s| s.value) {
                Some(Value::Counter(_)) => MetricType::Counter,
                _ => MetricType::Gauge,
            };
            let unit = family.unit.map(|u| Unit::Other(u.to_string()));
            let mut metric = encoder.encode_descriptor(family.name, family.help, unit.as_ref(), kind)?;
            for sample in &family.samples {
                // Label pairs in the order given: dcgm-exporter's names (`UUID`, `modelName`) are not Rust
                // identifiers, so no derive.
                let encoder = metric.encode_family(&sample.labels)?;
                match sample.value {
                    Value::Gauge(v) => ConstGauge::new(v).encode(encoder)?,
                    Value::GaugeInt(v) => ConstGauge::new(v).encode(encoder)?,
                    Value::Counter(v) => ConstCounter::new(v).encode(encoder)?,
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

/// The agent's own counters.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    pub gpus: SnapshotCollector,
    pub polls: Counter,
    pub poll_seconds: Histogram,
    /// GPUNode writes, by reason (`changed`, `heartbeat`).
    pub publishes: Family<ReasonLabels, Counter>,
    pub publish_errors: Counter,
    /// NVML calls that failed with something other than "not supported", by NVML function.
    pub nvml_errors: Family<CallLabels, Counter>,
    /// Failures reading allocations, by source (`kubelet`, `apiserver`).
    pub allocation_errors: Family<SourceLabels, Counter>,
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = AgentMetrics {
            gpus: SnapshotCollector::default(),
            polls: Counter::default(),
            // 1 ms .. ~16 s
            poll_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            publishes: Family::default(),
            publish_errors: Counter::default(),
            nvml_errors: Family::default(),
            allocation_errors: Family::default(),
        };
        registry.register_collector(Box::new(metrics.gpus.clone()));
        let agent = registry.sub_registry_with_prefix("muster_gpu_agent");
        // The encoder appends `_total` to counters.
        agent.register("polls", "Readings of NVML and allocations", metrics.polls.clone());
        agent.register_with_unit(
            "poll_duration",
            "Time to read NVML and allocations and build the status",
            Unit::Seconds,
            metrics.poll_seconds.clone(),
        );
        agent.register("publishes", "GPUNode status writes, by reason", metrics.publishes.clone());
        agent.register("publish_errors", "Failed GPUNode writes", metrics.publish_errors.clone());
        agent.register("nvml_errors", "Failed NVML calls, by function", metrics.nvml_errors.clone());
        agent.register(
            "allocation_errors",
            "Failed reads of pod allocations, by source",
            metrics.allocation_errors.clone(),
        );
        metrics
    }
}

/// OpenMetrics text of a registry.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use muster_api::gpunode::{GpuHealth, GpuMemory, GpuSummary, GpuUtilization, PodRef};

    use super::*;
    use crate::inventory::{EccReading, NvmlState};

    fn view() -> MetricsView {
        let device = GpuDevice {
            index: 0,
            uuid: "GPU-0".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            pci_bus_id: "00000000:18:00.0".into(),
            memory: Some(GpuMemory { total_bytes: 100, used_bytes: 10, free_bytes: 80, reserved_bytes: 10 }),
            utilization: Some(GpuUtilization { gpu_percent: 37, memory_percent: 5 }),
            temperature_celsius: Some(41),
            power_watts: Some(123.456),
            health: GpuHealth { healthy: false, reason: Some("XID 79".into()), xid: Some(79) },
            allocated_to: Some(PodRef { namespace: "ml".into(), name: "p".into(), uid: None }),
            ..Default::default()
        };
        MetricsView {
            hostname: "gpu-node-1".into(),
            inventory: Inventory {
                nvml: NvmlState::Up { driver_version: Some("570.124.06".into()), cuda_driver_version: None },
                devices: vec![DeviceReading {
                    uuid: "GPU-0".into(),
                    ecc: Some(EccReading {
                        enabled: true,
                        corrected_volatile: Some(3),
                        uncorrected_volatile: Some(0),
                        retired_pages_pending: Some(false),
                    }),
                    ..Default::default()
                }],
            },
            status: GPUNodeStatus {
                nvml_available: true,
                driver_version: Some("570.124.06".into()),
                summary: GpuSummary { total: 1, healthy: 0, allocated: 1, busy: 0, free: 0 },
                devices: vec![device],
                ..Default::default()
            },
            xid_counts: vec![("GPU-0".into(), 79, 1), ("GPU-0".into(), 13, 2)],
            allocation_source: "kubelet",
        }
    }

    fn text(view: MetricsView) -> String {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        metrics.gpus.set(view);
        encode(&registry).expect("encode")
    }

    #[test]
    fn gpu_series_carry_dcgm_exporter_labels_and_base_units() {
        let body = text(view());
        let labels = r#"gpu="0",UUID="GPU-0",pci_bus_id="00000000:18:00.0",modelName="NVIDIA H100 80GB HBM3",hostname="gpu-node-1""#;
        for line in [
            format!("muster_gpu_memory_total_bytes{{{labels}}} 100"),
            format!("muster_gpu_memory_reserved_bytes{{{labels}}} 10"),
            format!("muster_gpu_utilization_ratio{{{labels}}} 0.37"),
            format!("muster_gpu_temperature_celsius{{{labels}}} 41"),
            format!("muster_gpu_power_usage_watts{{{labels}}} 123.456"),
            format!("muster_gpu_healthy{{{labels}}} 0"),
            format!("muster_gpu_allocated{{{labels}}} 1"),
            format!("muster_gpu_ecc_volatile_errors{{{labels},type=\"corrected\"}} 3"),
            format!("muster_gpu_xid_errors_total{{{labels},xid=\"79\"}} 1"),
            format!("muster_gpu_xid_errors_total{{{labels},xid=\"13\"}} 2"),
            r#"muster_gpu_node_gpus{hostname="gpu-node-1",state="allocated"} 1"#.to_string(),
            r#"muster_gpu_agent_nvml_up{hostname="gpu-node-1"} 1"#.to_string(),
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line}\n{body}");
        }
        assert!(body.contains("# UNIT muster_gpu_memory_total_bytes bytes"));
        assert!(body.contains("# TYPE muster_gpu_xid_errors counter"));
        assert!(body.ends_with("# EOF\n"));
    }

    #[test]
    fn no_nvml_still_says_so() {
        let view = MetricsView {
            hostname: "cpu-node".into(),
            inventory: Inventory::down("no library"),
            status: GPUNodeStatus::default(),
            allocation_source: "none",
            ..Default::default()
        };
        let body = text(view);
        assert!(body.contains(r#"muster_gpu_agent_nvml_up{hostname="cpu-node"} 0"#), "{body}");
        assert!(body.contains(r#"muster_gpu_node_gpus{hostname="cpu-node",state="total"} 0"#));
        assert!(!body.contains("muster_gpu_memory_total_bytes{"));
    }

    #[test]
    fn a_gpu_that_disappears_takes_its_series_with_it() {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        metrics.gpus.set(view());
        assert!(encode(&registry).expect("encode").contains(r#"UUID="GPU-0""#));
        let mut empty = view();
        empty.status.devices.clear();
        metrics.gpus.set(empty);
        assert!(!encode(&registry).expect("encode").contains(r#"UUID="GPU-0""#));
    }
}
