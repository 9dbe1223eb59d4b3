//! Whatever arrives at the webhook routes — random bytes, random JSON, plausible AdmissionReviews with random
//! objects — the answer is a well-formed AdmissionReview or an HTTP 4xx, and never a panic.

mod common;

use axum::http::StatusCode;
use common::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Either a well-formed review or a client error.
fn check_answer(status: StatusCode, body: &[u8]) -> Result<(), TestCaseError> {
    if status == StatusCode::OK {
        let review: Value =
            serde_json::from_slice(body).map_err(|e| TestCaseError::fail(format!("200 without JSON: {e}")))?;
        well_formed_response(&review);
    } else {
        prop_assert!(status.is_client_error(), "unexpected status {status}: {}", String::from_utf8_lossy(body));
    }
    Ok(())
}

fn call_both(body: Vec<u8>) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        for path in [MUTATE, VALIDATE] {
            let (status, answer) = post(app(), path, Some("application/json"), body.clone()).await;
            check_answer(status, &answer)?;
        }
        Ok(())
    })
}

const KEYS: &[&str] = &[
    "name",
    "replicas",
    "template",
    "spec",
    "replicatedJobs",
    "failurePolicy",
    "rules",
    "action",
    "metadata",
    "network",
    "subdomain",
    "dependsOn",
    "status",
    "coordinator",
    "replicatedJob",
    "jobIndex",
    "podIndex",
    "volumeClaimPolicies",
    "templates",
    "retentionPolicy",
    "whenDeleted",
    "completionMode",
    "completions",
    "parallelism",
    "groupName",
    "managedBy",
    "successPolicy",
    "operator",
    "targetReplicatedJobs",
    "conditions",
    "type",
    "suspend",
    "containers",
    "volumeMounts",
    "volumes",
    "restartStrategy",
    "onJobFailureReasons",
    "generateName",
    "namespace",
    "uid",
    "request",
    "object",
    "oldObject",
    "operation",
    "kind",
    "apiVersion",
];

const WORDS: &[&str] = &[
    "",
    "Indexed",
    "NonIndexed",
    "OnFailure",
    "JobSet",
    "leader",
    "workers",
    "RestartJob",
    "InPlaceRestart",
    "Retain",
    "Delete",
    "All",
    "Any",
    "True",
    "Completed",
    "CREATE",
    "UPDATE",
    "DELETE",
    "a.io/b",
    "Ready",
    "FailJobSet",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => "[a-zA-Z]{0,8}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(2), Just(1024), Just(1025), Just(2_147_483_647)]
            .prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// What a field holds, so most generated edits are well-typed and reach the validation rules rather than the
/// decoder.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Int,
    Any,
}

/// Places where a random value does the most damage to an otherwise valid JobSet.
const POINTERS: &[(&str, Kind)] = &[
    ("", Kind::Any),
    ("/metadata", Kind::Any),
    ("/metadata/name", Kind::Str),
    ("/metadata/generateName", Kind::Str),
    ("/spec", Kind::Any),
    ("/spec/replicatedJobs", Kind::Any),
    ("/spec/replicatedJobs/0", Kind::Any),
    ("/spec/replicatedJobs/1/name", Kind::Str),
    ("/spec/replicatedJobs/0/replicas", Kind::Int),
    ("/spec/replicatedJobs/1/replicas", Kind::Int),
    ("/spec/replicatedJobs/1/dependsOn", Kind::Any),
    ("/spec/replicatedJobs/0/template", Kind::Any),
    ("/spec/replicatedJobs/0/template/spec", Kind::Any),
    ("/spec/replicatedJobs/0/template/spec/completions", Kind::Int),
    ("/spec/replicatedJobs/0/template/spec/parallelism", Kind::Int),
    ("/spec/replicatedJobs/1/template/spec/completions", Kind::Int),
    ("/spec/replicatedJobs/1/template/spec/completionMode", Kind::Str),
    ("/spec/replicatedJobs/0/template/spec/template/spec", Kind::Any),
    ("/spec/replicatedJobs/0/groupName", Kind::Str),
    ("/spec/replicatedJobs/1/groupName", Kind::Str),
    ("/spec/network", Kind::Any),
    ("/spec/network/subdomain", Kind::Str),
    ("/spec/failurePolicy", Kind::Any),
    ("/spec/failurePolicy/rules/0/name", Kind::Str),
    ("/spec/failurePolicy/rules/0/targetReplicatedJobs/0", Kind::Str),
    ("/spec/failurePolicy/rules/0/onJobFailureReasons/0", Kind::Str),
    ("/spec/successPolicy", Kind::Any),
    ("/spec/successPolicy/targetReplicatedJobs", Kind::Any),
    ("/spec/coordinator", Kind::Any),
    ("/spec/coordinator/replicatedJob", Kind::Str),
    ("/spec/coordinator/jobIndex", Kind::Int),
    ("/spec/coordinator/podIndex", Kind::Int),
    ("/spec/managedBy", Kind::Str),
    ("/spec/volumeClaimPolicies", Kind::Any),
    ("/spec/volumeClaimPolicies/0/templates/0/metadata/name", Kind::Str),
    ("/spec/volumeClaimPolicies/0/retentionPolicy", Kind::Any),
    ("/spec/suspend", Kind::Any),
    ("/status", Kind::Any),
];

fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    if pointer.is_empty() {
        *target = value;
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last.to_owned(), value);
        }
        Some(Value::Array(items)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

/// The base JobSet with every optional policy set, so edits reach the deeper rules.
fn rich_jobset() -> Value {
    let mut js = jobset();
    js["spec"]["coordinator"] = json!({"replicatedJob": "workers", "jobIndex": 1, "podIndex": 1});
    js["spec"]["failurePolicy"] = json!({"maxRestarts": 2, "rules": [
        {"name": "r", "action": "RestartJobSet", "targetReplicatedJobs": ["leader"], "onJobFailureReasons": ["PodFailurePolicy"]}
    ]});
    js["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    js["spec"]["volumeClaimPolicies"] = json!([{
        "templates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}],
        "retentionPolicy": {"whenDeleted": "Retain"}
    }]);
    js
}

fn string_value() -> impl Strategy<Value = Value> {
    prop_oneof![prop::sample::select(WORDS).prop_map(Value::from), "[a-zA-Z0-9._/-]{0,70}".prop_map(Value::from)]
}

fn int_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(2), Just(64), Just(1025), Just(2_147_483_647)]
            .prop_map(Value::from),
        (-5i64..2000).prop_map(Value::from),
    ]
}

fn edit() -> impl Strategy<Value = (&'static str, Value)> {
    prop::sample::select(POINTERS).prop_flat_map(|(pointer, kind)| {
        let value = match kind {
            Kind::Str => prop_oneof![4 => string_value(), 1 => json_value()].boxed(),
            Kind::Int => prop_oneof![4 => int_value(), 1 => json_value()].boxed(),
            Kind::Any => json_value().boxed(),
        };
        (Just(pointer), value)
    })
}

/// A valid JobSet with a few values written somewhere in it.
fn jobset_variant() -> impl Strategy<Value = Value> {
    (any::<bool>(), prop::collection::vec(edit(), 0..4)).prop_map(|(rich, edits)| {
        let mut js = if rich { rich_jobset() } else { jobset() };
        for (pointer, value) in edits {
            set_pointer(&mut js, pointer, value);
        }
        js
    })
}

fn operation() -> impl Strategy<Value = Value> {
    prop_oneof![
        9 => prop::sample::select(vec!["CREATE", "UPDATE", "DELETE", "CONNECT"]).prop_map(Value::from),
        1 => json_value(),
    ]
}

fn plausible_review() -> impl Strategy<Value = Value> {
    (operation(), jobset_variant(), prop_oneof![Just(Value::Null), jobset_variant()], prop::bool::weighted(0.9))
        .prop_map(|(op, object, old, keep_uid)| {
            let mut r = review("CREATE", object, old);
            r["request"]["operation"] = op;
            if !keep_uid {
                set_pointer(&mut r, "/request/uid", Value::from(7));
            }
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        call_both(body)?;
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        call_both(serde_json::to_vec(&value).expect("json"))?;
    }

    #[test]
    fn reviews_with_arbitrary_parts(value in json_value(), pointer in prop::sample::select(vec![
        "/request", "/request/object", "/request/oldObject", "/request/kind", "/request/userInfo", "/request/uid",
        "/request/object/spec", "/request/name", "/request/namespace", "/apiVersion",
    ])) {
        let mut r = review("UPDATE", jobset(), jobset());
        set_pointer(&mut r, pointer, value);
        call_both(serde_json::to_vec(&r).expect("json"))?;
    }

    #[test]
    fn plausible_reviews(r in plausible_review()) {
        call_both(serde_json::to_vec(&r).expect("json"))?;
    }

    #[test]
    fn truncated_reviews(r in plausible_review(), cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&r).expect("json");
        let cut = cut.index(bytes.len().max(1));
        call_both(bytes[..cut.min(bytes.len())].to_vec())?;
    }
}

#[test]
fn a_plausible_review_is_answered_not_rejected() {
    // Sanity check of the generators' base: the unmodified review gets a 200.
    let body = serde_json::to_vec(&review("CREATE", jobset(), json!(null))).expect("json");
    let (status, _) = runtime().block_on(post(app(), VALIDATE, Some("application/json"), body));
    assert_eq!(status, StatusCode::OK);
}
