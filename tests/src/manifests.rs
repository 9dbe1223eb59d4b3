//! YAML manifests: loading, and installing CRDs with server-side apply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use crate::{Error, Result, eventually};

/// Field manager for everything the harness applies.
pub(crate) const FIELD_MANAGER: &str = "muster-tests";

/// Every YAML document in `path` as JSON, skipping empty documents.
pub fn load_yaml_documents(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| Error::Manifest { path: path.to_path_buf(), message: format!("invalid YAML: {e}") })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `*.yaml` and `*.yml` files directly in `dir`, sorted; empty if `dir` does not exist.
pub fn yaml_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?.path();
        let is_yaml = path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Applies every CustomResourceDefinition in `files` (server-side apply, forced) and waits until
/// each is Established. Any other kind of object in those files is an error: CRD files hold CRDs.
pub(crate) async fn install_crds(client: &Client, files: &[PathBuf], timeout: Duration) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in files {
        for doc in load_yaml_documents(file)? {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
            let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            if kind != "CustomResourceDefinition" || name.is_empty() {
                return Err(Error::Manifest {
                    path: file.clone(),
                    message: format!(
                        "expected only named CustomResourceDefinitions, found kind {kind:?} name {name:?}"
                    ),
                });
            }
            api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&doc)).await?;
            names.push(name.to_owned());
        }
    }
    for name in &names {
        eventually(&format!("CRD {name} to be Established"), timeout, || async {
            let crd = api.get(name).await.map_err(|e| e.to_string())?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            let established = conditions.iter().any(|c| c.type_ == "Established" && c.status == "True");
            if established { Ok(()) } else { Err(format!("conditions: {conditions:?}")) }
        })
        .await?;
    }
    Ok(names)
}
