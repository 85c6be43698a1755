//! OpenAPI documents for the served resources.
//!
//! kubectl (1.27+) decides how to validate a manifest by looking for the `fieldValidation`
//! query parameter on the PATCH operation of the manifest's kind in `/openapi/v3`. When it is
//! there, kubectl leaves validation to the server (`fieldValidation=Strict`, implemented by the
//! verbs) and never needs the protobuf `/openapi/v2` document. The per-group-version documents
//! also carry each CRD's schema under `components.schemas`, which `kubectl explain` reads.

use serde_json::{Map, Value, json};

use crate::apiserver::resources::{Registry, ResourceInfo};

/// The media type kubectl asks `/openapi/v2` for.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `io.k8s.api.core.v1.Secret` / `dev.sidero.metal.v1alpha2.Server`: kube's schema naming.
fn schema_name(info: &ResourceInfo) -> String {
    let group = if info.group.is_empty() {
        "io.k8s.api.core".to_owned()
    } else {
        info.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", info.version, info.kind)
}

/// A short content hash so clients can cache documents by URL.
fn hash(doc: &Value) -> String {
    // FNV-1a: stable across runs, no dependency, collisions only cost a cache miss.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in doc.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3`: one entry per served group/version.
pub fn v3_root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = registry
        .infos()
        .map(|i| (i.group.clone(), i.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    for (group, version) in gvs {
        if let Some(doc) = v3_group_version(registry, &group, &version) {
            let path = gv_path(&group, &version);
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/apis/<group>/<version>` (or `/openapi/v3/api/v1`).
pub fn v3_group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut infos: Vec<&ResourceInfo> = registry
        .infos()
        .filter(|i| i.group == group && i.version == version)
        .collect();
    if infos.is_empty() {
        return None;
    }
    infos.sort_by(|a, b| a.plural.cmp(&b.plural));
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for info in infos {
        let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
        let name = schema_name(info);
        let mut schema = info.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(name.clone(), schema);
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let query = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |action: &str, extra: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", info.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": extra,
                "responses": ok,
            })
        };
        let mut patch = op(
            "patch",
            vec![
                query("dryRun"),
                query("fieldManager"),
                query("fieldValidation"),
                query("force"),
            ],
        );
        patch["requestBody"] = json!({"content": {
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        }});
        let prefix = if info.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(&info.group, &info.version),
                info.plural
            )
        } else {
            format!("/{}/{}", gv_path(&info.group, &info.version), info.plural)
        };
        let mut common = vec![
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        ];
        if info.namespaced {
            common.push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        paths.insert(
            format!("{prefix}/{{name}}"),
            json!({
                "get": op("get", vec![]),
                "put": op("put", vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]),
                "patch": patch,
                "delete": op("delete", vec![query("dryRun"), query("propagationPolicy")]),
                "parameters": common,
            }),
        );
        paths.insert(
            prefix,
            json!({
                "get": op("list", vec![query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("watch")]),
                "post": op("post", vec![query("dryRun"), query("fieldManager"), query("fieldValidation")]),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let crd = json!({"metadata": {"name": "servers.metal.sidero.dev"},
            "spec": {"group": "metal.sidero.dev", "scope": "Cluster",
                "names": {"plural": "servers", "kind": "Server"},
                "versions": [{"name": "v1alpha2", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}}}]}});
        Registry::build(&[crd])
    }

    #[test]
    fn patch_operations_advertise_field_validation_for_their_kind() {
        let doc = v3_group_version(&registry(), "metal.sidero.dev", "v1alpha2").unwrap();
        let patch = &doc["paths"]["/apis/metal.sidero.dev/v1alpha2/servers/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Server");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        let schema = &doc["components"]["schemas"]["dev.sidero.metal.v1alpha2.Server"];
        assert_eq!(schema["properties"]["spec"]["type"], "object");
    }

    #[test]
    fn root_lists_every_group_version_with_a_hash() {
        let root = v3_root(&registry());
        let url = root["paths"]["apis/metal.sidero.dev/v1alpha2"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/metal.sidero.dev/v1alpha2?hash="));
        assert!(
            root["paths"]["api/v1"].is_object(),
            "core kinds are described too"
        );
        assert!(v3_group_version(&registry(), "nope.io", "v1").is_none());
    }
}
