//! Process wiring: flags (upstream's names), the configuration file, logging, the admin server (`/metrics`,
//! `/healthz`, `/readyz`), leader election on a Lease, and the controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use muster_leader::LeaseSpec;
use prometheus_client::registry::Registry;

use crate::config::Configuration;
use crate::metrics::Metrics;

/// Lease name upstream uses, so a half-migrated cluster never runs both controllers as leader at once.
const DEFAULT_LEASE_NAME: &str = "6d4f6a47.jobset.x-k8s.io";
/// The User-Agent of every API request.
pub const USER_AGENT: &str = concat!("muster-reconciler/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Parser)]
#[command(name = "muster-reconciler", version, about = "Drop-in JobSet controller (jobset.x-k8s.io/v1alpha2)")]
pub struct Args {
    /// Address of /metrics [default: :8443]. Given here, it wins over the configuration file's.
    #[arg(long)]
    pub metrics_bind_address: Option<String>,
    /// Address of /healthz and /readyz [default: :8081]. Given here, it wins over the configuration file's.
    #[arg(long)]
    pub health_probe_bind_address: Option<String>,
    /// Hold a Lease before reconciling, so several replicas are safe (`--leader-elect=false` turns off what the
    /// configuration file turned on).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// Namespace of the leader-election Lease (default: the configuration file's, else $POD_NAMESPACE, else
    /// `default`).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// Accepted for compatibility with upstream's flags; kube-rs does not rate-limit the client.
    #[arg(long, default_value_t = 500.0)]
    pub kube_api_qps: f32,
    #[arg(long, default_value_t = 500)]
    pub kube_api_burst: u32,
    /// Controller configuration file (`config.jobset.x-k8s.io/v1alpha1` `Configuration`).
    #[arg(long)]
    pub config: Option<String>,
}

/// What the process runs with, after upstream's precedence: a flag given on the command line wins over the
/// configuration file, which wins over the flag's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub leader_elect: bool,
    pub metrics_addr: String,
    pub health_addr: String,
    pub lease_namespace: String,
}

pub fn resolve(args: &Args, config: &Configuration, pod_namespace: Option<String>) -> Resolved {
    Resolved {
        leader_elect: args.leader_elect.or(config.leader_election.leader_elect).unwrap_or(false),
        metrics_addr: args
            .metrics_bind_address
            .clone()
            .or(config.metrics.bind_address.clone())
            .unwrap_or(":8443".into()),
        health_addr: args
            .health_probe_bind_address
            .clone()
            .or(config.health.health_probe_bind_address.clone())
            .unwrap_or(":8081".into()),
        lease_namespace: args
            .leader_election_namespace
            .clone()
            .or(config.leader_election.resource_namespace.clone())
            .or(pod_namespace)
            .unwrap_or("default".into()),
    }
}

/// `:8081` means all interfaces, as in Go.
fn socket_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let text = if text.starts_with(':') { format!("0.0.0.0{text}") } else { text.to_string() };
    Ok(text.parse()?)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = match &args.config {
        Some(path) => Configuration::load(path)?,
        None => Configuration {
            api_version: crate::config::API_VERSION.into(),
            kind: "Configuration".into(),
            ..Default::default()
        },
    };
    let gates = config.feature_gates()?;
    let Resolved { leader_elect, metrics_addr, health_addr, lease_namespace } =
        resolve(&args, &config, std::env::var("POD_NAMESPACE").ok());

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let ready = Arc::new(AtomicBool::new(false));
    let mut kube_config = kube::Config::infer().await?;
    // As upstream's `jobset/<version>`: the API server's audit log and metrics can tell our requests apart.
    kube_config.headers.push((header::USER_AGENT, header::HeaderValue::from_static(USER_AGENT)));
    let client = kube::Client::try_from(kube_config)?;

    let metrics_listener = tokio::net::TcpListener::bind(socket_addr(&metrics_addr)?).await?;
    let metrics_app = Router::new().route("/metrics", get(move || serve_metrics(registry.clone())));
    tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });
    let health_listener = tokio::net::TcpListener::bind(socket_addr(&health_addr)?).await?;
    let ready_flag = ready.clone();
    let health_app = Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready_flag.load(Ordering::Relaxed);
            async move { if ready { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting") } }
        }),
    );
    tokio::spawn(async move { axum::serve(health_listener, health_app).await });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // SIGTERM is how Kubernetes stops a pod; stopping cleanly releases the Lease at once instead of making the
    // standby wait out its duration.
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        let _ = stop_tx.send(true);
    });
    // Ready means "serving": a standby replica waiting for the Lease is ready too, or a rolling update of a
    // two-replica Deployment would never finish.
    ready.store(true, Ordering::Relaxed);
    let mut leadership = None;
    if leader_elect {
        let lease = LeaseSpec {
            name: config.leader_election.resource_name.clone().unwrap_or_else(|| DEFAULT_LEASE_NAME.into()),
            namespace: lease_namespace,
            identity: LeaseSpec::identity_for("muster-reconciler"),
            duration: config.lease_duration()?,
        };
        leadership = Some(muster_leader::acquire(client.clone(), &lease).await?);
    }

    // Fail-stop when the lease is lost, as kube-controller-manager does: the pod restarts and competes again.
    let shutdown = async move {
        let mut stop = stop_rx;
        let signal = async {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        match leadership {
            Some(leadership) => tokio::select! { () = signal => {}, () = leadership.lost() => {} },
            None => signal.await,
        }
    };
    crate::run(client, metrics, gates, shutdown).await;
    Ok(())
}

async fn serve_metrics(registry: Arc<Registry>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Configuration {
        Configuration::parse(
            "apiVersion: config.jobset.x-k8s.io/v1alpha1\nkind: Configuration\nleaderElection:\n  leaderElect: true\n  \
             resourceNamespace: jobset-system\nmetrics:\n  bindAddress: :9443\nhealth:\n  healthProbeBindAddress: :9081\n",
        )
        .expect("configuration")
    }

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("muster-reconciler").chain(argv.iter().copied())).expect("flags")
    }

    #[test]
    fn flags_given_win_over_the_file_which_wins_over_the_defaults() {
        let from_file = resolve(&args(&[]), &file(), Some("pod-ns".into()));
        assert_eq!(
            from_file,
            Resolved {
                leader_elect: true,
                metrics_addr: ":9443".into(),
                health_addr: ":9081".into(),
                lease_namespace: "jobset-system".into()
            }
        );
        let given = args(&[
            "--leader-elect=false",
            "--metrics-bind-address=127.0.0.1:1",
            "--health-probe-bind-address",
            "127.0.0.1:2",
            "--leader-election-namespace=mine",
        ]);
        let flags = resolve(&given, &file(), Some("pod-ns".into()));
        assert_eq!(
            flags,
            Resolved {
                leader_elect: false,
                metrics_addr: "127.0.0.1:1".into(),
                health_addr: "127.0.0.1:2".into(),
                lease_namespace: "mine".into()
            }
        );
        let empty = Configuration::parse("apiVersion: config.jobset.x-k8s.io/v1alpha1\nkind: Configuration\n")
            .expect("configuration");
        let defaults = resolve(&args(&["--leader-elect"]), &empty, None);
        assert_eq!(
            defaults,
            Resolved {
                leader_elect: true,
                metrics_addr: ":8443".into(),
                health_addr: ":8081".into(),
                lease_namespace: "default".into()
            }
        );
        assert_eq!(resolve(&args(&[]), &empty, Some("pod-ns".into())).lease_namespace, "pod-ns");
    }
}
