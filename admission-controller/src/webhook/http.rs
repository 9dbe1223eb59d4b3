//! The HTTP layer, kept thin: two POST routes, a bounded body, a bounded time, and errors that are responses,
//! never panics.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::review::{Endpoint, MUTATE_PATH, ReviewError, VALIDATE_PATH, Webhooks};

/// Request bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest AdmissionReview accepted. The API server caps objects at 3 MiB; a review carries at most two.
    pub max_body_bytes: usize,
    /// Time to read the body and answer, PVC lookups included; below the API server's 10 s webhook timeout so that
    /// it gets our answer rather than its own timeout.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 7 * 1024 * 1024, request_timeout: Duration::from_secs(9) }
    }
}

#[derive(Clone, Debug)]
struct AppState {
    webhooks: Arc<Webhooks>,
    limits: Limits,
}

/// The webhook routes: `POST /mutate-jobset-x-k8s-io-v1alpha2-jobset` and `POST /validate-jobset-x-k8s-io-v1alpha2-jobset`.
pub fn router(webhooks: Arc<Webhooks>, limits: Limits) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
        .with_state(AppState { webhooks, limits })
}

/// The probe routes: `/healthz` always answers, `/readyz` only once `ready` says so (certificates loaded).
pub fn health_router(ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready();
            async move {
                if ready {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, "serving certificate not loaded yet")
                }
            }
        }),
    )
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    handle(state, Endpoint::Mutate, request).await
}

async fn validate(State(state): State<AppState>, request: Request) -> Response {
    handle(state, Endpoint::Validate, request).await
}

pub(crate) fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.into()).into_response()
}

/// The body of a JSON request, at most `max` bytes; the error is the response to send instead.
pub(crate) async fn read_json_body(request: Request, max: usize) -> Result<Bytes, Response> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected Content-Type application/json"));
    }
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {max} bytes")));
    }
    match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {max} bytes")))
        }
        Err(e) => Err(plain(StatusCode::BAD_REQUEST, format!("reading request body: {e}"))),
    }
}

async fn handle(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let webhooks = state.webhooks.clone();
    serve_review(state.limits, request, move |body| async move { webhooks.review(endpoint, &body).await }).await
}

/// One AdmissionReview request within `limits`: a JSON body of bounded size, answered by `review` in bounded time.
pub(crate) async fn serve_review<F, Fut>(limits: Limits, request: Request, review: F) -> Response
where
    F: FnOnce(Bytes) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, ReviewError>>,
{
    let path = request.uri().path().to_owned();
    let work = async {
        let body = match read_json_body(request, limits.max_body_bytes).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        match review(body).await {
            Ok(review) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from(review)).into_response()
            }
            Err(e) => {
                tracing::warn!(error = %e, category = e.category(), "unusable admission request");
                plain(StatusCode::BAD_REQUEST, e.to_string())
            }
        }
    };
    match tokio::time::timeout(limits.request_timeout, work).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(path, "admission request timed out");
            plain(StatusCode::REQUEST_TIMEOUT, "admission request timed out")
        }
    }
}
