//! The extender's HTTP shell, kept thin: `POST /filter` and `POST /prioritize` (kube-scheduler's `urlPrefix` plus
//! the verb), a bounded body, a bounded time, metrics per verb, and the operations routes (`/healthz`, `/readyz`,
//! `/metrics`) on a listener of their own.
//!
//! Answers: `filter` always answers 200 with an `ExtenderFilterResult` once the body is read; a request it cannot
//! decide (not JSON, no Pod, extender not synced yet) gets the reason in `Error`, which kube-scheduler puts into
//! the pod's `FailedScheduling` event. `prioritize` has no error field: such requests get a 400, which the
//! scheduler logs and otherwise ignores (prioritize errors never fail a pod). Transport problems are HTTP errors:
//! 415 (not JSON), 413 (too large), 503 (took longer than the request timeout).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Pod;
use muster_api::extender::{ExtenderFilterResult, NodeList};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::decide::{self, Candidates};
use super::state::ExtenderState;
use crate::webhook::http::{plain, read_json_body};

pub const FILTER_PATH: &str = "/filter";
pub const PRIORITIZE_PATH: &str = "/prioritize";

/// The extender's state, shared by the watches (writers) and the requests (readers), and whether the watches have
/// listed everything once.
#[derive(Debug)]
pub struct Cache {
    state: RwLock<ExtenderState>,
    synced: AtomicBool,
}

impl Cache {
    pub fn new(state: ExtenderState) -> Self {
        Cache { state: RwLock::new(state), synced: AtomicBool::new(false) }
    }

    /// A panic while holding the lock cannot leave the state half-updated in a way that matters more than
    /// stopping the extender would, so a poisoned lock is used as is.
    pub fn read(&self) -> RwLockReadGuard<'_, ExtenderState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, ExtenderState> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every watch has delivered its initial list: decisions see the whole cluster.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }
}

/// Request bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request accepted. Names of 5,000 nodes are about 100 KiB; full Nodes (an extender that is not
    /// `nodeCacheCapable`) run to several KiB each.
    pub max_body_bytes: usize,
    /// Time to read the body and answer; below the scheduler's `httpTimeout` so that it gets our answer.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 16 << 20, request_timeout: Duration::from_millis(800) }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

/// `muster_extender_requests_total{verb,outcome}` and `muster_extender_request_duration_seconds{verb}`.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<VerbLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        // 25 µs .. ~0.8 s: the budget is about 2 ms per pod, the scheduler's timeout a second or two.
        fn histogram() -> Histogram {
            Histogram::new(exponential_buckets(25e-6, 2.0, 16))
        }
        let metrics = Metrics { requests: Family::default(), duration: Family::new_with_constructor(histogram) };
        let ours = registry.sub_registry_with_prefix("muster_extender");
        ours.register(
            "requests",
            "Extender requests by verb and outcome (ok, bad_request, not_ready, timeout)",
            metrics.requests.clone(),
        );
        ours.register(
            "request_duration_seconds",
            "Time to answer an extender request, body read included",
            metrics.duration.clone(),
        );
        metrics
    }

    fn observe(&self, verb: &'static str, outcome: &'static str, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { verb, outcome }).inc();
        self.duration.get_or_create(&VerbLabels { verb }).observe(elapsed.as_secs_f64());
    }
}

#[derive(Clone)]
struct AppState {
    cache: Arc<Cache>,
    limits: Limits,
    metrics: Metrics,
}

/// `POST /filter` and `POST /prioritize`.
pub fn router(cache: Arc<Cache>, limits: Limits, metrics: Metrics) -> Router {
    Router::new().route(FILTER_PATH, post(filter)).route(PRIORITIZE_PATH, post(prioritize)).with_state(AppState {
        cache,
        limits,
        metrics,
    })
}

/// `/healthz` (always), `/readyz` (once the initial lists are in) and `/metrics`.
pub fn ops_router(cache: Arc<Cache>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let synced = cache.is_synced();
                async move {
                    if synced {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "initial lists not complete")
                    }
                }
            }),
        )
        .merge(metrics_router(registry))
}

/// `GET /metrics` in the OpenMetrics text format: one handler for every Muster server in this crate.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        text,
                    )
                        .into_response(),
                    Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
        }),
    )
}

const NOT_SYNCED: &str = "the Muster extender has not finished its initial lists yet";

/// What one request came to: a JSON body to send with 200, or another response.
#[derive(Debug)]
pub enum Answer {
    Json(Vec<u8>),
    Status(Response),
}

fn json_body<T: Serialize>(value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => Answer::Json(body),
        Err(e) => Answer::Status(plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `ExtenderArgs` as read from a request body: the same JSON (PascalCase, `null` = missing, unknown fields
/// ignored), but node names are borrowed from the body instead of allocated one by one, which at 5,000 names
/// halves the cost of reading a request (bench/README.md). The API type stays [`ExtenderArgs`].
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireArgs<'a> {
    #[serde(default)]
    pod: Option<Box<Pod>>,
    #[serde(default)]
    nodes: Option<NodeList>,
    #[serde(default, borrow)]
    node_names: Option<Vec<Name<'a>>>,
}

/// A node name, borrowed unless the JSON escaped it.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a node name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(Text).map(Name)
    }
}

impl WireArgs<'_> {
    fn request(&self) -> decide::Request<'_> {
        let candidates = match (&self.node_names, &self.nodes) {
            (Some(names), _) => Candidates::Names(names.iter().map(|n| &*n.0).collect()),
            (None, Some(list)) => Candidates::Nodes(&list.items),
            (None, None) => Candidates::None,
        };
        decide::Request { pod: self.pod.as_deref(), candidates }
    }
}

/// `filter` on a request body, without the HTTP layer: the answer and its outcome label.
pub fn filter_body(cache: &Cache, body: &[u8]) -> (Answer, &'static str) {
    let error = |message: String| ExtenderFilterResult { error: message, ..Default::default() };
    let args: WireArgs<'_> = match serde_json::from_slice(body) {
        Ok(args) => args,
        Err(e) => return (json_body(&error(format!("request is not ExtenderArgs: {e}"))), "bad_request"),
    };
    if !cache.is_synced() {
        return (json_body(&error(NOT_SYNCED.to_owned())), "not_ready");
    }
    let request = args.request();
    // Under the write lock: the answer's assumption must be recorded before the next filter decides.
    let answer = decide::filter_and_assume(&mut cache.write(), &request);
    let outcome = if answer.error_text().is_empty() { "ok" } else { "bad_request" };
    (json_body(&answer), outcome)
}

/// `prioritize` on a request body, without the HTTP layer: the answer and its outcome label.
pub fn prioritize_body(cache: &Cache, body: &[u8]) -> (Answer, &'static str) {
    let bad = |message: String| Answer::Status(plain(StatusCode::BAD_REQUEST, message));
    let args: WireArgs<'_> = match serde_json::from_slice(body) {
        Ok(args) => args,
        Err(e) => return (bad(format!("request is not ExtenderArgs: {e}")), "bad_request"),
    };
    if !cache.is_synced() {
        return (Answer::Status(plain(StatusCode::SERVICE_UNAVAILABLE, NOT_SYNCED)), "not_ready");
    }
    let request = args.request();
    match decide::prioritize(&cache.read(), &request) {
        Ok(scores) => (json_body(&scores), "ok"),
        Err(e) => (bad(e.to_string()), "bad_request"),
    }
}

async fn filter(State(app): State<AppState>, request: Request) -> Response {
    let cache = app.cache.clone();
    handle(app, "filter", request, move |body| filter_body(&cache, &body)).await
}

async fn prioritize(State(app): State<AppState>, request: Request) -> Response {
    let cache = app.cache.clone();
    handle(app, "prioritize", request, move |body| prioritize_body(&cache, &body)).await
}

async fn handle<F>(app: AppState, verb: &'static str, request: Request, decide: F) -> Response
where
    F: FnOnce(Bytes) -> (Answer, &'static str) + Send,
{
    let start = Instant::now();
    let work = async {
        match read_json_body(request, app.limits.max_body_bytes).await {
            Ok(body) => decide(body),
            Err(response) => (Answer::Status(response), "bad_request"),
        }
    };
    let (answer, outcome) = match tokio::time::timeout(app.limits.request_timeout, work).await {
        Ok(done) => done,
        Err(_) => {
            tracing::warn!(verb, "extender request timed out");
            let response = plain(StatusCode::SERVICE_UNAVAILABLE, "extender request timed out");
            (Answer::Status(response), "timeout")
        }
    };
    app.metrics.observe(verb, outcome, start.elapsed());
    match answer {
        Answer::Json(body) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response()
        }
        Answer::Status(response) => response,
    }
}

/// A running server. Dropping it stops the server and its connections.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://<addr>`: kube-scheduler's `urlPrefix` for this server.
    pub fn url_prefix(&self, tls: bool) -> String {
        format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
    }

    /// Stops accepting, drops open connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, on the same accept loop and HTTP settings as the
/// webhook server; `header_timeout` bounds the TLS handshake and the request headers.
pub fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    header_timeout: Duration,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(crate::server::accept_loop(listener, tls, app, header_timeout, stopped));
    Ok(RunningServer { addr, stop: Some(stop), task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_api::extender::ExtenderArgs;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// What a request decodes to, in owned form, to compare the two decoders: pod, names, full nodes' names.
    type Decoded = (Option<Pod>, Option<Vec<String>>, Option<Vec<Option<String>>>);

    fn owned(request: &decide::Request<'_>) -> Decoded {
        let (names, nodes) = match &request.candidates {
            Candidates::Names(names) => (Some(names.iter().map(|n| (*n).to_owned()).collect()), None),
            Candidates::Nodes(items) => (None, Some(items.iter().map(|n| n.metadata.name.clone()).collect())),
            Candidates::None => (None, None),
        };
        (request.pod.cloned(), names, nodes)
    }

    fn same_as_the_api_type(body: &[u8]) -> Result<(), TestCaseError> {
        let wire = serde_json::from_slice::<WireArgs<'_>>(body);
        let api = serde_json::from_slice::<ExtenderArgs>(body);
        match (wire, api) {
            (Ok(wire), Ok(api)) => prop_assert_eq!(owned(&wire.request()), owned(&decide::Request::from(&api))),
            (Err(_), Err(_)) => {}
            (wire, api) => prop_assert!(false, "decoders disagree: {:?} vs {:?}", wire.is_ok(), api.is_ok()),
        }
        Ok(())
    }

    #[test]
    fn names_are_borrowed_unless_escaped() {
        let body = br#"{"Pod": null, "NodeNames": ["gpu-0", "gpu\u002d1"], "Nodes": null, "Extra": 1}"#;
        let args: WireArgs<'_> = serde_json::from_slice(body).expect("decodes");
        let names = args.node_names.as_ref().expect("names");
        assert!(matches!(names[0].0, Cow::Borrowed("gpu-0")));
        assert!(matches!(&names[1].0, Cow::Owned(n) if n == "gpu-1"));
        same_as_the_api_type(body).expect("same");
    }

    fn name() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z0-9.-]{0,10}".prop_map(Value::from),
            ".{0,6}".prop_map(Value::from),
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn the_wire_decoder_reads_what_the_api_type_reads(
            names in prop::option::of(prop::collection::vec(name(), 0..6)),
            nodes in prop::option::of(prop::collection::vec(name(), 0..3)),
            pod in prop_oneof![Just(Value::Null), Just(json!({"metadata": {"name": "p"}})), Just(json!(3)),
                Just(json!({"spec": {"containers": "x"}}))],
            extra in prop::option::of(name()),
        ) {
            let mut args = json!({"Pod": pod});
            if let Some(names) = names {
                args["NodeNames"] = Value::Array(names);
            }
            if let Some(nodes) = nodes {
                let items: Vec<Value> = nodes.into_iter().map(|n| json!({"metadata": {"name": n}})).collect();
                args["Nodes"] = json!({"items": items});
            }
            if let Some(extra) = extra {
                args["NotAField"] = extra;
            }
            same_as_the_api_type(&serde_json::to_vec(&args).expect("json"))?;
        }

        #[test]
        fn random_bytes_decode_alike(body in prop::collection::vec(any::<u8>(), 0..64)) {
            same_as_the_api_type(&body)?;
        }
    }
}
