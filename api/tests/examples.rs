//! Every JobSet in `examples/` reads into the api types and writes back as the same JSON value.

use std::path::{Path, PathBuf};

use muster_api::JobSet;
use serde_json::Value;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|entry| entry.expect("readable dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// JSON equality, except that a resource quantity written as a YAML number (`nvidia.com/gpu: 8`) equals the
/// string the API server and k8s-openapi canonicalise it to (`"8"`), and an embedded PVC template may gain
/// its `apiVersion`/`kind`. Anything else added, lost or changed fails.
fn assert_same(path: &str, own_key: &str, original: &Value, round_tripped: &Value) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let here = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(Value::Number(n)), Some(Value::String(q))) if matches!(own_key, "limits" | "requests") => {
                        assert_eq!(&n.to_string(), q, "{here}: quantity changed");
                    }
                    (Some(x), Some(y)) => assert_same(&here, key, x, y),
                    (Some(x), None) => panic!("{here} lost in the round trip (was {x})"),
                    // k8s-openapi always writes the type of an embedded PVC; the API server keeps both forms.
                    (None, Some(y)) if own_key == "templates[]" && is_pvc_type_meta(key, y) => {}
                    (None, Some(y)) => panic!("{here} added by the round trip ({y})"),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: list length changed");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(&format!("{path}[{i}]"), &format!("{own_key}[]"), x, y);
            }
        }
        (a, b) => assert_eq!(a, b, "{path} changed"),
    }
}

fn is_pvc_type_meta(key: &str, value: &Value) -> bool {
    (key, value.as_str()) == ("apiVersion", Some("v1"))
        || (key, value.as_str()) == ("kind", Some("PersistentVolumeClaim"))
}

#[test]
fn examples_round_trip_without_losing_a_field() {
    let files = examples();
    assert!(files.len() >= 4, "expected the four example JobSets, found {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example is readable");
        let original: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let jobset: JobSet =
            serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let back = serde_json::to_value(&jobset).expect("JobSet serialises");
        assert_same(&file.display().to_string(), "", &original, &back);
    }
}

#[test]
fn examples_cover_the_real_uses() {
    let load = |name: &str| -> JobSet {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name))
            .expect("example exists");
        serde_saphyr::from_str(&text).expect("example parses")
    };
    let training = load("pytorch-gpu-training.yaml");
    let names: Vec<_> = training.spec.replicated_jobs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["leader", "workers"]);
    let gpus = training.spec.replicated_jobs[1].template.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let limits = gpus.and_then(|p| p.containers[0].resources.as_ref()).and_then(|r| r.limits.as_ref());
    assert_eq!(limits.and_then(|l| l.get("nvidia.com/gpu")).map(|q| q.0.as_str()), Some("8"));

    let coordinator = load("coordinator.yaml");
    assert_eq!(coordinator.spec.coordinator.as_ref().map(|c| c.replicated_job.as_str()), Some("driver"));

    let critical = load("fail-when-leader-fails.yaml");
    let policy = critical.spec.failure_policy.as_ref().expect("failure policy");
    assert_eq!(policy.rules[0].action, muster_api::jobset::FailurePolicyAction::FailJobSet);
    assert_eq!(policy.rules[0].target_replicated_jobs, ["leader"]);

    let volumes = load("checkpoint-volumes.yaml");
    let retention: Vec<_> = volumes.spec.volume_claim_policies.iter().map(|p| p.when_deleted()).collect();
    use muster_api::jobset::WhenDeleted::{Delete, Retain};
    assert_eq!(retention, [Retain, Delete]);
}
