//! Webhook latency over TLS on loopback, for a JobSet with 64 ReplicatedJobs: the `mjobset.kb.io` (mutate) and
//! `vjobset.kb.io` (validate, CREATE and UPDATE) paths of the real webhook server (`muster_admission::serve`),
//! against baselines measured in the same run:
//!
//! - the same request, same TLS and HTTP stack (rustls with ring, hyper HTTP/1.1, axum), answered by a trivial
//!   always-allow handler that does not even parse the body: what transport alone costs;
//! - the webhook handler in-process (`Webhooks::review`: AdmissionReview bytes in, bytes out, no network);
//! - the pure function alone (`default_patch`, `validate_create`, `validate_update` on an already decoded object).
//!
//! Each client keeps one connection open, as the API server does. Scenarios are interleaved request by request so
//! that background noise hits them all alike. The server runs on its own 2-worker runtime, the client on a
//! current-thread runtime, like two processes on one machine.
//!
//! `cargo bench -p muster-bench --bench webhook_latency` (`MUSTER_BENCH_ROUNDS`, default 2000, sets the samples
//! per scenario). Prints a Markdown table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use muster_admission::tls::{self, CertStore, Validity};
use muster_admission::webhook::jobset::validate::{ExistingPvcs, validate_create, validate_update};
use muster_admission::webhook::jobset::{decode_jobset, default_patch};
use muster_admission::webhook::review::{Endpoint, MUTATE_PATH, NoPvcs, VALIDATE_PATH, Webhooks};
use muster_admission::{FeatureGates, ServeConfig, serve};
use muster_bench::{Summary, load_average, ms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

mod common;

use common::{Connection, Error};

const REPLICATED_JOBS: usize = 64;
const TRIVIAL_PATH: &str = "/allow";
const TRIVIAL_RESPONSE: &str =
    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"b","allowed":true}}"#;

// ---------------------------------------------------------------------------------------------------------------
// The JobSet: 64 ReplicatedJobs of 4 Jobs × 8 GPU pods, with the policies validation walks
// ---------------------------------------------------------------------------------------------------------------

fn replicated_job(i: usize, defaulted: bool) -> Value {
    let name = format!("rjob-{i:02}");
    let env: Vec<Value> = ["NCCL_DEBUG", "NCCL_IB_HCA", "OMP_NUM_THREADS", "MASTER_PORT", "WORLD_SIZE"]
        .iter()
        .map(|n| json!({"name": n, "value": "1"}))
        .chain([json!({"name": "RANK", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})])
        .collect();
    let container = json!({
        "name": "trainer", "image": "registry.example.com/ml/trainer:2026.08",
        "command": ["torchrun"], "args": ["--nnodes=256", "--nproc-per-node=8", "train.py", "--config=/etc/cfg.yaml"],
        "env": env,
        "ports": [{"containerPort": 29500, "name": "dist"}],
        "resources": {"limits": {"nvidia.com/gpu": "8", "cpu": "96", "memory": "1Ti"},
            "requests": {"nvidia.com/gpu": "8", "cpu": "90", "memory": "900Gi"}},
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "checkpoints", "mountPath": "/ckpt"}]
    });
    let mut pod = json!({
        "schedulerName": "muster-scheduler",
        "nodeSelector": {"nvidia.com/gpu.product": "H100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}],
        "containers": [container]
    });
    let mut job = json!({"parallelism": 8, "completions": 8, "backoffLimit": 0,
        "template": {"metadata": {"labels": {"app": "trainer", "rjob": name}}}});
    let mut rjob = json!({"name": name, "replicas": 4});
    if defaulted {
        pod["restartPolicy"] = json!("OnFailure");
        job["completionMode"] = json!("Indexed");
        rjob["groupName"] = json!("default");
    }
    job["template"]["spec"] = pod;
    rjob["template"] = json!({"metadata": {"labels": {"team": "ml"}}, "spec": job});
    rjob
}

/// As a user writes it (`defaulted: false`) or as the validating webhook sees it after the mutating webhook and the
/// CRD defaults (`defaulted: true`).
fn jobset(defaulted: bool) -> Value {
    let rjobs: Vec<Value> = (0..REPLICATED_JOBS).map(|i| replicated_job(i, defaulted)).collect();
    let mut spec = json!({
        "replicatedJobs": rjobs,
        "failurePolicy": {"maxRestarts": 3, "rules": [
            {"name": "failOnConfig", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"],
                "targetReplicatedJobs": ["rjob-00", "rjob-01"]},
            {"name": "restartOnXid", "action": "RestartJobSet", "onJobFailureMessagePatterns": ["Xid (79|94)"]},
            {"action": "RestartJobSetAndIgnoreMaxRestarts", "onJobFailureReasons": ["DeadlineExceeded"]}]},
        "successPolicy": {"operator": "All", "targetReplicatedJobs": ["rjob-00", "rjob-63"]},
        "coordinator": {"replicatedJob": "rjob-00", "jobIndex": 0, "podIndex": 0},
        "volumeClaimPolicies": [{"templates": [{"metadata": {"name": "checkpoints"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Ti"}}}}]}]
    });
    if defaulted {
        spec["network"] = json!({"enableDNSHostnames": true, "publishNotReadyAddresses": true});
        spec["startupPolicy"] = json!({"startupPolicyOrder": "AnyOrder"});
        spec["failurePolicy"]["restartStrategy"] = json!("Recreate");
        spec["failurePolicy"]["rules"][2]["name"] = json!("failurePolicyRule2");
        spec["volumeClaimPolicies"][0]["retentionPolicy"] = json!({"whenDeleted": "Delete"});
    }
    json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "llm-pretrain", "namespace": "research"}, "spec": spec})
}

/// An update Kueue-style admission makes: suspended → running, with a node selector written into every pod
/// template (allowed by the suspended-template carve-out, so validation does its full comparison).
fn admitted(old: &Value) -> Value {
    let mut new = old.clone();
    new["spec"]["suspend"] = json!(false);
    for rjob in new["spec"]["replicatedJobs"].as_array_mut().into_iter().flatten() {
        rjob["template"]["spec"]["template"]["spec"]["nodeSelector"]["cloud.example.com/block"] = json!("b-17");
    }
    new
}

fn review(operation: &str, object: &Value, old_object: Option<&Value>) -> Bytes {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "4c0d1d4e-7d6b-4f5e-9d4a-3f1a2b3c4d5e",
            "kind": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "kind": "JobSet"},
            "resource": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "resource": "jobsets"},
            "requestKind": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "kind": "JobSet"},
            "requestResource": {"group": "jobset.x-k8s.io", "version": "v1alpha2", "resource": "jobsets"},
            "name": "llm-pretrain", "namespace": "research", "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object, "oldObject": old_object,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }}
        }
    });
    Bytes::from(serde_json::to_vec(&review).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------------------------------------------

/// The trivial always-allow server, on the webhook server's own stack: `tls::server_config`, tokio-rustls, hyper
/// HTTP/1.1 with the same header timeout, an axum router.
async fn trivial_server() -> Result<(SocketAddr, String), Error> {
    let certs = tls::generate_certs(&["127.0.0.1".to_owned()], Validity::default())?;
    let store = CertStore::new();
    store.load_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())?;
    let acceptor = TlsAcceptor::from(tls::server_config(store)?);
    let app = Router::new().route(
        TRIVIAL_PATH,
        post(|_body: Bytes| async { ([(header::CONTENT_TYPE, "application/json")], TRIVIAL_RESPONSE) }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    Ok((addr, certs.ca_cert_pem))
}

fn connector(ca_pem: &str) -> Result<TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A kept-alive HTTP/1.1 connection over TLS to `addr` (Go's client, like the API server's, sets `TCP_NODELAY`).
async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Result<Connection, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Connection::over(tls.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?).await
}

/// The webhook's answer must be an allowed review (with a patch for the mutate path): a benchmark of rejections
/// would measure something else.
fn check_allowed(what: &str, answer: &[u8], want_patch: bool) -> Result<(), Error> {
    let v: Value = serde_json::from_slice(answer)?;
    let response = &v["response"];
    if response["allowed"] != json!(true) || response.get("patch").is_some() != want_patch {
        return Err(format!("{what}: unexpected answer {}", &v.to_string()[..v.to_string().len().min(600)]).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Mutate,
    ValidateCreate,
    ValidateUpdate,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Mutate => "mutate (CREATE)",
            Self::ValidateCreate => "validate (CREATE)",
            Self::ValidateUpdate => "validate (UPDATE)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// The webhook server over TLS, one kept-alive connection.
    Tls,
    /// The trivial always-allow handler over the same stack, same body.
    TrivialTls,
    /// The webhook server over a new TLS connection per request.
    TlsNewConnection,
    /// `Webhooks::review` in-process.
    Handler,
    /// The pure function on a decoded object.
    Pure,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            Self::Tls => "webhook server, TLS keep-alive",
            Self::TrivialTls => "trivial always-allow handler, same TLS stack",
            Self::TlsNewConnection => "webhook server, new TLS connection per request",
            Self::Handler => "handler in-process (AdmissionReview bytes in/out)",
            Self::Pure => "pure function (decoded object)",
        }
    }
}

struct Scenario {
    path: Path,
    how: How,
    samples: Vec<Duration>,
}

struct Bodies {
    mutate: Bytes,
    create: Bytes,
    update: Bytes,
}

impl Bodies {
    fn of(&self, path: Path) -> &Bytes {
        match path {
            Path::Mutate => &self.mutate,
            Path::ValidateCreate => &self.create,
            Path::ValidateUpdate => &self.update,
        }
    }
}

fn main() -> Result<(), Error> {
    let load_before = load_average();
    let rounds: usize = std::env::var("MUSTER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2000);
    let warmup = (rounds / 10).max(20);

    let user = jobset(false);
    let defaulted = jobset(true);
    let mut suspended = defaulted.clone();
    suspended["spec"]["suspend"] = json!(true);
    let running = admitted(&suspended);
    let bodies = Bodies {
        mutate: review("CREATE", &user, None),
        create: review("CREATE", &defaulted, None),
        update: review("UPDATE", &running, Some(&suspended)),
    };
    let decoded = decode_jobset(&defaulted)?;
    let (decoded_old, decoded_new) = (decode_jobset(&suspended)?, decode_jobset(&running)?);
    let gates = FeatureGates::default();
    let webhooks = Webhooks::new(gates, Arc::new(NoPvcs));

    // The servers: their own runtime and threads, as another process would be.
    let server_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let server = server_runtime.block_on(serve(ServeConfig::loopback()))?;
    let (trivial_addr, trivial_ca) = server_runtime.block_on(trivial_server())?;
    let webhook_addr = server.local_addr();
    let webhook_ca = server.ca_pem().ok_or("the loopback server generates its CA")?.to_owned();

    let client = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let scenarios = client.block_on(async {
        let webhook_tls = connector(&webhook_ca)?;
        let trivial_tls = connector(&trivial_ca)?;
        let mut webhook_conn = connect(webhook_addr, &webhook_tls).await?;
        let mut trivial_conn = connect(trivial_addr, &trivial_tls).await?;

        check_allowed("mutate", &webhook_conn.post(MUTATE_PATH, &bodies.mutate).await?, true)?;
        check_allowed("validate CREATE", &webhook_conn.post(VALIDATE_PATH, &bodies.create).await?, false)?;
        check_allowed("validate UPDATE", &webhook_conn.post(VALIDATE_PATH, &bodies.update).await?, false)?;
        if !validate_create(&decoded, &gates, &ExistingPvcs::none()).is_empty()
            || !validate_update(&decoded_old, &decoded_new, &gates).is_empty()
        {
            return Err::<_, Error>("the fixture does not validate".into());
        }

        let mut scenarios = Vec::new();
        for path in [Path::Mutate, Path::ValidateCreate, Path::ValidateUpdate] {
            for how in [How::Tls, How::TrivialTls, How::Handler, How::Pure] {
                scenarios.push(Scenario { path, how, samples: Vec::with_capacity(rounds) });
            }
        }
        scenarios.push(Scenario {
            path: Path::ValidateCreate,
            how: How::TlsNewConnection,
            samples: Vec::with_capacity(rounds),
        });

        for round in 0..warmup + rounds {
            for s in &mut scenarios {
                let body = bodies.of(s.path);
                let endpoint_path = if s.path == Path::Mutate { MUTATE_PATH } else { VALIDATE_PATH };
                let start = Instant::now();
                match s.how {
                    How::Tls => {
                        webhook_conn.post(endpoint_path, body).await?;
                    }
                    How::TrivialTls => {
                        trivial_conn.post(TRIVIAL_PATH, body).await?;
                    }
                    How::TlsNewConnection => {
                        connect(webhook_addr, &webhook_tls).await?.post(endpoint_path, body).await?;
                    }
                    How::Handler => {
                        let endpoint = if s.path == Path::Mutate { Endpoint::Mutate } else { Endpoint::Validate };
                        std::hint::black_box(webhooks.review(endpoint, body).await?);
                    }
                    How::Pure => match s.path {
                        Path::Mutate => {
                            std::hint::black_box(default_patch(&user)?);
                        }
                        Path::ValidateCreate => {
                            std::hint::black_box(validate_create(&decoded, &gates, &ExistingPvcs::none()));
                        }
                        Path::ValidateUpdate => {
                            std::hint::black_box(validate_update(&decoded_old, &decoded_new, &gates));
                        }
                    },
                }
                let elapsed = start.elapsed();
                if round >= warmup {
                    s.samples.push(elapsed);
                }
            }
        }
        Ok(scenarios)
    })?;
    drop(server);

    println!(
        "Webhook latency, JobSet with {REPLICATED_JOBS} ReplicatedJobs; {rounds} samples per row after {warmup} warm-up \
         rounds; AdmissionReview bodies: mutate {} KiB, validate CREATE {} KiB, validate UPDATE {} KiB; {} CPUs; load \
         average before {load_before}, after {}.\n",
        bodies.mutate.len() / 1024,
        bodies.create.len() / 1024,
        bodies.update.len() / 1024,
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );
    println!("| path | measured | p50 ms | p99 ms | mean ms | p50 vs trivial handler over TLS |");
    println!("|---|---|---:|---:|---:|---:|");
    for s in &scenarios {
        let st = Summary::of(&s.samples);
        let baseline =
            scenarios.iter().find(|b| b.path == s.path && b.how == How::TrivialTls).map(|b| Summary::of(&b.samples));
        let ratio = match (s.how, baseline) {
            (How::TrivialTls, _) => "1.00× (baseline)".to_owned(),
            (_, Some(b)) => format!("{:.2}×", st.p50.as_secs_f64() / b.p50.as_secs_f64()),
            (_, None) => String::new(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {ratio} |",
            s.path.name(),
            s.how.name(),
            ms(st.p50),
            ms(st.p99),
            ms(st.mean)
        );
    }
    Ok(())
}
