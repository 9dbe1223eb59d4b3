//! The JobSet reconciler end to end: the real Job controller, garbage collector and kube-scheduler, with KWOK
//! running pods on fake GPU nodes. Nothing here writes Job or pod status by hand.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use muster_api::JobSet;
use muster_api::keys::*;
use muster_reconciler::plan::FeatureGates;
use muster_tests::{
    ClusterConfig, DEFAULT_CONTROLLERS, FakeNode, InProcessReconciler, SharedCluster, TestNamespace, eventually,
};
use serde_json::json;

static CLUSTER: SharedCluster = SharedCluster::new(|| {
    ClusterConfig::full()
        // Claims carry the pvc-protection finalizer; its controller releases them once no pod uses them.
        .controllers(DEFAULT_CONTROLLERS.iter().copied().chain(["persistentvolumeclaim-protection-controller"]))
        .crd(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds/jobset.x-k8s.io_jobsets.yaml"))
        .node(FakeNode::new("gpu-a").gpus(8).cpu("64").memory("512Gi"))
        .node(FakeNode::new("gpu-b").gpus(8).cpu("64").memory("512Gi"))
});

const WAIT: Duration = Duration::from_secs(60);

/// A leader and two GPU workers; pods run for `duration` and then succeed (or fail, per `fail`).
fn training(name: &str, fail: Option<&str>, extra: serde_json::Value) -> JobSet {
    let pod = |gpus: u32, annotations: serde_json::Value| {
        json!({"spec": {"parallelism": 1, "completions": 1, "backoffLimit": 0, "completionMode": "Indexed",
            "template": {"metadata": {"annotations": annotations}, "spec": {"restartPolicy": "Never",
                "containers": [{"name": "train", "image": "registry.invalid/train:never-pulled",
                    "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus, "cpu": "1"}}}]}}}})
    };
    let mut worker_annotations = json!({"muster.dev/test-duration": "1s"});
    if let Some(fail) = fail {
        worker_annotations["muster.dev/test-fail"] = json!(fail);
    }
    let mut spec = json!({
        "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
        "successPolicy": {"operator": "All"},
        "replicatedJobs": [
            {"name": "leader", "replicas": 1, "template": pod(1, json!({"muster.dev/test-duration": "1s"}))},
            {"name": "workers", "replicas": 2, "template": pod(4, worker_annotations)},
        ]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name}, "spec": spec}))
    .expect("valid JobSet")
}

async fn condition(ns: &TestNamespace<'_>, name: &str, type_: &str) -> Result<(), String> {
    let js = ns.api::<JobSet>().get(name).await.map_err(|e| e.to_string())?;
    let status = js.status.unwrap_or_default();
    if status.conditions.iter().any(|c| c.type_ == type_ && c.status == "True") {
        Ok(())
    } else {
        Err(format!("restarts {}, conditions {:?}", status.restarts, status.conditions))
    }
}

#[tokio::test]
async fn jobset_runs_to_completion_on_gpu_nodes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("e2e-complete").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    ns.api::<JobSet>().create(&PostParams::default(), &training("train", None, json!({}))).await.expect("create");

    // Every pod is bound to a GPU node by the real scheduler and run by KWOK.
    let pods = eventually("3 pods scheduled", WAIT, || async {
        let pods = ns.api::<Pod>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let bound: Vec<_> = pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
        if bound.len() == 3 { Ok(pods) } else { Err(format!("{} of {} bound", bound.len(), pods.len())) }
    })
    .await
    .expect("pods scheduled");
    let hostnames: Vec<_> = pods.iter().filter_map(|p| p.spec.as_ref()?.subdomain.clone()).collect();
    assert_eq!(hostnames, ["train", "train", "train"], "pods get the JobSet's subdomain");
    eventually("Completed", WAIT, || condition(&ns, "train", CONDITION_COMPLETED)).await.expect("completed");
    assert!(ns.api::<Service>().get_opt("train").await.expect("get").is_some());
}

#[tokio::test]
async fn failed_pod_restarts_the_group_with_the_next_attempt() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("e2e-restart").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let js = training("train", Some("first-attempt"), json!({"failurePolicy": {"maxRestarts": 2}}));
    ns.api::<JobSet>().create(&PostParams::default(), &js).await.expect("create");

    eventually("Completed after a restart", WAIT, || condition(&ns, "train", CONDITION_COMPLETED))
        .await
        .expect("completed");
    let status = ns.api::<JobSet>().get("train").await.expect("get").status.expect("status");
    assert_eq!(status.restarts, 1);
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.expect("list").items;
    let attempts: Vec<_> = jobs.iter().map(|j| j.labels().get(RESTART_ATTEMPT).cloned().unwrap_or_default()).collect();
    assert_eq!(attempts, ["1", "1", "1"], "every Job of the group was recreated with restart-attempt 1");
    let restarting = status.conditions.iter().find(|c| c.type_ == CONDITION_RESTARTING_JOBSET).expect("condition");
    assert_eq!((restarting.status.as_str(), restarting.reason.as_str()), ("False", "JobSetCompleted"));
}

#[tokio::test]
async fn deleting_the_jobset_removes_what_it_owns_and_keeps_retained_claims() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("e2e-delete").await.expect("namespace");
    let _reconciler = InProcessReconciler::start(ns.client(), FeatureGates::default());
    let claim = |name: &str| json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let js = training(
        "train",
        None,
        json!({"volumeClaimPolicies": [
            {"templates": [claim("ckpt")], "retentionPolicy": {"whenDeleted": "Retain"}},
            {"templates": [claim("scratch")], "retentionPolicy": {"whenDeleted": "Delete"}}]}),
    );
    let mut js = js;
    // Long-running pods, so there is something to delete.
    for rjob in &mut js.spec.replicated_jobs {
        if let Some(meta) = rjob.template.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
            meta.annotations.get_or_insert_default().insert("muster.dev/test-duration".into(), "10m".into());
        }
    }
    ns.api::<JobSet>().create(&PostParams::default(), &js).await.expect("create");
    eventually("pods running", WAIT, || async {
        let pods = ns.api::<Pod>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let running =
            pods.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count();
        if running == 3 { Ok(()) } else { Err(format!("{running} running")) }
    })
    .await
    .expect("running");
    let claims = ns.api::<PersistentVolumeClaim>();
    assert!(claims.get_opt("ckpt-train").await.expect("get").is_some());

    ns.api::<JobSet>().delete("train", &DeleteParams::foreground()).await.expect("delete");
    eventually("everything owned is gone", WAIT, || async {
        let jobs = ns.api::<Job>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items.len();
        let pods = ns.api::<Pod>().list(&ListParams::default()).await.map_err(|e| e.to_string())?.items.len();
        let svc = ns.api::<Service>().get_opt("train").await.map_err(|e| e.to_string())?.is_some();
        let scratch = claims.get_opt("scratch-train").await.map_err(|e| e.to_string())?.is_some();
        let js = ns.api::<JobSet>().get_opt("train").await.map_err(|e| e.to_string())?.is_some();
        if (jobs, pods, svc, scratch, js) == (0, 0, false, false, false) {
            Ok(())
        } else {
            Err(format!("jobs {jobs}, pods {pods}, service {svc}, scratch claim {scratch}, jobset {js}"))
        }
    })
    .await
    .expect("garbage collected");
    assert!(claims.get_opt("ckpt-train").await.expect("get").is_some(), "the Retain claim outlives the JobSet");
}
