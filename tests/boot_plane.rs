//! The boot plane's sockets in the lab, against real clients: ProxyDHCP answers a relayed
//! request by unicast to the relay and ignores non-PXE clients; TFTP serves 1 MB and 64 MB files
//! intact to tftp-hpa's `tftp` and to curl at several block sizes; without `--interface` no DHCP
//! or TFTP runs at all. Needs root; every packet stays inside the test's namespaces.

mod common;
mod lab;

use std::path::Path;

use lab::{APPLIANCE_IP, Lab, Options};

/// A BOOTREQUEST as a relay agent forwards it: giaddr set, hops 1, options 53, 60, 93, 97.
const RELAY_SCRIPT: &str = r#"
import socket, struct, sys
giaddr, server, pxe = sys.argv[1], sys.argv[2], sys.argv[3] == "pxe"
mac = bytes.fromhex("525400770042")
pkt = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, 0x1234abcd, 0, 0,
                  bytes(4), bytes(4), bytes(4), socket.inet_aton(giaddr), mac + bytes(10),
                  bytes(64), bytes(128))
opts = b"\x63\x82\x53\x63" + b"\x35\x01\x01"
if pxe:
    opts += b"\x3c\x20PXEClient:Arch:00000:UNDI:002001"
    opts += b"\x5d\x02\x00\x00"
    opts += b"\x61\x11\x00" + bytes(range(1, 17))
opts += b"\xff"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((giaddr, 67))
s.settimeout(3)
s.sendto(pkt + opts, (server, 67))
try:
    data, peer = s.recvfrom(2048)
except socket.timeout:
    print("NO-REPLY")
    sys.exit(0)
yiaddr = socket.inet_ntoa(data[16:20])
siaddr = socket.inet_ntoa(data[20:24])
file = data[108:236].split(b"\0")[0].decode()
print("REPLY", peer[0], peer[1], data[0], hex(struct.unpack("!I", data[4:8])[0]), yiaddr, siaddr, file)
"#;

fn relay(lab: &Lab, pxe: bool) -> String {
    let script = lab.dir.path().join("relay.py");
    std::fs::write(&script, RELAY_SCRIPT).unwrap();
    lab.ns(
        &lab.lan,
        &[
            "python3",
            script.to_str().unwrap(),
            &format!("{}.1", lab::LAN_PREFIX),
            APPLIANCE_IP,
            if pxe { "pxe" } else { "plain" },
        ],
    )
}

#[test]
fn relayed_pxe_request_is_answered_by_unicast_to_the_relay() {
    let lab = Lab::start();
    let out = relay(&lab, true);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"REPLY"), "{out}");
    // From the appliance's port 67 to the relay's port 67; a BOOTREPLY for the same xid that
    // leaves yiaddr to the site DHCP server and names the BIOS boot file.
    assert_eq!(
        &words[1..],
        [
            APPLIANCE_IP,
            "67",
            "2",
            "0x1234abcd",
            "0.0.0.0",
            APPLIANCE_IP,
            "undionly.kpxe"
        ],
        "{out}"
    );
}

#[test]
fn non_pxe_request_gets_no_reply() {
    let lab = Lab::start();
    let out = relay(&lab, false);
    assert_eq!(out.trim(), "NO-REPLY");
}

fn write_file(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(path, data).unwrap();
}

#[test]
fn tftp_serves_real_clients_1mb_and_64mb_intact() {
    let root = tempfile::tempdir().unwrap();
    write_file(&root.path().join("one.bin"), 1 << 20, 7);
    write_file(&root.path().join("big.bin"), 64 << 20, 11);
    let lab = Lab::with(Options {
        tftp_dir: Some(root.path().to_owned()),
        ..Options::default()
    });
    let out = lab.dir.path();
    let url = |name: &str| format!("tftp://{APPLIANCE_IP}/{name}");
    for (name, blksize) in [("one.bin", "512"), ("one.bin", "1468"), ("big.bin", "1468")] {
        let dest = out.join(format!("{name}.{blksize}"));
        lab.ns(
            &lab.lan,
            &[
                "curl",
                "-sS",
                "--tftp-blksize",
                blksize,
                "-o",
                dest.to_str().unwrap(),
                &url(name),
            ],
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(root.path().join(name)).unwrap(),
            "curl {name} at blksize {blksize}"
        );
    }
    let dest = out.join("one.tftp-hpa");
    lab.ns(
        &lab.lan,
        &[
            "tftp",
            "-m",
            "binary",
            APPLIANCE_IP,
            "-c",
            "get",
            "one.bin",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(root.path().join("one.bin")).unwrap()
    );
    // Traversal and absolute paths through a real client are refused.
    for name in ["../etc/passwd", "/etc/passwd"] {
        let refused = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.lan, "curl", "-sS", "-o", "/dev/null"])
            .arg(url(name))
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{name} must be refused");
    }
}

#[test]
fn without_an_interface_no_dhcp_or_tftp_runs_and_the_log_says_so() {
    let appliance = common::Appliance::start();
    common::eventually(10, "the boot plane's log line", || {
        appliance
            .log_text()
            .contains("no --interface given: ProxyDHCP and TFTP are off")
            .then_some(())
    });
    assert!(
        !appliance
            .log_text()
            .contains("ProxyDHCP (67, 4011) and TFTP (69) listening")
    );
}
