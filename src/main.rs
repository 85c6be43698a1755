//! The `siderite` command: runs the appliance (`serve`), prints the CRDs (`crds`), reports its
//! version, runs benchmarks (`bench`), and talks to one BMC the way the appliance does
//! (`power`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use siderite::api::agent::WipeMode;
use tokio_util::sync::CancellationToken;

// The API server allocates many short-lived JSON trees per request; glibc's malloc spent a
// fifth of the server's CPU in the create benchmark (docs/benchmarks.md), mimalloc far less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc 2 that libmimalloc-sys
/// 0.1.49 builds (Cargo.lock pins it; the crate names only the options it calls stable).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Frees memory back to the OS as soon as mimalloc's pages empty instead of 10 ms (arenas:
/// 100 ms) later. Bursts of short-lived JSON trees otherwise stay resident: `bench allocate`
/// peaked at 523 MB with the delay and 473 MB without (decision 66). An explicit
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting a mimalloc option is a plain store, allowed at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[derive(Parser)]
#[command(
    name = "siderite",
    version,
    about = "Bare-metal boot appliance for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance. Without --kubeconfig it embeds its own Kubernetes API server.
    Serve(Box<ServeArgs>),
    /// Print the CustomResourceDefinitions as YAML (the content of manifests/crds/).
    Crds,
    /// Print the version.
    Version,
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Ask one BMC for its power state or a power action, with the appliance's own client:
    /// checks a server's spec.bmc settings before the controllers use them.
    Power(PowerArgs),
}

/// What `siderite power` does.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PowerVerb {
    /// Print `on` or `off`.
    Status,
    On,
    Off,
    Cycle,
    Reset,
    /// Ask the OS to shut down (ACPI).
    Soft,
    /// Make the next boot (only the next) a network boot.
    PxeOnce,
}

#[derive(clap::Args)]
struct PowerArgs {
    #[arg(value_enum)]
    verb: PowerVerb,
    /// The BMC, over IPMI v2.0 LAN (lanplus): HOST or HOST:PORT (port 623 by default).
    #[arg(long)]
    ipmi: String,
    /// BMC user name.
    #[arg(long, short = 'U')]
    user: String,
    /// BMC password; pass it in the environment rather than on the command line, where other
    /// users can read it.
    #[arg(long, env = "SIDERITE_BMC_PASSWORD", hide_env_values = true)]
    password: String,
    /// Cipher suite: auto (17, else 3), 3 or 17.
    #[arg(long, default_value = "auto", value_parser = parse_cipher_suites)]
    cipher_suite: siderite::power::ipmi::CipherSuites,
    /// With pxe-once: boot in UEFI mode (default: legacy BIOS).
    #[arg(long)]
    uefi: bool,
    /// Seconds one attempt may take.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Attempts in all.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Seconds before the second attempt, doubled for each further one.
    #[arg(long, default_value_t = 0.5)]
    backoff: f64,
}

fn parse_cipher_suites(text: &str) -> Result<siderite::power::ipmi::CipherSuites, String> {
    use siderite::power::ipmi::{CipherSuite, CipherSuites};
    match text {
        "auto" => Ok(CipherSuites::Auto),
        "3" => Ok(CipherSuites::Only(CipherSuite::Suite3)),
        "17" => Ok(CipherSuites::Only(CipherSuite::Suite17)),
        _ => Err(format!(
            "{text:?} is not a cipher suite this client speaks: use auto, 3 or 17"
        )),
    }
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address.
fn host_and_port(text: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok((address.ip().to_string(), address.port()));
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok((text.to_owned(), default_port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_owned(),
            port.parse()
                .with_context(|| format!("{port:?} in {text:?} is not a port number"))?,
        )),
        None => Ok((text.to_owned(), default_port)),
    }
}

async fn power(args: PowerArgs) -> anyhow::Result<()> {
    use siderite::power::{BootMode, CallPolicy, PowerAction, PowerManager, PowerState};
    let (host, port) = host_and_port(&args.ipmi, 623)?;
    let policy = CallPolicy {
        timeout: std::time::Duration::try_from_secs_f64(args.timeout)
            .context("--timeout must be a positive number of seconds")?,
        attempts: args.attempts.max(1),
        backoff: std::time::Duration::try_from_secs_f64(args.backoff)
            .context("--backoff must be a positive number of seconds")?,
    };
    // A PowerError's message already carries its cause; anyhow's "Caused by" would repeat it.
    let once = |error: siderite::power::PowerError| anyhow::anyhow!("{error}");
    let bmc = siderite::power::ipmi::IpmiLan::new(siderite::power::ipmi::IpmiConfig {
        host,
        port,
        user: args.user,
        password: args.password,
        cipher_suites: args.cipher_suite,
        policy,
    })
    .map_err(once)?;
    let action = match args.verb {
        PowerVerb::Status => {
            let state = bmc.power_state().await.map_err(once)?;
            println!(
                "{}",
                match state {
                    PowerState::On => "on",
                    PowerState::Off => "off",
                }
            );
            return Ok(());
        }
        PowerVerb::PxeOnce => {
            let mode = if args.uefi {
                BootMode::Uefi
            } else {
                BootMode::Bios
            };
            bmc.pxe_once(mode).await.map_err(once)?;
            return Ok(());
        }
        PowerVerb::On => PowerAction::On,
        PowerVerb::Off => PowerAction::Off,
        PowerVerb::Cycle => PowerAction::Cycle,
        PowerVerb::Reset => PowerAction::Reset,
        PowerVerb::Soft => PowerAction::Soft,
    };
    bmc.power(action).await.map_err(once)?;
    Ok(())
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where state lives: the database, certificates and the admin kubeconfig.
    #[arg(long, default_value = "state", env = "SIDERITE_STATE_DIR")]
    state_dir: PathBuf,
    /// Address of the embedded API server (port 0: any free port; see <state-dir>/kubeconfig).
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_listen: SocketAddr,
    /// Extra DNS names or IP addresses for the API server's certificate.
    #[arg(long = "api-san")]
    api_sans: Vec<String>,
    /// Use this management cluster instead of the embedded API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Change events kept in memory for watches that resume.
    #[arg(long, default_value_t = siderite::store::DEFAULT_HISTORY)]
    watch_history: usize,
    /// MiB of object versions those events may hold at most (a watch that falls further
    /// behind catches up from the current objects).
    #[arg(long, default_value_t = siderite::store::HISTORY_BYTES >> 20)]
    watch_history_mib: usize,
    /// Provisioning interface to run ProxyDHCP and TFTP on (repeatable). Without it the
    /// appliance runs no DHCP or TFTP at all.
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Address of the boot HTTP server (iPXE scripts, kernels, initramfs).
    #[arg(long, default_value = "0.0.0.0:8081")]
    http_listen: SocketAddr,
    /// Address machines reach the appliance on (default: the first interface's IPv4 address).
    #[arg(long)]
    advertise_ip: Option<std::net::Ipv4Addr>,
    /// Directory of the iPXE binaries served over TFTP (Debian's `ipxe` package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    tftp_dir: PathBuf,
    /// Directory served at /assets/ (kernels, initramfs); default <state-dir>/assets.
    #[arg(long)]
    assets_dir: Option<PathBuf>,
    /// Directory of the discovery image (vmlinuz, initramfs.zst) built by
    /// `discovery-image/build`; default: target/discovery-image next to this binary, then
    /// /usr/share/siderite/discovery-image.
    #[arg(long)]
    discovery_dir: Option<PathBuf>,
    /// Discovery kernel instead of the image's: a path under the assets directory or a URL.
    #[arg(long, requires = "discovery_initrd")]
    discovery_kernel: Option<String>,
    /// Discovery initramfs instead of the image's: a path under the assets directory or a URL.
    #[arg(long, requires = "discovery_kernel")]
    discovery_initrd: Option<String>,
    /// Kernel command line of the discovery environment.
    #[arg(long, default_value = "console=tty0 console=ttyS0,115200")]
    discovery_args: String,
    /// Concurrent TFTP transfers per interface before new ones are told to retry.
    #[arg(long, default_value_t = 64)]
    tftp_max_transfers: usize,
    /// Accept newly discovered servers at once (they are wiped and pooled without an operator).
    #[arg(long)]
    auto_accept_servers: bool,
    /// How agents wipe servers whose spec names no wipeMode: fast or zeroes.
    #[arg(long, default_value = "fast", value_parser = parse_wipe_mode)]
    wipe_mode: WipeMode,
    /// Let discovery agents of servers without spec.bmc create a `siderite` BMC user over
    /// in-band IPMI and fill spec.bmc with it (credentials in Secret default/<server>-bmc).
    /// `--auto-bmc-setup=false` tells agents to leave BMCs alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_bmc_setup: bool,
    /// Run the controllers in this process. `--controllers=false` serves only the boot plane
    /// (and the embedded API server), leaving reconciling to other replicas.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    controllers: bool,
    /// Run the controllers only while holding the Lease `siderite-controllers`. Default: on with
    /// --kubeconfig (replicas share the cluster), off with the embedded API server.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// Namespace of the leader Lease.
    #[arg(long, default_value = "default", env = "POD_NAMESPACE")]
    leader_elect_namespace: String,
    /// This replica's identity in the Lease (default: host name and a random suffix).
    #[arg(long)]
    leader_elect_identity: Option<String>,
    /// Seconds a Lease that is not renewed stays held (how long a dead leader blocks others).
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration: u64,
    /// Seconds before expiry at which the leader renews its Lease.
    #[arg(long, default_value_t = 5)]
    leader_elect_renew_before: u64,
    /// Mean seconds between two polls of one server's power state (each poll is up to 10%
    /// earlier or later, at random).
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    power_poll_interval: std::time::Duration,
    /// Seconds a power action has to show in the power state before it counts as failed.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    power_settle: std::time::Duration,
    /// Seconds a running discovery agent gets to start a wipe, or to power off after one,
    /// before the BMC is used.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    power_agent_grace: std::time::Duration,
    /// Seconds after a PXE boot by which the agent must have started wiping, or the OS be
    /// installed, before the boot counts as failed.
    #[arg(long, default_value = "1800", value_parser = parse_seconds)]
    power_boot_timeout: std::time::Duration,
    /// Power attempts per lifecycle step before the controller gives up and marks the server.
    #[arg(long, default_value_t = 3)]
    power_attempts: u32,
    /// Seconds to wait after a failed attempt or an unreachable BMC (doubled each time, at most
    /// ten times this).
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    power_backoff: std::time::Duration,
    /// Seconds one BMC request may take before it is retried (three attempts in all).
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    bmc_timeout: std::time::Duration,
    /// Firmware mode of one-time PXE boots for servers whose spec.pxeMode is unset: uefi or bios.
    #[arg(long, default_value = "uefi", value_parser = parse_pxe_method)]
    ipmi_pxe_method: siderite::power::BootMode,
}

fn parse_pxe_method(text: &str) -> Result<siderite::power::BootMode, String> {
    match text {
        "uefi" => Ok(siderite::power::BootMode::Uefi),
        "bios" => Ok(siderite::power::BootMode::Bios),
        _ => Err(format!("{text:?} is not a PXE method: use uefi or bios")),
    }
}

/// A flag's seconds (fractions allowed) as a duration.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds (e.g. 30 or 0.5)"))
}

impl ServeArgs {
    fn power_settings(&self) -> siderite::controllers::power::PowerSettings {
        use siderite::policy::power::Timing;
        siderite::controllers::power::PowerSettings {
            poll_interval: self
                .power_poll_interval
                .max(std::time::Duration::from_millis(100)),
            timing: Timing {
                settle: self.power_settle,
                agent_grace: self.power_agent_grace,
                boot_timeout: self.power_boot_timeout,
                attempts: self.power_attempts.max(1),
                backoff: self.power_backoff,
            },
            pxe_mode: self.ipmi_pxe_method,
            call: siderite::power::CallPolicy {
                timeout: self.bmc_timeout.max(std::time::Duration::from_millis(100)),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

fn parse_wipe_mode(text: &str) -> Result<WipeMode, String> {
    match text {
        "fast" => Ok(WipeMode::Fast),
        "zeroes" => Ok(WipeMode::Zeroes),
        _ => Err(format!("{text:?} is not a wipe mode: use fast or zeroes")),
    }
}

/// File names of the discovery image in its directory.
const DISCOVERY_KERNEL: &str = "vmlinuz";
const DISCOVERY_INITRD: &str = "initramfs.zst";

/// The discovery image directory: the flag, else the build output next to this binary
/// (`target/<profile>/siderite` → `target/discovery-image`), else the packaged location.
fn discovery_dir(flag: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = flag {
        return Some(dir.clone());
    }
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("discovery-image")));
    beside_binary
        .into_iter()
        .chain([PathBuf::from("/usr/share/siderite/discovery-image")])
        .find(|dir| dir.join(DISCOVERY_KERNEL).is_file() && dir.join(DISCOVERY_INITRD).is_file())
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Create, list and watch Server objects against a fresh embedded API server.
    Apiserver(siderite::bench::ApiserverBenchArgs),
    /// Thousands of discovery agents registering at once over the agent API.
    Agents(siderite::bench::agents::AgentsBenchArgs),
    /// 1,000 MetalMachines allocated at once from 10,000 servers and 100 ServerClasses.
    Allocate(siderite::bench::allocate::AllocateBenchArgs),
    /// Power-state polling of 1,000 simulated Redfish BMCs: polls/s and the appliance's CPU.
    Power(siderite::bench::power::PowerBenchArgs),
}

/// The CRDs the embedded API server serves: Siderite's, and the Cluster API stand-ins (a real
/// management cluster has the real ones).
fn crd_values() -> anyhow::Result<Vec<serde_json::Value>> {
    siderite::api::all_crds()
        .into_iter()
        .chain(siderite::api::capi_stand_in_crds())
        .map(|c| serde_json::to_value(c).context("serializing a CRD"))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    purge_freed_memory_at_once();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; in log files they break grep.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", siderite::api::crds_yaml());
            Ok(())
        }
        Command::Version => {
            println!("siderite {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Bench { which } => match which {
            BenchCommand::Apiserver(args) => siderite::bench::apiserver(args).await,
            BenchCommand::Agents(args) => siderite::bench::agents::agents(args).await,
            BenchCommand::Allocate(args) => siderite::bench::allocate::allocate(args).await,
            BenchCommand::Power(args) => siderite::bench::power::power(args).await,
        },
        Command::Serve(args) => serve(*args).await,
        Command::Power(args) => power(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let boot = boot_plane_config(&args)?;
    let (client, banner) = match &args.kubeconfig {
        Some(path) => (
            cluster_client(path).await?,
            format!("siderite: using the cluster of {}", path.display()),
        ),
        None => {
            let running = siderite::apiserver::start(
                siderite::apiserver::Config {
                    state_dir: args.state_dir.clone(),
                    listen: args.api_listen,
                    extra_names: args.api_sans.clone(),
                    history: args.watch_history,
                    history_bytes: args.watch_history_mib << 20,
                },
                crd_values()?,
                shutdown.clone(),
            )
            .await?;
            let client = client_from(&running.kubeconfig).await?;
            (
                client,
                format!(
                    "siderite: API server at https://{} — run: KUBECONFIG={} kubectl get servers",
                    running.addr,
                    running.kubeconfig.display()
                ),
            )
        }
    };
    // One watch of Servers for the boot plane and the controllers (decision 64).
    let feed = siderite::serve::resource_caches::ServerFeed::start(
        kube::Api::all(client.clone()),
        shutdown.clone(),
    );
    let elected = start_controllers(&args, &client, &feed, &shutdown)?;
    siderite::serve::start(boot, client, &feed, shutdown.clone()).await?;
    eprintln!("{banner}");
    wait_for_signal().await;
    shutdown.cancel();
    if let Some(elected) = elected {
        // Give the leader the time to release its Lease, so a successor need not wait it out.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), elected).await;
    }
    Ok(())
}

/// Starts the controllers as the flags say: not at all, at once, or whenever this replica holds
/// the leader Lease (the task that returns does the election).
fn start_controllers(
    args: &ServeArgs,
    client: &kube::Client,
    feed: &siderite::serve::resource_caches::ServerFeed,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !args.controllers {
        tracing::info!("controllers off (--controllers=false)");
        return Ok(None);
    }
    if !args.leader_elect.unwrap_or(args.kubeconfig.is_some()) {
        siderite::controllers::start(
            client.clone(),
            feed.clone(),
            args.power_settings(),
            shutdown.clone(),
        );
        return Ok(None);
    }
    if args.leader_elect_renew_before >= args.leader_elect_lease_duration {
        anyhow::bail!(
            "--leader-elect-renew-before ({} s) must be shorter than --leader-elect-lease-duration ({} s)",
            args.leader_elect_renew_before,
            args.leader_elect_lease_duration
        );
    }
    let config = siderite::controllers::leader::LeaderConfig {
        namespace: args.leader_elect_namespace.clone(),
        identity: args
            .leader_elect_identity
            .clone()
            .unwrap_or_else(siderite::controllers::leader::LeaderConfig::default_identity),
        lease_duration: std::time::Duration::from_secs(args.leader_elect_lease_duration),
        renew_before: std::time::Duration::from_secs(args.leader_elect_renew_before),
    };
    let for_controllers = client.clone();
    let feed = feed.clone();
    let power = args.power_settings();
    Ok(Some(tokio::spawn(
        siderite::controllers::leader::run_elected(
            client.clone(),
            config,
            shutdown.clone(),
            move |token| {
                siderite::controllers::start(for_controllers.clone(), feed.clone(), power, token)
            },
        ),
    )))
}

fn boot_plane_config(args: &ServeArgs) -> anyhow::Result<siderite::serve::BootPlaneConfig> {
    let discovery_dir = discovery_dir(args.discovery_dir.as_ref());
    let (kernel, initrd) = match (&args.discovery_kernel, &args.discovery_initrd) {
        (Some(kernel), Some(initrd)) => (kernel.clone(), initrd.clone()),
        _ => {
            match &discovery_dir {
                Some(dir) => tracing::info!(dir = %dir.display(), "discovery image found"),
                None => tracing::warn!(
                    "no discovery image found: unknown machines cannot register until it is built (discovery-image/build) or --discovery-dir names it"
                ),
            }
            (
                format!("/discovery/{DISCOVERY_KERNEL}"),
                format!("/discovery/{DISCOVERY_INITRD}"),
            )
        }
    };
    Ok(siderite::serve::BootPlaneConfig {
        interfaces: args.interfaces.clone(),
        http_listen: args.http_listen,
        advertise_ip: args.advertise_ip,
        tftp_dir: args.tftp_dir.clone(),
        assets_dir: args
            .assets_dir
            .clone()
            .unwrap_or_else(|| args.state_dir.join("assets")),
        discovery: siderite::serve::http::DiscoveryEnvironment {
            kernel,
            initrd,
            args: args
                .discovery_args
                .split_whitespace()
                .map(|a| {
                    siderite::proto::ipxe::KernelArg::parse(a).with_context(|| {
                        format!("--discovery-args: {a:?} cannot be passed to a kernel")
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        },
        tftp_max_transfers: args.tftp_max_transfers,
        disk_method: siderite::policy::boot::BootFromDiskMethod::IpxeExit,
        discovery_dir,
        environment_cache: args.state_dir.join("environments"),
        agent: siderite::serve::agent_api::AgentApiConfig {
            auto_accept: args.auto_accept_servers,
            wipe_mode: args.wipe_mode,
            auto_bmc_setup: args.auto_bmc_setup,
        },
    })
}

/// A client for the embedded API server, from the kubeconfig it wrote.
async fn client_from(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("using kubeconfig {}", kubeconfig.display()))?;
    Ok(kube::Client::try_from(config)?)
}

/// Real-cluster mode: a client for the cluster, with the CRDs installed by server-side apply.
async fn cluster_client(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let client = client_from(path).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in siderite::api::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply("siderite").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| {
            format!("installing CRD {name} (does the kubeconfig grant cluster-admin?)")
        })?;
        tracing::info!(%name, "CRD installed");
    }
    Ok(client)
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler only fails if signals are unavailable");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
