//! TLS for the webhook server: rustls with the ring provider only, a certificate store the handshake reads on every
//! connection (so a rotated certificate is served from the next connection on), and the two ways certificates get
//! into it:
//! - files in a directory (cert-manager's Secret mounted as a volume), polled, because kubelet updates a Secret
//!   volume by swapping a `..data` symlink rather than writing the files in place;
//! - certificates we generate ourselves: a CA and a serving certificate signed by it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The file names cert-manager (and kubebuilder's layout) use in the mounted Secret.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("parsing PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("loading the certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

impl TlsError {
    /// A short, stable label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::NoCertificate | Self::Pem(_) => "pem",
            Self::Rustls(_) => "key",
            Self::Generate(_) => "generate",
        }
    }
}

/// The ring provider, the only one compiled in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate, swapped atomically when it changes. Until one is loaded, handshakes fail and the
/// server is not ready.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn is_ready(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or_else(|poisoned| poisoned.into_inner().is_some())
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        let mut slot = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(key);
    }

    /// Parses a PEM certificate chain and private key, checks that they belong together, and serves them.
    pub fn load_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        self.set(Arc::new(certified_key_from_pem(cert_pem, key_pem)?));
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// A rustls server configuration serving whatever `store` holds, TLS 1.2 and 1.3, HTTP/1.1 only.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads `tls.crt` and `tls.key` from `dir`.
pub fn read_cert_dir(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
    };
    Ok((read(CERT_FILE)?, read(KEY_FILE)?))
}

/// Loads the certificate in `dir` now, then re-reads it every `interval` and serves it again when the files
/// changed. A broken update (half-written files, a key that does not match) is logged and the previous
/// certificate kept. Runs until the task is dropped.
pub async fn watch_cert_dir(store: Arc<CertStore>, dir: PathBuf, interval: Duration) {
    let mut loaded: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let dir2 = dir.clone();
        let read = tokio::task::spawn_blocking(move || read_cert_dir(&dir2)).await;
        let files = match read {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, category = e.category(), dir = %dir.display(), "serving certificate not readable");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate reader task failed");
                continue;
            }
        };
        if loaded.as_ref() == Some(&files) {
            continue;
        }
        match store.load_pem(&files.0, &files.1) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "serving certificate loaded");
                loaded = Some(files);
            }
            Err(e) => tracing::warn!(error = %e, category = e.category(), "serving certificate rejected"),
        }
    }
}

/// A CA and a serving certificate signed by it, in PEM.
#[derive(Clone, Debug)]
pub struct GeneratedCerts {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// How long generated certificates live.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub ca: Duration,
    pub serving: Duration,
}

impl Default for Validity {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self { ca: Duration::from_secs(10 * 365 * DAY), serving: Duration::from_secs(365 * DAY) }
    }
}

/// Generates a fresh CA and a serving certificate for `names` (DNS names or IP addresses), ECDSA P-256.
pub fn generate_certs(names: &[String], validity: Validity) -> Result<GeneratedCerts, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // Backdated a little, for API servers whose clock runs behind ours.
    let not_before = rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(Duration::from_secs(300));

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "muster-webhook-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = not_before;
    ca.not_after = not_before + validity.ca;
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(names.to_vec())?;
    serving.distinguished_name.push(DnType::CommonName, names.first().map_or("muster-webhook", String::as_str));
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.not_before = not_before;
    serving.not_after = not_before + validity.serving;
    serving.use_authority_key_identifier_extension = true;
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let cert = serving.signed_by(&key, &issuer)?;

    Ok(GeneratedCerts {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_store_becomes_ready() {
        let certs = generate_certs(&["127.0.0.1".into(), "localhost".into()], Validity::default()).expect("generate");
        let store = CertStore::new();
        assert!(!store.is_ready());
        store.load_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).expect("load");
        assert!(store.is_ready());
    }

    #[test]
    fn mismatched_key_is_rejected_and_previous_certificate_kept() {
        let a = generate_certs(&["a.example".into()], Validity::default()).expect("generate");
        let b = generate_certs(&["b.example".into()], Validity::default()).expect("generate");
        let store = CertStore::new();
        store.load_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).expect("load");
        let err = store.load_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).expect_err("mismatch");
        assert_eq!(err.category(), "key");
        assert!(store.is_ready());
        assert!(matches!(store.load_pem(b"", b""), Err(TlsError::NoCertificate)));
    }

    #[test]
    fn server_config_builds_with_ring_only() {
        assert!(server_config(CertStore::new()).is_ok());
    }

    #[tokio::test]
    async fn cert_dir_is_reloaded_when_the_symlink_is_swapped() {
        // kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/
        let dir = std::env::temp_dir().join(format!("muster-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write_version = |name: &str, certs: &GeneratedCerts| {
            let version = dir.join(name);
            std::fs::create_dir_all(&version).expect("mkdir");
            std::fs::write(version.join(CERT_FILE), &certs.cert_pem).expect("write");
            std::fs::write(version.join(KEY_FILE), &certs.key_pem).expect("write");
            let tmp = dir.join("..data_tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(name, &tmp).expect("symlink");
            std::fs::rename(&tmp, dir.join("..data")).expect("swap");
        };
        let first = generate_certs(&["first.example".into()], Validity::default()).expect("generate");
        let second = generate_certs(&["second.example".into()], Validity::default()).expect("generate");
        write_version("..v1", &first);
        for f in [CERT_FILE, KEY_FILE] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("symlink");
        }

        let store = CertStore::new();
        let task = tokio::spawn(watch_cert_dir(store.clone(), dir.clone(), Duration::from_millis(20)));
        let served = |store: &CertStore| store.current.read().ok().and_then(|c| c.as_ref().map(|k| k.cert[0].to_vec()));
        let first_der = CertificateDer::from_pem_slice(first.cert_pem.as_bytes()).expect("pem").to_vec();
        let second_der = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).expect("pem").to_vec();
        for _ in 0..200 {
            if served(&store).as_ref() == Some(&first_der) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(served(&store), Some(first_der));
        write_version("..v2", &second);
        for _ in 0..200 {
            if served(&store).as_ref() == Some(&second_der) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(served(&store), Some(second_der));
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
