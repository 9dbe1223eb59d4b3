//! `scripts/compare-nvidia-smi.sh`, the device check for real GPUs, exercised here with the mock library and a
//! stand-in `nvidia-smi` that prints what the real one would for the fixture (MiB rounded up per cell, watts
//! with two decimals). It must accept the agent's output and reject a disagreement.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{FIXTURE_ENV, FixtureFile, agent_binary, hgx_h100x8, mock_library};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// What `nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,memory.total,memory.reserved,memory.used,
/// memory.free,utilization.gpu,power.draw,temperature.gpu,mig.mode.current --format=csv,noheader,nounits`
/// prints for `fixture`.
fn nvidia_smi_csv(fixture: &Value) -> String {
    let mut csv = String::new();
    for (i, d) in fixture["devices"].as_array().into_iter().flatten().enumerate() {
        let n = |v: &Value| v.as_u64().unwrap_or_default();
        let (total, reserved, used) = (n(&d["memory"]["total"]), n(&d["memory"]["reserved"]), n(&d["memory"]["used"]));
        let free = total - reserved - used;
        let mib = |bytes: u64| bytes.div_ceil(MIB);
        csv += &format!(
            "{i}, {}, {}, {}, {}, {}, {}, {}, {}, {:.2}, {}, Disabled\n",
            d["uuid"].as_str().unwrap_or_default(),
            d["name"].as_str().unwrap_or_default(),
            d["pciBusId"].as_str().unwrap_or_default(),
            mib(total),
            mib(reserved),
            mib(used),
            mib(free),
            n(&d["utilization"]["gpu"]),
            n(&d["powerMilliwatts"]) as f64 / 1000.0,
            n(&d["temperature"]),
        );
    }
    csv
}

fn fake_nvidia_smi(dir: &Path, csv: &str) -> std::path::PathBuf {
    let data = dir.join("query.csv");
    std::fs::write(&data, csv).expect("write csv");
    let script = dir.join("nvidia-smi");
    let body = format!(
        "#!/bin/sh\ncase \"$1\" in\n  --query-gpu=driver_version) echo 570.124.06 ;;\n  --query-gpu=*) cat '{}' ;;\n  *) echo fake nvidia-smi ;;\nesac\n",
        data.display()
    );
    std::fs::write(&script, body).expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn run_check(fixture: &Path, nvidia_smi: &Path, out: &Path) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compare-nvidia-smi.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg("--agent")
        .arg(agent_binary())
        .arg("--out")
        .arg(out)
        .arg("--")
        .arg("--nvml-library")
        .arg(mock_library())
        .env("NVIDIA_SMI", nvidia_smi)
        .env(FIXTURE_ENV, fixture)
        .output()
        .expect("running the comparison script");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

fn busy_fixture() -> Value {
    let mut fixture = hgx_h100x8();
    for (i, device) in fixture["devices"].as_array_mut().expect("devices").iter_mut().enumerate() {
        // Byte counts that are not whole MiB, so rounding matters.
        device["memory"]["used"] = json!(i as u64 * 7_777_777_777 + 1);
        device["utilization"] = json!({ "gpu": 9 * i, "memory": 3 * i });
        device["powerMilliwatts"] = json!(312_345 + 1_001 * i as u64);
    }
    fixture
}

#[test]
fn the_device_check_accepts_an_agent_that_agrees_with_nvidia_smi() {
    let fixture = busy_fixture();
    let file = FixtureFile::new(&fixture);
    let smi = fake_nvidia_smi(file.dir.path(), &nvidia_smi_csv(&fixture));
    let out = file.dir.path().join("out");
    let (code, text) = run_check(&file.path, &smi, &out);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("every field agrees"), "{text}");
    assert_eq!(text.matches("  ok\n").count(), 8 * 11, "{text}");
    assert!(out.join("result.txt").is_file());
}

#[test]
fn the_device_check_rejects_a_disagreement() {
    let fixture = busy_fixture();
    let file = FixtureFile::new(&fixture);
    // nvidia-smi would have rounded reserved memory up (479 MiB); a truncating agent would say 478.
    let csv = nvidia_smi_csv(&fixture).replacen(", 479, ", ", 478, ", 1);
    let smi = fake_nvidia_smi(file.dir.path(), &csv);
    let (code, text) = run_check(&file.path, &smi, &file.dir.path().join("out"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("GPU 0 memory.reserved"), "{text}");
}
