//! IPMI commands as plain requests and validated responses, shared by the LAN session (power)
//! and the discovery agent's in-band BMC setup over `/dev/ipmi0`. Every NetFn, command,
//! parameter and bit has a name. Pure: no I/O.

use std::fmt;
use std::net::Ipv4Addr;

use super::wire::Privilege;

/// Network function codes (requests; the response NetFn is one more).
pub mod netfn {
    pub const CHASSIS: u8 = 0x00;
    pub const APP: u8 = 0x06;
    pub const TRANSPORT: u8 = 0x0C;
}

/// Command codes, by NetFn.
pub mod cmd {
    /// Chassis NetFn.
    pub const GET_CHASSIS_STATUS: u8 = 0x01;
    pub const CHASSIS_CONTROL: u8 = 0x02;
    pub const SET_SYSTEM_BOOT_OPTIONS: u8 = 0x08;
    pub const GET_SYSTEM_BOOT_OPTIONS: u8 = 0x09;
    /// App NetFn.
    pub const GET_DEVICE_ID: u8 = 0x01;
    pub const SET_SESSION_PRIVILEGE_LEVEL: u8 = 0x3B;
    pub const CLOSE_SESSION: u8 = 0x3C;
    pub const GET_CHANNEL_INFO: u8 = 0x42;
    pub const SET_USER_ACCESS: u8 = 0x43;
    pub const GET_USER_ACCESS: u8 = 0x44;
    pub const SET_USER_NAME: u8 = 0x45;
    pub const GET_USER_NAME: u8 = 0x46;
    pub const SET_USER_PASSWORD: u8 = 0x47;
    /// Transport NetFn.
    pub const GET_LAN_CONFIGURATION_PARAMETERS: u8 = 0x02;
}

/// One request: what a command sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
}

/// One response: completion code and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub completion_code: u8,
    pub data: Vec<u8>,
}

/// Completion codes (table 5-2); 0x80–0xBE are command-specific.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionCode(pub u8);

impl CompletionCode {
    pub const OK: u8 = 0x00;
    pub const NODE_BUSY: u8 = 0xC0;
    pub const INVALID_COMMAND: u8 = 0xC1;
    pub const INVALID_FOR_LUN: u8 = 0xC2;
    pub const TIMEOUT: u8 = 0xC3;
    pub const OUT_OF_SPACE: u8 = 0xC4;
    pub const RESERVATION_CANCELED: u8 = 0xC5;
    pub const REQUEST_TRUNCATED: u8 = 0xC6;
    pub const REQUEST_LENGTH_INVALID: u8 = 0xC7;
    pub const REQUEST_LENGTH_EXCEEDED: u8 = 0xC8;
    pub const PARAMETER_OUT_OF_RANGE: u8 = 0xC9;
    pub const CANNOT_RETURN_BYTES: u8 = 0xCA;
    pub const NOT_PRESENT: u8 = 0xCB;
    pub const INVALID_DATA_FIELD: u8 = 0xCC;
    pub const ILLEGAL_FOR_SENSOR: u8 = 0xCD;
    pub const CANNOT_RESPOND: u8 = 0xCE;
    pub const DUPLICATE_REQUEST: u8 = 0xCF;
    pub const SDR_UPDATE_MODE: u8 = 0xD0;
    pub const FIRMWARE_UPDATE_MODE: u8 = 0xD1;
    pub const INITIALIZING: u8 = 0xD2;
    pub const DESTINATION_UNAVAILABLE: u8 = 0xD3;
    pub const INSUFFICIENT_PRIVILEGE: u8 = 0xD4;
    pub const NOT_SUPPORTED_IN_STATE: u8 = 0xD5;
    pub const SUBFUNCTION_DISABLED: u8 = 0xD6;
    pub const UNSPECIFIED: u8 = 0xFF;

    pub fn describe(self) -> &'static str {
        match self.0 {
            Self::OK => "command completed normally",
            Self::NODE_BUSY => "node busy",
            Self::INVALID_COMMAND => "invalid command",
            Self::INVALID_FOR_LUN => "command invalid for given LUN",
            Self::TIMEOUT => "timeout while processing command",
            Self::OUT_OF_SPACE => "out of space",
            Self::RESERVATION_CANCELED => "reservation canceled or invalid",
            Self::REQUEST_TRUNCATED => "request data truncated",
            Self::REQUEST_LENGTH_INVALID => "request data length invalid",
            Self::REQUEST_LENGTH_EXCEEDED => "request data field length limit exceeded",
            Self::PARAMETER_OUT_OF_RANGE => "parameter out of range",
            Self::CANNOT_RETURN_BYTES => "cannot return number of requested data bytes",
            Self::NOT_PRESENT => "requested sensor, data, or record not present",
            Self::INVALID_DATA_FIELD => "invalid data field in request",
            Self::ILLEGAL_FOR_SENSOR => "command illegal for specified sensor or record type",
            Self::CANNOT_RESPOND => "command response could not be provided",
            Self::DUPLICATE_REQUEST => "cannot execute duplicated request",
            Self::SDR_UPDATE_MODE => "SDR repository in update mode",
            Self::FIRMWARE_UPDATE_MODE => "device in firmware update mode",
            Self::INITIALIZING => "BMC initialization in progress",
            Self::DESTINATION_UNAVAILABLE => "destination unavailable",
            Self::INSUFFICIENT_PRIVILEGE => "insufficient privilege level",
            Self::NOT_SUPPORTED_IN_STATE => "command not supported in present state",
            Self::SUBFUNCTION_DISABLED => {
                "parameter is illegal because the sub-function is disabled"
            }
            Self::UNSPECIFIED => "unspecified error",
            0x80..=0xBE => "command-specific error",
            _ => "unknown completion code",
        }
    }

    /// The BMC may answer differently in a moment (busy, initializing, timed out inside).
    pub fn is_transient(self) -> bool {
        matches!(
            self.0,
            Self::NODE_BUSY
                | Self::TIMEOUT
                | Self::OUT_OF_SPACE
                | Self::CANNOT_RESPOND
                | Self::SDR_UPDATE_MODE
                | Self::FIRMWARE_UPDATE_MODE
                | Self::INITIALIZING
                | Self::DESTINATION_UNAVAILABLE
                | Self::UNSPECIFIED
        )
    }
}

impl fmt::Display for CompletionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "completion code {:#04x} ({})", self.0, self.describe())
    }
}

/// A response that is not what the command promises.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{command}: the BMC answered with {code}")]
    Failed {
        command: &'static str,
        code: CompletionCode,
    },
    #[error("{command}: the answer has {got} data bytes, at least {need} expected")]
    Short {
        command: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{command}: {detail}")]
    Invalid {
        command: &'static str,
        detail: String,
    },
}

impl Response {
    /// The data of a successful response with at least `need` bytes.
    pub fn ok(&self, command: &'static str, need: usize) -> Result<&[u8], CommandError> {
        if self.completion_code != CompletionCode::OK {
            return Err(CommandError::Failed {
                command,
                code: CompletionCode(self.completion_code),
            });
        }
        if self.data.len() < need {
            return Err(CommandError::Short {
                command,
                need,
                got: self.data.len(),
            });
        }
        Ok(&self.data)
    }
}

// ---- Session (App NetFn) ----

/// Set Session Privilege Level (§22.18): raises the session from User to `privilege`.
pub fn set_session_privilege_level(privilege: Privilege) -> Request {
    Request {
        netfn: netfn::APP,
        cmd: cmd::SET_SESSION_PRIVILEGE_LEVEL,
        data: vec![privilege.code()],
    }
}

/// Close Session (§22.19) of the BMC-side session ID.
pub fn close_session(bmc_session_id: u32) -> Request {
    Request {
        netfn: netfn::APP,
        cmd: cmd::CLOSE_SESSION,
        data: bmc_session_id.to_le_bytes().to_vec(),
    }
}

// ---- Chassis ----

/// Get Chassis Status (§28.2).
pub fn get_chassis_status() -> Request {
    Request {
        netfn: netfn::CHASSIS,
        cmd: cmd::GET_CHASSIS_STATUS,
        data: Vec::new(),
    }
}

/// Byte 1 of the Get Chassis Status answer, bit 0: system power is on.
pub const CHASSIS_POWER_ON: u8 = 0x01;

/// Whether the chassis is powered on, from a Get Chassis Status answer.
pub fn parse_chassis_power(response: &Response) -> Result<bool, CommandError> {
    let data = response.ok("Get Chassis Status", 1)?;
    Ok(data[0] & CHASSIS_POWER_ON != 0)
}

/// Chassis Control (§28.3) actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChassisControl {
    PowerDown,
    PowerUp,
    PowerCycle,
    HardReset,
    /// "Initiate a soft-shutdown of OS via ACPI by emulating a fatal overtemperature".
    SoftShutdown,
}

impl ChassisControl {
    pub fn code(self) -> u8 {
        match self {
            ChassisControl::PowerDown => 0x00,
            ChassisControl::PowerUp => 0x01,
            ChassisControl::PowerCycle => 0x02,
            ChassisControl::HardReset => 0x03,
            ChassisControl::SoftShutdown => 0x05,
        }
    }

    /// Whether sending it twice does the same as sending it once: a cycle or reset repeated
    /// after a lost answer would cycle the machine twice.
    pub fn is_idempotent(self) -> bool {
        matches!(self, ChassisControl::PowerDown | ChassisControl::PowerUp)
    }
}

pub fn chassis_control(action: ChassisControl) -> Request {
    Request {
        netfn: netfn::CHASSIS,
        cmd: cmd::CHASSIS_CONTROL,
        data: vec![action.code()],
    }
}

/// System boot option parameters (table 28-14).
pub mod boot_param {
    /// Parameter 0: set in progress (volatile).
    pub const SET_IN_PROGRESS: u8 = 0;
    /// Parameter 4: boot info acknowledge.
    pub const BOOT_INFO_ACK: u8 = 4;
    /// Parameter 5: boot flags.
    pub const BOOT_FLAGS: u8 = 5;

    /// Parameter 0 values.
    pub const SET_COMPLETE: u8 = 0;
    pub const IN_PROGRESS: u8 = 1;
    pub const COMMIT_WRITE: u8 = 2;

    /// Parameter 4: the BIOS/POST acknowledge bit (write mask and data, as ipmitool clears it
    /// before setting a boot device, so the BIOS sees the new flags as unread).
    pub const ACK_BIOS_POST: u8 = 0x01;

    /// Parameter 5, byte 1: the flags are valid.
    pub const FLAGS_VALID: u8 = 0x80;
    /// Parameter 5, byte 1: persistent for all future boots (clear: next boot only).
    pub const FLAGS_PERSISTENT: u8 = 0x40;
    /// Parameter 5, byte 1: boot type EFI (clear: PC compatible legacy BIOS).
    pub const FLAGS_EFI: u8 = 0x20;
    /// Parameter 5, byte 2, bits 5:2 = 0001b: force PXE.
    pub const DEVICE_FORCE_PXE: u8 = 0x04;
}

/// Set System Boot Options (§28.12) for one parameter.
pub fn set_boot_option(parameter: u8, data: &[u8]) -> Request {
    let mut payload = vec![parameter & 0x7F];
    payload.extend_from_slice(data);
    Request {
        netfn: netfn::CHASSIS,
        cmd: cmd::SET_SYSTEM_BOOT_OPTIONS,
        data: payload,
    }
}

/// Boot flags (parameter 5) for a one-time PXE boot: valid, next boot only, force PXE, and
/// the EFI boot type in UEFI mode.
pub fn pxe_once_boot_flags(uefi: bool) -> [u8; 5] {
    let mut first = boot_param::FLAGS_VALID;
    if uefi {
        first |= boot_param::FLAGS_EFI;
    }
    [first, boot_param::DEVICE_FORCE_PXE, 0, 0, 0]
}

/// The requests of a one-time PXE boot, in ipmitool's order (`chassis bootdev pxe`): mark
/// set-in-progress, clear the BIOS boot-info acknowledgement, write the boot flags, commit,
/// mark set-complete. Which failures are fatal is [`PxeStep::required`].
pub fn pxe_once(uefi: bool) -> Vec<PxeStep> {
    use boot_param::*;
    vec![
        PxeStep::SetInProgress(set_boot_option(SET_IN_PROGRESS, &[IN_PROGRESS])),
        PxeStep::ClearAck(set_boot_option(
            BOOT_INFO_ACK,
            &[ACK_BIOS_POST, ACK_BIOS_POST],
        )),
        PxeStep::Flags(set_boot_option(BOOT_FLAGS, &pxe_once_boot_flags(uefi))),
        PxeStep::Commit(set_boot_option(SET_IN_PROGRESS, &[COMMIT_WRITE])),
        PxeStep::SetComplete(set_boot_option(SET_IN_PROGRESS, &[SET_COMPLETE])),
    ]
}

/// One request of [`pxe_once`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PxeStep {
    /// Optional: BMCs without the set-in-progress lock refuse it; like ipmitool, a refusal
    /// means the commit and set-complete steps are skipped.
    SetInProgress(Request),
    /// Optional: some BMCs do not keep boot-info acknowledgements (ipmitool gives up here; we
    /// go on, since the flags alone decide the next boot).
    ClearAck(Request),
    /// Required: the boot flags themselves.
    Flags(Request),
    /// Only after a successful set-in-progress; a refusal is harmless.
    Commit(Request),
    /// Only after a successful set-in-progress; a refusal is harmless.
    SetComplete(Request),
}

impl PxeStep {
    pub fn request(&self) -> &Request {
        match self {
            PxeStep::SetInProgress(r)
            | PxeStep::ClearAck(r)
            | PxeStep::Flags(r)
            | PxeStep::Commit(r)
            | PxeStep::SetComplete(r) => r,
        }
    }

    pub fn required(&self) -> bool {
        matches!(self, PxeStep::Flags(_))
    }

    /// Sent only when set-in-progress was accepted.
    pub fn needs_lock(&self) -> bool {
        matches!(self, PxeStep::Commit(_) | PxeStep::SetComplete(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            PxeStep::SetInProgress(_) => "Set System Boot Options (set in progress)",
            PxeStep::ClearAck(_) => "Set System Boot Options (boot info acknowledge)",
            PxeStep::Flags(_) => "Set System Boot Options (boot flags)",
            PxeStep::Commit(_) => "Set System Boot Options (commit write)",
            PxeStep::SetComplete(_) => "Set System Boot Options (set complete)",
        }
    }
}

// ---- In-band BMC setup (App and Transport NetFns) ----

/// Channel number meaning "the channel this request arrived on".
pub const THIS_CHANNEL: u8 = 0x0E;
/// Highest channel number for LAN and other media (0x0E and 0x0F are special).
pub const MAX_CHANNEL: u8 = 0x0B;
/// Channel medium type 802.3 LAN (table 6-3).
pub const MEDIUM_LAN_802_3: u8 = 0x04;
/// The well-known RMCP port, when the BMC does not say otherwise.
pub const RMCP_PORT: u16 = 623;

/// Get Channel Info (§22.24).
pub fn get_channel_info(channel: u8) -> Request {
    Request {
        netfn: netfn::APP,
        cmd: cmd::GET_CHANNEL_INFO,
        data: vec![channel & 0x0F],
    }
}

/// The channel's medium type, from a Get Channel Info answer.
pub fn parse_channel_medium(response: &Response) -> Result<u8, CommandError> {
    let data = response.ok("Get Channel Info", 2)?;
    Ok(data[1] & 0x7F)
}

/// LAN configuration parameters (table 23-4).
pub mod lan_param {
    pub const IP_ADDRESS: u8 = 3;
    /// Optional in IPMI 2.0 (from 1.5): the primary RMCP port, least significant byte first.
    pub const PRIMARY_RMCP_PORT: u8 = 8;
}

/// Get LAN Configuration Parameters (§23.2), set and block selector 0.
pub fn get_lan_parameter(channel: u8, parameter: u8) -> Request {
    Request {
        netfn: netfn::TRANSPORT,
        cmd: cmd::GET_LAN_CONFIGURATION_PARAMETERS,
        data: vec![channel & 0x0F, parameter, 0, 0],
    }
}

/// The IPv4 address from a LAN parameter 3 answer (revision byte, then four bytes).
pub fn parse_lan_ip_address(response: &Response) -> Result<Ipv4Addr, CommandError> {
    let data = response.ok("Get LAN Configuration Parameters (IP address)", 5)?;
    Ok(Ipv4Addr::new(data[1], data[2], data[3], data[4]))
}

/// The port from a LAN parameter 8 answer (revision byte, then the port LS byte first).
pub fn parse_lan_rmcp_port(response: &Response) -> Result<u16, CommandError> {
    let data = response.ok("Get LAN Configuration Parameters (RMCP port)", 3)?;
    Ok(u16::from_le_bytes([data[1], data[2]]))
}

/// Get User Access (§22.27) of `user_id` on `channel`; the answer also says how many user IDs
/// the BMC has.
pub fn get_user_access(channel: u8, user_id: u8) -> Request {
    Request {
        netfn: netfn::APP,
        cmd: cmd::GET_USER_ACCESS,
        data: vec![channel & 0x0F, user_id & 0x3F],
    }
}

/// The highest user ID, from a Get User Access answer (byte 1, bits 5:0).
pub fn parse_max_user_id(response: &Response) -> Result<u8, CommandError> {
    let data = response.ok("Get User Access", 4)?;
    Ok(data[0] & 0x3F)
}

/// Get User Name (§22.29).
pub fn get_user_name(user_id: u8) -> Request {
    Request {
        netfn: netfn::APP,
        cmd: cmd::GET_USER_NAME,
        data: vec![user_id & 0x3F],
    }
}

/// The user name from a Get User Name answer: 16 bytes, NUL padded.
pub fn parse_user_name(response: &Response) -> Result<Vec<u8>, CommandError> {
    let data = response.ok("Get User Name", 16)?;
    let name = &data[..16];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(name[..end].to_vec())
}

/// Set User Name (§22.28): the name NUL padded to 16 bytes.
pub fn set_user_name(user_id: u8, name: &[u8]) -> Request {
    let mut data = vec![user_id & 0x3F];
    let mut padded = [0u8; 16];
    let n = name.len().min(16);
    padded[..n].copy_from_slice(&name[..n]);
    data.extend_from_slice(&padded);
    Request {
        netfn: netfn::APP,
        cmd: cmd::SET_USER_NAME,
        data,
    }
}

/// Set User Password operations (§22.30, byte 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordOperation {
    DisableUser,
    EnableUser,
    SetPassword,
}

impl PasswordOperation {
    fn code(self) -> u8 {
        match self {
            PasswordOperation::DisableUser => 0x00,
            PasswordOperation::EnableUser => 0x01,
            PasswordOperation::SetPassword => 0x02,
        }
    }
}

/// Set User Password, byte 1 bit 7: the password field is 20 bytes (IPMI 2.0 form).
pub const PASSWORD_20_BYTES: u8 = 0x80;

/// Set User Password (§22.30) in the 20-byte form; the password is NUL padded (enable and
/// disable send no password).
pub fn set_user_password(user_id: u8, operation: PasswordOperation, password: &[u8]) -> Request {
    let mut data = vec![PASSWORD_20_BYTES | (user_id & 0x3F), operation.code()];
    if operation == PasswordOperation::SetPassword {
        let mut padded = [0u8; 20];
        let n = password.len().min(20);
        padded[..n].copy_from_slice(&password[..n]);
        data.extend_from_slice(&padded);
    }
    Request {
        netfn: netfn::APP,
        cmd: cmd::SET_USER_PASSWORD,
        data,
    }
}

/// Set User Access byte 1 bits (§22.26).
pub mod user_access {
    /// Apply the bits below (otherwise only the privilege limit changes).
    pub const CHANGE_BITS: u8 = 0x80;
    /// The user may authenticate on the link (for PPP and the like).
    pub const LINK_AUTH: u8 = 0x20;
    /// The user may use IPMI messaging: what a LAN session needs.
    pub const IPMI_MESSAGING: u8 = 0x10;
}

/// Set User Access (§22.26): IPMI messaging on, `privilege` as the user's limit on `channel`.
pub fn set_user_access(channel: u8, user_id: u8, privilege: Privilege) -> Request {
    Request {
        netfn: netfn::APP,
        cmd: cmd::SET_USER_ACCESS,
        data: vec![
            user_access::CHANGE_BITS | user_access::IPMI_MESSAGING | (channel & 0x0F),
            user_id & 0x3F,
            privilege.code(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pxe_once_boot_flags_as_ipmitool_sends_them() {
        // `ipmitool chassis bootdev pxe` writes 80 04 00 00 00, `options=efiboot` adds 0x20.
        assert_eq!(pxe_once_boot_flags(false), [0x80, 0x04, 0, 0, 0]);
        assert_eq!(pxe_once_boot_flags(true), [0xA0, 0x04, 0, 0, 0]);
        let steps = pxe_once(true);
        let bytes: Vec<Vec<u8>> = steps.iter().map(|s| s.request().data.clone()).collect();
        assert_eq!(
            bytes,
            [
                vec![0x00, 0x01],
                vec![0x04, 0x01, 0x01],
                vec![0x05, 0xA0, 0x04, 0, 0, 0],
                vec![0x00, 0x02],
                vec![0x00, 0x00],
            ]
        );
        assert!(
            steps
                .iter()
                .all(|s| s.request().netfn == netfn::CHASSIS && s.request().cmd == 0x08)
        );
        assert_eq!(
            steps.iter().filter(|s| s.required()).count(),
            1,
            "only the boot flags must be accepted"
        );
    }

    #[test]
    fn chassis_control_codes() {
        let codes: Vec<u8> = [
            ChassisControl::PowerDown,
            ChassisControl::PowerUp,
            ChassisControl::PowerCycle,
            ChassisControl::HardReset,
            ChassisControl::SoftShutdown,
        ]
        .iter()
        .map(|a| chassis_control(*a).data[0])
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 5]);
        assert!(!ChassisControl::PowerCycle.is_idempotent());
        assert!(ChassisControl::PowerUp.is_idempotent());
    }

    #[test]
    fn chassis_status_reads_bit_zero_of_the_first_byte() {
        let on = Response {
            completion_code: 0,
            data: vec![0x61, 0x10, 0x40, 0x00],
        };
        assert_eq!(parse_chassis_power(&on), Ok(true));
        let off = Response {
            completion_code: 0,
            data: vec![0x60, 0, 0],
        };
        assert_eq!(parse_chassis_power(&off), Ok(false));
        let refused = Response {
            completion_code: 0xD4,
            data: vec![],
        };
        assert_eq!(
            parse_chassis_power(&refused)
                .expect_err("refused")
                .to_string(),
            "Get Chassis Status: the BMC answered with completion code 0xd4 (insufficient privilege level)"
        );
        let empty = Response {
            completion_code: 0,
            data: vec![],
        };
        assert!(matches!(
            parse_chassis_power(&empty),
            Err(CommandError::Short { .. })
        ));
    }

    #[test]
    fn user_setup_requests_match_the_specification_layouts() {
        assert_eq!(set_user_name(3, b"siderite").data, {
            let mut d = vec![3];
            d.extend_from_slice(b"siderite\0\0\0\0\0\0\0\0");
            d
        });
        let password = set_user_password(3, PasswordOperation::SetPassword, b"0123456789abcdef");
        assert_eq!(
            password.data.len(),
            22,
            "user, operation, 20 password bytes"
        );
        assert_eq!(&password.data[..2], &[0x83, 0x02]);
        assert_eq!(&password.data[18..], &[0, 0, 0, 0]);
        assert_eq!(
            set_user_password(3, PasswordOperation::EnableUser, b"").data,
            [0x83, 0x01]
        );
        assert_eq!(
            set_user_access(1, 3, Privilege::Administrator).data,
            [0x91, 0x03, 0x04]
        );
        assert_eq!(get_lan_parameter(1, 3).data, [1, 3, 0, 0]);
        let ip = Response {
            completion_code: 0,
            data: vec![0x11, 10, 77, 0, 250],
        };
        assert_eq!(parse_lan_ip_address(&ip), Ok(Ipv4Addr::new(10, 77, 0, 250)));
        let port = Response {
            completion_code: 0,
            data: vec![0x11, 0x6f, 0x02],
        };
        assert_eq!(parse_lan_rmcp_port(&port), Ok(623));
        let name = Response {
            completion_code: 0,
            data: b"admin\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
        };
        assert_eq!(parse_user_name(&name), Ok(b"admin".to_vec()));
    }
}
