//! JobSet `jobset.x-k8s.io/v1alpha2`, field for field as upstream serialises it.
//!
//! Go `omitempty` fields are `Option`s (or `Vec`s skipped when empty), so a JobSet read and written back is
//! byte-for-byte the same JSON value: a drop-in controller must not add or drop fields that users or other
//! controllers (Kueue) wrote. CRD-only facts (defaults, enums, list-map keys, CEL rules) are attached as schema
//! extensions so the generated CRD matches upstream's structure; accessors such as
//! [`ReplicatedJob::replicas`] apply the same defaults for objects that bypassed the API server's defaulting.
//!
//! Unknown fields are ignored on deserialisation, deliberately: the API server's structural schema is the real
//! gate, and a controller must keep working when a newer upstream adds a field it does not know yet.

use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::keys;

/// Spec of a JobSet: a group of Jobs run and restarted together.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jobset.x-k8s.io",
    version = "v1alpha2",
    kind = "JobSet",
    plural = "jobsets",
    singular = "jobset",
    namespaced,
    status = "JobSetStatus",
    doc = "JobSet is the Schema for the jobsets API",
    printcolumn = r#"{"name":"TerminalState","type":"string","description":"Final state of JobSet","jsonPath":".status.terminalState"}"#,
    printcolumn = r#"{"name":"Restarts","type":"string","description":"Number of restarts","jsonPath":".status.restarts"}"#,
    printcolumn = r#"{"name":"Completed","type":"string","description":"JobSet Completed","jsonPath":".status.conditions[?(@.type==\"Completed\")].status"}"#,
    printcolumn = r#"{"name":"Suspended","type":"string","description":"JobSet suspended","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Age","type":"date","description":"Time this JobSet was created","jsonPath":".metadata.creationTimestamp"}"#
)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && self.replicatedJobs.exists(x, has(x.dependsOn)))",
    "message": "StartupPolicy and DependsOn APIs are mutually exclusive"
}]))]
#[serde(rename_all = "camelCase")]
pub struct JobSetSpec {
    /// The groups of Jobs; Job names are `<jobset>-<replicatedJob>-<index>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub replicated_jobs: Vec<ReplicatedJob>,

    /// Headless Service and stable pod hostnames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub network: Option<Network>,

    /// When the JobSet is marked Completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub success_policy: Option<SuccessPolicy>,

    /// How Job failures restart or fail the JobSet; absent means any Job failure fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub failure_policy: Option<FailurePolicy>,

    /// Deprecated in favour of `dependsOn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub startup_policy: Option<StartupPolicy>,

    /// Suspends every child Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Publishes a coordinator endpoint on every Job and Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<Coordinator>,

    /// Another controller manages this JobSet when set to anything but `jobset.sigs.k8s.io/jobset-controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,

    /// Seconds after finishing before the JobSet is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// PersistentVolumeClaims created for the JobSet and shared by its pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend(
        "x-kubernetes-list-type" = "atomic",
        "x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]
    ))]
    pub volume_claim_policies: Vec<VolumeClaimPolicy>,
}

/// A group of identical Jobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedJob {
    pub name: String,

    /// Groups ReplicatedJobs for the group labels; defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "default"))]
    pub group_name: Option<String>,

    /// The Job template, including the pod template, exactly as in a Job.
    pub template: JobTemplateSpec,

    /// Number of Jobs; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "default" = 1))]
    pub replicas: Option<i32>,

    /// Earlier ReplicatedJobs that must reach a status before this one's Jobs are created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]
    ))]
    pub depends_on: Vec<DependsOn>,
}

impl ReplicatedJob {
    /// Jobs in this group, with the CRD default applied.
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }

    /// Group name, with the CRD default applied.
    pub fn group_name(&self) -> &str {
        self.group_name.as_deref().unwrap_or(keys::DEFAULT_GROUP_NAME)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependsOn {
    /// An earlier ReplicatedJob.
    pub name: String,
    pub status: DependsOnStatus,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DependsOnStatus {
    /// Every Job of the referenced ReplicatedJob is ready, failed or succeeded.
    #[default]
    Ready,
    /// Every Job of the referenced ReplicatedJob succeeded.
    Complete,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Sets the pods' subdomain and creates the headless Service.
    #[serde(default, rename = "enableDNSHostnames", skip_serializing_if = "Option::is_none")]
    pub enable_dns_hostnames: Option<bool>,
    /// Service name and pod subdomain; the JobSet name when empty (resolved at run time, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessPolicy {
    pub operator: Operator,
    /// ReplicatedJobs whose Jobs count; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub target_replicated_jobs: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Operator {
    #[default]
    All,
    Any,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Restarts allowed before the JobSet fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<i32>,
    /// Defaults to `Recreate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Recreate"))]
    pub restart_strategy: Option<RestartStrategy>,
    /// Evaluated in order; the first match wins, no match restarts the JobSet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<FailurePolicyRule>,
}

impl FailurePolicy {
    pub fn max_restarts(&self) -> i32 {
        self.max_restarts.unwrap_or(0)
    }
    pub fn restart_strategy(&self) -> RestartStrategy {
        self.restart_strategy.unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartStrategy {
    /// Each failed Job is recreated as soon as the old one is gone.
    #[default]
    Recreate,
    /// No Job of the next attempt is created until every Job of the previous one is gone.
    BlockingRecreate,
    /// Alpha upstream; rejected by our webhook and ignored by our controller.
    InPlaceRestart,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicyRule {
    /// Defaulted to `failurePolicyRule<index>`; also the suffix of the `RestartingJobSet` reason.
    pub name: String,
    pub action: FailurePolicyAction,
    /// Job `Failed` condition reasons this rule matches; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub on_job_failure_reasons: Vec<String>,
    /// RE2 patterns matched anywhere in the Job `Failed` condition message; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub on_job_failure_message_patterns: Vec<String>,
    /// ReplicatedJobs this rule applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub target_replicated_jobs: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailurePolicyAction {
    FailJobSet,
    #[default]
    RestartJobSet,
    RestartJobSetAndIgnoreMaxRestarts,
    RestartJob,
    RestartJobAndIgnoreMaxRestarts,
}

impl FailurePolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailJobSet => "FailJobSet",
            Self::RestartJobSet => "RestartJobSet",
            Self::RestartJobSetAndIgnoreMaxRestarts => "RestartJobSetAndIgnoreMaxRestarts",
            Self::RestartJob => "RestartJob",
            Self::RestartJobAndIgnoreMaxRestarts => "RestartJobAndIgnoreMaxRestarts",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartupPolicy {
    pub startup_policy_order: StartupPolicyOrder,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StartupPolicyOrder {
    #[default]
    AnyOrder,
    InOrder,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coordinator {
    pub replicated_job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_index: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)",
    "message": "namespace cannot be set for VolumeClaimPolicies templates"
}]))]
pub struct VolumeClaimPolicy {
    /// One PVC `<template name>-<jobset>` per template, shared by every pod that mounts it. Required: the CEL
    /// rule on the policy reads it unconditionally.
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "atomic"))]
    pub templates: Vec<PersistentVolumeClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<VolumeRetentionPolicy>,
}

impl VolumeClaimPolicy {
    pub fn when_deleted(&self) -> WhenDeleted {
        self.retention_policy.as_ref().and_then(|p| p.when_deleted).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRetentionPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Delete"))]
    pub when_deleted: Option<WhenDeleted>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WhenDeleted {
    /// The PVC is owned by the JobSet and garbage-collected with it.
    #[default]
    Delete,
    /// The PVC outlives the JobSet and can be reused by a later one.
    Retain,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSetStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Global restarts; always serialised, as upstream does since v0.9.
    #[serde(default)]
    pub restarts: i32,
    /// Restarts that count towards `failurePolicy.maxRestarts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_count_towards_max: Option<i32>,
    /// `Completed` or `Failed` once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_state: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub replicated_jobs_status: Vec<ReplicatedJobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0))]
    pub previous_in_place_restart_attempt: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0))]
    pub current_in_place_restart_attempt: Option<i32>,
}

/// Counters over the current-attempt Jobs of one ReplicatedJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedJobStatus {
    pub name: String,
    pub ready: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub active: i32,
    pub suspended: i32,
    /// Per job index: RestartJob and RestartJobAndIgnoreMaxRestarts restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), extend("x-kubernetes-list-type" = "atomic"))]
    pub job_restarts: Vec<i32>,
    /// Per job index: RestartJob restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), extend("x-kubernetes-list-type" = "atomic"))]
    pub job_restarts_count_towards_max: Vec<i32>,
}

impl JobSet {
    /// Whether this controller (and not Kueue's MultiKueue or another) manages the JobSet.
    pub fn managed_by_us(&self) -> bool {
        self.spec.managed_by.as_deref().is_none_or(|m| m == keys::JOBSET_CONTROLLER_NAME)
    }

    pub fn suspended(&self) -> bool {
        self.spec.suspend.unwrap_or(false)
    }

    /// The ReplicatedJob a gang releases first: the coordinator's, else the first.
    pub fn leader(&self) -> Option<&str> {
        let spec = &self.spec;
        spec.coordinator
            .as_ref()
            .map(|c| c.replicated_job.as_str())
            .filter(|name| spec.replicated_jobs.iter().any(|r| r.name == *name))
            .or_else(|| spec.replicated_jobs.first().map(|r| r.name.as_str()))
    }

    /// An annotation on the JobSet object itself.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// Upstream's exclusive placement of a ReplicatedJob's Jobs (reference §2.1): the `exclusive-topology`
    /// annotation of the ReplicatedJob's Job template, else of the JobSet; `node-selector` counts only from the
    /// same level as the topology key it goes with.
    pub fn exclusive_placement(&self, rjob: &ReplicatedJob) -> Option<crate::gang::ExclusivePlacement> {
        let from = |a: Option<&std::collections::BTreeMap<String, String>>| {
            let a = a?;
            Some(crate::gang::ExclusivePlacement {
                topology_key: a.get(keys::EXCLUSIVE_TOPOLOGY)?.clone(),
                node_selector_strategy: a.contains_key(keys::NODE_SELECTOR_STRATEGY),
            })
        };
        from(rjob.template.metadata.as_ref().and_then(|m| m.annotations.as_ref()))
            .or_else(|| from(self.metadata.annotations.as_ref()))
    }
}
