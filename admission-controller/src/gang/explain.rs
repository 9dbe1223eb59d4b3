//! Why a gang does not fit, in words a person understands and as counts per cause for tools.
//!
//! Per pod set: how many pods it needs, how many fit now, and for every node that cannot take even one of its
//! pods, the first reason in this order: not Ready, cordoned, nodeSelector, affinity, untolerated taint, held for a
//! head gang, GPU agent missing/stale/without NVML, then the GPU arithmetic (too few GPUs at all, unhealthy GPUs
//! with their XID, busy GPUs, reservations by named gangs, running pods, fragmentation), then CPU, memory, pods.
//! Causes are counted, the largest few are named with a few example nodes, so the text stays short at any scale.
//!
//! Pod sets placed exclusively per topology domain are also counted against the domains of their key: how many
//! hold one of their Jobs, how many are used by other JobSets (now), how many are too small; a gang with more such
//! Jobs than domains says so ("needs 4 domains of rack for its exclusive Jobs; the cluster has 3").

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::GangKey;
use super::demand::{Constraints, Exclusive, GangDemand, PodSetDemand};
use super::model::{ClusterModel, Distrust, Ineligible, Slot, node_admits};
use super::nodeset::{NodeId, NodeSet};
use super::placement::{EmptyOrder, Restrict, place_on_empty_ordered};

/// How many causes a message names; the rest are summarised as a count.
pub const MAX_CAUSES: usize = 4;
/// How many example nodes a cause names.
pub const MAX_EXAMPLES: usize = 3;

/// What the shortfall is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// Free room now.
    Now,
    /// An empty cluster of the current healthy, trusted nodes: "could this ever fit?".
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    NotReady,
    Cordoned,
    NodeSelector {
        selector: String,
    },
    Affinity,
    Taint {
        taint: String,
    },
    HeldForHead {
        gang: GangKey,
    },
    /// In a domain (`key=value`) that an exclusive Job of another gang took.
    ExclusiveDomain {
        gang: GangKey,
        domain: String,
    },
    NoGpuAgent,
    GpuAgentStale,
    NvmlUnavailable,
    /// The node has fewer GPUs in all than one pod needs.
    TooFewGpus,
    UnhealthyGpus {
        xid: Option<u64>,
    },
    /// Healthy GPUs running processes of no pod.
    BusyGpus,
    ReservedFor {
        gang: GangKey,
    },
    UsedByPods,
    /// Some GPUs free, but fewer than one pod needs.
    Fragmented,
    Cpu,
    Memory,
    Pods,
}

impl Cause {
    /// Stable, for metrics (`reason` label) and CLIs.
    pub fn category(&self) -> &'static str {
        match self {
            Cause::NotReady => "node_not_ready",
            Cause::Cordoned => "node_cordoned",
            Cause::NodeSelector { .. } => "node_selector",
            Cause::Affinity => "node_affinity",
            Cause::Taint { .. } => "taint",
            Cause::HeldForHead { .. } => "held_for_head",
            Cause::ExclusiveDomain { .. } => "exclusive_domain",
            Cause::NoGpuAgent => "no_gpu_agent",
            Cause::GpuAgentStale => "gpu_agent_stale",
            Cause::NvmlUnavailable => "nvml_unavailable",
            Cause::TooFewGpus => "too_few_gpus",
            Cause::UnhealthyGpus { .. } => "unhealthy_gpus",
            Cause::BusyGpus => "busy_gpus",
            Cause::ReservedFor { .. } => "reserved",
            Cause::UsedByPods => "used_by_pods",
            Cause::Fragmented => "fragmented",
            Cause::Cpu => "cpu",
            Cause::Memory => "memory",
            Cause::Pods => "pods",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CauseCount {
    pub cause: Cause,
    /// Nodes this cause applies to.
    pub nodes: u32,
    /// GPUs it accounts for (unhealthy, reserved, used, free-but-too-few; 0 where it is not about GPUs).
    pub gpus: u64,
    /// Up to [`MAX_EXAMPLES`] node names, with a per-node note where useful (`gpu-node-7: 1 GPU unhealthy`).
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSetShortfall {
    pub pod_set: String,
    pub pods_needed: u32,
    pub gpus_per_pod: u32,
    /// Pods of this set that fit on their own (ignoring the other pod sets).
    pub pods_fit: u32,
    /// Nodes that take at least one pod.
    pub nodes_fit: u32,
    /// Most causes first.
    pub causes: Vec<CauseCount>,
}

/// The exclusive Jobs of a gang on one topology key, against that key's domains (also the plugin's JSON/YAML).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainShortfall {
    pub topology_key: String,
    /// The gang's Jobs placed exclusively on this key: each needs a domain of its own.
    pub jobs_needed: u32,
    /// Domains that hold one of those Jobs (on [`Basis::Now`]: free ones only).
    pub domains_fit: u32,
    /// Domains where pods or reservations of other JobSets are ([`Basis::Now`] only).
    pub domains_used: u32,
    /// A few of those, as `<value>: <namespace>/<jobset>`.
    pub used_examples: Vec<String>,
    /// Domains whose eligible nodes have too little room for one of the Jobs.
    pub domains_too_small: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub basis: Basis,
    /// Only the pod sets that do not fit on their own; empty when each fits alone but not all together.
    pub pod_sets: Vec<PodSetShortfall>,
    /// Topology keys with fewer usable domains than the gang has exclusive Jobs on them.
    pub domains: Vec<DomainShortfall>,
    /// GPUs missing: pods that do not fit × their GPUs (for the head-gang shortfall gauge).
    pub gpu_shortfall: u64,
    pub message: String,
}

/// Why `gang` can never fit, or `None` when it might: what makes a gang Inadmissible. That verdict sticks until
/// capacity changes, so it needs a proof, and the greedy search failing on the empty cluster is not one (it can
/// miss a packing that exists). The proof is a pod set or a topology key short on its own, or more GPUs asked than
/// the cluster has; otherwise "each pod set fits on its own but not all together" proves nothing, and such a gang
/// waits like any gang that does not fit now.
pub fn never_fits(model: &ClusterModel, gang: &GangDemand, order: &EmptyOrder) -> Option<Explanation> {
    place_on_empty_ordered(model, order, gang, Restrict::default()).err()?;
    let mut why = explain(model, gang, Basis::Empty, &[]);
    if !why.pod_sets.is_empty() || !why.domains.is_empty() {
        return Some(why);
    }
    let gpus: u64 = model.nodes().iter().map(|id| u64::from(model.capacity(id).gpus)).sum();
    (gang.total_gpus() > gpus).then(|| {
        let _ = write!(why.message, "; the cluster has {gpus} healthy GPUs");
        why.gpu_shortfall = gang.total_gpus() - gpus;
        why
    })
}

/// Nodes a gang may not use now, with who closed them to it.
struct Closed<'a> {
    /// Held for head gangs.
    holds: &'a [(&'a GangKey, &'a NodeSet)],
    /// In domains other gangs' exclusive Jobs took (see [`ClusterModel::claimed_by_others`]).
    claimed: Vec<(&'a GangKey, String, NodeSet)>,
}

impl Closed<'_> {
    fn contains(&self, id: NodeId) -> bool {
        self.holds.iter().any(|(_, set)| set.contains(id)) || self.claimed.iter().any(|(_, _, set)| set.contains(id))
    }
}

/// Explains why `gang` does not fit. `holds` are the nodes held for head gangs, which it may not use; on
/// [`Basis::Now`] neither may it use the domains other gangs' exclusive Jobs took.
pub fn explain(model: &ClusterModel, gang: &GangDemand, basis: Basis, holds: &[(&GangKey, &NodeSet)]) -> Explanation {
    let claimed = if basis == Basis::Now { model.claimed_by_others(&gang.key) } else { Vec::new() };
    let closed = Closed { holds, claimed };
    let mut pod_sets = Vec::new();
    let mut gpu_shortfall = 0u64;
    let mut every_single_fits = true;
    for ps in &gang.pod_sets {
        let s = pod_set_shortfall(model, &gang.key, ps, basis, &closed);
        if s.pods_fit < s.pods_needed {
            every_single_fits = false;
            gpu_shortfall += u64::from(s.pods_needed - s.pods_fit) * u64::from(s.gpus_per_pod);
            pod_sets.push((ps, s));
        }
    }
    let domains = domain_shortfalls(model, gang, basis, &closed);
    for d in &domains {
        let per_job = gang
            .pod_sets
            .iter()
            .filter(|p| p.exclusive_domain_key().is_some_and(|k| **k == *d.topology_key))
            .map(|p| u64::from(p.per_pod.gpus) * u64::from(p.pods_per_job))
            .min()
            .unwrap_or(0);
        gpu_shortfall += u64::from(d.jobs_needed - d.domains_fit) * per_job;
    }
    let mut message = String::new();
    if basis == Basis::Empty {
        message.push_str("does not fit even the empty cluster: ");
    }
    for (i, d) in domains.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        render_domains(&mut message, basis, d);
    }
    if !domains.is_empty() && !pod_sets.is_empty() {
        message.push_str("; ");
    }
    if every_single_fits && domains.is_empty() {
        let needed = gang.total_gpus();
        let _ = write!(
            message,
            "each pod set fits on its own but not all together ({needed} GPUs needed in all; Jobs are kept on as \
             few nodes as possible)"
        );
    }
    for (i, (ps, s)) in pod_sets.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        render(&mut message, model, ps, s);
    }
    Explanation { basis, pod_sets: pod_sets.into_iter().map(|(_, s)| s).collect(), domains, gpu_shortfall, message }
}

/// Per topology key of the gang's exclusive pod sets: the domains against the Jobs that need one each, when too few.
/// A domain counts as holding a Job when its eligible nodes (not held for another gang) have room for all pods of
/// one Job of any pod set on that key, as placement would put them there.
fn domain_shortfalls(
    model: &ClusterModel,
    gang: &GangDemand,
    basis: Basis,
    closed: &Closed<'_>,
) -> Vec<DomainShortfall> {
    let mut keys: BTreeMap<&str, Vec<&PodSetDemand>> = BTreeMap::new();
    for ps in &gang.pod_sets {
        if let Some(key) = ps.exclusive_domain_key() {
            keys.entry(&**key).or_default().push(ps);
        }
    }
    let mut out = Vec::new();
    for (key, sets) in keys {
        let jobs_needed = sets.iter().map(|p| p.jobs).fold(0, u32::saturating_add);
        let eligible: Vec<_> = sets.iter().map(|p| model.eligible(&p.constraints)).collect();
        let mut d = DomainShortfall {
            topology_key: key.to_owned(),
            jobs_needed,
            domains_fit: 0,
            domains_used: 0,
            used_examples: Vec::new(),
            domains_too_small: 0,
        };
        let mut values: Vec<(&String, &NodeSet)> =
            model.label_values(key).into_iter().flatten().filter(|(_, m)| !m.is_empty()).collect();
        values.sort_unstable_by_key(|v| v.0);
        for (value, members) in values {
            if basis == Basis::Now {
                let user = members
                    .iter()
                    .find_map(|id| model.slot(id)?.gangs.keys().find(|g| **g != gang.key).map(|g| g.to_string()));
                if let Some(user) = user {
                    d.domains_used += 1;
                    if d.used_examples.len() < MAX_EXAMPLES {
                        d.used_examples.push(format!("{value}: {user}"));
                    }
                    continue;
                }
            }
            let holds_a_job = sets.iter().zip(&eligible).any(|(ps, eligible)| {
                let pods: u64 = members
                    .iter()
                    .filter(|&id| eligible.contains(id) && !closed.contains(id))
                    .map(|id| {
                        let room = match basis {
                            Basis::Now => model.free(id),
                            Basis::Empty => model.capacity(id),
                        };
                        u64::from(room.how_many(&ps.per_pod).min(ps.pods_per_job))
                    })
                    .sum();
                pods >= u64::from(ps.pods_per_job)
            });
            if holds_a_job {
                d.domains_fit += 1;
            } else {
                d.domains_too_small += 1;
            }
        }
        if d.domains_fit < d.jobs_needed {
            out.push(d);
        }
    }
    out
}

fn render_domains(out: &mut String, basis: Basis, d: &DomainShortfall) {
    let n = |k: u32, what: &str| format!("{k} {what}{}", plural(u64::from(k)));
    let key = &d.topology_key;
    let small = d.domains_too_small;
    let _ = match basis {
        Basis::Empty if small == 0 => write!(
            out,
            "needs {} of {key} for its exclusive Jobs; the cluster has {}",
            n(d.jobs_needed, "domain"),
            d.domains_fit
        ),
        Basis::Empty => write!(
            out,
            "needs {} of {key} for its exclusive Jobs; the cluster has {} that can hold one ({small} more too small)",
            n(d.jobs_needed, "domain"),
            d.domains_fit
        ),
        Basis::Now => {
            let _ = write!(
                out,
                "needs {} of {key} for its exclusive Jobs; {} free with room for one",
                n(d.jobs_needed, "free domain"),
                d.domains_fit
            );
            if d.domains_used > 0 {
                let _ = write!(
                    out,
                    "; {} used by other jobs (e.g. {})",
                    n(d.domains_used, "domain"),
                    d.used_examples.join(", ")
                );
            }
            if small > 0 {
                let _ = write!(out, "; {} without room for one now", n(small, "domain"));
            }
            Ok(())
        }
    };
}

fn pod_set_shortfall(
    model: &ClusterModel,
    gang: &GangKey,
    ps: &PodSetDemand,
    basis: Basis,
    closed: &Closed<'_>,
) -> PodSetShortfall {
    if ps.exclusive != Some(Exclusive::NodeSelector) {
        return shortfall(model, ps, &ps.constraints, ps.pods(), basis, closed);
    }
    // The node-selector strategy gives each Job nodes of its own: the first Job that does not fit them speaks for
    // the pod set.
    for job in 0..ps.jobs {
        let s = shortfall(model, ps, &ps.job_constraints(gang, job), ps.pods_per_job, basis, closed);
        if s.pods_fit < s.pods_needed {
            return PodSetShortfall { pods_needed: ps.pods(), pods_fit: ps.pods() - (s.pods_needed - s.pods_fit), ..s };
        }
    }
    PodSetShortfall {
        pod_set: ps.name.clone(),
        pods_needed: ps.pods(),
        gpus_per_pod: ps.per_pod.gpus,
        pods_fit: ps.pods(),
        nodes_fit: 0,
        causes: Vec::new(),
    }
}

/// `needed` pods of `ps` under `constraints`.
fn shortfall(
    model: &ClusterModel,
    ps: &PodSetDemand,
    constraints: &Constraints,
    needed: u32,
    basis: Basis,
    closed: &Closed<'_>,
) -> PodSetShortfall {
    let g = ps.per_pod.gpus;
    let mut pods_fit = 0u32;
    let mut nodes_fit = 0u32;
    let (mut partial_nodes, mut partial_gpus, mut partial_examples) = (0u32, 0u64, Vec::new());
    let mut causes: BTreeMap<Cause, CauseCount> = BTreeMap::new();
    let mut add = |cause: Cause, gpus: u64, example: String| {
        let c = causes.entry(cause.clone()).or_insert(CauseCount { cause, nodes: 0, gpus: 0, examples: Vec::new() });
        c.nodes += 1;
        c.gpus += gpus;
        if c.examples.len() < MAX_EXAMPLES {
            c.examples.push(example);
        }
    };
    for id in model.nodes().iter() {
        let Some(slot) = model.slot(id) else { continue };
        let name = &*slot.name;
        if let Err(why) = node_admits(slot, constraints) {
            let cause = match why {
                Ineligible::NoNode => continue,
                Ineligible::NotReady => Cause::NotReady,
                Ineligible::Cordoned => Cause::Cordoned,
                Ineligible::NodeSelector => Cause::NodeSelector { selector: constraints.selector_text() },
                Ineligible::Affinity => Cause::Affinity,
                Ineligible::Taint(t) => Cause::Taint { taint: t.to_string() },
            };
            add(cause, u64::from(slot.capacity.gpus), name.to_owned());
            continue;
        }
        if let Some((holder, _)) = closed.holds.iter().find(|(_, set)| set.contains(id)) {
            add(Cause::HeldForHead { gang: (*holder).clone() }, u64::from(slot.capacity.gpus), name.to_owned());
            continue;
        }
        if let Some((owner, domain, _)) = closed.claimed.iter().find(|(_, _, set)| set.contains(id)) {
            let cause = Cause::ExclusiveDomain { gang: (*owner).clone(), domain: domain.clone() };
            add(cause, u64::from(slot.capacity.gpus), name.to_owned());
            continue;
        }
        let room = match basis {
            Basis::Now => slot.free,
            Basis::Empty => slot.capacity,
        };
        let k = room.how_many(&ps.per_pod);
        if k > 0 {
            pods_fit = pods_fit.saturating_add(k.min(needed));
            nodes_fit += 1;
            continue;
        }
        if g > room.gpus {
            if room.gpus > 0 {
                partial_nodes += 1;
                partial_gpus += u64::from(room.gpus);
                if partial_examples.len() < MAX_EXAMPLES {
                    partial_examples.push(format!("{name}: {} free", room.gpus));
                }
            }
            gpu_causes(slot, g, basis, &mut add);
        } else if ps.per_pod.cpu_milli > room.cpu_milli {
            add(Cause::Cpu, 0, name.to_owned());
        } else if ps.per_pod.memory_bytes > room.memory_bytes {
            add(Cause::Memory, 0, name.to_owned());
        } else {
            add(Cause::Pods, 0, name.to_owned());
        }
    }
    let pods_fit = pods_fit.min(needed);
    // Fragmentation is worth naming only when the free GPUs that are too few per node would cover the gap.
    let missing = u64::from(needed - pods_fit) * u64::from(g);
    if missing > 0 && partial_gpus >= missing {
        let cause = Cause::Fragmented;
        causes.insert(
            cause.clone(),
            CauseCount { cause, nodes: partial_nodes, gpus: partial_gpus, examples: partial_examples },
        );
    }
    let mut causes: Vec<CauseCount> = causes.into_values().collect();
    causes.sort_by(|a, b| (b.gpus, b.nodes).cmp(&(a.gpus, a.nodes)).then_with(|| a.cause.cmp(&b.cause)));
    PodSetShortfall { pod_set: ps.name.clone(), pods_needed: needed, gpus_per_pod: g, pods_fit, nodes_fit, causes }
}

/// Why a node that passes the constraints has fewer than `g` GPUs of room.
fn gpu_causes(slot: &Slot, g: u32, basis: Basis, add: &mut impl FnMut(Cause, u64, String)) {
    let name = &*slot.name;
    match &slot.distrust {
        Some(Distrust::NoReport) => return add(Cause::NoGpuAgent, u64::from(slot.reported_healthy()), name.to_owned()),
        Some(Distrust::Stale { age }) => {
            let note = match age {
                Some(age) => format!("{name}: last heartbeat {}s ago", age.as_secs()),
                None => format!("{name}: no heartbeat"),
            };
            return add(Cause::GpuAgentStale, u64::from(slot.reported_healthy()), note);
        }
        Some(Distrust::NvmlUnavailable(err)) => {
            let note = err.as_ref().map_or_else(|| name.to_owned(), |e| format!("{name}: {e}"));
            return add(Cause::NvmlUnavailable, u64::from(slot.reported_healthy()), note);
        }
        None => {}
    }
    let Some(report) = &slot.gpu else { return add(Cause::NoGpuAgent, 0, name.to_owned()) };
    if report.total < g {
        return add(Cause::TooFewGpus, u64::from(report.total), format!("{name}: {} GPUs", report.total));
    }
    let mut by_xid: BTreeMap<Option<u64>, u64> = BTreeMap::new();
    for u in &report.unhealthy {
        *by_xid.entry(u.xid).or_default() += 1;
    }
    for (xid, n) in by_xid {
        let what = match xid {
            Some(x) => format!(" (XID {x})"),
            None => {
                report.unhealthy.iter().find_map(|u| u.reason.as_ref()).map_or_else(String::new, |r| format!(" ({r})"))
            }
        };
        add(Cause::UnhealthyGpus { xid }, n, format!("{name}: {n} GPU{} unhealthy{what}", plural(n)));
    }
    if report.busy > 0 {
        let n = u64::from(report.busy);
        add(Cause::BusyGpus, n, format!("{name}: {n} GPU{} busy outside any pod", plural(n)));
    }
    if basis == Basis::Empty {
        return;
    }
    for (gang, used) in &slot.gangs {
        let n = u64::from(used.reserved.gpus.max(used.bound.gpus));
        if n > 0 {
            let verb = if used.reserved.gpus > 0 { "reserved for" } else { "used by" };
            add(Cause::ReservedFor { gang: gang.clone() }, n, format!("{name}: {n} GPU{} {verb} {gang}", plural(n)));
        }
    }
    if slot.foreign.gpus > 0 {
        let n = u64::from(slot.foreign.gpus);
        add(Cause::UsedByPods, n, format!("{name}: {n} GPU{} held by running pods", plural(n)));
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `do`/`does`, `have`/`has`, `are`/`is` for a count of nodes.
fn verb(n: u32, many: &'static str) -> &'static str {
    match (n, many) {
        (1, "do") => "does",
        (1, "have") => "has",
        (1, "are") => "is",
        _ => many,
    }
}

fn render(out: &mut String, model: &ClusterModel, ps: &PodSetDemand, s: &PodSetShortfall) {
    let g = s.gpus_per_pod;
    // When no node could ever take two of its pods, "nodes" is what a person counts.
    let one_per_node = g > 0 && model.nodes().iter().all(|id| model.capacity(id).how_many(&ps.per_pod) <= 1);
    let pods = |n: u32| format!("{n} pod{}", plural(u64::from(n)));
    let _ = match (g, one_per_node) {
        (0, _) => write!(out, "needs {} for pod set {}; room for {}", pods(s.pods_needed), s.pod_set, s.pods_fit),
        (_, true) => write!(
            out,
            "needs {} node{} with {g} free healthy GPUs for pod set {}; {} fit",
            s.pods_needed,
            plural(u64::from(s.pods_needed)),
            s.pod_set,
            s.pods_fit
        ),
        (_, false) => write!(
            out,
            "needs {} with {g} free healthy GPU{} each for pod set {}; room for {}",
            pods(s.pods_needed),
            plural(u64::from(g)),
            s.pod_set,
            s.pods_fit
        ),
    };
    for c in s.causes.iter().take(MAX_CAUSES) {
        out.push_str("; ");
        out.push_str(&cause_text(c, g));
    }
    if s.causes.len() > MAX_CAUSES {
        let rest: u32 = s.causes[MAX_CAUSES..].iter().map(|c| c.nodes).sum();
        let _ = write!(
            out,
            "; {} more cause{} on {rest} node{}",
            s.causes.len() - MAX_CAUSES,
            plural((s.causes.len() - MAX_CAUSES) as u64),
            plural(u64::from(rest))
        );
    }
}

fn cause_text(c: &CauseCount, g: u32) -> String {
    let n = c.nodes;
    let nodes = format!("{n} node{}", plural(u64::from(n)));
    let eg = if c.examples.is_empty() { String::new() } else { format!(" (e.g. {})", c.examples.join(", ")) };
    // A cause on one node reads best as that node's note.
    let single = (n == 1).then(|| c.examples.first().cloned()).flatten();
    match &c.cause {
        Cause::NotReady => format!("{nodes} not Ready"),
        Cause::Cordoned => format!("{nodes} cordoned"),
        Cause::NodeSelector { selector } => format!("{nodes} {} not match nodeSelector {selector}", verb(n, "do")),
        Cause::Affinity => format!("{nodes} {} not match the required node affinity", verb(n, "do")),
        Cause::Taint { taint } => format!("{nodes} {} untolerated taint {taint}", verb(n, "have")),
        Cause::HeldForHead { gang } => format!("{nodes} held for {gang}, the head of the queue"),
        Cause::ExclusiveDomain { gang, domain } => format!("{nodes} in {domain}, taken exclusively by {gang}"),
        Cause::NoGpuAgent => format!("{nodes} without a GPU agent report{eg}"),
        Cause::GpuAgentStale => single.unwrap_or_else(|| format!("{nodes} with a stale GPU agent heartbeat{eg}")),
        Cause::NvmlUnavailable => single.unwrap_or_else(|| format!("{nodes} whose GPU agent cannot read NVML{eg}")),
        Cause::TooFewGpus => format!("{nodes} {} fewer than {g} GPUs", verb(n, "have")),
        Cause::UnhealthyGpus { xid } => single.unwrap_or_else(|| {
            let what = xid.map_or_else(String::new, |x| format!(" (XID {x})"));
            format!("{nodes} with {} unhealthy GPUs{what}{eg}", c.gpus)
        }),
        Cause::BusyGpus => single.unwrap_or_else(|| format!("{nodes}: {} GPUs busy outside any pod{eg}", c.gpus)),
        Cause::ReservedFor { gang } => {
            single.unwrap_or_else(|| format!("{nodes}: {} GPUs reserved for {gang}", c.gpus))
        }
        Cause::UsedByPods => single.unwrap_or_else(|| format!("{nodes}: {} GPUs held by running pods", c.gpus)),
        Cause::Fragmented => {
            format!("fragmented: {nodes} {} {} free GPUs in all but fewer than {g} each{eg}", verb(n, "have"), c.gpus)
        }
        Cause::Cpu => format!("{nodes} {} CPU", if n == 1 { "lacks" } else { "lack" }),
        Cause::Memory => format!("{nodes} {} memory", if n == 1 { "lacks" } else { "lack" }),
        Cause::Pods => format!("{nodes} {} at their pod limit", verb(n, "are")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gang::model::{GpuReport, NodeInfo, UnhealthyGpu};
    use crate::gang::testutil::*;
    use std::time::Duration;

    #[test]
    fn exclusive_jobs_count_domains_ever_and_now() {
        let mut m = model(&[]);
        for (n, rack) in [("a1", "r1"), ("a2", "r1"), ("b1", "r2"), ("c1", "r3"), ("d1", "r4")] {
            add_gpu_node(&mut m, n, 8, &[("rack", rack)]);
        }
        add_gpu_node(&mut m, "loose", 8, &[]);
        let mut g = gang("ml/x", &[("w", 4, 1, 8)]);
        g.pod_sets[0].exclusive = Some(crate::gang::demand::Exclusive::Domain("rack".into()));
        // Four racks hold one 8-GPU pod each: fits the empty cluster, so nothing to explain there.
        assert!(explain(&m, &g, Basis::Empty, &[]).domains.is_empty());
        g.pod_sets[0].jobs = 5;
        let e = explain(&m, &g, Basis::Empty, &[]);
        assert_eq!(
            e.message,
            "does not fit even the empty cluster: needs 5 domains of rack for its exclusive Jobs; the cluster has 4"
        );
        assert_eq!(e.gpu_shortfall, 8);
        g.pod_sets[0].jobs = 2;
        g.pod_sets[0].pods_per_job = 2;
        // Jobs of 2 × 8 GPUs: only r1 has two nodes.
        let e = explain(&m, &g, Basis::Empty, &[]);
        assert_eq!(
            e.message,
            "does not fit even the empty cluster: needs 2 domains of rack for its exclusive Jobs; the cluster has 1 \
             that can hold one (3 more too small)"
        );
        // Now: r2 is used by another gang, r3 is full.
        g.pod_sets[0].pods_per_job = 1;
        g.pod_sets[0].jobs = 3;
        m.reserve(&GangKey::new("ml", "a"), &per_node(&[("b1", 1)])).expect("reserve");
        m.apply_pod(pod("p", "c1", 8, None));
        let e = explain(&m, &g, Basis::Now, &[]);
        assert_eq!(
            e.message,
            "needs 3 free domains of rack for its exclusive Jobs; 2 free with room for one; 1 domain used by other \
             jobs (e.g. r2: ml/a); 1 domain without room for one now"
        );
        let d = &e.domains[0];
        assert_eq!((d.jobs_needed, d.domains_fit, d.domains_used, d.domains_too_small), (3, 2, 1, 1));
    }

    #[test]
    fn names_the_shortfall_and_its_causes() {
        let mut m = model(&[]);
        for i in 1..=4 {
            add_gpu_node(&mut m, &format!("gpu-node-{i}"), 8, &[("pool", "h100")]);
        }
        for i in 1..=12 {
            add_gpu_node(&mut m, &format!("other-{i:02}"), 8, &[("pool", "a100")]);
        }
        let mut bad = GpuReport::healthy("gpu-node-4", 8, T0);
        bad.unhealthy.push(UnhealthyGpu { index: 2, xid: Some(79), reason: Some("fell off the bus".into()) });
        m.apply_gpunode(bad);
        let a = GangKey::new("ml", "train-a");
        m.reserve(&a, &per_node(&[("gpu-node-2", 8)])).expect("reserve");
        let mut g = gang("ml/b", &[("workers", 4, 1, 8)]);
        g.pod_sets[0].constraints = selector(&[("pool", "h100")]);
        let e = explain(&m, &g, Basis::Now, &[]);
        assert_eq!(
            e.message,
            "needs 4 nodes with 8 free healthy GPUs for pod set workers; 2 fit; 12 nodes do not match nodeSelector \
             pool=h100; gpu-node-2: 8 GPUs reserved for ml/train-a; gpu-node-4: 1 GPU unhealthy (XID 79)"
        );
        assert_eq!(e.gpu_shortfall, 16);
        let causes: Vec<(&str, u32, u64)> =
            e.pod_sets[0].causes.iter().map(|c| (c.cause.category(), c.nodes, c.gpus)).collect();
        assert_eq!(causes, vec![("node_selector", 12, 96), ("reserved", 1, 8), ("unhealthy_gpus", 1, 1)]);
    }

    #[test]
    fn agent_problems_and_empty_basis() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "fresh", 8, &[]);
        add_gpu_node(&mut m, "small", 4, &[]);
        m.apply_node(NodeInfo::new("no-agent", 64_000, 1 << 40));
        add_gpu_node(&mut m, "stale", 8, &[]);
        m.set_time(T0 + Duration::from_secs(60));
        m.apply_gpunode(GpuReport::healthy("fresh", 8, T0 + Duration::from_secs(60)));
        m.apply_gpunode(GpuReport::healthy("small", 4, T0 + Duration::from_secs(60)));
        m.set_time(T0 + Duration::from_secs(120));
        let e = explain(&m, &gang("ml/x", &[("w", 3, 1, 8)]), Basis::Empty, &[]);
        assert!(
            e.message.starts_with("does not fit even the empty cluster: needs 3 nodes with 8 free healthy GPUs"),
            "{}",
            e.message
        );
        assert!(e.message.contains("1 fit"), "{}", e.message);
        assert!(e.message.contains("stale: last heartbeat 120s ago"), "{}", e.message);
        assert!(e.message.contains("1 node has fewer than 8 GPUs"), "{}", e.message);
        assert!(e.message.contains("1 node without a GPU agent report"), "{}", e.message);
        assert_eq!(e.gpu_shortfall, 16);
    }

    #[test]
    fn bounded_and_combined() {
        let mut m = model(&[]);
        for i in 0..50 {
            let n = format!("n{i:02}");
            add_gpu_node(&mut m, &n, 8, &[]);
            m.apply_pod(pod(&format!("p{i}"), &n, 1 + (i % 7), None));
            m.reserve(&GangKey::new("ml", &format!("g{i}")), &per_node(&[(&n, 0)])).expect("reserve");
        }
        let e = explain(&m, &gang("ml/x", &[("w", 60, 1, 8)]), Basis::Now, &[]);
        assert!(e.message.len() < 600, "{} chars: {}", e.message.len(), e.message);
        // Two pod sets that each fit alone.
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        let e = explain(&m, &gang("ml/y", &[("l", 1, 1, 8), ("w", 1, 1, 8)]), Basis::Now, &[]);
        assert!(e.pod_sets.is_empty());
        assert!(e.message.starts_with("each pod set fits on its own"), "{}", e.message);
        // Enough free GPUs in all, in pieces too small.
        let mut m = model(&[]);
        for n in ["a", "b", "c"] {
            add_gpu_node(&mut m, n, 8, &[]);
            m.apply_pod(pod(&format!("p{n}"), n, 4, None));
        }
        let e = explain(&m, &gang("ml/z", &[("w", 1, 1, 8)]), Basis::Now, &[]);
        assert!(
            e.message.contains("fragmented: 3 nodes have 12 free GPUs in all but fewer than 8 each"),
            "{}",
            e.message
        );
    }

    #[test]
    fn holds_and_constraints() {
        let mut m = model(&[]);
        add_gpu_node(&mut m, "a", 8, &[]);
        let mut n = NodeInfo::new("b", 64_000, 1 << 40);
        n.ready = false;
        m.apply_node(n);
        let held: NodeSet = [id(&m, "a")].into_iter().collect();
        let head = GangKey::new("ml", "big");
        let e = explain(&m, &gang("ml/x", &[("w", 1, 1, 1)]), Basis::Now, &[(&head, &held)]);
        assert_eq!(
            e.message,
            "needs 1 pod with 1 free healthy GPU each for pod set w; room for 0; 1 node held for ml/big, the head of \
             the queue; 1 node not Ready"
        );
    }
}
