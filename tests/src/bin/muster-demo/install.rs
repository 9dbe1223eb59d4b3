//! `muster-demo --install`: the main job on a real cluster. Installs Muster where `$KUBECONFIG` points, with the
//! kustomize install of `deploy/` (the operator guide's `kubectl apply --server-side -k`) and the images named by
//! `--registry`/`--tag`; refuses clusters where it cannot work (an upstream JobSet controller already running,
//! cert-manager missing for a variant that needs it); waits for Muster's pods and says why any is not ready.
//! `--uninstall` removes the examples' namespace and Muster again, keeping the CRDs (and so every JobSet) unless
//! asked to remove them too.
//!
//! The decisions are pure functions over listed objects ([`preflight`], [`not_ready`], [`pod_problem`],
//! [`overlay`]); `kubectl` does the applying and deleting, exactly as an operator would.

use std::collections::BTreeSet;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use muster_api::keys;
use serde_json::{Value, json};

/// Where every Muster component runs (deploy/controller/namespace.yaml).
pub const NAMESPACE: &str = "muster-system";
/// The images the manifests name, without their registry (deploy/images/Dockerfile has one target each).
const IMAGES: [&str; 3] = ["muster-admission", "muster-reconciler", "muster-gpu-agent"];
/// The registry the manifests name; `--registry` replaces it.
pub const MANIFEST_REGISTRY: &str = "ghcr.io/muster-dev";
/// The gpu-agent DaemonSet's runtimeClassName: the NVIDIA container runtime mounts the driver's NVML into it.
const NVIDIA_RUNTIME_CLASS: &str = "nvidia";
/// The upstream JobSet controller's Deployment name (its kustomize install).
const UPSTREAM_CONTROLLER: &str = "jobset-controller-manager";
/// The storage class annotation that marks the cluster default.
const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// Which install of deploy/ (docs/operator/guide.md explains each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Placement mode extender; cert-manager issues the webhook's certificate.
    Default,
    /// Placement mode extender; the admission controller makes its own certificate.
    SelfManagedCerts,
    /// Placement mode pod-pinning (no second scheduler); cert-manager issues the certificate.
    PodPinning,
}

impl Variant {
    /// The kustomization's directory, relative to the repository root.
    fn dir(self) -> &'static str {
        match self {
            Variant::Default => "deploy",
            Variant::SelfManagedCerts => "deploy/variants/self-managed-certs",
            Variant::PodPinning => "deploy/variants/pod-pinning",
        }
    }

    fn needs_cert_manager(self) -> bool {
        self != Variant::SelfManagedCerts
    }
}

/// The kustomization that installs `variant` with Muster's images from `registry` at `tag`. It is written
/// `depth` directories below the repository root (kustomize takes only relative paths to other kustomizations).
pub fn overlay(variant: Variant, registry: &str, tag: &str, depth: usize) -> String {
    let up = "../".repeat(depth);
    let mut text = format!(
        "# Written by muster-demo --install; regenerated on every run.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {up}{}\nimages:\n",
        variant.dir()
    );
    let registry = registry.trim_end_matches('/');
    for image in IMAGES {
        text.push_str(&format!(
            "  - name: {MANIFEST_REGISTRY}/{image}\n    newName: {registry}/{image}\n    newTag: \"{tag}\"\n"
        ));
    }
    text
}

/// What the install depends on, as listed from the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The API group cert-manager.io is served.
    pub cert_manager: bool,
    /// `<namespace>/<name>` of upstream JobSet controller Deployments.
    pub upstream_jobset: Vec<String>,
    pub nvidia_runtime_class: bool,
    /// Nodes whose allocatable has `nvidia.com/gpu` above zero.
    pub gpu_nodes: usize,
    pub storage_classes: BTreeSet<String>,
    pub default_storage_class: bool,
}

/// A claim an example makes: the example's name and the storage class it asks for (`None`: the default class).
pub type ExampleClaim = (String, Option<String>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Reasons not to install at all.
    pub refusals: Vec<String>,
    /// What will not work, said before anything changes.
    pub warnings: Vec<String>,
}

pub fn preflight(facts: &ClusterFacts, variant: Variant, claims: &[ExampleClaim]) -> Preflight {
    let mut p = Preflight::default();
    for controller in &facts.upstream_jobset {
        p.refusals.push(format!(
            "the upstream JobSet controller runs here ({controller}): it and Muster would both act on every JobSet. \
             Switch over as docs/migration-from-upstream-jobset.md describes, then install again"
        ));
    }
    if variant.needs_cert_manager() && !facts.cert_manager {
        p.refusals.push(format!(
            "the {variant:?} install needs cert-manager for the webhook's certificate, and this cluster does not serve \
             cert-manager.io: install cert-manager, or pass --variant self-managed-certs"
        ));
    }
    if !facts.nvidia_runtime_class {
        p.warnings.push(format!(
            "no RuntimeClass {NVIDIA_RUNTIME_CLASS:?} (the NVIDIA GPU Operator or container toolkit creates it): the \
             gpu-agent pods cannot start, no node publishes its GPUs, and every GPU gang stays Pending"
        ));
    }
    if facts.gpu_nodes == 0 {
        p.warnings
            .push(format!("no node has {} allocatable: the examples' gangs will be Inadmissible", keys::GPU_RESOURCE));
    }
    for (example, class) in claims {
        match class {
            Some(class) if !facts.storage_classes.contains(class) => p.warnings.push(format!(
                "example {example} claims a volume of StorageClass {class:?}, which this cluster lacks: its pods \
                 will stay Pending (--examples takes a directory of your own JobSets)"
            )),
            None if !facts.default_storage_class => p.warnings.push(format!(
                "example {example} claims a volume of the default StorageClass, and this cluster has none: its pods \
                 will stay Pending"
            )),
            _ => {}
        }
    }
    p
}

/// The storage class of every volume claim template of the JobSets in `docs` (`spec.volumeClaimPolicies`).
pub fn example_claims(docs: &[Value]) -> Vec<ExampleClaim> {
    let mut claims = Vec::new();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        for policy in doc["spec"]["volumeClaimPolicies"].as_array().into_iter().flatten() {
            for template in policy["templates"].as_array().into_iter().flatten() {
                let class = template["spec"]["storageClassName"].as_str().map(str::to_owned);
                claims.push((name.clone(), class));
            }
        }
    }
    claims
}

/// The workloads of the install that are not fully rolled out, one line each.
pub fn not_ready(deployments: &[Deployment], daemonsets: &[DaemonSet]) -> Vec<String> {
    let mut lines = Vec::new();
    for d in deployments {
        let want = d.spec.replicas.unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let current = status.observed_generation >= d.metadata.generation;
        let (updated, available) = (status.updated_replicas.unwrap_or(0), status.available_replicas.unwrap_or(0));
        if !current || updated < want || available < want {
            lines.push(format!("Deployment {}: {available} of {want} pods available", d.name_any()));
        }
    }
    for ds in daemonsets {
        let status = ds.status.clone().unwrap_or_default();
        let want = status.desired_number_scheduled;
        let current = status.observed_generation >= ds.metadata.generation;
        let (updated, available) = (status.updated_number_scheduled.unwrap_or(0), status.number_available.unwrap_or(0));
        if !current || updated < want || available < want {
            lines.push(format!("DaemonSet {}: {available} of {want} pods available", ds.name_any()));
        }
    }
    lines
}

/// Why a pod of the install is not running and ready, in words an operator can act on; `None` if it is fine or
/// merely starting.
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
    if let Some(c) = unscheduled {
        return Some(format!("pod {name} cannot be scheduled: {}", c.message.as_deref().unwrap_or("no reason given")));
    }
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
        let message = waiting.message.as_deref().unwrap_or("");
        match waiting.reason.as_deref() {
            Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName") => {
                return Some(format!(
                    "pod {name} cannot pull {}: build and push the images (deploy/images/Dockerfile; \
                     scripts/demo.sh --install --build-images does it with docker or podman), or point --registry \
                     and --tag at where they are. {message}",
                    c.image
                ));
            }
            Some("CrashLoopBackOff") => {
                return Some(format!(
                    "pod {name}: container {} keeps crashing; see kubectl logs -n {NAMESPACE} {name} -c {} --previous",
                    c.name, c.name
                ));
            }
            Some(reason @ ("CreateContainerConfigError" | "CreateContainerError" | "RunContainerError")) => {
                return Some(format!("pod {name}: container {}: {reason}: {message}", c.name));
            }
            _ => {}
        }
    }
    None
}

/// Asks on the terminal; without one, only `--yes` proceeds.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}: not without --yes when standard input is not a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") { Ok(()) } else { bail!("not confirmed") }
}

async fn facts(client: &Client) -> anyhow::Result<ClusterFacts> {
    let groups = client.list_api_groups().await.context("listing the cluster's API groups")?;
    let cert_manager = groups.groups.iter().any(|g| g.name == "cert-manager.io");
    let upstream_jobset = Api::<Deployment>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .context("listing Deployments")?
        .items
        .into_iter()
        .filter(|d| d.metadata.name.as_deref() == Some(UPSTREAM_CONTROLLER))
        .map(|d| format!("{}/{}", d.metadata.namespace.unwrap_or_default(), d.metadata.name.unwrap_or_default()))
        .collect();
    let nvidia_runtime_class =
        Api::<RuntimeClass>::all(client.clone()).get_opt(NVIDIA_RUNTIME_CLASS).await.context("RuntimeClass")?.is_some();
    let gpu_nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Nodes")?
        .items
        .iter()
        .filter(|n| {
            let gpus = n.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get(keys::GPU_RESOURCE));
            gpus.is_some_and(|q| q.0.parse::<u64>().is_ok_and(|g| g > 0))
        })
        .count();
    let classes =
        Api::<StorageClass>::all(client.clone()).list(&ListParams::default()).await.context("StorageClasses")?;
    let default_storage_class =
        classes.items.iter().any(|c| c.annotations().get(DEFAULT_CLASS_ANNOTATION).is_some_and(|v| v == "true"));
    Ok(ClusterFacts {
        cert_manager,
        upstream_jobset,
        nvidia_runtime_class,
        gpu_nodes,
        storage_classes: classes.items.iter().map(ResourceExt::name_any).collect(),
        default_storage_class,
    })
}

/// Writes the overlay under `<repo>/target/muster-install/` and returns its directory.
fn write_overlay(repo: &Path, variant: Variant, registry: &str, tag: &str) -> anyhow::Result<PathBuf> {
    let dir = repo.join("target/muster-install");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("kustomization.yaml"), overlay(variant, registry, tag, 2))
        .with_context(|| format!("writing {}/kustomization.yaml", dir.display()))?;
    Ok(dir)
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut command = std::process::Command::new("kubectl");
    command.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let mut child = command.spawn().context("running kubectl (is it installed?)")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct InstallOptions<'a> {
    pub repo: &'a Path,
    pub variant: Variant,
    pub registry: &'a str,
    pub tag: &'a str,
    pub examples: &'a [Value],
    pub yes: bool,
    pub ready_timeout: Duration,
}

/// Checks the cluster, applies the install and waits until every component is ready.
pub async fn install(client: &Client, server: &str, o: &InstallOptions<'_>) -> anyhow::Result<()> {
    eprintln!("==> checking the cluster at {server}");
    let checks = preflight(&facts(client).await?, o.variant, &example_claims(o.examples));
    for w in &checks.warnings {
        eprintln!("    warning: {w}");
    }
    if !checks.refusals.is_empty() {
        bail!("not installing:\n  - {}", checks.refusals.join("\n  - "));
    }
    confirm(&format!("Install Muster ({:?}, images {}/*:{}) into {server}?", o.variant, o.registry, o.tag), o.yes)?;
    let dir = write_overlay(o.repo, o.variant, o.registry, o.tag)?;
    eprintln!("==> kubectl apply --server-side -k {}", dir.display());
    let applied = kubectl(&["apply", "--server-side", "-k", &dir.display().to_string()], None)?;
    eprintln!("    {} objects applied", applied.lines().count());
    eprintln!("==> waiting up to {:?} for Muster's pods", o.ready_timeout);
    wait_ready(client, o.ready_timeout).await
}

async fn wait_ready(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    let mut last = Vec::new();
    loop {
        let d = deployments.list(&ListParams::default()).await?.items;
        let ds = daemonsets.list(&ListParams::default()).await?.items;
        let waiting = not_ready(&d, &ds);
        if waiting.is_empty() && !d.is_empty() {
            eprintln!("    ready in {:.0?}", started.elapsed());
            return Ok(());
        }
        let problems: Vec<String> =
            pods.list(&ListParams::default()).await?.items.iter().filter_map(pod_problem).collect();
        if started.elapsed() >= timeout {
            let mut why = waiting;
            why.extend(problems);
            bail!("Muster's pods are not ready after {timeout:?}:\n  - {}", why.join("\n  - "));
        }
        if waiting != last {
            for line in &waiting {
                eprintln!("    {line}");
            }
            last = waiting;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Creates the examples' namespace (if missing).
pub async fn examples_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(name).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"app.kubernetes.io/part-of": "muster-examples"}}}))?;
        namespaces.create(&PostParams::default(), &ns).await.with_context(|| format!("creating namespace {name}"))?;
    }
    Ok(())
}

/// Deletes the examples' namespace and everything of the install but its CRDs (unless `with_crds`), which would
/// take every JobSet of the cluster with them.
pub async fn uninstall(
    client: &Client,
    server: &str,
    repo: &Path,
    variant: Variant,
    examples_ns: &str,
    with_crds: bool,
    yes: bool,
) -> anyhow::Result<()> {
    let what = if with_crds { "Muster and its CRDs (every JobSet, Gang and GPUNode goes too)" } else { "Muster" };
    confirm(&format!("Remove the namespace {examples_ns} and {what} from {server}?"), yes)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(examples_ns).await?.is_some() {
        eprintln!("==> deleting namespace {examples_ns} (while Muster still runs, so its JobSets finish cleanly)");
        namespaces.delete(examples_ns, &DeleteParams::default()).await?;
        let started = Instant::now();
        while namespaces.get_opt(examples_ns).await?.is_some() {
            if started.elapsed() > Duration::from_secs(120) {
                bail!("namespace {examples_ns} is still terminating after 2 minutes");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // The images do not matter for deleting.
    let dir = write_overlay(repo, variant, MANIFEST_REGISTRY, "latest")?;
    let rendered = kubectl(&["kustomize", &dir.display().to_string()], None)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).context("reading kubectl kustomize's output")?;
    let keep = |d: &&Value| with_crds || d["kind"] != "CustomResourceDefinition";
    let docs: Vec<&Value> = docs.iter().filter(|d| !d.is_null()).filter(keep).collect();
    let manifest = docs.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>()?.join("\n");
    eprintln!("==> kubectl delete ({} objects{})", docs.len(), if with_crds { "" } else { "; the CRDs stay" });
    kubectl(&["delete", "--ignore-not-found", "--wait=true", "--timeout=180s", "-f", "-"], Some(&manifest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ClusterFacts {
        ClusterFacts {
            cert_manager: true,
            upstream_jobset: vec![],
            nvidia_runtime_class: true,
            gpu_nodes: 4,
            storage_classes: ["shared-fs".to_owned()].into_iter().collect(),
            default_storage_class: true,
        }
    }

    #[test]
    fn a_ready_cluster_passes_without_warnings() {
        let claims = vec![("ckpt".to_owned(), Some("shared-fs".to_owned())), ("scratch".to_owned(), None)];
        assert_eq!(preflight(&facts(), Variant::Default, &claims), Preflight::default());
    }

    #[test]
    fn an_upstream_controller_or_missing_cert_manager_refuses_the_install() {
        let mut f = facts();
        f.upstream_jobset = vec!["jobset-system/jobset-controller-manager".into()];
        f.cert_manager = false;
        let p = preflight(&f, Variant::Default, &[]);
        assert_eq!(p.refusals.len(), 2, "{p:?}");
        assert!(p.refusals[0].contains("jobset-system/jobset-controller-manager"), "{}", p.refusals[0]);
        assert!(p.refusals[1].contains("--variant self-managed-certs"), "{}", p.refusals[1]);
        let p = preflight(&f, Variant::SelfManagedCerts, &[]);
        assert_eq!(p.refusals.len(), 1, "no cert-manager needed: {p:?}");
        assert_eq!(preflight(&f, Variant::PodPinning, &[]).refusals.len(), 2);
    }

    #[test]
    fn what_will_not_work_is_said_up_front() {
        let mut f = facts();
        f.nvidia_runtime_class = false;
        f.gpu_nodes = 0;
        f.storage_classes.clear();
        f.default_storage_class = false;
        let claims = vec![("ckpt".to_owned(), Some("shared-fs".to_owned())), ("scratch".to_owned(), None)];
        let p = preflight(&f, Variant::Default, &claims);
        assert!(p.refusals.is_empty());
        let w = p.warnings.join("\n");
        assert_eq!(p.warnings.len(), 4, "{w}");
        assert!(w.contains("RuntimeClass \"nvidia\"") && w.contains("nvidia.com/gpu allocatable"), "{w}");
        assert!(w.contains("example ckpt claims a volume of StorageClass \"shared-fs\""), "{w}");
        assert!(w.contains("example scratch claims a volume of the default StorageClass"), "{w}");
    }

    #[test]
    fn the_overlay_points_at_the_variant_and_renames_every_image() {
        let text = overlay(Variant::SelfManagedCerts, "registry.example.com/team/", "v1.2", 2);
        let doc: Value = serde_saphyr::from_str(&text).expect("YAML");
        assert_eq!(doc["resources"], json!(["../../deploy/variants/self-managed-certs"]));
        let images = doc["images"].as_array().expect("images");
        assert_eq!(images.len(), 3);
        assert!(images.iter().any(|i| i["name"] == "ghcr.io/muster-dev/muster-gpu-agent"
            && i["newName"] == "registry.example.com/team/muster-gpu-agent"
            && i["newTag"] == "v1.2"));
    }

    #[test]
    fn claims_come_from_volume_claim_policies() {
        let docs = [
            json!({"metadata": {"name": "ckpt"}, "spec": {"volumeClaimPolicies": [{"templates": [
            {"metadata": {"name": "a"}, "spec": {"storageClassName": "fast"}}, {"metadata": {"name": "b"}, "spec": {}}]}]}}),
            json!({"metadata": {"name": "plain"}, "spec": {}}),
        ];
        assert_eq!(example_claims(&docs), [("ckpt".into(), Some("fast".into())), ("ckpt".into(), None)]);
    }

    #[test]
    fn rollout_and_pod_problems_read_like_an_operator_would_say_them() {
        let deployment: Deployment = serde_json::from_value(json!({"metadata": {"name": "muster-admission",
            "generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1}}))
        .expect("deployment");
        let done: Deployment = serde_json::from_value(json!({"metadata": {"name": "muster-reconciler",
            "generation": 1}, "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1}}))
        .expect("deployment");
        let agents: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "muster-gpu-agent",
            "generation": 1}, "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "currentNumberScheduled": 0,
                       "numberMisscheduled": 0, "numberReady": 0, "updatedNumberScheduled": 0}}))
        .expect("daemonset");
        assert_eq!(
            not_ready(&[deployment, done], &[agents]),
            ["Deployment muster-admission: 1 of 2 pods available", "DaemonSet muster-gpu-agent: 0 of 3 pods available"]
        );
        let pull: Pod = serde_json::from_value(json!({"metadata": {"name": "muster-admission-x"}, "status": {
            "containerStatuses": [{"name": "admission", "image": "r.example/muster-admission:v1", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image"}}}]}}))
        .expect("pod");
        let text = pod_problem(&pull).expect("a problem");
        assert!(
            text.contains("cannot pull r.example/muster-admission:v1") && text.contains("--build-images"),
            "{text}"
        );
        let unschedulable: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient cpu."}]}}))
        .expect("pod");
        assert_eq!(
            pod_problem(&unschedulable).as_deref(),
            Some("pod p cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.")
        );
        let starting: Pod = serde_json::from_value(json!({"metadata": {"name": "q"}, "status": {"containerStatuses": [
            {"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}}))
        .expect("pod");
        assert_eq!(pod_problem(&starting), None, "merely starting");
    }
}
