//! The JobSet webhooks' logic as pure functions: defaulting ([`defaults`]), gang mutation ([`gang`]), validation
//! ([`validate`]), and the JSON patch that carries them onto the object exactly as it arrived ([`mutation_patch`]).

pub mod defaults;
pub mod gang;
pub mod validate;

use serde_json::Value;

use muster_api::JobSet;

use crate::webhook::json::overlay;

/// Decodes a JobSet from an admission request's raw object, as leniently as upstream's Go decoder where our types
/// are stricter: a failure-policy rule without a `name` decodes with an empty one (the defaulter names it, the
/// validator rejects it), and a `status` our types cannot read is ignored rather than failing the whole object
/// (the webhooks only read conditions on update, and only when they decode).
pub fn decode_jobset(raw: &Value) -> Result<JobSet, serde_json::Error> {
    let mut value = raw.clone();
    if let Some(rules) = value.pointer_mut("/spec/failurePolicy/rules").and_then(Value::as_array_mut) {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            if rule.get("name").is_none_or(Value::is_null) {
                rule.insert("name".to_owned(), Value::String(String::new()));
            }
        }
    }
    match serde_json::from_value::<JobSet>(value.clone()) {
        Ok(js) => Ok(js),
        Err(first) => {
            let had_status = value.as_object_mut().and_then(|o| o.remove("status")).is_some();
            if had_status { serde_json::from_value(value).map_err(|_| first) } else { Err(first) }
        }
    }
}

/// The RFC 6902 patch that applies upstream's defaults to `raw`, computed against `raw` itself so that nothing our
/// types do not know (fields of a newer JobSet or Kubernetes) is ever removed or rewritten: the defaults are
/// applied to the typed object, and only what defaulting changed is written back into a copy of `raw`.
pub fn default_patch(raw: &Value) -> Result<json_patch::Patch, serde_json::Error> {
    mutation_patch(raw, None)
}

/// [`default_patch`], plus the gang mutation when `gang` is given (on CREATE with gang admission on).
pub fn mutation_patch(raw: &Value, gang: Option<&gang::GangMutation>) -> Result<json_patch::Patch, serde_json::Error> {
    let mut js = decode_jobset(raw)?;
    js.status = None;
    let before = serde_json::to_value(&js)?;
    defaults::default_jobset(&mut js);
    if let Some(gang) = gang {
        gang::mutate(&mut js, gang);
    }
    let after = serde_json::to_value(&js)?;
    let mut patched = raw.clone();
    overlay(&mut patched, &before, &after);
    Ok(json_patch::diff(raw, &patched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw_jobset() -> Value {
        json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "metadata": {"name": "js", "namespace": "ns", "x-meta-unknown": "kept"},
            "spec": {
                "x-future-field": {"a": 1},
                "failurePolicy": {"maxRestarts": 3, "rules": [{"action": "FailJobSet"}, {"name": "r", "action": "RestartJobSet"}]},
                "replicatedJobs": [{
                    "name": "workers",
                    "replicas": 2,
                    "x-rjob-unknown": true,
                    "template": {"spec": {
                        "parallelism": 2,
                        "x-job-unknown": [1, 2],
                        "template": {"spec": {
                            "x-pod-unknown": "yes",
                            "containers": [{"name": "c", "image": "busybox", "x-container-unknown": 1}]
                        }}
                    }}
                }]
            },
            "status": {"weird": "status our types do not know"}
        })
    }

    #[test]
    fn patch_adds_defaults_and_keeps_every_unknown_field() {
        let raw = raw_jobset();
        let patch = default_patch(&raw).expect("patch");
        assert!(
            patch
                .iter()
                .all(|op| matches!(op, json_patch::PatchOperation::Add(_) | json_patch::PatchOperation::Replace(_))),
            "defaulting only adds: {patch}"
        );
        let mut patched = raw.clone();
        json_patch::patch(&mut patched, &patch).expect("patch applies to the raw object");

        let mut expected = raw.clone();
        expected["spec"]["successPolicy"] = json!({"operator": "All"});
        expected["spec"]["startupPolicy"] = json!({"startupPolicyOrder": "AnyOrder"});
        expected["spec"]["network"] = json!({"enableDNSHostnames": true, "publishNotReadyAddresses": true});
        expected["spec"]["failurePolicy"]["rules"][0]["name"] = json!("failurePolicyRule0");
        expected["spec"]["replicatedJobs"][0]["template"]["spec"]["completionMode"] = json!("Indexed");
        expected["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["restartPolicy"] =
            json!("OnFailure");
        assert_eq!(patched, expected);
    }

    #[test]
    fn fully_defaulted_object_needs_no_patch() {
        let raw = raw_jobset();
        let mut once = raw.clone();
        json_patch::patch(&mut once, &default_patch(&raw).expect("patch")).expect("apply");
        assert!(default_patch(&once).expect("patch").is_empty());
    }

    #[test]
    fn missing_job_spec_gets_only_the_defaults() {
        let raw = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js"},
            "spec": {"replicatedJobs": [{"name": "a", "template": {}}]}});
        let mut patched = raw.clone();
        json_patch::patch(&mut patched, &default_patch(&raw).expect("patch")).expect("apply");
        assert_eq!(
            patched["spec"]["replicatedJobs"][0]["template"],
            json!({"spec": {"completionMode": "Indexed", "template": {"spec": {"restartPolicy": "OnFailure"}}}})
        );
    }

    #[test]
    fn undecodable_objects_are_reported() {
        assert!(default_patch(&json!({"spec": {"replicatedJobs": [{"name": 1}]}})).is_err());
        assert!(default_patch(&json!("not an object")).is_err());
    }
}
