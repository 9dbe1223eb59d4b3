//! The extender's watches: Nodes, GPUNodes, Gangs, and bound pods that have not finished, each fed into the
//! [`Cache`] as it changes. The extender keeps no state of its own beyond what these give it, so any number of
//! replicas answer alike. After a watch restarts, objects missing from the new list are deleted.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use muster_api::{GPUNode, Gang};
use serde::de::DeserializeOwned;

use super::http::Cache;
use super::state::ExtenderState;

/// Pods that hold node resources: bound, and neither Succeeded nor Failed.
pub const BOUND_PODS: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// How often heartbeats are re-judged against the clock (a GPUNode that stops reporting becomes untrusted).
pub const CLOCK_TICK: Duration = Duration::from_secs(5);

/// How the state takes one kind of object. Objects are known by a key, so that a restarted watch can delete what
/// went away without the extender keeping copies of the objects.
trait Feed: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static {
    fn key(object: &Self) -> Key {
        (object.namespace().unwrap_or_default(), object.name_any())
    }
    fn apply(state: &mut ExtenderState, object: &Self);
    fn delete(state: &mut ExtenderState, key: &Key);
}

type Key = (String, String);

impl Feed for Node {
    fn apply(state: &mut ExtenderState, node: &Self) {
        state.apply_node(node);
    }
    fn delete(state: &mut ExtenderState, (_, name): &Key) {
        state.delete_node(name);
    }
}

impl Feed for GPUNode {
    /// The node it describes.
    fn key(gpunode: &Self) -> Key {
        (String::new(), super::state::gpunode_node_name(gpunode).to_owned())
    }
    fn apply(state: &mut ExtenderState, gpunode: &Self) {
        state.apply_gpunode(gpunode);
    }
    fn delete(state: &mut ExtenderState, (_, node): &Key) {
        state.delete_gpunode(node);
    }
}

impl Feed for Pod {
    fn apply(state: &mut ExtenderState, pod: &Self) {
        state.apply_pod(pod);
    }
    fn delete(state: &mut ExtenderState, (namespace, name): &Key) {
        state.delete_pod(namespace, name);
    }
}

impl Feed for Gang {
    fn apply(state: &mut ExtenderState, gang: &Self) {
        state.apply_gang(gang);
    }
    fn delete(state: &mut ExtenderState, (namespace, name): &Key) {
        state.delete_gang(namespace, name);
    }
}

/// Counts the watches that have listed once; the last one marks the cache synced.
struct Syncing {
    cache: Arc<Cache>,
    pending: AtomicUsize,
}

/// Applies one watch's events. Between `Init` and `InitDone` the listed objects are applied as they come; at
/// `InitDone` the ones known from before a restart that the new list lacks are deleted.
async fn feed<K: Feed>(stream: impl Stream<Item = Result<Event<K>, watcher::Error>>, syncing: Arc<Syncing>) {
    let kind = K::kind(&()).into_owned();
    let cache = &syncing.cache;
    let mut known: HashSet<Key> = HashSet::new();
    let mut relisted: Option<HashSet<Key>> = None;
    let mut first_list = true;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relisted = Some(HashSet::new()),
            Ok(Event::InitApply(object) | Event::Apply(object)) => {
                let key = K::key(&object);
                K::apply(&mut cache.write(), &object);
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(key.clone());
                }
                known.insert(key);
            }
            Ok(Event::Delete(object)) => {
                let key = K::key(&object);
                K::delete(&mut cache.write(), &key);
                known.remove(&key);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    let mut state = cache.write();
                    for key in known.difference(&seen) {
                        K::delete(&mut state, key);
                    }
                    known = seen;
                }
                if std::mem::take(&mut first_list) && syncing.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    cache.set_synced();
                    tracing::info!("extender has listed nodes, GPUNodes, gangs and bound pods");
                }
            }
            // The stream retries with backoff by itself; say why it had to.
            Err(e) => tracing::warn!(kind, error = %e, "extender watch failed; retrying"),
        }
    }
}

/// Runs the four watches and the clock until dropped; the cache reports synced once every watch has listed once.
pub fn run(client: Client, cache: Arc<Cache>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let syncing = Arc::new(Syncing { cache: cache.clone(), pending: AtomicUsize::new(4) });
    let config = watcher::Config::default().any_semantic();
    let nodes = watch(Api::<Node>::all(client.clone()), config.clone());
    let gpunodes = watch(Api::<GPUNode>::all(client.clone()), config.clone());
    let gangs = watch(Api::<Gang>::all(client.clone()), config.clone());
    let pods = watch(Api::<Pod>::all(client), config.fields(BOUND_PODS));
    let clock = async move {
        let mut tick = tokio::time::interval(CLOCK_TICK);
        loop {
            tick.tick().await;
            cache.write().set_time(SystemTime::now());
        }
    };
    Box::pin(async move {
        tokio::join!(
            feed(nodes, syncing.clone()),
            feed(gpunodes, syncing.clone()),
            feed(gangs, syncing.clone()),
            feed(pods, syncing),
            clock,
        );
    })
}

fn watch<K: Feed>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send {
    watcher::watcher(api, config).default_backoff()
}
