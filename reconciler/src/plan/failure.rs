//! The failure policy: rules in order, first match wins, no match restarts the JobSet.

use k8s_openapi::api::batch::v1::Job;
use muster_api::JobSet;
use muster_api::jobset::{FailurePolicyAction, FailurePolicyRule};
use muster_api::keys::{self, *};
use regex::Regex;

use super::jobs::{failed_at, label, true_condition};

/// What the failure policy decided for this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: FailurePolicyAction,
    /// `Some(name)` when a rule matched, `None` for the default action.
    pub rule: Option<String>,
    /// Name of the earliest-failed Job the decision is about.
    pub job: String,
}

fn job_name(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// Failed Jobs, earliest failure first (ties by name, so the choice is stable).
fn by_failure_time<'a>(failed: &[&'a Job]) -> Vec<&'a Job> {
    let mut sorted = failed.to_vec();
    sorted.sort_by(|a, b| failed_at(a).cmp(&failed_at(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    sorted
}

fn matches(rule: &FailurePolicyRule, job: &Job) -> bool {
    let condition = true_condition(job, "Failed");
    let reason = condition.and_then(|c| c.reason.as_deref()).unwrap_or_default();
    let message = condition.and_then(|c| c.message.as_deref()).unwrap_or_default();
    let reason_ok = rule.on_job_failure_reasons.is_empty() || rule.on_job_failure_reasons.iter().any(|r| r == reason);
    // Invalid patterns are skipped (the webhook does not validate them), as upstream does.
    let pattern_ok = rule.on_job_failure_message_patterns.is_empty()
        || rule
            .on_job_failure_message_patterns
            .iter()
            .filter_map(|p| Regex::new(p).ok())
            .any(|re| re.is_match(message));
    let rjob = label(job, keys::REPLICATED_JOB_NAME).unwrap_or_default();
    let target_ok = rule.target_replicated_jobs.is_empty() || rule.target_replicated_jobs.iter().any(|t| t == rjob);
    reason_ok && pattern_ok && target_ok
}

/// Picks the action for the failed Jobs of this pass. `None` only when there are no failed Jobs.
pub fn decide(jobset: &JobSet, failed: &[&Job]) -> Option<Decision> {
    let ordered = by_failure_time(failed);
    let first = ordered.first()?;
    let Some(policy) = &jobset.spec.failure_policy else {
        return Some(Decision { action: FailurePolicyAction::FailJobSet, rule: None, job: job_name(first) });
    };
    for rule in &policy.rules {
        if let Some(job) = ordered.iter().find(|j| matches(rule, j)) {
            return Some(Decision { action: rule.action, rule: Some(rule.name.clone()), job: job_name(job) });
        }
    }
    Some(Decision { action: FailurePolicyAction::RestartJobSet, rule: None, job: job_name(first) })
}

/// The `RestartingJobSet=True` reason for a global restart.
pub fn restarting_reason(decision: &Decision) -> String {
    match &decision.rule {
        Some(rule) => format!("{REASON_FAILURE_POLICY_RULE_PREFIX}{rule}"),
        None => REASON_DEFAULT_FAILURE_POLICY.to_string(),
    }
}

/// Event reason of a restart action.
pub fn restart_event_reason(action: FailurePolicyAction) -> Option<&'static str> {
    match action {
        FailurePolicyAction::RestartJobSet => Some(EVENT_RESTART_JOBSET_ACTION),
        FailurePolicyAction::RestartJobSetAndIgnoreMaxRestarts => Some(EVENT_RESTART_JOBSET_IGNORE_MAX_ACTION),
        FailurePolicyAction::RestartJob => Some(EVENT_RESTART_JOB_ACTION),
        FailurePolicyAction::RestartJobAndIgnoreMaxRestarts => Some(EVENT_RESTART_JOB_IGNORE_MAX_ACTION),
        FailurePolicyAction::FailJobSet => None,
    }
}
