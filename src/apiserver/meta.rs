//! Object-metadata rules shared by every kind: name validation, `generateName`, which fields the
//! server owns, and when `metadata.generation` moves. Pure functions over JSON.

use serde_json::{Map, Value};

use crate::apiserver::status::StatusCause;

/// Fields of `metadata` only the server may set; client values are replaced by the stored ones.
pub const SYSTEM_FIELDS: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
];

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Validates an object name: namespaces must be DNS-1123 labels, everything else DNS-1123
/// subdomains (what kube-apiserver demands of CRs, Secrets and ConfigMaps).
pub fn validate_name(name: &str, label_only: bool) -> Option<StatusCause> {
    let (ok, msg, max) = if label_only {
        (is_label(name), LABEL_MSG, 63)
    } else {
        (is_subdomain(name), SUBDOMAIN_MSG, 253)
    };
    if ok {
        return None;
    }
    let message = if name.len() > max {
        format!("Invalid value: \"{name}\": must be no more than {max} characters")
    } else {
        format!("Invalid value: \"{name}\": {msg}")
    };
    Some(StatusCause {
        reason: "FieldValueInvalid".into(),
        message,
        field: "metadata.name".into(),
    })
}

/// A label name or value part: at most 63 characters, alphanumerics with `-`, `_`, `.` inside.
fn is_qualified_part(s: &str) -> bool {
    let ok_inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(ok_inner)
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Validates one label, returning kube-apiserver's message for the first problem.
pub fn validate_label(key: &str, value: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_subdomain(p)) {
        return Some(format!(
            "Invalid value: \"{key}\": prefix part {SUBDOMAIN_MSG}"
        ));
    }
    if !is_qualified_part(name) {
        return Some(format!(
            "Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') and be no more than 63 characters"
        ));
    }
    if !value.is_empty() && !is_qualified_part(value) {
        return Some(format!(
            "Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?') and be no more than 63 characters"
        ));
    }
    None
}

/// Alphabet of generated name suffixes (kube's: no vowels, no confusable digits).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` plus five characters picked by `random` (one value per character).
pub fn generated_name(prefix: &str, random: [u8; 5]) -> String {
    // Like kube, cut the prefix so that the result stays within 63 characters.
    let prefix: String = prefix.chars().take(58).collect();
    let suffix: String = random
        .iter()
        .map(|r| SUFFIX_ALPHABET[*r as usize % SUFFIX_ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Whether anything outside `metadata` (and `status`, when it is a subresource) differs, which
/// is what moves `metadata.generation`.
pub fn spec_changed(old: &Value, new: &Value, status_subresource: bool) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if status_subresource {
            m.remove("status");
        }
        m
    };
    strip(old) != strip(new)
}

/// The `metadata` map of an object, created if missing or not a map.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Copies the server-owned metadata of `old` into `new` (dropping whatever the client sent).
pub fn keep_system_fields(old: &Value, new: &mut Value) {
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let meta = metadata_mut(new);
    for f in SYSTEM_FIELDS {
        match old_meta.get(f) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_dns_1123_rules() {
        assert!(validate_name("0123abcd-ef00-4bcd-8abc-0123456789ab", false).is_none());
        assert!(validate_name("worker.large", false).is_none());
        let bad = validate_name("Bad_Name", false).unwrap();
        assert_eq!(bad.field, "metadata.name");
        assert!(bad.message.contains("RFC 1123 subdomain"));
        assert!(
            validate_name("a.b", true).is_some(),
            "namespaces take labels only"
        );
        assert!(
            validate_name(&"a".repeat(254), false)
                .unwrap()
                .message
                .contains("253")
        );
        assert!(validate_name("-a", false).is_some());
    }

    #[test]
    fn labels_are_validated_like_kube_apiserver() {
        assert_eq!(validate_label("rack", "rack-a"), None);
        assert_eq!(
            validate_label("hardware.siderite.dev/cpu-manufacturer", "AMD"),
            None
        );
        assert_eq!(validate_label("rack", ""), None);
        assert!(
            validate_label("rack", "has space")
                .unwrap()
                .contains("valid label")
        );
        assert!(
            validate_label("Bad_Prefix/x", "v")
                .unwrap()
                .contains("prefix part")
        );
        assert!(
            validate_label(&"k".repeat(64), "v")
                .unwrap()
                .contains("name part")
        );
    }

    #[test]
    fn generated_names_use_kube_alphabet_and_length() {
        let n = generated_name("worker-", [0, 1, 2, 26, 27]);
        assert_eq!(n, "worker-bcd9b");
        assert_eq!(generated_name(&"x".repeat(80), [0; 5]).len(), 63);
    }

    #[test]
    fn generation_moves_on_spec_not_metadata_or_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let labels =
            json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let status = json!({"metadata": {}, "spec": {"x": 1}, "status": {"y": 2}});
        let spec = json!({"metadata": {}, "spec": {"x": 2}, "status": {"y": 1}});
        assert!(!spec_changed(&a, &labels, true));
        assert!(!spec_changed(&a, &status, true));
        assert!(
            spec_changed(&a, &status, false),
            "without a status subresource status is spec"
        );
        assert!(spec_changed(&a, &spec, true));
    }

    #[test]
    fn system_fields_come_from_the_stored_object() {
        let old = json!({"metadata": {"uid": "u1", "creationTimestamp": "t", "generation": 3}});
        let mut new = json!({"metadata": {"uid": "forged", "name": "x"}});
        keep_system_fields(&old, &mut new);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 3);
        assert_eq!(new["metadata"]["name"], "x");
    }
}
