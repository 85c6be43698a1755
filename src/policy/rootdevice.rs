//! Which disk receives a deployed image: the inventory's disks filtered by the Environment's
//! root device hints (every given hint must hold), never a read-only or removable one, and the
//! smallest of those left. Pure: the caller passes the inventory the agent registered.
//!
//! The smallest, because the big disks of a server are usually its data disks; an operator who
//! wants another one names it with a hint. When nothing fits, the error lists every disk and
//! the hint that ruled it out, so the operator can fix the hint instead of guessing.

use crate::api::{RootDeviceHints, StorageDevice};

/// Bytes in one of the gigabytes of `minSizeGigabytes` (10^9, as Ironic counts).
const GIGABYTE: u64 = 1_000_000_000;

/// No disk satisfies the hints; one line per disk says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no disk can receive the image: {}{}", describe(.rejected), advice(.rejected))]
pub struct NoRootDevice {
    /// `(disk, why it was ruled out)`, in inventory order.
    pub rejected: Vec<(String, String)>,
}

fn describe(rejected: &[(String, String)]) -> String {
    if rejected.is_empty() {
        return "the inventory lists no disks".to_owned();
    }
    rejected
        .iter()
        .map(|(disk, why)| format!("{disk}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn advice(rejected: &[(String, String)]) -> &'static str {
    if rejected.is_empty() {
        " (does the machine have a disk the kernel can see?)"
    } else {
        " (fix the Environment's rootDeviceHints, or the disks)"
    }
}

/// Picks the disk for the image: every hint in `hints` must hold; read-only, removable and
/// empty disks never qualify; of the rest, the smallest (ties: inventory order).
pub fn choose_root_device<'a>(
    devices: &'a [StorageDevice],
    hints: Option<&RootDeviceHints>,
) -> Result<&'a StorageDevice, NoRootDevice> {
    let mut rejected = Vec::new();
    let mut best: Option<&StorageDevice> = None;
    for device in devices {
        match rule_out(device, hints) {
            Some(why) => rejected.push((label(device), why)),
            None => {
                // `rule_out` guarantees a known, non-zero size.
                let size = device.size.unwrap_or(u64::MAX);
                if best.is_none_or(|b| size < b.size.unwrap_or(u64::MAX)) {
                    best = Some(device);
                }
            }
        }
    }
    best.ok_or(NoRootDevice { rejected })
}

/// The kernel name of a disk, as the inventory and the hints spell it (`sda`, `nvme0n1`).
pub fn kernel_name(device: &StorageDevice) -> Option<&str> {
    device.name.as_deref().or_else(|| {
        device
            .device_name
            .as_deref()
            .map(|path| path.strip_prefix("/dev/").unwrap_or(path))
    })
}

fn label(device: &StorageDevice) -> String {
    kernel_name(device).unwrap_or("unnamed disk").to_owned()
}

/// Why a disk cannot take the image, or `None` when it can.
fn rule_out(device: &StorageDevice, hints: Option<&RootDeviceHints>) -> Option<String> {
    if !crate::policy::agent::must_wipe(device) {
        let what = if device.read_only == Some(true) {
            "read-only"
        } else {
            "removable"
        };
        return Some(what.to_owned());
    }
    if kernel_name(device).is_none() {
        return Some("no device name in the inventory".to_owned());
    }
    match device.size {
        None => return Some("size unknown".to_owned()),
        Some(0) => return Some("empty (0 bytes; no medium?)".to_owned()),
        Some(_) => {}
    }
    let hints = hints?;
    if let Some(wanted) = &hints.device_name {
        let wanted = wanted.strip_prefix("/dev/").unwrap_or(wanted);
        if kernel_name(device) != Some(wanted) {
            return Some(format!("deviceName is not {wanted}"));
        }
    }
    if let Some(wanted) = &hints.serial
        && device.serial.as_deref() != Some(wanted.as_str())
    {
        return Some(format!(
            "serial {} is not {wanted}",
            device.serial.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(wanted) = &hints.wwn
        && device.wwid.as_deref() != Some(wanted.as_str())
    {
        return Some(format!(
            "wwn {} is not {wanted}",
            device.wwid.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(min) = hints.min_size_gigabytes {
        let size = device.size.unwrap_or(0);
        if size < min.saturating_mul(GIGABYTE) {
            return Some(format!(
                "{:.1} GB is below minSizeGigabytes {min}",
                size as f64 / GIGABYTE as f64
            ));
        }
    }
    if let Some(wanted) = hints.rotational {
        match rotational(device) {
            Some(actual) if actual == wanted => {}
            Some(actual) => {
                return Some(format!("rotational is {actual}, the hint wants {wanted}"));
            }
            None => return Some("rotational unknown, the hint needs it".to_owned()),
        }
    }
    None
}

/// Whether a disk spins: the inventory's `rotational`, else what its type implies (`HDD` spins,
/// `SSD` and `NVME` do not; `VIRTIO` says nothing).
fn rotational(device: &StorageDevice) -> Option<bool> {
    device.rotational.or(match device.type_.as_deref() {
        Some("HDD") => Some(true),
        Some("SSD") | Some("NVME") => Some(false),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = GIGABYTE;

    fn disk(name: &str, size: u64) -> StorageDevice {
        StorageDevice {
            name: Some(name.into()),
            device_name: Some(format!("/dev/{name}")),
            size: Some(size),
            read_only: Some(false),
            removable: Some(false),
            ..StorageDevice::default()
        }
    }

    /// A server with an HDD data disk, a small SSD boot disk, an NVMe disk, a USB stick and a
    /// CD drive.
    fn server() -> Vec<StorageDevice> {
        vec![
            StorageDevice {
                serial: Some("HDD-1".into()),
                wwid: Some("0x5000c500a1b2c3d4".into()),
                rotational: Some(true),
                type_: Some("HDD".into()),
                ..disk("sda", 4000 * GB)
            },
            StorageDevice {
                serial: Some("SSD-1".into()),
                rotational: Some(false),
                type_: Some("SSD".into()),
                ..disk("sdb", 240 * GB)
            },
            StorageDevice {
                serial: Some("NVME-1".into()),
                wwid: Some("eui.0025388b91b4c0a1".into()),
                type_: Some("NVME".into()),
                ..disk("nvme0n1", 960 * GB)
            },
            StorageDevice {
                removable: Some(true),
                ..disk("sdc", 16 * GB)
            },
            StorageDevice {
                read_only: Some(true),
                ..disk("sr0", GB)
            },
        ]
    }

    #[test]
    fn hints_select_the_disk() {
        let table: &[(&str, RootDeviceHints, &str)] = &[
            (
                "no hints: the smallest eligible",
                RootDeviceHints::default(),
                "sdb",
            ),
            (
                "deviceName with /dev/",
                RootDeviceHints {
                    device_name: Some("/dev/sda".into()),
                    ..Default::default()
                },
                "sda",
            ),
            (
                "deviceName without /dev/",
                RootDeviceHints {
                    device_name: Some("nvme0n1".into()),
                    ..Default::default()
                },
                "nvme0n1",
            ),
            (
                "serial",
                RootDeviceHints {
                    serial: Some("NVME-1".into()),
                    ..Default::default()
                },
                "nvme0n1",
            ),
            (
                "wwn",
                RootDeviceHints {
                    wwn: Some("0x5000c500a1b2c3d4".into()),
                    ..Default::default()
                },
                "sda",
            ),
            (
                "minSizeGigabytes counts 10^9 bytes, inclusive",
                RootDeviceHints {
                    min_size_gigabytes: Some(960),
                    ..Default::default()
                },
                "nvme0n1",
            ),
            (
                "rotational true",
                RootDeviceHints {
                    rotational: Some(true),
                    ..Default::default()
                },
                "sda",
            ),
            (
                "rotational false from the NVME type, smallest of the SSDs",
                RootDeviceHints {
                    rotational: Some(false),
                    min_size_gigabytes: Some(241),
                    ..Default::default()
                },
                "nvme0n1",
            ),
            (
                "all hints together",
                RootDeviceHints {
                    device_name: Some("sda".into()),
                    serial: Some("HDD-1".into()),
                    wwn: Some("0x5000c500a1b2c3d4".into()),
                    min_size_gigabytes: Some(1000),
                    rotational: Some(true),
                },
                "sda",
            ),
        ];
        let devices = server();
        for (case, hints, want) in table {
            let chosen =
                choose_root_device(&devices, Some(hints)).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(chosen.name.as_deref(), Some(*want), "{case}");
        }
        let chosen = choose_root_device(&devices, None).expect("a disk");
        assert_eq!(chosen.name.as_deref(), Some("sdb"), "no hints at all");
    }

    #[test]
    fn read_only_and_removable_disks_are_never_chosen() {
        let devices = server();
        for name in ["sdc", "sr0", "/dev/sdc"] {
            let hints = RootDeviceHints {
                device_name: Some(name.into()),
                ..Default::default()
            };
            let error = choose_root_device(&devices, Some(&hints)).expect_err(name);
            let text = error.to_string();
            assert!(text.contains("sdc: removable"), "{text}");
            assert!(text.contains("sr0: read-only"), "{text}");
        }
    }

    /// `(disk, why it was ruled out)` as the error lists them.
    type Reasons = &'static [(&'static str, &'static str)];

    #[test]
    fn no_match_names_each_disk_and_its_reason() {
        let table: &[(&str, RootDeviceHints, Reasons)] = &[
            (
                "serial",
                RootDeviceHints {
                    serial: Some("NOPE".into()),
                    ..Default::default()
                },
                &[
                    ("sda", "serial HDD-1 is not NOPE"),
                    ("sdb", "serial SSD-1 is not NOPE"),
                    ("nvme0n1", "serial NVME-1 is not NOPE"),
                    ("sdc", "removable"),
                    ("sr0", "read-only"),
                ],
            ),
            (
                "size and rotational",
                RootDeviceHints {
                    min_size_gigabytes: Some(1000),
                    rotational: Some(false),
                    ..Default::default()
                },
                &[
                    ("sda", "rotational is true, the hint wants false"),
                    ("sdb", "240.0 GB is below minSizeGigabytes 1000"),
                    ("nvme0n1", "960.0 GB is below minSizeGigabytes 1000"),
                    ("sdc", "removable"),
                    ("sr0", "read-only"),
                ],
            ),
            (
                "wwn and device name",
                RootDeviceHints {
                    device_name: Some("/dev/sdb".into()),
                    wwn: Some("0x1".into()),
                    ..Default::default()
                },
                &[
                    ("sda", "deviceName is not sdb"),
                    ("sdb", "wwn (none) is not 0x1"),
                    ("nvme0n1", "deviceName is not sdb"),
                    ("sdc", "removable"),
                    ("sr0", "read-only"),
                ],
            ),
        ];
        let devices = server();
        for (case, hints, want) in table {
            let error = choose_root_device(&devices, Some(hints)).expect_err(case);
            let got: Vec<(&str, &str)> = error
                .rejected
                .iter()
                .map(|(d, w)| (d.as_str(), w.as_str()))
                .collect();
            assert_eq!(got, *want, "{case}");
            assert!(error.to_string().contains("rootDeviceHints"), "{case}");
        }
    }

    #[test]
    fn unknown_facts_rule_a_disk_out_only_when_a_hint_needs_them() {
        let virtio = StorageDevice {
            type_: Some("VIRTIO".into()),
            ..disk("vda", 10 * GB)
        };
        let devices = [
            virtio.clone(),
            StorageDevice {
                size: None,
                ..disk("vdb", GB)
            },
            StorageDevice {
                size: Some(0),
                ..disk("vdc", GB)
            },
        ];
        let chosen = choose_root_device(&devices, None).expect("vda");
        assert_eq!(chosen.name.as_deref(), Some("vda"));
        let hints = RootDeviceHints {
            rotational: Some(false),
            ..Default::default()
        };
        let error = choose_root_device(&devices, Some(&hints)).expect_err("unknown");
        assert_eq!(
            error.rejected,
            [
                ("vda".into(), "rotational unknown, the hint needs it".into()),
                ("vdb".into(), "size unknown".into()),
                ("vdc".into(), "empty (0 bytes; no medium?)".into()),
            ]
        );
        let nothing = choose_root_device(&[], None).expect_err("no disks");
        assert!(nothing.to_string().contains("lists no disks"), "{nothing}");
    }

    #[test]
    fn ties_go_to_the_first_listed_disk() {
        let devices = [disk("vdb", 10 * GB), disk("vda", 10 * GB)];
        let chosen = choose_root_device(&devices, None).expect("a disk");
        assert_eq!(chosen.name.as_deref(), Some("vdb"));
    }
}
