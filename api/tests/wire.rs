//! Deliberate handling of fields the types do not know, of `null`, and of upstream defaults.

use muster_api::JobSet;
use muster_api::extender::{ExtenderArgs, ExtenderFilterResult, HostPriority};
use muster_api::jobset::{FailurePolicy, RestartStrategy};
use serde_json::json;

fn minimal_jobset() -> serde_json::Value {
    json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "js", "namespace": "ml"},
        "spec": {"replicatedJobs": [{"name": "w", "template": {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "busybox"}
        ]}}}}}]}
    })
}

#[test]
fn unknown_jobset_fields_are_ignored_not_rejected() {
    // A field from a newer upstream must not stop the controller from reading the object.
    let mut value = minimal_jobset();
    value["spec"]["someFutureField"] = json!({"enabled": true});
    value["spec"]["replicatedJobs"][0]["futureKnob"] = json!(3);
    let jobset: JobSet = serde_json::from_value(value).expect("unknown fields are tolerated");
    let back = serde_json::to_value(&jobset).expect("serialises");
    // ...and because the controller never writes spec, dropping them on re-serialisation is harmless.
    assert!(back["spec"].get("someFutureField").is_none());
    assert_eq!(back["spec"]["replicatedJobs"][0]["name"], "w");
}

#[test]
fn null_and_missing_optional_fields_read_the_same() {
    let mut with_nulls = minimal_jobset();
    with_nulls["spec"]["suspend"] = json!(null);
    with_nulls["spec"]["failurePolicy"] = json!(null);
    with_nulls["spec"]["replicatedJobs"][0]["replicas"] = json!(null);
    let a: JobSet = serde_json::from_value(with_nulls).expect("nulls read");
    let b: JobSet = serde_json::from_value(minimal_jobset()).expect("reads");
    assert_eq!(a.spec, b.spec);
}

#[test]
fn accessors_apply_upstream_defaults_for_objects_that_bypassed_defaulting() {
    let jobset: JobSet = serde_json::from_value(minimal_jobset()).expect("reads");
    let rjob = &jobset.spec.replicated_jobs[0];
    assert_eq!(rjob.replicas(), 1);
    assert_eq!(rjob.group_name(), "default");
    assert!(!jobset.suspended());
    assert!(jobset.managed_by_us());
    assert_eq!(FailurePolicy::default().restart_strategy(), RestartStrategy::Recreate);
    // replicas: 0 is meaningful and must not be defaulted away.
    let mut zero = minimal_jobset();
    zero["spec"]["replicatedJobs"][0]["replicas"] = json!(0);
    let zero: JobSet = serde_json::from_value(zero).expect("reads");
    assert_eq!(zero.spec.replicated_jobs[0].replicas(), 0);
}

#[test]
fn managed_by_another_controller_is_not_ours() {
    let mut value = minimal_jobset();
    value["spec"]["managedBy"] = json!("kueue.x-k8s.io/multikueue");
    let jobset: JobSet = serde_json::from_value(value).expect("reads");
    assert!(!jobset.managed_by_us());
}

#[test]
fn enums_reject_values_upstream_rejects() {
    let mut value = minimal_jobset();
    value["spec"]["failurePolicy"] = json!({"restartStrategy": "RestartEverything"});
    assert!(serde_json::from_value::<JobSet>(value).is_err());
}

#[test]
fn extender_args_accept_pascal_case_with_nulls_and_unknown_fields() {
    let args: ExtenderArgs = serde_json::from_value(json!({
        "Pod": {"metadata": {"name": "w-0", "namespace": "ml"}, "spec": {"containers": []}},
        "Nodes": null,
        "NodeNames": ["gpu-a1", "gpu-a2"],
        "SomethingNew": 1
    }))
    .expect("scheduler request reads");
    assert_eq!(args.candidate_names(), ["gpu-a1", "gpu-a2"]);
    assert_eq!(args.pod.and_then(|p| p.metadata.name), Some("w-0".to_string()));

    // Without nodeCacheCapable the scheduler sends a NodeList with no apiVersion/kind.
    let full: ExtenderArgs = serde_json::from_value(json!({
        "Pod": null,
        "Nodes": {"metadata": {}, "items": [{"metadata": {"name": "n1"}}]},
        "NodeNames": null
    }))
    .expect("full node list reads");
    assert_eq!(full.candidate_names(), ["n1"]);
}

#[test]
fn extender_filter_result_reads_null_maps_and_writes_pascal_case() {
    let result: ExtenderFilterResult = serde_json::from_value(json!({
        "Nodes": null, "NodeNames": ["a"], "FailedNodes": null, "FailedAndUnresolvableNodes": null, "Error": null
    }))
    .expect("reads");
    assert!(result.failed_nodes.is_empty() && result.error.is_empty());
    let missing: ExtenderFilterResult = serde_json::from_value(json!({"NodeNames": ["a"]})).expect("reads");
    assert_eq!(result, missing);

    let mut reply = ExtenderFilterResult { node_names: Some(vec!["a".into()]), ..Default::default() };
    reply.failed_and_unresolvable_nodes.insert("b".into(), "reserved for ml/train".into());
    let wire = serde_json::to_value(&reply).expect("writes");
    assert_eq!(wire["NodeNames"], json!(["a"]));
    assert_eq!(wire["FailedAndUnresolvableNodes"]["b"], "reserved for ml/train");
    assert_eq!(wire["Error"], "");
    let scores = serde_json::to_value(vec![HostPriority { host: "a".into(), score: 10 }]).expect("writes");
    assert_eq!(scores, json!([{"Host": "a", "Score": 10}]));
}
