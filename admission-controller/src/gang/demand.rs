//! What a gang asks for, as plain data: per pod set, Jobs × pods per Job, the resources of one pod and the node
//! constraints its pods carry (nodeSelector, required node affinity, tolerations), with the Kubernetes matching
//! semantics of each.

use std::collections::BTreeMap;
use std::sync::Arc;

use muster_api::gang::{GangSpec, SlotPlacement};
use muster_api::keys::{GPU_RESOURCE, NAMESPACED_JOB, NO_SCHEDULE_TAINT};

use super::{GangKey, Resources};
use crate::quantity::{self, QuantityError};

/// A gang's whole demand; every slot must be placed or none is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangDemand {
    pub key: GangKey,
    pub queue: String,
    /// Higher first.
    pub priority: i32,
    /// In release order (the leader's pod set first).
    pub pod_sets: Vec<PodSetDemand>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSetDemand {
    pub name: String,
    pub jobs: u32,
    pub pods_per_job: u32,
    /// One pod's request; `pods` is 1.
    pub per_pod: Resources,
    /// Shared (`Arc`) so that the model can cache eligibility per distinct constraint set.
    pub constraints: Arc<Constraints>,
    /// Upstream's exclusive placement of the pod set's Jobs, when the JobSet asks for it.
    pub exclusive: Option<Exclusive>,
}

/// Exclusive placement of a pod set's Jobs (reference §3.12), as placement honours it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Exclusive {
    /// The affinity strategy: all pods of a Job in one domain (nodes sharing a value of this node label; nodes
    /// without it do not qualify), and no other Job in that domain. The scheduler enforces it through the pod
    /// affinity and anti-affinity the pod webhooks give each Job's leader.
    Domain(Arc<str>),
    /// The node-selector strategy: Job `i` goes only to nodes pre-labelled
    /// `alpha.jobset.sigs.k8s.io/namespaced-job=<namespace>_<jobset>-<pod set>-<i>`, with a toleration of the
    /// `alpha.jobset.sigs.k8s.io/no-schedule` taint: the reconciler adds both to that Job's pods. Whoever labelled
    /// the nodes chose the domains, so placement only honours the per-Job nodeSelector.
    NodeSelector,
}

/// The node constraints of one pod template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Constraints {
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: OR of terms. `None` means no affinity.
    pub affinity: Option<Vec<SelectorTerm>>,
    pub tolerations: Vec<Toleration>,
}

/// AND of its requirements; a term with none matches no node (as in Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SelectorTerm {
    pub match_expressions: Vec<Requirement>,
    /// Only `metadata.name` is a valid field.
    pub match_fields: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    /// Not a valid operator; the term it is in matches nothing.
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    Equal,
    Exists,
    /// Anything else (including the alpha numeric comparisons) tolerates nothing here: admission stays
    /// conservative rather than place a pod the scheduler may refuse.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Empty with `Exists` matches every key.
    pub key: String,
    pub operator: TolerationOperator,
    pub value: String,
    /// `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl TaintEffect {
    pub fn parse(s: &str) -> Self {
        match s {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            other => TaintEffect::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
            TaintEffect::Other(s) => s,
        }
    }

    /// Whether the scheduler's TaintToleration filter looks at taints of this effect.
    pub fn filters(&self) -> bool {
        matches!(self, TaintEffect::NoSchedule | TaintEffect::NoExecute)
    }
}

impl Taint {
    pub fn new(key: &str, value: &str, effect: TaintEffect) -> Self {
        Taint { key: key.to_owned(), value: value.to_owned(), effect }
    }
}

impl std::fmt::Display for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

impl Operator {
    pub fn parse(s: &str) -> Self {
        match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            other => Operator::Unknown(other.to_owned()),
        }
    }
}

impl Requirement {
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Requirement { key: key.to_owned(), operator, values: values.iter().map(|v| (*v).to_owned()).collect() }
    }

    /// Whether a label value (absent: `None`) satisfies the requirement; `None` when the requirement itself is
    /// invalid (wrong number of values, non-integer for `Gt`/`Lt`), which makes its term match nothing.
    pub fn matches(&self, value: Option<&str>) -> Option<bool> {
        let number = || -> Option<i64> {
            match self.values.as_slice() {
                [v] => v.parse().ok(),
                _ => None,
            }
        };
        match &self.operator {
            Operator::In if self.values.is_empty() => None,
            Operator::NotIn if self.values.is_empty() => None,
            Operator::In => Some(value.is_some_and(|v| self.values.iter().any(|x| x == v))),
            Operator::NotIn => Some(value.is_none_or(|v| self.values.iter().all(|x| x != v))),
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => None,
            Operator::Exists => Some(value.is_some()),
            Operator::DoesNotExist => Some(value.is_none()),
            Operator::Gt | Operator::Lt => {
                let bound = number()?;
                // A label that is absent or not an integer does not match (and is not an error).
                let Some(v) = value.and_then(|v| v.parse::<i64>().ok()) else { return Some(false) };
                Some(if self.operator == Operator::Gt { v > bound } else { v < bound })
            }
            Operator::Unknown(_) => None,
        }
    }
}

impl SelectorTerm {
    fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        let exprs =
            self.match_expressions.iter().all(|r| r.matches(labels.get(&r.key).map(String::as_str)) == Some(true));
        exprs
            && self.match_fields.iter().all(|r| {
                r.key == "metadata.name"
                    && matches!(r.operator, Operator::In | Operator::NotIn)
                    && r.matches(Some(node_name)) == Some(true)
            })
    }
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.as_ref().is_some_and(|e| *e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Equal => !self.key.is_empty() && self.value == taint.value,
            TolerationOperator::Exists => true,
            TolerationOperator::Other(_) => false,
        }
    }

    pub fn exists(key: &str, effect: Option<TaintEffect>) -> Self {
        Toleration { key: key.to_owned(), operator: TolerationOperator::Exists, value: String::new(), effect }
    }

    pub fn equal(key: &str, value: &str, effect: Option<TaintEffect>) -> Self {
        Toleration { key: key.to_owned(), operator: TolerationOperator::Equal, value: value.to_owned(), effect }
    }
}

impl Constraints {
    pub fn node_selector_matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    pub fn affinity_matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        match &self.affinity {
            None => true,
            Some(terms) => terms.iter().any(|t| t.matches(node_name, labels)),
        }
    }

    /// The first NoSchedule/NoExecute taint none of the tolerations tolerates.
    pub fn untolerated<'t>(&self, taints: &'t [Taint]) -> Option<&'t Taint> {
        taints.iter().find(|t| t.effect.filters() && !self.tolerations.iter().any(|tol| tol.tolerates(t)))
    }

    /// `k=v,k2=v2`, for explanations.
    pub fn selector_text(&self) -> String {
        self.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

impl PodSetDemand {
    pub fn pods(&self) -> u32 {
        self.jobs.saturating_mul(self.pods_per_job)
    }

    /// The topology key of the affinity strategy, if the pod set uses it.
    pub fn exclusive_domain_key(&self) -> Option<&Arc<str>> {
        match &self.exclusive {
            Some(Exclusive::Domain(key)) => Some(key),
            _ => None,
        }
    }

    /// The constraints of Job `job`'s pods: the pod set's, plus for the node-selector strategy the nodeSelector
    /// and toleration that the reconciler gives that Job alone.
    pub fn job_constraints(&self, gang: &GangKey, job: u32) -> Arc<Constraints> {
        if self.exclusive != Some(Exclusive::NodeSelector) {
            return Arc::clone(&self.constraints);
        }
        let (namespace, jobset) = gang.namespace_and_name();
        let mut c = (*self.constraints).clone();
        c.node_selector.insert(NAMESPACED_JOB.to_owned(), format!("{namespace}_{jobset}-{}-{job}", self.name));
        c.tolerations.push(Toleration::exists(NO_SCHEDULE_TAINT, Some(TaintEffect::NoSchedule)));
        Arc::new(c)
    }
}

impl GangDemand {
    pub fn total_pods(&self) -> u32 {
        self.pod_sets.iter().map(PodSetDemand::pods).fold(0, u32::saturating_add)
    }

    /// Whether `spec` has the same pod sets with the same numbers of Jobs and pods (what scaling changes).
    pub fn counts_match(&self, spec: &GangSpec) -> bool {
        self.pod_sets.len() == spec.pod_sets.len()
            && self.pod_sets.iter().zip(&spec.pod_sets).all(|(d, s)| {
                d.name == s.name
                    && i32::try_from(d.jobs).is_ok_and(|j| j == s.jobs)
                    && i32::try_from(d.pods_per_job).is_ok_and(|p| p == s.pods_per_job)
            })
    }

    /// Whether the gang has pod `pod_index` of Job `job_index` in pod set `pod_set`.
    pub fn has_slot(&self, pod_set: &str, job_index: i32, pod_index: i32) -> bool {
        let within = |i: i32, n: u32| u32::try_from(i).is_ok_and(|i| i < n);
        self.pod_sets
            .iter()
            .any(|p| p.name == pod_set && within(job_index, p.jobs) && within(pod_index, p.pods_per_job))
    }

    /// The gang's pods that `slots` (all of them the gang's, none twice) leave out, as slots without a node, in
    /// release order.
    pub fn missing_slots(&self, slots: &[SlotPlacement]) -> Vec<SlotPlacement> {
        if slots.len() as u64 >= u64::from(self.total_pods()) {
            return Vec::new();
        }
        let placed: std::collections::HashSet<(&str, i32, i32)> =
            slots.iter().map(|s| (s.pod_set.as_str(), s.job_index, s.pod_index)).collect();
        let mut missing = Vec::new();
        for ps in &self.pod_sets {
            for job in 0..i32::try_from(ps.jobs).unwrap_or(i32::MAX) {
                for pod in 0..i32::try_from(ps.pods_per_job).unwrap_or(i32::MAX) {
                    if !placed.contains(&(ps.name.as_str(), job, pod)) {
                        missing.push(SlotPlacement {
                            pod_set: ps.name.clone(),
                            job_index: job,
                            pod_index: pod,
                            node: String::new(),
                        });
                    }
                }
            }
        }
        missing
    }

    /// Puts `slots` in release order: pod set as in the demand, then Job, then pod index.
    pub fn sort_slots(&self, slots: &mut [SlotPlacement]) {
        let rank = |s: &SlotPlacement| self.pod_sets.iter().position(|p| p.name == s.pod_set).unwrap_or(usize::MAX);
        slots.sort_by_cached_key(|s| (rank(s), s.job_index, s.pod_index));
    }

    pub fn total_gpus(&self) -> u64 {
        self.pod_sets.iter().map(|p| u64::from(p.pods()) * u64::from(p.per_pod.gpus)).sum()
    }

    /// What placement depends on, without names: gangs of one shape fit or fail together.
    pub fn shape(&self) -> GangShape {
        GangShape(
            self.pod_sets
                .iter()
                .map(|p| (p.jobs, p.pods_per_job, p.per_pod, Arc::clone(&p.constraints), p.exclusive.clone()))
                .collect(),
        )
    }

    /// Converts a `Gang` spec; quantities are rounded up (CPU to millicores, memory to bytes).
    pub fn from_spec(key: GangKey, spec: &GangSpec) -> Result<GangDemand, DemandError> {
        let mut pod_sets = Vec::with_capacity(spec.pod_sets.len());
        let mut total: u64 = 0;
        for ps in &spec.pod_sets {
            let name = ps.name.clone();
            let count = |what: &'static str, v: i64| -> Result<u32, DemandError> {
                u32::try_from(v).map_err(|_| DemandError::BadCount { pod_set: name.clone(), what, value: v })
            };
            let jobs = count("jobs", i64::from(ps.jobs))?;
            let pods_per_job = count("podsPerJob", i64::from(ps.pods_per_job))?;
            let mut gpus = count("gpusPerPod", ps.gpus_per_pod)?;
            let mut per_pod = Resources { pods: 1, ..Resources::ZERO };
            for (resource, q) in &ps.requests {
                let bad = |source| DemandError::Quantity { pod_set: name.clone(), resource: resource.clone(), source };
                match resource.as_str() {
                    "cpu" => per_pod.cpu_milli = quantity::cpu_millis(&q.0).map_err(bad)?,
                    "memory" => per_pod.memory_bytes = quantity::bytes(&q.0).map_err(bad)?,
                    GPU_RESOURCE if gpus == 0 => {
                        let n = quantity::count(&q.0).map_err(bad)?;
                        gpus = u32::try_from(n).map_err(|_| DemandError::BadCount {
                            pod_set: name.clone(),
                            what: "nvidia.com/gpu",
                            value: i64::try_from(n).unwrap_or(i64::MAX),
                        })?;
                    }
                    // Other resources (ephemeral-storage, hugepages, ...) are left to the scheduler.
                    _ => {}
                }
            }
            per_pod.gpus = gpus;
            total += u64::from(jobs) * u64::from(pods_per_job);
            if total > MAX_SLOTS {
                return Err(DemandError::TooManySlots(total));
            }
            let constraints = Constraints {
                node_selector: ps.node_selector.clone(),
                affinity: ps.required_node_affinity.as_ref().map(|sel| {
                    sel.node_selector_terms
                        .iter()
                        .map(|t| SelectorTerm {
                            match_expressions: t.match_expressions.iter().flatten().map(requirement).collect(),
                            match_fields: t.match_fields.iter().flatten().map(requirement).collect(),
                        })
                        .collect()
                }),
                tolerations: ps
                    .tolerations
                    .iter()
                    .map(|t| Toleration {
                        key: t.key.clone().unwrap_or_default(),
                        operator: match t.operator.as_deref() {
                            None | Some("") | Some("Equal") => TolerationOperator::Equal,
                            Some("Exists") => TolerationOperator::Exists,
                            Some(other) => TolerationOperator::Other(other.to_owned()),
                        },
                        value: t.value.clone().unwrap_or_default(),
                        effect: t.effect.as_deref().filter(|e| !e.is_empty()).map(TaintEffect::parse),
                    })
                    .collect(),
            };
            let exclusive = ps.exclusive.as_ref().map(|e| {
                if e.node_selector_strategy {
                    Exclusive::NodeSelector
                } else {
                    Exclusive::Domain(Arc::from(e.topology_key.as_str()))
                }
            });
            pod_sets.push(PodSetDemand {
                name,
                jobs,
                pods_per_job,
                per_pod,
                constraints: Arc::new(constraints),
                exclusive,
            });
        }
        if total == 0 {
            return Err(DemandError::NoSlots);
        }
        Ok(GangDemand { key, queue: spec.queue.clone(), priority: spec.priority, pod_sets })
    }
}

fn requirement(r: &k8s_openapi::api::core::v1::NodeSelectorRequirement) -> Requirement {
    Requirement {
        key: r.key.clone(),
        operator: Operator::parse(&r.operator),
        values: r.values.clone().unwrap_or_default(),
    }
}

/// No JobSet reasonably asks for more pod slots than this; a bigger number is a typo, not a gang.
pub const MAX_SLOTS: u64 = 100_000;

/// See [`GangDemand::shape`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GangShape(Vec<PodSetShape>);

/// Jobs, pods per Job, one pod's request, constraints and exclusivity of a pod set.
type PodSetShape = (u32, u32, Resources, Arc<Constraints>, Option<Exclusive>);

/// Why a `Gang` spec cannot be turned into a demand; the gang is Inadmissible with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    #[error("pod set {pod_set}: {what} is {value}, which is not a valid count")]
    BadCount { pod_set: String, what: &'static str, value: i64 },
    #[error("pod set {pod_set}: request {resource}: {source}")]
    Quantity { pod_set: String, resource: String, source: QuantityError },
    #[error("the gang has no pod slots")]
    NoSlots,
    #[error("the gang has {0} pod slots, more than the {MAX_SLOTS} admission handles")]
    TooManySlots(u64),
}

impl DemandError {
    /// Stable, for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            DemandError::BadCount { .. } => "bad_count",
            DemandError::Quantity { .. } => "bad_quantity",
            DemandError::NoSlots => "no_slots",
            DemandError::TooManySlots(_) => "too_many_slots",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use muster_api::gang::PodSet;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn requirement_operators() {
        let r = |op, vals: &[&str]| Requirement::new("k", op, vals);
        assert_eq!(r(Operator::In, &["a", "b"]).matches(Some("b")), Some(true));
        assert_eq!(r(Operator::In, &["a"]).matches(None), Some(false));
        assert_eq!(r(Operator::In, &[]).matches(Some("a")), None);
        assert_eq!(r(Operator::NotIn, &["a"]).matches(None), Some(true));
        assert_eq!(r(Operator::NotIn, &["a"]).matches(Some("a")), Some(false));
        assert_eq!(r(Operator::NotIn, &["a"]).matches(Some("b")), Some(true));
        assert_eq!(r(Operator::Exists, &[]).matches(Some("")), Some(true));
        assert_eq!(r(Operator::Exists, &[]).matches(None), Some(false));
        assert_eq!(r(Operator::Exists, &["x"]).matches(Some("x")), None);
        assert_eq!(r(Operator::DoesNotExist, &[]).matches(None), Some(true));
        assert_eq!(r(Operator::Gt, &["3"]).matches(Some("4")), Some(true));
        assert_eq!(r(Operator::Gt, &["3"]).matches(Some("3")), Some(false));
        assert_eq!(r(Operator::Gt, &["3"]).matches(Some("x")), Some(false));
        assert_eq!(r(Operator::Gt, &["3"]).matches(None), Some(false));
        assert_eq!(r(Operator::Lt, &["3"]).matches(Some("-1")), Some(true));
        assert_eq!(r(Operator::Lt, &["x"]).matches(Some("1")), None);
        assert_eq!(r(Operator::Lt, &["1", "2"]).matches(Some("0")), None);
        assert_eq!(r(Operator::Unknown("Foo".into()), &["1"]).matches(Some("1")), None);
    }

    #[test]
    fn affinity_is_or_of_ands() {
        let c = Constraints {
            affinity: Some(vec![
                SelectorTerm {
                    match_expressions: vec![
                        Requirement::new("pool", Operator::In, &["h100"]),
                        Requirement::new("zone", Operator::NotIn, &["b"]),
                    ],
                    match_fields: vec![],
                },
                SelectorTerm {
                    match_expressions: vec![],
                    match_fields: vec![Requirement::new("metadata.name", Operator::In, &["special"])],
                },
                // Empty terms match nothing; invalid terms match nothing.
                SelectorTerm::default(),
                SelectorTerm {
                    match_expressions: vec![Requirement::new("x", Operator::Gt, &["y"])],
                    match_fields: vec![],
                },
            ]),
            ..Constraints::default()
        };
        assert!(c.affinity_matches("n1", &labels(&[("pool", "h100"), ("zone", "a")])));
        assert!(c.affinity_matches("n1", &labels(&[("pool", "h100")])));
        assert!(!c.affinity_matches("n1", &labels(&[("pool", "h100"), ("zone", "b")])));
        assert!(c.affinity_matches("special", &labels(&[])));
        assert!(!c.affinity_matches("n2", &labels(&[("x", "5")])));
        let none = Constraints { affinity: Some(vec![]), ..Constraints::default() };
        assert!(!none.affinity_matches("n", &labels(&[])));
        assert!(Constraints::default().affinity_matches("n", &labels(&[])));
    }

    #[test]
    fn tolerations() {
        let ns = |k: &str, v: &str| Taint::new(k, v, TaintEffect::NoSchedule);
        let gpu = ns("nvidia.com/gpu", "present");
        let c = |tols: Vec<Toleration>| Constraints { tolerations: tols, ..Constraints::default() };
        assert_eq!(c(vec![]).untolerated(std::slice::from_ref(&gpu)), Some(&gpu));
        assert_eq!(c(vec![Toleration::exists("nvidia.com/gpu", None)]).untolerated(std::slice::from_ref(&gpu)), None);
        assert_eq!(c(vec![Toleration::exists("", None)]).untolerated(std::slice::from_ref(&gpu)), None);
        assert_eq!(
            c(vec![Toleration::equal("nvidia.com/gpu", "present", Some(TaintEffect::NoSchedule))])
                .untolerated(std::slice::from_ref(&gpu)),
            None
        );
        assert!(
            c(vec![Toleration::equal("nvidia.com/gpu", "absent", None)])
                .untolerated(std::slice::from_ref(&gpu))
                .is_some()
        );
        assert!(
            c(vec![Toleration::exists("nvidia.com/gpu", Some(TaintEffect::NoExecute))])
                .untolerated(std::slice::from_ref(&gpu))
                .is_some()
        );
        // PreferNoSchedule never filters.
        assert_eq!(c(vec![]).untolerated(&[Taint::new("soft", "", TaintEffect::PreferNoSchedule)]), None);
        let exec = Taint::new("node.kubernetes.io/not-ready", "", TaintEffect::NoExecute);
        assert_eq!(c(vec![]).untolerated(std::slice::from_ref(&exec)), Some(&exec));
        let other = Toleration { operator: TolerationOperator::Other("Gt".into()), ..Toleration::exists("k", None) };
        assert!(c(vec![other]).untolerated(&[ns("k", "5")]).is_some());
    }

    fn spec_pod_set(name: &str) -> PodSet {
        PodSet { name: name.into(), jobs: 2, pods_per_job: 4, gpus_per_pod: 8, ..PodSet::default() }
    }

    #[test]
    fn from_spec() {
        let mut workers = spec_pod_set("workers");
        workers.requests.insert("cpu".into(), Quantity("1500m".into()));
        workers.requests.insert("memory".into(), Quantity("64Gi".into()));
        workers.requests.insert("ephemeral-storage".into(), Quantity("10Gi".into()));
        workers.node_selector.insert("pool".into(), "h100".into());
        workers.required_node_affinity = Some(core::NodeSelector {
            node_selector_terms: vec![core::NodeSelectorTerm {
                match_expressions: Some(vec![core::NodeSelectorRequirement {
                    key: "rack".into(),
                    operator: "In".into(),
                    values: Some(vec!["r1".into()]),
                }]),
                match_fields: None,
            }],
        });
        workers.tolerations = vec![core::Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..core::Toleration::default()
        }];
        let spec = GangSpec { queue: "q".into(), priority: 5, pod_sets: vec![workers], total_gpus: 64 };
        let d = GangDemand::from_spec(GangKey::new("ml", "a"), &spec).expect("valid");
        assert_eq!(d.key.as_str(), "ml/a");
        assert_eq!(d.total_pods(), 8);
        assert_eq!(d.total_gpus(), 64);
        let ps = &d.pod_sets[0];
        assert_eq!(ps.per_pod, Resources::new(8, 1500, 64 << 30, 1));
        assert_eq!(ps.constraints.node_selector.get("pool").map(String::as_str), Some("h100"));
        assert_eq!(
            ps.constraints.affinity,
            Some(vec![SelectorTerm {
                match_expressions: vec![Requirement::new("rack", Operator::In, &["r1"])],
                match_fields: vec![]
            }])
        );
        assert_eq!(
            ps.constraints.tolerations,
            vec![Toleration::exists("nvidia.com/gpu", Some(TaintEffect::NoSchedule))]
        );
    }

    #[test]
    fn from_spec_errors() {
        let key = GangKey::new("ml", "a");
        let mut ps = spec_pod_set("w");
        ps.jobs = -1;
        let spec = |ps: PodSet| GangSpec { pod_sets: vec![ps], ..GangSpec::default() };
        assert!(matches!(
            GangDemand::from_spec(key.clone(), &spec(ps)),
            Err(DemandError::BadCount { what: "jobs", .. })
        ));
        let mut ps = spec_pod_set("w");
        ps.requests.insert("cpu".into(), Quantity("lots".into()));
        let err = GangDemand::from_spec(key.clone(), &spec(ps)).expect_err("bad quantity");
        assert_eq!(err.category(), "bad_quantity");
        assert!(err.to_string().contains("request cpu"), "{err}");
        let mut ps = spec_pod_set("w");
        ps.jobs = 0;
        assert_eq!(GangDemand::from_spec(key.clone(), &spec(ps)), Err(DemandError::NoSlots));
        let mut ps = spec_pod_set("w");
        ps.jobs = 1_000_000;
        assert!(matches!(GangDemand::from_spec(key.clone(), &spec(ps)), Err(DemandError::TooManySlots(_))));
        // GPUs may come from the requests map when gpusPerPod is unset.
        let mut ps = spec_pod_set("w");
        ps.gpus_per_pod = 0;
        ps.requests.insert(GPU_RESOURCE.into(), Quantity("2".into()));
        let d = GangDemand::from_spec(key, &spec(ps)).expect("valid");
        assert_eq!(d.pod_sets[0].per_pod.gpus, 2);
    }
}
