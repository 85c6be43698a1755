//! Out-of-band power control: one [`PowerManager`] seam, implemented per BMC protocol.
//!
//! The controllers decide *what* a server's power should be (`controllers::power`); the
//! managers here only know *how* to ask one BMC for it. Every call is bounded by a
//! [`CallPolicy`] (timeout per attempt, attempts, backoff) and fails with a [`PowerError`]
//! naming the BMC, the operation and the cause, so an operator reading an Event or a condition
//! knows which box to look at and why.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

pub mod http_api;
pub mod ipmi;
pub mod redfish;
pub mod select;

pub use select::{SetupError, manager_for};

/// A BMC user and password, already read from `spec.bmc` or its Secrets by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // Passwords end up in logs through `{:?}` of whatever holds them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a BMC says about the machine's power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    /// The spelling of `Server.status.power`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

/// A chassis power action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerAction {
    /// Power on; a no-op for most BMCs when already on.
    On,
    /// Hard power off, without asking the OS.
    Off,
    /// Off, then on again (IPMI power cycle; Redfish `PowerCycle`, or `ForceOff` + `On`).
    Cycle,
    /// Hard reset without removing power.
    Reset,
    /// Ask the OS to shut down (ACPI soft-off; Redfish `GracefulShutdown`).
    Soft,
}

/// Firmware mode for a one-time network boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BootMode {
    #[default]
    Bios,
    Uefi,
}

/// The operation a [`PowerError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Opening a session (authentication, cipher negotiation).
    Session,
    PowerState,
    Power(PowerAction),
    PxeOnce(BootMode),
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Session => f.write_str("open a session"),
            Operation::PowerState => f.write_str("read the power state"),
            Operation::Power(action) => write!(f, "power {}", action_name(*action)),
            Operation::PxeOnce(BootMode::Bios) => f.write_str("set a one-time PXE boot (BIOS)"),
            Operation::PxeOnce(BootMode::Uefi) => f.write_str("set a one-time PXE boot (UEFI)"),
        }
    }
}

fn action_name(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "on",
        PowerAction::Off => "off",
        PowerAction::Cycle => "cycle",
        PowerAction::Reset => "reset",
        PowerAction::Soft => "soft-off",
    }
}

/// Why a power call failed. Which variants are worth a retry is [`Cause::is_transient`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// No answer within the per-attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The BMC could not be reached at all (connection refused, no route, DNS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request went out but its answer did not come back (the connection broke after
    /// sending): the BMC may have carried it out.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The BMC refused the credentials (wrong user or password, no privilege).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The BMC answered but refused the request (IPMI completion code, HTTP status).
    #[error("refused: {0}")]
    Refused(String),
    /// The BMC answered something this client cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The BMC does not offer what was asked (a cipher suite, a reset type).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The configuration in `spec.bmc` / `spec.managementApi` cannot work as written.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Cause {
    /// Timeouts, unreachable BMCs and busy answers may go away; wrong passwords and bad
    /// configuration will not, and retrying them only locks accounts.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Cause::Timeout(_) | Cause::Unreachable(_) | Cause::NoAnswer(_) | Cause::Refused(_)
        )
    }

    /// Whether the request may have reached the BMC and been carried out although it failed:
    /// its answer was lost.
    pub fn may_have_happened(&self) -> bool {
        matches!(self, Cause::Timeout(_) | Cause::NoAnswer(_))
    }
}

/// A failed power call: which BMC, doing what, and why.
#[derive(Debug, thiserror::Error)]
#[error("BMC {bmc}: could not {operation}: {cause}")]
pub struct PowerError {
    /// How the manager names its BMC, e.g. `ipmi 10.0.0.5:623` or `redfish https://bmc-1/`.
    pub bmc: String,
    pub operation: Operation,
    #[source]
    pub cause: Cause,
}

/// How patient a manager is with one BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallPolicy {
    /// Bound on one attempt, from the first byte sent to the last byte read.
    pub timeout: Duration,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

impl CallPolicy {
    /// The longest a call under this policy can take, backoff included: the bound an operator
    /// is promised for an unreachable BMC.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.attempts.max(1);
        let waits: Duration = (1..attempts).map(|i| self.backoff * 2u32.pow(i - 1)).sum();
        self.timeout * attempts + waits
    }

    /// Runs `attempt` until it succeeds, fails with a cause that is not transient, or the
    /// attempts are spent; each attempt is cut off after `timeout`.
    pub async fn run<T, F, Fut>(
        &self,
        bmc: &str,
        operation: Operation,
        attempt: F,
    ) -> Result<T, PowerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Cause>>,
    {
        self.run_with(bmc, operation, true, attempt).await
    }

    /// [`CallPolicy::run`] for a request that must not be carried out twice (a power cycle or
    /// reset): once an attempt's answer is lost ([`Cause::may_have_happened`]) it is not sent
    /// again, and the call fails with that cause. The caller checks the effect instead.
    pub async fn run_unrepeatable<T, F, Fut>(
        &self,
        bmc: &str,
        operation: Operation,
        attempt: F,
    ) -> Result<T, PowerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Cause>>,
    {
        self.run_with(bmc, operation, false, attempt).await
    }

    async fn run_with<T, F, Fut>(
        &self,
        bmc: &str,
        operation: Operation,
        repeatable: bool,
        mut attempt: F,
    ) -> Result<T, PowerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Cause>>,
    {
        let attempts = self.attempts.max(1);
        let mut wait = self.backoff;
        let mut tried = 0;
        loop {
            tried += 1;
            let cause = match tokio::time::timeout(self.timeout, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(cause)) => cause,
                Err(_) => Cause::Timeout(self.timeout),
            };
            let lost = !repeatable && cause.may_have_happened();
            if tried >= attempts || !cause.is_transient() || lost {
                return Err(PowerError {
                    bmc: bmc.to_string(),
                    operation,
                    cause,
                });
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

/// An error and its sources in one line: an HTTP client's own message rarely says what went
/// wrong (the TLS or socket error is a few sources down).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = inner.source();
    }
    text
}

/// One machine's power, as its BMC (or a test rig) controls it. Implementations hold what they
/// need to reach the BMC (address, credentials, TLS trust) and apply their [`CallPolicy`] to
/// every call. The trait is object-safe so the controller can hold `Box<dyn PowerManager>`
/// chosen per server.
pub trait PowerManager: Send + Sync {
    /// Names the BMC in errors and events, e.g. `ipmi 10.0.0.5:623`.
    fn describe(&self) -> String;

    /// The machine's current power state.
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, PowerError>>;

    /// Performs a chassis power action.
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>>;

    /// Makes the next boot (only the next) a network boot in the given firmware mode.
    fn pxe_once(&self, mode: BootMode) -> BoxFuture<'_, Result<(), PowerError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_millis(50),
            attempts: 3,
            backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_an_attempt_succeeds() {
        let calls = AtomicU32::new(0);
        let got = quick()
            .run("test-bmc", Operation::PowerState, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Cause::Unreachable("refused".into())),
                    1 => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(PowerState::Off)
                    }
                    _ => Ok(PowerState::On),
                }
            })
            .await
            .expect("third attempt succeeds");
        assert_eq!(got, PowerState::On);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_wrong_password_is_not_retried_and_the_error_names_bmc_operation_and_cause() {
        let calls = AtomicU32::new(0);
        let err = quick()
            .run(
                "ipmi 10.0.0.5:623",
                Operation::Power(PowerAction::Cycle),
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(Cause::Authentication("RAKP 2: unauthorized name".into()))
                },
            )
            .await
            .expect_err("authentication failures fail");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            err.to_string(),
            "BMC ipmi 10.0.0.5:623: could not power cycle: authentication failed: RAKP 2: unauthorized name"
        );
    }

    #[tokio::test]
    async fn an_unrepeatable_request_is_not_sent_again_after_its_answer_was_lost() {
        for (first, sends) in [
            (Cause::Unreachable("connection refused".into()), 2),
            (Cause::NoAnswer("connection reset".into()), 1),
        ] {
            let calls = AtomicU32::new(0);
            let first = std::sync::Mutex::new(Some(first));
            let result = quick()
                .run_unrepeatable("bmc", Operation::Power(PowerAction::Cycle), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    match first.lock().unwrap().take() {
                        Some(cause) => Err(cause),
                        None => Ok(()),
                    }
                })
                .await;
            assert_eq!(calls.load(Ordering::SeqCst), sends);
            assert_eq!(result.is_ok(), sends == 2, "{result:?}");
        }
        // A silent BMC: one attempt, cut off by the timeout.
        let calls = AtomicU32::new(0);
        let err = quick()
            .run_unrepeatable("bmc", Operation::Power(PowerAction::Reset), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), Cause>>().await
            })
            .await
            .expect_err("never answers");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(err.cause.may_have_happened(), "{err}");
    }

    #[tokio::test]
    async fn a_silent_bmc_fails_with_a_timeout_after_every_attempt() {
        let calls = AtomicU32::new(0);
        let policy = quick();
        let started = std::time::Instant::now();
        let err = policy
            .run("silent", Operation::PxeOnce(BootMode::Uefi), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), Cause>>().await
            })
            .await
            .expect_err("never answers");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(err.cause, Cause::Timeout(_)), "{err}");
        assert!(started.elapsed() <= policy.worst_case() + Duration::from_millis(200));
        assert_eq!(policy.worst_case(), Duration::from_millis(150 + 1 + 2));
    }
}
