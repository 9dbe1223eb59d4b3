//! Muster's JobSet controller, a drop-in replacement for upstream's.
//!
//! The reconcile is a pipeline: observe (the JobSet and the Jobs it owns by UID) → [`plan`] (a pure function
//! from spec and observed state to actions and a new status) → apply → one status write → events after it.
//! Everything that decides lives in [`plan`] and is tested without an API server; [`controller`] is the thin
//! kube I/O around it.
//!
//! As upstream's manager, the binary runs a second controller, `pod`: the repair half of exclusive placement
//! ([`exclusive`] decides, [`pod_controller`] is its shell). [`run`] runs both.

pub mod cli;
pub mod config;
pub mod controller;
pub mod exclusive;
pub mod metrics;
pub mod own_writes;
pub mod plan;
pub mod pod_controller;

pub use plan::{Action, Event, EventType, FeatureGates, Input, Plan, PlanError, plan};

use futures::FutureExt;

/// Runs upstream's two controllers, `jobset` ([`controller`]) and `pod` ([`pod_controller`]), until `shutdown`
/// resolves.
pub async fn run(
    client: kube::Client,
    metrics: metrics::Metrics,
    gates: FeatureGates,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    futures::join!(
        controller::run(client.clone(), metrics.clone(), gates, shutdown.clone()),
        pod_controller::run(client, metrics, shutdown)
    );
}
