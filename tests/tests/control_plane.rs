//! Integration tests against the real control plane: the upstream Job controller, garbage collector
//! and kube-scheduler, with KWOK running pods on a fake GPU node.
//!
//! Build the binaries first: `tests/build-control-plane.sh`. Run one test with
//! `cargo test -p muster-tests --test control_plane -- <name>`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams, TypeMeta};
use kube::discovery;
use muster_tests::{
    ClusterConfig, FakeNode, GPU_RESOURCE, SharedCluster, eventually, load_yaml_documents, yaml_files_in,
};
use serde_json::{Value, json};

const GPU_NODE: &str = "gpu-node-0";

static CLUSTER: SharedCluster =
    SharedCluster::new(|| ClusterConfig::full().node(FakeNode::new(GPU_NODE).gpus(8).cpu("64").memory("512Gi")));

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The whole path a gang's pods take, minus Muster: the Job controller creates indexed pods, the
/// scheduler binds them to the node with free GPUs, KWOK runs and completes them, the Job completes.
#[tokio::test]
async fn indexed_gpu_job_is_scheduled_runs_and_completes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("indexed-job").await.expect("create namespace");
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();

    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "trainer"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"muster.dev/test-duration": "500ms"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "train",
                        "image": "registry.invalid/muster/train:never-pulled",
                        "resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1", "cpu": "1"}},
                    }],
                },
            },
        },
    }))
    .expect("job manifest");
    jobs.create(&PostParams::default(), &job).await.expect("create job");

    let done = eventually("the Job to complete", Duration::from_secs(90), || async {
        let job = jobs.get("trainer").await.map_err(|e| e.to_string())?;
        if job_condition(&job, "Failed") {
            panic!("job failed: {:?}", job.status);
        }
        if job_condition(&job, "Complete") { Ok(job) } else { Err(format!("status: {:?}", job.status)) }
    })
    .await
    .expect("job completes");
    let status = done.status.expect("job status");
    assert_eq!(status.succeeded, Some(2), "{status:?}");
    assert_eq!(status.completed_indexes.as_deref(), Some("0,1"));

    let pods =
        pods.list(&ListParams::default().labels("batch.kubernetes.io/job-name=trainer")).await.expect("list pods");
    assert_eq!(pods.items.len(), 2, "one pod per index, none retried");
    let mut indexes = BTreeSet::new();
    for pod in &pods.items {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let spec = pod.spec.as_ref().expect("pod spec");
        assert_eq!(spec.node_name.as_deref(), Some(GPU_NODE), "{name} bound by the scheduler");
        let status = pod.status.as_ref().expect("pod status");
        assert_eq!(status.phase.as_deref(), Some("Succeeded"), "{name} completed by KWOK");
        let conditions = status.conditions.as_deref().unwrap_or_default();
        assert!(
            conditions.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"),
            "{name} conditions: {conditions:?}"
        );
        let terminated = status
            .container_statuses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
            .map(|t| t.exit_code)
            .collect::<Vec<_>>();
        assert_eq!(terminated, vec![0], "{name} container exited 0");
        let index = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
            .cloned()
            .expect("completion index annotation");
        indexes.insert(index);
    }
    assert_eq!(indexes, BTreeSet::from(["0".to_owned(), "1".to_owned()]));
}

/// A pod annotated to fail ends Failed with the requested exit code, and the Job reports it.
#[tokio::test]
async fn annotated_pod_fails_with_exit_code() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("failing-job").await.expect("create namespace");
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "crasher"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"muster.dev/test-fail": "true", "muster.dev/test-exit-code": "42"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.invalid/muster/crash:never-pulled"}],
                },
            },
        },
    }))
    .expect("job manifest");
    jobs.create(&PostParams::default(), &job).await.expect("create job");
    eventually("the Job to fail", Duration::from_secs(90), || async {
        let job = jobs.get("crasher").await.map_err(|e| e.to_string())?;
        if job_condition(&job, "Failed") { Ok(()) } else { Err(format!("status: {:?}", job.status)) }
    })
    .await
    .expect("job fails");
    let pod = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=crasher"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .next()
        .expect("one pod");
    let status = pod.status.expect("pod status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let code = status.container_statuses.unwrap_or_default()[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(code, Some(42));
}

/// Deleting an owner garbage-collects what it owns (the real garbage collector).
#[tokio::test]
async fn deleting_owner_garbage_collects_children() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("gc").await.expect("create namespace");
    let config_maps: Api<ConfigMap> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let jobs: Api<Job> = ns.api();

    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).expect("owner");
    let owner = config_maps.create(&PostParams::default(), &owner).await.expect("create owner");
    let owner_ref = json!([{
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid.expect("owner uid"),
    }]);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "child-secret", "ownerReferences": owner_ref},
        "stringData": {"k": "v"},
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &secret).await.expect("create secret");
    // Suspended, so the Job controller creates no pods; only ownership matters here.
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "child-job", "ownerReferences": owner_ref},
        "spec": {
            "suspend": true,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.invalid/x"}]}},
        },
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &job).await.expect("create job");

    config_maps.delete("owner", &DeleteParams::background()).await.expect("delete owner");
    eventually("the owned Secret and Job to be collected", Duration::from_secs(60), || async {
        let secret = secrets.get_opt("child-secret").await.map_err(|e| e.to_string())?;
        let job = jobs.get_opt("child-job").await.map_err(|e| e.to_string())?;
        match (secret, job) {
            (None, None) => Ok(()),
            (s, j) => Err(format!("secret present: {}, job present: {}", s.is_some(), j.is_some())),
        }
    })
    .await
    .expect("children garbage-collected");
}

/// `value` holds everything in `expected`: objects may have extra keys (server-side defaults), arrays
/// must match element by element, scalars must be equal. Returns the first difference.
fn contains(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => want.iter().try_for_each(|(key, value)| {
            let at = format!("{path}.{key}");
            got.get(key).map_or_else(|| Err(format!("{at} missing")), |actual| contains(value, actual, &at))
        }),
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            want.iter().zip(got).enumerate().try_for_each(|(i, (w, g))| contains(w, g, &format!("{path}[{i}]")))
        }
        (Value::Number(want), Value::Number(got)) if want.as_f64() == got.as_f64() => Ok(()),
        (want, got) if want == got => Ok(()),
        (want, got) => Err(format!("{path}: sent {want}, read back {got}")),
    }
}

/// Every CRD in deploy/controller/crds installs, and every object in examples/ is accepted by the API
/// server and reads back with all its fields (the schema prunes nothing a user wrote).
#[tokio::test]
async fn crds_install_and_examples_round_trip() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf();
    let crds = yaml_files_in(&repo.join("deploy/controller/crds")).expect("list CRDs");
    let examples = yaml_files_in(&repo.join("examples")).expect("list examples");
    assert!(!crds.is_empty(), "no CRDs in deploy/controller/crds");
    assert!(!examples.is_empty(), "no examples in examples/");

    let cluster = CLUSTER.lock().await;
    let installed = cluster.install_crds(&crds).await.expect("install CRDs");
    eprintln!("installed CRDs: {installed:?}");
    let ns = cluster.namespace("examples").await.expect("create namespace");
    let client = ns.client();

    let mut checked = 0;
    for file in &examples {
        for mut doc in load_yaml_documents(file).expect("parse example") {
            let gvk = GroupVersionKind::try_from(&TypeMeta {
                api_version: doc["apiVersion"].as_str().unwrap_or_default().to_owned(),
                kind: doc["kind"].as_str().unwrap_or_default().to_owned(),
            })
            .unwrap_or_else(|e| panic!("{}: bad apiVersion/kind: {e}", file.display()));
            // A CRD established a moment ago can take a moment to appear in discovery.
            let (resource, caps) = eventually(&format!("{gvk:?} in discovery"), Duration::from_secs(30), || async {
                discovery::pinned_kind(&client, &gvk).await.map_err(|e| e.to_string())
            })
            .await
            .expect("kind served");
            let api: Api<DynamicObject> = if caps.scope == discovery::Scope::Namespaced {
                doc["metadata"]["namespace"] = json!(ns.name());
                Api::namespaced_with(client.clone(), ns.name(), &resource)
            } else {
                Api::all_with(client.clone(), &resource)
            };
            let object: DynamicObject = serde_json::from_value(doc.clone()).expect("dynamic object");
            let name = object.metadata.name.clone().expect("examples are named");
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{}: {} {name} rejected: {e}", file.display(), gvk.kind));
            let back = serde_json::to_value(api.get(&name).await.expect("read back")).expect("to JSON");
            for part in ["spec", "metadata/labels", "metadata/annotations"] {
                let pointer = format!("/{part}");
                if let Some(sent) = doc.pointer(&pointer) {
                    let got = back.pointer(&pointer).unwrap_or(&Value::Null);
                    if let Err(diff) = contains(sent, got, part) {
                        panic!("{}: {} {name} did not round-trip: {diff}", file.display(), gvk.kind);
                    }
                }
            }
            checked += 1;
        }
    }
    eprintln!("{checked} example objects round-tripped");
}

/// A pod with no Job owner runs until deleted; deletion completes without a kubelet (KWOK's pod-delete
/// stage), and so does deleting its namespace (the namespace controller).
#[tokio::test]
async fn bare_pod_runs_until_deleted_and_namespace_deletion_completes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("bare-pod").await.expect("create namespace");
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "server"},
        "spec": {
            "containers": [{
                "name": "main",
                "image": "registry.invalid/muster/server:never-pulled",
                "resources": {"limits": {GPU_RESOURCE: "2"}},
            }],
        },
    }))
    .expect("pod manifest");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let running = eventually("the pod to run and be Ready", Duration::from_secs(60), || async {
        let pod = pods.get("server").await.map_err(|e| e.to_string())?;
        let status = pod.status.clone().unwrap_or_default();
        let ready =
            status.conditions.as_deref().unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
        if status.phase.as_deref() == Some("Running") && ready { Ok(pod) } else { Err(format!("{status:?}")) }
    })
    .await
    .expect("pod running");
    let status = running.status.expect("status");
    assert!(status.pod_ip.is_some_and(|ip| ip.starts_with("10.244.")), "pod IP from KWOK's --cidr");
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"), "host IP from KWOK's --node-ip");

    pods.delete("server", &DeleteParams::default()).await.expect("delete pod");
    eventually("the pod to be gone", Duration::from_secs(20), || async {
        match pods.get_opt("server").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(pod) => Err(format!("still there, deletionTimestamp {:?}", pod.metadata.deletion_timestamp)),
        }
    })
    .await
    .expect("pod deleted without waiting out its grace period");

    ns.delete(Duration::from_secs(60)).await.expect("namespace deleted");
}
