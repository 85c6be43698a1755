//! Power reconcile, the Server controller's out-of-band half: one task per Server that has
//! `spec.bmc` or `spec.managementApi`. Each task holds that server's power manager (so Redfish
//! sessions and the IPMI cipher suite found are kept between calls), polls the power state
//! into `status.power` on a jittered interval, and takes the steps `policy::power` decides
//! toward the lifecycle's goal: at most one action in flight per server (a task does one thing
//! at a time), at most one per BMC at once and a second apart (`BmcGates`).
//!
//! What it says on the Server: `status.power` (`on`, `off`, `unknown`); the `BMCReachable`
//! condition (false while the BMC does not answer, refuses the credentials, or its spec cannot
//! work); the `PowerCycle` condition (the last lifecycle action and whether it worked); and an
//! Event for each action and each failure. Writes happen only when something changed.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::{
    Bmc, Condition, ConditionSeverity, ConditionStatus, CredentialSource, ManagementApi, PxeMode,
    Server, ServerStatus, find_condition, set_condition,
};
use crate::policy::power::{
    self, Failure, Goal, MANUAL_ANNOTATION, Plan, PowerFacts, RETRY_ANNOTATION, Record, Step,
    Timing, Waiting,
};
use crate::power::{
    BootMode, CallPolicy, Cause, Credentials, PowerError, PowerManager, PowerState, manager_for,
};
use crate::serve::agent_api::WIPING;
use crate::serve::resource_caches::{ServerChange, ServerFeed};
use crate::serve::servers::{is_installed, publish_event, update_status_from};

/// Condition: whether the server's BMC (or management API) answers.
pub const BMC_REACHABLE: &str = "BMCReachable";
/// Condition: the last power action the lifecycle needed, and whether it had its effect.
pub const POWER_CYCLE: &str = "PowerCycle";

/// Calls one BMC may have in flight at once (polls and actions of all its servers): BMCs
/// serve a handful of sessions, and a chassis manager answers for many blades.
const CALLS_PER_BMC: usize = 2;
/// Least time between two power actions sent to one BMC (a chassis should not start all its
/// blades in the same second).
const ACTION_SPACING: Duration = Duration::from_secs(1);
/// How often the state is polled while an action's effect is awaited.
const SETTLE_POLL: Duration = Duration::from_secs(2);
/// How long a spec that cannot work (a missing Secret, a bad endpoint) waits before it is
/// read again, unless the Server changes first.
const SETUP_RETRY: Duration = Duration::from_secs(60);
/// A wiping agent that has not reported progress for this long is taken for dead.
const AGENT_SILENCE: Duration = Duration::from_secs(30 * 60);

/// How the power reconcile behaves; the appliance's flags fill it.
#[derive(Clone, Copy, Debug)]
pub struct PowerSettings {
    /// Mean time between two polls of one server's power state.
    pub poll_interval: Duration,
    /// Each poll interval is this fraction longer or shorter, at random, so that servers
    /// registered together are not polled together.
    pub jitter: f64,
    /// Patience with machines (settle, grace, boot timeout, attempts).
    pub timing: Timing,
    /// Patience with BMC calls (timeout, attempts, backoff).
    pub call: CallPolicy,
    /// One-time PXE boot mode for servers whose spec.pxeMode is unset.
    pub pxe_mode: BootMode,
}

impl Default for PowerSettings {
    fn default() -> Self {
        PowerSettings {
            poll_interval: Duration::from_secs(60),
            jitter: 0.1,
            timing: Timing::default(),
            call: CallPolicy::default(),
            pxe_mode: BootMode::Uefi,
        }
    }
}

/// Whether a server asks for power control at all.
fn has_power_spec(server: &Server) -> bool {
    server.spec.bmc.is_some() || server.spec.management_api.is_some()
}

/// What the tasks share.
struct Shared {
    servers: Api<Server>,
    client: kube::Client,
    recorder: Recorder,
    gates: BmcGates,
    settings: PowerSettings,
}

/// Runs the power reconcile on the process's Server feed until `shutdown` is cancelled.
pub async fn run(
    client: kube::Client,
    feed: ServerFeed,
    settings: PowerSettings,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        servers: Api::all(client.clone()),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "siderite".into(),
                instance: None,
            },
        ),
        client,
        gates: BmcGates::default(),
        settings,
    });
    // One sender per task; dropping it ends the task.
    let mut tasks: HashMap<String, watch::Sender<Arc<Server>>> = HashMap::new();
    let mut changes = std::pin::pin!(feed.subscribe());
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => break,
            change = changes.next() => match change {
                Some(change) => change,
                None => break,
            },
        };
        match change {
            ServerChange::Listed(all) => {
                let names: std::collections::HashSet<String> =
                    all.iter().map(|s| s.name_any()).collect();
                tasks.retain(|name, _| names.contains(name));
                for server in all {
                    offer(&mut tasks, &shared, server, &shutdown);
                }
            }
            ServerChange::Applied(server) => offer(&mut tasks, &shared, server, &shutdown),
            ServerChange::Deleted(server) => {
                tasks.remove(&server.name_any());
            }
        }
    }
}

/// Hands the latest copy of `server` to its task, starting one if it needs one and ending it if
/// the server no longer asks for power control.
fn offer(
    tasks: &mut HashMap<String, watch::Sender<Arc<Server>>>,
    shared: &Arc<Shared>,
    server: Arc<Server>,
    shutdown: &CancellationToken,
) {
    let name = server.name_any();
    if !has_power_spec(&server) {
        // Power control was taken away: the task sees this copy last, clears what the BMC
        // said (it no longer holds) and ends.
        if let Some(sender) = tasks.remove(&name) {
            sender.send_replace(server);
        }
        return;
    }
    if let Some(sender) = tasks.get(&name)
        && !sender.is_closed()
    {
        sender.send_replace(server);
        return;
    }
    let (sender, receiver) = watch::channel(server);
    tasks.insert(name.clone(), sender);
    let task = Task::new(name, Arc::clone(shared), receiver);
    tokio::spawn(task.run(shutdown.clone()));
}

/// The power manager of one server, and the spec it was built from.
struct Managed {
    manager: Box<dyn PowerManager>,
    /// The spec it was built from: a change rebuilds the manager.
    spec: PowerSpec,
    /// Which gate the BMC's calls pass.
    gate: Arc<BmcGate>,
}

/// One server's power task.
struct Task {
    name: String,
    shared: Arc<Shared>,
    updates: watch::Receiver<Arc<Server>>,
    server: Arc<Server>,
    managed: Option<Managed>,
    /// The spec could not be set up (or its credentials were refused).
    setup_failed: Option<SetupFailure>,
    inline_warned: bool,
    record: Record,
    /// The retry annotation's value when the record was last reset.
    retry_seen: Option<String>,
    state: Option<PowerState>,
    /// When `state` was read.
    observed_at: Instant,
    next_poll: Instant,
    /// Polls that failed in a row.
    poll_failures: u32,
    /// The Wiping condition as last seen, and when it last changed.
    wiping: Option<(Condition, Instant)>,
}

impl Task {
    fn new(name: String, shared: Arc<Shared>, updates: watch::Receiver<Arc<Server>>) -> Task {
        let server = updates.borrow().clone();
        let now = Instant::now();
        let goal = power::goal(&facts(&server));
        let first_poll = now
            + FIRST_POLL_SPREAD
                .min(shared.settings.poll_interval)
                .mul_f64(unit_random());
        Task {
            name,
            shared,
            retry_seen: server.annotations().get(RETRY_ANNOTATION).cloned(),
            updates,
            server,
            managed: None,
            setup_failed: None,
            inline_warned: false,
            record: Record::new(goal, now.into_std()),
            state: None,
            observed_at: now,
            next_poll: first_poll,
            poll_failures: 0,
            wiping: None,
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        debug!(server = %self.name, "power task started");
        loop {
            let wake = self.turn().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.server = self.updates.borrow_and_update().clone();
                    if !has_power_spec(&self.server) {
                        self.forget().await;
                        break;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        debug!(server = %self.name, "power task ended");
    }

    /// One round: follow the lifecycle, poll if due, take the next step. Returns when to wake
    /// up again (earlier if the Server changes).
    async fn turn(&mut self) -> Instant {
        let now = Instant::now();
        self.follow_lifecycle(now);
        let Some(gate) = self.ensure_manager(now).await else {
            return self
                .setup_failed
                .as_ref()
                .map_or(now + SETUP_RETRY, |f| f.retry_at);
        };
        // An awaited action is judged on a state read after its settle time, not before.
        let settled = self
            .record
            .last
            .map(|sent| Instant::from_std(sent.at) + self.shared.settings.timing.settle);
        let stale = settled.is_some_and(|at| now >= at && self.observed_at < at);
        if now >= self.next_poll || stale {
            self.poll(&gate).await;
        }
        let now = Instant::now();
        let step = power::next_step(
            &self.record,
            self.state,
            self.agent_wiping(now),
            now.into_std(),
            &self.shared.settings.timing,
        );
        match step {
            Step::Idle => self.next_poll,
            Step::Wait { until, why } => {
                if matches!(why, Waiting::Settling) {
                    self.next_poll = self.next_poll.min(now + SETTLE_POLL);
                }
                self.next_poll.min(Instant::from_std(until))
            }
            Step::Act(plan) => {
                self.act(plan, &gate).await;
                // Look at the effect soon.
                self.next_poll = Instant::now() + SETTLE_POLL;
                self.next_poll
            }
            Step::Failed(failure) => {
                self.failed(failure).await;
                now
            }
        }
    }

    /// Clears `status.power` and `BMCReachable`: the server no longer names a BMC, so what the
    /// last one said no longer holds.
    async fn forget(&mut self) {
        self.update(|status| {
            let before = status.conditions.len();
            status.conditions.retain(|c| c.type_ != BMC_REACHABLE);
            status.power.take().is_some() || status.conditions.len() != before
        })
        .await;
    }

    /// Moves the record to the lifecycle's current goal, and notes the agent's wipe progress
    /// and the operator's retry annotation.
    fn follow_lifecycle(&mut self, now: Instant) {
        let goal = power::goal(&facts(&self.server));
        if self.record.follow(goal, now.into_std()) {
            debug!(server = %self.name, ?goal, "power goal");
        }
        let retry = self.server.annotations().get(RETRY_ANNOTATION).cloned();
        if retry != self.retry_seen {
            self.retry_seen = retry;
            if self.record.gave_up {
                info!(server = %self.name, "power: trying again, as the retry annotation asks");
                self.record.retry(now.into_std());
            }
        }
        let wiping = self
            .server
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, WIPING))
            .cloned();
        match (&mut self.wiping, wiping) {
            (Some((seen, _)), Some(current)) if *seen == current => {}
            (_, Some(current)) => self.wiping = Some((current, now)),
            (_, None) => self.wiping = None,
        }
    }

    /// An agent is wiping: its Wiping condition is true and changed (progress) recently.
    fn agent_wiping(&self, now: Instant) -> bool {
        self.wiping.as_ref().is_some_and(|(condition, changed)| {
            condition.status == ConditionStatus::True
                && now.saturating_duration_since(*changed) < AGENT_SILENCE
        })
    }

    /// The manager for the current spec, built (credentials read) when the spec changed.
    async fn ensure_manager(&mut self, now: Instant) -> Option<Arc<BmcGate>> {
        let spec = power_spec(&self.server);
        if let Some(managed) = &self.managed
            && managed.spec == spec
        {
            return Some(Arc::clone(&managed.gate));
        }
        if self
            .setup_failed
            .as_ref()
            .is_some_and(|f| f.spec == spec && now < f.retry_at)
        {
            return None;
        }
        self.managed = None;
        match self.build(&spec).await {
            Ok(managed) => {
                let gate = Arc::clone(&managed.gate);
                self.managed = Some(managed);
                self.setup_failed = None;
                // A new BMC: its state is not known yet.
                self.next_poll = now;
                Some(gate)
            }
            Err(error) => {
                let first = self
                    .setup_failed
                    .as_ref()
                    .is_none_or(|f| f.spec != spec || f.error != error);
                self.setup_failed = Some(SetupFailure {
                    spec,
                    error: error.clone(),
                    retry_at: now + SETUP_RETRY,
                });
                if first {
                    warn!(server = %self.name, %error, "power control cannot be set up");
                    self.event(
                        EventType::Warning,
                        "PowerSetupFailed",
                        "Setup",
                        error.clone(),
                    );
                }
                self.state = None;
                self.write(Some("unknown"), Some((false, "Misconfigured", error)))
                    .await;
                None
            }
        }
    }

    async fn build(&mut self, spec: &PowerSpec) -> Result<Managed, String> {
        let credentials = match &self.server.spec.bmc {
            Some(bmc) => {
                let (credentials, inline) = read_credentials(&self.shared.client, bmc).await?;
                if inline && !self.inline_warned {
                    self.inline_warned = true;
                    self.event(
                        EventType::Warning,
                        "InlineCredentials",
                        "Setup",
                        "spec.bmc holds the BMC user or password in plain text, readable by anyone who can read Servers; move them to a Secret and use userFrom/passFrom".into(),
                    );
                }
                credentials
            }
            None => None,
        };
        let manager = manager_for(&self.server.spec, credentials, self.shared.settings.call)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the server has neither spec.bmc nor spec.managementApi".to_owned())?;
        info!(server = %self.name, bmc = %manager.describe(), "power manager ready");
        Ok(Managed {
            gate: self.shared.gates.gate(&bmc_key(&self.server)),
            manager,
            spec: spec.clone(),
        })
    }

    fn manager(&self) -> &dyn PowerManager {
        self.managed
            .as_ref()
            .map(|m| m.manager.as_ref())
            .expect("a manager is set up before it is used")
    }

    /// Reads the power state; writes `status.power` and `BMCReachable` if they changed.
    async fn poll(&mut self, gate: &BmcGate) {
        let result = {
            let _call = gate.call().await;
            self.manager().power_state().await
        };
        self.observed_at = Instant::now();
        let interval = self.shared.settings.poll_interval;
        match result {
            Ok(state) => {
                self.state = Some(state);
                self.poll_failures = 0;
                self.next_poll = Instant::now() + jittered(interval, self.shared.settings.jitter);
                self.write(
                    Some(state.as_str()),
                    Some((true, "Answered", String::new())),
                )
                .await;
            }
            Err(error) => {
                self.state = None;
                self.poll_failures += 1;
                // An unreachable BMC is asked again sooner than the interval (it may be
                // back), but not more often than the settle time.
                let again = interval.min(self.shared.settings.timing.settle);
                self.next_poll = Instant::now() + jittered(again, self.shared.settings.jitter);
                self.bmc_failed(&error).await;
            }
        }
    }

    /// Records a failed call: `BMCReachable` false (and an Event when it changes).
    async fn bmc_failed(&mut self, error: &PowerError) {
        let reason = match error.cause {
            Cause::Authentication(_) => "AuthenticationFailed",
            Cause::Config(_) | Cause::Unsupported(_) => "Misconfigured",
            Cause::Timeout(_) | Cause::Unreachable(_) | Cause::NoAnswer(_) => "Unreachable",
            Cause::Refused(_) | Cause::Protocol(_) => "Refused",
        };
        let message = error.to_string();
        if self
            .write(Some("unknown"), Some((false, reason, message.clone())))
            .await
        {
            warn!(server = %self.name, %error, "BMC call failed");
            self.event(EventType::Warning, reason, "PowerState", message);
        }
        if matches!(error.cause, Cause::Authentication(_)) {
            // The password may have been changed in the Secret: read it again next time.
            self.managed = None;
            self.setup_failed = Some(SetupFailure {
                spec: power_spec(&self.server),
                error: error.to_string(),
                retry_at: Instant::now() + SETUP_RETRY,
            });
        }
    }

    /// Sends a plan: the one-time PXE boot, then the action, through the BMC's gate.
    async fn act(&mut self, plan: Plan, gate: &BmcGate) {
        let mode = match self.server.spec.pxe_mode {
            Some(PxeMode::Bios) => BootMode::Bios,
            Some(PxeMode::Uefi) => BootMode::Uefi,
            None => self.shared.settings.pxe_mode,
        };
        let goal = self.record.goal;
        let result = {
            let _action = gate.action().await;
            let manager = self.manager();
            let pxe = if plan.pxe_once {
                manager.pxe_once(mode).await
            } else {
                Ok(())
            };
            match pxe {
                Ok(()) => manager.power(plan.action).await.map_err(|e| (e, true)),
                Err(error) => Err((error, false)),
            }
        };
        let now = Instant::now().into_std();
        let attempt = self.record.tries + 1;
        let attempts = self.shared.settings.timing.attempts;
        match result {
            Ok(()) => {
                self.record.sent(plan, now);
                let message = format!(
                    "{} {} (attempt {attempt} of {attempts})",
                    plan.describe(),
                    goal.purpose()
                );
                info!(server = %self.name, %message, "power action");
                self.condition(ConditionStatus::True, "Requested", &message, None)
                    .await;
                self.event(EventType::Normal, "PowerAction", "Power", message);
            }
            // The action itself went unanswered: it may have happened. Sending it again could
            // power the machine twice, so its effect is awaited as if it had been answered.
            Err((error, true)) if error.cause.may_have_happened() => {
                self.record.sent(plan, now);
                let message = format!(
                    "{error}; it may have been carried out, so it is not sent again before its effect is checked (attempt {attempt} of {attempts})"
                );
                self.condition(ConditionStatus::False, "NoAnswer", &message, None)
                    .await;
                self.bmc_failed(&error).await;
                self.event(EventType::Warning, "PowerNoAnswer", "Power", message);
            }
            Err((error, _)) => {
                self.record.unreachable(now, &self.shared.settings.timing);
                let message = format!("{error}; trying again later");
                self.condition(ConditionStatus::False, "PowerFailed", &message, None)
                    .await;
                self.bmc_failed(&error).await;
                self.event(EventType::Warning, "PowerFailed", "Power", message);
            }
        }
    }

    /// An attempt without its effect: mark the server, and give up when attempts are spent.
    async fn failed(&mut self, failure: Failure) {
        let timing = self.shared.settings.timing;
        let what = match failure {
            Failure::NoEffect { expected, after } => format!(
                "the BMC accepted the request, but the machine was not {} {after:?} later",
                expected.as_str()
            ),
            Failure::BootTimeout { after } => match self.record.goal {
                Goal::Wipe => format!(
                    "the machine did not start the discovery agent's wipe within {after:?} of its PXE boot"
                ),
                _ => format!("the machine's OS was not installed within {after:?} of its PXE boot"),
            },
        };
        let tries = self.record.tries;
        let gave_up = self.record.failed(Instant::now().into_std(), &timing);
        let (reason, message, severity) = if gave_up {
            (
                "GaveUp",
                format!(
                    "{what} (attempt {tries} of {}); no more power actions for this step. Look at the machine's console, then: kubectl annotate server {} {RETRY_ANNOTATION}=\"$(date +%s)\" --overwrite",
                    timing.attempts, self.name
                ),
                Some(ConditionSeverity::Error),
            )
        } else {
            (
                match failure {
                    Failure::NoEffect { .. } => "NoEffect",
                    Failure::BootTimeout { .. } => "BootTimeout",
                },
                format!(
                    "{what} (attempt {tries} of {}); trying again",
                    timing.attempts
                ),
                None,
            )
        };
        warn!(server = %self.name, %message, "power action without effect");
        self.condition(ConditionStatus::False, reason, &message, severity)
            .await;
        self.event(EventType::Warning, reason, "Power", message);
    }

    /// Writes `status.power` and `BMCReachable` where they differ from the Server's; returns
    /// whether anything changed.
    async fn write(
        &mut self,
        power: Option<&str>,
        reachable: Option<(bool, &str, String)>,
    ) -> bool {
        let now = Time(jiff::Timestamp::now());
        let condition = reachable.map(|(ok, reason, message)| {
            let status = if ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            Condition::new(BMC_REACHABLE, status, reason, message, now.clone())
        });
        let change = |status: &mut ServerStatus| {
            let mut changed = false;
            if let Some(power) = power
                && status.power.as_deref() != Some(power)
            {
                status.power = Some(power.to_owned());
                changed = true;
            }
            if let Some(condition) = &condition {
                changed |= set_condition(&mut status.conditions, condition.clone());
            }
            changed
        };
        // Most polls change nothing: decide on the cached copy before writing.
        let mut probe = self.server.status.clone().unwrap_or_default();
        if !change(&mut probe) {
            return false;
        }
        self.update(change).await
    }

    /// Sets the `PowerCycle` condition.
    async fn condition(
        &mut self,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        severity: Option<ConditionSeverity>,
    ) {
        let mut condition = Condition::new(
            POWER_CYCLE,
            status,
            reason,
            message,
            Time(jiff::Timestamp::now()),
        );
        if severity.is_some() {
            condition = condition.with_severity(severity);
        }
        self.update(|status| set_condition(&mut status.conditions, condition.clone()))
            .await;
    }

    async fn update(&mut self, mut change: impl FnMut(&mut ServerStatus) -> bool) -> bool {
        let latest = Some(self.server.as_ref().clone());
        match update_status_from(&self.shared.servers, &self.name, latest, |_, status| {
            change(status)
        })
        .await
        {
            Ok(Some(written)) => {
                self.server = Arc::new(written);
                true
            }
            Ok(None) => false,
            Err(error) => {
                warn!(server = %self.name, %error, "could not write the power status");
                false
            }
        }
    }

    fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        publish_event(
            &self.shared.recorder,
            &self.server,
            type_,
            reason,
            action,
            &note,
        );
    }
}

/// The lifecycle facts of a Server.
fn facts(server: &Server) -> PowerFacts {
    let status = server.status.as_ref();
    PowerFacts {
        accepted: server.spec.accepted,
        clean: status.is_some_and(|s| s.is_clean),
        allocated: status.is_some_and(|s| s.in_use),
        installed: is_installed(server),
        deleting: server.meta().deletion_timestamp.is_some(),
        manual: server
            .annotations()
            .get(MANUAL_ANNOTATION)
            .is_some_and(|v| v == "manual"),
    }
}

/// What a server's power control is built from: `spec.bmc` and `spec.managementApi`.
type PowerSpec = (Option<Bmc>, Option<ManagementApi>);

fn power_spec(server: &Server) -> PowerSpec {
    (server.spec.bmc.clone(), server.spec.management_api.clone())
}

/// A spec that could not be set up: reported once, read again at `retry_at` or when it changes.
struct SetupFailure {
    spec: PowerSpec,
    error: String,
    retry_at: Instant,
}

/// The BMC a server's calls go to, for the gates: the endpoint's host and port, so that the
/// systems of one Redfish service (a chassis manager) share one gate.
fn bmc_key(server: &Server) -> String {
    let (endpoint, port) = match (&server.spec.bmc, &server.spec.management_api) {
        (Some(bmc), _) => (bmc.endpoint.as_str(), bmc.port),
        (None, Some(api)) => (api.endpoint.as_str(), None),
        (None, None) => ("", None),
    };
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let host = without_scheme.split('/').next().unwrap_or_default();
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// `interval`, made up to `jitter` (a fraction) longer or shorter at random.
fn jittered(interval: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + jitter.clamp(0.0, 0.9) * (2.0 * unit_random() - 1.0);
    interval.mul_f64(factor)
}

/// A number in [0, 1), random enough for spreading polls.
fn unit_random() -> f64 {
    // RandomState is seeded at random per instance.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// The longest a new task waits before its first poll: a restart with a thousand servers
/// spreads their first polls over this time instead of sending them all at once.
const FIRST_POLL_SPREAD: Duration = Duration::from_secs(5);

/// The user and password for `bmc`, from its Secrets or inline; `true` when any was inline.
/// `None` when it names none (the manager then says what to set).
async fn read_credentials(
    client: &kube::Client,
    bmc: &Bmc,
) -> Result<(Option<Credentials>, bool), String> {
    let user = credential(client, "user", bmc.user.as_deref(), bmc.user_from.as_ref()).await?;
    let pass = credential(client, "pass", bmc.pass.as_deref(), bmc.pass_from.as_ref()).await?;
    let inline = bmc.user.is_some() || bmc.pass.is_some();
    Ok(match (user, pass) {
        (Some(user), Some(password)) => (Some(Credentials { user, password }), inline),
        _ => (None, inline),
    })
}

async fn credential(
    client: &kube::Client,
    field: &str,
    inline: Option<&str>,
    from: Option<&CredentialSource>,
) -> Result<Option<String>, String> {
    let reference = from.and_then(|f| f.secret_key_ref.as_ref());
    match (inline, reference) {
        (Some(_), Some(_)) => Err(format!(
            "spec.bmc sets both {field} and {field}From; keep one (the Secret)"
        )),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, None) => Ok(None),
        (None, Some(r)) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
            let secret = secrets
                .get_opt(&r.name)
                .await
                .map_err(|e| format!("reading Secret {}/{} for spec.bmc.{field}From: {e}", r.namespace, r.name))?
                .ok_or_else(|| {
                    format!(
                        "Secret {}/{} named by spec.bmc.{field}From does not exist; create it or fix the reference",
                        r.namespace, r.name
                    )
                })?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .ok_or_else(|| {
                    format!(
                        "Secret {}/{} has no key {:?} (spec.bmc.{field}From)",
                        r.namespace, r.name, r.key
                    )
                })?;
            String::from_utf8(bytes.0.clone()).map(Some).map_err(|_| {
                format!(
                    "Secret {}/{} key {:?} is not UTF-8 text (spec.bmc.{field}From)",
                    r.namespace, r.name, r.key
                )
            })
        }
    }
}

/// Per-BMC limits shared by every task: how many calls at once, and spacing between actions.
#[derive(Default)]
struct BmcGates(Mutex<HashMap<String, Arc<BmcGate>>>);

impl BmcGates {
    fn gate(&self, key: &str) -> Arc<BmcGate> {
        let mut gates = self.0.lock().expect("gate map lock is never poisoned");
        Arc::clone(gates.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(BmcGate {
                calls: Semaphore::new(CALLS_PER_BMC),
                last_action: tokio::sync::Mutex::new(None),
            })
        }))
    }
}

struct BmcGate {
    calls: Semaphore,
    /// Held while an action is sent, so actions on one BMC go one at a time.
    last_action: tokio::sync::Mutex<Option<Instant>>,
}

impl BmcGate {
    async fn call(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.calls
            .acquire()
            .await
            .expect("the gate's semaphore is never closed")
    }

    /// Waits for this BMC's turn to act: no other action in flight, the last one at least
    /// [`ACTION_SPACING`] ago. The guard is held for the whole action.
    async fn action(&self) -> ActionGuard<'_> {
        let last = self.last_action.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + ACTION_SPACING).await;
        }
        let call = self.call().await;
        ActionGuard { last, _call: call }
    }
}

/// An action's turn at its BMC; records when the action ended.
struct ActionGuard<'a> {
    last: tokio::sync::MutexGuard<'a, Option<Instant>>,
    _call: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for ActionGuard<'_> {
    fn drop(&mut self) {
        *self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ManagementApi, ServerSpec};

    #[test]
    fn the_systems_of_one_bmc_share_a_gate_and_other_bmcs_do_not() {
        let server = |bmc: Option<Bmc>, api: Option<&str>| {
            Server::new(
                "s",
                ServerSpec {
                    bmc,
                    management_api: api.map(|e| ManagementApi { endpoint: e.into() }),
                    ..ServerSpec::default()
                },
            )
        };
        let redfish = |endpoint: &str| {
            Some(Bmc {
                endpoint: endpoint.into(),
                ..Bmc::default()
            })
        };
        assert_eq!(
            bmc_key(&server(redfish("https://cmm-1/redfish/v1/Systems/1"), None)),
            bmc_key(&server(redfish("https://cmm-1/redfish/v1/Systems/2"), None))
        );
        assert_ne!(
            bmc_key(&server(redfish("10.0.0.5"), None)),
            bmc_key(&server(redfish("10.0.0.6"), None))
        );
        assert_eq!(
            bmc_key(&server(None, Some("127.0.0.1:8001"))),
            "127.0.0.1:8001"
        );
        let mut with_port = redfish("10.0.0.5").unwrap();
        with_port.port = Some(6230);
        assert_eq!(bmc_key(&server(Some(with_port), None)), "10.0.0.5:6230");
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_spreads() {
        let interval = Duration::from_secs(60);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(interval, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(54) && *d <= Duration::from_secs(66))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 150, "{} distinct of 200", distinct.len());
    }

    #[tokio::test]
    async fn actions_on_one_bmc_go_one_at_a_time_a_second_apart() {
        let gates = BmcGates::default();
        let gate = gates.gate("10.0.0.5");
        let first = gate.action().await;
        // While one action is in flight, the next waits for it.
        let blocked = tokio::time::timeout(Duration::from_millis(100), gate.action()).await;
        assert!(blocked.is_err(), "a second action started during the first");
        drop(first);
        let ended = Instant::now();
        let second = gate.action().await;
        assert!(ended.elapsed() >= ACTION_SPACING, "{:?}", ended.elapsed());
        drop(second);
        // Another BMC is not held up.
        let other = gates.gate("10.0.0.6");
        let quick = tokio::time::timeout(Duration::from_millis(100), other.action()).await;
        assert!(quick.is_ok());
    }
}
