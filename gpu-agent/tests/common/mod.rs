//! Shared by the agent's integration tests: the mock NVML library (built on demand), fixtures, running the
//! agent binary, a fake kubelet, and a tiny HTTP client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use muster_api::GPUNodeStatus;
use muster_gpu_agent::podresources::v1;
use muster_gpu_agent::podresources::v1::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Overrides where the mock library is (skips the build).
pub const MOCK_LIBRARY_ENV: &str = "MUSTER_MOCK_NVML_LIB";
pub const FIXTURE_ENV: &str = "MUSTER_MOCK_NVML_FIXTURE";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("gpu-agent sits in the workspace root").to_path_buf()
}

/// `libmuster_mock_nvml.so`. `cargo test` does not build cdylib members, so this runs
/// `cargo build -p muster-mock-nvml` (a no-op when it is up to date) and takes the path cargo reports, which
/// follows `CARGO_TARGET_DIR` and the default `target/` alike. Fails the test, loudly, if that does not work:
/// these tests exist to run the real NVML path and must never pass by skipping it.
pub fn mock_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        if let Some(path) = std::env::var_os(MOCK_LIBRARY_ENV) {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "{MOCK_LIBRARY_ENV}={} is not a file", path.display());
            return path;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let output = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "muster-mock-nvml", "--message-format=json"])
            .current_dir(workspace_root())
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo to build the mock NVML library");
        assert!(
            output.status.success(),
            "`cargo build -p muster-mock-nvml` failed ({}); the mock NVML library is needed to test the agent's \
             NVML path (or set {MOCK_LIBRARY_ENV} to a built libmuster_mock_nvml.so)",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let library = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "muster_mock_nvml")
            .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .find(|f| f.extension().is_some_and(|e| e == "so"));
        let library = library.unwrap_or_else(|| panic!("cargo built muster-mock-nvml but reported no .so:\n{stdout}"));
        assert!(library.is_file(), "{} does not exist", library.display());
        library
    })
}

/// The agent binary cargo built for these tests.
pub fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_muster-gpu-agent")
}

/// The 8-GPU HGX H100 fixture, to modify.
pub fn hgx_h100x8() -> Value {
    let path = workspace_root().join("tests/mock-nvml/fixtures/hgx-h100x8.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A temporary directory holding a fixture file that tests can rewrite under a running agent.
pub struct FixtureFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl FixtureFile {
    pub fn new(fixture: &Value) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fixture.json");
        let file = FixtureFile { dir, path };
        file.write(fixture);
        file
    }

    /// Replaces the fixture atomically (the mock re-reads it when it changes).
    pub fn write(&self, fixture: &Value) {
        let staged = self.path.with_extension("staged");
        std::fs::write(&staged, serde_json::to_vec_pretty(fixture).expect("serialise")).expect("write fixture");
        std::fs::rename(&staged, &self.path).expect("replace fixture");
    }
}

/// Runs `muster-gpu-agent --dump-json` on the mock with `fixture`; `socket` is the kubelet socket to use.
pub async fn dump(fixture: &Path, library: &Path, socket: &Path) -> GPUNodeStatus {
    dump_with_log(fixture, library, socket).await.0
}

/// [`dump`], with the agent's warnings.
pub async fn dump_with_log(fixture: &Path, library: &Path, socket: &Path) -> (GPUNodeStatus, String) {
    let output = tokio::process::Command::new(agent_binary())
        .arg("--dump-json")
        .arg("--nvml-library")
        .arg(library)
        .arg("--pod-resources-socket")
        .arg(socket)
        .env(FIXTURE_ENV, fixture)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running the agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent --dump-json failed ({}):\n{stderr}", output.status);
    let status = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("agent printed no status ({e}):\n{}\n{stderr}", String::from_utf8_lossy(&output.stdout))
    });
    (status, stderr.into_owned())
}

/// A socket path where no kubelet listens.
pub fn no_kubelet() -> PathBuf {
    PathBuf::from("/nonexistent/pod-resources/kubelet.sock")
}

/// A fake kubelet serving the pod-resources API on a unix socket in a temporary directory.
pub struct FakeKubelet {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Answers {
    list: v1::ListPodResourcesResponse,
    allocatable: Option<v1::AllocatableResourcesResponse>,
}

#[tonic::async_trait]
impl PodResourcesLister for Answers {
    async fn list(
        &self,
        _: tonic::Request<v1::ListPodResourcesRequest>,
    ) -> Result<tonic::Response<v1::ListPodResourcesResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.list.clone()))
    }

    async fn get_allocatable_resources(
        &self,
        _: tonic::Request<v1::AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<v1::AllocatableResourcesResponse>, tonic::Status> {
        match &self.allocatable {
            Some(a) => Ok(tonic::Response::new(a.clone())),
            None => Err(tonic::Status::unimplemented("GetAllocatableResources")),
        }
    }
}

impl FakeKubelet {
    /// `pods`: (namespace, name, device ids of `nvidia.com/gpu`); `allocatable`: `None` answers Unimplemented.
    pub fn start(pods: &[(&str, &str, &[&str])], allocatable: Option<&[&str]>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("kubelet.sock");
        let gpu = |ids: &[&str]| v1::ContainerDevices {
            resource_name: "nvidia.com/gpu".into(),
            device_ids: ids.iter().map(|s| s.to_string()).collect(),
            topology: None,
        };
        let list = v1::ListPodResourcesResponse {
            pod_resources: pods
                .iter()
                .map(|(namespace, name, ids)| v1::PodResources {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    containers: vec![v1::ContainerResources {
                        name: "main".into(),
                        devices: vec![gpu(ids)],
                        ..Default::default()
                    }],
                })
                .collect(),
        };
        let allocatable =
            allocatable.map(|ids| v1::AllocatableResourcesResponse { devices: vec![gpu(ids)], ..Default::default() });
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the fake kubelet socket");
        let service = PodResourcesListerServer::new(Answers { list, allocatable });
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        FakeKubelet { socket, _dir: dir, task }
    }
}

/// `GET path` over HTTP/1.0: (status code, content type, body).
pub async fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .unwrap_or_default()
        .to_string();
    Ok((status, content_type, body.to_string()))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent serving metrics only (no cluster), on the mock.
pub struct ServingAgent {
    pub address: String,
    child: tokio::process::Child,
}

impl ServingAgent {
    pub async fn start(fixture: &Path, library: &Path, socket: &Path) -> Self {
        let address = free_address();
        let child = tokio::process::Command::new(agent_binary())
            .args(["--no-publish", "--node-name", "gpu-node-1", "--poll-interval", "200ms", "--listen", &address])
            .arg("--nvml-library")
            .arg(library)
            .arg("--pod-resources-socket")
            .arg(socket)
            .env(FIXTURE_ENV, fixture)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("starting the agent");
        let agent = ServingAgent { address, child };
        let address = agent.address.clone();
        eventually(Duration::from_secs(30), "the agent's /readyz", || {
            let address = address.clone();
            async move { matches!(http_get(&address, "/readyz").await, Ok((200, _, _))).then_some(()) }
        })
        .await;
        agent
    }

    pub async fn metrics(&self) -> Metrics {
        let (status, content_type, body) = http_get(&self.address, "/metrics").await.expect("scrape /metrics");
        assert_eq!(status, 200);
        assert_eq!(content_type, muster_gpu_agent::server::OPENMETRICS);
        Metrics::parse(&body)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Scraped samples: `name{labels}` → value, labels as written.
pub struct Metrics {
    pub text: String,
    pub samples: Vec<(String, String, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some((name.to_string(), labels.to_string(), value.parse().ok()?))
            })
            .collect();
        Metrics { text: text.to_string(), samples }
    }

    /// The value of `name` on the series whose labels include every `key="value"` in `having`.
    pub fn value(&self, name: &str, having: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, labels, _)| n == name && having.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
            .map(|(_, _, v)| *v)
    }

    pub fn expect(&self, name: &str, having: &[(&str, &str)]) -> f64 {
        self.value(name, having).unwrap_or_else(|| panic!("no {name} with {having:?} in\n{}", self.text))
    }
}
