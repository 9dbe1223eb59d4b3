//! Upstream's controller `pod`, the repair half of exclusive placement (reference §3.12), as a pure decision.
//!
//! The pod webhooks (admission-controller/src/webhook/exclusive.rs) give a follower its leader's topology domain
//! as a nodeSelector when the follower is created. A leader that is recreated later (it failed, or was evicted)
//! may be scheduled into another domain while its followers still select the old one (or, created while no webhook
//! was in the path, none): they would wait forever, or run apart from their leader. So for every scheduled leader
//! the followers are checked, and if any does not select the leader's domain, every follower is marked with the
//! `DisruptionTarget` condition (reason `ExclusivePlacementViolation`, so that a Job `podFailurePolicy` can ignore
//! the deletion) and deleted. The Job controller recreates them, and the webhook gives them the leader's domain.
//!
//! Upstream's post-0.12 fixes are in: a leader whose node cannot be read (missing, or without the label) is
//! retried rather than followers deleted against an empty domain (#1269). Beyond upstream, pods that are
//! terminating or finished are left out: they hold no placement, deleting them again only repeats a deletion, and
//! a finished leader's node may be long gone, which would retry forever. Pods of the node-selector strategy are
//! left out as the webhooks leave them out; their placement is the reconciler's nodeSelector.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use muster_api::keys;
use serde_json::{Value, json};

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.as_str())
}

/// Upstream's leader test: the completion-index annotation is `0`.
fn is_leader(pod: &Pod) -> bool {
    annotation(pod, keys::JOB_COMPLETION_INDEX) == Some(keys::LEADER_INDEX)
}

fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The topology key of a pod that uses exclusive placement with the affinity strategy.
pub fn exclusive_topology(pod: &Pod) -> Option<&str> {
    if annotation(pod, keys::NODE_SELECTOR_STRATEGY).is_some() {
        return None;
    }
    annotation(pod, keys::EXCLUSIVE_TOPOLOGY)
}

/// The node of a leader worth checking: live, scheduled, placed exclusively. What the controller reconciles.
pub fn leader_node(pod: &Pod) -> Option<&str> {
    if !is_leader(pod) || !is_live(pod) || exclusive_topology(pod).is_none() {
        return None;
    }
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

/// Whether `pod` is a live follower of `leader`'s Job: the same `job-key` label and the same controller owner
/// (a pod of an earlier Job of the same name is not one of its followers).
fn is_follower_of(pod: &Pod, leader: &Pod) -> bool {
    !is_leader(pod)
        && is_live(pod)
        && exclusive_topology(pod).is_some()
        && pod.metadata.namespace == leader.metadata.namespace
        && label(pod, keys::JOB_KEY).is_some()
        && label(pod, keys::JOB_KEY) == label(leader, keys::JOB_KEY)
        && controller_uid(pod).is_some()
        && controller_uid(pod) == controller_uid(leader)
}

/// What to do about one leader's followers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a live, scheduled leader of an exclusive Job: nothing to check.
    NotALeader,
    /// Every live follower selects the leader's domain.
    Placed,
    /// The leader's domain cannot be read; check again later rather than delete followers against no domain.
    Retry(String),
    /// Some follower selects another domain, or none: mark and delete every live follower (upstream deletes all of
    /// them, so that the Job's pods are recreated together behind the leader).
    Evict { domain: String, followers: Vec<String> },
}

/// The decision for `leader`, whose node's labels are `node_labels` (`None`: the node does not exist), among
/// `pods` (any pods; the leader's followers are picked out).
pub fn decide(leader: &Pod, node_labels: Option<&BTreeMap<String, String>>, pods: &[Pod]) -> Verdict {
    let (Some(node), Some(topology_key)) = (leader_node(leader), exclusive_topology(leader)) else {
        return Verdict::NotALeader;
    };
    let Some(labels) = node_labels else {
        return Verdict::Retry(format!("leader's node {node} not found"));
    };
    let Some(domain) = labels.get(topology_key) else {
        return Verdict::Retry(format!("node does not have topology label: {topology_key}"));
    };
    let followers: Vec<&Pod> = pods.iter().filter(|p| is_follower_of(p, leader)).collect();
    let selects = |p: &Pod| {
        p.spec.as_ref().and_then(|s| s.node_selector.as_ref()).and_then(|s| s.get(topology_key)) == Some(domain)
    };
    if followers.iter().all(|p| selects(p)) {
        return Verdict::Placed;
    }
    let mut names: Vec<String> = followers.iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort_unstable();
    Verdict::Evict { domain: domain.clone(), followers: names }
}

/// Whether the follower still needs the `DisruptionTarget=True` condition (upstream writes it only once).
pub fn needs_condition(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    !conditions.into_iter().flatten().any(|c| c.type_ == keys::CONDITION_DISRUPTION_TARGET && c.status == "True")
}

/// The strategic-merge patch of `pods/status` that sets the condition (conditions merge by `type`).
pub fn condition_patch(now: Time) -> Value {
    json!({"status": {"conditions": [{
        "type": keys::CONDITION_DISRUPTION_TARGET,
        "status": "True",
        "reason": keys::REASON_EXCLUSIVE_PLACEMENT_VIOLATION,
        "message": keys::MESSAGE_EXCLUSIVE_PLACEMENT_VIOLATION,
        "lastTransitionTime": now,
    }]}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    const KEY: &str = "example.com/rack";

    fn pod(name: &str, completion: &str, selector: Option<&str>) -> Pod {
        let mut spec = json!({"containers": [{"name": "c"}]});
        if let Some(domain) = selector {
            spec["nodeSelector"] = json!({KEY: domain, "gpu": "h100"});
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml",
                "labels": {keys::JOB_KEY: "key-0", keys::JOBSET_NAME: "train"},
                "annotations": {keys::EXCLUSIVE_TOPOLOGY: KEY, keys::JOB_COMPLETION_INDEX: completion},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train-w-0", "uid": "job-uid",
                    "controller": true}]},
            "spec": spec,
        }))
        .expect("pod")
    }

    fn leader_on(node: &str) -> Pod {
        let mut leader = pod("train-w-0-0-aaaaa", "0", None);
        leader.spec.as_mut().expect("spec").node_name = Some(node.into());
        leader
    }

    fn rack(domain: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(KEY.to_owned(), domain.to_owned()), ("other".to_owned(), "x".to_owned())])
    }

    fn phase(mut p: Pod, phase: &str) -> Pod {
        p.status = Some(serde_json::from_value(json!({"phase": phase})).expect("status"));
        p
    }

    #[test]
    fn followers_in_the_leaders_domain_are_left_alone() {
        let leader = leader_on("n1");
        let pods =
            [leader.clone(), pod("train-w-0-1-bbbbb", "1", Some("r1")), pod("train-w-0-2-ccccc", "2", Some("r1"))];
        assert_eq!(decide(&leader, Some(&rack("r1")), &pods), Verdict::Placed);
        assert_eq!(decide(&leader, Some(&rack("r1")), std::slice::from_ref(&leader)), Verdict::Placed, "no followers");
    }

    #[test]
    fn one_mismatched_or_unselected_follower_evicts_every_live_follower() {
        let leader = leader_on("n1");
        let good = pod("train-w-0-1-bbbbb", "1", Some("r2"));
        let stale = pod("train-w-0-2-ccccc", "2", Some("r1"));
        let unselected = pod("train-w-0-3-ddddd", "3", None);
        let evict = |followers: &[&str]| Verdict::Evict {
            domain: "r2".into(),
            followers: followers.iter().map(|f| (*f).to_owned()).collect(),
        };
        let pods = [leader.clone(), stale.clone(), good.clone()];
        assert_eq!(decide(&leader, Some(&rack("r2")), &pods), evict(&["train-w-0-1-bbbbb", "train-w-0-2-ccccc"]));
        let pods = [leader.clone(), good, unselected];
        assert_eq!(decide(&leader, Some(&rack("r2")), &pods), evict(&["train-w-0-1-bbbbb", "train-w-0-3-ddddd"]));
    }

    #[test]
    fn leader_whose_node_is_missing_or_unlabelled_is_retried_not_followed() {
        let leader = leader_on("gone");
        let pods = [leader.clone(), pod("train-w-0-1-bbbbb", "1", Some("r1"))];
        assert_eq!(decide(&leader, None, &pods), Verdict::Retry("leader's node gone not found".into()));
        let unlabelled = BTreeMap::from([("other".to_owned(), "x".to_owned())]);
        assert_eq!(
            decide(&leader, Some(&unlabelled), &pods),
            Verdict::Retry(format!("node does not have topology label: {KEY}"))
        );
    }

    #[test]
    fn only_live_scheduled_exclusive_leaders_are_checked() {
        let stale_follower = pod("train-w-0-1-bbbbb", "1", Some("r1"));
        let check = |leader: &Pod| decide(leader, Some(&rack("r2")), &[leader.clone(), stale_follower.clone()]);
        assert_eq!(check(&pod("train-w-0-0-aaaaa", "0", None)), Verdict::NotALeader, "not scheduled");
        assert_eq!(check(&leader_on("")), Verdict::NotALeader, "empty nodeName");
        let mut deleting = leader_on("n1");
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(check(&deleting), Verdict::NotALeader);
        assert_eq!(check(&phase(leader_on("n1"), "Succeeded")), Verdict::NotALeader);
        let mut follower = stale_follower.clone();
        follower.spec.as_mut().expect("spec").node_name = Some("n1".into());
        assert_eq!(check(&follower), Verdict::NotALeader, "completion index 1");
        let mut strategy = leader_on("n1");
        strategy.metadata.annotations.as_mut().expect("a").insert(keys::NODE_SELECTOR_STRATEGY.into(), "true".into());
        assert_eq!(check(&strategy), Verdict::NotALeader, "node-selector strategy");
        let mut plain = leader_on("n1");
        plain.metadata.annotations.as_mut().expect("a").remove(keys::EXCLUSIVE_TOPOLOGY);
        assert_eq!(check(&plain), Verdict::NotALeader, "no exclusive placement");
        assert!(matches!(check(&leader_on("n1")), Verdict::Evict { .. }), "the real leader is checked");
    }

    #[test]
    fn followers_are_this_jobs_live_pods_only() {
        let leader = leader_on("n1");
        let stale = || pod("train-w-0-1-bbbbb", "1", Some("r1"));
        let mut other_job = stale();
        other_job.metadata.labels.as_mut().expect("l").insert(keys::JOB_KEY.into(), "key-1".into());
        let mut earlier_job = stale();
        if let Some(owner) = earlier_job.metadata.owner_references.as_mut().and_then(|o| o.first_mut()) {
            owner.uid = "old-uid".into();
        }
        let mut other_namespace = stale();
        other_namespace.metadata.namespace = Some("other".into());
        let mut terminating = stale();
        terminating.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut ownerless = stale();
        ownerless.metadata.owner_references = None;
        let mut ownerless_leader = leader.clone();
        ownerless_leader.metadata.owner_references = None;
        for (what, p) in [
            ("other job", other_job),
            ("earlier job of the same name", earlier_job),
            ("other namespace", other_namespace),
            ("terminating", terminating),
            ("failed", phase(stale(), "Failed")),
            ("succeeded", phase(stale(), "Succeeded")),
            ("no owner", ownerless),
        ] {
            assert_eq!(decide(&leader, Some(&rack("r2")), &[leader.clone(), p]), Verdict::Placed, "{what}");
        }
        assert_eq!(
            decide(&ownerless_leader, Some(&rack("r2")), &[ownerless_leader.clone(), stale()]),
            Verdict::Placed,
            "a leader without owner has no followers"
        );
    }

    #[test]
    fn condition_is_upstreams_and_written_once() {
        let patch = condition_patch(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(
            patch,
            json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "ExclusivePlacementViolation", "message": "Pod violated JobSet exclusive placement policy",
                "lastTransitionTime": "1970-01-01T00:00:00Z"}]}})
        );
        let mut p = pod("train-w-0-1-bbbbb", "1", None);
        assert!(needs_condition(&p));
        p.status = Some(
            serde_json::from_value(json!({"conditions": [
            {"type": "DisruptionTarget", "status": "False"}]}))
            .expect("status"),
        );
        assert!(needs_condition(&p), "a False condition is replaced");
        p.status = Some(
            serde_json::from_value(json!({"conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]}))
            .expect("status"),
        );
        assert!(!needs_condition(&p));
    }
}
