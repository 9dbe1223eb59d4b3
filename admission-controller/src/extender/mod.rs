//! The scheduling sidecar: a kube-scheduler extender (`filter`, `prioritize`; `nodeCacheCapable`) that makes the
//! real kube-scheduler put each gang pod on the node admission reserved for it, and keeps other GPU pods off GPUs
//! reserved for gangs. It runs next to kube-scheduler in a secondary scheduler's pod
//! (`deploy/components/extender/scheduler.yaml`), as `muster-admission extender`.
//!
//! - [`slots`]: which slot of which gang a pod fills, and the node admission gave it (shared with the pod-pinning
//!   webhook, [`crate::webhook::pod`]).
//! - [`state`]: what the extender knows, fed from watches: the gang core's cluster model with every admitted gang's
//!   reservation, and the slots bound pods hold. Pure.
//! - [`decide`]: the `filter` and `prioritize` decisions. Pure.
//! - [`http`]: the HTTP shell (limits, metrics, health); [`watch`]: the watches; [`cli`]: the subcommand.
//!
//! It sees only the pods kube-scheduler asks about: those of the Muster scheduler profile (`schedulerName:
//! muster-scheduler`, which the JobSet webhook sets on gang pods) that request `nvidia.com/gpu`. GPU pods left to the
//! cluster's default scheduler never reach it, so they are kept off reserved GPUs only if they are routed to the
//! Muster scheduler too.
//!
//! Its state is its watches (Nodes, GPUNodes, Gangs, bound unfinished Pods) plus the pods its own `filter` answers
//! have just placed and the watch has not shown bound yet (*assumed* pods, [`state`]); only the replica whose
//! scheduler holds the Lease is asked, so the others need neither. The cache lags the API server by the watch
//! latency. A pod of a gang admitted a moment ago may therefore be refused once as "not admitted" (the scheduler
//! retries). Two GPU pods scheduled back to back cannot both take the same GPU, although the extender learns of a
//! binding only from its watch (kubernetes#82359): kube-scheduler's own `NodeResourcesFit` counts `nvidia.com/gpu`
//! with the pods it has placed (the resource is managed with `ignoredByScheduler: false`), and where that count
//! does not protect GPUs only the extender knows about (reservations whose pods are not bound, unhealthy GPUs,
//! NonIndexed slots), `filter` offers one node and assumes the pod there ([`decide`]).

pub mod cli;
pub mod decide;
pub mod http;
pub mod slots;
pub mod state;
pub mod watch;

use std::sync::Arc;
use std::time::SystemTime;

use clap::ValueEnum;

use crate::gang::model::ModelConfig;

/// The `schedulerName` of the Muster scheduler profile (`deploy/components/extender/scheduler.yaml`). The JobSet
/// webhook sets it on gang pods' templates when started with `--gang-scheduler-name=muster-scheduler`, which the
/// extender component of `deploy/` passes.
pub const SCHEDULER_NAME: &str = "muster-scheduler";

/// How gang pods are steered to their reserved nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PlacementMode {
    /// A secondary kube-scheduler with this extender as a sidecar (`schedulerName: muster-scheduler`).
    #[default]
    Extender,
    /// For schedulers that cannot be extended: a pod webhook pins each gang pod with required node affinity.
    PodPinning,
}

/// An empty cache for an extender started in-process (tests, benchmarks); [`watch::run`] fills it.
pub fn new_cache(config: ModelConfig) -> Arc<http::Cache> {
    Arc::new(http::Cache::new(state::ExtenderState::new(config, SystemTime::now())))
}
