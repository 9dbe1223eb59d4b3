//! The objects a JobSet owns, built exactly as upstream builds them: child Jobs (names, labels, annotations,
//! indexes, subdomain, coordinator, volumes), the headless Service, and the PVCs of `volumeClaimPolicies`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, Service, ServiceSpec, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use muster_api::jobset::ReplicatedJob;
use muster_api::keys::*;
use muster_api::{JobSet, JobSetStatus};
use sha1::{Digest, Sha1};

/// Facts about a JobSet that every child needs, computed once per reconcile.
#[derive(Debug, Clone)]
pub struct Family<'a> {
    pub jobset: &'a JobSet,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

impl<'a> Family<'a> {
    pub fn new(jobset: &'a JobSet) -> Self {
        let meta = &jobset.metadata;
        Self {
            jobset,
            name: meta.name.as_deref().unwrap_or_default(),
            namespace: meta.namespace.as_deref().unwrap_or_default(),
            uid: meta.uid.as_deref().unwrap_or_default(),
        }
    }

    /// `network.subdomain`, or the JobSet name when unset (resolved here, never stored, for `generateName`).
    pub fn subdomain(&self) -> &str {
        self.jobset
            .spec
            .network
            .as_ref()
            .and_then(|n| n.subdomain.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or(self.name)
    }

    /// Whether pods get stable hostnames and the JobSet a headless Service. A JobSet that bypassed defaulting
    /// has no `network` and gets neither, as upstream.
    pub fn dns_hostnames(&self) -> bool {
        self.jobset.spec.network.as_ref().and_then(|n| n.enable_dns_hostnames).unwrap_or(false)
    }

    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "jobset.x-k8s.io/v1alpha2".into(),
            kind: "JobSet".into(),
            name: self.name.into(),
            uid: self.uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// `<jobset>-<coordinator rjob>-<jobIndex>-<podIndex>.<subdomain>`.
    pub fn coordinator_endpoint(&self) -> Option<String> {
        let c = self.jobset.spec.coordinator.as_ref()?;
        Some(format!(
            "{}-{}-{}-{}.{}",
            self.name,
            c.replicated_job,
            c.job_index.unwrap_or(0),
            c.pod_index.unwrap_or(0),
            self.subdomain()
        ))
    }

    /// Σ replicas over all ReplicatedJobs.
    pub fn global_replicas(&self) -> i32 {
        self.jobset.spec.replicated_jobs.iter().map(ReplicatedJob::replicas).sum()
    }
}

pub fn job_name(jobset: &str, rjob: &str, index: i32) -> String {
    format!("{jobset}-{rjob}-{index}")
}

/// SHA-1 hex of `<namespace>/<jobName>`.
pub fn job_key(namespace: &str, job_name: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}/{job_name}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `index`-th Job of ReplicatedJob `rjob_pos` (position in spec), suspended as asked.
pub fn build_job(
    family: &Family<'_>,
    status: &JobSetStatus,
    rjob_pos: usize,
    index: i32,
    suspend: bool,
    restart_job_gate: bool,
) -> Job {
    let rjobs = &family.jobset.spec.replicated_jobs;
    let rjob = &rjobs[rjob_pos];
    let name = job_name(family.name, &rjob.name, index);
    let earlier = &rjobs[..rjob_pos];
    let global_index = earlier.iter().map(ReplicatedJob::replicas).sum::<i32>() + index;
    let group = rjob.group_name();
    let in_group = |r: &&ReplicatedJob| r.group_name() == group;
    let group_index = earlier.iter().filter(in_group).map(ReplicatedJob::replicas).sum::<i32>() + index;
    let group_replicas = rjobs.iter().filter(in_group).map(ReplicatedJob::replicas).sum::<i32>();

    let mut stamps: BTreeMap<String, String> = [
        (JOBSET_NAME, family.name.to_string()),
        (JOBSET_UID, family.uid.to_string()),
        (REPLICATED_JOB_NAME, rjob.name.clone()),
        (REPLICATED_JOB_REPLICAS, rjob.replicas().to_string()),
        (GLOBAL_REPLICAS, family.global_replicas().to_string()),
        (JOB_INDEX, index.to_string()),
        (JOB_GLOBAL_INDEX, global_index.to_string()),
        (JOB_KEY, job_key(family.namespace, &name)),
        (RESTART_ATTEMPT, status.restarts.to_string()),
        (GROUP_NAME, group.to_string()),
        (GROUP_REPLICAS, group_replicas.to_string()),
        (JOB_GROUP_INDEX, group_index.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if restart_job_gate {
        let attempt = job_restart_attempt(status, &rjob.name, index);
        stamps.insert(JOB_RESTART_ATTEMPT.into(), attempt.to_string());
    }
    if let Some(endpoint) = family.coordinator_endpoint() {
        stamps.insert(COORDINATOR.into(), endpoint);
    }

    // Exclusive placement: the ReplicatedJob's own annotations win over the JobSet's.
    let rjob_annotations = rjob.template.metadata.as_ref().and_then(|m| m.annotations.as_ref());
    let exclusive = |key: &str| -> Option<(String, Option<String>)> {
        let from = |a: Option<&BTreeMap<String, String>>| {
            a.and_then(|a| a.get(EXCLUSIVE_TOPOLOGY)).map(|t| (t.clone(), a.and_then(|a| a.get(key)).cloned()))
        };
        from(rjob_annotations).or_else(|| from(family.jobset.metadata.annotations.as_ref()))
    };
    let mut annotations_only = BTreeMap::new();
    let mut node_selector_strategy = false;
    if let Some((topology, node_selector)) = exclusive(NODE_SELECTOR_STRATEGY) {
        annotations_only.insert(EXCLUSIVE_TOPOLOGY.to_string(), topology);
        if let Some(value) = node_selector {
            annotations_only.insert(NODE_SELECTOR_STRATEGY.to_string(), value);
            node_selector_strategy = true;
        }
    }

    let template_meta = rjob.template.metadata.clone().unwrap_or_default();
    let mut spec = rjob.template.spec.clone().unwrap_or_default();
    spec.suspend = Some(suspend);
    let pod_meta = spec.template.metadata.get_or_insert_with(ObjectMeta::default);
    stamp(pod_meta, &stamps, &annotations_only);
    let pod_spec = spec.template.spec.get_or_insert_with(PodSpec::default);
    if family.dns_hostnames() {
        pod_spec.subdomain = Some(family.subdomain().to_string());
    }
    if node_selector_strategy {
        pod_spec
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(NAMESPACED_JOB.into(), format!("{}_{}", family.namespace, name));
        pod_spec.tolerations.get_or_insert_with(Vec::new).push(Toleration {
            key: Some(NO_SCHEDULE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    add_claim_volumes(family, pod_spec);

    let mut meta = ObjectMeta {
        name: Some(name),
        namespace: Some(family.namespace.to_string()),
        labels: template_meta.labels,
        annotations: template_meta.annotations,
        owner_references: Some(vec![family.owner_reference()]),
        ..ObjectMeta::default()
    };
    stamp(&mut meta, &stamps, &annotations_only);
    Job { metadata: meta, spec: Some(spec), status: None }
}

/// `jobRestarts[index]` of the ReplicatedJob, 0 when absent.
pub fn job_restart_attempt(status: &JobSetStatus, rjob: &str, index: i32) -> i32 {
    status
        .replicated_jobs_status
        .iter()
        .find(|s| s.name == rjob)
        .and_then(|s| s.job_restarts.get(usize::try_from(index).ok()?).copied())
        .unwrap_or(0)
}

/// Writes the JobSet keys as labels and annotations (they win over the template's) plus annotation-only keys.
fn stamp(meta: &mut ObjectMeta, both: &BTreeMap<String, String>, annotations_only: &BTreeMap<String, String>) {
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(both.iter().map(|(k, v)| (k.clone(), v.clone())));
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.extend(both.iter().chain(annotations_only).map(|(k, v)| (k.clone(), v.clone())));
}

/// Mounts each volume-claim template that some container or init container of this pod template uses.
fn add_claim_volumes(family: &Family<'_>, pod_spec: &mut PodSpec) {
    let mounted: Vec<&str> = pod_spec
        .containers
        .iter()
        .chain(pod_spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .map(|m| m.name.as_str())
        .collect();
    let mut volumes = Vec::new();
    for template in family.jobset.spec.volume_claim_policies.iter().flat_map(|p| &p.templates) {
        let Some(name) = template.metadata.name.as_deref() else { continue };
        if mounted.contains(&name) {
            volumes.push(Volume {
                name: name.to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc_name(name, family.name),
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
    }
    if !volumes.is_empty() {
        pod_spec.volumes.get_or_insert_with(Vec::new).extend(volumes);
    }
}

/// `<template>-<jobset>`.
pub fn pvc_name(template: &str, jobset: &str) -> String {
    format!("{template}-{jobset}")
}

/// The headless Service giving pods `<pod>.<subdomain>` names.
pub fn headless_service(family: &Family<'_>) -> Service {
    let publish = family.jobset.spec.network.as_ref().and_then(|n| n.publish_not_ready_addresses).unwrap_or(true);
    Service {
        metadata: ObjectMeta {
            name: Some(family.subdomain().to_string()),
            namespace: Some(family.namespace.to_string()),
            owner_references: Some(vec![family.owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([(JOBSET_NAME.to_string(), family.name.to_string())])),
            publish_not_ready_addresses: Some(publish),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// One PVC per volume-claim template. `Delete` claims are owned by the JobSet (the garbage collector removes
/// them with it); `Retain` claims are not, so they survive for the next run.
pub fn claims(family: &Family<'_>) -> Vec<PersistentVolumeClaim> {
    let mut out = Vec::new();
    for policy in &family.jobset.spec.volume_claim_policies {
        let owned = policy.when_deleted() == muster_api::jobset::WhenDeleted::Delete;
        for template in &policy.templates {
            let Some(name) = template.metadata.name.as_deref() else { continue };
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.insert(JOBSET_NAME.into(), family.name.into());
            out.push(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(pvc_name(name, family.name)),
                    namespace: Some(family.namespace.into()),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owned.then(|| vec![family.owner_reference()]),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            });
        }
    }
    out
}
