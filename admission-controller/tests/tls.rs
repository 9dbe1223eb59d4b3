//! The webhook server over real TLS on loopback, started the way an integration test starts it.

use std::sync::Arc;
use std::time::Duration;

use muster_admission::server::{CertSource, ServeConfig, serve};
use muster_admission::tls::{CERT_FILE, KEY_FILE, Validity, generate_certs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "kind": "JobSet"},
            "resource": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "resource": "jobsets"},
            "name": "js", "namespace": "default", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
                "metadata": {"name": "js", "namespace": "default"}, "spec": {"replicatedJobs": []}},
            "oldObject": null
        }
    })
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Sends one HTTP/1.1 POST over TLS and returns the raw response.
async fn https_post(addr: std::net::SocketAddr, ca_pem: &str, server_name: &str, path: &str, body: &[u8]) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut tls = connector(ca_pem).connect(name, tcp).await.expect("TLS handshake verifies against the CA");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(body).await.expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn loopback_server_answers_over_tls_and_stops_when_dropped() {
    let server = serve(ServeConfig::loopback()).await.expect("serve");
    assert!(server.is_ready());
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(server.url("/x"), format!("https://{addr}/x"));
    let ca = server.ca_pem().expect("generated CA").to_owned();
    let body = serde_json::to_vec(&review()).expect("json");

    for name in ["127.0.0.1", "localhost"] {
        let response = https_post(addr, &ca, name, "/mutate-jobset-x-k8s-io-v1alpha2-jobset", &body).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""allowed":true"#), "{response}");
        assert!(response.contains(r#""patchType":"JSONPatch""#), "{response}");
    }

    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "the port is closed once the server is dropped");
}

#[tokio::test]
async fn oversized_body_over_tls_is_refused_with_413_before_it_is_sent() {
    let server = serve(ServeConfig::loopback()).await.expect("serve");
    let ca = server.ca_pem().expect("CA").to_owned();
    let tcp = TcpStream::connect(server.local_addr()).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1".to_owned()).expect("server name");
    let mut tls = connector(&ca).connect(name, tcp).await.expect("handshake");
    let head = "POST /validate-jobset-x-k8s-io-v1alpha2-jobset HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8388608\r\nConnection: close\r\n\r\n";
    tls.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the server answers without waiting for the body");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn certificates_from_a_directory_make_the_server_ready() {
    let dir = std::env::temp_dir().join(format!("muster-tls-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = ServeConfig {
        certs: CertSource::Dir { path: dir.clone(), poll: Duration::from_millis(20) },
        ..ServeConfig::loopback()
    };
    let server = serve(config).await.expect("serve");
    assert!(server.ca_pem().is_none());
    assert!(!server.is_ready(), "no certificate yet");

    let certs = generate_certs(&["127.0.0.1".into()], Validity::default()).expect("generate");
    std::fs::write(dir.join(CERT_FILE), &certs.cert_pem).expect("write");
    std::fs::write(dir.join(KEY_FILE), &certs.key_pem).expect("write");
    for _ in 0..200 {
        if server.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.is_ready());
    let body = serde_json::to_vec(&review()).expect("json");
    let response = https_post(
        server.local_addr(),
        &certs.ca_cert_pem,
        "127.0.0.1",
        "/validate-jobset-x-k8s-io-v1alpha2-jobset",
        &body,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
