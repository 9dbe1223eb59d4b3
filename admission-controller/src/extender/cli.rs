//! `muster-admission extender`: the extender's flags and process wiring.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::http::{self, Limits, Metrics};
use super::{new_cache, watch};
use crate::cli::{GPU_HEARTBEAT_TIMEOUT, RunError, humantime_secs, parse_bind_address, shutdown_signal};
use crate::gang::model::ModelConfig;
use crate::server::ServeError;
use crate::tls::{self, CertStore, watch_cert_dir};

/// Serve the kube-scheduler extender (filter and prioritize verbs) for the Muster scheduler profile.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtenderFlags {
    /// Address of the verbs (kube-scheduler's `urlPrefix`). Loopback by default: the scheduler runs in the same
    /// pod.
    #[arg(long, default_value = "127.0.0.1:8788")]
    pub bind_address: String,
    /// Address of /healthz, /readyz and /metrics (Go syntax; "0" disables them).
    #[arg(long, default_value = ":8082")]
    pub health_probe_bind_address: String,
    /// Serve the verbs over TLS with tls.crt and tls.key from this directory (re-read when they change).
    #[arg(long)]
    pub tls_cert_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_request_bytes: usize,
    /// Milliseconds a request may take, body included; keep it below the scheduler's `httpTimeout`.
    #[arg(long, default_value_t = 800)]
    pub request_timeout_ms: u64,
    /// A GPUNode heartbeat older than this makes its node's GPUs untrusted: seconds or a Go duration, the same flag
    /// and default as muster-admission's, so that one value can be passed to both.
    #[arg(long, value_parser = humantime_secs, default_value = GPU_HEARTBEAT_TIMEOUT)]
    pub gpu_heartbeat_timeout: Duration,
}

/// Runs the extender until SIGTERM or Ctrl-C.
pub async fn run(flags: ExtenderFlags) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = parse_bind_address(&flags.bind_address)?.ok_or(RunError::BindAddress(flags.bind_address.clone()))?;
    let health_addr = parse_bind_address(&flags.health_probe_bind_address)?;
    let client = kube::Client::try_default().await?;

    let cache = new_cache(ModelConfig { heartbeat_timeout: flags.gpu_heartbeat_timeout, ..ModelConfig::default() });
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let limits = Limits {
        max_body_bytes: flags.max_request_bytes,
        request_timeout: Duration::from_millis(flags.request_timeout_ms),
    };

    let mut cert_task = None;
    let tls = match &flags.tls_cert_dir {
        Some(dir) => {
            let store = CertStore::new();
            cert_task = Some(tokio::spawn(watch_cert_dir(store.clone(), dir.clone(), Duration::from_secs(10))));
            Some(TlsAcceptor::from(tls::server_config(store).map_err(ServeError::from)?))
        }
        None => None,
    };
    let listener = bind(addr).await?;
    let app = http::router(cache.clone(), limits, metrics);
    let server = http::serve(listener, tls, app, Duration::from_secs(10))
        .map_err(|source| RunError::Serve(ServeError::Bind { addr, source }))?;
    tracing::info!(addr = %server.local_addr(), tls = flags.tls_cert_dir.is_some(), "extender listening");
    let watches = tokio::spawn(watch::run(client, cache.clone()));

    let health_task = match health_addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            let app = http::ops_router(cache, Arc::new(registry));
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "health server stopped");
                }
            }))
        }
        None => None,
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    watches.abort();
    for task in [cert_task, health_task].into_iter().flatten() {
        task.abort();
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).await.map_err(|source| RunError::Serve(ServeError::Bind { addr, source }))
}

#[cfg(test)]
mod tests {
    use crate::cli::{Args, Command};
    use crate::extender::SCHEDULER_NAME;
    use crate::extender::http::{FILTER_PATH, PRIORITIZE_PATH};
    use clap::Parser;
    use serde_json::Value;

    fn docs() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/components/extender/scheduler.yaml");
        let text = std::fs::read_to_string(path).expect("deploy/components/extender/scheduler.yaml exists");
        serde_saphyr::from_multiple(&text).expect("scheduler.yaml parses")
    }

    fn go_duration_ms(s: &str) -> u64 {
        match (s.strip_suffix("ms"), s.strip_suffix('s')) {
            (Some(ms), _) => ms.parse().expect("ms"),
            (None, Some(secs)) => secs.parse::<u64>().expect("seconds") * 1000,
            _ => panic!("unexpected duration {s}"),
        }
    }

    /// The deployed scheduler configuration and the sidecar's flags agree with each other and with the code:
    /// address, verbs, profile name, managed resource, timeouts, and what gang pods need (every node scored).
    #[test]
    fn deployed_scheduler_talks_to_its_sidecar() {
        let docs = docs();
        let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("ConfigMap");
        let text = config_map["data"]["scheduler-config.yaml"].as_str().expect("scheduler-config.yaml");
        let config: Value = serde_saphyr::from_str(text).expect("KubeSchedulerConfiguration parses");
        assert_eq!(config["kind"], "KubeSchedulerConfiguration");
        assert_eq!(config["percentageOfNodesToScore"], 100);
        assert_eq!(config["leaderElection"]["leaderElect"], true);
        assert_eq!(config["profiles"][0]["schedulerName"], SCHEDULER_NAME);
        let ext = &config["extenders"][0];
        assert_eq!(format!("/{}", ext["filterVerb"].as_str().expect("filterVerb")), FILTER_PATH);
        assert_eq!(format!("/{}", ext["prioritizeVerb"].as_str().expect("prioritizeVerb")), PRIORITIZE_PATH);
        assert_eq!(ext["nodeCacheCapable"], true);
        assert_eq!(ext["ignorable"], false);
        assert!(ext["weight"].as_i64().is_some_and(|w| w > 0), "weight must be positive with a prioritize verb");
        assert_eq!(ext["managedResources"][0]["name"], muster_api::keys::GPU_RESOURCE);
        assert_eq!(ext["managedResources"][0]["ignoredByScheduler"], false);

        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("Deployment");
        let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
        let sidecar = containers.iter().find(|c| c["name"] == "extender").expect("extender container");
        let mut argv = vec!["muster-admission".to_owned()];
        argv.extend(sidecar["args"].as_array().expect("args").iter().filter_map(Value::as_str).map(str::to_owned));
        let Some(Command::Extender(flags)) = Args::try_parse_from(argv).expect("sidecar args parse").command else {
            panic!("the sidecar runs the extender subcommand")
        };
        let url = ext["urlPrefix"].as_str().expect("urlPrefix");
        assert_eq!(url, format!("http://{}", flags.bind_address), "scheduler calls the sidecar's address");
        assert!(flags.bind_address.starts_with("127.0.0.1:"), "verbs stay on loopback");
        let http_timeout = go_duration_ms(ext["httpTimeout"].as_str().expect("httpTimeout"));
        assert!(flags.request_timeout_ms < http_timeout, "the extender answers before the scheduler gives up");
        let probe_port = sidecar["ports"][0]["containerPort"].as_u64().expect("port");
        assert_eq!(flags.health_probe_bind_address, format!(":{probe_port}"));

        // Admission and the extender judge GPUNode heartbeats alike.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/controller/admission.yaml");
        let text = std::fs::read_to_string(path).expect("deploy/controller/admission.yaml exists");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("admission.yaml parses");
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut argv = vec!["muster-admission".to_owned()];
        argv.extend(container["args"].as_array().expect("args").iter().filter_map(Value::as_str).map(str::to_owned));
        let admission = Args::try_parse_from(argv).expect("admission args parse");
        assert_eq!(flags.gpu_heartbeat_timeout, admission.gpu_heartbeat_timeout);
    }
}
