//! A sans-IO stand-in BMC for unit tests: answers RMCP+ session setup for one user and the
//! chassis, boot option and session commands, and records what it was asked. It shares the
//! wire and crypto modules with the client, so it proves only that both directions agree;
//! the golden vectors (recorded from ipmitool and ipmi_sim) and the lab tests prove that they
//! agree with the rest of the world.

use super::command::{self, CompletionCode, cmd, netfn};
use super::crypto::{self, CipherSuite, Exchange, Keys};
use super::wire::{
    self, Header, Negotiated, OpenSessionRequest, OpenSessionResponse, PayloadType, Privilege,
    Rakp1, Rakp2, Rakp3, Rakp4, RakpStatus, RequestMessage, ResponseMessage,
};

pub struct FakeBmc {
    user: Vec<u8>,
    key: [u8; crypto::KEY_LEN],
    /// Offer cipher suite 17 (ipmi_sim does not).
    pub suite17: bool,
    /// The user's privilege limit.
    pub max_privilege: u8,
    pub power_on: bool,
    /// Refuse the set-in-progress boot parameter, like ipmi_sim.
    pub no_set_in_progress: bool,
    /// Every IPMI request inside the session: NetFn, command, data.
    pub log: Vec<(u8, u8, Vec<u8>)>,
    pub privilege_requests: Vec<u8>,
    pub closed: bool,
    session: Option<FakeSession>,
    sequence: u32,
}

struct FakeSession {
    bmc_session_id: u32,
    console_session_id: u32,
    suite: CipherSuite,
    console_random: [u8; 16],
    role: u8,
    keys: Option<Keys>,
}

const BMC_RANDOM: [u8; 16] = [0x5A; 16];
const BMC_GUID: [u8; 16] = [0xA5; 16];

impl FakeBmc {
    pub fn new(user: &[u8], password: &[u8]) -> FakeBmc {
        FakeBmc {
            user: user.to_vec(),
            key: crypto::key20(password),
            suite17: true,
            max_privilege: Privilege::Administrator.code(),
            power_on: false,
            no_set_in_progress: false,
            log: Vec::new(),
            privilege_requests: Vec::new(),
            closed: false,
            session: None,
            sequence: 1,
        }
    }

    /// The datagrams the BMC sends in answer to one datagram (none when it stays silent).
    pub fn handle(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let auth_len = self
            .session
            .as_ref()
            .filter(|s| s.keys.is_some())
            .map_or(0, |s| s.suite.auth_code_len());
        let Ok(datagram) = wire::decode_datagram(bytes, auth_len) else {
            return Vec::new();
        };
        let answer = match datagram.header.payload_type {
            PayloadType::OpenSessionRequest => self.open(datagram.payload),
            PayloadType::Rakp1 => self.rakp1(datagram.payload),
            PayloadType::Rakp3 => self.rakp3(datagram.payload),
            PayloadType::Ipmi => self.message(&datagram),
            _ => None,
        };
        answer.into_iter().collect()
    }

    fn pre_session(payload_type: PayloadType, payload: &[u8]) -> Vec<u8> {
        wire::encode_datagram(&Header::pre_session(payload_type), payload, None)
    }

    fn open(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let request = OpenSessionRequest::decode(payload).ok()?;
        let suite = match (request.authentication, request.integrity) {
            (1, 1) => Some(CipherSuite::Suite3),
            (3, 4) if self.suite17 => Some(CipherSuite::Suite17),
            _ => None,
        };
        let Some(suite) = suite else {
            let refusal = OpenSessionResponse {
                tag: request.tag,
                status: RakpStatus(RakpStatus::INVALID_AUTHENTICATION_ALGORITHM),
                max_privilege: 0,
                console_session_id: None,
                negotiated: None,
            };
            return Some(Self::pre_session(
                PayloadType::OpenSessionResponse,
                &refusal.encode(),
            ));
        };
        self.session = Some(FakeSession {
            bmc_session_id: 0x0200_0001,
            console_session_id: request.console_session_id,
            suite,
            console_random: [0; 16],
            role: 0,
            keys: None,
        });
        let response = OpenSessionResponse {
            tag: request.tag,
            status: RakpStatus(0),
            max_privilege: self.max_privilege,
            console_session_id: Some(request.console_session_id),
            negotiated: Some(Negotiated {
                bmc_session_id: 0x0200_0001,
                authentication: request.authentication,
                integrity: request.integrity,
                confidentiality: request.confidentiality,
            }),
        };
        Some(Self::pre_session(
            PayloadType::OpenSessionResponse,
            &response.encode(),
        ))
    }

    fn exchange<'a>(&'a self, session: &FakeSession, name: &'a [u8]) -> Exchange<'a> {
        Exchange {
            suite: session.suite,
            user_key: self.key,
            console_session_id: session.console_session_id,
            bmc_session_id: session.bmc_session_id,
            console_random: session.console_random,
            bmc_random: BMC_RANDOM,
            bmc_guid: BMC_GUID,
            role: session.role,
            user_name: name,
        }
    }

    fn rakp1(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let rakp1 = Rakp1::decode(payload).ok()?;
        let session = self.session.as_mut()?;
        session.console_random = rakp1.console_random;
        session.role = rakp1.role;
        let session = self.session.as_ref()?;
        let mut rakp2 = Rakp2 {
            tag: rakp1.tag,
            status: RakpStatus(0),
            console_session_id: Some(session.console_session_id),
            bmc_random: BMC_RANDOM,
            bmc_guid: BMC_GUID,
            auth_code: Vec::new(),
        };
        if rakp1.user_name != self.user {
            rakp2.status = RakpStatus(RakpStatus::UNAUTHORIZED_NAME);
        } else {
            rakp2.auth_code = self.exchange(session, &self.user).rakp2_auth_code();
        }
        Some(Self::pre_session(PayloadType::Rakp2, &rakp2.encode()))
    }

    fn rakp3(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let rakp3 = Rakp3::decode(payload).ok()?;
        let session = self.session.as_ref()?;
        let exchange = self.exchange(session, &self.user);
        let mut rakp4 = Rakp4 {
            tag: rakp3.tag,
            status: RakpStatus(0),
            console_session_id: Some(session.console_session_id),
            integrity_check: Vec::new(),
        };
        let keys = exchange.keys();
        if crypto::same_mac(&exchange.rakp3_auth_code(), &rakp3.auth_code) {
            rakp4.integrity_check = exchange.rakp4_integrity_check(&keys);
        } else {
            rakp4.status = RakpStatus(RakpStatus::INVALID_INTEGRITY_CHECK_VALUE);
        }
        if let Some(session) = self.session.as_mut() {
            session.keys = Some(keys);
        }
        Some(Self::pre_session(PayloadType::Rakp4, &rakp4.encode()))
    }

    fn message(&mut self, datagram: &wire::Datagram<'_>) -> Option<Vec<u8>> {
        let session = self.session.as_ref()?;
        let keys = session.keys.as_ref()?;
        let integrity = datagram.integrity?;
        if !crypto::same_mac(
            &crypto::auth_code(session.suite, keys, integrity.covered),
            integrity.auth_code,
        ) {
            return None;
        }
        let plain = crypto::decrypt(keys, datagram.payload).ok()?;
        let request = RequestMessage::decode(&plain).ok()?;
        let (code, data) = self.execute(request.netfn, request.cmd, request.data);
        let session = self.session.as_ref()?;
        let keys = session.keys.as_ref()?;
        let response = ResponseMessage {
            netfn: request.netfn + 1,
            cmd: request.cmd,
            rq_seq: request.rq_seq,
            completion_code: code,
            data: &data,
        }
        .encode();
        let header = Header {
            payload_type: PayloadType::Ipmi,
            encrypted: true,
            authenticated: true,
            session_id: session.console_session_id,
            sequence: self.sequence,
        };
        self.sequence += 1;
        let payload = crypto::encrypt(keys, &[0x33; 16], &response);
        let suite = session.suite;
        let sign = |covered: &[u8]| crypto::auth_code(suite, keys, covered);
        Some(wire::encode_datagram(&header, &payload, Some(&sign)))
    }

    fn execute(&mut self, net: u8, command: u8, data: &[u8]) -> (u8, Vec<u8>) {
        self.log.push((net, command, data.to_vec()));
        match (net, command) {
            (netfn::APP, cmd::SET_SESSION_PRIVILEGE_LEVEL) => {
                let wanted = data.first().copied().unwrap_or(0);
                self.privilege_requests.push(wanted);
                if wanted > self.max_privilege {
                    (0x81, Vec::new())
                } else {
                    (0, vec![wanted])
                }
            }
            (netfn::APP, cmd::CLOSE_SESSION) => {
                self.closed = true;
                (0, Vec::new())
            }
            (netfn::CHASSIS, cmd::GET_CHASSIS_STATUS) => (0, vec![self.power_on as u8, 0, 0]),
            (netfn::CHASSIS, cmd::CHASSIS_CONTROL) => {
                match data.first().copied() {
                    Some(0x00) => self.power_on = false,
                    Some(0x01) => self.power_on = true,
                    Some(0x02 | 0x03 | 0x05) => {}
                    _ => return (CompletionCode::INVALID_DATA_FIELD, Vec::new()),
                }
                (0, Vec::new())
            }
            (netfn::CHASSIS, cmd::SET_SYSTEM_BOOT_OPTIONS) => {
                if data.first() == Some(&command::boot_param::SET_IN_PROGRESS)
                    && self.no_set_in_progress
                {
                    (CompletionCode::INVALID_DATA_FIELD, Vec::new())
                } else {
                    (0, Vec::new())
                }
            }
            _ => (CompletionCode::INVALID_COMMAND, Vec::new()),
        }
    }
}
