//! Real firmware against the appliance in the VM lab: each VM PXE boots through Siderite's
//! ProxyDHCP (the site's dnsmasq only hands out addresses), fetches iPXE over Siderite's TFTP
//! where the firmware needs it, then the discovery kernel and initramfs over Siderite's HTTP,
//! and the test kernel's init prints the kernel arguments the appliance chose.
//!
//! Runs as root in namespaces the test creates; QEMU uses TCG (the iPXE ROM resets in a loop
//! under KVM on these machines).

mod lab;

use std::time::Duration;

use lab::{Firmware, Lab};

fn boots_to_marker(firmware: Firmware, timeout: Duration) {
    let mut lab = Lab::start();
    let vm = lab.boot(firmware);
    let took = vm.wait_for_line("SIDERITE-TEST-MARKER", &lab.marker_arg(), timeout);
    // The appliance added the machine's identity to the discovery kernel's arguments.
    let console = vm.console();
    let line = console
        .lines()
        .find(|l| l.starts_with("SIDERITE-TEST-MARKER"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("siderite.mac={}", vm.mac)),
        "the discovery kernel should know its MAC: {line}"
    );
    eprintln!("{firmware:?} booted the discovery environment in {took:?}");
    // The site DHCP server gave the address; the appliance never did (it has no pool).
    let leases = std::fs::read_to_string(lab.dir.path().join("leases")).unwrap_or_default();
    assert!(
        leases.contains(&vm.mac),
        "dnsmasq should have leased an address to {}: {leases}",
        vm.mac
    );
}

#[test]
fn seabios_ipxe_rom_on_virtio_net_boots_discovery() {
    boots_to_marker(Firmware::SeaBiosVirtio, Duration::from_secs(180));
}

#[test]
fn seabios_with_e1000_boots_discovery() {
    boots_to_marker(Firmware::SeaBiosE1000, Duration::from_secs(180));
}

#[test]
fn ovmf_uefi_pxe_chainloads_ipxe_efi_over_tftp_and_boots_discovery() {
    boots_to_marker(Firmware::OvmfPxe, Duration::from_secs(420));
}
