//! The poll loop: read NVML (on a blocking thread), read allocations (kubelet socket, else the API server),
//! build the status (pure), update the metrics, publish. An XID wakes the loop at once, so an unhealthy GPU
//! reaches the `GPUNode` without waiting for the next poll.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use muster_api::gpunode::GPUNodeStatus;
use nvml_wrapper::Nvml;
use tokio::sync::Notify;

use crate::allocation::{Allocations, attribute};
use crate::health::{HealthBook, XidPolicy};
use crate::inventory::Inventory;
use crate::metrics::{AgentMetrics, CallLabels, MetricsView, ReasonLabels, SourceLabels};
use crate::nvml::{self, InventoryReader, Reading, WatchControl, WatchOptions};
use crate::podresources::KubeletClient;
use crate::pods::NodePods;
use crate::publish::Publisher;
use crate::{driver, status};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node this agent reports (the `GPUNode`'s name).
    pub node_name: String,
    /// `libnvidia-ml.so.1` by default, found by the dynamic linker.
    pub nvml_library: Option<PathBuf>,
    pub poll_interval: Duration,
    /// Longest time between status writes when nothing significant changes.
    pub heartbeat_interval: Duration,
    pub pod_resources_socket: PathBuf,
    pub xid_policy: XidPolicy,
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            nvml_library: None,
            poll_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            pod_resources_socket: crate::podresources::DEFAULT_SOCKET.into(),
            xid_policy: XidPolicy::default(),
        }
    }
}

/// NVML, once initialised, and what the driver version allows.
struct Session {
    nvml: Arc<Nvml>,
    reader: Option<InventoryReader>,
}

/// Initialises NVML on a blocking thread; logs the driver and what it allows.
async fn open(config: &AgentConfig) -> Result<Session, String> {
    let library = config.nvml_library.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let nvml = nvml::init(library.as_deref()).map_err(|e| nvml::describe_init_error(library.as_deref(), &e))?;
        let version = nvml.sys_driver_version().ok();
        Ok::<_, String>((nvml, version))
    })
    .await
    .map_err(|e| format!("NVML initialisation thread: {e}"))?;
    let (nvml, version) = opened?;
    let assessment = driver::assess(version.as_deref());
    tracing::info!(driver_version = version.as_deref().unwrap_or("unknown"), "NVML initialised");
    for warning in &assessment.warnings {
        tracing::warn!("{warning}");
    }
    let nvml = Arc::new(nvml);
    Ok(Session { reader: Some(InventoryReader::new(nvml.clone(), assessment.processes_readable)), nvml })
}

/// Reads every GPU on a blocking thread.
async fn read(session: &mut Session) -> Reading {
    let Some(mut reader) = session.reader.take() else {
        return Reading { inventory: Inventory::down("NVML reader lost"), failures: Vec::new() };
    };
    match tokio::task::spawn_blocking(move || {
        let reading = reader.read();
        (reader, reading)
    })
    .await
    {
        Ok((reader, reading)) => {
            session.reader = Some(reader);
            reading
        }
        Err(e) => Reading { inventory: Inventory::down(format!("NVML reading thread: {e}")), failures: Vec::new() },
    }
}

/// Runs the agent until `shutdown` completes. Without a `client` it only serves metrics. `ready` turns true
/// after the first reading.
pub async fn run(
    config: AgentConfig,
    client: Option<Client>,
    metrics: AgentMetrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) {
    let book = Arc::new(Mutex::new(HealthBook::default()));
    let control = Arc::new(WatchControl::default());
    let wake = Arc::new(Notify::new());
    let kubelet = KubeletClient::new(&config.pod_resources_socket);
    let mut publisher = client.clone().map(|c| Publisher::new(c, &config.node_name, config.heartbeat_interval));
    let mut node_pods: Option<NodePods> = None;
    let mut session: Option<Session> = None;
    let mut down_reason = String::new();
    let mut last_uuids: Option<Vec<String>> = None;
    let mut reported: HashSet<(&'static str, Option<u32>)> = HashSet::new();
    let mut last_source = "";
    tokio::pin!(shutdown);

    loop {
        let started = Instant::now();
        if session.is_none() {
            match open(&config).await {
                Ok(opened) => {
                    spawn_watcher(
                        opened.nvml.clone(),
                        book.clone(),
                        config.xid_policy.clone(),
                        control.clone(),
                        wake.clone(),
                    );
                    session = Some(opened);
                }
                Err(reason) => {
                    if reason != down_reason {
                        tracing::warn!(%reason, "NVML unavailable: reporting zero GPUs (retrying every poll)");
                        down_reason = reason;
                    }
                }
            }
        }
        let reading = match session.as_mut() {
            Some(session) => read(session).await,
            None => Reading { inventory: Inventory::down(down_reason.clone()), failures: Vec::new() },
        };
        for failure in &reading.failures {
            metrics.nvml_errors.get_or_create(&CallLabels { call: failure.call.into() }).inc();
            if reported.insert((failure.call, failure.gpu)) {
                tracing::warn!(call = failure.call, gpu = ?failure.gpu, error = %failure.error, "NVML call failed");
            }
        }
        let uuids: Vec<String> = reading.inventory.uuids().into_iter().map(String::from).collect();
        if last_uuids.as_ref() != Some(&uuids) {
            tracing::info!(gpus = uuids.len(), ?uuids, "GPUs");
            // The watcher registered the GPUs it found when it started; a different set needs registering.
            if last_uuids.is_some() {
                control.rescan.store(true, Ordering::Relaxed);
            }
            last_uuids = Some(uuids);
        }

        let allocations = allocations(&kubelet, client.as_ref(), &config.node_name, &mut node_pods, &metrics).await;
        if allocations.source() != last_source {
            tracing::info!(source = allocations.source(), "reading pod allocations");
            last_source = allocations.source();
        }
        let attribution = attribute(&reading.inventory.devices, &allocations);
        if !attribution.unmatched_ids.is_empty() {
            tracing::debug!(ids = ?attribution.unmatched_ids, "kubelet device ids that match no GPU NVML sees");
        }
        let book_now = book.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let status = status::build(&reading.inventory, &attribution, &book_now);
        metrics.gpus.set(MetricsView {
            hostname: config.node_name.clone(),
            inventory: reading.inventory,
            status: status.clone(),
            xid_counts: book_now.xid_counts().map(|(u, x, n)| (u.to_string(), x, n)).collect(),
            allocation_source: allocations.source(),
        });
        ready.store(true, Ordering::Relaxed);

        // Without knowing which GPUs pods hold, a status would count held GPUs as free: better no write (the
        // heartbeat goes stale and admission stops trusting the node) than a wrong one.
        let writer = publisher.as_mut().filter(|_| !matches!(allocations, Allocations::Unknown));
        if let Some(writer) = writer {
            match writer.publish(&status).await {
                Ok(Some(reason)) => {
                    metrics.publishes.get_or_create(&ReasonLabels { reason: reason.as_str().into() }).inc();
                    tracing::debug!(reason = reason.as_str(), summary = ?status.summary, "GPUNode status written");
                }
                Ok(None) => {}
                Err(error) => {
                    metrics.publish_errors.inc();
                    tracing::warn!(%error, category = error.category(), "publishing the GPUNode failed; retrying next poll");
                }
            }
        }
        metrics.polls.inc();
        metrics.poll_seconds.observe(started.elapsed().as_secs_f64());

        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.poll_interval) => {}
            () = wake.notified() => {}
        }
    }
    control.stop.store(true, Ordering::Relaxed);
}

fn spawn_watcher(
    nvml: Arc<Nvml>,
    book: Arc<Mutex<HealthBook>>,
    policy: XidPolicy,
    control: Arc<WatchControl>,
    wake: Arc<Notify>,
) {
    let spawned = std::thread::Builder::new().name("xid-watcher".into()).spawn(move || {
        let options = WatchOptions { wait: Duration::from_secs(1), until_idle: false };
        nvml::watch_xids(&nvml, &book, &policy, options, &control, &|| wake.notify_one());
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the XID watcher thread");
    }
}

/// The kubelet's view when its socket is there; otherwise this node's pods from the API server (the watch
/// starts on first use and is waited for, briefly, so the first status does not count held GPUs as free).
async fn allocations(
    kubelet: &KubeletClient,
    client: Option<&Client>,
    node_name: &str,
    node_pods: &mut Option<NodePods>,
    metrics: &AgentMetrics,
) -> Allocations {
    if kubelet.available() {
        match kubelet.view().await {
            Ok(view) => return Allocations::Kubelet(view),
            Err(error) => {
                metrics.allocation_errors.get_or_create(&SourceLabels { source: "kubelet".into() }).inc();
                tracing::warn!(%error, "kubelet pod-resources unavailable; falling back to the API server");
            }
        }
    }
    let Some(client) = client else { return Allocations::Unknown };
    let just_started = node_pods.is_none();
    let pods = node_pods.get_or_insert_with(|| NodePods::start(client.clone(), node_name));
    // Wait for the first list only when the watch has just started; later, an API server that is away must
    // not hold up the poll loop (and with it the XID reaction).
    let deadline = Instant::now() + if just_started { Duration::from_secs(10) } else { Duration::ZERO };
    loop {
        if let Some(snapshot) = pods.snapshot() {
            return Allocations::ApiServer(snapshot);
        }
        if Instant::now() >= deadline {
            metrics.allocation_errors.get_or_create(&SourceLabels { source: "apiserver".into() }).inc();
            tracing::warn!("this node's pods are not listed yet; allocations unknown this round");
            return Allocations::Unknown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--dump-json`: one reading, pending XID events taken into account, allocations from the kubelet when its
/// socket is there; no API server. What the agent would publish, with the heartbeat set to now.
pub async fn dump(config: &AgentConfig) -> GPUNodeStatus {
    let library = config.nvml_library.clone();
    let policy = config.xid_policy.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let nvml = match nvml::init(library.as_deref()) {
            Ok(nvml) => Arc::new(nvml),
            Err(e) => {
                return (Inventory::down(nvml::describe_init_error(library.as_deref(), &e)), HealthBook::default());
            }
        };
        let assessment = driver::assess(nvml.sys_driver_version().ok().as_deref());
        for warning in &assessment.warnings {
            tracing::warn!("{warning}");
        }
        let book = Mutex::new(HealthBook::default());
        let options = WatchOptions { wait: Duration::from_millis(200), until_idle: true };
        nvml::watch_xids(&nvml, &book, &policy, options, &WatchControl::default(), &|| {});
        let reading = InventoryReader::new(nvml, assessment.processes_readable).read();
        for failure in &reading.failures {
            tracing::warn!(call = failure.call, gpu = ?failure.gpu, error = %failure.error, "NVML call failed");
        }
        (reading.inventory, book.into_inner().unwrap_or_else(|p| p.into_inner()))
    })
    .await;
    let (inventory, book) =
        blocking.unwrap_or_else(|e| (Inventory::down(format!("NVML thread: {e}")), HealthBook::default()));
    let kubelet = KubeletClient::new(&config.pod_resources_socket);
    let allocations = if kubelet.available() {
        match kubelet.view().await {
            Ok(view) => Allocations::Kubelet(view),
            Err(error) => {
                tracing::warn!(%error, "kubelet pod-resources unavailable");
                Allocations::Unknown
            }
        }
    } else {
        Allocations::Unknown
    };
    let mut status = status::build(&inventory, &attribute(&inventory.devices, &allocations), &book);
    status.heartbeat_time = Some(Time(Timestamp::now()));
    status
}
