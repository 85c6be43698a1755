//! The whole server lifecycle in the VM lab with nobody pressing a button: one VM whose power
//! the lab's test-rig API controls (`spec.managementApi`, as Sidero's QEMU rigs did), known to
//! the appliance before it ever booted (an operator listed the rack), switched off.
//!
//! - accepted with kubectl → the controller sets a one-time PXE boot and powers it on → the
//!   discovery agent registers it and wipes it → the agent powers it off;
//! - allocated to a cluster → one-time PXE boot and power on → it netboots the `default`
//!   Environment (the Talos stand-in, which prints the config it fetched and powers off) → once
//!   installed, the controller powers it on again from its disk;
//! - released → one-time PXE boot and power cycle → wiped → off.
//!
//! Each step is checked on the machine itself (how each power-on booted), on the requests its
//! power API received (one action per step, never a second), and on the Server.
//! Faulty BMCs are `tests/power_controller.rs`.

mod lab;

use std::time::Duration;

use lab::cluster::{
    BOOTSTRAP, condition, default_environment, lab_with_upstream, provision_cluster,
    received_config, serve_talos_stand_in, server, smbios, wait_environment_ready, wait_for,
};
use lab::power_api::Start;
use lab::{Firmware, Lab};

const UUID: &str = "4c4c4544-0050-3310-8052-b4c04f0000a1";

/// The POST requests the power API received, without the status polls.
fn actions(api: &lab::power_api::PowerApi) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter_map(|r| r.strip_prefix("POST /").map(str::to_owned))
        .collect()
}

fn power(lab: &Lab) -> String {
    server(lab, UUID)["status"]["power"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn clean(lab: &Lab) -> bool {
    server(lab, UUID)["status"]["isClean"] == true
}

#[test]
fn accept_allocate_and_release_run_by_power_control_alone() {
    // Polls every 2 s so the test sees each change soon; the other timings are the defaults.
    let (mut lab, work, upstream) = lab_with_upstream(&["--power-poll-interval", "2"]);
    let upstream_url = serve_talos_stand_in(&mut lab, &work, &upstream);

    let disk = work.join("disk.img");
    std::fs::write(&disk, vec![0xA5u8; 16 << 20]).expect("disk image");
    let machine = lab.machine(Firmware::SeaBiosVirtio, &smbios(UUID, "POWER1", &disk));
    let api = lab.power_api(&machine);
    lab.kubectl_apply(
        "server",
        &format!(
            "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {{name: {UUID}}}
spec:
  accepted: false
  managementApi: {{endpoint: \"{}\"}}
",
            api.endpoint()
        ),
    );
    wait_for("status.power off before acceptance", 60, &lab, || {
        (power(&lab) == "off").then_some(())
    });
    assert_eq!(
        actions(&api),
        Vec::<String>::new(),
        "an unaccepted server was powered"
    );

    // Accept: PXE once, on; the agent registers, wipes, and powers off by itself.
    lab.kubectl(&[
        "patch",
        "server",
        UUID,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"accepted":true}}"#,
    ]);
    wait_for("the agent's registration", 400, &lab, || {
        server(&lab, UUID)["spec"]["hardware"]
            .is_object()
            .then_some(())
    });
    wait_for("the wipe", 300, &lab, || clean(&lab).then_some(()));
    wait_for("power off after the wipe", 120, &lab, || {
        (!machine.is_on() && power(&lab) == "off").then_some(())
    });
    assert_eq!(machine.starts(), [Start::Network]);
    assert_eq!(actions(&api), ["pxeboot", "poweron"]);
    assert_eq!(
        condition(&server(&lab, UUID), "PowerCycle").map(|c| c.0),
        Some("True".into())
    );

    // Allocate: PXE once, on; the stand-in fetches its config and powers off; installed, the
    // server is started again from its disk.
    lab.kubectl_apply(
        "environment",
        &default_environment(&upstream_url, &upstream),
    );
    wait_environment_ready(&lab, "default", 2);
    let bound = provision_cluster(&lab, "any", 1, "talos", BOOTSTRAP);
    assert_eq!(bound[0].1, UUID);
    wait_for("the Installed condition", 400, &lab, || {
        condition(&server(&lab, UUID), "Installed")
            .filter(|c| c.0 == "True")
            .map(drop)
    });
    wait_for("the start from disk once installed", 300, &lab, || {
        (machine.starts().len() == 3 && machine.is_on()).then_some(())
    });
    assert_eq!(
        machine.starts(),
        [Start::Network, Start::Network, Start::Disk]
    );
    let console = std::fs::read_to_string(machine.vm().serial).unwrap_or_default();
    let config = received_config(&console).expect("the netbooted stand-in printed its config");
    assert!(config.contains("clusterName: production"), "{config}");
    assert_eq!(
        actions(&api),
        ["pxeboot", "poweron", "pxeboot", "poweron", "poweron"]
    );
    wait_for("status.power on", 30, &lab, || {
        (power(&lab) == "on").then_some(())
    });

    // Release: PXE once and cycle (the machine runs its OS); the agent wipes and powers off.
    lab.kubectl(&["delete", "metalmachine", &bound[0].0, "--wait=false"]);
    wait_for("the release to mark the server dirty", 120, &lab, || {
        (!clean(&lab)).then_some(())
    });
    wait_for("the wipe after the release", 400, &lab, || {
        clean(&lab).then_some(())
    });
    wait_for("power off after the second wipe", 120, &lab, || {
        (!machine.is_on() && power(&lab) == "off").then_some(())
    });
    assert_eq!(
        machine.starts(),
        [Start::Network, Start::Network, Start::Disk, Start::Network]
    );
    assert_eq!(
        actions(&api),
        [
            "pxeboot", "poweron", "pxeboot", "poweron", "poweron", "pxeboot", "reboot"
        ]
    );
    // Nothing more happens to a clean, pooled server that is off.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(actions(&api).len(), 7, "{:?}", actions(&api));
}
