//! Which pod slot of which gang a pod fills, and where admission put that slot: the one answer both steering
//! mechanisms (the extender and the pod-pinning webhook) use.
//!
//! A slot is `(pod set, Job index, pod index)`, the key of `Gang.status.placement`. The reconciler labels every pod
//! of a JobSet with its JobSet (`jobset-name`), ReplicatedJob (`replicatedjob-name`, the pod set) and Job index
//! (`job-index`); the Job controller gives pods of Indexed Jobs (JobSet's default) their completion index, which is
//! the pod index. A pod of a NonIndexed Job has no pod index: it may take any slot of its Job that no bound pod
//! holds yet.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use muster_api::gang::GangPhase;
use muster_api::{Gang, keys};

use crate::gang::GangKey;
use crate::gang::objects::pod_gang;

/// The slot a pod fills.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodSlot {
    pub gang: GangKey,
    pub job: JobRef,
    /// The completion index; `None` for pods of NonIndexed Jobs.
    pub pod_index: Option<i32>,
}

/// One Job of a gang: its pod set (ReplicatedJob name) and Job index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobRef {
    pub pod_set: String,
    pub job_index: i32,
}

impl std::fmt::Display for PodSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pod_index {
            Some(i) => write!(f, "{}-{}/{i}", self.job.pod_set, self.job.job_index),
            None => write!(f, "{}-{}/*", self.job.pod_set, self.job.job_index),
        }
    }
}

/// A JobSet pod whose labels do not name a slot. Our reconciler always writes them, so this is a pod someone
/// labelled by hand, or a newer JobSet controller's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("pod of JobSet {gang} has no {0} label", gang = .1)]
    Missing(&'static str, GangKey),
    #[error("pod of JobSet {gang}: {key}={value:?} is not an index")]
    NotAnIndex { gang: GangKey, key: &'static str, value: String },
}

impl SlotError {
    pub fn gang(&self) -> &GangKey {
        match self {
            SlotError::Missing(_, gang) | SlotError::NotAnIndex { gang, .. } => gang,
        }
    }
}

/// The slot of a JobSet pod; `None` for a pod no JobSet owns (no `jobset-name` label, or no namespace).
pub fn pod_slot(pod: &Pod) -> Option<Result<PodSlot, SlotError>> {
    let gang = pod_gang(pod)?;
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let index = |key: &'static str, value: &str| {
        value.trim().parse::<i32>().ok().filter(|i| *i >= 0).ok_or_else(|| SlotError::NotAnIndex {
            gang: gang.clone(),
            key,
            value: value.to_owned(),
        })
    };
    let result = (|| {
        let pod_set =
            label(keys::REPLICATED_JOB_NAME).ok_or(SlotError::Missing(keys::REPLICATED_JOB_NAME, gang.clone()))?;
        let job = label(keys::JOB_INDEX).ok_or(SlotError::Missing(keys::JOB_INDEX, gang.clone()))?;
        let job_index = index(keys::JOB_INDEX, job)?;
        // The Job controller writes the completion index as an annotation, and since 1.28 also as a label.
        let completion = label(keys::JOB_COMPLETION_INDEX).or_else(|| {
            pod.metadata.annotations.as_ref().and_then(|a| a.get(keys::JOB_COMPLETION_INDEX)).map(String::as_str)
        });
        let pod_index = completion.map(|c| index(keys::JOB_COMPLETION_INDEX, c)).transpose()?;
        Ok(PodSlot { gang: gang.clone(), job: JobRef { pod_set: pod_set.to_owned(), job_index }, pod_index })
    })();
    Some(result)
}

/// What admission decided for one gang, as steering needs it: its phase and every slot's node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GangRecord {
    pub phase: GangPhase,
    /// Per Job, pod index → node.
    jobs: HashMap<JobRef, BTreeMap<i32, Arc<str>>>,
}

/// Where a pod may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Steering<'a> {
    /// Its gang holds no reservation any more (Finished): the pod is placed like any other.
    Free,
    /// Its gang is not admitted: no node, until admission places the gang.
    Wait(GangPhase),
    /// Exactly this node.
    Node(&'a str),
    /// A pod without a completion index: any slot of its Job (pod index → node) that no bound pod holds.
    AnySlotOf(&'a BTreeMap<i32, Arc<str>>),
    /// Admitted, but the placement has no slot for this pod (e.g. a Job added after admission).
    NoSlot,
}

impl GangRecord {
    pub fn from_gang(gang: &Gang) -> Self {
        let status = gang.status.as_ref();
        let mut jobs: HashMap<JobRef, BTreeMap<i32, Arc<str>>> = HashMap::new();
        for slot in status.map(|s| s.placement.as_slice()).unwrap_or_default() {
            let job = JobRef { pod_set: slot.pod_set.clone(), job_index: slot.job_index };
            jobs.entry(job).or_default().insert(slot.pod_index, Arc::from(slot.node.as_str()));
        }
        GangRecord { phase: status.map(|s| s.phase).unwrap_or_default(), jobs }
    }

    /// Whether the gang's placement is in force: its slots are reserved.
    pub fn holds_reservation(&self) -> bool {
        matches!(self.phase, GangPhase::Admitted | GangPhase::Running)
    }

    pub fn steer(&self, job: &JobRef, pod_index: Option<i32>) -> Steering<'_> {
        match self.phase {
            GangPhase::Finished => return Steering::Free,
            GangPhase::Pending | GangPhase::Requeued | GangPhase::Inadmissible => return Steering::Wait(self.phase),
            GangPhase::Admitted | GangPhase::Running => {}
        }
        let Some(pods) = self.jobs.get(job) else { return Steering::NoSlot };
        match pod_index {
            Some(i) => pods.get(&i).map_or(Steering::NoSlot, |node| Steering::Node(node)),
            None => Steering::AnySlotOf(pods),
        }
    }

    /// Every node this gang's placement uses.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.jobs.values().flat_map(|pods| pods.values().map(|n| &**n))
    }
}

/// Why a pod of a gang that is not admitted goes nowhere (each mechanism adds what happens next).
pub fn not_admitted(gang: &GangKey, phase: GangPhase) -> String {
    format!("gang {gang} is {}, not admitted", phase_name(phase))
}

/// Why a pod whose slot the admitted gang's placement lacks goes nowhere.
pub fn no_slot(gang: &GangKey, phase: GangPhase, slot: &PodSlot) -> String {
    format!("gang {gang} ({}) has no slot {slot} in its placement", phase_name(phase))
}

/// Why a pod of an admitted gang whose labels name no slot goes nowhere.
pub fn unlabelled(error: &SlotError) -> String {
    format!("{error}; gang {} places only pods of its slots", error.gang())
}

/// Human text for a gang phase in reasons.
pub fn phase_name(phase: GangPhase) -> &'static str {
    match phase {
        GangPhase::Pending => "Pending",
        GangPhase::Admitted => "Admitted",
        GangPhase::Running => "Running",
        GangPhase::Requeued => "Requeued",
        GangPhase::Finished => "Finished",
        GangPhase::Inadmissible => "Inadmissible",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use muster_api::gang::{GangSpec, GangStatus, SlotPlacement};
    use serde_json::json;

    pub fn jobset_pod(ns: &str, jobset: &str, pod_set: &str, job: &str, completion: Option<&str>) -> Pod {
        let mut labels = json!({keys::JOBSET_NAME: jobset, keys::REPLICATED_JOB_NAME: pod_set, keys::JOB_INDEX: job});
        let mut annotations = json!({});
        if let Some(c) = completion {
            annotations[keys::JOB_COMPLETION_INDEX] = json!(c);
            labels[keys::JOB_COMPLETION_INDEX] = json!(c);
        }
        serde_json::from_value(json!({
            "metadata": {"name": format!("{jobset}-{pod_set}-{job}-{}", completion.unwrap_or("x")), "namespace": ns,
                "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
        }))
        .expect("pod")
    }

    /// A gang `ns/name` in `phase` with slots (pod set, job, pod, node).
    pub fn gang_object(ns: &str, name: &str, phase: GangPhase, slots: &[(&str, i32, i32, &str)]) -> Gang {
        let mut gang = Gang::new(name, GangSpec { queue: "default".into(), ..GangSpec::default() });
        gang.metadata.namespace = Some(ns.into());
        gang.status = Some(GangStatus {
            phase,
            placement: slots
                .iter()
                .map(|&(pod_set, job_index, pod_index, node)| SlotPlacement {
                    pod_set: pod_set.into(),
                    job_index,
                    pod_index,
                    node: node.into(),
                })
                .collect(),
            ..GangStatus::default()
        });
        gang
    }

    #[test]
    fn slots_come_from_jobset_labels_and_the_completion_index() {
        let slot = pod_slot(&jobset_pod("ml", "train", "workers", "2", Some("1"))).expect("jobset pod").expect("slot");
        assert_eq!(slot.gang, GangKey::new("ml", "train"));
        assert_eq!(slot.job, JobRef { pod_set: "workers".into(), job_index: 2 });
        assert_eq!(slot.pod_index, Some(1));
        assert_eq!(slot.to_string(), "workers-2/1");
        let slot = pod_slot(&jobset_pod("ml", "train", "workers", "0", None)).expect("jobset pod").expect("slot");
        assert_eq!(slot.pod_index, None);

        let mut only_annotation = jobset_pod("ml", "train", "workers", "0", Some("3"));
        if let Some(l) = only_annotation.metadata.labels.as_mut() {
            l.remove(keys::JOB_COMPLETION_INDEX);
        }
        assert_eq!(pod_slot(&only_annotation).and_then(Result::ok).and_then(|s| s.pod_index), Some(3));

        assert!(matches!(
            pod_slot(&jobset_pod("ml", "train", "workers", "two", None)),
            Some(Err(SlotError::NotAnIndex { key: keys::JOB_INDEX, .. }))
        ));
        assert!(matches!(pod_slot(&jobset_pod("ml", "train", "workers", "-1", None)), Some(Err(_))));
        let mut unlabelled = jobset_pod("ml", "train", "workers", "0", None);
        if let Some(l) = unlabelled.metadata.labels.as_mut() {
            l.remove(keys::REPLICATED_JOB_NAME);
        }
        assert_eq!(
            pod_slot(&unlabelled),
            Some(Err(SlotError::Missing(keys::REPLICATED_JOB_NAME, GangKey::new("ml", "train"))))
        );
        assert_eq!(pod_slot(&Pod::default()), None);
    }

    #[test]
    fn steering_follows_the_phase_and_the_placement() {
        let slots = [("workers", 0, 0, "gpu-3"), ("workers", 0, 1, "gpu-1"), ("workers", 1, 0, "gpu-2")];
        let job0 = JobRef { pod_set: "workers".into(), job_index: 0 };
        let record = GangRecord::from_gang(&gang_object("ml", "t", GangPhase::Admitted, &slots));
        assert!(record.holds_reservation());
        assert_eq!(record.steer(&job0, Some(1)), Steering::Node("gpu-1"));
        assert_eq!(record.steer(&job0, Some(2)), Steering::NoSlot);
        assert_eq!(record.steer(&JobRef { pod_set: "x".into(), job_index: 0 }, Some(0)), Steering::NoSlot);
        match record.steer(&job0, None) {
            Steering::AnySlotOf(pods) => {
                assert_eq!(pods.values().map(|n| &**n).collect::<Vec<_>>(), ["gpu-3", "gpu-1"])
            }
            other => panic!("{other:?}"),
        }
        let mut nodes: Vec<&str> = record.nodes().collect();
        nodes.sort_unstable();
        assert_eq!(nodes, ["gpu-1", "gpu-2", "gpu-3"]);

        for phase in [GangPhase::Pending, GangPhase::Requeued, GangPhase::Inadmissible] {
            let record = GangRecord::from_gang(&gang_object("ml", "t", phase, &slots));
            assert_eq!(record.steer(&job0, Some(0)), Steering::Wait(phase));
            assert!(!record.holds_reservation());
        }
        let finished = GangRecord::from_gang(&gang_object("ml", "t", GangPhase::Finished, &slots));
        assert_eq!(finished.steer(&job0, Some(0)), Steering::Free);
        let mut no_status = gang_object("ml", "t", GangPhase::Admitted, &slots);
        no_status.status = None;
        assert_eq!(GangRecord::from_gang(&no_status).steer(&job0, Some(0)), Steering::Wait(GangPhase::Pending));
    }
}
