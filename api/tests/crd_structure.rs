//! The generated JobSet CRD has upstream's structure: list-map keys, defaults, enums, CEL rules, printer
//! columns, the status subresource, and a full schema for the embedded Job template.

use muster_api::crd;
use serde_json::{Value, json};

fn jobset_version() -> Value {
    let (_, crd) = crd::all().into_iter().find(|(name, _)| name == "jobset.x-k8s.io_jobsets.yaml").expect("JobSet CRD");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.versions.len(), 1);
    serde_json::to_value(&crd.spec.versions[0]).expect("serialises")
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| v.get(*key).unwrap_or_else(|| panic!("no {key} in path {path:?}")))
}

const SPEC: &[&str] = &["schema", "openAPIV3Schema", "properties", "spec", "properties"];

fn spec_field<'a>(version: &'a Value, path: &[&str]) -> &'a Value {
    at(at(version, SPEC), path)
}

#[test]
fn served_storage_version_with_status_subresource_and_printer_columns() {
    let version = jobset_version();
    assert_eq!(version["name"], "v1alpha2");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or_default(), c["jsonPath"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        columns,
        [
            ("TerminalState", ".status.terminalState"),
            ("Restarts", ".status.restarts"),
            ("Completed", ".status.conditions[?(@.type==\"Completed\")].status"),
            ("Suspended", ".spec.suspend"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn list_map_markers_match_upstream() {
    let version = jobset_version();
    let rjobs = spec_field(&version, &["replicatedJobs"]);
    assert_eq!(rjobs["x-kubernetes-list-type"], "map");
    assert_eq!(rjobs["x-kubernetes-list-map-keys"], json!(["name"]));
    let depends_on = at(rjobs, &["items", "properties", "dependsOn"]);
    assert_eq!(depends_on["x-kubernetes-list-type"], "map");
    assert_eq!(depends_on["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(depends_on["maxItems"], 5);

    let status = at(&version, &["schema", "openAPIV3Schema", "properties", "status", "properties"]);
    assert_eq!(status["conditions"]["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(status["replicatedJobsStatus"]["x-kubernetes-list-type"], "map");
    assert_eq!(status["replicatedJobsStatus"]["x-kubernetes-list-map-keys"], json!(["name"]));
    let job_restarts = at(status, &["replicatedJobsStatus", "items", "properties", "jobRestarts"]);
    assert_eq!(job_restarts["maxItems"], 1024);
}

#[test]
fn defaults_and_enums_match_upstream() {
    let version = jobset_version();
    let rjob = at(spec_field(&version, &["replicatedJobs"]), &["items", "properties"]);
    assert_eq!(rjob["groupName"]["default"], "default");
    assert_eq!(rjob["replicas"]["default"], 1);
    assert_eq!(rjob["replicas"]["minimum"], 0.0);
    assert_eq!(at(rjob, &["dependsOn", "items", "properties", "status", "enum"]), &json!(["Ready", "Complete"]));

    let failure = spec_field(&version, &["failurePolicy", "properties"]);
    assert_eq!(failure["restartStrategy"]["default"], "Recreate");
    assert_eq!(failure["restartStrategy"]["enum"], json!(["Recreate", "BlockingRecreate", "InPlaceRestart"]));
    assert_eq!(
        at(failure, &["rules", "items", "properties", "action", "enum"]),
        &json!([
            "FailJobSet",
            "RestartJobSet",
            "RestartJobSetAndIgnoreMaxRestarts",
            "RestartJob",
            "RestartJobAndIgnoreMaxRestarts"
        ])
    );
    assert_eq!(at(failure, &["rules", "items", "required"]), &json!(["action", "name"]));

    let vcp = spec_field(&version, &["volumeClaimPolicies"]);
    assert_eq!(vcp["maxItems"], 50);
    assert_eq!(at(vcp, &["items", "properties", "templates", "maxItems"]), 50);
    let when_deleted = at(vcp, &["items", "properties", "retentionPolicy", "properties", "whenDeleted"]);
    assert_eq!(when_deleted["default"], "Delete");
    assert_eq!(when_deleted["enum"], json!(["Delete", "Retain"]));

    assert_eq!(spec_field(&version, &["successPolicy", "properties", "operator", "enum"]), &json!(["All", "Any"]));
    assert_eq!(
        spec_field(&version, &["startupPolicy", "properties", "startupPolicyOrder", "enum"]),
        &json!(["AnyOrder", "InOrder"])
    );
    assert_eq!(spec_field(&version, &["ttlSecondsAfterFinished", "minimum"]), 0.0);
}

fn rules(schema: &Value) -> Vec<(String, String)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| {
                    (r["rule"].as_str().unwrap_or_default().into(), r["message"].as_str().unwrap_or_default().into())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cel_rules_of_the_reference_are_present() {
    let version = jobset_version();
    let spec = at(&version, &["schema", "openAPIV3Schema", "properties", "spec"]);
    assert_eq!(
        rules(spec),
        [(
            "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && self.replicatedJobs.exists(x, has(x.dependsOn)))".to_string(),
            "StartupPolicy and DependsOn APIs are mutually exclusive".to_string()
        )]
    );
    let immutable = [("self == oldSelf".to_string(), "Value is immutable".to_string())];
    for field in ["network", "successPolicy", "failurePolicy", "startupPolicy", "volumeClaimPolicies"] {
        assert_eq!(rules(spec_field(&version, &[field])), immutable, "{field} must be immutable");
    }
    assert_eq!(rules(at(spec_field(&version, &["replicatedJobs"]), &["items", "properties", "dependsOn"])), immutable);
    assert_eq!(
        rules(at(spec_field(&version, &["volumeClaimPolicies"]), &["items"])),
        [(
            "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)".to_string(),
            "namespace cannot be set for VolumeClaimPolicies templates".to_string()
        )]
    );
}

#[test]
fn job_template_has_a_full_schema_not_preserve_unknown_fields() {
    let version = jobset_version();
    let template = at(spec_field(&version, &["replicatedJobs"]), &["items", "properties", "template"]);
    assert!(template.get("x-kubernetes-preserve-unknown-fields").is_none());
    let pod_spec = at(template, &["properties", "spec", "properties", "template", "properties", "spec", "properties"]);
    for field in ["containers", "nodeSelector", "tolerations", "affinity", "volumes", "schedulingGates"] {
        assert!(pod_spec.get(field).is_some(), "pod template lacks {field}");
    }
    let container = at(pod_spec, &["containers", "items", "properties"]);
    let limits = at(container, &["resources", "properties", "limits", "additionalProperties"]);
    assert_eq!(limits["x-kubernetes-int-or-string"], true, "quantities must accept `nvidia.com/gpu: 8`");
    let labels = at(template, &["properties", "metadata", "properties", "labels"]);
    assert_eq!(labels["type"], "object", "template labels must survive pruning");
}

#[test]
fn no_nullable_anywhere_like_upstream() {
    for (name, crd) in crd::all() {
        let text = serde_json::to_string(&crd).expect("serialises");
        assert!(!text.contains("\"nullable\""), "{name} has nullable fields");
    }
}

#[test]
fn our_crds_have_their_scope_and_columns() {
    let all = crd::all();
    let by_name = |n: &str| all.iter().find(|(name, _)| name == n).map(|(_, c)| c).expect("crd present");
    let gang = by_name("muster.dev_gangs.yaml");
    assert_eq!(gang.spec.scope, "Namespaced");
    let columns: Vec<_> =
        gang.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Phase", "Queue", "GPUs", "Position", "Reason", "Age"]);
    let gpunode = by_name("muster.dev_gpunodes.yaml");
    assert_eq!(gpunode.spec.scope, "Cluster");
}
