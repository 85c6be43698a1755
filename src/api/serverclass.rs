//! `ServerClass` (metal.sidero.dev/v1alpha2): a named pool of servers chosen by hardware
//! qualifiers and labels, which Cluster API machines draw from. Field names follow Sidero's
//! `serverclass_types.go`, plus the v1alpha1 qualifier lists that published cluster YAML uses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BootFromDiskMethod, Condition, ConfigPatch};
use super::hardware::{HardwareInformation, SystemInformation};

/// Desired state of a ServerClass.
// clippy takes the repeated keys of kube's `printcolumn(...)` lists for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal.sidero.dev",
    version = "v1alpha2",
    kind = "ServerClass",
    plural = "serverclasses",
    status = "ServerClassStatus",
    derive = "PartialEq",
    doc = "A pool of servers selected by hardware qualifiers and labels.",
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.serversAvailable",
        description = "the number of available servers"
    ),
    printcolumn(
        name = "In Use",
        type_ = "string",
        json_path = ".status.serversInUse",
        description = "the number of servers in use"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerClassSpec {
    /// Environment to netboot servers allocated through this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<ObjectReference>,
    /// Hardware and label qualifiers; empty qualifiers match every server.
    #[serde(default)]
    pub qualifiers: Qualifiers,
    /// Label selector over Servers, ANDed with the qualifiers; empty matches every server.
    #[serde(default)]
    pub selector: LabelSelector,
    /// JSON patches applied to the machine configuration of servers from this class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<ConfigPatch>,
    /// Talos machine configuration strategic merge patches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategic_patches: Vec<String>,
    /// How to make iPXE fall through to the disk for servers from this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_from_disk_method: Option<BootFromDiskMethod>,
}

/// Qualifiers a server must meet. Entries of one list are alternatives; fields within one entry
/// must all match; all non-empty lists must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Qualifiers {
    /// Partial hardware descriptions; a server matches one if every field set in it matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware: Vec<HardwareInformation>,
    /// v1alpha1 form: processor qualifiers, matched against any processor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu: Vec<CpuInformation>,
    /// v1alpha1 form: SMBIOS system qualifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_information: Vec<SystemInformation>,
    /// Label sets; a server matches one if it carries all of its labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_selectors: Vec<BTreeMap<String, String>>,
    /// Siderite addition: requirements over the flattened inventory (keys such as
    /// `compute.totalCoreCount` or `storage.devices[].type`, listed in docs/api.md), all of
    /// which must hold, e.g. `{key: memory.totalSizeGiB, operator: Gte, values: ["256"]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expressions: Vec<QualifierExpression>,
}

/// One requirement over the flattened inventory. For a list key (`…[]…`) it holds when any
/// element satisfies it; `NotIn` and `DoesNotExist` hold when none does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualifierExpression {
    /// A flattened inventory key, e.g. `compute.totalCoreCount`.
    pub key: String,
    /// How the key's values are compared with `values`.
    pub operator: ExpressionOperator,
    /// Operands: one or more for In, NotIn and Matches (regular expressions), exactly one
    /// number for Gt, Gte, Lt and Lte, none for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`QualifierExpression`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExpressionOperator {
    /// A value equals one of `values`.
    #[default]
    In,
    /// No value equals any of `values` (also when the key is absent).
    NotIn,
    /// The key has a value.
    Exists,
    /// The key has no value.
    DoesNotExist,
    /// A value is a number greater than `values[0]`.
    Gt,
    /// A value is a number greater than or equal to `values[0]`.
    Gte,
    /// A value is a number less than `values[0]`.
    Lt,
    /// A value is a number less than or equal to `values[0]`.
    Lte,
    /// A value contains a match of one of the regular expressions in `values`.
    Matches,
}

/// v1alpha1 processor qualifier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuInformation {
    /// Processor manufacturer, e.g. `AMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Processor version (SMBIOS type 4), e.g. `AMD EPYC 7543 32-Core Processor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Observed state of a ServerClass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerClassStatus {
    /// Names of matching servers that are free.
    #[serde(default)]
    pub servers_available: Vec<String>,
    /// Names of matching servers that are allocated.
    #[serde(default)]
    pub servers_in_use: Vec<String>,
    /// Siderite addition: `Valid` says whether the qualifiers compile (an invalid class
    /// matches nothing, and the condition says why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed ServerClass (DESIGN.md), in the v1alpha1 list form published cluster YAML uses.
    const WORKER_LARGE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed/worker-large.yaml"
    ));

    #[test]
    fn legacy_qualifier_form_round_trips_unchanged() {
        let parsed: ServerClass = serde_saphyr::from_str(WORKER_LARGE).expect("valid YAML");
        let original: serde_json::Value = serde_saphyr::from_str(WORKER_LARGE).expect("valid YAML");

        assert_eq!(serde_json::to_value(&parsed).expect("serializes"), original);
        let yaml = serde_saphyr::to_string(&parsed).expect("serializes");
        let reparsed: serde_json::Value = serde_saphyr::from_str(&yaml).expect("valid YAML");
        assert_eq!(reparsed, original);
    }

    #[test]
    fn legacy_qualifier_form_reaches_typed_fields() {
        let parsed: ServerClass = serde_saphyr::from_str(WORKER_LARGE).expect("valid YAML");
        let qualifiers = &parsed.spec.qualifiers;

        assert_eq!(qualifiers.cpu[0].manufacturer.as_deref(), Some("AMD"));
        assert_eq!(qualifiers.cpu[0].version.as_deref(), Some("EPYC.*"));
        assert_eq!(
            qualifiers.system_information[0].manufacturer.as_deref(),
            Some("Dell Inc.")
        );
        let labels = parsed.spec.selector.match_labels.as_ref();
        assert_eq!(
            labels.and_then(|m| m.get("rack")).map(String::as_str),
            Some("rack-a")
        );
    }

    #[test]
    fn missing_qualifiers_and_selector_serialize_as_empty_objects_like_sidero() {
        let parsed: ServerClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "metal.sidero.dev/v1alpha2",
            "kind": "ServerClass",
            "metadata": {"name": "any"},
            "spec": {}
        }))
        .expect("valid ServerClass");

        let spec = serde_json::to_value(&parsed.spec).expect("serializes");
        assert_eq!(spec, serde_json::json!({"qualifiers": {}, "selector": {}}));
    }
}
