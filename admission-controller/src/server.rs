//! The TLS webhook server: an accept loop over rustls and hyper serving the webhook router, startable in-process
//! (tests bind `127.0.0.1:0` and get the CA back) and stopped by dropping its handle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::features::FeatureGates;
use crate::tls::{self, CertStore, TlsError, Validity};
use crate::webhook::exclusive::{NoReads, PlacementReads};
use crate::webhook::http::{Limits, router};
use crate::webhook::jobset::gang::GangMutation;
use crate::webhook::pod::{self, GangLookup, PodWebhooks};
use crate::webhook::review::{NoPvcs, PvcSource, Webhooks};

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// `tls.crt`/`tls.key` in a directory (cert-manager's Secret as a volume), re-read every `poll`.
    Dir { path: PathBuf, poll: Duration },
    /// A CA and a serving certificate for `names` (DNS names or IPs), generated in-process; the CA is returned by
    /// [`RunningServer::ca_pem`].
    Generate { names: Vec<String> },
    /// Whatever the caller puts into this store (self-managed mode fills it from the Secret it maintains).
    Store(Arc<CertStore>),
}

/// Everything [`serve`] needs.
#[derive(Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub certs: CertSource,
    pub gates: FeatureGates,
    pub pvcs: Arc<dyn PvcSource>,
    /// Gang admission's JobSet mutation; `None` applies upstream's defaults only.
    pub gang: Option<GangMutation>,
    pub limits: Limits,
    /// Time allowed for a TLS handshake and for a request's headers.
    pub handshake_timeout: Duration,
    /// What the pod webhooks read for exclusive placement (a follower's leader pod, the leader's node).
    pub placement_reads: Arc<dyn PlacementReads>,
    /// Placement mode `pod-pinning`: the pod webhook also pins gang pods, reading Gangs from here.
    pub pod_pinning: Option<Arc<dyn GangLookup>>,
}

impl ServeConfig {
    /// Loopback on an ephemeral port, certificates generated for `127.0.0.1` and `localhost`, default gates, no
    /// existing PVCs and no cluster reads for the pod webhooks (followers of exclusive Jobs are refused): what an
    /// integration test registering the webhooks by URL needs.
    pub fn loopback() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            certs: CertSource::Generate { names: vec!["127.0.0.1".into(), "localhost".into()] },
            gates: FeatureGates::default(),
            pvcs: Arc::new(NoPvcs),
            gang: None,
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            placement_reads: Arc::new(NoReads),
            pod_pinning: None,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("addr", &self.addr)
            .field("certs", &self.certs)
            .field("gates", &self.gates)
            .field("limits", &self.limits)
            .field("pod_pinning", &self.pod_pinning.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ServeError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::Tls(e) => e.category(),
        }
    }
}

/// A running webhook server. Dropping it stops the server and every connection; [`RunningServer::shutdown`] does
/// the same and waits for it.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    ca_pem: Option<String>,
    store: Arc<CertStore>,
    stop: Option<oneshot::Sender<()>>,
    accept_task: JoinHandle<()>,
    cert_task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr><path>`, for a webhook configuration's `clientConfig.url`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Where webhook configurations should send reviews: this server, by URL (see
    /// [`crate::webhook::config::mutating_configuration`]).
    pub fn webhook_target(&self) -> crate::webhook::config::Target {
        crate::webhook::config::Target::Url(format!("https://{}", self.addr))
    }

    /// The CA that signed the serving certificate, in PEM (for `caBundle`), when the server generated it.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Whether a serving certificate is loaded.
    pub fn is_ready(&self) -> bool {
        self.store.is_ready()
    }

    pub fn cert_store(&self) -> Arc<CertStore> {
        self.store.clone()
    }

    /// Stops accepting, drops open connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = &self.cert_task {
            task.abort();
        }
        let _ = (&mut self.accept_task).await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Some(task) = &self.cert_task {
            task.abort();
        }
    }
}

/// Binds `config.addr` and serves the JobSet and pod webhooks over TLS until the returned handle is dropped.
pub async fn serve(config: ServeConfig) -> Result<RunningServer, ServeError> {
    let mut cert_task = None;
    let (store, ca_pem) = match config.certs {
        CertSource::Dir { path, poll } => {
            let store = CertStore::new();
            cert_task = Some(tokio::spawn(tls::watch_cert_dir(store.clone(), path, poll)));
            (store, None)
        }
        CertSource::Generate { names } => {
            let certs = tls::generate_certs(&names, Validity::default())?;
            let store = CertStore::new();
            store.load_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())?;
            (store, Some(certs.ca_cert_pem))
        }
        CertSource::Store(store) => (store, None),
    };
    let acceptor = TlsAcceptor::from(tls::server_config(store.clone())?);
    let listener =
        TcpListener::bind(config.addr).await.map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let webhooks = Webhooks { gang: config.gang, ..Webhooks::new(config.gates, config.pvcs) };
    let pod_webhooks = PodWebhooks { reads: config.placement_reads, pinning: config.pod_pinning };
    let app = router(Arc::new(webhooks), config.limits).merge(pod::router(pod_webhooks, config.limits));
    let (stop, stopped) = oneshot::channel();
    let accept_task = tokio::spawn(accept_loop(listener, Some(acceptor), app, config.handshake_timeout, stopped));
    tracing::info!(%addr, "webhook server listening");
    Ok(RunningServer { addr, ca_pem, store, stop: Some(stop), accept_task, cert_task })
}

/// Serves `app` on `listener` (over TLS when `acceptor` is given) until `stopped` fires or the task is aborted;
/// connections end with it.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: axum::Router,
    handshake_timeout: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    // Connections live in this set: when the loop ends (stop, or the task is aborted) they are dropped with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(tcp, peer, acceptor.clone(), app.clone(), handshake_timeout));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: axum::Router,
    handshake_timeout: Duration,
) {
    let Some(acceptor) = acceptor else {
        // Plain HTTP, e.g. the extender on loopback. Small request/response pairs: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        return serve_http(tcp, peer, app, handshake_timeout).await;
    };
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    serve_http(tls, peer, app, handshake_timeout).await;
}

async fn serve_http<S>(stream: S, peer: SocketAddr, app: axum::Router, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
