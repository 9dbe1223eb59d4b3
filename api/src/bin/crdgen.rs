//! Writes the CRDs generated from `muster-api` into a directory, or with `--check` fails when the files there
//! differ from what the types generate.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/controller/crds"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: muster-crdgen [--check] [DIR]   (default DIR: deploy/controller/crds)");
                return ExitCode::SUCCESS;
            }
            other => dir = PathBuf::from(other),
        }
    }
    let mut stale = Vec::new();
    for (name, crd) in muster_api::crd::all() {
        let path = dir.join(&name);
        let yaml = match muster_api::crd::render(&crd) {
            Ok(yaml) => yaml,
            Err(err) => {
                eprintln!("cannot render {name}: {err}");
                return ExitCode::FAILURE;
            }
        };
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else if let Err(err) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml)) {
            eprintln!("cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "stale generated CRDs (run `cargo run -p muster-api --bin muster-crdgen` and commit): {}",
        stale.join(", ")
    );
    ExitCode::FAILURE
}
