//! `muster-demo`: Muster's main job on one machine. Starts the local control plane (built from the Kubernetes
//! Go modules) with simulated GPU nodes, runs Muster's components against it, applies the JobSets in
//! `examples/` and shows their progress live until they finish. With `--install`, does the same on the real
//! cluster `$KUBECONFIG` points at, after installing Muster there (see [`install`]).

mod install;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use muster_admission::admission::state::Settings;
use muster_admission::extender::http::{self as extender_http, Limits as ExtenderLimits, Metrics as ExtenderMetrics};
use muster_admission::extender::{SCHEDULER_NAME, new_cache, watch as extender_watch};
use muster_admission::gang::model::ModelConfig;
use muster_admission::webhook::jobset::gang::GangMutation;
use muster_api::JobSet;
use muster_api::gang::{Gang, GangPhase};
use muster_api::keys;
use muster_tests::{
    ClusterConfig, DEFAULT_CONTROLLERS, Extender, FakeNode, InProcessAdmission, InProcessReconciler, SchedulerConfig,
    TestCluster, free_loopback_port, publish_gpu_node, yaml_files_in,
};
use prometheus_client::registry::Registry;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Run Muster on a local control plane with simulated GPU nodes and watch the example JobSets")]
struct Args {
    /// Simulated GPU nodes (8 GPUs each).
    #[arg(long, default_value_t = 16)]
    nodes: u32,
    /// How long each example pod runs before it succeeds.
    #[arg(long, default_value = "20s")]
    pod_duration: String,
    /// Keep the cluster running after the examples finish, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Directory of JobSets to apply.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))]
    examples: PathBuf,
    /// The muster-gpu-agent binary: one runs per node on the mock NVML library. Without it (and --mock-nvml),
    /// the demo publishes each node's GPUNode itself.
    #[arg(long, requires = "mock_nvml")]
    gpu_agent: Option<PathBuf>,
    /// The mock libnvidia-ml (libmuster_mock_nvml.so) the agents load through nvml-wrapper.
    #[arg(long, requires = "gpu_agent")]
    mock_nvml: Option<PathBuf>,
    /// Install Muster into the cluster $KUBECONFIG points at, instead of starting a local one, and run the
    /// examples there (in --examples-namespace). Muster stays installed afterwards; --uninstall removes it.
    #[arg(long, conflicts_with_all = ["nodes", "gpu_agent", "mock_nvml", "keep"])]
    install: bool,
    /// Remove the examples' namespace and what --install put into the cluster (the CRDs stay, and with them every
    /// JobSet, unless --with-crds).
    #[arg(long, conflicts_with = "install")]
    uninstall: bool,
    /// With --uninstall: remove the CRDs too, and so every JobSet, Gang and GPUNode in the cluster.
    #[arg(long, requires = "uninstall")]
    with_crds: bool,
    /// Which install of deploy/ (--install, --uninstall).
    #[arg(long, value_enum, default_value_t = install::Variant::Default)]
    variant: install::Variant,
    /// Registry of Muster's images, <registry>/muster-{admission,reconciler,gpu-agent}:<tag> (--install).
    #[arg(long, default_value = install::MANIFEST_REGISTRY)]
    registry: String,
    /// Tag of Muster's images (--install).
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Namespace the examples run in on a real cluster (--install, --uninstall).
    #[arg(long, default_value = "muster-examples")]
    examples_namespace: String,
    /// Install only; run no examples (--install).
    #[arg(long, requires = "install")]
    no_examples: bool,
    /// Seconds to wait for Muster's pods to become ready (--install).
    #[arg(long, default_value_t = 300)]
    ready_timeout_seconds: u64,
    /// Change the cluster without asking (--install, --uninstall).
    #[arg(long, short = 'y')]
    yes: bool,
}

const GPU_PRODUCT: (&str, &str) = ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if args.install || args.uninstall {
        return on_a_real_cluster(&args, &repo).await;
    }

    eprintln!(
        "==> starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) with {} GPU nodes",
        args.nodes
    );
    let mut config = ClusterConfig::full()
        .controllers(
            DEFAULT_CONTROLLERS
                .iter()
                .copied()
                .chain(["persistentvolume-binder-controller", "persistentvolumeclaim-protection-controller"]),
        )
        .crds(yaml_files_in(&repo.join("deploy/controller/crds"))?);
    for i in 0..args.nodes {
        config = config.node(
            FakeNode::new(format!("gpu-node-{i}")).gpus(8).cpu("128").memory("2Ti").label(GPU_PRODUCT.0, GPU_PRODUCT.1),
        );
    }
    // The scheduling sidecar listens before the scheduler starts (its URL is in the scheduler's configuration):
    // the scheduler's profile `muster-scheduler` asks it where each GPU pod may go.
    let extender_cache = new_cache(ModelConfig::default());
    let mut extender_registry = Registry::default();
    let extender_metrics = ExtenderMetrics::register(&mut extender_registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = extender_http::router(extender_cache.clone(), ExtenderLimits::default(), extender_metrics)
        .merge(extender_http::ops_router(extender_cache.clone(), Arc::new(extender_registry)));
    let extender_server = extender_http::serve(listener, None, app, Duration::from_secs(10))?;
    let mut extender = Extender::new(extender_server.url_prefix(false))
        .filter("filter")
        .prioritize("prioritize", 10)
        .managed_resource(keys::GPU_RESOURCE, false)
        .node_cache_capable(true);
    extender.http_timeout = Duration::from_secs(1);
    config = config.scheduler(SchedulerConfig::default().profile(SCHEDULER_NAME).extender(extender));

    let started = Instant::now();
    let cluster = TestCluster::start(config).await.context("starting the local control plane")?;
    eprintln!("    ready in {:.1?}", started.elapsed());
    let client = cluster.client()?;
    let extender_watches = tokio::spawn(extender_watch::run(client.clone(), extender_cache.clone()));

    eprintln!("==> starting Muster: JobSet webhooks with gang mutation, gang admission controller, JobSet reconciler");
    let nodes: Vec<String> = (0..args.nodes).map(|i| format!("gpu-node-{i}")).collect();
    // One GPU agent per node (the real binary on the mock NVML library, each with its own fixture), or simulated
    // ones; either way one node has a GPU that fell off the bus (XID 79), which admission must not count.
    let mut endpoints = vec![("scheduler extender".to_owned(), extender_server.url_prefix(false))];
    let agents = match (&args.gpu_agent, &args.mock_nvml) {
        (Some(agent), Some(library)) => {
            let running = start_agents(&cluster, agent, library, &nodes).context("starting the gpu-agents")?;
            eprintln!("    {} gpu-agents on the mock NVML library; {SICK_NODE} reports XID 79 on GPU 5", running.len());
            endpoints.extend(running.iter().map(|(node, port, _)| (format!("gpu-agent {node}"), loopback(*port))));
            Agents::Processes(running.into_iter().map(|(_, _, child)| child).collect())
        }
        _ => {
            eprintln!("    simulated GPU agents (pass --gpu-agent and --mock-nvml for real ones); {SICK_NODE}: XID 79");
            Agents::Simulated(tokio::spawn(simulated_agents(client.clone(), nodes.clone())))
        }
    };
    let mutation = GangMutation { scheduler_name: Some(SCHEDULER_NAME.to_owned()) };
    let admission = InProcessAdmission::start_with(client.clone(), Settings::default(), mutation, Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("starting admission: {e}"))?;
    let reconciler = InProcessReconciler::start(client.clone(), muster_reconciler::plan::FeatureGates::default());
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admission_metrics = extender_http::serve(
        metrics_listener,
        None,
        extender_http::metrics_router(admission.registry()),
        Duration::from_secs(10),
    )?;
    endpoints.insert(0, ("admission controller".to_owned(), admission_metrics.url_prefix(false)));
    eprintln!(
        "    gang pods go to the scheduler profile {SCHEDULER_NAME}, whose extender steers each to its reserved node"
    );

    create_volumes(&client).await?;
    let docs = load_examples(&args.examples, Some(&args.pod_duration))?;
    let names = apply_examples(&client, LOCAL_NAMESPACE, &docs).await?;
    eprintln!("==> applied {} JobSets from {}", names.len(), args.examples.display());

    let outcome = tokio::select! {
        result = watch(&client, LOCAL_NAMESPACE, &names) => result,
        _ = tokio::signal::ctrl_c() => Ok(false),
    };
    let finished = outcome?;
    print_summary(&cluster, finished, &endpoints);
    let (on_plan, total) = pods_on_reserved_nodes(&client, LOCAL_NAMESPACE).await?;
    println!("{on_plan} of {total} gang pods ran on the node admission reserved for them");
    if args.keep && finished {
        eprintln!("(--keep) the cluster stays up; Ctrl-C to stop it");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(reconciler);
    drop(admission);
    drop(agents);
    extender_watches.abort();
    extender_server.shutdown().await;
    admission_metrics.shutdown().await;
    drop(cluster); // stops every process it started
    Ok(())
}

/// Where the local demo runs the examples.
const LOCAL_NAMESPACE: &str = "default";

/// `--install` / `--uninstall`: the cluster `$KUBECONFIG` (or ~/.kube/config) points at.
async fn on_a_real_cluster(args: &Args, repo: &Path) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context("no usable kubeconfig (set KUBECONFIG)")?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)?;
    let repo = repo.canonicalize()?;
    if args.uninstall {
        let ns = &args.examples_namespace;
        install::uninstall(&client, &server, &repo, args.variant, ns, args.with_crds, args.yes).await?;
        println!("Muster is removed from {server}.");
        return Ok(());
    }
    let docs = if args.no_examples { Vec::new() } else { load_examples(&args.examples, None)? };
    let options = install::InstallOptions {
        repo: &repo,
        variant: args.variant,
        registry: &args.registry,
        tag: &args.tag,
        examples: &docs,
        yes: args.yes,
        ready_timeout: Duration::from_secs(args.ready_timeout_seconds),
    };
    install::install(&client, &server, &options).await?;
    let uninstall_hint = format!("scripts/demo.sh --uninstall --variant {:?}", args.variant).to_lowercase();
    if args.no_examples {
        println!("Muster is installed and ready. Remove it with: {uninstall_hint}");
        return Ok(());
    }
    let ns = &args.examples_namespace;
    install::examples_namespace(&client, ns).await?;
    // The webhook may still be getting its certificate: the first applies can be refused for a little while.
    let started = Instant::now();
    let names = loop {
        match apply_examples(&client, ns, &docs).await {
            Ok(names) => break names,
            Err(e) if started.elapsed() < Duration::from_secs(120) => {
                eprintln!("    the API server refused the examples, retrying: {e:#}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e.context("applying the examples (is the webhook reachable?)")),
        }
    };
    eprintln!("==> applied {} JobSets into namespace {ns}", names.len());
    let finished = tokio::select! {
        result = watch(&client, ns, &names) => result?,
        _ = tokio::signal::ctrl_c() => false,
    };
    println!("\n{}", if finished { "All example JobSets finished." } else { "Stopped watching." });
    let (on_plan, total) = pods_on_reserved_nodes(&client, ns).await?;
    println!("{on_plan} of {total} gang pods ran on the node admission reserved for them");
    println!("Muster stays installed. Look around with:");
    println!("  kubectl get gangs -n {ns} -o wide; kubectl get gpunodes; kubectl muster queue");
    println!("Remove the examples and Muster with: {uninstall_hint}");
    Ok(())
}

/// The node that reports an unhealthy GPU (when the cluster has more than one node).
const SICK_NODE: &str = "gpu-node-1";

/// The GPU agents the demo runs; dropping them stops them.
enum Agents {
    Processes(Vec<tokio::process::Child>),
    Simulated(tokio::task::JoinHandle<()>),
}

impl Drop for Agents {
    fn drop(&mut self) {
        match self {
            // kill_on_drop stops the processes.
            Agents::Processes(children) => children.clear(),
            Agents::Simulated(task) => task.abort(),
        }
    }
}

/// Starts `muster-gpu-agent` for every node: its own copy of the HGX H100 fixture (unique GPU UUIDs), XID 79 on
/// GPU 5 of the sick node; no kubelet, so allocations come from the API server's view of bound pods.
/// Each agent serves its metrics on a loopback port of its own: returns node, port and process.
fn start_agents(
    cluster: &TestCluster,
    agent: &Path,
    library: &Path,
    nodes: &[String],
) -> anyhow::Result<Vec<(String, u16, tokio::process::Child)>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(repo.join("tests/mock-nvml/fixtures/hgx-h100x8.json"))?;
    let dir = cluster.dir().join("gpu-agents");
    std::fs::create_dir_all(&dir)?;
    let mut children = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let mut fixture: serde_json::Value =
            serde_json::from_str(&template.replace("-0000-4000-", &format!("-{i:04x}-4000-")))?;
        if node == SICK_NODE {
            fixture["xidEvents"] = json!([{"gpu": 5, "xid": 79}]);
        }
        let fixture_path = dir.join(format!("{node}.json"));
        std::fs::write(&fixture_path, serde_json::to_vec_pretty(&fixture)?)?;
        let log = std::fs::File::create(cluster.dir().join("logs").join(format!("gpu-agent-{node}.log")))?;
        let port = free_loopback_port()?;
        let child = tokio::process::Command::new(agent)
            .args(["--node-name", node, "--poll-interval", "2s", "--heartbeat-interval", "15s", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--nvml-library")
            .arg(library)
            .args(["--pod-resources-socket", "/nonexistent/kubelet.sock"])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("MUSTER_MOCK_NVML_FIXTURE", &fixture_path)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} for {node}", agent.display()))?;
        children.push((node.clone(), port, child));
    }
    let list: String = children.iter().map(|(node, port, _)| format!("{node} {}/metrics\n", loopback(*port))).collect();
    std::fs::write(dir.join("endpoints.txt"), list)?;
    Ok(children)
}

async fn simulated_agents(client: Client, nodes: Vec<String>) {
    loop {
        for node in &nodes {
            let unhealthy: &[(u32, u64)] = if node == SICK_NODE { &[(5, 79)] } else { &[] };
            if let Err(e) = publish_gpu_node(&client, node, 8, unhealthy).await {
                eprintln!("    simulated gpu-agent on {node}: {e}");
            }
        }
        // Well inside admission's 90 s heartbeat timeout.
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
}

/// Static volumes for the examples' claims (there is no storage provisioner): the real PV controller binds them.
async fn create_volumes(client: &Client) -> anyhow::Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for (name, class, size) in [("demo-shared-fs", "shared-fs", "4Ti"), ("demo-scratch", "", "1Ti")] {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteMany"], "storageClassName": class,
                "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": format!("/demo/{name}")}}
        }))?;
        volumes.create(&PostParams::default(), &pv).await?;
    }
    Ok(())
}

/// The example JobSets of every YAML file in `dir`; with a run time for the simulated pods of the local cluster
/// (KWOK finishes a pod after its `muster.dev/test-duration`).
fn load_examples(dir: &Path, duration: Option<&str>) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for file in yaml_files_in(dir)? {
        for mut doc in muster_tests::load_yaml_documents(&file)? {
            if doc["kind"] != "JobSet" || !doc["metadata"]["name"].is_string() {
                anyhow::bail!("{}: every document must be a JobSet with a name", file.display());
            }
            for rjob in doc["spec"]["replicatedJobs"].as_array_mut().into_iter().flatten() {
                let Some(duration) = duration else { break };
                let meta = &mut rjob["template"]["spec"]["template"]["metadata"];
                if meta.is_null() {
                    *meta = json!({});
                }
                meta["annotations"]["muster.dev/test-duration"] = json!(duration);
            }
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Applies the examples into `namespace` (server-side apply, as `kubectl apply --server-side` would).
async fn apply_examples(client: &Client, namespace: &str, docs: &[serde_json::Value]) -> anyhow::Result<Vec<String>> {
    let jobsets: Api<JobSet> = Api::namespaced(client.clone(), namespace);
    let mut names = Vec::new();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        jobsets
            .patch(&name, &PatchParams::apply("muster-demo"), &Patch::Apply(doc))
            .await
            .with_context(|| format!("applying JobSet {name}"))?;
        names.push(name);
    }
    Ok(names)
}

/// One row per JobSet, redrawn every second; returns once every JobSet finished.
async fn watch(client: &Client, namespace: &str, names: &[String]) -> anyhow::Result<bool> {
    let jobsets: Api<JobSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let gangs: Api<Gang> = Api::namespaced(client.clone(), namespace);
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let all = pods.list(&ListParams::default().labels(keys::JOBSET_NAME)).await?.items;
        let mut table = format!(
            "{:<18} {:<12} {:<10} {:>8} {:>9} {:>9} {:>5}  {:<22} {}\n",
            "JOBSET", "GANG", "STATE", "RESTARTS", "JOBS", "PODS", "GPUS", "PLACED ON", "REASON"
        );
        let mut done = 0;
        for name in names {
            let Some(js) = jobsets.get_opt(name).await? else { continue };
            let status = js.status.clone().unwrap_or_default();
            let mine: Vec<&Pod> = all.iter().filter(|p| p.labels().get(keys::JOBSET_NAME) == Some(name)).collect();
            let running: Vec<&Pod> = mine
                .iter()
                .copied()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            let gpus: i64 = running.iter().map(|p| pod_gpus(p)).sum();
            let total: i32 = js.spec.replicated_jobs.iter().map(|r| r.replicas()).sum();
            let succeeded: i32 = status.replicated_jobs_status.iter().map(|r| r.succeeded).sum();
            let state = status.terminal_state.clone().unwrap_or_else(|| {
                if js.suspended() {
                    "Suspended".into()
                } else if running.is_empty() {
                    "Starting".into()
                } else {
                    "Running".into()
                }
            });
            if status.terminal_state.is_some() {
                done += 1;
            }
            let gang = gangs.get_opt(name).await?.and_then(|g| g.status);
            let gang_column = match &gang {
                None => "-".to_owned(),
                Some(g) if g.phase == GangPhase::Pending => format!("Queued #{}", g.queue_position.unwrap_or(0)),
                Some(g) => format!("{:?}", g.phase),
            };
            // A gang that can never fit this cluster is as done as it will get; its reason says why.
            if status.terminal_state.is_none() && gang.as_ref().is_some_and(|g| g.phase == GangPhase::Inadmissible) {
                done += 1;
            }
            let waiting = gang
                .as_ref()
                .filter(|g| matches!(g.phase, GangPhase::Pending | GangPhase::Requeued | GangPhase::Inadmissible));
            let condition = status
                .conditions
                .iter()
                .filter(|c| c.status == "True")
                .max_by_key(|c| c.last_transition_time.0)
                .map(|c| c.message.clone());
            let placed = gang.as_ref().map_or_else(|| "-".to_owned(), |g| placed_on(&g.placement));
            let reason = match (waiting, condition) {
                (Some(g), _) => g.reason.clone().unwrap_or_default(),
                (None, Some(c)) => c,
                (None, None) => gang.and_then(|g| g.reason).unwrap_or_default(),
            };
            table.push_str(&format!(
                "{:<18} {:<12} {:<10} {:>8} {:>9} {:>9} {:>5}  {:<22} {}\n",
                name,
                gang_column,
                state,
                status.restarts,
                format!("{succeeded}/{total} ok"),
                format!("{}/{} run", running.len(), mine.len()),
                gpus,
                placed,
                reason
            ));
        }
        if tty {
            print!("\x1b[2J\x1b[H{table}\n  {:.0?} elapsed; Ctrl-C stops everything\n", started.elapsed());
            std::io::stdout().flush()?;
        } else if table != last {
            println!("[{:>4.0?}]\n{table}", started.elapsed());
        }
        last = table;
        if done == names.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A gang's nodes, short: `gpu-node-{0,1,4}`, `gpu-node-{2,3,5,7,+4}`; `-` before it is placed.
fn placed_on(placement: &[muster_api::gang::SlotPlacement]) -> String {
    let mut nodes: Vec<&str> = placement.iter().map(|s| s.node.as_str()).collect();
    // Numbered names in numeric order (gpu-node-2 before gpu-node-10).
    let number = |n: &str| n.rsplit('-').next().and_then(|x| x.parse::<u64>().ok());
    nodes.sort_by_key(|n| (number(n), *n));
    nodes.dedup();
    let prefix = |n: &str| n.rsplit_once('-').map(|(p, _)| p.to_owned());
    let shared = nodes.first().and_then(|n| prefix(n)).filter(|p| nodes.iter().all(|n| prefix(n).as_ref() == Some(p)));
    match (nodes.as_slice(), shared) {
        ([], _) => "-".to_owned(),
        ([one], _) => (*one).to_owned(),
        (many, Some(p)) => {
            let mut tails: Vec<String> = many.iter().take(4).map(|n| n[p.len() + 1..].to_owned()).collect();
            if many.len() > 4 {
                tails.push(format!("+{}", many.len() - 4));
            }
            format!("{p}-{{{}}}", tails.join(","))
        }
        (many, None) => format!("{},+{}", many[0], many.len() - 1),
    }
}

fn pod_gpus(pod: &Pod) -> i64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get(keys::GPU_RESOURCE))
        .filter_map(|q| q.0.parse::<i64>().ok())
        .sum()
}

/// Gang pods (finished ones stay, as their Jobs keep them) whose node is the one their Gang's placement names for
/// their slot (replicated job, job index, completion index), and all gang pods.
async fn pods_on_reserved_nodes(client: &Client, namespace: &str) -> anyhow::Result<(usize, usize)> {
    let gangs: BTreeMap<String, Gang> = Api::<Gang>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|g| (g.name_any(), g))
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(keys::JOBSET_NAME))
        .await?;
    let (mut on_plan, mut total) = (0, 0);
    for pod in &pods.items {
        let label = |k: &str| pod.labels().get(k).cloned();
        let Some(gang) = label(keys::JOBSET_NAME).and_then(|js| gangs.get(&js)) else { continue };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        total += 1;
        let index = pod.annotations().get(keys::JOB_COMPLETION_INDEX).and_then(|i| i.parse::<i32>().ok());
        let (rjob, job) =
            (label(keys::REPLICATED_JOB_NAME), label(keys::JOB_INDEX).and_then(|j| j.parse::<i32>().ok()));
        let reserved = gang.status.iter().flat_map(|s| &s.placement).any(|slot| {
            Some(&slot.pod_set) == rjob.as_ref()
                && Some(slot.job_index) == job
                && Some(slot.pod_index) == index
                && slot.node == node
        });
        on_plan += usize::from(reserved);
    }
    Ok((on_plan, total))
}

fn loopback(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn print_summary(cluster: &TestCluster, finished: bool, endpoints: &[(String, String)]) {
    println!();
    println!("{}", if finished { "All example JobSets finished." } else { "Stopped." });
    println!("While the cluster runs (use --keep), poke at it with:");
    println!("  export KUBECONFIG={}", cluster.kubeconfig_path().display());
    println!("  kubectl get gangs -o wide        # queue position, phase, why pending");
    println!("  kubectl get gpunodes            # per node GPUs: total, healthy, allocated, free");
    println!("  kubectl get jobsets,jobs,pods -o wide");
    println!("  kubectl describe jobset llm-pretrain");
    println!("  kubectl muster queue; kubectl muster nodes   # the plugin: target/debug/kubectl-muster on your PATH");
    println!("Metrics, as Prometheus scrapes them:");
    let agents = endpoints.iter().filter(|(what, _)| what.starts_with("gpu-agent")).count();
    let mut shown_agents = 0;
    for (what, url) in endpoints {
        if what.starts_with("gpu-agent") {
            shown_agents += 1;
            if shown_agents > 2 {
                continue;
            }
        }
        println!("  curl -s {url}/metrics   # {what}");
    }
    if agents > 2 {
        let list = cluster.dir().join("gpu-agents/endpoints.txt");
        println!("  ({} more gpu-agents, one per node: {})", agents - 2, list.display());
    }
    println!("Component logs: {}", cluster.dir().join("logs").display());
}

#[cfg(test)]
mod tests {
    use super::placed_on;
    use muster_api::gang::SlotPlacement;

    fn slots(nodes: &[&str]) -> Vec<SlotPlacement> {
        nodes.iter().map(|n| SlotPlacement { node: (*n).to_owned(), ..SlotPlacement::default() }).collect()
    }

    #[test]
    fn placements_read_short() {
        assert_eq!(placed_on(&[]), "-");
        assert_eq!(placed_on(&slots(&["gpu-node-3", "gpu-node-3"])), "gpu-node-3");
        assert_eq!(placed_on(&slots(&["gpu-node-10", "gpu-node-2", "gpu-node-2"])), "gpu-node-{2,10}");
        let many = ["n-0", "n-1", "n-2", "n-3", "n-4", "n-5"];
        assert_eq!(placed_on(&slots(&many)), "n-{0,1,2,3,+2}");
        assert_eq!(placed_on(&slots(&["a-1", "b-2"])), "a-1,+1");
    }
}
