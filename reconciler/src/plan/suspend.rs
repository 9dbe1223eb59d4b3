//! Resuming a suspended Job with the ReplicatedJob's current pod template.
//!
//! Kueue (and Muster's admission) may rewrite pod-template labels, annotations, nodeSelector, tolerations and
//! scheduling gates while a JobSet is suspended; on resume those changes are merged into the existing Jobs.
//! Maps merge with the JobSet's values winning and no key ever removed; lists are unioned.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use muster_api::jobset::ReplicatedJob;

fn merge_map(into: &mut Option<BTreeMap<String, String>>, from: Option<&BTreeMap<String, String>>) {
    if let Some(from) = from.filter(|m| !m.is_empty()) {
        into.get_or_insert_with(BTreeMap::new).extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

fn union<T: Clone + PartialEq>(into: &mut Option<Vec<T>>, from: Option<&Vec<T>>) {
    for item in from.into_iter().flatten() {
        let list = into.get_or_insert_with(Vec::new);
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// Drops what planning never reads from a Job kept in the watch cache: the pod spec but for the scheduling fields
/// a resume merges into (nodeSelector, tolerations, scheduling gates), and managedFields. The containers, volumes
/// and init containers are most of a Job's size, and a controller of a thousand JobSets keeps thousands of Jobs.
pub fn trim_for_cache(job: &mut Job) {
    job.metadata.managed_fields = None;
    if let Some(spec) = job.spec.as_mut()
        && let Some(pod) = spec.template.spec.as_mut()
    {
        *pod = PodSpec {
            node_selector: pod.node_selector.take(),
            tolerations: pod.tolerations.take(),
            scheduling_gates: pod.scheduling_gates.take(),
            ..PodSpec::default()
        };
    }
}

/// The merge patch that resumes `resumed` (from [`resumed`]): unsuspended, the merged template fields, and the
/// cached resourceVersion as a precondition, so a concurrent change is a conflict, retried on the next pass.
/// Maps only gain keys and lists are sent whole, so a merge patch says exactly what an update of the full Job
/// would, without the parts of the Job the cache no longer keeps.
pub fn resume_patch(resumed: &Job) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    // A null in a merge patch deletes: fields the Job does not have are left out, not sent as null.
    fn put<T: serde::Serialize>(into: &mut Map<String, Value>, key: &str, value: Option<&T>) {
        if let Some(v) = value.and_then(|v| serde_json::to_value(v).ok()) {
            into.insert(key.to_owned(), v);
        }
    }
    let template = resumed.spec.as_ref().map(|s| &s.template);
    let meta = template.and_then(|t| t.metadata.as_ref());
    let pod = template.and_then(|t| t.spec.as_ref());
    let mut template_meta = Map::new();
    put(&mut template_meta, "labels", meta.and_then(|m| m.labels.as_ref()));
    put(&mut template_meta, "annotations", meta.and_then(|m| m.annotations.as_ref()));
    let mut pod_spec = Map::new();
    put(&mut pod_spec, "nodeSelector", pod.and_then(|p| p.node_selector.as_ref()));
    put(&mut pod_spec, "tolerations", pod.and_then(|p| p.tolerations.as_ref()));
    put(&mut pod_spec, "schedulingGates", pod.and_then(|p| p.scheduling_gates.as_ref()));
    json!({
        "metadata": {"resourceVersion": resumed.metadata.resource_version},
        "spec": {"suspend": false, "template": {"metadata": template_meta, "spec": pod_spec}},
    })
}

/// The Job unsuspended, with the ReplicatedJob's current pod-template scheduling fields merged in.
pub fn resumed(job: &Job, rjob: &ReplicatedJob) -> Job {
    let mut job = job.clone();
    let desired: Option<&PodTemplateSpec> = rjob.template.spec.as_ref().map(|s| &s.template);
    let spec = job.spec.get_or_insert_with(Default::default);
    spec.suspend = Some(false);
    let template = &mut spec.template;
    let desired_meta = desired.and_then(|t| t.metadata.as_ref());
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    merge_map(&mut meta.labels, desired_meta.and_then(|m| m.labels.as_ref()));
    merge_map(&mut meta.annotations, desired_meta.and_then(|m| m.annotations.as_ref()));
    let desired_pod = desired.and_then(|t| t.spec.as_ref());
    let pod = template.spec.get_or_insert_with(Default::default);
    merge_map(&mut pod.node_selector, desired_pod.and_then(|p| p.node_selector.as_ref()));
    union(&mut pod.tolerations, desired_pod.and_then(|p| p.tolerations.as_ref()));
    union(&mut pod.scheduling_gates, desired_pod.and_then(|p| p.scheduling_gates.as_ref()));
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "train-workers-0", "resourceVersion": "42", "labels": {"jobset.sigs.k8s.io/jobset-name": "train"},
                         "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {"suspend": true, "parallelism": 2, "completions": 2, "template": {
                "metadata": {"labels": {"app": "train"}},
                "spec": {"nodeSelector": {"pool": "h100"}, "containers": [{"name": "c", "image": "train:1",
                    "env": [{"name": "A", "value": "1"}]}], "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"startTime": "2026-11-29T00:00:00Z", "active": 0}
        }))
        .expect("job")
    }

    fn rjob(template_spec: serde_json::Value) -> ReplicatedJob {
        serde_json::from_value(json!({"name": "workers", "replicas": 1, "template": {"spec": {
            "template": template_spec}}}))
        .expect("rjob")
    }

    #[test]
    fn the_cache_keeps_what_planning_and_resuming_read() {
        let mut trimmed = job();
        trim_for_cache(&mut trimmed);
        let spec = trimmed.spec.as_ref().expect("spec");
        let pod = spec.template.spec.as_ref().expect("pod spec");
        assert!(pod.containers.is_empty() && pod.volumes.is_none(), "the bulk is gone");
        assert_eq!(pod.node_selector.as_ref().and_then(|s| s.get("pool")).map(String::as_str), Some("h100"));
        assert_eq!((spec.suspend, spec.parallelism, spec.completions), (Some(true), Some(2), Some(2)));
        assert!(trimmed.metadata.managed_fields.is_none());
        assert_eq!(trimmed.metadata.labels, job().metadata.labels);
        assert_eq!(trimmed.status, job().status);
    }

    #[test]
    fn the_resume_patch_merges_the_templates_scheduling_fields_and_deletes_nothing() {
        let mut cached = job();
        trim_for_cache(&mut cached);
        // Admission (or Kueue) added a label, a node selector and a toleration while the JobSet was suspended.
        let desired = rjob(json!({"metadata": {"labels": {"placed": "yes"}}, "spec": {
            "nodeSelector": {"rack": "r1"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "train:1"}]}}));
        let patch = resume_patch(&resumed(&cached, &desired));
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"suspend": false, "template": {
                "metadata": {"labels": {"app": "train", "placed": "yes"}},
                "spec": {"nodeSelector": {"pool": "h100", "rack": "r1"},
                         "tolerations": [{"key": "gpu", "operator": "Exists"}]}}}})
        );
        // Nothing to merge: still no nulls, which a merge patch would read as deletions.
        let plain = resume_patch(&resumed(&cached, &rjob(json!({"spec": {"containers": []}}))));
        assert!(!plain.to_string().contains("null"), "{plain}");
    }
}
