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
    /// A disk image to write to the server's disk (Siderite extension). When set, an allocated
    /// server boots the discovery agent, which writes this image and a NoCloud `CIDATA` config
    /// drive, and the server then boots from its disk; `kernel` and `initrd` are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<DiskImage>,
}

/// A disk image (e.g. a kubeadm node image) and how to find the disk it goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskImage {
    /// Where to download the image from (the appliance caches it and serves it to the agent).
    pub url: String,
    /// Expected SHA-512 of the file at `url` (as downloaded, before decompression), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Expected SHA-256 of the file at `url`, hex; used when `sha512` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Image format after decompression.
    #[serde(default)]
    pub format: ImageFormat,
    /// How the file at `url` is compressed.
    #[serde(default)]
    pub compression: ImageCompression,
    /// Which disk receives the image; without hints, the smallest writable, non-removable disk
    /// of at least the image's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,
}

/// Format of a disk image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Written byte for byte.
    #[default]
    Raw,
    /// QEMU copy-on-write v2/v3, converted to raw while it is written.
    Qcow2,
}

/// Compression of a disk image file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageCompression {
    #[default]
    None,
    Gz,
    Xz,
    Zstd,
}

/// Root device hints (the names Ironic/Metal3 operators know); every given hint must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootDeviceHints {
    /// Kernel device name, with or without `/dev/` (e.g. `/dev/sda`, `nvme0n1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The disk's serial number, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The disk's World Wide Name, exactly (e.g. `0x5000c500a1b2c3d4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Smallest acceptable size, in GB (10^9 bytes, as Ironic counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_gigabytes: Option<u64>,
    /// `true`: only spinning disks; `false`: only solid-state disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
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
    /// One condition per asset (kernel, initrd, image); the Environment is ready when every
    /// asset's condition is `Ready` = `True`.
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
    /// One CamelCase word saying why (Siderite extension): `Verified`, `Unverified` (no
    /// checksum given), `Downloading`, `ChecksumMismatch`, `DownloadFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for the operator (e.g. expected and actual checksums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
