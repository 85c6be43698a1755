//! The boot plane's sockets: ProxyDHCP (UDP 67 and 4011) and TFTP (UDP 69) on each provisioning
//! interface, and the boot HTTP server (iPXE scripts, assets, iPXE binaries for UEFI HTTP boot).
//! This module owns every boot-plane socket; the decisions are in `proto` and `policy`.

pub mod agent_api;
pub mod cache;
pub mod dhcp;
pub mod environments;
pub mod http;
pub mod metadata;
pub mod metrics;
pub mod resource_caches;
pub mod servers;
pub mod tftp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::policy::boot::BootFromDiskMethod;

/// UDP ports of the boot plane.
pub const DHCP_PORT: u16 = 67;
pub const PXE_PORT: u16 = 4011;
pub const TFTP_PORT: u16 = 69;

/// Everything `siderite serve` needs to run the boot plane.
#[derive(Debug, Clone)]
pub struct BootPlaneConfig {
    /// Provisioning interfaces; empty: no DHCP and no TFTP (never every interface by default).
    pub interfaces: Vec<String>,
    pub http_listen: SocketAddr,
    /// Address machines reach the appliance on; default: the first interface's IPv4 address.
    pub advertise_ip: Option<Ipv4Addr>,
    pub tftp_dir: PathBuf,
    pub assets_dir: PathBuf,
    pub discovery: http::DiscoveryEnvironment,
    pub tftp_max_transfers: usize,
    pub disk_method: BootFromDiskMethod,
    /// Directory of the built discovery image, served at `/discovery/`.
    pub discovery_dir: Option<PathBuf>,
    /// Where Environment assets are cached (`<state-dir>/environments`).
    pub environment_cache: PathBuf,
    pub agent: agent_api::AgentApiConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "interface {interface} has no IPv4 address; give it one or pass --advertise-ip with the address machines reach the appliance on"
    )]
    NoAddress { interface: String },
    #[error("the boot URL {url} cannot be used in iPXE scripts: {reason}; check --advertise-ip")]
    BaseUrl { url: String, reason: String },
    #[error("cannot list network interfaces: {0}")]
    Interfaces(std::io::Error),
    #[error(
        "cannot bind {what} on {interface} port {port}: {source} (binding ports below 1024 needs root or CAP_NET_BIND_SERVICE; is another DHCP/TFTP server running there?)"
    )]
    Bind {
        what: &'static str,
        interface: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source}; pick another address with --http-listen")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The first IPv4 address of `interface` among the host's addresses.
fn interface_ipv4(all: &[if_addrs::Interface], interface: &str) -> Option<Ipv4Addr> {
    all.iter().find_map(|i| match i.ip() {
        IpAddr::V4(v4) if i.name == interface => Some(v4),
        _ => None,
    })
}

/// Resolves the advertised address: explicit, else the first interface's IPv4, else the HTTP
/// listen address when it is a specific one.
fn advertise_ip(
    config: &BootPlaneConfig,
    all: &[if_addrs::Interface],
) -> Result<Ipv4Addr, ServeError> {
    if let Some(ip) = config.advertise_ip {
        return Ok(ip);
    }
    if let Some(first) = config.interfaces.first() {
        return interface_ipv4(all, first).ok_or_else(|| ServeError::NoAddress {
            interface: first.clone(),
        });
    }
    if let IpAddr::V4(v4) = config.http_listen.ip()
        && !v4.is_unspecified()
    {
        return Ok(v4);
    }
    // No provisioning interface: scripts are only fetched by hand, so any address of this host
    // that others can reach will do; say which one was picked.
    let picked = all
        .iter()
        .find_map(|i| match i.ip() {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::LOCALHOST);
    tracing::info!(ip = %picked, "no --interface or --advertise-ip: boot URLs use this address");
    Ok(picked)
}

/// Binds every boot-plane socket and starts serving; returns once all are bound, so that bind
/// errors reach the operator before the appliance reports itself ready.
///
/// `client` reaches the Kubernetes API (embedded or real) for Servers: the boot decision reads
/// them and the agent API writes them.
pub async fn start(
    config: BootPlaneConfig,
    client: kube::Client,
    feed: &resource_caches::ServerFeed,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addresses = if_addrs::get_if_addrs().map_err(ServeError::Interfaces)?;
    let ip = advertise_ip(&config, &addresses)?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServeError::Http {
            addr: config.http_listen,
            source,
        })?;
    // With port 0 the kernel picks one; URLs must carry the real port.
    let http_port = listener
        .local_addr()
        .map_err(|source| ServeError::Http {
            addr: config.http_listen,
            source,
        })?
        .port();
    let base_url = format!("http://{ip}:{http_port}");
    let http_config = Arc::new(http::BootHttpConfig {
        base_url: crate::proto::ipxe::ScriptUrl::base(&base_url).map_err(|e| {
            ServeError::BaseUrl {
                url: base_url.clone(),
                reason: e.to_string(),
            }
        })?,
        assets_dir: config.assets_dir.clone(),
        tftp_dir: config.tftp_dir.clone(),
        discovery_dir: config.discovery_dir.clone(),
        discovery: config.discovery.clone(),
        disk_method: config.disk_method,
    });
    let index = servers::ServerIndex::start(client.clone(), feed, shutdown.clone());
    let environments = environments::EnvironmentCache::new(config.environment_cache.clone());
    environments.start(client.clone(), shutdown.clone());
    let metadata = metadata::Metadata::new(
        client.clone(),
        index.clone(),
        Arc::clone(&environments),
        base_url.clone(),
    );
    let agent = agent_api::AgentApi::new(
        client,
        index.clone(),
        Arc::clone(&environments),
        base_url.clone(),
        config.agent.clone(),
    );
    let lookup = servers::BootFacts {
        index,
        environments,
        base_url: base_url.clone(),
    };
    tokio::spawn(http::run_with_services(
        listener,
        http_config,
        Arc::new(lookup),
        http::Services {
            agent: Some(Arc::new(agent)),
            metadata: Some(Arc::new(metadata)),
        },
        shutdown.clone(),
    ));
    tracing::info!(port = http_port, %base_url, "boot HTTP server listening");

    if config.interfaces.is_empty() {
        tracing::warn!(
            "no --interface given: ProxyDHCP and TFTP are off (they never listen on every interface by default); only the API and boot HTTP servers run"
        );
        return Ok(());
    }
    let arm64_available = config.tftp_dir.join("snp-arm64.efi").exists();
    for interface in &config.interfaces {
        let bind = |what: &'static str, port: u16| {
            dhcp::bind_udp(interface, port)
                .and_then(tokio::net::UdpSocket::from_std)
                .map_err(|source| ServeError::Bind {
                    what,
                    interface: interface.clone(),
                    port,
                    source,
                })
        };
        let interface_ip = interface_ipv4(&addresses, interface).unwrap_or(ip);
        let proxy = Arc::new(crate::proto::dhcp::ProxyConfig {
            server_ip: interface_ip,
            http_base: format!("http://{interface_ip}:{http_port}"),
            arm64_available,
        });
        let dhcp_socket = bind("ProxyDHCP", DHCP_PORT)?;
        let pxe_socket = bind("PXE boot server", PXE_PORT)?;
        tokio::spawn(dhcp::run(
            dhcp_socket,
            pxe_socket,
            proxy,
            Arc::new(dhcp::DhcpStats::default()),
            shutdown.clone(),
        ));
        let tftp_socket = bind("TFTP", TFTP_PORT)?;
        let tftp_config = Arc::new(tftp::TftpConfig {
            root: config.tftp_dir.clone(),
            max_transfers: config.tftp_max_transfers,
            max_blksize: tftp::mtu_blksize(interface).unwrap_or(1468),
            max_windowsize: 64,
            bind_device: Some(interface.clone()),
            bind_ip: interface_ip,
        });
        tokio::spawn(tftp::run(
            tftp_socket,
            tftp_config,
            Arc::new(tftp::TftpStats::default()),
            shutdown.clone(),
        ));
        tracing::info!(%interface, ip = %interface_ip, tftp_root = %config.tftp_dir.display(), "ProxyDHCP (67, 4011) and TFTP (69) listening");
    }
    Ok(())
}
