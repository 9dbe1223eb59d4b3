//! The `GPUNode` status: built from the reading, the allocations and the health book, summarised, and
//! compared with the last one written to decide whether it is worth writing before the next heartbeat.

use muster_api::gpunode::{GPUNodeStatus, GpuDevice, GpuEcc, GpuSummary};

use crate::allocation::Attribution;
use crate::health::{HealthBook, health};
use crate::inventory::{Inventory, NvmlState};

/// The status for `inventory` (without a heartbeat time; the publisher stamps it).
pub fn build(inventory: &Inventory, attribution: &Attribution, book: &HealthBook) -> GPUNodeStatus {
    let devices: Vec<GpuDevice> = inventory
        .devices
        .iter()
        .enumerate()
        .map(|(i, reading)| {
            let allocated_to = attribution.allocated_to.get(i).cloned().flatten();
            let advertised = attribution.advertised.get(i).copied().flatten();
            // With the kubelet's view, processes on a GPU a pod holds are that pod's; every other process is
            // foreign. Without it nobody can tell, so every process counts as foreign.
            let foreign_processes =
                if attribution.attributable && allocated_to.is_some() { Vec::new() } else { reading.processes.clone() };
            GpuDevice {
                index: reading.index,
                uuid: reading.uuid.clone(),
                model: reading.name.clone(),
                pci_bus_id: reading.pci_bus_id.clone(),
                memory: reading.memory,
                utilization: reading.utilization,
                temperature_celsius: reading.temperature_celsius,
                power_watts: reading.power_milliwatts.map(|mw| f64::from(mw) / 1000.0),
                health: health(reading, book, advertised),
                mig_enabled: reading.mig_enabled,
                ecc: reading.ecc.map(|e| GpuEcc {
                    enabled: e.enabled,
                    volatile_uncorrected: e.uncorrected_volatile.unwrap_or(0),
                    retired_pages_pending: e.retired_pages_pending.unwrap_or(false),
                }),
                nvlink_peers: reading.nvlink_peers.clone(),
                allocated_to,
                foreign_processes,
            }
        })
        .collect();
    let (nvml_available, nvml_error, driver_version, cuda_driver_version) = match &inventory.nvml {
        NvmlState::Up { driver_version, cuda_driver_version } => {
            (true, None, driver_version.clone(), cuda_driver_version.clone())
        }
        NvmlState::Down { error } => (false, Some(error.clone()), None, None),
    };
    GPUNodeStatus {
        nvml_available,
        nvml_error,
        driver_version,
        cuda_driver_version,
        summary: summarize(&devices, attribution.unattributed),
        devices,
        heartbeat_time: None,
    }
}

/// total, healthy, allocated (held by a pod), busy (not held, running a foreign process), and free =
/// healthy ∧ not allocated ∧ not busy. `unattributed` GPUs are held by pods without knowing which; they are
/// taken out of the free ones, since any free-looking GPU might be one of them.
pub fn summarize(devices: &[GpuDevice], unattributed: u32) -> GpuSummary {
    let count = |f: &dyn Fn(&GpuDevice) -> bool| devices.iter().filter(|d| f(d)).count() as u32;
    let total = devices.len() as u32;
    let busy = |d: &GpuDevice| d.allocated_to.is_none() && !d.foreign_processes.is_empty();
    let attributed = count(&|d| d.allocated_to.is_some());
    let free = count(&|d| d.health.healthy && d.allocated_to.is_none() && !busy(d));
    GpuSummary {
        total,
        healthy: count(&|d| d.health.healthy),
        allocated: (attributed + unattributed).min(total),
        busy: count(&busy),
        free: free.saturating_sub(unattributed),
    }
}

/// Whether `new` says something `old` does not, beyond telemetry that changes every sample (memory use,
/// utilisation, temperature, power, a process's memory). Those are refreshed with the heartbeat; anything
/// admission acts on (a GPU's health, allocation, busy-ness, the set of GPUs) is written at once.
pub fn significant_change(old: &GPUNodeStatus, new: &GPUNodeStatus) -> bool {
    without_telemetry(old) != without_telemetry(new)
}

fn without_telemetry(status: &GPUNodeStatus) -> GPUNodeStatus {
    let mut s = status.clone();
    s.heartbeat_time = None;
    for d in &mut s.devices {
        if let Some(m) = &mut d.memory {
            m.used_bytes = 0;
            m.free_bytes = 0;
        }
        d.utilization = None;
        d.temperature_celsius = None;
        d.power_watts = None;
        for p in &mut d.foreign_processes {
            p.used_memory_bytes = 0;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use muster_api::gpunode::{GpuMemory, GpuProcess, GpuUtilization, PodRef};

    use super::*;
    use crate::allocation::{Allocations, KubeletView, PodDevices, PodGpus, attribute};
    use crate::health::XidPolicy;
    use crate::inventory::DeviceReading;

    fn reading(index: u32) -> DeviceReading {
        DeviceReading {
            index,
            uuid: format!("GPU-{index}"),
            name: "NVIDIA H100 80GB HBM3".into(),
            pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + index),
            memory: Some(GpuMemory {
                total_bytes: 85_520_809_984,
                reserved_bytes: 501_481_472,
                used_bytes: 0,
                free_bytes: 85_019_328_512,
            }),
            utilization: Some(GpuUtilization { gpu_percent: 0, memory_percent: 0 }),
            temperature_celsius: Some(35),
            power_milliwatts: Some(70_000),
            processes_known: true,
            ..Default::default()
        }
    }

    fn up(devices: Vec<DeviceReading>) -> Inventory {
        Inventory {
            nvml: NvmlState::Up { driver_version: Some("570.124.06".into()), cuda_driver_version: Some("12.8".into()) },
            devices,
        }
    }

    fn pod(name: &str) -> PodRef {
        PodRef { namespace: "ml".into(), name: name.into(), uid: None }
    }

    /// The node: 8 GPUs, 2 held by pods, 1 with XID 79, 1 running a process no pod owns.
    #[test]
    fn eight_gpus_two_allocated_one_xid_one_foreign_process() {
        let mut devices: Vec<_> = (0..8).map(reading).collect();
        devices[5].processes = vec![GpuProcess { pid: 4242, used_memory_bytes: 1 << 30 }];
        // A pod's own process does not make its GPU busy.
        devices[0].processes = vec![GpuProcess { pid: 7, used_memory_bytes: 1 << 32 }];
        let inventory = up(devices);
        let mut book = HealthBook::default();
        book.record_xid("GPU-3", 79, &XidPolicy::default());
        let view = KubeletView {
            allocatable: Some((0..8).map(|i| format!("GPU-{i}")).collect()),
            pods: vec![
                PodDevices { pod: pod("train-0"), device_ids: vec!["GPU-0".into()] },
                PodDevices { pod: pod("train-1"), device_ids: vec!["GPU-1".into()] },
            ],
        };
        let attribution = attribute(&inventory.devices, &Allocations::Kubelet(view));
        let status = build(&inventory, &attribution, &book);
        assert_eq!(status.summary, GpuSummary { total: 8, healthy: 7, allocated: 2, busy: 1, free: 4 });
        assert_eq!(status.devices[3].health.xid, Some(79));
        assert_eq!(status.devices[0].allocated_to, Some(pod("train-0")));
        assert!(status.devices[0].foreign_processes.is_empty());
        assert_eq!(status.devices[5].foreign_processes[0].pid, 4242);
        assert_eq!(status.devices[0].power_watts, Some(70.0));
        assert!(status.nvml_available);
    }

    #[test]
    fn no_nvml_is_zero_gpus() {
        let status = build(&Inventory::down("no library"), &Attribution::default(), &HealthBook::default());
        assert!(!status.nvml_available);
        assert_eq!(status.nvml_error.as_deref(), Some("no library"));
        assert_eq!(status.summary, GpuSummary::default());
    }

    #[test]
    fn the_api_server_fallback_is_conservative() {
        let mut devices: Vec<_> = (0..8).map(reading).collect();
        devices[5].processes = vec![GpuProcess { pid: 4242, used_memory_bytes: 0 }];
        let inventory = up(devices);
        let pods = vec![PodGpus { pod: pod("a"), gpus: 2 }];
        let attribution = attribute(&inventory.devices, &Allocations::ApiServer(pods));
        let status = build(&inventory, &attribution, &HealthBook::default());
        assert_eq!(status.summary, GpuSummary { total: 8, healthy: 8, allocated: 2, busy: 1, free: 5 });
    }

    #[test]
    fn an_unhealthy_allocated_gpu_is_counted_once_in_each_column() {
        let inventory = up((0..2).map(reading).collect());
        let mut book = HealthBook::default();
        book.record_xid("GPU-0", 48, &XidPolicy::default());
        let view = KubeletView {
            allocatable: None,
            pods: vec![PodDevices { pod: pod("a"), device_ids: vec!["GPU-0".into()] }],
        };
        let status = build(&inventory, &attribute(&inventory.devices, &Allocations::Kubelet(view)), &book);
        assert_eq!(status.summary, GpuSummary { total: 2, healthy: 1, allocated: 1, busy: 0, free: 1 });
    }

    #[test]
    fn telemetry_alone_is_not_a_significant_change() {
        let inventory = up((0..2).map(reading).collect());
        let old = build(&inventory, &Attribution::default(), &HealthBook::default());
        let mut new = old.clone();
        new.devices[0].temperature_celsius = Some(80);
        new.devices[0].power_watts = Some(650.5);
        new.devices[1].utilization = Some(GpuUtilization { gpu_percent: 100, memory_percent: 40 });
        if let Some(m) = &mut new.devices[1].memory {
            m.used_bytes += 1 << 30;
            m.free_bytes -= 1 << 30;
        }
        assert!(!significant_change(&old, &new));

        let mut busy = old.clone();
        busy.devices[1].foreign_processes = vec![GpuProcess { pid: 1, used_memory_bytes: 0 }];
        assert!(significant_change(&old, &busy));
        let mut sick = old.clone();
        sick.devices[0].health.healthy = false;
        assert!(significant_change(&old, &sick));
        let mut fewer = old.clone();
        fewer.devices.pop();
        assert!(significant_change(&old, &fewer));
    }
}
