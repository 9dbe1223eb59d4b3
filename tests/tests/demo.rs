//! The README's main job, run as a newcomer runs it (non-interactively, a small cluster): every example gang is
//! admitted and finishes, and nothing the demo started is left running afterwards.
//!
//! Run: `cargo test -p muster-tests --test demo` (after `tests/build-control-plane.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, PodSpec};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use muster_tests::{ClusterConfig, DEFAULT_CONTROLLERS, FakeNode, Profile, TestCluster, serial, workspace_binary};
use serde_json::json;

/// `libmuster_mock_nvml.so`, built by cargo (the agents load it through nvml-wrapper).
fn mock_nvml() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--locked", "-p", "muster-mock-nvml", "--message-format=json"])
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo");
    assert!(output.status.success(), "building the mock NVML library failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "muster_mock_nvml")
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .expect("cargo reported the .so")
}

/// Pids whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            found.push((pid, cmdline));
        }
    }
    found
}

#[tokio::test]
async fn the_demo_admits_and_finishes_every_example_and_leaves_nothing_running() {
    let _serial = serial().await;
    let demo = workspace_binary("muster-tests", "muster-demo", Profile::Dev, "MUSTER_DEMO_BIN").expect("demo");
    let agent = workspace_binary("muster-gpu-agent", "muster-gpu-agent", Profile::Dev, "MUSTER_GPU_AGENT_BIN")
        .expect("gpu-agent");
    let library = mock_nvml();
    let output = tokio::process::Command::new(&demo)
        .args(["--nodes", "8", "--pod-duration", "2s", "--gpu-agent"])
        .arg(&agent)
        .arg("--mock-nvml")
        .arg(&library)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .expect("the demo finishes within 10 minutes")
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("All example JobSets finished."), "{stdout}\n{stderr}");
    assert!(stderr.contains("8 gpu-agents on the mock NVML library"), "{stderr}");

    // The last table: every example's gang Finished and its JobSet Completed.
    let last_table: Vec<&str> = stdout
        .rsplit_once("JOBSET ")
        .map(|(_, t)| t.lines().skip(1).take_while(|l| !l.trim().is_empty()).collect())
        .unwrap_or_default();
    let examples = ["finetune", "jax-multihost", "leader-critical", "llm-pretrain"];
    assert_eq!(last_table.len(), examples.len(), "{stdout}");
    for (row, name) in last_table.iter().zip(examples) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(..3), Some(&[name, "Finished", "Completed"][..]), "{row}");
    }

    // The scheduler, asking the extender, put every gang pod where admission reserved it.
    let (on_plan, total) = stdout
        .lines()
        .find_map(|l| l.strip_suffix(" gang pods ran on the node admission reserved for them"))
        .and_then(|l| l.split_once(" of "))
        .map(|(a, b)| (a.parse::<u32>().unwrap_or(0), b.parse::<u32>().unwrap_or(u32::MAX)))
        .unwrap_or_else(|| panic!("the summary counts pods on their reserved nodes:\n{stdout}"));
    // (Pods of Jobs a finished JobSet deleted while they were active are gone; the rest remain.)
    assert!(total >= 10, "the examples' pods are counted: {total}");
    assert_eq!(on_plan, total, "{stdout}");

    // How to poke at it: the metrics endpoints of every component.
    for what in ["admission controller", "scheduler extender", "gpu-agent gpu-node-0"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("curl -s http://127.0.0.1:") && l.ends_with(&format!("/metrics   # {what}"))),
            "{what}: {stdout}"
        );
    }

    // Everything it started ran under its cluster directory (control plane, KWOK, agents): none is left.
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Component logs: "))
        .and_then(|logs| logs.strip_suffix("/logs"))
        .expect("the summary names the cluster directory")
        .to_owned();
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left running: {left:?}");
    let agents = processes_mentioning(&format!("{}/gpu-agents/", dir));
    assert!(agents.is_empty(), "gpu-agents left running: {agents:?}");
}

/// Runs `muster-demo` against the cluster of `kubeconfig` (as `KUBECONFIG`, the way a user points it at theirs).
async fn demo_on(demo: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(demo)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(400), output)
        .await
        .expect("muster-demo finishes within its timeouts")
        .expect("muster-demo runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn container_images(spec: Option<&PodSpec>) -> Vec<String> {
    spec.iter().flat_map(|s| &s.containers).filter_map(|c| c.image.clone()).collect()
}

/// `scripts/demo.sh --install` against a cluster that is not the demo's own: the real API server, controller-manager
/// (Deployments, DaemonSets) and scheduler, with KWOK playing the kubelets, so Muster's pods "run" without
/// containers: the install is checked up to its pods being ready (what the images then do is the local demo's job).
#[tokio::test]
async fn the_install_refuses_what_cannot_work_applies_the_variant_waits_for_its_pods_and_uninstalls() {
    let _serial = serial().await;
    let demo = workspace_binary("muster-tests", "muster-demo", Profile::Dev, "MUSTER_DEMO_BIN").expect("demo");
    let mut config = ClusterConfig::full().controllers(DEFAULT_CONTROLLERS.iter().copied().chain([
        "deployment-controller",
        "replicaset-controller",
        "daemonset-controller",
    ]));
    for i in 0..3 {
        config = config.node(
            FakeNode::new(format!("gpu-{i}")).gpus(8).cpu("64").memory("512Gi").label("nvidia.com/gpu.present", "true"),
        );
    }
    let cluster = TestCluster::start(config).await.expect("cluster");
    let client = cluster.client().expect("client");
    let kubeconfig = cluster.kubeconfig_path();

    // No cert-manager here: the default install is refused, and nothing is applied.
    let (ok, out) = demo_on(&demo, kubeconfig, &["--install", "--yes", "--no-examples"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("needs cert-manager") && out.contains("--variant self-managed-certs"), "{out}");
    assert!(out.contains("no RuntimeClass \"nvidia\""), "warned up front: {out}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt("muster-system").await.expect("get").is_none(), "nothing applied: {out}");
    // Without a terminal, changing a cluster needs --yes.
    let (ok, out) =
        demo_on(&demo, kubeconfig, &["--install", "--variant", "self-managed-certs", "--no-examples"]).await;
    assert!(!ok && out.contains("not without --yes"), "{out}");

    let runtime_class: RuntimeClass =
        serde_json::from_value(json!({"metadata": {"name": "nvidia"}, "handler": "nvidia"})).expect("RuntimeClass");
    Api::<RuntimeClass>::all(client.clone()).create(&PostParams::default(), &runtime_class).await.expect("created");
    let install = [
        "--install",
        "--yes",
        "--no-examples",
        "--variant",
        "self-managed-certs",
        "--registry",
        "registry.example.com/ml-platform",
        "--tag",
        "v0.1.0-test",
        "--ready-timeout-seconds",
        "180",
    ];
    let (ok, out) = demo_on(&demo, kubeconfig, &install).await;
    assert!(ok, "{out}");
    assert!(out.contains("Muster is installed and ready"), "{out}");
    assert!(!out.contains("no RuntimeClass"), "{out}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "muster-system");
    let admission = deployments.get("muster-admission").await.expect("muster-admission");
    assert_eq!(
        container_images(admission.spec.template.spec.as_ref()),
        ["registry.example.com/ml-platform/muster-admission:v0.1.0-test"]
    );
    let reconciler = deployments.get("muster-reconciler").await.expect("muster-reconciler");
    assert_eq!(
        container_images(reconciler.spec.template.spec.as_ref()),
        ["registry.example.com/ml-platform/muster-reconciler:v0.1.0-test"]
    );
    let agents =
        Api::<DaemonSet>::namespaced(client.clone(), "muster-system").get("muster-gpu-agent").await.expect("ds");
    assert_eq!(agents.status.as_ref().map(|s| s.number_available), Some(Some(3)), "one agent per GPU node");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(crds.get_opt("jobsets.jobset.x-k8s.io").await.expect("get").is_some());
    // Installing again is a no-op apply, not an error.
    let (ok, out) = demo_on(&demo, kubeconfig, &install).await;
    assert!(ok, "{out}");

    // Uninstall: Muster's namespace and webhooks go; the CRDs (and every JobSet) stay.
    let (ok, out) = demo_on(&demo, kubeconfig, &["--uninstall", "--yes", "--variant", "self-managed-certs"]).await;
    assert!(ok, "{out}");
    assert!(namespaces.get_opt("muster-system").await.expect("get").is_none(), "{out}");
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    assert!(webhooks.list(&Default::default()).await.expect("list").items.is_empty(), "{out}");
    assert!(crds.get_opt("jobsets.jobset.x-k8s.io").await.expect("get").is_some(), "the CRDs stay: {out}");
}
