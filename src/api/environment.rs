//! `Environment` (metal.sidero.dev/v1alpha2): the kernel, initramfs and kernel arguments a server
//! netboots once it is allocated. Field names follow Sidero's `environment_types.go`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::ConditionStatus;

/// Desired state of an Environment.
// clippy takes the repeated keys of kube's `printcolumn(...)` lists for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "metal.sidero.dev",
    version = "v1alpha2",
    kind = "Environment",
    status = "EnvironmentStatus",
    derive = "PartialEq",
    doc = "A netboot environment: kernel, initramfs and kernel arguments.",
    printcolumn(
        name = "Kernel",
        type_ = "string",
        json_path = ".spec.kernel.url",
        description = "the kernel for the environment"
    ),
    printcolumn(
        name = "Initrd",
        type_ = "string",
        json_path = ".spec.initrd.url",
        description = "the initrd for the environment"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "indicates the readiness of the environment"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Kernel image and its command line.
    #[serde(default)]
    pub kernel: Kernel,
    /// Initial ramdisk.
    #[serde(default)]
    pub initrd: Initrd,
}

/// A kernel image and its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Kernel {
    /// Where to download the kernel from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Expected SHA-512 of the download, hex-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Kernel command-line arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// An initial ramdisk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Initrd {
    /// Where to download the initramfs from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Expected SHA-512 of the download, hex-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

/// Observed state of an Environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// One condition per asset; the Environment is ready when every asset URL is `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<AssetCondition>,
}

/// The state of one downloaded asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetCondition {
    /// URL of the asset this condition is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// SHA-512 the asset was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// Condition type; `Ready` once the asset is downloaded and verified.
    #[serde(rename = "type")]
    pub type_: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidero_environment_round_trips_unchanged() {
        let yaml = r#"apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {name: default}
spec:
  kernel:
    url: https://github.com/siderolabs/talos/releases/download/v1.7.0/vmlinuz-amd64
    sha512: ""
    args: [console=tty0, console=ttyS0, talos.platform=metal]
  initrd:
    url: https://github.com/siderolabs/talos/releases/download/v1.7.0/initramfs-amd64.xz
status:
  conditions:
  - url: https://github.com/siderolabs/talos/releases/download/v1.7.0/vmlinuz-amd64
    status: "True"
    type: Ready
"#;
        let original: serde_json::Value = serde_saphyr::from_str(yaml).expect("valid YAML");
        let environment: Environment = serde_saphyr::from_str(yaml).expect("valid Environment");

        assert_eq!(
            serde_json::to_value(&environment).expect("serializes"),
            original
        );
        assert_eq!(
            environment.status.expect("status present").conditions[0].status,
            ConditionStatus::True
        );
    }

    #[test]
    fn empty_spec_serializes_kernel_and_initrd_like_sidero() {
        let value = serde_json::to_value(EnvironmentSpec::default()).expect("serializes");
        assert_eq!(value, serde_json::json!({"kernel": {}, "initrd": {}}));
    }
}
