//! Muster's own components against a [`crate::TestCluster`]: in the test (or demo) process, or as their real
//! binaries.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::Client;
use muster_reconciler::metrics::{ErrorLabels, JobSetLabels, Metrics};
use muster_reconciler::plan::FeatureGates;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::binaries::{Profile, workspace_binary};
use crate::cluster::http_get;
use crate::process::{Process, tail_lines};
use crate::{Error, Result, TestCluster};

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

/// Overrides the `muster-reconciler` binary [`ReconcilerProcess::binary`] would build.
pub const RECONCILER_BIN_ENV: &str = "MUSTER_RECONCILER_BIN";

/// A JobSet controller binary as its own process against a [`TestCluster`], with its admin endpoints on free
/// loopback ports: `muster-reconciler`, or any binary that takes upstream's `--metrics-bind-address` and
/// `--health-probe-bind-address` (the benchmark runs upstream's controller this way). It dies with the test binary;
/// dropping it stops it (SIGTERM, then SIGKILL).
pub struct ReconcilerProcess {
    process: Process,
    metrics_port: u16,
    health_port: u16,
}

impl ReconcilerProcess {
    /// The binary, built by cargo in `profile` (or `$MUSTER_RECONCILER_BIN`).
    pub fn binary(profile: Profile) -> Result<PathBuf> {
        workspace_binary("muster-reconciler", "muster-reconciler", profile, RECONCILER_BIN_ENV)
    }

    /// Starts `binary` as `identity` (its leader-election identity, `POD_NAME`) with `args` added to the admin
    /// addresses. Its log is `logs/<identity>.log` in the cluster directory.
    pub fn start(binary: &Path, cluster: &TestCluster, identity: &str, args: &[&str]) -> Result<Self> {
        let free = || -> Result<u16> {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| Error::io("picking a free loopback port", e))?;
            listener.local_addr().map(|a| a.port()).map_err(|e| Error::io("picking a free loopback port", e))
        };
        let (metrics_port, health_port) = (free()?, free()?);
        let mut argv = vec![
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
        ];
        argv.extend(args.iter().map(|a| (*a).to_string()));
        let env = [
            ("KUBECONFIG", cluster.kubeconfig_path().as_os_str()),
            ("POD_NAME", OsStr::new(identity)),
            ("RUST_LOG", OsStr::new("info")),
        ];
        let log = cluster.dir().join("logs").join(format!("{identity}.log"));
        let process = Process::spawn_with_env(identity, binary, &argv, &env, log)?;
        Ok(Self { process, metrics_port, health_port })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `GET <path>` on the metrics port (`/metrics`): status and body.
    pub async fn get_metrics(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.metrics_port, path).await
    }

    /// `GET <path>` on the health port (`/healthz`, `/readyz`): status and body.
    pub async fn get_health(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.health_port, path).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.exited() {
                return Err(self.process.exited_error(status));
            }
            match self.get_health("/readyz").await {
                Ok((200, _)) => return Ok(()),
                last if started.elapsed() > timeout => {
                    return Err(Error::Timeout {
                        what: format!("{} /readyz", self.process.name()),
                        waited: started.elapsed(),
                        detail: format!("; last: {last:?}; log:\n{}", tail_lines(self.process.log(), 20)),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `VmRSS` and `VmHWM` (peak RSS) in KiB, from `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .ok_or_else(|| Error::io(format!("{path} has no {name}"), std::io::ErrorKind::InvalidData.into()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGKILL: a crashed replica, which releases nothing (its Lease must expire).
    pub fn kill(&mut self) {
        self.process.kill_now();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_lines(self.process.log(), lines)
    }
}

/// One sample's value from Prometheus/OpenMetrics text: the line for `name` whose labels include every
/// `key="value"` in `labels`. `None` when no line matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let all = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok()).flatten()
    })
}
