//! Prometheus metrics: upstream's `jobset_failed_total` / `jobset_completed_total` under their exact names, and
//! our reconcile latency and errors, and the `pod` controller's evictions and errors, under `muster_reconciler_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobSetLabels {
    pub jobset_name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub failed: Family<JobSetLabels, Counter>,
    pub completed: Family<JobSetLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_seconds: Histogram,
    /// Followers the `pod` controller deleted for running outside their leader's topology domain.
    pub exclusive_evictions: Counter,
    pub pod_reconcile_errors: Family<ErrorLabels, Counter>,
}

impl Metrics {
    /// Registers every metric; the registry is served on `/metrics`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            failed: Family::default(),
            completed: Family::default(),
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            // 1 ms .. ~16 s
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            exclusive_evictions: Counter::default(),
            pod_reconcile_errors: Family::default(),
        };
        // The encoder appends `_total` to counters.
        registry.register("jobset_failed", "JobSets that reached the Failed condition", metrics.failed.clone());
        registry.register(
            "jobset_completed",
            "JobSets that reached the Completed condition",
            metrics.completed.clone(),
        );
        let ours = registry.sub_registry_with_prefix("muster_reconciler");
        ours.register("reconciles", "JobSet reconciles run", metrics.reconciles.clone());
        ours.register(
            "reconcile_errors",
            "Failed JobSet reconciles by error category",
            metrics.reconcile_errors.clone(),
        );
        ours.register("reconcile_duration_seconds", "Time to reconcile one JobSet", metrics.reconcile_seconds.clone());
        ours.register(
            "exclusive_placement_evictions",
            "Follower pods deleted for running outside their leader's exclusive topology domain",
            metrics.exclusive_evictions.clone(),
        );
        ours.register(
            "pod_reconcile_errors",
            "Failed exclusive-placement checks of leader pods by error category",
            metrics.pod_reconcile_errors.clone(),
        );
        metrics
    }
}
