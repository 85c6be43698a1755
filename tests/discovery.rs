//! End to end in the VM lab: three machines with different SMBIOS identities PXE boot the real
//! discovery image, its agent registers them, and the test reads the Servers back through the
//! API and checks every value the VMs were given. Two are then accepted with kubectl: their disks
//! are wiped (checked on the backing images), they become clean and power off; the third stays
//! unaccepted, untouched and running.

mod lab;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::{Firmware, Lab, Options};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const DISK_MIB: u64 = 64;

struct Machine {
    uuid: Option<&'static str>,
    smbios: Vec<String>,
    second_mac: String,
    disks: Vec<(PathBuf, &'static str, String)>,
}

/// A raw disk image with an MBR signature, a GPT header and its backup, and a marker in the
/// middle (fast wipes leave the middle alone unless discard zeroes it).
fn disk_image(path: &Path) {
    let mut bytes = vec![0xA5u8; (DISK_MIB * MIB) as usize];
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    bytes[512..520].copy_from_slice(b"EFI PART");
    let backup = bytes.len() - 512;
    bytes[backup..backup + 8].copy_from_slice(b"EFI PART");
    std::fs::write(path, bytes).expect("disk image");
}

fn qemu_args(machine: &Machine) -> Vec<String> {
    let mut args = machine.smbios.clone();
    if let Some(uuid) = machine.uuid {
        args.extend(["-uuid".into(), uuid.into()]);
    }
    for (i, (path, kind, serial)) in machine.disks.iter().enumerate() {
        args.extend([
            "-drive".into(),
            format!("file={},if=none,id=disk{i},format=raw", path.display()),
            "-device".into(),
            format!("{kind},drive=disk{i},serial={serial}"),
        ]);
    }
    args
}

fn servers(lab: &Lab) -> Vec<Value> {
    let text = lab.kubectl(&["get", "servers", "-o", "json"]);
    let list: Value = serde_json::from_str(&text).expect("server list JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn wait_for<T>(what: &str, timeout: Duration, lab: &Lab, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; servers: {}",
            lab.kubectl(&["get", "servers", "-o", "wide"])
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn edges_zero(path: &Path) -> bool {
    let bytes = std::fs::read(path).expect("disk image");
    let len = bytes.len();
    bytes[..MIB as usize].iter().all(|&b| b == 0)
        && bytes[len - MIB as usize..].iter().all(|&b| b == 0)
}

fn has_partition_table(path: &Path) -> bool {
    let bytes = std::fs::read(path).expect("disk image");
    bytes[510..512] == [0x55, 0xAA] && &bytes[512..520] == b"EFI PART"
}

#[test]
fn three_machines_register_two_are_accepted_wiped_and_powered_off() {
    let mut lab = Lab::with(Options {
        discovery_image: true,
        ..Options::default()
    });
    let dir = lab.dir.path().to_owned();
    let disk = |name: &str| {
        let path = dir.join(name);
        disk_image(&path);
        path
    };
    let machines = [
        Machine {
            uuid: Some("4c4c4544-0042-3510-8052-b4c04f4d3732"),
            smbios: vec![
                "-smbios".into(),
                "type=0,vendor=Dell Inc.,version=2.14.1,date=08/23/2023".into(),
                "-smbios".into(),
                "type=1,manufacturer=Dell Inc.,product=PowerEdge R6525,version=1.0,serial=7R52MD3,sku=SKU=0A1B,family=PowerEdge".into(),
                "-smbios".into(),
                "type=2,manufacturer=Dell Inc.,product=0DY2X0,serial=BOARD-7R52MD3".into(),
                "-smbios".into(),
                "type=4,manufacturer=Advanced Micro Devices Inc.,version=AMD EPYC 7543 32-Core Processor".into(),
            ],
            second_mac: "52:54:00:77:01:02".into(),
            disks: vec![
                (disk("dell-vda.img"), "virtio-blk-pci", "DELL-VDA-0001".into()),
                (disk("dell-nvme.img"), "nvme", "DELL-NVME-0001".into()),
            ],
        },
        Machine {
            uuid: Some("3a4b5c6d-7e8f-4a1b-8c2d-ac1f6b4e2f10"),
            smbios: vec![
                "-smbios".into(),
                "type=1,manufacturer=Supermicro,product=SYS-120U-TNR,serial=S123456X".into(),
                "-smbios".into(),
                "type=4,manufacturer=Intel(R) Corporation,version=Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into(),
            ],
            second_mac: "52:54:00:77:02:02".into(),
            disks: vec![
                (disk("smc-vda.img"), "virtio-blk-pci", "SMC-VDA-0001".into()),
                (disk("smc-nvme.img"), "nvme", "SMC-NVME-0001".into()),
            ],
        },
        Machine {
            uuid: None,
            smbios: vec![
                "-smbios".into(),
                "type=1,manufacturer=Whitebox,product=No UUID Board".into(),
            ],
            second_mac: "52:54:00:77:03:02".into(),
            disks: vec![
                (disk("nouuid-vda.img"), "virtio-blk-pci", "NOUUID-VDA-1".into()),
                (disk("nouuid-nvme.img"), "nvme", "NOUUID-NVME-1".into()),
            ],
        },
    ];
    let vms: Vec<_> = machines
        .iter()
        .map(|m| lab.boot_with(Firmware::SeaBiosVirtio, &qemu_args(m), Some(&m.second_mac)))
        .collect();

    // Every machine registers; find each Server by its boot MAC. Registration creates the
    // Server, then writes its conditions: wait for both, or a loaded machine shows the gap.
    let registered = wait_for(
        "three registered Servers",
        Duration::from_secs(420),
        &lab,
        || {
            let list = servers(&lab);
            let all_registered = list.iter().all(|s| {
                s["status"]["conditions"]
                    .to_string()
                    .contains("\"Registered\"")
            });
            (list.len() == 3 && all_registered).then_some(list)
        },
    );
    let by_mac = |mac: &str| -> Value {
        registered
            .iter()
            .find(|s| {
                s["spec"]["hardware"]["network"]["interfaces"]
                    .as_array()
                    .is_some_and(|i| i.iter().any(|i| i["mac"] == mac))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no Server has MAC {mac}: {registered:#?}"))
    };
    let mut names = Vec::new();
    for (machine, vm) in machines.iter().zip(&vms) {
        let server = by_mac(&vm.mac);
        let name = server["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let hw = &server["spec"]["hardware"];
        match machine.uuid {
            Some(uuid) => {
                assert_eq!(name, uuid);
                assert_eq!(hw["system"]["uuid"], uuid);
            }
            None => {
                let expected = format!("00000000-0000-0000-0000-{}", vm.mac.replace(':', ""));
                assert_eq!(name, expected, "fallback identity from the boot MAC");
                let conditions = server["status"]["conditions"].to_string();
                assert!(conditions.contains("IdentityFromBootMAC"), "{conditions}");
            }
        }
        assert_eq!(server["spec"]["accepted"], false);
        // NICs: both, with their MACs.
        let macs: Vec<&str> = hw["network"]["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .filter_map(|i| i["mac"].as_str())
            .collect();
        assert_eq!(macs.len(), 2, "{macs:?}");
        assert!(macs.contains(&vm.mac.as_str()) && macs.contains(&machine.second_mac.as_str()));
        // Disks: virtio-blk and NVMe with their serials, types and sizes.
        let devices = hw["storage"]["devices"].as_array().expect("devices");
        for (_, kind, serial) in &machine.disks {
            let device = devices
                .iter()
                .find(|d| d["serialNumber"] == serial.as_str())
                .unwrap_or_else(|| panic!("no disk with serial {serial}: {devices:#?}"));
            let want_type = if *kind == "nvme" { "NVME" } else { "VIRTIO" };
            assert_eq!(device["type"], want_type, "{device}");
            assert_eq!(device["size"], DISK_MIB * MIB, "{device}");
        }
        names.push(name);
    }
    // SMBIOS values given to the Dell and Supermicro VMs.
    let dell = &by_mac(&vms[0].mac)["spec"]["hardware"];
    assert_eq!(dell["system"]["manufacturer"], "Dell Inc.");
    assert_eq!(dell["system"]["productName"], "PowerEdge R6525");
    assert_eq!(dell["system"]["serialNumber"], "7R52MD3");
    assert_eq!(dell["system"]["version"], "1.0");
    assert_eq!(dell["system"]["family"], "PowerEdge");
    assert_eq!(dell["bios"]["vendor"], "Dell Inc.");
    assert_eq!(dell["bios"]["version"], "2.14.1");
    assert_eq!(dell["baseboard"]["serialNumber"], "BOARD-7R52MD3");
    assert_eq!(
        dell["compute"]["processors"][0]["productName"],
        "AMD EPYC 7543 32-Core Processor"
    );
    let smc = &by_mac(&vms[1].mac)["spec"]["hardware"];
    assert_eq!(smc["system"]["manufacturer"], "Supermicro");
    assert_eq!(smc["system"]["productName"], "SYS-120U-TNR");
    assert_eq!(smc["system"]["serialNumber"], "S123456X");
    assert_eq!(
        smc["compute"]["processors"][0]["productName"],
        "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    );
    assert_eq!(smc["compute"]["architecture"], "x86_64");

    // Accept the first two with the operator's command.
    for name in &names[..2] {
        lab.kubectl(&[
            "patch",
            "server",
            name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"accepted":true}}"#,
        ]);
    }
    wait_for(
        "both accepted servers clean",
        Duration::from_secs(300),
        &lab,
        || {
            let list = servers(&lab);
            let clean = |name: &str| {
                list.iter()
                    .any(|s| s["metadata"]["name"] == name && s["status"]["isClean"] == true)
            };
            (clean(&names[0]) && clean(&names[1])).then_some(())
        },
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(lab.vm_exited(&vms[0]) && lab.vm_exited(&vms[1])) {
        assert!(
            Instant::now() < deadline,
            "the accepted VMs did not power off:\n{}",
            lab.kubectl(&["get", "servers", "-o", "wide"])
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    for machine in &machines[..2] {
        for (path, _, serial) in &machine.disks {
            assert!(
                edges_zero(path),
                "{serial}: first and last MiB must be zero"
            );
            assert!(
                !has_partition_table(path),
                "{serial}: partition table must be gone"
            );
        }
    }
    // The third was never accepted: untouched and still running its agent.
    for (path, _, serial) in &machines[2].disks {
        assert!(
            has_partition_table(path),
            "{serial} was wiped without acceptance"
        );
    }
    assert!(
        !lab.vm_exited(&vms[2]),
        "the unaccepted VM must keep running"
    );
    let third = servers(&lab)
        .into_iter()
        .find(|s| s["metadata"]["name"] == names[2].as_str())
        .expect("third server");
    assert_eq!(third["status"]["isClean"], false);
    let events = lab.kubectl(&["get", "events", "-A"]);
    for reason in ["Registered", "Accepted", "Wiping", "Clean"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }
}
