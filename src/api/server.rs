//! `Server` (metal.sidero.dev/v1alpha2): one bare-metal machine, its inventory, BMC access and
//! pool state. Field names follow Sidero's `server_types.go`.

use k8s_openapi::api::core::v1::{NodeAddress, ObjectReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BootFromDiskMethod, Condition, ConfigPatch, is_false};
use super::hardware::HardwareInformation;

/// Desired state of a Server.
// clippy takes the repeated keys of kube's `printcolumn(...)` lists for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metal.sidero.dev",
    version = "v1alpha2",
    kind = "Server",
    status = "ServerStatus",
    derive = "PartialEq",
    doc = "A bare-metal server known to Siderite, named by its SMBIOS UUID.",
    printcolumn(
        name = "Hostname",
        type_ = "string",
        json_path = ".spec.hostname",
        description = "server hostname"
    ),
    printcolumn(
        name = "BMC IP",
        type_ = "string",
        json_path = ".spec.bmc.endpoint",
        description = "BMC IP"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "boolean",
        json_path = ".spec.accepted",
        description = "indicates if the server is accepted"
    ),
    printcolumn(
        name = "Cordoned",
        type_ = "boolean",
        json_path = ".spec.cordoned",
        description = "indicates if the server is cordoned"
    ),
    printcolumn(
        name = "Allocated",
        type_ = "boolean",
        json_path = ".status.inUse",
        description = "indicates that the server has been allocated"
    ),
    printcolumn(
        name = "Clean",
        type_ = "boolean",
        json_path = ".status.isClean",
        description = "indicates if the server is clean or not"
    ),
    printcolumn(
        name = "Power",
        type_ = "string",
        json_path = ".status.power",
        description = "display the current power status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Environment to netboot; overrides the ServerClass's and the `default` one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_ref: Option<ObjectReference>,
    /// Hardware inventory reported by the discovery agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareInformation>,
    /// Hostname to give the installed node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How to reach the BMC for power control (IPMI or Redfish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Bmc>,
    /// How to control power through a plain HTTP API instead of a BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_api: Option<ManagementApi>,
    /// JSON patches applied to the machine configuration of this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<ConfigPatch>,
    /// Talos machine configuration strategic merge patches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strategic_patches: Vec<String>,
    /// An operator admitted the server to the pool; until then it stays in discovery.
    #[serde(default)]
    pub accepted: bool,
    /// Keep the server out of allocation without removing it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cordoned: bool,
    /// Netboot the Environment on every boot instead of booting from disk once installed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pxe_boot_always: bool,
    /// How to make iPXE fall through to the disk; unset means the appliance default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_from_disk_method: Option<BootFromDiskMethod>,
    /// Boot mode to request from the BMC for a one-time PXE boot; unset means the appliance default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxe_mode: Option<PxeMode>,
    /// Siderite addition: how the discovery agent wipes this server's disks; unset means the
    /// appliance default (`--wipe-mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_mode: Option<super::agent::WipeMode>,
}

/// How to reach a server's BMC: IPMI over LAN (`lanplus`, Sidero's only kind) or Redfish.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bmc {
    /// BMC address (IP or host name). For Redfish also `host:port` or a URL
    /// (`https://bmc-1/redfish/v1/Systems/1`) whose path names the ComputerSystem to control.
    pub endpoint: String,
    /// BMC port; 623 (IPMI) or 443 (Redfish over HTTPS) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// BMC user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Secret holding the user name; not to be combined with `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_from: Option<CredentialSource>,
    /// BMC password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// Secret holding the password; not to be combined with `pass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_from: Option<CredentialSource>,
    /// `lanplus` (IPMI v2.0 over LAN) or `redfish`; unset means `redfish` when the endpoint is
    /// an `http(s)://` URL and `lanplus` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Siderite: how a Redfish client proves who it is; unset means a Redfish session when the
    /// BMC offers a SessionService, else HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redfish_auth: Option<RedfishAuth>,
    /// Siderite: which certificates a Redfish client trusts; unset means the usual public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BmcTls>,
}

/// Siderite: how a Redfish client authenticates; unset means a session when the BMC offers a
/// SessionService, else HTTP basic authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedfishAuth {
    /// Log in once (`POST SessionService/Sessions`) and send `X-Auth-Token`.
    Session,
    /// Send the user and password with every request.
    Basic,
}

/// TLS trust for a BMC's HTTPS endpoint. BMCs mostly carry self-signed certificates or ones
/// from a private CA, so the trust is set per server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BmcTls {
    /// PEM certificates of the CA(s) that issued the BMC's certificate; when set, only these
    /// are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Accept any certificate (no verification at all); not to be combined with `caCert`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_verify: bool,
}

/// Where to read a credential from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSource {
    /// A key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// One key of one Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret's data.
    pub key: String,
}

/// Power control through a simple HTTP API (used by test rigs and VMs without a BMC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagementApi {
    /// `host:port` of the power API (Sidero's form, spoken over plain HTTP), or a base URL.
    pub endpoint: String,
}

/// Firmware boot mode for a BMC-requested PXE boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PxeMode {
    Bios,
    Uefi,
}

/// Server condition: the allocated server's OS is installed, so it boots from disk (unless
/// `pxeBootAlways`). Reasons: `Delivered` (kernel, initramfs and bootstrap data were all
/// served), `ImageWritten` (the agent wrote and verified the Environment's disk image),
/// `Reported` (the OS phoned home). Cleared when the server is released.
pub const INSTALLED_CONDITION: &str = "Installed";

/// Observed state of a Server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The server is accepted and in use.
    #[serde(default)]
    pub ready: bool,
    /// The server is bound to a MetalMachine.
    #[serde(default)]
    pub in_use: bool,
    /// The server's disks have been wiped since its last use.
    #[serde(default)]
    pub is_clean: bool,
    /// Conditions such as `PXEBooted` and `PowerCycle`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Addresses the server reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Last observed power state: `on`, `off` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Server as Sidero writes it, with every group of fields filled in.
    const SIDERO_SERVER: &str = r#"apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: 4c4c4544-0044-3610-8052-b4c04f4b3232
  creationTimestamp: "2024-05-01T09:00:00Z"
  labels:
    rack: rack-a
spec:
  accepted: true
  cordoned: true
  pxeBootAlways: true
  bootFromDiskMethod: ipxe-sanboot
  pxeMode: uefi
  hostname: worker-1
  environmentRef:
    name: default
  bmc:
    endpoint: 10.0.0.21
    port: 623
    interface: lanplus
    userFrom:
      secretKeyRef: {namespace: default, name: bmc-worker-1, key: user}
    passFrom:
      secretKeyRef: {namespace: default, name: bmc-worker-1, key: pass}
  managementApi:
    endpoint: http://10.0.0.1:8080/power/worker-1
  configPatches:
  - op: replace
    path: /machine/install/disk
    value: /dev/nvme0n1
  - op: add
    path: /machine/network
    value: {hostname: worker-1, interfaces: [{interface: eno1, dhcp: true, mtu: 9000}]}
  - op: remove
    path: /cluster/proxy
  strategicPatches:
  - "machine: {install: {wipe: true}}"
  hardware:
    system:
      uuid: 4c4c4544-0044-3610-8052-b4c04f4b3232
      manufacturer: Dell Inc.
      productName: PowerEdge R6525
      version: "1.0"
      serialNumber: 6D0R2K2
      skuNumber: SKU=0A1B
      family: PowerEdge
    compute:
      totalCoreCount: 64
      totalThreadCount: 128
      processorCount: 2
      processors:
      - manufacturer: Advanced Micro Devices, Inc.
        productName: AMD EPYC 7543 32-Core Processor
        speed: 2800
        coreCount: 32
        threadCount: 64
    memory:
      totalSize: 256 GB
      moduleCount: 8
      modules:
      - manufacturer: Samsung
        productName: M393A4K40DB3-CWE
        serialNumber: "12345678"
        type: DDR4
        size: 32768
        speed: 3200
    storage:
      totalSize: 1.92 TB
      deviceCount: 1
      devices:
      - type: NVME
        size: 1920383410176
        productName: Dell Ent NVMe P5600
        serialNumber: PHAB1234
        name: nvme0n1
        deviceName: /dev/nvme0n1
        uuid: 0f4f2b3e-1b1c-4c3e-9a52-2f0d9e1f7a10
        wwid: eui.01000000000000005cd2e4c5a3b15151
    network:
      interfaceCount: 1
      interfaces:
      - index: 2
        name: eno1
        flags: up|broadcast|multicast
        mtu: 1500
        mac: b0:7b:25:aa:bb:cc
        addresses: [10.0.1.21/24]
status:
  ready: true
  inUse: true
  isClean: false
  power: "on"
  addresses:
  - type: InternalIP
    address: 10.0.1.21
  conditions:
  - type: PXEBooted
    status: "True"
    lastTransitionTime: "2024-05-01T10:00:00Z"
  - type: PowerCycle
    status: "False"
    severity: Warning
    reason: PowerCycleFailed
    message: BMC did not answer
    lastTransitionTime: "2024-05-01T10:05:00Z"
"#;

    #[test]
    fn sidero_server_round_trips_unchanged() {
        let original: serde_json::Value =
            serde_saphyr::from_str(SIDERO_SERVER).expect("valid YAML");
        let server: Server = serde_saphyr::from_str(SIDERO_SERVER).expect("valid Server");

        assert_eq!(serde_json::to_value(&server).expect("serializes"), original);
    }

    #[test]
    fn storage_device_model_and_serial_use_sideros_wire_names() {
        let server: Server = serde_saphyr::from_str(SIDERO_SERVER).expect("valid Server");
        let hardware = server.spec.hardware.expect("hardware present");
        let device = &hardware.storage.expect("storage present").devices[0];

        assert_eq!(device.model.as_deref(), Some("Dell Ent NVMe P5600"));
        assert_eq!(device.serial.as_deref(), Some("PHAB1234"));
        assert_eq!(device.size, Some(1_920_383_410_176));
    }

    #[test]
    fn config_patch_value_keeps_any_json() {
        let server: Server = serde_saphyr::from_str(SIDERO_SERVER).expect("valid Server");
        let patches = &server.spec.config_patches;

        assert_eq!(patches[0].op, crate::api::PatchOp::Replace);
        assert_eq!(
            patches[1]
                .value
                .as_ref()
                .and_then(|v| v.pointer("/interfaces/0/mtu")),
            Some(&serde_json::json!(9000))
        );
        assert_eq!(patches[2].value, None);
    }

    #[test]
    fn accepted_and_status_flags_are_always_serialized_like_sidero() {
        let server = Server {
            status: Some(ServerStatus::default()),
            ..Server::new("s1", ServerSpec::default())
        };
        let value = serde_json::to_value(&server).expect("serializes");

        assert_eq!(value["spec"], serde_json::json!({"accepted": false}));
        assert_eq!(
            value["status"],
            serde_json::json!({"ready": false, "inUse": false, "isClean": false})
        );
    }

    #[test]
    fn a_redfish_bmc_with_its_tls_trust_and_auth_round_trips() {
        let yaml = r#"apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {name: s1}
spec:
  accepted: false
  bmc:
    endpoint: https://10.0.0.21/redfish/v1/Systems/System.Embedded.1
    interface: redfish
    redfishAuth: session
    userFrom: {secretKeyRef: {namespace: default, name: bmc, key: user}}
    passFrom: {secretKeyRef: {namespace: default, name: bmc, key: pass}}
    tls:
      caCert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
"#;
        let original: serde_json::Value = serde_saphyr::from_str(yaml).expect("valid YAML");
        let server: Server = serde_saphyr::from_str(yaml).expect("valid Server");
        let bmc = server.spec.bmc.as_ref().expect("bmc");
        assert_eq!(bmc.redfish_auth, Some(RedfishAuth::Session));
        let tls = bmc.tls.as_ref().expect("tls");
        assert!(
            tls.ca_cert
                .as_deref()
                .is_some_and(|c| c.starts_with("-----BEGIN"))
        );
        assert!(!tls.insecure_skip_verify);
        assert_eq!(serde_json::to_value(&server).expect("serializes"), original);
    }

    #[test]
    fn unknown_boot_from_disk_method_is_rejected() {
        let result: Result<Server, _> = serde_json::from_value(serde_json::json!({
            "apiVersion": "metal.sidero.dev/v1alpha2",
            "kind": "Server",
            "metadata": {"name": "s1"},
            "spec": {"bootFromDiskMethod": "floppy"}
        }));

        assert!(result.is_err());
    }
}
