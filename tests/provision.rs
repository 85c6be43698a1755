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

mod lab;

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{APPLIANCE_IP, Firmware, HTTP_PORT, Lab, Options};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

const SEED_CLASS: &str = include_str!("fixtures/seed/worker-large.yaml");

struct Vm {
    uuid: &'static str,
    disk: std::path::PathBuf,
}

fn smbios(uuid: &str, serial: &str, disk: &Path) -> Vec<String> {
    [
        "-uuid",
        uuid,
        "-smbios",
        &format!("type=1,manufacturer=Dell Inc.,product=PowerEdge R6525,serial={serial}"),
        "-smbios",
        "type=4,manufacturer=AMD,version=AMD EPYC 7543 32-Core Processor",
        "-drive",
        &format!("file={},if=none,id=disk0,format=raw", disk.display()),
        "-device",
        &format!("virtio-blk-pci,drive=disk0,serial={serial}-VDA"),
    ]
    .map(String::from)
    .to_vec()
}

fn wait_for<T>(what: &str, secs: u64, lab: &Lab, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; servers:\n{}\nmetalmachines:\n{}",
            lab.kubectl(&["get", "servers", "-o", "wide"]),
            lab.kubectl(&["get", "metalmachines", "-o", "yaml"]),
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The Server named `uuid`, or `null` while it does not exist.
fn server(lab: &Lab, uuid: &str) -> Value {
    let list: Value =
        serde_json::from_str(&lab.kubectl(&["get", "servers", "-o", "json"])).expect("JSON");
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["metadata"]["name"] == uuid))
        .cloned()
        .unwrap_or(Value::Null)
}

fn condition(server: &Value, kind: &str) -> Option<(String, String)> {
    server["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

fn sha512_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("asset");
    Sha512::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Talos stand-in: the discovery initramfs (kernel modules and their index) with a second
/// archive appended whose `/init` replaces the agent. Linux unpacks concatenated archives in
/// order, so the later `/init` wins.
fn talos_test_initramfs(discovery: &Path, out: &Path, work: &Path) {
    let root = work.join("talos-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("init"),
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Drivers by modalias, a few rounds: virtio devices appear once virtio_pci is loaded.
for round in 1 2 3; do
  for alias in /sys/bus/*/devices/*/modalias; do modprobe -q "$(cat "$alias")" 2>/dev/null; done
  [ -e /sys/class/net/eth0 ] && break
  sleep 1
done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /udhcpc.sh -n -q -t 20 || echo "SIDERITE-TEST no DHCP lease"
url=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^talos.config=//p')
echo "SIDERITE-TEST talos.config=${url:-missing}"
if wget -q -O /config "$url"; then
  echo "SIDERITE-CONFIG-BEGIN"
  base64 /config
  echo "SIDERITE-CONFIG-END"
else
  echo "SIDERITE-CONFIG-FAILED"
fi
poweroff -f
"#,
    )
    .unwrap();
    std::fs::write(
        root.join("udhcpc.sh"),
        "#!/bin/busybox sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/${mask:-24}\" dev \"$interface\"\n",
    )
    .unwrap();
    for file in ["init", "udhcpc.sh"] {
        lab::run("chmod", &["+x", &root.join(file).display().to_string()]);
    }
    let overlay = work.join("overlay.cpio.gz");
    let script = format!(
        "cd {} && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9 > {}",
        root.display(),
        overlay.display()
    );
    lab::run("sh", &["-c", &script]);
    let mut bytes = std::fs::read(discovery).expect("discovery initramfs");
    bytes.extend(std::fs::read(&overlay).expect("overlay"));
    std::fs::write(out, bytes).expect("test initramfs");
}

/// The config the init printed between its markers, decoded.
fn received_config(console: &str) -> Option<String> {
    let start = console.find("SIDERITE-CONFIG-BEGIN")? + "SIDERITE-CONFIG-BEGIN".len();
    let end = console[start..].find("SIDERITE-CONFIG-END")? + start;
    let encoded: String = console[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 from the VM");
    Some(String::from_utf8(bytes).expect("UTF-8 config"))
}

const BOOTSTRAP: &str = "\
version: v1alpha1
machine:
  type: worker
  token: abc.def
  install:
    disk: /dev/sda
cluster:
  clusterName: production
  controlPlane:
    endpoint: https://10.77.0.50:6443
";

#[test]
fn two_vms_netboot_the_default_environment_with_patched_bootstrap_config() {
    let mut lab = Lab::with(Options {
        discovery_image: true,
        ..Options::default()
    });
    let work = lab.dir.path().to_owned();
    let upstream = work.join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    let discovery = lab::prepare_discovery_image();
    std::fs::copy(discovery.join("vmlinuz"), upstream.join("vmlinuz")).unwrap();
    talos_test_initramfs(
        &discovery.join("initramfs.zst"),
        &upstream.join("initramfs"),
        &work,
    );
    let upstream_url = lab.serve_files(&upstream, 8090);

    let vms = [
        Vm {
            uuid: "4c4c4544-0050-3310-8052-b4c04f000001",
            disk: work.join("vm1.img"),
        },
        Vm {
            uuid: "4c4c4544-0050-3310-8052-b4c04f000002",
            disk: work.join("vm2.img"),
        },
    ];
    let mut first_boots = Vec::new();
    for (index, vm) in vms.iter().enumerate() {
        std::fs::write(&vm.disk, vec![0xA5u8; 16 << 20]).unwrap();
        let args = smbios(vm.uuid, &format!("PROV{index}"), &vm.disk);
        first_boots.push(lab.boot_with(Firmware::SeaBiosVirtio, &args, None));
    }
    for vm in &vms {
        wait_for("registration", 240, &lab, || {
            server(&lab, vm.uuid)["spec"]["hardware"]
                .is_object()
                .then_some(())
        });
        lab.kubectl(&["label", "server", vm.uuid, "rack=rack-a"]);
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
    for vm in &vms {
        wait_for("the wipe", 180, &lab, || {
            (server(&lab, vm.uuid)["status"]["isClean"] == true).then_some(())
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
    let kernel = upstream.join("vmlinuz");
    let initrd = upstream.join("initramfs");
    lab.kubectl_apply(
        "environment",
        &format!(
            "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {{name: default}}
spec:
  kernel:
    url: {upstream_url}/vmlinuz
    sha512: {}
    args: [console=ttyS0, talos.platform=metal]
  initrd:
    url: {upstream_url}/initramfs
    sha512: {}
",
            sha512_file(&kernel),
            sha512_file(&initrd)
        ),
    );
    lab.kubectl_apply(
        "cluster",
        &format!(
            "apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata: {{name: production, namespace: default}}
spec:
  infrastructureRef: {{apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3, kind: MetalCluster, name: production}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalCluster
metadata: {{name: production, namespace: default}}
spec:
  controlPlaneEndpoint: {{host: 10.77.0.50, port: 6443}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachineTemplate
metadata: {{name: production-workers, namespace: default}}
spec:
  template:
    spec:
      serverClassRef: {{apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: worker-large}}
{}",
            (0..2)
                .map(|i| format!(
                    "---
apiVersion: v1
kind: Secret
metadata: {{name: production-workers-{i}-bootstrap, namespace: default}}
type: cluster.x-k8s.io/secret
stringData:
  format: talos
  value: |
{}---
apiVersion: cluster.x-k8s.io/v1beta1
kind: Machine
metadata: {{name: production-workers-{i}, namespace: default}}
spec:
  clusterName: production
  bootstrap: {{dataSecretName: production-workers-{i}-bootstrap}}
",
                    BOOTSTRAP
                        .lines()
                        .map(|l| format!("    {l}\n"))
                        .collect::<String>()
                ))
                .collect::<String>()
        ),
    );
    // Cluster API marks the infrastructure ready once the MetalCluster is; the stand-in Cluster
    // has no controller, so the test does it.
    wait_for("the MetalCluster to be ready", 60, &lab, || {
        (lab.kubectl(&[
            "get",
            "metalcluster",
            "production",
            "-o",
            "jsonpath={.status.ready}",
        ]) == "true")
            .then_some(())
    });
    lab.kubectl(&[
        "patch",
        "cluster",
        "production",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"infrastructureReady":true}}"#,
    ]);
    // The MetalMachines as Cluster API clones them from the template, owned by their Machines.
    for i in 0..2 {
        let uid = lab.kubectl(&[
            "get",
            "machine",
            &format!("production-workers-{i}"),
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        lab.kubectl_apply(
            &format!("metalmachine-{i}"),
            &format!(
                "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachine
metadata:
  name: production-workers-{i}
  namespace: default
  labels: {{cluster.x-k8s.io/cluster-name: production}}
  ownerReferences:
  - {{apiVersion: cluster.x-k8s.io/v1beta1, kind: Machine, name: production-workers-{i}, uid: {uid}}}
spec:
  serverClassRef: {{apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: worker-large}}
"
            ),
        );
    }
    let bound: Vec<(String, String)> = wait_for("both machines bound", 90, &lab, || {
        let pairs: Vec<(String, String)> = (0..2)
            .filter_map(|i| {
                let server = lab.kubectl(&[
                    "get",
                    "metalmachine",
                    &format!("production-workers-{i}"),
                    "-o",
                    "jsonpath={.spec.serverRef.name}",
                ]);
                (!server.is_empty()).then(|| (format!("production-workers-{i}"), server))
            })
            .collect();
        (pairs.len() == 2).then_some(pairs)
    });
    assert_ne!(bound[0].1, bound[1].1, "two machines on one server");
    wait_for("the default Environment to be ready", 120, &lab, || {
        let status = lab.kubectl(&[
            "get",
            "environment",
            "default",
            "-o",
            "jsonpath={.status.conditions[*].status}",
        ]);
        (status == "True True").then_some(())
    });

    // Power on "by hand": the same machines (UUID, disk) boot again.
    let mut consoles = Vec::new();
    for (index, vm) in vms.iter().enumerate() {
        let args = smbios(vm.uuid, &format!("PROV{index}"), &vm.disk);
        consoles.push(lab.boot_with(Firmware::SeaBiosVirtio, &args, None));
    }
    let boot = format!("http://{APPLIANCE_IP}:{HTTP_PORT}");
    for (vm, console) in vms.iter().zip(&consoles) {
        console.wait_for_line("SIDERITE-CONFIG-", "", Duration::from_secs(240));
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
