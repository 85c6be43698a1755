//! Physical Ethernet NICs from `/sys/class/net`: index, name, MAC, MTU, flags, driver, speed,
//! carrier and PCI address. Addresses come later, from [`super::fill_addresses`].
//!
//! Only interfaces of type 1 (`ARPHRD_ETHER`) with a `device` link are kept: loopback, bridges,
//! bonds, VLANs and tunnels have no device and are not hardware.

use std::fs;
use std::path::Path;

use super::{link_name, list_dir, read_attr, read_number};
use crate::api::NetworkInterface;

/// `ARPHRD_ETHER` in `/sys/class/net/*/type`.
const ARPHRD_ETHER: &str = "1";

/// Interface flags from `linux/if.h` that Sidero reports, with the names Go's `net.Flags`
/// gives them (Sidero's agent printed those), in Go's order.
const IFF_UP: u32 = 0x1;
const IFF_BROADCAST: u32 = 0x2;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_POINTOPOINT: u32 = 0x10;
const IFF_MULTICAST: u32 = 0x1000;

/// `None` when `/sys/class/net` cannot be listed.
pub(super) fn read(root: &Path, problems: &mut Vec<String>) -> Option<Vec<NetworkInterface>> {
    let dir = root.join("sys/class/net");
    let mut interfaces = Vec::new();
    for name in list_dir(&dir, problems)? {
        let path = dir.join(&name);
        let attr = |relative: &str| read_attr(&path.join(relative));
        if attr("type").as_deref() != Some(ARPHRD_ETHER) || !path.join("device").exists() {
            continue;
        }
        let flags = attr("flags").and_then(|hex| {
            u32::from_str_radix(hex.trim_start_matches("0x"), 16)
                .ok()
                .or_else(|| {
                    problems.push(
                        super::Problem::BadValue {
                            path: path.join("flags"),
                            value: hex.clone(),
                            expected: "hexadecimal interface flags",
                        }
                        .to_string(),
                    );
                    None
                })
        });
        let operstate = attr("operstate");
        interfaces.push(NetworkInterface {
            index: read_number(&path.join("ifindex"), "an interface index", problems),
            flags: flags.map(|flags| flags_text(flags, operstate.as_deref())),
            mtu: read_number(&path.join("mtu"), "an MTU", problems),
            mac: attr("address"),
            addresses: Vec::new(),
            driver: link_name(&path.join("device/driver")),
            // The kernel reports -1 (or refuses the read) when the speed is unknown or the
            // link is down.
            speed_mbps: attr("speed")
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|s| *s > 0),
            // Reading `carrier` fails with EINVAL while the interface is down: no link then.
            link: Some(attr("carrier").as_deref() == Some("1")),
            pci_address: pci_address(&path.join("device")),
            name: Some(name),
        });
    }
    Some(interfaces)
}

/// Flags as text, e.g. `up|broadcast|multicast|running`. `running` is not in sysfs `flags`; the
/// kernel derives it (`dev_get_flags`) from the interface being up with an operational state
/// of up or unknown, and so does this.
fn flags_text(flags: u32, operstate: Option<&str>) -> String {
    let running = flags & IFF_UP != 0 && matches!(operstate, Some("up") | Some("unknown"));
    [
        (flags & IFF_UP != 0, "up"),
        (flags & IFF_BROADCAST != 0, "broadcast"),
        (flags & IFF_LOOPBACK != 0, "loopback"),
        (flags & IFF_POINTOPOINT != 0, "pointtopoint"),
        (flags & IFF_MULTICAST != 0, "multicast"),
        (running, "running"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect::<Vec<_>>()
    .join("|")
}

/// The PCI address of the NIC: the device itself, or for virtio NICs the PCI function whose
/// child the `virtioN` device is. USB and platform NICs have none.
fn pci_address(device: &Path) -> Option<String> {
    let resolved = fs::canonicalize(device).ok()?;
    let own = resolved.file_name()?.to_string_lossy().into_owned();
    if is_pci_address(&own) {
        return Some(own);
    }
    if own.starts_with("virtio") {
        let parent = resolved
            .parent()?
            .file_name()?
            .to_string_lossy()
            .into_owned();
        return is_pci_address(&parent).then_some(parent);
    }
    None
}

/// `DDDD:BB:DD.F` in lowercase hex, the form sysfs names PCI functions with; the domain may
/// be longer than four digits (Intel VMD puts its NVMe drives in domain `10000`).
fn is_pci_address(name: &str) -> bool {
    let hex = |part: &str, digits: std::ops::RangeInclusive<usize>| {
        digits.contains(&part.len())
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = name.split(':');
    let (Some(domain), Some(bus), Some(slot), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((device, function)) = slot.split_once('.') else {
        return false;
    };
    hex(domain, 4..=8)
        && hex(bus, 2..=2)
        && hex(device, 2..=2)
        && function.len() == 1
        && function.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[test]
    fn only_physical_ethernet_interfaces_are_listed() {
        let mut problems = Vec::new();
        let nics = read(&fixture("dell-epyc"), &mut problems).unwrap();
        let names: Vec<_> = nics.iter().filter_map(|n| n.name.as_deref()).collect();
        assert_eq!(names, ["eth0", "eth1"], "lo is left out");
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn up_and_down_interfaces_read_as_the_kernel_reports_them() {
        let mut problems = Vec::new();
        let nics = read(&fixture("dell-epyc"), &mut problems).unwrap();
        let (up, down) = (&nics[0], &nics[1]);
        assert_eq!(up.index, Some(2));
        assert_eq!(up.mtu, Some(1500));
        assert_eq!(up.flags.as_deref(), Some("up|broadcast|multicast|running"));
        assert_eq!((up.link, up.speed_mbps), (Some(true), Some(10000)));
        assert_eq!(down.index, Some(3));
        assert_eq!(down.flags.as_deref(), Some("broadcast|multicast"));
        assert_eq!((down.link, down.speed_mbps), (Some(false), None));
    }

    #[test]
    fn flags_text_names_the_set_bits_in_go_order() {
        assert_eq!(
            flags_text(0x1003, Some("up")),
            "up|broadcast|multicast|running"
        );
        assert_eq!(flags_text(0x1003, Some("down")), "up|broadcast|multicast");
        assert_eq!(flags_text(0x9, Some("unknown")), "up|loopback|running");
        assert_eq!(flags_text(0x10, None), "pointtopoint");
        assert_eq!(flags_text(0, None), "");
    }

    #[test]
    fn pci_addresses_are_recognised() {
        assert!(is_pci_address("0000:00:1f.2"));
        assert!(is_pci_address("10000:e0:17.0"));
        assert!(!is_pci_address("0000:00:1f"));
        assert!(!is_pci_address("0000:00:1f.2:3"));
        assert!(!is_pci_address("virtio0"));
        assert!(!is_pci_address("0000:00:1f.8"));
        assert!(!is_pci_address("0000:00:1F.2"));
        assert!(!is_pci_address("usb1"));
    }
}
