//! Integration-test harness: a real Kubernetes control plane on loopback.
//!
//! [`TestCluster::start`] runs etcd, kube-apiserver and, on request, kube-controller-manager,
//! kube-scheduler (optionally with scheduler extenders) and KWOK with fake GPU nodes, each as its own
//! process built by `tests/build-control-plane.sh`. Tests talk to it with [`kube::Client`].
//!
//! ```no_run
//! use muster_tests::{ClusterConfig, FakeNode, SharedCluster};
//!
//! static CLUSTER: SharedCluster = SharedCluster::new(|| {
//!     ClusterConfig::full().node(FakeNode::new("gpu-0").gpus(8))
//! });
//!
//! # async fn example() {
//! let cluster = CLUSTER.lock().await; // one test at a time; starts the cluster on first use
//! // A fresh namespace; component logs are printed if the test panics while it is alive.
//! let ns = cluster.namespace("demo").await.expect("namespace");
//! let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = ns.api();
//! # let _ = jobs;
//! # }
//! ```
//!
//! See `tests/README.md` for the build, ports, PKI, logs and how clusters are shared.

mod binaries;
mod cluster;
mod components;
mod gangs;
mod manifests;
mod nodes;
mod pki;
mod process;
mod shared;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use binaries::{BIN_DIR_ENV, ControlPlaneBinaries, Profile, default_cache_dir, workspace_binary};
pub use cluster::{ClusterConfig, DEFAULT_CONTROLLERS, Extender, SchedulerConfig, StartupTimings, TestCluster};
pub use components::{
    InProcessAdmission, InProcessReconciler, RECONCILER_BIN_ENV, ReconcilerProcess, free_loopback_port, metric_value,
    publish_gpu_node,
};
pub use gangs::{edit_jobset, gang_in, gang_status};
pub use manifests::{load_yaml_documents, yaml_files_in};
pub use nodes::{FAKE_NODE_LABEL, FakeNode, GPU_RESOURCE};
pub use shared::{ClusterLease, LogsOnPanic, SharedCluster, TestNamespace, serial};
pub use wait::eventually;

/// Why the harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane binaries are not built (or the configured directory is incomplete).
    #[error(
        "control-plane binaries not found: {0}\n\
         Build them first with `tests/build-control-plane.sh` (the cold build takes a while; later runs \
         reuse the cache), or point {BIN_DIR_ENV} at a directory that holds them."
    )]
    BinariesMissing(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the test PKI: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("loading the generated kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{component} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited { component: String, status: String, log: PathBuf, tail: String },
    #[error("timed out after {waited:?} waiting for {what}{detail}")]
    Timeout { what: String, waited: Duration, detail: String },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
