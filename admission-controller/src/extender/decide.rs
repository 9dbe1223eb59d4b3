//! The extender's decisions, pure: `filter` and `prioritize` over what the watches fed into [`ExtenderState`].
//!
//! - A pod of an admitted gang (Admitted or Running) passes only on the node admission reserved for its slot; every
//!   other node fails as unresolvable, so kube-scheduler never preempts there on its behalf. A pod of a NonIndexed
//!   Job passes on the nodes of its Job's slots that bound pods do not fill yet.
//! - A pod of a gang that is not admitted (Pending, Requeued, Inadmissible) passes nowhere: it waits for admission.
//! - Any other pod that asks for GPUs (no Gang for its JobSet, a Finished gang, or no JobSet at all) passes where it
//!   fits without touching GPUs reserved for gangs, and not on nodes held for the head gang of a queue (the Gang's
//!   `status.heldNodes`): admission keeps other gangs off them so their GPUs gather for the head, and so does the
//!   extender for every other GPU pod. GPUs its pods could free by preemption fail resolvably.
//! - Any other pod without GPUs passes everywhere (with `managedResources: nvidia.com/gpu` the scheduler does not
//!   even ask).
//!
//! Prioritize: the reserved node (or the open slots' nodes) scores 10, others 0. Other GPU pods score by best fit,
//! the least room left after them scores highest: packing them onto partly used nodes keeps whole nodes free for
//! gangs, whose Jobs want whole nodes (the rule admission's placement follows too). The scheduler's own
//! `NodeResourcesFit` spreads by default, which is why the extender's weight should dominate it.
//!
//! **One node at a time where pods could race.** kube-scheduler binds asynchronously and the extender learns of a
//! binding only from its pod watch (kubernetes#82359), so the next pod's `filter` can come before the watch shows
//! where the last one went. The scheduler's own `NodeResourcesFit` (the extender registers `nvidia.com/gpu` as a
//! managed resource with `ignoredByScheduler: false`) counts the pods it has placed, so on most nodes that cannot
//! double-book GPUs: its count is ours minus those pods. It cannot protect what only the extender knows: GPUs
//! reserved for a gang whose pods are not bound yet, healthy GPUs fewer than the device plugin advertises, and the
//! open slots of a gang Job without completion indexes. So when a GPU pod outside gangs passes on any such node
//! ([`Room::exposed`](super::state::Room::exposed)), or a NonIndexed gang pod has open slots, `filter` passes
//! exactly one node (best fit, or the first open slot; the others fail, resolvably, with [`NARROWED`]) and assumes
//! the pod there ([`ExtenderState::assume`]) until the watch speaks for it. With one node left the scheduler
//! neither scores nor picks: it binds there. The price is that such a pod loses the scheduler's soft preferences
//! (preferred affinity, spreading) among the nodes that fit equally well. Where no passing node is exposed, all of
//! them pass as before.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use muster_api::extender::{
    ExtenderArgs, ExtenderFilterResult, HostPriority, HostPriorityList, MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY,
    NodeList,
};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::slots::{JobRef, Steering, no_slot, not_admitted, pod_slot, unlabelled};
use super::state::{Assumption, ExtenderState};
use crate::gang::GangKey;
use crate::gang::objects::pod_requests;

/// Why a request cannot be decided; `filter` answers it in `Error`, `prioritize` as a client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("the request carries no Pod")]
    NoPod,
    #[error("pod {pod}: request {resource}: {message}")]
    Requests { pod: String, resource: String, message: String },
}

/// Where one pod may go, worked out once per request and then applied to each candidate node.
#[derive(Debug)]
enum Plan<'s> {
    Anywhere,
    Only {
        node: &'s str,
        reason: String,
    },
    /// Nodes with a slot of the pod's Job that no bound or assumed pod holds.
    OpenSlots {
        nodes: BTreeSet<&'s str>,
        job: (GangKey, JobRef),
        reason: String,
    },
    Nowhere {
        reason: String,
    },
    /// A GPU pod outside gangs: where `gpus` fit outside reservations.
    Room {
        gpus: u32,
    },
}

/// Why a node fails: the plan's reason for this pod, or one of the fixed texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Plan,
    Fixed(&'static str),
}

/// One node's answer.
#[derive(Debug, PartialEq, Eq)]
enum Fit {
    Pass,
    /// Might pass once pods are preempted.
    Fail(Reason),
    Unresolvable(Reason),
}

const UNKNOWN_NODE: &str = "node not known to the Muster extender yet";
const RESERVED: &str = "nvidia.com/gpu reserved for admitted gangs";
const PREEMPTIBLE: &str = "Insufficient nvidia.com/gpu outside gang reservations";
const NO_HEALTHY: &str = "not enough healthy nvidia.com/gpu";
const HELD: &str = "nvidia.com/gpu held for the gang at the head of a queue";
/// A node that fits, left out so that the pod gets exactly one (module documentation).
pub const NARROWED: &str =
    "fits, but the Muster extender offers this pod one node at a time where it could race another for reserved GPUs";

fn plan<'s>(state: &'s ExtenderState, pod: &Pod) -> Result<Plan<'s>, DecideError> {
    let gpus = match pod.spec.as_ref().map(pod_requests) {
        None => 0,
        Some(Ok(r)) => r.gpus,
        Some(Err((resource, e))) => {
            let pod = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            return Err(DecideError::Requests { pod, resource, message: e.to_string() });
        }
    };
    let outside = if gpus == 0 { Plan::Anywhere } else { Plan::Room { gpus } };
    let slot = match pod_slot(pod) {
        None => return Ok(outside),
        Some(Ok(slot)) => slot,
        Some(Err(e)) => {
            // Labels that name no slot: if the JobSet is a gang, nothing can be reserved for this pod.
            return Ok(match state.gang(e.gang()) {
                Some(record) if record.holds_reservation() => Plan::Nowhere { reason: unlabelled(&e) },
                _ => outside,
            });
        }
    };
    let Some(record) = state.gang(&slot.gang) else { return Ok(outside) };
    let gang = &slot.gang;
    Ok(match record.steer(&slot.job, slot.pod_index) {
        Steering::Free => outside,
        Steering::Wait(phase) => {
            Plan::Nowhere { reason: format!("{}: its pods wait for admission", not_admitted(gang, phase)) }
        }
        Steering::NoSlot => Plan::Nowhere { reason: no_slot(gang, record.phase, &slot) },
        Steering::Node(node) => {
            Plan::Only { node, reason: format!("gang {gang} reserved node {node} for slot {slot}") }
        }
        Steering::AnySlotOf(pods) => {
            let bound = state.bound_in_job(gang, &slot.job);
            let mut taken = bound.cloned().unwrap_or_default();
            for node in state.assumed_in_job(gang, &slot.job) {
                *taken.entry(Arc::clone(node)).or_default() += 1;
            }
            let mut nodes = BTreeSet::new();
            for node in pods.values() {
                match taken.get_mut(node) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => {
                        nodes.insert(&**node);
                    }
                }
            }
            let all: BTreeSet<&str> = pods.values().map(|n| &**n).collect();
            let list = all.into_iter().collect::<Vec<_>>().join(", ");
            let job = format!("{}-{}", slot.job.pod_set, slot.job.job_index);
            Plan::OpenSlots {
                nodes,
                reason: format!("gang {gang} has no free slot of Job {job} here (its nodes: {list})"),
                job: (slot.gang.clone(), slot.job.clone()),
            }
        }
    })
}

fn fit(state: &ExtenderState, name: &str, gpus: u32) -> Fit {
    let Some(r) = state.room(name) else { return Fit::Unresolvable(Reason::Fixed(UNKNOWN_NODE)) };
    if state.held_for(name).is_some() {
        // Whatever frees up here goes to that gang; preempting for this pod would not change that.
        return Fit::Unresolvable(Reason::Fixed(HELD));
    }
    let free = r.free();
    if free >= gpus {
        Fit::Pass
    } else if free.saturating_add(r.preemptible) >= gpus {
        Fit::Fail(Reason::Fixed(PREEMPTIBLE))
    } else if free.saturating_add(r.preemptible).saturating_add(r.reserved) >= gpus {
        Fit::Unresolvable(Reason::Fixed(RESERVED))
    } else {
        Fit::Unresolvable(Reason::Fixed(NO_HEALTHY))
    }
}

/// Best fit: 10 when the pod fills the node's free GPUs exactly, down to 0 the more room it would leave.
fn best_fit_score(state: &ExtenderState, name: &str, gpus: u32) -> i64 {
    match state.room(name) {
        Some(r) if r.free() >= gpus && r.usable > 0 && state.held_for(name).is_none() => {
            let left = i64::from(r.free() - gpus);
            MAX_EXTENDER_PRIORITY - (MAX_EXTENDER_PRIORITY * left).div_euclid(i64::from(r.usable))
        }
        _ => MIN_EXTENDER_PRIORITY,
    }
}

impl Plan<'_> {
    fn fit(&self, state: &ExtenderState, name: &str) -> Fit {
        match self {
            Plan::Anywhere => Fit::Pass,
            Plan::Only { node, .. } if *node == name => Fit::Pass,
            Plan::OpenSlots { nodes, .. } if nodes.contains(name) => Fit::Pass,
            Plan::Only { .. } | Plan::OpenSlots { .. } | Plan::Nowhere { .. } => Fit::Unresolvable(Reason::Plan),
            Plan::Room { gpus } => fit(state, name, *gpus),
        }
    }

    /// The text of [`Reason::Plan`].
    fn into_reason(self) -> String {
        match self {
            Plan::Only { reason, .. } | Plan::OpenSlots { reason, .. } | Plan::Nowhere { reason } => reason,
            Plan::Anywhere | Plan::Room { .. } => String::new(),
        }
    }

    fn score(&self, state: &ExtenderState, name: &str) -> i64 {
        let best = |yes: bool| if yes { MAX_EXTENDER_PRIORITY } else { MIN_EXTENDER_PRIORITY };
        match self {
            Plan::Only { node, .. } => best(*node == name),
            Plan::OpenSlots { nodes, .. } => best(nodes.contains(name)),
            Plan::Room { gpus } => best_fit_score(state, name, *gpus),
            Plan::Anywhere | Plan::Nowhere { .. } => MIN_EXTENDER_PRIORITY,
        }
    }
}

/// The answer to `filter`, borrowing node names from the request and sharing reason texts: it serialises straight
/// into `ExtenderFilterResult`'s wire form, without the 10,000 small strings and two sorted maps an owned result of
/// 5,000 nodes costs (in the benchmark, over 90 % of the decision's time).
#[derive(Debug, Default)]
pub struct FilterAnswer<'a> {
    names: Option<Vec<&'a str>>,
    nodes: Option<Vec<&'a Node>>,
    failed: Vec<(&'a str, Reason)>,
    unresolvable: Vec<(&'a str, Reason)>,
    plan_reason: String,
    error: String,
    assumption: Option<Assumption>,
}

impl FilterAnswer<'_> {
    /// Where the pod was sent when it could race another (module documentation); the extender records it.
    pub fn assumption(&self) -> Option<&Assumption> {
        self.assumption.as_ref()
    }

    fn error(error: String) -> Self {
        FilterAnswer { error, ..FilterAnswer::default() }
    }

    /// Non-empty when the request could not be decided.
    pub fn error_text(&self) -> &str {
        &self.error
    }

    fn text(&self, reason: Reason) -> &str {
        match reason {
            Reason::Plan => &self.plan_reason,
            Reason::Fixed(text) => text,
        }
    }

    /// The owned wire type, e.g. to inspect in tests.
    pub fn into_result(self) -> ExtenderFilterResult {
        let map = |entries: &[(&str, Reason)]| {
            entries.iter().map(|(n, r)| ((*n).to_owned(), self.text(*r).to_owned())).collect()
        };
        ExtenderFilterResult {
            nodes: self.nodes.as_ref().map(|items| NodeList { items: items.iter().map(|n| (*n).clone()).collect() }),
            node_names: self.names.as_ref().map(|names| names.iter().map(|n| (*n).to_owned()).collect()),
            failed_nodes: map(&self.failed),
            failed_and_unresolvable_nodes: map(&self.unresolvable),
            error: self.error.clone(),
        }
    }
}

impl Serialize for FilterAnswer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Items<'x>(&'x [&'x Node]);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut list = serializer.serialize_struct("NodeList", 1)?;
                list.serialize_field("items", self.0)?;
                list.end()
            }
        }
        struct Reasons<'x>(&'x FilterAnswer<'x>, &'x [(&'x str, Reason)]);
        impl Serialize for Reasons<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.1.iter().map(|(node, reason)| (*node, self.0.text(*reason))))
            }
        }
        // The Go field names, as ExtenderFilterResult writes them.
        let mut result = serializer.serialize_struct("ExtenderFilterResult", 5)?;
        result.serialize_field("Nodes", &self.nodes.as_deref().map(Items))?;
        result.serialize_field("NodeNames", &self.names)?;
        result.serialize_field("FailedNodes", &Reasons(self, &self.failed))?;
        result.serialize_field("FailedAndUnresolvableNodes", &Reasons(self, &self.unresolvable))?;
        result.serialize_field("Error", &self.error)?;
        result.end()
    }
}

/// A `filter` or `prioritize` request as decided: the pod and the candidate nodes, borrowed from an
/// [`ExtenderArgs`] or from a request body decoded without copying the names.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub pod: Option<&'a Pod>,
    pub candidates: Candidates<'a>,
}

/// Candidates come as names (`nodeCacheCapable`) or as full Nodes; answers use the same form.
#[derive(Debug, Clone, Default)]
pub enum Candidates<'a> {
    Names(Vec<&'a str>),
    Nodes(&'a [Node]),
    /// Neither: nothing to decide about.
    #[default]
    None,
}

impl<'a> Candidates<'a> {
    /// Each candidate's position and name; Nodes without a name are skipped (they cannot pass).
    fn names(&self) -> impl Iterator<Item = (usize, &'a str)> + '_ {
        let (names, items): (&[&'a str], &'a [Node]) = match self {
            Candidates::Names(names) => (names, &[]),
            Candidates::Nodes(items) => (&[], items),
            Candidates::None => (&[], &[]),
        };
        let items = items.iter().enumerate().filter_map(|(i, n)| Some((i, n.metadata.name.as_deref()?)));
        names.iter().copied().enumerate().chain(items)
    }
}

impl<'a> From<&'a ExtenderArgs> for Request<'a> {
    fn from(args: &'a ExtenderArgs) -> Self {
        let candidates = match (&args.node_names, &args.nodes) {
            (Some(names), _) => Candidates::Names(names.iter().map(String::as_str).collect()),
            (None, Some(list)) => Candidates::Nodes(&list.items),
            (None, None) => Candidates::None,
        };
        Request { pod: args.pod.as_deref(), candidates }
    }
}

/// The `filter` verb: passing candidates (a subset, in their order) and why each other one fails. Problems with
/// the request itself are answered in `Error`, which fails the pod's scheduling cycle with that message. Pure: the
/// extender serves [`filter_and_assume`], which also records the answer's assumption.
pub fn filter<'a>(state: &ExtenderState, request: &Request<'a>) -> FilterAnswer<'a> {
    let Some(pod) = request.pod else { return FilterAnswer::error(DecideError::NoPod.to_string()) };
    let plan = match plan(state, pod) {
        Ok(plan) => plan,
        Err(e) => return FilterAnswer::error(e.to_string()),
    };
    let candidates = &request.candidates;
    let mut answer = FilterAnswer::default();
    let mut passed: Vec<(usize, &'a str)> = Vec::new();
    for (i, name) in candidates.names() {
        match plan.fit(state, name) {
            Fit::Pass => passed.push((i, name)),
            Fit::Fail(reason) => answer.failed.push((name, reason)),
            Fit::Unresolvable(reason) => answer.unresolvable.push((name, reason)),
        }
    }
    answer.assumption = narrow(state, pod, &plan, &mut passed, &mut answer.failed);
    match candidates {
        Candidates::Names(names) => answer.names = Some(passed.iter().map(|&(i, _)| names[i]).collect()),
        Candidates::Nodes(items) => answer.nodes = Some(passed.iter().map(|&(i, _)| &items[i]).collect()),
        Candidates::None => answer.names = Some(Vec::new()),
    }
    answer.plan_reason = plan.into_reason();
    answer
}

/// Where the pod could race another for GPUs only the extender protects, keeps one passing node (best fit, or the
/// first open slot), fails the others as [`NARROWED`] and says what to assume.
fn narrow<'a>(
    state: &ExtenderState,
    pod: &Pod,
    plan: &Plan<'_>,
    passed: &mut Vec<(usize, &'a str)>,
    failed: &mut Vec<(&'a str, Reason)>,
) -> Option<Assumption> {
    let (namespace, name) = (pod.metadata.namespace.as_ref()?, pod.metadata.name.as_ref()?);
    let (keep, gpus, job) = match plan {
        Plan::Room { gpus } => {
            if !passed.iter().any(|(_, n)| state.room(n).is_some_and(|r| r.exposed)) {
                return None;
            }
            // The first of the best: max_by_key would keep the last.
            let scores = passed.iter().map(|(_, n)| best_fit_score(state, n, *gpus));
            let best = scores.enumerate().fold(None, |best: Option<(usize, i64)>, (k, score)| match best {
                Some((_, b)) if b >= score => best,
                _ => Some((k, score)),
            });
            (best?.0, *gpus, None)
        }
        Plan::OpenSlots { job, .. } if !passed.is_empty() => (0, 0, Some(job.clone())),
        _ => return None,
    };
    let chosen = passed[keep];
    failed.extend(passed.iter().filter(|p| p.0 != chosen.0).map(|&(_, n)| (n, Reason::Fixed(NARROWED))));
    passed.clear();
    passed.push(chosen);
    Some(Assumption { namespace: namespace.clone(), name: name.clone(), node: Arc::from(chosen.1), gpus, job })
}

/// [`filter`] as the extender serves it: what was assumed for this pod before no longer counts (it is being placed
/// again), and the new answer's assumption is recorded.
pub fn filter_and_assume<'a>(state: &mut ExtenderState, request: &Request<'a>) -> FilterAnswer<'a> {
    if let Some(pod) = request.pod
        && let (Some(namespace), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref())
    {
        state.forget(namespace, name);
    }
    let answer = filter(state, request);
    if let Some(assumption) = answer.assumption() {
        state.assume(assumption.clone());
    }
    answer
}

/// The answer to `prioritize`, hosts borrowed from the request; serialises as a `HostPriorityList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scores<'a>(pub Vec<(&'a str, i64)>);

impl Scores<'_> {
    pub fn into_list(self) -> HostPriorityList {
        self.0.into_iter().map(|(host, score)| HostPriority { host: host.to_owned(), score }).collect()
    }
}

impl Serialize for Scores<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Host<'x>(&'x str, i64);
        impl Serialize for Host<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut host = serializer.serialize_struct("HostPriority", 2)?;
                host.serialize_field("Host", self.0)?;
                host.serialize_field("Score", &self.1)?;
                host.end()
            }
        }
        serializer.collect_seq(self.0.iter().map(|(host, score)| Host(host, *score)))
    }
}

/// The `prioritize` verb: one score per candidate, in candidate order.
pub fn prioritize<'a>(state: &ExtenderState, request: &Request<'a>) -> Result<Scores<'a>, DecideError> {
    let pod = request.pod.ok_or(DecideError::NoPod)?;
    let plan = plan(state, pod)?;
    let score = |host: &'a str| (host, plan.score(state, host));
    Ok(Scores(match &request.candidates {
        Candidates::Names(names) => names.iter().copied().map(score).collect(),
        Candidates::Nodes(items) => items.iter().filter_map(|n| n.metadata.name.as_deref()).map(score).collect(),
        Candidates::None => Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extender::slots::tests::jobset_pod;
    use crate::extender::state::tests::{NOW, bound, cluster, gang_with_spec, node, with_gpus};
    use muster_api::gang::GangPhase;
    use serde_json::json;

    fn args(pod: &Pod, names: &[&str]) -> ExtenderArgs {
        ExtenderArgs {
            pod: Some(Box::new(pod.clone())),
            nodes: None,
            node_names: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        }
    }

    fn plain_pod(name: &str, gpus: u32) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]}}))
        .expect("pod")
    }

    const NODES: [&str; 4] = ["gpu-0", "gpu-1", "gpu-2", "gpu-3"];

    fn four_nodes() -> ExtenderState {
        cluster(&[("gpu-0", 8), ("gpu-1", 8), ("gpu-2", 8), ("gpu-3", 8)])
    }

    fn filter_result(s: &ExtenderState, args: &ExtenderArgs) -> ExtenderFilterResult {
        let answer = filter(s, &args.into());
        // What goes on the wire is the owned result's JSON.
        let wire = serde_json::to_value(&answer).expect("serialise");
        let result = answer.into_result();
        assert_eq!(wire, serde_json::to_value(&result).expect("serialise"));
        result
    }

    fn prioritize(s: &ExtenderState, args: &ExtenderArgs) -> Result<HostPriorityList, DecideError> {
        let scores = super::prioritize(s, &args.into())?;
        let wire = serde_json::to_value(&scores).expect("serialise");
        let list = scores.into_list();
        assert_eq!(wire, serde_json::to_value(&list).expect("serialise"), "the wire form is HostPriorityList's");
        Ok(list)
    }

    fn passed(r: &ExtenderFilterResult) -> Vec<&str> {
        r.node_names.iter().flatten().map(String::as_str).collect()
    }

    #[test]
    fn gang_pods_pass_only_on_their_reserved_node() {
        let mut s = four_nodes();
        let slots = [("workers", 0, 0, "gpu-3"), ("workers", 1, 0, "gpu-1")];
        s.apply_gang(&gang_with_spec("train", GangPhase::Admitted, 8, &slots));
        let pod = jobset_pod("ml", "train", "workers", "0", Some("0"));
        let r = filter_result(&s, &args(&pod, &NODES));
        assert_eq!(passed(&r), ["gpu-3"]);
        assert!(r.failed_nodes.is_empty() && r.error.is_empty());
        assert_eq!(r.failed_and_unresolvable_nodes.len(), 3);
        assert_eq!(r.failed_and_unresolvable_nodes["gpu-0"], "gang ml/train reserved node gpu-3 for slot workers-0/0");
        let scores = prioritize(&s, &args(&pod, &NODES)).expect("scores");
        assert_eq!(scores.iter().map(|h| h.score).collect::<Vec<_>>(), [0, 0, 0, 10]);
        // Running keeps steering (a restarted pod comes back to its node); the reserved node missing from the
        // candidates (the scheduler's own filters dropped it) leaves nothing.
        s.apply_gang(&gang_with_spec("train", GangPhase::Running, 8, &slots));
        let pod = jobset_pod("ml", "train", "workers", "1", Some("0"));
        assert_eq!(passed(&filter_result(&s, &args(&pod, &NODES))), ["gpu-1"]);
        assert!(passed(&filter_result(&s, &args(&pod, &["gpu-0", "gpu-2"]))).is_empty());
        // A slot the placement lacks passes nowhere.
        let pod = jobset_pod("ml", "train", "workers", "7", Some("0"));
        let r = filter_result(&s, &args(&pod, &NODES));
        assert!(passed(&r).is_empty());
        assert_eq!(
            r.failed_and_unresolvable_nodes["gpu-3"],
            "gang ml/train (Running) has no slot workers-7/0 in its placement"
        );
        // Labels that name no slot, for a gang: nowhere, and the reason says why.
        let pod = jobset_pod("ml", "train", "workers", "x", Some("0"));
        let r = filter_result(&s, &args(&pod, &NODES));
        assert!(passed(&r).is_empty());
        assert!(r.failed_and_unresolvable_nodes["gpu-0"].contains("is not an index"), "{r:?}");
    }

    #[test]
    fn pods_of_gangs_not_admitted_pass_nowhere() {
        let mut s = four_nodes();
        for phase in [GangPhase::Pending, GangPhase::Requeued, GangPhase::Inadmissible] {
            s.apply_gang(&gang_with_spec("train", phase, 8, &[("workers", 0, 0, "gpu-3")]));
            let pod = jobset_pod("ml", "train", "workers", "0", Some("0"));
            let r = filter_result(&s, &args(&pod, &NODES));
            assert!(passed(&r).is_empty());
            let reason = &r.failed_and_unresolvable_nodes["gpu-3"];
            assert!(
                reason.starts_with("gang ml/train is ")
                    && reason.ends_with("not admitted: its pods wait for admission")
            );
            assert!(prioritize(&s, &args(&pod, &NODES)).expect("scores").iter().all(|h| h.score == 0));
        }
    }

    #[test]
    fn nonindexed_pods_take_any_slot_of_their_job_not_yet_bound() {
        let mut s = four_nodes();
        let slots = [("workers", 0, 0, "gpu-0"), ("workers", 0, 1, "gpu-0"), ("workers", 0, 2, "gpu-2")];
        s.apply_gang(&gang_with_spec("train", GangPhase::Admitted, 2, &slots));
        let pod = jobset_pod("ml", "train", "workers", "0", None);
        // Both nodes have open slots; the pod is offered the first, so that the next pod of the Job can be sent to
        // another slot before this one is seen bound (see the test below).
        let r = filter_result(&s, &args(&pod, &NODES));
        assert_eq!(passed(&r), ["gpu-0"]);
        assert_eq!(r.failed_nodes["gpu-2"], NARROWED);
        let mut p = bound(pod.clone(), "gpu-0");
        for i in 0..2 {
            p.metadata.name = Some(format!("bound-{i}"));
            s.apply_pod(&p);
        }
        let r = filter_result(&s, &args(&pod, &NODES));
        assert_eq!(passed(&r), ["gpu-2"]);
        assert_eq!(
            r.failed_and_unresolvable_nodes["gpu-0"],
            "gang ml/train has no free slot of Job workers-0 here (its nodes: gpu-0, gpu-2)"
        );
        let scores = prioritize(&s, &args(&pod, &NODES)).expect("scores");
        assert_eq!(scores.iter().map(|h| h.score).collect::<Vec<_>>(), [0, 0, 10, 0]);
        p.metadata.name = Some("bound-2".into());
        s.apply_pod(&bound(p, "gpu-2"));
        assert!(passed(&filter_result(&s, &args(&pod, &NODES))).is_empty());
    }

    #[test]
    fn other_gpu_pods_keep_off_reserved_gpus() {
        let mut s = four_nodes();
        // gpu-0: all 8 reserved (no pod yet); gpu-1: 6 reserved, 2 of them in use; gpu-2: a plain 6-GPU pod;
        // gpu-3: free. And a node the extender does not know.
        s.apply_gang(&gang_with_spec("a", GangPhase::Admitted, 8, &[("workers", 0, 0, "gpu-0")]));
        s.apply_gang(&gang_with_spec(
            "b",
            GangPhase::Admitted,
            2,
            &[("workers", 0, 0, "gpu-1"), ("workers", 0, 1, "gpu-1"), ("workers", 0, 2, "gpu-1")],
        ));
        s.apply_pod(&bound(with_gpus(jobset_pod("ml", "b", "workers", "0", Some("0")), "b0", 2), "gpu-1"));
        let mut other = plain_pod("other", 6);
        other.metadata.namespace = Some("default".into());
        s.apply_pod(&bound(other, "gpu-2"));
        let candidates = ["gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-9"];

        let r = filter_result(&s, &args(&plain_pod("p", 8), &candidates));
        assert_eq!(passed(&r), ["gpu-3"]);
        assert_eq!(r.failed_and_unresolvable_nodes["gpu-0"], RESERVED);
        assert_eq!(r.failed_and_unresolvable_nodes["gpu-1"], RESERVED);
        assert_eq!(r.failed_nodes["gpu-2"], PREEMPTIBLE, "the plain pod could be preempted");
        assert_eq!(r.failed_and_unresolvable_nodes["gpu-9"], UNKNOWN_NODE);

        // gpu-1 has GPUs reserved for a gang whose pods are not all bound, which the scheduler's own count does not
        // see: the pod gets one node, the first best fit.
        let r = filter_result(&s, &args(&plain_pod("p", 2), &candidates));
        assert_eq!(passed(&r), ["gpu-1"]);
        assert_eq!((r.failed_nodes["gpu-2"].as_str(), r.failed_nodes["gpu-3"].as_str()), (NARROWED, NARROWED));
        // Best fit: gpu-1 and gpu-2 have exactly 2 free, gpu-3 would be left with 6 of 8.
        let scores = prioritize(&s, &args(&plain_pod("p", 2), &candidates)).expect("scores");
        assert_eq!(scores.iter().map(|h| h.score).collect::<Vec<_>>(), [0, 10, 10, 3, 0]);

        // Pods without GPUs, whatever their JobSet, go anywhere.
        let mut cpu = plain_pod("cpu", 0);
        if let Some(spec) = cpu.spec.as_mut() {
            spec.containers[0].resources = None;
        }
        assert_eq!(passed(&filter_result(&s, &args(&cpu, &candidates))).len(), 5);
        // A JobSet without a Gang and a Finished gang: their GPU pods are ordinary.
        let unmanaged = jobset_pod("ml", "no-gang", "workers", "0", Some("0"));
        assert_eq!(passed(&filter_result(&s, &args(&unmanaged, &candidates))), ["gpu-3"]);
        s.apply_gang(&gang_with_spec("done", GangPhase::Finished, 8, &[("workers", 0, 0, "gpu-0")]));
        let finished = jobset_pod("ml", "done", "workers", "0", Some("0"));
        assert_eq!(passed(&filter_result(&s, &args(&finished, &candidates))), ["gpu-3"]);
    }

    #[test]
    fn nodes_held_for_a_queue_head_take_no_other_gpu_pod() {
        let mut s = four_nodes();
        let mut head = gang_with_spec("head", GangPhase::Pending, 8, &[]);
        if let Some(status) = head.status.as_mut() {
            status.held_nodes = vec!["gpu-2".into(), "gpu-3".into()];
        }
        s.apply_gang(&head);
        let r = filter_result(&s, &args(&plain_pod("p", 8), &NODES));
        assert_eq!(passed(&r), ["gpu-0", "gpu-1"]);
        assert_eq!(
            (r.failed_and_unresolvable_nodes["gpu-2"].as_str(), r.failed_and_unresolvable_nodes["gpu-3"].as_str()),
            (HELD, HELD)
        );
        let scores = prioritize(&s, &args(&plain_pod("p", 8), &NODES)).expect("scores");
        assert_eq!(scores.iter().map(|h| h.score).collect::<Vec<_>>(), [10, 10, 0, 0]);
        // Admitted: the hold is gone (the placement now reserves what it needs), and so is the refusal.
        let admitted = gang_with_spec("head", GangPhase::Admitted, 8, &[("workers", 0, 0, "gpu-2")]);
        s.apply_gang(&admitted);
        assert_eq!(s.held_for("gpu-3"), None);
        assert_eq!(passed(&filter_result(&s, &args(&plain_pod("p", 8), &NODES))), ["gpu-0", "gpu-1", "gpu-3"]);
        // A deleted gang holds nothing either.
        s.apply_gang(&head);
        s.delete_gang("ml", "head");
        assert_eq!((s.held_for("gpu-2"), s.held_for("gpu-3")), (None, None));
    }

    /// `filter` as the extender serves it: the answer's assumption recorded.
    fn filter_assumed(s: &mut ExtenderState, args: &ExtenderArgs) -> ExtenderFilterResult {
        filter_and_assume(s, &args.into()).into_result()
    }

    #[test]
    fn plain_gpu_pods_racing_for_gpus_only_the_extender_protects_get_them_one_at_a_time() {
        // gpu-1: 4 of 8 reserved for a gang whose pod is not bound yet (the scheduler sees 8 free there); the other
        // nodes are reserved whole.
        let mut s = four_nodes();
        let full = [("workers", 0, 0, "gpu-0"), ("workers", 1, 0, "gpu-2"), ("workers", 2, 0, "gpu-3")];
        s.apply_gang(&gang_with_spec("whole", GangPhase::Admitted, 8, &full));
        s.apply_gang(&gang_with_spec("half", GangPhase::Admitted, 4, &[("workers", 0, 0, "gpu-1")]));
        assert!(s.room("gpu-1").is_some_and(|r| r.exposed && r.free() == 4));

        let r = filter_assumed(&mut s, &args(&plain_pod("p1", 4), &NODES));
        assert_eq!(passed(&r), ["gpu-1"]);
        // The scheduler asks about p2 before its watch has shown p1 bound: gpu-1's 4 free GPUs are taken.
        let r = filter_assumed(&mut s, &args(&plain_pod("p2", 4), &NODES));
        assert!(passed(&r).is_empty(), "{r:?}");
        assert_eq!(r.failed_nodes["gpu-1"], PREEMPTIBLE);
        // p1 filtered again (its scheduling cycle failed after our answer): its own assumption does not count.
        assert_eq!(passed(&filter_assumed(&mut s, &args(&plain_pod("p1", 4), &NODES))), ["gpu-1"]);
        // The watch shows p1 bound: the bound pod takes over from the assumption, nothing counts twice.
        s.apply_pod(&bound(plain_pod("p1", 4), "gpu-1"));
        assert_eq!(s.room("gpu-1").map(|r| (r.free(), r.preemptible)), Some((0, 4)));
        s.delete_pod("default", "p1");
        assert_eq!(s.room("gpu-1").map(|r| r.free()), Some(4), "p1 gone, and no longer assumed");

        // An assumption the watch never confirms (p3 deleted before binding) ends after ASSUMPTION_TTL.
        assert_eq!(passed(&filter_assumed(&mut s, &args(&plain_pod("p3", 4), &NODES))), ["gpu-1"]);
        s.set_time(NOW + crate::extender::state::ASSUMPTION_TTL / 2);
        assert!(passed(&filter_assumed(&mut s, &args(&plain_pod("p4", 4), &NODES))).is_empty());
        s.set_time(NOW + crate::extender::state::ASSUMPTION_TTL + std::time::Duration::from_secs(1));
        assert_eq!(passed(&filter_assumed(&mut s, &args(&plain_pod("p4", 4), &NODES))), ["gpu-1"]);

        // Where no passing node is exposed, the scheduler's own count protects the GPUs: every node that fits
        // passes, and nothing is assumed.
        let mut s = four_nodes();
        let request = args(&plain_pod("p", 4), &NODES);
        let answer = filter_and_assume(&mut s, &(&request).into());
        assert!(answer.assumption().is_none());
        assert_eq!(passed(&answer.into_result()), NODES);
    }

    #[test]
    fn nonindexed_pods_filtered_back_to_back_take_different_slots() {
        let mut s = four_nodes();
        let slots = [("workers", 0, 0, "gpu-0"), ("workers", 0, 1, "gpu-0"), ("workers", 0, 2, "gpu-2")];
        s.apply_gang(&gang_with_spec("train", GangPhase::Admitted, 2, &slots));
        let pod = |name: &str| with_gpus(jobset_pod("ml", "train", "workers", "0", None), name, 2);
        let sent: Vec<Vec<String>> = ["a", "b", "c", "d"]
            .iter()
            .map(|p| filter_assumed(&mut s, &args(&pod(p), &NODES)).node_names.unwrap_or_default())
            .collect();
        assert_eq!(sent, [vec!["gpu-0"], vec!["gpu-0"], vec!["gpu-2"], vec![]]);
        // a and b bound where they were sent: the slots stay taken, once.
        s.apply_pod(&bound(pod("a"), "gpu-0"));
        s.apply_pod(&bound(pod("b"), "gpu-0"));
        assert!(passed(&filter_assumed(&mut s, &args(&pod("d"), &NODES))).is_empty());
        // c never binds (deleted before, which the bound-pod watch does not show): its slot is free again once its
        // assumption expires.
        s.set_time(NOW + crate::extender::state::ASSUMPTION_TTL + std::time::Duration::from_secs(1));
        assert_eq!(passed(&filter_assumed(&mut s, &args(&pod("d"), &NODES))), ["gpu-2"]);
    }

    #[test]
    fn room_outside_reservations_is_the_admission_models_free_room_on_trusted_nodes() {
        let mut s = four_nodes();
        let slots = [("workers", 0, 0, "gpu-0"), ("workers", 0, 1, "gpu-1")];
        s.apply_gang(&gang_with_spec("a", GangPhase::Admitted, 4, &slots));
        // On gpu-0 the gang's pod (3 of its 4 reserved GPUs) and one beyond its reservation (2 more); on gpu-1 a pod
        // of a JobSet that is no gang; on gpu-2 a plain pod.
        let gang_pod = |name: &str, gpus| with_gpus(jobset_pod("ml", "a", "workers", "0", Some("0")), name, gpus);
        s.apply_pod(&bound(gang_pod("a0", 3), "gpu-0"));
        s.apply_pod(&bound(gang_pod("a-extra", 2), "gpu-0"));
        s.apply_pod(&bound(with_gpus(jobset_pod("ml", "none", "w", "0", Some("0")), "n", 1), "gpu-1"));
        s.apply_pod(&bound(plain_pod("p", 1), "gpu-2"));
        let free: Vec<u32> = NODES.iter().filter_map(|n| s.room(n)).map(|r| r.free()).collect();
        assert_eq!(free, [3, 3, 7, 8]);
        for n in NODES {
            let id = s.model().id(n).expect("known");
            assert_eq!(s.room(n).map(|r| r.free()), Some(s.model().free(id).gpus), "{n}");
        }
        let r = filter_result(&s, &args(&plain_pod("q", 4), &NODES));
        assert_eq!(passed(&r), ["gpu-2", "gpu-3"]);
        assert_eq!(r.failed_nodes["gpu-0"], PREEMPTIBLE, "3 free + 1 beyond the reservation");
        assert_eq!(r.failed_nodes["gpu-1"], PREEMPTIBLE, "3 free + the unmanaged JobSet's pod");
        let r = filter_result(&s, &args(&plain_pod("q", 6), &NODES));
        assert_eq!(r.failed_and_unresolvable_nodes["gpu-0"], RESERVED);
        // Untrusted GPUs (no heartbeat): the device plugin's count stands in, reservations still count.
        let mut stale = crate::extender::state::tests::gpunode("gpu-0", 8, 0);
        if let Some(st) = stale.status.as_mut() {
            st.heartbeat_time = None;
        }
        s.apply_gpunode(&stale);
        assert_eq!(s.model().free(s.model().id("gpu-0").expect("known")).gpus, 0, "admission does not trust it");
        assert_eq!(s.room("gpu-0").map(|r| r.free()), Some(3));
        // Trusted with 2 unhealthy GPUs: only the healthy ones are usable.
        s.apply_gpunode(&crate::extender::state::tests::gpunode("gpu-3", 6, 2));
        assert_eq!(s.room("gpu-3").map(|r| r.free()), Some(6));
        let r = filter_result(&s, &args(&plain_pod("q", 8), &["gpu-3"]));
        assert_eq!(r.failed_and_unresolvable_nodes["gpu-3"], NO_HEALTHY);
        s.apply_node(&node("gpu-5", 8));
        assert_eq!(s.room("gpu-5").map(|r| r.free()), Some(8), "no GPUNode: the device plugin's count");
    }

    #[test]
    fn request_problems_are_errors_and_forms_are_kept() {
        let s = four_nodes();
        let r = filter_result(&s, &ExtenderArgs { pod: None, nodes: None, node_names: Some(vec!["gpu-0".into()]) });
        assert_eq!(r.error, "the request carries no Pod");
        assert_eq!(prioritize(&s, &ExtenderArgs::default()), Err(DecideError::NoPod));
        let bad: Pod = serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "x"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "lots"}}}]}}))
        .expect("pod");
        let r = filter_result(&s, &args(&bad, &NODES));
        assert!(r.error.starts_with("pod x/b: request nvidia.com/gpu: "), "{}", r.error);
        // Full Nodes in, full Nodes out.
        let full = ExtenderArgs {
            pod: Some(Box::new(plain_pod("p", 8))),
            nodes: Some(NodeList { items: vec![node("gpu-0", 8), node("gpu-7", 8)] }),
            node_names: None,
        };
        let r = filter_result(&s, &full);
        assert_eq!(r.node_names, None);
        let names: Vec<_> = r.nodes.iter().flat_map(|l| &l.items).filter_map(|n| n.metadata.name.as_deref()).collect();
        assert_eq!(names, ["gpu-0"]);
        assert_eq!(prioritize(&s, &full).expect("scores").len(), 2);
        // No candidates at all.
        let none = ExtenderArgs { pod: Some(Box::new(plain_pod("p", 1))), ..Default::default() };
        assert_eq!(filter_result(&s, &none).node_names, Some(Vec::new()));
    }
}
