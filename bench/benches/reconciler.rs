//! The JobSet reconciler against a real control plane, next to the upstream JobSet controller (sigs.k8s.io/jobset
//! v0.12.0, built from the Go module proxy by `bench/upstream-jobset/build.sh`), each the real binary as its own
//! process on its own control plane (etcd, kube-apiserver and kube-controller-manager running only the garbage
//! collector, which finishes the foreground deletions of a restart):
//!
//! - **create**: time until all 64 Jobs and the headless Service of a new JobSet exist, and the API calls the
//!   controller made for it (until it went idle);
//! - **group restart**: one Job fails (the bench writes its status, as the Job controller would); time until all 64
//!   Jobs of `restart-attempt: 1` exist and none of attempt 0 remains, and the API calls;
//! - **1,000 JobSets**: the controller's RSS (`VmRSS`, `VmHWM` from `/proc/<pid>/status`) once 1,000 JobSets of 4
//!   Jobs each are reconciled, and the time and calls that took.
//!
//! API calls are counted from the API server's audit log (stage `RequestReceived`, one line per request), by the
//! controller's User-Agent: `muster-reconciler/…` or `jobset/v0.12.0 …`. The bench's own requests carry
//! `muster-bench` and are not counted.
//!
//! `cargo bench -p muster-bench --bench reconciler` (`MUSTER_BENCH_ROUNDS`, default 5, create/restart rounds per
//! controller; `MUSTER_BENCH_JOBSETS`, default 1000). Needs Go for the baseline (or `MUSTER_UPSTREAM_JOBSET_DIR`
//! naming a directory build.sh made) and the control plane (`tests/build-control-plane.sh`). Prints Markdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use muster_api::JobSet;
use muster_api::keys::RESTART_ATTEMPT;
use muster_tests::{ClusterConfig, Profile, ReconcilerProcess, TestCluster};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

const WORKERS: usize = 63;
const JOBS: usize = WORKERS + 1;
const BENCH_USER_AGENT: &str = "muster-bench";
/// No request from the controller for this long: it is done with what it was given.
const QUIET: Duration = Duration::from_millis(1500);
const TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------------------------

fn job_template(replicas: usize, name: &str) -> Value {
    json!({"name": name, "replicas": replicas, "template": {"spec": {
        "parallelism": 1, "completions": 1, "backoffLimit": 0, "completionMode": "Indexed",
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "train", "image": "registry.example.com/ml/trainer:2026.08", "command": ["torchrun", "train.py"],
            "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
            "resources": {"limits": {"nvidia.com/gpu": "8"}, "requests": {"nvidia.com/gpu": "8", "cpu": "90"}}}]}}}}})
}

/// A JobSet as the webhook would leave it (defaults written out, since no webhook runs here).
fn jobset(name: &str, replicated_jobs: Vec<Value>) -> Result<JobSet, Error> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": name},
        "spec": {
            "replicatedJobs": replicated_jobs,
            "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
            "successPolicy": {"operator": "All"},
            "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            "failurePolicy": {"maxRestarts": 1000, "restartStrategy": "Recreate"}
        }
    }))?)
}

/// 64 Jobs: a leader and 63 workers.
fn training(name: &str) -> Result<JobSet, Error> {
    jobset(name, vec![job_template(1, "leader"), job_template(WORKERS, "workers")])
}

/// 4 Jobs, as in upstream's integration fixture.
fn small(name: &str) -> Result<JobSet, Error> {
    jobset(name, vec![job_template(1, "a"), job_template(3, "b")])
}

// ---------------------------------------------------------------------------------------------------------------
// The controllers under test, each on its own control plane
// ---------------------------------------------------------------------------------------------------------------

struct Controller {
    name: &'static str,
    /// Prefix of the controller's User-Agent, to pick its requests out of the audit log.
    user_agent: &'static str,
    process: ReconcilerProcess,
    audit_log: PathBuf,
    /// The bench's own client (User-Agent `muster-bench`).
    client: Client,
    // Dropped last: the process, then the control plane, then the files.
    cluster: TestCluster,
    _files: tempfile::TempDir,
}

/// Every request, metadata only, logged once when received.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted, \
                            ResponseComplete, Panic]\nrules:\n- level: Metadata\n";

async fn control_plane(crd: &Path, files: &Path) -> Result<(TestCluster, PathBuf), Error> {
    let policy = files.join("audit-policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY)?;
    let audit_log = files.join("audit.log");
    let config = ClusterConfig::apiserver_only()
        .controllers(["garbage-collector-controller"])
        .crd(crd)
        .apiserver_arg(format!("--audit-policy-file={}", policy.display()))
        .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
        .apiserver_arg("--audit-log-maxsize=4096");
    Ok((TestCluster::start(config).await?, audit_log))
}

fn bench_client(cluster: &TestCluster) -> Result<Client, Error> {
    let mut config = cluster.kube_config();
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(BENCH_USER_AGENT)));
    Ok(Client::try_from(config)?)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn ours() -> Result<Controller, Error> {
    let binary = ReconcilerProcess::binary(Profile::Release)?;
    let files = tempfile::tempdir()?;
    let crd = workspace_root().join("deploy/controller/crds/jobset.x-k8s.io_jobsets.yaml");
    let (cluster, audit_log) = control_plane(&crd, files.path()).await?;
    let mut process = ReconcilerProcess::start(&binary, &cluster, "muster-reconciler", &[])?;
    process.wait_ready(Duration::from_secs(60)).await?;
    let client = bench_client(&cluster)?;
    Ok(Controller {
        name: "muster-reconciler",
        user_agent: "muster-reconciler/",
        process,
        audit_log,
        client,
        cluster,
        _files: files,
    })
}

/// `bench/upstream-jobset/build.sh` (cached; seconds when warm), or `$MUSTER_UPSTREAM_JOBSET_DIR`.
fn upstream_build() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("MUSTER_UPSTREAM_JOBSET_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let script = workspace_root().join("bench/upstream-jobset/build.sh");
    let output = std::process::Command::new("bash").arg(&script).stderr(std::process::Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): the baseline needs Go and the module proxy",
            script.display(),
            output.status
        )
        .into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let dir = stdout.lines().last().ok_or("build.sh printed no directory")?;
    Ok(PathBuf::from(dir))
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

async fn upstream() -> Result<Controller, Error> {
    let build = upstream_build()?;
    let files = tempfile::tempdir()?;
    let (cluster, audit_log) = control_plane(&build.join("crd.yaml"), files.path()).await?;
    // No cert-controller (it would patch webhook configurations that do not exist here): the webhook and metrics
    // servers get the control plane's loopback serving certificate instead. No webhook is registered with the API
    // server, as in upstream's own controller integration tests.
    let certs = files.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(cluster.dir().join("pki/apiserver.crt"), certs.join("tls.crt"))?;
    std::fs::copy(cluster.dir().join("pki/apiserver.key"), certs.join("tls.key"))?;
    let config = files.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: config.jobset.x-k8s.io/v1alpha1\nkind: Configuration\nleaderElection:\n  leaderElect: false\n\
             internalCertManagement:\n  enable: false\nwebhook:\n  host: 127.0.0.1\n  port: {}\n  certDir: {}\n\
             metrics:\n  certDir: {}\n",
            free_port()?,
            certs.display(),
            certs.display()
        ),
    )?;
    let binary = build.join("jobset-controller");
    let args = [format!("--config={}", config.display())];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut process = ReconcilerProcess::start(&binary, &cluster, "upstream-jobset", &args)?;
    process.wait_ready(Duration::from_secs(60)).await?;
    let client = bench_client(&cluster)?;
    Ok(Controller {
        name: "upstream JobSet v0.12.0",
        user_agent: "jobset/",
        process,
        audit_log,
        client,
        cluster,
        _files: files,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Counting the controller's requests in the audit log
// ---------------------------------------------------------------------------------------------------------------

/// The controller's requests in the audit log after byte `from`, by `verb resource[/subresource]`.
fn calls_since(controller: &Controller, from: u64) -> Result<BTreeMap<String, u64>, Error> {
    use std::io::{BufRead as _, Seek as _};
    let mut file = std::fs::File::open(&controller.audit_log)?;
    file.seek(std::io::SeekFrom::Start(from))?;
    let mut out = BTreeMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if !event["userAgent"].as_str().is_some_and(|ua| ua.starts_with(controller.user_agent)) {
            continue;
        }
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or("-").to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let verb = event["verb"].as_str().unwrap_or("?");
        *out.entry(format!("{verb} {resource}")).or_insert(0) += 1;
    }
    Ok(out)
}

fn audit_offset(controller: &Controller) -> Result<u64, Error> {
    Ok(std::fs::metadata(&controller.audit_log)?.len())
}

/// Waits until the controller has made no request for [`QUIET`]; returns its requests since `from`.
async fn calls_until_quiet(controller: &Controller, from: u64) -> Result<BTreeMap<String, u64>, Error> {
    let started = Instant::now();
    let mut last = calls_since(controller, from)?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET {
        if started.elapsed() > TIMEOUT {
            return Err(format!("{} never went quiet", controller.name).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = calls_since(controller, from)?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    Ok(last)
}

// ---------------------------------------------------------------------------------------------------------------
// Watching the cluster (the bench's own watches; not counted)
// ---------------------------------------------------------------------------------------------------------------

async fn store<K>(api: Api<K>) -> Result<Store<K>, Error>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).applied_objects();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    reader.wait_until_ready().await?;
    Ok(reader)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<(), Error> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > TIMEOUT {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn attempt(job: &Job) -> Option<&str> {
    job.labels().get(RESTART_ATTEMPT).map(String::as_str)
}

fn live_jobs(jobs: &Store<Job>, attempt_label: &str) -> usize {
    jobs.state().iter().filter(|j| j.metadata.deletion_timestamp.is_none() && attempt(j) == Some(attempt_label)).count()
}

// ---------------------------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------------------------

#[derive(Default)]
struct Sample {
    create: Duration,
    create_calls: BTreeMap<String, u64>,
    restart: Duration,
    restart_calls: BTreeMap<String, u64>,
}

async fn namespace(controller: &Controller, prefix: &str) -> Result<String, Error> {
    let ns = controller.cluster.namespace(prefix).await?;
    Ok(ns.name().to_string())
}

/// Creates a 64-Job JobSet, then fails one worker: a group restart.
async fn create_and_restart(controller: &Controller, round: usize) -> Result<Sample, Error> {
    let ns = namespace(controller, &format!("round-{round}")).await?;
    let jobs_api: Api<Job> = Api::namespaced(controller.client.clone(), &ns);
    let jobs = store(jobs_api.clone()).await?;
    let services = store(Api::<Service>::namespaced(controller.client.clone(), &ns)).await?;
    let mut sample = Sample::default();

    let from = audit_offset(controller)?;
    let started = Instant::now();
    Api::<JobSet>::namespaced(controller.client.clone(), &ns)
        .create(&PostParams::default(), &training("train")?)
        .await?;
    wait_for("64 Jobs and the Service", || live_jobs(&jobs, "0") == JOBS && !services.state().is_empty()).await?;
    sample.create = started.elapsed();
    sample.create_calls = calls_until_quiet(controller, from).await?;

    let from = audit_offset(controller)?;
    let t = Timestamp::now().to_string();
    let failed = json!({"status": {"startTime": t, "active": 0, "ready": 0, "failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "lastTransitionTime": t, "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"},
        {"type": "Failed", "status": "True", "lastTransitionTime": t, "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]}});
    let started = Instant::now();
    jobs_api.patch_status("train-workers-7", &PatchParams::default(), &Patch::Merge(failed)).await?;
    wait_for("64 Jobs of attempt 1, none of attempt 0", || {
        live_jobs(&jobs, "1") == JOBS && jobs.state().iter().all(|j| attempt(j) == Some("1"))
    })
    .await?;
    sample.restart = started.elapsed();
    sample.restart_calls = calls_until_quiet(controller, from).await?;
    Ok(sample)
}

struct Fleet {
    idle_kib: (u64, u64),
    kib: (u64, u64),
    took: Duration,
    calls: BTreeMap<String, u64>,
}

/// 1,000 small JobSets: time until each has its Jobs and a status, calls, and the controller's memory.
async fn fleet(controller: &Controller, count: usize) -> Result<Fleet, Error> {
    let idle_kib = controller.process.memory_kib()?;
    let ns = namespace(controller, "fleet").await?;
    let jobs = store(Api::<Job>::namespaced(controller.client.clone(), &ns)).await?;
    let jobsets_api = Api::<JobSet>::namespaced(controller.client.clone(), &ns);
    let jobsets = store(jobsets_api.clone()).await?;
    let from = audit_offset(controller)?;
    let started = Instant::now();
    futures::stream::iter((0..count).map(|i| {
        let api = jobsets_api.clone();
        async move {
            let js = small(&format!("js-{i:04}"))?;
            api.create(&PostParams::default(), &js).await?;
            Ok::<_, Error>(())
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    wait_for("every JobSet reconciled", || {
        jobs.state().len() == 4 * count
            && jobsets
                .state()
                .iter()
                .filter(|js| js.status.as_ref().is_some_and(|s| s.replicated_jobs_status.len() == 2))
                .count()
                == count
    })
    .await?;
    let took = started.elapsed();
    let calls = calls_until_quiet(controller, from).await?;
    Ok(Fleet { idle_kib, kib: controller.process.memory_kib()?, took, calls })
}

// ---------------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------------

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

fn breakdown(calls: &BTreeMap<String, u64>) -> String {
    calls.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn report_rounds(controllers: &[Controller], samples: &[Vec<Sample>]) {
    println!(
        "| scenario | controller | median ms | min ms | max ms | API calls (median round) | by verb and resource |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    type Pick = fn(&Sample) -> (Duration, &BTreeMap<String, u64>);
    let scenarios: [(&str, Pick); 2] = [
        ("create 64 Jobs + Service", |s| (s.create, &s.create_calls)),
        ("group restart of 64 Jobs", |s| (s.restart, &s.restart_calls)),
    ];
    for (scenario, pick) in scenarios {
        for (controller, rounds) in controllers.iter().zip(samples) {
            let times: Vec<Duration> = rounds.iter().map(|s| pick(s).0).collect();
            let mut by_calls: Vec<&BTreeMap<String, u64>> = rounds.iter().map(|s| pick(s).1).collect();
            by_calls.sort_by_key(|c| total(c));
            let calls = by_calls[by_calls.len() / 2];
            println!(
                "| {scenario} | {} | {} | {} | {} | {} | {} |",
                controller.name,
                ms(median(times.clone())),
                ms(times.iter().copied().min().unwrap_or_default()),
                ms(times.iter().copied().max().unwrap_or_default()),
                total(calls),
                breakdown(calls)
            );
        }
    }
}

fn report_fleet(controllers: &[Controller], fleets: &[Fleet], count: usize) {
    println!();
    println!(
        "| {count} JobSets × 4 Jobs | idle RSS MiB (before) | RSS MiB | peak RSS (VmHWM) MiB | time to reconcile all | \
         API calls | by verb and resource |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (controller, fleet) in controllers.iter().zip(fleets) {
        println!(
            "| {} | {} | {} | {} | {:.1} s | {} | {} |",
            controller.name,
            mib(fleet.idle_kib.0),
            mib(fleet.kib.0),
            mib(fleet.kib.1),
            fleet.took.as_secs_f64(),
            total(&fleet.calls),
            breakdown(&fleet.calls)
        );
    }
}

fn main() -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds: usize = std::env::var("MUSTER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let count: usize = std::env::var("MUSTER_BENCH_JOBSETS").ok().and_then(|r| r.parse().ok()).unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let controllers = vec![ours().await?, upstream().await?];
        eprintln!("controllers ready; {rounds} rounds, then {count} JobSets");
        let mut samples: Vec<Vec<Sample>> = controllers.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            // Alternate who goes first, so that slow drift on the machine hits both alike.
            let order: Vec<usize> = if round % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
            for i in order {
                let sample = create_and_restart(&controllers[i], round).await?;
                eprintln!(
                    "round {round} {}: create {} ms ({} calls), restart {} ms ({} calls)",
                    controllers[i].name,
                    ms(sample.create),
                    total(&sample.create_calls),
                    ms(sample.restart),
                    total(&sample.restart_calls)
                );
                samples[i].push(sample);
            }
        }
        let mut fleets = Vec::new();
        for controller in &controllers {
            let result = fleet(controller, count).await?;
            eprintln!("{} fleet: {:.1} s, RSS {} KiB", controller.name, result.took.as_secs_f64(), result.kib.0);
            fleets.push(result);
        }
        report_rounds(&controllers, &samples);
        report_fleet(&controllers, &fleets, count);
        Ok::<_, Error>(())
    })
}
