//! The webhook configurations, as objects: upstream's webhook names, paths and rules, pointed at our Service (what
//! `deploy/controller/webhook.yaml` declares) or at a URL (what an integration test registers).

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use muster_api::keys;

use super::pod::{MUTATE_POD_PATH, VALIDATE_POD_PATH};
use super::review::{MUTATE_PATH, VALIDATE_PATH};

pub const NAMESPACE: &str = "muster-system";
pub const SERVICE_NAME: &str = "muster-webhook-service";
pub const SECRET_NAME: &str = "muster-webhook-server-cert";
pub const MUTATING_CONFIGURATION: &str = "muster-mutating-webhook-configuration";
pub const VALIDATING_CONFIGURATION: &str = "muster-validating-webhook-configuration";
/// Upstream's webhook names: the API server puts them in every rejection (`admission webhook "vjobset.kb.io"
/// denied the request: …`).
pub const MUTATING_WEBHOOK: &str = "mjobset.kb.io";
pub const VALIDATING_WEBHOOK: &str = "vjobset.kb.io";
pub const MUTATING_POD_WEBHOOK: &str = "mpod.kb.io";
pub const VALIDATING_POD_WEBHOOK: &str = "vpod.kb.io";

/// Where the API server sends the reviews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `https://host:port`, without a path (the webhook paths are appended).
    Url(String),
    /// A Service in the cluster, on port 443.
    Service { namespace: String, name: String },
}

impl Target {
    /// Our Service in our namespace.
    pub fn in_cluster() -> Self {
        Self::Service { namespace: NAMESPACE.into(), name: SERVICE_NAME.into() }
    }

    fn client_config(&self, path: &str, ca_bundle: Option<&[u8]>) -> WebhookClientConfig {
        let ca_bundle = ca_bundle.map(|ca| ByteString(ca.to_vec()));
        match self {
            Self::Url(base) => WebhookClientConfig {
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
                ca_bundle,
                service: None,
            },
            Self::Service { namespace, name } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.to_owned()),
                    port: None,
                }),
                ca_bundle,
                url: None,
            },
        }
    }
}

fn jobset_rule(operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec!["jobset.x-k8s.io".into()]),
        api_versions: Some(vec!["v1alpha2".into()]),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        resources: Some(vec!["jobsets".into()]),
        scope: None,
    }
}

/// Pod CREATE, JobSet pods only: the objectSelector sends only pods with the `jobset-name` label, so `Fail` cannot
/// block any other pod (upstream's selector, reference §9.10).
fn pod_rule_and_selector() -> (Vec<RuleWithOperations>, LabelSelector) {
    let rules = vec![RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into()]),
        resources: Some(vec!["pods".into()]),
        scope: Some("Namespaced".into()),
    }];
    let selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: keys::JOBSET_NAME.into(),
            operator: "Exists".into(),
            values: None,
        }]),
        match_labels: None,
    };
    (rules, selector)
}

/// `mjobset.kb.io` (defaults JobSets on CREATE) and `mpod.kb.io` (exclusive placement and, in pod-pinning mode, the
/// pinning of gang pods: [`super::pod`]). `mpod.kb.io` is `IfNeeded`: a later webhook that rewrites affinity gets
/// the pin added back (both of its mutations change nothing the second time).
pub fn mutating_configuration(target: &Target, ca_bundle: Option<&[u8]>) -> MutatingWebhookConfiguration {
    let (pod_rules, pod_selector) = pod_rule_and_selector();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(MUTATING_CONFIGURATION.into()), ..Default::default() },
        webhooks: Some(vec![
            MutatingWebhook {
                name: MUTATING_WEBHOOK.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: target.client_config(MUTATE_PATH, ca_bundle),
                failure_policy: Some("Fail".into()),
                side_effects: "None".into(),
                rules: Some(vec![jobset_rule(&["CREATE"])]),
                timeout_seconds: Some(10),
                ..Default::default()
            },
            MutatingWebhook {
                name: MUTATING_POD_WEBHOOK.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: target.client_config(MUTATE_POD_PATH, ca_bundle),
                failure_policy: Some("Fail".into()),
                side_effects: "None".into(),
                rules: Some(pod_rules),
                object_selector: Some(pod_selector),
                reinvocation_policy: Some("IfNeeded".into()),
                timeout_seconds: Some(10),
                ..Default::default()
            },
        ]),
    }
}

/// `vjobset.kb.io` (validates JobSet CREATE and UPDATE) and `vpod.kb.io` (refuses followers of exclusive Jobs until
/// their leader is scheduled).
pub fn validating_configuration(target: &Target, ca_bundle: Option<&[u8]>) -> ValidatingWebhookConfiguration {
    let (pod_rules, pod_selector) = pod_rule_and_selector();
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(VALIDATING_CONFIGURATION.into()), ..Default::default() },
        webhooks: Some(vec![
            ValidatingWebhook {
                name: VALIDATING_WEBHOOK.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: target.client_config(VALIDATE_PATH, ca_bundle),
                failure_policy: Some("Fail".into()),
                side_effects: "None".into(),
                rules: Some(vec![jobset_rule(&["CREATE", "UPDATE"])]),
                timeout_seconds: Some(10),
                ..Default::default()
            },
            ValidatingWebhook {
                name: VALIDATING_POD_WEBHOOK.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: target.client_config(VALIDATE_POD_PATH, ca_bundle),
                failure_policy: Some("Fail".into()),
                side_effects: "None".into(),
                rules: Some(pod_rules),
                object_selector: Some(pod_selector),
                timeout_seconds: Some(10),
                ..Default::default()
            },
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn manifest() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/controller/webhook.yaml");
        let text = std::fs::read_to_string(path).expect("deploy/controller/webhook.yaml exists");
        serde_saphyr::from_multiple(&text).expect("webhook.yaml parses")
    }

    fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
        docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("webhook.yaml has no {kind}"))
    }

    #[test]
    fn deployed_configurations_match_the_code() {
        let docs = manifest();
        let target = Target::in_cluster();
        for (kind, expected) in [
            ("MutatingWebhookConfiguration", serde_json::to_value(mutating_configuration(&target, None))),
            ("ValidatingWebhookConfiguration", serde_json::to_value(validating_configuration(&target, None))),
        ] {
            let expected = expected.expect("serialise");
            let deployed = of_kind(&docs, kind);
            assert_eq!(deployed["metadata"]["name"], expected["metadata"]["name"], "{kind} name");
            assert_eq!(deployed["webhooks"], expected["webhooks"], "{kind} webhooks");
            let inject = &deployed["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
            assert_eq!(inject, "muster-system/muster-serving-cert", "{kind} CA injection");
        }
    }

    #[test]
    fn deployed_certificate_covers_the_service_and_fills_the_secret() {
        let docs = manifest();
        let cert = of_kind(&docs, "Certificate");
        assert_eq!(cert["metadata"]["name"], "muster-serving-cert");
        assert_eq!(cert["metadata"]["namespace"], NAMESPACE);
        assert_eq!(cert["spec"]["secretName"], SECRET_NAME);
        let names: Vec<&str> = cert["spec"]["dnsNames"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(names.contains(&"muster-webhook-service.muster-system.svc"), "{names:?}");
        let service = of_kind(&docs, "Service");
        assert_eq!(service["metadata"]["name"], SERVICE_NAME);
        assert_eq!(of_kind(&docs, "Issuer")["metadata"]["name"], cert["spec"]["issuerRef"]["name"]);
    }

    #[test]
    fn url_target_appends_paths() {
        let config = validating_configuration(&Target::Url("https://127.0.0.1:9443/".into()), Some(b"CA"));
        let hook = &config.webhooks.expect("webhooks")[0];
        assert_eq!(
            hook.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/validate-jobset-x-k8s-io-v1alpha2-jobset")
        );
        assert_eq!(hook.client_config.ca_bundle, Some(ByteString(b"CA".to_vec())));
    }
}
