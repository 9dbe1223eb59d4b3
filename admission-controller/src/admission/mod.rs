//! The admission controller: watches JobSets, Gangs, Nodes, GPUNodes, bound Pods and PriorityClasses, feeds them
//! to [`state::Admission`], and carries out the writes it decides, in order. Run it on the leader only.
//!
//! Nothing here decides anything; see [`state`] for why the order of writes makes a crash harmless.

pub mod config;
pub mod metrics;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt as _};
use muster_api::gang::Gang;
use muster_api::gpunode::GPUNode;
use muster_api::{JobSet, keys};
use serde_json::json;

use self::metrics::AdmissionMetrics;
use self::state::{Action, Admission, Settings};
use crate::gang::GangKey;

pub const FIELD_MANAGER: &str = "muster-admission";

/// Pods that hold node resources: bound and not finished. Pending pods hold nothing yet, and finished ones nothing
/// any more; leaving both out keeps the watch (and memory) to what placement needs.
const BOUND_POD_SELECTOR: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// How often time-driven decisions are revisited (pods-ready timeouts, backoff, head holds) without any event.
const RESYNC: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// One observation, whatever its kind. Short-lived and moved once, so the size of the largest kind is no concern.
#[allow(clippy::large_enum_variant)]
enum Observed {
    JobSet(Event<JobSet>),
    Gang(Event<Gang>),
    Node(Event<Node>),
    GpuNode(Event<GPUNode>),
    Pod(Event<Pod>),
    PriorityClass(Event<PriorityClass>),
}

const KINDS: usize = 6;

fn watch<K, F>(api: Api<K>, config: watcher::Config, wrap: F) -> BoxStream<'static, Result<Observed, watcher::Error>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Event<K>) -> Observed + Send + 'static,
{
    watcher::watcher(api, config).default_backoff().map(move |e| e.map(&wrap)).boxed()
}

/// Objects seen since the last (re)list of a kind, so objects that vanished while the watch was down are deleted
/// when the relist completes. Values carry the pod's JobSet, the only thing a delete needs beyond the name.
#[derive(Default)]
struct Known {
    current: HashMap<(String, String), Option<String>>,
    relisting: Option<HashSet<(String, String)>>,
}

impl Known {
    fn key<K: Resource>(obj: &K) -> (String, String) {
        (obj.meta().namespace.clone().unwrap_or_default(), obj.meta().name.clone().unwrap_or_default())
    }

    fn seen<K: Resource>(&mut self, obj: &K) {
        let jobset = obj.meta().labels.as_ref().and_then(|l| l.get(keys::JOBSET_NAME)).cloned();
        let key = Self::key(obj);
        if let Some(r) = &mut self.relisting {
            r.insert(key.clone());
        }
        self.current.insert(key, jobset);
    }

    fn gone<K: Resource>(&mut self, obj: &K) {
        self.current.remove(&Self::key(obj));
    }

    /// Starts a relist.
    fn init(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// Ends a relist: what was known and not listed again is gone.
    fn init_done(&mut self) -> Vec<((String, String), Option<String>)> {
        let Some(listed) = self.relisting.take() else { return Vec::new() };
        let gone: Vec<_> = self.current.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        gone.into_iter().filter_map(|k| self.current.remove_entry(&k)).collect()
    }
}

/// Runs until `shutdown` resolves or a watch ends for good. `synced` turns true once every kind was listed and
/// the first round ran.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: AdmissionMetrics,
    synced: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AdmissionError> {
    let mut streams: SelectAll<BoxStream<'static, Result<Observed, watcher::Error>>> = SelectAll::new();
    let all = watcher::Config::default;
    streams.push(watch(Api::<JobSet>::all(client.clone()), all(), Observed::JobSet));
    streams.push(watch(Api::<Gang>::all(client.clone()), all(), Observed::Gang));
    streams.push(watch(Api::<Node>::all(client.clone()), all(), Observed::Node));
    streams.push(watch(Api::<GPUNode>::all(client.clone()), all(), Observed::GpuNode));
    streams.push(watch(Api::<Pod>::all(client.clone()), all().fields(BOUND_POD_SELECTOR), Observed::Pod));
    streams.push(watch(Api::<PriorityClass>::all(client.clone()), all(), Observed::PriorityClass));

    let mut shell = Shell {
        client,
        admission: Admission::new(settings),
        metrics,
        known: std::array::from_fn(|_| Known::default()),
        listed: [false; KINDS],
    };
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    // Set when a write succeeded: the next step of some gang may be due at once, so no waiting.
    let mut again = false;
    loop {
        if !again {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = resync.tick() => {}
                next = streams.next() => {
                let Some(first) = next else { return Err(AdmissionError::WatchEnded("admission")) };
                    shell.observe(first);
                    // Take whatever else is already there, so a burst costs one round, not one per event.
                    for _ in 0..10_000 {
                        match streams.next().now_or_never() {
                            Some(Some(next)) => shell.observe(next),
                            Some(None) => return Err(AdmissionError::WatchEnded("admission")),
                            None => break,
                        }
                    }
                }
            }
        }
        again = false;
        if shell.listed.iter().all(|l| *l) {
            again = shell.round().await;
            synced.store(true, Ordering::Relaxed);
        }
    }
}

struct Shell {
    client: Client,
    admission: Admission,
    metrics: AdmissionMetrics,
    known: [Known; KINDS],
    listed: [bool; KINDS],
}

impl Shell {
    fn observe(&mut self, observed: Result<Observed, watcher::Error>) {
        let observed = match observed {
            Ok(o) => o,
            Err(e) => {
                // The watcher retries with backoff; say so once per error.
                tracing::warn!(error = %e, "watch error");
                self.metrics.error("watch");
                return;
            }
        };
        let now = SystemTime::now();
        match observed {
            Observed::JobSet(e) => {
                self.event(0, e, |a, js| a.jobset_applied(js), |a, (ns, n), _| a.jobset_deleted(&ns, &n))
            }
            Observed::Gang(e) => {
                self.event(1, e, |a, g| a.gang_applied(g, now), |a, (ns, n), _| a.gang_deleted(&ns, &n))
            }
            Observed::Node(e) => self.event(2, e, |a, n| a.node_applied(n), |a, (_, n), _| a.node_deleted(&n)),
            Observed::GpuNode(e) => self.event(3, e, |a, g| a.gpunode_applied(g), |a, (_, n), _| a.gpunode_deleted(&n)),
            Observed::Pod(e) => self.event(
                4,
                e,
                |a, p| a.pod_applied(p),
                |a, (ns, n), jobset| a.pod_deleted(&ns, &n, jobset.as_deref()),
            ),
            Observed::PriorityClass(e) => self.event(
                5,
                e,
                |a, pc| a.priority_class_applied(&pc.name_any(), pc.value.unwrap_or(0)),
                |a, (_, n), _| a.priority_class_deleted(&n),
            ),
        }
    }

    fn event<K: Resource>(
        &mut self,
        kind: usize,
        event: Event<K>,
        applied: impl Fn(&mut Admission, &K),
        deleted: impl Fn(&mut Admission, (String, String), Option<String>),
    ) {
        let known = &mut self.known[kind];
        match event {
            Event::Apply(obj) | Event::InitApply(obj) => {
                known.seen(&obj);
                applied(&mut self.admission, &obj);
            }
            Event::Delete(obj) => {
                known.gone(&obj);
                let key = Known::key(&obj);
                let jobset = obj.meta().labels.as_ref().and_then(|l| l.get(keys::JOBSET_NAME)).cloned();
                deleted(&mut self.admission, key, jobset);
            }
            Event::Init => known.init(),
            Event::InitDone => {
                for (key, jobset) in known.init_done() {
                    deleted(&mut self.admission, key, jobset);
                }
                self.listed[kind] = true;
            }
        }
    }

    /// One decision round and its writes. Returns whether another round should follow at once (a write
    /// succeeded, so the next step of some gang may be due).
    async fn round(&mut self) -> bool {
        let started = Instant::now();
        let now = SystemTime::now();
        let report = self.admission.tick(now);
        self.metrics.observe_tick(&report, started.elapsed());
        let mut progressed = false;
        for action in &report.actions {
            progressed |= self.apply(action, now).await;
        }
        self.metrics.set_queues(&self.admission.snapshot(SystemTime::now()));
        progressed
    }

    async fn apply(&mut self, action: &Action, now: SystemTime) -> bool {
        match action {
            Action::CreateGang(gang) => {
                let key = GangKey::new(&gang.namespace().unwrap_or_default(), &gang.name_any());
                let api: Api<Gang> = Api::namespaced(self.client.clone(), &gang.namespace().unwrap_or_default());
                let pp = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
                let ok = match api.create(&pp, gang).await {
                    Ok(_) => true,
                    Err(kube::Error::Api(e)) if e.code == 409 => true,
                    Err(e) => {
                        tracing::warn!(gang = %key, error = %e, "creating the Gang failed");
                        self.metrics.error("create_gang");
                        false
                    }
                };
                self.admission.gang_created(&key, ok);
                false
            }
            Action::WriteStatus { key, status } => {
                let Some((ns, name)) = key.as_str().split_once('/') else { return false };
                let api: Api<Gang> = Api::namespaced(self.client.clone(), ns);
                let body = json!({"apiVersion": "muster.dev/v1alpha1", "kind": "Gang", "status": status});
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                match api.patch_status(name, &pp, &Patch::Apply(&body)).await {
                    Ok(_) => {
                        tracing::info!(gang = %key, phase = ?status.phase, reason = status.reason.as_deref().unwrap_or(""), "gang status written");
                        self.admission.status_written(key, status);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(gang = %key, error = %e, "writing the Gang status failed");
                        self.metrics.error("write_status");
                        self.admission.status_write_failed(key, status, now);
                        false
                    }
                }
            }
            Action::UpdateGangSpec { key, spec } => {
                let Some((ns, name)) = key.as_str().split_once('/') else { return false };
                let api: Api<Gang> = Api::namespaced(self.client.clone(), ns);
                // A merge patch replaces lists whole, and every top-level field of the spec is always present.
                let body = json!({"spec": spec});
                match api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
                    Ok(_) => {
                        tracing::info!(gang = %key, "Gang spec follows its JobSet's demand");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(gang = %key, error = %e, "writing the Gang spec failed");
                        self.metrics.error("write_spec");
                        self.admission.gang_spec_write_failed(key);
                        false
                    }
                }
            }
            Action::SetSuspend { key, suspend } => {
                let Some((ns, name)) = key.as_str().split_once('/') else { return false };
                let api: Api<JobSet> = Api::namespaced(self.client.clone(), ns);
                let body = json!({"spec": {"suspend": suspend}});
                match api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
                    Ok(_) => {
                        tracing::info!(jobset = %key, suspend, "JobSet suspend set");
                        self.admission.suspend_set(key, *suspend);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(jobset = %key, suspend, error = %e, "setting the JobSet's suspend failed");
                        self.metrics.error("set_suspend");
                        false
                    }
                }
            }
        }
    }
}
