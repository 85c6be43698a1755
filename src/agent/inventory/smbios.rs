//! SMBIOS: the system UUID and the system, BIOS, baseboard, chassis, processor and memory module
//! structures, parsed with `smbios-lib` from the tables Linux exports under
//! `/sys/firmware/dmi/tables`.
//!
//! The table comes from firmware and is untrusted: a short or corrupt table, a bad entry point,
//! a string that is not UTF-8 or refers to a string that does not exist each become a problem
//! line, and the parser runs under `catch_unwind` so that a panic in it (its 32-bit entry point
//! parser indexes out of bounds on some inputs) costs the SMBIOS details, not the agent.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use smbioslib::{
    CoreCount, CoreCount2, MemorySize, MemorySizeExtended, MemorySpeed, MemorySpeedExtended,
    ProcessorSpeed, SMBiosBaseboardInformation, SMBiosData, SMBiosEndOfTable, SMBiosEntryPoint32,
    SMBiosEntryPoint64, SMBiosInformation, SMBiosMemoryDevice, SMBiosProcessorInformation,
    SMBiosStringError, SMBiosStruct, SMBiosSystemChassisInformation, SMBiosSystemInformation,
    SMBiosVersion, SystemUuidData, ThreadCount, ThreadCount2,
};

use super::{Problem, read_bounded};
use crate::api::{
    BaseboardInformation, BiosInformation, ChassisInformation, MemoryModule, Processor,
    SystemInformation,
};

/// Where Linux exports the raw tables (needs `CONFIG_DMI_SYSFS`).
const TABLES_DIR: &str = "sys/firmware/dmi/tables";

/// The first SMBIOS version whose UUID stores its first three fields little-endian (DSP0134
/// 2.6, section 7.2.1); Linux and dmidecode print older tables' UUID bytes in table order.
const LITTLE_ENDIAN_UUID_SINCE: SMBiosVersion = SMBiosVersion {
    major: 2,
    minor: 6,
    revision: 0,
};

/// What SMBIOS told about the machine.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Smbios {
    pub uuid: Option<String>,
    pub system: Option<SystemInformation>,
    pub bios: Option<BiosInformation>,
    pub baseboard: Option<BaseboardInformation>,
    pub chassis: Option<ChassisInformation>,
    /// Populated sockets, in table order.
    pub processors: Vec<Processor>,
    /// Installed modules (empty slots left out), in table order.
    pub modules: Vec<MemoryModule>,
}

/// Reads the SMBIOS tables under `root`; their absence is a problem, not an error.
pub(super) fn read(root: &Path, problems: &mut Vec<String>) -> Smbios {
    let dir = root.join(TABLES_DIR);
    let table_path = dir.join("DMI");
    let table = match read_bounded(&table_path, problems) {
        Ok(Some(table)) => table,
        Ok(None) => {
            problems.push(Problem::NoSmbiosTables { dir }.to_string());
            return Smbios::default();
        }
        Err(problem) => {
            problems.push(problem.to_string());
            return Smbios::default();
        }
    };
    let entry_point_path = dir.join("smbios_entry_point");
    let entry_point = match read_bounded(&entry_point_path, problems) {
        Ok(bytes) => bytes,
        Err(problem) => {
            problems.push(problem.to_string());
            None
        }
    };
    let entry_point = match entry_point {
        Some(bytes) => match parse_entry_point(&bytes) {
            Ok(entry_point) => Some(entry_point),
            Err(reason) => {
                problems.push(
                    Problem::BadEntryPoint {
                        path: entry_point_path,
                        reason,
                    }
                    .to_string(),
                );
                None
            }
        },
        None => {
            problems.push(
                Problem::BadEntryPoint {
                    path: entry_point_path,
                    reason: "the file is missing".to_owned(),
                }
                .to_string(),
            );
            None
        }
    };
    parse(entry_point, table, problems)
}

/// The parts of the entry point that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EntryPoint {
    pub version: SMBiosVersion,
    /// Table length (SMBIOS 2.x) or maximum table size (3.x), in bytes.
    pub table_len: usize,
}

/// Parses a 32-bit (`_SM_`, SMBIOS 2.x) or 64-bit (`_SM3_`, 3.x) entry point, checksums included.
pub(super) fn parse_entry_point(bytes: &[u8]) -> Result<EntryPoint, String> {
    let parsed = panic::catch_unwind(|| {
        if bytes.starts_with(b"_SM3_") {
            SMBiosEntryPoint64::try_from(bytes.to_vec()).map(|ep| EntryPoint {
                version: SMBiosVersion::new(ep.major_version(), ep.minor_version(), ep.docrev()),
                table_len: usize::try_from(ep.structure_table_maximum_size()).unwrap_or(usize::MAX),
            })
        } else if bytes.starts_with(b"_SM_") {
            // smbios-lib wants exactly the 31 bytes of a 2.x entry point and panics on more.
            let len = bytes.len().min(SMBiosEntryPoint32::MINIMUM_SIZE);
            SMBiosEntryPoint32::try_from(bytes[..len].to_vec()).map(|ep| EntryPoint {
                version: SMBiosVersion::new(ep.major_version(), ep.minor_version(), 0),
                table_len: usize::from(ep.structure_table_length()),
            })
        } else {
            Err(std::io::Error::other("neither an _SM_ nor an _SM3_ anchor"))
        }
    });
    match parsed {
        Ok(Ok(entry_point)) => Ok(entry_point),
        Ok(Err(error)) => Err(error.to_string()),
        Err(payload) => Err(format!("the parser panicked: {}", panic_message(&*payload))),
    }
}

/// Parses a table. Without an entry point the version is unknown and the UUID is read the way
/// every table since 2.6 (2008) stores it.
pub(super) fn parse(
    entry_point: Option<EntryPoint>,
    table: Vec<u8>,
    problems: &mut Vec<String>,
) -> Smbios {
    if let Some(entry_point) = entry_point
        && table.len() < entry_point.table_len
    {
        problems.push(
            Problem::TruncatedTable {
                actual: table.len(),
                expected: entry_point.table_len,
            }
            .to_string(),
        );
    }
    let version = entry_point.map(|ep| ep.version);
    // The closure only reads its inputs and fills fresh values, so a panic leaves no broken
    // state behind.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let data = SMBiosData::from_vec_and_version(table, version);
        let mut notes = Vec::new();
        let smbios = extract(&data, version, &mut notes);
        let structures = data.iter().count();
        let ended = data
            .iter()
            .any(|s| s.header.struct_type() == SMBiosEndOfTable::STRUCT_TYPE);
        if !ended {
            notes.push(Problem::NoEndOfTable { parsed: structures }.to_string());
        }
        (smbios, notes)
    }));
    match result {
        Ok((smbios, notes)) => {
            problems.extend(notes);
            smbios
        }
        Err(payload) => {
            problems.push(
                Problem::ParserPanicked {
                    message: panic_message(&*payload),
                }
                .to_string(),
            );
            Smbios::default()
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

fn extract(data: &SMBiosData, version: Option<SMBiosVersion>, notes: &mut Vec<String>) -> Smbios {
    let mut text = Strings { notes };
    let mut smbios = Smbios::default();

    match data.first::<SMBiosSystemInformation<'_>>() {
        Some(system) => {
            smbios.uuid = match system.uuid() {
                Some(SystemUuidData::Uuid(uuid)) => Some(format_uuid(&uuid.raw, version)),
                Some(SystemUuidData::IdNotPresentButSettable) => {
                    text.notes
                        .push(Problem::UuidNotSet { byte: 0x00 }.to_string());
                    None
                }
                Some(SystemUuidData::IdNotPresent) => {
                    text.notes
                        .push(Problem::UuidNotSet { byte: 0xff }.to_string());
                    None
                }
                None => {
                    text.notes.push(Problem::UuidMissing.to_string());
                    None
                }
            };
            smbios.system = Some(SystemInformation {
                uuid: smbios.uuid.clone(),
                manufacturer: text.get("system manufacturer", system.manufacturer()),
                product_name: text.get("system product name", system.product_name()),
                version: text.get("system version", system.version()),
                serial_number: text.get("system serial number", system.serial_number()),
                sku_number: text.get("system SKU number", system.sku_number()),
                family: text.get("system family", system.family()),
            });
        }
        None => text.notes.push(Problem::NoSystemStructure.to_string()),
    }

    smbios.bios = data
        .first::<SMBiosInformation<'_>>()
        .map(|bios| BiosInformation {
            vendor: text.get("BIOS vendor", bios.vendor()),
            version: text.get("BIOS version", bios.version()),
            release_date: text.get("BIOS release date", bios.release_date()),
        });

    smbios.baseboard =
        data.first::<SMBiosBaseboardInformation<'_>>()
            .map(|board| BaseboardInformation {
                manufacturer: text.get("baseboard manufacturer", board.manufacturer()),
                product_name: text.get("baseboard product name", board.product()),
                version: text.get("baseboard version", board.version()),
                serial_number: text.get("baseboard serial number", board.serial_number()),
                asset_tag: text.get("baseboard asset tag", board.asset_tag()),
            });

    smbios.chassis = data
        .first::<SMBiosSystemChassisInformation<'_>>()
        .map(|chassis| ChassisInformation {
            manufacturer: text.get("chassis manufacturer", chassis.manufacturer()),
            type_: chassis
                .chassis_type()
                .and_then(|t| chassis_type_name(t.raw))
                .map(str::to_owned),
            version: text.get("chassis version", chassis.version()),
            serial_number: text.get("chassis serial number", chassis.serial_number()),
            asset_tag: text.get("chassis asset tag", chassis.asset_tag_number()),
            sku_number: text.get("chassis SKU number", chassis.sku_number()),
        });

    for cpu in data.defined_struct_iter::<SMBiosProcessorInformation<'_>>() {
        // Boards list every socket; an empty one is not a processor (Sidero skips them too).
        if cpu
            .status()
            .is_some_and(|status| !status.socket_populated())
        {
            continue;
        }
        smbios.processors.push(Processor {
            manufacturer: text.get("processor manufacturer", cpu.processor_manufacturer()),
            product_name: text.get("processor version", cpu.processor_version()),
            serial_number: text.get("processor serial number", cpu.serial_number()),
            speed: match cpu.current_speed() {
                Some(ProcessorSpeed::MHz(mhz)) => Some(u32::from(mhz)),
                _ => None,
            },
            core_count: core_count(&cpu),
            thread_count: thread_count(&cpu),
        });
    }

    for device in data.defined_struct_iter::<SMBiosMemoryDevice<'_>>() {
        let size = match device.size() {
            Some(MemorySize::NotInstalled) => continue,
            Some(MemorySize::Megabytes(mb)) => Some(u32::from(mb)),
            Some(MemorySize::Kilobytes(kb)) => Some(u32::from(kb) / 1024),
            Some(MemorySize::SeeExtendedSize) => match device.extended_size() {
                Some(MemorySizeExtended::Megabytes(mb)) => Some(mb),
                _ => None,
            },
            Some(MemorySize::Unknown) | None => None,
        };
        smbios.modules.push(MemoryModule {
            manufacturer: text.get("memory manufacturer", device.manufacturer()),
            product_name: text.get("memory part number", device.part_number()),
            serial_number: text.get("memory serial number", device.serial_number()),
            type_: device
                .memory_type()
                .and_then(|t| memory_type_name(t.raw))
                .map(str::to_owned),
            size,
            speed: match device.speed() {
                Some(MemorySpeed::MTs(mts)) => Some(u32::from(mts)),
                Some(MemorySpeed::SeeExtendedSpeed) => match device.extended_speed() {
                    Some(MemorySpeedExtended::MTs(mts)) => Some(mts),
                    _ => None,
                },
                _ => None,
            },
            locator: text.get("memory device locator", device.device_locator()),
        });
    }
    smbios
}

fn core_count(cpu: &SMBiosProcessorInformation<'_>) -> Option<u32> {
    match cpu.core_count()? {
        CoreCount::Count(n) => Some(u32::from(n)),
        CoreCount::SeeCoreCount2 => match cpu.core_count_2()? {
            CoreCount2::Count(n) => Some(u32::from(n)),
            _ => None,
        },
        CoreCount::Unknown => None,
    }
}

fn thread_count(cpu: &SMBiosProcessorInformation<'_>) -> Option<u32> {
    match cpu.thread_count()? {
        ThreadCount::Count(n) => Some(u32::from(n)),
        ThreadCount::SeeThreadCount2 => match cpu.thread_count_2()? {
            ThreadCount2::Count(n) => Some(u32::from(n)),
            _ => None,
        },
        ThreadCount::Unknown => None,
    }
}

/// Turns SMBIOS strings into inventory text, noting the ones that are broken.
struct Strings<'a> {
    notes: &'a mut Vec<String>,
}

impl Strings<'_> {
    fn get(&mut self, field: &'static str, string: smbioslib::SMBiosString) -> Option<String> {
        match string.as_ref() {
            Ok(text) => super::clean_text(text.as_bytes()),
            Err(SMBiosStringError::Utf8(error)) => {
                self.notes.push(Problem::NotUtf8 { field }.to_string());
                super::clean_text(error.as_bytes())
            }
            Err(SMBiosStringError::InvalidStringNumber(number)) => {
                self.notes.push(
                    Problem::MissingString {
                        field,
                        number: *number,
                    }
                    .to_string(),
                );
                None
            }
            // The field lies past the structure's end: an older SMBIOS version without it.
            Err(SMBiosStringError::FieldOutOfBounds) => None,
        }
    }
}

/// Formats a UUID as Linux's `product_uuid` does (lowercase, so that it can name a Kubernetes
/// object): from SMBIOS 2.6 on, the first three fields are stored little-endian.
pub(super) fn format_uuid(raw: &[u8; 16], version: Option<SMBiosVersion>) -> String {
    let mut bytes = *raw;
    if version.is_none_or(|v| v >= LITTLE_ENDIAN_UUID_SINCE) {
        bytes[0..4].reverse();
        bytes[4..6].reverse();
        bytes[6..8].reverse();
    }
    let hex = |range: std::ops::Range<usize>| -> String {
        bytes[range].iter().map(|b| format!("{b:02x}")).collect()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// Chassis type names as DSP0134 (7.4.1) spells them; bit 7 is the lock flag.
fn chassis_type_name(raw: u8) -> Option<&'static str> {
    const NAMES: [&str; 0x24] = [
        "Other",
        "Unknown",
        "Desktop",
        "Low Profile Desktop",
        "Pizza Box",
        "Mini Tower",
        "Tower",
        "Portable",
        "Laptop",
        "Notebook",
        "Hand Held",
        "Docking Station",
        "All in One",
        "Sub Notebook",
        "Space-saving",
        "Lunch Box",
        "Main Server Chassis",
        "Expansion Chassis",
        "SubChassis",
        "Bus Expansion Chassis",
        "Peripheral Chassis",
        "RAID Chassis",
        "Rack Mount Chassis",
        "Sealed-case PC",
        "Multi-system chassis",
        "Compact PCI",
        "Advanced TCA",
        "Blade",
        "Blade Enclosure",
        "Tablet",
        "Convertible",
        "Detachable",
        "IoT Gateway",
        "Embedded PC",
        "Mini PC",
        "Stick PC",
    ];
    let index = usize::from(raw & 0x7f).checked_sub(1)?;
    NAMES.get(index).copied()
}

/// Memory device type names as DSP0134 (7.18.2) and dmidecode spell them.
fn memory_type_name(raw: u8) -> Option<&'static str> {
    const NAMES: [&str; 0x24] = [
        "Other",
        "Unknown",
        "DRAM",
        "EDRAM",
        "VRAM",
        "SRAM",
        "RAM",
        "ROM",
        "Flash",
        "EEPROM",
        "FEPROM",
        "EPROM",
        "CDRAM",
        "3DRAM",
        "SDRAM",
        "SGRAM",
        "RDRAM",
        "DDR",
        "DDR2",
        "DDR2 FB-DIMM",
        "Reserved",
        "Reserved",
        "Reserved",
        "DDR3",
        "FBD2",
        "DDR4",
        "LPDDR",
        "LPDDR2",
        "LPDDR3",
        "LPDDR4",
        "Logical non-volatile device",
        "HBM",
        "HBM2",
        "DDR5",
        "LPDDR5",
        "HBM3",
    ];
    let index = usize::from(raw).checked_sub(1)?;
    NAMES.get(index).copied().filter(|name| *name != "Reserved")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{copy_tree, fixture};
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    fn recorded(name: &str) -> (Vec<u8>, Vec<u8>) {
        let dir = fixture(name).join(TABLES_DIR);
        (
            fs::read(dir.join("smbios_entry_point")).unwrap(),
            fs::read(dir.join("DMI")).unwrap(),
        )
    }

    /// The table bytes of a UUID string as SMBIOS 2.6+ stores them.
    fn uuid_bytes(uuid: &str) -> Vec<u8> {
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        let mut bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        bytes[0..4].reverse();
        bytes[4..6].reverse();
        bytes[6..8].reverse();
        bytes
    }

    fn position(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }

    /// A copy of the dell-epyc fixture whose DMI table `edit` changed.
    fn broken(edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, super::super::Inventory) {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixture("dell-epyc"), dir.path());
        let path = dir.path().join(TABLES_DIR).join("DMI");
        let mut table = fs::read(&path).unwrap();
        edit(&mut table);
        fs::write(&path, table).unwrap();
        let inventory = super::super::collect(dir.path());
        (dir, inventory)
    }

    #[test]
    fn entry_points_give_the_version_and_table_length() {
        let (dell, dell_table) = recorded("dell-epyc");
        let ep = parse_entry_point(&dell).unwrap();
        assert_eq!(ep.version, SMBiosVersion::new(2, 8, 0));
        assert_eq!(ep.table_len, dell_table.len());
        let (xeon, xeon_table) = recorded("xeon-q35");
        let ep = parse_entry_point(&xeon).unwrap();
        assert_eq!((ep.version.major, ep.version.minor), (3, 0));
        assert_eq!(ep.table_len, xeon_table.len());
    }

    #[test]
    fn entry_point_with_trailing_bytes_or_garbage_is_an_error_not_a_panic() {
        let (mut dell, _) = recorded("dell-epyc");
        dell.extend_from_slice(&[0; 16]);
        assert_eq!(parse_entry_point(&dell).unwrap().version.minor, 8);
        assert!(parse_entry_point(b"_SM_").is_err());
        assert!(parse_entry_point(b"_SM3_\x18").is_err());
        assert!(parse_entry_point(b"hello").is_err());
        let (mut bad_checksum, _) = recorded("xeon-q35");
        bad_checksum[6] ^= 1;
        assert!(parse_entry_point(&bad_checksum).is_err());
    }

    #[test]
    fn smbios_lib_panics_on_a_long_2x_entry_point_which_is_why_it_is_cut_and_guarded() {
        let (mut dell, _) = recorded("dell-epyc");
        dell.push(0);
        let outcome = panic::catch_unwind(|| SMBiosEntryPoint32::try_from(dell).is_ok());
        assert!(
            outcome.is_err(),
            "smbios-lib no longer panics; the guard may go"
        );
    }

    #[test]
    fn uuid_matches_the_kernels_product_uuid_in_every_recording() {
        // The capture also saved /sys/class/dmi/id/product_uuid, which the collector never
        // reads; Linux hides it when the UUID is unset.
        for name in ["dell-epyc", "xeon-q35", "no-uuid"] {
            let kernel =
                super::super::read_attr(&fixture(name).join("sys/class/dmi/id/product_uuid"));
            let ours = super::super::collect(&fixture(name)).smbios_uuid;
            assert_eq!(ours, kernel, "{name}");
        }
    }

    #[test]
    fn uuid_byte_order_follows_the_smbios_version() {
        let raw: [u8; 16] = uuid_bytes("4c4c4544-0042-3510-8052-b4c04f4d3732")
            .try_into()
            .unwrap();
        assert_eq!(
            format_uuid(&raw, Some(SMBiosVersion::new(2, 6, 0))),
            "4c4c4544-0042-3510-8052-b4c04f4d3732"
        );
        assert_eq!(
            format_uuid(&raw, None),
            "4c4c4544-0042-3510-8052-b4c04f4d3732"
        );
        // Before 2.6 Linux prints the bytes as they are stored.
        assert_eq!(
            format_uuid(&raw, Some(SMBiosVersion::new(2, 5, 0))),
            "44454c4c-4200-1035-8052-b4c04f4d3732"
        );
    }

    #[test]
    fn type_names_follow_the_specification() {
        assert_eq!(chassis_type_name(0x17), Some("Rack Mount Chassis"));
        assert_eq!(chassis_type_name(0x80 | 0x17), Some("Rack Mount Chassis"));
        assert_eq!(chassis_type_name(0), None);
        assert_eq!(chassis_type_name(0x7f), None);
        assert_eq!(memory_type_name(0x1a), Some("DDR4"));
        assert_eq!(memory_type_name(0x22), Some("DDR5"));
        assert_eq!(memory_type_name(0x07), Some("RAM"));
        assert_eq!(memory_type_name(0x15), None);
        assert_eq!(memory_type_name(0xff), None);
    }

    #[test]
    fn all_ff_uuid_is_reported_as_not_set() {
        let (_dir, inventory) = broken(|table| {
            let at = position(table, &uuid_bytes("4c4c4544-0042-3510-8052-b4c04f4d3732"));
            table[at..at + 16].fill(0xff);
        });
        assert_eq!(inventory.smbios_uuid, None);
        assert_eq!(
            inventory.problems,
            [
                "the SMBIOS system UUID is not set (all 0xff bytes); the server needs another \
              identity"
            ]
        );
        let system = inventory.hardware.system.unwrap();
        assert_eq!(system.uuid, None);
        assert_eq!(system.product_name.as_deref(), Some("PowerEdge R6525"));
    }

    #[test]
    fn non_utf8_string_is_replaced_and_reported() {
        let (_dir, inventory) = broken(|table| {
            let at = position(table, b"PowerEdge R6525");
            table[at + 5] = 0xff;
        });
        assert_eq!(
            inventory.problems,
            ["SMBIOS system product name is not valid UTF-8; invalid bytes are shown as U+FFFD"]
        );
        let system = inventory.hardware.system.unwrap();
        assert_eq!(
            system.product_name.as_deref(),
            Some("Power\u{fffd}dge R6525")
        );
        assert_eq!(
            inventory.smbios_uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4d3732")
        );
    }

    #[test]
    fn truncated_table_keeps_the_structures_before_the_cut() {
        // Cut inside the first processor structure: system and BIOS survive, the rest is gone.
        let (_dir, inventory) = broken(|table| {
            let at = position(table, b"CPU 0");
            table.truncate(at);
        });
        assert!(
            inventory.problems[0].starts_with("the SMBIOS table is truncated: "),
            "{:?}",
            inventory.problems
        );
        assert!(inventory.problems[1].starts_with("the SMBIOS table ends without an end-of-table"));
        assert_eq!(
            inventory.smbios_uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4d3732")
        );
        let compute = inventory.hardware.compute.unwrap();
        // No SMBIOS processors left: the kernel's view stands in.
        assert_eq!(
            compute.processors[0].product_name.as_deref(),
            Some("QEMU Virtual CPU version 2.5+")
        );
    }

    #[test]
    fn string_number_past_the_string_set_is_reported() {
        let (_dir, inventory) = broken(|table| {
            // Type 1 starts right after the UUID's 8-byte prefix; its serial number string
            // index sits at offset 7 of the structure.
            let uuid_at = position(table, &uuid_bytes("4c4c4544-0042-3510-8052-b4c04f4d3732"));
            table[uuid_at - 8 + 7] = 42;
        });
        assert_eq!(
            inventory.problems,
            ["SMBIOS system serial number refers to string 42, which the structure does not have"]
        );
        assert_eq!(inventory.hardware.system.unwrap().serial_number, None);
    }

    #[test]
    fn missing_entry_point_is_reported_and_the_table_still_parsed() {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixture("dell-epyc"), dir.path());
        fs::remove_file(dir.path().join(TABLES_DIR).join("smbios_entry_point")).unwrap();
        let inventory = super::super::collect(dir.path());
        assert_eq!(inventory.problems.len(), 1, "{:?}", inventory.problems);
        assert!(inventory.problems[0].contains("is not a valid SMBIOS entry point"));
        assert_eq!(
            inventory.smbios_uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4d3732")
        );
    }

    #[test]
    fn empty_table_has_no_system_structure() {
        let mut problems = Vec::new();
        let smbios = parse(None, Vec::new(), &mut problems);
        assert_eq!(smbios, Smbios::default());
        assert_eq!(
            problems,
            [
                "the SMBIOS table has no system information (type 1) structure, hence no UUID",
                "the SMBIOS table ends without an end-of-table structure (type 127) after 0 \
                 structures; it is probably truncated or corrupt",
            ]
        );
    }

    proptest! {
        #[test]
        fn random_tables_never_panic(
            entry_point in proptest::collection::vec(any::<u8>(), 0..40),
            table in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut problems = Vec::new();
            let entry_point = parse_entry_point(&entry_point).ok();
            parse(entry_point, table, &mut problems);
        }

        #[test]
        fn mutated_recorded_tables_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in any::<prop::sample::Index>(),
            which in prop::sample::select(vec!["dell-epyc", "xeon-q35", "no-uuid"]),
        ) {
            let (entry_point, mut table) = recorded(which);
            for (index, byte) in edits {
                let at = index.index(table.len());
                table[at] = byte;
            }
            table.truncate(cut.index(table.len() + 1));
            let mut problems = Vec::new();
            let smbios = parse(parse_entry_point(&entry_point).ok(), table, &mut problems);
            // Whatever survived is still well-formed text.
            if let Some(system) = smbios.system {
                for text in [system.manufacturer, system.product_name].into_iter().flatten() {
                    prop_assert!(!text.is_empty() && text.trim() == text);
                }
            }
        }
    }
}
