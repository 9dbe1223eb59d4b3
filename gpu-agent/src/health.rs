//! GPU health, as the NVIDIA device plugin judges it: a critical XID event marks that GPU unhealthy, XIDs that
//! are the application's fault are ignored (by default 13, 31, 43, 45, 68, 109), a GPU NVML reports lost is
//! unhealthy, a GPU whose events cannot be watched is unhealthy, and if waiting for events fails every GPU is.
//! Marks are sticky for the life of the agent, as the device plugin's are: a GPU that raised XID 79 needs a
//! reset, after which the agent restarts with the node's pods anyway.
//!
//! [`HealthBook`] is the state the XID watcher writes; [`health`] is the decision for one GPU.

use std::collections::{BTreeMap, BTreeSet};

use muster_api::gpunode::GpuHealth;

use crate::inventory::DeviceReading;
use crate::xid;

/// Which XIDs mark a GPU unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidPolicy {
    /// No XID marks a GPU unhealthy (`--ignored-xids all`).
    pub ignore_all: bool,
    pub ignored: BTreeSet<u64>,
}

impl Default for XidPolicy {
    fn default() -> Self {
        XidPolicy { ignore_all: false, ignored: xid::DEFAULT_IGNORED.into_iter().collect() }
    }
}

impl XidPolicy {
    /// `13,31,43` (exactly these), `all` (no XID counts), or empty (every XID counts).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("all") {
            return Ok(XidPolicy { ignore_all: true, ignored: BTreeSet::new() });
        }
        let ignored = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().map_err(|_| format!("not an XID number: {s:?}")))
            .collect::<Result<_, _>>()?;
        Ok(XidPolicy { ignore_all: false, ignored })
    }

    pub fn is_critical(&self, xid: u64) -> bool {
        !self.ignore_all && !self.ignored.contains(&xid)
    }
}

/// What the XID watcher has seen, per GPU UUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthBook {
    gpus: BTreeMap<String, Marks>,
    /// Waiting for events failed: no GPU can be trusted.
    watch_failure: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Marks {
    /// The first critical XID.
    critical_xid: Option<u64>,
    registration_error: Option<String>,
    /// Every XID seen (ignored ones too), for metrics.
    xid_counts: BTreeMap<u64, u64>,
}

impl HealthBook {
    /// An XID event for the GPU `uuid`. Returns whether it changed the GPU's health.
    pub fn record_xid(&mut self, uuid: &str, xid: u64, policy: &XidPolicy) -> bool {
        let marks = self.gpus.entry(uuid.to_string()).or_default();
        *marks.xid_counts.entry(xid).or_default() += 1;
        if policy.is_critical(xid) && marks.critical_xid.is_none() {
            marks.critical_xid = Some(xid);
            return true;
        }
        false
    }

    /// The GPU's events could not be registered: its XIDs would go unseen.
    pub fn registration_failed(&mut self, uuid: &str, error: impl Into<String>) {
        self.gpus.entry(uuid.to_string()).or_default().registration_error = Some(error.into());
    }

    /// Waiting for events failed with something other than a timeout.
    pub fn watch_failed(&mut self, error: impl Into<String>) {
        self.watch_failure.get_or_insert_with(|| error.into());
    }

    /// (UUID, XID, count) for every XID seen.
    pub fn xid_counts(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.gpus.iter().flat_map(|(uuid, m)| m.xid_counts.iter().map(move |(x, n)| (uuid.as_str(), *x, *n)))
    }

    pub fn critical_xid(&self, uuid: &str) -> Option<u64> {
        self.gpus.get(uuid).and_then(|m| m.critical_xid)
    }
}

/// The health of one GPU. `advertised` is whether the kubelet lists the GPU among its allocatable devices
/// (`None` when unknown): a GPU the device plugin does not offer can never be given to a pod.
pub fn health(reading: &DeviceReading, book: &HealthBook, advertised: Option<bool>) -> GpuHealth {
    let unhealthy = |reason: String, xid: Option<u64>| GpuHealth { healthy: false, reason: Some(reason), xid };
    if reading.lost {
        return unhealthy("GPU is lost: NVML reports it fell off the bus or is otherwise inaccessible".into(), None);
    }
    if let Some(error) = &reading.inaccessible {
        return unhealthy(format!("NVML cannot access the GPU: {error}"), None);
    }
    let marks = book.gpus.get(&reading.uuid);
    if let Some(xid) = marks.and_then(|m| m.critical_xid) {
        return unhealthy(xid::describe(xid), Some(xid));
    }
    if let Some(error) = marks.and_then(|m| m.registration_error.as_ref()) {
        return unhealthy(format!("cannot watch the GPU for XID events: {error}"), None);
    }
    if let Some(error) = &book.watch_failure {
        return unhealthy(format!("waiting for XID events failed: {error}"), None);
    }
    if advertised == Some(false) {
        return unhealthy(
            "not offered by the NVIDIA device plugin (absent from the kubelet's allocatable devices)".into(),
            None,
        );
    }
    GpuHealth { healthy: true, reason: None, xid: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(uuid: &str) -> DeviceReading {
        DeviceReading { uuid: uuid.into(), ..Default::default() }
    }

    #[test]
    fn the_default_policy_is_the_device_plugins() {
        let policy = XidPolicy::default();
        for ignored in [13, 31, 43, 45, 68, 109] {
            assert!(!policy.is_critical(ignored), "{ignored}");
        }
        for critical in [48, 63, 74, 79, 94, 95, 999] {
            assert!(policy.is_critical(critical), "{critical}");
        }
    }

    #[test]
    fn policies_parse() {
        assert_eq!(XidPolicy::parse("13, 31,").expect("parse").ignored, BTreeSet::from([13, 31]));
        assert!(XidPolicy::parse("ALL").expect("parse").ignore_all);
        assert!(XidPolicy::parse("").expect("parse").is_critical(13));
        assert!(XidPolicy::parse("13,x").is_err());
    }

    #[test]
    fn a_critical_xid_marks_its_gpu_with_the_xid_in_the_reason() {
        let mut book = HealthBook::default();
        assert!(book.record_xid("GPU-3", 79, &XidPolicy::default()));
        let h = health(&gpu("GPU-3"), &book, None);
        assert!(!h.healthy);
        assert_eq!(h.xid, Some(79));
        assert_eq!(h.reason.as_deref(), Some("XID 79 (GPU has fallen off the bus)"));
        assert!(health(&gpu("GPU-4"), &book, None).healthy, "other GPUs are untouched");
    }

    #[test]
    fn an_ignored_xid_changes_nothing_but_is_counted() {
        let mut book = HealthBook::default();
        assert!(!book.record_xid("GPU-3", 13, &XidPolicy::default()));
        assert!(health(&gpu("GPU-3"), &book, None).healthy);
        assert_eq!(book.xid_counts().collect::<Vec<_>>(), vec![("GPU-3", 13, 1)]);
    }

    #[test]
    fn the_first_critical_xid_sticks() {
        let mut book = HealthBook::default();
        let policy = XidPolicy::default();
        book.record_xid("GPU-0", 48, &policy);
        assert!(!book.record_xid("GPU-0", 79, &policy), "already unhealthy");
        assert_eq!(book.critical_xid("GPU-0"), Some(48));
        assert_eq!(book.xid_counts().count(), 2);
    }

    #[test]
    fn lost_and_unwatched_gpus_are_unhealthy() {
        let book = HealthBook::default();
        let lost = DeviceReading { lost: true, ..gpu("GPU-0") };
        assert!(health(&lost, &book, None).reason.unwrap_or_default().contains("lost"));

        let mut book = HealthBook::default();
        book.registration_failed("GPU-1", "Unknown");
        assert!(!health(&gpu("GPU-1"), &book, None).healthy);
        assert!(health(&gpu("GPU-2"), &book, None).healthy);

        book.watch_failed("GPU is lost");
        assert!(!health(&gpu("GPU-2"), &book, None).healthy, "a failed wait taints every GPU");
    }

    #[test]
    fn a_gpu_the_device_plugin_does_not_offer_is_unhealthy() {
        let book = HealthBook::default();
        assert!(!health(&gpu("GPU-0"), &book, Some(false)).healthy);
        assert!(health(&gpu("GPU-0"), &book, Some(true)).healthy);
    }
}
