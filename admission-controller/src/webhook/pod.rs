//! Pod pinning: the placement mode for clusters whose scheduler cannot be extended (managed control planes). On pod
//! CREATE, a pod of an admitted gang gets required node affinity `metadata.name In [<its reserved node>]` (and the
//! `muster.dev/reserved-node` annotation), so the stock kube-scheduler can put it nowhere else.
//!
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
//! The webhook configuration selects only pods with the `jobset-name` label (`objectSelector`), so other pods never
//! reach it and its `failurePolicy: Fail` cannot block them.

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
use serde_json::{Map, Value, json};

use super::http::{Limits, serve_review};
use super::review::{ReviewError, encode_review, errored};
use crate::extender::slots::{GangRecord, Steering, no_slot, not_admitted, pod_slot, unlabelled};

pub const PIN_PATH: &str = "/mutate--v1-pod";

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

/// The JSON patch that pins the pod `raw` (as it arrived) to `nodes`: the requirement is added to every required
/// node-selector term (terms are ORed, so each must carry it), or as the only term; with one node, the
/// `muster.dev/reserved-node` annotation names it. Already pinned: an empty patch, so reinvocation is harmless.
pub fn pin_patch(raw: &Value, nodes: &[String]) -> json_patch::Patch {
    let requirement = json!({"key": "metadata.name", "operator": "In", "values": nodes});
    let mut pinned = raw.clone();
    let path = ["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"];
    with_object_at(&mut pinned, &path, |required| {
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
        with_object_at(&mut pinned, &["metadata", "annotations"], |annotations| {
            annotations.insert(keys::RESERVED_NODE.to_owned(), json!(node));
        });
    }
    json_patch::diff(raw, &pinned)
}

/// Runs `f` on the object at `path` under `value`, creating objects on the way and replacing what is not one.
fn with_object_at(value: &mut Value, path: &[&str], f: impl FnOnce(&mut Map<String, Value>)) {
    let mut map = match std::mem::take(value) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    match path.split_first() {
        None => f(&mut map),
        Some((key, rest)) => with_object_at(map.entry(*key).or_insert(Value::Null), rest, f),
    }
    *value = Value::Object(map);
}

/// Answers one AdmissionReview for a pod.
pub async fn review(gangs: &dyn GangLookup, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
    let value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value.clone()).map_err(ReviewError::NotAReview)?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let response = AdmissionResponse::from(&request);
    let kind = &request.kind;
    if !(kind.group.is_empty() && kind.kind == "Pod") {
        let message = format!("expected a Pod but got a {}/{} {}", kind.group, kind.version, kind.kind);
        return Ok(encode_review(errored(response, 400, &message)));
    }
    let raw = value.pointer("/request/object").filter(|o| !o.is_null());
    let (Operation::Create, Some(raw)) = (&request.operation, raw) else { return Ok(encode_review(response)) };
    // A pod our types cannot read is one the API server will reject with a better message.
    let Ok(mut pod) = serde_json::from_value::<Pod>(raw.clone()) else { return Ok(encode_review(response)) };
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace.clone_from(&request.namespace);
    }
    // Bound at creation: the scheduler is not involved, nothing to pin.
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
        return Ok(encode_review(response));
    }
    // The objectSelector sends only JobSet pods; anything else passes unchanged.
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(jobset) = pod.metadata.labels.as_ref().and_then(|l| l.get(keys::JOBSET_NAME)).cloned() else {
        return Ok(encode_review(response));
    };
    let gang = match gangs.get(&namespace, &jobset).await {
        Ok(gang) => gang,
        // Without the Gang nothing safe can be decided; refusing lets the Job controller try again.
        Err(e) => {
            let message = format!("reading gang {namespace}/{jobset}: {e}");
            return Ok(encode_review(errored(response, 500, &message)));
        }
    };
    let answer = match decide(&pod, gang.as_ref()) {
        PinDecision::Allow => response,
        // controller-runtime's `admission.Denied`: 403 Forbidden.
        PinDecision::Deny(reason) => {
            let mut denied = response.deny(reason);
            denied.result.code = 403;
            denied.result.reason = "Forbidden".into();
            denied
        }
        PinDecision::Pin(nodes) => {
            let patch = pin_patch(raw, &nodes);
            if patch.0.is_empty() {
                response
            } else {
                match response.clone().with_patch(patch) {
                    Ok(patched) => patched,
                    Err(e) => errored(response, 500, &e.to_string()),
                }
            }
        }
    };
    Ok(encode_review(answer))
}

#[derive(Clone)]
struct PinState {
    gangs: Arc<dyn GangLookup>,
    limits: Limits,
}

/// `POST /mutate--v1-pod`.
pub fn router(gangs: Arc<dyn GangLookup>, limits: Limits) -> Router {
    Router::new().route(PIN_PATH, post(pin)).with_state(PinState { gangs, limits })
}

async fn pin(State(state): State<PinState>, request: Request) -> Response {
    let gangs = state.gangs.clone();
    serve_review(state.limits, request, move |body| async move { review(&*gangs, &body).await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extender::slots::tests::{gang_object, jobset_pod};
    use muster_api::gang::GangPhase;

    fn raw(pod: &Pod) -> Value {
        serde_json::to_value(pod).expect("pod json")
    }

    fn apply(raw: &Value, patch: &json_patch::Patch) -> Value {
        let mut out = raw.clone();
        json_patch::patch(&mut out, patch).expect("patch applies");
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
        let pinned = apply(&bare, &pin_patch(&bare, &node));
        let required = &pinned["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(required["nodeSelectorTerms"], json!([{"matchFields": [requirement]}]));
        assert_eq!(pinned["metadata"]["annotations"][keys::RESERVED_NODE], "gpu-1");
        assert!(pin_patch(&pinned, &node).0.is_empty(), "pinning twice changes nothing");
        // The pinned object is still a Pod.
        serde_json::from_value::<Pod>(pinned).expect("still a pod");

        let mut with_affinity = bare.clone();
        with_affinity["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                                  {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]}]}},
            "podAntiAffinity": {"x-unknown": 1}});
        let pinned = apply(&with_affinity, &pin_patch(&with_affinity, &node));
        let terms = &pinned["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        for term in terms.as_array().expect("terms") {
            assert_eq!(term["matchFields"], json!([requirement]));
            assert_eq!(term["matchExpressions"].as_array().map(Vec::len), Some(1));
        }
        assert_eq!(pinned["spec"]["affinity"]["podAntiAffinity"], json!({"x-unknown": 1}), "unknown fields kept");

        // Several nodes: one requirement, no annotation.
        let two = vec!["a".to_owned(), "b".to_owned()];
        let pinned = apply(&bare, &pin_patch(&bare, &two));
        assert!(pinned["metadata"]["annotations"].get(keys::RESERVED_NODE).is_none());
        // Garbage where objects belong is replaced rather than panicking.
        let mut odd = bare.clone();
        odd["spec"]["affinity"] = json!("nope");
        odd["metadata"]["annotations"] = json!(3);
        let pinned = apply(&odd, &pin_patch(&odd, &node));
        assert_eq!(pinned["metadata"]["annotations"][keys::RESERVED_NODE], "gpu-1");
    }
}
