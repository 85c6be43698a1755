//! [`IpmiLan`]: power control over IPMI v2.0 LAN (RMCP+, ipmitool's `lanplus`). The only code
//! in `power::ipmi` that owns a socket: it resolves the BMC, sends what the sans-IO
//! [`Session`] produces, feeds it what comes back, and retransmits on silence. Each call opens
//! a session, does its work and closes the session; every call runs under the manager's
//! [`CallPolicy`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::command::{self, ChassisControl, CompletionCode, PxeStep, Request, Response};
use super::crypto::{self, CipherSuite, KEY_LEN};
use super::session::{self, Event, Session, SessionError, Stage};
use super::wire::{MAX_USER_NAME, Privilege, RakpStatus};
use crate::power::{
    BootMode, CallPolicy, Cause, Operation, PowerAction, PowerError, PowerManager, PowerState,
};

/// Which cipher suites to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CipherSuites {
    /// Suite 17 first, suite 3 when the BMC refuses 17 (remembered for later calls).
    #[default]
    Auto,
    Only(CipherSuite),
}

/// How to reach one BMC.
#[derive(Clone)]
pub struct IpmiConfig {
    /// IP address or host name.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub cipher_suites: CipherSuites,
    pub policy: CallPolicy,
}

impl std::fmt::Debug for IpmiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("cipher_suites", &self.cipher_suites)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The privilege sessions ask for: operator is the least that may control the chassis and
/// set boot options (IPMI v2.0 table G-1), so an operator account is enough.
const PRIVILEGE: Privilege = Privilege::Operator;

/// Longest wait for the answer to Close Session; the work is done by then, so a lost answer
/// costs only this.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// The longest silence before a setup step or a repeatable request is sent again.
const MAX_RETRANSMIT: Duration = Duration::from_secs(1);

/// Power control of one machine through its BMC's IPMI LAN interface.
pub struct IpmiLan {
    host: String,
    port: u16,
    user_name: Vec<u8>,
    user_key: [u8; KEY_LEN],
    cipher_suites: CipherSuites,
    policy: CallPolicy,
    /// The BMC refused suite 17 once: `Auto` goes straight to suite 3.
    no_suite17: AtomicBool,
}

impl IpmiLan {
    /// Checks the configuration; fails with [`Cause::Config`] when it cannot work.
    pub fn new(config: IpmiConfig) -> Result<IpmiLan, PowerError> {
        let bmc = describe(&config.host, config.port);
        let invalid = |why: String| PowerError {
            bmc: bmc.clone(),
            operation: Operation::Session,
            cause: Cause::Config(why),
        };
        if config.host.trim().is_empty() {
            return Err(invalid(
                "the BMC endpoint is empty; set spec.bmc.endpoint".into(),
            ));
        }
        if config.user.len() > MAX_USER_NAME {
            return Err(invalid(format!(
                "IPMI user names have at most {MAX_USER_NAME} bytes, {:?} has {}",
                config.user,
                config.user.len()
            )));
        }
        if config.password.len() > KEY_LEN {
            return Err(invalid(format!(
                "IPMI passwords have at most {KEY_LEN} bytes, the configured one has {}",
                config.password.len()
            )));
        }
        Ok(IpmiLan {
            host: config.host.trim().to_owned(),
            port: config.port,
            user_name: config.user.into_bytes(),
            user_key: crypto::key20(config.password.as_bytes()),
            cipher_suites: config.cipher_suites,
            policy: config.policy,
            no_suite17: AtomicBool::new(false),
        })
    }

    fn suites(&self) -> Vec<CipherSuite> {
        match self.cipher_suites {
            CipherSuites::Only(suite) => vec![suite],
            CipherSuites::Auto if self.no_suite17.load(Ordering::Relaxed) => {
                vec![CipherSuite::Suite3]
            }
            CipherSuites::Auto => vec![CipherSuite::Suite17, CipherSuite::Suite3],
        }
    }

    /// Opens a session: resolves the BMC, binds a socket, runs the RAKP exchange with the
    /// first cipher suite the BMC accepts.
    async fn connect(&self) -> Result<Connection, Cause> {
        let address = resolve(&self.host, self.port).await?;
        let local: SocketAddr = if address.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut socket = UdpSocket::bind(local)
            .await
            .map_err(|e| Cause::Unreachable(format!("cannot open a UDP socket: {e}")))?;
        // Connected: the kernel drops datagrams from anyone but the BMC, and reports ICMP
        // port-unreachable as ECONNREFUSED.
        socket
            .connect(address)
            .await
            .map_err(|e| Cause::Unreachable(format!("{address}: {e}")))?;
        let suites = self.suites();
        for (i, suite) in suites.iter().enumerate() {
            let config = session::Config {
                user_name: self.user_name.clone(),
                user_key: self.user_key,
                suite: *suite,
                privilege: PRIVILEGE,
            };
            // ThreadRng must not live across an await: the future is sent between threads.
            let session = {
                let mut rng = rand::rng();
                Session::new(config, rng.random(), rng.random())
            };
            let mut connection = Connection {
                socket,
                session,
                retransmit: (self.policy.timeout / 3).min(MAX_RETRANSMIT),
            };
            let first = connection.session.start();
            match connection.exchange(first).await {
                Ok(Event::Ready) => return Ok(connection),
                Ok(other) => {
                    return Err(Cause::Protocol(format!(
                        "session setup ended with {other:?}"
                    )));
                }
                Err(Failure::Session(error)) if refuses_suite(&error) && i + 1 < suites.len() => {
                    debug!(bmc = %describe(&self.host, self.port), %suite, %error, "cipher suite refused; trying the next");
                    self.no_suite17.store(true, Ordering::Relaxed);
                    socket = connection.socket;
                }
                Err(failure) => return Err(failure.cause(*suite)),
            }
        }
        // Unreachable: the last suite's refusal returns above.
        Err(Cause::Config("no cipher suite to try".into()))
    }

    /// One attempt: a session, the work, and the session handed back for closing (closing is
    /// outside the attempt's deadline, so a lost Close Session answer cannot turn finished
    /// work into a timeout and a retry).
    async fn attempt(
        &self,
        work: Work,
        unanswered: &AtomicBool,
    ) -> Result<(Option<PowerState>, Connection), Cause> {
        let mut connection = self.connect().await?;
        let done = match work {
            Work::PowerState => connection.chassis_power().await.map(Some),
            Work::Control(action) => connection
                .chassis_control(action, unanswered, self.policy.timeout)
                .await
                .map(|()| None),
            Work::PxeOnce { uefi } => connection.pxe_once(uefi).await.map(|()| None),
        };
        match done {
            Ok(value) => Ok((value, connection)),
            Err(cause) => {
                connection.close().await;
                Err(cause)
            }
        }
    }

    /// One call: attempts under the policy, then Close Session.
    async fn run(
        &self,
        operation: Operation,
        work: Work,
    ) -> Result<Option<PowerState>, PowerError> {
        let bmc = self.describe();
        let unanswered = AtomicBool::new(false);
        let result = self
            .policy
            .run(&bmc, operation, || self.attempt(work, &unanswered))
            .await;
        if result.is_err() && unanswered.load(Ordering::SeqCst) {
            warn!(%bmc, %operation, "the BMC never answered the power request; it was not repeated and may or may not have happened");
        }
        let (value, connection) = result?;
        connection.close().await;
        Ok(value)
    }
}

/// What one call does inside its session.
#[derive(Clone, Copy, Debug)]
enum Work {
    PowerState,
    Control(ChassisControl),
    PxeOnce { uefi: bool },
}

/// `ipmi host:port`, with IPv6 addresses in brackets.
fn describe(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("ipmi [{host}]:{port}")
    } else {
        format!("ipmi {host}:{port}")
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Cause> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut found = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Cause::Unreachable(format!("cannot resolve {bare}: {e}")))?;
    found
        .next()
        .ok_or_else(|| Cause::Unreachable(format!("{bare} resolves to no address")))
}

/// Whether the BMC refused the cipher suite itself (so another one may work).
fn refuses_suite(error: &SessionError) -> bool {
    match error {
        SessionError::Refused {
            stage: Stage::OpenSession,
            status,
        } => matches!(
            status.0,
            RakpStatus::INVALID_AUTHENTICATION_ALGORITHM
                | RakpStatus::INVALID_INTEGRITY_ALGORITHM
                | RakpStatus::NO_MATCHING_AUTHENTICATION_PAYLOAD
                | RakpStatus::NO_MATCHING_INTEGRITY_PAYLOAD
                | RakpStatus::INVALID_CONFIDENTIALITY_ALGORITHM
                | RakpStatus::NO_CIPHER_SUITE_MATCH
        ),
        SessionError::Negotiation { .. } => true,
        _ => false,
    }
}

/// What ended an exchange.
enum Failure {
    Session(SessionError),
    Io(std::io::Error),
}

impl Failure {
    /// The cause an operator reads, with what to do about it.
    fn cause(self, suite: CipherSuite) -> Cause {
        match self {
            Failure::Io(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                Cause::Unreachable(
                    "the BMC's host answered ICMP port unreachable: is IPMI over LAN enabled, and is the port right?".into(),
                )
            }
            Failure::Io(error) => Cause::Unreachable(error.to_string()),
            Failure::Session(error) => session_cause(error, suite),
        }
    }
}

fn session_cause(error: SessionError, suite: CipherSuite) -> Cause {
    match &error {
        SessionError::WrongPassword { .. }
        | SessionError::SessionKeyMismatch
        | SessionError::Privilege { .. } => Cause::Authentication(error.to_string()),
        SessionError::Refused { status, .. } => match status.0 {
            RakpStatus::UNAUTHORIZED_NAME | RakpStatus::INVALID_NAME_LENGTH => {
                Cause::Authentication(format!(
                    "{error}: the BMC has no such user; check the user name in spec.bmc"
                ))
            }
            RakpStatus::INVALID_ROLE | RakpStatus::UNAUTHORIZED_ROLE => {
                Cause::Authentication(format!(
                    "{error}: the user may not log in at operator privilege; raise its privilege limit on the BMC"
                ))
            }
            RakpStatus::UNAUTHORIZED_GUID | RakpStatus::INVALID_INTEGRITY_CHECK_VALUE => {
                Cause::Authentication(format!(
                    "{error}: the BMC did not accept the key exchange; check the password"
                ))
            }
            RakpStatus::INSUFFICIENT_RESOURCES
            | RakpStatus::INSUFFICIENT_RESOURCES_AT_ROLE
            | RakpStatus::INVALID_SESSION_ID
            | RakpStatus::INACTIVE_SESSION_ID => Cause::Refused(format!(
                "{error}: the BMC has no free session; it frees idle sessions after a while"
            )),
            _ if refuses_suite(&error) => Cause::Unsupported(format!(
                "the BMC does not offer {suite} ({error}); choose a cipher suite it offers"
            )),
            _ => Cause::Protocol(error.to_string()),
        },
        SessionError::Negotiation { .. } => Cause::Unsupported(error.to_string()),
        SessionError::Malformed(_) | SessionError::Decrypt(_) | SessionError::State(_) => {
            Cause::Protocol(error.to_string())
        }
    }
}

/// The cause for a command's completion code.
fn command_cause(command: &str, code: CompletionCode) -> Cause {
    let what = format!("{command}: {code}");
    match code.0 {
        _ if code.is_transient() => Cause::Refused(what),
        CompletionCode::INSUFFICIENT_PRIVILEGE => Cause::Authentication(format!(
            "{what}: the user needs operator privilege or higher"
        )),
        CompletionCode::INVALID_COMMAND
        | CompletionCode::INVALID_DATA_FIELD
        | CompletionCode::PARAMETER_OUT_OF_RANGE
        | CompletionCode::NOT_SUPPORTED_IN_STATE
        | CompletionCode::SUBFUNCTION_DISABLED
        | 0x80..=0xBE => Cause::Unsupported(what),
        _ => Cause::Refused(what),
    }
}

fn random_iv() -> [u8; crypto::AES_BLOCK] {
    rand::rng().random()
}

/// One open session on one connected socket.
struct Connection {
    socket: UdpSocket,
    session: Session,
    retransmit: Duration,
}

impl Connection {
    /// Sends `first`, then feeds answers to the session until it is ready or answers the
    /// outstanding request. Silence is met with retransmissions where the session allows
    /// them; the attempt's deadline (the [`CallPolicy`]) ends the wait otherwise.
    async fn exchange(&mut self, first: Vec<u8>) -> Result<Event, Failure> {
        self.socket.send(&first).await.map_err(Failure::Io)?;
        let mut buffer = [0u8; 1024];
        loop {
            let received =
                tokio::time::timeout(self.retransmit, self.socket.recv(&mut buffer)).await;
            let len = match received {
                Err(_silence) => {
                    if let Some(again) = self.session.retransmit(random_iv()) {
                        debug!("no answer yet; sending again");
                        self.socket.send(&again).await.map_err(Failure::Io)?;
                    }
                    continue;
                }
                Ok(result) => result.map_err(Failure::Io)?,
            };
            match self
                .session
                .handle(&buffer[..len], random_iv())
                .map_err(Failure::Session)?
            {
                Event::Send(next) => {
                    self.socket.send(&next).await.map_err(Failure::Io)?;
                }
                Event::Ignored(why) => debug!(why, "datagram ignored"),
                event @ (Event::Ready | Event::Response(_)) => return Ok(event),
            };
        }
    }

    /// Sends one request and waits for its answer.
    async fn call(&mut self, request: &Request, repeatable: bool) -> Result<Response, Cause> {
        let suite = self.session.suite();
        let datagram = self
            .session
            .request(request, repeatable, random_iv())
            .map_err(|e| session_cause(e, suite))?;
        match self.exchange(datagram).await {
            Ok(Event::Response(response)) => Ok(response),
            Ok(other) => Err(Cause::Protocol(format!(
                "expected an answer, got {other:?}"
            ))),
            Err(failure) => Err(failure.cause(suite)),
        }
    }

    /// Closes the session, waiting briefly for the BMC's answer; failures only cost the BMC
    /// a session slot until its idle timeout, so they are logged, not returned.
    async fn close(mut self) {
        let Some(datagram) = self.session.close(random_iv()) else {
            return;
        };
        match tokio::time::timeout(CLOSE_WAIT, self.exchange(datagram)).await {
            Ok(Ok(_)) => {}
            Ok(Err(Failure::Io(error))) => debug!(%error, "Close Session failed"),
            Ok(Err(Failure::Session(error))) => debug!(%error, "Close Session failed"),
            Err(_) => debug!("no answer to Close Session"),
        }
    }

    async fn chassis_power(&mut self) -> Result<PowerState, Cause> {
        let response = self.call(&command::get_chassis_status(), true).await?;
        match command::parse_chassis_power(&response) {
            Ok(true) => Ok(PowerState::On),
            Ok(false) => Ok(PowerState::Off),
            Err(command::CommandError::Failed { command, code }) => {
                Err(command_cause(command, code))
            }
            Err(error) => Err(Cause::Protocol(error.to_string())),
        }
    }

    /// Chassis Control. `unanswered` is shared by the attempts of one call: set while a
    /// request that must not be repeated is out without an answer. A later attempt then does
    /// not send it again (the first may have been carried out), and fails as a timeout.
    async fn chassis_control(
        &mut self,
        action: ChassisControl,
        unanswered: &AtomicBool,
        timeout: Duration,
    ) -> Result<(), Cause> {
        let repeatable = action.is_idempotent();
        if !repeatable && unanswered.load(Ordering::SeqCst) {
            return Err(Cause::Timeout(timeout));
        }
        unanswered.store(!repeatable, Ordering::SeqCst);
        let response = self
            .call(&command::chassis_control(action), repeatable)
            .await?;
        unanswered.store(false, Ordering::SeqCst);
        if response.completion_code != CompletionCode::OK {
            return Err(command_cause(
                "Chassis Control",
                CompletionCode(response.completion_code),
            ));
        }
        Ok(())
    }

    /// A one-time PXE boot, with set-in-progress handled as ipmitool does (see
    /// [`command::pxe_once`]).
    async fn pxe_once(&mut self, uefi: bool) -> Result<(), Cause> {
        let mut locked = false;
        let mut failure = None;
        for step in command::pxe_once(uefi) {
            if step.needs_lock() && !locked {
                continue;
            }
            if failure.is_some() && !matches!(step, PxeStep::SetComplete(_)) {
                continue;
            }
            let response = self.call(step.request(), true).await?;
            let ok = response.completion_code == CompletionCode::OK;
            match &step {
                PxeStep::SetInProgress(_) => locked = ok,
                _ if step.required() && !ok => {
                    failure = Some(command_cause(
                        step.name(),
                        CompletionCode(response.completion_code),
                    ));
                }
                _ if !ok => debug!(
                    step = step.name(),
                    code = response.completion_code,
                    "optional boot option step refused"
                ),
                _ => {}
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

fn control_for(action: PowerAction) -> ChassisControl {
    match action {
        PowerAction::On => ChassisControl::PowerUp,
        PowerAction::Off => ChassisControl::PowerDown,
        PowerAction::Cycle => ChassisControl::PowerCycle,
        PowerAction::Reset => ChassisControl::HardReset,
        PowerAction::Soft => ChassisControl::SoftShutdown,
    }
}

impl PowerManager for IpmiLan {
    fn describe(&self) -> String {
        describe(&self.host, self.port)
    }

    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, PowerError>> {
        Box::pin(async move {
            let state = self.run(Operation::PowerState, Work::PowerState).await?;
            Ok(state.expect("Work::PowerState always yields a state"))
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>> {
        Box::pin(async move {
            self.run(Operation::Power(action), Work::Control(control_for(action)))
                .await
                .map(|_| ())
        })
    }

    fn pxe_once(&self, mode: BootMode) -> BoxFuture<'_, Result<(), PowerError>> {
        let uefi = mode == BootMode::Uefi;
        Box::pin(async move {
            self.run(Operation::PxeOnce(mode), Work::PxeOnce { uefi })
                .await
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::ipmi::fake::FakeBmc;
    use crate::power::ipmi::wire;
    use std::sync::{Arc, Mutex};

    /// The fake BMC on a loopback UDP socket; `drop_answers_to` silently swallows the answer
    /// to one command (NetFn, cmd).
    struct Served {
        bmc: Arc<Mutex<FakeBmc>>,
        port: u16,
        datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(bmc: FakeBmc, drop_answers_to: Option<(u8, u8)>) -> Served {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("loopback socket");
        let port = socket.local_addr().expect("bound").port();
        let bmc = Arc::new(Mutex::new(bmc));
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let (shared, seen) = (Arc::clone(&bmc), Arc::clone(&datagrams));
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                let bytes = buffer[..len].to_vec();
                seen.lock().expect("lock").push(bytes.clone());
                let answers = {
                    let mut bmc = shared.lock().expect("lock");
                    let before = bmc.log.len();
                    let answers = bmc.handle(&bytes);
                    let last = bmc.log.get(before).map(|(n, c, _)| (*n, *c));
                    if last.is_some() && last == drop_answers_to {
                        Vec::new()
                    } else {
                        answers
                    }
                };
                for answer in answers {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Served {
            bmc,
            port,
            datagrams,
            task,
        }
    }

    fn quick() -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_millis(600),
            attempts: 3,
            backoff: Duration::from_millis(10),
        }
    }

    fn manager(port: u16, password: &str, suites: CipherSuites) -> IpmiLan {
        IpmiLan::new(IpmiConfig {
            host: "127.0.0.1".into(),
            port,
            user: "admin".into(),
            password: password.into(),
            cipher_suites: suites,
            policy: quick(),
        })
        .expect("valid configuration")
    }

    fn open_requests(served: &Served) -> usize {
        served
            .datagrams
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| d.get(5) == Some(&wire::PayloadType::OPEN_SESSION_REQUEST))
            .count()
    }

    #[tokio::test]
    async fn power_state_and_actions_reach_the_bmc_and_sessions_are_closed() {
        let served = serve(FakeBmc::new(b"admin", b"secret"), None).await;
        let ipmi = manager(
            served.port,
            "secret",
            CipherSuites::Only(CipherSuite::Suite17),
        );
        assert_eq!(ipmi.power_state().await.expect("answered"), PowerState::Off);
        ipmi.power(PowerAction::On).await.expect("powered on");
        assert_eq!(ipmi.power_state().await.expect("answered"), PowerState::On);
        ipmi.power(PowerAction::Off).await.expect("powered off");
        assert_eq!(ipmi.power_state().await.expect("answered"), PowerState::Off);
        let bmc = served.bmc.lock().expect("lock");
        assert!(bmc.closed, "sessions end with Close Session");
        assert_eq!(
            bmc.privilege_requests,
            vec![Privilege::Operator.code(); 5],
            "every session asks for operator privilege"
        );
    }

    #[tokio::test]
    async fn pxe_once_sends_ipmitools_sequence_and_skips_the_lock_when_refused() {
        let served = serve(FakeBmc::new(b"admin", b"secret"), None).await;
        let ipmi = manager(served.port, "secret", CipherSuites::default());
        ipmi.pxe_once(BootMode::Uefi).await.expect("boot flags set");
        let boot_requests = |bmc: &FakeBmc| -> Vec<Vec<u8>> {
            bmc.log
                .iter()
                .filter(|(n, c, _)| (*n, *c) == (command::netfn::CHASSIS, 0x08))
                .map(|(_, _, d)| d.clone())
                .collect()
        };
        assert_eq!(
            boot_requests(&served.bmc.lock().expect("lock")),
            [
                vec![0x00, 0x01],
                vec![0x04, 0x01, 0x01],
                vec![0x05, 0xA0, 0x04, 0, 0, 0],
                vec![0x00, 0x02],
                vec![0x00, 0x00],
            ]
        );
        // A BMC without the set-in-progress lock (ipmi_sim) gets only the ack and the flags.
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        bmc.no_set_in_progress = true;
        let served = serve(bmc, None).await;
        let ipmi = manager(served.port, "secret", CipherSuites::default());
        ipmi.pxe_once(BootMode::Bios).await.expect("boot flags set");
        assert_eq!(
            boot_requests(&served.bmc.lock().expect("lock")),
            [
                vec![0x00, 0x01],
                vec![0x04, 0x01, 0x01],
                vec![0x05, 0x80, 0x04, 0, 0, 0],
            ]
        );
    }

    #[tokio::test]
    async fn a_wrong_password_fails_once_with_an_authentication_cause() {
        let served = serve(FakeBmc::new(b"admin", b"secret"), None).await;
        let ipmi = manager(
            served.port,
            "guess",
            CipherSuites::Only(CipherSuite::Suite3),
        );
        let error = ipmi.power_state().await.expect_err("wrong password");
        assert!(matches!(error.cause, Cause::Authentication(_)), "{error}");
        assert_eq!(
            open_requests(&served),
            1,
            "authentication failures are not retried"
        );
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "BMC ipmi 127.0.0.1:{}: could not read the power state: authentication failed: ",
                served.port
            )),
            "{text}"
        );
        assert!(
            text.contains("password of user \"admin\" is wrong"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn auto_falls_back_to_suite_3_and_remembers() {
        let mut bmc = FakeBmc::new(b"admin", b"secret");
        bmc.suite17 = false;
        let served = serve(bmc, None).await;
        let ipmi = manager(served.port, "secret", CipherSuites::Auto);
        assert_eq!(ipmi.power_state().await.expect("suite 3"), PowerState::Off);
        assert_eq!(open_requests(&served), 2, "17 refused, then 3");
        assert_eq!(ipmi.power_state().await.expect("suite 3"), PowerState::Off);
        assert_eq!(open_requests(&served), 3, "suite 3 straight away");
        let only17 = manager(
            served.port,
            "secret",
            CipherSuites::Only(CipherSuite::Suite17),
        );
        let error = only17.power_state().await.expect_err("no suite 17");
        assert!(matches!(error.cause, Cause::Unsupported(_)), "{error}");
        assert!(
            error.to_string().contains("does not offer cipher suite 17"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_silent_bmc_times_out_within_the_policy_bound() {
        let silent = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("loopback socket");
        let port = silent.local_addr().expect("bound").port();
        let ipmi = manager(port, "secret", CipherSuites::Auto);
        let started = std::time::Instant::now();
        let error = ipmi.power_state().await.expect_err("silence");
        assert!(matches!(error.cause, Cause::Timeout(_)), "{error}");
        assert!(started.elapsed() <= quick().worst_case() + Duration::from_millis(300));
        assert!(started.elapsed() >= quick().timeout * quick().attempts);
        drop(silent);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("loopback socket");
        let port = closed.local_addr().expect("bound").port();
        drop(closed);
        let ipmi = manager(port, "secret", CipherSuites::Auto);
        let error = ipmi.power_state().await.expect_err("nobody listens");
        assert!(matches!(error.cause, Cause::Unreachable(_)), "{error}");
    }

    #[tokio::test]
    async fn a_cycle_whose_answer_is_lost_is_not_sent_again() {
        let served = serve(
            FakeBmc::new(b"admin", b"secret"),
            Some((command::netfn::CHASSIS, command::cmd::CHASSIS_CONTROL)),
        )
        .await;
        let ipmi = manager(served.port, "secret", CipherSuites::Auto);
        let error = ipmi
            .power(PowerAction::Cycle)
            .await
            .expect_err("no answer to the cycle");
        assert!(matches!(error.cause, Cause::Timeout(_)), "{error}");
        let cycles = served
            .bmc
            .lock()
            .expect("lock")
            .log
            .iter()
            .filter(|(n, c, _)| {
                (*n, *c) == (command::netfn::CHASSIS, command::cmd::CHASSIS_CONTROL)
            })
            .count();
        assert_eq!(cycles, 1, "one cycle, whatever the retries");
        // Power on is idempotent: its lost answers are retransmitted and retried.
        ipmi.power(PowerAction::On)
            .await
            .expect_err("answers are still dropped");
        let ons = served
            .bmc
            .lock()
            .expect("lock")
            .log
            .iter()
            .filter(|(n, c, d)| {
                (*n, *c) == (command::netfn::CHASSIS, command::cmd::CHASSIS_CONTROL) && d == &[1]
            })
            .count();
        assert!(ons > 1, "power on was sent {ons} times");
    }

    #[test]
    fn configuration_limits_are_checked_with_the_reason() {
        let config = |user: &str, password: &str| IpmiConfig {
            host: "10.0.0.5".into(),
            port: 623,
            user: user.into(),
            password: password.into(),
            cipher_suites: CipherSuites::Auto,
            policy: CallPolicy::default(),
        };
        let error = IpmiLan::new(config("a-very-long-user-name", "x"))
            .err()
            .expect("too long");
        assert!(matches!(error.cause, Cause::Config(_)));
        assert!(error.to_string().contains("at most 16 bytes"), "{error}");
        let error = IpmiLan::new(config("admin", &"p".repeat(21)))
            .err()
            .expect("too long");
        assert!(error.to_string().contains("at most 20 bytes"), "{error}");
        let ok = IpmiLan::new(config("admin", "secret")).expect("valid");
        assert_eq!(ok.describe(), "ipmi 10.0.0.5:623");
        assert_eq!(describe("fd00::5", 623), "ipmi [fd00::5]:623");
    }
}
