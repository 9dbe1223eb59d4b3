//! The README's main job, run as a newcomer runs it (non-interactively, a small cluster): every example gang is
//! admitted and finishes, and nothing the demo started is left running afterwards.
//!
//! Run: `cargo test -p muster-tests --test demo` (after `tests/build-control-plane.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use muster_tests::{Profile, serial, workspace_binary};

/// `libmuster_mock_nvml.so`, built by cargo (the agents load it through nvml-wrapper).
fn mock_nvml() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--locked", "-p", "muster-mock-nvml", "--message-format=json"])
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo");
    assert!(output.status.success(), "building the mock NVML library failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "muster_mock_nvml")
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .expect("cargo reported the .so")
}

/// Pids whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            found.push((pid, cmdline));
        }
    }
    found
}

#[tokio::test]
async fn the_demo_admits_and_finishes_every_example_and_leaves_nothing_running() {
    let _serial = serial().await;
    let demo = workspace_binary("muster-tests", "muster-demo", Profile::Dev, "MUSTER_DEMO_BIN").expect("demo");
    let agent = workspace_binary("muster-gpu-agent", "muster-gpu-agent", Profile::Dev, "MUSTER_GPU_AGENT_BIN")
        .expect("gpu-agent");
    let library = mock_nvml();
    let output = tokio::process::Command::new(&demo)
        .args(["--nodes", "8", "--pod-duration", "2s", "--gpu-agent"])
        .arg(&agent)
        .arg("--mock-nvml")
        .arg(&library)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .expect("the demo finishes within 10 minutes")
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("All example JobSets finished."), "{stdout}\n{stderr}");
    assert!(stderr.contains("8 gpu-agents on the mock NVML library"), "{stderr}");

    // The last table: every example's gang Finished and its JobSet Completed.
    let last_table: Vec<&str> = stdout
        .rsplit_once("JOBSET ")
        .map(|(_, t)| t.lines().skip(1).take_while(|l| !l.trim().is_empty()).collect())
        .unwrap_or_default();
    let examples = ["finetune", "jax-multihost", "leader-critical", "llm-pretrain"];
    assert_eq!(last_table.len(), examples.len(), "{stdout}");
    for (row, name) in last_table.iter().zip(examples) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(..3), Some(&[name, "Finished", "Completed"][..]), "{row}");
    }

    // The scheduler, asking the extender, put every gang pod where admission reserved it.
    let (on_plan, total) = stdout
        .lines()
        .find_map(|l| l.strip_suffix(" gang pods ran on the node admission reserved for them"))
        .and_then(|l| l.split_once(" of "))
        .map(|(a, b)| (a.parse::<u32>().unwrap_or(0), b.parse::<u32>().unwrap_or(u32::MAX)))
        .unwrap_or_else(|| panic!("the summary counts pods on their reserved nodes:\n{stdout}"));
    // (Pods of Jobs a finished JobSet deleted while they were active are gone; the rest remain.)
    assert!(total >= 10, "the examples' pods are counted: {total}");
    assert_eq!(on_plan, total, "{stdout}");

    // How to poke at it: the metrics endpoints of every component.
    for what in ["admission controller", "scheduler extender", "gpu-agent gpu-node-0"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("curl -s http://127.0.0.1:") && l.ends_with(&format!("/metrics   # {what}"))),
            "{what}: {stdout}"
        );
    }

    // Everything it started ran under its cluster directory (control plane, KWOK, agents): none is left.
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Component logs: "))
        .and_then(|logs| logs.strip_suffix("/logs"))
        .expect("the summary names the cluster directory")
        .to_owned();
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left running: {left:?}");
    let agents = processes_mentioning(&format!("{}/gpu-agents/", dir));
    assert!(agents.is_empty(), "gpu-agents left running: {agents:?}");
}
