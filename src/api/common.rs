//! Small types shared by several kinds: Cluster API conditions, config patches, boot-from-disk
//! methods, and the serde/schemars helpers that keep their wire form identical to Sidero's.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Cluster API (v1beta1) condition, the form Sidero writes into `status.conditions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`, `PXEBooted`, `PowerCycle`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// How bad a `False` condition is; empty when the condition is `True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<ConditionSeverity>,
    /// When the condition last changed status.
    pub last_transition_time: Time,
    /// One CamelCase word saying why the condition last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail about the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Status of a condition, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Severity of a `False` Cluster API condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionSeverity {
    Error,
    Warning,
    Info,
}

/// One JSON-Patch (RFC 6902) operation applied to the machine configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigPatch {
    /// Patch operation.
    pub op: PatchOp,
    /// JSON pointer to the patched location, e.g. `/machine/install/disk`.
    pub path: String,
    /// Value for `add`, `replace` and `test`; any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub value: Option<serde_json::Value>,
}

/// The RFC 6902 operations; Sidero's webhook accepted exactly these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
    Copy,
    Move,
    Test,
}

/// How an allocated, installed server is told to boot from its disk instead of the network:
/// `ipxe-exit` answers with an iPXE script that runs `exit` (the firmware tries the next boot
/// device), `http-404` answers the iPXE request with HTTP 404, and `ipxe-sanboot` answers with
/// an iPXE script that runs `sanboot` on the first disk.
// No doc comments on the variants: schemars would turn them into a `oneOf`, and the CRD field
// would lose its own description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BootFromDiskMethod {
    #[serde(rename = "ipxe-exit")]
    IpxeExit,
    #[serde(rename = "http-404")]
    Http404,
    #[serde(rename = "ipxe-sanboot")]
    IpxeSanboot,
}

/// Schema for a field that holds any JSON value: the API server keeps it as written.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// `skip_serializing_if` helper for Go's `bool` + `omitempty`.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
