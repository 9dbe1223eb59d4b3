//! The pod webhooks, upstream's `mpod.kb.io` (`/mutate--v1-pod`) and `vpod.kb.io` (`/validate--v1-pod`), on pod
//! CREATE. They carry two concerns, composed in one mutation:
//!
//! 1. **Exclusive placement** (upstream's, [`super::exclusive`]), always: the priority label on every JobSet pod, the
//!    leader's pod (anti-)affinity, the follower's topology nodeSelector, and the validating webhook's refusal of
//!    followers created before their leader is scheduled.
//! 2. **Pod pinning**, in placement mode `pod-pinning` only (for clusters whose scheduler cannot be extended, e.g.
//!    managed control planes): a pod of an admitted gang gets required node affinity `metadata.name In [<its
//!    reserved node>]` (and the `muster.dev/reserved-node` annotation), so the stock kube-scheduler can put it
//!    nowhere else.
//!
//! Both only add constraints (pinning ANDs its requirement into every node-selector term; exclusive placement adds
//! pod (anti-)affinity and a nodeSelector entry), so neither undoes the other: the scheduler must satisfy both.
//! **Gang placement does not honour exclusive-topology yet** (admission-controller/src/gang/placement.rs packs a
//! Job into one domain of its configured topology keys where it can, but neither requires that nor keeps other Jobs
//! out of the domain). A gang JobSet with exclusive-topology whose placement happens to give each Job a domain of
//! its own runs as placed. Otherwise exclusivity wins: a leader reserved in a domain another Job of its priority
//! uses, or a follower reserved outside its leader's domain, stays Pending (the scheduler enforces the affinity and
//! the nodeSelector), the gang does not become ready and is requeued after the pods-ready timeout. In extender mode
//! the same holds, with the extender narrowing each pod to its reserved node.
//!
//! Pinning in detail:
//! - Pods of a gang that is not admitted are refused: in the normal flow they cannot exist (the JobSet stays
//!   suspended until admission), and refusing them keeps them off GPUs reserved for others. The Job controller
//!   retries the creation with backoff.
//! - A pod of a NonIndexed Job is pinned to the nodes of its Job's slots; which of them it takes is the scheduler's
//!   choice (the webhook does not track bound pods).
//! - Pods whose JobSet has no Gang (not gang-managed) or whose gang is Finished are left alone.
//!
//! **Pods outside gangs are not steered in this mode.** Node affinity is fixed at creation, and reservations come
//! and go, so no affinity written then could keep a plain GPU pod off GPUs reserved later, nor let it onto GPUs
//! released later; only a scheduler extender decides with the reservations of the moment. A plain GPU pod may
//! therefore take GPUs reserved for a gang whose pods have not started yet. Nothing is double-booked (the kubelet
//! refuses a pod beyond the node's GPUs); the gang pod pinned there waits until the GPUs are free again, and if
//! that takes longer than the admission timeout the gang is requeued. Clusters that run plain GPU pods next to
//! gangs should use the extender mode, or keep those pods on other nodes (taints, node pools).
//!
//! The webhook configurations select only pods with the `jobset-name` label (`objectSelector`), so other pods never
//! reach them and their `failurePolicy: Fail` cannot block them.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use muster_api::{Gang, keys};
use serde_json::{Value, json};

use super::exclusive::{self, Denial, PlacementReads};
use super::http::{Limits, serve_review};
use super::json::with_object_at;
use super::review::{ReviewError, encode_review, errored};
use crate::extender::slots::{GangRecord, Steering, no_slot, not_admitted, pod_slot, unlabelled};

pub const MUTATE_POD_PATH: &str = "/mutate--v1-pod";
pub const VALIDATE_POD_PATH: &str = "/validate--v1-pod";

/// A future returned by a [`GangLookup`].
pub type GangFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Gang>, String>> + Send + 'a>>;

/// Reads Gangs for the pinning webhook.
pub trait GangLookup: Send + Sync {
    /// The Gang `namespace/name`, `None` if there is none, or why it could not be read.
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> GangFuture<'a>;
}

/// A fixed set of Gangs, keyed by `(namespace, name)`.
#[derive(Clone, Debug, Default)]
pub struct StaticGangs(pub BTreeMap<(String, String), Gang>);

impl GangLookup for StaticGangs {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> GangFuture<'a> {
        let found = self.0.get(&(namespace.to_owned(), name.to_owned())).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Gangs from a reflector, and from the API server when the cache does not show the gang admitted: admission
/// writes the placement and then releases the JobSet, and the pods it creates may reach the webhook before the
/// watch brings the new status. Pods of admitted gangs, the bulk, are answered from the cache.
#[derive(Clone)]
pub struct KubeGangs {
    pub store: Store<Gang>,
    pub client: kube::Client,
}

impl KubeGangs {
    /// Starts the Gang reflector; the returned task runs it until aborted.
    pub fn spawn(client: kube::Client) -> (Self, tokio::task::JoinHandle<()>) {
        let (store, writer) = reflector::store();
        let watch = watcher(Api::all(client.clone()), watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| std::future::ready(()));
        (KubeGangs { store, client }, tokio::spawn(watch))
    }
}

impl GangLookup for KubeGangs {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> GangFuture<'a> {
        Box::pin(async move {
            let cached = self.store.get(&ObjectRef::new(name).within(namespace));
            if let Some(gang) = cached.filter(|g| GangRecord::from_gang(g).holds_reservation()) {
                return Ok(Some(Gang::clone(&gang)));
            }
            Api::<Gang>::namespaced(self.client.clone(), namespace).get_opt(name).await.map_err(|e| e.to_string())
        })
    }
}

/// What the webhook does with a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinDecision {
    /// Not a gang pod (or its gang holds no reservation): unchanged.
    Allow,
    /// Required node affinity to these nodes.
    Pin(Vec<String>),
    /// Refused, with the reason the API server shows the creator.
    Deny(String),
}

/// The decision for a pod of the JobSet whose Gang is `gang` (`None`: the JobSet is not gang-managed).
pub fn decide(pod: &Pod, gang: Option<&Gang>) -> PinDecision {
    let (Some(slot), Some(gang)) = (pod_slot(pod), gang) else { return PinDecision::Allow };
    let record = GangRecord::from_gang(gang);
    let slot = match slot {
        Ok(slot) => slot,
        Err(e) if record.holds_reservation() => {
            return PinDecision::Deny(unlabelled(&e));
        }
        Err(_) => return PinDecision::Allow,
    };
    let key = &slot.gang;
    match record.steer(&slot.job, slot.pod_index) {
        Steering::Free => PinDecision::Allow,
        Steering::Wait(phase) => {
            PinDecision::Deny(format!("{}: its pods are created once admission places it", not_admitted(key, phase)))
        }
        Steering::NoSlot => PinDecision::Deny(no_slot(key, record.phase, &slot)),
        Steering::Node(node) => PinDecision::Pin(vec![node.to_owned()]),
        Steering::AnySlotOf(pods) => {
            let mut nodes: Vec<String> = pods.values().map(|n| n.to_string()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            PinDecision::Pin(nodes)
        }
    }
}

/// Pins the pod `raw` (as JSON) to `nodes`: the requirement is added to every required node-selector term (terms
/// are ORed, so each must carry it), or as the only term; with one node, the `muster.dev/reserved-node` annotation
/// names it. Already pinned: nothing changes, so reinvocation is harmless.
pub fn pin(raw: &mut Value, nodes: &[String]) {
    let requirement = json!({"key": "metadata.name", "operator": "In", "values": nodes});
    let path = ["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"];
    with_object_at(raw, &path, |required| {
        let terms = required.entry("nodeSelectorTerms").or_insert(Value::Null);
        let mut list = match std::mem::take(terms) {
            Value::Array(list) if !list.is_empty() => list,
            _ => vec![Value::Null],
        };
        for term in &mut list {
            with_object_at(term, &[], |term| {
                let fields = term.entry("matchFields").or_insert(Value::Null);
                let mut fields_list = match std::mem::take(fields) {
                    Value::Array(list) => list,
                    _ => Vec::new(),
                };
                if !fields_list.contains(&requirement) {
                    fields_list.push(requirement.clone());
                }
                *fields = Value::Array(fields_list);
            });
        }
        *terms = Value::Array(list);
    });
    if let [node] = nodes {
        with_object_at(raw, &["metadata", "annotations"], |annotations| {
            annotations.insert(keys::RESERVED_NODE.to_owned(), json!(node));
        });
    }
}

/// What the pod webhooks need besides the review.
#[derive(Clone)]
pub struct PodWebhooks {
    /// Reads for exclusive placement (a follower's leader, the leader's node).
    pub reads: Arc<dyn PlacementReads>,
    /// Placement mode `pod-pinning`: Gangs to pin pods by; `None` pins nothing.
    pub pinning: Option<Arc<dyn GangLookup>>,
}

/// A CREATE review of a pod, decoded: the request, the pod as sent, and the pod as our types read it.
struct PodReview {
    response: AdmissionResponse,
    raw: Value,
    pod: Pod,
}

/// Decodes a review; `Err` is the answer to send at once (not a pod, not a CREATE, a pod our types cannot read).
fn decode(body: &[u8]) -> Result<Result<PodReview, AdmissionResponse>, ReviewError> {
    let value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value.clone()).map_err(ReviewError::NotAReview)?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let response = AdmissionResponse::from(&request);
    let kind = &request.kind;
    if !(kind.group.is_empty() && kind.kind == "Pod") {
        let message = format!("expected a Pod but got a {}/{} {}", kind.group, kind.version, kind.kind);
        return Ok(Err(errored(response, 400, &message)));
    }
    let raw = value.pointer("/request/object").filter(|o| !o.is_null());
    let (Operation::Create, Some(raw)) = (&request.operation, raw) else { return Ok(Err(response)) };
    // A pod our types cannot read is one the API server will reject with a better message.
    let Ok(mut pod) = serde_json::from_value::<Pod>(raw.clone()) else { return Ok(Err(response)) };
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace.clone_from(&request.namespace);
    }
    Ok(Ok(PodReview { response, raw: raw.clone(), pod }))
}

fn deny(response: AdmissionResponse, denial: Denial) -> AdmissionResponse {
    let mut denied = response.deny(denial.message);
    denied.result.code = denial.code;
    denied.result.reason = denial.reason.into();
    denied
}

impl PodWebhooks {
    /// `mpod.kb.io`: answers one AdmissionReview (the raw request body).
    pub async fn mutate(&self, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let PodReview { response, raw, pod } = match decode(body)? {
            Ok(review) => review,
            Err(answer) => return Ok(encode_review(answer)),
        };
        // Pinning first: a pod it refuses needs no lookups.
        let nodes = match &self.pinning {
            Some(gangs) => match pin_decision(&**gangs, &pod).await {
                Ok(PinDecision::Pin(nodes)) => Some(nodes),
                Ok(PinDecision::Allow) => None,
                // controller-runtime's `admission.Denied`: 403 Forbidden.
                Ok(PinDecision::Deny(reason)) => return Ok(encode_review(deny(response, Denial::forbidden(reason)))),
                // Without the Gang nothing safe can be decided; refusing lets the Job controller try again.
                Err(message) => return Ok(encode_review(errored(response, 500, &message))),
            },
            None => None,
        };
        let mut patched = raw.clone();
        if let Err(denial) = exclusive::mutate(&*self.reads, &pod, &mut patched).await {
            return Ok(encode_review(deny(response, denial)));
        }
        if let Some(nodes) = nodes {
            pin(&mut patched, &nodes);
        }
        let patch = json_patch::diff(&raw, &patched);
        let answer = if patch.0.is_empty() {
            response
        } else {
            match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => errored(response, 500, &e.to_string()),
            }
        };
        Ok(encode_review(answer))
    }

    /// `vpod.kb.io`: answers one AdmissionReview (the raw request body).
    pub async fn validate(&self, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let PodReview { response, pod, .. } = match decode(body)? {
            Ok(review) => review,
            Err(answer) => return Ok(encode_review(answer)),
        };
        Ok(encode_review(match exclusive::validate(&*self.reads, &pod).await {
            Ok(()) => response,
            Err(denial) => deny(response, denial),
        }))
    }
}

/// The pinning decision for a pod, reading its JobSet's Gang; `Err` when the Gang cannot be read.
async fn pin_decision(gangs: &dyn GangLookup, pod: &Pod) -> Result<PinDecision, String> {
    // Bound at creation: the scheduler is not involved, nothing to pin.
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
        return Ok(PinDecision::Allow);
    }
    // The objectSelector sends only JobSet pods; anything else passes unchanged.
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(jobset) = pod.metadata.labels.as_ref().and_then(|l| l.get(keys::JOBSET_NAME)) else {
        return Ok(PinDecision::Allow);
    };
    let gang = gangs.get(&namespace, jobset).await.map_err(|e| format!("reading gang {namespace}/{jobset}: {e}"))?;
    Ok(decide(pod, gang.as_ref()))
}

#[derive(Clone)]
struct PodState {
    webhooks: Arc<PodWebhooks>,
    limits: Limits,
}

/// `POST /mutate--v1-pod` and `POST /validate--v1-pod`.
pub fn router(webhooks: PodWebhooks, limits: Limits) -> Router {
    Router::new()
        .route(MUTATE_POD_PATH, post(mutate))
        .route(VALIDATE_POD_PATH, post(validate))
        .with_state(PodState { webhooks: Arc::new(webhooks), limits })
}

async fn mutate(State(state): State<PodState>, request: Request) -> Response {
    let webhooks = state.webhooks.clone();
    serve_review(state.limits, request, move |body| async move { webhooks.mutate(&body).await }).await
}

async fn validate(State(state): State<PodState>, request: Request) -> Response {
    let webhooks = state.webhooks.clone();
    serve_review(state.limits, request, move |body| async move { webhooks.validate(&body).await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extender::slots::tests::{gang_object, jobset_pod};
    use muster_api::gang::GangPhase;

    fn raw(pod: &Pod) -> Value {
        serde_json::to_value(pod).expect("pod json")
    }

    fn pin_copy(raw: &Value, nodes: &[String]) -> Value {
        let mut out = raw.clone();
        pin(&mut out, nodes);
        out
    }

    #[test]
    fn pods_of_admitted_gangs_are_pinned_to_their_slot() {
        let gang = gang_object(
            "ml",
            "train",
            GangPhase::Admitted,
            &[("workers", 0, 0, "gpu-3"), ("workers", 1, 0, "gpu-1"), ("workers", 1, 1, "gpu-2")],
        );
        let pod = jobset_pod("ml", "train", "workers", "1", Some("0"));
        assert_eq!(decide(&pod, Some(&gang)), PinDecision::Pin(vec!["gpu-1".into()]));
        let nonindexed = jobset_pod("ml", "train", "workers", "1", None);
        assert_eq!(decide(&nonindexed, Some(&gang)), PinDecision::Pin(vec!["gpu-1".into(), "gpu-2".into()]));
        assert_eq!(decide(&pod, None), PinDecision::Allow, "no Gang: not gang-managed");
        let pending = gang_object("ml", "train", GangPhase::Pending, &[]);
        assert_eq!(
            decide(&pod, Some(&pending)),
            PinDecision::Deny(
                "gang ml/train is Pending, not admitted: its pods are created once admission places it".into()
            )
        );
        let finished = gang_object("ml", "train", GangPhase::Finished, &[("workers", 1, 0, "gpu-1")]);
        assert_eq!(decide(&pod, Some(&finished)), PinDecision::Allow);
        let other = jobset_pod("ml", "train", "workers", "5", Some("0"));
        assert_eq!(
            decide(&other, Some(&gang)),
            PinDecision::Deny("gang ml/train (Admitted) has no slot workers-5/0 in its placement".into())
        );
        assert!(matches!(decide(&jobset_pod("ml", "train", "w", "?", None), Some(&gang)), PinDecision::Deny(_)));
        assert_eq!(decide(&Pod::default(), Some(&gang)), PinDecision::Allow);
    }

    #[test]
    fn the_pin_is_anded_into_every_required_term_and_idempotent() {
        let node = vec!["gpu-1".to_owned()];
        let requirement = json!({"key": "metadata.name", "operator": "In", "values": ["gpu-1"]});
        let bare = raw(&jobset_pod("ml", "t", "w", "0", Some("0")));
        let pinned = pin_copy(&bare, &node);
        let required = &pinned["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(required["nodeSelectorTerms"], json!([{"matchFields": [requirement]}]));
        assert_eq!(pinned["metadata"]["annotations"][keys::RESERVED_NODE], "gpu-1");
        assert_eq!(pin_copy(&pinned, &node), pinned, "pinning twice changes nothing");
        // The pinned object is still a Pod.
        serde_json::from_value::<Pod>(pinned).expect("still a pod");

        let mut with_affinity = bare.clone();
        with_affinity["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                                  {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]}]}},
            "podAntiAffinity": {"x-unknown": 1}});
        let pinned = pin_copy(&with_affinity, &node);
        let terms = &pinned["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        for term in terms.as_array().expect("terms") {
            assert_eq!(term["matchFields"], json!([requirement]));
            assert_eq!(term["matchExpressions"].as_array().map(Vec::len), Some(1));
        }
        assert_eq!(pinned["spec"]["affinity"]["podAntiAffinity"], json!({"x-unknown": 1}), "unknown fields kept");

        // Several nodes: one requirement, no annotation.
        let two = vec!["a".to_owned(), "b".to_owned()];
        let pinned = pin_copy(&bare, &two);
        assert!(pinned["metadata"]["annotations"].get(keys::RESERVED_NODE).is_none());
        // Garbage where objects belong is replaced rather than panicking.
        let mut odd = bare.clone();
        odd["spec"]["affinity"] = json!("nope");
        odd["metadata"]["annotations"] = json!(3);
        let pinned = pin_copy(&odd, &node);
        assert_eq!(pinned["metadata"]["annotations"][keys::RESERVED_NODE], "gpu-1");
    }
}
