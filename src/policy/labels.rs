//! Labels derived from a Server's inventory (`hardware.siderite.dev/…`), so that plain label
//! selectors, `kubectl get servers -l`, and `ServerClass.spec.selector` can pick hardware
//! without qualifiers. Values are made valid label values: characters other than
//! `[A-Za-z0-9._-]` become `-`, and they start and end alphanumeric, 63 characters at most.

use std::collections::BTreeMap;

use crate::api::HardwareInformation;

/// The prefix of every derived label; the Server controller owns all labels under it.
pub const PREFIX: &str = "hardware.siderite.dev/";

/// The labels `hardware` implies; a fact the inventory lacks gives no label.
pub fn inventory_labels(hardware: &HardwareInformation) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value.as_deref().and_then(label_value) {
            labels.insert(format!("{PREFIX}{name}"), value);
        }
    };
    let compute = hardware.compute.as_ref();
    put(
        "system-manufacturer",
        hardware
            .system
            .as_ref()
            .and_then(|s| s.manufacturer.clone()),
    );
    put(
        "cpu-manufacturer",
        compute
            .and_then(|c| c.processors.first())
            .and_then(|p| p.manufacturer.clone()),
    );
    put(
        "cores",
        compute
            .and_then(|c| c.total_core_count)
            .map(|n| n.to_string()),
    );
    put("arch", compute.and_then(|c| c.architecture.clone()));
    put(
        "memory-gib",
        hardware
            .memory
            .as_ref()
            .and_then(|m| m.total_size_bytes)
            .map(|b| ((b as f64) / f64::from(1u32 << 30)).round().to_string()),
    );
    labels
}

/// `text` as a label value, or `None` when nothing valid is left.
fn label_value(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len().min(63));
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed: String = out
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(63)
        .collect();
    let trimmed = trimmed.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_maker_cpu_cores_arch_and_memory() {
        let hardware: HardwareInformation = serde_saphyr::from_str(
            r#"
system: {manufacturer: "Dell Inc."}
compute:
  totalCoreCount: 64
  architecture: x86_64
  processors: [{manufacturer: "Advanced Micro Devices, Inc."}]
memory: {totalSizeBytes: 274877906944}
"#,
        )
        .unwrap();
        let labels = inventory_labels(&hardware);
        let get = |k: &str| labels.get(&format!("{PREFIX}{k}")).map(String::as_str);
        assert_eq!(get("system-manufacturer"), Some("Dell-Inc"));
        assert_eq!(get("cpu-manufacturer"), Some("Advanced-Micro-Devices-Inc"));
        assert_eq!(get("cores"), Some("64"));
        assert_eq!(get("arch"), Some("x86_64"));
        assert_eq!(get("memory-gib"), Some("256"));
        assert!(inventory_labels(&HardwareInformation::default()).is_empty());
    }

    #[test]
    fn values_are_valid_label_values() {
        assert_eq!(label_value("  (none)  "), Some("none".into()));
        assert_eq!(label_value("!!!"), None);
        let long = label_value(&format!("{}-x", "a".repeat(62))).unwrap();
        assert_eq!(
            long,
            "a".repeat(62),
            "cut to 63 and trimmed of the dangling '-'"
        );
        assert_eq!(
            label_value("Intel(R) Corporation"),
            Some("Intel-R-Corporation".into())
        );
    }
}
