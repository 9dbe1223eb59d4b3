//! AdmissionReview in, AdmissionReview out: decoding the review, calling the pure webhook logic, and shaping the
//! response the way controller-runtime's webhook server does (so the API server words its errors the same way).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};
use serde_json::Value;

use super::jobset::gang::GangMutation;
use super::jobset::validate::{self, ExistingPvcs, PvcLookup};
use super::jobset::{decode_jobset, mutation_patch};
use crate::features::FeatureGates;

/// Which of the two JobSet webhooks a review was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `mjobset.kb.io`
    Mutate,
    /// `vjobset.kb.io`
    Validate,
}

pub const MUTATE_PATH: &str = "/mutate-jobset-x-k8s-io-v1alpha2-jobset";
pub const VALIDATE_PATH: &str = "/validate-jobset-x-k8s-io-v1alpha2-jobset";

/// A future returned by a [`PvcSource`].
pub type PvcFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<PersistentVolumeClaim>, String>> + Send + 'a>>;

/// Reads existing PVCs for the volume-claim-policy checks. The server reads them through a kube client; tests pass
/// a map or nothing.
pub trait PvcSource: Send + Sync {
    /// The PVC `name` in `namespace`, `None` if it does not exist, or why it could not be read.
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> PvcFuture<'a>;
}

/// No PVC exists.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPvcs;

impl PvcSource for NoPvcs {
    fn get<'a>(&'a self, _namespace: &'a str, _name: &'a str) -> PvcFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}

/// A fixed set of PVCs, keyed by `(namespace, name)`.
#[derive(Clone, Debug, Default)]
pub struct StaticPvcs(pub BTreeMap<(String, String), PersistentVolumeClaim>);

impl PvcSource for StaticPvcs {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> PvcFuture<'a> {
        let found = self.0.get(&(namespace.to_owned(), name.to_owned())).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Why a request body is not an AdmissionReview we can answer; the HTTP layer turns it into a 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("request body is not an AdmissionReview: {0}")]
    NotAReview(#[source] serde_json::Error),
    #[error("AdmissionReview has no request")]
    NoRequest,
}

impl ReviewError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::NotAReview(_) => "not_a_review",
            Self::NoRequest => "no_request",
        }
    }
}

/// The JobSet webhooks, configured.
#[derive(Clone)]
pub struct Webhooks {
    pub gates: FeatureGates,
    pub pvcs: Arc<dyn PvcSource>,
    /// Gang admission's mutation on CREATE; `None` leaves JobSets to upstream's defaults alone.
    pub gang: Option<GangMutation>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("gates", &self.gates).field("gang", &self.gang).finish_non_exhaustive()
    }
}

impl Webhooks {
    pub fn new(gates: FeatureGates, pvcs: Arc<dyn PvcSource>) -> Self {
        Self { gates, pvcs, gang: None }
    }

    /// Answers one AdmissionReview (the raw request body) with one, as JSON.
    pub async fn review(&self, endpoint: Endpoint, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(value.clone()).map_err(ReviewError::NotAReview)?;
        let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
        // The objects exactly as sent, not as DynamicObject re-serialises them.
        let object = value.pointer("/request/object").filter(|o| !o.is_null());
        let old_object = value.pointer("/request/oldObject").filter(|o| !o.is_null());
        let response = if !is_jobset(&request) {
            // A webhook configuration routing other kinds here is a mistake; say so instead of guessing.
            let kind = &request.kind;
            let message = format!("expected a JobSet but got a {}/{} {}", kind.group, kind.version, kind.kind);
            errored(AdmissionResponse::from(&request), 400, &message)
        } else {
            match endpoint {
                Endpoint::Mutate => self.mutate(&request, object),
                Endpoint::Validate => self.validate(&request, object, old_object).await,
            }
        };
        Ok(encode_review(response))
    }

    fn mutate(&self, request: &AdmissionRequest<DynamicObject>, object: Option<&Value>) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        let Some(object) = object else { return response };
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return response;
        }
        let gang = self.gang.as_ref().filter(|_| request.operation == Operation::Create);
        match mutation_patch(object, gang) {
            Ok(patch) if patch.is_empty() => response,
            Ok(patch) => match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => errored(response, 500, &e.to_string()),
            },
            // An object our types cannot read is one the API server's schema validation will reject with its own,
            // better message; admitting it unchanged lets that message reach the user.
            Err(e) => {
                tracing::info!(uid = %request.uid, error = %e, "not defaulting a JobSet that does not decode");
                response
            }
        }
    }

    async fn validate(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        object: Option<&Value>,
        old_object: Option<&Value>,
    ) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        let decode = |raw: Option<&Value>, what: &str| match raw {
            Some(raw) => decode_jobset(raw).map_err(|e| format!("couldn't decode {what}: {e}")),
            None => Err(format!("{what} is missing")),
        };
        let errors = match request.operation {
            Operation::Create => {
                let mut js = match decode(object, "object") {
                    Ok(js) => js,
                    Err(e) => return errored(response, 400, &e),
                };
                if js.metadata.namespace.as_deref().is_none_or(str::is_empty) {
                    js.metadata.namespace.clone_from(&request.namespace);
                }
                let pvcs = self.lookup_pvcs(&js).await;
                validate::validate_create(&js, &self.gates, &pvcs)
            }
            Operation::Update => {
                let (new, old) = match (decode(object, "object"), decode(old_object, "oldObject")) {
                    (Ok(new), Ok(old)) => (new, old),
                    (Err(e), _) | (_, Err(e)) => return errored(response, 400, &e),
                };
                validate::validate_update(&old, &new, &self.gates)
            }
            Operation::Delete | Operation::Connect => return response,
        };
        if errors.is_empty() {
            return response;
        }
        let name = object.and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or("");
        let mut denied = response;
        denied.allowed = false;
        denied.result = errors.to_invalid_status(validate::GROUP, validate::KIND, name);
        denied
    }

    async fn lookup_pvcs(&self, js: &muster_api::JobSet) -> ExistingPvcs {
        let mut found = BTreeMap::new();
        let namespace = js.metadata.namespace.as_deref().unwrap_or("");
        for name in validate::pvc_names_to_check(js) {
            match self.pvcs.get(namespace, &name).await {
                Ok(Some(pvc)) => {
                    found.insert(name, PvcLookup::Found(Box::new(pvc)));
                }
                Ok(None) => {}
                Err(e) => {
                    found.insert(name, PvcLookup::Failed(e));
                }
            }
        }
        ExistingPvcs(found)
    }
}

fn is_jobset(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.kind.group == validate::GROUP && request.kind.kind == validate::KIND
}

/// Serialises the response review. kube's type writes the patch as an array of numbers; Go writes `[]byte` as
/// base64, which is what every Kubernetes version is known to read, so the patch is re-encoded that way.
pub(crate) fn encode_review(response: AdmissionResponse) -> Vec<u8> {
    let patch = response.patch.clone();
    let mut value = serde_json::to_value(response.into_review()).unwrap_or(Value::Null);
    // kube copies the request's type onto the response; we only serve v1 (the only version our configurations
    // register), so the reply says so whatever a malformed request claimed to be.
    if let Some(review) = value.as_object_mut() {
        review.insert("apiVersion".into(), Value::from("admission.k8s.io/v1"));
        review.insert("kind".into(), Value::from("AdmissionReview"));
    }
    if let (Some(patch), Some(slot)) = (patch, value.pointer_mut("/response/patch")) {
        *slot = serde_json::to_value(k8s_openapi::ByteString(patch)).unwrap_or(Value::Null);
    }
    // Serialising a Value cannot fail; should it, the API server gets an empty body, not a panic.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// controller-runtime's `admission.Errored(code, err)`: denied, with only a code and a message.
pub(crate) fn errored(mut response: AdmissionResponse, code: u16, message: &str) -> AdmissionResponse {
    response.allowed = false;
    response.result = Status { code, message: message.to_owned(), ..Status::default() };
    response
}
