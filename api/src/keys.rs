//! Label and annotation keys, condition types, reasons, messages and event reasons.
//!
//! The `jobset.sigs.k8s.io/*` strings are upstream JobSet's API: users read them through the Downward API,
//! dashboards select on them, Kueue matches them. They are copied exactly from the upstream reference.
//! Ours use the `muster.dev/` prefix.

// === Upstream JobSet: labels and annotations on child Jobs and their pod templates ===

pub const JOBSET_NAME: &str = "jobset.sigs.k8s.io/jobset-name";
pub const JOBSET_UID: &str = "jobset.sigs.k8s.io/jobset-uid";
pub const REPLICATED_JOB_NAME: &str = "jobset.sigs.k8s.io/replicatedjob-name";
pub const REPLICATED_JOB_REPLICAS: &str = "jobset.sigs.k8s.io/replicatedjob-replicas";
pub const GLOBAL_REPLICAS: &str = "jobset.sigs.k8s.io/global-replicas";
pub const JOB_INDEX: &str = "jobset.sigs.k8s.io/job-index";
pub const JOB_GLOBAL_INDEX: &str = "jobset.sigs.k8s.io/job-global-index";
/// SHA-1 hex of `<namespace>/<jobName>` (upstream's comment says SHA-256; its code uses SHA-1).
pub const JOB_KEY: &str = "jobset.sigs.k8s.io/job-key";
pub const RESTART_ATTEMPT: &str = "jobset.sigs.k8s.io/restart-attempt";
/// Only written when the `RestartJob` feature gate is on.
pub const JOB_RESTART_ATTEMPT: &str = "jobset.sigs.k8s.io/job-restart-attempt";
pub const GROUP_NAME: &str = "jobset.sigs.k8s.io/group-name";
pub const GROUP_REPLICAS: &str = "jobset.sigs.k8s.io/group-replicas";
pub const JOB_GROUP_INDEX: &str = "jobset.sigs.k8s.io/job-group-index";
pub const COORDINATOR: &str = "jobset.sigs.k8s.io/coordinator";

// Annotation-only keys (JobSet, ReplicatedJob template, child Jobs and pod templates).
pub const EXCLUSIVE_TOPOLOGY: &str = "alpha.jobset.sigs.k8s.io/exclusive-topology";
pub const NODE_SELECTOR_STRATEGY: &str = "alpha.jobset.sigs.k8s.io/node-selector";
pub const DISABLE_IN_PLACE_RESTART: &str = "jobset.sigs.k8s.io/disable-in-place-restart";

// Keys set by other parties, recognised but never written by the controller.
pub const PRIORITY: &str = "jobset.sigs.k8s.io/priority";
pub const IN_PLACE_RESTART_ATTEMPT: &str = "jobset.sigs.k8s.io/in-place-restart-attempt";
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

// Exclusive placement's pod webhooks and pod controller (affinity strategy).
/// Pod condition type the pod controller sets on a follower before deleting it (Kubernetes' own type).
pub const CONDITION_DISRUPTION_TARGET: &str = "DisruptionTarget";
pub const REASON_EXCLUSIVE_PLACEMENT_VIOLATION: &str = "ExclusivePlacementViolation";
pub const MESSAGE_EXCLUSIVE_PLACEMENT_VIOLATION: &str = "Pod violated JobSet exclusive placement policy";

// Reserved keys of exclusive placement's node-selector strategy.
pub const NAMESPACED_JOB: &str = "alpha.jobset.sigs.k8s.io/namespaced-job";
pub const NO_SCHEDULE_TAINT: &str = "alpha.jobset.sigs.k8s.io/no-schedule";

/// The `spec.managedBy` value that means "the JobSet controller", i.e. us.
pub const JOBSET_CONTROLLER_NAME: &str = "jobset.sigs.k8s.io/jobset-controller";
/// Kueue's queue label: a JobSet carrying it is admitted by Kueue, not by Muster.
pub const KUEUE_QUEUE_NAME: &str = "kueue.x-k8s.io/queue-name";

pub const DEFAULT_GROUP_NAME: &str = "default";
/// Index of the ReplicatedJob, Job or pod that counts as the leader.
pub const LEADER_INDEX: &str = "0";

// === Upstream JobSet: condition types ===

pub const CONDITION_COMPLETED: &str = "Completed";
pub const CONDITION_FAILED: &str = "Failed";
pub const CONDITION_SUSPENDED: &str = "Suspended";
pub const CONDITION_RESTARTING_JOBSET: &str = "RestartingJobSet";
pub const CONDITION_STARTUP_POLICY_IN_PROGRESS: &str = "StartupPolicyInProgress";
pub const CONDITION_STARTUP_POLICY_COMPLETED: &str = "StartupPolicyCompleted";

pub const TERMINAL_STATE_COMPLETED: &str = "Completed";
pub const TERMINAL_STATE_FAILED: &str = "Failed";

// === Upstream JobSet: condition reasons ===

pub const REASON_ALL_JOBS_COMPLETED: &str = "AllJobsCompleted";
pub const REASON_FAILED_JOBS: &str = "FailedJobs";
pub const REASON_FAIL_JOBSET_ACTION: &str = "FailJobSetFailurePolicyAction";
pub const REASON_REACHED_MAX_RESTARTS: &str = "ReachedMaxRestarts";
pub const REASON_SUSPENDED_JOBS: &str = "SuspendedJobs";
pub const REASON_RESUME_JOBS: &str = "ResumeJobs";
pub const REASON_IN_ORDER_IN_PROGRESS: &str = "InOrderStartupPolicyInProgress";
pub const REASON_IN_ORDER_COMPLETED: &str = "InOrderStartupPolicyCompleted";
/// Prefix of the `RestartingJobSet=True` reason when a named failure-policy rule matched.
pub const REASON_FAILURE_POLICY_RULE_PREFIX: &str = "FailurePolicy_";
pub const REASON_DEFAULT_FAILURE_POLICY: &str = "DefaultFailurePolicy";
pub const REASON_JOBS_READY: &str = "JobsReady";
pub const REASON_JOBSET_FAILED: &str = "JobSetFailed";
pub const REASON_JOBSET_COMPLETED: &str = "JobSetCompleted";
pub const REASON_JOBSET_SUSPENDED: &str = "JobSetSuspended";

// === Upstream JobSet: condition messages ===

pub const MESSAGE_JOBSET_COMPLETED: &str = "jobset completed successfully";
pub const MESSAGE_JOBSET_SUSPENDED: &str = "jobset is suspended";
pub const MESSAGE_JOBSET_RESUMED: &str = "jobset is resumed";
pub const MESSAGE_IN_ORDER_IN_PROGRESS: &str = "in order startup policy is in progress";
pub const MESSAGE_IN_ORDER_COMPLETED: &str = "in order startup policy has completed";
pub const MESSAGE_ALL_JOBS_READY: &str = "all jobs are ready";
pub const MESSAGE_JOBSET_FAILED: &str = "jobset failed";
/// In-place restart path only; the Job path adds `(first failed job: <job>)`.
pub const MESSAGE_REACHED_MAX_RESTARTS: &str = "jobset failed due to reaching max number of restarts";

/// `Failed` message when there is no failure policy.
pub fn message_failed_jobs(first_failed_job: &str) -> String {
    format!("jobset failed due to one or more job failures (first failed job: {first_failed_job})")
}

/// `Failed` message when the JobSet ran out of restarts.
pub fn message_reached_max_restarts(first_failed_job: &str) -> String {
    format!("{MESSAGE_REACHED_MAX_RESTARTS} (first failed job: {first_failed_job})")
}

/// Message of a failure-policy action, used for `Failed` (FailJobSet), `RestartingJobSet` and the event.
pub fn message_failure_policy_action(action: &str, first_failed_job: &str) -> String {
    format!("applying {action} failure policy action (first failed job: {first_failed_job})")
}

// === Upstream JobSet: event reasons that are not condition reasons ===

pub const EVENT_RESTART_JOBSET_ACTION: &str = "RestartJobSetFailurePolicyAction";
pub const EVENT_RESTART_JOBSET_IGNORE_MAX_ACTION: &str = "RestartJobSetAndIgnoreMaxRestartsFailurePolicyAction";
pub const EVENT_RESTART_JOB_ACTION: &str = "RestartJobFailurePolicyAction";
pub const EVENT_RESTART_JOB_IGNORE_MAX_ACTION: &str = "RestartJobAndIgnoreMaxRestartsFailurePolicyAction";
pub const EVENT_JOB_CREATION_FAILED: &str = "JobCreationFailed";
pub const EVENT_HEADLESS_SERVICE_CREATION_FAILED: &str = "HeadlessServiceCreationFailed";
pub const EVENT_PVC_CREATION_FAILED: &str = "PVCCreationFailed";

/// Reasons of the Job `Failed` condition that failure-policy rules may match on.
pub const JOB_FAILURE_REASONS: [&str; 5] =
    ["BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes", "MaxFailedIndexesExceeded", "PodFailurePolicy"];

// === Muster ===

/// Queue a gang-managed JobSet waits in; absent means the default queue.
pub const QUEUE: &str = "muster.dev/queue";
/// Gang priority when the pods carry no PriorityClass.
pub const GANG_PRIORITY: &str = "muster.dev/priority";
/// `"false"` opts a GPU JobSet out of gang admission.
pub const GANG_MANAGED: &str = "muster.dev/gang";
/// Set by the webhook when admission owns `spec.suspend` (the user did not suspend the JobSet themselves).
pub const ADMISSION_OWNS_SUSPEND: &str = "muster.dev/admission-suspended";
/// The node admission reserved for a pod slot.
pub const RESERVED_NODE: &str = "muster.dev/reserved-node";

pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub const DEFAULT_QUEUE: &str = "default";
