//! Read your own writes: the Jobs this controller created or deleted, and the JobSet status it wrote, that its
//! watch cache does not show yet.
//!
//! The cache lags the API server. A reconcile triggered by the first of 64 new Jobs would otherwise find the other
//! 63 missing and create them again (each a 409 and a GET), and one during a group restart would delete the old
//! Jobs a second time. The benchmark measured 24 such extra creates for a 64-Job JobSet. Kubernetes' own
//! controllers call this bookkeeping "expectations". A write is forgotten as soon as the cache shows it, or after
//! [`TTL`] in case the cache never does (the object was changed or removed by someone else meanwhile).
//!
//! The same lag made the next reconcile plan from the JobSet as it was before our status write; its own status
//! write, carrying the old resourceVersion, was then refused with a conflict (97 writes for 50 new JobSets).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use muster_api::JobSet;

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
    /// The JobSet each of our status writes returned, by JobSet UID.
    statuses: HashMap<String, (JobSet, Instant)>,
}

/// A resourceVersion as the etcd revision it is. The API treats it as opaque, so anything else means "unknown".
fn revision(resource_version: Option<&String>) -> Option<u64> {
    resource_version?.parse().ok()
}

fn uid(job: &Job) -> Option<&str> {
    job.metadata.uid.as_deref()
}

impl OwnWrites {
    pub fn created(&mut self, jobset_uid: &str, mut job: Job, at: Instant) {
        let Some(name) = job.metadata.name.clone() else { return };
        // Kept like the watch cache keeps Jobs, so planning sees one shape either way.
        crate::plan::suspend::trim_for_cache(&mut job);
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

    pub fn status_written(&mut self, jobset: JobSet, at: Instant) {
        let Some(uid) = jobset.metadata.uid.clone() else { return };
        self.statuses.insert(uid, (jobset, at));
    }

    /// The JobSet our last status write returned, when the cache still holds an older version of it.
    pub fn newer_jobset(&mut self, cached: &JobSet, now: Instant) -> Option<JobSet> {
        self.statuses.retain(|_, (_, at)| now.saturating_duration_since(*at) < TTL);
        let uid = cached.metadata.uid.as_ref()?;
        let (written, _) = self.statuses.get(uid)?;
        let ours = revision(written.metadata.resource_version.as_ref());
        let theirs = revision(cached.metadata.resource_version.as_ref());
        match (ours, theirs) {
            (Some(ours), Some(theirs)) if ours > theirs => Some(written.clone()),
            _ => {
                self.statuses.remove(uid);
                None
            }
        }
    }

    /// Unconfirmed writes held, over all JobSets.
    pub fn len(&self) -> usize {
        self.jobsets.values().map(HashMap::len).sum::<usize>() + self.statuses.len()
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

    fn jobset_at(uid: &str, resource_version: &str, restarts: i32) -> JobSet {
        let mut js: JobSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "js", "uid": uid, "resourceVersion": resource_version},
            "spec": {"replicatedJobs": []}}))
        .expect("jobset");
        js.status = Some(muster_api::JobSetStatus { restarts, ..Default::default() });
        js
    }

    #[test]
    fn our_status_write_wins_over_an_older_cached_jobset_only() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.status_written(jobset_at("u", "120", 1), t0);
        let newer = writes.newer_jobset(&jobset_at("u", "99", 0), t0).expect("ours is newer");
        assert_eq!(newer.status.map(|s| s.restarts), Some(1));
        assert!(writes.newer_jobset(&jobset_at("other", "1", 0), t0).is_none());
        // The cache caught up (or moved past us): it wins, and our copy is dropped.
        assert!(writes.newer_jobset(&jobset_at("u", "120", 1), t0).is_none());
        assert!(writes.is_empty());
        writes.status_written(jobset_at("u", "130", 2), t0);
        assert!(writes.newer_jobset(&jobset_at("u", "131", 2), t0).is_none());
        // Opaque versions: no guess.
        writes.status_written(jobset_at("u", "abc", 2), t0);
        assert!(writes.newer_jobset(&jobset_at("u", "1", 0), t0).is_none());
    }

    #[test]
    fn writes_the_cache_never_confirms_expire() {
        let mut writes = OwnWrites::default();
        let t0 = Instant::now();
        writes.created("js", job("a-0", "u1"), t0);
        writes.created("gone", job("b-0", "u2"), t0);
        writes.status_written(jobset_at("u", "9", 1), t0);
        assert_eq!(writes.overlay("js", vec![], t0 + TTL / 2).len(), 1);
        assert!(writes.overlay("js", vec![], t0 + TTL).is_empty());
        assert!(writes.newer_jobset(&jobset_at("u", "1", 0), t0 + TTL).is_none());
        assert!(writes.is_empty(), "a deleted JobSet's writes expire too");
    }
}
