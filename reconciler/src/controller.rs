//! The I/O shell around [`crate::plan`]: observe the JobSet and the Jobs it owns, plan, apply the actions,
//! write status once, then emit events. Nothing here decides anything.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use muster_api::JobSet;
use muster_api::gang::{Gang, GangPhase};
use muster_api::keys;
use serde_json::json;

use crate::metrics::{ErrorLabels, JobSetLabels, Metrics};
use crate::own_writes::OwnWrites;
use crate::plan::{self, Action, EventType, FeatureGates, Finish, Input, PlacedPods};

/// Field manager and event reporter of the controller.
pub const CONTROLLER_NAME: &str = "jobset-controller";
/// Upstream creates at most this many Jobs at once.
const MAX_PARALLEL_WRITES: usize = 50;
/// Periodic re-reconcile as an eventual-consistency backstop.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("{0}")]
    JobCreation(String),
    #[error("headless service creation failed: {0}")]
    ServiceCreation(#[source] kube::Error),
    #[error("pvc creation failed: {0}")]
    ClaimCreation(#[source] kube::Error),
    #[error("{action} failed: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Stable, low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Plan(e) => e.category(),
            Self::JobCreation(_) => "job_creation",
            Self::ServiceCreation(_) => "service_creation",
            Self::ClaimCreation(_) => "pvc_creation",
            Self::Kube { action, .. } => action,
        }
    }
}

fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub gates: FeatureGates,
    jobs: Store<Job>,
    /// Metadata of the Services JobSets own.
    services: Store<PartialObjectMeta<Service>>,
    /// Gangs, with their status only: how far a gang's Jobs may grow (see [`Input::placed`]).
    gangs: Store<Gang>,
    own_writes: Mutex<OwnWrites>,
}

impl Context {
    fn own_writes(&self) -> std::sync::MutexGuard<'_, OwnWrites> {
        // The map is consistent after every statement, so a panic elsewhere cannot leave it half-written.
        self.own_writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The API server's own message, as Go's client prints it (`jobs.batch "x" already exists`).
fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    metrics: Metrics,
    gates: FeatureGates,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // One label-selected watch of Jobs feeds both the store the reconciler reads and the owner triggers, so a
    // cluster's other Jobs are never cached.
    let (jobs, writer) = reflector::store::<Job>();
    let job_stream =
        watcher(Api::<Job>::all(client.clone()), watcher::Config::default().labels(keys::JOBSET_NAME).any_semantic())
            .default_backoff()
            .modify(crate::plan::suspend::trim_for_cache)
            .reflect(writer)
            .touched_objects();
    // Services carry no label to select on (upstream creates them without), so the watch is cluster-wide but of
    // metadata only, and only JobSet-owned ones are kept. It replaces a GET per reconcile and makes a deleted
    // Service trigger its JobSet's reconcile, as upstream's Owns(Service) does.
    let (services, service_writer) = reflector::store::<PartialObjectMeta<Service>>();
    let service_stream =
        watcher(Api::<PartialObjectMeta<Service>>::all(client.clone()), watcher::Config::default().any_semantic())
            .default_backoff()
            .try_filter(|event| future::ready(owned_by_a_jobset(event)))
            .modify(|service| service.managed_fields_mut().clear())
            .reflect(service_writer)
            .touched_objects();
    // Gangs: a placement written by admission lets a scaled-up gang's Jobs grow, so it triggers the JobSet of the
    // same name. Without the Gang CRD (the reconciler alone, no gang admission) the watch only retries.
    let (gangs, gang_writer) = reflector::store::<Gang>();
    let gang_stream = watcher(Api::<Gang>::all(client.clone()), watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|gang| {
            gang.managed_fields_mut().clear();
            gang.spec = Default::default();
        })
        .reflect(gang_writer)
        .touched_objects();
    let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
    let own_writes = Mutex::new(OwnWrites::default());
    let ctx = Arc::new(Context { client: client.clone(), recorder, metrics, gates, jobs, services, gangs, own_writes });
    Controller::new(Api::<JobSet>::all(client), watcher::Config::default().any_semantic())
        .owns_stream(job_stream)
        .owns_stream(service_stream)
        .watches_stream(gang_stream, |gang| gang.namespace().map(|ns| ObjectRef::new(&gang.name_any()).within(&ns)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(err) = result {
                tracing::debug!(%err, "reconcile did not complete");
            }
            future::ready(())
        })
        .await;
}

/// The pods per Job an admitted or running gang has slots for; none for a gang in any other phase.
fn placed_pods(gang: Option<&Gang>) -> PlacedPods {
    let mut placed = PlacedPods::new();
    let Some(status) = gang.and_then(|g| g.status.as_ref()) else { return placed };
    if matches!(status.phase, GangPhase::Admitted | GangPhase::Running) {
        for slot in &status.placement {
            *placed.entry((slot.pod_set.clone(), slot.job_index)).or_default() += 1;
        }
    }
    placed
}

/// Whether a watch event is about a JobSet-owned object (stream markers pass).
fn owned_by_a_jobset<K: Resource>(event: &watcher::Event<K>) -> bool {
    match event {
        watcher::Event::Apply(obj) | watcher::Event::Delete(obj) | watcher::Event::InitApply(obj) => {
            obj.owner_references().iter().any(|o| o.controller == Some(true) && o.kind == "JobSet")
        }
        watcher::Event::Init | watcher::Event::InitDone => true,
    }
}

fn error_policy(jobset: Arc<JobSet>, err: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(jobset = %jobset.name_any(), namespace = ?jobset.namespace(), error = %err, "reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { category: err.category().into() }).inc();
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(jobset: Arc<JobSet>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let newer = ctx.own_writes().newer_jobset(&jobset, started);
    let jobset = newer.map_or(jobset, Arc::new);
    let result = reconcile_inner(&jobset, &ctx).await;
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(jobset: &JobSet, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = jobset.namespace().unwrap_or_default();
    let uid = jobset.uid().unwrap_or_default();

    // observe: our Jobs are those whose controller owner reference carries this JobSet's UID; a Job with the
    // same name owned by an earlier JobSet of the same name is foreign. Our own writes the cache does not show yet
    // count as done.
    let cached: Vec<Job> = ctx
        .jobs
        .state()
        .iter()
        .filter(|job| job.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|job| job.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid))
        .map(|job| Job::clone(job))
        .collect();
    let owned = ctx.own_writes().overlay(&uid, cached, Instant::now());
    let family = plan::children::Family::new(jobset);
    // A Service of that name that no JobSet owns is not in the store: creating it then fails with AlreadyExists,
    // which is ignored, so it is left alone either way.
    let service_exists = ctx.services.get(&ObjectRef::new(family.subdomain()).within(&namespace)).is_some();

    // A gang-admitted JobSet's Jobs grow only as far as its Gang's slots; with no Gang seen yet, not at all.
    let placed = jobset.annotations().contains_key(keys::ADMISSION_OWNS_SUSPEND).then(|| {
        let gang = ctx.gangs.get(&ObjectRef::new(&jobset.name_any()).within(&namespace));
        placed_pods(gang.as_deref())
    });

    // plan
    let plan = plan::plan(Input {
        jobset,
        jobs: &owned,
        service_exists,
        now: Timestamp::now(),
        gates: ctx.gates,
        placed: placed.as_ref(),
    })?;

    // apply
    for action in &plan.actions {
        apply(action, jobset, &namespace, ctx).await?;
    }

    // one status write, then events
    if plan.status_changed {
        let mut updated = jobset.clone();
        updated.status = Some(plan.status.clone());
        updated.metadata.managed_fields = None;
        let api: Api<JobSet> = Api::namespaced(ctx.client.clone(), &namespace);
        let written = api
            .replace_status(&jobset.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(kube_err("update_status"))?;
        ctx.own_writes().status_written(written, Instant::now());
        if let Some(finish) = plan.finished {
            let labels = JobSetLabels { jobset_name: jobset.name_any(), namespace: namespace.clone() };
            match finish {
                Finish::Completed => ctx.metrics.completed.get_or_create(&labels).inc(),
                Finish::Failed => ctx.metrics.failed.get_or_create(&labels).inc(),
            };
        }
    }
    for event in &plan.events {
        publish(ctx, jobset, event.type_, &event.reason, &event.message).await;
    }
    Ok(plan.requeue_after.map_or(Requeue::requeue(RESYNC), Requeue::requeue))
}

async fn owned_by(jobs: &Api<Job>, name: &str, uid: &str) -> bool {
    matches!(jobs.get_opt(name).await, Ok(Some(job))
        if job.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid))
}

async fn publish(ctx: &Context, jobset: &JobSet, type_: EventType, reason: &str, message: &str) {
    let event = KubeEvent {
        type_: match type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: reason.into(),
        note: Some(message.into()),
        action: "Reconciling".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &jobset.object_ref(&())).await {
        tracing::warn!(%err, reason, "cannot publish event");
    }
}

fn foreground() -> DeleteParams {
    DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..DeleteParams::default() }
}

async fn apply(action: &Action, jobset: &JobSet, namespace: &str, ctx: &Context) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    match action {
        Action::DeleteJobs(names) => {
            let jobset_uid = jobset.uid().unwrap_or_default();
            futures::stream::iter(names.clone().into_iter().map(|name| {
                let jobs = jobs.clone();
                let jobset_uid = jobset_uid.clone();
                async move {
                    // Foreground: the Job stays, terminating, until its pods are gone; else it was removed at once.
                    let terminating = match jobs.delete(&name, &foreground()).await {
                        Ok(result) => result.left(),
                        Err(err) if is_status(&err, 404) => return Ok(()),
                        Err(err) => return Err(kube_err("delete_job")(err)),
                    };
                    let (uid, deletion) =
                        terminating.map_or((None, None), |j| (j.uid(), j.metadata.deletion_timestamp));
                    let deletion = deletion.unwrap_or_else(|| Time(Timestamp::now()));
                    ctx.own_writes().deleted(&jobset_uid, &name, uid, deletion, Instant::now());
                    Ok(())
                }
            }))
            .buffer_unordered(MAX_PARALLEL_WRITES)
            .try_collect::<Vec<()>>()
            .await?;
        }
        Action::CreateService(service) => {
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
            if let Err(err) = api.create(&PostParams::default(), service).await
                && !is_status(&err, 409)
            {
                publish(
                    ctx,
                    jobset,
                    EventType::Warning,
                    keys::EVENT_HEADLESS_SERVICE_CREATION_FAILED,
                    &api_message(&err),
                )
                .await;
                return Err(Error::ServiceCreation(err));
            }
        }
        Action::CreateClaims(claims) => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
            for claim in claims {
                if let Err(err) = api.create(&PostParams::default(), claim).await
                    && !is_status(&err, 409)
                {
                    publish(ctx, jobset, EventType::Warning, keys::EVENT_PVC_CREATION_FAILED, &api_message(&err)).await;
                    return Err(Error::ClaimCreation(err));
                }
            }
        }
        Action::ScaleJob { name, parallelism, completions } => {
            let patch = json!({"spec": {"parallelism": parallelism, "completions": completions}});
            jobs.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err("scale_job"))?;
        }
        Action::CreateJobs(new_jobs) => {
            let uid = jobset.uid().unwrap_or_default();
            let failures: Vec<String> = futures::stream::iter(new_jobs.clone().into_iter().map(|job| {
                let jobs = jobs.clone();
                let uid = uid.clone();
                async move {
                    match jobs.create(&PostParams::default(), &job).await {
                        // Our cache lags our own writes: a Job we own already is the one we want; any other
                        // Job of that name is a real collision.
                        Err(err) if is_status(&err, 409) && owned_by(&jobs, &job.name_any(), &uid).await => None,
                        Err(err) => Some(format!(
                            "job \"{}\" creation failed with error: {}",
                            job.name_any(),
                            api_message(&err)
                        )),
                        Ok(created) => {
                            ctx.own_writes().created(&uid, created, Instant::now());
                            None
                        }
                    }
                }
            }))
            .buffer_unordered(MAX_PARALLEL_WRITES)
            .filter_map(future::ready)
            .collect()
            .await;
            if !failures.is_empty() {
                let message = failures.join("\n");
                publish(ctx, jobset, EventType::Warning, keys::EVENT_JOB_CREATION_FAILED, &message).await;
                return Err(Error::JobCreation(message));
            }
        }
        Action::SuspendJobs(names) => {
            for name in names {
                let patch = Patch::Merge(json!({"spec": {"suspend": true}}));
                jobs.patch(name, &PatchParams::default(), &patch).await.map_err(kube_err("suspend_job"))?;
            }
        }
        Action::ResumeJob { job, clear_start_time } => {
            // The resourceVersion from our cache makes a concurrent change a conflict, retried next pass. Clearing
            // the start time just before is our own change, not a concurrent one: the patch carries the
            // resourceVersion it returned.
            let mut job = job.clone();
            if *clear_start_time {
                let patch = Patch::Merge(json!({"status": {"startTime": null}}));
                let cleared = jobs
                    .patch_status(&job.name_any(), &PatchParams::default(), &patch)
                    .await
                    .map_err(kube_err("clear_start_time"))?;
                job.metadata.resource_version = cleared.metadata.resource_version;
            }
            let patch = Patch::Merge(crate::plan::suspend::resume_patch(&job));
            jobs.patch(&job.name_any(), &PatchParams::default(), &patch).await.map_err(kube_err("resume_job"))?;
        }
        Action::DeleteJobSet => {
            let api: Api<JobSet> = Api::namespaced(ctx.client.clone(), namespace);
            match api.delete(&jobset.name_any(), &foreground()).await {
                Err(err) if !is_status(&err, 404) => return Err(kube_err("delete_jobset")(err)),
                _ => {}
            }
        }
    }
    Ok(())
}
