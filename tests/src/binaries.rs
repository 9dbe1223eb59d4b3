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
