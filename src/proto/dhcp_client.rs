//! Sans-IO DHCPv4 client of the discovery agent: DHCPDISCOVER → DHCPOFFER → DHCPREQUEST →
//! DHCPACK (a DHCPNAK starts over), with retransmission backoff, ending in a [`Lease`]. It takes
//! bytes and `now` and hands back bytes and a deadline; `agent::net` owns the socket and clock.
//!
//! Choices, and where they come from:
//! - Every request sets the BROADCAST flag: the client has no address yet and its UDP socket
//!   cannot receive a unicast to the offered address (RFC 2131 §4.1; dnsmasq then broadcasts).
//! - Option 61 is type 1 (Ethernet) + MAC (RFC 2132 §9.14), as dhclient and systemd-networkd
//!   send it, so the site DHCP server keeps one lease per NIC across reboots.
//! - No option 60 "PXEClient": the appliance's ProxyDHCP answers only PXE clients, and must not
//!   answer the agent, which wants an address from the site DHCP server.
//! - Requests are padded to 300 bytes, the BOOTP minimum some relays insist on (RFC 1542 §2.1).
//! - Retransmissions back off exponentially from [`Backoff::first`] up to [`Backoff::max`],
//!   optionally randomised by ±25 % (RFC 2131 §4.1 asks for randomisation so that machines
//!   powered on together do not retransmit in lockstep).
//! - The first valid offer is taken (RFC 2131 §4.4.1 allows it; waiting buys nothing here).
//! - A DHCPREQUEST that gets no answer after [`MAX_REQUESTS`] tries, or a DHCPNAK, sends the
//!   client back to discovery (RFC 2131 §3.1 step 5, §4.4.1).
//!
//! Replies are decoded and requests encoded with `proto::dhcp_wire`; that module says why not
//! with `dhcproto` (whose message constructor would block the agent on the entropy pool).
//!
//! Renewal (T1/T2) is not done: the agent lives for one discovery or wipe, and the caller can
//! start a new client if it outlives the lease.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::dhcp_wire::{
    BOOTREPLY, BOOTREQUEST, Builder, ETHERNET_ADDR_LEN, FLAG_BROADCAST, HTYPE_ETHERNET, Malformed,
    Options, bad_length, check_magic, header, message_type, offset, option, read_ipv4, read_u32,
};

/// DHCPREQUESTs sent for one offer before going back to discovery.
pub const MAX_REQUESTS: u32 = 4;
/// Smallest MTU a host must accept (RFC 2132 §5.1); smaller option 26 values are ignored.
const MIN_MTU: u16 = 68;
/// Option 51 value meaning "infinite" (RFC 2132 §9.2).
const INFINITE_LEASE_SECS: u32 = u32::MAX;

/// The parameters asked for in option 55, in this order.
const PARAMETERS: [u8; 6] = [
    option::SUBNET_MASK,
    option::ROUTER,
    option::DOMAIN_NAME_SERVER,
    option::LEASE_TIME,
    option::SERVER_IDENTIFIER,
    option::INTERFACE_MTU,
];

/// What the client got: an address and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `yiaddr` of the DHCPACK.
    pub address: Ipv4Addr,
    /// From option 1; the address's class when the server sent no mask.
    pub prefix_len: u8,
    /// The first router of option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 54 of the server that acknowledged.
    pub server: Ipv4Addr,
    /// Option 51; `u32::MAX` seconds when the server sent none or said infinite.
    pub lease_time: Duration,
    /// Option 26, when at least 68.
    pub mtu: Option<u16>,
    /// Option 6.
    pub dns_servers: Vec<Ipv4Addr>,
}

impl Lease {
    /// The subnet mask of [`Lease::prefix_len`], e.g. 255.255.255.0 for 24.
    pub fn netmask(&self) -> Ipv4Addr {
        mask_of(self.prefix_len)
    }
}

/// Retransmission delays: `first`, then doubling, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first transmission; less than 1 ms counts as 1 ms, so that a client
    /// given zero cannot retransmit on every poll.
    pub first: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 1, 2, 4, 8, 16, 16, … seconds: quick on a LAN, yet gentle on a server that is down.
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(16),
        }
    }
}

impl Backoff {
    /// The wait after the `sends`-th transmission (1-based) of one message.
    fn delay(&self, sends: u32) -> Duration {
        let doublings = sends.saturating_sub(1).min(31);
        self.first
            .max(Duration::from_millis(1))
            .saturating_mul(1 << doublings)
            .min(self.max.max(Duration::from_millis(1)))
    }
}

/// What [`DhcpClient::handle`] made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An offer was taken; a DHCPREQUEST for it is due at once.
    Offered {
        /// Option 54 of the offer.
        server: Ipv4Addr,
        /// `yiaddr` of the offer.
        address: Ipv4Addr,
    },
    /// The server acknowledged: [`DhcpClient::lease`] is set.
    Bound,
    /// The server refused the request (DHCPNAK); discovery starts again after
    /// [`Backoff::first`], so a server that refuses everything cannot drive a tight loop.
    Refused {
        /// The server that refused.
        server: Ipv4Addr,
    },
    /// The datagram was not for this client, or not useful in its state.
    Ignored(Ignored),
}

/// Why a datagram was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// Broken on the wire.
    #[error("malformed reply: {0}")]
    Malformed(#[from] Malformed),
    /// A BOOTREQUEST (another client's broadcast) or junk.
    #[error("op {op} is not a BOOTREPLY")]
    NotAReply {
        /// Byte 0.
        op: u8,
    },
    /// A reply to another transaction.
    #[error("xid {xid:#010x} is not this client's")]
    ForeignXid {
        /// The reply's `xid`.
        xid: u32,
    },
    /// A reply for another client (or not an Ethernet one) that happens to share the `xid`.
    #[error("chaddr is not this client's MAC")]
    ForeignChaddr,
    /// A message type this client does not expect in its state (e.g. a second offer).
    #[error("{message} while {state}")]
    Unexpected {
        /// The message type.
        message: &'static str,
        /// What the client was doing.
        state: &'static str,
    },
    /// An offer without option 54, which the DHCPREQUEST must name.
    #[error("DHCPOFFER has no server identifier (option 54)")]
    NoServerIdentifier,
    /// `yiaddr` is not an address a host can use.
    #[error("offered address {address} is not a usable unicast address")]
    UnusableAddress {
        /// `yiaddr`.
        address: Ipv4Addr,
    },
    /// A DHCPACK or DHCPNAK from a server other than the one whose offer was taken.
    #[error("{message} from {server}, but the request went to {chosen}")]
    ForeignServer {
        /// The message type.
        message: &'static str,
        /// Its option 54.
        server: Ipv4Addr,
        /// The server whose offer was taken.
        chosen: Ipv4Addr,
    },
}

/// A DHCPv4 client for one interface, from discovery to a lease.
#[derive(Debug, Clone)]
pub struct DhcpClient {
    mac: [u8; 6],
    xid: u32,
    /// When acquisition began: `secs` of every request counts from here (RFC 2131 §2).
    started: Instant,
    backoff: Backoff,
    jitter: Option<SplitMix64>,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// Broadcasting DHCPDISCOVER; `sends` so far, the next one due at `next`.
    Selecting {
        sends: u32,
        next: Instant,
    },
    /// Broadcasting DHCPREQUEST for `offer`.
    Requesting {
        offer: Offer,
        sends: u32,
        next: Instant,
    },
    Bound(Lease),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Selecting { .. } => "selecting an offer",
            State::Requesting { .. } => "requesting an offer",
            State::Bound(_) => "bound",
        }
    }
}

/// The offer being requested.
#[derive(Debug, Clone)]
struct Offer {
    address: Ipv4Addr,
    server: Ipv4Addr,
    params: Params,
}

impl DhcpClient {
    /// A client for the NIC with `mac`, using transaction id `xid` (the caller picks it at
    /// random, RFC 2131 §4.4.1), with its first DHCPDISCOVER due at `now`.
    pub fn new(mac: [u8; 6], xid: u32, now: Instant) -> DhcpClient {
        DhcpClient {
            mac,
            xid,
            started: now,
            backoff: Backoff::default(),
            jitter: None,
            state: State::Selecting {
                sends: 0,
                next: now,
            },
        }
    }

    /// Uses `backoff` instead of the default 1, 2, 4, 8, 16 s.
    pub fn with_backoff(mut self, backoff: Backoff) -> DhcpClient {
        self.backoff = backoff;
        self
    }

    /// Randomises every retransmission delay by up to ±25 %, from a pseudo-random sequence
    /// seeded with `seed` (the caller draws it at random; without this call delays are exact).
    pub fn with_jitter(mut self, seed: u64) -> DhcpClient {
        self.jitter = Some(SplitMix64(seed));
        self
    }

    /// The transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The datagram to broadcast to port 67 now, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let secs = self.secs(now);
        match &mut self.state {
            State::Bound(_) => None,
            State::Selecting { sends, next } => {
                if now < *next {
                    return None;
                }
                *sends += 1;
                *next = now + delay(&self.backoff, &mut self.jitter, *sends);
                Some(self.build(message_type::DISCOVER, secs, None))
            }
            State::Requesting { offer, sends, next } => {
                if now < *next {
                    return None;
                }
                if *sends >= MAX_REQUESTS {
                    // No answer to repeated requests: the server is gone; start over
                    // (RFC 2131 §4.4.1).
                    self.state = State::Selecting {
                        sends: 1,
                        next: now + delay(&self.backoff, &mut self.jitter, 1),
                    };
                    return Some(self.build(message_type::DISCOVER, secs, None));
                }
                *sends += 1;
                *next = now + delay(&self.backoff, &mut self.jitter, *sends);
                let selected = (offer.address, offer.server);
                Some(self.build(message_type::REQUEST, secs, Some(selected)))
            }
        }
    }

    /// When [`DhcpClient::poll_transmit`] has something to send next; `None` once bound.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Selecting { next, .. } | State::Requesting { next, .. } => Some(*next),
            State::Bound(_) => None,
        }
    }

    /// The lease, once a DHCPACK arrived.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound(lease) => Some(lease),
            _ => None,
        }
    }

    /// Takes a datagram received on port 68. Anything that is not a valid reply to this
    /// client in its current state is ignored, and says why.
    pub fn handle(&mut self, bytes: &[u8], now: Instant) -> Event {
        match self.step(bytes, now) {
            Ok(event) => event,
            Err(ignored) => Event::Ignored(ignored),
        }
    }

    fn step(&mut self, bytes: &[u8], now: Instant) -> Result<Event, Ignored> {
        let reply = parse_reply(bytes, &self.mac, self.xid)?;
        let unexpected = |state: &State| Ignored::Unexpected {
            message: message_type::name(reply.kind),
            state: state.name(),
        };
        match (&self.state, reply.kind) {
            (State::Selecting { .. }, message_type::OFFER) => {
                let server = reply.server.ok_or(Ignored::NoServerIdentifier)?;
                let address = usable(reply.yiaddr)?;
                self.state = State::Requesting {
                    offer: Offer {
                        address,
                        server,
                        params: reply.params,
                    },
                    sends: 0,
                    next: now,
                };
                Ok(Event::Offered { server, address })
            }
            (State::Requesting { offer, .. }, message_type::ACK) => {
                let chosen = offer.server;
                check_server(reply.kind, reply.server, chosen)?;
                let address = usable(reply.yiaddr)?;
                let lease = lease_from(address, chosen, &reply.params, &offer.params);
                self.state = State::Bound(lease);
                Ok(Event::Bound)
            }
            (State::Requesting { offer, .. }, message_type::NAK) => {
                let chosen = offer.server;
                check_server(reply.kind, reply.server, chosen)?;
                self.state = State::Selecting {
                    sends: 0,
                    next: now + self.backoff.first,
                };
                Ok(Event::Refused { server: chosen })
            }
            (state, _) => Err(unexpected(state)),
        }
    }

    /// `secs`: whole seconds since acquisition began, saturating.
    fn secs(&self, now: Instant) -> u16 {
        let elapsed = now.saturating_duration_since(self.started).as_secs();
        u16::try_from(elapsed).unwrap_or(u16::MAX)
    }

    /// A DHCPDISCOVER, or a DHCPREQUEST for `selected` (address, server) in SELECTING state
    /// (RFC 2131 §4.3.2: `ciaddr` 0, options 50 and 54 set).
    fn build(&self, kind: u8, secs: u16, selected: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
        let mut client_id = Vec::with_capacity(1 + self.mac.len());
        client_id.push(HTYPE_ETHERNET);
        client_id.extend_from_slice(&self.mac);
        let mut message = Builder::new(BOOTREQUEST, self.xid, self.mac)
            .u16(offset::SECS, secs)
            .u16(offset::FLAGS, FLAG_BROADCAST)
            .option(option::MESSAGE_TYPE, &[kind]);
        if let Some((address, server)) = selected {
            message = message
                .option(option::REQUESTED_IP, &address.octets())
                .option(option::SERVER_IDENTIFIER, &server.octets());
        }
        message
            .option(option::PARAMETER_REQUEST_LIST, &PARAMETERS)
            .option(option::CLIENT_IDENTIFIER, &client_id)
            .finish()
    }
}

/// The wait after the `sends`-th transmission, randomised when a jitter source is set.
fn delay(backoff: &Backoff, jitter: &mut Option<SplitMix64>, sends: u32) -> Duration {
    let base = backoff.delay(sends);
    let Some(rng) = jitter else {
        return base;
    };
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let quarter = base_ms / 4;
    // Uniform in [base - quarter, base + quarter].
    let spread = rng.next() % (2 * quarter + 1);
    Duration::from_millis(base_ms - quarter + spread)
}

/// A tiny deterministic generator (SplitMix64, Steele et al. 2014) for retransmission jitter:
/// no clock or OS randomness here, the caller seeds it.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A DHCPACK or DHCPNAK counts only from the server whose offer was requested; one without
/// option 54 is taken (it carries our xid and MAC, and some servers omit it in a NAK).
fn check_server(kind: u8, server: Option<Ipv4Addr>, chosen: Ipv4Addr) -> Result<(), Ignored> {
    match server {
        Some(server) if server != chosen => Err(Ignored::ForeignServer {
            message: message_type::name(kind),
            server,
            chosen,
        }),
        _ => Ok(()),
    }
}

fn usable(address: Ipv4Addr) -> Result<Ipv4Addr, Ignored> {
    if address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_loopback()
    {
        Err(Ignored::UnusableAddress { address })
    } else {
        Ok(address)
    }
}

/// The lease of a DHCPACK; parameters the ACK lacks are taken from the offer.
fn lease_from(address: Ipv4Addr, server: Ipv4Addr, ack: &Params, offer: &Params) -> Lease {
    let prefix_len = ack
        .prefix_len
        .or(offer.prefix_len)
        .unwrap_or_else(|| classful_prefix(address));
    let dns_servers = if ack.dns_servers.is_empty() {
        offer.dns_servers.clone()
    } else {
        ack.dns_servers.clone()
    };
    let lease_secs = ack
        .lease_secs
        .or(offer.lease_secs)
        .unwrap_or(INFINITE_LEASE_SECS);
    Lease {
        address,
        prefix_len,
        router: ack.router.or(offer.router),
        server,
        lease_time: Duration::from_secs(u64::from(lease_secs)),
        mtu: ack.mtu.or(offer.mtu),
        dns_servers,
    }
}

/// The prefix of the address's class, which is also what the kernel assumes for an address
/// set without a mask; used only when a server sends no option 1.
fn classful_prefix(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

fn mask_of(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// A reply to this client, validated.
#[derive(Debug)]
struct Reply {
    /// Option 53.
    kind: u8,
    yiaddr: Ipv4Addr,
    /// Option 54.
    server: Option<Ipv4Addr>,
    params: Params,
}

/// The configuration options of a reply, each validated.
#[derive(Debug, Clone, Default)]
struct Params {
    prefix_len: Option<u8>,
    router: Option<Ipv4Addr>,
    dns_servers: Vec<Ipv4Addr>,
    lease_secs: Option<u32>,
    mtu: Option<u16>,
}

/// Checks that `bytes` is a DHCP reply for `mac` and `xid` and decodes what the client uses.
fn parse_reply(bytes: &[u8], mac: &[u8; 6], xid: u32) -> Result<Reply, Ignored> {
    let header = header(bytes)?;
    if header[offset::OP] != BOOTREPLY {
        return Err(Ignored::NotAReply {
            op: header[offset::OP],
        });
    }
    let reply_xid = read_u32(header, offset::XID);
    if reply_xid != xid {
        return Err(Ignored::ForeignXid { xid: reply_xid });
    }
    if header[offset::HTYPE] != HTYPE_ETHERNET
        || header[offset::HLEN] != ETHERNET_ADDR_LEN
        || header[offset::CHADDR..offset::CHADDR + mac.len()] != mac[..]
    {
        return Err(Ignored::ForeignChaddr);
    }
    check_magic(header)?;
    let options = Options::parse(bytes)?;

    let kind = options
        .byte(option::MESSAGE_TYPE)?
        .ok_or(Malformed::NoMessageType)?;
    let server = options.ipv4(option::SERVER_IDENTIFIER)?;
    let prefix_len = match options.ipv4(option::SUBNET_MASK)? {
        None => None,
        Some(mask) => {
            let ones = u32::from(mask).leading_ones();
            let prefix = u8::try_from(ones).expect("a u32 has at most 32 leading ones");
            if prefix == 0 || mask_of(prefix) != mask {
                return Err(Malformed::BadSubnetMask { mask }.into());
            }
            Some(prefix)
        }
    };
    let routers = options.ipv4_list(option::ROUTER)?;
    let dns_servers = options.ipv4_list(option::DOMAIN_NAME_SERVER)?;
    let lease_secs = match options.get(option::LEASE_TIME) {
        None => None,
        Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
        Some(other) => return Err(bad_length(option::LEASE_TIME, other.len(), "4").into()),
    };
    let mtu = match options.get(option::INTERFACE_MTU) {
        None => None,
        // A nonsensical MTU is dropped rather than the whole offer: the default MTU works.
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])).filter(|mtu| *mtu >= MIN_MTU),
        Some(other) => return Err(bad_length(option::INTERFACE_MTU, other.len(), "2").into()),
    };
    Ok(Reply {
        kind,
        yiaddr: read_ipv4(header, offset::YIADDR),
        server,
        params: Params {
            prefix_len,
            router: routers.into_iter().find(|r| !r.is_unspecified()),
            dns_servers,
            lease_secs,
            mtu,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dhcp_wire::tests::hex;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0x1234_5678;
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const OFFERED: [u8; 4] = [10, 99, 0, 123];

    /// A BOOTREPLY with `xid`, `chaddr` = `mac`, `yiaddr`, broadcast flag, and `options`
    /// (which end with ff).
    fn reply_to(xid: u32, mac: [u8; 6], yiaddr: [u8; 4], options: &str) -> Vec<u8> {
        let mut packet = hex("02 01 06 00");
        packet.extend(xid.to_be_bytes());
        packet.extend(hex("0000 8000  00000000"));
        packet.extend(yiaddr);
        packet.extend(hex("0a630001 00000000"));
        packet.extend(mac);
        packet.extend([0u8; 10 + 64 + 128]);
        packet.extend(crate::proto::dhcp_wire::MAGIC_COOKIE);
        packet.extend(hex(options));
        packet
    }

    fn reply(yiaddr: [u8; 4], options: &str) -> Vec<u8> {
        reply_to(XID, MAC, yiaddr, options)
    }

    /// What dnsmasq offers: type, server id, lease time 1 h, mask /24, router, two DNS servers,
    /// MTU 1500.
    const FULL_OPTIONS: &str = "36 04 0a630001
                                33 04 00000e10
                                01 04 ffffff00
                                03 04 0a630001
                                06 08 0a630001 08080808
                                1a 02 05dc
                                ff";

    fn offer() -> Vec<u8> {
        reply(OFFERED, &format!("35 01 02 {FULL_OPTIONS}"))
    }

    fn ack() -> Vec<u8> {
        reply(OFFERED, &format!("35 01 05 {FULL_OPTIONS}"))
    }

    fn nak() -> Vec<u8> {
        reply([0; 4], "35 01 06  36 04 0a630001  ff")
    }

    fn message_type(bytes: &[u8]) -> u8 {
        Options::parse(bytes)
            .unwrap()
            .get(option::MESSAGE_TYPE)
            .unwrap()[0]
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A client that sent its DHCPDISCOVER at `t0` and took the standard offer at `t0`.
    fn requesting(t0: Instant) -> DhcpClient {
        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        assert!(matches!(client.handle(&offer(), t0), Event::Offered { .. }));
        client
    }

    fn bound(t0: Instant) -> DhcpClient {
        let mut client = requesting(t0);
        client.poll_transmit(t0).unwrap();
        assert_eq!(client.handle(&ack(), t0), Event::Bound);
        client
    }

    #[test]
    fn discover_has_exact_bytes() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        let bytes = client
            .poll_transmit(t0)
            .expect("a DHCPDISCOVER is due at once");
        let expected = [
            hex("01 01 06 00"),             // BOOTREQUEST, Ethernet, hlen 6, hops 0
            hex("12345678"),                // xid as given
            hex("0000 8000"),               // secs 0, BROADCAST flag
            hex("00000000"),                // ciaddr
            hex("00000000"),                // yiaddr
            hex("00000000"),                // siaddr
            hex("00000000"),                // giaddr
            MAC.to_vec(),                   // chaddr
            vec![0; 10 + 64 + 128],         // rest of chaddr, sname, file
            hex("63825363"),                // magic cookie
            hex("35 01 01"),                // 53: DHCPDISCOVER
            hex("37 06 01 03 06 33 36 1a"), // 55: mask, router, DNS, lease, server id, MTU
            hex("3d 07 01 525400123456"),   // 61: type 1 (Ethernet) + MAC
            hex("ff"),                      // end
            vec![0; crate::proto::dhcp_wire::MIN_MESSAGE_LEN - 261], // pad to the BOOTP minimum
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 300);
    }

    #[test]
    fn request_has_exact_bytes_naming_the_offer() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        let event = client.handle(&offer(), t0 + ms(1500));
        assert_eq!(
            event,
            Event::Offered {
                server: SERVER,
                address: Ipv4Addr::from(OFFERED)
            }
        );
        let bytes = client
            .poll_transmit(t0 + secs(2))
            .expect("a DHCPREQUEST is due once an offer is taken");
        let expected = [
            hex("01 01 06 00"),             // BOOTREQUEST, Ethernet, hlen 6, hops 0
            hex("12345678"),                // same xid as the DISCOVER
            hex("0002 8000"),               // secs 2 since acquisition began, BROADCAST
            hex("00000000"),                // ciaddr 0 in SELECTING state
            hex("00000000"),                // yiaddr
            hex("00000000"),                // siaddr
            hex("00000000"),                // giaddr
            MAC.to_vec(),                   // chaddr
            vec![0; 10 + 64 + 128],         // rest of chaddr, sname, file
            hex("63825363"),                // magic cookie
            hex("35 01 03"),                // 53 first: DHCPREQUEST
            hex("32 04 0a63007b"),          // 50: requested address 10.99.0.123
            hex("36 04 0a630001"),          // 54: the chosen server 10.99.0.1
            hex("37 06 01 03 06 33 36 1a"), // 55: mask, router, DNS, lease, server id, MTU
            hex("3d 07 01 525400123456"),   // 61: type 1 (Ethernet) + MAC
            hex("ff"),                      // end
            vec![0; crate::proto::dhcp_wire::MIN_MESSAGE_LEN - 273], // pad to the BOOTP minimum
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn requests_never_carry_a_vendor_class() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        let discover = client.poll_transmit(t0).unwrap();
        client.handle(&offer(), t0);
        let request = client.poll_transmit(t0).unwrap();
        for bytes in [discover, request] {
            let options = Options::parse(&bytes).unwrap();
            assert_eq!(
                options.get(60),
                None,
                "option 60 would draw a ProxyDHCP answer"
            );
            assert_eq!(
                options.get(option::CLIENT_IDENTIFIER),
                Some(&hex("01 525400123456")[..])
            );
        }
    }

    #[test]
    fn offer_then_ack_binds_with_every_parameter() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        assert_eq!(message_type(&client.poll_transmit(t0).unwrap()), 3);
        assert_eq!(client.lease(), None);
        assert_eq!(client.handle(&ack(), t0 + ms(10)), Event::Bound);
        let lease = client.lease().expect("bound after DHCPACK");
        assert_eq!(
            *lease,
            Lease {
                address: Ipv4Addr::new(10, 99, 0, 123),
                prefix_len: 24,
                router: Some(SERVER),
                server: SERVER,
                lease_time: secs(3600),
                mtu: Some(1500),
                dns_servers: vec![SERVER, Ipv4Addr::new(8, 8, 8, 8)],
            }
        );
        assert_eq!(lease.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(client.poll_timeout(), None);
        assert_eq!(client.poll_transmit(t0 + secs(3600)), None);
    }

    #[test]
    fn the_first_valid_offer_wins() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        let no_server_id = reply([10, 99, 0, 50], "35 01 02  01 04 ffffff00  ff");
        assert_eq!(
            client.handle(&no_server_id, t0),
            Event::Ignored(Ignored::NoServerIdentifier)
        );
        let zero_address = reply([0; 4], "35 01 02  36 04 0a630002  ff");
        assert_eq!(
            client.handle(&zero_address, t0),
            Event::Ignored(Ignored::UnusableAddress {
                address: Ipv4Addr::UNSPECIFIED
            })
        );
        assert!(matches!(client.handle(&offer(), t0), Event::Offered { .. }));
        let second = reply([10, 99, 0, 77], "35 01 02  36 04 0a630002  ff");
        assert_eq!(
            client.handle(&second, t0),
            Event::Ignored(Ignored::Unexpected {
                message: "DHCPOFFER",
                state: "requesting an offer"
            })
        );
        let request = client.poll_transmit(t0).unwrap();
        let options = Options::parse(&request).unwrap();
        assert_eq!(options.get(option::REQUESTED_IP), Some(&OFFERED[..]));
        assert_eq!(
            options.get(option::SERVER_IDENTIFIER),
            Some(&SERVER.octets()[..])
        );
    }

    #[test]
    fn an_ack_before_any_offer_is_ignored() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        assert_eq!(
            client.handle(&ack(), t0),
            Event::Ignored(Ignored::Unexpected {
                message: "DHCPACK",
                state: "selecting an offer"
            })
        );
        assert_eq!(client.lease(), None);
    }

    #[test]
    fn an_ack_or_nak_from_another_server_is_ignored() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        client.poll_transmit(t0).unwrap();
        let foreign_ack = reply(OFFERED, "35 01 05  36 04 0a630009  33 04 00000e10  ff");
        assert_eq!(
            client.handle(&foreign_ack, t0),
            Event::Ignored(Ignored::ForeignServer {
                message: "DHCPACK",
                server: Ipv4Addr::new(10, 99, 0, 9),
                chosen: SERVER
            })
        );
        let foreign_nak = reply([0; 4], "35 01 06  36 04 0a630009  ff");
        assert!(matches!(
            client.handle(&foreign_nak, t0),
            Event::Ignored(Ignored::ForeignServer { .. })
        ));
        assert_eq!(client.lease(), None);
        assert_eq!(client.handle(&ack(), t0), Event::Bound);
    }

    #[test]
    fn nak_restarts_discovery_after_the_first_backoff_step() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        client.poll_transmit(t0).unwrap();
        let t1 = t0 + secs(5);
        assert_eq!(client.handle(&nak(), t1), Event::Refused { server: SERVER });
        assert_eq!(client.poll_timeout(), Some(t1 + secs(1)));
        assert_eq!(client.poll_transmit(t1), None);
        let discover = client.poll_transmit(t1 + secs(1)).expect("discovery again");
        assert_eq!(message_type(&discover), 1);
        // A fresh offer is taken again after the restart.
        assert!(matches!(
            client.handle(&offer(), t1 + secs(1)),
            Event::Offered { .. }
        ));
    }

    #[test]
    fn replies_for_other_transactions_or_clients_are_ignored() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        let options = format!("35 01 02 {FULL_OPTIONS}");
        let foreign_xid = reply_to(0xdead_beef, MAC, OFFERED, &options);
        assert_eq!(
            client.handle(&foreign_xid, t0),
            Event::Ignored(Ignored::ForeignXid { xid: 0xdead_beef })
        );
        let foreign_mac = reply_to(XID, [0x52, 0x54, 0, 0, 0, 1], OFFERED, &options);
        assert_eq!(
            client.handle(&foreign_mac, t0),
            Event::Ignored(Ignored::ForeignChaddr)
        );
        let mut request = offer();
        request[0] = 1;
        assert_eq!(
            client.handle(&request, t0),
            Event::Ignored(Ignored::NotAReply { op: 1 })
        );
        // Still selecting: the next DISCOVER is due on schedule.
        assert_eq!(client.poll_timeout(), Some(t0 + secs(1)));
        assert_eq!(client.lease(), None);
    }

    #[test]
    fn discover_retransmits_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        assert_eq!(client.poll_timeout(), Some(t0));
        let mut sent_at = Vec::new();
        let mut t = t0;
        while t <= t0 + secs(70) {
            if let Some(bytes) = client.poll_transmit(t) {
                assert_eq!(message_type(&bytes), 1);
                sent_at.push((t - t0).as_millis());
            }
            t += ms(250);
        }
        assert_eq!(
            sent_at,
            [0, 1000, 3000, 7000, 15000, 31000, 47000, 63000],
            "1, 2, 4, 8, 16, then 16 s apart"
        );
    }

    #[test]
    fn a_custom_backoff_is_honoured() {
        let t0 = Instant::now();
        let backoff = Backoff {
            first: ms(100),
            max: ms(300),
        };
        let mut client = DhcpClient::new(MAC, XID, t0).with_backoff(backoff);
        client.poll_transmit(t0).unwrap();
        assert_eq!(client.poll_timeout(), Some(t0 + ms(100)));
        client.poll_transmit(t0 + ms(100)).unwrap();
        assert_eq!(client.poll_timeout(), Some(t0 + ms(300)));
        client.poll_transmit(t0 + ms(300)).unwrap();
        assert_eq!(client.poll_timeout(), Some(t0 + ms(600)));
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_follows_the_seed() {
        let t0 = Instant::now();
        let schedule = |seed: u64| {
            let mut client = DhcpClient::new(MAC, XID, t0).with_jitter(seed);
            let mut t = t0;
            let mut waits = Vec::new();
            for _ in 0..6 {
                client.poll_transmit(t).unwrap();
                let next = client.poll_timeout().unwrap();
                waits.push(next - t);
                t = next;
            }
            waits
        };
        let waits = schedule(7);
        for (wait, base) in waits.iter().zip([1, 2, 4, 8, 16, 16]) {
            let base = secs(base);
            assert!(
                *wait >= base * 3 / 4 && *wait <= base * 5 / 4,
                "{wait:?} is not within 25 % of {base:?}"
            );
        }
        assert_eq!(schedule(7), waits, "the same seed gives the same delays");
        assert_ne!(schedule(8), waits, "another seed gives other delays");
        assert_ne!(waits[4], waits[5], "jitter applies to every delay");
    }

    #[test]
    fn unanswered_requests_fall_back_to_discovery() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        let mut kinds = Vec::new();
        let mut t = t0;
        while t <= t0 + secs(20) {
            if let Some(bytes) = client.poll_transmit(t) {
                kinds.push(((t - t0).as_secs(), message_type(&bytes)));
            }
            t += ms(500);
        }
        assert_eq!(
            kinds,
            [(0, 3), (1, 3), (3, 3), (7, 3), (15, 1), (16, 1), (18, 1)],
            "four REQUESTs 1, 2, 4 s apart, 8 s later DISCOVERs with a fresh backoff"
        );
    }

    #[test]
    fn missing_parameters_come_from_the_offer_or_the_address_class() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        client.poll_transmit(t0).unwrap();
        let bare_ack = reply(OFFERED, "35 01 05  36 04 0a630001  ff");
        assert_eq!(client.handle(&bare_ack, t0), Event::Bound);
        let lease = client.lease().unwrap();
        assert_eq!(lease.prefix_len, 24, "mask of the offer");
        assert_eq!(lease.router, Some(SERVER));
        assert_eq!(lease.lease_time, secs(3600));

        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        let bare_offer = reply([172, 16, 5, 9], "35 01 02  36 04 0a630001  ff");
        client.handle(&bare_offer, t0);
        let bare_ack = reply([172, 16, 5, 9], "35 01 05  ff");
        assert_eq!(client.handle(&bare_ack, t0), Event::Bound);
        let lease = client.lease().unwrap();
        assert_eq!(lease.prefix_len, 16, "class B");
        assert_eq!(lease.router, None);
        assert_eq!(lease.server, SERVER, "the offer's server id");
        assert_eq!(lease.lease_time, secs(u64::from(u32::MAX)), "infinite");
        assert_eq!(lease.mtu, None);
        assert!(lease.dns_servers.is_empty());
    }

    #[test]
    fn a_tiny_mtu_and_a_zero_router_are_dropped() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        client.poll_transmit(t0).unwrap();
        let ack = reply(
            OFFERED,
            "35 01 05  36 04 0a630001  1a 02 0020  03 08 00000000 0a6300fe  ff",
        );
        assert_eq!(client.handle(&ack, t0), Event::Bound);
        let lease = client.lease().unwrap();
        assert_eq!(
            lease.mtu,
            Some(1500),
            "the offer's MTU, since 32 is below 68"
        );
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 99, 0, 254)));
    }

    #[test]
    fn options_in_an_overloaded_file_field_are_read() {
        let t0 = Instant::now();
        let mut client = requesting(t0);
        client.poll_transmit(t0).unwrap();
        let mut ack = reply(OFFERED, "35 01 05  36 04 0a630001  34 01 01  ff");
        let file_options = hex("01 04 fffffc00  33 04 00000078  ff");
        ack[offset::FILE..offset::FILE + file_options.len()].copy_from_slice(&file_options);
        assert_eq!(client.handle(&ack, t0), Event::Bound);
        let lease = client.lease().unwrap();
        assert_eq!(lease.prefix_len, 22);
        assert_eq!(lease.lease_time, secs(120));
    }

    #[test]
    fn malformed_replies_are_ignored_and_say_why() {
        let t0 = Instant::now();
        let mut client = DhcpClient::new(MAC, XID, t0);
        client.poll_transmit(t0).unwrap();
        let malformed = |bytes: &[u8], client: &mut DhcpClient| match client.handle(bytes, t0) {
            Event::Ignored(Ignored::Malformed(why)) => why,
            other => panic!("expected malformed, got {other:?}"),
        };
        assert_eq!(
            malformed(&offer()[..239], &mut client),
            Malformed::Truncated { len: 239 }
        );
        let mut bad_cookie = offer();
        bad_cookie[offset::MAGIC] = 0;
        assert!(matches!(
            malformed(&bad_cookie, &mut client),
            Malformed::BadMagicCookie { .. }
        ));
        assert_eq!(
            malformed(&reply(OFFERED, "35 01 02  36 09 0a63"), &mut client),
            Malformed::OptionOverrun {
                code: 54,
                offset: 243
            }
        );
        assert_eq!(
            malformed(&reply(OFFERED, "36 04 0a630001  ff"), &mut client),
            Malformed::NoMessageType
        );
        assert_eq!(
            malformed(&reply(OFFERED, "35 02 0202  ff"), &mut client),
            Malformed::BadOptionLength {
                code: 53,
                len: 2,
                expected: "1"
            }
        );
        assert_eq!(
            malformed(
                &reply(OFFERED, "35 01 02  36 04 0a630001  01 04 ff00ff00  ff"),
                &mut client
            ),
            Malformed::BadSubnetMask {
                mask: Ipv4Addr::new(255, 0, 255, 0)
            }
        );
        assert_eq!(
            malformed(
                &reply(OFFERED, "35 01 02  36 04 0a630001  03 03 0a6300  ff"),
                &mut client
            ),
            Malformed::BadOptionLength {
                code: 3,
                len: 3,
                expected: "a multiple of 4"
            }
        );
        assert_eq!(
            malformed(&reply(OFFERED, "35 01 02  34 01 07  ff"), &mut client),
            Malformed::BadOverload { value: 7 }
        );
        // None of it moved the client on.
        assert!(matches!(client.handle(&offer(), t0), Event::Offered { .. }));
    }

    /// Drives a client into selecting (0), requesting (1) or bound (2).
    fn client_in(state: u8) -> (DhcpClient, Instant) {
        let t0 = Instant::now();
        let client = match state {
            0 => {
                let mut client = DhcpClient::new(MAC, XID, t0);
                client.poll_transmit(t0).unwrap();
                client
            }
            1 => requesting(t0),
            _ => bound(t0),
        };
        (client, t0)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            state in 0u8..3,
        ) {
            let (mut client, t0) = client_in(state);
            let _ = client.handle(&bytes, t0);
            let _ = client.poll_transmit(t0 + secs(1));
        }

        #[test]
        fn arbitrary_options_for_this_client_never_panic(
            options in proptest::collection::vec(any::<u8>(), 0..400),
            file in proptest::collection::vec(any::<u8>(), 0..128),
            yiaddr in any::<[u8; 4]>(),
            state in 0u8..3,
        ) {
            let (mut client, t0) = client_in(state);
            let mut bytes = reply(yiaddr, "");
            bytes[offset::FILE..offset::FILE + file.len()].copy_from_slice(&file);
            bytes.extend(options);
            let _ = client.handle(&bytes, t0);
            if let Some(lease) = client.lease() {
                prop_assert!((1..=32).contains(&lease.prefix_len));
            }
            let _ = client.poll_transmit(t0 + secs(1));
        }
    }
}
