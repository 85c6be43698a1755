//! IPMI power control over the wire, against ipmi_sim as the BMC of a QEMU VM in the lab's
//! namespaces: `siderite power` (the appliance's own client, run in the appliance's
//! namespace) powers the VM on, off, cycles and resets it, makes its next boot (only the next)
//! a network boot, and `ipmitool -I lanplus` agrees with every power state it reports. Wrong
//! passwords, unknown users, cipher suite 17 (which ipmi_sim does not offer) and an address
//! nobody answers on fail with errors that say so.
//!
//! Runs as root in namespaces the test creates; the BMC listens on an address of the lab
//! bridge. VM tests take a lock so that one QEMU runs at a time.

mod lab;

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::bmc::{DISK_BOOT_MARKER, SimBmc, SimBmcConfig, boot_disk};
use lab::{Lab, Options};

/// One VM at a time in this test binary.
static ONE_VM: Mutex<()> = Mutex::new(());

const BMC_ADDRESS: &str = "10.77.0.250";
const USER: &str = "admin";
const PASSWORD: &str = "lab-secret-1";
/// iPXE's line when the BIOS hands it the boot (not its option ROM banner, which every boot
/// prints).
const NETWORK_BOOT: &str = "iPXE (PCI 00:03.0) starting execution";

fn lab_without_appliance() -> Lab {
    Lab::with(Options {
        appliance: false,
        ..Options::default()
    })
}

/// The test BMC (admin account [`USER`]) of a machine with these QEMU arguments.
fn sim_bmc(lab: &mut Lab, machine: Vec<String>) -> SimBmc {
    SimBmc::start(
        lab,
        SimBmcConfig {
            address: BMC_ADDRESS,
            user: USER,
            password: PASSWORD,
            machine,
        },
    )
}

/// A machine on the lab bridge with this MAC and these further QEMU arguments.
fn machine(lab: &mut Lab, mac: &str, memory_mib: u32, extra: &[String]) -> Vec<String> {
    let tap = lab.add_tap();
    let mut args = vec![
        "-m".into(),
        memory_mib.to_string(),
        "-netdev".into(),
        format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac}"),
    ];
    args.extend_from_slice(extra);
    args
}

/// A BMC whose machine boots a disk that prints [`DISK_BOOT_MARKER`], or its NIC's iPXE.
fn bmc_with_vm(lab: &mut Lab) -> SimBmc {
    let disk = lab.dir.path().join("boot-disk.img");
    boot_disk(&disk);
    let drive = format!("file={},format=raw,if=virtio", disk.display());
    let machine = machine(lab, "52:54:00:77:aa:01", 256, &["-drive".into(), drive]);
    sim_bmc(lab, machine)
}

/// A BMC whose machine is never powered on: enough for sessions and errors.
fn bmc_without_vm(lab: &mut Lab) -> SimBmc {
    sim_bmc(lab, Vec::new())
}

/// `siderite power <args>` in the appliance's namespace, as the appliance would reach the BMC.
fn siderite_power(lab: &Lab, password: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.app,
            env!("CARGO_BIN_EXE_siderite"),
            "power",
        ])
        .args(args)
        .env("SIDERITE_BMC_PASSWORD", password)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("siderite runs")
}

/// `siderite power <verb…> --ipmi <BMC> --user <user>` that must succeed; its output.
fn power_as(lab: &Lab, user: &str, password: &str, verb: &[&str]) -> String {
    let mut args = verb.to_vec();
    args.extend_from_slice(&["--ipmi", BMC_ADDRESS, "--user", user]);
    let out = siderite_power(lab, password, &args);
    assert!(
        out.status.success(),
        "siderite power {verb:?}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn status(lab: &Lab, extra: &[&str]) -> String {
    power_as(lab, USER, PASSWORD, &[&["status"], extra].concat())
}

fn act(lab: &Lab, verb: &[&str]) {
    power_as(lab, USER, PASSWORD, verb);
}

/// `ipmitool -I lanplus` from the appliance's namespace.
fn ipmitool(lab: &Lab, suite: &str, user: &str, password: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.app, "ipmitool", "-I", "lanplus"])
        .args(["-C", suite, "-H", BMC_ADDRESS, "-U", user, "-E"])
        .args(args)
        .env("IPMI_PASSWORD", password)
        .output()
        .expect("ipmitool runs")
}

/// ipmitool's reading of the power state: `on` or `off`.
fn ipmitool_power(lab: &Lab) -> String {
    let out = ipmitool(lab, "3", USER, PASSWORD, &["chassis", "power", "status"]);
    assert!(out.status.success(), "ipmitool: {}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    line.strip_prefix("Chassis Power is ")
        .unwrap_or_else(|| panic!("unexpected ipmitool output {line:?}"))
        .to_owned()
}

/// The command failed, saying `expected`.
fn fails_with(out: &Output, expected: &str) {
    assert!(!out.status.success(), "should have failed: {}", text(out));
    assert!(text(out).contains(expected), "{}", text(out));
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the VM process runs (or does not).
fn wait_for_vm(bmc: &SimBmc, running: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while bmc.vm_pid().is_some() != running {
        assert!(
            Instant::now() < deadline,
            "the VM process should be {}:\n{}",
            if running { "running" } else { "gone" },
            bmc.chassis_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ipmitool reads the boot device ipmi_sim keeps (Get System Boot Options, parameter 5).
fn assert_boot_device_is_pxe(lab: &Lab) {
    let flags = ipmitool(
        lab,
        "3",
        USER,
        PASSWORD,
        &["chassis", "bootparam", "get", "5"],
    );
    assert!(text(&flags).contains("Force PXE"), "{}", text(&flags));
}

/// Waits until the machine was started `n` times in all, and runs.
fn wait_for_boots(bmc: &SimBmc, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while bmc.boots() < n || bmc.vm_pid().is_none() {
        assert!(
            Instant::now() < deadline,
            "no start number {n}:\n{}",
            bmc.chassis_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both clients report `expected`.
fn both_say(lab: &Lab, expected: &str) {
    assert_eq!(status(lab, &[]), expected, "siderite power status");
    assert_eq!(
        ipmitool_power(lab),
        expected,
        "ipmitool chassis power status"
    );
}

#[test]
fn power_on_off_cycle_and_reset_start_and_stop_the_vm_and_ipmitool_agrees() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab_without_appliance();
    let bmc = bmc_with_vm(&mut lab);
    both_say(&lab, "off");
    assert_eq!(bmc.vm_pid(), None);

    act(&lab, &["on"]);
    wait_for_vm(&bmc, true);
    both_say(&lab, "on");
    bmc.wait_for_console(1, DISK_BOOT_MARKER, Duration::from_secs(60));
    let first = bmc.vm_pid();

    act(&lab, &["off"]);
    wait_for_vm(&bmc, false);
    both_say(&lab, "off");

    act(&lab, &["on"]);
    wait_for_vm(&bmc, true);
    let second = bmc.vm_pid();
    assert_ne!(first, second, "a new VM process");
    bmc.wait_for_console(2, DISK_BOOT_MARKER, Duration::from_secs(60));

    // Cycle: off, then ipmi_sim powers on again a second later: a third start.
    act(&lab, &["cycle"]);
    wait_for_boots(&bmc, 3);
    assert_ne!(bmc.vm_pid(), second, "the cycle replaced the VM process");
    bmc.wait_for_console(3, DISK_BOOT_MARKER, Duration::from_secs(60));
    both_say(&lab, "on");

    // Hard reset: the machine starts again without a power-off state in between.
    act(&lab, &["reset"]);
    assert_eq!(bmc.boots(), 4, "{}", bmc.chassis_log());
    bmc.wait_for_console(4, DISK_BOOT_MARKER, Duration::from_secs(60));
    both_say(&lab, "on");

    // Soft: the BMC presses the ACPI power button (a halted boot sector ignores it).
    act(&lab, &["soft"]);
    assert!(
        bmc.chassis_log().contains("set shutdown 1"),
        "{}",
        bmc.chassis_log()
    );

    act(&lab, &["off"]);
    wait_for_vm(&bmc, false);
    both_say(&lab, "off");
}

#[test]
fn pxe_once_makes_only_the_next_boot_a_network_boot() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab_without_appliance();
    let bmc = bmc_with_vm(&mut lab);

    act(&lab, &["pxe-once"]);
    assert_boot_device_is_pxe(&lab);

    let powered = Instant::now();
    act(&lab, &["on"]);
    wait_for_vm(&bmc, true);
    bmc.wait_for_console(1, NETWORK_BOOT, Duration::from_secs(90));
    eprintln!(
        "network boot reached iPXE {:?} after power on",
        powered.elapsed()
    );
    // iPXE asked the lab's DHCP server for an address.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lab.read_log("dnsmasq").contains("52:54:00:77:aa:01") {
        assert!(
            Instant::now() < deadline,
            "no DHCP from the VM:\n{}",
            lab.read_log("dnsmasq")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The flag was for one boot: a cycle boots the disk again.
    act(&lab, &["cycle"]);
    wait_for_boots(&bmc, 2);
    bmc.wait_for_console(2, DISK_BOOT_MARKER, Duration::from_secs(60));
    assert!(!bmc.console(2).contains(NETWORK_BOOT), "{}", bmc.console(2));
    act(&lab, &["off"]);

    // UEFI mode goes through the same BMC path (ipmi_sim keeps only the device, not the EFI
    // bit: the bytes are checked against ipmitool's in the unit tests).
    act(&lab, &["pxe-once", "--uefi"]);
    assert_boot_device_is_pxe(&lab);
}

#[test]
fn a_wrong_password_or_user_is_an_authentication_error_that_is_not_retried() {
    let mut lab = lab_without_appliance();
    let _bmc = bmc_without_vm(&mut lab);
    // A retry would wait 3 s first: the error must come sooner.
    let started = Instant::now();
    let out = siderite_power(
        &lab,
        "not-the-password",
        &[
            "status",
            "--ipmi",
            BMC_ADDRESS,
            "--user",
            USER,
            "--backoff",
            "3",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "retried: {:?}",
        started.elapsed()
    );
    fails_with(
        &out,
        &format!(
            "BMC ipmi {BMC_ADDRESS}:623: could not read the power state: authentication failed: RAKP message 2 does not verify with the configured password: the password of user \"admin\" is wrong"
        ),
    );
    // ipmitool fails the same way.
    let theirs = ipmitool(
        &lab,
        "3",
        USER,
        "not-the-password",
        &["-v", "chassis", "power", "status"],
    );
    fails_with(&theirs, "RAKP 2 HMAC is invalid");

    let out = siderite_power(
        &lab,
        PASSWORD,
        &["status", "--ipmi", BMC_ADDRESS, "--user", "nobody"],
    );
    fails_with(
        &out,
        "authentication failed: RAKP message 2: the BMC refused with status 0x0d, unauthorized name",
    );
}

#[test]
fn ipmi_sim_offers_suite_3_not_17_and_both_clients_agree() {
    let mut lab = lab_without_appliance();
    let _bmc = bmc_without_vm(&mut lab);
    assert_eq!(status(&lab, &["--cipher-suite", "3"]), "off");
    // auto tries 17 first and falls back to 3.
    assert_eq!(status(&lab, &["--cipher-suite", "auto"]), "off");
    let out = siderite_power(
        &lab,
        PASSWORD,
        &[
            "status",
            "--ipmi",
            BMC_ADDRESS,
            "--user",
            USER,
            "--cipher-suite",
            "17",
        ],
    );
    fails_with(
        &out,
        "not supported: the BMC does not offer cipher suite 17 (Open Session Response: the BMC refused with status 0x04, invalid authentication algorithm)",
    );
    let theirs = ipmitool(&lab, "17", USER, PASSWORD, &["chassis", "power", "status"]);
    fails_with(&theirs, "invalid authentication algorithm");
}

#[test]
fn an_address_nobody_answers_on_times_out_within_the_policy_bound() {
    let lab = lab_without_appliance();
    // 10.77.0.251 is on the lab's subnet, and nothing has it.
    let (timeout, attempts, backoff) = (1.0, 2, 0.2);
    let worst_case = Duration::from_secs_f64(timeout * attempts as f64 + backoff);
    let started = Instant::now();
    let out = siderite_power(
        &lab,
        PASSWORD,
        &[
            "status",
            "--ipmi",
            "10.77.0.251",
            "--user",
            USER,
            "--timeout",
            &timeout.to_string(),
            "--attempts",
            &attempts.to_string(),
            "--backoff",
            &backoff.to_string(),
        ],
    );
    let took = started.elapsed();
    fails_with(
        &out,
        "BMC ipmi 10.77.0.251:623: could not read the power state: no answer within 1s",
    );
    assert!(
        took >= Duration::from_secs_f64(timeout * attempts as f64),
        "{took:?}"
    );
    // The process start and exit are the only slack.
    assert!(
        took <= worst_case + Duration::from_millis(500),
        "{took:?} > {worst_case:?}"
    );
}

/// The Server as kubectl shows it, when it exists.
fn server_json(lab: &Lab, name: &str) -> Option<serde_json::Value> {
    let kubeconfig = lab.dir.path().join("state/kubeconfig");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.app, "kubectl"])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["get", "server", name, "-o", "json"])
        .output()
        .expect("kubectl runs");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("Server JSON"))
}

fn secret_value(lab: &Lab, name: &str, key: &str) -> String {
    let encoded = lab.kubectl(&[
        "get",
        "secret",
        "-n",
        "default",
        name,
        "-o",
        &format!("jsonpath={{.data.{key}}}"),
    ]);
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(encoded.trim().as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 runs");
    String::from_utf8(out.stdout).expect("UTF-8 credentials")
}

#[test]
fn the_discovery_agent_sets_up_a_bmc_user_in_band_that_both_clients_log_in_with() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let uuid = "7c3a4f2e-1b5d-4e6f-8a9b-0c1d2e3f4a5b";
    let mut lab = Lab::with(Options {
        discovery_image: true,
        ..Options::default()
    });
    let machine = machine(
        &mut lab,
        "52:54:00:77:aa:02",
        512,
        &["-uuid".into(), uuid.into()],
    );
    let bmc = sim_bmc(&mut lab, machine);
    // The operator's first power-on: through the BMC, into the network boot.
    act(&lab, &["pxe-once"]);
    act(&lab, &["on"]);
    let started = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(300);
    let server = loop {
        if let Some(server) = server_json(&lab, uuid)
            && !server["spec"]["bmc"].is_null()
        {
            break server;
        }
        assert!(
            Instant::now() < deadline,
            "spec.bmc was never filled; VM console:\n{}",
            lab::tail(&bmc.console(1), 3000)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("spec.bmc filled {:?} after power on", started.elapsed());
    let spec = &server["spec"]["bmc"];
    assert_eq!(spec["endpoint"], BMC_ADDRESS, "{spec}");
    assert_eq!(spec["port"], 623);
    assert_eq!(spec["interface"], "lanplus");
    let secret = format!("{uuid}-bmc");
    assert_eq!(spec["userFrom"]["secretKeyRef"]["name"], secret.as_str());
    assert_eq!(spec["passFrom"]["secretKeyRef"]["key"], "pass");
    let user = secret_value(&lab, &secret, "user");
    let password = secret_value(&lab, &secret, "pass");
    assert_eq!(user, "siderite");
    assert_eq!(password.len(), 16);
    assert_ne!(password, PASSWORD);
    assert!(
        bmc.console(1).contains("BMC user set up"),
        "the agent says so on its console"
    );
    assert!(
        !bmc.console(1).contains(&password),
        "the password is never logged"
    );

    // The appliance's client and ipmitool log in as the new user and see the machine on.
    assert_eq!(power_as(&lab, &user, &password, &["status"]), "on");
    let theirs = ipmitool(&lab, "3", &user, &password, &["chassis", "power", "status"]);
    assert!(theirs.status.success(), "{}", text(&theirs));
    assert_eq!(
        String::from_utf8_lossy(&theirs.stdout).trim(),
        "Chassis Power is on"
    );
    // Administrator privilege: the new user may power the machine off.
    power_as(&lab, &user, &password, &["off"]);
    wait_for_vm(&bmc, false);
    let events = lab.kubectl(&["get", "events", "-A"]);
    assert!(events.contains("BMCConfigured"), "{events}");
}
