//! The success policy: `All` needs every Job of the targeted ReplicatedJobs to succeed, `Any` needs one.

use k8s_openapi::api::batch::v1::Job;
use muster_api::JobSet;
use muster_api::jobset::{Operator, ReplicatedJob};
use muster_api::keys;

use super::jobs::label;

pub fn satisfied(jobset: &JobSet, successful: &[&Job]) -> bool {
    // A JobSet that bypassed defaulting has no success policy; treat it as `All` of everything.
    let (operator, targets) = match &jobset.spec.success_policy {
        Some(p) => (p.operator, p.target_replicated_jobs.as_slice()),
        None => (Operator::All, &[][..]),
    };
    let targeted = |name: &str| targets.is_empty() || targets.iter().any(|t| t == name);
    let succeeded = successful.iter().filter(|job| label(job, keys::REPLICATED_JOB_NAME).is_some_and(targeted)).count();
    match operator {
        Operator::Any => succeeded >= 1,
        Operator::All => {
            let needed: i32 =
                jobset.spec.replicated_jobs.iter().filter(|r| targeted(&r.name)).map(ReplicatedJob::replicas).sum();
            i64::try_from(succeeded).unwrap_or(i64::MAX) >= i64::from(needed)
        }
    }
}
