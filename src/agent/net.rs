//! Network bring-up of the discovery agent: finds the Ethernet NICs, brings them up, picks the
//! boot NIC, gets a DHCP lease on it (`proto::dhcp_client` over a UDP socket) and configures the
//! kernel with it. Blocking std code and ioctls: it runs once, before anything else needs the
//! network (call it from `spawn_blocking` if a runtime is already up).
//!
//! Everything but [`list_nics`] goes through sockets, ioctls and `/proc/sys/net`, which act in
//! the network namespace of the calling *thread*; only sysfs shows the namespace of whoever
//! mounted it. So [`bring_up_on`] works on a thread that `setns`-ed into a test namespace, and
//! the tests use it with veth NICs, which [`list_nics`] skips because they have no `device`.
//!
//! Needs sysfs on /sys and procfs on /proc (the agent mounts both as PID 1).

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use crate::policy::identity::parse_mac;
use crate::proto::dhcp::MacAddr;
use crate::proto::dhcp_client::{DhcpClient, Event, Lease};
use crate::proto::dhcp_wire::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT};

/// Where the kernel lists network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";
/// The kernel command line parameter carrying the MAC of the NIC the machine netbooted from.
pub const BOOT_MAC_PARAM: &str = "siderite.mac=";
/// `type` in sysfs and `sa_family` of SIOCGIFHWADDR for Ethernet (ARPHRD_ETHER).
const ARPHRD_ETHER: u16 = 1;
/// How often carrier and NIC presence are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Largest datagram read; DHCP replies are at most an Ethernet frame (jumbo frames included).
const MAX_DATAGRAM: usize = 9216;
/// Ignored DHCP datagrams logged per acquisition; more are only counted, so a noisy segment
/// cannot flood the console.
const MAX_IGNORED_LOGGED: u32 = 10;

/// How long [`bring_up`] waits for each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetTimeouts {
    /// For a NIC to appear (drivers probe asynchronously) and then for carrier.
    pub carrier: Duration,
    /// For a DHCP lease once a NIC has carrier.
    pub dhcp: Duration,
}

impl Default for NetTimeouts {
    /// 20 s for carrier (some NICs take seconds to auto-negotiate), 60 s for DHCP (a switch
    /// port with spanning tree forwards only after ~30 s).
    fn default() -> Self {
        NetTimeouts {
            carrier: Duration::from_secs(20),
            dhcp: Duration::from_secs(60),
        }
    }
}

/// An Ethernet NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name, e.g. `enp1s0`.
    pub name: String,
    /// Its MAC address.
    pub mac: [u8; 6],
}

/// The NIC that got an address, and the lease it is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// Interface name.
    pub nic: String,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// The address, netmask, MTU and default route now set on it.
    pub lease: Lease,
}

/// Why the network could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// sysfs could not be read.
    #[error("cannot list network interfaces in {path}: {source} (is sysfs mounted on /sys?)")]
    ListNics {
        /// The directory read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No Ethernet NIC showed up.
    #[error(
        "no Ethernet NIC appeared within {waited:?} (is the NIC's driver in the discovery \
         image's modules.list?)"
    )]
    NoNics {
        /// How long [`bring_up`] waited.
        waited: Duration,
    },
    /// [`bring_up_on`] got an empty list.
    #[error("no NIC to bring up: the list of NICs is empty")]
    NoNicGiven,
    /// The control socket for interface ioctls could not be opened.
    #[error("cannot open a socket for interface ioctls: {source}")]
    ControlSocket {
        /// Why.
        source: io::Error,
    },
    /// A NIC could not be inspected or brought up.
    #[error("cannot {what} {nic}: {source} (does the interface exist, and is the agent root?)")]
    Interface {
        /// Interface name.
        nic: String,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// [`Nic::named`] on an interface that is not Ethernet.
    #[error("{nic} is not an Ethernet interface (hardware type {hardware_type})")]
    NotEthernet {
        /// Interface name.
        nic: String,
        /// Its ARPHRD type.
        hardware_type: u16,
    },
    /// No candidate NIC got carrier.
    #[error(
        "no carrier on {nics} within {waited:?} (check the cable and that the switch port is \
         enabled)"
    )]
    NoCarrier {
        /// The NICs waited on, comma-separated.
        nics: String,
        /// How long.
        waited: Duration,
    },
    /// The DHCP socket could not be opened.
    #[error(
        "cannot open the DHCP client socket on {nic} (UDP port {port}): {source} (is another \
         DHCP client running?)",
        port = DHCP_CLIENT_PORT
    )]
    DhcpSocket {
        /// Interface name.
        nic: String,
        /// Why.
        source: io::Error,
    },
    /// Receiving on the DHCP socket failed.
    #[error("cannot receive DHCP replies on {nic}: {source}")]
    DhcpReceive {
        /// Interface name.
        nic: String,
        /// Why.
        source: io::Error,
    },
    /// No lease in time.
    #[error(
        "no DHCP lease on {nic} ({mac}) within {waited:?}, {ignored} replies ignored (check that \
         a DHCP server serves this network segment and has free addresses)"
    )]
    DhcpTimeout {
        /// Interface name.
        nic: String,
        /// Its MAC, as the DHCP server logs it.
        mac: MacAddr,
        /// How long.
        waited: Duration,
        /// Datagrams that were not a usable reply (see the debug log).
        ignored: u32,
    },
    /// The lease could not be applied.
    #[error("cannot {what} on {nic}: {source}")]
    Configure {
        /// Interface name.
        nic: String,
        /// What was being done, e.g. "set address 10.0.0.5".
        what: String,
        /// Why.
        source: io::Error,
    },
}

/// The MAC of `siderite.mac=aa:bb:cc:dd:ee:ff` (or `aa-bb-…`) on a kernel command line; the
/// last one wins, like the kernel's own parameters. `None` when absent or malformed.
pub fn boot_mac_hint(cmdline: &str) -> Option<[u8; 6]> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix(BOOT_MAC_PARAM))
        .next_back()
        .and_then(parse_mac)
}

/// The physical Ethernet NICs in `sys_class_net` (normally [`SYS_CLASS_NET`]), in interface
/// index order: type 1, with a `device` (so not lo, veth, bridges, bonds or tunnels), and not
/// wireless (DHCP cannot work before association). A NIC that vanishes while being read is
/// left out.
pub fn list_nics(sys_class_net: &Path) -> Result<Vec<Nic>, NetError> {
    let list_error = |source| NetError::ListNics {
        path: sys_class_net.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(sys_class_net).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let dir = entry.path();
        let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
        let is_ethernet = read("type").is_some_and(|t| t.trim() == ARPHRD_ETHER.to_string());
        let physical = dir.join("device").exists();
        let wireless = dir.join("wireless").exists() || dir.join("phy80211").exists();
        if name == "lo" || !is_ethernet || !physical || wireless {
            continue;
        }
        let Some(mac) = read("address").and_then(|a| parse_mac(a.trim())) else {
            debug!(nic = %name, "skipping NIC without a readable MAC address");
            continue;
        };
        let index: u32 = read("ifindex")
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or(u32::MAX);
        found.push((index, Nic { name, mac }));
    }
    found.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    Ok(found.into_iter().map(|(_, nic)| nic).collect())
}

impl Nic {
    /// The NIC called `name` in the calling thread's network namespace, read with ioctls.
    pub fn named(name: &str) -> Result<Nic, NetError> {
        let control = Control::new()?;
        let (hardware_type, mac) =
            control
                .hardware_address(name)
                .map_err(|source| NetError::Interface {
                    nic: name.to_owned(),
                    what: "read the hardware address of",
                    source,
                })?;
        if hardware_type != ARPHRD_ETHER {
            return Err(NetError::NotEthernet {
                nic: name.to_owned(),
                hardware_type,
            });
        }
        Ok(Nic {
            name: name.to_owned(),
            mac,
        })
    }
}

/// Brings the network up: waits up to `timeouts.carrier` for NICs to appear in
/// [`SYS_CLASS_NET`] (for the one with the `hint` MAC, when there is a hint; drivers probe
/// asynchronously), then [`bring_up_on`] them, which waits up to `timeouts.carrier` again for
/// carrier.
pub fn bring_up(hint: Option<[u8; 6]>, timeouts: NetTimeouts) -> Result<Configured, NetError> {
    let deadline = Instant::now() + timeouts.carrier;
    let path = Path::new(SYS_CLASS_NET);
    let nics = loop {
        let nics = list_nics(path)?;
        let complete = match hint {
            Some(mac) => nics.iter().any(|nic| nic.mac == mac),
            None => !nics.is_empty(),
        };
        let timed_out = Instant::now() >= deadline;
        if complete || (timed_out && !nics.is_empty()) {
            break nics;
        }
        if timed_out {
            return Err(NetError::NoNics {
                waited: timeouts.carrier,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    bring_up_on(&nics, hint, timeouts)
}

/// Brings up the boot NIC among `nics` and configures it with a DHCP lease. The boot NIC is
/// the one whose MAC is `hint`; without a hint, or when no NIC has that MAC, it is the first
/// NIC (in `nics` order) to get carrier within `timeouts.carrier`. Acts in the calling
/// thread's network namespace.
pub fn bring_up_on(
    nics: &[Nic],
    hint: Option<[u8; 6]>,
    timeouts: NetTimeouts,
) -> Result<Configured, NetError> {
    let control = Control::new()?;
    let hinted = hint.and_then(|mac| nics.iter().find(|nic| nic.mac == mac));
    let candidates: Vec<&Nic> = match (hint, hinted) {
        (_, Some(nic)) => vec![nic],
        (Some(mac), None) => {
            warn!(
                mac = %MacAddr(mac),
                "no NIC has the boot MAC; using the first NIC with carrier"
            );
            nics.iter().collect()
        }
        (None, None) => nics.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(NetError::NoNicGiven);
    }

    let mut up = Vec::with_capacity(candidates.len());
    let mut first_error = None;
    for nic in candidates {
        match control.set_up(&nic.name) {
            Ok(()) => up.push(nic),
            Err(source) => {
                warn!(nic = %nic.name, error = %source, "cannot bring NIC up");
                first_error.get_or_insert(NetError::Interface {
                    nic: nic.name.clone(),
                    what: "bring up",
                    source,
                });
            }
        }
    }
    if up.is_empty()
        && let Some(error) = first_error
    {
        return Err(error);
    }

    let nic = wait_for_carrier(&control, &up, timeouts.carrier)?;
    info!(nic = %nic.name, mac = %MacAddr(nic.mac), "NIC has carrier; asking for a DHCP lease");
    allow_replies_without_address(&nic.name);
    let lease = acquire(nic, timeouts.dhcp)?;
    configure(&control, &nic.name, &lease)?;
    info!(
        nic = %nic.name,
        address = %lease.address,
        prefix_len = lease.prefix_len,
        router = ?lease.router,
        server = %lease.server,
        "network configured"
    );
    Ok(Configured {
        nic: nic.name.clone(),
        mac: nic.mac,
        lease,
    })
}

/// The first of `nics` to report carrier (IFF_RUNNING: up, with carrier, operational).
fn wait_for_carrier<'a>(
    control: &Control,
    nics: &[&'a Nic],
    timeout: Duration,
) -> Result<&'a Nic, NetError> {
    let deadline = Instant::now() + timeout;
    loop {
        for nic in nics {
            match control.flags(&nic.name) {
                Ok(flags) if flags & libc::IFF_RUNNING != 0 => return Ok(nic),
                Ok(_) => {}
                // A NIC that vanished (unplugged USB adapter) simply never gets carrier.
                Err(error) => debug!(nic = %nic.name, %error, "cannot read NIC flags"),
            }
        }
        if Instant::now() >= deadline {
            let names: Vec<&str> = nics.iter().map(|nic| nic.name.as_str()).collect();
            return Err(NetError::NoCarrier {
                nics: names.join(", "),
                waited: timeout,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Turns reverse-path filtering off for `nic`: until it has an address, no route leads back to
/// the DHCP server, so a filtering kernel drops the server's broadcast replies as martians.
/// The kernel default is off, but a namespace inherits its creator's setting; the effective
/// value is the larger of `all` and the interface's, so both are cleared. Best effort: a
/// failure is logged and DHCP is tried anyway.
fn allow_replies_without_address(nic: &str) {
    for scope in ["all", nic] {
        let path = format!("/proc/sys/net/ipv4/conf/{scope}/rp_filter");
        match fs::read_to_string(&path) {
            Ok(value) if value.trim() == "0" => {}
            Ok(_) => {
                if let Err(error) = fs::write(&path, "0") {
                    warn!(%path, %error, "cannot turn reverse-path filtering off");
                }
            }
            Err(error) => warn!(%path, %error, "cannot read the reverse-path filter setting"),
        }
    }
}

/// Runs the DHCP client on `nic` until it has a lease or `timeout` passes.
fn acquire(nic: &Nic, timeout: Duration) -> Result<Lease, NetError> {
    let socket = dhcp_socket(&nic.name).map_err(|source| NetError::DhcpSocket {
        nic: nic.name.clone(),
        source,
    })?;
    debug!(nic = %nic.name, "DHCP client socket open");
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT);
    let start = Instant::now();
    let deadline = start + timeout;
    let mut client = DhcpClient::new(nic.mac, early_random(nic.mac), start)
        .with_jitter(u64::from(early_random(nic.mac)) << 32 | u64::from(early_random(nic.mac)));
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut ignored = 0u32;
    loop {
        if let Some(lease) = client.lease() {
            return Ok(lease.clone());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NetError::DhcpTimeout {
                nic: nic.name.clone(),
                mac: MacAddr(nic.mac),
                waited: timeout,
                ignored,
            });
        }
        if let Some(datagram) = client.poll_transmit(now) {
            match socket.send_to(&datagram, server) {
                Ok(_) => debug!(nic = %nic.name, bytes = datagram.len(), "DHCP datagram sent"),
                // The link may flap while the switch port comes up; the next retransmission
                // tries again, and the deadline bounds it all.
                Err(error) => warn!(nic = %nic.name, %error, "cannot send DHCP request"),
            }
        }
        let wake = client.poll_timeout().unwrap_or(deadline).min(deadline);
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|source| NetError::DhcpReceive {
                nic: nic.name.clone(),
                source,
            })?;
        let len = match socket.recv_from(&mut buffer) {
            Ok((len, _)) => len,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(source) => {
                return Err(NetError::DhcpReceive {
                    nic: nic.name.clone(),
                    source,
                });
            }
        };
        match client.handle(&buffer[..len], Instant::now()) {
            Event::Offered { server, address } => {
                info!(nic = %nic.name, %server, %address, "DHCP offer taken");
            }
            Event::Bound => {}
            Event::Refused { server } => {
                warn!(nic = %nic.name, %server, "DHCP server refused the request; starting over");
            }
            Event::Ignored(reason) => {
                ignored += 1;
                if ignored <= MAX_IGNORED_LOGGED {
                    debug!(nic = %nic.name, %reason, "DHCP datagram ignored");
                }
            }
        }
    }
}

/// A random number that never waits for the kernel's entropy pool. At PID 1 on a machine
/// without RDRAND or a hardware RNG (QEMU's default CPU under TCG, some older servers) the pool
/// can stay uninitialized for minutes, and `getrandom(2)` without flags blocks until it is
/// ready — the agent then hung before its first DHCPDISCOVER. A transaction ID and jitter need
/// only to differ between machines, so this asks for `GRND_INSECURE` (Linux 5.6+), falls back
/// to `GRND_NONBLOCK`, and finally to the clock mixed with the NIC's MAC.
fn early_random(mac: [u8; 6]) -> u32 {
    let mut bytes = [0u8; 4];
    for flags in [libc::GRND_INSECURE, libc::GRND_NONBLOCK] {
        // SAFETY: the buffer is valid for writes of its length for the duration of the call.
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), flags) };
        if got == bytes.len() as isize {
            return u32::from_ne_bytes(bytes);
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let [_, _, a, b, c, d] = mac;
    nanos ^ u32::from_be_bytes([a, b, c, d]).rotate_left(7)
}

/// A UDP socket on port 68 of `nic` only, allowed to broadcast.
fn dhcp_socket(nic: &str) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Without it, with several NICs up, a reply arriving on another NIC would be taken too.
    socket.bind_device(Some(nic.as_bytes()))?;
    socket.set_broadcast(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT).into())?;
    Ok(socket.into())
}

/// Applies `lease` to `nic`: MTU, address and netmask, and the default route.
fn configure(control: &Control, nic: &str, lease: &Lease) -> Result<(), NetError> {
    let failed = |what: String| {
        move |source| NetError::Configure {
            nic: nic.to_owned(),
            what,
            source,
        }
    };
    if let Some(mtu) = lease.mtu
        && let Err(error) = control.set_mtu(nic, mtu)
    {
        // The default MTU still carries the agent's small requests; losing the network over
        // it would be worse.
        warn!(nic, mtu, %error, "cannot set the MTU the DHCP server asks for (does the NIC support it?)");
    }
    control
        .set_address(nic, libc::SIOCSIFADDR, lease.address)
        .map_err(failed(format!("set address {}", lease.address)))?;
    // After the address: SIOCSIFADDR resets the mask to the address's class.
    control
        .set_address(nic, libc::SIOCSIFNETMASK, lease.netmask())
        .map_err(failed(format!("set netmask {}", lease.netmask())))?;
    let Some(router) = lease.router else {
        return Ok(());
    };
    let mask = u32::from(lease.netmask());
    if u32::from(router) & mask != u32::from(lease.address) & mask {
        // A router outside the subnet (e.g. a /32 lease) is reachable only through a host
        // route on the NIC.
        control
            .add_route(nic, router, Ipv4Addr::BROADCAST, None)
            .map_err(failed(format!("add a route to router {router}")))?;
    }
    control
        .add_route(
            nic,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Some(router),
        )
        .map_err(failed(format!("add a default route via {router}")))
}

/// `struct rtentry` of `<linux/route.h>`, the argument of SIOCADDRT; the libc crate has it for
/// musl only, and the agent links glibc.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An AF_INET datagram socket used only for interface ioctls, which act in the network
/// namespace the socket was created in.
struct Control(OwnedFd);

impl Control {
    fn new() -> Result<Control, NetError> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)
            .map_err(|source| NetError::ControlSocket { source })?;
        Ok(Control(socket.into()))
    }

    /// An `ifreq` naming `nic`, the rest zero.
    fn request(nic: &str) -> io::Result<libc::ifreq> {
        if nic.is_empty() || nic.len() >= libc::IFNAMSIZ || nic.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{nic:?} is not an interface name (1 to 15 bytes, no NUL)"),
            ));
        }
        // SAFETY: `ifreq` is plain old data (a name array and a union of integers, sockaddrs
        // and a pointer); all zeroes is a valid value of it.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(nic.bytes()) {
            *slot = byte as libc::c_char;
        }
        Ok(request)
    }

    /// An ioctl that takes an `ifreq`: every `request` passed here does.
    fn ifreq_ioctl(&self, request: libc::c_ulong, ifreq: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: `ifreq` is a live, exclusively borrowed `struct ifreq`, which is what the
        // SIOC[GS]IF* requests used in this module read and write, and nothing beyond it.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, ifreq as *mut _) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIOCGIFHWADDR: the hardware type and the first six bytes of the address.
    fn hardware_address(&self, nic: &str) -> io::Result<(u16, [u8; 6])> {
        let mut ifreq = Control::request(nic)?;
        self.ifreq_ioctl(libc::SIOCGIFHWADDR, &mut ifreq)?;
        // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
        let hwaddr = unsafe { ifreq.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (byte, data) in mac.iter_mut().zip(hwaddr.sa_data.iter()) {
            *byte = *data as u8;
        }
        Ok((hwaddr.sa_family, mac))
    }

    /// SIOCGIFFLAGS: the low 16 interface flags (IFF_UP, IFF_RUNNING, ...).
    fn flags(&self, nic: &str) -> io::Result<libc::c_int> {
        let mut ifreq = Control::request(nic)?;
        self.ifreq_ioctl(libc::SIOCGIFFLAGS, &mut ifreq)?;
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
        let flags = unsafe { ifreq.ifr_ifru.ifru_flags };
        // A C short: read its bits, not its sign.
        Ok(libc::c_int::from(flags as u16))
    }

    /// Sets IFF_UP, keeping the other flags.
    fn set_up(&self, nic: &str) -> io::Result<()> {
        let flags = self.flags(nic)?;
        if flags & libc::IFF_UP != 0 {
            return Ok(());
        }
        let mut ifreq = Control::request(nic)?;
        // Back into the 16-bit C short the kernel reads; `flags` came from one.
        ifreq.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as u16 as libc::c_short;
        self.ifreq_ioctl(libc::SIOCSIFFLAGS, &mut ifreq)
    }

    /// SIOCSIFMTU.
    fn set_mtu(&self, nic: &str, mtu: u16) -> io::Result<()> {
        let mut ifreq = Control::request(nic)?;
        ifreq.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        self.ifreq_ioctl(libc::SIOCSIFMTU, &mut ifreq)
    }

    /// SIOCSIFADDR or SIOCSIFNETMASK (`request`) with `address`.
    fn set_address(&self, nic: &str, request: libc::c_ulong, address: Ipv4Addr) -> io::Result<()> {
        let mut ifreq = Control::request(nic)?;
        ifreq.ifr_ifru.ifru_addr = sockaddr(address);
        self.ifreq_ioctl(request, &mut ifreq)
    }

    /// SIOCADDRT: a route to `destination`/`mask` out of `nic`, via `gateway` if given. A route
    /// that already exists (a second bring-up) counts as added.
    fn add_route(
        &self,
        nic: &str,
        destination: Ipv4Addr,
        mask: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        // Validates the name as the other requests do.
        Control::request(nic)?;
        let mut device: Vec<u8> = nic.as_bytes().to_vec();
        device.push(0);
        let mut flags = libc::RTF_UP;
        if gateway.is_some() {
            flags |= libc::RTF_GATEWAY;
        }
        if mask == Ipv4Addr::BROADCAST {
            flags |= libc::RTF_HOST;
        }
        let mut route = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr(destination),
            rt_gateway: sockaddr(gateway.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            rt_genmask: sockaddr(mask),
            rt_flags: flags,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: device.as_mut_ptr().cast(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        // SAFETY: `route` is a `struct rtentry` as SIOCADDRT expects; `rt_dev` points to a
        // NUL-terminated name that outlives the call.
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCADDRT as _,
                &mut route as *mut RtEntry,
            )
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EEXIST) {
                return Err(error);
            }
        }
        Ok(())
    }
}

/// `address` as the `sockaddr` the interface and route ioctls take: a `sockaddr_in`.
fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` are both 16-byte plain old data; passing a
    // `sockaddr_in` in a `sockaddr` field is how these ioctls take IPv4 addresses.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn boot_mac_hint_reads_the_last_siderite_mac_parameter() {
        let mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        assert_eq!(
            boot_mac_hint("BOOT_IMAGE=/vmlinuz siderite.mac=52:54:00:ab:cd:ef console=ttyS0"),
            Some(mac)
        );
        assert_eq!(boot_mac_hint("siderite.mac=52-54-00-AB-CD-EF"), Some(mac));
        assert_eq!(
            boot_mac_hint("siderite.mac=00:00:00:00:00:01 quiet siderite.mac=52:54:00:ab:cd:ef"),
            Some(mac)
        );
        assert_eq!(boot_mac_hint("console=ttyS0 quiet"), None);
        assert_eq!(boot_mac_hint("xsiderite.mac=52:54:00:ab:cd:ef"), None);
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "5:54:00:ab:cd:ef",
            "52:54:00:ab:cd:eg",
            "525400abcdef",
            "",
        ] {
            assert_eq!(
                boot_mac_hint(&format!("siderite.mac={bad}")),
                None,
                "{bad:?}"
            );
        }
    }

    /// Writes a fake `/sys/class/net/<name>` entry.
    fn fake_nic(root: &Path, name: &str, kind: u16, index: u32, physical: bool, mac: &str) {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
        if !mac.is_empty() {
            fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        }
        if physical {
            // Outside the listed directory, as /sys/devices is.
            let device = root.with_file_name("devices").join(name);
            fs::create_dir_all(&device).unwrap();
            std::os::unix::fs::symlink(&device, dir.join("device")).unwrap();
        }
    }

    #[test]
    fn list_nics_keeps_physical_ethernet_in_index_order() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("class/net");
        fake_nic(&sys, "lo", 772, 1, false, "00:00:00:00:00:00");
        fake_nic(&sys, "enp2s0", 1, 3, true, "52:54:00:00:00:03");
        fake_nic(&sys, "eno1", 1, 2, true, "52:54:00:00:00:02");
        fake_nic(&sys, "veth0", 1, 4, false, "52:54:00:00:00:04");
        fake_nic(&sys, "wlan0", 1, 5, true, "52:54:00:00:00:05");
        fs::create_dir(sys.join("wlan0/wireless")).unwrap();
        fake_nic(&sys, "ib0", 32, 6, true, "52:54:00:00:00:06");
        fake_nic(&sys, "gone0", 1, 7, true, "");
        let nics = list_nics(&sys).unwrap();
        assert_eq!(
            nics,
            [
                Nic {
                    name: "eno1".into(),
                    mac: [0x52, 0x54, 0, 0, 0, 2]
                },
                Nic {
                    name: "enp2s0".into(),
                    mac: [0x52, 0x54, 0, 0, 0, 3]
                },
            ]
        );
    }

    #[test]
    fn listing_a_missing_sysfs_names_the_directory() {
        let error = list_nics(Path::new("/nonexistent/class/net")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("/nonexistent/class/net"), "{text}");
        assert!(text.contains("is sysfs mounted"), "{text}");
    }

    #[test]
    fn early_random_differs_between_calls_without_blocking() {
        let values: std::collections::HashSet<u32> = (0..8)
            .map(|_| early_random([0x52, 0x54, 0, 0, 0, 1]))
            .collect();
        assert!(values.len() > 1, "eight draws all gave {values:?}");
    }

    #[test]
    fn sockaddr_carries_the_address_in_network_order() {
        let sa = sockaddr(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let data: Vec<u8> = sa.sa_data.iter().map(|b| *b as u8).collect();
        assert_eq!(data[..6], [0, 0, 10, 1, 2, 3], "port 0, then the address");
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn rtentry_has_the_kernel_layout() {
        // sizeof(struct rtentry) on 64-bit Linux, and the offset of rt_dev.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    // ---- Root tests: real namespaces, veth pairs and dnsmasq. ----

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// The MAC given to the client's connected NIC.
    const LIVE_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x01];
    const LIVE_NIC: &str = "veth-c";
    /// A second client NIC whose peer stays down: never any carrier.
    const DEAD_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
    const DEAD_NIC: &str = "dead-c";

    /// Runs a command, panicking with its output if it fails.
    fn run(program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} (needs iproute2): {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed (these tests need root): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mac_text(mac: [u8; 6]) -> String {
        MacAddr(mac).to_string()
    }

    /// Two namespaces of its own joined by a veth pair: `client` holds `veth-c`, `server` holds
    /// `veth-s` with 10.99.<subnet>.1/24 and, once started, dnsmasq. Both namespaces (and with
    /// them every interface created here) are deleted on drop, also when a test fails.
    struct Netns {
        client: String,
        server: String,
        subnet: u8,
        dir: tempfile::TempDir,
        dnsmasq: Option<Child>,
    }

    impl Netns {
        fn new() -> Netns {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let id = format!("nw{}-{n}", std::process::id());
            let lab = Netns {
                client: format!("{id}-c"),
                server: format!("{id}-s"),
                subnet: u8::try_from(10 + n % 200).unwrap(),
                dir: tempfile::tempdir().unwrap(),
                dnsmasq: None,
            };
            // Registered before anything can fail, so Drop cleans up whatever exists.
            run("ip", &["netns", "add", &lab.client]);
            run("ip", &["netns", "add", &lab.server]);
            lab.ip(&lab.server, &["link", "set", "lo", "up"]);
            lab.ip(
                &lab.client,
                &[
                    "link",
                    "add",
                    LIVE_NIC,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "veth-s",
                    "netns",
                    &lab.server,
                ],
            );
            lab.ip(
                &lab.client,
                &["link", "set", LIVE_NIC, "address", &mac_text(LIVE_MAC)],
            );
            let server_ip = format!("{}/24", lab.server_ip());
            lab.ip(&lab.server, &["addr", "add", &server_ip, "dev", "veth-s"]);
            lab.ip(&lab.server, &["link", "set", "veth-s", "up"]);
            // Reverse-path filtering on, as a distribution's sysctl.d sets it: the agent must
            // still hear the server before it has an address.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &lab.client,
                    "sh",
                    "-c",
                    "echo 2 > /proc/sys/net/ipv4/conf/all/rp_filter",
                ],
            );
            lab
        }

        fn ip(&self, ns: &str, args: &[&str]) -> String {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            run("ip", &full)
        }

        fn server_ip(&self) -> Ipv4Addr {
            Ipv4Addr::new(10, 99, self.subnet, 1)
        }

        /// Adds `dead-c` to the client namespace, its peer left down.
        fn add_dead_nic(&self) {
            self.ip(
                &self.client,
                &[
                    "link", "add", DEAD_NIC, "type", "veth", "peer", "name", "dead-p",
                ],
            );
            self.ip(
                &self.client,
                &["link", "set", DEAD_NIC, "address", &mac_text(DEAD_MAC)],
            );
        }

        fn start_dnsmasq(&mut self) {
            let dir = self.dir.path();
            let prefix = format!("10.99.{}", self.subnet);
            let log = File::create(dir.join("dnsmasq.log")).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", &self.server, "/usr/sbin/dnsmasq"])
                .args([
                    "--keep-in-foreground",
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--interface=veth-s",
                    "--bind-interfaces",
                    "--dhcp-authoritative",
                    "--log-dhcp",
                    "--log-facility=-",
                    "--dhcp-option=option:mtu,1400",
                ])
                .arg(format!(
                    "--dhcp-range={prefix}.100,{prefix}.150,255.255.255.0,1h"
                ))
                .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start dnsmasq (Debian: dnsmasq-base)");
            self.dnsmasq = Some(child);
        }

        /// Runs `f` on a thread inside the client namespace; nothing it does can reach the
        /// host's interfaces.
        fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let path = format!("/run/netns/{}", self.client);
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let ns = File::open(&path).unwrap();
                        // SAFETY: `ns` is an open namespace file; setns changes only this
                        // thread's network namespace.
                        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                        let mine = fs::metadata("/proc/thread-self/ns/net").unwrap();
                        let wanted = ns.metadata().unwrap();
                        assert_eq!(
                            (mine.dev(), mine.ino()),
                            (wanted.dev(), wanted.ino()),
                            "not in the test namespace: refusing to run"
                        );
                        f()
                    })
                    .join()
                    .expect("the client thread panicked")
            })
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            if let Some(mut child) = self.dnsmasq.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if std::thread::panicking() {
                let log = fs::read_to_string(self.dir.path().join("dnsmasq.log"));
                eprintln!("---- dnsmasq ----\n{}", log.unwrap_or_default());
            }
            for ns in [&self.client, &self.server] {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    fn timeouts(carrier: u64, dhcp: u64) -> NetTimeouts {
        NetTimeouts {
            carrier: Duration::from_secs(carrier),
            dhcp: Duration::from_secs(dhcp),
        }
    }

    fn host_rp_filter() -> String {
        fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap()
    }

    #[test]
    fn a_dhcp_lease_configures_address_route_and_mtu() {
        let mut lab = Netns::new();
        lab.start_dnsmasq();
        let host_before = host_rp_filter();
        let configured = lab
            .in_client(|| {
                let nic = Nic::named(LIVE_NIC)?;
                bring_up_on(&[nic], Some(LIVE_MAC), timeouts(10, 30))
            })
            .expect("bring-up succeeds");
        let server = lab.server_ip();
        assert_eq!(configured.nic, LIVE_NIC);
        assert_eq!(configured.mac, LIVE_MAC);
        let lease = &configured.lease;
        let [a, b, c, d] = lease.address.octets();
        assert_eq!([a, b, c], [10, 99, lab.subnet]);
        assert!(
            (100..=150).contains(&d),
            "{} is outside the range",
            lease.address
        );
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.server, server);
        assert_eq!(lease.router, Some(server));
        assert_eq!(lease.mtu, Some(1400));
        assert_eq!(lease.lease_time, Duration::from_secs(3600));

        let addr = lab.ip(&lab.client, &["-4", "-o", "addr", "show", "dev", LIVE_NIC]);
        let expected = format!("inet {}/24 brd 10.99.{}.255", lease.address, lab.subnet);
        assert!(addr.contains(&expected), "{addr}");
        let route = lab.ip(&lab.client, &["-4", "route", "show", "default"]);
        assert!(
            route.contains(&format!("default via {server} dev {LIVE_NIC}")),
            "{route}"
        );
        let link = lab.ip(&lab.client, &["link", "show", LIVE_NIC]);
        assert!(link.contains("mtu 1400"), "{link}");
        assert_eq!(
            host_rp_filter(),
            host_before,
            "the host's sysctl is untouched"
        );
    }

    #[test]
    fn without_a_matching_hint_the_nic_with_carrier_is_chosen() {
        let mut lab = Netns::new();
        lab.add_dead_nic();
        lab.start_dnsmasq();
        let (nics, lo, configured) = lab.in_client(|| {
            let nics = [Nic::named(DEAD_NIC).unwrap(), Nic::named(LIVE_NIC).unwrap()];
            let lo = Nic::named("lo");
            let other_mac = Some([0x02, 0x99, 0, 0, 0, 0x77]);
            let configured = bring_up_on(&nics, other_mac, timeouts(10, 30));
            (nics, lo, configured)
        });
        assert_eq!(
            nics[0].mac, DEAD_MAC,
            "Nic::named reads the namespace's NIC"
        );
        assert!(
            matches!(
                lo,
                Err(NetError::NotEthernet {
                    hardware_type: 772,
                    ..
                })
            ),
            "{lo:?}"
        );
        let configured = configured.expect("bring-up succeeds on the live NIC");
        assert_eq!(configured.nic, LIVE_NIC);
        let dead = lab.ip(&lab.client, &["-4", "-o", "addr", "show", "dev", DEAD_NIC]);
        assert!(
            dead.trim().is_empty(),
            "the dead NIC got an address: {dead}"
        );
    }

    #[test]
    fn a_hinted_nic_without_carrier_fails_naming_it() {
        let lab = Netns::new();
        lab.add_dead_nic();
        let started = Instant::now();
        let result = lab.in_client(|| {
            let nics = [Nic::named(DEAD_NIC).unwrap(), Nic::named(LIVE_NIC).unwrap()];
            bring_up_on(&nics, Some(DEAD_MAC), timeouts(1, 5))
        });
        let error = result.expect_err("no carrier on the hinted NIC");
        assert!(
            matches!(&error, NetError::NoCarrier { nics, .. } if nics == DEAD_NIC),
            "{error:?}"
        );
        assert!(error.to_string().contains("check the cable"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn no_dhcp_server_times_out_naming_the_nic() {
        let lab = Netns::new();
        let started = Instant::now();
        let result = lab.in_client(|| {
            let nic = Nic::named(LIVE_NIC).unwrap();
            bring_up_on(&[nic], None, timeouts(10, 3))
        });
        let error = result.expect_err("nobody answers");
        let NetError::DhcpTimeout { nic, mac, .. } = &error else {
            panic!("expected a DHCP timeout, got {error:?}");
        };
        assert_eq!(nic, LIVE_NIC);
        assert_eq!(mac.0, LIVE_MAC);
        let text = error.to_string();
        assert!(text.contains("02:99:00:00:00:01"), "{text}");
        assert!(text.contains("check that a DHCP server"), "{text}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(8),
            "{elapsed:?}"
        );
        let addr = lab.ip(&lab.client, &["-4", "-o", "addr", "show", "dev", LIVE_NIC]);
        assert!(addr.trim().is_empty(), "{addr}");
    }
}
