//! Resuming a suspended Job with the ReplicatedJob's current pod template.
//!
//! Kueue (and Muster's admission) may rewrite pod-template labels, annotations, nodeSelector, tolerations and
//! scheduling gates while a JobSet is suspended; on resume those changes are merged into the existing Jobs.
//! Maps merge with the JobSet's values winning and no key ever removed; lists are unioned.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodTemplateSpec;
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
