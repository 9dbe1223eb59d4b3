//! The kubelet's pod-resources API (v1) over its unix socket: `List` (which pod holds which devices) and
//! `GetAllocatableResources` (which devices the kubelet can hand out). [`v1`] is generated from
//! `proto/podresources/v1/api.proto` (client and server; the server is what tests use as a fake kubelet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use muster_api::gpunode::PodRef;
use tonic::transport::{Endpoint, Uri};

use crate::allocation::{KubeletView, PodDevices, is_nvidia_resource};

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1;

/// Where the kubelet serves it. Mount the directory, not the socket, so a kubelet restart (which recreates
/// the socket) does not leave the agent holding a stale file.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    #[error("no kubelet pod-resources socket at {0}")]
    NoSocket(PathBuf),
    #[error("connecting to the kubelet at {path}: {source}")]
    Connect { path: PathBuf, source: tonic::transport::Error },
    #[error("kubelet pod-resources {call}: {status}")]
    Call { call: &'static str, status: tonic::Status },
}

/// A client for one socket. Each [`KubeletClient::view`] dials afresh (a local socket is cheap to dial, and the
/// kubelet replaces it when it restarts).
#[derive(Debug, Clone)]
pub struct KubeletClient {
    socket: PathBuf,
    timeout: Duration,
}

impl KubeletClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        KubeletClient { socket: socket.into(), timeout: Duration::from_secs(10) }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the socket exists at all (when it does not, allocations come from the API server).
    pub fn available(&self) -> bool {
        self.socket.exists()
    }

    pub async fn view(&self) -> Result<KubeletView, PodResourcesError> {
        if !self.available() {
            return Err(PodResourcesError::NoSocket(self.socket.clone()));
        }
        let socket = self.socket.clone();
        // The URI is required by the HTTP/2 layer and never resolved: the connector dials the socket.
        let channel = Endpoint::from_static("http://kubelet.invalid")
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
            }))
            .await
            .map_err(|source| PodResourcesError::Connect { path: self.socket.clone(), source })?;
        let mut client = v1::pod_resources_lister_client::PodResourcesListerClient::new(channel);
        let list = client
            .list(v1::ListPodResourcesRequest {})
            .await
            .map_err(|status| PodResourcesError::Call { call: "List", status })?
            .into_inner();
        let allocatable = match client.get_allocatable_resources(v1::AllocatableResourcesRequest {}).await {
            Ok(response) => Some(response.into_inner()),
            // Kubelets before 1.23 may not serve it (feature gate); allocations alone still work.
            Err(status) if status.code() == tonic::Code::Unimplemented => None,
            Err(status) => return Err(PodResourcesError::Call { call: "GetAllocatableResources", status }),
        };
        Ok(to_view(list, allocatable))
    }
}

/// The NVIDIA devices in the kubelet's answers.
pub fn to_view(
    list: v1::ListPodResourcesResponse,
    allocatable: Option<v1::AllocatableResourcesResponse>,
) -> KubeletView {
    let nvidia_ids = |devices: &[v1::ContainerDevices]| -> Vec<String> {
        devices
            .iter()
            .filter(|d| is_nvidia_resource(&d.resource_name))
            .flat_map(|d| d.device_ids.iter().cloned())
            .collect()
    };
    let pods = list
        .pod_resources
        .into_iter()
        .filter_map(|pod| {
            let device_ids: Vec<String> = pod.containers.iter().flat_map(|c| nvidia_ids(&c.devices)).collect();
            (!device_ids.is_empty()).then_some(PodDevices {
                pod: PodRef { namespace: pod.namespace, name: pod.name, uid: None },
                device_ids,
            })
        })
        .collect();
    KubeletView { allocatable: allocatable.map(|a| nvidia_ids(&a.devices)), pods }
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use super::*;

    fn devices(resource: &str, ids: &[&str]) -> ContainerDevices {
        ContainerDevices {
            resource_name: resource.into(),
            device_ids: ids.iter().map(|s| s.to_string()).collect(),
            topology: None,
        }
    }

    #[test]
    fn only_nvidia_devices_count() {
        let list = ListPodResourcesResponse {
            pod_resources: vec![
                PodResources {
                    name: "train-0".into(),
                    namespace: "ml".into(),
                    containers: vec![
                        ContainerResources {
                            name: "main".into(),
                            devices: vec![devices("nvidia.com/gpu", &["GPU-a"]), devices("example.com/nic", &["eth1"])],
                            ..Default::default()
                        },
                        ContainerResources {
                            name: "side".into(),
                            devices: vec![devices("nvidia.com/mig-1g.10gb", &["MIG-b"])],
                            ..Default::default()
                        },
                    ],
                },
                PodResources { name: "web".into(), namespace: "default".into(), containers: vec![] },
            ],
        };
        let allocatable = AllocatableResourcesResponse {
            devices: vec![devices("nvidia.com/gpu", &["GPU-a", "GPU-c"]), devices("example.com/nic", &["eth1"])],
            ..Default::default()
        };
        let view = to_view(list, Some(allocatable));
        assert_eq!(view.pods.len(), 1);
        assert_eq!(view.pods[0].pod.name, "train-0");
        assert_eq!(view.pods[0].device_ids, vec!["GPU-a".to_string(), "MIG-b".to_string()]);
        assert_eq!(view.allocatable, Some(vec!["GPU-a".to_string(), "GPU-c".to_string()]));
    }

    #[tokio::test]
    async fn a_missing_socket_says_so() {
        let client = KubeletClient::new("/nonexistent/kubelet.sock");
        assert!(!client.available());
        assert!(matches!(client.view().await, Err(PodResourcesError::NoSocket(_))));
    }
}
