//! The agent's life as PID 1 of the discovery image: mount the kernel filesystems, load drivers
//! for the hardware present, bring up the boot NIC, collect the inventory, register, and then do
//! what the appliance says until it says to power off or reboot. Nothing here ever exits the
//! process (PID 1 exiting panics the kernel): failures are logged and retried.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::agent::client::{ApplianceClient, ClientError};
use crate::agent::console::Console;
use crate::agent::{bmc, deploy, image, inventory, modules, net, wipe};
use crate::api::agent::{
    BmcReport, BmcSetupResult, ConfigDriveSource, DeployReport, DeployResult, Directive,
    DiskProgress, Heartbeat, ImageDeployment, LogLines, Registered, Registration, WipeMode,
    WipeReport,
};

/// How long one directive long poll may be held by the appliance.
const DIRECTIVE_WAIT: Duration = Duration::from_secs(30);

/// Pause before retrying after the appliance could not be reached.
const RETRY: Duration = Duration::from_secs(5);

/// Pause before retrying a registration the appliance refused (e.g. an identity conflict,
/// which only an operator can resolve).
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// How often wipe progress and heartbeats are sent while wiping.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Modules loaded even though no device asks for them by modalias.
const ALWAYS_LOAD: &[&str] = &["ipmi_devintf"];

/// Kernel command line parameter naming the appliance.
pub const URL_PARAM: &str = "siderite.url=";
/// Kernel command line flag that turns on the agent's debug log (e.g. every DHCP datagram it
/// ignores), for an operator chasing a machine that does not register.
pub const DEBUG_PARAM: &str = "siderite.debug";

/// How the machine's work ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    PowerOff,
    Reboot,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the kernel command line has no {URL_PARAM}http://<appliance>:<port>; boot the machine through the appliance's iPXE script"
    )]
    NoUrl,
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("bringing up the network failed: {0}")]
    Net(#[from] net::NetError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent's async runtime could not start: {0}")]
    Runtime(std::io::Error),
}

/// What the kernel command line tells the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    pub url: String,
    pub mac_hint: Option<[u8; 6]>,
}

/// Reads `siderite.url=` and `siderite.mac=`; the last of each wins, as for kernel parameters.
pub fn boot_params(cmdline: &str) -> Result<BootParams, AgentError> {
    let url = cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix(URL_PARAM))
        .next_back()
        .ok_or(AgentError::NoUrl)?;
    Ok(BootParams {
        url: url.to_owned(),
        mac_hint: net::boot_mac_hint(cmdline),
    })
}

/// Runs as PID 1: never returns.
pub fn pid1() -> ! {
    // Mount first: whether to log at debug level is on the command line in /proc.
    let mount_failures = mount_kernel_filesystems();
    let debug = std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|cmdline| cmdline.split_ascii_whitespace().any(|w| w == DEBUG_PARAM));
    let console = Console::default();
    console.install(if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    });
    for (target, error) in mount_failures {
        warn!(target = %target.display(), %error, "mount failed");
    }
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "siderite-agent starting"
    );
    loop {
        match run(&console) {
            Ok(Finish::PowerOff) => power(libc::RB_POWER_OFF),
            Ok(Finish::Reboot) => power(libc::RB_AUTOBOOT),
            Err(error) => {
                error!(%error, "agent failed; retrying in 30 s");
                std::thread::sleep(Duration::from_secs(30));
            }
        }
    }
}

/// Powers off or reboots the machine after syncing disks.
fn power(how: libc::c_int) -> ! {
    info!(
        action = if how == libc::RB_POWER_OFF {
            "power off"
        } else {
            "reboot"
        },
        "agent done"
    );
    // SAFETY: sync and reboot take no pointers; as PID 1 the agent may call reboot.
    unsafe {
        libc::sync();
        libc::reboot(how);
    }
    // reboot only returns on failure (not PID 1, or no CAP_SYS_BOOT): wait forever rather
    // than exit, which would panic the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Mounts /proc, /sys, /dev, /run and /tmp; already-mounted ones are left alone. Returns the
/// failures, to be logged once logging is set up.
fn mount_kernel_filesystems() -> Vec<(&'static Path, std::io::Error)> {
    let mut failures = Vec::new();
    for (source, target, fstype) in [
        (c"proc", c"/proc", c"proc"),
        (c"sysfs", c"/sys", c"sysfs"),
        (c"devtmpfs", c"/dev", c"devtmpfs"),
        (c"tmpfs", c"/run", c"tmpfs"),
        (c"tmpfs", c"/tmp", c"tmpfs"),
    ] {
        let target_path = Path::new(target.to_str().unwrap_or("/"));
        let _ = std::fs::create_dir_all(target_path);
        // SAFETY: every pointer is a valid NUL-terminated string and data is null.
        let result = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EBUSY) {
                failures.push((target_path, error));
            }
        }
    }
    failures
}

/// One pass of the agent's work, from drivers to the final directive.
pub fn run(console: &Console) -> Result<Finish, AgentError> {
    let mut timings = Timings {
        // The kernel's clock when this pass began: on the first pass, how long the kernel took
        // to reach /init.
        uptime_at_start: read("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse().ok()),
        ..Timings::default()
    };
    let mut phase = Instant::now();
    let mut lap = || {
        let elapsed = phase.elapsed();
        phase = Instant::now();
        elapsed
    };
    let cmdline = read("/proc/cmdline")?;
    let params = boot_params(&cmdline)?;
    load_drivers();
    timings.drivers = lap();
    let configured = net::bring_up(params.mac_hint, net::NetTimeouts::default())?;
    timings.network = lap();
    info!(nic = %configured.nic, address = %configured.lease.address, "network up");
    let boot_id = read("/proc/sys/kernel/random/boot_id")?.trim().to_owned();

    let mut found = inventory::collect(Path::new("/"));
    let cidr = format!(
        "{}/{}",
        configured.lease.address, configured.lease.prefix_len
    );
    inventory::fill_addresses(&mut found.hardware, &[(configured.nic.clone(), cidr)]);
    for problem in &found.problems {
        warn!(%problem, "inventory incomplete");
    }
    let registration = Registration {
        smbios_uuid: found.smbios_uuid.clone(),
        boot_mac: Some(crate::policy::identity::format_mac(&configured.mac)),
        boot_id,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        hardware: found.hardware,
        problems: found.problems,
    };
    timings.inventory = lap();
    let client = ApplianceClient::new(&params.url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    Ok(runtime.block_on(follow(&client, registration, console, timings)))
}

/// Where the time to registration went; logged once registered, for operators and for
/// `scripts/bench-discovery`, which reads it off the console.
#[derive(Clone, Copy, Debug, Default)]
struct Timings {
    uptime_at_start: Option<f64>,
    drivers: Duration,
    network: Duration,
    inventory: Duration,
}

/// Loads drivers for every device present, so NICs and disks appear.
fn load_drivers() {
    let release = match read("/proc/sys/kernel/osrelease") {
        Ok(release) => release.trim().to_owned(),
        Err(error) => {
            warn!(%error, "cannot tell the kernel release; loading no modules");
            return;
        }
    };
    let dir = PathBuf::from("/lib/modules").join(&release);
    let index = match modules::ModuleIndex::load(&dir) {
        Ok(index) => index,
        Err(error) => {
            warn!(%error, "no module index; only built-in drivers are available");
            return;
        }
    };
    let report = modules::load_for_present_devices(&index, &dir, Path::new("/sys"), ALWAYS_LOAD);
    info!(
        loaded = report.loaded.len(),
        rounds = report.rounds,
        modules = %report.loaded.join(" "),
        "drivers loaded"
    );
    for failure in &report.failures {
        warn!(module = %failure.module, error = %failure.error, "driver did not load");
    }
}

/// Registers, then follows directives until the work is done.
async fn follow(
    client: &ApplianceClient,
    registration: Registration,
    console: &Console,
    timings: Timings,
) -> Finish {
    let boot_id = registration.boot_id.clone();
    let registering = Instant::now();
    let registered = register(client, &registration).await;
    let mut server = registered.server.clone();
    let ms = |d: Duration| d.as_millis();
    info!(
        kernel_s = timings.uptime_at_start.unwrap_or(f64::NAN),
        drivers_ms = ms(timings.drivers),
        network_ms = ms(timings.network),
        inventory_ms = ms(timings.inventory),
        register_ms = ms(registering.elapsed()),
        "time to registration"
    );
    if let Some(setup) = &registered.bmc_setup {
        set_up_bmc(client, &server, &boot_id, &setup.password).await;
    }
    loop {
        ship_logs(client, &server, &boot_id, console).await;
        match client.directive(&server, &boot_id, DIRECTIVE_WAIT).await {
            Ok(Directive::Wait) => {}
            Ok(Directive::Wipe { mode }) => {
                wipe_and_report(client, &server, &registration, mode).await;
            }
            Ok(Directive::PowerOff) => {
                info!("the appliance says: power off");
                ship_logs(client, &server, &boot_id, console).await;
                return Finish::PowerOff;
            }
            Ok(Directive::Deploy {
                image,
                config_drive,
            }) => {
                deploy_and_report(
                    client,
                    &server,
                    &registration,
                    console,
                    &image,
                    &config_drive,
                )
                .await;
            }
            Ok(Directive::Reboot) => {
                info!("the appliance says: reboot");
                ship_logs(client, &server, &boot_id, console).await;
                return Finish::Reboot;
            }
            Err(error) if error.status() == Some(http::StatusCode::NOT_FOUND) => {
                warn!(%error, "the Server is gone; registering again");
                server = register(client, &registration).await.server;
            }
            Err(error) => {
                warn!(%error, "asking for a directive failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Registers until the appliance accepts the registration.
async fn register(client: &ApplianceClient, registration: &Registration) -> Registered {
    loop {
        match client.register(registration).await {
            Ok(registered) => {
                if let Some(why) = &registered.identity_fallback {
                    warn!(%why, "no usable SMBIOS UUID");
                }
                info!(
                    server = %registered.server,
                    created = registered.created,
                    accepted = registered.accepted,
                    "registered"
                );
                return registered;
            }
            Err(error) if error.status().is_some_and(|s| s.is_client_error()) => {
                error!(%error, "the appliance refused the registration; retrying in 60 s");
                tokio::time::sleep(REFUSED_RETRY).await;
            }
            Err(error) => {
                warn!(%error, "registration failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Sets up the `siderite` BMC user over `/dev/ipmi0` with the appliance's password (the
/// appliance asked: automatic setup is on and the Server has no `spec.bmc`) and reports the
/// outcome, which carries the password: it is never logged.
async fn set_up_bmc(client: &ApplianceClient, server: &str, boot_id: &str, password: &str) {
    info!("setting up the BMC in-band");
    let password = password.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let mut device = match bmc::Device::open(Path::new("/sys"), Path::new(bmc::DEVICE)) {
            Ok(Some(device)) => device,
            Ok(None) => return BmcSetupResult::NoBmc,
            Err(error) => {
                return BmcSetupResult::Failed {
                    error: error.to_string(),
                };
            }
        };
        match bmc::set_up(&mut device, &password) {
            Ok(access) => BmcSetupResult::Configured {
                endpoint: access.address.to_string(),
                port: access.port,
                user: access.user,
                password: access.password,
                user_id: access.user_id,
                channel: access.channel,
            },
            Err(error) => BmcSetupResult::Failed {
                error: error.to_string(),
            },
        }
    })
    .await
    .unwrap_or_else(|panic| BmcSetupResult::Failed {
        error: format!("the BMC setup panicked: {panic}"),
    });
    match &result {
        BmcSetupResult::Configured {
            endpoint,
            port,
            user_id,
            channel,
            ..
        } => info!(%endpoint, port, user_id, channel, user = bmc::USER_NAME, "BMC user set up"),
        BmcSetupResult::NoBmc => info!("no in-band BMC (/dev/ipmi0)"),
        BmcSetupResult::Failed { error } => warn!(%error, "BMC setup failed"),
    }
    let report = BmcReport {
        boot_id: boot_id.to_owned(),
        result,
    };
    send_outcome(client, server, "bmc", &report).await;
}

/// The disks the agent found when it registered.
fn inventory_disks(registration: &Registration) -> Vec<crate::api::StorageDevice> {
    registration
        .hardware
        .storage
        .as_ref()
        .map(|s| s.devices.clone())
        .unwrap_or_default()
}

/// Wipes every disk of the inventory in parallel, reporting progress and heartbeats while it
/// runs, then reports the outcome until the appliance has it.
async fn wipe_and_report(
    client: &ApplianceClient,
    server: &str,
    registration: &Registration,
    mode: WipeMode,
) {
    let devices = inventory_disks(registration);
    info!(disks = devices.len(), %mode, "wiping");
    let progress: Arc<Mutex<Vec<DiskProgress>>> = Arc::default();
    let sink = Arc::clone(&progress);
    let mut work = tokio::task::spawn_blocking(move || {
        wipe::wipe_all(&devices, mode, |update: DiskProgress| {
            let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
            match all.iter_mut().find(|d| d.name == update.name) {
                Some(slot) => *slot = update,
                None => all.push(update),
            }
        })
    });
    let boot_id = registration.boot_id.clone();
    let mut progress_tick = tokio::time::interval(PROGRESS_INTERVAL);
    let mut heartbeat_tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    let outcomes = loop {
        tokio::select! {
            done = &mut work => break done.unwrap_or_else(|panic| {
                error!(error = %panic, "the wipe panicked");
                Vec::new()
            }),
            _ = progress_tick.tick() => {
                let disks = progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if !disks.is_empty() {
                    let report = crate::api::agent::Progress { boot_id: boot_id.clone(), disks };
                    if let Err(error) = client.report(server, "progress", &report).await {
                        warn!(%error, "progress report failed");
                    }
                }
            }
            _ = heartbeat_tick.tick() => {
                let beat = Heartbeat { boot_id: boot_id.clone(), phase: "wiping".into() };
                if let Err(error) = client.report(server, "heartbeat", &beat).await {
                    warn!(%error, "heartbeat failed");
                }
            }
        }
    };
    for outcome in &outcomes {
        info!(disk = %outcome.name, result = ?outcome.result, "wipe result");
    }
    let report = WipeReport {
        boot_id,
        mode,
        disks: outcomes,
    };
    send_outcome(client, server, "wiped", &report).await;
}

/// Deploys an image and a config drive, with heartbeats (phase `deploying`) and a progress
/// line in the log every [`HEARTBEAT_INTERVAL`], then reports the outcome until the appliance
/// has it. The next directive (normally `reboot`) is the appliance's to give.
async fn deploy_and_report(
    client: &ApplianceClient,
    server: &str,
    registration: &Registration,
    console: &Console,
    image: &ImageDeployment,
    config_drive: &ConfigDriveSource,
) {
    // The image URL is the appliance's cache, fine to log; the config drive URL is secret.
    info!(url = %image.url, format = ?image.format, compression = ?image.compression, "deploying image");
    let devices = inventory_disks(registration);
    let boot_id = registration.boot_id.clone();
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let work = deploy::deploy(
        image,
        config_drive,
        &devices,
        image::staging_limit(),
        Arc::clone(&written),
    );
    tokio::pin!(work);
    let started = Instant::now();
    // The phase changes now, not at the first tick.
    let beat = Heartbeat {
        boot_id: boot_id.clone(),
        phase: "deploying".into(),
    };
    if let Err(error) = client.report(server, "heartbeat", &beat).await {
        warn!(%error, "heartbeat failed");
    }
    let mut heartbeat_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
        HEARTBEAT_INTERVAL,
    );
    let result = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = heartbeat_tick.tick() => {
                let bytes = written.load(std::sync::atomic::Ordering::Relaxed);
                if bytes > 0 {
                    info!(
                        written_mib = bytes >> 20,
                        seconds = started.elapsed().as_secs(),
                        "deploying"
                    );
                }
                let beat = Heartbeat { boot_id: boot_id.clone(), phase: "deploying".into() };
                if let Err(error) = client.report(server, "heartbeat", &beat).await {
                    warn!(%error, "heartbeat failed");
                }
                ship_logs(client, server, &boot_id, console).await;
            }
        }
    };
    let result = match result {
        Ok(deployed) => {
            info!(seconds = started.elapsed().as_secs(), "deployed");
            deployed
        }
        Err(error) => {
            error!(%error, "deployment failed");
            DeployResult::Failed {
                error: error.to_string(),
            }
        }
    };
    ship_logs(client, server, &boot_id, console).await;
    let report = DeployReport {
        boot_id,
        url: image.url.clone(),
        result,
    };
    send_outcome(client, server, "deployed", &report).await;
}

/// Sends the outcome of a wipe or a deployment until the appliance takes it: a lost outcome
/// would leave the server waiting forever. A refusal (4xx) is final: retrying cannot fix it.
async fn send_outcome<T: serde::Serialize>(
    client: &ApplianceClient,
    server: &str,
    action: &str,
    report: &T,
) {
    loop {
        match client.report(server, action, report).await {
            Ok(()) => return,
            Err(error) if error.status().is_some_and(|s| s.is_client_error()) => {
                error!(%error, action, "the appliance refused the report");
                return;
            }
            Err(error) => {
                warn!(%error, action, "sending the report failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Sends buffered log lines; keeps them for the next try when the appliance cannot take them.
async fn ship_logs(client: &ApplianceClient, server: &str, boot_id: &str, console: &Console) {
    let mut lines = console.take_lines();
    while !lines.is_empty() {
        let rest = lines.split_off(lines.len().min(crate::api::agent::MAX_LOG_LINES));
        let body = LogLines {
            boot_id: boot_id.to_owned(),
            lines,
        };
        if client.report(server, "log", &body).await.is_err() {
            let mut unsent = body.lines;
            unsent.extend(rest);
            console.restore(unsent);
            return;
        }
        lines = rest;
    }
}

fn read(path: &str) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|source| AgentError::Read {
        path: PathBuf::from(path),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_params_come_from_the_ipxe_kernel_arguments() {
        let params = boot_params(
            "console=ttyS0 siderite.uuid=x siderite.url=http://10.77.0.2:8081 siderite.mac=52:54:00:12:34:56",
        )
        .expect("valid command line");
        assert_eq!(params.url, "http://10.77.0.2:8081");
        assert_eq!(params.mac_hint, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    }

    #[tokio::test]
    async fn a_failed_deployment_is_reported_with_its_reason() {
        use crate::agent::deploy::tests::{Appliance, serve};
        let (addr, appliance) = serve(Appliance::default()).await;
        let client = ApplianceClient::new(&format!("http://{addr}")).expect("valid URL");
        let registration = Registration {
            boot_id: "boot-1".into(),
            ..Registration::default()
        };
        let image = ImageDeployment {
            url: format!("http://{addr}/images/x"),
            checksum: crate::api::agent::ImageChecksum::Sha256("0".repeat(64)),
            format: crate::api::ImageFormat::Raw,
            compression: crate::api::ImageCompression::None,
            root_device_hints: None,
        };
        let config_drive = ConfigDriveSource {
            url: format!("http://{addr}/nocloud/secret/"),
        };
        let console = Console::default();
        deploy_and_report(
            &client,
            "srv",
            &registration,
            &console,
            &image,
            &config_drive,
        )
        .await;
        let posted = appliance.posted.lock().expect("lock");
        let (_, body) = posted
            .iter()
            .find(|(path, _)| path == "/agent/v1/servers/srv/deployed")
            .expect("a deploy report");
        let report: DeployReport = serde_json::from_slice(body).expect("a DeployReport");
        assert_eq!(report.boot_id, "boot-1");
        assert_eq!(report.url, image.url);
        let DeployResult::Failed { error } = report.result else {
            panic!("expected a failure: {:?}", report.result);
        };
        assert!(error.contains("the inventory lists no disks"), "{error}");
        let beats = posted
            .iter()
            .filter(|(p, _)| p.ends_with("/heartbeat"))
            .count();
        assert!(beats >= 1, "a deploying heartbeat");
    }

    #[test]
    fn missing_url_says_how_to_boot() {
        let error = boot_params("console=ttyS0").expect_err("no URL");
        assert!(error.to_string().contains("iPXE script"), "{error}");
    }
}
