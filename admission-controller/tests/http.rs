//! The webhook routes end to end, through the axum router without a network.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use muster_admission::FeatureGates;
use muster_admission::webhook::review::StaticPvcs;
use serde_json::{Value, json};

#[tokio::test]
async fn mutate_returns_a_patch_with_the_defaults_that_keeps_unknown_fields() {
    let object = json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"generateName": "train-", "namespace": "default"},
        "spec": {
            "x-newer-field": {"keep": "me"},
            "failurePolicy": {"rules": [{"action": "FailJobSet"}]},
            "replicatedJobs": [{"name": "w", "replicas": 1, "template": {"spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "i", "x-unknown": 1}]}}
            }}}]
        }
    });
    let (status, review) = post_review(app(), MUTATE, &review("CREATE", object.clone(), Value::Null)).await;
    assert_eq!(status, StatusCode::OK);
    let response = well_formed_response(&review);
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    let patched = apply_patch(response, &object);
    let mut expected = object.clone();
    expected["spec"]["successPolicy"] = json!({"operator": "All"});
    expected["spec"]["startupPolicy"] = json!({"startupPolicyOrder": "AnyOrder"});
    expected["spec"]["network"] = json!({"enableDNSHostnames": true, "publishNotReadyAddresses": true});
    expected["spec"]["failurePolicy"]["rules"][0]["name"] = json!("failurePolicyRule0");
    expected["spec"]["replicatedJobs"][0]["template"]["spec"]["completionMode"] = json!("Indexed");
    expected["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    assert_eq!(patched, expected);
}

#[tokio::test]
async fn mutate_leaves_defaulted_and_undecodable_objects_alone() {
    let (_, r) = post_review(app(), MUTATE, &review("CREATE", jobset(), Value::Null)).await;
    let response = well_formed_response(&r);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{r}");
    // Schema validation, not the defaulter, should explain this one.
    let broken = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js"},
        "spec": {"replicatedJobs": [{"name": "w"}]}});
    let (_, r) = post_review(app(), MUTATE, &review("CREATE", broken, Value::Null)).await;
    assert_eq!(well_formed_response(&r)["allowed"], true);
    assert!(r["response"].get("patch").is_none());
}

#[tokio::test]
async fn validate_allows_a_valid_jobset() {
    let (status, r) = post_review(app(), VALIDATE, &review("CREATE", jobset(), Value::Null)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(well_formed_response(&r)["allowed"], true);
}

#[tokio::test]
async fn validate_denies_with_a_422_invalid_status_like_apierrors_new_invalid() {
    let mut object = jobset();
    object["spec"]["replicatedJobs"][1]["dependsOn"] = json!([{"name": "nope", "status": "Ready"}]);
    object["spec"]["managedBy"] = json!("foo");
    let (status, r) = post_review(app(), VALIDATE, &review("CREATE", object, Value::Null)).await;
    assert_eq!(status, StatusCode::OK, "denials are answered reviews, not HTTP errors");
    let response = well_formed_response(&r);
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"],
        json!({
            "status": "Failure",
            "code": 422,
            "reason": "Invalid",
            "message": "JobSet.jobset.x-k8s.io \"js\" is invalid: [spec.managedBy: Invalid value: \"foo\": must be a domain-prefixed path (such as \"acme.io/foo\"), <nil>: Internal error: replicatedJob: workers cannot depend on replicatedJob: nope]",
            "details": {
                "name": "js",
                "group": "jobset.x-k8s.io",
                "kind": "JobSet",
                "causes": [
                    {"reason": "FieldValueInvalid", "message": "Invalid value: \"foo\": must be a domain-prefixed path (such as \"acme.io/foo\")", "field": "spec.managedBy"},
                    {"reason": "InternalError", "message": "Internal error: replicatedJob: workers cannot depend on replicatedJob: nope", "field": "<nil>"}
                ]
            }
        })
    );
}

#[tokio::test]
async fn validate_update_checks_immutability_and_allows_deletes() {
    let old = jobset();
    let mut new = jobset();
    new["spec"]["replicatedJobs"][0]["replicas"] = json!(5);
    let (_, r) = post_review(app(), VALIDATE, &review("UPDATE", new.clone(), old.clone())).await;
    let response = well_formed_response(&r);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("JobSet.jobset.x-k8s.io \"js\" is invalid: spec.replicatedJobs: Invalid value: [{"),
        "{message}"
    );
    assert!(message.ends_with(": field is immutable"), "{message}");

    new["spec"]["replicatedJobs"][0]["replicas"] = json!(1);
    new["spec"]["suspend"] = json!(true);
    let (_, r) = post_review(app(), VALIDATE, &review("UPDATE", new, old.clone())).await;
    assert_eq!(well_formed_response(&r)["allowed"], true);

    let (_, r) = post_review(app(), VALIDATE, &review("DELETE", Value::Null, old)).await;
    assert_eq!(well_formed_response(&r)["allowed"], true);
}

#[tokio::test]
async fn validate_reads_existing_pvcs_through_the_lookup() {
    let mut object = jobset();
    object["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    object["spec"]["volumeClaimPolicies"] = json!([{
        "templates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        "retentionPolicy": {"whenDeleted": "Delete"}
    }]);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-js", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    let pvcs = StaticPvcs(BTreeMap::from([(("default".to_owned(), "data-js".to_owned()), pvc)]));
    let app = app_with(FeatureGates::default(), Arc::new(pvcs));
    let (_, r) = post_review(app.clone(), VALIDATE, &review("CREATE", object.clone(), Value::Null)).await;
    let response = well_formed_response(&r);
    assert_eq!(
        response["status"]["message"],
        "JobSet.jobset.x-k8s.io \"js\" is invalid: spec.volumeClaimPolicies[0].retentionPolicy.whenDeleted: Invalid value: \"Delete\": retentionPolicy must be retain when PVC exists"
    );
    // Without the PVC the same JobSet is fine.
    let (_, r) = post_review(common::app(), VALIDATE, &review("CREATE", object, Value::Null)).await;
    assert_eq!(well_formed_response(&r)["allowed"], true);
}

#[tokio::test]
async fn an_undecodable_object_is_denied_with_400() {
    let broken = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js"},
        "spec": {"replicatedJobs": "not a list"}});
    let (status, r) = post_review(app(), VALIDATE, &review("CREATE", broken, Value::Null)).await;
    assert_eq!(status, StatusCode::OK);
    let response = well_formed_response(&r);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    assert!(response["status"]["message"].as_str().unwrap_or_default().starts_with("couldn't decode object: "), "{r}");
}

#[tokio::test]
async fn malformed_requests_get_http_errors() {
    let (status, _) = post(app(), VALIDATE, Some("application/json"), b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(app(), VALIDATE, Some("application/json"), br#"{"kind":"AdmissionReview"}"#.to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(app(), MUTATE, Some("text/plain"), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = post(app(), MUTATE, None, b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = post(app(), "/nowhere", Some("application/json"), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let big = vec![b' '; 8 * 1024 * 1024];
    let (status, _) = post(app(), VALIDATE, Some("application/json"), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn content_type_parameters_are_accepted() {
    let body = serde_json::to_vec(&review("CREATE", jobset(), Value::Null)).expect("json");
    let (status, _) = post(app(), VALIDATE, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn other_kinds_are_refused() {
    let mut r = review(
        "CREATE",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}),
        Value::Null,
    );
    r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    for path in [MUTATE, VALIDATE] {
        let (_, answer) = post_review(app(), path, &r).await;
        let response = well_formed_response(&answer);
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 400);
        assert_eq!(response["status"]["message"], "expected a JobSet but got a /v1 Pod");
    }
}
