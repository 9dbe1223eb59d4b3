//! kube-scheduler extender wire types (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The Go structs have no json tags, so the scheduler sends and expects the Go field names (PascalCase). Go
//! emits nil slices, maps and pointers as `null`, and clients may omit them; both read as empty here. Unknown
//! fields are ignored so a newer scheduler does not break an older extender. Nested Kubernetes objects (Pod,
//! NodeList) use the usual lowerCamel JSON.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Deserializer, Serialize};

/// Highest score an extender may give a node.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;
pub const MIN_EXTENDER_PRIORITY: i64 = 0;

/// Reads `null` as the type's default, so `null` and a missing field mean the same.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A `v1.NodeList` as Go's encoding/json writes it: `apiVersion`/`kind` are usually empty or absent, which
/// `k8s_openapi::List` would reject, so only the items are modelled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NodeList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<Node>,
}

/// Body of the `filter` and `prioritize` calls.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    #[serde(default)]
    pub pod: Option<Box<Pod>>,
    /// Candidate nodes in full; only when the extender is not `nodeCacheCapable`.
    #[serde(default)]
    pub nodes: Option<NodeList>,
    /// Candidate node names; only when the extender is `nodeCacheCapable`.
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
}

impl ExtenderArgs {
    /// Candidate node names, whichever form the scheduler sent them in.
    pub fn candidate_names(&self) -> Vec<String> {
        if let Some(names) = &self.node_names {
            return names.clone();
        }
        self.nodes.iter().flat_map(|list| &list.items).filter_map(|node| node.metadata.name.clone()).collect()
    }
}

/// Map from node name to why the pod cannot go there.
pub type FailedNodesMap = BTreeMap<String, String>;

/// Reply to `filter`. Returned names must be a subset of the candidates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    #[serde(default)]
    pub nodes: Option<NodeList>,
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
    /// Nodes that failed but might fit after preemption.
    #[serde(default, deserialize_with = "null_as_default")]
    pub failed_nodes: FailedNodesMap,
    /// Nodes that failed and that preemption cannot fix; the scheduler does not preempt on them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub failed_and_unresolvable_nodes: FailedNodesMap,
    /// Non-empty fails the pod's scheduling cycle.
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
}

/// One node's score in the reply to `prioritize`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    #[serde(default, deserialize_with = "null_as_default")]
    pub host: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub score: i64,
}

/// Reply to `prioritize`.
pub type HostPriorityList = Vec<HostPriority>;

/// Body of the `bind` call.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    pub pod_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub pod_namespace: String,
    #[serde(default, rename = "PodUID", deserialize_with = "null_as_default")]
    pub pod_uid: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub node: String,
}

/// Reply to `bind`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
}

/// Victims on one node, by UID only (the `nodeCacheCapable` form).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MetaVictims {
    #[serde(default, deserialize_with = "null_as_default")]
    pub pods: Vec<MetaPod>,
    #[serde(default, rename = "NumPDBViolations", deserialize_with = "null_as_default")]
    pub num_pdb_violations: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MetaPod {
    #[serde(default, rename = "UID", deserialize_with = "null_as_default")]
    pub uid: String,
}

/// Body of the `preempt` call (meta form; the full-pod `NodeNameToVictims` form is read but not kept).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionArgs {
    #[serde(default)]
    pub pod: Option<Box<Pod>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// Reply to `preempt`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionResult {
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}
