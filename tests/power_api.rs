//! The `spec.managementApi` power client (`siderite::power::http_api`) against the lab's
//! test-rig power API driving a real QEMU VM: power on and off start and stop the VM's QEMU
//! process, `pxeboot` makes the next start (only the next) a network boot, seen as the VM's
//! DHCP request at the lab's dnsmasq. The API is served on loopback; the VM sits on the lab's
//! bridge inside the namespaces the test creates.

mod lab;

use std::time::Duration;

use lab::power_api::{PowerApi, Start, wait_until};
use lab::{Firmware, Lab, Options};
use siderite::power::http_api::HttpApi;
use siderite::power::{BootMode, CallPolicy, PowerAction, PowerManager, PowerState};

fn leased(lab: &Lab, mac: &str) -> bool {
    std::fs::read_to_string(lab.dir.path().join("leases")).is_ok_and(|l| l.contains(mac))
}

#[test]
fn the_management_api_client_powers_a_lab_vm_and_pxe_boots_it_once() {
    let mut lab = Lab::with(Options {
        appliance: false,
        ..Options::default()
    });
    let machine = lab.machine(Firmware::SeaBiosVirtio, &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let server = PowerApi::serve(listener, machine.clone());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let api = HttpApi::new(server.endpoint(), CallPolicy::default()).expect("endpoint");
    let state = || runtime.block_on(api.power_state()).expect("power state");
    let mac = machine.vm().mac;

    assert_eq!(state(), PowerState::Off);
    runtime
        .block_on(api.power(PowerAction::On))
        .expect("power on");
    assert!(machine.is_on(), "{}", machine.qemu_log());
    assert_eq!(state(), PowerState::On);
    let first = machine.pid().expect("QEMU runs");
    // A plain start boots without the network: no DHCP from this VM (a network start asks
    // within about three seconds).
    std::thread::sleep(Duration::from_secs(6));
    assert!(!leased(&lab, &mac), "a disk start asked for an address");

    // PXE once, then a cycle: a new QEMU process that boots from the network and asks the
    // site's DHCP server for an address.
    runtime
        .block_on(api.pxe_once(BootMode::Bios))
        .expect("pxeboot");
    runtime
        .block_on(api.power(PowerAction::Cycle))
        .expect("reboot");
    let second = machine.pid().expect("QEMU runs again");
    assert_ne!(first, second);
    wait_until(
        Duration::from_secs(90),
        "the VM's network boot asked dnsmasq",
        || leased(&lab, &mac),
    );

    runtime
        .block_on(api.power(PowerAction::Off))
        .expect("power off");
    assert_eq!(state(), PowerState::Off);
    assert!(!std::path::Path::new(&format!("/proc/{second}")).exists());

    // The PXE boot was for one start only.
    runtime
        .block_on(api.power(PowerAction::On))
        .expect("power on");
    assert_eq!(machine.starts(), [Start::Disk, Start::Network, Start::Disk]);
    runtime
        .block_on(api.power(PowerAction::Off))
        .expect("power off");

    // The appliance's way in: the same API on loopback inside the appliance's namespace.
    let inside = lab.power_api(&machine);
    let app = lab.app.clone();
    let status = lab.ns(
        &app,
        &[
            "curl",
            "-sf",
            &format!("http://{}/status", inside.endpoint()),
        ],
    );
    assert_eq!(status.trim(), r#"{"PoweredOn":false}"#);
    assert_eq!(
        server.requests(),
        [
            "GET /status",
            "POST /poweron",
            "GET /status",
            "POST /pxeboot",
            "POST /reboot",
            "POST /poweroff",
            "GET /status",
            "POST /poweron",
            "POST /poweroff",
        ]
    );
}
