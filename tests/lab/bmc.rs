//! A simulated BMC for a lab VM: `ipmi_sim` (OpenIPMI) with its LAN side on an address of the
//! lab bridge and its system interface wired to the VM's KCS device
//! (`-device ipmi-bmc-extern` + `-device isa-ipmi-kcs`), so the guest has an in-band BMC too.
//!
//! ipmi_sim answers Set System Boot Options (boot flags) only through a `chassis_control`
//! program, and once it has one it routes power through that program as well, never through
//! its `startcmd` (lanserv/bmc_chassis.c, OpenIPMI 2.0.33). So the program generated here is
//! the machine's power: `set power 1` starts QEMU (daemonized, pid file), `set power 0` kills
//! it, `get power` says whether it runs, `set reset 1` restarts it, `set shutdown 1` presses
//! the ACPI power button through QEMU's monitor, and `set boot pxe` makes the next start a
//! network boot (`-boot order=n`; otherwise `order=c`), after which the flag is consumed, as a
//! BIOS consumes a next-boot-only flag. Each start gets its own serial console file, with
//! SeaBIOS's serial console on, so iPXE's banner shows there. `get boot` answers the flag
//! ipmi_sim reports in Get System Boot Options.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Lab, pid_from_file, run};

/// What the simulated BMC and its machine look like.
pub struct SimBmcConfig {
    /// The BMC's LAN address on the lab bridge (10.77.0.0/24).
    pub address: &'static str,
    pub user: &'static str,
    pub password: &'static str,
    /// The machine's QEMU arguments besides the BMC, firmware console and boot order: memory,
    /// NIC (on a tap from [`Lab::add_tap`]), disks, SMBIOS.
    pub machine: Vec<String>,
}

pub struct SimBmc {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dir: PathBuf,
}

/// The port ipmi_sim listens on for the VM's BMC chardev, on the lab namespace's loopback.
const VM_INTERFACE_PORT: u16 = 9002;
/// QEMU's human monitor, on the lab namespace's loopback (for the ACPI power button).
const MONITOR_PORT: u16 = 4444;

/// A boot sector that writes `SIDERITE-LAB-DISK-BOOT` to COM1 and halts: proof that the
/// machine booted from its disk. 16-bit code at 0x7C00: DS=0, SI=message, loop lodsb → out
/// 0x3F8 until NUL, then cli; hlt.
pub const DISK_BOOT_MARKER: &str = "SIDERITE-LAB-DISK-BOOT";

pub fn boot_disk(path: &Path) {
    let code: [u8; 22] = [
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xBE, 0x16, 0x7C, // mov si, 0x7C16 (the message, right after this code)
        0xAC, // next: lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x06, // jz halt
        0xBA, 0xF8, 0x03, // mov dx, 0x3F8
        0xEE, // out dx, al
        0xEB, 0xF5, // jmp next
        0xFA, // halt: cli
        0xF4, // hlt
        0xEB, 0xFC, // jmp halt
    ];
    let mut sector = code.to_vec();
    sector.extend_from_slice(format!("\r\n{DISK_BOOT_MARKER}\r\n\0").as_bytes());
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xAA]);
    sector.resize(1 << 20, 0);
    std::fs::write(path, sector).expect("boot disk image");
}

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

impl SimBmc {
    /// Starts ipmi_sim in the lab's bridge namespace with its LAN side on `config.address`;
    /// the machine is off until something powers it on.
    pub fn start(lab: &mut Lab, config: SimBmcConfig) -> SimBmc {
        let dir = lab.dir.path().join(format!("bmc-{}", config.address));
        std::fs::create_dir_all(dir.join("state")).expect("BMC directory");
        let lan = lab.lan.clone();
        lab.ns(
            &lan,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", config.address),
                "dev",
                "br0",
            ],
        );
        // SeaBIOS reads its serial console port from this fw_cfg file (a little-endian u16).
        std::fs::write(dir.join("sercon-port"), 0x3F8u16.to_le_bytes()).expect("sercon file");
        let mut qemu: Vec<String> = [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
            "-daemonize",
        ]
        .map(String::from)
        .to_vec();
        qemu.extend([
            "-pidfile".into(),
            dir.join("qemu.pid").display().to_string(),
            "-monitor".into(),
            format!("tcp:127.0.0.1:{MONITOR_PORT},server,nowait"),
            "-fw_cfg".into(),
            format!(
                "name=etc/sercon-port,file={}",
                dir.join("sercon-port").display()
            ),
            "-chardev".into(),
            format!("socket,id=ipmi0,host=127.0.0.1,port={VM_INTERFACE_PORT},reconnect=1"),
            "-device".into(),
            "ipmi-bmc-extern,id=bmc0,chardev=ipmi0".into(),
            "-device".into(),
            "isa-ipmi-kcs,bmc=bmc0".into(),
        ]);
        qemu.extend(config.machine.iter().cloned());
        let qemu = qemu.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
        let chassis = dir.join("chassis-control");
        std::fs::write(
            &chassis,
            format!(
                r#"#!/bin/bash
# ipmi_sim's chassis_control program for the lab VM (see tests/lab/bmc.rs).
# Called as: chassis-control <device> get|set|check <parameter> [<value>] ...
dir={dir}
echo "$(date +%s.%N) ${{*:2}}" >>"$dir/chassis.log"
op=$2
shift 2
running() {{ [[ -s $dir/qemu.pid ]] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; }}
start() {{
  local boot order n
  boot=$(cat "$dir/boot" 2>/dev/null || echo default)
  if [[ $boot == pxe ]]; then order=order=n; echo default >"$dir/boot"; else order=order=c; fi
  n=$(( $(cat "$dir/boots" 2>/dev/null || echo 0) + 1 ))
  echo "$n" >"$dir/boots"
  echo "$(date +%s.%N) start $n boot=$boot" >>"$dir/chassis.log"
  {qemu} -serial "file:$dir/serial-$n.log" -boot "$order" </dev/null >>"$dir/qemu.log" 2>&1
}}
stop() {{
  running || return 0
  local pid
  pid=$(cat "$dir/qemu.pid")
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$dir/qemu.pid"
}}
case $op in
  get)
    for p in "$@"; do
      case $p in
        power) if running; then echo power:1; else echo power:0; fi ;;
        boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
      esac
    done ;;
  set)
    while (($# >= 2)); do
      p=$1 v=$2
      shift 2
      case $p in
        power) if [[ $v == 1 ]]; then running || start; else stop; fi ;;
        reset) stop; start ;;
        boot) echo "$v" >"$dir/boot" ;;
        shutdown)
          if running; then
            exec 3<>/dev/tcp/127.0.0.1/{MONITOR_PORT} && echo system_powerdown >&3 && sleep 0.2
            exec 3>&-
          fi ;;
      esac
    done ;;
  *) exit 1 ;;
esac
"#,
                dir = quote(&dir.display().to_string()),
            ),
        )
        .expect("chassis control program");
        let lancontrol = dir.join("lan-control");
        std::fs::write(
            &lancontrol,
            format!(
                r#"#!/bin/sh
# ipmi_sim's lan_config_program: the LAN parameters of the simulated BMC.
[ "$2" = get ] || exit 1
shift 2
for p in "$@"; do
  case $p in
    ip_addr) echo "ip_addr:{address}" ;;
    ip_addr_src) echo "ip_addr_src:static" ;;
    mac_addr) echo "mac_addr:52:54:00:77:ff:01" ;;
    subnet_mask) echo "subnet_mask:255.255.255.0" ;;
    *_ip_addr) echo "$p:0.0.0.0" ;;
    *_mac_addr) echo "$p:00:00:00:00:00:00" ;;
  esac
done
"#,
                address = config.address
            ),
        )
        .expect("LAN control program");
        run("chmod", &["+x", &chassis.display().to_string()]);
        run("chmod", &["+x", &lancontrol.display().to_string()]);
        std::fs::write(
            dir.join("lan.conf"),
            format!(
                r#"name "lab"
set_working_mc 0x20
  startlan 1
    addr {address} 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    lan_config_program "{lancontrol} lab0"
  endlan
  chassis_control "{chassis} 0x20"
  serial 15 127.0.0.1 {VM_INTERFACE_PORT} codec VM
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"#,
                address = config.address,
                lancontrol = lancontrol.display(),
                chassis = chassis.display(),
                user = config.user,
                password = config.password,
            ),
        )
        .expect("ipmi_sim configuration");
        std::fs::write(
            dir.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .expect("ipmi_sim commands");
        let args: Vec<String> = [
            "-c",
            &dir.join("lan.conf").display().to_string(),
            "-f",
            &dir.join("bmc.emu").display().to_string(),
            "-s",
            &dir.join("state").display().to_string(),
            "-n",
        ]
        .map(String::from)
        .to_vec();
        let name = format!("ipmi_sim-{}", config.address);
        lab.spawn(&name, &lan, "ipmi_sim", &args);
        lab.pid_files.push(dir.join("qemu.pid"));
        for log in ["chassis.log", "qemu.log"] {
            lab.extra_logs
                .push((format!("bmc {}: {log}", config.address), dir.join(log)));
        }
        for n in 1..=6 {
            lab.extra_logs.push((
                format!("bmc {}: VM console, boot {n}", config.address),
                dir.join(format!("serial-{n}.log")),
            ));
        }
        // Ready once the LAN port is bound.
        let deadline = Instant::now() + Duration::from_secs(10);
        let socket = format!("{}:623", config.address);
        loop {
            let bound = Command::new("ip")
                .args(["netns", "exec", &lan, "ss", "-Hunl", "src", &socket])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if bound {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ipmi_sim did not bind {socket}:\n{}",
                lab.read_log(&name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SimBmc {
            address: config.address.to_owned(),
            port: 623,
            user: config.user.to_owned(),
            password: config.password.to_owned(),
            dir,
        }
    }

    /// How many times the machine was started.
    pub fn boots(&self) -> usize {
        std::fs::read_to_string(self.dir.join("boots"))
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The running QEMU's PID.
    pub fn vm_pid(&self) -> Option<i32> {
        pid_from_file(&self.dir.join("qemu.pid"))
    }

    /// The serial console of start number `boot` (1-based), carriage returns removed.
    pub fn console(&self, boot: usize) -> String {
        let bytes = std::fs::read(self.dir.join(format!("serial-{boot}.log"))).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// Waits until start number `boot` printed `text` on its console.
    pub fn wait_for_console(&self, boot: usize, text: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        while !self.console(boot).contains(text) {
            assert!(
                started.elapsed() < timeout,
                "boot {boot} never printed {text:?} within {timeout:?}:\n{}",
                super::tail(&self.console(boot), 3000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        started.elapsed()
    }

    /// What the chassis control program was asked, one line per call.
    pub fn chassis_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chassis.log")).unwrap_or_default()
    }
}
