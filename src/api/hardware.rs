//! Hardware inventory as Sidero v1alpha2 records it in `Server.spec.hardware` and as ServerClass
//! qualifiers match it: the discovery agent fills it from SMBIOS, sysfs and netlink.
//!
//! Every field is optional because a qualifier names only the fields it wants to match, and
//! because real firmware leaves many SMBIOS strings empty.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything the discovery agent learned about a server's hardware.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HardwareInformation {
    /// SMBIOS system (type 1) information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemInformation>,
    /// Processors (SMBIOS type 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeInformation>,
    /// Memory modules (SMBIOS type 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryInformation>,
    /// Block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageInformation>,
    /// Network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInformation>,
    // Siderite additions (Sidero has no such fields; they sit beside its own).
    /// BIOS information (SMBIOS type 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<BiosInformation>,
    /// Baseboard information (SMBIOS type 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseboard: Option<BaseboardInformation>,
    /// Chassis information (SMBIOS type 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis: Option<ChassisInformation>,
    /// PCI devices, so that GPUs and other accelerators are visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciInformation>,
}

/// SMBIOS BIOS information (type 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BiosInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Release date as the firmware writes it, usually `MM/DD/YYYY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_date: Option<String>,
}

/// SMBIOS baseboard information (type 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseboardInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
}

/// SMBIOS chassis information (type 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChassisInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Chassis type as SMBIOS names it, e.g. `Rack Mount Chassis`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku_number: Option<String>,
}

/// PCI devices present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PciInformation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<PciDevice>,
}

/// One PCI function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PciDevice {
    /// Bus address, e.g. `0000:00:03.0`.
    pub address: String,
    /// Vendor ID as four lowercase hex digits, e.g. `10de` (NVIDIA).
    pub vendor_id: String,
    /// Device ID as four lowercase hex digits.
    pub device_id: String,
    /// Class code as six lowercase hex digits (class, subclass, programming interface).
    pub class: String,
    /// Class name for the class code, e.g. `Display controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem_vendor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem_device_id: Option<String>,
    /// Kernel driver bound to the device, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// SMBIOS system information (type 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemInformation {
    /// SMBIOS UUID; a discovered Server is named by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// Processor totals and the list of sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_core_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_thread_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processors: Vec<Processor>,
    /// Siderite addition: CPU architecture as the kernel names it, e.g. `x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Siderite addition: CPU feature flags from `/proc/cpuinfo`, e.g. `avx2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// One processor socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Processor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// SMBIOS processor version, e.g. `AMD EPYC 7543 32-Core Processor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Current speed in MHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_count: Option<u32>,
}

/// Memory totals and the list of modules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryInformation {
    /// Total installed memory as text, e.g. `64 GB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<MemoryModule>,
    /// Siderite addition: total installed memory in bytes (SMBIOS modules, else the kernel's
    /// view of RAM when the firmware lists no modules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_bytes: Option<u64>,
}

/// One memory module.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryModule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Memory type, e.g. `DDR4`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Size in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Speed in MT/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<u32>,
    /// Siderite addition: slot label, e.g. `DIMM 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<String>,
}

/// Storage totals and the list of block devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageInformation {
    /// Total capacity as text, e.g. `1.92 TB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<StorageDevice>,
    /// Siderite addition: total capacity in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_bytes: Option<u64>,
}

/// One block device. Sidero names the model `productName` and the serial `serialNumber` on the
/// wire; the Rust names follow its Go field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageDevice {
    /// Device type: `NVME`, `SSD`, `HDD` (Sidero's values) or `VIRTIO` (a virtual disk).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Device model.
    #[serde(
        rename = "productName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub model: Option<String>,
    /// Device serial number.
    #[serde(
        rename = "serialNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub serial: Option<String>,
    /// Kernel name, e.g. `sda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Device path, e.g. `/dev/sda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// World Wide Identifier (the WWN of SCSI/SATA disks, the EUI/NGUID of NVMe namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwid: Option<String>,
    /// Siderite addition: spinning disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Siderite addition: removable media (USB sticks, card readers); never wiped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removable: Option<bool>,
    /// Siderite addition: read-only device; never wiped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Network interface count and the list of interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<NetworkInterface>,
}

/// One network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// Kernel interface index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Interface name, e.g. `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Interface flags as text, e.g. `up|broadcast|multicast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Hardware address, e.g. `52:54:00:12:34:56`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Addresses in CIDR form, e.g. `192.168.1.10/24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Siderite addition: kernel driver, e.g. `virtio_net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Siderite addition: link speed in Mbit/s when the link is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    /// Siderite addition: the NIC sees a carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<bool>,
    /// Siderite addition: PCI address of the NIC, e.g. `0000:00:03.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
}
