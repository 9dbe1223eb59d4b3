//! The webhook server's few conversations with the API server, kept thin: reading PVCs for validation, pods and
//! node labels for exclusive placement, and in
//! self-managed certificate mode, keeping the serving certificate in a Secret and its CA in the webhook
//! configurations' `caBundle`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

use crate::tls::{self, CertStore, TlsError, Validity};
use crate::webhook::config;
use crate::webhook::exclusive::{PlacementReads, ReadFuture};
use crate::webhook::review::{PvcFuture, PvcSource};

/// PVC lookups through the API server.
#[derive(Clone)]
pub struct KubePvcs(pub Client);

impl PvcSource for KubePvcs {
    fn get<'a>(&'a self, namespace: &'a str, name: &'a str) -> PvcFuture<'a> {
        Box::pin(async move {
            Api::<PersistentVolumeClaim>::namespaced(self.0.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Exclusive placement's reads through the API server. Both are direct reads, not a cache: a follower must follow
/// its leader's current node, and the pods of one Job are a small, label-selected list.
#[derive(Clone)]
pub struct KubePlacementReads(pub Client);

impl PlacementReads for KubePlacementReads {
    fn pods<'a>(&'a self, namespace: &'a str, selector: &'a str) -> ReadFuture<'a, Vec<Pod>> {
        Box::pin(async move {
            let list = Api::<Pod>::namespaced(self.0.clone(), namespace)
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| e.to_string())?;
            Ok(list.items)
        })
    }

    fn node_labels<'a>(&'a self, name: &'a str) -> ReadFuture<'a, Option<BTreeMap<String, String>>> {
        Box::pin(async move {
            let node = Api::<Node>::all(self.0.clone()).get_metadata_opt(name).await.map_err(|e| e.to_string())?;
            Ok(node.map(|n| n.metadata.labels.unwrap_or_default()))
        })
    }
}

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const NOT_AFTER_ANNOTATION: &str = "muster.dev/serving-cert-not-after";
const NAMES_ANNOTATION: &str = "muster.dev/serving-cert-names";
/// A certificate with less than this left is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Self-managed certificates: where they live and which configurations trust them.
#[derive(Clone, Debug)]
pub struct SelfManaged {
    pub namespace: String,
    pub secret_name: String,
    pub service_name: String,
    pub mutating_configuration: String,
    pub validating_configuration: String,
    /// How often the Secret and the `caBundle`s are checked again.
    pub refresh: Duration,
}

impl SelfManaged {
    /// The names the serving certificate covers: the Service's in-cluster DNS names.
    pub fn dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service_name, &self.namespace);
        vec![svc.clone(), format!("{svc}.{ns}"), format!("{svc}.{ns}.svc"), format!("{svc}.{ns}.svc.cluster.local")]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("webhook configuration {0} not found")]
    ConfigurationMissing(String),
    #[error("Secret {0} kept changing under concurrent writers")]
    SecretContention(String),
}

impl SelfManagedError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Tls(e) => e.category(),
            Self::ConfigurationMissing(_) => "configuration_missing",
            Self::SecretContention(_) => "secret_contention",
        }
    }
}

/// The certificate material kept in the Secret: the CA bundle to trust, and the serving certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCerts {
    pub ca_bundle: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The Secret's certificates if they are complete, load, cover `names` and are not close to expiry.
fn usable(secret: &Secret, names: &[String]) -> Option<StoredCerts> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let not_after: u64 = annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?;
    if not_after < unix_now() + RENEW_BEFORE.as_secs() || annotations.get(NAMES_ANNOTATION)? != &names.join(",") {
        return None;
    }
    let data = secret.data.as_ref()?;
    let stored = StoredCerts {
        ca_bundle: data.get(CA_KEY)?.0.clone(),
        cert: data.get(CERT_KEY)?.0.clone(),
        key: data.get(KEY_KEY)?.0.clone(),
    };
    tls::certified_key_from_pem(&stored.cert, &stored.key).ok().map(|_| stored)
}

fn secret_with(name: &str, namespace: &str, names: &[String], stored: &StoredCerts, not_after: u64) -> Secret {
    let annotations = BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_owned(), not_after.to_string()),
        (NAMES_ANNOTATION.to_owned(), names.join(",")),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (CA_KEY.to_owned(), ByteString(stored.ca_bundle.clone())),
            (CERT_KEY.to_owned(), ByteString(stored.cert.clone())),
            (KEY_KEY.to_owned(), ByteString(stored.key.clone())),
        ])),
        ..Default::default()
    }
}

/// Returns usable certificates from the Secret, creating or renewing them first if needed. When renewing, the
/// previous CA stays in the bundle so that API servers holding the old `caBundle` keep working until it is patched.
/// Replicas racing to write resolve through the API server's optimistic concurrency: the loser re-reads.
pub async fn ensure_secret(client: &Client, cfg: &SelfManaged) -> Result<StoredCerts, SelfManagedError> {
    let api = Api::<Secret>::namespaced(client.clone(), &cfg.namespace);
    let names = cfg.dns_names();
    for _ in 0..3 {
        let existing = api.get_opt(&cfg.secret_name).await?;
        if let Some(stored) = existing.as_ref().and_then(|s| usable(s, &names)) {
            return Ok(stored);
        }
        let validity = Validity::default();
        let generated = tls::generate_certs(&names, validity)?;
        let mut ca_bundle = generated.ca_cert_pem.clone().into_bytes();
        if let Some(old_ca) = existing.as_ref().and_then(|s| s.data.as_ref()?.get(CA_KEY)) {
            ca_bundle.extend_from_slice(&old_ca.0);
        }
        let stored =
            StoredCerts { ca_bundle, cert: generated.cert_pem.into_bytes(), key: generated.key_pem.into_bytes() };
        let not_after = unix_now() + validity.serving.as_secs();
        let mut secret = secret_with(&cfg.secret_name, &cfg.namespace, &names, &stored, not_after);
        let written = match existing {
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                api.replace(&cfg.secret_name, &PostParams::default(), &secret).await
            }
            None => api.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %cfg.secret_name, "serving certificate generated");
                return Ok(stored);
            }
            // Another replica wrote first: use theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    api.get_opt(&cfg.secret_name)
        .await?
        .and_then(|s| usable(&s, &names))
        .ok_or_else(|| SelfManagedError::SecretContention(cfg.secret_name.clone()))
}

/// Sets `bundle` in every one of `slots`; whether any changed. Every slot is visited (a short-circuiting `any`
/// over a lazy `map` would stop at the first change and leave the other webhooks untrusting).
fn set_bundle<'a>(slots: impl Iterator<Item = &'a mut Option<ByteString>>, bundle: &ByteString) -> bool {
    let mut changed = false;
    for slot in slots {
        changed |= slot.replace(bundle.clone()).as_ref() != Some(bundle);
    }
    changed
}

/// Sets `caBundle` on every webhook of both configurations, the JobSet and the pod webhooks (get, modify, replace:
/// `webhooks` is a list, which a merge patch would replace wholesale). A configuration that is
/// missing is an error, retried: its webhooks would otherwise be called without trusting our certificate.
pub async fn inject_ca_bundle(client: &Client, cfg: &SelfManaged, ca_bundle: &[u8]) -> Result<(), SelfManagedError> {
    let bundle = ByteString(ca_bundle.to_vec());
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let name = &cfg.mutating_configuration;
    let mut m = mutating.get_opt(name).await?.ok_or_else(|| SelfManagedError::ConfigurationMissing(name.clone()))?;
    if set_bundle(m.webhooks.iter_mut().flatten().map(|h| &mut h.client_config.ca_bundle), &bundle) {
        mutating.replace(name, &PostParams::default(), &m).await?;
    }
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let mut v = validating
        .get_opt(&cfg.validating_configuration)
        .await?
        .ok_or_else(|| SelfManagedError::ConfigurationMissing(cfg.validating_configuration.clone()))?;
    if set_bundle(v.webhooks.iter_mut().flatten().map(|h| &mut h.client_config.ca_bundle), &bundle) {
        validating.replace(&cfg.validating_configuration, &PostParams::default(), &v).await?;
    }
    Ok(())
}

async fn reconcile_once(client: &Client, cfg: &SelfManaged, store: &CertStore) -> Result<(), SelfManagedError> {
    let stored = ensure_secret(client, cfg).await?;
    // Trust first, serve second, so a renewed certificate is never served before the API server trusts its CA.
    let injected = inject_ca_bundle(client, cfg, &stored.ca_bundle).await;
    store.load_pem(&stored.cert, &stored.key)?;
    injected
}

/// Keeps the self-managed certificates current for as long as it runs: every `cfg.refresh`, or after 10 s when a
/// step failed.
pub async fn run_self_managed(client: Client, cfg: SelfManaged, store: Arc<CertStore>) {
    loop {
        let wait = match reconcile_once(&client, &cfg, &store).await {
            Ok(()) => cfg.refresh,
            Err(e) => {
                tracing::warn!(error = %e, category = e.category(), "self-managed certificates not in place yet");
                Duration::from_secs(10)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The default self-managed setup for our deployment.
pub fn default_self_managed(namespace: &str) -> SelfManaged {
    SelfManaged {
        namespace: namespace.to_owned(),
        secret_name: config::SECRET_NAME.into(),
        service_name: config::SERVICE_NAME.into(),
        mutating_configuration: config::MUTATING_CONFIGURATION.into(),
        validating_configuration: config::VALIDATING_CONFIGURATION.into(),
        refresh: Duration::from_secs(60 * 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SelfManaged {
        default_self_managed("muster-system")
    }

    #[test]
    fn the_bundle_reaches_every_webhook_not_only_the_first() {
        let (old, new) = (ByteString(b"old".to_vec()), ByteString(b"new".to_vec()));
        let mut slots = vec![None, Some(old.clone()), Some(new.clone())];
        assert!(set_bundle(slots.iter_mut(), &new));
        assert!(slots.iter().all(|s| s.as_ref() == Some(&new)), "{slots:?}");
        assert!(!set_bundle(slots.iter_mut(), &new), "nothing to change: no write");
    }

    #[test]
    fn generated_secret_is_usable_until_close_to_expiry() {
        let names = cfg().dns_names();
        let g = tls::generate_certs(&names, Validity::default()).expect("generate");
        let stored = StoredCerts {
            ca_bundle: g.ca_cert_pem.into_bytes(),
            cert: g.cert_pem.into_bytes(),
            key: g.key_pem.into_bytes(),
        };
        let fresh = secret_with("s", "ns", &names, &stored, unix_now() + 365 * 24 * 3600);
        assert_eq!(usable(&fresh, &names), Some(stored.clone()));
        let expiring = secret_with("s", "ns", &names, &stored, unix_now() + 24 * 3600);
        assert_eq!(usable(&expiring, &names), None);
        let other_names = secret_with("s", "ns", &["x".into()], &stored, unix_now() + 365 * 24 * 3600);
        assert_eq!(usable(&other_names, &names), None);
        assert_eq!(
            names,
            vec![
                "muster-webhook-service",
                "muster-webhook-service.muster-system",
                "muster-webhook-service.muster-system.svc",
                "muster-webhook-service.muster-system.svc.cluster.local"
            ]
        );
    }
}
