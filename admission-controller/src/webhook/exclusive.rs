//! Upstream JobSet's exclusive placement, affinity strategy: the JobSet (or a ReplicatedJob template) carries
//! `alpha.jobset.sigs.k8s.io/exclusive-topology: <node label key>`, and each child Job gets a topology domain of
//! its own. Upstream's pod webhooks `mpod.kb.io` and `vpod.kb.io` (reference §3.12) do it:
//!
//! - every JobSet pod gets the label `jobset.sigs.k8s.io/priority` from `spec.priority`, so that exclusivity holds
//!   only among pods of one priority (upstream #1057);
//! - the leader (completion index 0) gets a required pod affinity to its own Job's pods and a required pod
//!   anti-affinity to every other Job's pods of its priority, both over the topology key: the scheduler picks a
//!   domain no other Job uses;
//! - a follower is created only once its leader is scheduled (the validating webhook refuses it before: the Job
//!   controller retries with backoff), with `nodeSelector[<key>]` = the leader's node's label value. Followers carry
//!   no affinity, which is what makes this design fast (upstream #174).
//!
//! The node-selector strategy (`alpha.jobset.sigs.k8s.io/node-selector` too) is the reconciler's business
//! (reconciler/src/plan/children.rs); these webhooks leave its pods alone. The decisions here are pure; the two
//! reads they need (a Job's pods, a node's labels) come through [`PlacementReads`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use muster_api::keys;
use serde_json::{Value, json};

use super::json::with_object_at;

/// A future returned by a [`PlacementReads`] method.
pub type ReadFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// What the exclusive-placement webhooks read from the cluster.
pub trait PlacementReads: Send + Sync {
    /// The pods in `namespace` matching the label selector `selector`.
    fn pods<'a>(&'a self, namespace: &'a str, selector: &'a str) -> ReadFuture<'a, Vec<Pod>>;
    /// The labels of node `name`; `None` if there is no such node.
    fn node_labels<'a>(&'a self, name: &'a str) -> ReadFuture<'a, Option<BTreeMap<String, String>>>;
}

/// No cluster to read: every read fails, so followers of exclusive Jobs are refused (and retried by the Job
/// controller). For servers that only answer JobSet reviews, e.g. in tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReads;

impl PlacementReads for NoReads {
    fn pods<'a>(&'a self, _namespace: &'a str, _selector: &'a str) -> ReadFuture<'a, Vec<Pod>> {
        Box::pin(async { Err("this webhook server has no API client to read pods with".to_owned()) })
    }

    fn node_labels<'a>(&'a self, _name: &'a str) -> ReadFuture<'a, Option<BTreeMap<String, String>>> {
        Box::pin(async { Err("this webhook server has no API client to read nodes with".to_owned()) })
    }
}

/// Fixed pods and nodes, for tests.
#[derive(Clone, Debug, Default)]
pub struct StaticReads {
    pub pods: Vec<Pod>,
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
}

impl PlacementReads for StaticReads {
    fn pods<'a>(&'a self, namespace: &'a str, selector: &'a str) -> ReadFuture<'a, Vec<Pod>> {
        // Equality terms only (`k=v,k=v`): all the webhook asks for.
        let wanted: Vec<(&str, &str)> = selector.split(',').filter_map(|t| t.split_once('=')).collect();
        let found = self
            .pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| wanted.iter().all(|(k, v)| label(p, k) == Some(*v)))
            .cloned()
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn node_labels<'a>(&'a self, name: &'a str) -> ReadFuture<'a, Option<BTreeMap<String, String>>> {
        let found = self.nodes.get(name).cloned();
        Box::pin(async move { Ok(found) })
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// How the pod webhooks treat a pod, by the annotations the JobSet controller stamps on pod templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Not a JobSet pod (no `jobset-name` annotation), or one of the node-selector strategy: left alone.
    Untouched,
    /// A JobSet pod without exclusive placement: it only gets the priority label.
    JobSet,
    /// A JobSet pod placed exclusively per domain of `topology_key`.
    Exclusive { topology_key: &'a str, leader: bool },
}

pub fn scope(pod: &Pod) -> Scope<'_> {
    if annotation(pod, keys::JOBSET_NAME).is_none() || annotation(pod, keys::NODE_SELECTOR_STRATEGY).is_some() {
        return Scope::Untouched;
    }
    match annotation(pod, keys::EXCLUSIVE_TOPOLOGY) {
        None => Scope::JobSet,
        Some(topology_key) => Scope::Exclusive { topology_key, leader: is_leader(pod) },
    }
}

/// Upstream's leader test: the completion-index annotation is `0` (so every pod of a NonIndexed Job is a follower,
/// and such Jobs never start under exclusive placement, as upstream).
pub fn is_leader(pod: &Pod) -> bool {
    annotation(pod, keys::JOB_COMPLETION_INDEX) == Some(keys::LEADER_INDEX)
}

/// The `jobset.sigs.k8s.io/priority` label value: the pod's resolved priority (the API server's Priority admission
/// plugin runs before mutating webhooks), if it has one.
pub fn priority_label(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.priority.map(|p| p.to_string())
}

/// The leader's two required terms, exactly as upstream builds them: pod affinity to its own Job (`job-key In
/// [own]`) and anti-affinity to any other Job of the same priority (`job-key Exists`, `job-key NotIn [own]`,
/// `priority In [own]`), over `topology_key`, in all namespaces (`namespaceSelector: {}`). A missing label reads as
/// the empty string, as Go's map lookup does.
pub fn leader_terms(job_key: &str, priority: &str, topology_key: &str) -> (Value, Value) {
    let affinity = json!({
        "labelSelector": {"matchExpressions": [{"key": keys::JOB_KEY, "operator": "In", "values": [job_key]}]},
        "topologyKey": topology_key,
        "namespaceSelector": {},
    });
    let anti_affinity = json!({
        "labelSelector": {"matchExpressions": [
            {"key": keys::JOB_KEY, "operator": "Exists"},
            {"key": keys::JOB_KEY, "operator": "NotIn", "values": [job_key]},
            {"key": keys::PRIORITY, "operator": "In", "values": [priority]},
        ]},
        "topologyKey": topology_key,
        "namespaceSelector": {},
    });
    (affinity, anti_affinity)
}

/// Sets the priority label on the raw pod.
pub fn set_priority_label(raw: &mut Value, priority: &str) {
    with_object_at(raw, &["metadata", "labels"], |labels| {
        labels.insert(keys::PRIORITY.to_owned(), json!(priority));
    });
}

/// Appends the leader's terms to its required pod affinity and anti-affinity. Upstream appends unconditionally;
/// here a term already present is not added again, so that a reinvocation (the webhook is `IfNeeded`, for pod
/// pinning) leaves the pod as it was.
pub fn add_leader_terms(raw: &mut Value, topology_key: &str) {
    let job_key = raw.pointer("/metadata/labels").and_then(|l| l.get(keys::JOB_KEY)).and_then(Value::as_str);
    let priority = raw.pointer("/metadata/labels").and_then(|l| l.get(keys::PRIORITY)).and_then(Value::as_str);
    let (affinity, anti_affinity) = leader_terms(job_key.unwrap_or(""), priority.unwrap_or(""), topology_key);
    for (kind, term) in [("podAffinity", affinity), ("podAntiAffinity", anti_affinity)] {
        with_object_at(raw, &["spec", "affinity", kind], |section| {
            let required = section.entry("requiredDuringSchedulingIgnoredDuringExecution").or_insert(Value::Null);
            let mut terms = match std::mem::take(required) {
                Value::Array(terms) => terms,
                _ => Vec::new(),
            };
            if !terms.contains(&term) {
                terms.push(term);
            }
            *required = Value::Array(terms);
        });
    }
}

/// Sets `nodeSelector[topology_key] = domain` on the raw follower.
pub fn set_follower_selector(raw: &mut Value, topology_key: &str, domain: &str) {
    with_object_at(raw, &["spec", "nodeSelector"], |selector| {
        selector.insert(topology_key.to_owned(), json!(domain));
    });
}

/// The name of the follower's leader without the random suffix, `<jobset>-<rjob>-<jobIndex>-0`, from its labels.
pub fn leader_pod_name(follower: &Pod) -> Result<String, String> {
    let get = |key: &str| label(follower, key).ok_or_else(|| format!("pod missing label: {key}"));
    let (jobset, rjob, job) = (get(keys::JOBSET_NAME)?, get(keys::REPLICATED_JOB_NAME)?, get(keys::JOB_INDEX)?);
    Ok(format!("{jobset}-{rjob}-{job}-{}", keys::LEADER_INDEX))
}

/// The label selector for the pods of the follower's Job, where its leader is looked for.
pub fn job_pods_selector(follower: &Pod) -> Result<String, String> {
    let get = |key: &str| label(follower, key).ok_or_else(|| format!("pod missing label: {key}"));
    Ok(format!(
        "{}={},{}={},{}={}",
        keys::JOBSET_NAME,
        get(keys::JOBSET_NAME)?,
        keys::REPLICATED_JOB_NAME,
        get(keys::REPLICATED_JOB_NAME)?,
        keys::JOB_INDEX,
        get(keys::JOB_INDEX)?
    ))
}

/// A pod name without the random suffix the Job controller appends (`<jobset>-<rjob>-<jobIndex>-<podIndex>-xxxxx`
/// has at least five dash-separated parts); `None` for a name that cannot be a JobSet pod's.
pub fn name_without_suffix(name: &str) -> Option<&str> {
    let (stem, _suffix) = name.rsplit_once('-')?;
    (name.split('-').count() >= 5).then_some(stem)
}

fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true))
}

fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The follower's leader among `candidates`: the one live pod (not terminating, not finished: a finished or
/// terminating leader is about to be replaced, upstream #1021/#1276) that uses exclusive placement and whose name
/// is the leader's, owned by the follower's own Job (a leader of an earlier Job of that name would carry a stale
/// domain). Errors are upstream's messages.
pub fn find_leader<'a>(follower: &Pod, candidates: &'a [Pod]) -> Result<&'a Pod, String> {
    let name = leader_pod_name(follower)?;
    let found: Vec<&Pod> = candidates
        .iter()
        .filter(|p| annotation(p, keys::EXCLUSIVE_TOPOLOGY).is_some())
        .filter(|p| p.metadata.name.as_deref().and_then(name_without_suffix) == Some(name.as_str()))
        .filter(|p| is_live(p))
        .collect();
    let [leader] = found.as_slice() else {
        return Err(format!(
            "expected 1 leader pod ({name}), but got {}. this is an expected, transient error",
            found.len()
        ));
    };
    let follower_owner = controller_of(follower).ok_or("follower pod has no owner reference")?;
    let leader_owner = controller_of(leader).ok_or_else(|| {
        format!("leader pod \"{}\" has no owner reference", leader.metadata.name.as_deref().unwrap_or(""))
    })?;
    if follower_owner.uid != leader_owner.uid {
        return Err(format!(
            "follower pod owner UID ({}) != leader pod owner UID ({})",
            follower_owner.uid, leader_owner.uid
        ));
    }
    Ok(leader)
}

/// The node a pod is bound to, if it is scheduled.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

/// A refusal: the status code, reason and message the API server passes on to the pod's creator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Denial {
    /// controller-runtime's `admission.Denied`: what upstream's webhooks answer with a plain error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { code: 403, reason: "Forbidden", message: message.into() }
    }
}

/// The leader's domain: its node's `topology_key` label. A missing node or label is an error (the follower is
/// refused and created again later), never an empty domain: an empty `nodeSelector` value would match no node, or
/// the wrong ones (upstream #1088, fixed by #1089).
pub fn leader_domain(
    node: &str,
    labels: Option<&BTreeMap<String, String>>,
    topology_key: &str,
) -> Result<String, Denial> {
    let Some(labels) = labels else {
        // What controller-runtime answers for the client's NotFound error.
        return Err(Denial { code: 404, reason: "NotFound", message: format!("nodes \"{node}\" not found") });
    };
    labels
        .get(topology_key)
        .cloned()
        .ok_or_else(|| Denial::forbidden(format!("node does not have topology label: {topology_key}")))
}

/// `mpod.kb.io` for one pod: edits `raw` (the pod as it arrived) the way upstream's defaulter edits the pod.
/// Failing to find a follower's leader, or a leader not scheduled yet, changes nothing: `vpod.kb.io` refuses the
/// follower then. Only a failure to read the leader's domain refuses it here.
pub async fn mutate(reads: &dyn PlacementReads, pod: &Pod, raw: &mut Value) -> Result<(), Denial> {
    let scope = scope(pod);
    if scope == Scope::Untouched {
        return Ok(());
    }
    if let Some(priority) = priority_label(pod) {
        set_priority_label(raw, &priority);
    }
    let Scope::Exclusive { topology_key, leader } = scope else { return Ok(()) };
    if leader {
        add_leader_terms(raw, topology_key);
        return Ok(());
    }
    let leader = match leader_of(reads, pod).await {
        Ok(leader) => leader,
        Err(e) => {
            tracing::debug!(error = %e, pod = ?pod.metadata.name, "no leader for an exclusive follower yet");
            return Ok(());
        }
    };
    let Some(node) = node_of(&leader) else { return Ok(()) };
    let labels = reads.node_labels(node).await.map_err(|e| Denial {
        code: 500,
        reason: "InternalError",
        message: format!("getting node {node}: {e}"),
    })?;
    let domain = leader_domain(node, labels.as_ref(), topology_key)?;
    set_follower_selector(raw, topology_key, &domain);
    Ok(())
}

/// `vpod.kb.io` for one pod: a follower of an exclusive Job is admitted only with the topology nodeSelector set
/// and its leader scheduled. The messages are upstream's.
pub async fn validate(reads: &dyn PlacementReads, pod: &Pod) -> Result<(), Denial> {
    let Scope::Exclusive { topology_key, leader: false } = scope(pod) else { return Ok(()) };
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    let Some(selector) = selector else { return Err(Denial::forbidden("follower pod node selector not set")) };
    if !selector.contains_key(topology_key) {
        return Err(Denial::forbidden(format!(
            "follower pod node selector for topology domain not found. missing selector: {topology_key}"
        )));
    }
    let leader = leader_of(reads, pod).await.map_err(Denial::forbidden)?;
    if node_of(&leader).is_none() {
        return Err(Denial::forbidden(
            "leader pod not yet scheduled, not creating follower pod. this is an expected, transient error",
        ));
    }
    Ok(())
}

/// Reads the follower's Job's pods and picks its leader.
async fn leader_of(reads: &dyn PlacementReads, follower: &Pod) -> Result<Pod, String> {
    let selector = job_pods_selector(follower)?;
    let namespace = follower.metadata.namespace.as_deref().unwrap_or_default();
    let pods = reads.pods(namespace, &selector).await?;
    find_leader(follower, &pods).cloned()
}

#[cfg(test)]
mod tests;
