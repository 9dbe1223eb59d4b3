//! The `muster-admission` command line and process wiring: flags, logging, and running the webhook and health
//! servers until SIGTERM.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand, ValueEnum};
use muster_leader::LeaseSpec;
use prometheus_client::registry::Registry;

use crate::admission::config::QueuesConfigError;
use crate::admission::metrics::AdmissionMetrics;
use crate::admission::state::Settings;
use crate::admission::{self, AdmissionError};
use crate::gang::model::ModelConfig;
use crate::gang::queue::{PodsReadyConfig, QueueConfig};

use crate::extender::PlacementMode;
use crate::extender::cli::ExtenderFlags;
use crate::features::FeatureGates;
use crate::kube_io::{KubePlacementReads, KubePvcs, SelfManaged, run_self_managed};
use crate::server::{CertSource, ServeConfig, ServeError, serve};
use crate::tls::{CertStore, watch_cert_dir};
use crate::webhook::config;
use crate::webhook::http::{Limits, health_router};
use crate::webhook::jobset::gang::GangMutation;
use crate::webhook::pod::{GangLookup, KubeGangs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Muster's admission server: upstream-compatible JobSet defaulting and validation webhooks over TLS.
#[derive(Debug, Parser)]
#[command(name = "muster-admission", version)]
pub struct Args {
    /// Port of the HTTPS webhook server.
    #[arg(long, default_value_t = 9443)]
    pub webhook_port: u16,
    /// Address the webhook server binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub webhook_host: IpAddr,
    /// Directory holding tls.crt and tls.key (cert-manager's Secret, mounted); re-read when it changes.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    pub cert_dir: PathBuf,
    /// How often --cert-dir is checked for a new certificate, in seconds.
    #[arg(long, default_value_t = 10)]
    pub cert_poll_seconds: u64,
    /// Generate the CA and serving certificate ourselves, keep them in a Secret and patch caBundle into the
    /// webhook configurations (instead of reading --cert-dir).
    #[arg(long)]
    pub self_managed_certs: bool,
    /// Namespace of the webhook Service and certificate Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = config::NAMESPACE)]
    pub namespace: String,
    /// Service the API server calls; the self-managed certificate covers its DNS names.
    #[arg(long, default_value = config::SERVICE_NAME)]
    pub webhook_service_name: String,
    /// Secret holding the self-managed certificates.
    #[arg(long, default_value = config::SECRET_NAME)]
    pub webhook_secret_name: String,
    /// Address of /healthz and /readyz (Go syntax: ":8081" is every interface; "0" disables them).
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Feature gates, e.g. "RestartJob=true,ElasticJobSet=true". InPlaceRestart cannot be enabled.
    #[arg(long, default_value = "")]
    pub feature_gates: FeatureGates,
    /// Seconds a webhook request may take, body included.
    #[arg(long, default_value_t = 9)]
    pub request_timeout_seconds: u64,
    /// How gang pods reach their reserved nodes: `extender` (the Muster scheduler profile and its extender
    /// sidecar) or `pod-pinning` (this server also pins gang pods with node affinity; for schedulers that cannot
    /// be extended).
    #[arg(long, value_enum, default_value_t = PlacementMode::Extender)]
    pub placement_mode: PlacementMode,
    /// Log lines as text or as JSON objects (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Hold GPU JobSets (and those naming a muster.dev/queue) suspended until gang admission places them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub gang_admission: bool,
    /// Scheduler profile set on gang pod templates (the one whose extender steers pods to their reserved nodes);
    /// empty leaves templates alone.
    #[arg(long, default_value = "")]
    pub gang_scheduler_name: String,
    /// Run the admission controller (queue, placement, release) on the replica that holds the Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub admission_controller: bool,
    /// Hold a Lease before admitting, so several replicas are safe; the webhooks serve on every replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease, in --namespace.
    #[arg(long, default_value = "muster-admission")]
    pub leader_election_id: String,
    /// Seconds a standby replica waits before taking over a Lease whose holder stopped renewing it.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Address of /metrics (Go syntax; "0" disables it).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// How long an admitted gang's pods have to become ready before it is suspended and requeued (Kueue's
    /// waitForPodsReady.timeout).
    #[arg(long, value_parser = humantime_secs, default_value = "300")]
    pub pods_ready_timeout: Duration,
    /// How long a running gang that lost readiness (a failed pod, a group restart) has to be ready again before
    /// it is suspended and requeued (Kueue's waitForPodsReady.recoveryTimeout); default: --pods-ready-timeout;
    /// 0 turns it off.
    #[arg(long, value_parser = humantime_secs)]
    pub pods_ready_recovery_timeout: Option<Duration>,
    /// First requeue delay after a pods-ready timeout; doubles per consecutive timeout.
    #[arg(long, value_parser = humantime_secs, default_value = "60")]
    pub requeue_backoff_base: Duration,
    /// Longest requeue delay.
    #[arg(long, value_parser = humantime_secs, default_value = "3600")]
    pub requeue_backoff_max: Duration,
    /// Requeues after which a gang is given up (left suspended, Inadmissible); unset requeues forever.
    #[arg(long)]
    pub requeuing_limit: Option<u32>,
    /// How long a queue's head gang waits before nodes are held for it (others backfill only around them).
    #[arg(long, value_parser = humantime_secs, default_value = "60")]
    pub head_hold_after: Duration,
    /// A GPUNode heartbeat older than this makes its node's GPUs untrusted.
    #[arg(long, value_parser = humantime_secs, default_value = GPU_HEARTBEAT_TIMEOUT)]
    pub gpu_heartbeat_timeout: Duration,
    /// YAML file with per-queue settings (head hold, pods-ready timeout and backoff); see
    /// `muster_admission::admission::config`. Queues it does not name use the flags above.
    #[arg(long)]
    pub queues_config: Option<PathBuf>,
    /// Node label keys of topology domains, narrowest first (e.g. an NVLink clique label, then a rack label).
    #[arg(long, value_delimiter = ',')]
    pub topology_keys: Vec<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the self-managed certificates live and which webhook configurations must trust them.
fn self_managed(args: &Args) -> SelfManaged {
    SelfManaged {
        namespace: args.namespace.clone(),
        secret_name: args.webhook_secret_name.clone(),
        service_name: args.webhook_service_name.clone(),
        mutating_configuration: config::MUTATING_CONFIGURATION.into(),
        validating_configuration: config::VALIDATING_CONFIGURATION.into(),
        refresh: Duration::from_secs(60 * 60),
    }
}

/// The default of `--gpu-heartbeat-timeout`, which admission and the extender sidecar both take (the same value
/// must reach both, or they disagree about which nodes' GPUs are trusted).
pub(crate) const GPU_HEARTBEAT_TIMEOUT: &str = "90";

/// A plain number of seconds ("300", "0.5") or a Go duration ("5m", "1h30m").
pub(crate) fn humantime_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}")),
        Err(_) => crate::admission::config::parse_duration(s),
    }
}

impl Args {
    /// The admission controller's knobs from the flags.
    pub fn admission_settings(&self) -> Result<Settings, QueuesConfigError> {
        let pods_ready = PodsReadyConfig {
            timeout: self.pods_ready_timeout,
            recovery_timeout: self.pods_ready_recovery_timeout,
            backoff_base: self.requeue_backoff_base,
            backoff_max: self.requeue_backoff_max,
            requeuing_limit: self.requeuing_limit,
            ..PodsReadyConfig::default()
        };
        let default_queue = QueueConfig { head_hold_after: self.head_hold_after, pods_ready, ..QueueConfig::default() };
        let queues = match &self.queues_config {
            Some(path) => crate::admission::config::load(&path.to_string_lossy(), &default_queue)?,
            None => BTreeMap::new(),
        };
        Ok(Settings {
            model: ModelConfig {
                heartbeat_timeout: self.gpu_heartbeat_timeout,
                topology_keys: self.topology_keys.clone(),
            },
            default_queue,
            queues,
            ..Settings::default()
        })
    }
}

/// Without a subcommand, `muster-admission` serves the webhooks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the kube-scheduler extender, as a sidecar of the Muster scheduler.
    Extender(ExtenderFlags),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid bind address {0:?}")]
    BindAddress(String),
    #[error("setting up logging: {0}")]
    Tracing(String),
    #[error("connecting to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("health server: {0}")]
    Health(#[source] std::io::Error),
    #[error("metrics server: {0}")]
    Metrics(#[source] std::io::Error),
    #[error(transparent)]
    LeaderElection(#[from] muster_leader::LeaderError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("lost the leader-election lease")]
    LeaseLost,
    #[error("--queues-config: {0}")]
    QueuesConfig(#[from] QueuesConfigError),
}

/// Parses a Go-style listen address: `:8081`, `127.0.0.1:8081`, `[::1]:8081`; `0` means disabled.
pub fn parse_bind_address(s: &str) -> Result<Option<SocketAddr>, RunError> {
    if s == "0" {
        return Ok(None);
    }
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
    full.parse().map(Some).map_err(|_| RunError::BindAddress(s.to_owned()))
}

/// Logging to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) -> Result<(), RunError> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| RunError::Tracing(e.to_string()))
}

/// Runs the webhook server (and the health server), or the subcommand, until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), RunError> {
    if let Some(Command::Extender(flags)) = args.command {
        return crate::extender::cli::run(flags).await;
    }
    // Only ring is compiled in; installing it explicitly keeps the kube client's TLS from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let health_addr = parse_bind_address(&args.health_probe_bind_address)?;
    let client = kube::Client::try_default().await?;
    let mut registry = Registry::default();
    let admission_metrics = AdmissionMetrics::register(&mut registry);
    let registry = Arc::new(registry);

    let store = CertStore::new();
    let cert_task = if args.self_managed_certs {
        let self_managed = self_managed(&args);
        tokio::spawn(run_self_managed(client.clone(), self_managed, store.clone()))
    } else {
        let poll = Duration::from_secs(args.cert_poll_seconds.max(1));
        tokio::spawn(watch_cert_dir(store.clone(), args.cert_dir.clone(), poll))
    };

    let (pod_pinning, gang_task) = match args.placement_mode {
        PlacementMode::Extender => (None, None),
        PlacementMode::PodPinning => {
            let (gangs, task) = KubeGangs::spawn(client.clone());
            (Some(Arc::new(gangs) as Arc<dyn GangLookup>), Some(task))
        }
    };
    let server = serve(ServeConfig {
        addr: SocketAddr::new(args.webhook_host, args.webhook_port),
        certs: CertSource::Store(store.clone()),
        gates: args.feature_gates,
        pvcs: Arc::new(KubePvcs(client.clone())),
        gang: args
            .gang_admission
            .then(|| GangMutation { scheduler_name: Some(args.gang_scheduler_name.clone()).filter(|s| !s.is_empty()) }),
        limits: Limits { request_timeout: Duration::from_secs(args.request_timeout_seconds), ..Limits::default() },
        handshake_timeout: Duration::from_secs(10),
        placement_reads: Arc::new(KubePlacementReads(client.clone())),
        pod_pinning,
    })
    .await?;

    let health_task = match health_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(RunError::Health)?;
            let ready_store = store.clone();
            let app = health_router(Arc::new(move || ready_store.is_ready()));
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "health server stopped");
                }
            }))
        }
        None => None,
    };

    let metrics_task = match parse_bind_address(&args.metrics_bind_address)? {
        Some(addr) => Some(serve_metrics(addr, Arc::clone(&registry)).await?),
        None => None,
    };
    let outcome = if args.admission_controller {
        let settings = args.admission_settings()?;
        tokio::select! {
            () = shutdown_signal() => Ok(()),
            r = lead_and_admit(client, &args, settings, admission_metrics, Arc::new(AtomicBool::new(false))) => r,
        }
    } else {
        shutdown_signal().await;
        Ok(())
    };
    tracing::info!("shutting down");
    server.shutdown().await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    cert_task.abort();
    for task in [health_task, gang_task].into_iter().flatten() {
        task.abort();
    }
    outcome
}

/// Waits for the Lease (when leader election is on), then admits until the Lease is lost: fail-stop, as
/// kube-controller-manager does, so a replica that lost the Lease never writes again; the pod restarts and
/// competes anew with a fresh view.
async fn lead_and_admit(
    client: kube::Client,
    args: &Args,
    settings: Settings,
    metrics: AdmissionMetrics,
    synced: Arc<AtomicBool>,
) -> Result<(), RunError> {
    if !args.leader_elect {
        return Ok(admission::run(client, settings, metrics, synced, std::future::pending()).await?);
    }
    let lease = LeaseSpec {
        name: args.leader_election_id.clone(),
        namespace: args.namespace.clone(),
        identity: LeaseSpec::identity_for("muster-admission"),
        duration: Duration::from_secs(args.lease_duration_seconds),
    };
    let leadership = muster_leader::acquire(client.clone(), &lease).await?;
    tracing::info!("leading: admitting gangs");
    let lost = leadership.lost();
    admission::run(client, settings, metrics, synced, lost).await?;
    Err(RunError::LeaseLost)
}

async fn serve_metrics(addr: SocketAddr, registry: Arc<Registry>) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(RunError::Metrics)?;
    let app = crate::extender::http::metrics_router(registry);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_in_go_syntax() {
        assert_eq!(parse_bind_address(":8081").ok().flatten(), Some(SocketAddr::from(([0, 0, 0, 0], 8081))));
        assert_eq!(parse_bind_address("127.0.0.1:9").ok().flatten(), Some(SocketAddr::from(([127, 0, 0, 1], 9))));
        assert!(matches!(parse_bind_address("0"), Ok(None)));
        assert!(parse_bind_address("nope").is_err());
    }

    #[test]
    fn flags_parse_with_defaults_and_gates() {
        let args = Args::try_parse_from(["muster-admission", "--feature-gates", "RestartJob=true"]).expect("parse");
        assert_eq!(args.webhook_port, 9443);
        assert!(args.feature_gates.restart_job);
        assert!(!args.self_managed_certs);
        assert_eq!(args.health_probe_bind_address, ":8081");
        assert!(Args::try_parse_from(["muster-admission", "--feature-gates", "InPlaceRestart=true"]).is_err());
        assert_eq!(args.placement_mode, PlacementMode::Extender);
        assert!(args.command.is_none());
    }

    #[test]
    fn placement_mode_and_extender_subcommand() {
        let args = Args::try_parse_from(["muster-admission", "--placement-mode", "pod-pinning"]).expect("parse");
        assert_eq!(args.placement_mode, PlacementMode::PodPinning);
        let args = Args::try_parse_from([
            "muster-admission",
            "extender",
            "--bind-address",
            "127.0.0.1:9000",
            "--log-format",
            "json",
        ])
        .expect("parse");
        assert_eq!(args.log_format, LogFormat::Json);
        let Some(Command::Extender(flags)) = args.command else { panic!("extender subcommand") };
        assert_eq!(flags.bind_address, "127.0.0.1:9000");
        assert_eq!(flags.health_probe_bind_address, ":8082");
        assert_eq!(flags.request_timeout_ms, 800);
        assert_eq!(
            flags.gpu_heartbeat_timeout,
            Args::try_parse_from(["muster-admission"]).expect("parse").gpu_heartbeat_timeout
        );
        assert!(Args::try_parse_from(["muster-admission", "--placement-mode", "magic"]).is_err());
        // The same value, in the same form, for both.
        for timeout in ["2m", "120", "1m60s"] {
            let flag = format!("--gpu-heartbeat-timeout={timeout}");
            let admission = Args::try_parse_from(["muster-admission", &flag]).expect("admission parses");
            let Some(Command::Extender(extender)) =
                Args::try_parse_from(["muster-admission", "extender", &flag]).expect("extender parses").command
            else {
                panic!("extender subcommand")
            };
            assert_eq!(admission.gpu_heartbeat_timeout, Duration::from_secs(120), "{timeout}");
            assert_eq!(extender.gpu_heartbeat_timeout, admission.gpu_heartbeat_timeout, "{timeout}");
        }
        assert!(Args::try_parse_from(["muster-admission", "extender", "--gpu-heartbeat-timeout=soon"]).is_err());
    }
}
