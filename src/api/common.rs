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

impl Condition {
    /// A condition of `type_` that changed at `now`; `True` conditions carry no severity, `False`
    /// ones are `Warning` unless the caller says otherwise.
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        now: Time,
    ) -> Self {
        let message: String = message.into();
        Condition {
            type_: type_.to_owned(),
            status,
            severity: (status == ConditionStatus::False).then_some(ConditionSeverity::Warning),
            last_transition_time: now,
            reason: Some(reason.to_owned()),
            message: (!message.is_empty()).then_some(message),
        }
    }

    /// The same condition with another severity.
    pub fn with_severity(mut self, severity: Option<ConditionSeverity>) -> Self {
        self.severity = severity;
        self
    }
}

/// Puts `new` in place of the condition of its type. The transition time moves only when the
/// status changes, as Kubernetes defines it. Returns whether anything changed, so callers write
/// status only when it did.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn same_status_keeps_the_transition_time_but_takes_the_new_message() {
        let mut conditions = vec![Condition::new(
            "Wiping",
            ConditionStatus::True,
            "InProgress",
            "vda 10%",
            at(100),
        )];
        let changed = set_condition(
            &mut conditions,
            Condition::new(
                "Wiping",
                ConditionStatus::True,
                "InProgress",
                "vda 50%",
                at(200),
            ),
        );
        assert!(changed);
        assert_eq!(conditions[0].last_transition_time, at(100));
        assert_eq!(conditions[0].message.as_deref(), Some("vda 50%"));
    }

    #[test]
    fn status_change_moves_the_transition_time_and_identical_is_no_change() {
        let mut conditions = Vec::new();
        let clean = |t| Condition::new("Clean", ConditionStatus::False, "Dirty", "", at(t));
        assert!(set_condition(&mut conditions, clean(1)));
        assert!(!set_condition(&mut conditions, clean(2)));
        assert_eq!(conditions[0].severity, Some(ConditionSeverity::Warning));
        let now_clean = Condition::new("Clean", ConditionStatus::True, "Wiped", "", at(3));
        assert!(set_condition(&mut conditions, now_clean));
        assert_eq!(conditions[0].last_transition_time, at(3));
        assert_eq!(conditions[0].severity, None);
        assert_eq!(conditions.len(), 1);
    }
}
