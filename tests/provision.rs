//! End to end in the VM lab, from discovery to a netbooted OS holding its bootstrap data:
//! two VMs with the seed ServerClass's hardware (Dell, AMD EPYC) PXE boot the real discovery
//! image, register, are labelled `rack=rack-a`, accepted with kubectl, wiped and powered off.
//! A cluster (MetalCluster, MetalMachineTemplate, stand-in Cluster and Machines, bootstrap
//! Secrets, MetalMachines as Cluster API clones them) picks them through the seed ServerClass.
//! Powered on again "by hand", each VM netboots the `default` Environment, which the appliance
//! downloaded and verified from an upstream in the lab: the Debian kernel with a test
//! initramfs whose init fetches `talos.config` from its kernel command line, as Talos does,
//! and prints what it received. The test checks it received exactly the bootstrap config with
//! the ServerClass and then the Server patches applied, that the server is then installed
//! and boots from disk, and that the config is refused without the token.
//!
//! The second scenario deploys a disk image: an Environment with `spec.image` (a small raw
//! image with SYSLINUX, the Debian kernel and an init that reads `CIDATA` and phones home,
//! built by `tests/images/build-phone-home-image`, zstd-compressed, checked by SHA-256). The
//! allocated VM boots the agent, which writes the image and a config drive and reports; powered
//! on again, the VM boots its disk, whose init phones home with the user-data it read from the
//! config drive, and the appliance records it.

mod lab;

use std::time::{Duration, Instant};

use lab::cluster::{
    BOOTSTRAP, condition, default_environment, lab_with_upstream, provision_cluster,
    received_config, serve_talos_stand_in, server, smbios, wait_environment_ready, wait_for,
};
use lab::{APPLIANCE_IP, Firmware, HTTP_PORT, Lab};
use serde_json::{Value, json};
use sha2::Digest;

const SEED_CLASS: &str = include_str!("fixtures/seed/worker-large.yaml");

struct Vm {
    uuid: &'static str,
    disk: std::path::PathBuf,
    disk_mib: usize,
}

impl Vm {
    /// The VM's SMBIOS serial (its disk's serial is this with `-VDA`).
    fn serial(&self, index: usize) -> String {
        format!("PROV{}{index}", &self.uuid[self.uuid.len() - 1..])
    }
}

/// Boots `vms` into discovery, waits for their registration, labels them with `label`,
/// accepts them with kubectl, and waits until they are wiped and the agents powered them off.
fn discover_and_pool(lab: &mut Lab, vms: &[Vm], label: &str) -> Vec<lab::Vm> {
    let mut first_boots = Vec::new();
    for (index, vm) in vms.iter().enumerate() {
        std::fs::write(&vm.disk, vec![0xA5u8; vm.disk_mib << 20]).expect("disk image");
        let args = smbios(vm.uuid, &vm.serial(index), &vm.disk);
        first_boots.push(lab.boot_with(Firmware::SeaBiosVirtio, &args, None));
    }
    for vm in vms {
        wait_for("registration", 240, lab, || {
            server(lab, vm.uuid)["spec"]["hardware"]
                .is_object()
                .then_some(())
        });
        lab.kubectl(&["label", "server", vm.uuid, label]);
        lab.kubectl(&[
            "patch",
            "server",
            vm.uuid,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"accepted":true}}"#,
        ]);
    }
    for vm in vms {
        wait_for("the wipe", 180, lab, || {
            (server(lab, vm.uuid)["status"]["isClean"] == true).then_some(())
        });
    }
    // Clean and pooled, the agents power the VMs off.
    let deadline = Instant::now() + Duration::from_secs(120);
    for vm in &first_boots {
        while !lab.vm_exited(vm) {
            assert!(Instant::now() < deadline, "the pooled VM did not power off");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    first_boots
}

#[test]
fn two_vms_netboot_the_default_environment_with_patched_bootstrap_config() {
    let (mut lab, work, upstream) = lab_with_upstream(&[]);
    let upstream_url = serve_talos_stand_in(&mut lab, &work, &upstream);

    let vms = [
        Vm {
            uuid: "4c4c4544-0050-3310-8052-b4c04f000001",
            disk: work.join("vm1.img"),
            disk_mib: 16,
        },
        Vm {
            uuid: "4c4c4544-0050-3310-8052-b4c04f000002",
            disk: work.join("vm2.img"),
            disk_mib: 16,
        },
    ];
    let first_boots = discover_and_pool(&mut lab, &vms, "rack=rack-a");

    // The seed ServerClass, with config patches; one server has its own patches too.
    lab.kubectl_apply("serverclass", SEED_CLASS);
    lab.kubectl(&[
        "patch",
        "serverclass",
        "worker-large",
        "--type",
        "merge",
        "-p",
        &json!({"spec": {
            "configPatches": [
                {"op": "replace", "path": "/machine/install/disk", "value": "/dev/vda"},
                {"op": "add", "path": "/machine/kubelet", "value": {"extraArgs": {"rotate-server-certificates": "true"}}},
            ],
            "strategicPatches": ["machine:\n  network:\n    nameservers: [10.77.0.1]\n"],
        }})
        .to_string(),
    ]);
    lab.kubectl(&[
        "patch",
        "server",
        vms[0].uuid,
        "--type",
        "merge",
        "-p",
        &json!({"spec": {
            "configPatches": [{"op": "add", "path": "/machine/kubelet/extraArgs/node-labels", "value": "rack=rack-a"}],
            "strategicPatches": ["machine:\n  network:\n    hostname: worker-a\n"],
        }})
        .to_string(),
    ]);
    lab.kubectl_apply(
        "environment",
        &default_environment(&upstream_url, &upstream),
    );
    let bound = provision_cluster(&lab, "worker-large", 2, "talos", BOOTSTRAP);
    assert_ne!(bound[0].1, bound[1].1, "two machines on one server");
    wait_environment_ready(&lab, "default", 2);

    // Power on "by hand": the same machines (UUID, disk) boot again.
    let mut consoles = Vec::new();
    for (index, vm) in vms.iter().enumerate() {
        let args = smbios(vm.uuid, &vm.serial(index), &vm.disk);
        consoles.push(lab.power_on_again(&first_boots[index], Firmware::SeaBiosVirtio, &args));
    }
    let boot = format!("http://{APPLIANCE_IP}:{HTTP_PORT}");
    for (vm, console) in vms.iter().zip(&consoles) {
        // The last line the init prints: the end marker, or the failure.
        let deadline = Instant::now() + Duration::from_secs(240);
        while !["SIDERITE-CONFIG-END", "SIDERITE-CONFIG-FAILED"]
            .iter()
            .any(|marker| console.console().contains(marker))
        {
            assert!(
                Instant::now() < deadline,
                "the VM never reported its config:\n{}",
                console.console()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let text = console.console();
        let received = received_config(&text).unwrap_or_else(|| {
            panic!("the VM did not receive its config:\n{text}");
        });
        let received: Value = serde_saphyr::from_str(&received).expect("YAML config");
        let mut expected = json!({
            "version": "v1alpha1",
            "machine": {
                "type": "worker",
                "token": "abc.def",
                "install": {"disk": "/dev/vda"},
                "kubelet": {"extraArgs": {"rotate-server-certificates": "true"}},
                "network": {"nameservers": ["10.77.0.1"]},
            },
            "cluster": {"clusterName": "production", "controlPlane": {"endpoint": "https://10.77.0.50:6443"}},
        });
        if vm.uuid == vms[0].uuid {
            expected["machine"]["kubelet"]["extraArgs"]["node-labels"] = json!("rack=rack-a");
            expected["machine"]["network"]["hostname"] = json!("worker-a");
        }
        assert_eq!(received, expected, "config received by {}", vm.uuid);
        // Its command line carried the allocation's token.
        let token = lab.kubectl(&[
            "get",
            "serverbinding",
            vm.uuid,
            "-o",
            r"jsonpath={.metadata.annotations.siderite\.dev/metadata-token}",
        ]);
        assert!(
            text.contains(&format!(
                "talos.config={boot}/configdata?uuid={}&token={token}",
                vm.uuid
            )),
            "{text}"
        );
        // Kernel, initramfs and config were delivered: installed, and it now boots from disk.
        wait_for("the server to be installed", 60, &lab, || {
            (condition(&server(&lab, vm.uuid), "Installed")
                == Some(("True".into(), "Delivered".into())))
            .then_some(())
        });
        let answer = lab.ns(
            &lab.app.clone(),
            &[
                "curl",
                "-s",
                &format!(
                    "{boot}/ipxe?uuid={}&mac=52-54-00-77-00-09&arch=x86_64",
                    vm.uuid
                ),
            ],
        );
        assert_eq!(answer, "#!ipxe\nexit\n");
        // Without the token: 404.
        let refused = lab.ns(
            &lab.app.clone(),
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{boot}/configdata?uuid={}", vm.uuid),
            ],
        );
        assert_eq!(refused, "404");
    }
}

/// What the phone-home image's init sends back, and how the appliance records it.
const USER_DATA: &str = "#cloud-config\nhostname: image-node\nruncmd: [\"kubeadm join 10.77.0.50:6443 --token abc.def\"]\n";

#[test]
fn a_vm_deploys_a_disk_image_with_a_config_drive_and_phones_home_from_its_disk() {
    let (mut lab, work, upstream) = lab_with_upstream(&[]);
    let image = lab::build_phone_home_image();
    // Served zstd-compressed, checked by the SHA-256 of the file as served.
    lab::run(
        "zstd",
        &[
            "-q",
            "-19",
            "-f",
            &image.display().to_string(),
            "-o",
            &upstream.join("node.img.zst").display().to_string(),
        ],
    );
    let sha256: String =
        sha2::Sha256::digest(std::fs::read(upstream.join("node.img.zst")).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    let upstream_url = lab.serve_files(&upstream, 8090);

    let vm = Vm {
        uuid: "4c4c4544-0050-3310-8052-b4c04f000003",
        disk: work.join("vm3.img"),
        disk_mib: 128,
    };
    let first_boot =
        discover_and_pool(&mut lab, std::slice::from_ref(&vm), "role=image-workers").remove(0);
    let disk_serial = format!("{}-VDA", vm.serial(0));
    lab.kubectl_apply(
        "environment",
        &format!(
            "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {{name: kubeadm-node}}
spec:
  kernel: {{}}
  initrd: {{}}
  image:
    url: {upstream_url}/node.img.zst
    sha256: {sha256}
    format: raw
    compression: zstd
    rootDeviceHints: {{serial: {disk_serial}, minSizeGigabytes: 0}}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {{name: image-workers}}
spec:
  environmentRef: {{name: kubeadm-node}}
  qualifiers:
    systemInformation: [{{manufacturer: Dell Inc.}}]
  selector:
    matchLabels: {{role: image-workers}}
"
        ),
    );
    let bound = provision_cluster(&lab, "image-workers", 1, "cloud-config", USER_DATA);
    assert_eq!(bound[0].1, vm.uuid);
    wait_environment_ready(&lab, "kubeadm-node", 1);

    // Powered on, the allocated server boots the agent, which deploys the image and the config
    // drive, reports, and is told to reboot (QEMU runs with -no-reboot: it exits).
    let deploying = lab.power_on_again(
        &first_boot,
        Firmware::SeaBiosVirtio,
        &smbios(vm.uuid, &vm.serial(0), &vm.disk),
    );
    wait_for("the image to be written", 300, &lab, || {
        (condition(&server(&lab, vm.uuid), "Installed")
            == Some(("True".into(), "ImageWritten".into())))
        .then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lab.vm_exited(&deploying) {
        assert!(
            Instant::now() < deadline,
            "the agent did not reboot after deploying:\n{}",
            deploying.console()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The disk starts with the image, byte for byte, except for the MBR's second partition
    // entry (bytes 462..478), which now describes the config drive.
    let written = std::fs::read(&vm.disk).unwrap();
    let original = std::fs::read(&image).unwrap();
    assert!(
        written[..462] == original[..462] && written[478..original.len()] == original[478..],
        "the disk does not start with the image"
    );
    assert_ne!(
        written[462..478],
        [0u8; 16],
        "no partition entry for the config drive"
    );

    // Powered on again: iPXE is told to exit, the firmware boots the disk, and the image's
    // init finds CIDATA and phones home with the user-data it read.
    let booted = lab.power_on_again(
        &first_boot,
        Firmware::SeaBiosVirtio,
        &smbios(vm.uuid, &vm.serial(0), &vm.disk),
    );
    booted.wait_for_line("PHONE-HOME:", "post", Duration::from_secs(300));
    let console = booted.console();
    assert!(console.contains("PHONE-HOME: posted"), "{console}");
    let message = wait_for("the phone-home to be recorded", 60, &lab, || {
        let server = server(&lab, vm.uuid);
        let installed = server["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Installed" && c["reason"] == "Reported")?
            .clone();
        installed["message"].as_str().map(str::to_owned)
    });
    let digest: String = sha2::Sha256::digest(USER_DATA.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        message.contains(&format!("instance {}", vm.uuid))
            && message.contains("as production-workers-0")
            && message.contains(&format!(
                "user-data it read: {} bytes, sha256 {digest}",
                USER_DATA.len()
            )),
        "the OS read other data than the bootstrap secret: {message}"
    );
}
