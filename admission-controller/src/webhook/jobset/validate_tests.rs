//! One accepted and one rejected JobSet per rule, the rejection checked for its exact text, field path and type.

use serde_json::{Value, json};

use super::*;
use crate::webhook::field::ErrorType;

const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const DNS1123: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn rjob(name: &str, replicas: i32, completions: i32) -> Value {
    json!({
        "name": name,
        "replicas": replicas,
        "groupName": "default",
        "template": {"spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            "template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]
            }}
        }}
    })
}

/// A valid, fully defaulted JobSet: `leader` (1 Job × 1 pod) and `workers` (2 Jobs × 2 pods).
fn valid() -> Value {
    json!({
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "js", "namespace": "default"},
        "spec": {
            "successPolicy": {"operator": "All"},
            "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
            "replicatedJobs": [rjob("leader", 1, 1), rjob("workers", 2, 2)]
        }
    })
}

fn decode(v: Value) -> JobSet {
    serde_json::from_value(v).expect("fixture decodes")
}

fn with(edit: impl FnOnce(&mut Value)) -> JobSet {
    let mut v = valid();
    edit(&mut v);
    decode(v)
}

fn gates() -> FeatureGates {
    FeatureGates::default()
}

fn create(js: &JobSet) -> FieldErrors {
    validate_create(js, &gates(), &ExistingPvcs::none())
}

fn messages(errs: &FieldErrors) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

/// Asserts exactly these errors, as `(type, field, full message)`.
#[track_caller]
fn assert_errors(errs: &FieldErrors, expected: &[(ErrorType, &str, &str)]) {
    let got: Vec<(ErrorType, String, String)> =
        errs.iter().map(|e| (e.error_type, e.field.clone(), e.to_string())).collect();
    let want: Vec<(ErrorType, String, String)> =
        expected.iter().map(|(t, f, m)| (*t, (*f).to_owned(), (*m).to_owned())).collect();
    assert_eq!(got, want);
}

#[track_caller]
fn assert_valid(errs: &FieldErrors) {
    assert!(errs.is_empty(), "unexpected errors: {:#?}", messages(errs));
}

fn internal(msg: &str) -> (ErrorType, &'static str, String) {
    (ErrorType::Internal, "<nil>", format!("<nil>: Internal error: {msg}"))
}

#[track_caller]
fn assert_internal<S: AsRef<str>>(errs: &FieldErrors, expected: &[S]) {
    let want: Vec<(ErrorType, &str, String)> = expected.iter().map(|m| internal(m.as_ref())).collect();
    let want: Vec<(ErrorType, &str, &str)> = want.iter().map(|(t, f, m)| (*t, *f, m.as_str())).collect();
    assert_errors(errs, &want);
}

#[test]
fn the_fixture_is_valid() {
    assert_valid(&create(&decode(valid())));
}

// --- 1. InPlaceRestart is gated (and the gate is never on in Muster) ---

#[test]
fn in_place_restart_strategy_is_rejected_without_the_gate() {
    let js = with(|v| v["spec"]["failurePolicy"] = json!({"restartStrategy": "InPlaceRestart"}));
    assert_internal(
        &create(&js),
        &["InPlaceRestart restart strategy cannot be set when InPlaceRestart feature gate is disabled"],
    );
    let js = with(|v| v["spec"]["failurePolicy"] = json!({"restartStrategy": "BlockingRecreate"}));
    assert_valid(&create(&js));
}

#[test]
fn in_place_restart_prerequisites_apply_when_the_gate_is_on() {
    let gates = FeatureGates { in_place_restart: true, ..FeatureGates::default() };
    let js = with(|v| {
        v["spec"]["failurePolicy"] = json!({"restartStrategy": "InPlaceRestart"});
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["completions"] = json!(3);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["backoffLimit"] = json!(2147483647);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["podReplacementPolicy"] = json!("TerminatingOrFailed");
    });
    let p0 = "spec.replicatedJobs[0].template.spec";
    let p1 = "spec.replicatedJobs[1].template.spec";
    assert_errors(
        &validate_create(&js, &gates, &ExistingPvcs::none()),
        &[
            (
                ErrorType::Invalid,
                &format!("{p0}.backoffLimit"),
                &format!(
                    "{p0}.backoffLimit: Invalid value: \"null\": replicatedJob leader: must be set to 2147483647 (MaxInt32) when in-place restart is enabled"
                ),
            ),
            (
                ErrorType::Invalid,
                &format!("{p0}.podReplacementPolicy"),
                &format!(
                    "{p0}.podReplacementPolicy: Invalid value: \"null\": replicatedJob leader: must be set to Failed when in-place restart is enabled"
                ),
            ),
            (
                ErrorType::Invalid,
                &format!("{p1}.podReplacementPolicy"),
                &format!(
                    "{p1}.podReplacementPolicy: Invalid value: \"TerminatingOrFailed\": replicatedJob workers: must be set to Failed when in-place restart is enabled"
                ),
            ),
            (
                ErrorType::Invalid,
                &format!("{p1}.completions"),
                &format!(
                    "{p1}.completions: Invalid value: 3: replicatedJob workers: completions and parallelism must be set and equal to each other when in-place restart is enabled"
                ),
            ),
        ],
    );
    let js = with(|v| {
        v["spec"]["failurePolicy"] = json!({"restartStrategy": "InPlaceRestart"});
        for i in 0..2 {
            v["spec"]["replicatedJobs"][i]["template"]["spec"]["backoffLimit"] = json!(2147483647);
            v["spec"]["replicatedJobs"][i]["template"]["spec"]["podReplacementPolicy"] = json!("Failed");
        }
    });
    assert_valid(&validate_create(&js, &gates, &ExistingPvcs::none()));
}

// --- 2. dependsOn on the first ReplicatedJob ---

#[test]
fn first_replicated_job_cannot_depend_on_anything() {
    let js = with(|v| v["spec"]["replicatedJobs"][0]["dependsOn"] = json!([{"name": "leader", "status": "Ready"}]));
    assert_internal(&create(&js), &["DependsOn can't be set for the first ReplicatedJob"]);
    let js = with(|v| v["spec"]["replicatedJobs"][1]["dependsOn"] = json!([{"name": "leader", "status": "Complete"}]));
    assert_valid(&create(&js));
}

// --- 3. network.subdomain ---

#[test]
fn subdomain_must_be_a_dns_1123_subdomain_and_a_dns_1035_label() {
    let path = "spec.network.subdomain";
    let js = with(|v| v["spec"]["network"]["subdomain"] = json!("My.Sub"));
    assert_errors(
        &create(&js),
        &[
            (ErrorType::Invalid, path, &format!("{path}: Invalid value: \"My.Sub\": {DNS1123}")),
            (ErrorType::Invalid, path, &format!("{path}: Invalid value: \"My.Sub\": {DNS1035}")),
        ],
    );
    let js = with(|v| v["spec"]["network"]["subdomain"] = json!("a.b"));
    assert_errors(&create(&js), &[(ErrorType::Invalid, path, &format!("{path}: Invalid value: \"a.b\": {DNS1035}"))]);
    let js = with(|v| v["spec"]["network"]["subdomain"] = json!("my-sub"));
    assert_valid(&create(&js));
}

#[test]
fn too_long_subdomain_gets_upstreams_message() {
    let long = "a".repeat(64);
    let js = with(|v| v["spec"]["network"]["subdomain"] = json!(long));
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            "spec.network.subdomain",
            &format!(
                "spec.network.subdomain: Invalid value: \"{long}\": .spec.network.subdomain is too long, must be less than 63 characters"
            ),
        )],
    );
    let js = with(|v| v["spec"]["network"]["subdomain"] = json!("a".repeat(63)));
    assert_valid(&create(&js));
}

// --- 4. managedBy ---

#[test]
fn managed_by_must_be_a_domain_prefixed_path() {
    let js = with(|v| v["spec"]["managedBy"] = json!("foo"));
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            "spec.managedBy",
            r#"spec.managedBy: Invalid value: "foo": must be a domain-prefixed path (such as "acme.io/foo")"#,
        )],
    );
    let js = with(|v| v["spec"]["managedBy"] = json!("kueue.x-k8s.io/multikueue"));
    assert_valid(&create(&js));
}

#[test]
fn managed_by_is_at_most_63_characters() {
    let js = with(|v| v["spec"]["managedBy"] = json!(format!("example.com/{}", "x".repeat(52))));
    assert_errors(
        &create(&js),
        &[(ErrorType::TooLong, "spec.managedBy", "spec.managedBy: Too long: may not be longer than 63")],
    );
    let js = with(|v| v["spec"]["managedBy"] = json!(format!("example.com/{}", "x".repeat(51))));
    assert_valid(&create(&js));
}

// --- 5. per ReplicatedJob ---

#[test]
fn replicas_times_parallelism_fits_in_an_int32() {
    let js = with(|v| v["spec"]["replicatedJobs"][1]["template"]["spec"]["parallelism"] = json!(1_073_741_824));
    assert_internal(
        &create(&js),
        &["the product of replicas and parallelism must not exceed 2147483647 for replicatedJob 'workers'"],
    );
    let js = with(|v| v["spec"]["replicatedJobs"][1]["template"]["spec"]["parallelism"] = json!(1_073_741_823));
    assert_valid(&create(&js));
}

#[test]
fn group_name_is_a_dns_1035_label() {
    let js = with(|v| v["spec"]["replicatedJobs"][0]["groupName"] = json!("Bad_Group"));
    let path = "spec.replicatedJobs[0].groupName";
    assert_errors(
        &create(&js),
        &[(ErrorType::Invalid, path, &format!("{path}: Invalid value: \"Bad_Group\": {DNS1035}"))],
    );
    let long = "g".repeat(64);
    let js = with(|v| v["spec"]["replicatedJobs"][0]["groupName"] = json!(long));
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            path,
            &format!(
                "{path}: Invalid value: \"{long}\": .spec.replicatedJob[].groupName is too long, must be less than 63 characters"
            ),
        )],
    );
    let js = with(|v| v["spec"]["replicatedJobs"][0]["groupName"] = json!("trainers"));
    assert_valid(&create(&js));
}

fn without_completions(v: &mut Value) {
    for i in 0..2 {
        let spec = &mut v["spec"]["replicatedJobs"][i]["template"]["spec"];
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("completions");
        }
    }
}

#[test]
fn job_names_must_fit_in_63_characters() {
    let name = "a".repeat(54);
    let js = with(|v| {
        without_completions(v);
        v["metadata"]["name"] = json!(name);
    });
    let path = "spec.replicatedJobs[1].name";
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            path,
            &format!(
                "{path}: Invalid value: \"{name}-workers-1\": JobSet name is too long, job names generated for this JobSet will exceed 63 characters"
            ),
        )],
    );
    let js = with(|v| {
        without_completions(v);
        v["metadata"]["name"] = json!("a".repeat(53));
    });
    assert_valid(&create(&js));
}

#[test]
fn job_names_must_start_with_a_letter() {
    let js = with(|v| v["metadata"]["name"] = json!("1js"));
    let (p0, p1) = ("spec.replicatedJobs[0].name", "spec.replicatedJobs[1].name");
    // Job name and pod name checks report the same Job name, as upstream does.
    assert_errors(
        &create(&js),
        &[
            (ErrorType::Invalid, p0, &format!("{p0}: Invalid value: \"1js-leader-0\": {DNS1035}")),
            (ErrorType::Invalid, p0, &format!("{p0}: Invalid value: \"1js-leader-0\": {DNS1035}")),
            (ErrorType::Invalid, p1, &format!("{p1}: Invalid value: \"1js-workers-1\": {DNS1035}")),
            (ErrorType::Invalid, p1, &format!("{p1}: Invalid value: \"1js-workers-1\": {DNS1035}")),
        ],
    );
}

#[test]
fn pod_names_of_indexed_jobs_must_fit_in_63_characters() {
    let name = "a".repeat(45);
    let js = with(|v| {
        v["metadata"]["name"] = json!(name);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["completions"] = json!(100);
    });
    let path = "spec.replicatedJobs[1].name";
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            path,
            &format!(
                "{path}: Invalid value: \"{name}-workers-1\": JobSet name is too long, pod names generated for this JobSet will exceed 63 characters"
            ),
        )],
    );
    let js = with(|v| {
        v["metadata"]["name"] = json!("a".repeat(44));
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["completions"] = json!(100);
    });
    assert_valid(&create(&js));
    // NonIndexed Jobs have random pod names: no check.
    let js = with(|v| {
        v["metadata"]["name"] = json!(name);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["completions"] = json!(100);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["completionMode"] = json!("NonIndexed");
    });
    assert_valid(&create(&js));
}

#[test]
fn generate_name_is_validated_with_a_simulated_suffix() {
    let base = "a".repeat(50);
    let js = with(|v| {
        without_completions(v);
        v["metadata"] = json!({"generateName": base, "namespace": "default"});
    });
    assert_eq!(name_for_validation(&js), format!("{base}xxxxx"));
    let msg = "JobSet name is too long, job names generated for this JobSet will exceed 63 characters";
    assert_eq!(
        messages(&create(&js)),
        vec![
            format!("spec.replicatedJobs[0].name: Invalid value: \"{base}xxxxx-leader-0\": {msg}"),
            format!("spec.replicatedJobs[1].name: Invalid value: \"{base}xxxxx-workers-1\": {msg}"),
        ]
    );
    let js = with(|v| {
        without_completions(v);
        v["metadata"] = json!({"generateName": "a".repeat(45), "namespace": "default"});
    });
    assert_valid(&create(&js));
    // The API server keeps at most 58 bytes of the base.
    let js = with(|v| v["metadata"] = json!({"generateName": "b".repeat(70)}));
    assert_eq!(name_for_validation(&js), format!("{}xxxxx", "b".repeat(58)));
}

#[test]
fn depends_on_must_name_an_earlier_replicated_job() {
    let js = with(|v| v["spec"]["replicatedJobs"][1]["dependsOn"] = json!([{"name": "later", "status": "Ready"}]));
    assert_internal(&create(&js), &["replicatedJob: workers cannot depend on replicatedJob: later"]);
    // Upstream quirk kept: a ReplicatedJob (not the first) may name itself.
    let js = with(|v| v["spec"]["replicatedJobs"][1]["dependsOn"] = json!([{"name": "workers", "status": "Ready"}]));
    assert_valid(&create(&js));
}

// --- 6. successPolicy targets ---

#[test]
fn success_policy_targets_must_exist() {
    let js =
        with(|v| v["spec"]["successPolicy"] = json!({"operator": "Any", "targetReplicatedJobs": ["leader", "nope"]}));
    assert_internal(&create(&js), &["invalid replicatedJob name 'nope' does not appear in .spec.ReplicatedJobs"]);
    let js = with(|v| v["spec"]["successPolicy"] = json!({"operator": "Any", "targetReplicatedJobs": ["leader"]}));
    assert_valid(&create(&js));
}

// --- 7. failurePolicy ---

fn with_rules(rules: Value) -> JobSet {
    with(|v| v["spec"]["failurePolicy"] = json!({"maxRestarts": 3, "rules": rules}))
}

#[test]
fn restart_job_actions_need_the_gate_and_stop_further_checks() {
    let js = with_rules(json!([{"name": "r", "action": "RestartJob"}, {"name": "1bad", "action": "FailJobSet"}]));
    assert_internal(
        &create(&js),
        &[
            "RestartJob and RestartJobAndIgnoreMaxRestarts failure policy actions are not allowed when RestartJob feature gate is disabled",
        ],
    );
    let gates = FeatureGates { restart_job: true, ..FeatureGates::default() };
    let js = with_rules(json!([{"name": "r", "action": "RestartJobAndIgnoreMaxRestarts"}]));
    assert_valid(&validate_create(&js, &gates, &ExistingPvcs::none()));
}

#[test]
fn restart_job_actions_cap_replicas_at_1024() {
    let gates = FeatureGates { restart_job: true, ..FeatureGates::default() };
    let js = with(|v| {
        v["spec"]["failurePolicy"] = json!({"rules": [{"name": "r", "action": "RestartJob"}]});
        v["spec"]["replicatedJobs"][1]["replicas"] = json!(1025);
    });
    assert_internal(
        &validate_create(&js, &gates, &ExistingPvcs::none()),
        &[
            "JobSet cannot have a failure policy rule with RestartJob or RestartJobAndIgnoreMaxRestarts action and a replicated job with replicas > 1024",
        ],
    );
    let js = with(|v| {
        v["spec"]["failurePolicy"] = json!({"rules": [{"name": "r", "action": "RestartJob"}]});
        v["spec"]["replicatedJobs"][1]["replicas"] = json!(1024);
    });
    assert_valid(&validate_create(&js, &gates, &ExistingPvcs::none()));
}

const RULE_NAME_FORMAT: &str = "a failure policy rule name must start with an alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'";

#[test]
fn rule_names_have_a_length_between_1_and_128() {
    let js = with_rules(json!([{"name": "", "action": "FailJobSet"}]));
    assert_internal(
        &create(&js),
        &[
            "invalid failure policy rule name of length 0, the rule name must be at least 1 characters long and at most 128 characters long",
            format!("invalid failure policy rule name '', {RULE_NAME_FORMAT}").as_str(),
        ],
    );
    let js = with_rules(json!([{"name": "a".repeat(129), "action": "FailJobSet"}]));
    assert_internal(
        &create(&js),
        &[
            "invalid failure policy rule name of length 129, the rule name must be at least 1 characters long and at most 128 characters long",
        ],
    );
    let js = with_rules(json!([{"name": "a".repeat(128), "action": "FailJobSet"}]));
    assert_valid(&create(&js));
}

#[test]
fn rule_names_follow_the_condition_reason_format() {
    for bad in ["1bad", "bad:", "with space", "_x"] {
        let js = with_rules(json!([{"name": bad, "action": "FailJobSet"}]));
        assert_internal(&create(&js), &[&format!("invalid failure policy rule name '{bad}', {RULE_NAME_FORMAT}")]);
    }
    for good in ["a", "a_b,c:d", "ends_", "X9"] {
        assert_valid(&create(&with_rules(json!([{"name": good, "action": "FailJobSet"}]))));
    }
}

#[test]
fn rule_targets_must_exist() {
    let js = with_rules(json!([{"name": "r", "action": "FailJobSet", "targetReplicatedJobs": ["nope"]}]));
    assert_internal(
        &create(&js),
        &["invalid replicatedJob name 'nope' in failure policy does not appear in .spec.ReplicatedJobs"],
    );
    let js = with_rules(json!([{"name": "r", "action": "FailJobSet", "targetReplicatedJobs": ["leader"]}]));
    assert_valid(&create(&js));
}

#[test]
fn rule_failure_reasons_must_be_job_failure_reasons() {
    let js = with_rules(json!([{"name": "r", "action": "FailJobSet", "onJobFailureReasons": ["OOMKilled"]}]));
    assert_internal(
        &create(&js),
        &["invalid job failure reason 'OOMKilled' in failure policy is not a recognized job failure reason"],
    );
    let reasons =
        ["BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes", "MaxFailedIndexesExceeded", "PodFailurePolicy"];
    let js = with_rules(json!([{"name": "r", "action": "FailJobSet", "onJobFailureReasons": reasons}]));
    assert_valid(&create(&js));
}

#[test]
fn rule_names_are_unique() {
    let js = with_rules(json!([
        {"name": "dup", "action": "FailJobSet"},
        {"name": "x", "action": "RestartJobSet"},
        {"name": "dup", "action": "RestartJobSetAndIgnoreMaxRestarts"},
    ]));
    assert_internal(
        &create(&js),
        &["rule names are not unique, rules with indices [0 2] all have the same name 'dup'"],
    );
    let js = with_rules(json!([{"name": "a", "action": "FailJobSet"}, {"name": "b", "action": "RestartJobSet"}]));
    assert_valid(&create(&js));
}

// --- 8. coordinator ---

fn with_coordinator(coordinator: Value) -> JobSet {
    with(|v| v["spec"]["coordinator"] = coordinator)
}

#[test]
fn coordinator_replicated_job_must_exist() {
    assert_internal(
        &create(&with_coordinator(json!({"replicatedJob": "nope"}))),
        &["coordinator replicatedJob nope does not exist"],
    );
    assert_valid(&create(&with_coordinator(json!({"replicatedJob": "leader"}))));
}

#[test]
fn coordinator_job_index_must_be_in_range() {
    let js = with_coordinator(json!({"replicatedJob": "workers", "jobIndex": 2}));
    assert_internal(&create(&js), &["coordinator job index 2 is invalid for replicatedJob workers"]);
    let js = with_coordinator(json!({"replicatedJob": "workers", "jobIndex": -1}));
    assert_internal(&create(&js), &["coordinator job index -1 is invalid for replicatedJob workers"]);
    assert_valid(&create(&with_coordinator(json!({"replicatedJob": "workers", "jobIndex": 1}))));
}

#[test]
fn coordinator_job_must_be_indexed_with_completions() {
    let js = with(|v| {
        v["spec"]["coordinator"] = json!({"replicatedJob": "leader"});
        v["spec"]["replicatedJobs"][0]["template"]["spec"]["completionMode"] = json!("NonIndexed");
    });
    assert_internal(
        &create(&js),
        &["job for coordinator pod must be indexed completion mode, and completions number must be set"],
    );
    let js = with(|v| {
        v["spec"]["coordinator"] = json!({"replicatedJob": "leader"});
        if let Some(spec) = v["spec"]["replicatedJobs"][0]["template"]["spec"].as_object_mut() {
            spec.remove("completions");
        }
    });
    assert_internal(
        &create(&js),
        &["job for coordinator pod must be indexed completion mode, and completions number must be set"],
    );
}

#[test]
fn coordinator_pod_index_must_be_in_range() {
    let js = with_coordinator(json!({"replicatedJob": "workers", "podIndex": 2}));
    assert_internal(&create(&js), &["coordinator pod index 2 is invalid for replicatedJob workers job index 0"]);
    assert_valid(&create(&with_coordinator(json!({"replicatedJob": "workers", "jobIndex": 1, "podIndex": 1}))));
}

#[test]
fn coordinator_endpoint_must_be_a_valid_label_value() {
    let sub = "s".repeat(50);
    let js = with(|v| {
        v["spec"]["coordinator"] = json!({"replicatedJob": "workers"});
        v["spec"]["network"]["subdomain"] = json!(sub);
    });
    assert_internal(
        &create(&js),
        &[&format!(
            "spec will lead to invalid label value \"js-workers-0-0.{sub}\" for coordinator label \"jobset.sigs.k8s.io/coordinator\" (long JobSet / ReplicatedJob / SubDomain name?): must be no more than 63 bytes"
        )],
    );
    let js = with(|v| {
        v["spec"]["coordinator"] = json!({"replicatedJob": "workers"});
        v["spec"]["network"]["subdomain"] = json!("s".repeat(48));
    });
    assert_valid(&create(&js));
    assert_eq!(
        coordinator_endpoint(&with_coordinator(json!({"replicatedJob": "leader"})), "js").as_deref(),
        Some("js-leader-0-0.js")
    );
}

// --- 9. volumeClaimPolicies ---

fn with_volume_claims(edit: impl FnOnce(&mut Value)) -> JobSet {
    with(|v| {
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        v["spec"]["volumeClaimPolicies"] = json!([{
            "templates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            "retentionPolicy": {"whenDeleted": "Delete"}
        }]);
        edit(v);
    })
}

fn existing_pvc(storage: &str) -> ExistingPvcs {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-js", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    }))
    .expect("pvc");
    ExistingPvcs(BTreeMap::from([("data-js".to_owned(), PvcLookup::Found(Box::new(pvc)))]))
}

#[test]
fn volume_claim_fixture_is_valid_and_names_its_pvc() {
    let js = with_volume_claims(|_| {});
    assert_valid(&create(&js));
    assert_eq!(pvc_names_to_check(&js), vec!["data-js"]);
}

#[test]
fn volume_claim_template_names_are_unique() {
    let js = with_volume_claims(|v| {
        let first = v["spec"]["volumeClaimPolicies"][0]["templates"][0].clone();
        if let Some(templates) = v["spec"]["volumeClaimPolicies"][0]["templates"].as_array_mut() {
            templates.push(first);
        }
    });
    let path = "spec.volumeClaimPolicies[0].template[1].name";
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            path,
            &format!("{path}: Invalid value: \"data\": names must be unique for VolumeClaimPolicies template"),
        )],
    );
}

#[test]
fn volume_claim_template_names_are_dns_1123_subdomains() {
    let js = with_volume_claims(|v| {
        v["spec"]["volumeClaimPolicies"][0]["templates"][0]["metadata"]["name"] = json!("Data");
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] =
            json!("Data");
    });
    let path = "spec.volumeClaimPolicies[0].template[0].name";
    assert_errors(&create(&js), &[(ErrorType::Invalid, path, &format!("{path}: Invalid value: \"Data\": {DNS1123}"))]);
}

#[test]
fn generated_pvc_names_fit_in_63_characters() {
    let long = "d".repeat(61);
    let js = with_volume_claims(|v| {
        v["spec"]["volumeClaimPolicies"][0]["templates"][0]["metadata"]["name"] = json!(long);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] =
            json!(long);
    });
    let path = "spec.volumeClaimPolicies[0].template[0].name";
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            path,
            &format!("{path}: Invalid value: \"{long}\": VolumeClaimPolicies template name is too long"),
        )],
    );
    let ok = "d".repeat(60);
    let js = with_volume_claims(|v| {
        v["spec"]["volumeClaimPolicies"][0]["templates"][0]["metadata"]["name"] = json!(ok);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] =
            json!(ok);
    });
    assert_valid(&create(&js));
}

#[test]
fn pod_volumes_cannot_reuse_a_claim_template_name() {
    let js = with_volume_claims(|v| {
        v["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "data", "emptyDir": {}}]);
    });
    let path = "spec.replicatedJobs[0].template.spec.template.spec.volumes[0].name";
    assert_errors(
        &create(&js),
        &[(
            ErrorType::Invalid,
            path,
            &format!(
                "{path}: Invalid value: \"data\": volume name conflicts with VolumeClaimPolicy template name: data"
            ),
        )],
    );
}

#[test]
fn some_container_must_mount_each_claim() {
    let js = with_volume_claims(|v| {
        let c = &mut v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0];
        if let Some(c) = c.as_object_mut() {
            c.remove("volumeMounts");
        }
    });
    let errs = create(&js);
    assert_eq!(errs.len(), 1);
    let e = &errs.0[0];
    assert_eq!((e.error_type, e.field.as_str()), (ErrorType::Invalid, "spec.replicatedJobs"));
    let msg = e.to_string();
    assert!(msg.starts_with("spec.replicatedJobs: Invalid value: [{"), "{msg}");
    assert!(
        msg.ends_with(": replicatedJob containers don't have a matching volumeMount: data from VolumeClaimPolicies"),
        "{msg}"
    );
    // An init container's mount counts too.
    let js = with_volume_claims(|v| {
        let pod = &mut v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"];
        pod["initContainers"] =
            json!([{"name": "i", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]);
        if let Some(c) = pod["containers"][0].as_object_mut() {
            c.remove("volumeMounts");
        }
    });
    assert_valid(&create(&js));
}

#[test]
fn an_existing_pvc_must_match_and_be_retained() {
    let retained =
        with_volume_claims(|v| v["spec"]["volumeClaimPolicies"][0]["retentionPolicy"]["whenDeleted"] = json!("Retain"));
    assert_valid(&validate_create(&retained, &gates(), &existing_pvc("1Gi")));
    // Sizes compare by value: the API server stores the PVC's in canonical form.
    assert_valid(&validate_create(&retained, &gates(), &existing_pvc("1024Mi")));

    let deleted = with_volume_claims(|_| {});
    let path = "spec.volumeClaimPolicies[0].retentionPolicy.whenDeleted";
    assert_errors(
        &validate_create(&deleted, &gates(), &existing_pvc("1Gi")),
        &[(
            ErrorType::Invalid,
            path,
            &format!("{path}: Invalid value: \"Delete\": retentionPolicy must be retain when PVC exists"),
        )],
    );

    let errs = validate_create(&retained, &gates(), &existing_pvc("2Gi"));
    assert_eq!(errs.len(), 1);
    let e = &errs.0[0];
    assert_eq!(e.field, "spec.volumeClaimPolicies[0].template[0].spec");
    assert_eq!(
        e.to_string(),
        r#"spec.volumeClaimPolicies[0].template[0].spec: Invalid value: {"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}: spec does not match existing PVC data-js in namespace default"#
    );
}

#[test]
fn a_failed_pvc_lookup_is_an_internal_error_at_the_template() {
    let js = with_volume_claims(|_| {});
    let pvcs = ExistingPvcs(BTreeMap::from([("data-js".to_owned(), PvcLookup::Failed("boom".into()))]));
    let path = "spec.volumeClaimPolicies[0].template[0]";
    assert_errors(
        &validate_create(&js, &gates(), &pvcs),
        &[(
            ErrorType::Internal,
            path,
            &format!("{path}: Internal error: failed to check for existing PVC data-js: boom"),
        )],
    );
}

#[test]
fn errors_accumulate_in_upstreams_order() {
    let js = with(|v| {
        v["spec"]["failurePolicy"] =
            json!({"restartStrategy": "InPlaceRestart", "rules": [{"name": "1x", "action": "FailJobSet"}]});
        v["spec"]["replicatedJobs"][0]["dependsOn"] = json!([{"name": "leader", "status": "Ready"}]);
        v["spec"]["managedBy"] = json!("foo");
        v["spec"]["successPolicy"]["targetReplicatedJobs"] = json!(["nope"]);
        v["spec"]["coordinator"] = json!({"replicatedJob": "nope"});
    });
    assert_eq!(
        messages(&create(&js)),
        vec![
            "<nil>: Internal error: InPlaceRestart restart strategy cannot be set when InPlaceRestart feature gate is disabled".to_owned(),
            "<nil>: Internal error: DependsOn can't be set for the first ReplicatedJob".to_owned(),
            r#"spec.managedBy: Invalid value: "foo": must be a domain-prefixed path (such as "acme.io/foo")"#.to_owned(),
            "<nil>: Internal error: invalid replicatedJob name 'nope' does not appear in .spec.ReplicatedJobs".to_owned(),
            format!("<nil>: Internal error: invalid failure policy rule name '1x', {RULE_NAME_FORMAT}"),
            "<nil>: Internal error: coordinator replicatedJob nope does not exist".to_owned(),
        ]
    );
}

// --- Update ---

fn update(old: &JobSet, new: &JobSet) -> FieldErrors {
    validate_update(old, new, &gates())
}

fn pod_template_edits(v: &mut Value) {
    let t = &mut v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"];
    t["metadata"] = json!({"labels": {"kueue": "x"}, "annotations": {"a": "b"}});
    t["spec"]["nodeSelector"] = json!({"gpu": "h100"});
    t["spec"]["tolerations"] = json!([{"key": "gpu", "operator": "Exists"}]);
    t["spec"]["schedulingGates"] = json!([{"name": "muster.dev/admission"}]);
}

#[track_caller]
fn assert_immutable(errs: &FieldErrors) {
    assert_eq!(errs.len(), 1, "{:#?}", messages(errs));
    let e = &errs.0[0];
    assert_eq!((e.error_type, e.field.as_str()), (ErrorType::Invalid, "spec.replicatedJobs"));
    let msg = e.to_string();
    assert!(msg.starts_with("spec.replicatedJobs: Invalid value: [{"), "{msg}");
    assert!(msg.ends_with("}]: field is immutable"), "{msg}");
}

#[test]
fn replicated_jobs_are_immutable() {
    let old = decode(valid());
    let new = with(|v| {
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("other")
    });
    assert_immutable(&update(&old, &new));
    let new = with(|v| v["spec"]["replicatedJobs"][1]["replicas"] = json!(3));
    assert_immutable(&update(&old, &new));
    let added = with(|v| {
        if let Some(rjobs) = v["spec"]["replicatedJobs"].as_array_mut() {
            rjobs.push(rjob("extra", 1, 1));
        }
    });
    assert_immutable(&update(&old, &added));
    assert_immutable(&update(&added, &old));
}

#[test]
fn unchanged_and_semantically_equal_replicated_jobs_pass() {
    let old = decode(valid());
    assert_valid(&update(&old, &old));
    // An explicit empty list is the same as none, as for Go's semantic equality.
    let new =
        with(|v| v["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["tolerations"] = json!([]));
    assert_valid(&update(&old, &new));
}

#[test]
fn other_fields_are_mutable() {
    let old = decode(valid());
    let new = with(|v| {
        v["spec"]["suspend"] = json!(true);
        v["spec"]["ttlSecondsAfterFinished"] = json!(60);
        v["spec"]["coordinator"] = json!({"replicatedJob": "nope"});
        v["metadata"]["labels"] = json!({"a": "b"});
    });
    assert_valid(&update(&old, &new));
}

#[test]
fn pod_scheduling_fields_are_mutable_while_suspended() {
    let old = decode(valid());
    let suspending = with(|v| {
        v["spec"]["suspend"] = json!(true);
        pod_template_edits(v);
    });
    assert_valid(&update(&old, &suspending));
    let old_suspended = with(|v| v["spec"]["suspend"] = json!(true));
    let resuming = with(pod_template_edits);
    assert_valid(&update(&old_suspended, &resuming));
    // Not suspended on either side: immutable.
    assert_immutable(&update(&old, &resuming));
    // Suspended, but beyond the carve-out: immutable.
    let image = with(|v| {
        v["spec"]["suspend"] = json!(true);
        v["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x");
    });
    assert_immutable(&update(&old_suspended, &image));
}

fn elastic() -> FeatureGates {
    FeatureGates { elastic_jobset: true, ..FeatureGates::default() }
}

fn scaled(parallelism: i32, completions: i32) -> JobSet {
    with(|v| {
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["parallelism"] = json!(parallelism);
        v["spec"]["replicatedJobs"][1]["template"]["spec"]["completions"] = json!(completions);
    })
}

#[test]
fn elastic_indexed_jobs_may_scale_with_the_gate() {
    let old = decode(valid());
    assert_valid(&validate_update(&old, &scaled(4, 4), &elastic()));
    // Without the gate it is an ordinary immutable field.
    assert_immutable(&update(&old, &scaled(4, 4)));
}

#[test]
fn elastic_scaling_keeps_parallelism_and_completions_positive_and_equal() {
    let old = decode(valid());
    let path = "spec.replicatedJobs[1].template.spec";
    assert_errors(
        &validate_update(&old, &scaled(0, 0), &elastic()),
        &[
            (
                ErrorType::Invalid,
                &format!("{path}.parallelism"),
                &format!("{path}.parallelism: Invalid value: 0: parallelism must be >= 1"),
            ),
            (
                ErrorType::Invalid,
                &format!("{path}.completions"),
                &format!("{path}.completions: Invalid value: 0: completions must be >= 1"),
            ),
        ],
    );
    assert_errors(
        &validate_update(&old, &scaled(4, 3), &elastic()),
        &[(
            ErrorType::Invalid,
            &format!("{path}.completions"),
            &format!(
                "{path}.completions: Invalid value: 3: completions must be equal to parallelism for Elastic Indexed Jobs"
            ),
        )],
    );
}

#[test]
fn elastic_scaling_is_forbidden_once_finished() {
    let mut old = decode(valid());
    old.status = Some(serde_json::from_value(json!({"conditions": [{
        "type": "Completed", "status": "True", "reason": "AllJobsCompleted", "message": "jobset completed successfully",
        "lastTransitionTime": "2026-01-01T00:00:00Z"
    }]})).expect("status"));
    let path = "spec.replicatedJobs[1].template.spec";
    assert_errors(
        &validate_update(&old, &scaled(4, 4), &elastic()),
        &[(
            ErrorType::Forbidden,
            path,
            &format!(
                "{path}: Forbidden: Cannot mutate parallelism or completions when JobSet is in a terminal state (Completed or Failed)"
            ),
        )],
    );
}

#[test]
fn elastic_scaling_is_only_for_indexed_jobs() {
    let non_indexed = |p: i32| {
        with(|v| {
            v["spec"]["replicatedJobs"][1]["template"]["spec"]["completionMode"] = json!("NonIndexed");
            v["spec"]["replicatedJobs"][1]["template"]["spec"]["parallelism"] = json!(p);
        })
    };
    assert_immutable(&validate_update(&non_indexed(2), &non_indexed(4), &elastic()));
}

#[test]
fn managed_by_is_immutable() {
    let old = with(|v| v["spec"]["managedBy"] = json!("a.io/x"));
    let new = with(|v| v["spec"]["managedBy"] = json!("b.io/x"));
    assert_errors(
        &update(&old, &new),
        &[(ErrorType::Invalid, "spec.managedBy", r#"spec.managedBy: Invalid value: "b.io/x": field is immutable"#)],
    );
    assert_errors(
        &update(&old, &decode(valid())),
        &[(ErrorType::Invalid, "spec.managedBy", r#"spec.managedBy: Invalid value: "null": field is immutable"#)],
    );
    assert_valid(&update(&old, &old));
}

#[test]
fn the_422_status_names_the_jobset_and_lists_the_causes() {
    let js = with(|v| {
        v["spec"]["replicatedJobs"][0]["groupName"] = json!("Bad");
        v["spec"]["successPolicy"]["targetReplicatedJobs"] = json!(["nope"]);
    });
    let status = create(&js).to_invalid_status(GROUP, KIND, "js");
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(
        status.message,
        format!(
            "JobSet.jobset.x-k8s.io \"js\" is invalid: [spec.replicatedJobs[0].groupName: Invalid value: \"Bad\": {DNS1035}, <nil>: Internal error: invalid replicatedJob name 'nope' does not appear in .spec.ReplicatedJobs]"
        )
    );
    let details = status.details.expect("details");
    assert_eq!(
        (details.group.as_str(), details.kind.as_str(), details.name.as_str()),
        ("jobset.x-k8s.io", "JobSet", "js")
    );
    let causes: Vec<(&str, &str, &str)> =
        details.causes.iter().map(|c| (c.reason.as_str(), c.field.as_str(), c.message.as_str())).collect();
    let first = format!("Invalid value: \"Bad\": {DNS1035}");
    assert_eq!(
        causes,
        vec![
            ("FieldValueInvalid", "spec.replicatedJobs[0].groupName", first.as_str()),
            (
                "InternalError",
                "<nil>",
                "Internal error: invalid replicatedJob name 'nope' does not appear in .spec.ReplicatedJobs"
            ),
        ]
    );
}
