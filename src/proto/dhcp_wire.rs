//! The DHCPv4 wire format shared by the ProxyDHCP server (`proto::dhcp`) and the agent's client
//! (`proto::dhcp_client`): BOOTP header offsets, option codes, the option walker that decodes
//! untrusted datagrams without panicking, and [`Builder`], which encodes messages.
//!
//! Both directions are done here rather than with `dhcproto`: its decoder `debug_assert!`s on
//! the lengths of options 80, 81 and 94 (a crafted packet panics a debug build) and stops
//! silently at the first option it cannot parse, and its `Message` constructors draw a
//! transaction id from `rand::random()`, which blocks in `getrandom(2)` until the kernel's
//! entropy pool is ready — for minutes, at PID 1 of the discovery agent on a machine without
//! a hardware RNG. `dhcproto` stays as an independent decoder in the tests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// UDP port of DHCP servers (and of relay agents, which receive server replies on it).
pub const DHCP_SERVER_PORT: u16 = 67;
/// UDP port DHCP clients listen on.
pub const DHCP_CLIENT_PORT: u16 = 68;

/// Byte offsets of the fixed BOOTP header (RFC 2131 §2, figure 1).
pub mod offset {
    /// `op`: 1 BOOTREQUEST, 2 BOOTREPLY.
    pub const OP: usize = 0;
    /// `htype`: hardware address type (1 Ethernet).
    pub const HTYPE: usize = 1;
    /// `hlen`: hardware address length.
    pub const HLEN: usize = 2;
    /// `xid`: transaction id chosen by the client.
    pub const XID: usize = 4;
    /// `secs`: seconds since the client began acquiring.
    pub const SECS: usize = 8;
    /// `flags`: bit 15 asks for broadcast replies.
    pub const FLAGS: usize = 10;
    /// `ciaddr`: the client's address, when it already has one.
    pub const CIADDR: usize = 12;
    /// `yiaddr`: the address a server offers.
    pub const YIADDR: usize = 16;
    /// `siaddr`: the next server (TFTP) address.
    pub const SIADDR: usize = 20;
    /// `giaddr`: the relay agent's address, 0 when not relayed.
    pub const GIADDR: usize = 24;
    /// `chaddr`: client hardware address, 16 bytes.
    pub const CHADDR: usize = 28;
    /// `sname`: server host name, 64 bytes; carries options when option 52 says so.
    pub const SNAME: usize = 44;
    /// `file`: boot file name, 128 bytes; carries options when option 52 says so.
    pub const FILE: usize = 108;
    /// The 4-byte magic cookie.
    pub const MAGIC: usize = 236;
    /// First option byte.
    pub const OPTIONS: usize = 240;
}

/// Length of `sname`.
pub const SNAME_LEN: usize = 64;
/// Length of `file`.
pub const FILE_LEN: usize = 128;

/// `op` of a request.
pub const BOOTREQUEST: u8 = 1;
/// `op` of a reply.
pub const BOOTREPLY: u8 = 2;
/// `htype` of Ethernet, also the type byte of option 61.
pub const HTYPE_ETHERNET: u8 = 1;
/// `hlen` of an Ethernet MAC address.
pub const ETHERNET_ADDR_LEN: u8 = 6;
/// The DHCP magic cookie (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The broadcast bit of `flags` (RFC 2131 §2).
pub const FLAG_BROADCAST: u16 = 0x8000;
/// Messages are padded to the BOOTP minimum message size (RFC 1542 §2.1); older clients and
/// relays drop shorter ones.
pub const MIN_MESSAGE_LEN: usize = 300;

/// DHCP option codes (RFC 2132 unless noted).
pub mod option {
    /// Padding (§3.1).
    pub const PAD: u8 = 0;
    /// Subnet mask of the offered address.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers on the client's subnet, in order of preference.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DOMAIN_NAME_SERVER: u8 = 6;
    /// MTU of the interface.
    pub const INTERFACE_MTU: u8 = 26;
    /// Vendor-specific information; PXE sub-options for PXE clients (§8.4, PXE 2.1).
    pub const VENDOR_SPECIFIC: u8 = 43;
    /// The address a DHCPREQUEST asks for.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time in seconds; 0xffffffff means infinite.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload: `file` (1), `sname` (2) or both (3) carry more options.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type (§9.6).
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier (§9.7).
    pub const SERVER_IDENTIFIER: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Vendor class identifier: `PXEClient:Arch:…` or `HTTPClient:Arch:…` (§9.13).
    pub const VENDOR_CLASS: u8 = 60;
    /// Client identifier (§9.14).
    pub const CLIENT_IDENTIFIER: u8 = 61;
    /// Boot file name (§9.5).
    pub const BOOTFILE_NAME: u8 = 67;
    /// User class; iPXE sends `iPXE` (RFC 3004).
    pub const USER_CLASS: u8 = 77;
    /// Client system architecture, one or more 16-bit types (RFC 4578 §2.1).
    pub const CLIENT_ARCH: u8 = 93;
    /// Client machine identifier: type 0 + 16-byte GUID (RFC 4578 §2.3).
    pub const CLIENT_UUID: u8 = 97;
    /// iPXE's encapsulated options; only iPXE sends it.
    pub const IPXE_ENCAPSULATED: u8 = 175;
    /// End of options (§3.2).
    pub const END: u8 = 255;

    /// A short name for error messages.
    pub fn name(code: u8) -> &'static str {
        match code {
            SUBNET_MASK => "subnet mask",
            ROUTER => "router",
            DOMAIN_NAME_SERVER => "DNS servers",
            INTERFACE_MTU => "interface MTU",
            VENDOR_SPECIFIC => "vendor-specific information",
            REQUESTED_IP => "requested address",
            LEASE_TIME => "lease time",
            OVERLOAD => "overload",
            MESSAGE_TYPE => "message type",
            SERVER_IDENTIFIER => "server identifier",
            PARAMETER_REQUEST_LIST => "parameter request list",
            VENDOR_CLASS => "vendor class",
            CLIENT_IDENTIFIER => "client identifier",
            BOOTFILE_NAME => "boot file name",
            USER_CLASS => "user class",
            CLIENT_ARCH => "client architecture",
            CLIENT_UUID => "client UUID",
            IPXE_ENCAPSULATED => "iPXE options",
            _ => "unknown option",
        }
    }
}

/// DHCP message types (option 53, RFC 2132 §9.6).
pub mod message_type {
    /// Client broadcast to locate servers.
    pub const DISCOVER: u8 = 1;
    /// Server to client in response to DHCPDISCOVER.
    pub const OFFER: u8 = 2;
    /// Client asking for offered parameters (or, to port 4011, for boot information).
    pub const REQUEST: u8 = 3;
    /// Client saying the address is already in use.
    pub const DECLINE: u8 = 4;
    /// Server acknowledging with parameters.
    pub const ACK: u8 = 5;
    /// Server refusing a request.
    pub const NAK: u8 = 6;
    /// Client giving its address up.
    pub const RELEASE: u8 = 7;
    /// Client with an address asking only for parameters.
    pub const INFORM: u8 = 8;

    /// `DHCPDISCOVER`, … for logs; `an unknown message type` otherwise.
    pub fn name(kind: u8) -> &'static str {
        match kind {
            DISCOVER => "DHCPDISCOVER",
            OFFER => "DHCPOFFER",
            REQUEST => "DHCPREQUEST",
            DECLINE => "DHCPDECLINE",
            ACK => "DHCPACK",
            NAK => "DHCPNAK",
            RELEASE => "DHCPRELEASE",
            INFORM => "DHCPINFORM",
            _ => "an unknown message type",
        }
    }
}

/// What was wrong with a malformed datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Shorter than the fixed header and magic cookie.
    #[error("{len} bytes is shorter than the 240-byte BOOTP header and magic cookie")]
    Truncated {
        /// Datagram length.
        len: usize,
    },
    /// Not a DHCP packet.
    #[error("magic cookie is {found:02x?}, not [63, 82, 53, 63]")]
    BadMagicCookie {
        /// The four bytes at offset 236.
        found: [u8; 4],
    },
    /// An option's length runs past the end of its area.
    #[error("option {code} at byte {offset} runs past the end of its field")]
    OptionOverrun {
        /// Option code.
        code: u8,
        /// Where it starts in the datagram.
        offset: usize,
    },
    /// An option with the wrong length.
    #[error("option {code} ({name}) has length {len}, expected {expected}", name = option::name(*code))]
    BadOptionLength {
        /// Option code.
        code: u8,
        /// Its length.
        len: usize,
        /// What it should be.
        expected: &'static str,
    },
    /// Option 52 with a value other than 1, 2 or 3.
    #[error("option 52 (overload) is {value}, expected 1, 2 or 3")]
    BadOverload {
        /// Its value.
        value: u8,
    },
    /// Option 97 with a type other than GUID.
    #[error("option 97 (client UUID) has type {found}, expected 0 (GUID)")]
    BadClientUuidType {
        /// The first byte of option 97.
        found: u8,
    },
    /// No option 53.
    #[error("no message type (option 53)")]
    NoMessageType,
    /// Option 1 that is not a run of ones followed by zeros, or is 0.0.0.0.
    #[error("subnet mask {mask} is not a valid netmask")]
    BadSubnetMask {
        /// Its value.
        mask: Ipv4Addr,
    },
}

/// A [`Malformed::BadOptionLength`].
pub fn bad_length(code: u8, len: usize, expected: &'static str) -> Malformed {
    Malformed::BadOptionLength {
        code,
        len,
        expected,
    }
}

/// The fixed header and magic cookie of `bytes`, or why they are not there. The returned slice
/// is [`offset::OPTIONS`] bytes long, so every [`offset`] below that indexes it safely.
pub fn header(bytes: &[u8]) -> Result<&[u8], Malformed> {
    let header = bytes
        .get(..offset::OPTIONS)
        .ok_or(Malformed::Truncated { len: bytes.len() })?;
    Ok(header)
}

/// Checks the magic cookie of a [`header`].
pub fn check_magic(header: &[u8]) -> Result<(), Malformed> {
    let found = [
        header[offset::MAGIC],
        header[offset::MAGIC + 1],
        header[offset::MAGIC + 2],
        header[offset::MAGIC + 3],
    ];
    if found == MAGIC_COOKIE {
        Ok(())
    } else {
        Err(Malformed::BadMagicCookie { found })
    }
}

/// The big-endian `u32` at `at` of a [`header`] (`xid`).
pub fn read_u32(header: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// The big-endian `u16` at `at` of a [`header`] (`secs`, `flags`).
pub fn read_u16(header: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([header[at], header[at + 1]])
}

/// The address at `at` of a [`header`] (`ciaddr`, `yiaddr`, `giaddr`, …).
pub fn read_ipv4(header: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(read_u32(header, at))
}

/// The options of a message, with split options concatenated (RFC 3396).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<u8, Vec<u8>>);

impl Options {
    /// Walks the options field of a whole datagram, then `file` and `sname` when option 52 says
    /// they carry options (RFC 2131 §4.1, in the order RFC 3396 §5 concatenates them). A
    /// missing End is tolerated (the field ends the list); bytes after End are ignored. Never
    /// panics, whatever `bytes` holds.
    pub fn parse(bytes: &[u8]) -> Result<Options, Malformed> {
        let mut options = Options::default();
        options.walk(bytes, offset::OPTIONS, bytes.len())?;
        let overload = match options.get(option::OVERLOAD) {
            None => 0,
            Some(&[value @ 1..=3]) => value,
            Some(&[value]) => return Err(Malformed::BadOverload { value }),
            Some(other) => return Err(bad_length(option::OVERLOAD, other.len(), "1")),
        };
        if overload & 1 != 0 {
            options.walk(bytes, offset::FILE, offset::FILE + FILE_LEN)?;
        }
        if overload & 2 != 0 {
            options.walk(bytes, offset::SNAME, offset::SNAME + SNAME_LEN)?;
        }
        Ok(options)
    }

    /// Adds the options in `bytes[start..end]`.
    fn walk(&mut self, bytes: &[u8], start: usize, end: usize) -> Result<(), Malformed> {
        let area = bytes.get(start..end).unwrap_or_default();
        let mut at = 0;
        while let Some(&code) = area.get(at) {
            match code {
                option::PAD => at += 1,
                option::END => break,
                _ => {
                    let overrun = Malformed::OptionOverrun {
                        code,
                        offset: start + at,
                    };
                    let len = usize::from(*area.get(at + 1).ok_or(overrun.clone())?);
                    let value = area.get(at + 2..at + 2 + len).ok_or(overrun)?;
                    self.0.entry(code).or_default().extend_from_slice(value);
                    at += 2 + len;
                }
            }
        }
        Ok(())
    }

    /// The value of option `code`, if present.
    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.0.get(&code).map(Vec::as_slice)
    }

    /// An option holding exactly one byte (53, 52).
    pub fn byte(&self, code: u8) -> Result<Option<u8>, Malformed> {
        match self.get(code) {
            None => Ok(None),
            Some(&[value]) => Ok(Some(value)),
            Some(other) => Err(bad_length(code, other.len(), "1")),
        }
    }

    /// An option holding exactly one address.
    pub fn ipv4(&self, code: u8) -> Result<Option<Ipv4Addr>, Malformed> {
        match self.get(code) {
            None => Ok(None),
            Some(&[a, b, c, d]) => Ok(Some(Ipv4Addr::new(a, b, c, d))),
            Some(other) => Err(bad_length(code, other.len(), "4")),
        }
    }

    /// An option holding one or more addresses.
    pub fn ipv4_list(&self, code: u8) -> Result<Vec<Ipv4Addr>, Malformed> {
        match self.get(code) {
            None => Ok(Vec::new()),
            Some(value) if !value.is_empty() && value.len() % 4 == 0 => Ok(value
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect()),
            Some(other) => Err(bad_length(code, other.len(), "a multiple of 4")),
        }
    }
}

/// Encodes a message: the fixed header, then options in the order they are added, End, and
/// padding to [`MIN_MESSAGE_LEN`].
#[derive(Debug, Clone)]
pub struct Builder {
    bytes: Vec<u8>,
}

impl Builder {
    /// A message with `op`, Ethernet `htype`/`hlen`, `xid`, `chaddr` = `mac`, every other field
    /// zero, and the magic cookie.
    pub fn new(op: u8, xid: u32, mac: [u8; 6]) -> Builder {
        let mut bytes = vec![0u8; offset::OPTIONS];
        bytes[offset::OP] = op;
        bytes[offset::HTYPE] = HTYPE_ETHERNET;
        bytes[offset::HLEN] = ETHERNET_ADDR_LEN;
        bytes[offset::XID..offset::XID + 4].copy_from_slice(&xid.to_be_bytes());
        bytes[offset::CHADDR..offset::CHADDR + mac.len()].copy_from_slice(&mac);
        bytes[offset::MAGIC..offset::OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        Builder { bytes }
    }

    /// Sets a 16-bit header field (`secs`, `flags`).
    pub fn u16(mut self, at: usize, value: u16) -> Builder {
        self.bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
        self
    }

    /// Sets an address field (`ciaddr`, `yiaddr`, `siaddr`, `giaddr`).
    pub fn ipv4(mut self, at: usize, address: Ipv4Addr) -> Builder {
        self.bytes[at..at + 4].copy_from_slice(&address.octets());
        self
    }

    /// Puts `text` NUL-terminated in `sname`, when it fits (at most 63 bytes); a longer one
    /// leaves the field empty, which clients read as "no server name". (dhcproto, the tests'
    /// decoder, returns the whole NUL-padded field.)
    pub fn sname(self, text: &str) -> Builder {
        self.text(offset::SNAME, SNAME_LEN, text)
    }

    /// Puts `text` NUL-terminated in `file`, when it fits (at most 127 bytes); a longer one
    /// leaves the field empty, for option 67 to carry it.
    pub fn file(self, text: &str) -> Builder {
        self.text(offset::FILE, FILE_LEN, text)
    }

    fn text(mut self, at: usize, len: usize, text: &str) -> Builder {
        if text.len() < len {
            self.bytes[at..at + text.len()].copy_from_slice(text.as_bytes());
        }
        self
    }

    /// Adds option `code`; a value longer than 255 bytes is split into several options of the
    /// same code, which receivers concatenate (RFC 3396).
    pub fn option(mut self, code: u8, value: &[u8]) -> Builder {
        let mut chunks = value.chunks(usize::from(u8::MAX)).peekable();
        if chunks.peek().is_none() {
            self.bytes.extend_from_slice(&[code, 0]);
        }
        for chunk in chunks {
            let len = u8::try_from(chunk.len()).expect("chunks are at most 255 bytes");
            self.bytes.extend_from_slice(&[code, len]);
            self.bytes.extend_from_slice(chunk);
        }
        self
    }

    /// The wire form: End, then padding (zeros after End are Pad options, RFC 2131 §4.1).
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.push(option::END);
        if self.bytes.len() < MIN_MESSAGE_LEN {
            self.bytes.resize(MIN_MESSAGE_LEN, option::PAD);
        }
        self.bytes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dhcproto::Decodable;
    use dhcproto::v4::{DhcpOption, Message, OptionCode};
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// Hex digits to bytes, whitespace ignored: how the DHCP tests write golden packets.
    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn built_message_decodes_with_an_independent_decoder() {
        let bytes = Builder::new(BOOTREPLY, 0x0102_0304, MAC)
            .u16(offset::FLAGS, FLAG_BROADCAST)
            .ipv4(offset::SIADDR, Ipv4Addr::new(10, 0, 0, 1))
            .sname("10.0.0.1")
            .file("undionly.kpxe")
            .option(option::MESSAGE_TYPE, &[message_type::OFFER])
            .option(option::SERVER_IDENTIFIER, &[10, 0, 0, 1])
            .finish();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        let message = Message::from_bytes(&bytes).expect("dhcproto decodes it");
        assert_eq!(message.xid(), 0x0102_0304);
        assert_eq!(message.chaddr(), &MAC);
        assert!(message.flags().broadcast());
        assert_eq!(message.siaddr(), Ipv4Addr::new(10, 0, 0, 1));
        let text = |field: Option<&[u8]>| {
            let field = field.expect("field is set");
            String::from_utf8(field.iter().take_while(|&&b| b != 0).copied().collect())
        };
        assert_eq!(text(message.sname()).unwrap(), "10.0.0.1");
        assert_eq!(text(message.fname()).unwrap(), "undionly.kpxe");
        assert_eq!(
            message.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn long_option_values_are_split_and_concatenated_back() {
        let value: Vec<u8> = (0..=255u8).chain(0..100).collect();
        let bytes = Builder::new(BOOTREQUEST, 1, MAC)
            .option(option::VENDOR_SPECIFIC, &value)
            .finish();
        assert_eq!(bytes[offset::OPTIONS..offset::OPTIONS + 2], [43, 255]);
        let options = Options::parse(&bytes).unwrap();
        assert_eq!(options.get(option::VENDOR_SPECIFIC), Some(&value[..]));
    }

    #[test]
    fn fields_that_do_not_fit_are_left_empty() {
        let bytes = Builder::new(BOOTREPLY, 1, MAC)
            .file(&"x".repeat(FILE_LEN))
            .sname(&"y".repeat(SNAME_LEN))
            .finish();
        assert!(bytes[offset::SNAME..offset::MAGIC].iter().all(|&b| b == 0));
    }

    #[test]
    fn overloaded_file_and_sname_carry_options_in_rfc_3396_order() {
        let mut bytes = Builder::new(BOOTREPLY, 1, MAC)
            .option(option::OVERLOAD, &[3])
            .option(option::VENDOR_CLASS, b"a")
            .finish();
        bytes[offset::FILE..offset::FILE + 4].copy_from_slice(&[60, 1, b'b', 255]);
        bytes[offset::SNAME..offset::SNAME + 4].copy_from_slice(&[60, 1, b'c', 255]);
        let options = Options::parse(&bytes).unwrap();
        assert_eq!(options.get(option::VENDOR_CLASS), Some(&b"abc"[..]));
    }

    #[test]
    fn broken_options_name_the_problem() {
        let base = || Builder::new(BOOTREQUEST, 1, MAC);
        let mut overrun = base().finish();
        overrun.truncate(offset::OPTIONS);
        overrun.extend_from_slice(&[53, 4, 1]);
        assert_eq!(
            Options::parse(&overrun),
            Err(Malformed::OptionOverrun {
                code: 53,
                offset: 240
            })
        );
        let overload = base().option(option::OVERLOAD, &[4]).finish();
        assert_eq!(
            Options::parse(&overload),
            Err(Malformed::BadOverload { value: 4 })
        );
        let options = Options::parse(&base().option(54, &[1, 2, 3]).finish()).unwrap();
        let error = options.ipv4(54).unwrap_err();
        assert_eq!(
            error.to_string(),
            "option 54 (server identifier) has length 3, expected 4"
        );
        assert_eq!(header(&[0; 239]), Err(Malformed::Truncated { len: 239 }));
        let mut cookie = base().finish();
        cookie[offset::MAGIC] = 0;
        assert_eq!(
            check_magic(header(&cookie).unwrap()),
            Err(Malformed::BadMagicCookie {
                found: [0, 130, 83, 99]
            })
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Options::parse(&bytes);
            if let Ok(header) = header(&bytes) {
                let _ = check_magic(header);
                let _ = (read_u32(header, offset::XID), read_ipv4(header, offset::GIADDR));
            }
        }

        #[test]
        fn whatever_is_built_parses_back(
            options in proptest::collection::btree_map(1u8..=254, proptest::collection::vec(any::<u8>(), 0..600), 0..8)
        ) {
            let options: BTreeMap<u8, Vec<u8>> =
                options.into_iter().filter(|(code, _)| *code != option::OVERLOAD).collect();
            let mut builder = Builder::new(BOOTREQUEST, 7, MAC);
            for (code, value) in &options {
                builder = builder.option(*code, value);
            }
            prop_assert_eq!(Options::parse(&builder.finish()).unwrap(), Options(options));
        }
    }
}
