//! Read your own writes: the Jobs this controller created or deleted that its watch cache does not show yet.
//!
//! The cache lags the API server. A reconcile triggered by the first of 64 new Jobs would otherwise find the other
//! 63 missing and create them again (each a 409 and a GET), and one during a group restart would delete the old
//! Jobs a second time. The benchmark measured 24 such extra creates for a 64-Job JobSet. Kubernetes' own
//! controllers call this bookkeeping "expectations". A write is forgotten as soon as the cache shows it, or after
//! [`TTL`] in case the cache never does (the object was changed or removed by someone else meanwhile).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How long a write the cache has not confirmed still counts.
pub const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Write {
    /// The Job the API server returned from our create.
    Created { job: Box<Job>, at: Instant },
    /// We deleted the Job with this UID (unknown when the API server removed it at once).
    Deleted { uid: Option<String>, deletion: Time, at: Instant },
}

impl Write {
    fn at(&self) -> Instant {
        match self {
            Self::Created { at, .. } | Self::Deleted { at, .. } => *at,
        }
    }
}

/// Unconfirmed Job writes, by JobSet UID and Job name (the latest write to a name wins).
#[derive(Debug, Default)]
pub struct OwnWrites {
    jobsets: HashMap<String, HashMap<String, Write>>,
}

fn uid(job: &Job) -> Option<&str> {
    job.metadata.uid.as_deref()
}

impl OwnWrites {
    pub fn created(&mut self, jobset_uid: &str, job: Job, at: Instant) {
        let Some(name) = job.metadata.name.clone() else { return };
        self.jobsets.entry(jobset_uid.into()).or_default().insert(name, Write::Created { job: Box::new(job), at });
    }

    /// `uid` is the deleted Job's, when the API server returned it (a foreground deletion does).
    pub fn deleted(&mut self, jobset_uid: &str, name: &str, uid: Option<String>, deletion: Time, at: Instant) {
        self.jobsets.entry(jobset_uid.into()).or_default().insert(name.into(), Write::Deleted { uid, deletion, at });
    }

    /// The cache's Jobs of a JobSet with the writes it does not show yet applied; forgets what it shows.
    pub fn overlay(&mut self, jobset_uid: &str, mut jobs: Vec<Job>, now: Instant) -> Vec<Job> {
        self.jobsets.retain(|_, writes| {
            writes.retain(|_, w| now.saturating_duration_since(w.at()) < TTL);
            !writes.is_empty()
        });
        let Some(writes) = self.jobsets.get_mut(jobset_uid) else { return jobs };
        writes.retain(|name, write| {
            let cached = jobs.iter().position(|j| j.metadata.name.as_deref() == Some(name.as_str()));
            match write {
                Write::Created { job, .. } => {
                    if cached.is_some_and(|i| uid(&jobs[i]) == uid(job)) {
                        return false;
                    }
                    // Whatever the cache still holds under this name is the predecessor we waited to be gone.
                    if let Some(i) = cached {
                        jobs.remove(i);
                    }
                    jobs.push(Job::clone(job));
                    true
                }
                Write::Deleted { uid: deleted, deletion, .. } => {
                    let Some(i) = cached else { return false };
                    let job = &mut jobs[i];
                    let other_object = deleted.as_deref().is_some_and(|d| uid(job) != Some(d));
                    if other_object || job.metadata.deletion_timestamp.is_some() {
                        return false;
                    }
                    job.metadata.deletion_timestamp = Some(deletion.clone());
                    true
                }
            }
        });
        jobs
    }

    /// Unconfirmed writes held, over all JobSets.
    pub fn len(&self) -> usize {
        self.jobsets.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn job(name: &str, uid: &str) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some(name.into());
        job.metadata.uid = Some(uid.into());
        job
    }

    fn names(jobs: &[Job]) -> Vec<(String, String, bool)> {
        let mut out: Vec<_> = jobs
            .iter()
            .map(|j| {
                let name = j.metadata.name.clone().unwrap_or_default();
                (name, uid(j).unwrap_or_default().to_string(), j.metadata.deletion_timestamp.is_some())
            })
            .collect();
        out.sort();
        out
    }

    fn now_time() -> Time {
        Time(Timestamp::now())
    }

    #[test]
    fn created_jobs_count_until_the_cache_shows_them() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.created("js", job("a-0", "u1"), t0);
        writes.created("js", job("a-1", "u2"), t0);
        // The cache has seen one of the two: both count, and only the unseen one stays remembered.
        let seen = writes.overlay("js", vec![job("a-0", "u1")], t0);
        assert_eq!(names(&seen), [("a-0".into(), "u1".into(), false), ("a-1".into(), "u2".into(), false)]);
        assert_eq!(writes.len(), 1);
        // Other JobSets are untouched.
        assert!(writes.overlay("other", vec![], t0).is_empty());
        let seen = writes.overlay("js", vec![job("a-0", "u1"), job("a-1", "u2")], t0);
        assert_eq!(seen.len(), 2);
        assert!(writes.is_empty());
    }

    #[test]
    fn a_recreated_job_replaces_its_stale_predecessor() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.created("js", job("a-0", "new"), t0);
        let seen = writes.overlay("js", vec![job("a-0", "old")], t0);
        assert_eq!(names(&seen), [("a-0".into(), "new".into(), false)]);
    }

    #[test]
    fn deleted_jobs_are_terminating_until_the_cache_agrees() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.deleted("js", "a-0", Some("u1".into()), now_time(), t0);
        writes.deleted("js", "a-1", None, now_time(), t0);
        let seen = writes.overlay("js", vec![job("a-0", "u1"), job("a-1", "u2"), job("a-2", "u3")], t0);
        let terminating: Vec<bool> = names(&seen).into_iter().map(|n| n.2).collect();
        assert_eq!(terminating, [true, true, false]);
        assert_eq!(writes.len(), 2);
        // Gone from the cache, or shown terminating: forgotten.
        let mut a1 = job("a-1", "u2");
        a1.metadata.deletion_timestamp = Some(now_time());
        writes.overlay("js", vec![a1], t0);
        assert!(writes.is_empty());
    }

    #[test]
    fn a_deletion_does_not_touch_a_newer_object_of_the_same_name() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.deleted("js", "a-0", Some("old".into()), now_time(), t0);
        let seen = writes.overlay("js", vec![job("a-0", "new")], t0);
        assert_eq!(names(&seen), [("a-0".into(), "new".into(), false)]);
        assert!(writes.is_empty());
    }

    #[test]
    fn writes_the_cache_never_confirms_expire() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.created("js", job("a-0", "u1"), t0);
        writes.created("gone", job("b-0", "u2"), t0);
        assert_eq!(writes.overlay("js", vec![], t0 + TTL / 2).len(), 1);
        assert!(writes.overlay("js", vec![], t0 + TTL).is_empty());
        assert!(writes.is_empty(), "a deleted JobSet's writes expire too");
    }
}
