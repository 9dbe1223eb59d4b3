//! JobSet conditions, updated exactly as upstream's `updateCondition` does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use muster_api::JobSetStatus;
use muster_api::keys::*;

use super::{Event, EventType};

/// A condition the plan wants to hold, with the event type upstream emits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
    pub event_type: EventType,
}

impl Wanted {
    fn new(type_: &'static str, status: bool, reason: &str, message: &str, event_type: EventType) -> Self {
        Self { type_, status, reason: reason.into(), message: message.into(), event_type }
    }

    pub fn completed() -> Self {
        Self::new(CONDITION_COMPLETED, true, REASON_ALL_JOBS_COMPLETED, MESSAGE_JOBSET_COMPLETED, EventType::Normal)
    }
    pub fn failed(reason: &str, message: &str) -> Self {
        Self::new(CONDITION_FAILED, true, reason, message, EventType::Warning)
    }
    pub fn suspended() -> Self {
        Self::new(CONDITION_SUSPENDED, true, REASON_SUSPENDED_JOBS, MESSAGE_JOBSET_SUSPENDED, EventType::Normal)
    }
    pub fn resumed() -> Self {
        Self::new(CONDITION_SUSPENDED, false, REASON_RESUME_JOBS, MESSAGE_JOBSET_RESUMED, EventType::Normal)
    }
    pub fn startup_in_progress() -> Self {
        Self::new(
            CONDITION_STARTUP_POLICY_IN_PROGRESS,
            true,
            REASON_IN_ORDER_IN_PROGRESS,
            MESSAGE_IN_ORDER_IN_PROGRESS,
            EventType::Normal,
        )
    }
    pub fn startup_completed() -> Self {
        Self::new(
            CONDITION_STARTUP_POLICY_COMPLETED,
            true,
            REASON_IN_ORDER_COMPLETED,
            MESSAGE_IN_ORDER_COMPLETED,
            EventType::Normal,
        )
    }
    pub fn restarting(reason: &str, message: &str) -> Self {
        Self::new(CONDITION_RESTARTING_JOBSET, true, reason, message, EventType::Warning)
    }
    /// `RestartingJobSet=False` with one of `JobsReady`, `JobSetFailed`, `JobSetCompleted`, `JobSetSuspended`.
    pub fn not_restarting(reason: &str, message: &str) -> Self {
        Self::new(CONDITION_RESTARTING_JOBSET, false, reason, message, EventType::Normal)
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Applies `wanted` to `status` and returns the event to emit when it changed anything.
///
/// - same type, other status: replaced, new transition time;
/// - same type and status, other reason or message: updated in place, transition time kept;
/// - identical: nothing;
/// - absent: added only when True;
/// - the two startup-policy conditions exclude each other: setting one True flips the other to False.
pub fn set(status: &mut JobSetStatus, wanted: &Wanted, now: Timestamp) -> Option<Event> {
    let status_text = status_str(wanted.status);
    let changed = match status.conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(existing) if existing.status != status_text => {
            *existing = condition(wanted, now);
            true
        }
        Some(existing) if existing.reason != wanted.reason || existing.message != wanted.message => {
            existing.reason.clone_from(&wanted.reason);
            existing.message.clone_from(&wanted.message);
            true
        }
        Some(_) => false,
        None if wanted.status => {
            status.conditions.push(condition(wanted, now));
            true
        }
        None => false,
    };
    if !changed {
        return None;
    }
    if wanted.status {
        let other = match wanted.type_ {
            CONDITION_STARTUP_POLICY_IN_PROGRESS => Some(CONDITION_STARTUP_POLICY_COMPLETED),
            CONDITION_STARTUP_POLICY_COMPLETED => Some(CONDITION_STARTUP_POLICY_IN_PROGRESS),
            _ => None,
        };
        if let Some(other) = other
            && let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == other && c.status == "True")
        {
            c.status = "False".into();
            c.last_transition_time = Time(now);
        }
    }
    Some(Event { type_: wanted.event_type, reason: wanted.reason.clone(), message: wanted.message.clone() })
}

fn condition(wanted: &Wanted, now: Timestamp) -> Condition {
    Condition {
        type_: wanted.type_.into(),
        status: status_str(wanted.status).into(),
        reason: wanted.reason.clone(),
        message: wanted.message.clone(),
        last_transition_time: Time(now),
        observed_generation: None,
    }
}

/// Whether `type_` is present with status True.
pub fn is_true(status: &JobSetStatus, type_: &str) -> bool {
    find_true(status, type_).is_some()
}

pub fn find_true<'a>(status: &'a JobSetStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid time")
    }

    #[test]
    fn false_condition_is_not_added_when_absent() {
        let mut status = JobSetStatus::default();
        assert_eq!(set(&mut status, &Wanted::resumed(), at(1)), None);
        assert!(status.conditions.is_empty());
        assert_eq!(set(&mut status, &Wanted::not_restarting(REASON_JOBS_READY, MESSAGE_ALL_JOBS_READY), at(1)), None);
        assert!(status.conditions.is_empty());
    }

    #[test]
    fn status_flip_replaces_and_moves_transition_time() {
        let mut status = JobSetStatus::default();
        let event = set(&mut status, &Wanted::suspended(), at(1)).expect("added");
        assert_eq!((event.reason.as_str(), event.message.as_str()), ("SuspendedJobs", "jobset is suspended"));
        let event = set(&mut status, &Wanted::resumed(), at(5)).expect("flipped");
        assert_eq!(event.reason, "ResumeJobs");
        let c = &status.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.last_transition_time.0), ("False", "ResumeJobs", at(5)));
    }

    #[test]
    fn reason_change_keeps_transition_time_and_identical_is_noop() {
        let mut status = JobSetStatus::default();
        set(&mut status, &Wanted::restarting("FailurePolicy_a", "m1"), at(1));
        let event = set(&mut status, &Wanted::restarting("DefaultFailurePolicy", "m2"), at(9)).expect("updated");
        assert_eq!(event.type_, EventType::Warning);
        let c = &status.conditions[0];
        assert_eq!(
            (c.reason.as_str(), c.message.as_str(), c.last_transition_time.0),
            ("DefaultFailurePolicy", "m2", at(1))
        );
        assert_eq!(set(&mut status, &Wanted::restarting("DefaultFailurePolicy", "m2"), at(10)), None);
    }

    #[test]
    fn startup_conditions_exclude_each_other() {
        let mut status = JobSetStatus::default();
        set(&mut status, &Wanted::startup_in_progress(), at(1));
        set(&mut status, &Wanted::startup_completed(), at(2));
        let get = |s: &JobSetStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).map(|c| c.status.clone());
        assert_eq!(get(&status, CONDITION_STARTUP_POLICY_IN_PROGRESS).as_deref(), Some("False"));
        assert_eq!(get(&status, CONDITION_STARTUP_POLICY_COMPLETED).as_deref(), Some("True"));
        set(&mut status, &Wanted::startup_in_progress(), at(3));
        assert_eq!(get(&status, CONDITION_STARTUP_POLICY_IN_PROGRESS).as_deref(), Some("True"));
        assert_eq!(get(&status, CONDITION_STARTUP_POLICY_COMPLETED).as_deref(), Some("False"));
    }
}
