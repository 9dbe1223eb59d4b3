//! Publishing the node's `GPUNode`: the object (named after the Node, owned by it, so it goes when the Node
//! goes) and its status, both by server-side apply under one field manager. The status is written when it
//! changes in a way admission cares about, and otherwise on a heartbeat, which also refreshes the telemetry.
//!
//! Drive it from a test with a client and a node name:
//!
//! ```no_run
//! # async fn example(client: kube::Client, status: muster_api::GPUNodeStatus) -> Result<(), muster_gpu_agent::publish::PublishError> {
//! use std::time::Duration;
//! let mut publisher = muster_gpu_agent::publish::Publisher::new(client, "gpu-node-1", Duration::from_secs(30));
//! publisher.publish(&status).await?; // first call: creates the GPUNode and writes the status
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use muster_api::gpunode::{GPUNode, GPUNodeStatus};
use serde_json::json;

use crate::status::significant_change;

/// The field manager of everything the agent writes.
pub const FIELD_MANAGER: &str = "muster-gpu-agent";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("reading Node {node}: {source}")]
    Node { node: String, source: kube::Error },
    #[error("applying GPUNode {node}: {source}")]
    Object { node: String, source: kube::Error },
    #[error("applying GPUNode {node} status: {source}")]
    Status { node: String, source: kube::Error },
}

impl PublishError {
    /// A stable category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            PublishError::Node { .. } => "node",
            PublishError::Object { .. } => "object",
            PublishError::Status { .. } => "status",
        }
    }
}

/// Why a status is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing written yet (by this publisher).
    First,
    /// Something admission acts on changed.
    Changed,
    /// The heartbeat interval passed.
    Heartbeat,
}

impl Due {
    pub fn as_str(self) -> &'static str {
        match self {
            Due::First => "first",
            Due::Changed => "changed",
            Due::Heartbeat => "heartbeat",
        }
    }
}

/// Whether to write `new`, given the last status written and how long ago.
pub fn due(last: Option<(&GPUNodeStatus, Duration)>, new: &GPUNodeStatus, heartbeat: Duration) -> Option<Due> {
    match last {
        None => Some(Due::First),
        Some((old, _)) if significant_change(old, new) => Some(Due::Changed),
        Some((_, elapsed)) if elapsed >= heartbeat => Some(Due::Heartbeat),
        Some(_) => None,
    }
}

/// Publishes one node's `GPUNode`.
pub struct Publisher {
    gpunodes: Api<GPUNode>,
    nodes: Api<Node>,
    node_name: String,
    heartbeat: Duration,
    object_applied: bool,
    last: Option<(GPUNodeStatus, Instant)>,
}

impl Publisher {
    pub fn new(client: Client, node_name: impl Into<String>, heartbeat: Duration) -> Self {
        Publisher {
            gpunodes: Api::all(client.clone()),
            nodes: Api::all(client),
            node_name: node_name.into(),
            heartbeat,
            object_applied: false,
            last: None,
        }
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Writes `status` if it is [`due`]; returns why it wrote, or `None` when it did not need to.
    pub async fn publish(&mut self, status: &GPUNodeStatus) -> Result<Option<Due>, PublishError> {
        let last = self.last.as_ref().map(|(s, at)| (s, at.elapsed()));
        let Some(reason) = due(last, status, self.heartbeat) else { return Ok(None) };
        self.write(status).await?;
        Ok(Some(reason))
    }

    /// Writes `status` now, with a fresh heartbeat time.
    pub async fn write(&mut self, status: &GPUNodeStatus) -> Result<(), PublishError> {
        if !self.object_applied {
            self.apply_object().await?;
        }
        match self.apply_status(status).await {
            Err(kube::Error::Api(response)) if response.code == 404 => {
                // Deleted under us (or its Node was replaced and the garbage collector took it): start over.
                self.object_applied = false;
                self.apply_object().await?;
                self.apply_status(status)
                    .await
                    .map_err(|source| PublishError::Status { node: self.node_name.clone(), source })?;
            }
            Err(source) => return Err(PublishError::Status { node: self.node_name.clone(), source }),
            Ok(()) => {}
        }
        self.last = Some((status.clone(), Instant::now()));
        Ok(())
    }

    async fn apply_object(&mut self) -> Result<(), PublishError> {
        let node = self
            .nodes
            .get(&self.node_name)
            .await
            .map_err(|source| PublishError::Node { node: self.node_name.clone(), source })?;
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.node_name.clone(),
            uid: node.metadata.uid.unwrap_or_default(),
            ..OwnerReference::default()
        };
        let object = json!({
            "apiVersion": GPUNode::api_version(&()),
            "kind": GPUNode::kind(&()),
            "metadata": { "name": self.node_name, "ownerReferences": [owner] },
            "spec": { "nodeName": self.node_name },
        });
        self.gpunodes
            .patch(&self.node_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .map_err(|source| PublishError::Object { node: self.node_name.clone(), source })?;
        self.object_applied = true;
        Ok(())
    }

    async fn apply_status(&self, status: &GPUNodeStatus) -> Result<(), kube::Error> {
        let mut status = status.clone();
        status.heartbeat_time = Some(Time(Timestamp::now()));
        let body = json!({
            "apiVersion": GPUNode::api_version(&()),
            "kind": GPUNode::kind(&()),
            "status": status,
        });
        self.gpunodes
            .patch_status(&self.node_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{Request, Response, StatusCode};
    use kube::client::Body;
    use muster_api::gpunode::{GpuDevice, GpuHealth};
    use serde_json::Value;

    use super::*;

    /// A fake API server: records (method, path and query, JSON body) and answers like kube-apiserver would,
    /// except that the first `status_404s` status patches find no object.
    #[derive(Clone, Default)]
    struct FakeApi {
        requests: Arc<Mutex<Vec<(String, String, Value)>>>,
        status_404s: Arc<Mutex<u32>>,
    }

    impl FakeApi {
        fn client(&self) -> Client {
            let api = self.clone();
            let service = tower::service_fn(move |request: Request<Body>| {
                let api = api.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = body.collect_bytes().await?;
                    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    api.requests.lock().expect("lock").push((parts.method.to_string(), target.clone(), json));
                    let (code, answer) = if target.starts_with("/api/v1/nodes/") {
                        (
                            200,
                            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-node-1", "uid": "node-uid-1"}}),
                        )
                    } else if target.contains("/status") && {
                        let mut left = api.status_404s.lock().expect("lock");
                        let missing = *left > 0;
                        *left = left.saturating_sub(1);
                        missing
                    } {
                        (
                            404,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gpunodes.muster.dev \"gpu-node-1\" not found"}),
                        )
                    } else {
                        (
                            200,
                            json!({"apiVersion": "muster.dev/v1alpha1", "kind": "GPUNode", "metadata": {"name": "gpu-node-1"}, "spec": {"nodeName": "gpu-node-1"}}),
                        )
                    };
                    let response = Response::builder()
                        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                        .expect("response");
                    Ok::<_, kube::Error>(response)
                }
            });
            Client::new(service, "default")
        }

        fn take(&self) -> Vec<(String, String, Value)> {
            std::mem::take(&mut *self.requests.lock().expect("lock"))
        }
    }

    const OBJECT: &str = "/apis/muster.dev/v1alpha1/gpunodes/gpu-node-1?&force=true&fieldManager=muster-gpu-agent";
    const STATUS: &str =
        "/apis/muster.dev/v1alpha1/gpunodes/gpu-node-1/status?&force=true&fieldManager=muster-gpu-agent";

    #[tokio::test]
    async fn the_first_publish_creates_the_object_owned_by_the_node_then_applies_the_status() {
        let api = FakeApi::default();
        let mut publisher = Publisher::new(api.client(), "gpu-node-1", Duration::from_secs(30));
        assert_eq!(publisher.publish(&status(true, 40)).await.expect("publish"), Some(Due::First));
        let requests = api.take();
        let targets: Vec<(&str, &str)> = requests.iter().map(|(m, t, _)| (m.as_str(), t.as_str())).collect();
        assert_eq!(targets, vec![("GET", "/api/v1/nodes/gpu-node-1"), ("PATCH", OBJECT), ("PATCH", STATUS)]);
        let object = &requests[1].2;
        assert_eq!(object["spec"]["nodeName"], "gpu-node-1");
        assert_eq!(object["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "node-uid-1");
        let patch = &requests[2].2;
        assert_eq!(
            (patch["apiVersion"].as_str(), patch["kind"].as_str()),
            (Some("muster.dev/v1alpha1"), Some("GPUNode"))
        );
        assert!(patch["status"]["heartbeatTime"].is_string());
        assert_eq!(patch["status"]["devices"][0]["uuid"], "GPU-0");
        assert!(patch.get("spec").is_none(), "the status patch carries only the status");

        // Telemetry within the heartbeat: nothing written.
        assert_eq!(publisher.publish(&status(true, 55)).await.expect("publish"), None);
        assert!(api.take().is_empty());
        // Health changed: only the status is written.
        assert_eq!(publisher.publish(&status(false, 55)).await.expect("publish"), Some(Due::Changed));
        let targets: Vec<String> = api.take().into_iter().map(|(m, t, _)| format!("{m} {t}")).collect();
        assert_eq!(targets, vec![format!("PATCH {STATUS}")]);
    }

    #[tokio::test]
    async fn a_deleted_object_is_created_again() {
        let api = FakeApi::default();
        let mut publisher = Publisher::new(api.client(), "gpu-node-1", Duration::from_secs(30));
        publisher.write(&status(true, 40)).await.expect("first write");
        api.take();
        *api.status_404s.lock().expect("lock") = 1;
        publisher.write(&status(true, 40)).await.expect("second write");
        let targets: Vec<String> = api.take().into_iter().map(|(m, t, _)| format!("{m} {t}")).collect();
        assert_eq!(
            targets,
            vec![
                format!("PATCH {STATUS}"),
                "GET /api/v1/nodes/gpu-node-1".to_string(),
                format!("PATCH {OBJECT}"),
                format!("PATCH {STATUS}")
            ]
        );
    }

    fn status(healthy: bool, temperature: u32) -> GPUNodeStatus {
        GPUNodeStatus {
            nvml_available: true,
            devices: vec![GpuDevice {
                uuid: "GPU-0".into(),
                health: GpuHealth { healthy, ..Default::default() },
                temperature_celsius: Some(temperature),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn first_change_heartbeat_or_nothing() {
        let heartbeat = Duration::from_secs(30);
        let old = status(true, 40);
        assert_eq!(due(None, &old, heartbeat), Some(Due::First));
        assert_eq!(due(Some((&old, Duration::from_secs(1))), &status(true, 41), heartbeat), None);
        assert_eq!(due(Some((&old, Duration::from_secs(1))), &status(false, 40), heartbeat), Some(Due::Changed));
        assert_eq!(due(Some((&old, Duration::from_secs(30))), &status(true, 41), heartbeat), Some(Due::Heartbeat));
    }
}
