//! Wire types of the agent API: what the discovery agent tells the appliance (`/agent/v1/...`)
//! and the directives it gets back. Every request type rejects unknown fields, so a typo or a
//! mismatched agent version fails loudly instead of being half-understood.

use serde::{Deserialize, Serialize};

use super::environment::{ImageCompression, ImageFormat, RootDeviceHints};
use super::hardware::HardwareInformation;

/// Path prefix of every agent API route.
pub const PREFIX: &str = "/agent/v1";

/// Largest request body the appliance reads; an inventory of a large server is ~100 KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Most log lines accepted in one request, and the longest line kept.
pub const MAX_LOG_LINES: usize = 1000;
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// `POST /agent/v1/register`: the machine's identity and inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registration {
    /// SMBIOS system UUID as read from the tables; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smbios_uuid: Option<String>,
    /// MAC of the NIC the machine netbooted from (`siderite.mac=` on the kernel command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mac: Option<String>,
    /// Linux boot id: tells a new boot of the machine from a retried request.
    pub boot_id: String,
    /// Version of the agent, for the operator's log.
    pub agent_version: String,
    /// Everything the agent found.
    pub hardware: HardwareInformation,
    /// What the agent could not read, in words for the operator (e.g. "no SMBIOS tables").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registered {
    /// Name of the Server resource; the agent uses it in every later request.
    pub server: String,
    /// The Server was created by this registration (it did not exist before).
    pub created: bool,
    /// Whether the Server is accepted (informational: directives say what to do).
    pub accepted: bool,
    /// Why the name was derived from the boot MAC instead of the SMBIOS UUID, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_fallback: Option<String>,
    /// Create the `siderite` BMC user over in-band IPMI and report it (`bmc`): asked while
    /// automatic BMC setup is on (`--auto-bmc-setup`) and the Server has no `spec.bmc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_setup: Option<BmcSetup>,
}

/// How to set up the BMC user. The appliance chooses the password: a freshly booted machine
/// may have no entropy for minutes (no RDRAND or hardware RNG, as under QEMU TCG), and a
/// password must not come from a guessable source.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcSetup {
    pub password: String,
}

impl std::fmt::Debug for BmcSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BmcSetup { .. }")
    }
}

/// `POST /agent/v1/servers/{name}/bmc`: the outcome of the in-band BMC setup the appliance
/// asked for in [`Registered::bmc_setup`]. Carries the password back (the appliance keeps no
/// state between the two): never log the body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcReport {
    pub boot_id: String,
    pub result: BmcSetupResult,
}

impl std::fmt::Debug for BmcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcReport")
            .field("boot_id", &self.boot_id)
            .field("result", &self.result)
            .finish()
    }
}

/// What the in-band BMC setup did.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum BmcSetupResult {
    /// The BMC takes IPMI over LAN (lanplus) at `endpoint:port` for `user`, who has
    /// administrator privilege on LAN channel `channel` as user ID `userId`.
    Configured {
        endpoint: String,
        port: u16,
        user: String,
        password: String,
        user_id: u8,
        channel: u8,
    },
    /// The machine has no in-band IPMI interface (no `/dev/ipmi0` after loading ipmi_si).
    NoBmc,
    Failed {
        error: String,
    },
}

impl std::fmt::Debug for BmcSetupResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BmcSetupResult::Configured {
                endpoint,
                port,
                user,
                user_id,
                channel,
                ..
            } => f
                .debug_struct("Configured")
                .field("endpoint", endpoint)
                .field("port", port)
                .field("user", user)
                .field("user_id", user_id)
                .field("channel", channel)
                .finish_non_exhaustive(),
            BmcSetupResult::NoBmc => f.write_str("NoBmc"),
            BmcSetupResult::Failed { error } => {
                f.debug_struct("Failed").field("error", error).finish()
            }
        }
    }
}

/// How to wipe disks.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WipeMode {
    /// Discard where supported, zero the first and last MiB (partition tables, RAID and LVM
    /// signatures live there).
    #[default]
    Fast,
    /// Write zeroes over the whole device.
    Zeroes,
}

impl std::fmt::Display for WipeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WipeMode::Fast => "fast",
            WipeMode::Zeroes => "zeroes",
        })
    }
}

/// `GET /agent/v1/servers/{name}/directive?wait=<seconds>`: what the agent must do next. The
/// appliance holds the request (long poll) while the answer is `wait`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Directive {
    /// Nothing to do yet (not accepted): ask again.
    Wait,
    /// Wipe every writable, non-removable disk, then report with `wiped`.
    Wipe { mode: WipeMode },
    /// Work is done: power the machine off.
    PowerOff,
    /// Reboot (e.g. so that the machine netboots its allocated environment).
    Reboot,
    /// Write a disk image and a NoCloud config drive, then report with `deployed`.
    Deploy {
        image: ImageDeployment,
        config_drive: ConfigDriveSource,
    },
}

/// The image an allocated server's agent writes to its disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageDeployment {
    /// Where the agent downloads the image: the appliance's verified cache, by IP.
    pub url: String,
    /// Checksum of the file at `url` (before decompression).
    pub checksum: ImageChecksum,
    pub format: ImageFormat,
    pub compression: ImageCompression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,
}

/// A hex digest and its algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", content = "hex", rename_all = "lowercase")]
pub enum ImageChecksum {
    Sha256(String),
    Sha512(String),
}

/// Where the agent gets the config drive's files: `url` is a NoCloud seed URL ending in `/`,
/// to which `user-data`, `meta-data`, `vendor-data` and `network-config` are appended (it
/// carries the allocation's token, so it is a secret: never log it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigDriveSource {
    pub url: String,
}

/// `POST /agent/v1/servers/{name}/deployed`: the outcome of a `deploy` directive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployReport {
    pub boot_id: String,
    /// The image URL of the directive this report answers.
    pub url: String,
    pub result: DeployResult,
}

/// What a deployment did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum DeployResult {
    /// The image is on `device` (kernel name), verified by reading it back, and the config
    /// drive is partition `config_drive_partition` of that disk.
    Deployed {
        device: String,
        image_bytes: u64,
        config_drive_partition: u32,
    },
    Failed {
        error: String,
    },
}

/// `POST /agent/v1/servers/{name}/progress`: wipe progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Progress {
    pub boot_id: String,
    /// One entry per disk being wiped.
    pub disks: Vec<DiskProgress>,
}

/// Progress of one disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskProgress {
    /// Kernel name, e.g. `nvme0n1`.
    pub name: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// `POST /agent/v1/servers/{name}/wiped`: the outcome of a wipe, one entry per disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WipeReport {
    pub boot_id: String,
    pub mode: WipeMode,
    pub disks: Vec<DiskOutcome>,
}

/// What happened to one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskOutcome {
    pub name: String,
    pub size_bytes: u64,
    pub result: DiskResult,
}

/// Result of wiping one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase", deny_unknown_fields)]
pub enum DiskResult {
    Wiped,
    /// Not touched on purpose (read-only, removable).
    Skipped {
        reason: String,
    },
    Failed {
        error: String,
    },
}

/// `POST /agent/v1/servers/{name}/addresses`: the machine's current addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addresses {
    pub boot_id: String,
    /// Addresses without prefix length, e.g. `10.77.0.123`.
    pub addresses: Vec<String>,
}

/// `POST /agent/v1/servers/{name}/heartbeat`: the agent is alive and working.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    pub boot_id: String,
    /// What the agent is doing, e.g. `waiting`, `wiping`.
    pub phase: String,
}

/// `POST /agent/v1/servers/{name}/log`: buffered console lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogLines {
    pub boot_id: String,
    pub lines: Vec<String>,
}

/// Body of every 4xx/5xx answer of the agent API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentError {
    /// What was wrong, for the agent's console and the operator.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_tagged_by_action() {
        let wipe = serde_json::to_value(Directive::Wipe {
            mode: WipeMode::Zeroes,
        })
        .expect("serializes");
        assert_eq!(
            wipe,
            serde_json::json!({"action": "wipe", "mode": "zeroes"})
        );
        let off: Directive =
            serde_json::from_str(r#"{"action":"powerOff"}"#).expect("valid directive");
        assert_eq!(off, Directive::PowerOff);
    }

    #[test]
    fn deploy_directive_wire_form() {
        let deploy: Directive = serde_json::from_value(serde_json::json!({
            "action": "deploy",
            "image": {
                "url": "http://10.0.0.1:8081/images/abc",
                "checksum": {"algorithm": "sha256", "hex": "00ff"},
                "format": "qcow2",
                "compression": "zstd",
                "rootDeviceHints": {"serial": "S1", "minSizeGigabytes": 8}
            },
            "configDrive": {"url": "http://10.0.0.1:8081/nocloud/u/t/"}
        }))
        .expect("valid deploy directive");
        let Directive::Deploy { image, .. } = deploy else {
            panic!("not a deploy directive: {deploy:?}");
        };
        assert_eq!(image.checksum, ImageChecksum::Sha256("00ff".into()));
        assert_eq!(image.format, ImageFormat::Qcow2);
        assert_eq!(image.compression, ImageCompression::Zstd);
        let hints = image.root_device_hints.expect("hints present");
        assert_eq!(
            (hints.serial.as_deref(), hints.min_size_gigabytes),
            (Some("S1"), Some(8))
        );
    }

    #[test]
    fn registration_rejects_unknown_fields() {
        let result: Result<Registration, _> = serde_json::from_str(
            r#"{"bootId":"b","agentVersion":"1","hardware":{},"smbiosUUID":"x"}"#,
        );
        let error = result
            .expect_err("unknown field must be rejected")
            .to_string();
        assert!(error.contains("smbiosUUID"), "{error}");
    }

    #[test]
    fn bmc_reports_are_tagged_by_status_and_never_print_the_password() {
        let report: BmcReport = serde_json::from_value(serde_json::json!({
            "bootId": "b",
            "result": {
                "status": "configured",
                "endpoint": "10.77.0.250",
                "port": 623,
                "user": "siderite",
                "password": "s3cret-s3cret-12",
                "userId": 3,
                "channel": 1
            }
        }))
        .expect("valid report");
        assert!(matches!(
            report.result,
            BmcSetupResult::Configured { user_id: 3, .. }
        ));
        assert!(!format!("{report:?}").contains("s3cret"), "{report:?}");
        let none: BmcSetupResult =
            serde_json::from_str(r#"{"status":"noBmc"}"#).expect("valid result");
        assert_eq!(none, BmcSetupResult::NoBmc);
        let registered: Registered =
            serde_json::from_str(r#"{"server":"s","created":true,"accepted":false}"#)
                .expect("answers without bmcSetup");
        assert!(registered.bmc_setup.is_none());
        let asked: Registered = serde_json::from_str(
            r#"{"server":"s","created":true,"accepted":false,"bmcSetup":{"password":"pw"}}"#,
        )
        .expect("answers with bmcSetup");
        assert!(!format!("{asked:?}").contains("pw\""), "{asked:?}");
    }

    #[test]
    fn disk_results_carry_their_reason() {
        let outcome: DiskOutcome = serde_json::from_str(
            r#"{"name":"sr0","sizeBytes":0,"result":{"status":"skipped","reason":"read-only"}}"#,
        )
        .expect("valid outcome");
        assert_eq!(
            outcome.result,
            DiskResult::Skipped {
                reason: "read-only".into()
            }
        );
    }
}
