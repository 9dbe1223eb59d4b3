//! The admission controller's decisions, without I/O: fed what the watches see, [`Admission::tick`] returns the
//! writes to make, in the order that keeps a crash harmless.
//!
//! The `Gang` status is the truth. This state remembers, per gang, the status last *stored* (read once at first
//! sight, then only what our own writes stored: the leader is the only writer) and the status *desired* now.
//! The JobSet's `spec.suspend` follows the stored phase only: it is released once `Admitted` is stored, so a
//! crash between the two writes leaves an admitted gang whose JobSet the next leader releases, and a crash before
//! the placement write leaves a pending gang whose reservation never existed outside memory. Nothing is lost and
//! nothing is admitted twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use muster_api::gang::{Gang, GangPhase, GangSpec, GangStatus, SlotPlacement};
use muster_api::gpunode::GPUNode;
use muster_api::{JobSet, keys};

use crate::gang::GangKey;
use crate::gang::demand::GangDemand;
use crate::gang::model::{ClusterModel, GpuReport, ModelConfig};
use crate::gang::nodeset::NodeSet;
use crate::gang::objects::{self, GangSpecError};
use crate::gang::placement::{ReserveError, per_node_of, replace_slots, reserve_slots};
use crate::gang::queue::{QueueConfig, Queues, RequeueDecision, on_pods_ready_timeout, pods_ready_deadline};

/// Knobs of the admission controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub model: ModelConfig,
    /// For queues without their own entry.
    pub default_queue: QueueConfig,
    pub queues: BTreeMap<String, QueueConfig>,
    /// Explanations computed per tick at most; the rest keep their reason until their turn (the head gangs of
    /// each queue go first). An explanation walks the cluster, so a thousand queued gangs must not all ask at once.
    pub explain_budget: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: ModelConfig::default(),
            default_queue: QueueConfig::default(),
            queues: BTreeMap::new(),
            explain_budget: 64,
        }
    }
}

/// A write to make. The shell executes them in order and reports each outcome back.
#[derive(Clone, Debug)]
pub enum Action {
    CreateGang(Box<Gang>),
    /// The JobSet's demand changed while the gang waits (upstream lets a suspended JobSet's pod templates change
    /// their nodeSelector, tolerations, labels and annotations): the Gang's spec follows.
    UpdateGangSpec {
        key: GangKey,
        spec: Box<GangSpec>,
    },
    WriteStatus {
        key: GangKey,
        status: Box<GangStatus>,
    },
    SetSuspend {
        key: GangKey,
        suspend: bool,
    },
}

/// What a tick did, for metrics.
#[derive(Clone, Debug, Default)]
pub struct TickReport {
    pub actions: Vec<Action>,
    /// Per admission: queue, time from queued to admitted.
    pub admitted: Vec<(String, Duration)>,
    /// Per gang that became Running: queue, time from admitted to running.
    pub running: Vec<(String, Duration)>,
    /// Per requeue: queue, reason.
    pub requeued: Vec<(String, &'static str)>,
}

/// Per queue, for the gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueSnapshot {
    pub pending: u64,
    pub inadmissible: u64,
    pub admitted: u64,
    pub admitted_not_running: u64,
    pub oldest_pending: Option<Duration>,
    pub oldest_admitted_not_running: Option<Duration>,
    /// The head gang, how long it has waited, and the GPUs it lacks now.
    pub head: Option<(GangKey, Duration, u64)>,
    pub reserved_gpus: u64,
}

pub const REQUEUE_PODS_READY_TIMEOUT: &str = "PodsReadyTimeout";
/// Slots moved off a node whose GPU died under the reservation (counted with the requeues, by this reason).
pub const REQUEUE_UNHEALTHY_GPU: &str = "UnhealthyGPU";

/// Which pods-ready deadline passed, and how many pods were ready (or done) then.
#[derive(Clone, Copy, Debug)]
enum Timeout {
    /// Admitted, and not every pod ready within the timeout.
    Admission { ready: usize, timeout: Duration },
    /// Running, lost readiness, and not ready again within the recovery timeout.
    Recovery { ready: usize, timeout: Duration },
}

impl Timeout {
    fn what(self, total: u32) -> String {
        match self {
            Timeout::Admission { ready, timeout } => {
                format!("{ready} of {total} pods were ready after {}s", timeout.as_secs())
            }
            Timeout::Recovery { ready, timeout } => {
                format!("the gang lost readiness and {ready} of {total} pods were ready {}s later", timeout.as_secs())
            }
        }
    }
}

#[derive(Clone, Debug)]
struct JobSetView {
    name: String,
    namespace: String,
    uid: String,
    suspended: bool,
    /// Completed or Failed.
    finished: Option<&'static str>,
    spec: Result<GangSpec, GangSpecError>,
}

#[derive(Clone, Debug)]
struct Tracked {
    queue: String,
    /// The Gang's spec as last seen, and one written since that was not seen yet.
    spec: GangSpec,
    spec_sent: Option<GangSpec>,
    demand: Result<GangDemand, String>,
    stored: GangStatus,
    desired: GangStatus,
    /// The model generation the reason was computed at.
    explained_at: Option<u64>,
    /// Since when a Running gang has had fewer pods ready (or done) than it has pods. In memory only: after a
    /// controller restart the recovery clock starts again, which errs on the side of waiting longer.
    unready_since: Option<SystemTime>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Admission {
    settings: Settings,
    model: ClusterModel,
    queues: Queues,
    priority_classes: HashMap<String, i32>,
    /// Gang-managed JobSets only (those carrying `muster.dev/admission-suspended`).
    jobsets: HashMap<GangKey, JobSetView>,
    gangs: HashMap<GangKey, Tracked>,
    /// Gangs asked for and not seen yet.
    creating: HashSet<GangKey>,
    /// Pods per gang that are ready or succeeded (Kueue's PodsReady counts both: a pod that finished its work
    /// before the last one became ready does not hold the gang back).
    ready: HashMap<GangKey, HashSet<String>>,
}

/// "1 pod", "3 pods".
fn pods(n: usize) -> String {
    if n == 1 { "1 pod".to_owned() } else { format!("{n} pods") }
}

fn time(t: SystemTime) -> Time {
    // Out of jiff's range only for absurd clocks; the epoch is then as good an answer as any.
    Time(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn system_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

impl Admission {
    pub fn new(settings: Settings) -> Self {
        let mut queues = Queues::new(settings.default_queue.clone());
        for (name, config) in &settings.queues {
            queues.set_config(name, config.clone());
        }
        Admission {
            model: ClusterModel::new(settings.model.clone()),
            queues,
            settings,
            priority_classes: HashMap::new(),
            jobsets: HashMap::new(),
            gangs: HashMap::new(),
            creating: HashSet::new(),
            ready: HashMap::new(),
        }
    }

    pub fn model(&self) -> &ClusterModel {
        &self.model
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    // === What the watches see ===

    pub fn priority_class_applied(&mut self, name: &str, value: i32) {
        self.priority_classes.insert(name.to_owned(), value);
    }

    pub fn priority_class_deleted(&mut self, name: &str) {
        self.priority_classes.remove(name);
    }

    pub fn jobset_applied(&mut self, js: &JobSet) {
        let (Some(name), Some(namespace)) = (js.metadata.name.as_deref(), js.metadata.namespace.as_deref()) else {
            return;
        };
        let key = GangKey::new(namespace, name);
        if js.annotation(keys::ADMISSION_OWNS_SUSPEND).is_none() {
            self.jobsets.remove(&key);
            return;
        }
        let condition_true = |t: &str| {
            js.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == t && c.status == "True"))
        };
        let finished = if condition_true(keys::CONDITION_COMPLETED) {
            Some(keys::CONDITION_COMPLETED)
        } else if condition_true(keys::CONDITION_FAILED) {
            Some(keys::CONDITION_FAILED)
        } else {
            None
        };
        let classes = &self.priority_classes;
        let view = JobSetView {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: js.metadata.uid.clone().unwrap_or_default(),
            suspended: js.suspended(),
            finished,
            spec: objects::gang_spec(js, |pc| classes.get(pc).copied()),
        };
        self.jobsets.insert(key, view);
    }

    pub fn jobset_deleted(&mut self, namespace: &str, name: &str) {
        let key = GangKey::new(namespace, name);
        self.jobsets.remove(&key);
        // Its Gang goes with it (owner reference); its GPUs are free now, not when the collector gets there.
        self.forget(&key);
    }

    pub fn gang_applied(&mut self, gang: &Gang, now: SystemTime) {
        let (Some(name), Some(namespace)) = (gang.metadata.name.as_deref(), gang.metadata.namespace.as_deref()) else {
            return;
        };
        let key = GangKey::new(namespace, name);
        self.creating.remove(&key);
        let demand = GangDemand::from_spec(key.clone(), &gang.spec).map_err(|e| e.to_string());
        if let Some(t) = self.gangs.get_mut(&key) {
            if t.spec_sent.as_ref() == Some(&gang.spec) {
                t.spec_sent = None;
            }
            t.spec.clone_from(&gang.spec);
            // Status: ours is the truth after first sight. The spec is the JobSet's; re-queue with the new demand.
            if t.demand != demand {
                if let Ok(d) = &demand
                    && self.queues.get(&key).is_some()
                {
                    self.queues.enqueue(d.clone(), now);
                }
                t.demand = demand;
            }
            return;
        }
        let stored = gang.status.clone().unwrap_or_default();
        let mut tracked = Tracked {
            queue: gang.spec.queue.clone(),
            spec: gang.spec.clone(),
            spec_sent: None,
            demand,
            desired: stored.clone(),
            stored,
            explained_at: None,
            unready_since: None,
        };
        match (tracked.stored.phase, &tracked.demand) {
            (GangPhase::Admitted | GangPhase::Running, Ok(demand)) => {
                match reserve_slots(&mut self.model, demand, &tracked.stored.placement) {
                    // Already reserved means we saw this gang before a relist; nothing to do.
                    Ok(()) | Err(ReserveError::Model(_)) => {}
                    Err(ReserveError::UnknownPodSet(pod_set)) => {
                        tracing::warn!(gang = %key, pod_set, "stored placement names an unknown pod set; queueing again");
                        tracked.desired.phase = GangPhase::Pending;
                        tracked.desired.placement.clear();
                        self.queues.enqueue(demand.clone(), now);
                    }
                }
            }
            (GangPhase::Finished, _) | (_, Err(_)) => {}
            // Given up after its requeuing limit: it stays so across restarts.
            (GangPhase::Inadmissible, Ok(_)) if self.deactivated(&tracked) => {}
            (GangPhase::Pending | GangPhase::Requeued | GangPhase::Inadmissible, Ok(demand)) => {
                let arrival = tracked
                    .stored
                    .queued_at
                    .as_ref()
                    .or(gang.metadata.creation_timestamp.as_ref())
                    .map_or(now, system_time);
                tracked.desired.queued_at.get_or_insert_with(|| time(arrival));
                // A requeued gang sits out the rest of its backoff, as it would have without the restart.
                let backoff =
                    tracked.stored.requeue_at.as_ref().filter(|_| tracked.stored.phase == GangPhase::Requeued);
                let requeues = u32::try_from(tracked.stored.requeue_count).unwrap_or(0);
                self.queues.restore(demand.clone(), arrival, backoff.map(system_time), requeues);
            }
        }
        self.gangs.insert(key, tracked);
    }

    pub fn gang_deleted(&mut self, namespace: &str, name: &str) {
        self.forget(&GangKey::new(namespace, name));
    }

    fn forget(&mut self, key: &GangKey) {
        self.gangs.remove(key);
        self.creating.remove(key);
        self.model.release(key);
        self.queues.remove(key);
        self.ready.remove(key);
    }

    pub fn node_applied(&mut self, node: &Node) {
        if let Some(info) = objects::node_info(node) {
            self.model.apply_node(info);
        }
    }

    pub fn node_deleted(&mut self, name: &str) {
        self.model.delete_node(name);
    }

    pub fn gpunode_applied(&mut self, gpunode: &GPUNode) {
        let (Some(name), Some(status)) = (gpunode.metadata.name.as_deref(), gpunode.status.as_ref()) else { return };
        self.model.apply_gpunode(GpuReport::from_status(name, status));
    }

    pub fn gpunode_deleted(&mut self, name: &str) {
        self.model.delete_gpunode(name);
    }

    pub fn pod_applied(&mut self, pod: &Pod) {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else { return };
        let info = objects::pod_info(pod);
        let holds_node = info.is_some();
        match info {
            Some(info) => self.model.apply_pod(info),
            None => self.model.delete_pod(ns, name),
        }
        if let Some(gang) = objects::pod_gang(pod) {
            let ready = self.ready.entry(gang).or_default();
            let succeeded = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
            if (holds_node && objects::pod_ready(pod)) || succeeded {
                ready.insert(name.to_owned());
            } else {
                ready.remove(name);
            }
        }
    }

    pub fn pod_deleted(&mut self, namespace: &str, name: &str, jobset: Option<&str>) {
        self.model.delete_pod(namespace, name);
        if let Some(ready) = jobset.and_then(|js| self.ready.get_mut(&GangKey::new(namespace, js))) {
            ready.remove(name);
        }
    }

    // === Outcomes of the writes ===

    pub fn gang_created(&mut self, key: &GangKey, ok: bool) {
        if !ok {
            // Asked again next tick.
            self.creating.remove(key);
        }
    }

    pub fn status_written(&mut self, key: &GangKey, status: &GangStatus) {
        if let Some(t) = self.gangs.get_mut(key) {
            t.stored = status.clone();
        }
    }

    /// A status write failed. An admission that was not stored is undone at once, so its GPUs are not held for a
    /// placement nobody will see; anything else is retried next tick.
    pub fn status_write_failed(&mut self, key: &GangKey, status: &GangStatus, now: SystemTime) {
        let Some(t) = self.gangs.get_mut(key) else { return };
        let admitted = |p: GangPhase| matches!(p, GangPhase::Admitted | GangPhase::Running);
        if admitted(status.phase) && !admitted(t.stored.phase) {
            self.model.release(key);
            t.desired = t.stored.clone();
            if let Ok(demand) = &t.demand {
                let arrival = status.queued_at.as_ref().map_or(now, system_time);
                self.queues.enqueue(demand.clone(), arrival);
            }
        }
    }

    /// Writing a Gang's spec failed: it is written again next tick.
    pub fn gang_spec_write_failed(&mut self, key: &GangKey) {
        if let Some(t) = self.gangs.get_mut(key) {
            t.spec_sent = None;
        }
    }

    /// Whether the gang was given up after its queue's requeuing limit (see [`on_pods_ready_timeout`]).
    fn deactivated(&self, t: &Tracked) -> bool {
        let limit = self.queues.config(&t.queue).pods_ready.requeuing_limit;
        let requeues = u32::try_from(t.stored.requeue_count).unwrap_or(0);
        t.stored.phase == GangPhase::Inadmissible && limit.is_some_and(|limit| requeues > limit)
    }

    pub fn suspend_set(&mut self, key: &GangKey, suspend: bool) {
        if let Some(js) = self.jobsets.get_mut(key) {
            js.suspended = suspend;
        }
    }

    // === Deciding ===

    /// One round: create missing Gangs, follow finished JobSets and pods' readiness, run a queue pass, refresh
    /// positions and reasons, then say which writes bring the cluster to what was decided.
    pub fn tick(&mut self, now: SystemTime) -> TickReport {
        self.model.set_time(now);
        let mut report = TickReport::default();
        self.create_missing_gangs(&mut report);
        self.follow_jobset_specs(now, &mut report);
        self.follow_lifecycle(now, &mut report);
        // After finished gangs gave their GPUs back, so that pods added by a scale-up can have them at once.
        self.follow_scaling(&mut report);
        // Ahead of the queue: an admitted gang whose reserved GPU died gets new nodes before anyone else does.
        self.replace_unhealthy(&mut report);

        // What each queue's admitted gangs hold, for the queues' fair turns.
        let mut in_use: BTreeMap<String, u64> = BTreeMap::new();
        for (key, t) in &self.gangs {
            if let Some(per_node) = self.model.reservation(key) {
                *in_use.entry(t.queue.clone()).or_default() +=
                    per_node.values().map(|r| u64::from(r.gpus)).sum::<u64>();
            }
        }
        let pass = self.queues.pass_fair(&mut self.model, now, &in_use);
        for admitted in pass.admitted {
            let Some(t) = self.gangs.get_mut(&admitted.key) else {
                // Not ours any more (deleted during the pass); give the GPUs back.
                self.model.release(&admitted.key);
                continue;
            };
            let nodes: BTreeSet<&str> = admitted.placement.slots.iter().map(|s| s.node.as_str()).collect();
            let slots = admitted.placement.slots.len();
            t.desired = GangStatus {
                phase: GangPhase::Admitted,
                queue_position: None,
                reason: Some(format!(
                    "admitted: {} placed on {} node{}",
                    pods(slots),
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" }
                )),
                placement: admitted.placement.slots,
                held_nodes: Vec::new(),
                admitted_at: Some(time(now)),
                running_at: None,
                finished_at: None,
                requeue_at: None,
                ..t.desired.clone()
            };
            let waited = now.duration_since(admitted.arrival).unwrap_or_default();
            report.admitted.push((admitted.queue, waited));
        }
        self.refresh_queued();
        self.emit_writes(&mut report);
        report
    }

    fn create_missing_gangs(&mut self, report: &mut TickReport) {
        // Sorted, so gangs created in one round are queued in name order when their arrivals tie.
        let mut jobsets: Vec<(&GangKey, &JobSetView)> = self.jobsets.iter().collect();
        jobsets.sort_by(|a, b| a.0.cmp(b.0));
        for (key, js) in jobsets {
            if js.finished.is_some() || self.gangs.contains_key(key) || self.creating.contains(key) {
                continue;
            }
            // A JobSet whose demand we cannot read still gets a Gang: its status is where the user learns why.
            let spec = js
                .spec
                .clone()
                .unwrap_or_else(|_| GangSpec { queue: keys::DEFAULT_QUEUE.to_owned(), ..GangSpec::default() });
            let gang = Gang {
                metadata: ObjectMeta {
                    name: Some(js.name.clone()),
                    namespace: Some(js.namespace.clone()),
                    labels: Some(BTreeMap::from([(keys::JOBSET_NAME.to_owned(), js.name.clone())])),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "jobset.x-k8s.io/v1alpha2".to_owned(),
                        kind: "JobSet".to_owned(),
                        name: js.name.clone(),
                        uid: js.uid.clone(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]),
                    ..ObjectMeta::default()
                },
                spec,
                status: None,
            };
            self.creating.insert(key.clone());
            report.actions.push(Action::CreateGang(Box::new(gang)));
        }
    }

    /// Waiting gangs follow their JobSet's demand. A changed one is taken at once (so no pass admits the gang with
    /// the old one) and the Gang's spec is rewritten to match; one that cannot be read takes the gang out of its
    /// queue (`follow_lifecycle` says why), and one readable again puts it back. So every waiting gang with a
    /// readable demand is in its queue, except one given up after its requeuing limit. Admitted and running gangs
    /// keep the demand they were placed with.
    fn follow_jobset_specs(&mut self, now: SystemTime, report: &mut TickReport) {
        let mut keys: Vec<GangKey> = Vec::new();
        for (key, t) in &self.gangs {
            let waiting = matches!(t.desired.phase, GangPhase::Pending | GangPhase::Requeued | GangPhase::Inadmissible);
            let Some(js) = self.jobsets.get(key).filter(|_| waiting && !self.deactivated(t)) else { continue };
            let queued = self.queues.get(key).is_some();
            let due = match &js.spec {
                Err(_) => queued,
                Ok(spec) => *spec != t.spec || (!queued && t.demand.is_ok()) || t.demand.is_err(),
            };
            if due {
                keys.push(key.clone());
            }
        }
        keys.sort();
        for key in keys {
            let (Some(js), Some(t)) = (self.jobsets.get(&key), self.gangs.get_mut(&key)) else { continue };
            let Ok(current) = &js.spec else {
                self.queues.remove(&key);
                continue;
            };
            let spec = objects::followed_spec(&t.spec, current);
            if spec != t.spec && t.spec_sent.as_ref() != Some(&spec) {
                t.spec_sent = Some(spec.clone());
                report.actions.push(Action::UpdateGangSpec { key: key.clone(), spec: Box::new(spec.clone()) });
            }
            let demand = GangDemand::from_spec(key.clone(), &spec).map_err(|e| e.to_string());
            let changed = t.demand != demand;
            if changed {
                t.demand = demand;
                t.queue.clone_from(&spec.queue);
                t.explained_at = None;
            }
            match &t.demand {
                Err(_) => {
                    self.queues.remove(&key);
                }
                Ok(d) if changed || self.queues.get(&key).is_none() => {
                    if t.desired.phase == GangPhase::Inadmissible {
                        t.desired.phase = GangPhase::Pending;
                    }
                    let arrival = t.desired.queued_at.as_ref().map_or(now, system_time);
                    t.desired.queued_at = Some(time(arrival));
                    self.queues.enqueue(d.clone(), arrival);
                }
                Ok(_) => {}
            }
        }
    }

    /// Admitted and running gangs follow a change of their Jobs' pod counts (upstream's `ElasticJobSet` gate lets a
    /// running JobSet's Indexed ReplicatedJobs change parallelism; the reconciler scales the Jobs in place). Pods
    /// beyond the new count give their slots back at once. Added pods get slots on the free room outside the
    /// nodes held for queue heads, the gang's other slots staying where they are, as when slots move off a dead
    /// GPU. Added pods that find no room wait for it, tried again every tick. The reconciler grows a gang's Jobs
    /// only as far as their slots go, so such pods do not exist yet, and the gang counts as ready with its placed
    /// pods ready.
    ///
    /// The slots follow from the demand and the placement alone, so a restart between the spec write and the
    /// status write finishes the change. Nothing else of a running gang's demand changes.
    fn follow_scaling(&mut self, report: &mut TickReport) {
        let held: NodeSet = self.queues.held_nodes().keys().filter_map(|n| self.model.id(n)).collect();
        for key in self.admitted_keys() {
            let Some(t) = self.gangs.get_mut(&key) else { continue };
            // The pod counts are the JobSet's (the reconciler scales the Jobs to them); the rest is the Gang's spec
            // as last seen. A stale watch event of the Gang may have set the demand to an older spec: it is set
            // back here, before any slot moves.
            let current = self.jobsets.get(&key).and_then(|js| js.spec.as_ref().ok());
            let scaled = current.and_then(|c| objects::scaled_spec(&t.spec, c));
            let target = scaled.as_ref().unwrap_or(&t.spec);
            if scaled.is_some() && t.spec_sent.as_ref() != Some(target) {
                t.spec_sent = Some(target.clone());
                report.actions.push(Action::UpdateGangSpec { key: key.clone(), spec: Box::new(target.clone()) });
            }
            if !t.demand.as_ref().is_ok_and(|d| d.counts_match(target))
                && let Ok(demand) = GangDemand::from_spec(key.clone(), target)
            {
                t.demand = Ok(demand);
            }
            let Ok(demand) = &t.demand else { continue };
            // Every tick, for every admitted gang: the common case (nothing scaled) allocates nothing.
            let is_slot = |s: &SlotPlacement| demand.has_slot(&s.pod_set, s.job_index, s.pod_index);
            let placement = &t.desired.placement;
            if placement.len() == demand.total_pods() as usize && placement.iter().all(is_slot) {
                continue;
            }
            let (kept, extra): (Vec<SlotPlacement>, Vec<SlotPlacement>) = placement.iter().cloned().partition(is_slot);
            let missing = demand.missing_slots(&kept);
            let mut done = Vec::new();
            if !extra.is_empty() {
                let Some(before) = self.model.reservation(&key).cloned() else { continue };
                self.model.release(&key);
                if reserve_slots(&mut self.model, demand, &kept).is_err() {
                    let _ = self.model.reserve(&key, &before);
                    continue;
                }
                done.push(format!("{} removed, GPUs given back", pods(extra.len())));
            }
            t.desired.placement.clone_from(&kept);
            // A growth that does not fit changes nothing in the model, so waiting for room costs no re-explaining.
            if !missing.is_empty() {
                match replace_slots(&self.model, demand, &missing, &kept, &held) {
                    Ok(new) => {
                        let mut placement = kept.clone();
                        placement.extend(new);
                        demand.sort_slots(&mut placement);
                        self.model.release(&key);
                        if reserve_slots(&mut self.model, demand, &placement).is_ok() {
                            t.desired.placement = placement;
                            done.push(format!("{} added and placed", pods(missing.len())));
                        } else {
                            let _ = reserve_slots(&mut self.model, demand, &kept);
                        }
                    }
                    Err(no) => done.push(format!(
                        "{} added, waiting for room ({} Job {} does not fit the free GPUs)",
                        pods(missing.len()),
                        no.pod_set,
                        no.job_index
                    )),
                }
            }
            t.desired.reason = Some(format!("scaled to {}: {}", pods(demand.total_pods() as usize), done.join("; ")));
        }
    }

    /// Admitted and running gangs, in name order (the order in which they compete for free room).
    fn admitted_keys(&self) -> Vec<GangKey> {
        let mut keys: Vec<GangKey> = self
            .gangs
            .iter()
            .filter(|(_, t)| matches!(t.desired.phase, GangPhase::Admitted | GangPhase::Running))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    fn follow_lifecycle(&mut self, now: SystemTime, report: &mut TickReport) {
        for (key, t) in &mut self.gangs {
            let Some(js) = self.jobsets.get(key) else { continue };
            if let Some(how) = js.finished {
                if t.desired.phase != GangPhase::Finished {
                    self.model.release(key);
                    self.queues.remove(key);
                    t.desired.phase = GangPhase::Finished;
                    t.desired.queue_position = None;
                    t.desired.finished_at = Some(time(now));
                    t.desired.reason = Some(format!("the JobSet {}; its GPUs are released", how.to_lowercase()));
                }
                continue;
            }
            // Never queued: say why, once.
            let unreadable = match (&js.spec, &t.demand) {
                (Err(why), _) => Some(format!("the JobSet's demand cannot be read: {why}")),
                (_, Err(why)) => Some(format!("the gang's demand cannot be read: {why}")),
                _ => None,
            };
            if let Some(why) = unreadable {
                if !matches!(t.desired.phase, GangPhase::Admitted | GangPhase::Running) {
                    t.desired.phase = GangPhase::Inadmissible;
                    t.desired.reason = Some(why);
                }
                continue;
            }
            if !matches!(t.desired.phase, GangPhase::Admitted | GangPhase::Running) {
                continue;
            }
            let Ok(demand) = &t.demand else { continue };
            let ready = self.ready.get(key).map_or(0, HashSet::len);
            // The placed pods: after a scale-up, added pods that wait for room are not counted against the gang.
            let placed =
                if t.desired.placement.is_empty() { demand.total_pods() as usize } else { t.desired.placement.len() };
            let all_ready = ready >= placed;
            let config = &self.queues.config(&t.queue).pods_ready;
            let timeout = if t.desired.phase == GangPhase::Admitted {
                let admitted_at = t.desired.admitted_at.as_ref().map_or(now, system_time);
                if all_ready {
                    t.desired.phase = GangPhase::Running;
                    t.desired.running_at = Some(time(now));
                    t.desired.reason = Some("every pod of the gang is ready".to_owned());
                    report.running.push((t.queue.clone(), now.duration_since(admitted_at).unwrap_or_default()));
                    continue;
                }
                if now < pods_ready_deadline(config, admitted_at) {
                    continue;
                }
                Timeout::Admission { ready, timeout: config.timeout }
            } else {
                // Running: a failed pod or a group restart took readiness away; it must come back in time.
                let Some(limit) = config.recovery().filter(|_| !all_ready) else {
                    t.unready_since = None;
                    continue;
                };
                let since = *t.unready_since.get_or_insert(now);
                if now.duration_since(since).unwrap_or_default() < limit {
                    continue;
                }
                Timeout::Recovery { ready, timeout: limit }
            };
            t.unready_since = None;
            let requeues = u32::try_from(t.desired.requeue_count).unwrap_or(0);
            let decision = on_pods_ready_timeout(config, requeues, now);
            self.model.release(key);
            let arrival = t.desired.queued_at.as_ref().map_or(now, system_time);
            report.requeued.push((t.queue.clone(), REQUEUE_PODS_READY_TIMEOUT));
            t.desired.placement.clear();
            t.desired.admitted_at = None;
            t.desired.running_at = None;
            let total = demand.total_pods();
            match decision {
                RequeueDecision::Requeue { requeue_count, eligible_at } => {
                    if let Some(arrival) = self.queues.requeue(demand.clone(), arrival, decision, now) {
                        t.desired.queued_at = Some(time(arrival));
                    }
                    t.desired.requeue_at = Some(time(eligible_at));
                    t.desired.phase = GangPhase::Requeued;
                    t.desired.requeue_count = i32::try_from(requeue_count).unwrap_or(i32::MAX);
                    let wait = eligible_at.duration_since(now).unwrap_or_default();
                    t.desired.reason = Some(format!(
                        "{}; suspended, GPUs released, queued again after {}s",
                        timeout.what(total),
                        wait.as_secs()
                    ));
                }
                RequeueDecision::Deactivate { requeue_count } => {
                    t.desired.phase = GangPhase::Inadmissible;
                    t.desired.requeue_count = i32::try_from(requeue_count).unwrap_or(i32::MAX);
                    t.desired.reason = Some(format!(
                        "{}; requeued {requeue_count} times, the requeuing limit is reached",
                        timeout.what(total)
                    ));
                }
            }
        }
    }

    /// Moves the slots of admitted gangs off nodes where GPUs died under their reservation; the other slots stay.
    /// When no room is left elsewhere the reservation stays as it is (the pods there fail and restart as the
    /// JobSet's failure policy says) and this is tried again next tick.
    fn replace_unhealthy(&mut self, report: &mut TickReport) {
        for key in self.admitted_keys() {
            let Some(held) = self.model.reservation(&key).cloned() else { continue };
            let mut bad: Vec<&String> =
                held.keys().filter(|n| self.model.id(n).is_some_and(|id| self.model.gpu_deficit(id) > 0)).collect();
            if bad.is_empty() {
                continue;
            }
            bad.sort();
            let Some(t) = self.gangs.get_mut(&key) else { continue };
            let Ok(demand) = &t.demand else { continue };
            let (moving, kept): (Vec<SlotPlacement>, Vec<SlotPlacement>) =
                t.desired.placement.iter().cloned().partition(|s| bad.contains(&&s.node));
            if per_node_of(demand, &kept).is_err() {
                continue;
            }
            let mut avoid = NodeSet::new();
            bad.iter().filter_map(|n| self.model.id(n)).for_each(|id| avoid.insert(id));
            self.model.release(&key);
            let _ = reserve_slots(&mut self.model, demand, &kept);
            let nodes = bad.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            match replace_slots(&self.model, demand, &moving, &kept, &avoid) {
                Ok(new) => {
                    for slot in &mut t.desired.placement {
                        if let Some(n) = new.iter().find(|n| {
                            (n.pod_set.as_str(), n.job_index, n.pod_index)
                                == (slot.pod_set.as_str(), slot.job_index, slot.pod_index)
                        }) {
                            slot.node.clone_from(&n.node);
                        }
                    }
                    self.model.release(&key);
                    if reserve_slots(&mut self.model, demand, &t.desired.placement).is_err() {
                        let _ = self.model.reserve(&key, &held);
                    }
                    let moved = pods(moving.len());
                    t.desired.reason = Some(format!("re-placed {moved} off {nodes}: GPUs there stopped being healthy"));
                    report.requeued.push((t.queue.clone(), REQUEUE_UNHEALTHY_GPU));
                }
                Err(_) => {
                    self.model.release(&key);
                    if reserve_slots(&mut self.model, demand, &t.desired.placement).is_err() {
                        let _ = self.model.reserve(&key, &held);
                    }
                    t.desired.reason = Some(format!(
                        "GPUs stopped being healthy on {nodes} under {} reserved pods; no healthy room to move them yet",
                        moving.len()
                    ));
                }
            }
        }
    }

    /// Positions and reasons of queued gangs; explanations within the budget, heads first.
    fn refresh_queued(&mut self) {
        let generation = self.model.generation();
        let mut budget = self.settings.explain_budget;
        let names: Vec<String> = self.queues.queue_names().map(str::to_owned).collect();
        // Held nodes are published on the head's status, so the plugin and the extender can see them too.
        let mut held: BTreeMap<&GangKey, Vec<String>> = BTreeMap::new();
        for (node, gang) in self.queues.held_nodes() {
            held.entry(gang).or_default().push(node.to_owned());
        }
        for (key, t) in &mut self.gangs {
            t.desired.held_nodes = held.remove(key).unwrap_or_default();
        }
        let orders: Vec<Vec<GangKey>> = names.iter().map(|q| self.queues.order(q)).collect();
        let longest = orders.iter().map(Vec::len).max().unwrap_or(0);
        // Round-robin over queues by position, so every queue's head is explained before anyone's tail.
        for position in 0..longest {
            for order in &orders {
                let Some(key) = order.get(position) else { continue };
                let (Some(t), Some(queued)) = (self.gangs.get_mut(key), self.queues.get(key)) else { continue };
                t.desired.queue_position = Some(i32::try_from(position + 1).unwrap_or(i32::MAX));
                let phase = if queued.inadmissible.is_some() {
                    GangPhase::Inadmissible
                } else if t.desired.phase == GangPhase::Requeued && queued.eligible_at.is_some() {
                    GangPhase::Requeued
                } else {
                    GangPhase::Pending
                };
                let fresh = t.explained_at == Some(generation) && t.desired.phase == phase;
                t.desired.phase = phase;
                if phase == GangPhase::Requeued || fresh || budget == 0 {
                    continue;
                }
                if let Some(why) = self.queues.explain(&self.model, key) {
                    budget -= 1;
                    t.desired.reason = Some(why.message);
                    t.explained_at = Some(generation);
                }
            }
        }
    }

    fn emit_writes(&mut self, report: &mut TickReport) {
        let mut keys: Vec<&GangKey> = self.gangs.keys().collect();
        keys.sort();
        for key in keys {
            let Some(t) = self.gangs.get(key) else { continue };
            if t.desired != t.stored {
                report.actions.push(Action::WriteStatus { key: key.clone(), status: Box::new(t.desired.clone()) });
            }
            let Some(js) = self.jobsets.get(key) else { continue };
            if js.finished.is_some() {
                continue;
            }
            // Released only once the placement is stored; held again as soon as a requeue is stored.
            let suspend = !matches!(t.stored.phase, GangPhase::Admitted | GangPhase::Running);
            if js.suspended != suspend {
                report.actions.push(Action::SetSuspend { key: key.clone(), suspend });
            }
        }
    }

    // === Reading ===

    pub fn snapshot(&self, now: SystemTime) -> BTreeMap<String, QueueSnapshot> {
        let mut out: BTreeMap<String, QueueSnapshot> = BTreeMap::new();
        for (key, t) in &self.gangs {
            let q = out.entry(t.queue.clone()).or_default();
            let age = |at: Option<&Time>| at.map(|a| now.duration_since(system_time(a)).unwrap_or_default());
            match t.stored.phase {
                GangPhase::Pending | GangPhase::Requeued => {
                    q.pending += 1;
                    q.oldest_pending = q.oldest_pending.max(age(t.stored.queued_at.as_ref()));
                }
                GangPhase::Inadmissible => q.inadmissible += 1,
                GangPhase::Admitted => {
                    q.admitted += 1;
                    q.admitted_not_running += 1;
                    q.oldest_admitted_not_running =
                        q.oldest_admitted_not_running.max(age(t.stored.admitted_at.as_ref()));
                }
                GangPhase::Running => q.admitted += 1,
                GangPhase::Finished => {}
            }
            if let Some(per_node) = self.model.reservation(key) {
                q.reserved_gpus += per_node.values().map(|r| u64::from(r.gpus)).sum::<u64>();
            }
        }
        for (name, q) in &mut out {
            let Some(head) = self
                .queues
                .order(name)
                .into_iter()
                .find(|k| self.queues.get(k).is_some_and(|g| g.inadmissible.is_none()))
            else {
                continue;
            };
            let waited = self.queues.get(&head).map(|g| now.duration_since(g.arrival).unwrap_or_default());
            let shortfall = self.queues.explain(&self.model, &head).map_or(0, |x| x.gpu_shortfall);
            q.head = Some((head, waited.unwrap_or_default(), shortfall));
        }
        out
    }

    /// The stored status of a gang, as the API server has it.
    pub fn stored(&self, key: &GangKey) -> Option<&GangStatus> {
        self.gangs.get(key).map(|t| &t.stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn jobset(name: &str, gpus_per_pod: u32, replicas: u32, extra: Value) -> JobSet {
        let mut v = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}"),
                         "annotations": {"muster.dev/admission-suspended": "true"}},
            "spec": {"suspend": true, "replicatedJobs": [{"name": "w", "replicas": replicas, "template": {"spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"limits": {"nvidia.com/gpu": gpus_per_pod.to_string()}}}]}}}}}]}});
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                obj.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).expect("jobset")
    }

    fn node(name: &str) -> (Node, GPUNode) {
        let node = serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        .expect("node");
        let devices: Vec<Value> = (0..8).map(|i| json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "model": "NVIDIA H100 80GB HBM3", "pciBusId": format!("0000:{i:02x}:00.0"), "health": {"healthy": true}})).collect();
        let gpunode = serde_json::from_value(json!({"apiVersion": "muster.dev/v1alpha1", "kind": "GPUNode",
            "metadata": {"name": name}, "spec": {"nodeName": name},
            "status": {"nvmlAvailable": true, "devices": devices, "heartbeatTime": Time(Timestamp::try_from(at(0)).expect("t"))}}))
        .expect("gpunode");
        (node, gpunode)
    }

    /// A cluster of `n` 8-GPU nodes and the JobSets, with their Gangs created as the API server would.
    fn admission(nodes: usize, jobsets: &[JobSet]) -> Admission {
        let mut a = Admission::new(Settings::default());
        for i in 0..nodes {
            let (n, g) = node(&format!("gpu-{i}"));
            a.node_applied(&n);
            a.gpunode_applied(&g);
        }
        for js in jobsets {
            a.jobset_applied(js);
        }
        let report = a.tick(at(1));
        for (i, action) in report.actions.into_iter().enumerate() {
            if let Action::CreateGang(mut gang) = action {
                // Created in name order, a millisecond apart.
                gang.metadata.creation_timestamp = Some(time(at(0) + Duration::from_millis(i as u64)));
                a.gang_applied(&gang, at(1));
            }
        }
        a
    }

    fn writes(report: &TickReport) -> Vec<(String, GangPhase)> {
        report
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::WriteStatus { key, status } => Some((key.to_string(), status.phase)),
                _ => None,
            })
            .collect()
    }

    fn suspends(report: &TickReport) -> Vec<(String, bool)> {
        report
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::SetSuspend { key, suspend } => Some((key.to_string(), *suspend)),
                _ => None,
            })
            .collect()
    }

    /// Carries out every status write of a tick as if the API server accepted it.
    fn store_all(a: &mut Admission, report: &TickReport) {
        for action in &report.actions {
            match action {
                Action::WriteStatus { key, status } => a.status_written(key, status),
                Action::SetSuspend { key, suspend } => a.suspend_set(key, *suspend),
                Action::CreateGang(_) | Action::UpdateGangSpec { .. } => {}
            }
        }
    }

    /// The Gang specs a tick rewrites.
    fn spec_writes(report: &TickReport) -> Vec<(String, GangSpec)> {
        report
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::UpdateGangSpec { key, spec } => Some((key.to_string(), (**spec).clone())),
                _ => None,
            })
            .collect()
    }

    /// A Gang as the API server returns it: `spec` for the JobSet `name` in `ml`, with `status`.
    fn gang_object(name: &str, spec: GangSpec, status: Option<GangStatus>) -> Gang {
        Gang {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ml".into()), ..ObjectMeta::default() },
            spec,
            status,
        }
    }

    #[test]
    fn the_placement_is_stored_before_the_jobset_is_released_and_the_second_gang_waits_with_a_reason() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({})), jobset("second", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Admitted), ("ml/second".into(), GangPhase::Pending)]);
        assert!(suspends(&r).is_empty(), "nothing is released before its placement is stored");
        store_all(&mut a, &r);
        let r = a.tick(at(3));
        assert_eq!(suspends(&r), [("ml/first".into(), false)]);
        let second = a.stored(&GangKey::new("ml", "second")).expect("tracked");
        assert_eq!(second.queue_position, Some(1));
        assert!(second.reason.as_deref().is_some_and(|r| r.contains("16")), "{:?}", second.reason);
        let first = a.stored(&GangKey::new("ml", "first")).expect("tracked");
        assert_eq!(first.placement.len(), 2);
    }

    #[test]
    fn a_restart_between_placement_and_release_releases_once_and_admits_nothing_twice() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({})), jobset("second", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        // Crash now: the placement is stored, the JobSet still suspended. A new process lists everything.
        let stored_first = a.stored(&GangKey::new("ml", "first")).cloned().expect("first");
        let stored_second = a.stored(&GangKey::new("ml", "second")).cloned().expect("second");
        let mut b = Admission::new(Settings::default());
        for i in 0..2 {
            let (n, g) = node(&format!("gpu-{i}"));
            b.node_applied(&n);
            b.gpunode_applied(&g);
        }
        for (name, status) in [("first", stored_first), ("second", stored_second)] {
            b.jobset_applied(&jobset(name, 8, 2, json!({})));
            let gang = Gang {
                metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ml".into()), ..ObjectMeta::default() },
                spec: objects::gang_spec(&jobset(name, 8, 2, json!({})), |_| None).expect("spec"),
                status: Some(status),
            };
            b.gang_applied(&gang, at(5));
        }
        let r = b.tick(at(6));
        assert_eq!(suspends(&r), [("ml/first".into(), false)], "the stored admission is finished");
        assert!(
            !writes(&r).iter().any(|(_, p)| *p == GangPhase::Admitted),
            "nothing is admitted again: {:?}",
            writes(&r)
        );
    }

    #[test]
    fn a_failed_placement_write_gives_the_gpus_back() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({})), jobset("second", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        for action in &r.actions {
            if let Action::WriteStatus { key, status } = action {
                if status.phase == GangPhase::Admitted {
                    a.status_write_failed(key, status, at(2));
                } else {
                    a.status_written(key, status);
                }
            }
        }
        assert!(a.model().reservations().next().is_none(), "no reservation without a stored placement");
        let r = a.tick(at(3));
        let admitted: Vec<_> = writes(&r).into_iter().filter(|(_, p)| *p == GangPhase::Admitted).collect();
        assert_eq!(admitted, [("ml/first".into(), GangPhase::Admitted)], "the first gang, first in line, again");
    }

    #[test]
    fn finishing_releases_the_gpus_for_the_next_gang() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({})), jobset("second", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        let r = a.tick(at(3));
        store_all(&mut a, &r);
        a.jobset_applied(&jobset(
            "first",
            8,
            2,
            json!({"status": {"conditions": [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted",
                "message": "jobset completed successfully", "lastTransitionTime": "2027-01-01T00:00:00Z"}]}}),
        ));
        let r = a.tick(at(4));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Finished), ("ml/second".into(), GangPhase::Admitted)]);
    }

    #[test]
    fn the_head_publishes_the_nodes_held_for_it_until_it_is_admitted() {
        let mut a = admission(2, &[jobset("first", 8, 1, json!({})), jobset("second", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        let second = GangKey::new("ml", "second");
        assert!(a.stored(&second).expect("second").held_nodes.is_empty(), "nothing held before the hold time");
        // Default hold time 60 s: from then on both nodes are held for the head, the busy one included.
        let r = a.tick(at(70));
        store_all(&mut a, &r);
        assert_eq!(a.stored(&second).expect("second").held_nodes, ["gpu-0", "gpu-1"]);
        assert!(a.stored(&GangKey::new("ml", "first")).expect("first").held_nodes.is_empty());
        a.jobset_applied(&jobset(
            "first",
            8,
            1,
            json!({"status": {"conditions": [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted",
                "message": "jobset completed successfully", "lastTransitionTime": "2027-01-01T00:00:00Z"}]}}),
        ));
        let r = a.tick(at(71));
        store_all(&mut a, &r);
        let stored = a.stored(&second).expect("second");
        assert_eq!(stored.phase, GangPhase::Admitted);
        assert!(stored.held_nodes.is_empty(), "an admitted gang holds its placement, not a hold");
    }

    #[test]
    fn ready_pods_make_it_running_and_a_timeout_requeues_it_suspended() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        let pod = |i: u32, ready: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": format!("first-w-0-{i}"), "namespace": "ml",
                    "labels": {"jobset.sigs.k8s.io/jobset-name": "first"}},
                "spec": {"nodeName": format!("gpu-{i}"), "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}}))
            .expect("pod")
        };
        a.pod_applied(&pod(0, "True"));
        a.pod_applied(&pod(1, "False"));
        let r = a.tick(at(10));
        assert!(writes(&r).is_empty(), "one of two pods ready is not running: {:?}", writes(&r));
        // Past the 5-minute pods-ready timeout: suspended, released, queued again.
        let r = a.tick(at(2 + 301));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Requeued)]);
        assert_eq!(a.model().reservations().count(), 0);
        store_all(&mut a, &r);
        let r = a.tick(at(2 + 302));
        assert_eq!(suspends(&r), [("ml/first".into(), true)]);
        let requeued = a.stored(&GangKey::new("ml", "first")).cloned().expect("stored");
        assert_eq!(requeued.requeue_count, 1);
        // The first backoff is a minute (Kueue's default base), and it is recorded.
        let requeue_at = requeued.requeue_at.as_ref().map(system_time).expect("requeueAt");
        assert_eq!(requeue_at, at(2 + 301 + 60));

        // A restart in the middle of the backoff waits out the rest of it, and the gang keeps its place. (The
        // agents reported at 0: an hour's heartbeat timeout keeps them trusted.)
        let model = ModelConfig { heartbeat_timeout: Duration::from_secs(3600), ..ModelConfig::default() };
        let mut b = Admission::new(Settings { model, ..Settings::default() });
        for i in 0..2 {
            let (n, g) = node(&format!("gpu-{i}"));
            b.node_applied(&n);
            b.gpunode_applied(&g);
        }
        b.jobset_applied(&jobset("first", 8, 2, json!({})));
        let spec = objects::gang_spec(&jobset("first", 8, 2, json!({})), |_| None).expect("spec");
        b.gang_applied(&gang_object("first", spec, Some(requeued)), at(320));
        assert!(writes(&b.tick(at(330))).iter().all(|(_, p)| *p != GangPhase::Admitted), "still backing off");
        let r = b.tick(at(2 + 301 + 61));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Admitted)]);
        let admitted = r.actions.iter().find_map(|a| match a {
            Action::WriteStatus { status, .. } => Some(status.clone()),
            _ => None,
        });
        assert_eq!(admitted.map(|s| (s.requeue_count, s.requeue_at)), Some((1, None)));

        let mut a = admission(2, &[jobset("first", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        a.pod_applied(&pod(0, "True"));
        a.pod_applied(&pod(1, "True"));
        let r = a.tick(at(10));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Running)]);
    }

    fn first_pod(i: u32, phase: &str, ready: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": format!("first-w-0-{i}"), "namespace": "ml",
                "labels": {"jobset.sigs.k8s.io/jobset-name": "first"}},
            "spec": {"nodeName": format!("gpu-{i}"), "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}}))
        .expect("pod")
    }

    #[test]
    fn a_running_gang_that_loses_readiness_has_the_recovery_timeout_to_regain_it() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        a.pod_applied(&first_pod(0, "Running", "True"));
        a.pod_applied(&first_pod(1, "Running", "True"));
        let r = a.tick(at(10));
        store_all(&mut a, &r);
        // A pod finished its work early: done counts as ready, nothing happens however long it takes.
        a.pod_applied(&first_pod(1, "Succeeded", "False"));
        let r = a.tick(at(20));
        assert!(writes(&r).is_empty(), "{:?}", writes(&r));
        let r = a.tick(at(20 + 400));
        assert!(writes(&r).is_empty(), "a succeeded pod is not a lost one: {:?}", writes(&r));

        // A group restart recreated the pod, and it does not become ready: 300 s (the timeout) later, requeued.
        a.pod_deleted("ml", "first-w-0-1", Some("first"));
        a.pod_applied(&first_pod(1, "Pending", "False"));
        let lost = 500;
        let r = a.tick(at(lost));
        assert!(writes(&r).is_empty(), "{:?}", writes(&r));
        let r = a.tick(at(lost + 299));
        assert!(writes(&r).is_empty(), "within the recovery timeout: {:?}", writes(&r));
        let r = a.tick(at(lost + 300));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Requeued)]);
        assert_eq!(a.model().reservations().count(), 0, "its GPUs are released");
        let status = match &r.actions[..] {
            [Action::WriteStatus { status, .. }] => status.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status.reason.as_deref(),
            Some(
                "the gang lost readiness and 1 of 2 pods were ready 300s later; suspended, GPUs released, queued \
                 again after 60s"
            )
        );
        assert!(status.running_at.is_none() && status.placement.is_empty());

        // Ready again in time: the clock stops; and with the recovery timeout turned off nothing is ever requeued.
        let mut settings = Settings::default();
        settings.default_queue.pods_ready.recovery_timeout = Some(Duration::ZERO);
        for (settings, lost_for) in [(Settings::default(), 200), (settings, 5000)] {
            let mut a = Admission::new(settings);
            for i in 0..2 {
                let (n, g) = node(&format!("gpu-{i}"));
                a.node_applied(&n);
                let mut g = g;
                if let Some(s) = g.status.as_mut() {
                    s.heartbeat_time = Some(time(at(lost_for + 100)));
                }
                a.gpunode_applied(&g);
            }
            a.jobset_applied(&jobset("first", 8, 2, json!({})));
            let r = a.tick(at(1));
            for action in r.actions {
                if let Action::CreateGang(gang) = action {
                    a.gang_applied(&gang, at(1));
                }
            }
            let r = a.tick(at(2));
            store_all(&mut a, &r);
            a.pod_applied(&first_pod(0, "Running", "True"));
            a.pod_applied(&first_pod(1, "Running", "True"));
            let r = a.tick(at(3));
            store_all(&mut a, &r);
            a.pod_applied(&first_pod(1, "Running", "False"));
            let r = a.tick(at(10));
            assert!(writes(&r).is_empty());
            let r = a.tick(at(10 + lost_for));
            assert!(writes(&r).is_empty(), "{lost_for}: {:?}", writes(&r));
            a.pod_applied(&first_pod(1, "Running", "True"));
            let r = a.tick(at(11 + lost_for));
            assert!(writes(&r).is_empty());
            a.pod_applied(&first_pod(1, "Running", "False"));
            let r = a.tick(at(12 + lost_for + 250));
            assert!(writes(&r).is_empty(), "the clock started again when readiness was lost again");
        }
    }

    #[test]
    fn slots_on_a_node_whose_gpu_dies_move_and_the_others_stay() {
        let mut a = admission(3, &[jobset("pair", 8, 2, json!({}))]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        let before = a.stored(&GangKey::new("ml", "pair")).cloned().expect("stored");
        let nodes: Vec<String> = before.placement.iter().map(|s| s.node.clone()).collect();
        assert_eq!(nodes, ["gpu-0", "gpu-1"]);
        // GPU 3 of gpu-1 falls off the bus.
        let (_, mut sick) = node("gpu-1");
        if let Some(d) = sick.status.as_mut().and_then(|s| s.devices.get_mut(3)) {
            d.health.healthy = false;
            d.health.xid = Some(79);
        }
        a.gpunode_applied(&sick);
        let r = a.tick(at(3));
        assert_eq!(writes(&r), [("ml/pair".into(), GangPhase::Admitted)]);
        store_all(&mut a, &r);
        let after = a.stored(&GangKey::new("ml", "pair")).cloned().expect("stored");
        let nodes: Vec<String> = after.placement.iter().map(|s| s.node.clone()).collect();
        assert_eq!(nodes, ["gpu-0", "gpu-2"], "only the slot on gpu-1 moved");
        assert_eq!(after.admitted_at, before.admitted_at, "still the same admission");
        assert!(after.reason.as_deref().is_some_and(|r| r.contains("gpu-1")), "{:?}", after.reason);
        assert_eq!(r.requeued, [("default".to_owned(), REQUEUE_UNHEALTHY_GPU)]);
        let reserved: Vec<&String> = a.model().reservation(&GangKey::new("ml", "pair")).expect("held").keys().collect();
        assert_eq!(reserved, ["gpu-0", "gpu-2"]);
    }

    #[test]
    fn a_gang_bigger_than_the_cluster_is_inadmissible_and_does_not_block_a_smaller_one() {
        let mut a = admission(2, &[jobset("huge", 8, 3, json!({})), jobset("small", 8, 1, json!({}))]);
        let r = a.tick(at(2));
        assert_eq!(writes(&r), [("ml/huge".into(), GangPhase::Inadmissible), ("ml/small".into(), GangPhase::Admitted)]);
        store_all(&mut a, &r);
        let huge = a.stored(&GangKey::new("ml", "huge")).expect("huge");
        assert!(huge.reason.as_deref().is_some_and(|r| !r.is_empty()), "{huge:?}");
    }

    #[test]
    fn a_waiting_gang_follows_its_suspended_jobsets_new_node_selector() {
        let mut a = admission(2, &[jobset("first", 8, 2, json!({}))]);
        // Before any pass, the user (or Kueue-style tooling) points the suspended JobSet at nodes that do not exist.
        let mut moved = jobset("first", 8, 2, json!({}));
        let pod =
            moved.spec.replicated_jobs[0].template.spec.as_mut().expect("job").template.spec.as_mut().expect("pod");
        pod.node_selector = Some(BTreeMap::from([("pool".to_owned(), "a100".to_owned())]));
        a.jobset_applied(&moved);
        let r = a.tick(at(2));
        let specs = spec_writes(&r);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].1.pod_sets[0].node_selector.get("pool").map(String::as_str), Some("a100"));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Inadmissible)], "not admitted on the old demand");
        store_all(&mut a, &r);
        // Written once, however many ticks pass before the watch shows it; then it is what the Gang says.
        assert!(spec_writes(&a.tick(at(3))).is_empty());
        let status = a.stored(&GangKey::new("ml", "first")).cloned();
        a.gang_applied(&gang_object("first", specs[0].1.clone(), status.clone()), at(4));
        assert!(spec_writes(&a.tick(at(4))).is_empty());
        // Dropping the key changes nothing: resuming merges the template into the Jobs, which keep the key.
        a.jobset_applied(&jobset("first", 8, 2, json!({})));
        let r = a.tick(at(5));
        assert!(spec_writes(&r).is_empty());
        assert!(!writes(&r).iter().any(|(_, p)| *p == GangPhase::Admitted));
        // Nodes of that pool appear: the gang is admitted there.
        for i in 0..2 {
            let (mut n, _) = node(&format!("gpu-{i}"));
            n.metadata.labels = Some(BTreeMap::from([("pool".to_owned(), "a100".to_owned())]));
            a.node_applied(&n);
        }
        assert_eq!(writes(&a.tick(at(6))), [("ml/first".into(), GangPhase::Admitted)]);
    }

    /// `name` with one Job of `pods` pods of 4 GPUs, running (`suspend: false`) unless `suspended`.
    fn elastic(name: &str, pods: i32, suspended: bool) -> JobSet {
        let mut js = jobset(name, 4, 1, json!({}));
        let job = js.spec.replicated_jobs[0].template.spec.as_mut().expect("job");
        job.parallelism = Some(pods);
        job.completions = Some(pods);
        js.spec.suspend = Some(suspended);
        js
    }

    fn stored_slots(a: &Admission, name: &str) -> Vec<(i32, String)> {
        let status = a.stored(&GangKey::new("ml", name)).cloned().unwrap_or_default();
        status.placement.into_iter().map(|s| (s.pod_index, s.node)).collect()
    }

    fn reason(a: &Admission, name: &str) -> String {
        a.stored(&GangKey::new("ml", name)).and_then(|s| s.reason.clone()).unwrap_or_default()
    }

    #[test]
    fn a_running_gang_that_scales_down_gives_gpus_back_and_one_that_scales_up_waits_for_room() {
        // 16 GPUs: `elastic` takes them all with 4 pods of 4; `next` (2 pods of 4) waits.
        let mut a = admission(2, &[elastic("elastic", 4, true), elastic("next", 2, true)]);
        let r = a.tick(at(2));
        assert_eq!(writes(&r), [("ml/elastic".into(), GangPhase::Admitted), ("ml/next".into(), GangPhase::Pending)]);
        store_all(&mut a, &r);
        let r = a.tick(at(3));
        store_all(&mut a, &r);
        assert_eq!(stored_slots(&a, "elastic").len(), 4);

        // Scaled down to 2 (the reconciler scales the Jobs): 2 slots and their GPUs go back, `next` is admitted.
        a.jobset_applied(&elastic("elastic", 2, false));
        let r = a.tick(at(4));
        let specs = spec_writes(&r);
        assert_eq!(
            specs.iter().map(|(k, s)| (k.as_str(), s.pod_sets[0].pods_per_job, s.total_gpus)).collect::<Vec<_>>(),
            [("ml/elastic", 2, 8)]
        );
        assert_eq!(writes(&r), [("ml/elastic".into(), GangPhase::Admitted), ("ml/next".into(), GangPhase::Admitted)]);
        store_all(&mut a, &r);
        assert_eq!(stored_slots(&a, "elastic").iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(reason(&a, "elastic"), "scaled to 2 pods: 2 pods removed, GPUs given back");
        a.gang_applied(
            &gang_object("elastic", specs[0].1.clone(), a.stored(&GangKey::new("ml", "elastic")).cloned()),
            at(4),
        );
        assert!(spec_writes(&a.tick(at(5))).is_empty(), "the spec is written once");
        let gpus = |a: &Admission, name: &str| {
            a.model().reservation(&GangKey::new("ml", name)).map_or(0, |r| r.values().map(|x| x.gpus).sum::<u32>())
        };
        assert_eq!((gpus(&a, "elastic"), gpus(&a, "next")), (8, 8));

        // Scaled up to 4 again while `next` holds the room: the added pods wait, the gang keeps running.
        a.jobset_applied(&elastic("elastic", 4, false));
        let r = a.tick(at(6));
        store_all(&mut a, &r);
        assert_eq!(stored_slots(&a, "elastic").len(), 2);
        assert_eq!(
            reason(&a, "elastic"),
            "scaled to 4 pods: 2 pods added, waiting for room (w Job 0 does not fit the free GPUs)"
        );
        assert_eq!(a.stored(&GangKey::new("ml", "elastic")).map(|s| s.phase), Some(GangPhase::Admitted));
        assert_eq!(gpus(&a, "elastic"), 8);

        // `next` finishes: the added pods get slots, next to the kept ones, and the slots are in pod order.
        let mut done = elastic("next", 2, false);
        done.status = serde_json::from_value(json!({"conditions": [{"type": "Completed", "status": "True",
            "reason": "AllJobsCompleted", "message": "jobset completed successfully",
            "lastTransitionTime": "2027-01-01T00:00:00Z"}]}))
        .expect("status");
        a.jobset_applied(&done);
        let r = a.tick(at(7));
        store_all(&mut a, &r);
        assert_eq!(stored_slots(&a, "elastic").iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(reason(&a, "elastic"), "scaled to 4 pods: 2 pods added and placed");
        assert_eq!(gpus(&a, "elastic"), 16);
    }

    #[test]
    fn a_running_gang_with_added_pods_waiting_counts_its_placed_pods_for_readiness() {
        let mut a = admission(2, &[elastic("first", 2, true), elastic("other", 2, true)]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        let r = a.tick(at(3));
        store_all(&mut a, &r);
        let pod = |i: u32| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": format!("first-w-0-{i}"), "namespace": "ml",
                    "labels": {"jobset.sigs.k8s.io/jobset-name": "first"}},
                "spec": {"nodeName": "gpu-0", "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
            .expect("pod")
        };
        a.pod_applied(&pod(0));
        a.pod_applied(&pod(1));
        let r = a.tick(at(10));
        assert_eq!(writes(&r), [("ml/first".into(), GangPhase::Running)]);
        store_all(&mut a, &r);
        // Scaled to 6 pods: 4 more GPUs than `other` left free. Hours later it still runs with its 2 ready pods.
        a.jobset_applied(&elastic("first", 6, false));
        let r = a.tick(at(11));
        store_all(&mut a, &r);
        let r = a.tick(at(11 + 3 * 3600));
        assert!(writes(&r).iter().all(|(k, _)| k != "ml/first"), "{:?}", writes(&r));
        assert_eq!(
            a.stored(&GangKey::new("ml", "first")).map(|s| (s.phase, s.placement.len())),
            Some((GangPhase::Running, 2))
        );
    }

    #[test]
    fn a_restart_between_the_spec_and_the_placement_writes_finishes_the_scaling() {
        let mut a = admission(2, &[elastic("first", 4, true)]);
        let r = a.tick(at(2));
        store_all(&mut a, &r);
        let admitted = a.stored(&GangKey::new("ml", "first")).cloned().expect("stored");
        // The Gang's spec says 2 pods (written before the crash), its placement still 4.
        let spec = objects::gang_spec(&elastic("first", 2, false), |_| None).expect("spec");
        let mut b = Admission::new(Settings::default());
        for i in 0..2 {
            let (n, g) = node(&format!("gpu-{i}"));
            b.node_applied(&n);
            b.gpunode_applied(&g);
        }
        b.jobset_applied(&elastic("first", 2, false));
        b.gang_applied(&gang_object("first", spec, Some(admitted)), at(3));
        let r = b.tick(at(3));
        assert!(spec_writes(&r).is_empty());
        store_all(&mut b, &r);
        assert_eq!(stored_slots(&b, "first").iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(
            b.model().reservation(&GangKey::new("ml", "first")).map(|r| r.values().map(|x| x.gpus).sum::<u32>()),
            Some(8)
        );
    }

    /// What must hold after every tick, whatever was scaled: an admitted gang's slots are its own pods, each once;
    /// the model reserves exactly what they ask; no node gives out more GPUs than it has.
    fn check_scaling_invariants(a: &Admission, names: &[String]) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prop_assert_eq;
        for name in names {
            let key = GangKey::new("ml", name);
            let (Some(t), Some(status)) = (a.gangs.get(&key), a.stored(&key)) else { continue };
            if !matches!(status.phase, GangPhase::Admitted | GangPhase::Running) {
                continue;
            }
            let Ok(demand) = &t.demand else { continue };
            let mut seen = BTreeSet::new();
            for s in &status.placement {
                proptest::prop_assert!(demand.has_slot(&s.pod_set, s.job_index, s.pod_index), "{name}: {s:?}");
                proptest::prop_assert!(seen.insert((s.job_index, s.pod_index)), "{name}: {s:?} twice");
            }
            let per_node =
                per_node_of(demand, &status.placement).map_err(proptest::test_runner::TestCaseError::fail)?;
            prop_assert_eq!(a.model().reservation(&key), Some(&per_node), "{}", name);
        }
        let mut gpus: BTreeMap<&str, u32> = BTreeMap::new();
        for (_, per_node) in a.model().reservations() {
            for (node, r) in per_node {
                *gpus.entry(node.as_str()).or_default() += r.gpus;
            }
        }
        proptest::prop_assert!(gpus.values().all(|&g| g <= 8), "over-committed: {gpus:?}");
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..proptest::test_runner::Config::default() })]

        /// Gangs of 4-GPU pods on three 8-GPU nodes, scaled up and down at random while others finish: the slots
        /// always match the demand as far as room allows, and once every other gang is gone, every pod of the
        /// survivor has a slot.
        #[test]
        fn scaling_keeps_slots_and_reservations_consistent(
            sizes in proptest::collection::vec(1i32..=4, 2..=4),
            steps in proptest::collection::vec((0usize..4, 1i32..=6, proptest::bool::ANY, 0u8..3), 1..12),
        ) {
            let names: Vec<String> = (0..sizes.len()).map(|i| format!("g{i}")).collect();
            let jobsets: Vec<JobSet> = names.iter().zip(&sizes).map(|(n, &p)| elastic(n, p, true)).collect();
            let mut a = admission(3, &jobsets);
            let mut now = 2;
            let mut finished = BTreeSet::new();
            // Gang spec writes not yet seen by the watch, oldest first.
            let mut unseen: Vec<(String, GangSpec)> = Vec::new();
            let tick = |a: &mut Admission,
                        now: &mut u64,
                        unseen: &mut Vec<(String, GangSpec)>|
             -> Result<(), proptest::test_runner::TestCaseError> {
                let r = a.tick(at(*now));
                store_all(a, &r);
                unseen.extend(spec_writes(&r).into_iter().map(|(k, spec)| (k.trim_start_matches("ml/").to_owned(), spec)));
                *now += 1;
                check_scaling_invariants(a, &names)?;
                Ok(())
            };
            tick(&mut a, &mut now, &mut unseen)?;
            let mut sizes = sizes.clone();
            for (gang, pods, finish, seen) in steps {
                // The watch shows some of the written specs, in order, possibly long after newer ones were written.
                for _ in 0..seen {
                    let Some((name, spec)) = (!unseen.is_empty()).then(|| unseen.remove(0)) else { break };
                    let status = a.stored(&GangKey::new("ml", &name)).cloned();
                    a.gang_applied(&gang_object(&name, spec, status), at(now));
                }
                let gang = gang % names.len();
                if finished.contains(&gang) {
                    continue;
                }
                let admitted = a.stored(&GangKey::new("ml", &names[gang])).is_some_and(|s| {
                    matches!(s.phase, GangPhase::Admitted | GangPhase::Running)
                });
                if finish && gang != 0 {
                    let mut done = elastic(&names[gang], sizes[gang], false);
                    done.status = serde_json::from_value(json!({"conditions": [{"type": "Completed", "status": "True",
                        "reason": "AllJobsCompleted", "message": "jobset completed successfully",
                        "lastTransitionTime": "2027-01-01T00:00:00Z"}]})).expect("status");
                    a.jobset_applied(&done);
                    finished.insert(gang);
                } else if admitted {
                    // Only a running JobSet scales (a suspended one is a waiting gang, which follows as before).
                    sizes[gang] = pods;
                    a.jobset_applied(&elastic(&names[gang], pods, false));
                }
                tick(&mut a, &mut now, &mut unseen)?;
            }
            // Everyone but g0 finishes: if g0 was admitted, all of its pods (at most 6 of 4 GPUs, on 24) get slots.
            for gang in 1..names.len() {
                let mut done = elastic(&names[gang], sizes[gang], false);
                done.status = serde_json::from_value(json!({"conditions": [{"type": "Completed", "status": "True",
                    "reason": "AllJobsCompleted", "message": "jobset completed successfully",
                    "lastTransitionTime": "2027-01-01T00:00:00Z"}]})).expect("status");
                a.jobset_applied(&done);
            }
            tick(&mut a, &mut now, &mut unseen)?;
            tick(&mut a, &mut now, &mut unseen)?;
            let g0 = a.stored(&GangKey::new("ml", "g0")).cloned().unwrap_or_default();
            if matches!(g0.phase, GangPhase::Admitted | GangPhase::Running) {
                proptest::prop_assert_eq!(g0.placement.len(), usize::try_from(sizes[0]).unwrap_or(0), "{:?}", g0.reason);
            }
        }
    }

    #[test]
    fn an_unreadable_jobset_is_never_admitted_and_is_queued_once_it_is_fixed() {
        let mut bad = jobset("bad", 8, 1, json!({}));
        bad.metadata.labels = Some(BTreeMap::from([(keys::GANG_PRIORITY.to_owned(), "high".to_owned())]));
        let mut a = admission(1, std::slice::from_ref(&bad));
        let r = a.tick(at(2));
        assert_eq!(writes(&r), [("ml/bad".into(), GangPhase::Inadmissible)]);
        assert!(suspends(&r).is_empty());
        store_all(&mut a, &r);
        let r = a.tick(at(3));
        assert!(!writes(&r).iter().any(|(_, p)| *p == GangPhase::Admitted), "{:?}", writes(&r));
        let reason = a.stored(&GangKey::new("ml", "bad")).and_then(|s| s.reason.clone()).unwrap_or_default();
        assert!(reason.contains("\"high\" is not an integer"), "{reason}");
        // Fixed: the Gang gets the real demand, and the gang is admitted.
        bad.metadata.labels = Some(BTreeMap::from([(keys::GANG_PRIORITY.to_owned(), "5".to_owned())]));
        a.jobset_applied(&bad);
        let r = a.tick(at(4));
        assert_eq!(spec_writes(&r).iter().map(|(_, s)| s.priority).collect::<Vec<_>>(), [5]);
        assert_eq!(writes(&r), [("ml/bad".into(), GangPhase::Admitted)]);
    }

    #[test]
    fn a_gang_given_up_after_its_requeuing_limit_stays_given_up_across_a_restart() {
        let mut settings = Settings::default();
        settings.default_queue.pods_ready.requeuing_limit = Some(1);
        let mut a = Admission::new(settings);
        let (n, g) = node("gpu-0");
        a.node_applied(&n);
        a.gpunode_applied(&g);
        let js = jobset("tired", 8, 1, json!({}));
        a.jobset_applied(&js);
        let spec = objects::gang_spec(&js, |_| None).expect("spec");
        let given_up = GangStatus { phase: GangPhase::Inadmissible, requeue_count: 2, ..GangStatus::default() };
        a.gang_applied(&gang_object("tired", spec.clone(), Some(given_up)), at(1));
        let r = a.tick(at(2));
        assert!(writes(&r).is_empty() && suspends(&r).is_empty(), "{:?}", r.actions);
        // One requeue (within the limit) is queued again as usual.
        let requeued = GangStatus { phase: GangPhase::Requeued, requeue_count: 1, ..GangStatus::default() };
        a.gang_applied(&gang_object("tired2", spec, Some(requeued)), at(1));
        a.jobset_applied(&jobset("tired2", 8, 1, json!({})));
        assert_eq!(writes(&a.tick(at(3))), [("ml/tired2".into(), GangPhase::Admitted)]);
    }
}
