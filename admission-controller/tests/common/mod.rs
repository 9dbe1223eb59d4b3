//! Shared fixtures for the webhook tests: AdmissionReviews, JobSets, and calling the router without a network.

#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use muster_admission::FeatureGates;
use muster_admission::webhook::http::{Limits, router};
use muster_admission::webhook::review::{NoPvcs, PvcSource, Webhooks};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const MUTATE: &str = "/mutate-jobset-x-k8s-io-v1alpha2-jobset";
pub const VALIDATE: &str = "/validate-jobset-x-k8s-io-v1alpha2-jobset";

pub fn app() -> Router {
    app_with(FeatureGates::default(), Arc::new(NoPvcs))
}

pub fn app_with(gates: FeatureGates, pvcs: Arc<dyn PvcSource>) -> Router {
    router(Arc::new(Webhooks::new(gates, pvcs)), Limits::default())
}

/// POSTs `body` to `path` and returns the status and the body.
pub async fn post(app: Router, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let mut request = Request::post(path);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let request = request.body(Body::from(body)).expect("request");
    let response = app.oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, body)
}

pub async fn post_review(app: Router, path: &str, review: &Value) -> (StatusCode, Value) {
    let (status, body) = post(app, path, Some("application/json"), serde_json::to_vec(review).expect("json")).await;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, value)
}

pub fn rjob(name: &str, replicas: i32, completions: i32) -> Value {
    json!({
        "name": name,
        "replicas": replicas,
        "groupName": "default",
        "template": {"spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            "template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]
            }}
        }}
    })
}

/// A valid, defaulted JobSet.
pub fn jobset() -> Value {
    json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "js", "namespace": "default"},
        "spec": {
            "successPolicy": {"operator": "All"},
            "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
            "replicatedJobs": [rjob("leader", 1, 1), rjob("workers", 2, 2)]
        }
    })
}

pub fn review(operation: &str, object: Value, old_object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "kind": "JobSet"},
            "resource": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "resource": "jobsets"},
            "requestKind": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "kind": "JobSet"},
            "requestResource": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "resource": "jobsets"},
            "name": "js",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:masters"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Checks the shape every answered review must have, and returns its `response`.
pub fn well_formed_response(review: &Value) -> &Value {
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let response = &review["response"];
    assert!(response["uid"].is_string(), "{review}");
    let allowed = response["allowed"].as_bool().expect("allowed is a bool");
    if !allowed {
        let code = response["status"]["code"].as_u64().expect("a denial has a code");
        assert!((400..600).contains(&code), "{review}");
    }
    if let Some(patch) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch", "{review}");
        let bytes: k8s_openapi::ByteString = serde_json::from_value(patch.clone()).expect("patch is base64");
        let _: json_patch::Patch = serde_json::from_slice(&bytes.0).expect("patch is a JSON patch");
    }
    response
}

/// Applies the review response's patch to `object`.
pub fn apply_patch(response: &Value, object: &Value) -> Value {
    let bytes: k8s_openapi::ByteString = serde_json::from_value(response["patch"].clone()).expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).expect("JSON patch");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).expect("patch applies");
    patched
}
