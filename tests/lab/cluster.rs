//! Helpers for tests that take lab VMs through a cluster's life: the seed hardware in SMBIOS,
//! the Talos stand-in initramfs, the cluster YAML an operator applies, and waits on Servers,
//! MetalMachines and Environments through kubectl.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha512};

use super::{Lab, Options};

/// QEMU arguments for a machine with the seed ServerClass's hardware (Dell, AMD EPYC), SMBIOS
/// `uuid` and `serial`, and `disk` as its virtio disk (serial `<serial>-VDA`).
pub fn smbios(uuid: &str, serial: &str, disk: &Path) -> Vec<String> {
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

/// Polls `f` every second until it returns `Some`; on timeout, fails showing the Servers and
/// MetalMachines.
pub fn wait_for<T>(what: &str, secs: u64, lab: &Lab, mut f: impl FnMut() -> Option<T>) -> T {
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
pub fn server(lab: &Lab, uuid: &str) -> Value {
    let list: Value =
        serde_json::from_str(&lab.kubectl(&["get", "servers", "-o", "json"])).expect("JSON");
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["metadata"]["name"] == uuid))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `(status, reason)` of the condition `kind` of a Server read as JSON.
pub fn condition(server: &Value, kind: &str) -> Option<(String, String)> {
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

/// Hex SHA-512 of a file.
pub fn sha512_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("asset");
    Sha512::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Talos stand-in: the discovery initramfs (kernel modules and their index) with a second
/// archive appended whose `/init` replaces the agent. Linux unpacks concatenated archives in
/// order, so the later `/init` wins.
pub fn talos_test_initramfs(discovery: &Path, out: &Path, work: &Path) {
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
        super::run("chmod", &["+x", &root.join(file).display().to_string()]);
    }
    let overlay = work.join("overlay.cpio.gz");
    let script = format!(
        "cd {} && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9 > {}",
        root.display(),
        overlay.display()
    );
    super::run("sh", &["-c", &script]);
    let mut bytes = std::fs::read(discovery).expect("discovery initramfs");
    bytes.extend(std::fs::read(&overlay).expect("overlay"));
    std::fs::write(out, bytes).expect("test initramfs");
}

/// The cluster around `count` machines of class `class`, as an operator applies it: the
/// stand-in Cluster, the MetalCluster, the MetalMachineTemplate, and per machine its bootstrap
/// Secret (`format`, `value`) and Machine.
pub fn cluster_yaml(class: &str, count: usize, format: &str, value: &str) -> String {
    let indented: String = value.lines().map(|l| format!("    {l}\n")).collect();
    let mut yaml = format!(
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
      serverClassRef: {{apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: {class}}}
"
    );
    for i in 0..count {
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: Secret
metadata: {{name: production-workers-{i}-bootstrap, namespace: default}}
type: cluster.x-k8s.io/secret
stringData:
  format: {format}
  value: |
{indented}---
apiVersion: cluster.x-k8s.io/v1beta1
kind: Machine
metadata: {{name: production-workers-{i}, namespace: default}}
spec:
  clusterName: production
  bootstrap: {{dataSecretName: production-workers-{i}-bootstrap}}
"
        ));
    }
    yaml
}

/// Applies the cluster, marks its infrastructure ready as Cluster API would once the
/// MetalCluster is, creates the MetalMachines as Cluster API clones them from the template,
/// and waits until each is bound; returns (machine, server) pairs.
pub fn provision_cluster(
    lab: &Lab,
    class: &str,
    count: usize,
    format: &str,
    value: &str,
) -> Vec<(String, String)> {
    lab.kubectl_apply("cluster", &cluster_yaml(class, count, format, value));
    wait_for("the MetalCluster to be ready", 60, lab, || {
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
    for i in 0..count {
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
  serverClassRef: {{apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: {class}}}
"
            ),
        );
    }
    wait_for("every machine bound", 90, lab, || {
        let pairs: Vec<(String, String)> = (0..count)
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
        (pairs.len() == count).then_some(pairs)
    })
}

/// Waits until every asset of Environment `name` is ready.
pub fn wait_environment_ready(lab: &Lab, name: &str, assets: usize) {
    let want = vec!["True"; assets].join(" ");
    wait_for("the Environment to be ready", 180, lab, || {
        let status = lab.kubectl(&[
            "get",
            "environment",
            name,
            "-o",
            "jsonpath={.status.conditions[*].status}",
        ]);
        (status == want).then_some(())
    });
}

/// A lab whose appliance (with `appliance_args`) serves the real discovery image, its
/// directory, and an empty `upstream` directory in it for the files an Environment downloads.
pub fn lab_with_upstream(appliance_args: &[&str]) -> (Lab, std::path::PathBuf, std::path::PathBuf) {
    let lab = Lab::with(Options {
        discovery_image: true,
        appliance_args: appliance_args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    });
    let work = lab.dir.path().to_owned();
    let upstream = work.join("upstream");
    std::fs::create_dir_all(&upstream).expect("upstream directory");
    (lab, work, upstream)
}

/// The config the init printed between its markers, decoded.
pub fn received_config(console: &str) -> Option<String> {
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

/// A Talos worker's bootstrap config, as a Cluster API bootstrap provider writes it.
pub const BOOTSTRAP: &str = "\
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

/// The `default` Environment netbooting the Talos stand-in: `vmlinuz` and `initramfs` from the
/// `upstream` directory, served at `upstream_url`, with their SHA-512s.
pub fn default_environment(upstream_url: &str, upstream: &Path) -> String {
    let kernel = upstream.join("vmlinuz");
    let initrd = upstream.join("initramfs");
    format!(
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
    )
}

/// Puts the Talos stand-in (the Debian kernel and [`talos_test_initramfs`]) in `upstream` and
/// serves it from the appliance's namespace; returns its URL.
pub fn serve_talos_stand_in(lab: &mut Lab, work: &Path, upstream: &Path) -> String {
    let discovery = super::prepare_discovery_image();
    std::fs::copy(discovery.join("vmlinuz"), upstream.join("vmlinuz")).expect("copy the kernel");
    talos_test_initramfs(
        &discovery.join("initramfs.zst"),
        &upstream.join("initramfs"),
        work,
    );
    lab.serve_files(upstream, 8090)
}
