//! `kubectl-muster`, the kubectl plugin: what gang admission sees, asked from a terminal.
//!
//! - `queue`: every gang per queue with its position, GPUs, how long it has waited, phase and reason;
//! - `explain <jobset>`: why a gang waits, node by node;
//! - `simulate -f jobset.yaml`: whether a JobSet's gang would fit now, and where; nothing is submitted;
//! - `nodes`: GPUs per node: total, healthy, allocated, reserved, free.
//!
//! The answers come from the admission engine itself ([`crate::gang`]) run on a model of the live cluster built by
//! [`crate::gang::snapshot`], so they say what admission would decide, not an approximation of it; the nodes held
//! for queue heads come from the heads' `status.heldNodes`. What the plugin cannot see: the order of the gangs still
//! to be tried in a pass across queues; it is named where it matters.
//!
//! [`run`] is the whole program apart from the process exit code; the binary (`src/bin/kubectl-muster.rs`) only
//! parses arguments and maps the result to the exit status.

mod cluster;
pub mod render;
pub mod report;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use muster_api::JobSet;

use crate::gang::GangKey;
use crate::gang::demand::GangDemand;
use crate::gang::model::ModelConfig;
use crate::gang::objects::{gang_spec, is_gang_managed};
use crate::gang::snapshot::{Snapshot, build_model, recorded_holds};
use crate::webhook::jobset::decode_jobset;
use crate::webhook::jobset::defaults::default_jobset;

use cluster::Connection;

/// The exit status when `simulate` finds that the gang does not fit now (errors exit with 1).
pub const EXIT_DOES_NOT_FIT: u8 = 2;

/// Gang admission, asked from a terminal: the queue, why a gang waits, whether a JobSet would fit, GPUs per node.
#[derive(Debug, Parser)]
#[command(name = "kubectl-muster", bin_name = "kubectl muster", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the JobSet (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Seconds after which a GPUNode heartbeat is stale; keep it equal to the admission controller's flag.
    #[arg(long, global = true, default_value_t = 90)]
    pub gpu_heartbeat_timeout: u64,
    /// Node label keys of topology domains, narrowest first; keep them equal to the admission controller's flag.
    #[arg(long, global = true, value_delimiter = ',')]
    pub topology_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every gang per queue: position, GPUs asked, waiting for, phase and reason.
    Queue {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Also finished gangs.
        #[arg(long)]
        all: bool,
    },
    /// Why a JobSet's gang waits, node by node.
    Explain {
        /// The JobSet's name.
        jobset: String,
    },
    /// Would this JobSet's gang fit right now, and where? Nothing is submitted. Exits with 2 if it does not fit.
    Simulate {
        /// The JobSet manifest (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// GPUs per node: total, healthy, allocated, reserved, free; heartbeat age and NVML.
    Nodes {
        /// Also nodes without GPUs (no GPUNode and no nvidia.com/gpu allocatable).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no usable kubeconfig: {0} (set --kubeconfig or KUBECONFIG, or run in a cluster)")]
    Kubeconfig(String),
    #[error("cannot reach the cluster at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the cluster does not serve {0}: is Muster installed? (`kubectl get crd {0}`)")]
    CrdMissing(&'static str),
    #[error("not allowed to {verb} {what}: {message}")]
    Forbidden { verb: &'static str, what: &'static str, message: String },
    #[error("{verb} {what}: {message}")]
    Api { verb: &'static str, what: &'static str, message: String },
    #[error("JobSet {namespace}/{name} not found")]
    JobSetNotFound { namespace: String, name: String },
    #[error("reading {path}: {reason}")]
    ReadFile { path: String, reason: String },
    #[error("{path}: {reason}")]
    BadManifest { path: String, reason: String },
    #[error("JobSet {0} is not a gang: {1}")]
    NotAGang(String, String),
    #[error("rendering the output: {0}")]
    Render(String),
}

/// What a successful command found, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `simulate`: the gang does not fit now.
    DoesNotFit,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::DoesNotFit => EXIT_DOES_NOT_FIT,
        }
    }
}

impl GlobalFlags {
    fn model_config(&self) -> ModelConfig {
        ModelConfig {
            heartbeat_timeout: Duration::from_secs(self.gpu_heartbeat_timeout),
            topology_keys: self.topology_keys.clone(),
        }
    }
}

/// Runs one command and returns its output text. Connects as kubectl would (see [`GlobalFlags`]).
pub async fn run(cli: &Cli) -> Result<(String, Outcome), PluginError> {
    let g = &cli.global;
    let now = SystemTime::now();
    let open = || Connection::open(g.kubeconfig.as_deref(), g.context.as_deref());
    match &cli.command {
        Command::Queue { queue, all } => {
            let gangs = open().await?.gangs().await?;
            let report = report::queue_report(&gangs, now, *all, queue.as_deref());
            Ok((render::emit(&report, g.output)?, Outcome::Done))
        }
        Command::Nodes { all } => {
            let objects = open().await?.snapshot().await?;
            let (model, issues) = build_model(g.model_config(), now, &objects.as_snapshot());
            let report = report::nodes_report(&model, &recorded_holds(&objects.gangs), now, *all, &issues);
            Ok((render::emit(&report, g.output)?, Outcome::Done))
        }
        Command::Explain { jobset } => explain(g, &open().await?, jobset, now).await,
        Command::Simulate { file } => {
            // Read first, so a bad file is reported as such even without a cluster.
            let js = read_manifest(file)?;
            simulate(g, &open().await?, js, file, now).await
        }
    }
}

async fn explain(
    g: &GlobalFlags,
    conn: &Connection,
    jobset: &str,
    now: SystemTime,
) -> Result<(String, Outcome), PluginError> {
    let namespace = g.namespace.clone().unwrap_or_else(|| conn.namespace.clone());
    let js = conn
        .jobset(&namespace, jobset)
        .await?
        .ok_or_else(|| PluginError::JobSetNotFound { namespace: namespace.clone(), name: jobset.to_owned() })?;
    let key = GangKey::new(&namespace, jobset);
    let objects = conn.snapshot().await?;
    let gang = objects.gangs.iter().find(|gang| {
        gang.metadata.namespace.as_deref() == Some(&namespace) && gang.metadata.name.as_deref() == Some(jobset)
    });
    // The Gang's spec is what admission uses; before the Gang exists, the JobSet's conversion is the same (the
    // priority does not matter for fitting).
    let demand = match gang {
        Some(gang) => GangDemand::from_spec(key.clone(), &gang.spec).map_err(|e| e.to_string()),
        None if is_gang_managed(&js) => gang_spec(&js, |_| None)
            .map_err(|e| e.to_string())
            .and_then(|spec| GangDemand::from_spec(key.clone(), &spec).map_err(|e| e.to_string())),
        None => return Err(PluginError::NotAGang(key.to_string(), not_a_gang_reason(&js))),
    };
    let (model, issues) = build_model(g.model_config(), now, &objects.as_snapshot());
    let report = report::explain_report(&model, &recorded_holds(&objects.gangs), &key, gang, &demand, now, &issues);
    Ok((render::emit(&report, g.output)?, Outcome::Done))
}

async fn simulate(
    g: &GlobalFlags,
    conn: &Connection,
    mut js: JobSet,
    file: &Path,
    now: SystemTime,
) -> Result<(String, Outcome), PluginError> {
    let bad = |reason: String| PluginError::BadManifest { path: file.display().to_string(), reason };
    // -n wins, then the manifest's namespace, then the context's: where `kubectl create -f` would put it.
    let namespace =
        g.namespace.clone().or_else(|| js.metadata.namespace.clone()).unwrap_or_else(|| conn.namespace.clone());
    let name = js
        .metadata
        .name
        .clone()
        .or_else(|| js.metadata.generate_name.as_ref().map(|p| format!("{p}<generated>")))
        .unwrap_or_else(|| "simulated".to_owned());
    js.metadata.namespace = Some(namespace.clone());
    let key = GangKey::new(&namespace, &name);
    // What the mutating webhook does on create: upstream defaults, then "is it a gang?".
    default_jobset(&mut js);
    if !is_gang_managed(&js) {
        return Err(PluginError::NotAGang(key.to_string(), not_a_gang_reason(&js)));
    }
    let objects = conn.snapshot().await?;
    let priority_classes = conn.priority_classes().await?;
    let spec = gang_spec(&js, |pc| priority_classes.get(pc).copied()).map_err(|e| bad(e.to_string()))?;
    let demand = GangDemand::from_spec(key, &spec).map_err(|e| bad(e.to_string()))?;
    let (model, issues) = build_model(g.model_config(), now, &objects.as_snapshot());
    let report =
        report::simulate_report(&model, &recorded_holds(&objects.gangs), &demand, &objects.gangs, &issues, now);
    let outcome = if report.fit.verdict == report::Verdict::FitsNow { Outcome::Done } else { Outcome::DoesNotFit };
    Ok((render::emit(&report, g.output)?, outcome))
}

/// Why [`is_gang_managed`] said no, in its order of checks.
fn not_a_gang_reason(js: &JobSet) -> String {
    let labels = js.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if !js.managed_by_us() {
        format!("spec.managedBy is {:?}, so another controller runs it", js.spec.managed_by.as_deref().unwrap_or(""))
    } else if label(muster_api::keys::KUEUE_QUEUE_NAME).is_some() {
        "Kueue manages it (it names a Kueue queue)".to_owned()
    } else if label(muster_api::keys::GANG_MANAGED) == Some("false") {
        format!("it opts out with {}: \"false\"", muster_api::keys::GANG_MANAGED)
    } else {
        format!("it asks for no {} and names no {} label", muster_api::keys::GPU_RESOURCE, muster_api::keys::QUEUE)
    }
}

/// Reads a JobSet manifest (YAML or JSON; `-` is standard input) and decodes it as the webhook does.
fn read_manifest(path: &Path) -> Result<JobSet, PluginError> {
    let shown = path.display().to_string();
    let read_err = |e: std::io::Error| PluginError::ReadFile { path: shown.clone(), reason: e.to_string() };
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(read_err)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(read_err)?
    };
    parse_manifest(&text).map_err(|reason| PluginError::BadManifest { path: shown, reason })
}

/// One JobSet from YAML or JSON text.
pub fn parse_manifest(text: &str) -> Result<JobSet, String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("not YAML: {e}"))?;
    let mut jobsets = docs.into_iter().filter(|d| !d.is_null());
    let doc = jobsets.next().ok_or("no object in the file")?;
    if jobsets.next().is_some() {
        return Err("more than one object; simulate takes one JobSet".to_owned());
    }
    let kind = doc.get("kind").and_then(serde_json::Value::as_str).unwrap_or("");
    let api_version = doc.get("apiVersion").and_then(serde_json::Value::as_str).unwrap_or("");
    if kind != "JobSet" || api_version != "jobset.x-k8s.io/v1alpha2" {
        return Err(format!("expected a jobset.x-k8s.io/v1alpha2 JobSet, found {api_version:?} {kind:?}"));
    }
    decode_jobset(&doc).map_err(|e| format!("not a valid JobSet: {e}"))
}

impl cluster::Objects {
    fn as_snapshot(&self) -> Snapshot<'_> {
        Snapshot { nodes: &self.nodes, gpunodes: &self.gpunodes, pods: &self.pods, gangs: &self.gangs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_go_before_or_after_the_command_like_kubectl() {
        let cli =
            Cli::try_parse_from(["kubectl-muster", "explain", "train", "-n", "ml", "-o", "json", "--context", "c"])
                .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("ml"));
        assert_eq!(cli.global.output, Output::Json);
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        assert!(matches!(cli.command, Command::Explain { ref jobset } if jobset == "train"));
        let cli =
            Cli::try_parse_from(["kubectl-muster", "-o", "yaml", "--kubeconfig", "/k", "simulate", "-f", "x.yaml"])
                .expect("parses");
        assert_eq!(cli.global.output, Output::Yaml);
        assert_eq!(cli.global.kubeconfig, Some(PathBuf::from("/k")));
        assert!(Cli::try_parse_from(["kubectl-muster", "explain"]).is_err(), "explain needs a JobSet");
        assert!(Cli::try_parse_from(["kubectl-muster", "queue", "-o", "xml"]).is_err());
    }

    #[test]
    fn manifests_must_be_one_jobset() {
        let js =
            "apiVersion: jobset.x-k8s.io/v1alpha2\nkind: JobSet\nmetadata:\n  name: t\nspec:\n  replicatedJobs: []\n";
        assert_eq!(parse_manifest(js).map(|j| j.metadata.name), Ok(Some("t".to_owned())));
        let err = parse_manifest("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n").expect_err("a Pod");
        assert!(err.contains("\"Pod\""), "{err}");
        assert!(parse_manifest(&format!("{js}---\n{js}")).expect_err("two").contains("more than one"));
        assert!(parse_manifest("").expect_err("empty").contains("no object"));
        assert!(parse_manifest("{ not yaml").is_err());
        let bad = "apiVersion: jobset.x-k8s.io/v1alpha2\nkind: JobSet\nspec:\n  replicatedJobs: 3\n";
        assert!(parse_manifest(bad).expect_err("bad spec").contains("not a valid JobSet"));
    }
}
