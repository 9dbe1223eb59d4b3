//! The pod-resources client against a fake kubelet (the generated server) on a unix socket.

mod common;

use common::FakeKubelet;
use muster_api::gpunode::PodRef;
use muster_gpu_agent::allocation::{KubeletView, PodDevices};
use muster_gpu_agent::podresources::{KubeletClient, PodResourcesError};

fn pod(name: &str, ids: &[&str]) -> PodDevices {
    PodDevices {
        pod: PodRef { namespace: "ml".into(), name: name.into(), uid: None },
        device_ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn list_and_allocatable_over_the_socket() {
    let kubelet =
        FakeKubelet::start(&[("ml", "a", &["GPU-1", "GPU-2::1"]), ("ml", "b", &["MIG-x"])], Some(&["GPU-1", "GPU-2"]));
    let view = KubeletClient::new(&kubelet.socket).view().await.expect("view");
    assert_eq!(
        view,
        KubeletView {
            allocatable: Some(vec!["GPU-1".into(), "GPU-2".into()]),
            pods: vec![pod("a", &["GPU-1", "GPU-2::1"]), pod("b", &["MIG-x"])],
        }
    );
}

#[tokio::test]
async fn a_kubelet_without_get_allocatable_resources_still_lists() {
    let kubelet = FakeKubelet::start(&[("ml", "a", &["GPU-1"])], None);
    let view = KubeletClient::new(&kubelet.socket).view().await.expect("view");
    assert_eq!(view.allocatable, None);
    assert_eq!(view.pods, vec![pod("a", &["GPU-1"])]);
}

#[tokio::test]
async fn a_dead_socket_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubelet.sock");
    // A socket file nobody accepts on.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let error = KubeletClient::new(&path).view().await.expect_err("nobody listens");
    assert!(matches!(error, PodResourcesError::Connect { .. }), "{error}");
}
