//! `Gang` (`muster.dev/v1alpha1`, namespaced, owned by its JobSet): what a gang-managed JobSet asks for, and
//! where admission stands with it. `kubectl get gangs -A` must tell a user at a glance why a job is pending.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The demand of one gang: every pod slot of every pod set must get a node, or none does.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "muster.dev",
    version = "v1alpha1",
    kind = "Gang",
    plural = "gangs",
    singular = "gang",
    namespaced,
    status = "GangStatus",
    doc = "A gang-managed JobSet's demand and its admission state: queue position, reason, placement",
    category = "muster",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Queue","type":"string","jsonPath":".spec.queue"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".spec.totalGPUs"}"#,
    printcolumn = r#"{"name":"Position","type":"integer","jsonPath":".status.queuePosition"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GangSpec {
    /// Queue the gang waits in (`muster.dev/queue` on the JobSet, else `default`).
    pub queue: String,
    /// Higher is admitted first; ties go to the earlier arrival.
    #[serde(default)]
    pub priority: i32,
    /// One pod set per ReplicatedJob, in release order: the leader's first.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub pod_sets: Vec<PodSet>,
    /// GPUs over all pod slots; shown by `kubectl get gangs`.
    #[serde(default, rename = "totalGPUs")]
    pub total_gpus: i64,
}

/// The pods of one ReplicatedJob: `jobs` Jobs of `podsPerJob` identical pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSet {
    pub name: String,
    pub jobs: i32,
    pub pods_per_job: i32,
    #[serde(default, rename = "gpusPerPod")]
    pub gpus_per_pod: i64,
    /// Requests of one pod other than GPUs (cpu, memory, ...), summed over its containers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The pods' required node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_node_affinity: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Upstream's exclusive placement (`alpha.jobset.sigs.k8s.io/exclusive-topology` on the ReplicatedJob template,
    /// else on the JobSet): each Job's pods share one topology domain that no other Job uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<ExclusivePlacement>,
}

/// How the Jobs of a pod set are placed exclusively, as the JobSet's annotations ask.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExclusivePlacement {
    /// The node label whose values are the topology domains (the annotation's value).
    pub topology_key: String,
    /// `alpha.jobset.sigs.k8s.io/node-selector` is set too: the Jobs are pinned to nodes pre-labelled
    /// `alpha.jobset.sigs.k8s.io/namespaced-job=<namespace>_<job name>` (and tolerate
    /// `alpha.jobset.sigs.k8s.io/no-schedule`) instead of being given a domain by pod affinity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_selector_strategy: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GangPhase {
    /// Queued, waiting for the whole gang to fit.
    #[default]
    Pending,
    /// Placement written and the JobSet released; pods are starting.
    Admitted,
    /// Every pod of the gang is ready.
    Running,
    /// Pods were not ready in time: suspended, reservation released, queued again with backoff.
    Requeued,
    /// The JobSet completed or failed; the reservation is released.
    Finished,
    /// Can never fit as specified (e.g. no node matches a pod set's selector); the reason says why.
    Inadmissible,
}

/// One pod slot placed on a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotPlacement {
    pub pod_set: String,
    pub job_index: i32,
    pub pod_index: i32,
    pub node: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GangStatus {
    #[serde(default)]
    pub phase: GangPhase,
    /// 1-based position in its queue while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// Why the gang is where it is, naming the shortfall and its causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Every pod slot's node; written before the JobSet is released, and the truth after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<SlotPlacement>,
    /// While it waits at the head of its queue past the queue's head-hold time: the nodes held for it, by name. No
    /// other gang is placed there, so their GPUs gather for this one as running work finishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default)]
    pub requeue_count: i32,
    /// While Requeued: when its backoff ends and it may be admitted again. Kept so that a restarted admission
    /// controller waits it out too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_at: Option<Time>,
}
