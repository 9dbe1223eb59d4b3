//! When a ReplicatedJob may start: `dependsOn`, `startupPolicy: InOrder`, and Muster's leader-first release of
//! gang-admitted JobSets.

use muster_api::JobSet;
use muster_api::jobset::{DependsOnStatus, ReplicatedJob, ReplicatedJobStatus, StartupPolicyOrder};
use muster_api::keys;

fn status_of<'s>(statuses: &'s [ReplicatedJobStatus], name: &str) -> Option<&'s ReplicatedJobStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn replicas_of(jobset: &JobSet, name: &str) -> Option<i32> {
    jobset.spec.replicated_jobs.iter().find(|r| r.name == name).map(ReplicatedJob::replicas)
}

/// Every `dependsOn` entry holds: `Complete` needs all Jobs succeeded, `Ready` all ready, failed or succeeded.
pub fn depends_on_satisfied(jobset: &JobSet, rjob: &ReplicatedJob, statuses: &[ReplicatedJobStatus]) -> bool {
    rjob.depends_on.iter().all(|dep| {
        let (Some(status), Some(replicas)) = (status_of(statuses, &dep.name), replicas_of(jobset, &dep.name)) else {
            return false;
        };
        match dep.status {
            DependsOnStatus::Complete => status.succeeded == replicas,
            DependsOnStatus::Ready => status.ready + status.failed + status.succeeded == replicas,
        }
    })
}

/// Every Job of the ReplicatedJob is ready, failed or succeeded.
pub fn all_started(rjob: &ReplicatedJob, statuses: &[ReplicatedJobStatus]) -> bool {
    status_of(statuses, &rjob.name).is_some_and(|s| s.ready + s.failed + s.succeeded == rjob.replicas())
}

pub fn in_order(jobset: &JobSet) -> bool {
    jobset.spec.startup_policy.as_ref().is_some_and(|p| p.startup_policy_order == StartupPolicyOrder::InOrder)
}

/// Whether a gang-admitted JobSet still holds this ReplicatedJob back until the leader is ready.
///
/// Gang admission reserves every slot at once but releases the leader first, so workers never start against a
/// coordinator that is not there yet. `InOrder` and `dependsOn` already say what starts when; they win.
pub fn held_for_leader(jobset: &JobSet, rjob: &ReplicatedJob, statuses: &[ReplicatedJobStatus]) -> bool {
    let gang = jobset.annotation(keys::ADMISSION_OWNS_SUSPEND).is_some();
    if !gang || in_order(jobset) || jobset.spec.replicated_jobs.iter().any(|r| !r.depends_on.is_empty()) {
        return false;
    }
    let Some(leader) = jobset.leader() else { return false };
    if rjob.name == leader {
        return false;
    }
    jobset.spec.replicated_jobs.iter().find(|r| r.name == leader).is_some_and(|l| !all_started(l, statuses))
}
