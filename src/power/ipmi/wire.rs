//! IPMI v2.0 over LAN, as bytes: the RMCP header, the RMCP+ session header and integrity
//! trailer, payload types, Open Session Request/Response, RAKP messages 1–4, and IPMI LAN
//! messages with their two checksums. Every offset and code has a name; bytes from the network
//! are validated once, while decoding. Pure: no sockets, no clock, no randomness (encoders take
//! what would be random as arguments).
//!
//! References: IPMI v2.0 rev 1.1, §13.6 (RMCP+ session header), §13.8 (IPMI LAN message),
//! §13.17–13.23 (Open Session and RAKP), table 13-16 (payload types).

use std::fmt;

/// The RMCP header every datagram starts with (DMTF ASF 2.0, IPMI v2.0 §13.1.3).
pub mod rmcp {
    /// RMCP version 1.0.
    pub const VERSION_1_0: u8 = 0x06;
    pub const RESERVED: u8 = 0x00;
    /// RMCP sequence number 0xFF: no RMCP ACK wanted (IPMI never asks for one).
    pub const SEQUENCE_NO_ACK: u8 = 0xFF;
    /// Message class IPMI (normal message, not an ACK).
    pub const CLASS_IPMI: u8 = 0x07;
    pub const LEN: usize = 4;
    /// The four header bytes of every datagram this client sends.
    pub const HEADER: [u8; LEN] = [VERSION_1_0, RESERVED, SEQUENCE_NO_ACK, CLASS_IPMI];
}

/// Offsets within a datagram of the IPMI v2.0 (RMCP+) session header fields.
pub mod offset {
    /// "Authentication type / format": 0x06 marks the RMCP+ format.
    pub const AUTH_TYPE: usize = 4;
    /// Payload type, with the encrypted (bit 7) and authenticated (bit 6) flags.
    pub const PAYLOAD_TYPE: usize = 5;
    /// Session ID, least significant byte first.
    pub const SESSION_ID: usize = 6;
    /// Session sequence number, least significant byte first.
    pub const SEQUENCE: usize = 10;
    /// Payload length, least significant byte first.
    pub const PAYLOAD_LEN: usize = 14;
    pub const PAYLOAD: usize = 16;
}

/// Authentication type byte that selects the IPMI v2.0 / RMCP+ session format.
pub const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
pub const PAYLOAD_ENCRYPTED: u8 = 0x80;
pub const PAYLOAD_AUTHENTICATED: u8 = 0x40;
pub const PAYLOAD_TYPE_MASK: u8 = 0x3F;
/// Integrity pad bytes (§13.28.5).
pub const INTEGRITY_PAD: u8 = 0xFF;
/// "Next header" field of the integrity trailer: always 0x07 (table 13-8).
pub const NEXT_HEADER: u8 = 0x07;
/// Session header bytes covered by the AuthCode: auth type, payload type, session ID,
/// sequence number and payload length.
pub const SESSION_HEADER_LEN: usize = offset::PAYLOAD - offset::AUTH_TYPE;
/// The AuthCode covers a multiple of this many bytes (integrity pad).
const INTEGRITY_ALIGN: usize = 4;

/// Payload types (table 13-16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadType {
    Ipmi,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
}

impl PayloadType {
    pub const IPMI: u8 = 0x00;
    pub const SOL: u8 = 0x01;
    pub const OEM_EXPLICIT: u8 = 0x02;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP_1: u8 = 0x12;
    pub const RAKP_2: u8 = 0x13;
    pub const RAKP_3: u8 = 0x14;
    pub const RAKP_4: u8 = 0x15;

    pub fn code(self) -> u8 {
        match self {
            PayloadType::Ipmi => Self::IPMI,
            PayloadType::OpenSessionRequest => Self::OPEN_SESSION_REQUEST,
            PayloadType::OpenSessionResponse => Self::OPEN_SESSION_RESPONSE,
            PayloadType::Rakp1 => Self::RAKP_1,
            PayloadType::Rakp2 => Self::RAKP_2,
            PayloadType::Rakp3 => Self::RAKP_3,
            PayloadType::Rakp4 => Self::RAKP_4,
        }
    }

    fn from_code(code: u8) -> Result<Self, WireError> {
        Ok(match code {
            Self::IPMI => PayloadType::Ipmi,
            Self::OPEN_SESSION_REQUEST => PayloadType::OpenSessionRequest,
            Self::OPEN_SESSION_RESPONSE => PayloadType::OpenSessionResponse,
            Self::RAKP_1 => PayloadType::Rakp1,
            Self::RAKP_2 => PayloadType::Rakp2,
            Self::RAKP_3 => PayloadType::Rakp3,
            Self::RAKP_4 => PayloadType::Rakp4,
            other => return Err(WireError::PayloadType(other)),
        })
    }
}

/// Why bytes are not a valid IPMI v2.0 datagram or message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} needs {need} bytes, got {got}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("not an RMCP IPMI datagram (RMCP version {version:#04x}, class {class:#04x})")]
    NotRmcpIpmi { version: u8, class: u8 },
    #[error(
        "the BMC answered in the IPMI v1.5 session format (authentication type {0:#04x}), not RMCP+; enable IPMI 2.0 (lanplus) on the BMC"
    )]
    NotRmcpPlus(u8),
    #[error("payload type {0:#04x} is not one this client speaks")]
    PayloadType(u8),
    #[error("{what}: {detail}")]
    Invalid {
        what: &'static str,
        detail: &'static str,
    },
    #[error("{what}: {found} bytes left over after the message")]
    Trailing { what: &'static str, found: usize },
    #[error("IPMI message checksum {0} does not add up")]
    Checksum(u8),
    #[error("user names are at most 16 bytes, this one has {0}")]
    UserNameLength(usize),
}

fn short(what: &'static str, need: usize, got: usize) -> WireError {
    WireError::Short { what, need, got }
}

fn invalid(what: &'static str, detail: &'static str) -> WireError {
    WireError::Invalid { what, detail }
}

fn u32_le(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn array16(bytes: &[u8], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&bytes[at..at + 16]);
    out
}

/// The RMCP+ session header of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub payload_type: PayloadType,
    pub encrypted: bool,
    pub authenticated: bool,
    /// The receiver's session ID (0 before the session exists).
    pub session_id: u32,
    /// The sender's session sequence number (0 before the session exists).
    pub sequence: u32,
}

impl Header {
    /// A header for the session-less messages of session setup.
    pub fn pre_session(payload_type: PayloadType) -> Header {
        Header {
            payload_type,
            encrypted: false,
            authenticated: false,
            session_id: 0,
            sequence: 0,
        }
    }
}

/// What the AuthCode of an authenticated datagram covers, and the AuthCode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Integrity<'a> {
    /// From the authentication type byte through the next header byte.
    pub covered: &'a [u8],
    pub auth_code: &'a [u8],
}

/// One decoded datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub header: Header,
    /// The payload as sent (still encrypted when `header.encrypted`).
    pub payload: &'a [u8],
    /// Present exactly when `header.authenticated`.
    pub integrity: Option<Integrity<'a>>,
}

/// Decodes one datagram. `auth_code_len` is the AuthCode length of the session's integrity
/// algorithm (0 when there is no session yet): an authenticated datagram is only accepted when
/// it is non-zero, and its trailer must end in exactly that many bytes.
pub fn decode_datagram(bytes: &[u8], auth_code_len: usize) -> Result<Datagram<'_>, WireError> {
    if bytes.len() < rmcp::LEN + 1 {
        return Err(short("RMCP datagram", rmcp::LEN + 1, bytes.len()));
    }
    if bytes[0] != rmcp::VERSION_1_0 || bytes[3] & 0x80 != 0 || bytes[3] & 0x1F != rmcp::CLASS_IPMI
    {
        return Err(WireError::NotRmcpIpmi {
            version: bytes[0],
            class: bytes[3],
        });
    }
    if bytes[offset::AUTH_TYPE] != AUTH_TYPE_RMCP_PLUS {
        return Err(WireError::NotRmcpPlus(bytes[offset::AUTH_TYPE]));
    }
    if bytes.len() < offset::PAYLOAD {
        return Err(short("RMCP+ session header", offset::PAYLOAD, bytes.len()));
    }
    let type_byte = bytes[offset::PAYLOAD_TYPE];
    let header = Header {
        payload_type: PayloadType::from_code(type_byte & PAYLOAD_TYPE_MASK)?,
        encrypted: type_byte & PAYLOAD_ENCRYPTED != 0,
        authenticated: type_byte & PAYLOAD_AUTHENTICATED != 0,
        session_id: u32_le(bytes, offset::SESSION_ID),
        sequence: u32_le(bytes, offset::SEQUENCE),
    };
    let len =
        u16::from_le_bytes([bytes[offset::PAYLOAD_LEN], bytes[offset::PAYLOAD_LEN + 1]]) as usize;
    let end = offset::PAYLOAD + len;
    if bytes.len() < end {
        return Err(short("RMCP+ payload", len, bytes.len() - offset::PAYLOAD));
    }
    let payload = &bytes[offset::PAYLOAD..end];
    if !header.authenticated {
        if bytes.len() != end {
            return Err(WireError::Trailing {
                what: "unauthenticated RMCP+ datagram",
                found: bytes.len() - end,
            });
        }
        return Ok(Datagram {
            header,
            payload,
            integrity: None,
        });
    }
    if auth_code_len == 0 {
        return Err(invalid(
            "RMCP+ datagram",
            "authenticated, but no session with an integrity algorithm exists",
        ));
    }
    // Trailer: integrity pad (0xFF…), pad length, next header, AuthCode.
    let trailer = &bytes[end..];
    if trailer.len() < 2 + auth_code_len {
        return Err(short(
            "RMCP+ integrity trailer",
            2 + auth_code_len,
            trailer.len(),
        ));
    }
    let pad_len_at = trailer.len() - auth_code_len - 2;
    if trailer[pad_len_at] as usize != pad_len_at {
        return Err(invalid(
            "RMCP+ integrity trailer",
            "the pad length does not match the pad",
        ));
    }
    if trailer[pad_len_at + 1] != NEXT_HEADER {
        return Err(invalid(
            "RMCP+ integrity trailer",
            "the next header field is not 0x07",
        ));
    }
    let covered_end = bytes.len() - auth_code_len;
    Ok(Datagram {
        header,
        payload,
        integrity: Some(Integrity {
            covered: &bytes[offset::AUTH_TYPE..covered_end],
            auth_code: &bytes[covered_end..],
        }),
    })
}

/// Computes the AuthCode of an authenticated datagram from the bytes it covers.
pub type Signer<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// Encodes one datagram. With `sign`, the datagram is authenticated: the integrity trailer is
/// added and `sign` computes the AuthCode over the covered bytes. Payloads are at most 65535
/// bytes (callers never come close: an IPMI message is at most a few hundred).
pub fn encode_datagram(header: &Header, payload: &[u8], sign: Option<Signer<'_>>) -> Vec<u8> {
    let mut type_byte = header.payload_type.code();
    if header.encrypted {
        type_byte |= PAYLOAD_ENCRYPTED;
    }
    if sign.is_some() {
        type_byte |= PAYLOAD_AUTHENTICATED;
    }
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(offset::PAYLOAD + payload.len() + 40);
    out.extend_from_slice(&rmcp::HEADER);
    out.push(AUTH_TYPE_RMCP_PLUS);
    out.push(type_byte);
    out.extend_from_slice(&header.session_id.to_le_bytes());
    out.extend_from_slice(&header.sequence.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload[..len as usize]);
    if let Some(sign) = sign {
        let unpadded = SESSION_HEADER_LEN + len as usize + 2;
        let pad = (INTEGRITY_ALIGN - unpadded % INTEGRITY_ALIGN) % INTEGRITY_ALIGN;
        out.extend(std::iter::repeat_n(INTEGRITY_PAD, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = sign(&out[offset::AUTH_TYPE..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Privilege levels (table 6-1 and the RAKP role field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    User,
    Operator,
    Administrator,
}

impl Privilege {
    pub fn code(self) -> u8 {
        match self {
            Privilege::User => 0x02,
            Privilege::Operator => 0x03,
            Privilege::Administrator => 0x04,
        }
    }
}

/// RAKP role byte bit 4: look the user up by name only (ipmitool's default); the BMC then
/// grants the requested privilege up to the user's limit.
pub const ROLE_NAME_ONLY_LOOKUP: u8 = 0x10;

/// RMCP+ and RAKP message status codes (table 13-15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RakpStatus(pub u8);

impl RakpStatus {
    pub const OK: u8 = 0x00;
    pub const INSUFFICIENT_RESOURCES: u8 = 0x01;
    pub const INVALID_SESSION_ID: u8 = 0x02;
    pub const INVALID_PAYLOAD_TYPE: u8 = 0x03;
    pub const INVALID_AUTHENTICATION_ALGORITHM: u8 = 0x04;
    pub const INVALID_INTEGRITY_ALGORITHM: u8 = 0x05;
    pub const NO_MATCHING_AUTHENTICATION_PAYLOAD: u8 = 0x06;
    pub const NO_MATCHING_INTEGRITY_PAYLOAD: u8 = 0x07;
    pub const INACTIVE_SESSION_ID: u8 = 0x08;
    pub const INVALID_ROLE: u8 = 0x09;
    pub const UNAUTHORIZED_ROLE: u8 = 0x0A;
    pub const INSUFFICIENT_RESOURCES_AT_ROLE: u8 = 0x0B;
    pub const INVALID_NAME_LENGTH: u8 = 0x0C;
    pub const UNAUTHORIZED_NAME: u8 = 0x0D;
    pub const UNAUTHORIZED_GUID: u8 = 0x0E;
    pub const INVALID_INTEGRITY_CHECK_VALUE: u8 = 0x0F;
    pub const INVALID_CONFIDENTIALITY_ALGORITHM: u8 = 0x10;
    pub const NO_CIPHER_SUITE_MATCH: u8 = 0x11;
    pub const ILLEGAL_PARAMETER: u8 = 0x12;

    pub fn is_ok(self) -> bool {
        self.0 == Self::OK
    }

    /// The specification's wording.
    pub fn describe(self) -> &'static str {
        match self.0 {
            Self::OK => "no errors",
            Self::INSUFFICIENT_RESOURCES => "insufficient resources to create a session",
            Self::INVALID_SESSION_ID => "invalid session ID",
            Self::INVALID_PAYLOAD_TYPE => "invalid payload type",
            Self::INVALID_AUTHENTICATION_ALGORITHM => "invalid authentication algorithm",
            Self::INVALID_INTEGRITY_ALGORITHM => "invalid integrity algorithm",
            Self::NO_MATCHING_AUTHENTICATION_PAYLOAD => "no matching authentication payload",
            Self::NO_MATCHING_INTEGRITY_PAYLOAD => "no matching integrity payload",
            Self::INACTIVE_SESSION_ID => "inactive session ID",
            Self::INVALID_ROLE => "invalid role",
            Self::UNAUTHORIZED_ROLE => "unauthorized role or privilege level requested",
            Self::INSUFFICIENT_RESOURCES_AT_ROLE => {
                "insufficient resources to create a session at the requested role"
            }
            Self::INVALID_NAME_LENGTH => "invalid name length",
            Self::UNAUTHORIZED_NAME => "unauthorized name",
            Self::UNAUTHORIZED_GUID => "unauthorized GUID",
            Self::INVALID_INTEGRITY_CHECK_VALUE => "invalid integrity check value",
            Self::INVALID_CONFIDENTIALITY_ALGORITHM => "invalid confidentiality algorithm",
            Self::NO_CIPHER_SUITE_MATCH => {
                "no cipher suite match with proposed security algorithms"
            }
            Self::ILLEGAL_PARAMETER => "illegal or unrecognized parameter",
            _ => "unknown status code",
        }
    }
}

impl fmt::Display for RakpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {:#04x}, {}", self.0, self.describe())
    }
}

/// Algorithm payload record types inside Open Session messages (§13.17).
mod algorithm_record {
    pub const AUTHENTICATION: u8 = 0x00;
    pub const INTEGRITY: u8 = 0x01;
    pub const CONFIDENTIALITY: u8 = 0x02;
    /// Every record is 8 bytes long and says so in its byte 3.
    pub const LEN: usize = 8;
}

fn encode_algorithm(out: &mut Vec<u8>, record_type: u8, algorithm: u8) {
    out.extend_from_slice(&[
        record_type,
        0,
        0,
        algorithm_record::LEN as u8,
        algorithm & 0x3F,
        0,
        0,
        0,
    ]);
}

fn decode_algorithm(record: &[u8], record_type: u8, what: &'static str) -> Result<u8, WireError> {
    if record[0] != record_type {
        return Err(invalid(what, "algorithm records are out of order"));
    }
    if record[3] as usize != algorithm_record::LEN {
        return Err(invalid(what, "an algorithm record is not 8 bytes long"));
    }
    Ok(record[4] & 0x3F)
}

/// RMCP+ Open Session Request (§13.17): the console proposes one algorithm of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSessionRequest {
    pub tag: u8,
    /// Requested maximum privilege (0 asks for the highest the BMC allows).
    pub privilege: u8,
    pub console_session_id: u32,
    pub authentication: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

impl OpenSessionRequest {
    pub const LEN: usize = 32;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&[self.tag, self.privilege & 0x0F, 0, 0]);
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        encode_algorithm(
            &mut out,
            algorithm_record::AUTHENTICATION,
            self.authentication,
        );
        encode_algorithm(&mut out, algorithm_record::INTEGRITY, self.integrity);
        encode_algorithm(
            &mut out,
            algorithm_record::CONFIDENTIALITY,
            self.confidentiality,
        );
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "Open Session Request";
        if bytes.len() != Self::LEN {
            return Err(short(WHAT, Self::LEN, bytes.len()));
        }
        Ok(OpenSessionRequest {
            tag: bytes[0],
            privilege: bytes[1] & 0x0F,
            console_session_id: u32_le(bytes, 4),
            authentication: decode_algorithm(
                &bytes[8..16],
                algorithm_record::AUTHENTICATION,
                WHAT,
            )?,
            integrity: decode_algorithm(&bytes[16..24], algorithm_record::INTEGRITY, WHAT)?,
            confidentiality: decode_algorithm(
                &bytes[24..32],
                algorithm_record::CONFIDENTIALITY,
                WHAT,
            )?,
        })
    }
}

/// What a BMC that accepts an Open Session Request agrees to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub bmc_session_id: u32,
    pub authentication: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

/// RMCP+ Open Session Response (§13.18). On an error status the BMC may stop after the
/// status byte (ipmi_sim does) or after the console session ID, so the ID is optional and
/// `negotiated` is only present for status 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: RakpStatus,
    pub max_privilege: u8,
    /// Always present when the status is 0.
    pub console_session_id: Option<u32>,
    pub negotiated: Option<Negotiated>,
}

/// Message tag and status code: all an RMCP+ or RAKP error answer must carry.
const ERROR_MIN_LEN: usize = 2;
/// Tag, status, two bytes, session ID.
const STATUS_HEAD_LEN: usize = 8;

/// The session ID at bytes 4..8 of an answer, when it is long enough to have one.
fn optional_session_id(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= STATUS_HEAD_LEN).then(|| u32_le(bytes, 4))
}

impl OpenSessionResponse {
    pub const LEN: usize = 36;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&[self.tag, self.status.0]);
        let Some(id) = self.console_session_id else {
            return out;
        };
        out.extend_from_slice(&[self.max_privilege, 0]);
        out.extend_from_slice(&id.to_le_bytes());
        if let Some(n) = &self.negotiated {
            out.extend_from_slice(&n.bmc_session_id.to_le_bytes());
            encode_algorithm(&mut out, algorithm_record::AUTHENTICATION, n.authentication);
            encode_algorithm(&mut out, algorithm_record::INTEGRITY, n.integrity);
            encode_algorithm(
                &mut out,
                algorithm_record::CONFIDENTIALITY,
                n.confidentiality,
            );
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "Open Session Response";
        if bytes.len() < ERROR_MIN_LEN {
            return Err(short(WHAT, ERROR_MIN_LEN, bytes.len()));
        }
        let status = RakpStatus(bytes[1]);
        let negotiated = if status.is_ok() {
            if bytes.len() != Self::LEN {
                return Err(short(WHAT, Self::LEN, bytes.len()));
            }
            Some(Negotiated {
                bmc_session_id: u32_le(bytes, 8),
                authentication: decode_algorithm(
                    &bytes[12..20],
                    algorithm_record::AUTHENTICATION,
                    WHAT,
                )?,
                integrity: decode_algorithm(&bytes[20..28], algorithm_record::INTEGRITY, WHAT)?,
                confidentiality: decode_algorithm(
                    &bytes[28..36],
                    algorithm_record::CONFIDENTIALITY,
                    WHAT,
                )?,
            })
        } else {
            None
        };
        Ok(OpenSessionResponse {
            tag: bytes[0],
            status,
            max_privilege: bytes.get(2).map_or(0, |b| b & 0x0F),
            console_session_id: optional_session_id(bytes),
            negotiated,
        })
    }
}

/// Longest IPMI user name (§13.20, table 22-29).
pub const MAX_USER_NAME: usize = 16;

/// RAKP Message 1 (§13.20): the console's random number and the user name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rakp1 {
    pub tag: u8,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    /// Requested role: privilege in bits 3:0, [`ROLE_NAME_ONLY_LOOKUP`] in bit 4.
    pub role: u8,
    pub user_name: Vec<u8>,
}

impl Rakp1 {
    const FIXED_LEN: usize = 28;

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        if self.user_name.len() > MAX_USER_NAME {
            return Err(WireError::UserNameLength(self.user_name.len()));
        }
        let mut out = Vec::with_capacity(Self::FIXED_LEN + self.user_name.len());
        out.extend_from_slice(&[self.tag, 0, 0, 0]);
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.console_random);
        out.extend_from_slice(&[self.role, 0, 0, self.user_name.len() as u8]);
        out.extend_from_slice(&self.user_name);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < Self::FIXED_LEN {
            return Err(short("RAKP message 1", Self::FIXED_LEN, bytes.len()));
        }
        let name_len = bytes[27] as usize;
        if name_len > MAX_USER_NAME {
            return Err(WireError::UserNameLength(name_len));
        }
        if bytes.len() != Self::FIXED_LEN + name_len {
            return Err(invalid(
                "RAKP message 1",
                "the user name length does not match the message",
            ));
        }
        Ok(Rakp1 {
            tag: bytes[0],
            bmc_session_id: u32_le(bytes, 4),
            console_random: array16(bytes, 8),
            role: bytes[24],
            user_name: bytes[28..].to_vec(),
        })
    }
}

/// RAKP Message 2 (§13.21): the BMC's random number and GUID, and its proof that it knows the
/// user's key. On an error status the rest may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rakp2 {
    pub tag: u8,
    pub status: RakpStatus,
    /// Always present when the status is 0.
    pub console_session_id: Option<u32>,
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth_code: Vec<u8>,
}

impl Rakp2 {
    const FIXED_LEN: usize = 40;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED_LEN + self.auth_code.len());
        out.extend_from_slice(&[self.tag, self.status.0]);
        let Some(id) = self.console_session_id else {
            return out;
        };
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&id.to_le_bytes());
        if self.status.is_ok() {
            out.extend_from_slice(&self.bmc_random);
            out.extend_from_slice(&self.bmc_guid);
            out.extend_from_slice(&self.auth_code);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "RAKP message 2";
        if bytes.len() < ERROR_MIN_LEN {
            return Err(short(WHAT, ERROR_MIN_LEN, bytes.len()));
        }
        let status = RakpStatus(bytes[1]);
        let mut message = Rakp2 {
            tag: bytes[0],
            status,
            console_session_id: optional_session_id(bytes),
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            auth_code: Vec::new(),
        };
        if status.is_ok() {
            if bytes.len() < Self::FIXED_LEN {
                return Err(short(WHAT, Self::FIXED_LEN, bytes.len()));
            }
            message.bmc_random = array16(bytes, 8);
            message.bmc_guid = array16(bytes, 24);
            message.auth_code = bytes[Self::FIXED_LEN..].to_vec();
        }
        Ok(message)
    }
}

/// RAKP Message 3 (§13.22): the console's proof that it knows the user's key, or an error
/// status that tells the BMC to drop the half-open session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rakp3 {
    pub tag: u8,
    pub status: RakpStatus,
    pub bmc_session_id: u32,
    pub auth_code: Vec<u8>,
}

impl Rakp3 {
    const HEAD_LEN: usize = 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEAD_LEN + self.auth_code.len());
        out.extend_from_slice(&[self.tag, self.status.0, 0, 0]);
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.auth_code);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < Self::HEAD_LEN {
            return Err(short("RAKP message 3", Self::HEAD_LEN, bytes.len()));
        }
        Ok(Rakp3 {
            tag: bytes[0],
            status: RakpStatus(bytes[1]),
            bmc_session_id: u32_le(bytes, 4),
            auth_code: bytes[Self::HEAD_LEN..].to_vec(),
        })
    }
}

/// RAKP Message 4 (§13.23): the BMC's integrity check value over the new session key. On an
/// error status the rest may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rakp4 {
    pub tag: u8,
    pub status: RakpStatus,
    /// Always present when the status is 0.
    pub console_session_id: Option<u32>,
    pub integrity_check: Vec<u8>,
}

impl Rakp4 {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATUS_HEAD_LEN + self.integrity_check.len());
        out.extend_from_slice(&[self.tag, self.status.0]);
        let Some(id) = self.console_session_id else {
            return out;
        };
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&self.integrity_check);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "RAKP message 4";
        let status = RakpStatus(
            *bytes
                .get(1)
                .ok_or(short(WHAT, ERROR_MIN_LEN, bytes.len()))?,
        );
        if status.is_ok() && bytes.len() < STATUS_HEAD_LEN {
            return Err(short(WHAT, STATUS_HEAD_LEN, bytes.len()));
        }
        Ok(Rakp4 {
            tag: bytes[0],
            status,
            console_session_id: optional_session_id(bytes),
            integrity_check: bytes.get(STATUS_HEAD_LEN..).unwrap_or_default().to_vec(),
        })
    }
}

/// IPMB addresses and LUNs of a LAN IPMI message (§13.8).
pub mod ipmb {
    /// The BMC's slave address: the responder of every request this client sends.
    pub const BMC_ADDRESS: u8 = 0x20;
    /// Software ID of a remote console (requester address).
    pub const REMOTE_CONSOLE_SWID: u8 = 0x81;
    /// LUN 00: the BMC's own commands.
    pub const LUN_BMC: u8 = 0x00;
    /// rqSeq is six bits wide.
    pub const RQ_SEQ_MASK: u8 = 0x3F;
}

/// An IPMI message's checksum: the two's complement of the sum of `bytes`, so that bytes plus
/// checksum add up to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// A request as it travels inside an IPMI payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestMessage<'a> {
    pub netfn: u8,
    pub cmd: u8,
    /// Six bits, echoed in the response.
    pub rq_seq: u8,
    pub data: &'a [u8],
}

/// A response as it travels inside an IPMI payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseMessage<'a> {
    /// The response NetFn (the request's plus one).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion_code: u8,
    pub data: &'a [u8],
}

/// Header (three bytes), requester fields and command (three), final checksum (one).
const MESSAGE_MIN_LEN: usize = 7;

impl RequestMessage<'_> {
    /// rsAddr, netFn/rsLUN, checksum 1, rqAddr, rqSeq/rqLUN, cmd, data, checksum 2.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_MIN_LEN + self.data.len());
        out.extend_from_slice(&[ipmb::BMC_ADDRESS, (self.netfn << 2) | ipmb::LUN_BMC]);
        out.push(checksum(&out[0..2]));
        out.extend_from_slice(&[
            ipmb::REMOTE_CONSOLE_SWID,
            ((self.rq_seq & ipmb::RQ_SEQ_MASK) << 2) | ipmb::LUN_BMC,
            self.cmd,
        ]);
        out.extend_from_slice(self.data);
        out.push(checksum(&out[3..]));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RequestMessage<'_>, WireError> {
        let (netfn, rq_seq, cmd, rest) = decode_message(bytes, "IPMI request")?;
        Ok(RequestMessage {
            netfn,
            cmd,
            rq_seq,
            data: rest,
        })
    }
}

impl ResponseMessage<'_> {
    /// rqAddr, netFn/rqLUN, checksum 1, rsAddr, rqSeq/rsLUN, cmd, completion code, data,
    /// checksum 2.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_MIN_LEN + 1 + self.data.len());
        out.extend_from_slice(&[ipmb::REMOTE_CONSOLE_SWID, (self.netfn << 2) | ipmb::LUN_BMC]);
        out.push(checksum(&out[0..2]));
        out.extend_from_slice(&[
            ipmb::BMC_ADDRESS,
            ((self.rq_seq & ipmb::RQ_SEQ_MASK) << 2) | ipmb::LUN_BMC,
            self.cmd,
            self.completion_code,
        ]);
        out.extend_from_slice(self.data);
        out.push(checksum(&out[3..]));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ResponseMessage<'_>, WireError> {
        let (netfn, rq_seq, cmd, rest) = decode_message(bytes, "IPMI response")?;
        let Some((&completion_code, data)) = rest.split_first() else {
            return Err(short("IPMI response", MESSAGE_MIN_LEN + 1, bytes.len()));
        };
        Ok(ResponseMessage {
            netfn,
            cmd,
            rq_seq,
            completion_code,
            data,
        })
    }
}

/// Checks both checksums and splits a message into NetFn, rqSeq, command and the rest.
fn decode_message<'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(u8, u8, u8, &'a [u8]), WireError> {
    if bytes.len() < MESSAGE_MIN_LEN {
        return Err(short(what, MESSAGE_MIN_LEN, bytes.len()));
    }
    if checksum(&bytes[0..3]) != 0 {
        return Err(WireError::Checksum(1));
    }
    if checksum(&bytes[3..]) != 0 {
        return Err(WireError::Checksum(2));
    }
    let netfn = bytes[1] >> 2;
    let rq_seq = bytes[4] >> 2;
    let cmd = bytes[5];
    Ok((netfn, rq_seq, cmd, &bytes[6..bytes.len() - 1]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digits"))
            .collect()
    }

    // Datagrams ipmitool 1.8.19 sent and received with cipher suite 17
    // (tests/fixtures/ipmi/suite17-datagrams.txt).
    const OPEN_REQUEST: &str = "0600ff0706100000000000000000200000000000a4a3a2a0000000080300000001000008040000000200000801000000";
    const OPEN_RESPONSE: &str = "0600ff0706110000000000000000240000000400a4a3a2a0eeffc00b000000080300000001000008040000000200000801000000";
    const RAKP1: &str = "0600ff0706120000000000000000210000000000eeffc00bd9622332b4548bcc19cca7d57d41f1a71400000561646d696e";
    const RAKP3: &str = "0600ff0706140000000000000000280000000000eeffc00b99d823aeca7b41dd4edc23e3c14dfece8b0932ea37602d5957b3ad6978c1c23d";
    pub(crate) const FIRST_REQUEST_17: &str = "0600ff0706c0eeffc00b03000000200005cc1a190e504e9c368fa72951c76057f9c8ee9335bf94825e36c5aef7d1f229ffff020732437ac9dd5a9034f950bcf630831495";

    #[test]
    fn open_session_request_golden_vector() {
        let bytes = hex(OPEN_REQUEST);
        let datagram = decode_datagram(&bytes, 0).expect("valid datagram");
        assert_eq!(
            datagram.header,
            Header::pre_session(PayloadType::OpenSessionRequest)
        );
        let request = OpenSessionRequest::decode(datagram.payload).expect("valid request");
        assert_eq!(
            request,
            OpenSessionRequest {
                tag: 0,
                privilege: 0,
                console_session_id: 0xa0a2a3a4,
                authentication: 0x03,
                integrity: 0x04,
                confidentiality: 0x01,
            }
        );
        let encoded = encode_datagram(&datagram.header, &request.encode(), None);
        assert_eq!(encoded, bytes, "re-encoding gives ipmitool's bytes");
    }

    #[test]
    fn open_session_response_golden_vector() {
        let bytes = hex(OPEN_RESPONSE);
        let datagram = decode_datagram(&bytes, 0).expect("valid datagram");
        let response = OpenSessionResponse::decode(datagram.payload).expect("valid response");
        assert_eq!(response.status, RakpStatus(0));
        assert_eq!(response.max_privilege, 4);
        assert_eq!(response.console_session_id, Some(0xa0a2a3a4));
        assert_eq!(
            response.negotiated,
            Some(Negotiated {
                bmc_session_id: 0x0bc0ffee,
                authentication: 3,
                integrity: 4,
                confidentiality: 1,
            })
        );
        assert_eq!(
            encode_datagram(&datagram.header, &response.encode(), None),
            bytes
        );
    }

    #[test]
    fn an_open_session_error_may_stop_after_the_status() {
        let response = OpenSessionResponse::decode(&[7, 0x04, 0, 0, 1, 2, 3, 4])
            .expect("short error response");
        assert_eq!(response.status, RakpStatus(0x04));
        assert_eq!(response.console_session_id, Some(0x04030201));
        assert_eq!(response.negotiated, None);
        // ipmi_sim answers a cipher suite it lacks with tag and status only.
        let bare = OpenSessionResponse::decode(&[0, 0x04]).expect("two-byte error response");
        assert_eq!(
            (bare.status, bare.console_session_id),
            (RakpStatus(0x04), None)
        );
        assert_eq!(bare.encode(), [0, 0x04]);
        assert!(
            OpenSessionResponse::decode(&[0, 0x00]).is_err(),
            "success needs it all"
        );
        assert_eq!(
            response.status.to_string(),
            "status 0x04, invalid authentication algorithm"
        );
    }

    #[test]
    fn rakp1_golden_vector() {
        let bytes = hex(RAKP1);
        let datagram = decode_datagram(&bytes, 0).expect("valid datagram");
        let rakp1 = Rakp1::decode(datagram.payload).expect("valid RAKP 1");
        assert_eq!(rakp1.bmc_session_id, 0x0bc0ffee);
        assert_eq!(
            rakp1.console_random.to_vec(),
            hex("d9622332b4548bcc19cca7d57d41f1a7")
        );
        assert_eq!(rakp1.role, 0x14, "administrator, name-only lookup");
        assert_eq!(rakp1.user_name, b"admin");
        let payload = rakp1.encode().expect("short user name");
        assert_eq!(encode_datagram(&datagram.header, &payload, None), bytes);
    }

    #[test]
    fn rakp3_golden_vector() {
        let bytes = hex(RAKP3);
        let datagram = decode_datagram(&bytes, 0).expect("valid datagram");
        let rakp3 = Rakp3::decode(datagram.payload).expect("valid RAKP 3");
        assert_eq!(rakp3.status, RakpStatus(0));
        assert_eq!(rakp3.bmc_session_id, 0x0bc0ffee);
        assert_eq!(rakp3.auth_code.len(), 32);
        assert_eq!(
            encode_datagram(&datagram.header, &rakp3.encode(), None),
            bytes
        );
    }

    #[test]
    fn authenticated_datagram_golden_vector_splits_payload_trailer_and_auth_code() {
        let bytes = hex(FIRST_REQUEST_17);
        let datagram = decode_datagram(&bytes, 16).expect("valid datagram");
        assert_eq!(
            datagram.header,
            Header {
                payload_type: PayloadType::Ipmi,
                encrypted: true,
                authenticated: true,
                session_id: 0x0bc0ffee,
                sequence: 3,
            }
        );
        assert_eq!(datagram.payload.len(), 32, "IV and one AES block");
        let integrity = datagram.integrity.expect("authenticated");
        // ipmitool's "authcode input" is exactly what the AuthCode covers.
        assert_eq!(integrity.covered, &bytes[4..bytes.len() - 16]);
        assert_eq!(
            &integrity.covered[integrity.covered.len() - 4..],
            [0xff, 0xff, 2, 7]
        );
        assert_eq!(
            integrity.auth_code,
            hex("32437ac9dd5a9034f950bcf630831495").as_slice()
        );
        // Encoding the same header and payload reproduces the trailer; the signer sees the
        // covered bytes.
        let code = integrity.auth_code.to_vec();
        let covered = integrity.covered.to_vec();
        let sign = move |c: &[u8]| {
            assert_eq!(c, covered.as_slice());
            code.clone()
        };
        assert_eq!(
            encode_datagram(&datagram.header, datagram.payload, Some(&sign)),
            bytes
        );
    }

    #[test]
    fn the_integrity_pad_makes_the_covered_range_a_multiple_of_four() {
        for len in 0..9 {
            let header = Header {
                payload_type: PayloadType::Ipmi,
                encrypted: false,
                authenticated: true,
                session_id: 1,
                sequence: 1,
            };
            let payload = vec![0xAB; len];
            let sign = |covered: &[u8]| {
                assert_eq!(covered.len() % 4, 0, "payload of {len} bytes");
                vec![0; 12]
            };
            let bytes = encode_datagram(&header, &payload, Some(&sign));
            let datagram = decode_datagram(&bytes, 12).expect("round trip");
            assert_eq!(datagram.payload, payload.as_slice());
        }
    }

    #[test]
    fn damaged_trailers_and_headers_are_rejected() {
        let bytes = hex(FIRST_REQUEST_17);
        let mut wrong_next_header = bytes.clone();
        let at = wrong_next_header.len() - 17;
        wrong_next_header[at] = 0x06;
        assert!(matches!(
            decode_datagram(&wrong_next_header, 16),
            Err(WireError::Invalid { .. })
        ));
        let mut wrong_pad_len = bytes.clone();
        wrong_pad_len[at - 1] = 3;
        assert!(decode_datagram(&wrong_pad_len, 16).is_err());
        assert!(
            decode_datagram(&bytes, 0).is_err(),
            "no session, no authenticated datagrams"
        );
        let mut v15 = bytes.clone();
        v15[offset::AUTH_TYPE] = 0x00;
        let error = decode_datagram(&v15, 16).expect_err("IPMI 1.5 format");
        assert!(error.to_string().contains("lanplus"), "{error}");
        let mut oem = hex(OPEN_REQUEST);
        oem[offset::PAYLOAD_TYPE] = PayloadType::OEM_EXPLICIT;
        assert_eq!(
            decode_datagram(&oem, 0),
            Err(WireError::PayloadType(PayloadType::OEM_EXPLICIT))
        );
        let truncated = &hex(OPEN_REQUEST)[..30];
        assert!(matches!(
            decode_datagram(truncated, 0),
            Err(WireError::Short { .. })
        ));
    }

    #[test]
    fn ipmi_request_golden_vector_from_ipmitool() {
        // Set Session Privilege Level (App 0x3B, administrator), rqSeq 1, as ipmitool's
        // first session request carried it (decrypted in crypto's tests).
        let request = RequestMessage {
            netfn: 0x06,
            cmd: 0x3b,
            rq_seq: 1,
            data: &[0x04],
        };
        let bytes = request.encode();
        assert_eq!(bytes, hex("20 18 c8 81 04 3b 04 3c"));
        assert_eq!(RequestMessage::decode(&bytes), Ok(request));
    }

    #[test]
    fn ipmi_response_checksums_are_checked() {
        let response = ResponseMessage {
            netfn: 0x07,
            cmd: 0x3b,
            rq_seq: 1,
            completion_code: 0,
            data: &[0x04],
        };
        let bytes = response.encode();
        assert_eq!(bytes, hex("81 1c 63 20 04 3b 00 04 9d"));
        assert_eq!(ResponseMessage::decode(&bytes), Ok(response));
        let mut bad = bytes.clone();
        bad[2] ^= 1;
        assert_eq!(ResponseMessage::decode(&bad), Err(WireError::Checksum(1)));
        let mut bad = bytes.clone();
        bad[7] ^= 1;
        assert_eq!(ResponseMessage::decode(&bad), Err(WireError::Checksum(2)));
        assert!(ResponseMessage::decode(&bytes[..6]).is_err());
    }

    #[test]
    fn rakp_messages_round_trip() {
        let rakp2 = Rakp2 {
            tag: 1,
            status: RakpStatus(0),
            console_session_id: Some(9),
            bmc_random: [3; 16],
            bmc_guid: [4; 16],
            auth_code: vec![5; 20],
        };
        assert_eq!(Rakp2::decode(&rakp2.encode()), Ok(rakp2));
        let refused = Rakp2 {
            tag: 1,
            status: RakpStatus(RakpStatus::UNAUTHORIZED_NAME),
            console_session_id: Some(9),
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            auth_code: Vec::new(),
        };
        assert_eq!(refused.encode().len(), 8);
        assert_eq!(Rakp2::decode(&refused.encode()), Ok(refused));
        let rakp4 = Rakp4 {
            tag: 2,
            status: RakpStatus(0),
            console_session_id: Some(9),
            integrity_check: vec![6; 12],
        };
        assert_eq!(Rakp4::decode(&rakp4.encode()), Ok(rakp4));
        assert!(
            Rakp4::decode(&[2, 0, 0]).is_err(),
            "success needs the session ID"
        );
        assert_eq!(
            Rakp4::decode(&[2, 0x0F]).map(|r| r.console_session_id),
            Ok(None)
        );
        let long_name = Rakp1 {
            tag: 0,
            bmc_session_id: 1,
            console_random: [0; 16],
            role: 0x13,
            user_name: vec![b'x'; 17],
        };
        assert_eq!(long_name.encode(), Err(WireError::UserNameLength(17)));
    }
}
