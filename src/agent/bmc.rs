//! Automatic BMC setup from inside the machine, over the in-band IPMI interface `/dev/ipmi0`
//! (ipmi_si drives the KCS/BT/SMIC hardware, ipmi_devintf gives the device): find the LAN
//! channel, read the BMC's IP address, create or reuse the user `siderite` with the password
//! the appliance chose and administrator privilege on that channel, and hand back what the
//! appliance needs to reach the BMC over the LAN. The commands are `power::ipmi::command`'s, the same
//! encoding the LAN client uses; only the transport differs.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::power::ipmi::command::{
    self, CommandError, CompletionCode, PasswordOperation, Request, Response,
};
use crate::power::ipmi::wire::Privilege;

/// The user the appliance logs in as.
pub const USER_NAME: &str = "siderite";
/// The in-band interface ipmi_devintf creates for the first BMC.
pub const DEVICE: &str = "/dev/ipmi0";
/// How long one in-band command may take (the BMC answers KCS requests in milliseconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for `/dev/ipmi0` once ipmi_si is loaded (it probes the interface first).
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// What the appliance needs to reach the BMC.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    pub address: Ipv4Addr,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub user_id: u8,
    pub channel: u8,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("user_id", &self.user_id)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{DEVICE}: {0}")]
    Device(#[from] io::Error),
    #[error("no answer from the BMC within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the BMC has no 802.3 LAN channel (Get Channel Info on channels 1-11)")]
    NoLanChannel,
    #[error(
        "the BMC has no IP address on LAN channel {0} (0.0.0.0); give it one (DHCP or static) in its setup"
    )]
    NoAddress(u8),
    #[error("all {0} BMC user IDs are taken and none is named {USER_NAME:?}; free one")]
    NoFreeUser(u8),
}

/// One request, one response, in-band.
pub trait Transport {
    fn call(&mut self, request: &Request) -> Result<Response, SetupError>;
}

/// Sets the `siderite` user up with `password`; see the module documentation.
pub fn set_up(bmc: &mut impl Transport, password: &str) -> Result<Access, SetupError> {
    let channel = lan_channel(bmc)?;
    let address = command::parse_lan_ip_address(&bmc.call(&command::get_lan_parameter(
        channel,
        command::lan_param::IP_ADDRESS,
    ))?)?;
    if address.is_unspecified() {
        return Err(SetupError::NoAddress(channel));
    }
    // The primary RMCP port is optional (from IPMI 1.5); most BMCs use 623 and say nothing.
    let port = bmc
        .call(&command::get_lan_parameter(
            channel,
            command::lan_param::PRIMARY_RMCP_PORT,
        ))
        .ok()
        .and_then(|r| command::parse_lan_rmcp_port(&r).ok())
        .filter(|p| *p != 0)
        .unwrap_or(command::RMCP_PORT);
    let user_id = user_slot(bmc, channel)?;
    let ok = |response: Response, what: &'static str| -> Result<(), SetupError> {
        response.ok(what, 0)?;
        Ok(())
    };
    ok(
        bmc.call(&command::set_user_name(user_id, USER_NAME.as_bytes()))?,
        "Set User Name",
    )?;
    ok(
        bmc.call(&command::set_user_password(
            user_id,
            PasswordOperation::SetPassword,
            password.as_bytes(),
        ))?,
        "Set User Password",
    )?;
    ok(
        bmc.call(&command::set_user_access(
            channel,
            user_id,
            Privilege::Administrator,
        ))?,
        "Set User Access",
    )?;
    ok(
        bmc.call(&command::set_user_password(
            user_id,
            PasswordOperation::EnableUser,
            b"",
        ))?,
        "Set User Password (enable user)",
    )?;
    Ok(Access {
        address,
        port,
        user: USER_NAME.to_owned(),
        password: password.to_owned(),
        user_id,
        channel,
    })
}

/// The first channel whose medium is 802.3 LAN.
fn lan_channel(bmc: &mut impl Transport) -> Result<u8, SetupError> {
    for channel in 1..=command::MAX_CHANNEL {
        let response = bmc.call(&command::get_channel_info(channel))?;
        // Absent channels answer "not present" or "invalid data field".
        if let Ok(medium) = command::parse_channel_medium(&response)
            && medium == command::MEDIUM_LAN_802_3
        {
            return Ok(channel);
        }
    }
    Err(SetupError::NoLanChannel)
}

/// The user ID named `siderite`, else the first unnamed one from 2 up (ID 1 is the anonymous
/// user, whose name cannot be set).
fn user_slot(bmc: &mut impl Transport, channel: u8) -> Result<u8, SetupError> {
    let max = command::parse_max_user_id(&bmc.call(&command::get_user_access(channel, 1))?)?;
    let mut free = None;
    for id in 2..=max {
        let response = bmc.call(&command::get_user_name(id))?;
        match command::parse_user_name(&response) {
            Ok(name) if name == USER_NAME.as_bytes() => return Ok(id),
            Ok(name) if name.iter().all(|b| *b == 0 || *b == b' ') => {
                free.get_or_insert(id);
            }
            Ok(_) => {}
            // Some BMCs answer an error for never-used slots: they are free too.
            Err(CommandError::Failed { code, .. })
                if code.0 != CompletionCode::INSUFFICIENT_PRIVILEGE =>
            {
                free.get_or_insert(id);
            }
            Err(error) => return Err(error.into()),
        }
    }
    free.ok_or(SetupError::NoFreeUser(max))
}

/// `<linux/ipmi.h>`: the in-band device's ioctls and structures (x86-64 and other LP64 ABIs).
mod ipmi_h {
    use std::mem::size_of;

    pub const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: libc::c_int = 0x0C;
    pub const IPMI_BMC_CHANNEL: libc::c_short = 0x0F;
    pub const IPMI_RESPONSE_RECV_TYPE: libc::c_int = 1;
    /// Size of `struct ipmi_addr`, the largest address a received message may carry.
    pub const IPMI_MAX_ADDR_SIZE: usize = 32;
    /// Largest IPMI message payload the kernel hands out.
    pub const IPMI_MAX_MSG_LENGTH: usize = 272;

    #[repr(C)]
    pub struct IpmiSystemInterfaceAddr {
        pub addr_type: libc::c_int,
        pub channel: libc::c_short,
        pub lun: libc::c_uchar,
    }

    #[repr(C)]
    pub struct IpmiMsg {
        pub netfn: libc::c_uchar,
        pub cmd: libc::c_uchar,
        pub data_len: libc::c_ushort,
        pub data: *mut libc::c_uchar,
    }

    #[repr(C)]
    pub struct IpmiReq {
        pub addr: *mut libc::c_uchar,
        pub addr_len: libc::c_uint,
        pub msgid: libc::c_long,
        pub msg: IpmiMsg,
    }

    #[repr(C)]
    pub struct IpmiRecv {
        pub recv_type: libc::c_int,
        pub addr: *mut libc::c_uchar,
        pub addr_len: libc::c_uint,
        pub msgid: libc::c_long,
        pub msg: IpmiMsg,
    }

    const IOC_MAGIC: u64 = b'i' as u64;
    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (IOC_MAGIC << 8) | nr
    }
    /// `_IOR('i', 13, struct ipmi_req)`.
    pub const IPMICTL_SEND_COMMAND: u64 = ioc(2, 13, size_of::<IpmiReq>());
    /// `_IOWR('i', 11, struct ipmi_recv)`.
    pub const IPMICTL_RECEIVE_MSG_TRUNC: u64 = ioc(3, 11, size_of::<IpmiRecv>());
}

/// `/dev/ipmi0`, talking to the BMC over the system interface.
pub struct Device {
    file: File,
    next_id: libc::c_long,
}

impl Device {
    /// Opens the in-band interface. `None` when the machine has none: no `/dev/ipmi0`, and
    /// ipmi_si not loaded (no device asked for it) or loaded without finding a BMC in
    /// [`DEVICE_WAIT`].
    pub fn open(sys: &Path, dev: &Path) -> Result<Option<Device>, SetupError> {
        let started = Instant::now();
        while !dev.exists() {
            if !sys.join("module/ipmi_si").exists() || started.elapsed() > DEVICE_WAIT {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)?;
        Ok(Some(Device { file, next_id: 1 }))
    }
}

impl Transport for Device {
    fn call(&mut self, request: &Request) -> Result<Response, SetupError> {
        use ipmi_h::*;
        let msgid = self.next_id;
        self.next_id += 1;
        let mut address = IpmiSystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        let mut data = request.data.clone();
        let mut send = IpmiReq {
            addr: (&raw mut address).cast(),
            addr_len: std::mem::size_of::<IpmiSystemInterfaceAddr>() as libc::c_uint,
            msgid,
            msg: IpmiMsg {
                netfn: request.netfn,
                cmd: request.cmd,
                data_len: data.len() as libc::c_ushort,
                data: data.as_mut_ptr(),
            },
        };
        let fd = self.file.as_raw_fd();
        // SAFETY: `send` and the address and data it points to live across the call; the
        // kernel copies them in.
        if unsafe { libc::ioctl(fd, IPMICTL_SEND_COMMAND as _, &raw mut send) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SetupError::Timeout(COMMAND_TIMEOUT));
            }
            let mut poll = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut poll, 1, left.as_millis() as libc::c_int) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error.into());
            }
            if ready == 0 {
                continue;
            }
            let mut from = [0u8; IPMI_MAX_ADDR_SIZE];
            let mut answer = [0u8; IPMI_MAX_MSG_LENGTH];
            let mut received = IpmiRecv {
                recv_type: 0,
                addr: from.as_mut_ptr(),
                addr_len: from.len() as libc::c_uint,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: answer.len() as libc::c_ushort,
                    data: answer.as_mut_ptr(),
                },
            };
            // SAFETY: the buffers `received` points to are as large as it says; the kernel
            // writes at most that much (and truncates longer messages).
            if unsafe { libc::ioctl(fd, IPMICTL_RECEIVE_MSG_TRUNC as _, &raw mut received) } < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(error.into());
            }
            // Late answers to earlier requests and events are skipped.
            if received.recv_type != IPMI_RESPONSE_RECV_TYPE || received.msgid != msgid {
                continue;
            }
            let len = (received.msg.data_len as usize).min(answer.len());
            debug!(
                netfn = request.netfn,
                cmd = request.cmd,
                completion_code = answer.first().copied(),
                "in-band IPMI answer"
            );
            let Some((&completion_code, data)) = answer[..len].split_first() else {
                return Err(CommandError::Short {
                    command: "in-band response",
                    need: 1,
                    got: 0,
                }
                .into());
            };
            return Ok(Response {
                completion_code,
                data: data.to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::ipmi::command::{cmd, netfn};

    /// A BMC with channels, a LAN address and user slots; records the requests.
    struct FakeBmc {
        lan_channel: u8,
        address: [u8; 4],
        port: Option<u16>,
        names: Vec<Vec<u8>>,
        requests: Vec<Request>,
    }

    impl FakeBmc {
        fn new(names: &[&str]) -> FakeBmc {
            FakeBmc {
                lan_channel: 1,
                address: [10, 77, 0, 250],
                port: None,
                names: names.iter().map(|n| n.as_bytes().to_vec()).collect(),
                requests: Vec::new(),
            }
        }
    }

    fn answer(code: u8, data: &[u8]) -> Result<Response, SetupError> {
        Ok(Response {
            completion_code: code,
            data: data.to_vec(),
        })
    }

    impl Transport for FakeBmc {
        fn call(&mut self, request: &Request) -> Result<Response, SetupError> {
            self.requests.push(request.clone());
            let d = &request.data;
            match (request.netfn, request.cmd) {
                (netfn::APP, cmd::GET_CHANNEL_INFO) if d[0] == self.lan_channel => {
                    answer(0, &[d[0], 0x04, 0x01, 0x81, 0xf2, 0x1b, 0, 0, 0])
                }
                (netfn::APP, cmd::GET_CHANNEL_INFO) => answer(0xCB, &[]),
                (netfn::TRANSPORT, cmd::GET_LAN_CONFIGURATION_PARAMETERS) => match d[1] {
                    3 => {
                        let mut data = vec![0x11];
                        data.extend_from_slice(&self.address);
                        answer(0, &data)
                    }
                    8 => match self.port {
                        Some(port) => {
                            let mut data = vec![0x11];
                            data.extend_from_slice(&port.to_le_bytes());
                            answer(0, &data)
                        }
                        None => answer(0x80, &[]),
                    },
                    _ => answer(0x80, &[]),
                },
                (netfn::APP, cmd::GET_USER_ACCESS) => {
                    answer(0, &[self.names.len() as u8 + 1, 1, 1, 0x14])
                }
                (netfn::APP, cmd::GET_USER_NAME) => {
                    let mut name = self.names[d[0] as usize - 2].clone();
                    name.resize(16, 0);
                    answer(0, &name)
                }
                (netfn::APP, cmd::SET_USER_NAME) => {
                    let end = d[1..].iter().position(|b| *b == 0).unwrap_or(16);
                    self.names[d[0] as usize - 2] = d[1..1 + end].to_vec();
                    answer(0, &[])
                }
                (netfn::APP, cmd::SET_USER_PASSWORD | cmd::SET_USER_ACCESS) => answer(0, &[]),
                _ => answer(0xC1, &[]),
            }
        }
    }

    fn sent(bmc: &FakeBmc, command: u8) -> Vec<Vec<u8>> {
        bmc.requests
            .iter()
            .filter(|r| r.cmd == command && r.netfn == netfn::APP)
            .map(|r| r.data.clone())
            .collect()
    }

    #[test]
    fn creates_the_user_in_the_first_free_slot_with_administrator_privilege() {
        let mut bmc = FakeBmc::new(&["admin", "", ""]);
        bmc.lan_channel = 2;
        let access = set_up(&mut bmc, "0123456789abcdef").expect("set up");
        assert_eq!(
            access,
            Access {
                address: Ipv4Addr::new(10, 77, 0, 250),
                port: 623,
                user: "siderite".into(),
                password: "0123456789abcdef".into(),
                user_id: 3,
                channel: 2,
            }
        );
        assert_eq!(bmc.names[1], b"siderite");
        let mut password = vec![0x83, 0x02];
        password.extend_from_slice(b"0123456789abcdef\0\0\0\0");
        assert_eq!(
            sent(&bmc, cmd::SET_USER_PASSWORD),
            [password, vec![0x83, 0x01]],
            "20-byte password, then enable"
        );
        // IPMI messaging on, administrator, on the LAN channel.
        assert_eq!(sent(&bmc, cmd::SET_USER_ACCESS), [vec![0x92, 0x03, 0x04]]);
    }

    #[test]
    fn reuses_an_existing_siderite_user_and_reads_a_non_standard_port() {
        let mut bmc = FakeBmc::new(&["admin", "", "siderite"]);
        bmc.port = Some(6230);
        let access = set_up(&mut bmc, "p").expect("set up");
        assert_eq!((access.user_id, access.port), (4, 6230));
        assert_eq!(bmc.names, [b"admin".to_vec(), vec![], b"siderite".to_vec()]);
    }

    #[test]
    fn explains_what_is_missing() {
        let mut full = FakeBmc::new(&["admin", "root"]);
        let error = set_up(&mut full, "p").expect_err("no slot");
        assert_eq!(
            error.to_string(),
            "all 3 BMC user IDs are taken and none is named \"siderite\"; free one"
        );
        let mut unconfigured = FakeBmc::new(&["admin", ""]);
        unconfigured.address = [0; 4];
        let error = set_up(&mut unconfigured, "p").expect_err("no address");
        assert!(
            error.to_string().contains("no IP address on LAN channel 1"),
            "{error}"
        );
        let mut no_lan = FakeBmc::new(&[""]);
        no_lan.lan_channel = 0x0F;
        assert!(matches!(
            set_up(&mut no_lan, "p"),
            Err(SetupError::NoLanChannel)
        ));
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // From <linux/ipmi.h> on x86-64: structures of 40 and 48 bytes.
        assert_eq!(ipmi_h::IPMICTL_SEND_COMMAND, 0x8028_690D);
        assert_eq!(ipmi_h::IPMICTL_RECEIVE_MSG_TRUNC, 0xC030_690B);
    }

    #[test]
    fn no_device_and_no_driver_means_no_bmc() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let found = Device::open(dir.path(), &dir.path().join("ipmi0")).expect("no error");
        assert!(found.is_none());
    }
}
