//! The `siderite` command: runs the appliance (`serve`), prints the CRDs (`crds`), reports its
//! version, and runs benchmarks (`bench`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

// The API server allocates many short-lived JSON trees per request; glibc's malloc spent a
// fifth of the server's CPU in the create benchmark (docs/benchmarks.md), mimalloc far less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Discovery kernel, relative to the assets directory.
    #[arg(long, default_value = "discovery/vmlinuz")]
    discovery_kernel: String,
    /// Discovery initramfs, relative to the assets directory.
    #[arg(long, default_value = "discovery/initramfs.gz")]
    discovery_initrd: String,
    /// Kernel command line of the discovery environment.
    #[arg(long, default_value = "console=tty0 console=ttyS0,115200")]
    discovery_args: String,
    /// Concurrent TFTP transfers per interface before new ones are told to retry.
    #[arg(long, default_value_t = 64)]
    tftp_max_transfers: usize,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Create, list and watch Server objects against a fresh embedded API server.
    Apiserver(siderite::bench::ApiserverBenchArgs),
}

fn crd_values() -> anyhow::Result<Vec<serde_json::Value>> {
    siderite::api::all_crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).context("serializing a CRD"))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
        },
        Command::Serve(args) => serve(*args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    if let Some(path) = &args.kubeconfig {
        return serve_against_cluster(path, shutdown).await;
    }
    let running = siderite::apiserver::start(
        siderite::apiserver::Config {
            state_dir: args.state_dir.clone(),
            listen: args.api_listen,
            extra_names: args.api_sans.clone(),
            history: args.watch_history,
        },
        crd_values()?,
        shutdown.clone(),
    )
    .await?;
    let boot = siderite::serve::BootPlaneConfig {
        interfaces: args.interfaces.clone(),
        http_listen: args.http_listen,
        advertise_ip: args.advertise_ip,
        tftp_dir: args.tftp_dir.clone(),
        assets_dir: args
            .assets_dir
            .clone()
            .unwrap_or_else(|| args.state_dir.join("assets")),
        discovery: siderite::serve::http::DiscoveryEnvironment {
            kernel: args.discovery_kernel.clone(),
            initrd: args.discovery_initrd.clone(),
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
    };
    siderite::serve::start(boot, shutdown.clone()).await?;
    eprintln!(
        "siderite: API server at https://{} — run: KUBECONFIG={} kubectl get servers",
        running.addr,
        running.kubeconfig.display()
    );
    wait_for_signal().await;
    shutdown.cancel();
    Ok(())
}

/// Real-cluster mode: install the CRDs with server-side apply and keep running.
async fn serve_against_cluster(path: &PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("using kubeconfig {}", path.display()))?;
    let client = kube::Client::try_from(config)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
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
    wait_for_signal().await;
    shutdown.cancel();
    Ok(())
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
