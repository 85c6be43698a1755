//! Disks from `/sys/block`: size, model, serial, WWID, rotational, removable and read-only.
//!
//! Virtual block devices (loop, ram, zram, device-mapper, md, nbd: anything under
//! `/sys/devices/virtual`) are left out: they are not hardware and never wiped. CD/DVD drives
//! (`sr*`) stay in the list so that an operator sees them, marked read-only and with no type.
//! The totals count only disks one could install to: removable and read-only devices are listed
//! and counted in `deviceCount` but not in `totalSize`.

use std::fs;
use std::path::Path;

use super::{DECIMAL, clean_text, count, list_dir, read_attr, read_number, size_text};
use crate::api::{StorageDevice, StorageInformation};

/// Name prefixes of virtual block devices, for kernels or fixtures where the `/sys/block` link
/// does not reveal it.
const VIRTUAL_PREFIXES: [&str; 6] = ["loop", "ram", "zram", "dm-", "md", "nbd"];

/// Linux counts block device sizes in 512-byte sectors whatever the logical block size.
const SECTOR_BYTES: u64 = 512;

/// `None` when `/sys/block` cannot be listed: unknown is not the same as no disks.
pub(super) fn read(root: &Path, problems: &mut Vec<String>) -> Option<StorageInformation> {
    let dir = root.join("sys/block");
    let mut devices = Vec::new();
    for name in list_dir(&dir, problems)? {
        let path = dir.join(&name);
        if is_virtual(&path, &name) || read_attr(&path.join("hidden")).as_deref() == Some("1") {
            continue;
        }
        devices.push(device(&path, name, problems));
    }
    let total: u64 = devices
        .iter()
        .filter(|d| d.removable != Some(true) && d.read_only != Some(true))
        .filter_map(|d| d.size)
        .fold(0, u64::saturating_add);
    Some(StorageInformation {
        total_size: Some(size_text(total, DECIMAL)),
        device_count: Some(count(devices.len())),
        devices,
        total_size_bytes: Some(total),
    })
}

fn is_virtual(path: &Path, name: &str) -> bool {
    let target = fs::read_link(path).unwrap_or_default();
    target.to_string_lossy().contains("devices/virtual/")
        || VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn device(path: &Path, name: String, problems: &mut Vec<String>) -> StorageDevice {
    let attr = |relative: &str| read_attr(&path.join(relative));
    let flag = |relative: &str| attr(relative).map(|v| v == "1");
    let rotational = flag("queue/rotational");
    let removable = flag("removable");
    let is_cd = name.starts_with("sr");
    // A CD drive's `ro` follows the medium; the drive is never a wipe target either way.
    let read_only = if is_cd { Some(true) } else { flag("ro") };
    let type_ = if is_cd {
        None
    } else if name.starts_with("nvme") {
        Some("NVME")
    } else if name.starts_with("vd") {
        Some("VIRTIO")
    } else {
        rotational.map(|r| if r { "HDD" } else { "SSD" })
    };
    StorageDevice {
        type_: type_.map(str::to_owned),
        size: read_number::<u64>(&path.join("size"), "a sector count", problems)
            .map(|sectors| sectors.saturating_mul(SECTOR_BYTES)),
        model: attr("device/model"),
        serial: attr("serial")
            .or_else(|| attr("device/serial"))
            .or_else(|| {
                fs::read(path.join("device/vpd_pg80"))
                    .ok()
                    .and_then(|p| unit_serial(&p))
            }),
        device_name: Some(format!("/dev/{name}")),
        name: Some(name),
        uuid: None,
        wwid: attr("wwid").or_else(|| attr("device/wwid")),
        rotational,
        removable,
        read_only,
    }
}

/// The serial number in a SCSI Unit Serial Number VPD page (0x80): a 4-byte header whose last
/// two bytes are the length, then the serial, often space-padded.
fn unit_serial(page: &[u8]) -> Option<String> {
    const PAGE_CODE: u8 = 0x80;
    if page.get(1) != Some(&PAGE_CODE) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
    let serial = page.get(4..)?;
    clean_text(&serial[..len.min(serial.len())])
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[test]
    fn virtual_devices_are_left_out_and_the_rest_sorted() {
        let mut problems = Vec::new();
        let storage = read(&fixture("dell-epyc"), &mut problems).unwrap();
        let names: Vec<_> = storage
            .devices
            .iter()
            .filter_map(|d| d.name.as_deref())
            .collect();
        assert_eq!(names, ["nvme0n1", "sda", "sdb", "sr0", "vda"]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn cd_drive_is_listed_read_only_and_left_out_of_the_total() {
        let mut problems = Vec::new();
        let storage = read(&fixture("dell-epyc"), &mut problems).unwrap();
        let cd = storage
            .devices
            .iter()
            .find(|d| d.name.as_deref() == Some("sr0"))
            .unwrap();
        assert_eq!(
            (cd.removable, cd.read_only, cd.type_.as_deref()),
            (Some(true), Some(true), None)
        );
        assert_eq!(cd.model.as_deref(), Some("QEMU DVD-ROM"));
        assert_eq!(storage.total_size.as_deref(), Some("285.21 MB"));
    }

    #[test]
    fn rotational_and_model_come_from_sysfs() {
        let mut problems = Vec::new();
        let storage = read(&fixture("dell-epyc"), &mut problems).unwrap();
        let by_serial = |serial: &str| {
            storage
                .devices
                .iter()
                .find(|d| d.serial.as_deref() == Some(serial))
                .unwrap()
        };
        assert_eq!(by_serial("SCSI-HDD-0002").rotational, Some(true));
        assert_eq!(by_serial("SCSI-SSD-0001").rotational, Some(false));
        assert_eq!(
            by_serial("SCSI-SSD-0001").model.as_deref(),
            Some("QEMU HARDDISK")
        );
        assert_eq!(by_serial("VIRTIO-SN-0001").model, None);
        assert_eq!(
            by_serial("NVME-SN-0001").wwid.as_deref(),
            Some("nvme.1b36-4e564d452d534e2d30303031-51454d55204e564d65204374726c-00000001")
        );
    }

    #[test]
    fn unit_serial_page_is_parsed_defensively() {
        assert_eq!(
            unit_serial(b"\0\x80\0\x05ABCDE  ").as_deref(),
            Some("ABCDE")
        );
        assert_eq!(unit_serial(b"\0\x80\0\x09AB  ").as_deref(), Some("AB"));
        assert_eq!(unit_serial(b"\0\x83\0\x02AB"), None);
        assert_eq!(unit_serial(b"\0\x80"), None);
        assert_eq!(unit_serial(b""), None);
    }

    #[test]
    fn unparsable_size_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("sys/block/sda");
        fs::create_dir_all(&disk).unwrap();
        fs::write(disk.join("size"), "-3\n").unwrap();
        let mut problems = Vec::new();
        let storage = read(dir.path(), &mut problems).unwrap();
        assert_eq!(storage.devices[0].size, None);
        assert_eq!(storage.devices[0].type_, None);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("which is not a sector count"),
            "{problems:?}"
        );
    }
}
