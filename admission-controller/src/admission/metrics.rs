//! The admission controller's Prometheus metrics (`muster_admission_*`). Names and labels are the contract the
//! alert rules and the dashboard in `deploy/` are written against.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::state::{QueueSnapshot, TickReport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeadLabels {
    pub queue: String,
    pub gang: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequeueLabels {
    pub queue: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

type QueueGauge = Family<QueueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>;

fn histogram() -> Histogram {
    // From 5 ms, 28 doublings up to about 7.8 days: an admission wait can be either.
    Histogram::new(exponential_buckets(0.005, 2.0, 28))
}

#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    pending: QueueGauge,
    inadmissible: QueueGauge,
    admitted: QueueGauge,
    admitted_not_running: QueueGauge,
    oldest_pending: QueueGauge,
    oldest_admitted_not_running: QueueGauge,
    head_shortfall: QueueGauge,
    head_wait: Family<HeadLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    reserved_gpus: QueueGauge,
    wait: Family<QueueLabel, Histogram, fn() -> Histogram>,
    admitted_to_running: Family<QueueLabel, Histogram, fn() -> Histogram>,
    decision: Histogram,
    requeues: Family<RequeueLabels, Counter>,
    admissions: Family<QueueLabel, Counter>,
    pub errors: Family<CategoryLabel, Counter>,
}

impl AdmissionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = AdmissionMetrics {
            pending: Family::default(),
            inadmissible: Family::default(),
            admitted: Family::default(),
            admitted_not_running: Family::default(),
            oldest_pending: Family::default(),
            oldest_admitted_not_running: Family::default(),
            head_shortfall: Family::default(),
            head_wait: Family::default(),
            reserved_gpus: Family::default(),
            wait: Family::new_with_constructor(histogram),
            admitted_to_running: Family::new_with_constructor(histogram),
            decision: histogram(),
            requeues: Family::default(),
            admissions: Family::default(),
            errors: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("muster_admission");
        r.register("pending_gangs", "Gangs waiting in the queue (Pending or Requeued)", m.pending.clone());
        r.register("inadmissible_gangs", "Gangs that cannot fit as specified", m.inadmissible.clone());
        r.register("admitted_gangs", "Gangs holding a reservation (Admitted or Running)", m.admitted.clone());
        r.register(
            "admitted_not_running",
            "Admitted gangs whose pods are not all ready",
            m.admitted_not_running.clone(),
        );
        r.register_with_unit(
            "oldest_pending",
            "Age of the oldest waiting gang",
            Unit::Seconds,
            m.oldest_pending.clone(),
        );
        r.register_with_unit(
            "oldest_admitted_not_running",
            "Age of the oldest admission whose pods are not all ready",
            Unit::Seconds,
            m.oldest_admitted_not_running.clone(),
        );
        r.register("head_gpu_shortfall", "GPUs the queue's head gang lacks to fit now", m.head_shortfall.clone());
        r.register_with_unit(
            "head_wait",
            "How long the queue's head gang has waited",
            Unit::Seconds,
            m.head_wait.clone(),
        );
        r.register("reserved_gpus", "GPUs reserved for admitted gangs", m.reserved_gpus.clone());
        r.register_with_unit("wait", "Time from queued to admitted", Unit::Seconds, m.wait.clone());
        r.register_with_unit(
            "admitted_to_running",
            "Time from admitted to every pod ready",
            Unit::Seconds,
            m.admitted_to_running.clone(),
        );
        r.register_with_unit("decision", "Time of one admission round", Unit::Seconds, m.decision.clone());
        r.register("requeues", "Admitted gangs suspended and queued again, by reason", m.requeues.clone());
        r.register("admissions", "Gangs admitted", m.admissions.clone());
        r.register("errors", "Failed API writes and watch errors, by category", m.errors.clone());
        m
    }

    pub fn error(&self, category: &str) {
        self.errors.get_or_create(&CategoryLabel { category: category.to_owned() }).inc();
    }

    pub fn observe_tick(&self, report: &TickReport, took: Duration) {
        self.decision.observe(took.as_secs_f64());
        for (queue, waited) in &report.admitted {
            let q = QueueLabel { queue: queue.clone() };
            self.admissions.get_or_create(&q).inc();
            self.wait.get_or_create(&q).observe(waited.as_secs_f64());
        }
        for (queue, took) in &report.running {
            self.admitted_to_running.get_or_create(&QueueLabel { queue: queue.clone() }).observe(took.as_secs_f64());
        }
        for (queue, reason) in &report.requeued {
            self.requeues.get_or_create(&RequeueLabels { queue: queue.clone(), reason: (*reason).to_owned() }).inc();
        }
    }

    /// Replaces every gauge with the snapshot, so queues that emptied stop reporting stale numbers.
    pub fn set_queues(&self, snapshot: &BTreeMap<String, QueueSnapshot>) {
        let gauges = [
            &self.pending,
            &self.inadmissible,
            &self.admitted,
            &self.admitted_not_running,
            &self.oldest_pending,
            &self.oldest_admitted_not_running,
            &self.head_shortfall,
            &self.reserved_gpus,
        ];
        for g in gauges {
            g.clear();
        }
        self.head_wait.clear();
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        for (queue, q) in snapshot {
            let l = QueueLabel { queue: queue.clone() };
            self.pending.get_or_create(&l).set(q.pending as f64);
            self.inadmissible.get_or_create(&l).set(q.inadmissible as f64);
            self.admitted.get_or_create(&l).set(q.admitted as f64);
            self.admitted_not_running.get_or_create(&l).set(q.admitted_not_running as f64);
            self.oldest_pending.get_or_create(&l).set(secs(q.oldest_pending));
            self.oldest_admitted_not_running.get_or_create(&l).set(secs(q.oldest_admitted_not_running));
            self.reserved_gpus.get_or_create(&l).set(q.reserved_gpus as f64);
            let shortfall = q.head.as_ref().map_or(0, |(_, _, s)| *s);
            self.head_shortfall.get_or_create(&l).set(shortfall as f64);
            if let Some((gang, waited, _)) = &q.head {
                self.head_wait
                    .get_or_create(&HeadLabels { queue: queue.clone(), gang: gang.to_string() })
                    .set(waited.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::GangKey;

    /// Every `muster_admission_*` metric of the contract the alert rules and the dashboard are written against
    /// (deploy/monitoring/metrics.txt) is exported under exactly that name, and nothing else is.
    #[test]
    fn exported_names_are_the_contract() {
        let mut registry = Registry::default();
        let m = AdmissionMetrics::register(&mut registry);
        let queue = "research".to_owned();
        let report = TickReport {
            actions: Vec::new(),
            admitted: vec![(queue.clone(), Duration::from_millis(7))],
            running: vec![(queue.clone(), Duration::from_secs(3))],
            requeued: vec![(queue.clone(), "PodsReadyTimeout")],
        };
        m.observe_tick(&report, Duration::from_millis(2));
        m.error("write_status");
        let snapshot = QueueSnapshot {
            pending: 2,
            head: Some((GangKey::new("ml", "big"), Duration::from_secs(90), 8)),
            ..QueueSnapshot::default()
        };
        m.set_queues(&BTreeMap::from([(queue, snapshot)]));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");

        let contract = include_str!("../../../deploy/monitoring/metrics.txt");
        let expected: std::collections::BTreeSet<&str> = contract
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("muster_admission_"))
            .map(|n| n.strip_suffix("_total").unwrap_or(n))
            .collect();
        let exported: std::collections::BTreeSet<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(exported, expected, "{text}");
        assert!(text.contains(r#"muster_admission_head_wait_seconds{queue="research",gang="ml/big"} 90.0"#), "{text}");
        assert!(text.contains(r#"muster_admission_wait_seconds_bucket{le="0.01",queue="research"} 1"#), "{text}");
    }
}
