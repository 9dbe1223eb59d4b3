//! Without the kubelet's socket: the pods bound to this node, from the API server. The watch is field-selected
//! (`spec.nodeName=<node>`), so each agent caches only its own node's pods, never the cluster's, and the cached
//! pods are pruned to what [`crate::allocation::pod_gpus`] reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use muster_api::gpunode::PodRef;
use tokio::task::JoinHandle;

use crate::allocation::{PodGpus, pod_gpus};

/// A running watch of this node's pods.
pub struct NodePods {
    store: Store<Pod>,
    ready: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl NodePods {
    pub fn start(client: Client, node_name: &str) -> Self {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let (store, writer) = reflector::store();
        let ready = Arc::new(AtomicBool::new(false));
        let stream = watcher(api, config).default_backoff().modify(prune).reflect(writer).applied_objects();
        let waiter = store.clone();
        let ready_flag = ready.clone();
        let task = tokio::spawn(async move {
            let mark_ready = async {
                if waiter.wait_until_ready().await.is_ok() {
                    ready_flag.store(true, Ordering::Relaxed);
                }
            };
            let drive = stream.for_each(|event| {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching this node's pods");
                }
                futures::future::ready(())
            });
            futures::join!(mark_ready, drive);
        });
        NodePods { store, ready, task }
    }

    /// The pods holding GPUs, once the first list has arrived.
    pub fn snapshot(&self) -> Option<Vec<PodGpus>> {
        if !self.ready.load(Ordering::Relaxed) {
            return None;
        }
        let mut pods: Vec<PodGpus> = self
            .store
            .state()
            .iter()
            .filter_map(|pod| {
                let gpus = pod_gpus(pod);
                (gpus > 0).then(|| PodGpus {
                    pod: PodRef {
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        name: pod.metadata.name.clone().unwrap_or_default(),
                        uid: pod.metadata.uid.clone(),
                    },
                    gpus,
                })
            })
            .collect();
        pods.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        Some(pods)
    }
}

impl Drop for NodePods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps what GPU accounting reads: the containers' resources and the phase.
fn prune(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    if let Some(status) = &mut pod.status {
        *status = PodStatus { phase: status.phase.take(), ..PodStatus::default() };
    }
    if let Some(spec) = &mut pod.spec {
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            container.env = None;
            container.env_from = None;
            container.command = None;
            container.args = None;
            container.volume_mounts = None;
            container.liveness_probe = None;
            container.readiness_probe = None;
            container.startup_probe = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    /// A fake API server that lists two pods for the node and then holds the watch open.
    fn fake_api(requests: Arc<Mutex<Vec<String>>>) -> Client {
        let service = tower::service_fn(move |request: Request<Body>| {
            let requests = requests.clone();
            async move {
                let target = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                requests.lock().expect("lock").push(target.clone());
                if target.contains("watch=true") {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let gpu_pod = |name: &str, gpus: &str, phase: &str| {
                    json!({
                        "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}"), "resourceVersion": "5"},
                        "spec": {"nodeName": "gpu-node-1", "containers": [
                            {"name": "main", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
                        ]},
                        "status": {"phase": phase}
                    })
                };
                let list = json!({
                    "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "10"},
                    "items": [gpu_pod("train-0", "4", "Running"), gpu_pod("done", "8", "Succeeded"), gpu_pod("cpu", "0", "Running")]
                });
                let body = Body::from(serde_json::to_vec(&list).unwrap_or_default());
                Ok::<_, kube::Error>(
                    Response::builder().header("content-type", "application/json").body(body).expect("response"),
                )
            }
        });
        Client::new(service, "default")
    }

    #[tokio::test]
    async fn only_this_nodes_pods_holding_gpus() {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let pods = NodePods::start(fake_api(requests.clone()), "gpu-node-1");
        let mut snapshot = None;
        for _ in 0..100 {
            snapshot = pods.snapshot();
            if snapshot.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let snapshot = snapshot.expect("the pod list arrives");
        assert_eq!(snapshot.len(), 1);
        assert_eq!((snapshot[0].pod.name.as_str(), snapshot[0].gpus), ("train-0", 4));
        assert_eq!(snapshot[0].pod.uid.as_deref(), Some("uid-train-0"));
        let first = requests.lock().expect("lock")[0].clone();
        assert!(first.starts_with("/api/v1/pods?"), "{first}");
        assert!(first.contains("fieldSelector=spec.nodeName%3Dgpu-node-1"), "the watch is field-selected: {first}");
    }
}
