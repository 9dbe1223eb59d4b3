//! The JobSet admission webhooks (`mjobset.kb.io`, `vjobset.kb.io`) behind a real kube-apiserver: every test starts
//! the webhook server in-process (TLS on loopback, its own CA), points the webhook configurations at it, and then
//! creates and updates JobSets through the API server, so what is checked is what a user sees: the defaults on
//! the stored object, and each rejection's full text (`admission webhook "vjobset.kb.io" denied the request: ...`),
//! HTTP code, reason and `details.causes[]` (reason, field, message).
//!
//! One accepted and one rejected JobSet per rule of upstream's `ValidateCreate` (§4.2 of the reference) and
//! `ValidateUpdate` (§4.3), table-driven. The expected texts are written out here, not taken from the webhook code.
//!
//! Run: `cargo test -p muster-tests --test webhook` (build the control plane first with
//! `tests/build-control-plane.sh`).

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use muster_admission::kube_io::KubePvcs;
use muster_admission::webhook::config::{mutating_configuration, validating_configuration};
use muster_admission::{FeatureGates, RunningServer, ServeConfig, serve};
use muster_api::JobSet;
use muster_tests::{ClusterConfig, SharedCluster, TestNamespace, eventually};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller/crds")
}

static CLUSTER: SharedCluster =
    SharedCluster::new(|| ClusterConfig::apiserver_only().crd(crd_dir().join("jobset.x-k8s.io_jobsets.yaml")));

/// How long the API server may take to start calling a new webhook configuration.
const REGISTRATION_WAIT: Duration = Duration::from_secs(30);

/// What the API server puts before the webhook's own message.
const DENIED: &str = r#"admission webhook "vjobset.kb.io" denied the request: "#;

/// `IsDNS1035Label`'s and `IsDNS1123Subdomain`'s pattern messages (k8s.io/apimachinery), double space included.
const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const DNS1123: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const JOB_NAME_TOO_LONG: &str =
    "JobSet name is too long, job names generated for this JobSet will exceed 63 characters";
const POD_NAME_TOO_LONG: &str =
    "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters";
const RULE_NAME_FORMAT: &str = "a failure policy rule name must start with an alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'";

// ---------------------------------------------------------------------------------------------------------------
// The webhook server and its registration
// ---------------------------------------------------------------------------------------------------------------

/// Starts the webhook server on this test's runtime (it dies with the test), points both webhook configurations at
/// it (replacing whatever an earlier test registered), and waits until the API server calls it.
async fn start_webhooks(ns: &TestNamespace<'_>, gates: FeatureGates) -> RunningServer {
    let client = ns.client();
    let config = ServeConfig { pvcs: Arc::new(KubePvcs(client.clone())), gates, ..ServeConfig::loopback() };
    let server = serve(config).await.expect("webhook server starts");
    let target = server.webhook_target();
    let ca = server.ca_pem().map(str::as_bytes);
    create_or_replace(Api::all(client.clone()), mutating_configuration(&target, ca)).await;
    create_or_replace(Api::all(client.clone()), validating_configuration(&target, ca)).await;
    wait_until_called(ns).await;
    server
}

async fn create_or_replace<K>(api: Api<K>, mut object: K)
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().expect("configurations are named");
    let pp = PostParams::default();
    match api.get_opt(&name).await.expect("read webhook configuration") {
        Some(existing) => {
            object.meta_mut().resource_version = existing.meta().resource_version.clone();
            api.replace(&name, &pp, &object).await.expect("replace webhook configuration");
        }
        None => {
            api.create(&pp, &object).await.expect("create webhook configuration");
        }
    }
}

/// Dry-runs a known-bad JobSet until `vjobset.kb.io` rejects it and a good one until `mjobset.kb.io` defaults it.
/// A configuration left by an earlier test points at a server that is gone, so until the API server has picked up
/// the new ones its calls fail instead.
async fn wait_until_called(ns: &TestNamespace<'_>) {
    let api = jobsets(ns);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let bad = with("probe", |v| v["spec"]["successPolicy"] = json!({"operator": "Any", "targetReplicatedJobs": ["x"]}));
    let want = format!(
        r#"{DENIED}JobSet.jobset.x-k8s.io "probe" is invalid: <nil>: Internal error: invalid replicatedJob name 'x' does not appear in .spec.ReplicatedJobs"#
    );
    eventually("the API server to call the webhooks", REGISTRATION_WAIT, || async {
        match api.create(&dry_run, &dynamic(&bad)).await {
            Err(kube::Error::Api(status)) if status.message == want => {}
            Err(e) => return Err(format!("bad JobSet: {e}")),
            Ok(_) => return Err("bad JobSet was admitted".to_owned()),
        }
        match api.create(&dry_run, &dynamic(&jobset("probe"))).await {
            Ok(js) if js.data["spec"]["successPolicy"] == json!({"operator": "All"}) => Ok(()),
            Ok(_) => Err("good JobSet was not defaulted".to_owned()),
            Err(e) => Err(format!("good JobSet: {e}")),
        }
    })
    .await
    .expect("webhooks registered");
}

// ---------------------------------------------------------------------------------------------------------------
// JobSets as JSON, sent and read back untyped so that nothing is lost or added on the way
// ---------------------------------------------------------------------------------------------------------------

fn jobsets(ns: &TestNamespace<'_>) -> Api<DynamicObject> {
    Api::namespaced_with(ns.client(), ns.name(), &ApiResource::erase::<JobSet>(&()))
}

fn dynamic(v: &Value) -> DynamicObject {
    serde_json::from_value(v.clone()).expect("a JobSet object")
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).expect("serialise")
}

/// Creates `v`; `Err` is the API server's rejection.
async fn create(api: &Api<DynamicObject>, v: &Value) -> Result<Value, Box<Status>> {
    match api.create(&PostParams::default(), &dynamic(v)).await {
        Ok(o) => Ok(to_value(&o)),
        Err(kube::Error::Api(status)) => Err(status),
        Err(e) => panic!("creating a JobSet: {e}"),
    }
}

/// Replaces the stored object with `v` (which carries the resourceVersion it was read with).
async fn replace(api: &Api<DynamicObject>, v: &Value) -> Result<Value, Box<Status>> {
    let name = v["metadata"]["name"].as_str().expect("named");
    match api.replace(name, &PostParams::default(), &dynamic(v)).await {
        Ok(o) => Ok(to_value(&o)),
        Err(kube::Error::Api(status)) => Err(status),
        Err(e) => panic!("replacing a JobSet: {e}"),
    }
}

async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    to_value(&api.get(name).await.expect("read JobSet"))
}

/// One ReplicatedJob as a user writes it: no completion mode, no restart policy, no group.
fn rjob(name: &str, replicas: i32, pods: i32) -> Value {
    json!({"name": name, "replicas": replicas, "template": {"spec": {"parallelism": pods, "completions": pods,
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}})
}

/// `leader` (1 Job × 1 pod) and `workers` (2 Jobs × 2 pods), nothing defaulted.
fn jobset(name: &str) -> Value {
    json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": name},
        "spec": {"replicatedJobs": [rjob("leader", 1, 1), rjob("workers", 2, 2)]}})
}

fn with(name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = jobset(name);
    edit(&mut v);
    v
}

/// [`jobset`] with a volume-claim template `data` (1Gi, ReadWriteOnce) that the workers mount, then `edit`.
fn with_claims(name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    with(name, |v| {
        pod(v, 1)["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        v["spec"]["volumeClaimPolicies"] = json!([{"templates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}]);
        edit(v);
    })
}

/// `spec.replicatedJobs[i].template.spec`
fn job(v: &mut Value, i: usize) -> &mut Value {
    &mut v["spec"]["replicatedJobs"][i]["template"]["spec"]
}

/// `spec.replicatedJobs[i].template.spec.template.spec`
fn pod(v: &mut Value, i: usize) -> &mut Value {
    &mut job(v, i)["template"]["spec"]
}

fn push(list: &mut Value, item: Value) {
    list.as_array_mut().expect("a list").push(item);
}

fn remove(v: &mut Value, key: &str) {
    if let Some(map) = v.as_object_mut() {
        map.remove(key);
    }
}

/// What the validating webhook sees of `rjobs`: the CRD's defaults (`groupName`, `replicas`) and the mutating
/// webhook's (`completionMode`, `restartPolicy`) applied.
fn defaulted_rjobs(rjobs: &Value) -> Value {
    let mut rjobs = rjobs.clone();
    for rjob in rjobs.as_array_mut().into_iter().flatten() {
        rjob.as_object_mut().map(|r| r.entry("groupName").or_insert(json!("default")));
        rjob.as_object_mut().map(|r| r.entry("replicas").or_insert(json!(1)));
        let spec = &mut rjob["template"]["spec"];
        spec.as_object_mut().map(|s| s.entry("completionMode").or_insert(json!("Indexed")));
        let pod = &mut spec["template"]["spec"];
        pod.as_object_mut().map(|p| p.entry("restartPolicy").or_insert(json!("OnFailure")));
    }
    rjobs
}

/// Drops nulls and empty lists and maps, recursively: how absent, null and empty compare in Go.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !(v.is_null() || v == &json!([]) || v == &json!({})))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Expected rejections
// ---------------------------------------------------------------------------------------------------------------

/// One expected field error: the status cause's `reason` and `field`, and its text as `<field>: <message>`.
#[derive(Clone, Debug)]
struct Want {
    reason: &'static str,
    field: String,
    text: Text,
}

#[derive(Clone, Debug)]
enum Text {
    Exact(String),
    /// `<head><JSON><tail>`, where the JSON is a composite bad value: the webhook prints its JSON (Go prints `%#v`,
    /// which nothing can reproduce), compared here as a value.
    Json {
        head: String,
        value: Value,
        tail: String,
    },
}

impl Want {
    fn matches(&self, text: &str) -> bool {
        match &self.text {
            Text::Exact(want) => text == want,
            Text::Json { head, value, tail } => text
                .strip_prefix(head.as_str())
                .and_then(|t| t.strip_suffix(tail.as_str()))
                .and_then(|json| serde_json::from_str::<Value>(json).ok())
                .is_some_and(|got| normalize(&got) == normalize(value)),
        }
    }
}

/// `field.InternalError(nil, err)`: how upstream reports its plain errors.
fn internal(message: &str) -> Want {
    Want {
        reason: "InternalError",
        field: "<nil>".into(),
        text: Text::Exact(format!("<nil>: Internal error: {message}")),
    }
}

/// `field.Invalid(field, value, detail)`, `value` as Go prints it (`"quoted"` strings, bare numbers).
fn invalid(field: &str, value: &str, detail: &str) -> Want {
    Want {
        reason: "FieldValueInvalid",
        field: field.into(),
        text: Text::Exact(format!("{field}: Invalid value: {value}: {detail}")),
    }
}

fn invalid_json(field: &str, value: Value, detail: &str) -> Want {
    Want {
        reason: "FieldValueInvalid",
        field: field.into(),
        text: Text::Json { head: format!("{field}: Invalid value: "), value, tail: format!(": {detail}") },
    }
}

fn too_long(field: &str, max: usize) -> Want {
    Want {
        reason: "FieldValueTooLong",
        field: field.into(),
        text: Text::Exact(format!("{field}: Too long: may not be longer than {max}")),
    }
}

fn forbidden(field: &str, detail: &str) -> Want {
    Want {
        reason: "FieldValueForbidden",
        field: field.into(),
        text: Text::Exact(format!("{field}: Forbidden: {detail}")),
    }
}

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// `ErrorList.ToAggregate().Error()`: distinct texts in order, bracketed when there are several.
fn aggregate(texts: &[String]) -> String {
    let mut distinct: Vec<&String> = Vec::new();
    for t in texts {
        if !distinct.contains(&t) {
            distinct.push(t);
        }
    }
    match distinct.as_slice() {
        [one] => (*one).clone(),
        many => format!("[{}]", many.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")),
    }
}

/// Everything wrong with `status` as the rejection of JobSet `name` with exactly `wants`, in order.
fn rejection_problems(status: &Status, name: &str, wants: &[Want]) -> Vec<String> {
    let mut problems = Vec::new();
    if (status.code, status.reason.as_str()) != (422, "Invalid") {
        problems.push(format!("HTTP {} {:?}, want 422 \"Invalid\"", status.code, status.reason));
    }
    let Some(details) = &status.details else {
        problems.push(format!("no details in {status:?}"));
        return problems;
    };
    if (details.group.as_str(), details.kind.as_str(), details.name.as_str()) != ("jobset.x-k8s.io", "JobSet", name) {
        problems.push(format!("details name {:?} group {:?} kind {:?}", details.name, details.group, details.kind));
    }
    let got: Vec<(&str, &str, String)> = details
        .causes
        .iter()
        .map(|c| (c.reason.as_str(), c.field.as_str(), format!("{}: {}", c.field, c.message)))
        .collect();
    let causes_match = got.len() == wants.len()
        && got
            .iter()
            .zip(wants)
            .all(|((reason, field, text), w)| *reason == w.reason && *field == w.field && w.matches(text));
    if !causes_match {
        problems.push(format!("causes\n    got:  {got:#?}\n    want: {wants:#?}"));
    }
    // The message aggregates the causes' texts (verified above, JSON values included).
    let texts: Vec<String> = if causes_match {
        got.into_iter().map(|(_, _, t)| t).collect()
    } else {
        wants.iter().map(|w| if let Text::Exact(t) = &w.text { t.clone() } else { format!("{:?}", w.text) }).collect()
    };
    let message = format!(r#"{DENIED}JobSet.jobset.x-k8s.io "{name}" is invalid: {}"#, aggregate(&texts));
    if status.message != message {
        problems.push(format!("message\n    got:  {}\n    want: {message}", status.message));
    }
    problems
}

/// One rule: a JobSet the webhook must reject with exactly `want`, and JobSets it must accept.
struct Case {
    rule: &'static str,
    bad: Value,
    want: Vec<Want>,
    good: Vec<Value>,
}

fn case(rule: &'static str, bad: Value, want: Vec<Want>, good: Vec<Value>) -> Case {
    Case { rule, bad, want, good }
}

/// Creates every bad and good JobSet, collects every deviation, and fails once with all of them.
async fn run_create_cases(api: &Api<DynamicObject>, cases: Vec<Case>) {
    let (mut problems, mut rejected, mut accepted) = (Vec::new(), 0, 0);
    for c in &cases {
        let name = c.bad["metadata"]["name"].as_str().unwrap_or_default();
        match create(api, &c.bad).await {
            Ok(_) => problems.push(format!("[{}] {name}: accepted, want rejected", c.rule)),
            Err(status) => {
                rejected += 1;
                let found = rejection_problems(&status, name, &c.want);
                problems.extend(found.into_iter().map(|p| format!("[{}] {name}: {p}", c.rule)));
            }
        }
        for good in &c.good {
            let name = good["metadata"]["name"].as_str().unwrap_or_default();
            match create(api, good).await {
                Ok(_) => accepted += 1,
                Err(status) => {
                    problems.push(format!("[{}] {name}: rejected, want accepted: {}", c.rule, status.message))
                }
            }
        }
    }
    eprintln!("{} rules: {rejected} JobSets rejected and {accepted} accepted as expected", cases.len());
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// §1.12 defaults
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_applied_on_create_and_nothing_else_changes() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-defaults").await.expect("namespace");
    let _server = start_webhooks(&ns, FeatureGates::default()).await;
    let api = jobsets(&ns);

    // A minimal JobSet: the stored spec is the sent one plus exactly upstream's defaults (webhook and CRD).
    let container = json!({"name": "c", "image": "busybox"});
    let minimal = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "minimal"},
        "spec": {"replicatedJobs": [{"name": "workers", "template": {"spec": {"template": {"spec": {
            "containers": [container]}}}}}]}});
    create(&api, &minimal).await.expect("minimal JobSet accepted");
    let stored = get(&api, "minimal").await;
    assert_eq!(
        stored["spec"],
        json!({
            "replicatedJobs": [{"name": "workers", "groupName": "default", "replicas": 1, "template": {"spec": {
                "completionMode": "Indexed",
                "template": {"spec": {"restartPolicy": "OnFailure", "containers": [container]}}}}}],
            "successPolicy": {"operator": "All"},
            "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
            "network": {"enableDNSHostnames": true, "publishNotReadyAddresses": true},
        }),
        "network.subdomain is never defaulted"
    );

    // Failure-policy rule names and volume-claim retention.
    let policies = with("policies", |v| {
        pod(v, 1)["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        v["spec"]["failurePolicy"] = json!({"maxRestarts": 2, "rules": [
            {"action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]},
            {"name": "mine", "action": "RestartJobSet"},
            // An explicit empty name is named too, so upstream's "length 0" rule never fires behind the API server.
            {"name": "", "action": "RestartJobSetAndIgnoreMaxRestarts"},
        ]});
        v["spec"]["volumeClaimPolicies"] = json!([{"templates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}]);
    });
    create(&api, &policies).await.expect("JobSet with policies accepted");
    let stored = get(&api, "policies").await;
    let fp = &stored["spec"]["failurePolicy"];
    let names: Vec<&str> = fp["rules"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["failurePolicyRule0", "mine", "failurePolicyRule2"]);
    assert_eq!(fp["restartStrategy"], "Recreate", "CRD default");
    assert_eq!(fp["maxRestarts"], 2);
    assert_eq!(stored["spec"]["volumeClaimPolicies"][0]["retentionPolicy"], json!({"whenDeleted": "Delete"}));

    // Values the user set are kept; only what is missing is filled in.
    let explicit = with("explicit", |v| {
        v["spec"]["network"] = json!({"enableDNSHostnames": false, "subdomain": "explicit-svc"});
        v["spec"]["successPolicy"] = json!({"operator": "Any", "targetReplicatedJobs": ["workers"]});
        v["spec"]["startupPolicy"] = json!({"startupPolicyOrder": "InOrder"});
        job(v, 1)["completionMode"] = json!("NonIndexed");
        pod(v, 1)["restartPolicy"] = json!("Never");
        pod(v, 1)["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        v["spec"]["volumeClaimPolicies"] = json!([{"retentionPolicy": {"whenDeleted": "Retain"}, "templates": [
            {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}]);
    });
    create(&api, &explicit).await.expect("explicit JobSet accepted");
    let stored = get(&api, "explicit").await;
    let mut want = explicit["spec"].clone();
    want["network"]["publishNotReadyAddresses"] = json!(true);
    want["replicatedJobs"] = defaulted_rjobs(&want["replicatedJobs"]);
    assert_eq!(stored["spec"], want);

    // Everything the webhook does not default survives as sent: fields our types model loosely (explicit empty
    // lists, zeros and false, integer quantities, named ports) and the whole Job and pod template.
    let container = json!({
        "name": "c", "image": "busybox", "command": ["sh", "-c", "true"], "args": [],
        "env": [{"name": "RANK", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}],
        "ports": [{"containerPort": 29500, "name": "dist"}],
        "resources": {"limits": {"nvidia.com/gpu": 8, "cpu": "1500m", "memory": "1.5Gi"},
            "requests": {"cpu": 1, "memory": "1Gi"}},
        "readinessProbe": {"tcpSocket": {"port": "dist"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]});
    let pod_spec = json!({
        "schedulerName": "muster-scheduler",
        "hostUsers": false,
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": {"nvidia.com/gpu.product": "H100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["trainer"]}]},
            "topologyKey": "kubernetes.io/hostname"}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "trainer"}}}],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        "containers": [container]});
    let job_spec = json!({
        "parallelism": 2, "completions": 2, "backoffLimitPerIndex": 1, "maxFailedIndexes": 1,
        "activeDeadlineSeconds": 3600, "podReplacementPolicy": "Failed",
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
        "successPolicy": {"rules": [{"succeededIndexes": "0", "succeededCount": 1}]},
        "template": {"metadata": {"labels": {"app": "trainer"}}, "spec": pod_spec}});
    let rich = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "rich", "labels": {"team": "ml"}, "annotations": {"note": "kept"}},
        "spec": {
            "suspend": false,
            "ttlSecondsAfterFinished": 0,
            "managedBy": "jobset.sigs.k8s.io/jobset-controller",
            "network": {"subdomain": "rich-svc"},
            "successPolicy": {"operator": "Any", "targetReplicatedJobs": []},
            "failurePolicy": {"maxRestarts": 0, "restartStrategy": "BlockingRecreate", "rules": [{
                "name": "oom", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"],
                "onJobFailureMessagePatterns": ["OOM.*killed"], "targetReplicatedJobs": ["trainer"]}]},
            "coordinator": {"replicatedJob": "trainer", "jobIndex": 0, "podIndex": 0},
            "replicatedJobs": [{"name": "trainer", "groupName": "train", "replicas": 2, "dependsOn": [],
                "template": {"metadata": {"labels": {"l": "v"}, "annotations": {"a": "b"}}, "spec": job_spec}}]}});
    create(&api, &rich).await.expect("rich JobSet accepted");
    let stored = get(&api, "rich").await;
    let mut want = rich["spec"].clone();
    want["network"]["enableDNSHostnames"] = json!(true);
    want["network"]["publishNotReadyAddresses"] = json!(true);
    want["startupPolicy"] = json!({"startupPolicyOrder": "AnyOrder"});
    want["replicatedJobs"] = defaulted_rjobs(&want["replicatedJobs"]);
    assert_eq!(stored["spec"], want, "only the defaults were added");
    assert_eq!(stored["metadata"]["labels"], rich["metadata"]["labels"]);
    assert_eq!(stored["metadata"]["annotations"], rich["metadata"]["annotations"]);

    // generateName: the subdomain is still not defaulted (it resolves to the generated name at run time).
    let mut generated = jobset("unused");
    generated["metadata"] = json!({"generateName": "gen-"});
    let stored = create(&api, &generated).await.expect("generateName JobSet accepted");
    assert!(stored["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("gen-") && n.len() == 9));
    assert_eq!(stored["spec"]["network"], json!({"enableDNSHostnames": true, "publishNotReadyAddresses": true}));

    // Defaulting is CREATE-only: an update that drops a defaulted policy keeps it dropped (CEL's transition rule
    // only compares a field present on both sides, and the validating webhook does not look at startupPolicy).
    let mut update = get(&api, "minimal").await;
    remove(&mut update["spec"], "startupPolicy");
    replace(&api, &update).await.unwrap_or_else(|s| panic!("dropping startupPolicy: {}", s.message));
    assert_eq!(get(&api, "minimal").await["spec"].get("startupPolicy"), None, "not defaulted again on UPDATE");
}

// ---------------------------------------------------------------------------------------------------------------
// §4.2 ValidateCreate
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rules_reject_with_upstream_messages_and_fields() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-create").await.expect("namespace");
    let _server = start_webhooks(&ns, FeatureGates::default()).await;
    let api = jobsets(&ns);

    let rj = |i: usize, rest: &str| format!("spec.replicatedJobs[{i}]{rest}");
    let rules = |rules: Value| move |v: &mut Value| v["spec"]["failurePolicy"] = json!({"rules": rules});
    let coordinator = |c: Value| move |v: &mut Value| v["spec"]["coordinator"] = c;
    let no_completions = |v: &mut Value| {
        remove(job(v, 0), "completions");
        remove(job(v, 1), "completions");
    };
    let long_subdomain = "a".repeat(64);
    let long_group = "g".repeat(64);
    let (long54, long53) = ("a".repeat(54), "a".repeat(53));
    let (long45, long44) = ("p".repeat(45), "p".repeat(44));
    let (sub46, sub45) = ("s".repeat(46), "s".repeat(45));
    let (claim55, claim54) = ("d".repeat(55), "d".repeat(54));
    let no_mount = with_claims("vcp-mount", |v| remove(&mut pod(v, 1)["containers"][0], "volumeMounts"));

    let cases = vec![
        // 1. InPlaceRestart needs its (off) feature gate.
        case(
            "InPlaceRestart gate",
            with("in-place", |v| v["spec"]["failurePolicy"] = json!({"restartStrategy": "InPlaceRestart"})),
            vec![internal(
                "InPlaceRestart restart strategy cannot be set when InPlaceRestart feature gate is disabled",
            )],
            vec![with("in-place", |v| v["spec"]["failurePolicy"] = json!({"restartStrategy": "BlockingRecreate"}))],
        ),
        // 2. The first ReplicatedJob cannot depend on anything.
        case(
            "dependsOn on the first ReplicatedJob",
            with("depends-first", |v| {
                v["spec"]["replicatedJobs"][0]["dependsOn"] = json!([{"name": "leader", "status": "Ready"}])
            }),
            vec![internal("DependsOn can't be set for the first ReplicatedJob")],
            vec![with("depends-first", |v| {
                v["spec"]["replicatedJobs"][1]["dependsOn"] = json!([{"name": "leader", "status": "Complete"}])
            })],
        ),
        // 3. network.subdomain: a DNS-1123 subdomain and a DNS-1035 label, with upstream's too-long message.
        case(
            "subdomain format",
            with("subdomain", |v| v["spec"]["network"] = json!({"subdomain": "My.Sub"})),
            vec![
                invalid("spec.network.subdomain", &q("My.Sub"), DNS1123),
                invalid("spec.network.subdomain", &q("My.Sub"), DNS1035),
            ],
            vec![with("subdomain", |v| v["spec"]["network"] = json!({"subdomain": "my-sub"}))],
        ),
        case(
            "subdomain is a label",
            with("subdomain-dots", |v| v["spec"]["network"] = json!({"subdomain": "a.b"})),
            vec![invalid("spec.network.subdomain", &q("a.b"), DNS1035)],
            vec![],
        ),
        case(
            "subdomain length",
            with("subdomain-long", |v| v["spec"]["network"] = json!({"subdomain": long_subdomain})),
            vec![invalid(
                "spec.network.subdomain",
                &q(&long_subdomain),
                ".spec.network.subdomain is too long, must be less than 63 characters",
            )],
            vec![with("subdomain-long", |v| v["spec"]["network"] = json!({"subdomain": "a".repeat(63)}))],
        ),
        // 4. managedBy: a domain-prefixed path of at most 63 characters.
        case(
            "managedBy format",
            with("managed-by", |v| v["spec"]["managedBy"] = json!("foo")),
            vec![invalid("spec.managedBy", &q("foo"), r#"must be a domain-prefixed path (such as "acme.io/foo")"#)],
            vec![with("managed-by", |v| v["spec"]["managedBy"] = json!("kueue.x-k8s.io/multikueue"))],
        ),
        case(
            "managedBy length",
            with("managed-by-long", |v| v["spec"]["managedBy"] = json!(format!("example.com/{}", "x".repeat(52)))),
            vec![too_long("spec.managedBy", 63)],
            vec![with("managed-by-long", |v| {
                v["spec"]["managedBy"] = json!(format!("example.com/{}", "x".repeat(51)))
            })],
        ),
        // 5. Per ReplicatedJob.
        case(
            "replicas × parallelism fits an int32",
            with("product", |v| job(v, 1)["parallelism"] = json!(1_073_741_824)),
            vec![internal(
                "the product of replicas and parallelism must not exceed 2147483647 for replicatedJob 'workers'",
            )],
            vec![with("product", |v| job(v, 1)["parallelism"] = json!(1_073_741_823))],
        ),
        case(
            "groupName format",
            with("group", |v| v["spec"]["replicatedJobs"][0]["groupName"] = json!("Bad_Group")),
            vec![invalid(&rj(0, ".groupName"), &q("Bad_Group"), DNS1035)],
            vec![with("group", |v| v["spec"]["replicatedJobs"][0]["groupName"] = json!("trainers"))],
        ),
        case(
            "groupName length",
            with("group-long", |v| v["spec"]["replicatedJobs"][0]["groupName"] = json!(long_group)),
            vec![invalid(
                &rj(0, ".groupName"),
                &q(&long_group),
                ".spec.replicatedJob[].groupName is too long, must be less than 63 characters",
            )],
            vec![with("group-long", |v| v["spec"]["replicatedJobs"][0]["groupName"] = json!("g".repeat(63)))],
        ),
        case(
            "job names fit in 63 characters",
            with(&long54, no_completions),
            vec![invalid(&rj(1, ".name"), &q(&format!("{long54}-workers-1")), JOB_NAME_TOO_LONG)],
            vec![with(&long53, no_completions)],
        ),
        case(
            "job names are DNS-1035 labels",
            jobset("1digit"),
            // The Job-name and the pod-name check report the same text: four causes, two distinct messages.
            vec![
                invalid(&rj(0, ".name"), &q("1digit-leader-0"), DNS1035),
                invalid(&rj(0, ".name"), &q("1digit-leader-0"), DNS1035),
                invalid(&rj(1, ".name"), &q("1digit-workers-1"), DNS1035),
                invalid(&rj(1, ".name"), &q("1digit-workers-1"), DNS1035),
            ],
            vec![jobset("digit1")],
        ),
        case(
            "pod names of Indexed Jobs fit in 63 characters",
            with(&long45, |v| job(v, 1)["completions"] = json!(100)),
            vec![invalid(&rj(1, ".name"), &q(&format!("{long45}-workers-1")), POD_NAME_TOO_LONG)],
            vec![
                with(&long44, |v| job(v, 1)["completions"] = json!(100)),
                // NonIndexed pods have random names: no check.
                with(&long45, |v| {
                    job(v, 1)["completions"] = json!(100);
                    job(v, 1)["completionMode"] = json!("NonIndexed");
                }),
            ],
        ),
        case(
            "dependsOn names an earlier ReplicatedJob",
            with("depends-later", |v| {
                v["spec"]["replicatedJobs"][1]["dependsOn"] = json!([{"name": "eval", "status": "Ready"}]);
                push(&mut v["spec"]["replicatedJobs"], rjob("eval", 1, 1));
            }),
            vec![internal("replicatedJob: workers cannot depend on replicatedJob: eval")],
            vec![with("depends-later", |v| {
                let mut eval = rjob("eval", 1, 1);
                eval["dependsOn"] = json!([{"name": "workers", "status": "Complete"}]);
                push(&mut v["spec"]["replicatedJobs"], eval);
            })],
        ),
        // 6. successPolicy targets exist.
        case(
            "successPolicy targets",
            with("success", |v| {
                v["spec"]["successPolicy"] = json!({"operator": "Any", "targetReplicatedJobs": ["leader", "nope"]})
            }),
            vec![internal("invalid replicatedJob name 'nope' does not appear in .spec.ReplicatedJobs")],
            vec![with("success", |v| {
                v["spec"]["successPolicy"] = json!({"operator": "Any", "targetReplicatedJobs": ["leader"]})
            })],
        ),
        // 7. failurePolicy.
        case(
            "RestartJob actions need their gate (and stop the failure-policy checks)",
            with(
                "restart-job",
                rules(json!([{"name": "r", "action": "RestartJob"}, {"name": "1x", "action": "FailJobSet"}])),
            ),
            vec![internal(
                "RestartJob and RestartJobAndIgnoreMaxRestarts failure policy actions are not allowed when RestartJob feature gate is disabled",
            )],
            vec![with("restart-job", rules(json!([{"name": "r", "action": "RestartJobSet"}])))],
        ),
        case(
            "rule name length",
            with("rule-long", rules(json!([{"name": "a".repeat(129), "action": "FailJobSet"}]))),
            vec![internal(
                "invalid failure policy rule name of length 129, the rule name must be at least 1 characters long and at most 128 characters long",
            )],
            vec![with("rule-long", rules(json!([{"name": "a".repeat(128), "action": "FailJobSet"}])))],
        ),
        case(
            "rule name format",
            with(
                "rule-format",
                rules(json!([{"name": "1bad", "action": "FailJobSet"}, {"name": "bad:", "action": "FailJobSet"}])),
            ),
            vec![
                internal(&format!("invalid failure policy rule name '1bad', {RULE_NAME_FORMAT}")),
                internal(&format!("invalid failure policy rule name 'bad:', {RULE_NAME_FORMAT}")),
            ],
            vec![with(
                "rule-format",
                rules(json!([{"name": "a_b,c:d", "action": "FailJobSet"}, {"name": "ends_", "action": "FailJobSet"}])),
            )],
        ),
        case(
            "rule targets exist",
            with(
                "rule-target",
                rules(json!([{"name": "r", "action": "FailJobSet", "targetReplicatedJobs": ["nope"]}])),
            ),
            vec![internal(
                "invalid replicatedJob name 'nope' in failure policy does not appear in .spec.ReplicatedJobs",
            )],
            vec![with(
                "rule-target",
                rules(json!([{"name": "r", "action": "FailJobSet", "targetReplicatedJobs": ["leader"]}])),
            )],
        ),
        case(
            "rule failure reasons",
            with(
                "rule-reason",
                rules(json!([{"name": "r", "action": "FailJobSet", "onJobFailureReasons": ["OOMKilled"]}])),
            ),
            vec![internal(
                "invalid job failure reason 'OOMKilled' in failure policy is not a recognized job failure reason",
            )],
            vec![with(
                "rule-reason",
                rules(json!([{"name": "r", "action": "FailJobSet", "onJobFailureReasons": [
                "BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes", "MaxFailedIndexesExceeded", "PodFailurePolicy"]}])),
            )],
        ),
        case(
            "rule names are unique",
            with(
                "rule-dup",
                rules(json!([{"name": "dup", "action": "FailJobSet"}, {"name": "x", "action": "RestartJobSet"},
                {"name": "dup", "action": "RestartJobSetAndIgnoreMaxRestarts"}])),
            ),
            vec![internal("rule names are not unique, rules with indices [0 2] all have the same name 'dup'")],
            // Defaulted names never collide.
            vec![with("rule-dup", rules(json!([{"action": "FailJobSet"}, {"action": "RestartJobSet"}])))],
        ),
        // 8. coordinator: only the first failing check is reported, plus the label-value check.
        case(
            "coordinator ReplicatedJob exists",
            with("coord-rjob", coordinator(json!({"replicatedJob": "nope"}))),
            vec![internal("coordinator replicatedJob nope does not exist")],
            vec![with("coord-rjob", coordinator(json!({"replicatedJob": "leader"})))],
        ),
        case(
            "coordinator job index",
            with("coord-job", coordinator(json!({"replicatedJob": "workers", "jobIndex": 2}))),
            vec![internal("coordinator job index 2 is invalid for replicatedJob workers")],
            vec![with("coord-job", coordinator(json!({"replicatedJob": "workers", "jobIndex": 1})))],
        ),
        case(
            "coordinator Job is Indexed",
            with("coord-indexed", |v| {
                v["spec"]["coordinator"] = json!({"replicatedJob": "leader"});
                job(v, 0)["completionMode"] = json!("NonIndexed");
            }),
            vec![internal(
                "job for coordinator pod must be indexed completion mode, and completions number must be set",
            )],
            vec![],
        ),
        case(
            "coordinator pod index",
            with("coord-pod", coordinator(json!({"replicatedJob": "workers", "podIndex": 2}))),
            vec![internal("coordinator pod index 2 is invalid for replicatedJob workers job index 0")],
            vec![with("coord-pod", coordinator(json!({"replicatedJob": "workers", "jobIndex": 1, "podIndex": 1})))],
        ),
        case(
            "coordinator endpoint is a label value",
            with("coord", |v| {
                v["spec"]["coordinator"] = json!({"replicatedJob": "workers"});
                v["spec"]["network"] = json!({"subdomain": sub46});
            }),
            vec![internal(&format!(
                "spec will lead to invalid label value \"coord-workers-0-0.{sub46}\" for coordinator label \"jobset.sigs.k8s.io/coordinator\" (long JobSet / ReplicatedJob / SubDomain name?): must be no more than 63 bytes"
            ))],
            vec![with("coord", |v| {
                v["spec"]["coordinator"] = json!({"replicatedJob": "workers"});
                v["spec"]["network"] = json!({"subdomain": sub45});
            })],
        ),
        // 9. volumeClaimPolicies (existing PVCs: see `existing_pvcs_must_match_and_be_retained`).
        case(
            "volume claim template names are unique",
            with_claims("vcp-unique", |v| {
                let first = v["spec"]["volumeClaimPolicies"][0]["templates"][0].clone();
                push(&mut v["spec"]["volumeClaimPolicies"][0]["templates"], first);
            }),
            vec![invalid(
                "spec.volumeClaimPolicies[0].template[1].name",
                &q("data"),
                "names must be unique for VolumeClaimPolicies template",
            )],
            vec![with_claims("vcp-unique", |v| {
                let mut second = v["spec"]["volumeClaimPolicies"][0]["templates"][0].clone();
                second["metadata"]["name"] = json!("scratch");
                push(&mut v["spec"]["volumeClaimPolicies"][0]["templates"], second);
                pod(v, 0)["containers"][0]["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}]);
            })],
        ),
        case(
            "volume claim template names are DNS-1123 subdomains",
            with_claims("vcp-name", |v| {
                v["spec"]["volumeClaimPolicies"][0]["templates"][0]["metadata"]["name"] = json!("Data");
                pod(v, 1)["containers"][0]["volumeMounts"][0]["name"] = json!("Data");
            }),
            vec![invalid("spec.volumeClaimPolicies[0].template[0].name", &q("Data"), DNS1123)],
            vec![with_claims("vcp-name", |_| {})],
        ),
        case(
            "PVC names fit in 63 characters",
            with_claims("vcp-long", |v| {
                v["spec"]["volumeClaimPolicies"][0]["templates"][0]["metadata"]["name"] = json!(claim55);
                pod(v, 1)["containers"][0]["volumeMounts"][0]["name"] = json!(claim55);
            }),
            vec![invalid(
                "spec.volumeClaimPolicies[0].template[0].name",
                &q(&claim55),
                "VolumeClaimPolicies template name is too long",
            )],
            vec![with_claims("vcp-long", |v| {
                v["spec"]["volumeClaimPolicies"][0]["templates"][0]["metadata"]["name"] = json!(claim54);
                pod(v, 1)["containers"][0]["volumeMounts"][0]["name"] = json!(claim54);
            })],
        ),
        case(
            "pod volumes do not reuse a claim name",
            with_claims("vcp-volume", |v| pod(v, 0)["volumes"] = json!([{"name": "data", "emptyDir": {}}])),
            vec![invalid(
                &rj(0, ".template.spec.template.spec.volumes[0].name"),
                &q("data"),
                "volume name conflicts with VolumeClaimPolicy template name: data",
            )],
            vec![with_claims("vcp-volume", |v| pod(v, 0)["volumes"] = json!([{"name": "cache", "emptyDir": {}}]))],
        ),
        case(
            "some container mounts each claim",
            no_mount.clone(),
            vec![invalid_json(
                "spec.replicatedJobs",
                defaulted_rjobs(&no_mount["spec"]["replicatedJobs"]),
                "replicatedJob containers don't have a matching volumeMount: data from VolumeClaimPolicies",
            )],
            // An init container's mount counts.
            vec![with_claims("vcp-mount", |v| {
                pod(v, 0)["initContainers"] =
                    json!([{"name": "i", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]);
                remove(&mut pod(v, 1)["containers"][0], "volumeMounts");
            })],
        ),
        // All errors accumulate, in upstream's order.
        case(
            "errors accumulate in order",
            with("many", |v| {
                v["spec"]["failurePolicy"] =
                    json!({"restartStrategy": "InPlaceRestart", "rules": [{"name": "1x", "action": "FailJobSet"}]});
                v["spec"]["replicatedJobs"][0]["dependsOn"] = json!([{"name": "leader", "status": "Ready"}]);
                v["spec"]["managedBy"] = json!("foo");
                v["spec"]["successPolicy"] = json!({"operator": "All", "targetReplicatedJobs": ["nope"]});
                v["spec"]["coordinator"] = json!({"replicatedJob": "nope"});
            }),
            vec![
                internal("InPlaceRestart restart strategy cannot be set when InPlaceRestart feature gate is disabled"),
                internal("DependsOn can't be set for the first ReplicatedJob"),
                invalid("spec.managedBy", &q("foo"), r#"must be a domain-prefixed path (such as "acme.io/foo")"#),
                internal("invalid replicatedJob name 'nope' does not appear in .spec.ReplicatedJobs"),
                internal(&format!("invalid failure policy rule name '1x', {RULE_NAME_FORMAT}")),
                internal("coordinator replicatedJob nope does not exist"),
            ],
            vec![],
        ),
    ];
    run_create_cases(&api, cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_is_validated_with_the_generated_name() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-generate").await.expect("namespace");
    let _server = start_webhooks(&ns, FeatureGates::default()).await;
    let api = jobsets(&ns);
    let generate = |base: &str| {
        let mut v = jobset("unused");
        v["metadata"] = json!({"generateName": base});
        remove(job(&mut v, 0), "completions");
        remove(job(&mut v, 1), "completions");
        v
    };

    // The API server generates the name (base + 5 random characters) before it calls validating webhooks, so the
    // rejection names the generated JobSet.
    let base = "g".repeat(50);
    let status = create(&api, &generate(&base)).await.expect_err("a 55-character name makes 64-character Job names");
    let name = status.details.as_ref().map(|d| d.name.clone()).unwrap_or_default();
    assert!(name.starts_with(&base) && name.len() == 55, "generated name {name:?}");
    let want = [
        invalid("spec.replicatedJobs[0].name", &q(&format!("{name}-leader-0")), JOB_NAME_TOO_LONG),
        invalid("spec.replicatedJobs[1].name", &q(&format!("{name}-workers-1")), JOB_NAME_TOO_LONG),
    ];
    let problems = rejection_problems(&status, &name, &want);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let stored = create(&api, &generate(&"g".repeat(45))).await.expect("a 50-character name is fine");
    assert_eq!(stored["metadata"]["name"].as_str().map(str::len), Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_create_rules_apply_when_their_gates_are_on() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-gated").await.expect("namespace");
    let gates = FeatureGates { in_place_restart: true, restart_job: true, elastic_jobset: false };
    let _server = start_webhooks(&ns, gates).await;
    let api = jobsets(&ns);

    let restart_job = |name: &str, replicas: i32| {
        with(name, |v| {
            v["spec"]["failurePolicy"] = json!({"rules": [{"name": "r", "action": "RestartJob"},
                {"name": "s", "action": "RestartJobAndIgnoreMaxRestarts"}]});
            v["spec"]["replicatedJobs"][1]["replicas"] = json!(replicas);
        })
    };
    let in_place_ready = |v: &mut Value| {
        v["spec"]["failurePolicy"] = json!({"restartStrategy": "InPlaceRestart"});
        for i in 0..2 {
            job(v, i)["backoffLimit"] = json!(2147483647);
            job(v, i)["podReplacementPolicy"] = json!("Failed");
        }
    };
    let p0 = "spec.replicatedJobs[0].template.spec";
    let p1 = "spec.replicatedJobs[1].template.spec";
    let cases = vec![
        case(
            "RestartJob actions cap replicas at 1024",
            restart_job("restart-job", 1025),
            vec![internal(
                "JobSet cannot have a failure policy rule with RestartJob or RestartJobAndIgnoreMaxRestarts action and a replicated job with replicas > 1024",
            )],
            vec![restart_job("restart-job", 1024)],
        ),
        case(
            "in-place restart prerequisites",
            with("in-place", |v| {
                v["spec"]["failurePolicy"] = json!({"restartStrategy": "InPlaceRestart"});
                job(v, 1)["completions"] = json!(3);
                job(v, 1)["backoffLimit"] = json!(2147483647);
                job(v, 1)["podReplacementPolicy"] = json!("TerminatingOrFailed");
            }),
            vec![
                invalid(
                    &format!("{p0}.backoffLimit"),
                    &q("null"),
                    "replicatedJob leader: must be set to 2147483647 (MaxInt32) when in-place restart is enabled",
                ),
                invalid(
                    &format!("{p0}.podReplacementPolicy"),
                    &q("null"),
                    "replicatedJob leader: must be set to Failed when in-place restart is enabled",
                ),
                invalid(
                    &format!("{p1}.podReplacementPolicy"),
                    &q("TerminatingOrFailed"),
                    "replicatedJob workers: must be set to Failed when in-place restart is enabled",
                ),
                invalid(
                    &format!("{p1}.completions"),
                    "3",
                    "replicatedJob workers: completions and parallelism must be set and equal to each other when in-place restart is enabled",
                ),
            ],
            vec![with("in-place", in_place_ready)],
        ),
    ];
    run_create_cases(&api, cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_pvcs_must_match_and_be_retained() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-pvc").await.expect("namespace");
    let _server = start_webhooks(&ns, FeatureGates::default()).await;
    let api = jobsets(&ns);

    // The PVC `data-<jobset>` exists; the API server stores it with its own defaults (volumeMode).
    let written = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": "data-pvc"}, "spec": written})).expect("PVC");
    let pvcs: Api<PersistentVolumeClaim> = ns.api();
    let pvc = pvcs.create(&PostParams::default(), &pvc).await.expect("PVC created");
    let stored_spec = serde_json::to_value(&pvc.spec).expect("PVC spec");
    assert_eq!(stored_spec["volumeMode"], "Filesystem", "server-defaulted PVC spec: {stored_spec}");

    let jobset_with = |name: &str, template_spec: &Value, retention: Option<&str>| {
        with(name, |v| {
            pod(v, 1)["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
            let mut policy = json!({"templates": [{"metadata": {"name": "data"}, "spec": template_spec}]});
            if let Some(r) = retention {
                policy["retentionPolicy"] = json!({"whenDeleted": r});
            }
            v["spec"]["volumeClaimPolicies"] = json!([policy]);
        })
    };
    let mismatch = |spec: &Value| {
        invalid_json(
            "spec.volumeClaimPolicies[0].template[0].spec",
            spec.clone(),
            &format!("spec does not match existing PVC data-pvc in namespace {}", ns.name()),
        )
    };
    let retain = || {
        invalid(
            "spec.volumeClaimPolicies[0].retentionPolicy.whenDeleted",
            &q("Delete"),
            "retentionPolicy must be retain when PVC exists",
        )
    };
    let mut bigger = stored_spec.clone();
    bigger["resources"]["requests"]["storage"] = json!("2Gi");

    let cases = vec![
        case(
            "an existing PVC needs retentionPolicy Retain",
            jobset_with("pvc", &stored_spec, Some("Delete")),
            vec![retain()],
            vec![],
        ),
        case(
            "an omitted retentionPolicy is defaulted to Delete first",
            jobset_with("pvc", &stored_spec, None),
            vec![retain()],
            vec![],
        ),
        case(
            // Upstream compares with the server-defaulted PVC spec: the spec as the user wrote the PVC differs.
            "an existing PVC's spec must equal the template's",
            jobset_with("pvc", &written, Some("Retain")),
            vec![mismatch(&written)],
            vec![],
        ),
        case(
            "both PVC checks accumulate",
            jobset_with("pvc", &bigger, Some("Delete")),
            vec![mismatch(&bigger), retain()],
            vec![jobset_with("pvc", &stored_spec, Some("Retain"))],
        ),
    ];
    run_create_cases(&api, cases).await;

    // Sizes compare by value, as Go's semantic equality does: the API server stores `1.5Gi` as `1536Mi`.
    let sized: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data-sized"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1.5Gi"}}}}))
    .expect("PVC");
    let sized = pvcs.create(&PostParams::default(), &sized).await.expect("PVC created");
    let mut template = serde_json::to_value(&sized.spec).expect("PVC spec");
    assert_eq!(template["resources"]["requests"]["storage"], "1536Mi", "canonical form");
    template["resources"]["requests"]["storage"] = json!("1.5Gi");
    create(&api, &jobset_with("sized", &template, Some("Retain")))
        .await
        .unwrap_or_else(|s| panic!("1.5Gi is 1536Mi: {}", s.message));

    // Without an existing PVC, any retention policy and any template spec will do.
    create(&api, &jobset_with("fresh", &written, Some("Delete"))).await.expect("no PVC data-fresh: accepted");
}

// ---------------------------------------------------------------------------------------------------------------
// §4.3 ValidateUpdate
// ---------------------------------------------------------------------------------------------------------------

/// Reads `name`, applies `edit`, and writes it back.
async fn update(api: &Api<DynamicObject>, name: &str, edit: impl FnOnce(&mut Value)) -> Result<Value, Box<Status>> {
    let mut v = get(api, name).await;
    edit(&mut v);
    replace(api, &v).await
}

/// Like [`update`], for an update that must be rejected with `want` (given the edited object).
async fn update_rejected(
    api: &Api<DynamicObject>,
    name: &str,
    edit: impl FnOnce(&mut Value),
    want: impl FnOnce(&Value) -> Vec<Want>,
) -> Vec<String> {
    let mut v = get(api, name).await;
    edit(&mut v);
    let want = want(&v);
    match replace(api, &v).await {
        Ok(_) => vec![format!("{name}: update accepted, want rejected")],
        Err(status) => rejection_problems(&status, name, &want).into_iter().map(|p| format!("{name}: {p}")).collect(),
    }
}

/// A problem if `result` is a rejection.
fn accepted(what: &str, result: Result<Value, Box<Status>>) -> Option<String> {
    result.err().map(|status| format!("{what}: rejected, want accepted: {}", status.message))
}

/// `spec.replicatedJobs: Invalid value: <the new ReplicatedJobs>: field is immutable`
fn immutable(v: &Value) -> Vec<Want> {
    vec![invalid_json("spec.replicatedJobs", v["spec"]["replicatedJobs"].clone(), "field is immutable")]
}

fn pod_template_edits(v: &mut Value) {
    let template = &mut v["spec"]["replicatedJobs"][1]["template"]["spec"]["template"];
    template["metadata"] = json!({"labels": {"kueue.x-k8s.io/podset": "workers"}, "annotations": {"a": "b"}});
    template["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": "H100"});
    template["spec"]["tolerations"] = json!([{"key": "nvidia.com/gpu", "operator": "Exists"}]);
    template["spec"]["schedulingGates"] = json!([{"name": "muster.dev/admission"}]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_rules_keep_replicated_jobs_and_managed_by_immutable() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-update").await.expect("namespace");
    let _server = start_webhooks(&ns, FeatureGates::default()).await;
    let api = jobsets(&ns);
    let mut problems = Vec::new();

    // Everything outside the ReplicatedJobs and managedBy may change, and create-time rules are not re-run.
    create(&api, &jobset("mutable")).await.expect("created");
    let r = update(&api, "mutable", |v| {
        v["spec"]["suspend"] = json!(true);
        v["spec"]["ttlSecondsAfterFinished"] = json!(60);
        v["spec"]["coordinator"] = json!({"replicatedJob": "nope"});
        v["metadata"]["labels"] = json!({"a": "b"});
        v["metadata"]["annotations"] = json!({"c": "d"});
    })
    .await;
    problems.extend(accepted("suspend, ttl, coordinator, labels", r));

    // ReplicatedJobs are immutable: containers, replicas, adding, removing, scaling without the Elastic gate.
    create(&api, &jobset("immutable")).await.expect("created");
    problems.extend(
        update_rejected(&api, "immutable", |v| pod(v, 1)["containers"][0]["image"] = json!("other"), immutable).await,
    );
    problems.extend(
        update_rejected(&api, "immutable", |v| v["spec"]["replicatedJobs"][1]["replicas"] = json!(3), immutable).await,
    );
    problems.extend(
        update_rejected(
            &api,
            "immutable",
            |v| {
                let mut extra = defaulted_rjobs(&json!([rjob("extra", 1, 1)]));
                push(&mut v["spec"]["replicatedJobs"], extra[0].take());
            },
            immutable,
        )
        .await,
    );
    problems.extend(
        update_rejected(
            &api,
            "immutable",
            |v| {
                v["spec"]["replicatedJobs"].as_array_mut().map(Vec::pop);
            },
            immutable,
        )
        .await,
    );
    problems.extend(
        update_rejected(
            &api,
            "immutable",
            |v| {
                job(v, 1)["parallelism"] = json!(4);
                job(v, 1)["completions"] = json!(4);
            },
            immutable,
        )
        .await,
    );
    // Pod scheduling fields are immutable while the JobSet runs.
    problems.extend(update_rejected(&api, "immutable", pod_template_edits, immutable).await);

    // ...and mutable while it is (or is being) suspended, for Kueue and for gang admission.
    create(&api, &with("suspended", |v| v["spec"]["suspend"] = json!(true))).await.expect("created");
    let r = update(&api, "suspended", pod_template_edits).await;
    problems.extend(accepted("pod scheduling fields while suspended", r));
    problems.extend(
        update_rejected(&api, "suspended", |v| pod(v, 1)["containers"][0]["image"] = json!("other"), immutable).await,
    );
    let r = update(&api, "suspended", |v| {
        v["spec"]["suspend"] = json!(false);
        pod(v, 1)["nodeSelector"] = json!({"nvidia.com/gpu.product": "B200"});
    })
    .await;
    problems.extend(accepted("pod scheduling fields while resuming", r));
    problems.extend(
        update_rejected(&api, "suspended", |v| pod(v, 1)["nodeSelector"] = json!({"zone": "a"}), immutable).await,
    );
    create(&api, &jobset("suspending")).await.expect("created");
    let r = update(&api, "suspending", |v| {
        v["spec"]["suspend"] = json!(true);
        pod_template_edits(v);
    })
    .await;
    problems.extend(accepted("pod scheduling fields while suspending", r));

    // managedBy is immutable: changed, removed, added.
    create(&api, &with("managed", |v| v["spec"]["managedBy"] = json!("example.com/a"))).await.expect("created");
    problems.extend(
        update_rejected(
            &api,
            "managed",
            |v| v["spec"]["managedBy"] = json!("example.com/b"),
            |_| vec![invalid("spec.managedBy", &q("example.com/b"), "field is immutable")],
        )
        .await,
    );
    problems.extend(
        update_rejected(
            &api,
            "managed",
            |v| remove(&mut v["spec"], "managedBy"),
            |_| vec![invalid("spec.managedBy", &q("null"), "field is immutable")],
        )
        .await,
    );
    problems.extend(
        update_rejected(
            &api,
            "mutable",
            |v| v["spec"]["managedBy"] = json!("example.com/a"),
            |_| vec![invalid("spec.managedBy", &q("example.com/a"), "field is immutable")],
        )
        .await,
    );
    let r = update(&api, "managed", |v| v["metadata"]["labels"] = json!({"x": "y"})).await;
    problems.extend(accepted("unchanged managedBy", r));
    // Both rules at once: both errors, ReplicatedJobs first.
    problems.extend(
        update_rejected(
            &api,
            "managed",
            |v| {
                v["spec"]["managedBy"] = json!("example.com/b");
                v["spec"]["replicatedJobs"][0]["replicas"] = json!(2);
            },
            |v| {
                let mut want = immutable(v);
                want.push(invalid("spec.managedBy", &q("example.com/b"), "field is immutable"));
                want
            },
        )
        .await,
    );

    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_jobsets_scale_indexed_jobs_with_the_gate() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-elastic").await.expect("namespace");
    let gates = FeatureGates { elastic_jobset: true, ..FeatureGates::default() };
    let _server = start_webhooks(&ns, gates).await;
    let api = jobsets(&ns);
    let mut problems = Vec::new();
    let scale = |parallelism: i32, completions: i32| {
        move |v: &mut Value| {
            job(v, 1)["parallelism"] = json!(parallelism);
            job(v, 1)["completions"] = json!(completions);
        }
    };
    let path = "spec.replicatedJobs[1].template.spec";

    create(&api, &jobset("elastic")).await.expect("created");
    let scaled = update(&api, "elastic", scale(4, 4)).await;
    assert!(scaled.is_ok(), "scaling an Indexed ReplicatedJob: {:?}", scaled.err().map(|s| s.message));
    problems.extend(
        update_rejected(&api, "elastic", scale(0, 0), |_| {
            vec![
                invalid(&format!("{path}.parallelism"), "0", "parallelism must be >= 1"),
                invalid(&format!("{path}.completions"), "0", "completions must be >= 1"),
            ]
        })
        .await,
    );
    problems.extend(
        update_rejected(&api, "elastic", scale(5, 4), |_| {
            vec![invalid(
                &format!("{path}.completions"),
                "4",
                "completions must be equal to parallelism for Elastic Indexed Jobs",
            )]
        })
        .await,
    );
    // Everything else in the ReplicatedJobs stays immutable.
    problems.extend(
        update_rejected(
            &api,
            "elastic",
            |v| {
                scale(2, 2)(v);
                pod(v, 1)["containers"][0]["image"] = json!("other");
            },
            |v| {
                // The scaled fields are masked (shown as they were) in the reported value.
                let mut shown = v.clone();
                scale(4, 4)(&mut shown);
                immutable(&shown)
            },
        )
        .await,
    );

    // NonIndexed ReplicatedJobs do not scale.
    create(&api, &with("elastic-nonindexed", |v| job(v, 1)["completionMode"] = json!("NonIndexed")))
        .await
        .expect("created");
    problems.extend(update_rejected(&api, "elastic-nonindexed", scale(4, 4), immutable).await);

    // A finished JobSet does not scale. Status writes do not go through the JobSet webhooks.
    let condition = json!({"type": "Completed", "status": "True", "reason": "AllJobsCompleted",
        "message": "jobset completed successfully", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    api.patch_status("elastic", &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": [condition]}})))
        .await
        .expect("status written");
    problems.extend(
        update_rejected(&api, "elastic", scale(6, 6), |_| {
            vec![forbidden(
                path,
                "Cannot mutate parallelism or completions when JobSet is in a terminal state (Completed or Failed)",
            )]
        })
        .await,
    );

    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_webhook_server_fails_closed() {
    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("webhook-down").await.expect("namespace");
    let server = start_webhooks(&ns, FeatureGates::default()).await;
    let api = jobsets(&ns);
    server.shutdown().await;
    // failurePolicy: Fail — with the server gone, JobSets are refused rather than admitted undefaulted.
    let status = create(&api, &jobset("unchecked")).await.expect_err("refused while the webhook is down");
    assert!(status.message.contains(r#"failed calling webhook "mjobset.kb.io""#), "{}", status.message);
}

/// `--self-managed-certs` sets `caBundle` on every webhook of both configurations (the JobSet webhooks and the pod
/// webhooks `mpod.kb.io` / `vpod.kb.io`, which pod pinning also uses) through the real API server's get-and-replace.
/// The configurations are the deployed ones renamed, and select no object, so the other tests here never call them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_certs_set_ca_bundle_in_every_configuration() {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use muster_admission::kube_io::{SelfManagedError, default_self_managed, inject_ca_bundle};
    use muster_admission::tls::{Validity, generate_certs};
    use muster_admission::webhook::config::Target;
    use std::collections::BTreeSet;

    let cluster = CLUSTER.lock().await;
    let ns = cluster.namespace("self-managed").await.expect("namespace");
    let client = ns.client();
    let name = |what: &str| format!("{}-{what}", ns.name());
    let never = || {
        Some(LabelSelector {
            match_labels: Some([("muster.dev/never".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        })
    };
    let target = Target::in_cluster();
    let mut mutating = mutating_configuration(&target, None);
    let mut validating = validating_configuration(&target, None);
    mutating.metadata.name = Some(name("mutating"));
    validating.metadata.name = Some(name("validating"));
    for hook in mutating.webhooks.iter_mut().flatten() {
        hook.object_selector = never();
    }
    for hook in validating.webhooks.iter_mut().flatten() {
        hook.object_selector = never();
    }
    let mutating_api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating_api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    create_or_replace(mutating_api.clone(), mutating).await;
    create_or_replace(validating_api.clone(), validating).await;

    let mut cfg = default_self_managed(ns.name());
    cfg.mutating_configuration = name("mutating");
    cfg.validating_configuration = name("validating");
    let ca = |n: &str| generate_certs(&[n.to_owned()], Validity::default()).expect("certs").ca_cert_pem.into_bytes();
    // Every webhook's caBundle by webhook name, across both configurations.
    let bundles = || async {
        let m = mutating_api.get(&name("mutating")).await.expect("mutating");
        let v = validating_api.get(&name("validating")).await.expect("validating");
        let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        out.extend(m.webhooks.into_iter().flatten().map(|h| (h.name, h.client_config.ca_bundle.map(|b| b.0))));
        out.extend(v.webhooks.into_iter().flatten().map(|h| (h.name, h.client_config.ca_bundle.map(|b| b.0))));
        out
    };

    for round in ["first", "renewed"] {
        let bundle = ca(round);
        inject_ca_bundle(&client, &cfg, &bundle).await.expect("caBundle set");
        let hooks = bundles().await;
        let names: BTreeSet<&str> = hooks.iter().map(|(n, _)| n.as_str()).collect();
        for expected in ["mjobset.kb.io", "vjobset.kb.io", "mpod.kb.io", "vpod.kb.io"] {
            assert!(names.contains(expected), "{expected} in {names:?}");
        }
        assert!(hooks.iter().all(|(_, b)| b.as_ref() == Some(&bundle)), "{round}: {hooks:?}");
    }

    // A configuration that is missing: an error (retried by the caller), not a silent skip.
    let mut missing = cfg.clone();
    missing.mutating_configuration = name("absent");
    match inject_ca_bundle(&client, &missing, &ca("third")).await {
        Err(SelfManagedError::ConfigurationMissing(n)) => assert_eq!(n, name("absent")),
        other => panic!("{other:?}"),
    }
    mutating_api.delete(&name("mutating"), &Default::default()).await.expect("delete");
    validating_api.delete(&name("validating"), &Default::default()).await.expect("delete");
}
