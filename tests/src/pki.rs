//! A throw-away PKI for one test cluster: a CA, the apiserver's serving certificate, an admin client
//! certificate in `system:masters`, a service-account signing key, and the kubeconfig that uses them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Error, Result};

/// Files written by [`Pki::generate`], all PEM.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_public: PathBuf,
    pub sa_private: PathBuf,
    pub ca_pem: String,
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

impl Pki {
    pub(crate) fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = name("muster-test-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        // The apiserver is reached as https://127.0.0.1:<port>; rustls checks the IP SAN.
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        serving.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        serving.distinguished_name = name("kube-apiserver", None);
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name = name("admin", Some("system:masters"));
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        // ECDSA P-256: the apiserver accepts it for signing service-account tokens (ES256).
        let sa_key = KeyPair::generate()?;

        let write = |file: &str, contents: &str| -> Result<PathBuf> {
            let path = dir.join(file);
            std::fs::write(&path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(path)
        };
        let ca_pem = ca.pem();
        Ok(Self {
            ca_cert: write("ca.crt", &ca_pem)?,
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            admin_cert: write("admin.crt", &admin_cert.pem())?,
            admin_key: write("admin.key", &admin_key.serialize_pem())?,
            sa_public: write("sa.pub", &sa_key.public_key_pem())?,
            sa_private: write("sa.key", &sa_key.serialize_pem())?,
            ca_pem,
        })
    }

    /// A kubeconfig for the admin user, referring to the PEM files by absolute path. The same file
    /// serves the Go components, kube-rs and a human with kubectl.
    pub(crate) fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<()> {
        let yaml = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: muster-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n\
             - name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
             contexts:\n\
             - name: muster-test\n  context:\n    cluster: muster-test\n    user: admin\n    namespace: default\n\
             current-context: muster-test\n",
            ca = self.ca_cert.display(),
            cert = self.admin_cert.display(),
            key = self.admin_key.display(),
        );
        std::fs::write(path, yaml).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubeconfig_points_at_the_generated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = super::Pki::generate(dir.path()).expect("pki");
        let kubeconfig = dir.path().join("kubeconfig");
        pki.write_kubeconfig(&kubeconfig, "https://127.0.0.1:1").expect("kubeconfig");
        let parsed = kube::config::Kubeconfig::read_from(&kubeconfig).expect("parse kubeconfig");
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.client_certificate.as_deref(), pki.admin_cert.to_str());
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:1"));
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
