//! The RMCP+ session as a sans-IO state machine: it takes datagrams and returns datagrams
//! and events, and owns no socket, clock or random source (callers pass the console's random
//! numbers and each AES IV). One session: Open Session, RAKP 1–4, Set Session Privilege Level,
//! then one request at a time, then Close Session.
//!
//! ```text
//!  console                              BMC
//!  Open Session Request  ─────────────▶
//!                        ◀───────────── Open Session Response (BMC session ID, algorithms)
//!  RAKP 1 (Rm, user)     ─────────────▶
//!                        ◀───────────── RAKP 2 (Rc, GUID, HMAC_Kuid)   checked: password
//!  RAKP 3 (HMAC_Kuid)    ─────────────▶
//!                        ◀───────────── RAKP 4 (HMAC_SIK)              checked: session key
//!  Set Session Privilege ─────────────▶ (encrypted, authenticated from here on)
//!                        ◀───────────── completion code 00             → Ready
//! ```

use super::command::{self, CompletionCode, Request, Response};
use super::crypto::{self, AES_BLOCK, CipherSuite, Exchange, KEY_LEN, Keys};
use super::wire::{
    self, Datagram, Header, OpenSessionRequest, OpenSessionResponse, PayloadType, Privilege,
    ROLE_NAME_ONLY_LOOKUP, Rakp1, Rakp2, Rakp3, Rakp4, RakpStatus, RequestMessage, ResponseMessage,
    WireError,
};

/// Who logs in, how, and at which privilege.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// At most 16 bytes.
    pub user_name: Vec<u8>,
    /// The password as Kuid (at most 20 bytes, zero padded).
    pub user_key: [u8; KEY_LEN],
    pub suite: CipherSuite,
    pub privilege: Privilege,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("user_name", &String::from_utf8_lossy(&self.user_name))
            .field("suite", &self.suite)
            .field("privilege", &self.privilege)
            .finish_non_exhaustive()
    }
}

/// Message tags of the session setup messages; each answer echoes its request's tag.
const TAG_OPEN: u8 = 0x00;
const TAG_RAKP_1: u8 = 0x01;
const TAG_RAKP_3: u8 = 0x02;

/// Which message of the setup an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    OpenSession,
    Rakp2,
    Rakp4,
    SetPrivilege,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::OpenSession => "Open Session Response",
            Stage::Rakp2 => "RAKP message 2",
            Stage::Rakp4 => "RAKP message 4",
            Stage::SetPrivilege => "Set Session Privilege Level",
        })
    }
}

/// Why a session could not be set up or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The BMC refused a setup step with an RMCP+ status code.
    #[error("{stage}: the BMC refused with {status}")]
    Refused { stage: Stage, status: RakpStatus },
    /// RAKP 2's HMAC does not verify with our password: the password is wrong.
    #[error(
        "RAKP message 2 does not verify with the configured password: the password of user {user:?} is wrong (or the BMC requires a BMC key, Kg)"
    )]
    WrongPassword { user: String },
    /// RAKP 4's check value does not verify with the session key.
    #[error(
        "RAKP message 4 does not verify with the session key; the BMC may require a BMC key (Kg), which this client does not support"
    )]
    SessionKeyMismatch,
    /// The BMC accepted the session but chose other algorithms than the ones proposed.
    #[error(
        "the BMC answered the Open Session Request for {suite} with algorithms {authentication}/{integrity}/{confidentiality}"
    )]
    Negotiation {
        suite: CipherSuite,
        authentication: u8,
        integrity: u8,
        confidentiality: u8,
    },
    /// The session is up but the privilege could not be raised.
    #[error(
        "Set Session Privilege Level to {privilege:?} failed with {code}: give user {user:?} at least operator privilege on the BMC's LAN channel"
    )]
    Privilege {
        privilege: Privilege,
        code: CompletionCode,
        user: String,
    },
    #[error("the BMC sent an invalid datagram: {0}")]
    Malformed(#[from] WireError),
    #[error("a session payload does not decrypt: {0}")]
    Decrypt(#[from] crypto::CryptError),
    /// The caller asked for something the session cannot do in its state.
    #[error("{0}")]
    State(&'static str),
}

/// What a datagram from the BMC means for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send this datagram next (the following setup step).
    Send(Vec<u8>),
    /// The datagram changes nothing (a late or duplicate answer, or not for this session).
    Ignored(&'static str),
    /// The session is established at the configured privilege: send requests.
    Ready,
    /// The answer to the outstanding request.
    Response(Response),
}

struct Pending {
    request: Request,
    rq_seq: u8,
    /// Safe to send again when its answer is late.
    repeatable: bool,
}

struct Established {
    bmc_session_id: u32,
    keys: Keys,
}

enum State {
    Idle,
    OpenSent,
    Rakp1Sent {
        bmc_session_id: u32,
    },
    Rakp3Sent {
        bmc_session_id: u32,
        bmc_guid: [u8; 16],
        keys: Keys,
    },
    /// Set Session Privilege Level is outstanding.
    Elevating(Established),
    Active(Established),
}

/// One RMCP+ session.
pub struct Session {
    config: Config,
    console_session_id: u32,
    console_random: [u8; 16],
    state: State,
    /// The next outbound session sequence number (never 0 inside a session).
    sequence: u32,
    rq_seq: u8,
    /// The last setup datagram, for retransmission.
    last_setup: Vec<u8>,
    pending: Option<Pending>,
}

impl Session {
    /// A session that will identify itself with `console_session_id` (non-zero) and prove
    /// freshness with `console_random` (Rm); both must come from a good random source.
    pub fn new(config: Config, console_session_id: u32, console_random: [u8; 16]) -> Session {
        Session {
            config,
            console_session_id: console_session_id.max(1),
            console_random,
            state: State::Idle,
            sequence: 1,
            rq_seq: 0,
            last_setup: Vec::new(),
            pending: None,
        }
    }

    pub fn suite(&self) -> CipherSuite {
        self.config.suite
    }

    /// The Open Session Request that starts the session.
    pub fn start(&mut self) -> Vec<u8> {
        let request = OpenSessionRequest {
            tag: TAG_OPEN,
            privilege: self.config.privilege.code(),
            console_session_id: self.console_session_id,
            authentication: self.config.suite.authentication(),
            integrity: self.config.suite.integrity(),
            confidentiality: self.config.suite.confidentiality(),
        };
        let datagram = wire::encode_datagram(
            &Header::pre_session(PayloadType::OpenSessionRequest),
            &request.encode(),
            None,
        );
        self.state = State::OpenSent;
        self.last_setup = datagram.clone();
        datagram
    }

    /// Whether requests may be sent.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Active(_)) && self.pending.is_none()
    }

    /// Seals `request` for sending; its answer comes back as [`Event::Response`].
    /// `repeatable` says whether [`Session::retransmit`] may send it again.
    pub fn request(
        &mut self,
        request: &Request,
        repeatable: bool,
        iv: [u8; AES_BLOCK],
    ) -> Result<Vec<u8>, SessionError> {
        if !matches!(self.state, State::Active(_)) {
            return Err(SessionError::State("the session is not established"));
        }
        if self.pending.is_some() {
            return Err(SessionError::State("a request is still outstanding"));
        }
        self.send_request(request.clone(), repeatable, iv)
    }

    /// What to send when the answer is late: the last setup step again, or the outstanding
    /// request under a new sequence number when it is repeatable; `None` when nothing may be
    /// repeated (wait for the answer or give up).
    pub fn retransmit(&mut self, iv: [u8; AES_BLOCK]) -> Option<Vec<u8>> {
        match &self.state {
            State::OpenSent | State::Rakp1Sent { .. } | State::Rakp3Sent { .. } => {
                Some(self.last_setup.clone())
            }
            State::Elevating(_) | State::Active(_) => {
                let pending = self.pending.as_ref().filter(|p| p.repeatable)?;
                let (request, rq_seq) = (pending.request.clone(), pending.rq_seq);
                self.seal(&request, rq_seq, iv).ok()
            }
            State::Idle => None,
        }
    }

    /// Handles one datagram from the BMC. `iv` is used if the answer is a sealed request
    /// (the privilege request that follows RAKP 4).
    pub fn handle(&mut self, bytes: &[u8], iv: [u8; AES_BLOCK]) -> Result<Event, SessionError> {
        let auth_code_len = match self.state {
            State::Elevating(_) | State::Active(_) => self.config.suite.auth_code_len(),
            _ => 0,
        };
        let datagram = wire::decode_datagram(bytes, auth_code_len)?;
        match (&self.state, datagram.header.payload_type) {
            (State::OpenSent, PayloadType::OpenSessionResponse) => self.on_open(&datagram),
            (State::Rakp1Sent { .. }, PayloadType::Rakp2) => self.on_rakp2(&datagram),
            (State::Rakp3Sent { .. }, PayloadType::Rakp4) => self.on_rakp4(&datagram, iv),
            (State::Elevating(_) | State::Active(_), PayloadType::Ipmi) => {
                self.on_message(&datagram)
            }
            _ => Ok(Event::Ignored("not the answer this session waits for")),
        }
    }

    fn on_open(&mut self, datagram: &Datagram<'_>) -> Result<Event, SessionError> {
        let response = OpenSessionResponse::decode(datagram.payload)?;
        if let Some(ignored) = self.screen(
            Stage::OpenSession,
            (TAG_OPEN, response.tag),
            response.console_session_id,
            response.status,
        )? {
            return Ok(ignored);
        }
        let negotiated = response.negotiated.ok_or(SessionError::State(
            "an accepted Open Session Response without algorithms",
        ))?;
        let suite = self.config.suite;
        if (
            negotiated.authentication,
            negotiated.integrity,
            negotiated.confidentiality,
        ) != (
            suite.authentication(),
            suite.integrity(),
            suite.confidentiality(),
        ) {
            return Err(SessionError::Negotiation {
                suite,
                authentication: negotiated.authentication,
                integrity: negotiated.integrity,
                confidentiality: negotiated.confidentiality,
            });
        }
        if negotiated.bmc_session_id == 0 {
            return Err(WireError::Invalid {
                what: "Open Session Response",
                detail: "the BMC session ID is 0",
            }
            .into());
        }
        let rakp1 = Rakp1 {
            tag: TAG_RAKP_1,
            bmc_session_id: negotiated.bmc_session_id,
            console_random: self.console_random,
            role: self.role(),
            user_name: self.config.user_name.clone(),
        };
        let datagram = wire::encode_datagram(
            &Header::pre_session(PayloadType::Rakp1),
            &rakp1.encode()?,
            None,
        );
        self.state = State::Rakp1Sent {
            bmc_session_id: negotiated.bmc_session_id,
        };
        self.last_setup = datagram.clone();
        Ok(Event::Send(datagram))
    }

    /// Screens a setup answer: `Some(Ignored)` when it is for another session (its tag or
    /// console session ID differ; error answers may lack the ID, and then the tag and the step
    /// must do), the refusal when its status is not 0, `None` to go on.
    fn screen(
        &self,
        stage: Stage,
        (expected_tag, tag): (u8, u8),
        console_session_id: Option<u32>,
        status: RakpStatus,
    ) -> Result<Option<Event>, SessionError> {
        if tag != expected_tag || console_session_id.is_some_and(|id| id != self.console_session_id)
        {
            return Ok(Some(Event::Ignored(
                "a session setup answer for another session",
            )));
        }
        if !status.is_ok() {
            return Err(SessionError::Refused { stage, status });
        }
        Ok(None)
    }

    fn role(&self) -> u8 {
        self.config.privilege.code() | ROLE_NAME_ONLY_LOOKUP
    }

    fn exchange(
        &self,
        bmc_session_id: u32,
        bmc_random: [u8; 16],
        bmc_guid: [u8; 16],
    ) -> Exchange<'_> {
        Exchange {
            suite: self.config.suite,
            user_key: self.config.user_key,
            console_session_id: self.console_session_id,
            bmc_session_id,
            console_random: self.console_random,
            bmc_random,
            bmc_guid,
            role: self.role(),
            user_name: &self.config.user_name,
        }
    }

    fn on_rakp2(&mut self, datagram: &Datagram<'_>) -> Result<Event, SessionError> {
        let State::Rakp1Sent { bmc_session_id } = self.state else {
            return Ok(Event::Ignored("RAKP message 2 out of turn"));
        };
        let rakp2 = Rakp2::decode(datagram.payload)?;
        if let Some(ignored) = self.screen(
            Stage::Rakp2,
            (TAG_RAKP_1, rakp2.tag),
            rakp2.console_session_id,
            rakp2.status,
        )? {
            return Ok(ignored);
        }
        let exchange = self.exchange(bmc_session_id, rakp2.bmc_random, rakp2.bmc_guid);
        if !crypto::same_mac(&exchange.rakp2_auth_code(), &rakp2.auth_code) {
            return Err(SessionError::WrongPassword {
                user: String::from_utf8_lossy(&self.config.user_name).into_owned(),
            });
        }
        let keys = exchange.keys();
        let rakp3 = Rakp3 {
            tag: TAG_RAKP_3,
            status: RakpStatus(RakpStatus::OK),
            bmc_session_id,
            auth_code: exchange.rakp3_auth_code(),
        };
        let datagram = wire::encode_datagram(
            &Header::pre_session(PayloadType::Rakp3),
            &rakp3.encode(),
            None,
        );
        // Rc is only needed for RAKP 3, which is built; RAKP 4 needs the GUID.
        self.state = State::Rakp3Sent {
            bmc_session_id,
            bmc_guid: rakp2.bmc_guid,
            keys,
        };
        self.last_setup = datagram.clone();
        Ok(Event::Send(datagram))
    }

    fn on_rakp4(
        &mut self,
        datagram: &Datagram<'_>,
        iv: [u8; AES_BLOCK],
    ) -> Result<Event, SessionError> {
        let rakp4 = Rakp4::decode(datagram.payload)?;
        if let Some(ignored) = self.screen(
            Stage::Rakp4,
            (TAG_RAKP_3, rakp4.tag),
            rakp4.console_session_id,
            rakp4.status,
        )? {
            return Ok(ignored);
        }
        let State::Rakp3Sent {
            bmc_session_id,
            bmc_guid,
            keys,
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Ok(Event::Ignored("RAKP message 4 out of turn"));
        };
        // Rc does not enter the RAKP 4 check value.
        let expected = self
            .exchange(bmc_session_id, [0; 16], bmc_guid)
            .rakp4_integrity_check(&keys);
        if !crypto::same_mac(&expected, &rakp4.integrity_check) {
            return Err(SessionError::SessionKeyMismatch);
        }
        self.state = State::Elevating(Established {
            bmc_session_id,
            keys,
        });
        let elevate = command::set_session_privilege_level(self.config.privilege);
        Ok(Event::Send(self.send_request(elevate, true, iv)?))
    }

    fn on_message(&mut self, datagram: &Datagram<'_>) -> Result<Event, SessionError> {
        let (State::Elevating(established) | State::Active(established)) = &self.state else {
            return Ok(Event::Ignored("no session"));
        };
        if datagram.header.session_id != self.console_session_id {
            return Ok(Event::Ignored("a datagram for another session"));
        }
        let suite = self.config.suite;
        let Some(integrity) = datagram.integrity else {
            return Ok(Event::Ignored(
                "an unauthenticated datagram inside the session",
            ));
        };
        if !crypto::same_mac(
            &crypto::auth_code(suite, &established.keys, integrity.covered),
            integrity.auth_code,
        ) {
            return Ok(Event::Ignored("a datagram whose AuthCode does not verify"));
        }
        if !datagram.header.encrypted {
            return Ok(Event::Ignored("an unencrypted datagram inside the session"));
        }
        let plain = crypto::decrypt(&established.keys, datagram.payload)?;
        let message = ResponseMessage::decode(&plain)?;
        let Some(pending) = &self.pending else {
            return Ok(Event::Ignored("an answer nobody waits for"));
        };
        if message.rq_seq != pending.rq_seq
            || message.netfn != pending.request.netfn + 1
            || message.cmd != pending.request.cmd
        {
            return Ok(Event::Ignored("an answer to an earlier request"));
        }
        let response = Response {
            completion_code: message.completion_code,
            data: message.data.to_vec(),
        };
        self.pending = None;
        if let State::Elevating(_) = self.state {
            let State::Elevating(established) = std::mem::replace(&mut self.state, State::Idle)
            else {
                unreachable!("matched just above");
            };
            if response.completion_code != CompletionCode::OK {
                return Err(SessionError::Privilege {
                    privilege: self.config.privilege,
                    code: CompletionCode(response.completion_code),
                    user: String::from_utf8_lossy(&self.config.user_name).into_owned(),
                });
            }
            self.state = State::Active(established);
            return Ok(Event::Ready);
        }
        Ok(Event::Response(response))
    }

    fn send_request(
        &mut self,
        request: Request,
        repeatable: bool,
        iv: [u8; AES_BLOCK],
    ) -> Result<Vec<u8>, SessionError> {
        self.rq_seq = (self.rq_seq + 1) & wire::ipmb::RQ_SEQ_MASK;
        let rq_seq = self.rq_seq;
        let datagram = self.seal(&request, rq_seq, iv)?;
        self.pending = Some(Pending {
            request,
            rq_seq,
            repeatable,
        });
        Ok(datagram)
    }

    /// Encrypts and signs one request under the next session sequence number.
    fn seal(
        &mut self,
        request: &Request,
        rq_seq: u8,
        iv: [u8; AES_BLOCK],
    ) -> Result<Vec<u8>, SessionError> {
        let (State::Elevating(established) | State::Active(established)) = &self.state else {
            return Err(SessionError::State("the session is not established"));
        };
        let message = RequestMessage {
            netfn: request.netfn,
            cmd: request.cmd,
            rq_seq,
            data: &request.data,
        }
        .encode();
        let payload = crypto::encrypt(&established.keys, &iv, &message);
        let header = Header {
            payload_type: PayloadType::Ipmi,
            encrypted: true,
            authenticated: true,
            session_id: established.bmc_session_id,
            sequence: self.sequence,
        };
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let suite = self.config.suite;
        let keys = &established.keys;
        let sign = |covered: &[u8]| crypto::auth_code(suite, keys, covered);
        Ok(wire::encode_datagram(&header, &payload, Some(&sign)))
    }

    /// The Close Session request for this session, when it is established.
    pub fn close(&mut self, iv: [u8; AES_BLOCK]) -> Option<Vec<u8>> {
        let State::Active(established) = &self.state else {
            return None;
        };
        let close = command::close_session(established.bmc_session_id);
        self.pending = None;
        self.send_request(close, true, iv).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::ipmi::fake::FakeBmc;

    fn config(password: &[u8], suite: CipherSuite) -> Config {
        Config {
            user_name: b"admin".to_vec(),
            user_key: crypto::key20(password),
            suite,
            privilege: Privilege::Operator,
        }
    }

    /// Runs the setup against the fake BMC; returns the session once ready.
    fn establish(bmc: &mut FakeBmc, config: Config) -> Result<Session, SessionError> {
        let mut session = Session::new(config, 0x1234_5678, [9; 16]);
        let mut outbound = session.start();
        loop {
            let answers = bmc.handle(&outbound);
            let answer = answers
                .first()
                .expect("the fake BMC answers every setup step");
            match session.handle(answer, [1; 16])? {
                Event::Send(next) => outbound = next,
                Event::Ready => return Ok(session),
                other => panic!("unexpected event during setup: {other:?}"),
            }
        }
    }

    #[test]
    fn session_setup_and_a_request_on_both_suites() {
        for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
            let mut bmc = FakeBmc::new(b"admin", b"secret");
            bmc.power_on = true;
            let mut session = establish(&mut bmc, config(b"secret", suite)).expect("established");
            assert!(session.is_ready());
            assert_eq!(bmc.privilege_requests, [Privilege::Operator.code()]);
            let request = session
                .request(&command::get_chassis_status(), true, [2; 16])
                .expect("sealed");
            let answer = bmc.handle(&request).remove(0);
            let Event::Response(response) = session.handle(&answer, [3; 16]).expect("valid") else {
                panic!("expected a response");
            };
            assert_eq!(command::parse_chassis_power(&response), Ok(true), "{suite}");
            // A second copy of the same answer is a duplicate now.
            assert!(matches!(
                session.handle(&answer, [3; 16]),
                Ok(Event::Ignored(_))
            ));
            let close = session.close([4; 16]).expect("active session closes");
            let answer = bmc.handle(&close).remove(0);
            assert!(matches!(
                session.handle(&answer, [5; 16]),
                Ok(Event::Response(Response {
                    completion_code: 0,
                    ..
                }))
            ));
            assert!(bmc.closed);
        }
    }

    #[test]
    fn a_wrong_password_is_detected_at_rakp2() {
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        let error = establish(&mut bmc, config(b"wrong", CipherSuite::Suite3))
            .err()
            .expect("wrong password");
        assert_eq!(
            error,
            SessionError::WrongPassword {
                user: "admin".into()
            }
        );
        assert!(
            error
                .to_string()
                .contains("password of user \"admin\" is wrong")
        );
    }

    #[test]
    fn an_unknown_user_is_refused_with_the_rakp_status() {
        let mut bmc = FakeBmc::new(b"root", b"secret");
        let error = establish(&mut bmc, config(b"secret", CipherSuite::Suite3))
            .err()
            .expect("unknown user");
        assert_eq!(
            error,
            SessionError::Refused {
                stage: Stage::Rakp2,
                status: RakpStatus(RakpStatus::UNAUTHORIZED_NAME)
            }
        );
        assert_eq!(
            error.to_string(),
            "RAKP message 2: the BMC refused with status 0x0d, unauthorized name"
        );
    }

    #[test]
    fn a_bmc_without_suite_17_refuses_the_open_session() {
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        bmc.suite17 = false;
        let error = establish(&mut bmc, config(b"secret", CipherSuite::Suite17))
            .err()
            .expect("no suite 17");
        assert!(matches!(
            error,
            SessionError::Refused {
                stage: Stage::OpenSession,
                status: RakpStatus(RakpStatus::INVALID_AUTHENTICATION_ALGORITHM)
            }
        ));
    }

    #[test]
    fn insufficient_privilege_fails_when_elevating() {
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        bmc.max_privilege = Privilege::User.code();
        let error = establish(&mut bmc, config(b"secret", CipherSuite::Suite3))
            .err()
            .expect("user-level account");
        assert!(matches!(error, SessionError::Privilege { .. }), "{error}");
        assert!(error.to_string().contains("at least operator"), "{error}");
    }

    #[test]
    fn forged_or_foreign_datagrams_are_ignored() {
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        let mut session = establish(&mut bmc, config(b"secret", CipherSuite::Suite3)).expect("up");
        let request = session
            .request(&command::get_chassis_status(), true, [2; 16])
            .expect("sealed");
        let answer = bmc.handle(&request).remove(0);
        // A flipped payload bit breaks the AuthCode.
        let mut forged = answer.clone();
        forged[20] ^= 0x01;
        assert_eq!(
            session.handle(&forged, [0; 16]),
            Ok(Event::Ignored("a datagram whose AuthCode does not verify"))
        );
        // Another session's datagram.
        let mut foreign = answer.clone();
        foreign[wire::offset::SESSION_ID] ^= 0xFF;
        assert!(matches!(
            session.handle(&foreign, [0; 16]),
            Ok(Event::Ignored(_))
        ));
        // The real answer still counts.
        assert!(matches!(
            session.handle(&answer, [0; 16]),
            Ok(Event::Response(_))
        ));
    }

    #[test]
    fn only_repeatable_requests_are_retransmitted_with_a_new_sequence_number() {
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        let mut session = establish(&mut bmc, config(b"secret", CipherSuite::Suite3)).expect("up");
        let first = session
            .request(&command::get_chassis_status(), true, [2; 16])
            .expect("sealed");
        let again = session.retransmit([3; 16]).expect("repeatable");
        let seq = |d: &[u8]| wire::decode_datagram(d, 12).expect("valid").header.sequence;
        assert_eq!(seq(&again), seq(&first) + 1);
        // The BMC answers both; the first answer settles the request, the second is stale.
        let answers: Vec<Vec<u8>> = [first, again]
            .iter()
            .map(|d| bmc.handle(d).remove(0))
            .collect();
        assert!(matches!(
            session.handle(&answers[0], [0; 16]),
            Ok(Event::Response(_))
        ));
        assert!(matches!(
            session.handle(&answers[1], [0; 16]),
            Ok(Event::Ignored(_))
        ));
        let cycle = command::chassis_control(command::ChassisControl::PowerCycle);
        session.request(&cycle, false, [4; 16]).expect("sealed");
        assert_eq!(
            session.retransmit([5; 16]),
            None,
            "a cycle is never repeated"
        );
    }

    #[test]
    fn setup_steps_are_retransmitted_unchanged() {
        let mut session = Session::new(config(b"secret", CipherSuite::Suite17), 7, [9; 16]);
        let open = session.start();
        assert_eq!(session.retransmit([0; 16]), Some(open));
        assert!(
            session
                .request(&command::get_chassis_status(), true, [0; 16])
                .is_err(),
            "no requests before the session exists"
        );
    }
}
