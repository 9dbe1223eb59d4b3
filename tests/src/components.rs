//! Muster's own components run in the test (or demo) process against a [`crate::TestCluster`].

use kube::Client;
use muster_reconciler::metrics::{ErrorLabels, JobSetLabels, Metrics};
use muster_reconciler::plan::FeatureGates;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// The JobSet controller on the current tokio runtime; stopped when dropped.
pub struct InProcessReconciler {
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessReconciler {
    pub fn start(client: Client, gates: FeatureGates) -> Self {
        let metrics = Metrics::register(&mut Registry::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(muster_reconciler::controller::run(client, metrics.clone(), gates, shutdown));
        Self { metrics, stop: Some(stop), task }
    }

    /// `jobset_completed_total{jobset_name, namespace}`.
    pub fn completed_total(&self, namespace: &str, name: &str) -> u64 {
        self.metrics.completed.get_or_create(&labels(namespace, name)).get()
    }

    /// `jobset_failed_total{jobset_name, namespace}`.
    pub fn failed_total(&self, namespace: &str, name: &str) -> u64 {
        self.metrics.failed.get_or_create(&labels(namespace, name)).get()
    }

    /// `muster_reconciler_reconcile_errors_total{category}`.
    pub fn reconcile_errors(&self, category: &str) -> u64 {
        self.metrics.reconcile_errors.get_or_create(&ErrorLabels { category: category.into() }).get()
    }
}

fn labels(namespace: &str, name: &str) -> JobSetLabels {
    JobSetLabels { jobset_name: name.into(), namespace: namespace.into() }
}

impl Drop for InProcessReconciler {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
