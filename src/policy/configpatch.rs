//! The machine configuration a Talos server receives: the bootstrap secret's config with the
//! ServerClass and Server patches applied, in Sidero's order (pure: no I/O).
//!
//! Order: ServerClass `configPatches`, then Server `configPatches` (RFC 6902, on the first YAML
//! document, the `v1alpha1` machine config), then ServerClass `strategicPatches`, then Server
//! `strategicPatches`. Without any patch the config is returned byte for byte, comments and
//! all; with patches it is re-serialized.
//!
//! Strategic merge follows Talos' rules for the common cases: maps merge key by key, lists are
//! appended to, scalars replace, and a map holding `$patch: delete` removes the key it sits
//! under. (Talos also merges a few lists by key, e.g. network interfaces by `interface`; here
//! such lists are appended to, which `docs/api.md` says.) A strategic patch document whose
//! `apiVersion`/`kind` names another document of a multi-document config is merged into that
//! document; one without them goes to the first document.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::api::ConfigPatch;

/// Where a set of patches comes from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchSource<'a> {
    ServerClass(&'a str),
    Server(&'a str),
}

impl std::fmt::Display for PatchSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchSource::ServerClass(name) => write!(f, "ServerClass {name}"),
            PatchSource::Server(name) => write!(f, "Server {name}"),
        }
    }
}

/// The patches of one resource.
#[derive(Clone, Copy, Debug)]
pub struct Patches<'a> {
    pub source: PatchSource<'a>,
    pub config_patches: &'a [ConfigPatch],
    pub strategic_patches: &'a [String],
}

#[derive(Debug, Error, PartialEq)]
pub enum PatchError {
    #[error("the bootstrap data is not YAML: {0}; check the bootstrap provider's output")]
    Config(String),
    #[error("the bootstrap data has no YAML document to patch")]
    Empty,
    #[error("{origin}: configPatches[{index}] ({op} {path}) cannot be applied: {reason}")]
    JsonPatch {
        origin: String,
        index: usize,
        op: String,
        path: String,
        reason: String,
    },
    #[error("{origin}: strategicPatches[{index}] is not a YAML map: {reason}")]
    Strategic {
        origin: String,
        index: usize,
        reason: String,
    },
    #[error("the patched config cannot be written as YAML: {0}")]
    Serialize(String),
}

/// Applies `sets` (ServerClass first, then Server) to `config`; see the module docs for the
/// order and the merge rules.
pub fn patch_config(config: &str, sets: &[Patches<'_>]) -> Result<String, PatchError> {
    let any = sets
        .iter()
        .any(|s| !s.config_patches.is_empty() || !s.strategic_patches.is_empty());
    if !any {
        return Ok(config.to_owned());
    }
    let mut documents: Vec<Value> =
        serde_saphyr::from_multiple(config).map_err(|e| PatchError::Config(e.to_string()))?;
    documents.retain(|d| !d.is_null());
    if documents.is_empty() {
        return Err(PatchError::Empty);
    }

    for set in sets {
        for (index, patch) in set.config_patches.iter().enumerate() {
            let operation = serde_json::to_value(patch).expect("ConfigPatch serializes");
            let failed = |reason: String| PatchError::JsonPatch {
                origin: set.source.to_string(),
                index,
                op: operation["op"].as_str().unwrap_or_default().to_owned(),
                path: patch.path.clone(),
                reason,
            };
            let parsed: json_patch::Patch =
                serde_json::from_value(Value::Array(vec![operation.clone()]))
                    .map_err(|e| failed(e.to_string()))?;
            json_patch::patch(&mut documents[0], &parsed).map_err(|e| failed(e.to_string()))?;
        }
    }
    for set in sets {
        for (index, raw) in set.strategic_patches.iter().enumerate() {
            let failed = |reason: String| PatchError::Strategic {
                origin: set.source.to_string(),
                index,
                reason,
            };
            let patch_documents: Vec<Value> =
                serde_saphyr::from_multiple(raw).map_err(|e| failed(e.to_string()))?;
            for patch in patch_documents.into_iter().filter(|d| !d.is_null()) {
                if !patch.is_object() {
                    return Err(failed(format!("found {}", kind(&patch))));
                }
                let target = target_document(&documents, &patch);
                merge(&mut documents[target], patch);
            }
        }
    }
    let mut out = String::new();
    for (index, document) in documents.iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        let text =
            serde_saphyr::to_string(document).map_err(|e| PatchError::Serialize(e.to_string()))?;
        out.push_str(&text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// The document a strategic patch applies to: the one whose `apiVersion` and `kind` it names
/// (and `name`, for named documents), else the first.
fn target_document(documents: &[Value], patch: &Value) -> usize {
    let key = |v: &Value| {
        (
            v.get("apiVersion").cloned(),
            v.get("kind").cloned(),
            v.get("name").cloned(),
        )
    };
    if patch.get("kind").is_none() {
        return 0;
    }
    let wanted = key(patch);
    documents.iter().position(|d| key(d) == wanted).unwrap_or(0)
}

/// Talos-style strategic merge of `patch` into `target`.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => merge_maps(target, patch),
        (Value::Array(target), Value::Array(patch)) => target.extend(patch),
        (target, patch) => *target = patch,
    }
}

fn merge_maps(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if is_delete(&value) {
            target.remove(&key);
            continue;
        }
        match target.get_mut(&key) {
            Some(existing) => merge(existing, value),
            None => {
                target.insert(key, value);
            }
        }
    }
}

fn is_delete(value: &Value) -> bool {
    value.get("$patch").and_then(Value::as_str) == Some("delete")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchOp;
    use serde_json::json;

    const CONFIG: &str = "\
version: v1alpha1 # the bootstrap provider's comment
machine:
  type: worker
  install:
    disk: /dev/sda
  certSANs: [10.0.0.1]
cluster:
  clusterName: demo
";

    fn op(op: PatchOp, path: &str, value: Option<Value>) -> ConfigPatch {
        ConfigPatch {
            op,
            path: path.to_owned(),
            value,
        }
    }

    fn parse(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(yaml).expect("valid YAML")
    }

    #[test]
    fn without_patches_the_config_is_returned_byte_for_byte() {
        let out = patch_config(
            CONFIG,
            &[Patches {
                source: PatchSource::Server("s1"),
                config_patches: &[],
                strategic_patches: &[],
            }],
        )
        .expect("no patches");
        assert_eq!(out, CONFIG);
    }

    #[test]
    fn class_then_server_json_patches_then_strategic_patches() {
        let class_ops = [
            op(
                PatchOp::Replace,
                "/machine/install/disk",
                Some(json!("/dev/nvme0n1")),
            ),
            op(
                PatchOp::Add,
                "/machine/kubelet",
                Some(json!({"extraArgs": {"a": "class"}})),
            ),
        ];
        // The server's patch sees the class's result: it replaces what the class added.
        let server_ops = [op(
            PatchOp::Replace,
            "/machine/kubelet/extraArgs/a",
            Some(json!("server")),
        )];
        let class_strategic = [
            "machine:\n  certSANs: [10.0.0.2]\n  network:\n    hostname: from-class\n".to_owned(),
        ];
        let server_strategic =
            ["machine:\n  network:\n    hostname: from-server\ncluster:\n  clusterName: {$patch: delete}\n".to_owned()];
        let out = patch_config(
            CONFIG,
            &[
                Patches {
                    source: PatchSource::ServerClass("c"),
                    config_patches: &class_ops,
                    strategic_patches: &class_strategic,
                },
                Patches {
                    source: PatchSource::Server("s"),
                    config_patches: &server_ops,
                    strategic_patches: &server_strategic,
                },
            ],
        )
        .expect("patches apply");
        assert_eq!(
            parse(&out),
            vec![json!({
                "version": "v1alpha1",
                "machine": {
                    "type": "worker",
                    "install": {"disk": "/dev/nvme0n1"},
                    "certSANs": ["10.0.0.1", "10.0.0.2"],
                    "kubelet": {"extraArgs": {"a": "server"}},
                    "network": {"hostname": "from-server"}
                },
                "cluster": {}
            })]
        );
    }

    #[test]
    fn strategic_patch_naming_a_document_goes_to_that_document() {
        let config = "version: v1alpha1\nmachine: {type: worker}\n---\napiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: a\nenvironment: [X=1]\n";
        let patch = [
            "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: a\nenvironment: [Y=2]\n"
                .to_owned(),
        ];
        let out = patch_config(
            config,
            &[Patches {
                source: PatchSource::Server("s"),
                config_patches: &[],
                strategic_patches: &patch,
            }],
        )
        .expect("applies");
        let documents = parse(&out);
        assert_eq!(documents.len(), 2);
        assert_eq!(
            documents[0],
            json!({"version": "v1alpha1", "machine": {"type": "worker"}})
        );
        assert_eq!(documents[1]["environment"], json!(["X=1", "Y=2"]));
    }

    #[test]
    fn a_failing_patch_names_its_source_index_and_path() {
        let ops = [
            op(PatchOp::Add, "/machine/x", Some(json!(1))),
            op(PatchOp::Remove, "/machine/missing", None),
        ];
        let error = patch_config(
            CONFIG,
            &[Patches {
                source: PatchSource::ServerClass("worker-large"),
                config_patches: &ops,
                strategic_patches: &[],
            }],
        )
        .expect_err("removing a missing path fails");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "ServerClass worker-large: configPatches[1] (remove /machine/missing)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_strategic_patch_that_is_not_a_map_is_refused() {
        let error = patch_config(
            CONFIG,
            &[Patches {
                source: PatchSource::Server("s"),
                config_patches: &[],
                strategic_patches: &["[1, 2]".to_owned()],
            }],
        )
        .expect_err("a list is not a patch");
        assert_eq!(
            error,
            PatchError::Strategic {
                origin: "Server s".into(),
                index: 0,
                reason: "found a list".into()
            }
        );
    }

    #[test]
    fn bootstrap_data_that_is_not_yaml_is_an_error() {
        let error = patch_config(
            "machine: [unclosed",
            &[Patches {
                source: PatchSource::Server("s"),
                config_patches: &[op(PatchOp::Add, "/a", Some(json!(1)))],
                strategic_patches: &[],
            }],
        )
        .expect_err("not YAML");
        assert!(matches!(error, PatchError::Config(_)), "{error:?}");
    }
}
