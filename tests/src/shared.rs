//! One cluster per test binary, tests run one at a time, and logs when a test fails.

use std::cell::Cell;
use std::fs::File;
use std::ops::Deref;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use kube::{Client, Resource};
use tokio::sync::{Mutex, MutexGuard, OnceCell};

use crate::cluster::{ClusterConfig, TestCluster};
use crate::{Error, Result, default_cache_dir};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Serialises cluster tests within this test binary: hold the guard for the whole test. Needed by
/// tests that start their own [`TestCluster`]; [`SharedCluster::lock`] takes it already (so never call
/// both in one test: that would wait forever).
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Serialises clusters across processes (parallel `cargo test` invocations, or nextest, which runs
/// each test in its own process): an exclusive `flock` on `<cache>/control-plane/cluster.lock`, taken
/// when this process starts its first cluster and held until it exits. Two control planes on a
/// 2-core machine would only make each other time out.
pub(crate) async fn machine_lock() -> Result<()> {
    static HELD: OnceLock<File> = OnceLock::new();
    static TAKING: Mutex<()> = Mutex::const_new(());
    let _taking = TAKING.lock().await;
    if HELD.get().is_some() {
        return Ok(());
    }
    let dir = default_cache_dir().join("control-plane");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("cluster.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    use rustix::fs::{FlockOperation, flock};
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!("muster-tests: another process holds {}; waiting for its cluster to finish", path.display());
        let started = Instant::now();
        let file = file.try_clone().map_err(|e| Error::io("duplicating the lock handle", e))?;
        tokio::task::spawn_blocking(move || flock(&file, FlockOperation::LockExclusive))
            .await
            .map_err(|e| Error::io("waiting for the cluster lock", std::io::Error::other(e)))?
            .map_err(|e| Error::io(format!("locking {}", path.display()), e.into()))?;
        eprintln!("muster-tests: got the cluster lock after {:?}", started.elapsed());
    }
    let _ = HELD.set(file);
    Ok(())
}

/// A cluster started on first use and shared by every test of the binary.
///
/// ```no_run
/// # use muster_tests::{ClusterConfig, SharedCluster};
/// static CLUSTER: SharedCluster = SharedCluster::new(ClusterConfig::full);
/// ```
///
/// It lives in a `static`, so it is never dropped: its processes die with the test binary (they get
/// SIGKILL from the kernel when it exits) and a watchdog removes its directory a second later.
pub struct SharedCluster {
    config: fn() -> ClusterConfig,
    cell: OnceCell<Result<TestCluster, String>>,
}

impl SharedCluster {
    pub const fn new(config: fn() -> ClusterConfig) -> Self {
        Self { config, cell: OnceCell::const_new() }
    }

    /// Exclusive use of the cluster for one test, starting it if needed. Panics (failing the test)
    /// if the cluster cannot start; later tests fail at once with the same message.
    pub async fn lock(&'static self) -> ClusterLease {
        let serial = serial().await;
        let cluster = self.get().await;
        cluster.remove_left_behind().await;
        ClusterLease { logs: cluster.logs_on_panic(), cluster, _serial: serial }
    }

    /// The cluster without taking the test lock (for read-only helpers).
    pub async fn get(&'static self) -> &'static TestCluster {
        let started = self
            .cell
            .get_or_init(|| async {
                let t = Instant::now();
                match TestCluster::start((self.config)()).await {
                    Ok(cluster) => {
                        eprintln!(
                            "muster-tests: control plane ready in {:.1?} ({:?}); directory {}",
                            t.elapsed(),
                            cluster.timings(),
                            cluster.dir().display()
                        );
                        Ok(cluster)
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        match started {
            Ok(cluster) => cluster,
            Err(message) => panic!("the shared test cluster failed to start:\n{message}"),
        }
    }
}

/// Exclusive use of a [`SharedCluster`] for the duration of a test; derefs to [`TestCluster`] and
/// prints component logs if the test panics.
pub struct ClusterLease {
    logs: LogsOnPanic<'static>,
    cluster: &'static TestCluster,
    _serial: MutexGuard<'static, ()>,
}

impl Deref for ClusterLease {
    type Target = TestCluster;

    fn deref(&self) -> &TestCluster {
        self.cluster
    }
}

impl ClusterLease {
    /// The log guard, e.g. to keep it alive in a spawned task.
    pub fn logs(&self) -> &LogsOnPanic<'static> {
        &self.logs
    }
}

thread_local! {
    // One dump per failing test, however many guards are dropped while it unwinds.
    static PRINTED: Cell<bool> = const { Cell::new(false) };
}

/// Prints the tail of every component log (and keeps the cluster directory) if the thread is
/// panicking when this guard drops: a failing test shows what the control plane was doing.
pub struct LogsOnPanic<'a> {
    cluster: &'a TestCluster,
}

impl<'a> LogsOnPanic<'a> {
    pub(crate) fn new(cluster: &'a TestCluster) -> Self {
        if !std::thread::panicking() {
            PRINTED.with(|p| p.set(false));
        }
        Self { cluster }
    }
}

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() || PRINTED.with(|p| p.replace(true)) {
            return;
        }
        self.cluster.keep_logs();
        eprintln!(
            "\n===== muster-tests: control-plane logs (test failed); full logs in {} =====\n{}",
            self.cluster.dir().join("logs").display(),
            self.cluster.log_tails(TestCluster::tail_lines_setting())
        );
    }
}

/// A namespace made for one test. It is left in place when dropped (the cluster is throw-away), except when the test
/// fails: a shared cluster then deletes it before its next test starts (see `TestCluster::remove_left_behind`).
/// Call [`TestNamespace::delete`] to test deletion.
pub struct TestNamespace<'a> {
    name: String,
    client: Client,
    cluster: &'a TestCluster,
    _logs: LogsOnPanic<'a>,
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.cluster.leave_behind(self.name.clone());
        }
    }
}

impl<'a> TestNamespace<'a> {
    pub(crate) fn new(name: String, client: Client, cluster: &'a TestCluster) -> Self {
        Self { name, client, cluster, _logs: cluster.logs_on_panic() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An [`Api`] for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace and waits until it is gone (needs the namespace controller).
    pub async fn delete(&self, timeout: Duration) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.delete(&self.name, &DeleteParams::default()).await?;
        crate::eventually(&format!("namespace {} to be deleted", self.name), timeout, || async {
            match api.get_opt(&self.name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(ns) => Err(format!("phase {:?}", ns.status.and_then(|s| s.phase))),
            }
        })
        .await
    }
}
