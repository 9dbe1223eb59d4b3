//! Process wiring: flags, logging, the admin listener, the Kubernetes client, and the agent loop or the
//! one-shot `--dump-json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use prometheus_client::registry::Registry;

use crate::agent::{self, AgentConfig};
use crate::health::XidPolicy;
use crate::metrics::AgentMetrics;

#[derive(Debug, Parser)]
#[command(
    name = "muster-gpu-agent",
    version,
    about = "Reports this node's GPUs (NVML) as its GPUNode and as Prometheus metrics"
)]
pub struct Args {
    /// The Node this agent runs on (set from the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The NVML library to load; default `libnvidia-ml.so.1` through the dynamic linker.
    #[arg(long, env = "MUSTER_NVML_LIBRARY")]
    pub nvml_library: Option<PathBuf>,
    /// How often to read the GPUs, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Longest time between GPUNode writes when nothing admission cares about changes; the heartbeat.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The kubelet's pod-resources socket. When it is absent, allocations come from the API server.
    #[arg(long, env = "MUSTER_POD_RESOURCES_SOCKET", default_value = crate::podresources::DEFAULT_SOCKET)]
    pub pod_resources_socket: PathBuf,
    /// XIDs that do not make a GPU unhealthy: a comma list, `all`, or empty for none. The default is the
    /// NVIDIA device plugin's.
    #[arg(long, env = "MUSTER_IGNORED_XIDS", default_value = "13,31,43,45,68,109")]
    pub ignored_xids: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9410")]
    pub listen: SocketAddr,
    /// Serve metrics only; do not write the GPUNode (no Kubernetes API access needed).
    #[arg(long)]
    pub no_publish: bool,
    /// Print what the agent would publish for this node as JSON, then exit. Needs no cluster.
    #[arg(long)]
    pub dump_json: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// `500ms`, `10s`, `2m`, or bare seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {text:?} (e.g. 500ms, 10s, 2m)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("duration must be positive: {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

impl Args {
    fn config(&self) -> anyhow::Result<AgentConfig> {
        let node_name = match (&self.node_name, self.dump_json) {
            (Some(name), _) => name.clone(),
            (None, true) => String::new(),
            (None, false) => anyhow::bail!("--node-name (or NODE_NAME) is required"),
        };
        Ok(AgentConfig {
            node_name,
            nvml_library: self.nvml_library.clone(),
            poll_interval: self.poll_interval,
            heartbeat_interval: self.heartbeat_interval,
            pod_resources_socket: self.pod_resources_socket.clone(),
            xid_policy: XidPolicy::parse(&self.ignored_xids)
                .map_err(|e| anyhow::anyhow!(e))
                .context("--ignored-xids")?,
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Logs go to stderr so that --dump-json's stdout is only the JSON.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = args.config()?;

    if args.dump_json {
        let status = agent::dump(&config).await;
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }

    let client = if args.no_publish {
        None
    } else {
        Some(kube::Client::try_default().await.context("Kubernetes client (use --no-publish to serve metrics only)")?)
    };
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, node = %config.node_name, "serving /metrics, /healthz, /readyz");
    let app = crate::server::router(Arc::new(registry), ready.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "admin server stopped");
        }
    });
    let shutdown = async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match terminate.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    agent::run(config, client, metrics, ready, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_node_name_is_needed_except_for_a_dump() {
        assert!(Args::parse_from(["muster-gpu-agent"]).config().is_err());
        assert!(Args::parse_from(["muster-gpu-agent", "--dump-json"]).config().is_ok());
        let args = Args::parse_from(["muster-gpu-agent", "--node-name", "n1", "--ignored-xids", "all"]);
        assert!(args.config().expect("config").xid_policy.ignore_all);
    }
}
