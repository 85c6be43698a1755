//! ProxyDHCP sockets: receives on UDP 67 and 4011 of the provisioning interface, lets
//! `proto::dhcp` decide, and sends each reply where it belongs (broadcast on that interface,
//! the relay agent, or the client). Decisions are logged at debug level; packet-driven
//! warnings are rate-limited so a noisy segment cannot flood the log.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::proto::dhcp::{self, Destination, Ignore, Port};
use crate::proto::dhcp::{ProxyConfig, Reply};
use crate::proto::dhcp_wire::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT};

/// Receive buffer size. DHCP clients send at most an Ethernet frame's worth (EDK2's packet
/// buffer is 1472 bytes); a longer datagram is cut, and the cut packet is judged as it is.
const MAX_DATAGRAM: usize = 2048;

/// At most one warning per this interval for malformed packets (and one for send failures).
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A UDP socket on `0.0.0.0:<port>` bound to `interface` (SO_BINDTODEVICE), with SO_BROADCAST
/// (replies go to 255.255.255.255) and SO_REUSEADDR, nonblocking, ready for
/// `tokio::net::UdpSocket::from_std`. Binding to a device keeps ProxyDHCP off every other
/// network the host is on, and makes broadcasts leave through that interface.
pub fn bind_udp(interface: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    if interface.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ProxyDHCP needs the name of the provisioning interface to bind to, got an empty one",
        ));
    }
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "binding a UDP socket to interface {interface:?} failed: {error} (does the \
                 interface exist? older kernels also need CAP_NET_RAW)"
                ),
            )
        })?;
    socket.set_nonblocking(true)?;
    let address = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    socket.bind(&address.into()).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "binding UDP {address} on {interface:?} failed: {error} (ports below 1024 need \
                 CAP_NET_BIND_SERVICE)"
            ),
        )
    })?;
    Ok(socket.into())
}

/// Counters of what ProxyDHCP did, for metrics and tests.
#[derive(Debug, Default)]
pub struct DhcpStats {
    /// Datagrams received on either port.
    pub received: AtomicU64,
    /// Replies sent.
    pub replied: AtomicU64,
    /// Well-formed packets that get no reply (ordinary DHCP traffic, unsupported clients).
    pub ignored: AtomicU64,
    /// Malformed packets.
    pub malformed: AtomicU64,
    /// Replies the socket refused to send.
    pub send_failed: AtomicU64,
}

/// A plain copy of [`DhcpStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhcpCounts {
    /// See [`DhcpStats::received`].
    pub received: u64,
    /// See [`DhcpStats::replied`].
    pub replied: u64,
    /// See [`DhcpStats::ignored`].
    pub ignored: u64,
    /// See [`DhcpStats::malformed`].
    pub malformed: u64,
    /// See [`DhcpStats::send_failed`].
    pub send_failed: u64,
}

impl DhcpStats {
    /// The current counts.
    pub fn snapshot(&self) -> DhcpCounts {
        DhcpCounts {
            received: self.received.load(Ordering::Relaxed),
            replied: self.replied.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            send_failed: self.send_failed.load(Ordering::Relaxed),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where each kind of [`Destination`] is sent. [`Targets::default`] is the DHCP mapping;
/// tests point it at loopback sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// For [`Destination::Broadcast`]: 255.255.255.255:68.
    pub broadcast: SocketAddr,
    /// Port of the relay agent for [`Destination::Relay`]: 67.
    pub relay_port: u16,
}

impl Default for Targets {
    fn default() -> Targets {
        Targets {
            broadcast: SocketAddr::from((Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT)),
            relay_port: DHCP_SERVER_PORT,
        }
    }
}

impl Targets {
    /// The socket address for `destination`, replying to a datagram from `peer`.
    /// [`Destination::Client`] keeps the peer's port: EDK2 listens on the port it sent from.
    fn resolve(&self, destination: Destination, peer: SocketAddr) -> SocketAddr {
        match destination {
            Destination::Broadcast => self.broadcast,
            Destination::Relay(relay) => SocketAddr::from((relay, self.relay_port)),
            Destination::Client(client) => SocketAddr::from((client, peer.port())),
        }
    }
}

/// Lets one event through per interval and counts the ones held back in between.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the event at `now` may be logged, `n` being how many were held back
    /// since the last one that was; `None` when it must be held back.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Serves ProxyDHCP on already-bound sockets (UDP 67 and UDP 4011, from [`bind_udp`]: the
/// broadcast replies need SO_BROADCAST, and SO_BINDTODEVICE sends them out of the provisioning
/// interface) until `shutdown` is cancelled. Each reply leaves from the socket its request came
/// in on. Relay agents must be reachable through that interface.
pub async fn run(
    dhcp: UdpSocket,
    pxe: UdpSocket,
    cfg: Arc<ProxyConfig>,
    stats: Arc<DhcpStats>,
    shutdown: CancellationToken,
) {
    run_with_targets(dhcp, pxe, cfg, stats, shutdown, Targets::default()).await;
}

/// [`run`] with the reply addresses of `targets`.
pub async fn run_with_targets(
    dhcp: UdpSocket,
    pxe: UdpSocket,
    cfg: Arc<ProxyConfig>,
    stats: Arc<DhcpStats>,
    shutdown: CancellationToken,
    targets: Targets,
) {
    let mut server = Server {
        cfg,
        stats,
        targets,
        malformed_warnings: RateLimiter::new(WARNING_INTERVAL),
        io_warnings: RateLimiter::new(WARNING_INTERVAL),
    };
    let mut dhcp_buf = vec![0u8; MAX_DATAGRAM];
    let mut pxe_buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (port, received) = tokio::select! {
            () = shutdown.cancelled() => break,
            received = dhcp.recv_from(&mut dhcp_buf) => (Port::Dhcp, received),
            received = pxe.recv_from(&mut pxe_buf) => (Port::PxeBootServer, received),
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                // UDP receive errors are per datagram (e.g. ICMP port unreachable for an
                // earlier send); the socket keeps working.
                if let Some(suppressed) = server.io_warnings.allow(Instant::now()) {
                    tracing::warn!(%error, %port, suppressed, "ProxyDHCP receive failed");
                }
                continue;
            }
        };
        let (socket, bytes) = match port {
            Port::Dhcp => (&dhcp, &dhcp_buf[..len]),
            Port::PxeBootServer => (&pxe, &pxe_buf[..len]),
        };
        let span = tracing::debug_span!("proxydhcp", %peer, port = port.number());
        server
            .serve(socket, bytes, port, peer)
            .instrument(span)
            .await;
    }
}

/// The state of one running ProxyDHCP.
struct Server {
    cfg: Arc<ProxyConfig>,
    stats: Arc<DhcpStats>,
    targets: Targets,
    malformed_warnings: RateLimiter,
    io_warnings: RateLimiter,
}

impl Server {
    /// Answers one datagram from `peer`, if it deserves an answer.
    async fn serve(&mut self, socket: &UdpSocket, bytes: &[u8], port: Port, peer: SocketAddr) {
        DhcpStats::bump(&self.stats.received);
        let Some(reply) = self.decide(bytes, port, peer) else {
            return;
        };
        let target = self.targets.resolve(reply.destination, peer);
        let request = &reply.request;
        match socket.send_to(&reply.bytes, target).await {
            Ok(_) => {
                DhcpStats::bump(&self.stats.replied);
                tracing::debug!(
                    mac = %request.mac,
                    arch = request.arch,
                    firmware = ?request.firmware,
                    choice = %reply.boot_file,
                    %target,
                    "ProxyDHCP reply sent"
                );
            }
            Err(error) => {
                DhcpStats::bump(&self.stats.send_failed);
                if let Some(suppressed) = self.io_warnings.allow(Instant::now()) {
                    tracing::warn!(
                        mac = %request.mac,
                        %target,
                        %error,
                        suppressed,
                        "sending ProxyDHCP reply failed"
                    );
                }
            }
        }
    }

    /// The reply to send, or `None` after counting and logging why there is none.
    fn decide(&mut self, bytes: &[u8], port: Port, peer: SocketAddr) -> Option<Reply> {
        let request = match dhcp::classify(bytes, port) {
            Ok(request) => request,
            Err(ignore) => {
                self.ignored(&ignore, port, peer);
                return None;
            }
        };
        match dhcp::decide(&request, &self.cfg) {
            Ok(reply) => Some(reply),
            Err(ignore) => {
                DhcpStats::bump(&self.stats.ignored);
                tracing::debug!(
                    mac = %request.mac,
                    arch = request.arch,
                    firmware = ?request.firmware,
                    choice = "none",
                    reason = %ignore,
                    "ProxyDHCP boot request not answered"
                );
                None
            }
        }
    }

    fn ignored(&mut self, ignore: &Ignore, port: Port, peer: SocketAddr) {
        match ignore {
            Ignore::Malformed(_) => {
                DhcpStats::bump(&self.stats.malformed);
                if let Some(suppressed) = self.malformed_warnings.allow(Instant::now()) {
                    tracing::warn!(%peer, %port, error = %ignore, suppressed, "malformed DHCP packet");
                }
            }
            // Every ordinary DHCP client on the segment lands here: trace, not debug.
            Ignore::NotPxe | Ignore::NotBootRequest { .. } => {
                DhcpStats::bump(&self.stats.ignored);
                tracing::trace!(%peer, %port, reason = %ignore, "not a boot client");
            }
            _ => {
                DhcpStats::bump(&self.stats.ignored);
                tracing::debug!(%peer, %port, reason = %ignore, "boot request not answered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);

    fn cfg() -> Arc<ProxyConfig> {
        Arc::new(ProxyConfig {
            server_ip: Ipv4Addr::new(10, 77, 0, 2),
            http_base: "http://10.77.0.2:8081".to_string(),
            arm64_available: false,
        })
    }

    /// A BOOTREQUEST with `ciaddr`, `giaddr`, MAC 52:54:00:12:34:56 and `options`.
    fn request(ciaddr: [u8; 4], giaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
        let mut packet = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0];
        packet.extend(ciaddr);
        packet.extend([0; 8]);
        packet.extend(giaddr);
        packet.extend([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        packet.extend([0; 10 + 64 + 128]);
        packet.extend([99, 130, 83, 99]);
        packet.extend(options);
        packet
    }

    /// Message type, arch 0 and vendor class `PXEClient`.
    fn pxe_options(message_type: u8) -> Vec<u8> {
        let mut options = vec![53, 1, message_type, 93, 2, 0, 0, 60, 9];
        options.extend(b"PXEClient");
        options.push(255);
        options
    }

    struct Running {
        dhcp: SocketAddr,
        pxe: SocketAddr,
        client: UdpSocket,
        stats: Arc<DhcpStats>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    /// Runs the server on two loopback sockets, with broadcasts and relay replies redirected
    /// to a loopback "client" socket.
    async fn start() -> Running {
        let dhcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let pxe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client_addr = client.local_addr().unwrap();
        let targets = Targets {
            broadcast: client_addr,
            relay_port: client_addr.port(),
        };
        let stats = Arc::new(DhcpStats::default());
        let shutdown = CancellationToken::new();
        let (dhcp_addr, pxe_addr) = (dhcp.local_addr().unwrap(), pxe.local_addr().unwrap());
        let task = tokio::spawn(run_with_targets(
            dhcp,
            pxe,
            cfg(),
            stats.clone(),
            shutdown.clone(),
            targets,
        ));
        Running {
            dhcp: dhcp_addr,
            pxe: pxe_addr,
            client,
            stats,
            shutdown,
            task,
        }
    }

    impl Running {
        async fn exchange(&self, to: SocketAddr, packet: &[u8]) -> (Vec<u8>, SocketAddr) {
            self.client.send_to(packet, to).await.unwrap();
            let mut buf = vec![0u8; 1500];
            let (len, from) = timeout(WAIT, self.client.recv_from(&mut buf))
                .await
                .expect("a reply arrives")
                .unwrap();
            buf.truncate(len);
            (buf, from)
        }

        async fn stop(self) -> DhcpCounts {
            self.shutdown.cancel();
            timeout(WAIT, self.task)
                .await
                .expect("run returns once shutdown is cancelled")
                .unwrap();
            self.stats.snapshot()
        }
    }

    #[test]
    fn rate_limiter_lets_one_event_through_per_interval_and_counts_the_rest() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(9)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(10)), Some(2));
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn default_targets_are_the_dhcp_ports_and_clients_keep_their_source_port() {
        let targets = Targets::default();
        let peer: SocketAddr = "10.77.0.50:4011".parse().unwrap();
        let ip = Ipv4Addr::new(10, 0, 5, 1);
        assert_eq!(
            targets.resolve(Destination::Broadcast, peer),
            "255.255.255.255:68".parse().unwrap()
        );
        assert_eq!(
            targets.resolve(Destination::Relay(ip), peer),
            "10.0.5.1:67".parse().unwrap()
        );
        assert_eq!(
            targets.resolve(Destination::Client(Ipv4Addr::new(10, 77, 0, 50)), peer),
            "10.77.0.50:4011".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn run_broadcasts_the_offer_for_a_pxe_discover() {
        let server = start().await;
        let (reply, from) = server
            .exchange(server.dhcp, &request([0; 4], [0; 4], &pxe_options(1)))
            .await;
        assert_eq!(
            from, server.dhcp,
            "sent from the socket the request came in on"
        );
        assert_eq!(reply[0], 2, "BOOTREPLY");
        assert_eq!(&reply[4..8], &[0x12, 0x34, 0x56, 0x78], "xid");
        assert_eq!(&reply[16..20], &[0; 4], "yiaddr");
        assert_eq!(&reply[108..121], b"undionly.kpxe");
        let counts = server.stop().await;
        assert_eq!(
            counts,
            DhcpCounts {
                received: 1,
                replied: 1,
                ..DhcpCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn run_sends_relayed_offers_to_the_relay_agent() {
        let server = start().await;
        // giaddr 127.0.0.1: the "relay" is the loopback client, listening on relay_port.
        let (reply, _) = server
            .exchange(
                server.dhcp,
                &request([0; 4], [127, 0, 0, 1], &pxe_options(1)),
            )
            .await;
        assert_eq!(&reply[24..28], &[127, 0, 0, 1], "giaddr copied");
        server.stop().await;
    }

    #[tokio::test]
    async fn run_acks_a_4011_request_at_the_clients_address_and_source_port() {
        let server = start().await;
        let (reply, from) = server
            .exchange(
                server.pxe,
                &request([127, 0, 0, 1], [0; 4], &pxe_options(3)),
            )
            .await;
        assert_eq!(from, server.pxe);
        assert_eq!(&reply[12..16], &[127, 0, 0, 1], "ciaddr echoed in the ACK");
        let counts = server.stop().await;
        assert_eq!(counts.replied, 1);
    }

    #[tokio::test]
    async fn run_counts_ignored_and_malformed_packets_without_replying() {
        let server = start().await;
        let not_pxe = request([0; 4], [0; 4], &[53, 1, 1, 255]);
        let garbage = b"definitely not DHCP".to_vec();
        let bad_uuid = {
            let mut options = pxe_options(1);
            options.pop();
            options.extend([97, 2, 0, 0, 255]);
            request([0; 4], [0; 4], &options)
        };
        for packet in [&not_pxe, &garbage, &bad_uuid] {
            server.client.send_to(packet, server.dhcp).await.unwrap();
        }
        // A good request after them proves the loop survived and fixes the order of counts.
        let (reply, _) = server
            .exchange(server.dhcp, &request([0; 4], [0; 4], &pxe_options(1)))
            .await;
        assert_eq!(reply[0], 2);
        let counts = server.stop().await;
        assert_eq!(
            counts,
            DhcpCounts {
                received: 4,
                replied: 1,
                ignored: 1,
                malformed: 2,
                send_failed: 0,
            }
        );
    }

    #[test]
    fn bind_udp_refuses_an_empty_interface_name() {
        let error = bind_udp("", 0).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bind_udp_names_the_interface_it_could_not_bind_to() {
        let error = bind_udp("siderite-none0", 0).unwrap_err();
        assert!(error.to_string().contains("\"siderite-none0\""), "{error}");
    }

    /// Unprivileged SO_BINDTODEVICE works on Linux 5.7 and later.
    #[test]
    fn bind_udp_on_loopback_sets_broadcast_reuse_and_nonblocking() {
        let bound = bind_udp("lo", 0).unwrap();
        let mut buf = [0u8; 1];
        let would_block = bound.recv_from(&mut buf).unwrap_err();
        assert_eq!(would_block.kind(), io::ErrorKind::WouldBlock);
        let socket = Socket::from(bound);
        assert!(socket.broadcast().unwrap());
        assert!(socket.reuse_address().unwrap());
        assert_eq!(socket.device().unwrap().as_deref(), Some(&b"lo"[..]));
    }
}
