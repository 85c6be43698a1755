//! The lab's test-rig power API: what `spec.managementApi` points at for a lab VM, speaking
//! what Sidero's client sends (`POST /poweron`, `/poweroff`, `/reboot`, `/pxeboot`, each
//! answered 200; `GET /status` answered `{"PoweredOn": bool}`; other methods 501, as Talos's
//! QEMU launcher does). Power-on starts the machine's QEMU process, power-off kills it (a hard
//! off), reboot does both, and `pxeboot` makes the next start (only the next) a network boot.
//!
//! ```ignore
//! let machine = lab.machine(Firmware::SeaBiosVirtio, &smbios);   // not started
//! let api = lab.power_api(&machine);                              // in the appliance's netns
//! // spec.managementApi.endpoint: api.endpoint()
//! machine.vm().wait_for_line("SIDERITE-TEST-MARKER", …);          // its console, all starts
//! assert_eq!(machine.starts(), [Start::Network, Start::Disk]);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Vm;

/// How one power-on booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the network (after `pxeboot`).
    Network,
    /// Without the network.
    Disk,
}

/// A lab VM under power control; clones share the machine.
#[derive(Clone)]
pub struct Machine(Arc<Mutex<State>>);

struct State {
    namespace: String,
    vm: Vm,
    disk_args: Vec<String>,
    network_args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    pxe_next: bool,
    starts: Vec<Start>,
}

impl Machine {
    pub(super) fn new(
        namespace: &str,
        vm: Vm,
        disk_args: Vec<String>,
        network_args: Vec<String>,
    ) -> Machine {
        let log = vm.serial.with_file_name(format!("vm{}-qemu.log", vm.index));
        Machine(Arc::new(Mutex::new(State {
            namespace: namespace.to_owned(),
            vm,
            disk_args,
            network_args,
            log,
            child: None,
            pxe_next: false,
            starts: Vec::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own failure.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The VM's console (every start appends to it), MAC and number.
    pub fn vm(&self) -> Vm {
        let state = self.state();
        Vm {
            serial: state.vm.serial.clone(),
            mac: state.vm.mac.clone(),
            started: state.vm.started,
            index: state.vm.index,
        }
    }

    /// Whether QEMU runs (it exits when the guest powers off).
    pub fn is_on(&self) -> bool {
        let mut state = self.state();
        match state.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                state.child = None;
                false
            }
            None => false,
        }
    }

    /// How each power-on so far booted.
    pub fn starts(&self) -> Vec<Start> {
        self.state().starts.clone()
    }

    /// The QEMU process's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.is_on()
            .then(|| self.state().child.as_ref().map(Child::id))
            .flatten()
    }

    pub fn power_on(&self) -> Result<(), String> {
        if self.is_on() {
            return Ok(());
        }
        let mut state = self.state();
        let network = std::mem::take(&mut state.pxe_next);
        let args = if network {
            state.network_args.clone()
        } else {
            state.disk_args.clone()
        };
        let serial = state.vm.serial.display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&state.log)
            .map_err(|e| format!("cannot open {}: {e}", state.log.display()))?;
        let stderr = log.try_clone().map_err(|e| e.to_string())?;
        // `ip netns exec` execs QEMU in place, so the child's PID is QEMU's.
        let child = Command::new("ip")
            .args(["netns", "exec", &state.namespace, "qemu-system-x86_64"])
            .args([
                "-chardev",
                &format!("file,id=console,path={serial},append=on"),
            ])
            .args(["-serial", "chardev:console"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start QEMU: {e}"))?;
        state.child = Some(child);
        state
            .starts
            .push(if network { Start::Network } else { Start::Disk });
        Ok(())
    }

    /// A hard power-off: QEMU is killed (by its PID).
    pub fn power_off(&self) {
        if let Some(mut child) = self.state().child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pxe_boot_next(&self) {
        self.state().pxe_next = true;
    }

    /// The QEMU processes' own output (errors starting a VM end up here).
    pub fn qemu_log(&self) -> String {
        std::fs::read_to_string(&self.state().log).unwrap_or_default()
    }
}

/// A listener on a free loopback port inside network namespace `ns`: a socket keeps the
/// namespace it was made in, so a thread enters the namespace only to bind it.
pub fn listen_in(ns: &str) -> TcpListener {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd changes only this short-lived thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        TcpListener::bind("127.0.0.1:0").expect("bind loopback in the namespace")
    })
    .join()
    .expect("binding thread")
}

/// The power API of one machine, served from a thread until dropped.
pub struct PowerApi {
    endpoint: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl PowerApi {
    pub fn serve(listener: TcpListener, machine: Machine) -> PowerApi {
        let endpoint = listener.local_addr().expect("bound address").to_string();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stopped, log) = (Arc::clone(&stop), Arc::clone(&requests));
        std::thread::spawn(move || {
            // Non-blocking accepts, so the thread notices the stop flag.
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        handle(stream, &machine, &log);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        PowerApi {
            endpoint,
            stop,
            requests,
        }
    }

    /// `host:port`, the form Sidero's `spec.managementApi.endpoint` takes.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `METHOD /path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for PowerApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One HTTP/1.1 request, as the test rigs read it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// Reads one request from `stream` (waiting at most 5 s for it); returns it and a handle to
/// write the answer on.
pub fn read_request(stream: TcpStream) -> Option<(Request, TcpStream)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let writer = stream.try_clone().ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut length = 0u64;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or_default();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    let _ = reader.take(length).read_to_end(&mut body);
    let mut parts = line.split_whitespace();
    let request = Request {
        method: parts.next().unwrap_or("").to_owned(),
        path: parts.next().unwrap_or("").to_owned(),
        authorization,
        body,
    };
    Some((request, writer))
}

fn handle(stream: TcpStream, machine: &Machine, log: &Mutex<Vec<String>>) {
    // Sidero sends no body; whatever comes is read and ignored.
    let Some((request, mut writer)) = read_request(stream) else {
        return;
    };
    let (method, path) = (request.method.as_str(), request.path.as_str());
    if let Ok(mut log) = log.lock() {
        log.push(format!("{method} {path}"));
    }
    let action = path.rsplit('/').next().unwrap_or("");
    let (status, body) = match (method, action) {
        ("GET" | "HEAD", "status") => {
            ("200 OK", format!("{{\"PoweredOn\":{}}}\n", machine.is_on()))
        }
        ("POST", "poweron") => result(machine.power_on()),
        ("POST", "poweroff") => {
            machine.power_off();
            ("200 OK", String::new())
        }
        ("POST", "reboot") => {
            machine.power_off();
            result(machine.power_on())
        }
        ("POST", "pxeboot") => {
            machine.pxe_boot_next();
            ("200 OK", String::new())
        }
        (_, "status" | "poweron" | "poweroff" | "reboot" | "pxeboot") => {
            ("501 Not Implemented", String::new())
        }
        _ => ("404 Not Found", String::new()),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let _ = write!(
        writer,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn result(outcome: Result<(), String>) -> (&'static str, String) {
    match outcome {
        Ok(()) => ("200 OK", String::new()),
        Err(error) => ("500 Internal Server Error", error),
    }
}

/// Waits until `done` holds, or panics after `timeout` saying `what`.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
