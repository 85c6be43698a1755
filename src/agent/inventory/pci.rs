//! PCI functions from `/sys/bus/pci/devices`, so that GPUs, accelerators and NICs without a
//! driver in the discovery image are visible to qualifiers anyway.

use std::path::Path;

use super::{Problem, link_name, list_dir, read_attr};
use crate::api::{PciDevice, PciInformation};

/// `None` when `/sys/bus/pci/devices` cannot be listed (a machine without PCI has the directory).
pub(super) fn read(root: &Path, problems: &mut Vec<String>) -> Option<PciInformation> {
    let dir = root.join("sys/bus/pci/devices");
    let mut devices = Vec::new();
    // `list_dir` sorts, and addresses sort as text because they are fixed-width hex.
    for address in list_dir(&dir, problems)? {
        let path = dir.join(&address);
        let mut id = |attr: &str, digits: usize| {
            let file = path.join(attr);
            let value = read_attr(&file)?;
            let parsed = hex_id(&value, digits);
            if parsed.is_none() {
                problems.push(
                    Problem::BadValue {
                        path: file,
                        value,
                        expected: "a hexadecimal PCI ID",
                    }
                    .to_string(),
                );
            }
            parsed
        };
        let (vendor_id, device_id, class) = (id("vendor", 4), id("device", 4), id("class", 6));
        let subsystem_vendor_id = id("subsystem_vendor", 4);
        let subsystem_device_id = id("subsystem_device", 4);
        let (Some(vendor_id), Some(device_id), Some(class)) = (vendor_id, device_id, class) else {
            problems.push(Problem::IncompletePciFunction { address }.to_string());
            continue;
        };
        devices.push(PciDevice {
            class_name: class_name(&class).map(str::to_owned),
            driver: link_name(&path.join("driver")),
            address,
            vendor_id,
            device_id,
            class,
            subsystem_vendor_id,
            subsystem_device_id,
        });
    }
    Some(PciInformation { devices })
}

/// `0x10de` → `10de`: lowercase, zero-padded to `digits`, and no longer than that.
fn hex_id(text: &str, digits: usize) -> Option<String> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    let value = u32::from_str_radix(hex, 16).ok()?;
    let id = format!("{value:0digits$x}");
    (id.len() == digits).then_some(id)
}

/// Base class names as the PCI ID database (and `lspci`) spells them.
fn class_name(class: &str) -> Option<&'static str> {
    Some(match class.get(0..2)? {
        "00" => "Unclassified device",
        "01" => "Mass storage controller",
        "02" => "Network controller",
        "03" => "Display controller",
        "04" => "Multimedia controller",
        "05" => "Memory controller",
        "06" => "Bridge",
        "07" => "Communication controller",
        "08" => "Generic system peripheral",
        "09" => "Input device controller",
        "0a" => "Docking station",
        "0b" => "Processor",
        "0c" => "Serial bus controller",
        "0d" => "Wireless controller",
        "0e" => "Intelligent controller",
        "0f" => "Satellite communications controller",
        "10" => "Encryption controller",
        "11" => "Signal processing controller",
        "12" => "Processing accelerators",
        "13" => "Non-Essential Instrumentation",
        "40" => "Coprocessor",
        "ff" => "Unassigned class",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[test]
    fn recorded_functions_are_sorted_with_ids_classes_and_drivers() {
        let mut problems = Vec::new();
        let pci = read(&fixture("dell-epyc"), &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let addresses: Vec<_> = pci.devices.iter().map(|d| d.address.as_str()).collect();
        assert_eq!(
            addresses,
            [
                "0000:00:00.0",
                "0000:00:01.0",
                "0000:00:01.1",
                "0000:00:01.3",
                "0000:00:02.0",
                "0000:00:03.0",
                "0000:00:04.0",
                "0000:00:05.0",
                "0000:00:06.0",
                "0000:00:07.0",
            ]
        );
        let vga = &pci.devices[9];
        assert_eq!(
            (vga.vendor_id.as_str(), vga.device_id.as_str()),
            ("1234", "1111")
        );
        assert_eq!(vga.class, "030000");
        assert_eq!(vga.class_name.as_deref(), Some("Display controller"));
        assert_eq!(vga.driver, None, "no VGA driver in the capture image");
        let nic = &pci.devices[4];
        assert_eq!(nic.class_name.as_deref(), Some("Network controller"));
        assert_eq!(nic.driver.as_deref(), Some("virtio-pci"));
        assert_eq!(nic.subsystem_vendor_id.as_deref(), Some("1af4"));
        assert_eq!(nic.subsystem_device_id.as_deref(), Some("0001"));
    }

    #[test]
    fn hex_ids_are_normalised_and_garbage_rejected() {
        assert_eq!(hex_id("0x10DE", 4).as_deref(), Some("10de"));
        assert_eq!(hex_id("0x1", 4).as_deref(), Some("0001"));
        assert_eq!(hex_id("0x030000", 6).as_deref(), Some("030000"));
        assert_eq!(hex_id("0x12345", 4), None);
        assert_eq!(hex_id("nvidia", 4), None);
    }

    #[test]
    fn function_without_ids_is_left_out_with_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let function = dir.path().join("sys/bus/pci/devices/0000:00:01.0");
        std::fs::create_dir_all(&function).unwrap();
        std::fs::write(function.join("vendor"), "0xzz\n").unwrap();
        let mut problems = Vec::new();
        assert!(read(dir.path(), &mut problems).unwrap().devices.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn class_names_cover_the_base_classes() {
        assert_eq!(class_name("120000"), Some("Processing accelerators"));
        assert_eq!(class_name("0c0330"), Some("Serial bus controller"));
        assert_eq!(class_name("7f0000"), None);
        assert_eq!(class_name(""), None);
    }
}
