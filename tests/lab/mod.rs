//! The VM lab: network namespaces, a bridge, the site DHCP server (dnsmasq, addresses only), the
//! appliance bound to its own veth, and QEMU VMs on tap devices, all created by the test and
//! torn down (by PID and namespace) when the `Lab` is dropped. Serial consoles are captured to
//! files and printed when a test fails.
//!
//! Topology (one `Lab`, its own namespaces, so labs run in parallel without clashing):
//!
//! ```text
//!   netns <id>-lan: br0 10.77.0.1/24  dnsmasq --port=0 (addresses .100-.199 only)
//!        │ tapN ── QEMU VM N
//!        └ vethbr ═══ veth (netns <id>-app): 10.77.0.2/24  siderite serve --interface veth
//! ```
//!
//! Needs root and installs what it needs (`scripts/install-deps`, `scripts/lab-assets`).
#![allow(dead_code)]

pub mod bmc;
pub mod cluster;
pub mod power_api;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const LAN_PREFIX: &str = "10.77.0";
pub const APPLIANCE_IP: &str = "10.77.0.2";
pub const HTTP_PORT: u16 = 8081;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the lab's packages and builds its boot assets once per test binary.
pub fn prepare() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        run(repo().join("scripts/install-deps").to_str().unwrap(), &[]);
        run(repo().join("scripts/lab-assets").to_str().unwrap(), &[]);
    });
    repo().join("target/lab-assets")
}

/// Builds the discovery image (the real agent) once per test binary.
pub fn prepare_discovery_image() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        run(repo().join("discovery-image/build").to_str().unwrap(), &[]);
    });
    repo().join("target/discovery-image")
}

/// Builds the phone-home disk image (`tests/images/build-phone-home-image`) once per test
/// binary; returns the raw image.
pub fn build_phone_home_image() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        run(
            repo()
                .join("tests/images/build-phone-home-image")
                .to_str()
                .unwrap(),
            &[],
        );
    });
    repo().join("target/phone-home-image/disk.img")
}

/// The firmware a VM boots with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Firmware {
    /// SeaBIOS with the iPXE option ROM of virtio-net (Debian's ipxe-qemu).
    SeaBiosVirtio,
    /// SeaBIOS with an e1000 NIC (its iPXE option ROM).
    SeaBiosE1000,
    /// OVMF (UEFI) with EDK2's own PXE client (`romfile=""`), which chainloads ipxe.efi.
    OvmfPxe,
}

pub struct Lab {
    pub id: String,
    pub lan: String,
    pub app: String,
    pub dir: tempfile::TempDir,
    pub assets: PathBuf,
    pub marker: String,
    children: Vec<(String, Child)>,
    vms: usize,
    /// Machines driven through the power API; their QEMU processes stop with the lab.
    machines: Vec<power_api::Machine>,
    /// Processes started on the lab's behalf by programs it ran (a simulated BMC's QEMU):
    /// their pid files, killed by PID on drop.
    pid_files: Vec<PathBuf>,
    /// More logs to print when a test fails: name and file.
    extra_logs: Vec<(String, PathBuf)>,
    taps: usize,
}

pub struct Options {
    /// Start Siderite in the appliance namespace (false: only the network and dnsmasq).
    pub appliance: bool,
    /// Extra arguments for dnsmasq (e.g. to make it a full PXE server for comparisons).
    pub dnsmasq_extra: Vec<String>,
    /// The appliance's TFTP root (default: Debian's /usr/lib/ipxe).
    pub tftp_dir: Option<PathBuf>,
    /// Serve the real discovery image (`discovery-image/build`) instead of the test initramfs.
    pub discovery_image: bool,
    /// Extra `siderite serve` flags.
    pub appliance_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            appliance: true,
            dnsmasq_extra: Vec::new(),
            tftp_dir: None,
            discovery_image: false,
            appliance_args: Vec::new(),
        }
    }
}

impl Lab {
    pub fn start() -> Lab {
        Lab::with(Options::default())
    }

    pub fn with(options: Options) -> Lab {
        let assets = prepare();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("sdr{}x{n}", std::process::id() % 100_000);
        let mut lab = Lab {
            lan: format!("{id}-lan"),
            app: format!("{id}-app"),
            id,
            dir: tempfile::tempdir().expect("temporary directory"),
            assets,
            marker: format!("m{:x}", rand_token()),
            children: Vec::new(),
            vms: 0,
            machines: Vec::new(),
            pid_files: Vec::new(),
            extra_logs: Vec::new(),
            taps: 0,
        };
        lab.network();
        lab.spawn_dnsmasq(&options.dnsmasq_extra);
        if options.appliance {
            lab.spawn_appliance(&options);
        }
        lab
    }

    pub fn ns(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn network(&mut self) {
        run("ip", &["netns", "add", &self.lan]);
        run("ip", &["netns", "add", &self.app]);
        let lan = self.lan.clone();
        let app = self.app.clone();
        self.ns(&lan, &["ip", "link", "set", "lo", "up"]);
        self.ns(&app, &["ip", "link", "set", "lo", "up"]);
        self.ns(&lan, &["ip", "link", "add", "br0", "type", "bridge"]);
        self.ns(
            &lan,
            &[
                "ip",
                "addr",
                "add",
                &format!("{LAN_PREFIX}.1/24"),
                "dev",
                "br0",
            ],
        );
        self.ns(&lan, &["ip", "link", "set", "br0", "up"]);
        // The veth pair is created inside the lan namespace, then one end moves.
        self.ns(
            &lan,
            &[
                "ip", "link", "add", "vethbr", "type", "veth", "peer", "name", "veth",
            ],
        );
        self.ns(&lan, &["ip", "link", "set", "veth", "netns", &app]);
        self.ns(
            &lan,
            &["ip", "link", "set", "vethbr", "master", "br0", "up"],
        );
        self.ns(
            &app,
            &[
                "ip",
                "addr",
                "add",
                &format!("{APPLIANCE_IP}/24"),
                "dev",
                "veth",
            ],
        );
        self.ns(&app, &["ip", "link", "set", "veth", "up"]);
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &str, ns: &str, program: &str, args: &[String]) {
        let log = std::fs::File::create(self.log(name)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        self.children.push((name.to_owned(), child));
    }

    fn spawn_dnsmasq(&mut self, extra: &[String]) {
        let dir = self.dir.path().to_owned();
        let mut args: Vec<String> = [
            "--keep-in-foreground",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--log-dhcp",
            "--log-facility=-",
            "--dhcp-authoritative",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!(
            "--dhcp-range={LAN_PREFIX}.100,{LAN_PREFIX}.199,255.255.255.0,1h"
        ));
        args.push(format!("--dhcp-leasefile={}", dir.join("leases").display()));
        args.push(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
        args.extend(extra.iter().cloned());
        let lan = self.lan.clone();
        self.spawn("dnsmasq", &lan, "dnsmasq", &args);
    }

    /// Kernel arguments the appliance gives the discovery environment; the test kernel's init
    /// echoes its command line, so the marker proves the whole chain ran through the appliance.
    pub fn discovery_args(&self) -> String {
        format!("console=ttyS0 siderite.marker={}", self.marker)
    }

    /// What the test kernel's init prints once the discovery environment booted.
    pub fn marker_arg(&self) -> String {
        format!("siderite.marker={}", self.marker)
    }

    fn spawn_appliance(&mut self, options: &Options) {
        let state = self.dir.path().join("state");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--api-listen".into(),
            "127.0.0.1:0".into(),
            "--interface".into(),
            "veth".into(),
            "--http-listen".into(),
            format!("{APPLIANCE_IP}:{HTTP_PORT}"),
            "--assets-dir".into(),
            self.assets.display().to_string(),
        ];
        if options.discovery_image {
            let dir = prepare_discovery_image();
            args.extend([
                "--discovery-dir".into(),
                dir.display().to_string(),
                "--discovery-args".into(),
                "console=ttyS0".into(),
            ]);
        } else {
            args.extend([
                "--discovery-kernel".into(),
                "vmlinuz".into(),
                "--discovery-initrd".into(),
                "initramfs.gz".into(),
                "--discovery-args".into(),
                self.discovery_args(),
            ]);
        }
        args.extend(options.appliance_args.iter().cloned());
        if let Some(dir) = options.tftp_dir.as_deref() {
            args.extend(["--tftp-dir".into(), dir.display().to_string()]);
        }
        let app = self.app.clone();
        self.spawn("siderite", &app, env!("CARGO_BIN_EXE_siderite"), &args);
        // Ready when the boot HTTP server answers inside the namespace.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("ip")
                .args(["netns", "exec", &app, "curl", "-sf", "-o", "/dev/null"])
                .arg(format!("http://{APPLIANCE_IP}:{HTTP_PORT}/boot.ipxe"))
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the appliance did not start:\n{}",
                self.read_log("siderite")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new tap device on the lab bridge, for a VM that something else starts.
    pub fn add_tap(&mut self) -> String {
        self.taps += 1;
        let tap = format!("xtap{}", self.taps);
        let lan = self.lan.clone();
        self.ns(&lan, &["ip", "tuntap", "add", &tap, "mode", "tap"]);
        self.ns(&lan, &["ip", "link", "set", &tap, "master", "br0", "up"]);
        tap
    }

    /// Whether the QEMU process of `vm` has exited (the guest powered off).
    pub fn vm_exited(&mut self, vm: &Vm) -> bool {
        let name = format!("vm{}-qemu", vm.index);
        self.children
            .iter_mut()
            .find(|(n, _)| *n == name)
            .is_some_and(|(_, child)| child.try_wait().ok().flatten().is_some())
    }

    /// Runs kubectl against the appliance's embedded API server (inside its namespace).
    pub fn kubectl(&self, args: &[&str]) -> String {
        let kubeconfig = self.dir.path().join("state/kubeconfig");
        let mut full = vec![
            "kubectl".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        self.ns(&self.app.clone(), &refs)
    }

    /// Applies `yaml` with kubectl (from a file in the lab directory).
    pub fn kubectl_apply(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("manifest file");
        self.kubectl(&["apply", "-f", &path.display().to_string()])
    }

    /// Serves `dir` over HTTP at `http://APPLIANCE_IP:<port>/` from inside the appliance's
    /// namespace (busybox httpd): a stand-in for the upstream an Environment downloads from.
    pub fn serve_files(&mut self, dir: &Path, port: u16) -> String {
        let app = self.app.clone();
        let args: Vec<String> = [
            "httpd",
            "-f",
            "-p",
            &format!("{APPLIANCE_IP}:{port}"),
            "-h",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        self.spawn(&format!("httpd-{port}"), &app, "/bin/busybox", &args);
        let url = format!("http://{APPLIANCE_IP}:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("ip")
            .args(["netns", "exec", &app, "curl", "-s", "-o", "/dev/null"])
            .arg(&url)
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "busybox httpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        url
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    /// Boots a VM with `firmware` on a new tap device; its serial console goes to a file.
    pub fn boot(&mut self, firmware: Firmware) -> Vm {
        self.boot_with(firmware, &[], None)
    }

    /// [`Lab::boot`] with extra QEMU arguments (SMBIOS, disks) and optionally a second NIC
    /// with this MAC on the same bridge (without a boot ROM, so the first NIC boots).
    pub fn boot_with(
        &mut self,
        firmware: Firmware,
        extra: &[String],
        second_mac: Option<&str>,
    ) -> Vm {
        self.boot_vm(firmware, extra, second_mac, None)
    }

    /// Powers a machine on again after it powered off: a new QEMU process (on a new tap, with
    /// a new console file) with the NIC of `previous`, so the appliance sees the same machine;
    /// `extra` should repeat its SMBIOS and disks.
    pub fn power_on_again(&mut self, previous: &Vm, firmware: Firmware, extra: &[String]) -> Vm {
        self.boot_vm(firmware, extra, None, Some(previous.mac.clone()))
    }

    fn boot_vm(
        &mut self,
        firmware: Firmware,
        extra: &[String],
        second_mac: Option<&str>,
        mac: Option<String>,
    ) -> Vm {
        let vm = self.new_vm(mac);
        let mut args = vec!["-no-reboot".into(), "-serial".into()];
        args.push(format!("file:{}", vm.serial.display()));
        args.extend(self.vm_args(&vm, firmware, VmBoot::Network, extra, second_mac));
        let lan = self.lan.clone();
        self.spawn(
            &format!("vm{}-qemu", vm.index),
            &lan,
            "qemu-system-x86_64",
            &args,
        );
        vm
    }

    /// Numbers a new VM and gives it a tap device on the bridge, a console file and a MAC.
    fn new_vm(&mut self, mac: Option<String>) -> Vm {
        self.vms += 1;
        let n = self.vms;
        let tap = format!("tap{n}");
        let lan = self.lan.clone();
        self.ns(&lan, &["ip", "tuntap", "add", &tap, "mode", "tap"]);
        self.ns(&lan, &["ip", "link", "set", &tap, "master", "br0", "up"]);
        Vm {
            serial: self.log(&format!("vm{n}-serial")),
            mac: mac.unwrap_or_else(|| format!("52:54:00:77:00:{n:02x}")),
            started: Instant::now(),
            index: n,
        }
    }

    /// QEMU's arguments for `vm` (its tap and MAC), without the console and reboot options.
    fn vm_args(
        &mut self,
        vm: &Vm,
        firmware: Firmware,
        boot: VmBoot,
        extra: &[String],
        second_mac: Option<&str>,
    ) -> Vec<String> {
        let (n, mac) = (vm.index, &vm.mac);
        let mut args: Vec<String> = vec![
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            "512".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-netdev".into(),
            format!("tap,id=n0,ifname=tap{n},script=no,downscript=no"),
        ];
        // SeaBIOS network-boots through the NIC's iPXE option ROM: without the ROM it cannot,
        // which is how a disk start keeps off the network.
        let seabios_boot = |args: &mut Vec<String>, nic: String| {
            let (rom, order) = match boot {
                VmBoot::Network => ("", "order=n"),
                VmBoot::NetworkOnce => ("", "once=n,order=c"),
                VmBoot::Disk => (",romfile=", "order=c"),
            };
            args.extend(["-device".into(), format!("{nic}{rom}")]);
            args.extend(["-boot".into(), order.into()]);
        };
        match firmware {
            Firmware::SeaBiosVirtio => {
                seabios_boot(&mut args, format!("virtio-net-pci,netdev=n0,mac={mac}"));
            }
            Firmware::SeaBiosE1000 => {
                seabios_boot(&mut args, format!("e1000,netdev=n0,mac={mac}"));
            }
            Firmware::OvmfPxe => {
                let vars = self.dir.path().join(format!("vm{n}-vars.fd"));
                if !vars.exists() {
                    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF vars");
                }
                // EDK2 PXE-boots through its own driver whenever nothing before it boots; a
                // network start puts the NIC first.
                let first = if boot == VmBoot::NetworkOnce {
                    ",bootindex=0"
                } else {
                    ""
                };
                args.extend([
                    "-drive".into(),
                    "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                    "-drive".into(),
                    format!("if=pflash,format=raw,file={}", vars.display()),
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n0,mac={mac},romfile={first}"),
                ]);
            }
        }
        if let Some(second) = second_mac {
            let tap2 = format!("tap{n}b");
            let lan = self.lan.clone();
            self.ns(&lan, &["ip", "tuntap", "add", &tap2, "mode", "tap"]);
            self.ns(&lan, &["ip", "link", "set", &tap2, "master", "br0", "up"]);
            args.extend([
                "-netdev".into(),
                format!("tap,id=n1,ifname={tap2},script=no,downscript=no"),
                "-device".into(),
                format!("virtio-net-pci,netdev=n1,mac={second},romfile="),
            ]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// A machine whose power the test rig's power API controls (`spec.managementApi`): a
    /// VM with its tap, MAC and console, not started. Each power-on is a new QEMU process
    /// that boots from disk, or from the network once after `pxeboot`; a guest reboot stays
    /// within the power-on, and a guest power-off ends it. `extra` adds SMBIOS and disks.
    pub fn machine(&mut self, firmware: Firmware, extra: &[String]) -> power_api::Machine {
        let vm = self.new_vm(None);
        let disk = self.vm_args(&vm, firmware, VmBoot::Disk, extra, None);
        let network = self.vm_args(&vm, firmware, VmBoot::NetworkOnce, extra, None);
        let machine = power_api::Machine::new(&self.lan, vm, disk, network);
        self.machines.push(machine.clone());
        machine
    }

    /// Serves the power API of `machine` where the appliance reaches it: on loopback inside
    /// the appliance's namespace. Returns the server; its `endpoint()` is what
    /// `spec.managementApi.endpoint` takes.
    pub fn power_api(&self, machine: &power_api::Machine) -> power_api::PowerApi {
        power_api::PowerApi::serve(power_api::listen_in(&self.app), machine.clone())
    }
}

/// How a VM's firmware is told to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VmBoot {
    /// Always from the network (the lab's plain VMs).
    Network,
    /// From the network on this start, then as configured (a BMC's PXE-once).
    NetworkOnce,
    /// Never from the network.
    Disk,
}

pub struct Vm {
    pub serial: PathBuf,
    pub mac: String,
    pub started: Instant,
    /// 1-based number of the VM in its lab.
    pub index: usize,
}

impl Vm {
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits until a console line starts with `prefix` and contains `text`; returns the time
    /// since the VM started.
    pub fn wait_for_line(&self, prefix: &str, text: &str, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .console()
                .lines()
                .any(|l| l.trim_start().starts_with(prefix) && l.contains(text))
            {
                return self.started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "VM console never showed a line {prefix:?}…{text:?} within {timeout:?}:\n{}",
                tail(&self.console(), 3000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn rand_token() -> u64 {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    u64::from_le_bytes(buf)
}

/// The PID in a pid file, if the file names a running process.
pub fn pid_from_file(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop only what this lab started, by PID, then remove its namespaces: first what its
        // programs started (power API machines, pid files), then its own children.
        for machine in &self.machines {
            machine.power_off();
        }
        for file in &self.pid_files {
            if let Some(pid) = pid_from_file(file) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for machine in &self.machines {
                let index = machine.vm().index;
                eprintln!(
                    "---- vm{index} qemu ----\n{}",
                    tail(&machine.qemu_log(), 4000)
                );
            }
            for (name, _) in &self.children {
                eprintln!("---- {name} ----\n{}", tail(&self.read_log(name), 4000));
            }
            for n in 1..=self.vms {
                eprintln!(
                    "---- vm{n} serial ----\n{}",
                    tail(&self.read_log(&format!("vm{n}-serial")), 4000)
                );
            }
            for (name, path) in &self.extra_logs {
                let text =
                    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
                eprintln!("---- {name} ----\n{}", tail(&text, 4000));
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.lan])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.app])
            .status();
    }
}

/// Path of a file in the lab's assets.
pub fn asset(assets: &Path, name: &str) -> PathBuf {
    assets.join(name)
}
