//! What each command reports, as plain serialisable data computed by pure functions from the objects and the
//! model. [`super::render`] turns them into tables, JSON or YAML.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use muster_api::gang::{Gang, GangPhase, SlotPlacement};
use serde::Serialize;

use crate::gang::GangKey;
use crate::gang::demand::{GangDemand, PodSetDemand};
use crate::gang::explain::{Basis, Cause, DomainShortfall, Explanation, explain, never_fits};
use crate::gang::model::{ClusterModel, Distrust, Ineligible, Slot, node_admits};
use crate::gang::nodeset::NodeSet;
use crate::gang::placement::{EmptyBasis, EmptyOrder, Restrict, place};
use crate::gang::snapshot::{HeldNodes, SnapshotIssue};

fn seconds_since(now: SystemTime, t: &Time) -> u64 {
    now.duration_since(SystemTime::from(t.0)).map_or(0, |d| d.as_secs())
}

fn gang_key(gang: &Gang) -> String {
    let meta = &gang.metadata;
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

fn is_waiting(phase: GangPhase) -> bool {
    matches!(phase, GangPhase::Pending | GangPhase::Requeued | GangPhase::Inadmissible)
}

// === queue ===

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueReport {
    /// By queue; within a queue the waiting gangs by position, then the admitted ones, then the finished ones.
    pub gangs: Vec<QueueEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry {
    pub queue: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i32>,
    /// `<namespace>/<name>` of the Gang and its JobSet.
    pub gang: String,
    pub gpus: i64,
    pub priority: i32,
    /// Since `status.queuedAt`, while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_seconds: Option<u64>,
    pub phase: GangPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The gangs as admission last wrote them. Finished gangs only with `include_finished`.
pub fn queue_report(gangs: &[Gang], now: SystemTime, include_finished: bool, queue: Option<&str>) -> QueueReport {
    let mut entries: Vec<(u8, Option<Time>, QueueEntry)> = gangs
        .iter()
        .filter(|g| queue.is_none_or(|q| g.spec.queue == q))
        .filter_map(|g| {
            let status = g.status.clone().unwrap_or_default();
            if status.phase == GangPhase::Finished && !include_finished {
                return None;
            }
            let waiting = is_waiting(status.phase);
            let since = status.queued_at.clone().or_else(|| g.metadata.creation_timestamp.clone());
            let rank = match status.phase {
                GangPhase::Pending | GangPhase::Requeued | GangPhase::Inadmissible => 0,
                GangPhase::Admitted | GangPhase::Running => 1,
                GangPhase::Finished => 2,
            };
            let entry = QueueEntry {
                queue: g.spec.queue.clone(),
                position: status.queue_position.filter(|_| waiting),
                gang: gang_key(g),
                gpus: g.spec.total_gpus,
                priority: g.spec.priority,
                waiting_seconds: since.as_ref().filter(|_| waiting).map(|t| seconds_since(now, t)),
                phase: status.phase,
                reason: status.reason,
            };
            Some((rank, status.queued_at, entry))
        })
        .collect();
    entries.sort_by(|(ra, qa, a), (rb, qb, b)| {
        // Gangs without a position yet (just created) after the positioned ones, by arrival.
        let position = |e: &QueueEntry| e.position.map_or(i64::MAX, i64::from);
        let arrival = |q: &Option<Time>| q.as_ref().map(|t| t.0);
        (&a.queue, ra, position(a), arrival(qa), &a.gang).cmp(&(&b.queue, rb, position(b), arrival(qb), &b.gang))
    });
    QueueReport { gangs: entries.into_iter().map(|(_, _, e)| e).collect() }
}

// === nodes ===

/// Whether a node's GPU agent is trusted; only a trusted agent's GPUs are placed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum AgentState {
    Ok,
    /// No GPUNode for the node.
    Missing,
    /// The heartbeat is older than the timeout, or absent.
    Stale {
        heartbeat_age_seconds: Option<u64>,
    },
    NvmlUnavailable {
        error: Option<String>,
    },
}

impl AgentState {
    fn of(slot: &Slot) -> Self {
        match &slot.distrust {
            None => AgentState::Ok,
            Some(Distrust::NoReport) => AgentState::Missing,
            Some(Distrust::Stale { age }) => AgentState::Stale { heartbeat_age_seconds: age.map(|a| a.as_secs()) },
            Some(Distrust::NvmlUnavailable(error)) => AgentState::NvmlUnavailable { error: error.clone() },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GangGpus {
    pub gang: String,
    /// Reserved by admission for the gang.
    pub reserved: u32,
    /// Requested by the gang's bound pods (on its reserved node they use the reservation, not more).
    pub bound: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyGpu {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One node's GPUs as admission counts them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGpus {
    pub node: String,
    pub ready: bool,
    pub cordoned: bool,
    pub agent: AgentState,
    /// GPUs the agent reports.
    pub total: u32,
    /// Of those, healthy.
    pub healthy: u32,
    /// Healthy GPUs running processes of no pod.
    pub busy: u32,
    /// Requested by bound pods (of gangs or not).
    pub allocated: u32,
    /// Reserved by admission for admitted gangs.
    pub reserved: u32,
    /// What admission may still place: trusted healthy GPUs minus pods of no gang minus what gangs hold.
    pub free: u32,
    pub gangs: Vec<GangGpus>,
    /// The queue head this node is held for: admission places no other gang here until that one is admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_for: Option<String>,
    /// The gang whose exclusive Job took this node's topology domain, and the domain (`ml/a (rack=r1)`): admission
    /// places no other gang here while it holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_for: Option<String>,
    pub unhealthy: Vec<UnhealthyGpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_seconds: Option<u64>,
    /// Whether the agent reads NVML; absent without an agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml: Option<bool>,
}

impl NodeGpus {
    /// `None` for a name the model knows only from pods or a GPUNode, without its Node.
    pub fn of(slot: &Slot, now: SystemTime, held: &HeldNodes) -> Option<Self> {
        let node = slot.node.as_ref()?;
        let report = slot.gpu.as_ref();
        let gangs: Vec<GangGpus> = slot
            .gangs
            .iter()
            .map(|(k, u)| GangGpus { gang: k.to_string(), reserved: u.reserved.gpus, bound: u.bound.gpus })
            .filter(|g| g.reserved > 0 || g.bound > 0)
            .collect();
        Some(NodeGpus {
            node: node.name.clone(),
            ready: node.ready,
            cordoned: node.unschedulable,
            agent: AgentState::of(slot),
            total: report.map_or(0, |r| r.total),
            healthy: report.map_or(0, |r| r.healthy_count()),
            busy: report.map_or(0, |r| r.busy),
            allocated: slot.foreign.gpus.saturating_add(gangs.iter().map(|g| g.bound).sum()),
            reserved: gangs.iter().map(|g| g.reserved).sum(),
            free: slot.free.gpus,
            unhealthy: report
                .into_iter()
                .flat_map(|r| &r.unhealthy)
                .map(|u| UnhealthyGpu { index: u.index, xid: u.xid, reason: u.reason.clone() })
                .collect(),
            gangs,
            held_for: held.get(&node.name).map(ToString::to_string),
            exclusive_for: None,
            heartbeat_age_seconds: report
                .and_then(|r| r.heartbeat)
                .map(|hb| now.duration_since(hb).map_or(0, |d| d.as_secs())),
            nvml: report.map(|r| r.nvml_available),
        })
    }
}

/// Per node: the gang whose exclusive Job took its domain, and `<gang> (<key>=<value>)` to show.
fn exclusive_by_node(model: &ClusterModel) -> BTreeMap<&str, (&GangKey, String)> {
    let mut out = BTreeMap::new();
    for (gang, domain, members) in model.claimed_domains() {
        for id in members.iter() {
            out.entry(model.name(id)).or_insert_with(|| (gang, format!("{gang} ({domain})")));
        }
    }
    out
}

/// A node with a GPU agent or GPUs advertised by the device plugin.
fn has_gpus(slot: &Slot) -> bool {
    slot.gpu.is_some() || slot.node.as_ref().and_then(|n| n.device_plugin_gpus).is_some_and(|g| g > 0)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesReport {
    /// By name.
    pub nodes: Vec<NodeGpus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Every node with GPUs (a GPUNode, or `nvidia.com/gpu` allocatable), or every node with `all`.
pub fn nodes_report(
    model: &ClusterModel,
    held: &HeldNodes,
    now: SystemTime,
    all: bool,
    issues: &[SnapshotIssue],
) -> NodesReport {
    let exclusive = exclusive_by_node(model);
    let mut nodes: Vec<NodeGpus> = model
        .nodes()
        .iter()
        .filter_map(|id| model.slot(id))
        .filter(|slot| all || has_gpus(slot))
        .filter_map(|slot| {
            let mut gpus = NodeGpus::of(slot, now, held)?;
            gpus.exclusive_for = exclusive.get(&*slot.name).map(|(_, shown)| shown.clone());
            Some(gpus)
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    NodesReport { nodes, warnings: issues.iter().map(ToString::to_string).collect() }
}

// === fit: shared by explain and simulate ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Admitted or Running: it holds its placement.
    Admitted,
    /// The JobSet finished; nothing is held.
    Finished,
    /// Every pod fits on the free room now.
    FitsNow,
    /// Not now; it would fit an empty cluster.
    DoesNotFitNow,
    /// Not even on an empty cluster: admission marks it Inadmissible.
    NeverFits,
    /// Its demand cannot be read.
    Unreadable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CauseView {
    /// Stable category, as in the admission metrics' `reason` label.
    pub cause: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taint: Option<String>,
    /// `key=value` of a domain another gang's exclusive Job took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub nodes: u32,
    pub gpus: u64,
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShortfallView {
    pub pod_set: String,
    pub pods_needed: u32,
    pub gpus_per_pod: u32,
    pub pods_fit: u32,
    pub nodes_fit: u32,
    pub causes: Vec<CauseView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplanationView {
    /// `now` (free room) or `emptyCluster` (could it ever fit).
    pub basis: &'static str,
    pub message: String,
    pub gpu_shortfall: u64,
    pub pod_sets: Vec<ShortfallView>,
    /// Topology keys with fewer usable domains than the gang's exclusive Jobs on them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainShortfall>,
}

impl From<&Explanation> for ExplanationView {
    fn from(x: &Explanation) -> Self {
        let cause = |c: &crate::gang::explain::CauseCount| {
            let mut view = CauseView {
                cause: c.cause.category(),
                gang: None,
                xid: None,
                selector: None,
                taint: None,
                domain: None,
                nodes: c.nodes,
                gpus: c.gpus,
                examples: c.examples.clone(),
            };
            match &c.cause {
                Cause::HeldForHead { gang } | Cause::ReservedFor { gang } => view.gang = Some(gang.to_string()),
                Cause::ExclusiveDomain { gang, domain } => {
                    view.gang = Some(gang.to_string());
                    view.domain = Some(domain.clone());
                }
                Cause::UnhealthyGpus { xid } => view.xid = *xid,
                Cause::NodeSelector { selector } => view.selector = Some(selector.clone()),
                Cause::Taint { taint } => view.taint = Some(taint.clone()),
                _ => {}
            }
            view
        };
        ExplanationView {
            basis: match x.basis {
                Basis::Now => "now",
                Basis::Empty => "emptyCluster",
            },
            message: x.message.clone(),
            gpu_shortfall: x.gpu_shortfall,
            pod_sets: x
                .pod_sets
                .iter()
                .map(|s| ShortfallView {
                    pod_set: s.pod_set.clone(),
                    pods_needed: s.pods_needed,
                    gpus_per_pod: s.gpus_per_pod,
                    pods_fit: s.pods_fit,
                    nodes_fit: s.nodes_fit,
                    causes: s.causes.iter().map(cause).collect(),
                })
                .collect(),
            domains: x.domains.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fit {
    pub verdict: Verdict,
    /// One line for people.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationView>,
    /// Where every pod goes (or went, for an admitted gang), by pod set, Job and pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<SlotPlacement>,
}

fn distinct_nodes(slots: &[SlotPlacement]) -> Vec<&str> {
    let mut nodes: Vec<&str> = slots.iter().map(|s| s.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The holds of other gangs, per gang, as the admission engine takes them: nodes a gang may not be placed on.
fn holds_against(model: &ClusterModel, held: &HeldNodes, me: &GangKey) -> Vec<(GangKey, NodeSet)> {
    let mut per_gang: Vec<(GangKey, NodeSet)> = Vec::new();
    for (node, gang) in held.iter().filter(|(_, g)| *g != me) {
        let Some(id) = model.id(node) else { continue };
        match per_gang.iter_mut().find(|(g, _)| g == gang) {
            Some((_, set)) => set.insert(id),
            None => per_gang.push((gang.clone(), std::iter::once(id).collect())),
        }
    }
    per_gang
}

/// The admission engine's answer for a gang that holds nothing: placed on the free room outside the nodes held for
/// other queue heads now (what a queue pass does), else why not, now or ever.
pub fn check_fit(model: &ClusterModel, demand: &GangDemand, held: &HeldNodes) -> Fit {
    let holds = holds_against(model, held, &demand.key);
    let mut excluded = NodeSet::new();
    for (_, nodes) in &holds {
        excluded.union_with(nodes);
    }
    let restrict = Restrict { excluded: (!excluded.is_empty()).then_some(&excluded), only: None };
    match place(model, demand, restrict) {
        Ok(placement) => {
            let nodes = distinct_nodes(&placement.slots);
            Fit {
                verdict: Verdict::FitsNow,
                message: format!(
                    "fits now: {} pods with {} GPUs on {} node{} ({})",
                    placement.slots.len(),
                    demand.total_gpus(),
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" },
                    nodes.join(", ")
                ),
                explanation: None,
                placement: placement.slots,
            }
        }
        Err(_) => {
            let (verdict, why) = match never_fits(model, demand, &EmptyOrder::new(model, EmptyBasis::Everything)) {
                Some(why) => (Verdict::NeverFits, why),
                None => {
                    let holds: Vec<(&GangKey, &NodeSet)> = holds.iter().map(|(g, n)| (g, n)).collect();
                    (Verdict::DoesNotFitNow, explain(model, demand, Basis::Now, &holds))
                }
            };
            Fit { verdict, message: why.message.clone(), explanation: Some((&why).into()), placement: Vec::new() }
        }
    }
}

/// One node for one pod set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFit {
    #[serde(flatten)]
    pub gpus: NodeGpus,
    /// Ready, and the pod set's nodeSelector, required affinity and tolerations admit it.
    pub matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
    /// Pods of the set that fit its free room now (0 if it does not match).
    pub pods_fit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSetNodes {
    pub pod_set: String,
    pub pods: u32,
    pub gpus_per_pod: u32,
    pub cpu_milli_per_pod: u64,
    pub memory_bytes_per_pod: u64,
    pub nodes_matching: u32,
    /// Pods of the set that fit the free room now, each set on its own.
    pub pods_fit: u32,
    /// By name.
    pub nodes: Vec<NodeFit>,
}

fn mismatch_text(why: &Ineligible, ps: &PodSetDemand) -> String {
    match why {
        Ineligible::NoNode => "no Node object".to_owned(),
        Ineligible::NotReady => "not Ready".to_owned(),
        Ineligible::Cordoned => "cordoned".to_owned(),
        Ineligible::NodeSelector => format!("nodeSelector {} does not match", ps.constraints.selector_text()),
        Ineligible::Affinity => "required node affinity does not match".to_owned(),
        Ineligible::Taint(t) => format!("untolerated taint {t}"),
    }
}

/// Every node for every pod set of `demand`, by name.
pub fn pod_set_nodes(model: &ClusterModel, held: &HeldNodes, demand: &GangDemand, now: SystemTime) -> Vec<PodSetNodes> {
    let mut slots: Vec<&Slot> = model.nodes().iter().filter_map(|id| model.slot(id)).collect();
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    let exclusive = exclusive_by_node(model);
    demand
        .pod_sets
        .iter()
        .map(|ps| {
            let needed = ps.pods();
            let nodes: Vec<NodeFit> = slots
                .iter()
                .filter_map(|slot| {
                    let mut gpus = NodeGpus::of(slot, now, held)?;
                    let taken = exclusive.get(&*slot.name).filter(|(gang, _)| **gang != demand.key);
                    gpus.exclusive_for = taken.map(|(_, shown)| shown.clone());
                    // As admission sees it: nothing fits a node held for another gang or in another's domain.
                    let closed = taken.is_some() || held.get(&*slot.name).is_some_and(|g| *g != demand.key);
                    let admits = node_admits(slot, &ps.constraints);
                    let pods_fit =
                        if admits.is_ok() && !closed { slot.free.how_many(&ps.per_pod).min(needed) } else { 0 };
                    Some(NodeFit {
                        gpus,
                        matches: admits.is_ok(),
                        mismatch: admits.err().map(|why| mismatch_text(&why, ps)),
                        pods_fit,
                    })
                })
                .collect();
            PodSetNodes {
                pod_set: ps.name.clone(),
                pods: needed,
                gpus_per_pod: ps.per_pod.gpus,
                cpu_milli_per_pod: ps.per_pod.cpu_milli,
                memory_bytes_per_pod: ps.per_pod.memory_bytes,
                nodes_matching: u32::try_from(nodes.iter().filter(|n| n.matches).count()).unwrap_or(u32::MAX),
                pods_fit: nodes.iter().map(|n| n.pods_fit).fold(0u32, u32::saturating_add).min(needed),
                nodes,
            }
        })
        .collect()
}

// === explain ===

/// The Gang as admission last wrote it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GangSummary {
    pub phase: GangPhase,
    pub queue: String,
    pub priority: i32,
    pub gpus: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_seconds: Option<u64>,
    /// `status.reason`, admission's own explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requeue_count: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainReport {
    pub jobset: String,
    /// Absent until the admission controller created the Gang.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangSummary>,
    /// Computed now on the live cluster.
    pub fit: Fit,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_sets: Vec<PodSetNodes>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn explain_report(
    model: &ClusterModel,
    held: &HeldNodes,
    key: &GangKey,
    gang: Option<&Gang>,
    demand: &Result<GangDemand, String>,
    now: SystemTime,
    issues: &[SnapshotIssue],
) -> ExplainReport {
    let status = gang.and_then(|g| g.status.clone()).unwrap_or_default();
    let summary = gang.map(|g| GangSummary {
        phase: status.phase,
        queue: g.spec.queue.clone(),
        priority: g.spec.priority,
        gpus: g.spec.total_gpus,
        position: status.queue_position.filter(|_| is_waiting(status.phase)),
        waiting_seconds: status.queued_at.as_ref().filter(|_| is_waiting(status.phase)).map(|t| seconds_since(now, t)),
        reason: status.reason.clone(),
        requeue_count: status.requeue_count,
    });
    let fit = match (status.phase, demand) {
        (GangPhase::Finished, _) => Fit {
            verdict: Verdict::Finished,
            message: "the JobSet finished; its gang holds no GPUs".to_owned(),
            explanation: None,
            placement: Vec::new(),
        },
        (GangPhase::Admitted | GangPhase::Running, _) => {
            let nodes = distinct_nodes(&status.placement);
            let placed = status.placement.len();
            // Fewer slots than pods: an ElasticJobSet scale-up whose added pods wait for room (the reason says why).
            let total = demand.as_ref().map_or(placed, |d| d.total_pods() as usize);
            let (pods, waiting) = match total.checked_sub(placed).filter(|&w| w > 0) {
                Some(1) => (format!("{placed} of {total} pods"), "; 1 added pod waits for room".to_owned()),
                Some(w) => (format!("{placed} of {total} pods"), format!("; {w} added pods wait for room")),
                None if placed == 1 => ("1 pod".to_owned(), String::new()),
                None => (format!("{placed} pods"), String::new()),
            };
            Fit {
                verdict: Verdict::Admitted,
                message: format!(
                    "admitted: {pods} placed on {} node{} ({}){waiting}",
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" },
                    nodes.join(", ")
                ),
                explanation: None,
                placement: status.placement.clone(),
            }
        }
        (_, Err(why)) => Fit {
            verdict: Verdict::Unreadable,
            message: format!("the gang's demand cannot be read: {why}"),
            explanation: None,
            placement: Vec::new(),
        },
        (_, Ok(demand)) => {
            let mut fit = check_fit(model, demand, held);
            if fit.verdict == Verdict::FitsNow {
                fit.message
                    .push_str("; admission places it on its next pass unless gangs ahead of it take the room first");
            }
            fit
        }
    };
    let mut warnings: Vec<String> = issues.iter().map(ToString::to_string).collect();
    if gang.is_none() {
        warnings.push(format!("no Gang {key} yet: is the admission controller running?"));
    }
    ExplainReport {
        jobset: key.to_string(),
        gang: summary,
        pod_sets: match (&fit.verdict, demand) {
            (Verdict::Finished, _) | (_, Err(_)) => Vec::new(),
            (_, Ok(demand)) => pod_set_nodes(model, held, demand, now),
        },
        fit,
        warnings,
    }
}

// === simulate ===

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulateReport {
    pub jobset: String,
    pub queue: String,
    pub priority: i32,
    pub gpus: u64,
    pub fit: Fit,
    /// Waiting gangs of the same queue that admission tries first (priority at least as high, earlier arrival).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queued_ahead: Vec<String>,
    pub pod_sets: Vec<PodSetNodes>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn simulate_report(
    model: &ClusterModel,
    held: &HeldNodes,
    demand: &GangDemand,
    gangs: &[Gang],
    issues: &[SnapshotIssue],
    now: SystemTime,
) -> SimulateReport {
    let mut ahead: Vec<(i32, String)> = gangs
        .iter()
        .filter(|g| g.spec.queue == demand.queue && g.spec.priority >= demand.priority)
        .filter_map(|g| {
            // Without a status it was just created: Pending, without a position yet.
            let s = g.status.clone().unwrap_or_default();
            // Just created, without a position yet: still ahead of a gang not even submitted.
            let position = s.queue_position.unwrap_or(i32::MAX);
            matches!(s.phase, GangPhase::Pending | GangPhase::Requeued).then(|| (position, gang_key(g)))
        })
        .collect();
    ahead.sort();
    SimulateReport {
        jobset: demand.key.to_string(),
        queue: demand.queue.clone(),
        priority: demand.priority,
        gpus: demand.total_gpus(),
        fit: check_fit(model, demand, held),
        queued_ahead: ahead.into_iter().map(|(_, g)| g).collect(),
        pod_sets: pod_set_nodes(model, held, demand, now),
        warnings: issues.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::model::{GpuReport, NodeInfo, UnhealthyGpu as ModelUnhealthy};
    use crate::gang::testutil::{T0, add_gpu_node, at, gang, model, per_node, pod, selector};
    use serde_json::json;

    fn gang_object(name: &str, queue: &str, phase: &str, position: Option<i32>, queued_at: &str) -> Gang {
        serde_json::from_value(json!({"apiVersion": "muster.dev/v1alpha1", "kind": "Gang",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"queue": queue, "totalGPUs": 16, "podSets": [{"name": "w", "jobs": 2, "podsPerJob": 1, "gpusPerPod": 8}]},
            "status": {"phase": phase, "queuePosition": position, "queuedAt": queued_at, "reason": format!("{name} says")}}))
        .expect("gang")
    }

    #[test]
    fn the_queue_lists_waiting_gangs_by_position_then_admitted_ones_and_hides_finished() {
        let gangs = [
            gang_object("running", "default", "Running", None, "1970-01-01T00:00:00Z"),
            gang_object("second", "default", "Pending", Some(2), "1970-01-01T00:00:20Z"),
            gang_object("first", "default", "Pending", Some(1), "1970-01-01T00:00:30Z"),
            gang_object("done", "default", "Finished", None, "1970-01-01T00:00:00Z"),
            gang_object("other", "research", "Inadmissible", Some(1), "1970-01-01T00:00:00Z"),
        ];
        let report = queue_report(&gangs, at(90), false, None);
        let order: Vec<(&str, &str, Option<i32>)> =
            report.gangs.iter().map(|e| (e.queue.as_str(), e.gang.as_str(), e.position)).collect();
        assert_eq!(
            order,
            [
                ("default", "ml/first", Some(1)),
                ("default", "ml/second", Some(2)),
                ("default", "ml/running", None),
                ("research", "ml/other", Some(1)),
            ]
        );
        assert_eq!(report.gangs[0].waiting_seconds, Some(60), "since status.queuedAt");
        assert_eq!(report.gangs[2].waiting_seconds, None, "an admitted gang waits no more");
        assert_eq!(report.gangs[0].reason.as_deref(), Some("first says"));
        let all = queue_report(&gangs, at(90), true, Some("default"));
        assert_eq!(all.gangs.iter().map(|e| e.gang.as_str()).collect::<Vec<_>>().last(), Some(&"ml/done"));
        assert!(all.gangs.iter().all(|e| e.queue == "default"));
    }

    /// gpu-0: reserved for ml/a with one of its pods bound; gpu-1: GPU 3 unhealthy with XID 79 and a pod of no
    /// gang on 2 GPUs; gpu-2: a stale agent; gpu-3 matches no `pool=h100` selector; cpu-0: no GPUs at all.
    fn cluster() -> ClusterModel {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "gpu-0", 8, &[("pool", "h100")]);
        m.apply_node(NodeInfo::new("gpu-1", 64_000, 512 << 30).label("pool", "h100"));
        let mut report = GpuReport::healthy("gpu-1", 8, T0);
        report.unhealthy.push(ModelUnhealthy { index: 3, xid: Some(79), reason: Some("XID 79".into()) });
        m.apply_gpunode(report);
        m.apply_node(NodeInfo::new("gpu-2", 64_000, 512 << 30).label("pool", "h100"));
        m.apply_gpunode(GpuReport::healthy("gpu-2", 8, T0 - std::time::Duration::from_secs(300)));
        add_gpu_node(&mut m, "gpu-3", 8, &[("pool", "a100")]);
        m.apply_node(NodeInfo::new("cpu-0", 64_000, 512 << 30));
        let a = GangKey::new("ml", "a");
        m.reserve(&a, &per_node(&[("gpu-0", 8)])).expect("reserve");
        m.apply_pod(pod("a-0", "gpu-0", 8, Some(&a)));
        m.apply_pod(pod("other", "gpu-1", 2, None));
        m
    }

    #[test]
    fn nodes_show_what_admission_counts() {
        let m = cluster();
        let report = nodes_report(&m, &HeldNodes::new(), T0, false, &[]);
        let names: Vec<&str> = report.nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["gpu-0", "gpu-1", "gpu-2", "gpu-3"], "nodes without GPUs only with --all");
        let n = |name: &str| report.nodes.iter().find(|n| n.node == name).expect("node");
        let (g0, g1, g2) = (n("gpu-0"), n("gpu-1"), n("gpu-2"));
        assert_eq!((g0.total, g0.healthy, g0.allocated, g0.reserved, g0.free), (8, 8, 8, 8, 0));
        assert_eq!(g0.gangs, [GangGpus { gang: "ml/a".into(), reserved: 8, bound: 8 }]);
        assert_eq!((g1.total, g1.healthy, g1.allocated, g1.reserved, g1.free), (8, 7, 2, 0, 5));
        assert_eq!(g1.unhealthy, [UnhealthyGpu { index: 3, xid: Some(79), reason: Some("XID 79".into()) }]);
        assert_eq!(g2.agent, AgentState::Stale { heartbeat_age_seconds: Some(300) });
        assert_eq!((g2.healthy, g2.free), (8, 0), "healthy but untrusted: nothing free");
        assert_eq!(g2.heartbeat_age_seconds, Some(300));
        assert_eq!(g0.agent, AgentState::Ok);
        assert_eq!(nodes_report(&m, &HeldNodes::new(), T0, true, &[]).nodes.len(), 5);
        let cpu = nodes_report(&m, &HeldNodes::new(), T0, true, &[])
            .nodes
            .into_iter()
            .find(|n| n.node == "cpu-0")
            .expect("cpu-0");
        assert_eq!((cpu.agent, cpu.nvml, cpu.total), (AgentState::Missing, None, 0));
    }

    #[test]
    fn fit_places_or_explains_with_the_admission_engine() {
        let m = cluster();
        let mut one = gang("ml/one", &[("w", 1, 1, 4)]);
        one.pod_sets[0].constraints = selector(&[("pool", "h100")]);
        let fit = check_fit(&m, &one, &HeldNodes::new());
        assert_eq!(fit.verdict, Verdict::FitsNow);
        assert_eq!(fit.placement.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(), ["gpu-1"]);
        assert_eq!(fit.placement, place(&m, &one, Restrict::default()).expect("places").slots, "the same engine");

        let mut big = gang("ml/big", &[("w", 1, 1, 8)]);
        big.pod_sets[0].constraints = selector(&[("pool", "h100")]);
        let fit = check_fit(&m, &big, &HeldNodes::new());
        assert_eq!(fit.verdict, Verdict::DoesNotFitNow);
        let why = fit.explanation.as_ref().expect("explained");
        assert_eq!(why.basis, "now");
        assert!(fit.message.contains("reserved for ml/a"), "{}", fit.message);
        let causes: Vec<&str> = why.pod_sets[0].causes.iter().map(|c| c.cause).collect();
        assert!(causes.contains(&"unhealthy_gpus") && causes.contains(&"reserved"), "{causes:?}");
        assert!(why.pod_sets[0].causes.iter().any(|c| c.xid == Some(79)));
        assert!(why.pod_sets[0].causes.iter().any(|c| c.gang.as_deref() == Some("ml/a")));

        let huge = gang("ml/huge", &[("w", 9, 1, 8)]);
        let fit = check_fit(&m, &huge, &HeldNodes::new());
        assert_eq!(fit.verdict, Verdict::NeverFits);
        assert_eq!(fit.explanation.map(|x| x.basis), Some("emptyCluster"));
    }

    #[test]
    fn nodes_held_for_another_queue_head_are_not_offered_but_the_head_may_use_them() {
        let m = cluster();
        let held: HeldNodes = [("gpu-1".to_owned(), GangKey::new("ml", "head"))].into_iter().collect();
        let mut one = gang("ml/one", &[("w", 1, 1, 4)]);
        one.pod_sets[0].constraints = selector(&[("pool", "h100")]);
        let fit = check_fit(&m, &one, &held);
        assert_eq!(fit.verdict, Verdict::DoesNotFitNow, "gpu-1 is the only h100 node with room, and it is held");
        assert!(fit.message.contains("held for ml/head"), "{}", fit.message);
        let why = fit.explanation.as_ref().expect("explained");
        assert!(
            why.pod_sets[0].causes.iter().any(|c| c.cause == "held_for_head" && c.gang.as_deref() == Some("ml/head"))
        );

        let mut head = one.clone();
        head.key = GangKey::new("ml", "head");
        assert_eq!(check_fit(&m, &head, &held).verdict, Verdict::FitsNow, "its own hold does not keep it out");
        let g1 = nodes_report(&m, &held, T0, false, &[]).nodes.into_iter().find(|n| n.node == "gpu-1").expect("gpu-1");
        assert_eq!(g1.held_for.as_deref(), Some("ml/head"));
    }

    #[test]
    fn a_domain_taken_exclusively_is_shown_and_offers_nothing_to_other_gangs() {
        use crate::gang::demand::Exclusive;
        use crate::gang::placement::reserve_slots;
        use muster_api::gang::SlotPlacement;
        let mut m = cluster();
        // ml/ex's exclusive Job took pool=a100 with one 1-GPU pod on gpu-3; 7 GPUs stay free there.
        let mut ex = gang("ml/ex", &[("w", 1, 1, 1)]);
        ex.pod_sets[0].exclusive = Some(Exclusive::Domain("pool".into()));
        let slot = SlotPlacement { pod_set: "w".into(), job_index: 0, pod_index: 0, node: "gpu-3".into() };
        reserve_slots(&mut m, &ex, &[slot]).expect("reserve");
        let g3 = nodes_report(&m, &HeldNodes::new(), T0, false, &[]).nodes.into_iter().find(|n| n.node == "gpu-3");
        assert_eq!(g3.and_then(|n| n.exclusive_for).as_deref(), Some("ml/ex (pool=a100)"));
        let mut one = gang("ml/one", &[("w", 1, 1, 4)]);
        one.pod_sets[0].constraints = selector(&[("pool", "a100")]);
        let nodes = &pod_set_nodes(&m, &HeldNodes::new(), &one, T0)[0];
        let row = nodes.nodes.iter().find(|n| n.gpus.node == "gpu-3").expect("gpu-3");
        assert!(row.matches && row.gpus.free == 7 && row.pods_fit == 0, "free, but closed to ml/one");
        let fit = check_fit(&m, &one, &HeldNodes::new());
        assert_eq!(fit.verdict, Verdict::DoesNotFitNow);
        assert!(fit.message.contains("taken exclusively by ml/ex"), "{}", fit.message);
        // The owner itself may use its domain.
        let own = &pod_set_nodes(&m, &HeldNodes::new(), &ex, T0)[0];
        assert!(own.nodes.iter().any(|n| n.gpus.node == "gpu-3" && n.pods_fit == 1 && n.gpus.exclusive_for.is_none()));
    }

    #[test]
    fn pod_set_nodes_say_per_node_why_not() {
        let m = cluster();
        let mut big = gang("ml/big", &[("w", 2, 1, 8)]);
        big.pod_sets[0].constraints = selector(&[("pool", "h100")]);
        let sets = pod_set_nodes(&m, &HeldNodes::new(), &big, T0);
        assert_eq!(sets.len(), 1);
        let ps = &sets[0];
        assert_eq!((ps.pods, ps.gpus_per_pod, ps.nodes_matching, ps.pods_fit), (2, 8, 3, 0));
        let row = |name: &str| ps.nodes.iter().find(|n| n.gpus.node == name).expect("row");
        assert_eq!(row("gpu-3").mismatch.as_deref(), Some("nodeSelector pool=h100 does not match"));
        assert_eq!(row("cpu-0").mismatch.as_deref(), Some("nodeSelector pool=h100 does not match"));
        assert!(row("gpu-1").matches && row("gpu-1").pods_fit == 0);
        let mut small = gang("ml/small", &[("w", 4, 1, 2)]);
        small.pod_sets[0].constraints = selector(&[("pool", "a100")]);
        let ps = &pod_set_nodes(&m, &HeldNodes::new(), &small, T0)[0];
        assert_eq!((ps.nodes_matching, ps.pods_fit), (1, 4), "gpu-3 takes all four");
    }

    #[test]
    fn explain_reports_an_admitted_gang_by_its_recorded_placement() {
        let m = cluster();
        let mut g = gang_object("a", "default", "Running", None, "1970-01-01T00:00:00Z");
        if let Some(s) = g.status.as_mut() {
            s.placement = vec![SlotPlacement { pod_set: "w".into(), job_index: 0, pod_index: 0, node: "gpu-0".into() }];
        }
        let demand = GangDemand::from_spec(GangKey::new("ml", "a"), &g.spec).map_err(|e| e.to_string());
        let report = explain_report(&m, &HeldNodes::new(), &GangKey::new("ml", "a"), Some(&g), &demand, T0, &[]);
        assert_eq!(report.fit.verdict, Verdict::Admitted);
        assert_eq!(report.fit.message, "admitted: 1 of 2 pods placed on 1 node (gpu-0); 1 added pod waits for room");
        if let Some(s) = g.status.as_mut() {
            s.placement.push(SlotPlacement { pod_set: "w".into(), job_index: 1, pod_index: 0, node: "gpu-1".into() });
        }
        let report = explain_report(&m, &HeldNodes::new(), &GangKey::new("ml", "a"), Some(&g), &demand, T0, &[]);
        assert_eq!(report.fit.message, "admitted: 2 pods placed on 2 nodes (gpu-0, gpu-1)");
        assert_eq!(report.gang.as_ref().map(|s| s.phase), Some(GangPhase::Running));
        assert!(report.warnings.is_empty());

        let unread: Result<GangDemand, String> = Err("pod set w: jobs is -1".into());
        let report = explain_report(&m, &HeldNodes::new(), &GangKey::new("ml", "x"), None, &unread, T0, &[]);
        assert_eq!(report.fit.verdict, Verdict::Unreadable);
        assert!(report.pod_sets.is_empty());
        assert!(report.warnings.iter().any(|w| w.contains("no Gang ml/x yet")), "{:?}", report.warnings);
    }

    #[test]
    fn simulate_names_the_gangs_that_go_first() {
        let m = cluster();
        let gangs = [
            gang_object("p2", "default", "Pending", Some(2), "1970-01-01T00:00:00Z"),
            gang_object("p1", "default", "Pending", Some(1), "1970-01-01T00:00:00Z"),
            gang_object("elsewhere", "research", "Pending", Some(1), "1970-01-01T00:00:00Z"),
            gang_object("running", "default", "Running", None, "1970-01-01T00:00:00Z"),
        ];
        let mut demand = gang("ml/new", &[("w", 1, 1, 1)]);
        let report = simulate_report(&m, &HeldNodes::new(), &demand, &gangs, &[], T0);
        assert_eq!(report.queued_ahead, ["ml/p1", "ml/p2"]);
        assert_eq!(report.fit.verdict, Verdict::FitsNow);
        demand.priority = 10;
        assert!(
            simulate_report(&m, &HeldNodes::new(), &demand, &gangs, &[], T0).queued_ahead.is_empty(),
            "a higher priority goes first"
        );
    }
}
