//! `scripts/demo.sh --install` (the demo's install mode) against a cluster that is not the demo's own.
//!
//! A test binary of its own: the cluster it starts holds this process's machine-wide cluster lock until the process
//! exits, and the local demo (`tests/demo.rs`) runs its own control plane in a child process that needs that lock.
//! In one binary the two deadlocked whenever this test ran first.
//!
//! Run: `cargo test -p muster-tests --test install` (after `tests/build-control-plane.sh`).

use std::path::Path;
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
