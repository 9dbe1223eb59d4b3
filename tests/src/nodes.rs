//! Fake nodes, run by KWOK: Node objects with whatever capacity a test needs, GPUs included.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The extended resource the NVIDIA device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Label (key, value) that makes KWOK manage a node; [`FakeNode`] always sets it.
pub const FAKE_NODE_LABEL: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// A fake node: a builder for the Node object that KWOK then keeps Ready.
#[derive(Debug, Clone)]
pub struct FakeNode {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    taints: Vec<Taint>,
    capacity: BTreeMap<String, String>,
}

impl FakeNode {
    /// A node with 32 CPUs, 256 GiB memory, room for 110 pods and no GPUs.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let labels = BTreeMap::from([
            (FAKE_NODE_LABEL.0.to_owned(), FAKE_NODE_LABEL.1.to_owned()),
            ("kubernetes.io/hostname".to_owned(), name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ]);
        let capacity = BTreeMap::from([
            ("cpu".to_owned(), "32".to_owned()),
            ("memory".to_owned(), "256Gi".to_owned()),
            ("pods".to_owned(), "110".to_owned()),
        ]);
        Self {
            name,
            labels,
            annotations: BTreeMap::from([("node.alpha.kubernetes.io/ttl".to_owned(), "0".to_owned())]),
            taints: Vec::new(),
            capacity,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nvidia.com/gpu` capacity and allocatable.
    pub fn gpus(self, count: u32) -> Self {
        self.resource(GPU_RESOURCE, count.to_string())
    }

    pub fn cpu(self, quantity: impl Into<String>) -> Self {
        self.resource("cpu", quantity)
    }

    pub fn memory(self, quantity: impl Into<String>) -> Self {
        self.resource("memory", quantity)
    }

    pub fn max_pods(self, count: u32) -> Self {
        self.resource("pods", count.to_string())
    }

    /// Any capacity (= allocatable) entry.
    pub fn resource(mut self, name: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.capacity.insert(name.into(), quantity.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// A taint; `effect` is `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub fn taint(mut self, key: impl Into<String>, value: Option<&str>, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: value.map(str::to_owned),
            effect: effect.to_owned(),
            time_added: None,
        });
        self
    }

    /// The Node object to create. Nodes may carry status on create, so capacity is set right away and
    /// KWOK's node-initialize stage keeps it.
    pub fn to_node(&self) -> Node {
        let quantities: BTreeMap<String, Quantity> =
            self.capacity.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect();
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                annotations: Some(self.annotations.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(quantities.clone()),
                allocatable: Some(quantities),
                ..NodeStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_node_has_capacity_label_and_taint() {
        let node = FakeNode::new("gpu-0").gpus(8).label("pool", "a").taint(GPU_RESOURCE, None, "NoSchedule").to_node();
        let status = node.status.expect("status");
        let cap = status.capacity.expect("capacity");
        assert_eq!(cap.get(GPU_RESOURCE), Some(&Quantity("8".into())));
        assert_eq!(cap.get("pods"), Some(&Quantity("110".into())));
        assert_eq!(status.allocatable.expect("allocatable"), cap);
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels.get(FAKE_NODE_LABEL.0).map(String::as_str), Some(FAKE_NODE_LABEL.1));
        assert_eq!(labels.get("pool").map(String::as_str), Some("a"));
        assert_eq!(node.spec.and_then(|s| s.taints).map(|t| t.len()), Some(1));
    }
}
