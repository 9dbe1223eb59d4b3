//! Finding the binaries that `tests/build-control-plane.sh` built.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Environment variable naming the directory with the control-plane binaries. When unset, the harness
/// reads the directory from `<cache>/control-plane/current`, which the build script writes.
pub const BIN_DIR_ENV: &str = "MUSTER_CONTROL_PLANE_BIN";

/// `${MUSTER_CACHE_DIR:-$HOME/.cache/muster}`, as in the build script.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MUSTER_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("muster")
}

/// Paths of the control-plane executables.
#[derive(Debug, Clone)]
pub struct ControlPlaneBinaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kwok: PathBuf,
}

impl ControlPlaneBinaries {
    /// Locates the binaries; fails (never skips) with a message naming the build script.
    pub fn locate() -> Result<Self> {
        let (dir, source) = match std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            Some(dir) => (PathBuf::from(dir), format!("${BIN_DIR_ENV}")),
            None => {
                let current = default_cache_dir().join("control-plane").join("current");
                let text = std::fs::read_to_string(&current).map_err(|e| {
                    Error::BinariesMissing(format!(
                        "{BIN_DIR_ENV} is not set and {} is unreadable ({e})",
                        current.display()
                    ))
                })?;
                (PathBuf::from(text.trim()), current.display().to_string())
            }
        };
        Self::in_dir(&dir)
            .map_err(|missing| Error::BinariesMissing(format!("{} (from {source}) lacks {missing}", dir.display())))
    }

    fn in_dir(dir: &Path) -> Result<Self, String> {
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() { Ok(path) } else { Err(name.to_owned()) }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            etcd: find("etcd")?,
            kube_apiserver: find("kube-apiserver")?,
            kube_controller_manager: find("kube-controller-manager")?,
            kube_scheduler: find("kube-scheduler")?,
            kwok: find("kwok")?,
        })
    }
}

/// Cargo's build profile for [`workspace_binary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Release,
}

/// A binary of this workspace, built on demand: runs `cargo build -p <package> --bin <bin>` (a no-op when it is up
/// to date) and takes the path cargo reports, so it follows `CARGO_TARGET_DIR` and the default `target/` alike.
/// `CARGO_BIN_EXE_*` only exists for a package's own binaries, and the binaries under test live in other packages.
/// `override_env`, when set in the environment, names a prebuilt binary to use instead.
pub fn workspace_binary(package: &str, bin: &str, profile: Profile, override_env: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(override_env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::io(format!("{override_env}={}", path.display()), std::io::ErrorKind::NotFound.into()))
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet", "--locked", "-p", package, "--bin", bin, "--message-format=json"]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    let what = format!("`cargo build -p {package} --bin {bin}` ({profile:?})");
    let output = command
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if !output.status.success() {
        return Err(Error::io(format!("{what} failed ({})", output.status), std::io::Error::other("build failed")));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .filter(|path| path.is_file())
        .ok_or_else(|| Error::io(format!("{what} reported no executable"), std::io::ErrorKind::NotFound.into()))
}
