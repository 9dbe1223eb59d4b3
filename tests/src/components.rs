//! Muster's own components against a [`crate::TestCluster`]: in the test (or demo) process, or as their real
//! binaries.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use muster_admission::admission::{self, metrics::AdmissionMetrics, state::Settings};
use muster_admission::features::FeatureGates as WebhookGates;
use muster_admission::kube_io::KubePlacementReads;
use muster_admission::webhook::config::{
    MUTATING_CONFIGURATION, VALIDATING_CONFIGURATION, mutating_configuration, validating_configuration,
};
use muster_admission::webhook::jobset::gang::GangMutation;
use muster_admission::{RunningServer, ServeConfig, serve};
use muster_api::gpunode::GPUNode;
use muster_reconciler::metrics::{ErrorLabels, JobSetLabels, Metrics};
use muster_reconciler::plan::FeatureGates;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::binaries::{Profile, workspace_binary};
use crate::cluster::http_get;
use crate::process::{Process, tail_lines};
use crate::{Error, Result, TestCluster};

/// The reconciler's controllers (`jobset`, and `pod` for exclusive placement) on the current tokio runtime, as the
/// binary runs them; stopped when dropped.
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
        let task = tokio::spawn(muster_reconciler::run(client, metrics.clone(), gates, shutdown));
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

    /// `muster_reconciler_exclusive_placement_evictions_total`.
    pub fn exclusive_evictions(&self) -> u64 {
        self.metrics.exclusive_evictions.get()
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

/// Publishes `node`'s GPUNode exactly as the gpu-agent does (server-side apply of the object, then of its status):
/// `gpus` H100s, those in `unhealthy` marked with their XID, heartbeat now. A stand-in for an agent where the
/// NVML path is not what is being tested (gpu-agent/tests/apiserver.rs tests that path).
pub async fn publish_gpu_node(client: &Client, node: &str, gpus: u32, unhealthy: &[(u32, u64)]) -> kube::Result<()> {
    let api: Api<GPUNode> = Api::all(client.clone());
    let pp = PatchParams::apply("muster-simulated-gpu-agent").force();
    let object = json!({"apiVersion": "muster.dev/v1alpha1", "kind": "GPUNode", "metadata": {"name": node},
        "spec": {"nodeName": node}});
    api.patch(node, &pp, &Patch::Apply(&object)).await?;
    let devices: Vec<Value> = (0..gpus)
        .map(|i| {
            let health = match unhealthy.iter().find(|(g, _)| *g == i) {
                Some((_, xid)) => json!({"healthy": false, "xid": xid, "reason": format!("XID {xid}")}),
                None => json!({"healthy": true}),
            };
            json!({"index": i, "uuid": format!("GPU-{node}-{i}"), "model": "NVIDIA H100 80GB HBM3",
                "pciBusId": format!("00000000:{:02X}:00.0", i + 1), "health": health})
        })
        .collect();
    let healthy = gpus.saturating_sub(u32::try_from(unhealthy.len()).unwrap_or(u32::MAX));
    let status = json!({"apiVersion": "muster.dev/v1alpha1", "kind": "GPUNode", "status": {
        "nvmlAvailable": true, "devices": devices, "heartbeatTime": Time(Timestamp::now()),
        "summary": {"total": gpus, "healthy": healthy, "allocated": 0, "busy": 0, "free": healthy}}});
    api.patch_status(node, &pp, &Patch::Apply(&status)).await?;
    Ok(())
}

/// Muster's admission side on the current tokio runtime: the JobSet webhooks with gang mutation and the pod webhooks
/// (exclusive placement), registered with the API server, and the admission controller (queue, placement, release). Dropping it stops both and removes
/// the webhook configurations; [`InProcessAdmission::crash`] stops only the controller, abruptly, as a killed
/// process would (the webhooks stay, as they would on another replica).
pub struct InProcessAdmission {
    client: Client,
    pub metrics: AdmissionMetrics,
    registry: Arc<Registry>,
    controller: Option<tokio::task::JoinHandle<()>>,
    webhook: Option<RunningServer>,
    settings: Settings,
}

impl InProcessAdmission {
    pub async fn start(client: Client, settings: Settings) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::start_with(client, settings, GangMutation::default(), WebhookGates::default()).await
    }

    /// [`Self::start`] with the given gang mutation (e.g. the extender's scheduler name on gang pod templates) and
    /// the webhooks' feature gates.
    pub async fn start_with(
        client: Client,
        settings: Settings,
        mutation: GangMutation,
        gates: WebhookGates,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let webhook = serve(ServeConfig {
            gang: Some(mutation),
            gates,
            placement_reads: Arc::new(KubePlacementReads(client.clone())),
            ..ServeConfig::loopback()
        })
        .await?;
        let ca = webhook.ca_pem().map(str::as_bytes);
        let target = webhook.webhook_target();
        let pp = PostParams::default();
        // A test that failed may have left the previous configurations behind.
        let dp = DeleteParams::default();
        let _ = Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(MUTATING_CONFIGURATION, &dp).await;
        let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone()).delete(VALIDATING_CONFIGURATION, &dp).await;
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&pp, &mutating_configuration(&target, ca))
            .await?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&pp, &validating_configuration(&target, ca))
            .await?;
        let mut this = Self {
            client,
            metrics: AdmissionMetrics::register(&mut Registry::default()),
            registry: Arc::default(),
            controller: None,
            webhook: Some(webhook),
            settings,
        };
        this.restart_controller();
        Ok(this)
    }

    /// Starts the admission controller afresh (after [`Self::crash`]), with new metrics: a new process.
    pub fn restart_controller(&mut self) {
        self.restart_controller_as(self.client.clone());
    }

    /// [`Self::restart_controller`] with the given client (e.g. one impersonating a less privileged user).
    pub fn restart_controller_as(&mut self, client: Client) {
        self.crash();
        let mut registry = Registry::default();
        self.metrics = AdmissionMetrics::register(&mut registry);
        self.registry = Arc::new(registry);
        let run = admission::run(
            client,
            self.settings.clone(),
            self.metrics.clone(),
            Arc::new(AtomicBool::new(false)),
            std::future::pending(),
        );
        self.controller = Some(tokio::spawn(async move {
            if let Err(e) = run.await {
                eprintln!("admission controller stopped: {e}");
            }
        }));
    }

    /// Kills the admission controller wherever it is.
    pub fn crash(&mut self) {
        if let Some(task) = self.controller.take() {
            task.abort();
        }
    }

    /// The running controller's metrics registry, to serve on /metrics (a restart starts a new one).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The controller's metrics in the text exposition format, as /metrics serves them.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Drop for InProcessAdmission {
    fn drop(&mut self) {
        self.crash();
        drop(self.webhook.take());
        // The configurations point at a server that is gone; remove them so later tests are not refused.
        let client = self.client.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let dp = DeleteParams::default();
                let _ =
                    Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(MUTATING_CONFIGURATION, &dp).await;
                let _ = Api::<ValidatingWebhookConfiguration>::all(client).delete(VALIDATING_CONFIGURATION, &dp).await;
            });
        }
    }
}

/// A loopback port nothing listens on now, for a process to bind (another may take it first; tests run few).
pub fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("picking a free loopback port", e))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| Error::io("picking a free loopback port", e))
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
        let (metrics_port, health_port) = (free_loopback_port()?, free_loopback_port()?);
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
