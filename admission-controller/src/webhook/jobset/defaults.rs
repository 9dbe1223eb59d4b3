//! The mutating webhook's defaults (`mjobset.kb.io`, CREATE only), exactly upstream's and nothing else. The CRD's
//! own OpenAPI defaults (`groupName`, `replicas`, `restartStrategy`, `whenDeleted`) are the API server's business.

use k8s_openapi::api::batch::v1::JobSpec;
use muster_api::JobSet;
use muster_api::jobset::{
    Network, Operator, StartupPolicy, StartupPolicyOrder, SuccessPolicy, VolumeRetentionPolicy, WhenDeleted,
};

pub const INDEXED_COMPLETION: &str = "Indexed";
pub const RESTART_POLICY_ON_FAILURE: &str = "OnFailure";

/// The name a failure-policy rule without one gets: `failurePolicyRule<index>`.
pub fn default_rule_name(index: usize) -> String {
    format!("failurePolicyRule{index}")
}

/// Applies upstream's webhook defaults in place.
pub fn default_jobset(js: &mut JobSet) {
    let spec = &mut js.spec;
    spec.success_policy
        .get_or_insert_with(|| SuccessPolicy { operator: Operator::All, target_replicated_jobs: vec![] });
    spec.startup_policy.get_or_insert(StartupPolicy { startup_policy_order: StartupPolicyOrder::AnyOrder });

    for rjob in &mut spec.replicated_jobs {
        // Go's Job template spec is a value, not a pointer: a missing one is an empty one.
        let job_spec = rjob.template.spec.get_or_insert_with(JobSpec::default);
        job_spec.completion_mode.get_or_insert_with(|| INDEXED_COMPLETION.to_owned());
        let pod_spec = job_spec.template.spec.get_or_insert_with(Default::default);
        if pod_spec.restart_policy.as_deref().is_none_or(str::is_empty) {
            pod_spec.restart_policy = Some(RESTART_POLICY_ON_FAILURE.to_owned());
        }
    }

    // `subdomain` is deliberately left alone: it resolves to the JobSet name at run time, which a `generateName`
    // JobSet does not have yet.
    let network = spec.network.get_or_insert_with(Network::default);
    network.enable_dns_hostnames.get_or_insert(true);
    network.publish_not_ready_addresses.get_or_insert(true);

    if let Some(fp) = &mut spec.failure_policy {
        for (i, rule) in fp.rules.iter_mut().enumerate() {
            if rule.name.is_empty() {
                rule.name = default_rule_name(i);
            }
        }
    }

    for policy in &mut spec.volume_claim_policies {
        policy.retention_policy.get_or_insert(VolumeRetentionPolicy { when_deleted: Some(WhenDeleted::Delete) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_api::jobset::{FailurePolicy, FailurePolicyAction, FailurePolicyRule, VolumeClaimPolicy};
    use serde_json::json;

    fn jobset(spec: serde_json::Value) -> JobSet {
        serde_json::from_value(json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "js", "namespace": "default"},
            "spec": spec,
        }))
        .expect("valid JobSet")
    }

    #[test]
    fn empty_spec_gets_every_top_level_default() {
        let mut js = jobset(json!({}));
        default_jobset(&mut js);
        let spec = serde_json::to_value(&js.spec).expect("serialise");
        assert_eq!(
            spec,
            json!({
                "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
                "successPolicy": {"operator": "All"},
                "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            })
        );
    }

    #[test]
    fn replicated_jobs_get_indexed_completion_and_on_failure_restarts() {
        let mut js = jobset(json!({"replicatedJobs": [
            {"name": "a", "template": {"spec": {"template": {"spec": {"containers": []}}}}},
            {"name": "b", "template": {"spec": {"completionMode": "NonIndexed",
                "template": {"spec": {"restartPolicy": "Never", "containers": []}}}}},
            {"name": "c", "template": {"spec": {"template": {"spec": {"restartPolicy": "", "containers": []}}}}},
        ]}));
        default_jobset(&mut js);
        let modes: Vec<_> = js
            .spec
            .replicated_jobs
            .iter()
            .map(|r| {
                let s = r.template.spec.as_ref().expect("job spec");
                let p = s.template.spec.as_ref().expect("pod spec");
                (s.completion_mode.clone().unwrap_or_default(), p.restart_policy.clone().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            modes,
            vec![
                ("Indexed".to_owned(), "OnFailure".to_owned()),
                ("NonIndexed".to_owned(), "Never".to_owned()),
                ("Indexed".to_owned(), "OnFailure".to_owned()),
            ]
        );
    }

    #[test]
    fn user_values_are_kept() {
        let mut js = jobset(json!({
            "network": {"enableDNSHostnames": false, "subdomain": "x"},
            "successPolicy": {"operator": "Any", "targetReplicatedJobs": ["a"]},
            "startupPolicy": {"startupPolicyOrder": "InOrder"},
        }));
        default_jobset(&mut js);
        let network = js.spec.network.clone().expect("network");
        assert_eq!(network.enable_dns_hostnames, Some(false));
        assert_eq!(network.publish_not_ready_addresses, Some(true));
        assert_eq!(network.subdomain.as_deref(), Some("x"));
        assert_eq!(js.spec.success_policy.as_ref().map(|p| p.operator), Some(Operator::Any));
        assert_eq!(js.spec.startup_policy.as_ref().map(|p| p.startup_policy_order), Some(StartupPolicyOrder::InOrder));
    }

    #[test]
    fn unnamed_rules_are_named_by_index_and_vcp_retention_defaults_to_delete() {
        let mut js = jobset(json!({}));
        js.spec.failure_policy = Some(FailurePolicy {
            rules: vec![
                FailurePolicyRule {
                    name: String::new(),
                    action: FailurePolicyAction::FailJobSet,
                    ..Default::default()
                },
                FailurePolicyRule { name: "mine".into(), ..Default::default() },
                FailurePolicyRule { name: String::new(), ..Default::default() },
            ],
            ..Default::default()
        });
        js.spec.volume_claim_policies = vec![VolumeClaimPolicy::default()];
        default_jobset(&mut js);
        let names: Vec<_> = js
            .spec
            .failure_policy
            .as_ref()
            .map(|fp| fp.rules.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        assert_eq!(names, vec!["failurePolicyRule0", "mine", "failurePolicyRule2"]);
        assert_eq!(
            js.spec.volume_claim_policies[0].retention_policy.as_ref().and_then(|p| p.when_deleted),
            Some(WhenDeleted::Delete)
        );
        // The restart strategy is a CRD default, not a webhook one.
        assert_eq!(js.spec.failure_policy.as_ref().and_then(|fp| fp.restart_strategy), None);
    }

    #[test]
    fn defaulting_is_idempotent() {
        let mut js = jobset(json!({"replicatedJobs": [{"name": "a", "template": {}}]}));
        default_jobset(&mut js);
        let once = js.clone();
        default_jobset(&mut js);
        assert_eq!(serde_json::to_value(&js).ok(), serde_json::to_value(&once).ok());
    }
}
