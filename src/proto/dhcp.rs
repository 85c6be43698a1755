//! ProxyDHCP for PXE and UEFI HTTP boot clients, sans-IO: [`classify`] validates a BOOTREQUEST
//! once, [`respond`] decides the boot information to send back, [`handle`] does both. Siderite
//! never hands out addresses (the site DHCP server does), so every reply has `yiaddr` 0.0.0.0
//! and only tells a firmware which file to boot and from where. Only `serve::dhcp` owns sockets.
//!
//! Requests are decoded and replies encoded with `proto::dhcp_wire` (which says why not with
//! `dhcproto`).
//!
//! Where the behaviour comes from (facts, read in the peers' sources):
//! - A client is a PXE client when option 60 starts with `PXEClient` or `HTTPClient` and it sends
//!   option 93 (PXE 2.1; dnsmasq `is_pxe_client`; Tinkerbell smee `IsNetbootClient`).
//! - Option 97 is absent (buggy ROMs omit it) or exactly 17 bytes starting with type 0
//!   (RFC 4578 §2.3; pixiecore and smee check the same and echo it back).
//! - The reply's option 60 says `PXEClient` or `HTTPClient`: EDK2 only treats an offer as a PXE
//!   offer when its option 60 starts with `PXEClient`, and iPXE only takes a ProxyDHCP offer
//!   whose option 60 is `PXEClient`; EDK2's HTTP boot wants `HTTPClient`.
//! - Option 43 with PXE sub-option 6 (discovery control) = 8 tells a PXE ROM to skip boot server
//!   discovery and menus and boot the file name (dnsmasq `pxe_opts` with no menu, pixiecore,
//!   smee). EDK2 honours it when a boot file is present (`PxeBcSelectBootPrompt`).
//! - A ProxyDHCP offer without option 43 makes EDK2 send a DHCPREQUEST to port 4011 of `siaddr`
//!   (its "BINL" path, `PxeBcRetryBinlOffer`); that request is answered here with a DHCPACK.
//! - dnsmasq NUL-terminates option 67 ("some PXE ROMs have bugs and need zero-terminated names")
//!   and pads replies to the 300-byte BOOTP minimum; both are done here too.
//! - The client UUID in option 97 is in EFI/SMBIOS byte order (first three fields little-endian):
//!   EDK2 copies the SMBIOS type 1 UUID, and iPXE `uuid_mangle`s its UUID before sending it.

use std::fmt;
use std::net::Ipv4Addr;

use super::dhcp_wire::{
    BOOTREPLY, BOOTREQUEST, Builder, DHCP_SERVER_PORT, ETHERNET_ADDR_LEN, FLAG_BROADCAST,
    HTYPE_ETHERNET, Malformed, Options, bad_length, check_magic, header, message_type, offset,
    option, read_ipv4, read_u16, read_u32,
};

/// UDP port of the PXE boot server (PXE 2.1): clients unicast DHCPREQUEST to it.
pub const PXE_BOOT_SERVER_PORT: u16 = 4011;

/// Longest boot file name put in the 128-byte `file` field, leaving room for its NUL.
const MAX_FILE_FIELD_LEN: usize = 127;
/// Longest boot file name put in option 67, leaving room for its NUL in 255 bytes.
pub const MAX_BOOT_FILE_LEN: usize = 254;

/// PXE sub-options carried inside option 43 (PXE 2.1 specification, table 2-1).
pub mod pxe {
    /// PXE_DISCOVERY_CONTROL: bit flags steering boot server discovery.
    pub const DISCOVERY_CONTROL: u8 = 6;
    /// PXE_BOOT_ITEM: boot server type and layer (4 bytes) of a boot server request.
    pub const BOOT_ITEM: u8 = 71;
    /// End of the sub-options.
    pub const END: u8 = 255;
    /// Discovery control bit 3: no prompt or menu, boot the file name in the offer.
    pub const DISCOVERY_USE_BOOT_FILE: u8 = 8;
}

/// Client system architecture types of option 93 (IANA "Processor Architecture Types"; the
/// registry corrects RFC 4578, which had 7 and 9 swapped).
pub mod arch {
    /// x86 BIOS (PXE ROM).
    pub const BIOS: u16 = 0;
    /// x86 (IA32) UEFI.
    pub const EFI_IA32: u16 = 6;
    /// x64 UEFI.
    pub const EFI_X64: u16 = 7;
    /// EFI byte code.
    pub const EFI_BC: u16 = 9;
    /// ARM 64-bit UEFI.
    pub const EFI_ARM64: u16 = 11;
    /// x64 UEFI HTTP boot.
    pub const EFI_X64_HTTP: u16 = 16;
    /// ARM 64-bit UEFI HTTP boot.
    pub const EFI_ARM64_HTTP: u16 = 19;
}

/// Length of option 97: the type byte and a 16-byte GUID.
const CLIENT_UUID_LEN: usize = 17;
/// The only client identifier type of option 97: a GUID.
const CLIENT_UUID_TYPE_GUID: u8 = 0;
/// Length of PXE_BOOT_ITEM.
const BOOT_ITEM_LEN: usize = 4;

/// Option 60 prefix of PXE firmware (and of iPXE).
const VENDOR_PXE_CLIENT: &[u8] = b"PXEClient";
/// Option 60 prefix of UEFI HTTP boot firmware.
const VENDOR_HTTP_CLIENT: &[u8] = b"HTTPClient";
/// What iPXE puts in option 77.
const USER_CLASS_IPXE: &[u8] = b"iPXE";

/// The iPXE binary for BIOS PXE ROMs (Debian `ipxe`: `/usr/lib/ipxe/undionly.kpxe`).
pub const BIOS_BOOT_FILE: &str = "undionly.kpxe";
/// The iPXE binary for x86 UEFI (Debian `ipxe`: `/usr/lib/ipxe/ipxe.efi`).
pub const EFI_BOOT_FILE: &str = "ipxe.efi";
/// The iPXE binary for ARM64 UEFI, when the appliance has one.
pub const ARM64_BOOT_FILE: &str = "snp-arm64.efi";

/// A UDP port ProxyDHCP listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// UDP 67, where clients broadcast DHCPDISCOVER and DHCPREQUEST.
    Dhcp,
    /// UDP 4011, where PXE clients unicast DHCPREQUEST to the boot server.
    PxeBootServer,
}

impl Port {
    /// The port number.
    pub const fn number(self) -> u16 {
        match self {
            Port::Dhcp => DHCP_SERVER_PORT,
            Port::PxeBootServer => PXE_BOOT_SERVER_PORT,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UDP {}", self.number())
    }
}

/// What the appliance offers; fixed for the life of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The appliance's address on the provisioning network: option 54, `siaddr`, TFTP server.
    pub server_ip: Ipv4Addr,
    /// Base URL of the boot HTTP server, e.g. `http://10.77.0.2:8081` (a trailing `/` is
    /// ignored).
    pub http_base: String,
    /// Whether `snp-arm64.efi` (or another ARM64 iPXE binary under that name) is available over
    /// TFTP and HTTP; ARM64 clients are not answered otherwise.
    pub arm64_available: bool,
}

/// A client's Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `aa-bb-cc-dd-ee-ff`, the form iPXE's `${mac:hexhyp}` prints and Sidero's URLs carry.
    pub fn hyphenated(&self) -> String {
        self.with_separator('-')
    }

    fn with_separator(&self, separator: char) -> String {
        let mut out = String::with_capacity(17);
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

impl fmt::Display for MacAddr {
    /// `aa:bb:cc:dd:ee:ff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_separator(':'))
    }
}

/// The vendor class (option 60) a boot client announced, echoed in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VendorClass {
    /// `PXEClient`: a PXE ROM, UEFI PXE, or iPXE; loads its boot file over TFTP.
    PxeClient,
    /// `HTTPClient`: UEFI HTTP boot; its boot file is a URL.
    HttpClient,
}

impl VendorClass {
    /// The class from option 60, which carries more after the prefix (`PXEClient:Arch:00000:…`).
    fn from_option(value: &[u8]) -> Option<VendorClass> {
        if value.starts_with(VENDOR_PXE_CLIENT) {
            Some(VendorClass::PxeClient)
        } else if value.starts_with(VENDOR_HTTP_CLIENT) {
            Some(VendorClass::HttpClient)
        } else {
            None
        }
    }

    /// What the reply's option 60 carries.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            VendorClass::PxeClient => VENDOR_PXE_CLIENT,
            VendorClass::HttpClient => VENDOR_HTTP_CLIENT,
        }
    }
}

impl fmt::Display for VendorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VendorClass::PxeClient => "PXEClient",
            VendorClass::HttpClient => "HTTPClient",
        })
    }
}

/// The client's firmware, as classified from options 60, 77, 93 and 175.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// x86 BIOS PXE ROM (arch 0): chainloads `undionly.kpxe`.
    Bios,
    /// IA32 UEFI PXE (arch 6): chainloads `ipxe.efi`.
    EfiIa32,
    /// x64 UEFI PXE (arch 7): chainloads `ipxe.efi`.
    EfiX64,
    /// EFI byte code PXE (arch 9): chainloads `ipxe.efi`.
    EfiBc,
    /// ARM64 UEFI PXE (arch 11): chainloads `snp-arm64.efi`.
    EfiArm64,
    /// x64 UEFI HTTP boot (arch 16): fetches `ipxe.efi` over HTTP.
    HttpEfiX64,
    /// ARM64 UEFI HTTP boot (arch 19): fetches `snp-arm64.efi` over HTTP.
    HttpEfiArm64,
    /// Already running iPXE (user class `iPXE` or option 175), on any architecture: gets the
    /// URL of its iPXE script.
    Ipxe {
        /// Option 93 as iPXE sent it.
        arch: u16,
    },
}

impl Firmware {
    /// Whether replies carry option 43 with discovery control 8: PXE ROMs need it to boot the
    /// file name without boot server discovery; HTTP boot and iPXE do not read it.
    fn wants_discovery_control(self) -> bool {
        matches!(
            self,
            Firmware::Bios
                | Firmware::EfiIa32
                | Firmware::EfiX64
                | Firmware::EfiBc
                | Firmware::EfiArm64
        )
    }
}

/// A validated PXE or HTTP boot request: everything [`respond`] needs, nothing unchecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeRequest {
    /// `chaddr`.
    pub mac: MacAddr,
    /// `xid`, copied into the reply.
    pub xid: u32,
    /// `flags` as the client sent them.
    pub flags: u16,
    /// `ciaddr`, when the client already has an address (requests to port 4011).
    pub client_ip: Option<Ipv4Addr>,
    /// `giaddr`, when a relay agent forwarded the request.
    pub relay: Option<Ipv4Addr>,
    /// The first architecture type of option 93.
    pub arch: u16,
    /// The vendor class of option 60.
    pub vendor_class: VendorClass,
    /// What the client is.
    pub firmware: Firmware,
    /// The GUID of option 97 as sent (EFI byte order), echoed in the reply; see
    /// [`PxeRequest::uuid_string`].
    pub uuid: Option<[u8; 16]>,
    /// Option 53 ([`message_type`]).
    pub msg_type: u8,
    /// The port the request arrived on.
    pub port: Port,
    /// Option 54: the server a DHCPREQUEST is addressed to.
    pub server_id: Option<Ipv4Addr>,
    /// PXE_BOOT_ITEM (type and layer) from option 43 of a boot server request, echoed back.
    pub boot_item: Option<[u8; 4]>,
}

impl PxeRequest {
    /// The client UUID in its canonical text form (what `dmidecode` and iPXE's `${uuid}` print
    /// and what names a `Server`), or `None` when option 97 is absent or all zeros or all ones
    /// (SMBIOS: "not set" and "not present").
    pub fn uuid_string(&self) -> Option<String> {
        let g = self.uuid?;
        if g.iter().all(|&b| b == 0) || g.iter().all(|&b| b == 0xff) {
            return None;
        }
        // The first three fields are little-endian on the wire; the text form is big-endian.
        let bytes = [
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ];
        let mut out = String::with_capacity(36);
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push('-');
            }
            out.push_str(&format!("{byte:02x}"));
        }
        Some(out)
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// 255.255.255.255:68 out of the interface the request came in on: the client has no
    /// address yet, and `yiaddr` is 0 so there is nothing to unicast to.
    Broadcast,
    /// The relay agent at `giaddr`, port 67; it forwards the reply to the client's segment.
    Relay(Ipv4Addr),
    /// Unicast to the client at `ciaddr`, on the UDP port its request came *from*: EDK2 sends
    /// its port-4011 request from port 4011 and listens there (`Dhcp4InstanceConfigUdpIo`), so
    /// port 68 would not reach it; dnsmasq and pixiecore answer the source port too.
    Client(Ipv4Addr),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Broadcast => write!(f, "broadcast"),
            Destination::Relay(ip) => write!(f, "relay {ip}"),
            Destination::Client(ip) => write!(f, "client {ip}"),
        }
    }
}

/// A decided reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The wire form, padded to the BOOTP minimum of 300 bytes.
    pub bytes: Vec<u8>,
    /// Where to send it.
    pub destination: Destination,
    /// The boot file or URL handed to the client.
    pub boot_file: String,
    /// The request it answers.
    pub request: PxeRequest,
}

/// Why a packet gets no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignore {
    /// A BOOTREPLY or other non-request.
    #[error("op {op} is not BOOTREQUEST (1)")]
    NotBootRequest {
        /// The `op` field.
        op: u8,
    },
    /// Not a boot client: ordinary DHCP traffic, left to the site DHCP server.
    #[error("not a PXE or HTTP boot client (needs option 60 PXEClient/HTTPClient and option 93)")]
    NotPxe,
    /// A message type ProxyDHCP does not answer on this port (or none at all).
    #[error("DHCP message type {message_type} is not answered on {port}")]
    UnexpectedMessage {
        /// Option 53, 0 when absent.
        message_type: u8,
        /// Where it arrived.
        port: Port,
    },
    /// A boot client on something other than Ethernet.
    #[error("hardware type {htype} with address length {hlen} is not Ethernet (1, 6)")]
    NotEthernet {
        /// `htype`.
        htype: u8,
        /// `hlen`.
        hlen: u8,
    },
    /// No boot file for this architecture and vendor class.
    #[error("no boot file for client architecture {arch} with vendor class {vendor_class}")]
    UnsupportedArch {
        /// Option 93.
        arch: u16,
        /// Option 60.
        vendor_class: VendorClass,
    },
    /// An ARM64 client, but no ARM64 iPXE binary is configured.
    #[error("ARM64 client, but no ARM64 iPXE binary is available (arm64_available is false)")]
    Arm64Unavailable,
    /// A DHCPREQUEST accepting another server's offer (the site DHCP server's).
    #[error("DHCPREQUEST is addressed to server {server}, not to this one")]
    NotForUs {
        /// Option 54 of the request.
        server: Ipv4Addr,
    },
    /// The boot file does not fit option 67; shorten `http_base`.
    #[error("boot file is {len} bytes, longer than {max}; shorten the HTTP base URL", max = MAX_BOOT_FILE_LEN)]
    BootFileTooLong {
        /// Its length.
        len: usize,
    },
    /// Broken on the wire.
    #[error("malformed packet: {0}")]
    Malformed(#[from] Malformed),
}

impl Ignore {
    /// Whether the packet was broken rather than merely not for us (worth a warning).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Ignore::Malformed(_))
    }
}

fn nonzero(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}

/// Validates an untrusted datagram received on `port` once, into a [`PxeRequest`], or says why
/// it gets no reply. Never panics.
pub fn classify(bytes: &[u8], port: Port) -> Result<PxeRequest, Ignore> {
    let header = header(bytes)?;
    // Every fixed-header index is below offset::OPTIONS, so in bounds of `header`.
    if header[offset::OP] != BOOTREQUEST {
        return Err(Ignore::NotBootRequest {
            op: header[offset::OP],
        });
    }
    check_magic(header)?;
    let options = Options::parse(bytes)?;

    // Ordinary DHCP clients are the common case on a shared segment: recognise them before
    // judging anything else about the packet, so they are ignored silently.
    let vendor_class = options
        .get(option::VENDOR_CLASS)
        .and_then(VendorClass::from_option)
        .ok_or(Ignore::NotPxe)?;
    let arch_types = options.get(option::CLIENT_ARCH).ok_or(Ignore::NotPxe)?;
    let arch = match arch_types {
        [hi, lo, rest @ ..] if rest.len().is_multiple_of(2) => u16::from_be_bytes([*hi, *lo]),
        _ => {
            let len = arch_types.len();
            return Err(bad_length(option::CLIENT_ARCH, len, "a multiple of 2").into());
        }
    };

    let uuid = match options.get(option::CLIENT_UUID) {
        None => None,
        Some(value) if value.len() != CLIENT_UUID_LEN => {
            let len = value.len();
            return Err(bad_length(option::CLIENT_UUID, len, "17").into());
        }
        Some(value) if value[0] != CLIENT_UUID_TYPE_GUID => {
            return Err(Malformed::BadClientUuidType { found: value[0] }.into());
        }
        Some(value) => {
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&value[1..]);
            Some(guid)
        }
    };

    let msg_type = options
        .byte(option::MESSAGE_TYPE)?
        .ok_or(Ignore::UnexpectedMessage {
            message_type: 0,
            port,
        })?;
    let answered = match port {
        Port::Dhcp => matches!(msg_type, message_type::DISCOVER | message_type::REQUEST),
        Port::PxeBootServer => matches!(msg_type, message_type::REQUEST | message_type::INFORM),
    };
    if !answered {
        return Err(Ignore::UnexpectedMessage {
            message_type: msg_type,
            port,
        });
    }

    let (htype, hlen) = (header[offset::HTYPE], header[offset::HLEN]);
    if htype != HTYPE_ETHERNET || hlen != ETHERNET_ADDR_LEN {
        return Err(Ignore::NotEthernet { htype, hlen });
    }

    let server_id = options.ipv4(option::SERVER_IDENTIFIER)?;

    let is_ipxe = options.get(option::IPXE_ENCAPSULATED).is_some()
        || options.get(option::USER_CLASS).is_some_and(|class| {
            class
                .windows(USER_CLASS_IPXE.len())
                .any(|w| w == USER_CLASS_IPXE)
        });
    let firmware = if is_ipxe {
        Firmware::Ipxe { arch }
    } else {
        match (vendor_class, arch) {
            (VendorClass::PxeClient, arch::BIOS) => Firmware::Bios,
            (VendorClass::PxeClient, arch::EFI_IA32) => Firmware::EfiIa32,
            (VendorClass::PxeClient, arch::EFI_X64) => Firmware::EfiX64,
            (VendorClass::PxeClient, arch::EFI_BC) => Firmware::EfiBc,
            (VendorClass::PxeClient, arch::EFI_ARM64) => Firmware::EfiArm64,
            (VendorClass::HttpClient, arch::EFI_X64_HTTP) => Firmware::HttpEfiX64,
            (VendorClass::HttpClient, arch::EFI_ARM64_HTTP) => Firmware::HttpEfiArm64,
            _ => return Err(Ignore::UnsupportedArch { arch, vendor_class }),
        }
    };

    let mut mac = [0u8; 6];
    mac.copy_from_slice(&header[offset::CHADDR..offset::CHADDR + 6]);
    Ok(PxeRequest {
        mac: MacAddr(mac),
        xid: read_u32(header, offset::XID),
        flags: read_u16(header, offset::FLAGS),
        client_ip: nonzero(read_ipv4(header, offset::CIADDR)),
        relay: nonzero(read_ipv4(header, offset::GIADDR)),
        arch,
        vendor_class,
        firmware,
        uuid,
        msg_type,
        port,
        server_id,
        boot_item: options
            .get(option::VENDOR_SPECIFIC)
            .and_then(find_boot_item),
    })
}

/// PXE_BOOT_ITEM in the sub-options of a request's option 43. Read leniently: it is only echoed,
/// so a broken option 43 just means there is nothing to echo.
fn find_boot_item(vendor: &[u8]) -> Option<[u8; BOOT_ITEM_LEN]> {
    let mut at = 0;
    while let Some(&code) = vendor.get(at) {
        match code {
            option::PAD => at += 1,
            pxe::END => return None,
            _ => {
                let len = usize::from(*vendor.get(at + 1)?);
                let value = vendor.get(at + 2..at + 2 + len)?;
                if code == pxe::BOOT_ITEM {
                    return value.try_into().ok();
                }
                at += 2 + len;
            }
        }
    }
    None
}

/// The boot file or URL for a classified request.
fn boot_file(req: &PxeRequest, cfg: &ProxyConfig) -> Result<String, Ignore> {
    let base = cfg.http_base.trim_end_matches('/');
    let arm64 = |file: String| {
        if cfg.arm64_available {
            Ok(file)
        } else {
            Err(Ignore::Arm64Unavailable)
        }
    };
    match req.firmware {
        Firmware::Bios => Ok(BIOS_BOOT_FILE.to_string()),
        Firmware::EfiIa32 | Firmware::EfiX64 | Firmware::EfiBc => Ok(EFI_BOOT_FILE.to_string()),
        Firmware::EfiArm64 => arm64(ARM64_BOOT_FILE.to_string()),
        Firmware::HttpEfiX64 => Ok(format!("{base}/tftp/{EFI_BOOT_FILE}")),
        Firmware::HttpEfiArm64 => arm64(format!("{base}/tftp/{ARM64_BOOT_FILE}")),
        Firmware::Ipxe { arch } => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("uuid", &req.uuid_string().unwrap_or_default())
                .append_pair("mac", &req.mac.hyphenated())
                .append_pair("arch", &arch.to_string())
                .finish();
            Ok(format!("{base}/ipxe?{query}"))
        }
    }
}

/// Option 43 for PXE ROMs: discovery control 8, the echoed boot item if any, End.
fn pxe_vendor_options(boot_item: Option<[u8; BOOT_ITEM_LEN]>) -> Vec<u8> {
    let mut out = vec![pxe::DISCOVERY_CONTROL, 1, pxe::DISCOVERY_USE_BOOT_FILE];
    if let Some(item) = boot_item {
        out.extend_from_slice(&[pxe::BOOT_ITEM, BOOT_ITEM_LEN as u8]);
        out.extend_from_slice(&item);
    }
    out.push(pxe::END);
    out
}

/// The decision of [`respond`], with the reason when there is no reply.
pub fn decide(req: &PxeRequest, cfg: &ProxyConfig) -> Result<Reply, Ignore> {
    if let Some(server) = req.server_id
        && req.msg_type == message_type::REQUEST
        && server != cfg.server_ip
    {
        return Err(Ignore::NotForUs { server });
    }
    let boot_file = boot_file(req, cfg)?;
    if boot_file.len() > MAX_BOOT_FILE_LEN {
        return Err(Ignore::BootFileTooLong {
            len: boot_file.len(),
        });
    }

    let (reply_type, ciaddr) = match req.msg_type {
        // RFC 2131 table 3: an OFFER has ciaddr 0; an ACK echoes the request's.
        message_type::DISCOVER => (message_type::OFFER, Ipv4Addr::UNSPECIFIED),
        _ => (
            message_type::ACK,
            req.client_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        ),
    };
    // A client without an address can only be reached by broadcast, and a relay agent only
    // broadcasts on the client's segment when the flag says so (RFC 1542 §5.4; yiaddr is 0,
    // so it has nothing to unicast to). dnsmasq sets the flag the same way.
    let flags = if req.client_ip.is_none() {
        req.flags | FLAG_BROADCAST
    } else {
        req.flags
    };
    let destination = match (req.port, req.client_ip, req.relay) {
        (Port::PxeBootServer, Some(ip), _) => Destination::Client(ip),
        (_, _, Some(relay)) => Destination::Relay(relay),
        _ => Destination::Broadcast,
    };

    let mut bootfile_option = boot_file.clone().into_bytes();
    bootfile_option.push(0);
    let mut message = Builder::new(BOOTREPLY, req.xid, req.mac.0)
        .u16(offset::FLAGS, flags)
        .ipv4(offset::CIADDR, ciaddr)
        .ipv4(offset::SIADDR, cfg.server_ip)
        .ipv4(offset::GIADDR, req.relay.unwrap_or(Ipv4Addr::UNSPECIFIED))
        .sname(&cfg.server_ip.to_string())
        .option(option::MESSAGE_TYPE, &[reply_type])
        .option(option::SERVER_IDENTIFIER, &cfg.server_ip.octets())
        .option(option::VENDOR_CLASS, req.vendor_class.as_bytes());
    // Longer names travel in option 67 only; `file` stays empty.
    if boot_file.len() <= MAX_FILE_FIELD_LEN {
        message = message.file(&boot_file);
    }
    if req.firmware.wants_discovery_control() {
        message = message.option(option::VENDOR_SPECIFIC, &pxe_vendor_options(req.boot_item));
    }
    message = message.option(option::BOOTFILE_NAME, &bootfile_option);
    if let Some(guid) = req.uuid {
        let mut value = Vec::with_capacity(CLIENT_UUID_LEN);
        value.push(CLIENT_UUID_TYPE_GUID);
        value.extend_from_slice(&guid);
        message = message.option(option::CLIENT_UUID, &value);
    }
    let bytes = message.finish();
    Ok(Reply {
        bytes,
        destination,
        boot_file,
        request: req.clone(),
    })
}

/// The reply to a classified request, or `None` when it gets none ([`decide`] says why).
///
/// DHCPDISCOVER → DHCPOFFER, DHCPREQUEST/DHCPINFORM → DHCPACK; `yiaddr` is always 0.0.0.0,
/// `siaddr` and option 54 are `server_ip`; `xid`, `giaddr`, `chaddr` and `flags` are copied (the
/// broadcast flag is added when the client has no address). The boot file goes in `file` (when
/// it fits in 127 bytes) and in option 67. Option 97 is echoed; option 60 says `PXEClient` or
/// `HTTPClient` like the request; PXE ROMs also get option 43 with discovery control 8.
pub fn respond(req: &PxeRequest, cfg: &ProxyConfig) -> Option<Reply> {
    decide(req, cfg).ok()
}

/// [`classify`] then [`decide`]: the reply to a datagram, or why there is none.
pub fn handle(bytes: &[u8], port: Port, cfg: &ProxyConfig) -> Result<Reply, Ignore> {
    decide(&classify(bytes, port)?, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dhcp_wire::tests::hex;
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    use dhcproto::{Decodable, Encodable};
    use proptest::prelude::*;

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            server_ip: Ipv4Addr::new(10, 77, 0, 2),
            http_base: "http://10.77.0.2:8081".to_string(),
            arm64_available: false,
        }
    }

    fn cfg_arm64() -> ProxyConfig {
        ProxyConfig {
            arm64_available: true,
            ..cfg()
        }
    }

    /// A BOOTREQUEST: the first 28 header bytes (op … giaddr), the 6-byte MAC, then the rest of
    /// chaddr, sname and file as zeros, the magic cookie and `options` (which end with ff).
    fn request(header: &str, mac: &str, options: &str) -> Vec<u8> {
        let mut packet = hex(header);
        assert_eq!(packet.len(), 28, "header is op..giaddr");
        packet.extend(hex(mac));
        packet.extend([0u8; 10 + 64 + 128]);
        packet.extend(hex("63825363"));
        packet.extend(hex(options));
        packet
    }

    // The GUID 12345678-1234-5678-90ab-cdef01234567 as option 97 carries it: type 0, then the
    // first three fields little-endian.
    const OPT97: &str = "61 11 00 78563412 3412 7856 90abcdef01234567";
    const MAC: &str = "525400123456";

    /// What an Intel/PXE 2.1 BIOS ROM broadcasts: DHCPDISCOVER, broadcast flag, max message
    /// size 1260, its parameter request list, UUID, UNDI 2.1, arch 0, vendor class.
    fn bios_discover() -> Vec<u8> {
        request(
            "01 01 06 00  3c9e4f17  0004 8000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01
                 39 02 04ec
                 37 18 01020305060b0c0d0f1011122b363c438081828384858687
                 {OPT97}
                 5e 03 010201
                 5d 02 0000
                 3c 20 {}
                 ff",
                hex_str("PXEClient:Arch:00000:UNDI:002001")
            ),
        )
    }

    fn hex_str(text: &str) -> String {
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// A UEFI PXE DHCPDISCOVER with `arch` (EDK2's options: type, max size, params, UUID,
    /// UNDI 3.0, arch, vendor class).
    fn efi_discover(arch: u16) -> Vec<u8> {
        request(
            "01 01 06 00  7a1b2c3d  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01
                 39 02 05c0
                 37 23 0102030405060c0d0f111216171c28292a2b3233363a3b3c42436180818283848586 87
                 {OPT97}
                 5e 03 010300
                 5d 02 {arch:04x}
                 3c 20 {}
                 ff",
                hex_str(&format!("PXEClient:Arch:{arch:05}:UNDI:003000"))
            ),
        )
    }

    /// EDK2 HTTP boot DHCPDISCOVER with `arch` and vendor class `HTTPClient`.
    fn http_discover(arch: u16) -> Vec<u8> {
        request(
            "01 01 06 00  11223344  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01
                 {OPT97}
                 5e 03 010300
                 5d 02 {arch:04x}
                 3c 21 {}
                 ff",
                hex_str(&format!("HTTPClient:Arch:{arch:05}:UNDI:003000"))
            ),
        )
    }

    /// iPXE (the QEMU ROM or a chainloaded undionly.kpxe) DHCPDISCOVER: user class `iPXE`,
    /// its option 175, arch 0.
    fn ipxe_discover(options_before_end: &str) -> Vec<u8> {
        request(
            "01 01 06 00  deadbeef  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01
                 5d 02 0000
                 5e 03 010201
                 3c 20 {}
                 {options_before_end}
                 ff",
                hex_str("PXEClient:Arch:00000:UNDI:002001")
            ),
        )
    }

    /// The reply's options, decoded by dhcproto (safe here: replies carry only 43, 53, 54, 60,
    /// 67 and 97, none of the options dhcproto asserts on).
    fn decoded(reply: &Reply) -> Message {
        Message::from_bytes(&reply.bytes).expect("replies decode")
    }

    fn opt(message: &Message, code: u8) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let mut e = dhcproto::Encoder::new(&mut buf);
        message.opts().get(code.into())?.encode(&mut e).unwrap();
        Some(buf[2..].to_vec())
    }

    #[test]
    fn bios_pxe_rom_discover_gets_exact_offer_bytes() {
        let reply = handle(&bios_discover(), Port::Dhcp, &cfg()).unwrap();
        let expected = [
            hex("02 01 06 00"),                        // BOOTREPLY, Ethernet, hlen 6, hops 0
            hex("3c9e4f17"),                           // xid copied
            hex("0000 8000"),                          // secs 0, broadcast flag copied
            hex("00000000"),                           // ciaddr
            hex("00000000"),                           // yiaddr: never an address
            hex("0a4d0002"),                           // siaddr = server_ip 10.77.0.2
            hex("00000000"),                           // giaddr
            hex(MAC),                                  // chaddr
            vec![0; 10],                               // rest of chaddr
            b"10.77.0.2".to_vec(),                     // sname
            vec![0; 64 - 9],                           // sname padding
            b"undionly.kpxe".to_vec(),                 // file
            vec![0; 128 - 13],                         // file padding
            hex("63825363"),                           // magic cookie
            hex("35 01 02"),                           // 53 first, as dnsmasq: DHCPOFFER
            hex("36 04 0a4d0002"),                     // 54: server identifier
            hex("3c 09 505845436c69656e74"),           // 60: "PXEClient"
            hex("2b 04 06 01 08 ff"),                  // 43: PXE discovery control = 8, end
            hex("43 0e 756e64696f6e6c792e6b70786500"), // 67: "undionly.kpxe\0"
            hex(OPT97),                                // 97 echoed
            hex("ff"),                                 // end
        ]
        .concat();
        assert_eq!(reply.bytes, expected);
        assert_eq!(reply.bytes.len(), 302);
        assert_eq!(reply.destination, Destination::Broadcast);
        assert_eq!(reply.boot_file, "undionly.kpxe");
        assert_eq!(reply.request.firmware, Firmware::Bios);
    }

    #[test]
    fn efi_x64_discover_gets_ipxe_efi_with_discovery_control() {
        let reply = handle(&efi_discover(arch::EFI_X64), Port::Dhcp, &cfg()).unwrap();
        let m = decoded(&reply);
        assert_eq!(reply.request.firmware, Firmware::EfiX64);
        assert_eq!(reply.boot_file, "ipxe.efi");
        assert_eq!(m.fname(), Some(&b"ipxe.efi\0"[..]));
        assert_eq!(opt(&m, 67), Some(b"ipxe.efi\0".to_vec()));
        assert_eq!(opt(&m, 43), Some(hex("06 01 08 ff")));
        assert_eq!(opt(&m, 60), Some(b"PXEClient".to_vec()));
        assert_eq!(opt(&m, 97), Some(hex(&OPT97[6..])));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        // EDK2 sent flags 0 but has no address: the reply asks for broadcast delivery.
        assert!(m.flags().broadcast());
    }

    #[test]
    fn efi_ia32_and_efi_bc_discovers_get_ipxe_efi() {
        for (arch, firmware) in [
            (arch::EFI_IA32, Firmware::EfiIa32),
            (arch::EFI_BC, Firmware::EfiBc),
        ] {
            let reply = handle(&efi_discover(arch), Port::Dhcp, &cfg()).unwrap();
            assert_eq!(reply.request.firmware, firmware);
            assert_eq!(reply.boot_file, "ipxe.efi");
        }
    }

    #[test]
    fn arm64_discover_gets_snp_arm64_only_when_available() {
        let reply = handle(&efi_discover(arch::EFI_ARM64), Port::Dhcp, &cfg_arm64()).unwrap();
        assert_eq!(reply.request.firmware, Firmware::EfiArm64);
        assert_eq!(reply.boot_file, "snp-arm64.efi");
        assert_eq!(opt(&decoded(&reply), 43), Some(hex("06 01 08 ff")));

        let ignored = handle(&efi_discover(arch::EFI_ARM64), Port::Dhcp, &cfg());
        assert_eq!(ignored, Err(Ignore::Arm64Unavailable));
        let request = classify(&efi_discover(arch::EFI_ARM64), Port::Dhcp).unwrap();
        assert_eq!(respond(&request, &cfg()), None);
    }

    #[test]
    fn http_boot_x64_gets_an_http_url_and_httpclient_class() {
        let reply = handle(&http_discover(arch::EFI_X64_HTTP), Port::Dhcp, &cfg()).unwrap();
        let m = decoded(&reply);
        assert_eq!(reply.request.firmware, Firmware::HttpEfiX64);
        assert_eq!(reply.boot_file, "http://10.77.0.2:8081/tftp/ipxe.efi");
        assert_eq!(opt(&m, 60), Some(b"HTTPClient".to_vec()));
        assert_eq!(opt(&m, 43), None, "HTTP boot does not read PXE options");
        assert_eq!(
            opt(&m, 67),
            Some(b"http://10.77.0.2:8081/tftp/ipxe.efi\0".to_vec())
        );
    }

    #[test]
    fn http_boot_arm64_gets_snp_arm64_url_only_when_available() {
        let with_slash = ProxyConfig {
            http_base: "http://10.77.0.2:8081/".to_string(),
            ..cfg_arm64()
        };
        let reply = handle(
            &http_discover(arch::EFI_ARM64_HTTP),
            Port::Dhcp,
            &with_slash,
        )
        .unwrap();
        assert_eq!(reply.boot_file, "http://10.77.0.2:8081/tftp/snp-arm64.efi");
        assert_eq!(
            handle(&http_discover(arch::EFI_ARM64_HTTP), Port::Dhcp, &cfg()),
            Err(Ignore::Arm64Unavailable)
        );
    }

    #[test]
    fn ipxe_user_class_gets_its_script_url_without_pxe_options() {
        let packet = ipxe_discover(&format!("4d 04 {} {OPT97} af 03 b10100", hex_str("iPXE")));
        let reply = handle(&packet, Port::Dhcp, &cfg()).unwrap();
        let m = decoded(&reply);
        assert_eq!(reply.request.firmware, Firmware::Ipxe { arch: 0 });
        assert_eq!(
            reply.boot_file,
            "http://10.77.0.2:8081/ipxe?uuid=12345678-1234-5678-90ab-cdef01234567\
             &mac=52-54-00-12-34-56&arch=0"
        );
        assert_eq!(opt(&m, 43), None);
        assert_eq!(opt(&m, 60), Some(b"PXEClient".to_vec()));
        assert_eq!(m.fname().map(<[u8]>::len), Some(reply.boot_file.len() + 1));
    }

    #[test]
    fn option_175_alone_marks_ipxe_and_a_missing_uuid_leaves_the_parameter_empty() {
        let reply = handle(&ipxe_discover("af 03 b10100"), Port::Dhcp, &cfg()).unwrap();
        assert_eq!(reply.request.firmware, Firmware::Ipxe { arch: 0 });
        assert_eq!(
            reply.boot_file,
            "http://10.77.0.2:8081/ipxe?uuid=&mac=52-54-00-12-34-56&arch=0"
        );
        assert_eq!(opt(&decoded(&reply), 97), None);
    }

    #[test]
    fn rfc3004_user_class_with_ipxe_is_recognised() {
        // RFC 3004 form: a length byte before each class.
        let reply = handle(&ipxe_discover("4d 05 04 69505845"), Port::Dhcp, &cfg()).unwrap();
        assert_eq!(reply.request.firmware, Firmware::Ipxe { arch: 0 });
    }

    #[test]
    fn relayed_discover_is_answered_to_the_relay_with_broadcast_flag() {
        let packet = request(
            "01 01 06 01  00000042  0000 0000  00000000 00000000 00000000 0a000501",
            MAC,
            &format!("35 01 01 5d 02 0007 3c 09 {} ff", hex_str("PXEClient")),
        );
        let reply = handle(&packet, Port::Dhcp, &cfg()).unwrap();
        assert_eq!(
            reply.destination,
            Destination::Relay(Ipv4Addr::new(10, 0, 5, 1))
        );
        assert_eq!(&reply.bytes[24..28], &[10, 0, 5, 1], "giaddr copied");
        assert_eq!(
            &reply.bytes[10..12],
            &[0x80, 0x00],
            "relay must broadcast to the client"
        );
        assert_eq!(reply.bytes[3], 0, "hops");
    }

    #[test]
    fn client_uuid_absent_is_accepted_and_not_echoed() {
        let packet = request(
            "01 01 06 00  00000001  0000 8000  00000000 00000000 00000000 00000000",
            MAC,
            &format!("35 01 01 5d 02 0000 3c 09 {} ff", hex_str("PXEClient")),
        );
        let reply = handle(&packet, Port::Dhcp, &cfg()).unwrap();
        assert_eq!(reply.request.uuid, None);
        assert_eq!(opt(&decoded(&reply), 97), None);
        // 283 bytes of message, padded with zeros to the BOOTP minimum.
        assert_eq!(reply.bytes.len(), crate::proto::dhcp_wire::MIN_MESSAGE_LEN);
        assert_eq!(reply.bytes[282], option::END);
        assert!(reply.bytes[283..].iter().all(|&b| b == 0));
    }

    #[test]
    fn client_uuid_of_16_bytes_is_malformed() {
        let packet = request(
            "01 01 06 00  00000001  0000 8000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01 5d 02 0000 61 10 {} 3c 09 {} ff",
                "11".repeat(16),
                hex_str("PXEClient")
            ),
        );
        let err = handle(&packet, Port::Dhcp, &cfg()).unwrap_err();
        assert_eq!(
            err,
            Ignore::Malformed(Malformed::BadOptionLength {
                code: 97,
                len: 16,
                expected: "17"
            })
        );
        assert!(err.is_malformed());
        assert_eq!(
            err.to_string(),
            "malformed packet: option 97 (client UUID) has length 16, expected 17"
        );
    }

    #[test]
    fn client_uuid_with_type_1_is_malformed() {
        let packet = request(
            "01 01 06 00  00000001  0000 8000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01 5d 02 0000 61 11 01{} 3c 09 {} ff",
                "11".repeat(16),
                hex_str("PXEClient")
            ),
        );
        assert_eq!(
            classify(&packet, Port::Dhcp),
            Err(Ignore::Malformed(Malformed::BadClientUuidType { found: 1 }))
        );
    }

    #[test]
    fn non_pxe_discovers_get_no_reply() {
        let plain = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            "35 01 01 37 04 01030f06 ff",
        );
        assert_eq!(handle(&plain, Port::Dhcp, &cfg()), Err(Ignore::NotPxe));
        let windows = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!("35 01 01 5d 02 0000 3c 08 {} ff", hex_str("MSFT 5.0")),
        );
        assert_eq!(handle(&windows, Port::Dhcp, &cfg()), Err(Ignore::NotPxe));
        let no_arch = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!("35 01 01 3c 09 {} ff", hex_str("PXEClient")),
        );
        assert_eq!(handle(&no_arch, Port::Dhcp, &cfg()), Err(Ignore::NotPxe));
        // Not PXE wins over a broken option 97: ordinary clients are never warned about.
        let bad_uuid = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            "35 01 01 61 01 00 ff",
        );
        assert_eq!(handle(&bad_uuid, Port::Dhcp, &cfg()), Err(Ignore::NotPxe));
    }

    /// EDK2's request to port 4011 after a ProxyDHCP offer, with a PXE_BOOT_ITEM (type 0,
    /// layer 0) in option 43 and its address in ciaddr.
    fn pxe_boot_server_request() -> Vec<u8> {
        request(
            "01 01 06 00  55aa55aa  0000 0000  0a4d0032 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 03 {OPT97} 5e 03 010300 5d 02 0007 3c 20 {} 2b 07 47 04 00000000 ff ff",
                hex_str("PXEClient:Arch:00007:UNDI:003000")
            ),
        )
    }

    #[test]
    fn request_on_4011_gets_an_ack_unicast_to_the_client() {
        let reply = handle(&pxe_boot_server_request(), Port::PxeBootServer, &cfg()).unwrap();
        let m = decoded(&reply);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(
            reply.destination,
            Destination::Client(Ipv4Addr::new(10, 77, 0, 50))
        );
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 77, 0, 50));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(
            !m.flags().broadcast(),
            "flags copied: the client has an address"
        );
        assert_eq!(opt(&m, 43), Some(hex("06 01 08 47 04 00000000 ff")));
        assert_eq!(reply.boot_file, "ipxe.efi");
    }

    #[test]
    fn request_on_4011_without_ciaddr_is_broadcast() {
        let mut packet = pxe_boot_server_request();
        packet[12..16].copy_from_slice(&[0, 0, 0, 0]);
        let reply = handle(&packet, Port::PxeBootServer, &cfg()).unwrap();
        assert_eq!(reply.destination, Destination::Broadcast);
    }

    #[test]
    fn request_on_67_is_acked_only_when_addressed_to_us() {
        let to = |server: &str| {
            request(
                "01 01 06 00  00000007  0000 8000  00000000 00000000 00000000 00000000",
                MAC,
                &format!(
                    "35 01 03 36 04 {server} 32 04 0a4d0064 5d 02 0000 3c 09 {} ff",
                    hex_str("PXEClient")
                ),
            )
        };
        let ours = handle(&to("0a4d0002"), Port::Dhcp, &cfg()).unwrap();
        assert_eq!(decoded(&ours).opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ours.destination, Destination::Broadcast);
        assert_eq!(
            handle(&to("0a4d0001"), Port::Dhcp, &cfg()),
            Err(Ignore::NotForUs {
                server: Ipv4Addr::new(10, 77, 0, 1)
            })
        );
    }

    #[test]
    fn other_message_types_and_ports_get_no_reply() {
        let mut release = bios_discover();
        release[offset::OPTIONS + 2] = 7;
        assert_eq!(
            handle(&release, Port::Dhcp, &cfg()),
            Err(Ignore::UnexpectedMessage {
                message_type: 7,
                port: Port::Dhcp
            })
        );
        assert_eq!(
            handle(&bios_discover(), Port::PxeBootServer, &cfg()),
            Err(Ignore::UnexpectedMessage {
                message_type: 1,
                port: Port::PxeBootServer
            })
        );
        let mut inform = pxe_boot_server_request();
        inform[offset::OPTIONS + 2] = 8;
        let reply = handle(&inform, Port::PxeBootServer, &cfg()).unwrap();
        assert_eq!(decoded(&reply).opts().msg_type(), Some(MessageType::Ack));
    }

    #[test]
    fn bootreplies_and_non_ethernet_clients_are_ignored() {
        let mut reply_packet = bios_discover();
        reply_packet[offset::OP] = 2;
        assert_eq!(
            classify(&reply_packet, Port::Dhcp),
            Err(Ignore::NotBootRequest { op: 2 })
        );
        let mut infiniband = bios_discover();
        infiniband[offset::HTYPE] = 32;
        infiniband[offset::HLEN] = 0;
        assert_eq!(
            classify(&infiniband, Port::Dhcp),
            Err(Ignore::NotEthernet { htype: 32, hlen: 0 })
        );
    }

    #[test]
    fn unsupported_architectures_are_named() {
        assert_eq!(
            classify(&efi_discover(0x27), Port::Dhcp),
            Err(Ignore::UnsupportedArch {
                arch: 0x27,
                vendor_class: VendorClass::PxeClient
            })
        );
        assert_eq!(
            classify(&http_discover(arch::EFI_X64), Port::Dhcp),
            Err(Ignore::UnsupportedArch {
                arch: 7,
                vendor_class: VendorClass::HttpClient
            })
        );
    }

    #[test]
    fn broken_packets_are_malformed() {
        let full = bios_discover();
        assert_eq!(
            classify(&full[..239], Port::Dhcp),
            Err(Ignore::Malformed(Malformed::Truncated { len: 239 }))
        );
        let mut cookie = full.clone();
        cookie[offset::MAGIC] = 0;
        assert_eq!(
            classify(&cookie, Port::Dhcp),
            Err(Ignore::Malformed(Malformed::BadMagicCookie {
                found: [0, 130, 83, 99]
            }))
        );
        // Cut inside option 55, which starts at byte 247: its length runs past the end.
        assert_eq!(
            classify(&full[..250], Port::Dhcp),
            Err(Ignore::Malformed(Malformed::OptionOverrun {
                code: 0x37,
                offset: 247
            }))
        );
        let odd_arch = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!("35 01 01 5d 03 000000 3c 09 {} ff", hex_str("PXEClient")),
        );
        assert!(classify(&odd_arch, Port::Dhcp).unwrap_err().is_malformed());
    }

    #[test]
    fn options_that_panic_dhcproto_in_debug_builds_are_harmless_here() {
        // dhcproto 0.15 debug_assert!s option 94 is 3 bytes long; a 2-byte one panics it.
        let packet = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01 5e 02 0102 50 01 00 51 01 00 5d 02 0000 3c 09 {} ff",
                hex_str("PXEClient")
            ),
        );
        assert_eq!(
            classify(&packet, Port::Dhcp).unwrap().firmware,
            Firmware::Bios
        );
    }

    #[test]
    fn split_options_are_concatenated() {
        // Option 60 in two pieces (RFC 3396), the first alone not saying PXEClient.
        let packet = request(
            "01 01 06 00  00000001  0000 0000  00000000 00000000 00000000 00000000",
            MAC,
            &format!(
                "35 01 01 3c 04 {} 5d 02 0000 3c 05 {} ff",
                hex_str("PXEC"),
                hex_str("lient")
            ),
        );
        assert_eq!(
            classify(&packet, Port::Dhcp).unwrap().vendor_class,
            VendorClass::PxeClient
        );
    }

    #[test]
    fn long_boot_urls_move_to_option_67_and_too_long_ones_are_refused() {
        let long = ProxyConfig {
            http_base: format!("http://{}.example:8081", "a".repeat(100)),
            ..cfg()
        };
        let reply = handle(&http_discover(arch::EFI_X64_HTTP), Port::Dhcp, &long).unwrap();
        let m = decoded(&reply);
        assert!(reply.boot_file.len() > 127);
        assert_eq!(m.fname(), None, "file field left empty");
        assert_eq!(
            opt(&m, 67).map(|v| v.len()),
            Some(reply.boot_file.len() + 1)
        );

        let too_long = ProxyConfig {
            http_base: format!("http://{}.example:8081", "a".repeat(240)),
            ..cfg()
        };
        assert!(matches!(
            handle(&http_discover(arch::EFI_X64_HTTP), Port::Dhcp, &too_long),
            Err(Ignore::BootFileTooLong { .. })
        ));
    }

    #[test]
    fn uuid_string_is_canonical_and_absent_for_unset_uuids() {
        let mut req = classify(&bios_discover(), Port::Dhcp).unwrap();
        assert_eq!(
            req.uuid_string().as_deref(),
            Some("12345678-1234-5678-90ab-cdef01234567")
        );
        req.uuid = Some([0; 16]);
        assert_eq!(req.uuid_string(), None);
        req.uuid = Some([0xff; 16]);
        assert_eq!(req.uuid_string(), None);
        assert_eq!(req.mac.to_string(), "52:54:00:12:34:56");
    }

    /// Seeds for mutation: one valid packet per kind of client.
    fn seeds() -> Vec<(Vec<u8>, Port)> {
        vec![
            (bios_discover(), Port::Dhcp),
            (efi_discover(arch::EFI_X64), Port::Dhcp),
            (http_discover(arch::EFI_X64_HTTP), Port::Dhcp),
            (
                ipxe_discover(&format!("4d 04 69505845 {OPT97}")),
                Port::Dhcp,
            ),
            (pxe_boot_server_request(), Port::PxeBootServer),
        ]
    }

    proptest! {
        #[test]
        fn classify_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            for port in [Port::Dhcp, Port::PxeBootServer] {
                let _ = classify(&bytes, port);
                let _ = handle(&bytes, port, &cfg_arm64());
            }
        }

        #[test]
        fn classify_never_panics_on_mutated_valid_packets(
            seed in 0usize..5,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..8),
        ) {
            let (mut packet, port) = seeds().swap_remove(seed);
            for (at, byte, kind) in edits {
                let at = usize::from(at) % (packet.len() + 1);
                match kind {
                    0 if at < packet.len() => packet[at] = byte,
                    1 => packet.insert(at, byte),
                    2 if at < packet.len() => { packet.remove(at); }
                    _ => packet.truncate(at.max(offset::OPTIONS)),
                }
            }
            let _ = classify(&packet, port);
            let _ = handle(&packet, port, &cfg_arm64());
        }

        #[test]
        fn every_reply_has_zero_yiaddr_and_our_server_identifier(
            server in any::<[u8; 4]>().prop_filter("an address", |ip| ip != &[0; 4]),
            arch_type in prop_oneof![Just(0u16), Just(6), Just(7), Just(9), Just(11), Just(16), Just(19), any::<u16>()],
            http in any::<bool>(),
            ipxe in any::<bool>(),
            uuid in proptest::option::of(any::<[u8; 16]>()),
            ciaddr in any::<[u8; 4]>(),
            giaddr in any::<[u8; 4]>(),
            flags in any::<u16>(),
            xid in any::<u32>(),
            request_type in any::<bool>(),
            on_4011 in any::<bool>(),
        ) {
            let class = if http { "HTTPClient:Arch:00016" } else { "PXEClient:Arch:00000" };
            let mut options = format!(
                "35 01 {:02x} 5d 02 {arch_type:04x} 3c {:02x} {}",
                if request_type { 3 } else { 1 },
                class.len(),
                hex_str(class)
            );
            if let Some(g) = uuid {
                options.push_str(&format!(" 61 11 00 {}", g.iter().map(|b| format!("{b:02x}")).collect::<String>()));
            }
            if ipxe {
                options.push_str(" 4d 04 69505845");
            }
            options.push_str(" ff");
            let header = format!(
                "01010600 {xid:08x} 0000 {flags:04x} {} 00000000 00000000 {}",
                ciaddr.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                giaddr.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            );
            let packet = request(&header, MAC, &options);
            let config = ProxyConfig { server_ip: Ipv4Addr::from(server), ..cfg_arm64() };
            let port = if on_4011 { Port::PxeBootServer } else { Port::Dhcp };
            if let Ok(reply) = handle(&packet, port, &config) {
                let m = decoded(&reply);
                prop_assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
                prop_assert_eq!(&reply.bytes[16..20], &[0u8; 4]);
                prop_assert_eq!(
                    m.opts().get(dhcproto::v4::OptionCode::ServerIdentifier),
                    Some(&DhcpOption::ServerIdentifier(Ipv4Addr::from(server)))
                );
                prop_assert_eq!(m.siaddr(), Ipv4Addr::from(server));
                prop_assert_eq!(m.xid(), xid);
                prop_assert!(reply.bytes.len() >= crate::proto::dhcp_wire::MIN_MESSAGE_LEN);
            }
        }
    }
}
