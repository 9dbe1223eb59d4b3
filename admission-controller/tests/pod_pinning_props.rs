//! The pod webhook routes (`/mutate--v1-pod`, `/validate--v1-pod`): a pinned gang pod comes back with a patch that
//! pins it, a pod of a gang that is not admitted is denied with 403, a gang pod with exclusive placement gets both
//! mutations, and whatever else arrives — random bytes, random JSON, plausible AdmissionReviews with random pods —
//! is answered with a well-formed AdmissionReview or an HTTP 4xx, never a panic.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use common::{apply_patch, post, post_review, well_formed_response};
use k8s_openapi::api::core::v1::Pod;
use muster_admission::webhook::exclusive::StaticReads;
use muster_admission::webhook::http::Limits;
use muster_admission::webhook::pod::{MUTATE_POD_PATH, PodWebhooks, StaticGangs, VALIDATE_POD_PATH, router};
use muster_api::Gang;
use muster_api::gang::{GangPhase, GangSpec, GangStatus, SlotPlacement};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn gang(name: &str, phase: GangPhase, node: &str) -> Gang {
    let mut gang = Gang::new(name, GangSpec { queue: "default".into(), ..GangSpec::default() });
    gang.metadata.namespace = Some("ml".into());
    gang.status = Some(GangStatus {
        phase,
        placement: vec![
            SlotPlacement { pod_set: "workers".into(), job_index: 0, pod_index: 0, node: node.into() },
            SlotPlacement { pod_set: "workers".into(), job_index: 0, pod_index: 1, node: "gpu-4".into() },
        ],
        ..GangStatus::default()
    });
    gang
}

fn app() -> Router {
    let gangs = BTreeMap::from([
        (("ml".to_owned(), "train".to_owned()), gang("train", GangPhase::Admitted, "gpu-3")),
        (("ml".to_owned(), "queued".to_owned()), gang("queued", GangPhase::Pending, "gpu-3")),
    ]);
    // The gang's leader, bound to its reserved node, for the follower lookups of exclusive placement.
    let leader: Pod = serde_json::from_value({
        let mut leader = exclusive(pod("train"));
        leader["metadata"]["name"] = json!("train-workers-0-0-abcde");
        leader["metadata"]["namespace"] = json!("ml");
        leader["spec"]["nodeName"] = json!("gpu-3");
        leader
    })
    .expect("leader pod");
    let reads = StaticReads {
        pods: vec![leader],
        nodes: BTreeMap::from([("gpu-3".to_owned(), BTreeMap::from([(RACK.to_owned(), "rack-1".to_owned())]))]),
    };
    let webhooks = PodWebhooks { reads: Arc::new(reads), pinning: Some(Arc::new(StaticGangs(gangs))) };
    router(webhooks, Limits::default())
}

const RACK: &str = "example.com/rack";

/// `pod` as a pod of a JobSet with `exclusive-topology: example.com/rack`, as the JobSet controller stamps it.
fn exclusive(mut pod: Value) -> Value {
    let index = pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"].clone();
    pod["metadata"]["annotations"] = json!({"jobset.sigs.k8s.io/jobset-name": "train",
        "alpha.jobset.sigs.k8s.io/exclusive-topology": RACK, "batch.kubernetes.io/job-completion-index": index});
    pod["metadata"]["labels"]["jobset.sigs.k8s.io/job-key"] = json!("key-0");
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "train-workers-0", "uid": "job-uid", "controller": true}]);
    pod["spec"]["priority"] = json!(0);
    pod
}

fn pod(jobset: &str) -> Value {
    json!({"metadata": {"generateName": format!("{jobset}-workers-0-0-"),
        "labels": {"jobset.sigs.k8s.io/jobset-name": jobset, "jobset.sigs.k8s.io/replicatedjob-name": "workers",
                   "jobset.sigs.k8s.io/job-index": "0", "batch.kubernetes.io/job-completion-index": "0"}},
      "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}})
}

/// A pod CREATE review as the API server sends it (the namespace in the request, not in the object).
fn review(object: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0b8e5c1a-2f3d-4c5b-9a6e-7d8f9a0b1c2d",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ml", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
        "object": object, "oldObject": null, "dryRun": false}})
}

#[tokio::test]
async fn admitted_gang_pods_are_pinned_and_waiting_ones_denied() {
    let object = pod("train");
    let (status, answer) = post_review(app(), MUTATE_POD_PATH, &review(object.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let response = well_formed_response(&answer);
    assert_eq!(response["allowed"], true);
    let pinned = apply_patch(response, &object);
    assert_eq!(
        pinned["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-3"]}]}])
    );
    assert_eq!(pinned["metadata"]["annotations"]["muster.dev/reserved-node"], "gpu-3");

    let (_, answer) = post_review(app(), MUTATE_POD_PATH, &review(pod("queued"))).await;
    let response = well_formed_response(&answer);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(
        response["status"]["message"],
        "gang ml/queued is Pending, not admitted: its pods are created once admission places it"
    );

    // Not a gang, not a JobSet pod, not a CREATE, not a Pod: unchanged.
    for object in [pod("unmanaged"), json!({"metadata": {"name": "p"}, "spec": {"containers": []}})] {
        let (_, answer) = post_review(app(), MUTATE_POD_PATH, &review(object)).await;
        let response = well_formed_response(&answer);
        assert_eq!((response["allowed"].clone(), response.get("patch")), (json!(true), None));
    }
    let mut update = review(pod("queued"));
    update["request"]["operation"] = json!("UPDATE");
    let (_, answer) = post_review(app(), MUTATE_POD_PATH, &update).await;
    assert_eq!(well_formed_response(&answer)["allowed"], true);
    let mut job = review(pod("train"));
    job["request"]["kind"] = json!({"group": "batch", "version": "v1", "kind": "Job"});
    let (_, answer) = post_review(app(), MUTATE_POD_PATH, &job).await;
    assert_eq!(well_formed_response(&answer)["status"]["code"], 400);
}

/// A gang with exclusive placement: the leader is pinned to its reserved node *and* gets upstream's pod
/// (anti-)affinity; the follower is pinned *and* selects its leader's rack. Neither mutation undoes the other.
#[tokio::test]
async fn gang_pods_with_exclusive_placement_get_both_mutations() {
    let leader = exclusive(pod("train"));
    let (_, answer) = post_review(app(), MUTATE_POD_PATH, &review(leader.clone())).await;
    let mutated = apply_patch(well_formed_response(&answer), &leader);
    let affinity = &mutated["spec"]["affinity"];
    let pinned = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-3"]}]}]);
    assert_eq!(affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"], pinned);
    let required = "requiredDuringSchedulingIgnoredDuringExecution";
    assert_eq!(affinity["podAffinity"][required][0]["topologyKey"], RACK);
    assert_eq!(
        affinity["podAntiAffinity"][required][0]["labelSelector"]["matchExpressions"][2]["values"],
        json!(["0"])
    );
    assert_eq!(mutated["metadata"]["labels"]["jobset.sigs.k8s.io/priority"], "0");

    let mut follower = exclusive(pod("train"));
    follower["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] = json!("1");
    follower["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] = json!("1");
    // Pinned to its own reserved node (gpu-4) and selecting its leader's rack: if gpu-4 is not in rack-1 (gang
    // placement does not honour exclusive-topology), the scheduler finds no node and the pod stays Pending.
    let (_, answer) = post_review(app(), MUTATE_POD_PATH, &review(follower.clone())).await;
    let mutated = apply_patch(well_formed_response(&answer), &follower);
    assert_eq!(mutated["spec"]["nodeSelector"], json!({RACK: "rack-1"}));
    assert_eq!(
        mutated["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-4"]}]}])
    );
    assert!(mutated["spec"]["affinity"].get("podAffinity").is_none(), "followers get no pod affinity");

    // vpod.kb.io: the follower as sent (no selector) is refused; as mutated, admitted.
    let (_, answer) = post_review(app(), VALIDATE_POD_PATH, &review(follower)).await;
    let response = well_formed_response(&answer);
    assert_eq!((response["allowed"].clone(), response["status"]["code"].clone()), (json!(false), json!(403)));
    assert_eq!(response["status"]["message"], "follower pod node selector not set");
    let (_, answer) = post_review(app(), VALIDATE_POD_PATH, &review(mutated)).await;
    assert_eq!(well_formed_response(&answer)["allowed"], true);
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(&["metadata", "labels", "annotations", "spec", "affinity", "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", "matchFields", "containers",
            "nodeName", "namespace", "jobset.sigs.k8s.io/jobset-name", "jobset.sigs.k8s.io/job-index",
            "batch.kubernetes.io/job-completion-index", "request", "object", "kind", "operation"][..])
            .prop_map(str::to_owned),
        1 => "[a-zA-Z]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(&["train", "queued", "0", "-3", "x", "CREATE", "Pod", ""][..]).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A well-formed review (returned) or a client error (`None`), from both routes.
fn check(body: Vec<u8>) -> Result<Option<Value>, TestCaseError> {
    let (status, answer) = runtime().block_on(post(app(), VALIDATE_POD_PATH, Some("application/json"), body.clone()));
    if status == StatusCode::OK {
        let review: Value =
            serde_json::from_slice(&answer).map_err(|e| TestCaseError::fail(format!("200 without JSON: {e}")))?;
        well_formed_response(&review);
    } else {
        prop_assert!(status.is_client_error(), "unexpected {status}: {}", String::from_utf8_lossy(&answer));
    }
    runtime().block_on(async {
        let (status, answer) = post(app(), MUTATE_POD_PATH, Some("application/json"), body).await;
        if status == StatusCode::OK {
            let review: Value =
                serde_json::from_slice(&answer).map_err(|e| TestCaseError::fail(format!("200 without JSON: {e}")))?;
            well_formed_response(&review);
            Ok(Some(review))
        } else {
            prop_assert!(status.is_client_error(), "unexpected {status}: {}", String::from_utf8_lossy(&answer));
            Ok(None)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(body)?;
    }

    #[test]
    fn random_json_never_panics(value in json_value()) {
        check(serde_json::to_vec(&value).expect("json"))?;
    }

    #[test]
    fn plausible_pods_never_panic(
        jobset in prop::sample::select(&["train", "queued", "other"][..]),
        exclusive_placement in any::<bool>(),
        edits in prop::collection::vec((prop::sample::select(&[
            "/metadata/labels/jobset.sigs.k8s.io~1job-index",
            "/metadata/labels/batch.kubernetes.io~1job-completion-index",
            "/metadata/annotations",
            "/metadata/labels",
            "/spec/affinity",
            "/spec/nodeName",
            "/spec",
            "/x-unknown",
        ][..]), json_value()), 0..4),
    ) {
        let mut object = if exclusive_placement { exclusive(pod(jobset)) } else { pod(jobset) };
        for (pointer, value) in edits {
            let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
            if let Some(Value::Object(map)) = object.pointer_mut(parent) {
                map.insert(last.replace("~1", "/"), value);
            }
        }
        // A patch, when there is one, applies to the object as sent.
        if let Some(review) = check(serde_json::to_vec(&review(object.clone())).expect("json"))?
            && review["response"].get("patch").is_some()
        {
            apply_patch(&review["response"], &object);
        }
    }
}
