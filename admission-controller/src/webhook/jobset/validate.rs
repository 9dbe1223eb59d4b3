//! The validating webhook's rules (`vjobset.kb.io`, CREATE and UPDATE), in upstream's order, with upstream's
//! messages, field paths and error types.
//!
//! Upstream mixes field errors with plain Go errors; when it builds the 422 response it turns every plain error
//! into `field.InternalError(nil, err)`, i.e. `<nil>: Internal error: <message>`. The rules below reproduce that
//! one for one: where upstream returns a plain error we return [`FieldError::internal`] at the nil path.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec};
use muster_api::JobSet;
use muster_api::jobset::{FailurePolicyAction, ReplicatedJob, RestartStrategy, WhenDeleted};
use muster_api::keys;

use super::defaults::INDEXED_COMPLETION;
use crate::features::FeatureGates;
use crate::webhook::field::{BadValue, FieldError, FieldErrors, Path};
use crate::webhook::json::{quantity_key, semantic_eq};
use crate::webhook::names::{is_dns1035_label, is_dns1123_subdomain, is_domain_prefixed_path, is_valid_label_value};

/// Group and kind of the 422 response.
pub const GROUP: &str = "jobset.x-k8s.io";
pub const KIND: &str = "JobSet";

const MAX_MANAGED_BY_LENGTH: usize = 63;
const MAX_VOLUME_CLAIM_NAME_LENGTH: usize = 63;
/// The status arrays behind `RestartJob` hold at most this many job indexes.
const MAX_REPLICAS_WITH_RESTART_JOB: i32 = 1024;
const MIN_RULE_NAME_LENGTH: usize = 1;
const MAX_RULE_NAME_LENGTH: usize = 128;
const RULE_NAME_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
/// Length of the random suffix the API server appends to `generateName`, and the longest base it keeps.
const GENERATED_SUFFIX_LENGTH: usize = 5;
const MAX_GENERATED_NAME_BASE: usize = 63 - GENERATED_SUFFIX_LENGTH;
/// Stands in for the random suffix: validation only cares about its length, and a pure function cannot be random.
const SIMULATED_SUFFIX: &str = "xxxxx";

/// `IsDNS1035Label`'s too-long text, which upstream replaces with its own messages.
const DNS1035_MAX_LENGTH_MSG: &str = "must be no more than 63 characters";
const GROUP_NAME_TOO_LONG: &str = ".spec.replicatedJob[].groupName is too long, must be less than 63 characters";
const JOB_NAME_TOO_LONG: &str =
    "JobSet name is too long, job names generated for this JobSet will exceed 63 characters";
const POD_NAME_TOO_LONG: &str =
    "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters";
const SUBDOMAIN_TOO_LONG: &str = ".spec.network.subdomain is too long, must be less than 63 characters";

/// The Job `Failed` condition reasons a failure-policy rule may match on.
const VALID_ON_JOB_FAILURE_REASONS: [&str; 5] =
    ["BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes", "MaxFailedIndexesExceeded", "PodFailurePolicy"];

/// What a lookup of an existing PVC found.
#[derive(Clone, Debug, PartialEq)]
pub enum PvcLookup {
    Found(Box<PersistentVolumeClaim>),
    /// The lookup failed for a reason other than "not found".
    Failed(String),
}

/// PVCs that already exist in the JobSet's namespace, by name, looked up before validation (see
/// [`pvc_names_to_check`]). A name that is not in the map does not exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExistingPvcs(pub BTreeMap<String, PvcLookup>);

impl ExistingPvcs {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&PvcLookup> {
        self.0.get(name)
    }
}

/// The name the create-time checks use: `metadata.name`, or for a `generateName` JobSet a simulated generated name
/// (the base truncated to 58 bytes, as the API server does, plus five characters), so that length checks cover it.
pub fn name_for_validation(js: &JobSet) -> String {
    if let Some(name) = js.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    match js.metadata.generate_name.as_deref().filter(|n| !n.is_empty()) {
        Some(base) => {
            let mut end = base.len().min(MAX_GENERATED_NAME_BASE);
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{SIMULATED_SUFFIX}", &base[..end])
        }
        None => String::new(),
    }
}

/// `<template name>-<jobset name>`: the name of the PVC a volume-claim template creates.
pub fn pvc_name(template_name: &str, jobset_name: &str) -> String {
    format!("{template_name}-{jobset_name}")
}

/// The PVCs [`validate_create`] will ask about, so the caller can look them up first.
pub fn pvc_names_to_check(js: &JobSet) -> Vec<String> {
    let name = name_for_validation(js);
    let mut names: Vec<String> = js
        .spec
        .volume_claim_policies
        .iter()
        .flat_map(|p| &p.templates)
        .map(|t| pvc_name(t.metadata.name.as_deref().unwrap_or(""), &name))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn job_spec(rjob: &ReplicatedJob) -> Option<&JobSpec> {
    rjob.template.spec.as_ref()
}

fn pod_spec(rjob: &ReplicatedJob) -> Option<&PodSpec> {
    job_spec(rjob).and_then(|s| s.template.spec.as_ref())
}

fn is_indexed(spec: Option<&JobSpec>) -> bool {
    spec.and_then(|s| s.completion_mode.as_deref()) == Some(INDEXED_COMPLETION)
}

fn rjobs_path() -> Path {
    Path::new("spec").child("replicatedJobs")
}

/// Swaps IsDNS1035Label's too-long text for upstream's own message.
fn replace_too_long(msg: String, replacement: &str) -> String {
    if msg.contains(DNS1035_MAX_LENGTH_MSG) { replacement.to_owned() } else { msg }
}

/// Every create-time rule of upstream's `ValidateCreate`, in order, all errors accumulated.
pub fn validate_create(js: &JobSet, gates: &FeatureGates, pvcs: &ExistingPvcs) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let name = name_for_validation(js);
    let spec = &js.spec;
    let restart_strategy = spec.failure_policy.as_ref().and_then(|fp| fp.restart_strategy);

    if !gates.in_place_restart && restart_strategy == Some(RestartStrategy::InPlaceRestart) {
        errs.push(FieldError::internal(
            &Path::nil(),
            "InPlaceRestart restart strategy cannot be set when InPlaceRestart feature gate is disabled",
        ));
    }

    if spec.replicated_jobs.first().is_some_and(|r| !r.depends_on.is_empty()) {
        errs.push(FieldError::internal(&Path::nil(), "DependsOn can't be set for the first ReplicatedJob"));
    }

    if let Some(subdomain) = spec.network.as_ref().and_then(|n| n.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        let path = Path::new("spec").child("network").child("subdomain");
        for msg in is_dns1123_subdomain(subdomain) {
            errs.push(FieldError::invalid(&path, BadValue::Str(subdomain.to_owned()), msg));
        }
        // The subdomain is also the Service name, so it must be a DNS-1035 label too.
        for msg in is_dns1035_label(subdomain) {
            errs.push(FieldError::invalid(
                &path,
                BadValue::Str(subdomain.to_owned()),
                replace_too_long(msg, SUBDOMAIN_TOO_LONG),
            ));
        }
    }

    if let Some(manager) = spec.managed_by.as_deref() {
        let path = Path::new("spec").child("managedBy");
        errs.extend(is_domain_prefixed_path(&path, manager));
        if manager.len() > MAX_MANAGED_BY_LENGTH {
            errs.push(FieldError::too_long_max_length(&path, MAX_MANAGED_BY_LENGTH));
        }
    }

    let mut rjob_names: BTreeSet<&str> = BTreeSet::new();
    for (i, rjob) in spec.replicated_jobs.iter().enumerate() {
        let path = rjobs_path().index(i);
        // Inserted before the dependsOn check, so (as upstream) a ReplicatedJob may name itself.
        rjob_names.insert(&rjob.name);
        let replicas = i64::from(rjob.replicas());
        let job = job_spec(rjob);

        let parallelism = i64::from(job.and_then(|s| s.parallelism).unwrap_or(1));
        if parallelism * replicas > i64::from(i32::MAX) {
            errs.push(FieldError::internal(
                &Path::nil(),
                format!(
                    "the product of replicas and parallelism must not exceed {} for replicatedJob '{}'",
                    i32::MAX,
                    rjob.name
                ),
            ));
        }

        let group = rjob.group_name();
        for msg in is_dns1035_label(group) {
            errs.push(FieldError::invalid(
                &path.child("groupName"),
                BadValue::Str(group.to_owned()),
                replace_too_long(msg, GROUP_NAME_TOO_LONG),
            ));
        }

        // The last Job has the longest name.
        let longest_job_name = format!("{name}-{}-{}", rjob.name, replicas - 1);
        for msg in is_dns1035_label(&longest_job_name) {
            errs.push(FieldError::invalid(
                &path.child("name"),
                BadValue::Str(longest_job_name.clone()),
                replace_too_long(msg, JOB_NAME_TOO_LONG),
            ));
        }

        if let Some(completions) = job.filter(|s| is_indexed(Some(s))).and_then(|s| s.completions) {
            // Pod names get a five-character random suffix; the check includes one.
            let longest_pod_name =
                format!("{name}-{}-{}-{}-abcde", rjob.name, replicas - 1, i64::from(completions) - 1);
            for msg in is_dns1035_label(&longest_pod_name) {
                // Upstream reports the Job name here, not the pod name.
                errs.push(FieldError::invalid(
                    &path.child("name"),
                    BadValue::Str(longest_job_name.clone()),
                    replace_too_long(msg, POD_NAME_TOO_LONG),
                ));
            }
        }

        for dep in &rjob.depends_on {
            if !rjob_names.contains(dep.name.as_str()) {
                errs.push(FieldError::internal(
                    &Path::nil(),
                    format!("replicatedJob: {} cannot depend on replicatedJob: {}", rjob.name, dep.name),
                ));
            }
        }

        if gates.in_place_restart && restart_strategy == Some(RestartStrategy::InPlaceRestart) {
            errs.extend(validate_in_place_restart_prerequisites(rjob, &path));
        }
    }

    if let Some(sp) = &spec.success_policy {
        for target in &sp.target_replicated_jobs {
            if !rjob_names.contains(target.as_str()) {
                errs.push(FieldError::internal(
                    &Path::nil(),
                    format!("invalid replicatedJob name '{target}' does not appear in .spec.ReplicatedJobs"),
                ));
            }
        }
    }

    if spec.failure_policy.is_some() {
        errs.extend(validate_failure_policy(js, gates, &rjob_names));
    }

    if spec.coordinator.is_some() {
        errs.extend(validate_coordinator(js));
        errs.extend(validate_coordinator_label_value(js, &name));
    }

    if !spec.volume_claim_policies.is_empty() {
        errs.extend(validate_volume_claim_policies(js, &name, pvcs));
    }

    errs
}

/// In-place restart needs Jobs whose pods are never replaced and whose failures never count.
fn validate_in_place_restart_prerequisites(rjob: &ReplicatedJob, path: &Path) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let job = job_spec(rjob);
    let spec_path = path.child("template").child("spec");
    let backoff_limit = job.and_then(|s| s.backoff_limit);
    if backoff_limit != Some(i32::MAX) {
        errs.push(FieldError::invalid(
            &spec_path.child("backoffLimit"),
            BadValue::opt_int(backoff_limit),
            format!(
                "replicatedJob {}: must be set to {} (MaxInt32) when in-place restart is enabled",
                rjob.name,
                i32::MAX
            ),
        ));
    }
    let replacement = job.and_then(|s| s.pod_replacement_policy.as_deref());
    if replacement != Some("Failed") {
        errs.push(FieldError::invalid(
            &spec_path.child("podReplacementPolicy"),
            BadValue::opt_str(replacement),
            format!("replicatedJob {}: must be set to Failed when in-place restart is enabled", rjob.name),
        ));
    }
    let completions = job.and_then(|s| s.completions);
    let parallelism = job.and_then(|s| s.parallelism);
    if completions.is_none() || parallelism.is_none() || completions != parallelism {
        errs.push(FieldError::invalid(
            &spec_path.child("completions"),
            BadValue::opt_int(completions),
            format!(
                "replicatedJob {}: completions and parallelism must be set and equal to each other when in-place restart is enabled",
                rjob.name
            ),
        ));
    }
    errs
}

fn validate_failure_policy(js: &JobSet, gates: &FeatureGates, rjob_names: &BTreeSet<&str>) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let Some(fp) = &js.spec.failure_policy else { return errs };
    let nil = Path::nil();

    let uses_restart_job = fp.rules.iter().any(|r| {
        matches!(r.action, FailurePolicyAction::RestartJob | FailurePolicyAction::RestartJobAndIgnoreMaxRestarts)
    });
    if uses_restart_job {
        if !gates.restart_job {
            // Upstream stops checking the failure policy here.
            errs.push(FieldError::internal(
                &nil,
                "RestartJob and RestartJobAndIgnoreMaxRestarts failure policy actions are not allowed when RestartJob feature gate is disabled",
            ));
            return errs;
        }
        if js.spec.replicated_jobs.iter().any(|r| r.replicas() > MAX_REPLICAS_WITH_RESTART_JOB) {
            errs.push(FieldError::internal(
                &nil,
                format!(
                    "JobSet cannot have a failure policy rule with RestartJob or RestartJobAndIgnoreMaxRestarts action and a replicated job with replicas > {MAX_REPLICAS_WITH_RESTART_JOB}"
                ),
            ));
        }
    }

    let rule_name = rule_name_regex();
    let mut indices_by_name: Vec<(&str, Vec<usize>)> = Vec::new();
    for (index, rule) in fp.rules.iter().enumerate() {
        let len = rule.name.len();
        if !(MIN_RULE_NAME_LENGTH..=MAX_RULE_NAME_LENGTH).contains(&len) {
            errs.push(FieldError::internal(
                &nil,
                format!(
                    "invalid failure policy rule name of length {len}, the rule name must be at least {MIN_RULE_NAME_LENGTH} characters long and at most {MAX_RULE_NAME_LENGTH} characters long"
                ),
            ));
        }
        match indices_by_name.iter_mut().find(|(n, _)| *n == rule.name) {
            Some((_, indices)) => indices.push(index),
            None => indices_by_name.push((&rule.name, vec![index])),
        }
        if !rule_name.is_match(&rule.name) {
            errs.push(FieldError::internal(
                &nil,
                format!(
                    "invalid failure policy rule name '{}', a failure policy rule name must start with an alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'",
                    rule.name
                ),
            ));
        }
        for target in &rule.target_replicated_jobs {
            if !rjob_names.contains(target.as_str()) {
                errs.push(FieldError::internal(
                    &nil,
                    format!("invalid replicatedJob name '{target}' in failure policy does not appear in .spec.ReplicatedJobs"),
                ));
            }
        }
        for reason in &rule.on_job_failure_reasons {
            if !VALID_ON_JOB_FAILURE_REASONS.contains(&reason.as_str()) {
                errs.push(FieldError::internal(
                    &nil,
                    format!(
                        "invalid job failure reason '{reason}' in failure policy is not a recognized job failure reason"
                    ),
                ));
            }
        }
    }

    // Upstream walks a Go map here, so its order among several duplicated names is random; ours is first
    // appearance.
    for (name, indices) in indices_by_name.iter().filter(|(_, i)| i.len() > 1) {
        let indices: Vec<String> = indices.iter().map(usize::to_string).collect();
        errs.push(FieldError::internal(
            &nil,
            format!(
                "rule names are not unique, rules with indices [{}] all have the same name '{name}'",
                indices.join(" ")
            ),
        ));
    }
    errs
}

fn rule_name_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    #[allow(clippy::expect_used)]
    RE.get_or_init(|| regex::Regex::new(RULE_NAME_PATTERN).expect("the rule-name pattern is a valid regex"))
}

/// The coordinator must name an existing pod of an Indexed Job; only the first failing check is reported.
fn validate_coordinator(js: &JobSet) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let Some(c) = &js.spec.coordinator else { return errs };
    let job_index = c.job_index.unwrap_or(0);
    let pod_index = c.pod_index.unwrap_or(0);
    let message = match js.spec.replicated_jobs.iter().find(|r| r.name == c.replicated_job) {
        None => Some(format!("coordinator replicatedJob {} does not exist", c.replicated_job)),
        Some(rjob) if job_index < 0 || job_index >= rjob.replicas() => {
            Some(format!("coordinator job index {job_index} is invalid for replicatedJob {}", rjob.name))
        }
        Some(rjob) => match job_spec(rjob).filter(|s| is_indexed(Some(s))).and_then(|s| s.completions) {
            None => Some(
                "job for coordinator pod must be indexed completion mode, and completions number must be set"
                    .to_owned(),
            ),
            Some(completions) if pod_index < 0 || pod_index >= completions => Some(format!(
                "coordinator pod index {pod_index} is invalid for replicatedJob {} job index {job_index}",
                c.replicated_job
            )),
            Some(_) => None,
        },
    };
    if let Some(message) = message {
        errs.push(FieldError::internal(&Path::nil(), message));
    }
    errs
}

/// `<jobset>-<rjob>-<jobIndex>-<podIndex>.<subdomain>`, the value of the coordinator label.
pub fn coordinator_endpoint(js: &JobSet, jobset_name: &str) -> Option<String> {
    let c = js.spec.coordinator.as_ref()?;
    let subdomain =
        js.spec.network.as_ref().and_then(|n| n.subdomain.as_deref()).filter(|s| !s.is_empty()).unwrap_or(jobset_name);
    Some(format!(
        "{jobset_name}-{}-{}-{}.{subdomain}",
        c.replicated_job,
        c.job_index.unwrap_or(0),
        c.pod_index.unwrap_or(0)
    ))
}

fn validate_coordinator_label_value(js: &JobSet, jobset_name: &str) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let Some(value) = coordinator_endpoint(js, jobset_name) else { return errs };
    let problems = is_valid_label_value(&value);
    if !problems.is_empty() {
        errs.push(FieldError::internal(
            &Path::nil(),
            format!(
                "spec will lead to invalid label value {} for coordinator label {} (long JobSet / ReplicatedJob / SubDomain name?): {}",
                crate::webhook::field::go_quote(&value),
                crate::webhook::field::go_quote(keys::COORDINATOR),
                problems.join(", ")
            ),
        ));
    }
    errs
}

fn validate_volume_claim_policies(js: &JobSet, jobset_name: &str, pvcs: &ExistingPvcs) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let namespace = js.metadata.namespace.as_deref().unwrap_or("");
    let mut claim_names: BTreeSet<&str> = BTreeSet::new();
    for (policy_index, policy) in js.spec.volume_claim_policies.iter().enumerate() {
        let policy_path = Path::new("spec").child("volumeClaimPolicies").index(policy_index);
        for (template_index, template) in policy.templates.iter().enumerate() {
            // Upstream's path says `template`, although the field is `templates`.
            let template_path = policy_path.child("template").index(template_index);
            let name_path = template_path.child("name");
            let template_name = template.metadata.name.as_deref().unwrap_or("");

            if claim_names.contains(template_name) {
                errs.push(FieldError::invalid(
                    &name_path,
                    BadValue::Str(template_name.to_owned()),
                    "names must be unique for VolumeClaimPolicies template",
                ));
            }
            for msg in is_dns1123_subdomain(template_name) {
                errs.push(FieldError::invalid(&name_path, BadValue::Str(template_name.to_owned()), msg));
            }
            let pvc = pvc_name(template_name, jobset_name);
            if pvc.len() > MAX_VOLUME_CLAIM_NAME_LENGTH {
                errs.push(FieldError::invalid(
                    &name_path,
                    BadValue::Str(template_name.to_owned()),
                    "VolumeClaimPolicies template name is too long",
                ));
            }
            errs.extend(validate_replicated_jobs_volume_claims(&js.spec.replicated_jobs, template_name));

            match pvcs.get(&pvc) {
                Some(PvcLookup::Found(existing)) => {
                    if !semantic_eq(&sizes_by_value(&existing.spec), &sizes_by_value(&template.spec)) {
                        errs.push(FieldError::invalid(
                            &template_path.child("spec"),
                            BadValue::json(&template.spec),
                            format!("spec does not match existing PVC {pvc} in namespace {namespace}"),
                        ));
                    }
                    if let Some(retention) = &policy.retention_policy {
                        let when_deleted = retention.when_deleted.unwrap_or_default();
                        if when_deleted != WhenDeleted::Retain {
                            errs.push(FieldError::invalid(
                                &policy_path.child("retentionPolicy").child("whenDeleted"),
                                BadValue::Str(format!("{when_deleted:?}")),
                                "retentionPolicy must be retain when PVC exists",
                            ));
                        }
                    }
                }
                Some(PvcLookup::Failed(reason)) => errs.push(FieldError::internal(
                    &template_path,
                    format!("failed to check for existing PVC {pvc}: {reason}"),
                )),
                None => {}
            }
            claim_names.insert(template_name);
        }
    }
    errs
}

/// The PVC spec with its sizes replaced by [`quantity_key`]s, for comparison only: upstream's `Semantic.DeepEqual`
/// compares quantities by value, and the API server stores a PVC's sizes in canonical form (a template's `1.5Gi` is
/// the existing PVC's `1536Mi`).
fn sizes_by_value(spec: &Option<PersistentVolumeClaimSpec>) -> Option<PersistentVolumeClaimSpec> {
    let mut spec = spec.clone();
    if let Some(resources) = spec.as_mut().and_then(|s| s.resources.as_mut()) {
        for quantity in
            [&mut resources.limits, &mut resources.requests].into_iter().flatten().flat_map(|m| m.values_mut())
        {
            if let Some(key) = quantity_key(&quantity.0) {
                quantity.0 = key;
            }
        }
    }
    spec
}

fn mounts(container: &Container, volume: &str) -> bool {
    container.volume_mounts.iter().flatten().any(|m| m.name == volume)
}

fn validate_replicated_jobs_volume_claims(rjobs: &[ReplicatedJob], claim: &str) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let mut mounted = false;
    for (i, rjob) in rjobs.iter().enumerate() {
        let Some(pod) = pod_spec(rjob) else { continue };
        for (v, volume) in pod.volumes.iter().flatten().enumerate() {
            if volume.name == claim {
                let path = rjobs_path()
                    .index(i)
                    .child("template")
                    .child("spec")
                    .child("template")
                    .child("spec")
                    .child("volumes")
                    .index(v)
                    .child("name");
                errs.push(FieldError::invalid(
                    &path,
                    BadValue::Str(volume.name.clone()),
                    format!("volume name conflicts with VolumeClaimPolicy template name: {claim}"),
                ));
            }
        }
        mounted = mounted
            || pod.init_containers.iter().flatten().any(|c| mounts(c, claim))
            || pod.containers.iter().any(|c| mounts(c, claim));
    }
    if !mounted {
        errs.push(FieldError::invalid(
            &rjobs_path(),
            BadValue::json(&rjobs),
            format!("replicatedJob containers don't have a matching volumeMount: {claim} from VolumeClaimPolicies"),
        ));
    }
    errs
}

fn is_terminal(js: &JobSet) -> bool {
    js.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| (c.type_ == keys::CONDITION_COMPLETED || c.type_ == keys::CONDITION_FAILED) && c.status == "True")
    })
}

/// Upstream's `ValidateUpdate`: ReplicatedJobs are immutable except for the carve-outs (pod-template scheduling
/// fields while suspended, `parallelism`/`completions` under ElasticJobSet), and `managedBy` is immutable. The
/// create-time rules are not re-run; the other policies are immutable through CEL.
pub fn validate_update(old: &JobSet, new: &JobSet, gates: &FeatureGates) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let old_by_name: BTreeMap<&str, &ReplicatedJob> =
        old.spec.replicated_jobs.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut munged = new.spec.replicated_jobs.clone();

    if gates.elastic_jobset {
        let terminal = is_terminal(old);
        for (i, new_rjob) in new.spec.replicated_jobs.iter().enumerate() {
            let Some(old_rjob) = old_by_name.get(new_rjob.name.as_str()) else { continue };
            let new_spec = job_spec(new_rjob);
            if !is_indexed(new_spec) {
                continue;
            }
            let path = rjobs_path().index(i).child("template").child("spec");
            let old_spec = job_spec(old_rjob);
            let (new_par, new_comp) = (new_spec.and_then(|s| s.parallelism), new_spec.and_then(|s| s.completions));
            let (old_par, old_comp) = (old_spec.and_then(|s| s.parallelism), old_spec.and_then(|s| s.completions));
            let parallelism_changed = new_par != old_par;
            let completions_changed = new_comp != old_comp;
            if parallelism_changed || completions_changed {
                if terminal {
                    errs.push(FieldError::forbidden(
                        &path,
                        "Cannot mutate parallelism or completions when JobSet is in a terminal state (Completed or Failed)",
                    ));
                } else {
                    if let Some(p) = new_par.filter(|p| parallelism_changed && *p < 1) {
                        errs.push(FieldError::invalid(
                            &path.child("parallelism"),
                            BadValue::Int(p.into()),
                            "parallelism must be >= 1",
                        ));
                    }
                    if let Some(c) = new_comp.filter(|c| completions_changed && *c < 1) {
                        errs.push(FieldError::invalid(
                            &path.child("completions"),
                            BadValue::Int(c.into()),
                            "completions must be >= 1",
                        ));
                    }
                    if let (Some(p), Some(c)) = (new_par, new_comp)
                        && p != c
                    {
                        errs.push(FieldError::invalid(
                            &path.child("completions"),
                            BadValue::Int(c.into()),
                            "completions must be equal to parallelism for Elastic Indexed Jobs",
                        ));
                    }
                }
            }
            // Masked so the immutability check below does not see them.
            let munged_spec = munged[i].template.spec.get_or_insert_with(JobSpec::default);
            munged_spec.parallelism = old_par;
            munged_spec.completions = old_comp;
        }
    }

    // Kueue (and our own gang admission) rewrite these while a JobSet is suspended or being suspended.
    if old.suspended() || new.suspended() {
        for (i, new_rjob) in new.spec.replicated_jobs.iter().enumerate() {
            let Some(old_rjob) = old_by_name.get(new_rjob.name.as_str()) else { continue };
            let old_template = job_spec(old_rjob).map(|s| &s.template);
            let old_meta = old_template.and_then(|t| t.metadata.as_ref());
            let old_pod = old_template.and_then(|t| t.spec.as_ref());
            let template = &mut munged[i].template.spec.get_or_insert_with(JobSpec::default).template;
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.labels = old_meta.and_then(|m| m.labels.clone());
            meta.annotations = old_meta.and_then(|m| m.annotations.clone());
            let pod = template.spec.get_or_insert_with(Default::default);
            pod.node_selector = old_pod.and_then(|p| p.node_selector.clone());
            pod.tolerations = old_pod.and_then(|p| p.tolerations.clone());
            pod.scheduling_gates = old_pod.and_then(|p| p.scheduling_gates.clone());
        }
    }

    if !semantic_eq(&munged, &old.spec.replicated_jobs) {
        errs.push(FieldError::invalid(&rjobs_path(), BadValue::json(&munged), "field is immutable"));
    }
    if new.spec.managed_by != old.spec.managed_by {
        errs.push(FieldError::invalid(
            &Path::new("spec").child("managedBy"),
            BadValue::opt_str(new.spec.managed_by.as_deref()),
            "field is immutable",
        ));
    }
    errs
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
