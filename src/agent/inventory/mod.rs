//! Hardware inventory of the machine the discovery agent runs on, read from SMBIOS, procfs and
//! sysfs under a root directory (`/` on a server, a recorded fixture in tests).
//!
//! Collection never fails. Whatever is missing, truncated or nonsensical becomes a line in
//! [`Inventory::problems`] and collection carries on: a server whose firmware mangles one SMBIOS
//! string is still worth registering, and the operator reads the problem lines in the agent's
//! log. The only I/O is reading files; nothing here touches the network.
//!
//! Sources, all relative to the root:
//! - `sys/firmware/dmi/tables/{smbios_entry_point,DMI}`: system, BIOS, baseboard, chassis,
//!   processors, memory modules and the SMBIOS UUID (`smbios.rs`).
//! - `proc/cpuinfo`, `proc/meminfo`, `proc/sys/kernel/arch`: CPU flags and architecture, and
//!   the fallbacks when SMBIOS lists no processors or no memory modules (`cpuinfo.rs`).
//! - `sys/block`: disks (`block.rs`); `sys/class/net`: physical Ethernet NICs (`net.rs`);
//!   `sys/bus/pci/devices`: PCI functions (`pci.rs`).
//!
//! Every list is sorted (disks and NICs by name, PCI functions by address, modules and
//! processors in table order) so that two collections of the same machine compare equal.

mod block;
mod cpuinfo;
mod net;
mod pci;
mod smbios;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::api::{
    ComputeInformation, HardwareInformation, MemoryInformation, NetworkInformation, Processor,
};

/// What the agent learned about its machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The hardware inventory as it goes into `Server.spec.hardware`.
    pub hardware: HardwareInformation,
    /// The SMBIOS system UUID in lowercase, formatted as Linux's
    /// `/sys/class/dmi/id/product_uuid` prints it; `None` when the firmware sets none (all
    /// zero or all FF bytes) or has no SMBIOS tables.
    pub smbios_uuid: Option<String>,
    /// Human-readable lines about everything that could not be read or made no sense.
    pub problems: Vec<String>,
}

/// Reads the inventory of the machine whose `/sys` and `/proc` are under `root`.
///
/// `root` is `/` on a real machine and a fixture directory in tests.
pub fn collect(root: &Path) -> Inventory {
    let mut problems = Vec::new();
    let smbios = smbios::read(root, &mut problems);
    let cpu = cpuinfo::read(root, &mut problems);
    let mem_total = cpuinfo::read_mem_total(root, &mut problems);
    let storage = block::read(root, &mut problems);
    let interfaces = net::read(root, &mut problems);
    let pci = pci::read(root, &mut problems);

    let hardware = HardwareInformation {
        system: smbios.system,
        compute: compute_information(smbios.processors, cpu),
        memory: memory_information(smbios.modules, mem_total),
        storage,
        network: interfaces.map(|interfaces| NetworkInformation {
            interface_count: Some(count(interfaces.len())),
            interfaces,
        }),
        bios: smbios.bios,
        baseboard: smbios.baseboard,
        chassis: smbios.chassis,
        pci,
    };
    Inventory {
        hardware,
        smbios_uuid: smbios.uuid,
        problems,
    }
}

/// Adds addresses in CIDR form (`192.168.1.10/24`) to the interfaces they belong to, named by
/// interface name; addresses of interfaces not in the inventory are ignored. The agent learns
/// them from the kernel after DHCP, which is later than [`collect`] runs.
pub fn fill_addresses(hardware: &mut HardwareInformation, addresses: &[(String, String)]) {
    let Some(network) = hardware.network.as_mut() else {
        return;
    };
    for interface in &mut network.interfaces {
        let Some(name) = interface.name.as_deref() else {
            continue;
        };
        interface.addresses.extend(
            addresses
                .iter()
                .filter(|(owner, _)| owner == name)
                .map(|(_, cidr)| cidr.clone()),
        );
        interface.addresses.sort();
        interface.addresses.dedup();
    }
}

/// Things that go wrong while collecting; each becomes one line in [`Inventory::problems`].
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error(
        "no SMBIOS tables at {dir}: the firmware publishes none or the kernel lacks DMI sysfs \
         support; system, BIOS, processor and memory module details are unknown"
    )]
    NoSmbiosTables { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot list {dir}: {source}")]
    Unlistable { dir: PathBuf, source: io::Error },
    #[error("{path} is larger than {limit} bytes; only the first {limit} bytes were read")]
    TooLarge { path: PathBuf, limit: usize },
    #[error(
        "{path} is not a valid SMBIOS entry point ({reason}); assuming SMBIOS 2.6 or later for \
         the UUID byte order"
    )]
    BadEntryPoint { path: PathBuf, reason: String },
    #[error(
        "the SMBIOS table is truncated: {actual} bytes where the entry point announces \
         {expected}; structures past the end are missing"
    )]
    TruncatedTable { actual: usize, expected: usize },
    #[error(
        "the SMBIOS table ends without an end-of-table structure (type 127) after {parsed} \
         structures; it is probably truncated or corrupt"
    )]
    NoEndOfTable { parsed: usize },
    #[error("the SMBIOS parser failed on this table ({message}); SMBIOS details are left out")]
    ParserPanicked { message: String },
    #[error("the SMBIOS table has no system information (type 1) structure, hence no UUID")]
    NoSystemStructure,
    #[error(
        "the SMBIOS system UUID is not set (all {byte:#04x} bytes); the server needs another \
         identity"
    )]
    UuidNotSet { byte: u8 },
    #[error("the SMBIOS system UUID is missing from a truncated type 1 structure")]
    UuidMissing,
    #[error("SMBIOS {field} is not valid UTF-8; invalid bytes are shown as U+FFFD")]
    NotUtf8 { field: &'static str },
    #[error("SMBIOS {field} refers to string {number}, which the structure does not have")]
    MissingString { field: &'static str, number: u8 },
    #[error("{path} holds {value:?}, which is not {expected}")]
    BadValue {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },
    #[error("PCI function {address} has no readable vendor, device and class; left out")]
    IncompletePciFunction { address: String },
    #[error(
        "cannot tell the CPU architecture: {path} is missing (Linux before 6.1?) and the root \
         is not this machine's"
    )]
    NoArchitecture { path: PathBuf },
}

/// Largest file read whole. Real SMBIOS tables are tens of kilobytes and sysfs attributes a
/// page; anything larger is corrupt, and reading it unbounded could exhaust the agent's memory.
const MAX_FILE_BYTES: usize = 4 << 20;

/// Reads a whole file of at most [`MAX_FILE_BYTES`], noting a larger one as a problem.
/// `Ok(None)` means the file does not exist.
fn read_bounded(path: &Path, problems: &mut Vec<String>) -> Result<Option<Vec<u8>>, Problem> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Problem::Unreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    // One byte past the limit tells a file of exactly the limit from a larger one.
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Problem::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() > MAX_FILE_BYTES {
        bytes.truncate(MAX_FILE_BYTES);
        problems.push(
            Problem::TooLarge {
                path: path.to_owned(),
                limit: MAX_FILE_BYTES,
            }
            .to_string(),
        );
    }
    Ok(Some(bytes))
}

/// Reads a sysfs or procfs attribute as trimmed text; `None` when it is missing, unreadable
/// (sysfs refuses some reads, e.g. `carrier` of a link that is down) or empty.
fn read_attr(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES as u64).read_to_end(&mut bytes))
        .ok()?;
    clean_text(&bytes)
}

/// Reads an attribute and parses it as a number, noting a value that does not parse.
fn read_number<T: std::str::FromStr>(
    path: &Path,
    expected: &'static str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let text = read_attr(path)?;
    match text.parse() {
        Ok(number) => Some(number),
        Err(_) => {
            problems.push(
                Problem::BadValue {
                    path: path.to_owned(),
                    value: text,
                    expected,
                }
                .to_string(),
            );
            None
        }
    }
}

/// The last component of a symlink's target, e.g. the driver name from a `driver` link.
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Names in a directory, sorted; a directory that cannot be listed is a problem and `None`.
fn list_dir(dir: &Path, problems: &mut Vec<String>) -> Option<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            problems.push(
                Problem::Unlistable {
                    dir: dir.to_owned(),
                    source,
                }
                .to_string(),
            );
            return None;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names)
}

/// Text as the inventory stores it: lossy UTF-8, trimmed, `None` when nothing is left.
fn clean_text(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// A collection length as a count field; lengths beyond `u32` cannot come from real hardware
/// but must not panic either.
fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Binary units, labelled the way memory modules and dmidecode label them (`512 MB` is 512 MiB).
const BINARY: u64 = 1024;
/// Decimal units, the way disk vendors label capacity (a `1.92 TB` SSD).
const DECIMAL: u64 = 1000;

/// A size as text with up to two decimals, e.g. `512 MB`, `2 GB`, `1.92 TB`.
fn size_text(bytes: u64, base: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && bytes / scale >= base {
        scale *= base;
        unit += 1;
    }
    // Precision loss past 2^53 bytes is far below the two decimals shown.
    let value = bytes as f64 / scale as f64;
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", UNITS[unit])
}

/// Processors from SMBIOS when it lists any, else sockets counted in `/proc/cpuinfo`; the
/// architecture and flags always come from the kernel.
fn compute_information(
    processors: Vec<Processor>,
    cpu: cpuinfo::CpuInfo,
) -> Option<ComputeInformation> {
    let (processor_count, total_core_count, total_thread_count, processors) =
        if processors.is_empty() {
            (
                (cpu.sockets > 0).then_some(cpu.sockets),
                (cpu.cores > 0).then_some(cpu.cores),
                (cpu.threads > 0).then_some(cpu.threads),
                cpu.processors,
            )
        } else {
            let sum = |field: fn(&Processor) -> Option<u32>| {
                let known: Vec<u32> = processors.iter().filter_map(field).collect();
                (!known.is_empty()).then(|| known.iter().fold(0u32, |a, b| a.saturating_add(*b)))
            };
            // Firmware that leaves SMBIOS counts unknown still has a kernel that counted.
            let cores = sum(|p| p.core_count).or((cpu.cores > 0).then_some(cpu.cores));
            let threads = sum(|p| p.thread_count).or((cpu.threads > 0).then_some(cpu.threads));
            (Some(count(processors.len())), cores, threads, processors)
        };
    let compute = ComputeInformation {
        total_core_count,
        total_thread_count,
        processor_count,
        processors,
        architecture: cpu.architecture,
        flags: cpu.flags,
    };
    (compute != ComputeInformation::default()).then_some(compute)
}

/// Memory modules from SMBIOS when it lists any, else the kernel's `MemTotal`, which is a little
/// less than what is installed (firmware and kernel reservations).
fn memory_information(
    modules: Vec<crate::api::MemoryModule>,
    mem_total: Option<u64>,
) -> Option<MemoryInformation> {
    if modules.is_empty() {
        return mem_total.map(|bytes| MemoryInformation {
            total_size: Some(size_text(bytes, BINARY)),
            module_count: None,
            modules: Vec::new(),
            total_size_bytes: Some(bytes),
        });
    }
    let bytes = modules
        .iter()
        .filter_map(|module| module.size)
        .fold(0u64, |total, mb| {
            total.saturating_add(u64::from(mb) * 1024 * 1024)
        });
    Some(MemoryInformation {
        total_size: Some(size_text(bytes, BINARY)),
        module_count: Some(count(modules.len())),
        modules,
        total_size_bytes: Some(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NetworkInterface, StorageDevice};
    use std::os::unix::fs::symlink;

    /// Recorded fixtures (scripts/capture-agent-fixture).
    pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agent");

    pub(super) fn fixture(name: &str) -> PathBuf {
        Path::new(FIXTURES).join(name)
    }

    /// Copies a fixture tree, symlinks as symlinks, so that a test can break a copy.
    pub(super) fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                symlink(fs::read_link(&source).unwrap(), &target).unwrap();
            } else if kind.is_dir() {
                copy_tree(&source, &target);
            } else {
                fs::copy(&source, &target).unwrap();
            }
        }
    }

    fn disk<'a>(inventory: &'a Inventory, name: &str) -> &'a StorageDevice {
        let storage = inventory.hardware.storage.as_ref().unwrap();
        storage
            .devices
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no disk {name} in {storage:#?}"))
    }

    fn nic<'a>(inventory: &'a Inventory, name: &str) -> &'a NetworkInterface {
        let network = inventory.hardware.network.as_ref().unwrap();
        network
            .interfaces
            .iter()
            .find(|i| i.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no NIC {name} in {network:#?}"))
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn dell_epyc_fixture_yields_the_values_the_vm_was_given() {
        let inventory = collect(&fixture("dell-epyc"));
        assert_eq!(inventory.problems, Vec::<String>::new());
        let uuid = "4c4c4544-0042-3510-8052-b4c04f4d3732";
        assert_eq!(inventory.smbios_uuid.as_deref(), Some(uuid));
        let hw = &inventory.hardware;

        let system = hw.system.as_ref().unwrap();
        assert_eq!(system.uuid.as_deref(), Some(uuid));
        assert_eq!(system.manufacturer, some("Dell Inc."));
        assert_eq!(system.product_name, some("PowerEdge R6525"));
        assert_eq!(system.version, some("1.0"));
        assert_eq!(system.serial_number, some("7R52MD3"));
        assert_eq!(system.sku_number, some("0A2B"));
        assert_eq!(system.family, some("PowerEdge"));

        let bios = hw.bios.as_ref().unwrap();
        assert_eq!(bios.vendor, some("Dell Inc."));
        assert_eq!(bios.version, some("2.14.1"));
        assert_eq!(bios.release_date, some("08/23/2023"));

        let board = hw.baseboard.as_ref().unwrap();
        assert_eq!(board.manufacturer, some("Dell Inc."));
        assert_eq!(board.product_name, some("0DMTJ7"));
        assert_eq!(board.version, some("A01"));
        assert_eq!(board.serial_number, some(".7R52MD3.CNFCP0032800QS."));
        assert_eq!(board.asset_tag, some("BOARD-TAG"));

        let chassis = hw.chassis.as_ref().unwrap();
        assert_eq!(chassis.manufacturer, some("Dell Inc."));
        // QEMU always writes chassis type 01h.
        assert_eq!(chassis.type_, some("Other"));
        assert_eq!(chassis.version, some("R6525-CHASSIS"));
        assert_eq!(chassis.serial_number, some("7R52MD3"));
        assert_eq!(chassis.asset_tag, some("RACK-A-U12"));
        assert_eq!(chassis.sku_number, some("CHASSIS-SKU"));

        let compute = hw.compute.as_ref().unwrap();
        assert_eq!(compute.processor_count, Some(2));
        assert_eq!(compute.total_core_count, Some(4));
        assert_eq!(compute.total_thread_count, Some(4));
        assert_eq!(compute.architecture, some("x86_64"));
        assert!(
            compute.flags.iter().any(|f| f == "lm"),
            "{:?}",
            compute.flags
        );
        for processor in &compute.processors {
            assert_eq!(processor.manufacturer, some("AMD"));
            assert_eq!(
                processor.product_name,
                some("AMD EPYC 7543 32-Core Processor")
            );
            assert_eq!(processor.serial_number, some("CPU-SN-7543"));
            assert_eq!(processor.speed, Some(2800));
            assert_eq!(processor.core_count, Some(2));
            assert_eq!(processor.thread_count, Some(2));
        }

        let memory = hw.memory.as_ref().unwrap();
        assert_eq!(memory.module_count, Some(1));
        assert_eq!(memory.total_size, some("512 MB"));
        assert_eq!(memory.total_size_bytes, Some(512 << 20));
        let module = &memory.modules[0];
        assert_eq!(module.manufacturer, some("Samsung"));
        assert_eq!(module.product_name, some("M393A4K40DB3-CWE"));
        assert_eq!(module.serial_number, some("S3R14L0001"));
        assert_eq!(module.type_, some("RAM"));
        assert_eq!(module.size, Some(512));
        assert_eq!(module.speed, Some(3200));
        assert_eq!(module.locator, some("DIMM 0"));

        let vda = disk(&inventory, "vda");
        assert_eq!(vda.serial, some("VIRTIO-SN-0001"));
        assert_eq!(vda.size, Some(64 << 20));
        assert_eq!(vda.type_, some("VIRTIO"));
        assert_eq!(vda.device_name, some("/dev/vda"));
        let nvme = disk(&inventory, "nvme0n1");
        assert_eq!(nvme.serial, some("NVME-SN-0001"));
        assert_eq!(nvme.model, some("QEMU NVMe Ctrl"));
        assert_eq!(nvme.size, Some(128 << 20));
        assert_eq!(nvme.type_, some("NVME"));
        // The sd names depend on probe order; the serials say which disk is which.
        let ssd = ["sda", "sdb"]
            .map(|name| disk(&inventory, name))
            .into_iter()
            .find(|d| d.serial.as_deref() == Some("SCSI-SSD-0001"))
            .unwrap();
        assert_eq!(ssd.size, Some(32 << 20));
        assert_eq!(ssd.type_, some("SSD"));
        assert_eq!(ssd.wwid, some("naa.5000c500a1b2c3d4"));
        let hdd = ["sda", "sdb"]
            .map(|name| disk(&inventory, name))
            .into_iter()
            .find(|d| d.serial.as_deref() == Some("SCSI-HDD-0002"))
            .unwrap();
        assert_eq!(hdd.size, Some(48 << 20));
        assert_eq!(hdd.type_, some("HDD"));
        let storage = hw.storage.as_ref().unwrap();
        assert_eq!(storage.device_count, Some(5), "four disks and the CD drive");
        assert_eq!(storage.total_size_bytes, Some((64 + 128 + 32 + 48) << 20));

        let eth0 = nic(&inventory, "eth0");
        assert_eq!(eth0.mac, some("52:54:00:e5:01:01"));
        assert_eq!(eth0.driver, some("virtio_net"));
        assert_eq!(eth0.pci_address, some("0000:00:02.0"));
        assert_eq!(eth0.speed_mbps, Some(10000));
        assert_eq!(eth0.link, Some(true));
        let eth1 = nic(&inventory, "eth1");
        assert_eq!(eth1.mac, some("52:54:00:e5:01:02"));
        assert_eq!(eth1.driver, some("virtio_net"));
        assert_eq!(eth1.pci_address, some("0000:00:03.0"));
        assert_eq!(eth1.link, Some(false));
        assert_eq!(hw.network.as_ref().unwrap().interface_count, Some(2));

        let pci = &hw.pci.as_ref().unwrap().devices;
        let virtio: Vec<(&str, &str, &str)> = pci
            .iter()
            .filter(|d| d.vendor_id == "1af4")
            .map(|d| (d.address.as_str(), d.device_id.as_str(), d.class.as_str()))
            .collect();
        assert_eq!(
            virtio,
            [
                ("0000:00:02.0", "1000", "020000"),
                ("0000:00:03.0", "1000", "020000"),
                ("0000:00:04.0", "1001", "010000"),
                ("0000:00:06.0", "1004", "010000"),
            ]
        );
    }

    #[test]
    fn xeon_q35_fixture_yields_the_values_the_vm_was_given() {
        let inventory = collect(&fixture("xeon-q35"));
        assert_eq!(inventory.problems, Vec::<String>::new());
        let uuid = "3a4b5c6d-7e8f-4a1b-8c2d-ac1f6b4e2f10";
        assert_eq!(inventory.smbios_uuid.as_deref(), Some(uuid));
        let hw = &inventory.hardware;
        let system = hw.system.as_ref().unwrap();
        assert_eq!(system.uuid.as_deref(), Some(uuid));
        assert_eq!(system.manufacturer, some("Supermicro"));
        assert_eq!(system.product_name, some("SYS-120U-TNR"));
        assert_eq!(system.serial_number, some("S123456X1234567"));
        assert_eq!(system.sku_number, some("To be filled by O.E.M."));
        assert_eq!(
            hw.bios.as_ref().unwrap().vendor,
            some("American Megatrends Inc.")
        );
        assert_eq!(
            hw.baseboard.as_ref().unwrap().product_name,
            some("X12DPU-6")
        );
        assert_eq!(
            hw.chassis.as_ref().unwrap().serial_number,
            some("C1160LK21A00123")
        );

        let compute = hw.compute.as_ref().unwrap();
        assert_eq!(compute.processor_count, Some(1));
        assert_eq!(compute.total_core_count, Some(2));
        assert_eq!(compute.total_thread_count, Some(4));
        let processor = &compute.processors[0];
        assert_eq!(processor.manufacturer, some("Intel(R) Corporation"));
        assert_eq!(
            processor.product_name,
            some("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz")
        );
        assert_eq!(processor.speed, Some(2000));

        let memory = hw.memory.as_ref().unwrap();
        assert_eq!(memory.total_size_bytes, Some(512 << 20));
        assert_eq!(memory.modules[0].manufacturer, some("Micron Technology"));
        assert_eq!(memory.modules[0].product_name, some("36ASF4G72PZ-3G2E1"));
        assert_eq!(memory.modules[0].serial_number, some("2A3B4C5D"));

        let nvme = disk(&inventory, "nvme0n1");
        assert_eq!(nvme.serial, some("S5XNNG0R123456"));
        assert_eq!(nvme.size, Some(96 << 20));
        let cd = disk(&inventory, "sr0");
        assert_eq!((cd.removable, cd.read_only), (Some(true), Some(true)));
        assert_eq!(
            hw.storage.as_ref().unwrap().total_size_bytes,
            Some(96 << 20)
        );

        let e1000e = nic(&inventory, "eth1");
        assert_eq!(e1000e.mac, some("ac:1f:6b:4e:2f:10"));
        assert_eq!(e1000e.driver, some("e1000e"));
        assert_eq!(e1000e.pci_address, some("0000:00:01.0"));
        let virtio = nic(&inventory, "eth0");
        assert_eq!(virtio.mac, some("ac:1f:6b:4e:2f:11"));
        assert_eq!(virtio.driver, some("virtio_net"));
        assert_eq!(virtio.pci_address, some("0000:00:02.0"));

        let pci = &hw.pci.as_ref().unwrap().devices;
        let nvme = pci.iter().find(|d| d.address == "0000:00:03.0").unwrap();
        assert_eq!(
            (nvme.vendor_id.as_str(), nvme.device_id.as_str()),
            ("1b36", "0010")
        );
        assert_eq!(nvme.class_name, some("Mass storage controller"));
        assert_eq!(nvme.driver, some("nvme"));
    }

    #[test]
    fn no_uuid_fixture_reports_the_unset_uuid_and_keeps_the_rest() {
        let inventory = collect(&fixture("no-uuid"));
        assert_eq!(inventory.smbios_uuid, None);
        assert_eq!(
            inventory.problems,
            [
                "the SMBIOS system UUID is not set (all 0x00 bytes); the server needs another \
              identity"
            ]
        );
        let system = inventory.hardware.system.as_ref().unwrap();
        assert_eq!(system.uuid, None);
        assert_eq!(system.manufacturer, some("QEMU"));
        assert_eq!(
            system.product_name,
            some("Standard PC (i440FX + PIIX, 1996)")
        );
        assert_eq!(disk(&inventory, "vda").size, Some(16 << 20));
        assert_eq!(nic(&inventory, "eth0").mac, some("52:54:00:00:00:01"));
    }

    #[test]
    fn missing_dmi_directory_is_a_problem_and_cpuinfo_and_meminfo_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixture("xeon-q35"), dir.path());
        fs::remove_dir_all(dir.path().join("sys/firmware/dmi")).unwrap();
        let inventory = collect(dir.path());
        assert_eq!(inventory.smbios_uuid, None);
        assert_eq!(inventory.problems.len(), 1, "{:?}", inventory.problems);
        assert!(inventory.problems[0].starts_with("no SMBIOS tables at "));
        let hw = &inventory.hardware;
        assert_eq!((&hw.system, &hw.bios, &hw.chassis), (&None, &None, &None));
        let compute = hw.compute.as_ref().unwrap();
        assert_eq!(compute.processor_count, Some(1));
        assert_eq!(compute.total_core_count, Some(2));
        assert_eq!(compute.total_thread_count, Some(4));
        assert_eq!(
            compute.processors[0].product_name,
            some("QEMU Virtual CPU version 2.5+")
        );
        let memory = hw.memory.as_ref().unwrap();
        let mem_total_kib: u64 = fs::read_to_string(dir.path().join("proc/meminfo"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(memory.total_size_bytes, Some(mem_total_kib * 1024));
        assert_eq!(memory.module_count, None);
        // The disks, NICs and PCI devices do not depend on SMBIOS.
        assert_eq!(disk(&inventory, "nvme0n1").serial, some("S5XNNG0R123456"));
    }

    #[test]
    fn empty_root_yields_problems_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = collect(dir.path());
        assert_eq!(inventory.smbios_uuid, None);
        assert_eq!(inventory.problems.len(), 7, "{:#?}", inventory.problems);
        // Unknown is not the same as none.
        assert_eq!(inventory.hardware, HardwareInformation::default());
    }

    #[test]
    fn fill_addresses_adds_sorted_addresses_to_the_named_interface_only() {
        let mut inventory = collect(&fixture("dell-epyc"));
        let addresses = [
            ("eth0".to_owned(), "192.168.1.10/24".to_owned()),
            ("eth0".to_owned(), "fe80::5054:ff:fee5:101/64".to_owned()),
            ("eth0".to_owned(), "10.0.0.5/8".to_owned()),
            ("eth0".to_owned(), "10.0.0.5/8".to_owned()),
            ("wlan9".to_owned(), "172.16.0.1/12".to_owned()),
        ];
        fill_addresses(&mut inventory.hardware, &addresses);
        assert_eq!(
            nic(&inventory, "eth0").addresses,
            ["10.0.0.5/8", "192.168.1.10/24", "fe80::5054:ff:fee5:101/64"]
        );
        assert!(nic(&inventory, "eth1").addresses.is_empty());
    }

    #[test]
    fn collect_is_deterministic() {
        assert_eq!(
            collect(&fixture("dell-epyc")),
            collect(&fixture("dell-epyc"))
        );
    }

    #[test]
    fn size_text_uses_the_largest_unit_and_two_decimals() {
        assert_eq!(size_text(512 << 20, BINARY), "512 MB");
        assert_eq!(size_text(2 << 30, BINARY), "2 GB");
        assert_eq!(size_text(3 << 29, BINARY), "1.5 GB");
        assert_eq!(size_text(1_920_383_410_176, DECIMAL), "1.92 TB");
        assert_eq!(size_text(0, DECIMAL), "0 B");
        assert_eq!(size_text(u64::MAX, BINARY), "16 EB");
    }

    #[test]
    fn clean_text_trims_and_drops_empty_strings() {
        assert_eq!(clean_text(b"  QEMU NVMe Ctrl \n"), some("QEMU NVMe Ctrl"));
        assert_eq!(clean_text(b"SN\0\0"), some("SN"));
        assert_eq!(clean_text(b" \n"), None);
        assert_eq!(clean_text(b"a\xffb"), some("a\u{fffd}b"));
    }
}
