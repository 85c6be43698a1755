//! Behaviour particular to the built-in kinds: Secret `stringData`, Namespace defaults, the
//! `events.k8s.io/v1` view of core Events, and the status the server keeps on CRDs.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::apiserver::status::StatusCause;

/// Secrets: fold `stringData` into base64 `data` (as kube-apiserver does on write) and default
/// `type` to `Opaque`.
pub fn normalize_secret(secret: &mut Value) {
    if let Some(Value::Object(strings)) =
        secret.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        let data = secret
            .as_object_mut()
            .map(|o| o.entry("data").or_insert_with(|| Value::Object(Map::new())));
        if let Some(Value::Object(data)) = data {
            for (k, v) in strings {
                let text = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                data.insert(
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
    if secret
        .get("type")
        .is_none_or(|t| t.as_str().is_none_or(str::is_empty))
    {
        secret["type"] = json!("Opaque");
    }
}

/// Secrets: every `data` value must be valid base64.
pub fn validate_secret(secret: &Value) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        let ok = v
            .as_str()
            .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
        if !ok {
            causes.push(StatusCause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {v}: must be base64-encoded"),
                field: format!("data[{k}]"),
            });
        }
    }
    causes
}

/// Namespaces: the `kubernetes` finalizer (always, as kube-apiserver ensures it: it is what makes
/// the namespace wait for its contents to be deleted) and phase `Active` on creation.
pub fn init_namespace(ns: &mut Value) {
    let mut finalizers: Vec<Value> = ns["spec"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == "kubernetes") {
        finalizers.push(json!("kubernetes"));
    }
    if !ns["spec"].is_object() {
        ns["spec"] = json!({});
    }
    ns["spec"]["finalizers"] = Value::Array(finalizers);
    ns["status"] = json!({"phase": "Active"});
}

/// Field renames between the core/v1 Event (storage) and the events.k8s.io/v1 Event (view).
const EVENT_RENAMES: [(&str, &str); 6] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn event_to_v1(mut core: Value) -> Value {
    if let Some(o) = core.as_object_mut() {
        for (from, to) in EVENT_RENAMES {
            if let Some(v) = o.remove(from) {
                o.insert(to.into(), v);
            }
        }
        if let Some(v) = o.remove("reportingComponent") {
            o.insert("reportingController".into(), v);
        }
        o.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    }
    core
}

/// events.k8s.io/v1 Event → core/v1 Event (storage form).
pub fn event_from_v1(mut v1: Value) -> Value {
    if let Some(o) = v1.as_object_mut() {
        for (to, from) in EVENT_RENAMES {
            if let Some(v) = o.remove(from) {
                o.insert(to.into(), v);
            }
        }
        if let Some(v) = o.remove("reportingController") {
            o.insert("reportingComponent".into(), v);
        }
        o.insert("apiVersion".into(), json!("v1"));
    }
    v1
}

/// CRDs: the checks kube-apiserver makes before accepting one, in its wording.
pub fn validate_crd(crd: &Value) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let mut invalid = |field: &str, message: String| {
        causes.push(StatusCause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        })
    };
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() || !group.contains('.') {
        invalid(
            "spec.group",
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        );
    }
    if plural.is_empty() || spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        invalid(
            "spec.names",
            "Required value: plural and kind are required".into(),
        );
    }
    if name != format!("{plural}.{group}") {
        invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        );
    }
    match spec["scope"].as_str() {
        Some("Cluster" | "Namespaced") => {}
        other => invalid(
            "spec.scope",
            format!(
                "Unsupported value: \"{}\": supported values: \"Cluster\", \"Namespaced\"",
                other.unwrap_or_default()
            ),
        ),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        );
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if !versions.is_empty() && storage != 1 {
        invalid(
            "spec.versions",
            format!(
                "Invalid value: must have exactly one version marked as storage version, status.storedVersions[{storage}]"
            ),
        );
    }
    for (i, v) in versions.iter().enumerate() {
        let schema = &v["schema"]["openAPIV3Schema"];
        if !schema.is_object() {
            causes.push(StatusCause {
                reason: "FieldValueRequired".into(),
                message: "Required value: schemas are required".into(),
                field: format!("spec.versions[{i}].schema.openAPIV3Schema"),
            });
            continue;
        }
        for e in crate::apiserver::schema::structural_errors(schema) {
            causes.push(StatusCause {
                reason: "FieldValueInvalid".into(),
                message: e,
                field: format!("spec.versions[{i}].schema.openAPIV3Schema"),
            });
        }
    }
    causes
}

/// CRDs: the status kube-apiserver reports once names are accepted and the CRD is served.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd["spec"]["names"].clone();
    let mut accepted = names.clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!(
            "{}List",
            names["kind"].as_str().unwrap_or_default()
        ));
    }
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    // Keep transition times stable so that rewriting an unchanged CRD is a no-op.
    let since = |t: &str| {
        crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t && c["status"] == "True")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_owned()
    };
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": since("NamesAccepted"),
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": since("Established"),
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_becomes_base64_data() {
        let mut s = json!({"stringData": {"user": "admin"}, "data": {"pass": "cGFzcw=="}});
        normalize_secret(&mut s);
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert_eq!(s["data"]["pass"], "cGFzcw==");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
        assert!(validate_secret(&s).is_empty());
        assert_eq!(
            validate_secret(&json!({"data": {"k": "%%%"}}))[0].field,
            "data[k]"
        );
    }

    #[test]
    fn namespaces_always_get_the_kubernetes_finalizer() {
        for spec in [
            json!(null),
            json!({}),
            json!({"finalizers": []}),
            json!({"finalizers": ["x"]}),
        ] {
            let mut ns = json!({"metadata": {"name": "a"}, "spec": spec});
            init_namespace(&mut ns);
            assert!(
                ns["spec"]["finalizers"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("kubernetes"))
            );
            assert_eq!(ns["status"]["phase"], "Active");
        }
    }

    #[test]
    fn events_round_trip_between_views() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "s"},
                          "message": "wiped", "reason": "Clean", "count": 2, "reportingComponent": "siderite"});
        let v1 = event_to_v1(core.clone());
        assert_eq!(v1["regarding"]["name"], "s");
        assert_eq!(v1["note"], "wiped");
        assert_eq!(v1["deprecatedCount"], 2);
        assert_eq!(v1["reportingController"], "siderite");
        assert_eq!(event_from_v1(v1), core);
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let crd = json!({"metadata": {"name": "wrong.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        let causes = validate_crd(&crd);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "metadata.name");
        let status = crd_status(&crd, "2026-01-01T00:00:00Z");
        assert_eq!(status["acceptedNames"]["listKind"], "ThingList");
        assert_eq!(status["conditions"][1]["type"], "Established");
    }
}
