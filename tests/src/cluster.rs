//! Starting and stopping one control plane.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::{Value, json};

use crate::binaries::ControlPlaneBinaries;
use crate::manifests::install_crds;
use crate::nodes::{FAKE_NODE_LABEL, FakeNode};
use crate::pki::Pki;
use crate::process::{Process, tail_lines};
use crate::shared::{LogsOnPanic, TestNamespace};
use crate::{Error, Result, eventually};

/// kube-controller-manager controllers that [`ClusterConfig::full`] runs: enough for Jobs to create
/// pods, owners to garbage-collect their children, namespaces to finish deleting and headless
/// Services to get EndpointSlices.
pub const DEFAULT_CONTROLLERS: &[&str] =
    &["job-controller", "garbage-collector-controller", "namespace-controller", "endpointslice-controller"];

/// Lines of each component log shown when a test fails. `MUSTER_TEST_LOG_LINES` overrides it.
const DEFAULT_TAIL_LINES: usize = 40;

/// What to run. Start from [`ClusterConfig::apiserver_only`] or [`ClusterConfig::full`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// YAML files holding CustomResourceDefinitions, applied before anything else starts.
    pub crds: Vec<PathBuf>,
    /// kube-controller-manager `--controllers`; `None` runs no controller-manager.
    pub controllers: Option<Vec<String>>,
    /// `None` runs no scheduler.
    pub scheduler: Option<SchedulerConfig>,
    /// Run KWOK (required for `nodes`).
    pub kwok: bool,
    /// KWOK stage file; default: `tests/kwok/stages.yaml` from this source tree.
    pub kwok_stages: Option<PathBuf>,
    /// Fake nodes created (and waited Ready) at start-up.
    pub nodes: Vec<FakeNode>,
    /// Extra kube-apiserver flags, e.g. `--feature-gates=...`.
    pub apiserver_args: Vec<String>,
    /// Per-component readiness timeout.
    pub ready_timeout: Duration,
}

impl ClusterConfig {
    /// etcd and kube-apiserver only, like envtest: no Job controller, no GC, nothing scheduled.
    pub fn apiserver_only() -> Self {
        Self {
            crds: Vec::new(),
            controllers: None,
            scheduler: None,
            kwok: false,
            kwok_stages: None,
            nodes: Vec::new(),
            apiserver_args: Vec::new(),
            ready_timeout: Duration::from_secs(90),
        }
    }

    /// Everything: [`DEFAULT_CONTROLLERS`], the default scheduler and KWOK (add nodes with `node`).
    pub fn full() -> Self {
        Self {
            controllers: Some(DEFAULT_CONTROLLERS.iter().map(|c| (*c).to_owned()).collect()),
            scheduler: Some(SchedulerConfig::default()),
            kwok: true,
            ..Self::apiserver_only()
        }
    }

    /// [`Self::full`] with Muster's CRDs (JobSet, Gang, GPUNode) and a KWOK node per name, each with 8 GPUs,
    /// 64 CPUs and 512 GiB: the cluster the gang tests run on.
    pub fn gpu_fleet(nodes: &[&str]) -> Self {
        let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds");
        let mut config = Self::full().crds([
            crds.join("jobset.x-k8s.io_jobsets.yaml"),
            crds.join("muster.dev_gangs.yaml"),
            crds.join("muster.dev_gpunodes.yaml"),
        ]);
        for node in nodes {
            config = config.node(FakeNode::new(*node).gpus(8).cpu("64").memory("512Gi"));
        }
        config
    }

    pub fn crd(mut self, path: impl Into<PathBuf>) -> Self {
        self.crds.push(path.into());
        self
    }

    pub fn crds(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.crds.extend(paths);
        self
    }

    pub fn controllers<S: Into<String>>(mut self, controllers: impl IntoIterator<Item = S>) -> Self {
        self.controllers = Some(controllers.into_iter().map(Into::into).collect());
        self
    }

    pub fn scheduler(mut self, scheduler: SchedulerConfig) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    pub fn kwok(mut self) -> Self {
        self.kwok = true;
        self
    }

    /// A fake node; implies KWOK.
    pub fn node(mut self, node: FakeNode) -> Self {
        self.kwok = true;
        self.nodes.push(node);
        self
    }

    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }
}

/// kube-scheduler set-up: its profiles and extenders.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `schedulerName` of each profile, all with the default plugins.
    pub profiles: Vec<String>,
    pub extenders: Vec<Extender>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { profiles: vec!["default-scheduler".to_owned()], extenders: Vec::new() }
    }
}

impl SchedulerConfig {
    pub fn profile(mut self, scheduler_name: impl Into<String>) -> Self {
        self.profiles.push(scheduler_name.into());
        self
    }

    pub fn extender(mut self, extender: Extender) -> Self {
        self.extenders.push(extender);
        self
    }

    fn to_json(&self, kubeconfig: &Path) -> Value {
        json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig, "qps": 200, "burst": 400},
            "leaderElection": {"leaderElect": false},
            "profiles": self.profiles.iter().map(|name| json!({"schedulerName": name})).collect::<Vec<_>>(),
            "extenders": self.extenders.iter().map(Extender::to_json).collect::<Vec<_>>(),
        })
    }
}

/// One entry of `KubeSchedulerConfiguration.extenders` (kubescheduler.config.k8s.io/v1).
#[derive(Debug, Clone)]
pub struct Extender {
    /// e.g. `http://127.0.0.1:8888/scheduler`; verbs are appended to it.
    pub url_prefix: String,
    pub filter_verb: Option<String>,
    pub prioritize_verb: Option<String>,
    pub preempt_verb: Option<String>,
    pub bind_verb: Option<String>,
    pub weight: i64,
    pub node_cache_capable: bool,
    pub ignorable: bool,
    /// (resource name, ignoredByScheduler).
    pub managed_resources: Vec<(String, bool)>,
    pub http_timeout: Duration,
}

impl Extender {
    pub fn new(url_prefix: impl Into<String>) -> Self {
        Self {
            url_prefix: url_prefix.into(),
            filter_verb: None,
            prioritize_verb: None,
            preempt_verb: None,
            bind_verb: None,
            weight: 1,
            node_cache_capable: false,
            ignorable: false,
            managed_resources: Vec::new(),
            http_timeout: Duration::from_secs(5),
        }
    }

    pub fn filter(mut self, verb: impl Into<String>) -> Self {
        self.filter_verb = Some(verb.into());
        self
    }

    pub fn prioritize(mut self, verb: impl Into<String>, weight: i64) -> Self {
        self.prioritize_verb = Some(verb.into());
        self.weight = weight;
        self
    }

    pub fn preempt(mut self, verb: impl Into<String>) -> Self {
        self.preempt_verb = Some(verb.into());
        self
    }

    pub fn bind(mut self, verb: impl Into<String>) -> Self {
        self.bind_verb = Some(verb.into());
        self
    }

    pub fn node_cache_capable(mut self, yes: bool) -> Self {
        self.node_cache_capable = yes;
        self
    }

    pub fn ignorable(mut self, yes: bool) -> Self {
        self.ignorable = yes;
        self
    }

    pub fn managed_resource(mut self, name: impl Into<String>, ignored_by_scheduler: bool) -> Self {
        self.managed_resources.push((name.into(), ignored_by_scheduler));
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "urlPrefix": self.url_prefix,
            "weight": self.weight,
            "nodeCacheCapable": self.node_cache_capable,
            "ignorable": self.ignorable,
            "httpTimeout": format!("{}ms", self.http_timeout.as_millis()),
            "managedResources": self.managed_resources.iter()
                .map(|(name, ignored)| json!({"name": name, "ignoredByScheduler": ignored}))
                .collect::<Vec<_>>(),
        });
        for (key, verb) in [
            ("filterVerb", &self.filter_verb),
            ("prioritizeVerb", &self.prioritize_verb),
            ("preemptVerb", &self.preempt_verb),
            ("bindVerb", &self.bind_verb),
        ] {
            if let Some(verb) = verb {
                v[key] = json!(verb);
            }
        }
        v
    }
}

/// How long each start-up phase took.
#[derive(Debug, Clone, Default)]
pub struct StartupTimings {
    pub etcd: Duration,
    pub apiserver: Duration,
    pub crds: Duration,
    /// kube-controller-manager and kube-scheduler, started together.
    pub controllers: Duration,
    /// KWOK and its nodes Ready.
    pub kwok: Duration,
    pub total: Duration,
}

/// A running control plane. Dropping it stops every component (SIGTERM, then SIGKILL after 5 s),
/// newest first, and deletes its directory unless a test failed while it ran.
pub struct TestCluster {
    // Components in start order; stopped in reverse by Drop.
    processes: Mutex<Vec<Process>>,
    kube_config: kube::Config,
    kubeconfig_path: PathBuf,
    api_server_url: String,
    ca_pem: String,
    dir: PathBuf,
    kwok: bool,
    timings: StartupTimings,
    // Removes the directory if the test binary dies without running Drop (e.g. a shared cluster in a
    // static); see `spawn_cleanup_watchdog`.
    watchdog: Option<Process>,
    // True until start-up succeeds, so that the logs of a failed start survive for reading.
    keep_dir: bool,
    // Whether kube-controller-manager runs the namespace controller, without which a deleted namespace
    // never goes away.
    namespace_controller: bool,
    // Namespaces of tests that failed; see `remove_left_behind`.
    left_behind: Mutex<Vec<String>>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("api_server_url", &self.api_server_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
    kwok: u16,
}

impl Ports {
    /// Free loopback ports, all held open until every one is chosen so they differ.
    fn pick() -> Result<Self> {
        let listeners = (0..6)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("picking free loopback ports", e))?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("picking free loopback ports", e))?;
        Ok(Self {
            etcd_client: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
            controller_manager: ports[3],
            scheduler: ports[4],
            kwok: ports[5],
        })
    }
}

/// Where cluster directories live: `$MUSTER_TEST_TMPDIR`, else `/dev/shm` (etcd on tmpfs), else the
/// system temp dir.
fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MUSTER_TEST_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir() && tempfile::tempdir_in(shm).is_ok();
    if writable { shm.to_path_buf() } else { std::env::temp_dir() }
}

const DIR_PREFIX: &str = "muster-cluster-";
const KEEP_MARKER: &str = ".keep";

/// Removes directories of earlier test binaries that are gone. Directories kept after a failure
/// (`.keep`) survive for a day so that their logs can be read.
fn sweep_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let kept_recently = std::fs::metadata(path.join(KEEP_MARKER))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(24 * 3600));
        if !kept_recently {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A `sh` loop that outlives the test binary by at most a second and then removes the cluster
/// directory (only the etcd data if a failing test marked it `.keep`). It is the harness's own child
/// and is killed by pid when the cluster is dropped normally.
fn spawn_cleanup_watchdog(dir: &Path) -> Result<Process> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ -e '{dir}/{KEEP_MARKER}' ]; then rm -rf '{dir}/etcd'; else rm -rf '{dir}'; fi",
        pid = std::process::id(),
        dir = dir.display(),
    );
    Process::spawn_unattached("cleanup-watchdog", Path::new("/bin/sh"), &["-c".to_owned(), script])
}

/// A plain-HTTP GET on loopback (etcd, KWOK): status and body.
pub(crate) async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer in 5 s"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: bad HTTP response {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// GET `path` from an HTTPS health endpoint with a self-signed certificate (KCM, scheduler).
async fn https_health(port: u16, path: &str) -> Result<(), String> {
    let url = format!("https://127.0.0.1:{port}").parse().map_err(|e| format!("{e}"))?;
    let mut config = kube::Config::new(url);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    config.default_retry = false;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    let body = client.request_text(request).await.map_err(|e| e.to_string())?;
    if body.trim() == "ok" { Ok(()) } else { Err(format!("{path} said {body:?}")) }
}

fn tail_lines_setting() -> usize {
    std::env::var("MUSTER_TEST_LOG_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_TAIL_LINES)
}

impl TestCluster {
    /// Starts the components in order, each waited ready before the next: etcd, kube-apiserver
    /// (then CRDs), kube-controller-manager and kube-scheduler, KWOK (then nodes).
    ///
    /// Tests in one binary must not run clusters concurrently: take [`crate::serial`] first, or use
    /// [`crate::SharedCluster`], which does. Across processes a file lock serialises clusters.
    pub async fn start(config: ClusterConfig) -> Result<Self> {
        let binaries = ControlPlaneBinaries::locate()?;
        crate::shared::machine_lock().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&config, &binaries).await {
                // Ports are picked free but released before the components bind them; on the rare
                // clash, start over with new ones.
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => continue,
                other => return other,
            }
        }
    }

    async fn start_once(config: &ClusterConfig, bins: &ControlPlaneBinaries) -> Result<Self> {
        let started = Instant::now();
        let base = base_dir();
        sweep_stale_dirs(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(|e| Error::io(format!("creating a cluster directory in {}", base.display()), e))?
            .keep();
        let watchdog = spawn_cleanup_watchdog(&dir)?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;

        let pki = Pki::generate(&dir.join("pki"))?;
        let ports = Ports::pick()?;
        let api_server_url = format!("https://127.0.0.1:{}", ports.apiserver);
        let kubeconfig_path = dir.join("admin.kubeconfig");
        pki.write_kubeconfig(&kubeconfig_path, &api_server_url)?;
        let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path)?;
        let kube_config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;

        let mut cluster = TestCluster {
            processes: Mutex::new(Vec::new()),
            kube_config,
            kubeconfig_path: kubeconfig_path.clone(),
            api_server_url: api_server_url.clone(),
            ca_pem: pki.ca_pem.clone(),
            dir: dir.clone(),
            kwok: config.kwok,
            timings: StartupTimings::default(),
            watchdog: Some(watchdog),
            keep_dir: true,
            namespace_controller: config
                .controllers
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == "namespace-controller" || c == "*")),
            left_behind: Mutex::new(Vec::new()),
        };
        let kubeconfig = kubeconfig_path.display().to_string();
        let timeout = config.ready_timeout;
        let path = |p: &Path| p.display().to_string();

        // etcd
        let phase = Instant::now();
        let etcd_peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
        let etcd_client = format!("http://127.0.0.1:{}", ports.etcd_client);
        cluster.spawn(
            "etcd",
            &bins.etcd,
            vec![
                "--name=muster-test".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=muster-test={etcd_peer}"),
                "--initial-cluster-state=new".into(),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cluster
            .wait_ready("etcd", timeout, || async {
                let (status, body) = http_get(ports.etcd_client, "/health").await?;
                if status == 200 && body.contains(r#""health":"true""#) {
                    Ok(())
                } else {
                    Err(format!("/health: {status} {body}"))
                }
            })
            .await?;
        cluster.timings.etcd = phase.elapsed();

        // kube-apiserver
        let phase = Instant::now();
        let mut args = vec![
            format!("--etcd-servers={etcd_client}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", ports.apiserver),
            format!("--cert-dir={}", dir.join("apiserver").display()),
            format!("--tls-cert-file={}", path(&pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&pki.serving_key)),
            format!("--client-ca-file={}", path(&pki.ca_cert)),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", path(&pki.sa_public)),
            format!("--service-account-signing-key-file={}", path(&pki.sa_private)),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--endpoint-reconciler-type=none".into(),
            // ServiceAccount: no serviceaccount controller runs, so pods would wait forever for their
            // "default" account. TaintNodesByCondition: it taints every new node not-ready, and only
            // the node-lifecycle controller (not run: KWOK owns node health) would lift the taint.
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition".into(),
            "--allow-privileged=true".into(),
        ];
        args.extend(config.apiserver_args.iter().cloned());
        cluster.spawn("kube-apiserver", &bins.kube_apiserver, args)?;
        let client = cluster.client()?;
        cluster
            .wait_ready("kube-apiserver /readyz", timeout, || async {
                let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
                let body = client.request_text(request).await.map_err(|e| e.to_string())?;
                if body.trim() == "ok" { Ok(()) } else { Err(body) }
            })
            .await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        cluster
            .wait_ready("namespaces default and kube-system", timeout, || async {
                for ns in ["default", "kube-system"] {
                    if namespaces.get_opt(ns).await.map_err(|e| e.to_string())?.is_none() {
                        return Err(format!("namespace {ns} not created yet"));
                    }
                }
                Ok(())
            })
            .await?;
        cluster.timings.apiserver = phase.elapsed();

        let phase = Instant::now();
        if !config.crds.is_empty() {
            install_crds(&client, &config.crds, timeout).await?;
        }
        cluster.timings.crds = phase.elapsed();

        // kube-controller-manager and kube-scheduler start together and are waited together.
        let phase = Instant::now();
        // No --authentication/--authorization-kubeconfig: their health endpoints answer anonymous
        // requests anyway, and delegated authn would log an error every few seconds because the
        // apiserver has no front-proxy (requestheader) CA.
        if let Some(controllers) = &config.controllers {
            let args = vec![
                format!("--kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.controller_manager),
                format!("--cert-dir={}", dir.join("kube-controller-manager").display()),
                format!("--controllers={}", controllers.join(",")),
                "--use-service-account-credentials=false".into(),
                format!("--root-ca-file={}", path(&pki.ca_cert)),
                format!("--service-account-private-key-file={}", path(&pki.sa_private)),
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
            ];
            cluster.spawn("kube-controller-manager", &bins.kube_controller_manager, args)?;
        }
        if let Some(scheduler) = &config.scheduler {
            let config_path = dir.join("kube-scheduler.json");
            let text = serde_json::to_string_pretty(&scheduler.to_json(&kubeconfig_path))
                .map_err(|e| Error::io("encoding the scheduler configuration", std::io::Error::other(e)))?;
            std::fs::write(&config_path, text)
                .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;
            let args = vec![
                format!("--config={}", config_path.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.scheduler),
                format!("--cert-dir={}", dir.join("kube-scheduler").display()),
            ];
            cluster.spawn("kube-scheduler", &bins.kube_scheduler, args)?;
        }
        if config.controllers.is_some() {
            cluster
                .wait_ready("kube-controller-manager /healthz", timeout, || {
                    https_health(ports.controller_manager, "/healthz")
                })
                .await?;
        }
        if config.scheduler.is_some() {
            cluster.wait_ready("kube-scheduler /readyz", timeout, || https_health(ports.scheduler, "/readyz")).await?;
        }
        cluster.timings.controllers = phase.elapsed();

        // KWOK, then the nodes it manages.
        let phase = Instant::now();
        if config.kwok {
            let stages = config
                .kwok_stages
                .clone()
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("kwok").join("stages.yaml"));
            cluster.spawn(
                "kwok",
                &bins.kwok,
                vec![
                    format!("--kubeconfig={kubeconfig}"),
                    "--manage-all-nodes=false".into(),
                    format!("--manage-nodes-with-label-selector={}={}", FAKE_NODE_LABEL.0, FAKE_NODE_LABEL.1),
                    format!("--config={}", stages.display()),
                    format!("--server-address=127.0.0.1:{}", ports.kwok),
                    // Addresses KWOK writes are metadata only; loopback keeps any stray dial local.
                    "--node-ip=127.0.0.1".into(),
                    "--cidr=10.244.0.0/16".into(),
                    "--node-lease-duration-seconds=40".into(),
                ],
            )?;
            cluster
                .wait_ready("kwok /healthz", timeout, || async {
                    match http_get(ports.kwok, "/healthz").await? {
                        (200, _) => Ok(()),
                        (status, body) => Err(format!("{status} {body}")),
                    }
                })
                .await?;
            for node in &config.nodes {
                cluster.add_node(node).await?;
            }
        }
        cluster.timings.kwok = phase.elapsed();
        cluster.timings.total = started.elapsed();
        cluster.keep_dir = false;
        Ok(cluster)
    }

    fn spawn(&self, name: &str, program: &Path, args: Vec<String>) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let process = Process::spawn(name, program, &args, log)?;
        self.processes.lock().unwrap_or_else(|e| e.into_inner()).push(process);
        Ok(())
    }

    /// Polls `probe` until it succeeds, failing fast if any component has exited.
    async fn wait_ready<F, Fut>(&self, what: &str, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let result = eventually(what, timeout, || {
            let exited = self.first_exited();
            let fut = probe();
            async move {
                if let Some(err) = exited {
                    return Ok(Err(err));
                }
                fut.await.map(Ok)
            }
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exited)) => Err(exited),
            Err(Error::Timeout { what, waited, detail }) => Err(Error::Timeout {
                what,
                waited,
                detail: format!("{detail}\n{}", self.log_tails(tail_lines_setting())),
            }),
            Err(other) => Err(other),
        }
    }

    fn first_exited(&self) -> Option<Error> {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        processes.iter_mut().find_map(|p| p.exited().map(|status| p.exited_error(status)))
    }

    /// A new client for this cluster (admin, `system:masters`). Make one per test: a client is tied
    /// to the tokio runtime it was made in, and each `#[tokio::test]` has its own.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.kube_config.clone())?)
    }

    /// The client configuration, e.g. to hand to a controller under test.
    pub fn kube_config(&self) -> kube::Config {
        self.kube_config.clone()
    }

    /// An admin kubeconfig (also usable with `kubectl --kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    pub fn api_server_url(&self) -> &str {
        &self.api_server_url
    }

    /// PEM of the cluster CA (which also signed the apiserver's serving certificate).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The cluster's directory: `logs/`, `pki/`, `etcd/`, `admin.kubeconfig`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn timings(&self) -> &StartupTimings {
        &self.timings
    }

    /// Applies CRD files (server-side apply) and waits until they are Established.
    pub async fn install_crds(&self, files: &[PathBuf]) -> Result<Vec<String>> {
        install_crds(&self.client()?, files, Duration::from_secs(60)).await
    }

    /// Creates a fake node and waits until KWOK has made it Ready.
    pub async fn add_node(&self, node: &FakeNode) -> Result<()> {
        if !self.kwok {
            return Err(Error::Manifest {
                path: PathBuf::from(node.name()),
                message: "fake nodes need KWOK; build the cluster config with `.kwok()`".into(),
            });
        }
        let nodes: Api<Node> = Api::all(self.client()?);
        nodes.create(&PostParams::default(), &node.to_node()).await?;
        let name = node.name().to_owned();
        self.wait_ready(&format!("node {name} to become Ready"), Duration::from_secs(60), || async {
            let node = nodes.get(&name).await.map_err(|e| e.to_string())?;
            let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
                Ok(())
            } else {
                Err(format!("conditions: {conditions:?}"))
            }
        })
        .await
    }

    /// A fresh namespace named `<prefix>-<random>`. Component logs are printed if the test panics
    /// while the returned value is alive.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace<'_>> {
        let client = self.client()?;
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([("muster.dev/test".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = api.create(&PostParams::default(), &ns).await?;
        let name = created.metadata.name.unwrap_or_default();
        Ok(TestNamespace::new(name, client, self))
    }

    /// Records the namespace of a test that panicked, for [`TestCluster::remove_left_behind`].
    pub(crate) fn leave_behind(&self, namespace: String) {
        self.left_behind.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(namespace);
    }

    /// Deletes the namespaces of earlier tests that failed, and waits (when the namespace controller runs) until
    /// they are gone. A failed test leaves its objects behind, and in a shared cluster they would hold GPUs and
    /// reservations that later tests expect to be free: one failure would show as many, and the first one is the
    /// one to read. A cleanup that goes wrong is only reported; the test then runs in whatever state is left.
    pub(crate) async fn remove_left_behind(&self) {
        let names = std::mem::take(&mut *self.left_behind.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        if names.is_empty() {
            return;
        }
        eprintln!("muster-tests: deleting namespaces left by failed tests: {}", names.join(", "));
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => return eprintln!("muster-tests: cannot delete them: {e}"),
        };
        let api: Api<Namespace> = Api::all(client);
        for name in &names {
            if let Err(e) = api.delete(name, &DeleteParams::background()).await {
                eprintln!("muster-tests: deleting namespace {name}: {e}");
            }
        }
        if !self.namespace_controller {
            return;
        }
        let gone = eventually("namespaces of failed tests to be deleted", Duration::from_secs(120), || async {
            for name in &names {
                if api.get_opt(name).await.map_err(|e| e.to_string())?.is_some() {
                    return Err(format!("{name} still exists"));
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = gone {
            eprintln!("muster-tests: {e}");
        }
    }

    /// A guard that prints [`TestCluster::log_tails`] if the thread panics while it is alive.
    pub fn logs_on_panic(&self) -> LogsOnPanic<'_> {
        LogsOnPanic::new(self)
    }

    /// The last `lines` lines of every component's log, each under a header with its state.
    pub fn log_tails(&self, lines: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        for p in processes.iter_mut() {
            let state = match p.exited() {
                Some(status) => format!("exited: {status}"),
                None => format!("running, pid {}", p.pid()),
            };
            let _ = writeln!(
                out,
                "----- {} ({state}); last {lines} lines of {} -----\n{}",
                p.name(),
                p.log().display(),
                tail_lines(p.log(), lines)
            );
        }
        out
    }

    /// Marks the directory to be kept (logs only; etcd data is dropped) after the test binary exits.
    pub(crate) fn keep_logs(&self) {
        let _ = std::fs::write(self.dir.join(KEEP_MARKER), b"");
    }

    pub(crate) fn tail_lines_setting() -> usize {
        tail_lines_setting()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = processes.pop() {
            p.stop();
        }
        let keep = self.keep_dir || std::thread::panicking() || std::env::var_os("MUSTER_KEEP_TEST_LOGS").is_some();
        if keep {
            self.keep_logs();
            let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
            eprintln!("muster-tests: cluster logs kept in {}", self.dir.join("logs").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.kill_now();
        }
    }
}
