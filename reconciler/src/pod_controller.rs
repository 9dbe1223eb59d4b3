//! The I/O shell around [`crate::exclusive`]: upstream's second controller, `pod`. It watches JobSet pods (the
//! `jobset-name` label selects them server-side) and keeps only those placed exclusively; each event of a live,
//! scheduled leader (as upstream's predicate) checks that leader's followers, and a violation marks and deletes
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use muster_api::keys;

use crate::exclusive::{self, Verdict};
use crate::metrics::{ErrorLabels, Metrics};

/// Upstream deletes at most this many followers at once.
const MAX_PARALLEL_WRITES: usize = 50;
/// How soon a leader whose node cannot be read is checked again.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    LeaderDomain(String),
    #[error("{action} failed: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// For `muster_reconciler_pod_reconcile_errors_total{category}`: the API call that failed, or
    /// `leader_domain` when the leader's node or its topology label cannot be read yet.
    pub fn category(&self) -> &'static str {
        match self {
            Error::LeaderDomain(_) => "leader_domain",
            Error::Kube { action, .. } => action,
        }
    }
}

struct Context {
    client: Client,
    pods: Store<Pod>,
    metrics: Metrics,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(client: Client, metrics: Metrics, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (pods, writer) = reflector::store::<Pod>();
    // Only exclusively placed pods are kept: the store is what a leader's followers are looked up in.
    let watch = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(keys::JOBSET_NAME))
        .default_backoff()
        .try_filter(|event| future::ready(kept(event)))
        .modify(|pod| pod.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .try_filter(|pod| future::ready(exclusive::leader_node(pod).is_some()));
    let ctx = Arc::new(Context { client, pods: pods.clone(), metrics });
    Controller::for_stream(watch, pods)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(err) = result {
                tracing::debug!(%err, "pod reconcile did not complete");
            }
            future::ready(())
        })
        .await;
}

/// Whether a watch event concerns an exclusively placed pod (deletions and stream markers always pass, so the
/// store forgets what it had).
fn kept(event: &watcher::Event<Pod>) -> bool {
    match event {
        watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => exclusive::exclusive_topology(pod).is_some(),
        watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => true,
    }
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), error = %err, "exclusive placement check failed");
    ctx.metrics.pod_reconcile_errors.get_or_create(&ErrorLabels { category: err.category().into() }).inc();
    Requeue::requeue(RETRY)
}

async fn reconcile(leader: Arc<Pod>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let Some(node) = exclusive::leader_node(&leader) else { return Ok(Requeue::await_change()) };
    let labels: Option<BTreeMap<String, String>> = Api::<Node>::all(ctx.client.clone())
        .get_metadata_opt(node)
        .await
        .map_err(|source| Error::Kube { action: "get_node", source })?
        .map(|n| n.metadata.labels.unwrap_or_default());
    let namespace = leader.namespace().unwrap_or_default();
    let job_key = leader.labels().get(keys::JOB_KEY);
    let pods: Vec<Pod> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()) && p.labels().get(keys::JOB_KEY) == job_key)
        .map(|p| Pod::clone(p))
        .collect();
    match exclusive::decide(&leader, labels.as_ref(), &pods) {
        Verdict::NotALeader | Verdict::Placed => Ok(Requeue::await_change()),
        Verdict::Retry(why) => Err(Error::LeaderDomain(why)),
        Verdict::Evict { domain, followers } => {
            tracing::info!(leader = %leader.name_any(), %namespace, %domain, ?followers,
                "deleting followers outside their leader's topology domain");
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let work: Vec<(String, bool)> = followers
                .into_iter()
                .map(|name| {
                    let pod = pods.iter().find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
                    let needs_condition = pod.is_none_or(exclusive::needs_condition);
                    (name, needs_condition)
                })
                .collect();
            futures::stream::iter(work.into_iter().map(|(name, needs_condition)| {
                let api = api.clone();
                let evictions = ctx.metrics.exclusive_evictions.clone();
                async move {
                    evict(&api, &name, needs_condition).await?;
                    evictions.inc();
                    Ok::<(), Error>(())
                }
            }))
            .buffer_unordered(MAX_PARALLEL_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
            Ok(Requeue::await_change())
        }
    }
}

/// Marks the follower (so a Job `podFailurePolicy` can tell this deletion apart) and deletes it in the background.
async fn evict(api: &Api<Pod>, name: &str, needs_condition: bool) -> Result<(), Error> {
    if needs_condition {
        let patch = Patch::Strategic(exclusive::condition_patch(Time(Timestamp::now())));
        match api.patch_status(name, &PatchParams::default(), &patch).await {
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(source) => return Err(Error::Kube { action: "set_pod_condition", source }),
            Ok(_) => {}
        }
    }
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    match api.delete(name, &background).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube { action: "delete_pod", source }),
        Ok(_) => Ok(()),
    }
}
