//! The CustomResourceDefinitions, generated from the types in this crate.
//!
//! `cargo run -p muster-api --bin muster-crdgen` writes them to `deploy/controller/crds/`; CI runs it with
//! `--check` and fails when the checked-in YAML is stale.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps};
use kube::CustomResourceExt;

use crate::{GPUNode, Gang, JobSet};

/// Every CRD we ship, with the file name it is checked in under.
pub fn all() -> Vec<(String, CustomResourceDefinition)> {
    [JobSet::crd(), Gang::crd(), GPUNode::crd()]
        .into_iter()
        .map(|mut crd| {
            for version in &mut crd.spec.versions {
                if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                    drop_nullable(schema);
                }
            }
            (file_name(&crd), crd)
        })
        .collect()
}

/// kube marks every `Option` field `nullable`. Upstream's CRD has no `nullable` anywhere, so the API server
/// prunes an explicit `null` instead of storing it; dropping the flag keeps that behaviour identical.
fn drop_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_nullable(child);
    }
    if let Some(items) = schema.items.as_mut() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray as Items;
        match items {
            Items::Schema(item) => drop_nullable(item),
            Items::Schemas(list) => list.iter_mut().for_each(drop_nullable),
        }
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(
        extra,
    )) = schema.additional_properties.as_mut()
    {
        drop_nullable(extra);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of].into_iter().flatten() {
        list.iter_mut().for_each(drop_nullable);
    }
}

/// `<group>_<plural>.yaml`, the controller-gen convention upstream JobSet uses.
fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// YAML as checked in: a generated-file header, then the CRD.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    let body = serde_saphyr::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in api/ by `cargo run -p muster-api --bin muster-crdgen`. Do not edit.\n{body}"
    ))
}
