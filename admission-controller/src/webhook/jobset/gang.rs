//! The gang mutation: a gang-managed JobSet is created suspended, and the annotation says that admission (not the
//! user) owns `spec.suspend`, so the admission controller releases it once the whole gang has a placement.
//!
//! A user who creates a gang-managed JobSet with `suspend: true` gets the same treatment: admission owns the
//! suspend of every gang. To run a GPU JobSet outside gang admission, label it `muster.dev/gang: "false"`.

use std::collections::BTreeMap;

use muster_api::{JobSet, keys};

use crate::gang::objects::is_gang_managed;

/// How gang JobSets are changed on CREATE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GangMutation {
    /// In extender mode, the scheduler profile whose extender steers gang pods to their reserved nodes; set on
    /// every pod template that does not name a scheduler of its own.
    pub scheduler_name: Option<String>,
}

/// The scheduler a pod template gets when it names none.
const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Applies the gang mutation; returns whether the JobSet is a gang.
pub fn mutate(js: &mut JobSet, config: &GangMutation) -> bool {
    if !is_gang_managed(js) {
        return false;
    }
    js.spec.suspend = Some(true);
    js.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(keys::ADMISSION_OWNS_SUSPEND.to_owned(), "true".to_owned());
    if let Some(scheduler) = &config.scheduler_name {
        for rjob in &mut js.spec.replicated_jobs {
            let Some(pod) = rjob.template.spec.as_mut().and_then(|j| j.template.spec.as_mut()) else { continue };
            if pod.scheduler_name.as_deref().is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER) {
                pod.scheduler_name = Some(scheduler.clone());
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::jobset::mutation_patch;
    use serde_json::{Value, json};

    fn raw(labels: Value, gpus: &str, suspend: Option<bool>) -> Value {
        json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "train", "namespace": "ml", "labels": labels},
            "spec": {"suspend": suspend, "replicatedJobs": [{"name": "w", "replicas": 2, "template": {"spec": {"template": {"spec": {
                "schedulerName": "default-scheduler",
                "containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}}}}]}})
    }

    fn patched(raw: &Value, config: &GangMutation) -> Value {
        let mut out = raw.clone();
        json_patch::patch(&mut out, &mutation_patch(raw, Some(config)).expect("patch")).expect("apply");
        out
    }

    #[test]
    fn gpu_jobsets_are_created_suspended_and_annotated() {
        for suspend in [None, Some(false), Some(true)] {
            let out = patched(&raw(json!({}), "8", suspend), &GangMutation::default());
            assert_eq!(out.pointer("/spec/suspend"), Some(&json!(true)));
            assert_eq!(out.pointer("/metadata/annotations/muster.dev~1admission-suspended"), Some(&json!("true")));
            assert_eq!(
                out.pointer("/spec/replicatedJobs/0/template/spec/template/spec/schedulerName"),
                Some(&json!("default-scheduler")),
                "no scheduler name without extender mode"
            );
        }
    }

    #[test]
    fn extender_mode_sets_the_scheduler_of_templates_without_one_of_their_own() {
        let config = GangMutation { scheduler_name: Some("muster-scheduler".into()) };
        let out = patched(&raw(json!({}), "8", None), &config);
        let path = "/spec/replicatedJobs/0/template/spec/template/spec/schedulerName";
        assert_eq!(out.pointer(path), Some(&json!("muster-scheduler")));
        let mut custom = raw(json!({}), "8", None);
        *custom.pointer_mut(path).expect("path") = json!("volcano");
        assert_eq!(patched(&custom, &config).pointer(path), Some(&json!("volcano")));
    }

    #[test]
    fn non_gangs_are_left_to_upstream_defaults() {
        for (labels, gpus) in [
            (json!({"muster.dev/gang": "false"}), "8"),
            (json!({"kueue.x-k8s.io/queue-name": "q"}), "8"),
            (json!({}), "0"),
        ] {
            let input = raw(labels, gpus, None);
            let out = patched(&input, &GangMutation { scheduler_name: Some("muster-scheduler".into()) });
            let mut defaults_only = input.clone();
            json_patch::patch(&mut defaults_only, &mutation_patch(&input, None).expect("patch")).expect("apply");
            assert_eq!(out, defaults_only);
        }
    }
}
