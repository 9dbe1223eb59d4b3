//! From Kubernetes objects to the plain data of the gang core: which JobSets are gangs, what a gang asks for, and
//! what admission needs of Nodes and Pods. Pure functions; the admission controller and the webhook share them, so
//! "is this a gang?" has one answer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use muster_api::gang::{GangSpec, PodSet};
use muster_api::{JobSet, keys};

use super::demand::{Taint, TaintEffect};
use super::model::{NodeInfo, PodInfo};
use super::{GangKey, Resources};
use crate::quantity::{self, QuantityError};
use crate::webhook::exclusive::Scope;

/// A JobSet is a gang when our controller manages it, Kueue does not, it is not opted out with
/// `muster.dev/gang: "false"`, and it asks for GPUs or names a `muster.dev/queue`.
pub fn is_gang_managed(js: &JobSet) -> bool {
    let labels = js.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if !js.managed_by_us() || label(keys::KUEUE_QUEUE_NAME).is_some() || label(keys::GANG_MANAGED) == Some("false") {
        return false;
    }
    label(keys::QUEUE).is_some()
        || js.spec.replicated_jobs.iter().any(|r| {
            pod_spec_of(r).is_some_and(|p| pod_requests(p).map_or_else(|_| asks_for_gpus(p), |req| req.gpus > 0))
        })
}

/// True if any container names `nvidia.com/gpu`, for pods whose requests do not parse: such a JobSet must still
/// be held by admission (and told why) rather than run unqueued.
fn asks_for_gpus(spec: &PodSpec) -> bool {
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| {
        c.resources
            .as_ref()
            .is_some_and(|r| [&r.requests, &r.limits].into_iter().flatten().any(|m| m.contains_key(keys::GPU_RESOURCE)))
    })
}

/// The Gang spec of a waiting gang whose suspended JobSet now asks for `current`. The reconciler resumes the Jobs
/// that already exist by merging the ReplicatedJob's current template into theirs, as upstream does: nodeSelector
/// keys are never removed (the JobSet's value wins) and tolerations are unioned. The pods will carry that merge,
/// so the demand does too; everything else is `current`'s.
pub fn followed_spec(previous: &GangSpec, current: &GangSpec) -> GangSpec {
    let mut spec = current.clone();
    for ps in &mut spec.pod_sets {
        let Some(old) = previous.pod_sets.iter().find(|o| o.name == ps.name) else { continue };
        for (key, value) in &old.node_selector {
            ps.node_selector.entry(key.clone()).or_insert_with(|| value.clone());
        }
        for toleration in &old.tolerations {
            if !ps.tolerations.contains(toleration) {
                ps.tolerations.push(toleration.clone());
            }
        }
    }
    spec
}

/// The Gang spec of an admitted or running gang whose JobSet now asks for `current`, when the only change is the
/// number of pods per Job: upstream's `ElasticJobSet` gate lets a running JobSet's Indexed ReplicatedJobs change
/// parallelism (with completions equal to it), and the reconciler scales the Jobs in place. `None` when nothing
/// changed, or when anything else did: a running JobSet's templates cannot change, so such a difference is not
/// something the running pods follow.
pub fn scaled_spec(previous: &GangSpec, current: &GangSpec) -> Option<GangSpec> {
    // Asked every tick for every admitted gang: the common case (same counts) allocates nothing.
    let same_counts = |a: &GangSpec, b: &GangSpec| {
        a.pod_sets.len() == b.pod_sets.len()
            && a.pod_sets.iter().zip(&b.pod_sets).all(|(x, y)| x.pods_per_job == y.pods_per_job)
    };
    if same_counts(previous, current) {
        return None;
    }
    let current = followed_spec(previous, current);
    if current.pod_sets.len() != previous.pod_sets.len() {
        return None;
    }
    let mut scaled = previous.clone();
    for (ps, now) in scaled.pod_sets.iter_mut().zip(&current.pod_sets) {
        let same_but_pods = PodSet { pods_per_job: ps.pods_per_job, ..now.clone() };
        if same_but_pods != *ps {
            return None;
        }
        ps.pods_per_job = now.pods_per_job;
    }
    scaled.total_gpus = total_gpus(&scaled.pod_sets);
    Some(scaled)
}

/// GPUs over all pod slots (`Gang.spec.totalGPUs`).
fn total_gpus(pod_sets: &[PodSet]) -> i64 {
    pod_sets.iter().fold(0i64, |total, ps| {
        total.saturating_add(
            i64::from(ps.jobs.max(0)).saturating_mul(i64::from(ps.pods_per_job.max(0))).saturating_mul(ps.gpus_per_pod),
        )
    })
}

fn pod_spec_of(rjob: &muster_api::jobset::ReplicatedJob) -> Option<&PodSpec> {
    rjob.template.spec.as_ref()?.template.spec.as_ref()
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GangSpecError {
    #[error("replicatedJobs[{rjob}]: {resource}: {source}")]
    Quantity { rjob: String, resource: String, source: QuantityError },
    #[error("label {}: {value:?} is not an integer", keys::GANG_PRIORITY)]
    Priority { value: String },
}

/// The `Gang` spec of a gang-managed JobSet: one pod set per ReplicatedJob, the leader's first (the release order).
/// `priority_class` resolves a PriorityClass name to its value; the `muster.dev/priority` label wins over it.
pub fn gang_spec(js: &JobSet, priority_class: impl Fn(&str) -> Option<i32>) -> Result<GangSpec, GangSpecError> {
    let labels = js.metadata.labels.as_ref();
    let queue = labels.and_then(|l| l.get(keys::QUEUE)).cloned().unwrap_or_else(|| keys::DEFAULT_QUEUE.to_owned());
    let priority = match labels.and_then(|l| l.get(keys::GANG_PRIORITY)) {
        Some(v) => v.trim().parse().map_err(|_| GangSpecError::Priority { value: v.clone() })?,
        None => js
            .spec
            .replicated_jobs
            .iter()
            .filter_map(|r| pod_spec_of(r)?.priority_class_name.as_deref())
            .filter_map(&priority_class)
            .max()
            .unwrap_or(0),
    };
    let leader = js.leader();
    let mut rjobs: Vec<_> = js.spec.replicated_jobs.iter().collect();
    // Stable: the leader moves to the front, the others keep their order.
    rjobs.sort_by_key(|r| Some(r.name.as_str()) != leader);
    let mut pod_sets = Vec::with_capacity(rjobs.len());
    for rjob in rjobs {
        let job = rjob.template.spec.as_ref();
        let parallelism = job.and_then(|j| j.parallelism).unwrap_or(1);
        let pods_per_job = match job.and_then(|j| j.completions) {
            Some(c) => parallelism.min(c),
            None => parallelism,
        };
        let jobs = rjob.replicas.unwrap_or(1);
        let exclusive = js.exclusive_placement(rjob);
        let Some(pod) = pod_spec_of(rjob) else {
            pod_sets.push(PodSet { name: rjob.name.clone(), jobs, pods_per_job, exclusive, ..PodSet::default() });
            continue;
        };
        let req = pod_requests(pod).map_err(|(resource, source)| GangSpecError::Quantity {
            rjob: rjob.name.clone(),
            resource,
            source,
        })?;
        let mut requests = BTreeMap::new();
        if req.cpu_milli > 0 {
            requests.insert("cpu".to_owned(), Quantity(format!("{}m", req.cpu_milli)));
        }
        if req.memory_bytes > 0 {
            requests.insert("memory".to_owned(), Quantity(req.memory_bytes.to_string()));
        }
        pod_sets.push(PodSet {
            name: rjob.name.clone(),
            jobs,
            pods_per_job,
            gpus_per_pod: i64::from(req.gpus),
            requests,
            node_selector: pod.node_selector.clone().unwrap_or_default(),
            required_node_affinity: pod
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| n.required_during_scheduling_ignored_during_execution.clone()),
            tolerations: pod.tolerations.clone().unwrap_or_default(),
            exclusive,
        });
    }
    let total_gpus = total_gpus(&pod_sets);
    Ok(GangSpec { queue, priority, pod_sets, total_gpus })
}

/// What one pod asks of a node, as the scheduler counts it: the app containers plus restartable (sidecar) init
/// containers, or the largest regular init container plus the sidecars started before it, whichever is more;
/// plus the pod overhead. A limit stands in for a missing request. Errors name the resource.
pub fn pod_requests(spec: &PodSpec) -> Result<Resources, (String, QuantityError)> {
    let mut running = Resources::ZERO;
    for c in &spec.containers {
        running = running.saturating_add(container_requests(c)?);
    }
    let mut sidecars = Resources::ZERO;
    let mut init_peak = Resources::ZERO;
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.saturating_add(r);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars.saturating_add(r));
        }
    }
    let mut total = running.saturating_add(sidecars).max(init_peak);
    if let Some(overhead) = &spec.overhead {
        total = total.saturating_add(resources_of(overhead)?);
    }
    total.pods = 1;
    Ok(total)
}

fn container_requests(c: &Container) -> Result<Resources, (String, QuantityError)> {
    let Some(ResourceRequirements { requests, limits, .. }) = &c.resources else { return Ok(Resources::ZERO) };
    // A limit without a request defaults the request (the API server does this on pods, not on templates).
    let mut merged: BTreeMap<String, Quantity> = limits.clone().unwrap_or_default();
    merged.extend(requests.clone().unwrap_or_default());
    resources_of(&merged)
}

fn resources_of(map: &BTreeMap<String, Quantity>) -> Result<Resources, (String, QuantityError)> {
    let mut r = Resources::ZERO;
    for (name, q) in map {
        let bad = |e| (name.clone(), e);
        match name.as_str() {
            "cpu" => r.cpu_milli = quantity::cpu_millis(&q.0).map_err(bad)?,
            "memory" => r.memory_bytes = quantity::bytes(&q.0).map_err(bad)?,
            keys::GPU_RESOURCE => {
                r.gpus = u32::try_from(quantity::count(&q.0).map_err(bad)?).unwrap_or(u32::MAX);
            }
            _ => {}
        }
    }
    Ok(r)
}

/// What admission needs of a Node. Unparseable allocatable quantities count as zero: such a node offers nothing.
pub fn node_info(node: &Node) -> Option<NodeInfo> {
    let name = node.metadata.name.as_deref()?;
    let status = node.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| alloc.and_then(|a| a.get(k)).map(|q| q.0.as_str());
    let mut info = NodeInfo::new(
        name,
        get("cpu").and_then(|q| quantity::cpu_millis(q).ok()).unwrap_or(0),
        get("memory").and_then(|q| quantity::bytes(q).ok()).unwrap_or(0),
    );
    info.max_pods =
        get("pods").and_then(|q| quantity::count(q).ok()).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    info.device_plugin_gpus =
        get(keys::GPU_RESOURCE).and_then(|q| quantity::count(q).ok()).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    info.labels = node.metadata.labels.clone().unwrap_or_default();
    info.ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let spec = node.spec.as_ref();
    info.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    info.taints = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| Taint::new(&t.key, t.value.as_deref().unwrap_or(""), TaintEffect::parse(&t.effect)))
        .collect();
    Some(info)
}

/// The gang a pod belongs to: the JobSet named by its `jobset-name` label, in its namespace.
pub fn pod_gang(pod: &Pod) -> Option<GangKey> {
    let ns = pod.metadata.namespace.as_deref()?;
    let jobset = pod.metadata.labels.as_ref()?.get(keys::JOBSET_NAME)?;
    Some(GangKey::new(ns, jobset))
}

/// A bound pod that still holds its node's resources; `None` for pending or finished pods.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    // An unparseable request cannot have passed the API server's pod validation; count it as nothing.
    let requests = pod_requests(spec).unwrap_or(Resources { pods: 1, ..Resources::ZERO });
    Some(PodInfo {
        namespace: pod.metadata.namespace.clone()?,
        name: pod.metadata.name.clone()?,
        node: node.to_owned(),
        requests,
        gang: pod_gang(pod),
        exclusive_leader: match crate::webhook::exclusive::scope(pod) {
            Scope::Exclusive { topology_key, leader: true } => Some(topology_key.to_owned()),
            _ => None,
        },
    })
}

/// The pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jobset(v: serde_json::Value) -> JobSet {
        serde_json::from_value(v).expect("test JobSet")
    }

    fn rjob(name: &str, replicas: i32, parallelism: i32, resources: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "replicas": replicas, "template": {"spec": {"parallelism": parallelism, "completions": parallelism,
            "template": {"spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}}}}})
    }

    fn gpu_jobset(labels: serde_json::Value) -> JobSet {
        jobset(json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "train", "namespace": "ml", "labels": labels},
            "spec": {"replicatedJobs": [
                rjob("workers", 4, 2, json!({"limits": {"nvidia.com/gpu": "8"}, "requests": {"cpu": "1500m", "memory": "2Gi"}})),
                rjob("driver", 1, 1, json!({"requests": {"cpu": "1"}}))],
              "coordinator": {"replicatedJob": "driver"}}}))
    }

    #[test]
    fn a_bound_exclusive_leader_carries_its_topology_key() {
        let pod = |index: &str, strategy: bool| -> Pod {
            let mut annotations = json!({keys::JOBSET_NAME: "train", keys::EXCLUSIVE_TOPOLOGY: "rack",
                keys::JOB_COMPLETION_INDEX: index});
            if strategy {
                annotations[keys::NODE_SELECTOR_STRATEGY] = json!("true");
            }
            serde_json::from_value(json!({"metadata": {"name": format!("train-w-0-{index}"), "namespace": "ml",
                    "labels": {keys::JOBSET_NAME: "train"}, "annotations": annotations},
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {"phase": "Running"}}))
            .expect("pod")
        };
        let info = |p: &Pod| pod_info(p).expect("bound").exclusive_leader;
        assert_eq!(info(&pod("0", false)).as_deref(), Some("rack"));
        assert_eq!(info(&pod("1", false)), None, "a follower");
        assert_eq!(info(&pod("0", true)), None, "the node-selector strategy has no anti-affinity");
    }

    #[test]
    fn a_followed_spec_keeps_what_resuming_keeps_in_the_jobs() {
        use k8s_openapi::api::core::v1::Toleration;
        let toleration =
            |key: &str| Toleration { key: Some(key.into()), operator: Some("Exists".into()), ..Toleration::default() };
        let pod_set = |selector: &[(&str, &str)], tolerations: Vec<Toleration>| PodSet {
            name: "w".into(),
            node_selector: selector.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            tolerations,
            ..PodSet::default()
        };
        let previous = GangSpec {
            queue: "a".into(),
            pod_sets: vec![pod_set(&[("pool", "h100"), ("zone", "z1")], vec![toleration("x")])],
            ..GangSpec::default()
        };
        let current = GangSpec {
            queue: "b".into(),
            priority: 3,
            pod_sets: vec![pod_set(&[("pool", "a100")], vec![toleration("y")])],
            ..GangSpec::default()
        };
        let followed = followed_spec(&previous, &current);
        assert_eq!((followed.queue.as_str(), followed.priority), ("b", 3));
        let ps = &followed.pod_sets[0];
        let selector: Vec<(&str, &str)> = ps.node_selector.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(selector, [("pool", "a100"), ("zone", "z1")], "the JobSet's value wins, no key is removed");
        assert_eq!(ps.tolerations, [toleration("y"), toleration("x")]);
        assert_eq!(followed_spec(&followed, &current), followed, "following again changes nothing");
    }

    #[test]
    fn a_scaled_spec_takes_the_new_pod_counts_and_nothing_else() {
        let pod_set = |name: &str, pods: i32| PodSet {
            name: name.into(),
            jobs: 2,
            pods_per_job: pods,
            gpus_per_pod: 8,
            ..PodSet::default()
        };
        let previous = GangSpec {
            queue: "a".into(),
            pod_sets: vec![pod_set("leader", 1), pod_set("workers", 4)],
            total_gpus: 80,
            ..GangSpec::default()
        };
        let grown = GangSpec { pod_sets: vec![pod_set("leader", 1), pod_set("workers", 6)], ..previous.clone() };
        let scaled = scaled_spec(&previous, &grown).expect("scaled");
        assert_eq!(scaled.pod_sets, grown.pod_sets);
        assert_eq!(scaled.total_gpus, 2 * 8 + 2 * 6 * 8);
        assert_eq!(scaled_spec(&scaled, &grown), None, "nothing changed");
        let shrunk = GangSpec {
            queue: "b".into(),
            pod_sets: vec![pod_set("leader", 1), pod_set("workers", 1)],
            ..previous.clone()
        };
        let scaled = scaled_spec(&previous, &shrunk).expect("scaled");
        assert_eq!((scaled.queue.as_str(), scaled.total_gpus), ("a", 32), "the queue of a running gang stays");
        let other_gpus = GangSpec {
            pod_sets: vec![pod_set("leader", 1), PodSet { gpus_per_pod: 4, ..pod_set("workers", 6) }],
            ..previous.clone()
        };
        assert_eq!(scaled_spec(&previous, &other_gpus), None, "templates of running Jobs do not change");
        let more_jobs = GangSpec {
            pod_sets: vec![pod_set("leader", 1), PodSet { jobs: 3, ..pod_set("workers", 4) }],
            ..previous.clone()
        };
        assert_eq!(scaled_spec(&previous, &more_jobs), None, "replicas are not elastic upstream");
    }

    #[test]
    fn gpu_jobsets_are_gangs_unless_opted_out_or_kueue_managed() {
        assert!(is_gang_managed(&gpu_jobset(json!({}))));
        assert!(!is_gang_managed(&gpu_jobset(json!({"muster.dev/gang": "false"}))));
        assert!(!is_gang_managed(&gpu_jobset(json!({"kueue.x-k8s.io/queue-name": "q"}))));
        let mut other = gpu_jobset(json!({}));
        other.spec.managed_by = Some("kueue.x-k8s.io/multikueue".into());
        assert!(!is_gang_managed(&other));
        let cpu_only =
            jobset(json!({"metadata": {"name": "c"}, "spec": {"replicatedJobs": [rjob("w", 1, 1, json!({}))]}}));
        assert!(!is_gang_managed(&cpu_only));
        let mut queued = cpu_only.clone();
        queued.metadata.labels = Some([(keys::QUEUE.to_owned(), "research".to_owned())].into());
        assert!(is_gang_managed(&queued));
        let bad_gpu = jobset(json!({"metadata": {"name": "c"}, "spec": {"replicatedJobs": [
            rjob("w", 1, 1, json!({"limits": {"nvidia.com/gpu": "lots"}}))]}}));
        assert!(is_gang_managed(&bad_gpu), "an unparseable GPU request is still held for admission");
    }

    #[test]
    fn gang_spec_puts_the_leader_first_and_sums_gpus() {
        let spec = gang_spec(&gpu_jobset(json!({"muster.dev/queue": "research"})), |_| None).expect("spec");
        assert_eq!(spec.queue, "research");
        assert_eq!(spec.pod_sets.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["driver", "workers"]);
        let w = &spec.pod_sets[1];
        assert_eq!((w.jobs, w.pods_per_job, w.gpus_per_pod), (4, 2, 8));
        assert_eq!(w.requests["cpu"].0, "1500m");
        assert_eq!(w.requests["memory"].0, (2u64 << 30).to_string());
        assert_eq!(spec.total_gpus, 64);
        assert_eq!(spec.priority, 0);
    }

    #[test]
    fn gang_spec_carries_exclusive_placement_replicated_job_level_first() {
        let mut js = gpu_jobset(json!({}));
        js.metadata.annotations = Some([(keys::EXCLUSIVE_TOPOLOGY.to_owned(), "zone".to_owned())].into());
        let rjob_meta = js.spec.replicated_jobs[0].template.metadata.get_or_insert_with(Default::default);
        rjob_meta.annotations = Some(
            [
                (keys::EXCLUSIVE_TOPOLOGY.to_owned(), "rack".to_owned()),
                (keys::NODE_SELECTOR_STRATEGY.to_owned(), "true".to_owned()),
            ]
            .into(),
        );
        let spec = gang_spec(&js, |_| None).expect("spec");
        let of = |name: &str| spec.pod_sets.iter().find(|p| p.name == name).and_then(|p| p.exclusive.clone());
        let w = of("workers").expect("rjob annotation");
        assert_eq!((w.topology_key.as_str(), w.node_selector_strategy), ("rack", true));
        let d = of("driver").expect("JobSet annotation");
        assert_eq!((d.topology_key.as_str(), d.node_selector_strategy), ("zone", false));
        js.metadata.annotations = None;
        assert_eq!(gang_spec(&js, |_| None).map(|s| s.pod_sets[0].exclusive.clone()), Ok(None));
    }

    #[test]
    fn priority_label_wins_over_priority_class_and_bad_labels_are_errors() {
        let mut js = gpu_jobset(json!({}));
        if let Some(p) = js.spec.replicated_jobs[0].template.spec.as_mut().and_then(|j| j.template.spec.as_mut()) {
            p.priority_class_name = Some("high".into());
        }
        let classes = |n: &str| (n == "high").then_some(1000);
        assert_eq!(gang_spec(&js, classes).map(|s| s.priority), Ok(1000));
        js.metadata.labels = Some([(keys::GANG_PRIORITY.to_owned(), "7".to_owned())].into());
        assert_eq!(gang_spec(&js, classes).map(|s| s.priority), Ok(7));
        js.metadata.labels = Some([(keys::GANG_PRIORITY.to_owned(), "high".to_owned())].into());
        assert_eq!(gang_spec(&js, classes), Err(GangSpecError::Priority { value: "high".into() }));
    }

    #[test]
    fn pod_requests_count_init_containers_sidecars_and_overhead_like_the_scheduler() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}},
                           {"name": "b", "resources": {"limits": {"cpu": "500m", "nvidia.com/gpu": "2"}}}],
            "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "250m"}}},
                               {"name": "setup", "resources": {"requests": {"cpu": "3", "memory": "1Ki"}}}],
            "overhead": {"cpu": "10m"}}))
        .expect("pod spec");
        let r = pod_requests(&spec).expect("requests");
        // max(1 + 0.5 + 0.25 running, 0.25 + 3 during init) + 0.01 overhead.
        assert_eq!((r.cpu_milli, r.memory_bytes, r.gpus, r.pods), (3260, 1024, 2, 1));
        let bad: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "a", "resources": {"requests": {"memory": "x"}}}]}))
                .expect("pod spec");
        assert_eq!(pod_requests(&bad).map_err(|(r, _)| r), Err("memory".to_owned()));
    }

    #[test]
    fn nodes_and_pods_become_model_inputs() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        .expect("node");
        let info = node_info(&node).expect("named");
        assert_eq!(
            (info.cpu_milli, info.memory_bytes, info.max_pods, info.device_plugin_gpus),
            (96_000, 1 << 40, 110, Some(8))
        );
        assert!(info.ready && !info.unschedulable);
        assert_eq!(info.taints, vec![Taint::new("gpu", "", TaintEffect::NoSchedule)]);

        let pod = |phase: &str, node: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ml",
                    "labels": {"jobset.sigs.k8s.io/jobset-name": "train"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]}}))
            .expect("pod")
        };
        let bound = pod_info(&pod("Running", Some("n1"))).expect("bound pod counts");
        assert_eq!((bound.node.as_str(), bound.requests.gpus), ("n1", 8));
        assert_eq!(bound.gang, Some(GangKey::new("ml", "train")));
        assert!(pod_ready(&pod("Running", Some("n1"))));
        assert_eq!(pod_info(&pod("Pending", None)), None, "unbound pods hold nothing");
        assert_eq!(pod_info(&pod("Succeeded", Some("n1"))), None, "finished pods hold nothing");
    }
}
