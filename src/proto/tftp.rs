//! TFTP wire format (RFC 1350, 2347, 2348, 2349, 7440) and the sans-IO state machine of one
//! read transfer: bytes and `now` in, datagrams and a deadline out. Only `serve::tftp` owns
//! sockets, files and clocks.
//!
//! Siderite serves iPXE binaries over TFTP and nothing else (kernels go over HTTP), so the
//! server is read-only and only `octet` mode is served.

use std::time::{Duration, Instant};

/// Length of the opcode field that starts every packet.
const OPCODE_LEN: usize = 2;
/// Length of the opcode plus block number (or error code) header of DATA, ACK and ERROR.
pub const HEADER_LEN: usize = 4;
/// Size of the IPv4 header without options, subtracted from the MTU to size `blksize`.
pub const IPV4_HEADER_LEN: u32 = 20;
/// Size of the UDP header, subtracted from the MTU to size `blksize`.
pub const UDP_HEADER_LEN: u32 = 8;

/// Block size when the client negotiates none (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest `blksize` a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest `blksize` a client may ask for (RFC 2348): 65535 - 20 IP - 8 UDP - 4 TFTP,
/// rounded down by the RFC to 65464.
pub const MAX_BLKSIZE: u16 = 65464;
/// Valid `timeout` values in seconds (RFC 2349).
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=255;
/// Valid `windowsize` values (RFC 7440).
pub const WINDOWSIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=65535;
/// Request and OACK packets with more options than this are refused. Real clients send at most
/// a handful; the cap bounds the duplicate check on untrusted input.
pub const MAX_OPTIONS: usize = 32;

/// Option names (RFC 2347: compared case-insensitively; the decoder lowercases them).
pub mod option {
    /// RFC 2348 block size.
    pub const BLKSIZE: &str = "blksize";
    /// RFC 2349 transfer size: the server answers a read request with the file size.
    pub const TSIZE: &str = "tsize";
    /// RFC 2349 retransmission timeout in seconds.
    pub const TIMEOUT: &str = "timeout";
    /// RFC 7440 number of DATA packets sent before an ACK is awaited.
    pub const WINDOWSIZE: &str = "windowsize";
}

/// Packet opcodes (RFC 1350 and RFC 2347 for OACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// A block of file data.
    Data = 3,
    /// Acknowledgement of a block.
    Ack = 4,
    /// Error; ends the transfer.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    OAck = 6,
}

impl Opcode {
    /// The opcode for a wire value, if it is one.
    pub fn from_u16(value: u16) -> Option<Opcode> {
        match value {
            1 => Some(Opcode::Rrq),
            2 => Some(Opcode::Wrq),
            3 => Some(Opcode::Data),
            4 => Some(Opcode::Ack),
            5 => Some(Opcode::Error),
            6 => Some(Opcode::OAck),
            _ => None,
        }
    }
}

/// A TFTP error code. Kept as the raw number so that codes outside RFC 1350's list, which
/// clients do send, survive decoding; the named ones are associated constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// Not defined; see the message.
    pub const NOT_DEFINED: ErrorCode = ErrorCode(0);
    /// File not found.
    pub const FILE_NOT_FOUND: ErrorCode = ErrorCode(1);
    /// Access violation.
    pub const ACCESS_VIOLATION: ErrorCode = ErrorCode(2);
    /// Disk full or allocation exceeded.
    pub const DISK_FULL: ErrorCode = ErrorCode(3);
    /// Illegal TFTP operation.
    pub const ILLEGAL_OPERATION: ErrorCode = ErrorCode(4);
    /// Unknown transfer ID.
    pub const UNKNOWN_TRANSFER_ID: ErrorCode = ErrorCode(5);
    /// File already exists.
    pub const FILE_EXISTS: ErrorCode = ErrorCode(6);
    /// No such user.
    pub const NO_SUCH_USER: ErrorCode = ErrorCode(7);
    /// Option negotiation refused (RFC 2347); PXE ROMs send it after a `tsize` probe.
    pub const OPTION_NEGOTIATION: ErrorCode = ErrorCode(8);
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Transfer mode of a request. RFC 1350's `mail` mode is obsolete and refused by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text with CR LF line endings; Siderite refuses to serve it (see [`Refusal`]).
    NetAscii,
    /// Raw bytes.
    Octet,
}

impl Mode {
    /// The canonical wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::NetAscii => "netascii",
            Mode::Octet => "octet",
        }
    }
}

/// A read or write request. Option names are lowercase and unique; order is the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file name as sent, not yet resolved (see [`resolve`]).
    pub filename: String,
    /// Transfer mode.
    pub mode: Mode,
    /// Options as (lowercase name, value) pairs.
    pub options: Vec<(String, String)>,
}

/// One decoded TFTP packet. Strings never contain NUL after decoding; encoding a string that
/// does would produce a different packet, so callers must not build such values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request.
    Rrq(Request),
    /// Write request.
    Wrq(Request),
    /// A block of data; the last block of a file is shorter than the block size.
    Data {
        /// Block number (wraps from 65535 to 0).
        block: u16,
        /// The block's bytes.
        payload: Vec<u8>,
    },
    /// Acknowledgement of a block (block 0 acknowledges an OACK).
    Ack {
        /// Block number acknowledged.
        block: u16,
    },
    /// An error; the sender has given up on the transfer.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Human-readable message.
        message: String,
    },
    /// Option acknowledgement: the options the server accepted, with their final values.
    OAck {
        /// Options as (lowercase name, value) pairs.
        options: Vec<(String, String)>,
    },
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the packet kind's fixed header.
    #[error("packet of {len} bytes is too short")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The opcode is not 1..=6.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The wire value.
        opcode: u16,
    },
    /// A string field has no terminating NUL.
    #[error("{field} is not NUL-terminated")]
    Unterminated {
        /// Which field.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    NotUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// The mode is neither `netascii` nor `octet`.
    #[error("unsupported transfer mode {mode:?}")]
    UnsupportedMode {
        /// The mode as sent (truncated to 32 characters).
        mode: String,
    },
    /// An option name is empty.
    #[error("empty option name")]
    EmptyOptionName,
    /// An option name is not followed by a value.
    #[error("option {name:?} has no value")]
    OptionWithoutValue {
        /// The option name (truncated to 32 characters).
        name: String,
    },
    /// The same option appears twice (names compared case-insensitively).
    #[error("option {name:?} appears more than once")]
    DuplicateOption {
        /// The lowercase option name (truncated to 32 characters).
        name: String,
    },
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// A fixed-size packet has bytes after its end.
    #[error("{extra} unexpected bytes after a {opcode:?} packet")]
    TrailingBytes {
        /// The packet kind.
        opcode: Opcode,
        /// How many bytes follow it.
        extra: usize,
    },
    /// A DATA payload longer than the largest block size.
    #[error("DATA payload of {len} bytes exceeds {MAX_BLKSIZE}")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
    },
}

/// Attacker-controlled strings kept in errors are cut short so that logging them stays cheap.
fn truncated(text: &str) -> String {
    text.chars().take(32).collect()
}

/// Takes one NUL-terminated UTF-8 string off the front of `buf`.
fn take_cstr<'a>(buf: &mut &'a [u8], field: &'static str) -> Result<&'a str, PacketError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(PacketError::Unterminated { field })?;
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| PacketError::NotUtf8 { field })?;
    *buf = &buf[end + 1..];
    Ok(text)
}

/// Decodes the option list of an RRQ, WRQ or OACK. Trailing NUL padding is tolerated because
/// some PXE ROMs pad their requests.
fn decode_options(mut rest: &[u8]) -> Result<Vec<(String, String)>, PacketError> {
    let mut options: Vec<(String, String)> = Vec::new();
    while !rest.iter().all(|&b| b == 0) {
        let name = take_cstr(&mut rest, "option name")?;
        if name.is_empty() {
            return Err(PacketError::EmptyOptionName);
        }
        if rest.is_empty() {
            return Err(PacketError::OptionWithoutValue {
                name: truncated(name),
            });
        }
        let value = take_cstr(&mut rest, "option value")?;
        let name = name.to_ascii_lowercase();
        if options.iter().any(|(seen, _)| *seen == name) {
            return Err(PacketError::DuplicateOption {
                name: truncated(&name),
            });
        }
        if options.len() == MAX_OPTIONS {
            return Err(PacketError::TooManyOptions);
        }
        options.push((name, value.to_owned()));
    }
    Ok(options)
}

fn decode_request(mut rest: &[u8]) -> Result<Request, PacketError> {
    let filename = take_cstr(&mut rest, "filename")?.to_owned();
    let mode_text = take_cstr(&mut rest, "mode")?;
    let mode = if mode_text.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode_text.eq_ignore_ascii_case("netascii") {
        Mode::NetAscii
    } else {
        return Err(PacketError::UnsupportedMode {
            mode: truncated(mode_text),
        });
    };
    let options = decode_options(rest)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

fn encode_options(options: &[(String, String)], out: &mut Vec<u8>) {
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

impl Packet {
    /// Decodes one datagram, validating everything a later stage relies on.
    ///
    /// Leniencies, each deliberate: option names and modes are case-insensitive; NUL padding
    /// after the last option is ignored; an ERROR whose message lacks its NUL (or is not UTF-8)
    /// is still an ERROR, because honouring a client's ERROR matters more than its spelling.
    pub fn decode(bytes: &[u8]) -> Result<Packet, PacketError> {
        let too_short = PacketError::TooShort { len: bytes.len() };
        let Some((opcode, rest)) = bytes.split_first_chunk::<OPCODE_LEN>() else {
            return Err(too_short);
        };
        let raw_opcode = u16::from_be_bytes(*opcode);
        let opcode = Opcode::from_u16(raw_opcode)
            .ok_or(PacketError::UnknownOpcode { opcode: raw_opcode })?;
        match opcode {
            Opcode::Rrq => decode_request(rest).map(Packet::Rrq),
            Opcode::Wrq => decode_request(rest).map(Packet::Wrq),
            Opcode::Data => {
                let (block, payload) = rest.split_first_chunk::<2>().ok_or(too_short)?;
                if payload.len() > usize::from(MAX_BLKSIZE) {
                    return Err(PacketError::PayloadTooLong { len: payload.len() });
                }
                Ok(Packet::Data {
                    block: u16::from_be_bytes(*block),
                    payload: payload.to_vec(),
                })
            }
            Opcode::Ack => {
                let (block, extra) = rest.split_first_chunk::<2>().ok_or(too_short)?;
                if !extra.is_empty() {
                    return Err(PacketError::TrailingBytes {
                        opcode,
                        extra: extra.len(),
                    });
                }
                Ok(Packet::Ack {
                    block: u16::from_be_bytes(*block),
                })
            }
            Opcode::Error => {
                let (code, text) = rest.split_first_chunk::<2>().ok_or(too_short)?;
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                Ok(Packet::Error {
                    code: ErrorCode(u16::from_be_bytes(*code)),
                    message: String::from_utf8_lossy(&text[..end]).into_owned(),
                })
            }
            Opcode::OAck => Ok(Packet::OAck {
                options: decode_options(rest)?,
            }),
        }
    }

    /// Appends the wire form of this packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.opcode() as u16).to_be_bytes());
        match self {
            Packet::Rrq(request) | Packet::Wrq(request) => {
                out.extend_from_slice(request.filename.as_bytes());
                out.push(0);
                out.extend_from_slice(request.mode.as_str().as_bytes());
                out.push(0);
                encode_options(&request.options, out);
            }
            Packet::Data { block, payload } => {
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(payload);
            }
            Packet::Ack { block } => out.extend_from_slice(&block.to_be_bytes()),
            Packet::Error { code, message } => {
                out.extend_from_slice(&code.0.to_be_bytes());
                out.extend_from_slice(message.as_bytes());
                out.push(0);
            }
            Packet::OAck { options } => encode_options(options, out),
        }
    }

    /// The wire form of this packet as a new datagram.
    pub fn to_bytes(&self) -> Datagram {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The packet's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Rrq(_) => Opcode::Rrq,
            Packet::Wrq(_) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::OAck { .. } => Opcode::OAck,
        }
    }
}

/// An ERROR datagram, for refusals the caller sends itself.
pub fn error_datagram(code: ErrorCode, message: &str) -> Datagram {
    Packet::Error {
        code,
        message: message.to_owned(),
    }
    .to_bytes()
}

/// Largest `blksize` whose DATA packet fits in one IPv4 frame of the given MTU without
/// fragmentation: MTU - 20 (IP) - 8 (UDP) - 4 (TFTP header), kept within RFC 2348's range.
pub fn blksize_for_mtu(mtu: u32) -> u16 {
    let overhead = IPV4_HEADER_LEN + UDP_HEADER_LEN + HEADER_LEN as u32;
    let blksize = mtu
        .saturating_sub(overhead)
        .clamp(u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE));
    u16::try_from(blksize).expect("clamped to MAX_BLKSIZE, which fits in u16")
}

/// Server-side bounds on what a client may negotiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted, normally [`blksize_for_mtu`] of the serving interface.
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmission interval when the client negotiates no `timeout`.
    pub default_timeout: Duration,
    /// Retransmissions of one window (or OACK) before the transfer ends as timed out.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_blksize: blksize_for_mtu(1500),
            max_windowsize: 16,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// The parameters of a transfer after option negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA packet.
    pub blksize: u16,
    /// DATA packets sent per ACK.
    pub windowsize: u16,
    /// Retransmission interval.
    pub timeout: Duration,
    /// The OACK's options; empty means no OACK is sent and DATA 1 goes out directly.
    pub oack: Vec<(String, String)>,
}

/// Parses a decimal option value; anything else (sign, spaces, overflow) is `None`, which
/// makes the option ignored rather than the request refused (RFC 2347 lets a server ignore
/// options it does not accept).
fn parse_number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Negotiates a read request's options against the server's limits and the file size.
///
/// `blksize` is clamped to `limits.max_blksize`; `windowsize` to `limits.max_windowsize`;
/// `timeout` is accepted as asked within 1..=255 s; `tsize` is answered with `file_len`.
/// Out-of-range, malformed and unknown options are ignored (left out of the OACK).
pub fn negotiate(options: &[(String, String)], file_len: u64, limits: &Limits) -> Negotiated {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let max_windowsize = limits.max_windowsize.max(1);
    let mut negotiated = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        oack: Vec::new(),
    };
    for (name, value) in options {
        let number = parse_number(value);
        let accepted = match (name.as_str(), number) {
            (option::BLKSIZE, Some(asked))
                if (u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE)).contains(&asked) =>
            {
                let granted = u16::try_from(asked)
                    .expect("checked to be at most MAX_BLKSIZE")
                    .min(max_blksize);
                negotiated.blksize = granted;
                granted.to_string()
            }
            (option::WINDOWSIZE, Some(asked)) if WINDOWSIZE_RANGE.contains(&asked) => {
                let granted = u16::try_from(asked)
                    .expect("checked to be at most 65535")
                    .min(max_windowsize);
                negotiated.windowsize = granted;
                granted.to_string()
            }
            (option::TIMEOUT, Some(asked)) if TIMEOUT_RANGE.contains(&asked) => {
                negotiated.timeout = Duration::from_secs(asked);
                asked.to_string()
            }
            // RFC 2349: a reading client sends 0 and the server answers with the size.
            (option::TSIZE, Some(_)) => file_len.to_string(),
            _ => continue,
        };
        negotiated.oack.push((name.clone(), accepted));
    }
    negotiated
}

/// One datagram to send to the transfer's peer.
pub type Datagram = Vec<u8>;

/// Where a transfer's bytes come from. Implementations do the I/O; the state machine only
/// calls this, so it stays testable without files.
pub trait BlockSource {
    /// Fills `buf` with the bytes at `offset`. Fails (for example with `UnexpectedEof` when the
    /// file shrank) rather than returning fewer bytes.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl BlockSource for [u8] {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let slice = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(slice);
        Ok(())
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the final block.
    Completed,
    /// The client sent an ERROR (PXE ROMs do this right after the OACK of a `tsize` probe).
    ClientError {
        /// The client's error code.
        code: ErrorCode,
        /// The client's message.
        message: String,
    },
    /// No progress after the last retransmission.
    TimedOut,
    /// The client sent a packet that has no place in a read transfer; answered with ERROR 4.
    IllegalOperation {
        /// The offending packet's kind.
        opcode: Opcode,
    },
    /// The block source failed; answered with ERROR 0.
    ReadFailed {
        /// What kind of I/O error occurred.
        kind: std::io::ErrorKind,
    },
}

/// Why a read request is refused before any transfer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `netascii` would need line-ending conversion, which changes the size and defeats
    /// positional reads; PXE and iPXE always ask for `octet`.
    #[error("netascii mode is not supported")]
    NetAsciiUnsupported,
}

impl Refusal {
    /// The ERROR datagram telling the client why, with what to do about it.
    pub fn datagram(self) -> Datagram {
        match self {
            Refusal::NetAsciiUnsupported => error_datagram(
                ErrorCode::ILLEGAL_OPERATION,
                "netascii mode is not supported, use octet (binary) mode",
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// `start` not yet called.
    Created,
    /// The OACK is out; waiting for ACK 0.
    OackSent,
    /// DATA windows are being sent.
    Sending,
    /// Finished; no more packets and no deadline.
    Done(Outcome),
}

/// The state of one read transfer (one client, one file).
///
/// Block numbers are tracked as absolute `u64` counts (block 1 is the first) and put on the
/// wire modulo 65536, so after block 65535 comes block 0 (the rollover tftp-hpa, iPXE and
/// EDK2 expect). An ACK is mapped back to an absolute block by its distance from the last
/// acknowledged block, which is unambiguous because a window is at most 65535 blocks.
#[derive(Debug)]
pub struct Transfer {
    negotiated: Negotiated,
    file_len: u64,
    /// Absolute number of the final block: always shorter than `blksize`, possibly empty.
    last_block: u64,
    max_retries: u32,
    phase: Phase,
    /// Highest block the client acknowledged (0: none, or the OACK).
    acked: u64,
    /// Highest block sent so far.
    sent_through: u64,
    /// Retransmissions since the last progress.
    retries: u32,
    deadline: Option<Instant>,
}

impl Transfer {
    /// Negotiates a read transfer of a file of `file_len` bytes.
    pub fn new(request: &Request, file_len: u64, limits: &Limits) -> Result<Transfer, Refusal> {
        if request.mode != Mode::Octet {
            return Err(Refusal::NetAsciiUnsupported);
        }
        let negotiated = negotiate(&request.options, file_len, limits);
        Ok(Transfer {
            last_block: file_len / u64::from(negotiated.blksize) + 1,
            negotiated,
            file_len,
            max_retries: limits.max_retries,
            phase: Phase::Created,
            acked: 0,
            sent_through: 0,
            retries: 0,
            deadline: None,
        })
    }

    /// The negotiated parameters.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The size of the file being sent.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The first datagrams: the OACK if any option was accepted, else the first DATA window.
    /// Calling it again does nothing.
    pub fn start(&mut self, now: Instant, file: &(impl BlockSource + ?Sized)) -> Vec<Datagram> {
        if self.phase != Phase::Created {
            return Vec::new();
        }
        if self.negotiated.oack.is_empty() {
            self.phase = Phase::Sending;
            self.send_window(now, file)
        } else {
            self.phase = Phase::OackSent;
            self.arm(now);
            vec![self.oack()]
        }
    }

    /// Handles one datagram from the client.
    ///
    /// ACKs inside the window move it (RFC 7440: an ACK short of the window's end means the
    /// client lost the next block, so the new window starts right after it); duplicate and
    /// stale ACKs are ignored, which also avoids the Sorcerer's Apprentice bug. An ERROR ends
    /// the transfer at once. Undecodable datagrams are ignored (the retransmission timer
    /// covers them); well-formed packets of the wrong kind get ERROR 4 and end the transfer.
    pub fn on_packet(
        &mut self,
        bytes: &[u8],
        now: Instant,
        file: &(impl BlockSource + ?Sized),
    ) -> Vec<Datagram> {
        if matches!(self.phase, Phase::Done(_)) {
            return Vec::new();
        }
        let Ok(packet) = Packet::decode(bytes) else {
            return Vec::new();
        };
        match packet {
            Packet::Error { code, message } => {
                self.finish(Outcome::ClientError { code, message });
                Vec::new()
            }
            Packet::Ack { block } => self.on_ack(block, now, file),
            other => {
                self.finish(Outcome::IllegalOperation {
                    opcode: other.opcode(),
                });
                vec![error_datagram(
                    ErrorCode::ILLEGAL_OPERATION,
                    "illegal TFTP operation: only ACK or ERROR is expected during a read",
                )]
            }
        }
    }

    fn on_ack(
        &mut self,
        block: u16,
        now: Instant,
        file: &(impl BlockSource + ?Sized),
    ) -> Vec<Datagram> {
        match self.phase {
            Phase::OackSent if block == 0 => {
                self.phase = Phase::Sending;
                self.retries = 0;
                self.send_window(now, file)
            }
            Phase::Sending | Phase::Created => {
                // Forward distance from the last acknowledged block, modulo 2^16.
                let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                if ahead == 0 || ahead > self.sent_through - self.acked {
                    return Vec::new(); // duplicate, stale or not yet sent
                }
                self.acked += ahead;
                self.retries = 0;
                if self.acked == self.last_block {
                    self.finish(Outcome::Completed);
                    return Vec::new();
                }
                self.send_window(now, file)
            }
            Phase::OackSent | Phase::Done(_) => Vec::new(),
        }
    }

    /// Handles the deadline passing: retransmits the OACK or the unacknowledged window, or
    /// ends the transfer as timed out after `max_retries` retransmissions. Early or spurious
    /// calls (before the deadline) do nothing.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        file: &(impl BlockSource + ?Sized),
    ) -> Vec<Datagram> {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return Vec::new(),
        }
        if self.retries >= self.max_retries {
            self.finish(Outcome::TimedOut);
            return Vec::new();
        }
        self.retries += 1;
        match self.phase {
            Phase::OackSent => {
                self.arm(now);
                vec![self.oack()]
            }
            Phase::Sending => self.send_window(now, file),
            Phase::Created | Phase::Done(_) => Vec::new(),
        }
    }

    /// When `on_timeout` should next be called; `None` once done (or before `start`).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How the transfer ended, once it has.
    pub fn is_done(&self) -> Option<Outcome> {
        match &self.phase {
            Phase::Done(outcome) => Some(outcome.clone()),
            _ => None,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.phase = Phase::Done(outcome);
        self.deadline = None;
    }

    fn arm(&mut self, now: Instant) {
        self.deadline = Some(now + self.negotiated.timeout);
    }

    fn oack(&self) -> Datagram {
        Packet::OAck {
            options: self.negotiated.oack.clone(),
        }
        .to_bytes()
    }

    /// Sends blocks `acked + 1 ..= acked + windowsize` (up to the last block).
    fn send_window(&mut self, now: Instant, file: &(impl BlockSource + ?Sized)) -> Vec<Datagram> {
        let blksize = u64::from(self.negotiated.blksize);
        let last = self
            .last_block
            .min(self.acked + u64::from(self.negotiated.windowsize));
        let mut datagrams = Vec::with_capacity(usize::from(self.negotiated.windowsize));
        for block in self.acked + 1..=last {
            let offset = (block - 1) * blksize;
            let len = usize::try_from(blksize.min(self.file_len - offset))
                .expect("at most blksize, a u16");
            let mut datagram = vec![0; HEADER_LEN + len];
            datagram[..OPCODE_LEN].copy_from_slice(&(Opcode::Data as u16).to_be_bytes());
            // Truncation to u16 is the RFC rollover: block 65536 goes out as 0.
            datagram[OPCODE_LEN..HEADER_LEN].copy_from_slice(&(block as u16).to_be_bytes());
            if let Err(error) = file.read_exact_at(offset, &mut datagram[HEADER_LEN..]) {
                self.finish(Outcome::ReadFailed { kind: error.kind() });
                return vec![error_datagram(
                    ErrorCode::NOT_DEFINED,
                    "server could not read the file; try again",
                )];
            }
            datagrams.push(datagram);
        }
        self.sent_through = self.sent_through.max(last);
        self.arm(now);
        datagrams
    }
}

/// A request path validated to stay under the TFTP root: relative, `/`-separated, with no
/// empty, `.` or `..` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativePath(String);

impl RelativePath {
    /// The path, for joining onto the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RelativePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a requested file name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing left to name a file (empty, `/`, `.`).
    #[error("the file name is empty")]
    Empty,
    /// A NUL byte (cannot reach here from the decoder, but `resolve` takes any string).
    #[error("the file name contains NUL")]
    Nul,
    /// A control character, which has no business in a boot file name and would garble logs.
    #[error("the file name contains a control character")]
    ControlCharacter,
    /// A backslash: Windows-style paths are not translated.
    #[error("the file name contains a backslash; use '/' as the separator")]
    Backslash,
    /// A `..` component.
    #[error("the file name contains a '..' component")]
    ParentComponent,
    /// An absolute path: boot files are named relative to the TFTP root.
    #[error("the file name is an absolute path; name files relative to the TFTP root")]
    Absolute,
}

/// Validates a requested file name into a path relative to the TFTP root.
///
/// The rule: names are relative to the TFTP root. Absolute paths are refused (the boot file
/// names Siderite hands out are plain names such as `undionly.kpxe`, so a leading `/` only
/// comes from a client probing for host files). Empty and `.` components are dropped. Any `..`
/// component is refused, even one that would stay inside the root, so the check needs no
/// knowledge of the file system. Backslashes, NUL and control characters are refused.
pub fn resolve(requested: &str) -> Result<RelativePath, PathError> {
    if requested.contains('\0') {
        return Err(PathError::Nul);
    }
    if requested.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if requested.contains('\\') {
        return Err(PathError::Backslash);
    }
    if requested.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut components = Vec::new();
    for component in requested.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(PathError::ParentComponent),
            name => components.push(name),
        }
    }
    if components.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(RelativePath(components.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn rrq(pairs: &[(&str, &str)]) -> Request {
        Request {
            filename: "undionly.kpxe".into(),
            mode: Mode::Octet,
            options: opts(pairs),
        }
    }

    fn limits(max_blksize: u16, max_windowsize: u16) -> Limits {
        Limits {
            max_blksize,
            max_windowsize,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }

    // ---- golden vectors ----

    #[test]
    fn rrq_with_options_matches_golden_bytes() {
        let golden = b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001468\x00tsize\x000\x00";
        let packet = Packet::Rrq(rrq(&[("blksize", "1468"), ("tsize", "0")]));
        assert_eq!(packet.to_bytes(), golden.to_vec());
        assert_eq!(Packet::decode(golden), Ok(packet));
    }

    #[test]
    fn oack_matches_golden_bytes() {
        let golden = b"\x00\x06blksize\x001468\x00tsize\x0067584\x00";
        let packet = Packet::OAck {
            options: opts(&[("blksize", "1468"), ("tsize", "67584")]),
        };
        assert_eq!(packet.to_bytes(), golden.to_vec());
        assert_eq!(Packet::decode(golden), Ok(packet));
    }

    #[test]
    fn data_matches_golden_bytes() {
        let golden = [0x00, 0x03, 0x01, 0x02, b'a', b'b', b'c'];
        let packet = Packet::Data {
            block: 258,
            payload: b"abc".to_vec(),
        };
        assert_eq!(packet.to_bytes(), golden.to_vec());
        assert_eq!(Packet::decode(&golden), Ok(packet));
    }

    #[test]
    fn ack_matches_golden_bytes() {
        let golden = [0x00, 0x04, 0xff, 0xfe];
        let packet = Packet::Ack { block: 65534 };
        assert_eq!(packet.to_bytes(), golden.to_vec());
        assert_eq!(Packet::decode(&golden), Ok(packet));
    }

    #[test]
    fn error_matches_golden_bytes() {
        let golden = b"\x00\x05\x00\x01File not found\x00";
        let packet = Packet::Error {
            code: ErrorCode::FILE_NOT_FOUND,
            message: "File not found".into(),
        };
        assert_eq!(packet.to_bytes(), golden.to_vec());
        assert_eq!(Packet::decode(golden), Ok(packet));
    }

    // ---- decoder validation ----

    #[test]
    fn decode_lowercases_mode_and_option_names() {
        let bytes = b"\x00\x01f\x00OcTeT\x00BLKSIZE\x00512\x00";
        let Ok(Packet::Rrq(request)) = Packet::decode(bytes) else {
            panic!("expected an RRQ");
        };
        assert_eq!(request.mode, Mode::Octet);
        assert_eq!(request.options, opts(&[("blksize", "512")]));
        let netascii = Packet::decode(b"\x00\x01f\x00NetAscii\x00");
        assert!(matches!(
            netascii,
            Ok(Packet::Rrq(Request {
                mode: Mode::NetAscii,
                ..
            }))
        ));
    }

    #[test]
    fn decode_refuses_duplicate_options_case_insensitively() {
        let bytes = b"\x00\x01f\x00octet\x00blksize\x00512\x00BlkSize\x001024\x00";
        assert_eq!(
            Packet::decode(bytes),
            Err(PacketError::DuplicateOption {
                name: "blksize".into()
            })
        );
    }

    #[test]
    fn decode_refuses_malformed_requests() {
        let cases: &[(&[u8], PacketError)] = &[
            (b"", PacketError::TooShort { len: 0 }),
            (b"\x00", PacketError::TooShort { len: 1 }),
            (b"\x00\x09", PacketError::UnknownOpcode { opcode: 9 }),
            (
                b"\x00\x01file",
                PacketError::Unterminated { field: "filename" },
            ),
            (
                b"\x00\x01file\x00octet",
                PacketError::Unterminated { field: "mode" },
            ),
            (
                b"\x00\x01file\x00mail\x00",
                PacketError::UnsupportedMode {
                    mode: "mail".into(),
                },
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x00",
                PacketError::OptionWithoutValue {
                    name: "tsize".into(),
                },
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x000",
                PacketError::Unterminated {
                    field: "option value",
                },
            ),
            (
                b"\x00\x01f\x00octet\x00\x00x\x00",
                PacketError::EmptyOptionName,
            ),
            (
                b"\x00\x01\xff\x00octet\x00",
                PacketError::NotUtf8 { field: "filename" },
            ),
            (
                b"\x00\x04\x00\x01\x00",
                PacketError::TrailingBytes {
                    opcode: Opcode::Ack,
                    extra: 1,
                },
            ),
            (b"\x00\x04\x00", PacketError::TooShort { len: 3 }),
            (b"\x00\x05\x00", PacketError::TooShort { len: 3 }),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Packet::decode(bytes).as_ref(), Err(expected), "{bytes:?}");
        }
    }

    #[test]
    fn decode_refuses_too_many_options() {
        let mut bytes = b"\x00\x01f\x00octet\x00".to_vec();
        for i in 0..=MAX_OPTIONS {
            bytes.extend_from_slice(format!("x{i}\x001\x00").as_bytes());
        }
        assert_eq!(Packet::decode(&bytes), Err(PacketError::TooManyOptions));
    }

    #[test]
    fn decode_refuses_oversized_data_payload() {
        let mut bytes = vec![0, 3, 0, 1];
        bytes.resize(HEADER_LEN + usize::from(MAX_BLKSIZE) + 1, 0);
        assert_eq!(
            Packet::decode(&bytes),
            Err(PacketError::PayloadTooLong {
                len: usize::from(MAX_BLKSIZE) + 1
            })
        );
    }

    #[test]
    fn decode_tolerates_nul_padding_after_options() {
        let bytes = b"\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00";
        let Ok(Packet::Rrq(request)) = Packet::decode(bytes) else {
            panic!("expected an RRQ");
        };
        assert_eq!(request.options, opts(&[("tsize", "0")]));
    }

    #[test]
    fn decode_accepts_error_without_terminating_nul() {
        assert_eq!(
            Packet::decode(b"\x00\x05\x00\x08tsize probe"),
            Ok(Packet::Error {
                code: ErrorCode::OPTION_NEGOTIATION,
                message: "tsize probe".into()
            })
        );
    }

    // ---- negotiation ----

    #[test]
    fn blksize_is_clamped_to_the_mtu_limit() {
        let n = negotiate(&opts(&[("blksize", "65464")]), 10, &limits(1468, 8));
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.oack, opts(&[("blksize", "1468")]));
        let n = negotiate(&opts(&[("blksize", "1024")]), 10, &limits(1468, 8));
        assert_eq!(n.blksize, 1024);
    }

    #[test]
    fn blksize_out_of_range_is_ignored() {
        for asked in ["7", "65465", "-1", "abc", "", " 512"] {
            let n = negotiate(&opts(&[("blksize", asked)]), 10, &limits(1468, 8));
            assert_eq!(n.blksize, DEFAULT_BLKSIZE, "{asked:?}");
            assert!(n.oack.is_empty(), "{asked:?}");
        }
    }

    #[test]
    fn tsize_is_answered_with_the_file_size() {
        let n = negotiate(&opts(&[("tsize", "0")]), 67584, &limits(1468, 8));
        assert_eq!(n.oack, opts(&[("tsize", "67584")]));
    }

    #[test]
    fn windowsize_is_clamped_to_the_configured_max() {
        let n = negotiate(&opts(&[("windowsize", "64")]), 10, &limits(1468, 8));
        assert_eq!(n.windowsize, 8);
        assert_eq!(n.oack, opts(&[("windowsize", "8")]));
        let n = negotiate(&opts(&[("windowsize", "0")]), 10, &limits(1468, 8));
        assert_eq!((n.windowsize, n.oack.len()), (1, 0));
    }

    #[test]
    fn timeout_within_range_sets_the_retransmission_interval() {
        let n = negotiate(&opts(&[("timeout", "3")]), 10, &limits(1468, 8));
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.oack, opts(&[("timeout", "3")]));
        let n = negotiate(&opts(&[("timeout", "256")]), 10, &limits(1468, 8));
        assert_eq!((n.timeout, n.oack.len()), (Duration::from_secs(1), 0));
    }

    #[test]
    fn oack_echoes_accepted_options_in_request_order() {
        let asked = opts(&[("tsize", "0"), ("multicast", ""), ("blksize", "1432")]);
        let n = negotiate(&asked, 5, &limits(1468, 8));
        assert_eq!(n.oack, opts(&[("tsize", "5"), ("blksize", "1432")]));
    }

    #[test]
    fn no_accepted_option_means_no_oack_and_data_1_first() {
        let mut t = Transfer::new(&rrq(&[("multicast", "")]), 3, &limits(1468, 8))
            .expect("octet is accepted");
        let out = t.start(Instant::now(), b"abc".as_slice());
        assert_eq!(
            out,
            vec![
                Packet::Data {
                    block: 1,
                    payload: b"abc".to_vec()
                }
                .to_bytes()
            ]
        );
    }

    #[test]
    fn netascii_is_refused_with_illegal_operation() {
        let request = Request {
            mode: Mode::NetAscii,
            ..rrq(&[])
        };
        let refusal = Transfer::new(&request, 3, &limits(1468, 8)).expect_err("netascii");
        assert!(matches!(
            Packet::decode(&refusal.datagram()),
            Ok(Packet::Error {
                code: ErrorCode::ILLEGAL_OPERATION,
                ..
            })
        ));
    }

    #[test]
    fn blksize_for_mtu_subtracts_headers_and_stays_in_range() {
        assert_eq!(blksize_for_mtu(1500), 1468);
        assert_eq!(blksize_for_mtu(576), 544);
        assert_eq!(blksize_for_mtu(9000), 8968);
        assert_eq!(blksize_for_mtu(20), MIN_BLKSIZE);
        assert_eq!(blksize_for_mtu(65536), MAX_BLKSIZE);
    }

    // ---- transfer simulation ----

    /// A file whose byte at offset `i` is a function of `i`, without storing it.
    struct Synthetic {
        len: u64,
    }

    fn synthetic_byte(offset: u64) -> u8 {
        (offset.wrapping_mul(2_654_435_761) >> 13) as u8
    }

    impl BlockSource for Synthetic {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            if offset + buf.len() as u64 > self.len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = synthetic_byte(offset + i as u64);
            }
            Ok(())
        }
    }

    /// What a well-behaved RFC 7440 client saw.
    struct Received {
        bytes: Vec<u8>,
        wire_blocks: Vec<u16>,
        acks_sent: usize,
    }

    /// Runs a transfer against an in-memory client that ACKs at the end of each window and
    /// at the short final block, checking that every DATA is the next expected block.
    fn simulate(
        options: &[(&str, &str)],
        file: &(impl BlockSource + ?Sized),
        file_len: u64,
        lim: &Limits,
    ) -> Received {
        let now = Instant::now();
        let mut t = Transfer::new(&rrq(options), file_len, lim).expect("octet is accepted");
        let blksize = usize::from(t.negotiated().blksize);
        let windowsize = usize::from(t.negotiated().windowsize);
        let mut received = Received {
            bytes: Vec::new(),
            wire_blocks: Vec::new(),
            acks_sent: 0,
        };
        let mut expected: u16 = 1;
        let mut in_window = 0;
        let mut out = t.start(now, file);
        while t.is_done().is_none() {
            assert!(!out.is_empty(), "transfer stalled without finishing");
            let mut reply = None;
            for datagram in out {
                match Packet::decode(&datagram).expect("server sends valid packets") {
                    Packet::OAck { .. } => reply = Some(0),
                    Packet::Data { block, payload } => {
                        assert_eq!(block, expected, "blocks arrive in order");
                        assert!(payload.len() <= blksize);
                        received.wire_blocks.push(block);
                        received.bytes.extend_from_slice(&payload);
                        in_window += 1;
                        if in_window == windowsize || payload.len() < blksize {
                            reply = Some(block);
                            in_window = 0;
                        }
                        expected = expected.wrapping_add(1);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let block = reply.expect("a window always ends in an ACK");
            received.acks_sent += 1;
            out = t.on_packet(&Packet::Ack { block }.to_bytes(), now, file);
        }
        assert_eq!(t.is_done(), Some(Outcome::Completed));
        assert_eq!(t.deadline(), None);
        received
    }

    fn contents(len: usize) -> Vec<u8> {
        (0..len as u64).map(synthetic_byte).collect()
    }

    #[test]
    fn transfer_with_short_last_block_delivers_the_file() {
        for windowsize in ["1", "4"] {
            let file = contents(3 * 512 + 7);
            let got = simulate(
                &[("windowsize", windowsize)],
                file.as_slice(),
                1543,
                &limits(1468, 8),
            );
            assert_eq!(got.bytes, file, "windowsize {windowsize}");
            assert_eq!(got.wire_blocks, vec![1, 2, 3, 4]);
        }
    }

    #[test]
    fn transfer_of_exact_multiple_ends_with_empty_block() {
        for windowsize in ["1", "4"] {
            let file = contents(4 * 1024);
            let got = simulate(
                &[("blksize", "1024"), ("windowsize", windowsize)],
                file.as_slice(),
                4096,
                &limits(1468, 8),
            );
            assert_eq!(got.bytes, file, "windowsize {windowsize}");
            assert_eq!(got.wire_blocks, vec![1, 2, 3, 4, 5], "block 5 is empty");
        }
    }

    #[test]
    fn windowsize_4_acks_once_per_window() {
        let file = contents(3 * 512 + 7);
        let got = simulate(
            &[("windowsize", "4")],
            file.as_slice(),
            1543,
            &limits(1468, 8),
        );
        // ACK 0 for the OACK, then one ACK for the single 4-block window.
        assert_eq!(got.acks_sent, 2);
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let got = simulate(&[], b"".as_slice(), 0, &limits(1468, 8));
        assert_eq!((got.bytes.len(), got.wire_blocks), (0, vec![1]));
    }

    #[test]
    fn block_numbers_roll_over_to_zero_past_65535() {
        let len = 8 * 70_000 + 3;
        let file = Synthetic { len };
        for windowsize in ["1", "16"] {
            let got = simulate(
                &[("blksize", "8"), ("windowsize", windowsize)],
                &file,
                len,
                &limits(1468, 16),
            );
            assert_eq!(got.wire_blocks.len(), 70_001);
            assert_eq!(got.wire_blocks[65_534], 65_535);
            assert_eq!(got.wire_blocks[65_535], 0, "block 65536 goes out as 0");
            assert_eq!(got.wire_blocks[65_536], 1);
            assert_eq!(got.bytes, contents(len as usize), "windowsize {windowsize}");
        }
    }

    #[test]
    fn final_block_numbered_zero_after_rollover_completes_only_on_its_ack() {
        // 65535 full blocks, so the empty final block is absolute 65536: wire number 0.
        let len = 8 * 65_535;
        let file = Synthetic { len };
        let now = Instant::now();
        let mut t = Transfer::new(&rrq(&[("blksize", "8")]), len, &limits(1468, 8))
            .expect("octet is accepted");
        t.start(now, &file);
        // ACK 0 before any rollover is the OACK's ACK, not the final one.
        let out = t.on_packet(&Packet::Ack { block: 0 }.to_bytes(), now, &file);
        assert_eq!(out.len(), 1);
        assert_eq!(t.is_done(), None);
        for block in 1..=65_535u16 {
            let out = t.on_packet(&Packet::Ack { block }.to_bytes(), now, &file);
            assert_eq!(out.len(), 1, "ACK {block} releases the next block");
        }
        assert_eq!(t.is_done(), None, "the final block is not yet acknowledged");
        t.on_packet(&Packet::Ack { block: 0 }.to_bytes(), now, &file);
        assert_eq!(t.is_done(), Some(Outcome::Completed));
    }

    fn data_blocks(out: &[Datagram]) -> Vec<u16> {
        out.iter()
            .map(|d| match Packet::decode(d) {
                Ok(Packet::Data { block, .. }) => block,
                other => panic!("expected DATA, got {other:?}"),
            })
            .collect()
    }

    fn started(options: &[(&str, &str)], file: &[u8], now: Instant) -> Transfer {
        let mut t = Transfer::new(&rrq(options), file.len() as u64, &limits(1468, 8))
            .expect("octet is accepted");
        let out = t.start(now, file);
        if !t.negotiated().oack.is_empty() {
            assert!(matches!(Packet::decode(&out[0]), Ok(Packet::OAck { .. })));
            t.on_packet(&Packet::Ack { block: 0 }.to_bytes(), now, file);
        }
        t
    }

    #[test]
    fn ack_inside_the_window_restarts_the_window_after_it() {
        let file = contents(10 * 512);
        let now = Instant::now();
        let mut t = started(&[("windowsize", "4")], &file, now);
        // Blocks 1..=4 are out; the client lost block 3 and ACKs 2 (RFC 7440).
        let out = t.on_packet(&Packet::Ack { block: 2 }.to_bytes(), now, file.as_slice());
        assert_eq!(data_blocks(&out), vec![3, 4, 5, 6]);
    }

    #[test]
    fn duplicate_and_stale_acks_are_ignored() {
        let file = contents(10 * 512);
        let now = Instant::now();
        let mut t = started(&[], &file, now);
        let out = t.on_packet(&Packet::Ack { block: 1 }.to_bytes(), now, file.as_slice());
        assert_eq!(data_blocks(&out), vec![2]);
        // Sorcerer's Apprentice: a duplicate ACK 1 must not resend block 2.
        let out = t.on_packet(&Packet::Ack { block: 1 }.to_bytes(), now, file.as_slice());
        assert!(out.is_empty());
        // An ACK for a block not yet sent is ignored too.
        let out = t.on_packet(&Packet::Ack { block: 7 }.to_bytes(), now, file.as_slice());
        assert!(out.is_empty());
        assert_eq!(t.is_done(), None);
    }

    #[test]
    fn timeout_retransmits_the_unacknowledged_window_then_gives_up() {
        let file = contents(10 * 512);
        let start = Instant::now();
        let mut t = started(&[("windowsize", "4"), ("timeout", "2")], &file, start);
        t.on_packet(&Packet::Ack { block: 4 }.to_bytes(), start, file.as_slice());
        let deadline = t.deadline().expect("armed after sending");
        assert_eq!(deadline, start + Duration::from_secs(2));
        assert!(
            t.on_timeout(deadline - Duration::from_millis(1), file.as_slice())
                .is_empty()
        );
        let mut now = deadline;
        for _ in 0..5 {
            let out = t.on_timeout(now, file.as_slice());
            assert_eq!(data_blocks(&out), vec![5, 6, 7, 8]);
            now = t.deadline().expect("still running");
        }
        assert!(t.on_timeout(now, file.as_slice()).is_empty());
        assert_eq!(t.is_done(), Some(Outcome::TimedOut));
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn progress_resets_the_retry_count() {
        let file = contents(10 * 512);
        let start = Instant::now();
        let mut t = started(&[], &file, start);
        for _ in 0..5 {
            let now = t.deadline().expect("running");
            t.on_timeout(now, file.as_slice());
        }
        let now = t.deadline().expect("running");
        t.on_packet(&Packet::Ack { block: 1 }.to_bytes(), now, file.as_slice());
        let out = t.on_timeout(t.deadline().expect("running"), file.as_slice());
        assert_eq!(data_blocks(&out), vec![2]);
    }

    #[test]
    fn lost_oack_is_retransmitted() {
        let now = Instant::now();
        let mut t =
            Transfer::new(&rrq(&[("tsize", "0")]), 3, &limits(1468, 8)).expect("octet is accepted");
        let first = t.start(now, b"abc".as_slice());
        let again = t.on_timeout(t.deadline().expect("armed"), b"abc".as_slice());
        assert_eq!(first, again);
    }

    #[test]
    fn client_error_after_oack_ends_the_transfer_at_once() {
        let now = Instant::now();
        let mut t =
            Transfer::new(&rrq(&[("tsize", "0")]), 3, &limits(1468, 8)).expect("octet is accepted");
        t.start(now, b"abc".as_slice());
        let error = error_datagram(ErrorCode::OPTION_NEGOTIATION, "tsize probe");
        let out = t.on_packet(&error, now, b"abc".as_slice());
        assert!(out.is_empty(), "no reply to an ERROR");
        assert_eq!(
            t.is_done(),
            Some(Outcome::ClientError {
                code: ErrorCode::OPTION_NEGOTIATION,
                message: "tsize probe".into()
            })
        );
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn wrong_packet_kind_gets_illegal_operation_and_ends() {
        let file = contents(1024);
        let now = Instant::now();
        let mut t = started(&[], &file, now);
        let data = Packet::Data {
            block: 1,
            payload: vec![1],
        };
        let out = t.on_packet(&data.to_bytes(), now, file.as_slice());
        assert!(matches!(
            Packet::decode(&out[0]),
            Ok(Packet::Error {
                code: ErrorCode::ILLEGAL_OPERATION,
                ..
            })
        ));
        assert_eq!(
            t.is_done(),
            Some(Outcome::IllegalOperation {
                opcode: Opcode::Data
            })
        );
    }

    #[test]
    fn undecodable_datagrams_are_ignored() {
        let file = contents(1024);
        let now = Instant::now();
        let mut t = started(&[], &file, now);
        assert!(t.on_packet(b"\x00", now, file.as_slice()).is_empty());
        assert!(
            t.on_packet(b"\x00\x04\x00\x01junk", now, file.as_slice())
                .is_empty()
        );
        assert_eq!(t.is_done(), None);
    }

    #[test]
    fn read_failure_sends_error_and_ends() {
        let now = Instant::now();
        // The file claims 1000 bytes but the source has 10: it shrank.
        let mut t = Transfer::new(&rrq(&[]), 1000, &limits(1468, 8)).expect("octet is accepted");
        let out = t.start(now, [0u8; 10].as_slice());
        assert!(matches!(
            Packet::decode(&out[0]),
            Ok(Packet::Error {
                code: ErrorCode::NOT_DEFINED,
                ..
            })
        ));
        assert_eq!(
            t.is_done(),
            Some(Outcome::ReadFailed {
                kind: std::io::ErrorKind::UnexpectedEof
            })
        );
    }

    // ---- path resolution ----

    #[test]
    fn relative_names_resolve_under_the_root_and_absolute_ones_are_refused() {
        let ok = |s: &str| resolve(s).map(|p| p.as_str().to_owned());
        assert_eq!(ok("undionly.kpxe"), Ok("undionly.kpxe".into()));
        assert_eq!(ok("efi//./ipxe.efi"), Ok("efi/ipxe.efi".into()));
        assert_eq!(resolve("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(resolve("//efi/ipxe.efi"), Err(PathError::Absolute));
    }

    #[test]
    fn traversal_and_tricks_are_refused() {
        assert_eq!(resolve("../etc/passwd"), Err(PathError::ParentComponent));
        assert_eq!(resolve("a/../../b"), Err(PathError::ParentComponent));
        assert_eq!(resolve("a/.."), Err(PathError::ParentComponent));
        assert_eq!(resolve("/.."), Err(PathError::Absolute));
        assert_eq!(resolve("a\0b"), Err(PathError::Nul));
        assert_eq!(resolve("..\\etc\\passwd"), Err(PathError::Backslash));
        assert_eq!(resolve("a\nb"), Err(PathError::ControlCharacter));
        assert_eq!(resolve(""), Err(PathError::Empty));
        assert_eq!(resolve("/"), Err(PathError::Absolute));
        assert_eq!(resolve("./"), Err(PathError::Empty));
    }

    // ---- properties ----

    fn option_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map("[a-z]{1,10}", "[ -~]{0,10}", 0..6)
            .prop_map(|map| map.into_iter().collect())
    }

    fn requests() -> impl Strategy<Value = Request> {
        let mode = prop_oneof![Just(Mode::Octet), Just(Mode::NetAscii)];
        ("[^\\x00]{0,20}", mode, option_pairs()).prop_map(|(filename, mode, options)| Request {
            filename,
            mode,
            options,
        })
    }

    fn packets() -> impl Strategy<Value = Packet> {
        prop_oneof![
            requests().prop_map(Packet::Rrq),
            requests().prop_map(Packet::Wrq),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..600))
                .prop_map(|(block, payload)| Packet::Data { block, payload }),
            any::<u16>().prop_map(|block| Packet::Ack { block }),
            (any::<u16>(), "[^\\x00]{0,40}").prop_map(|(code, message)| Packet::Error {
                code: ErrorCode(code),
                message
            }),
            option_pairs().prop_map(|options| Packet::OAck { options }),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Packet::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_request_shaped_input(
            body in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..200),
            opcode in 1u8..=6,
        ) {
            let mut bytes = vec![0, opcode];
            bytes.extend_from_slice(&body);
            let _ = Packet::decode(&bytes);
        }

        #[test]
        fn encode_then_decode_round_trips(packet in packets()) {
            prop_assert_eq!(Packet::decode(&packet.to_bytes()), Ok(packet));
        }

        #[test]
        fn resolved_paths_never_escape(requested in "[./a\\\\]{0,12}") {
            if let Ok(path) = resolve(&requested) {
                prop_assert!(!path.as_str().starts_with('/'));
                prop_assert!(path.as_str().split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            }
        }
    }
}
