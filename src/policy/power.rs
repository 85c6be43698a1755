//! What a server's power should be, and the next power step toward it: plain functions over
//! the Server's lifecycle, its observed power state and what was already sent to its BMC (no
//! I/O; the caller passes the clock). `controllers::power` carries the steps out.
//!
//! Goals, from the lifecycle:
//! - not accepted, being deleted, or annotated `siderite.dev/power-management: manual` → left
//!   alone (its state is still polled);
//! - accepted, unallocated and dirty → **wipe**: one-time PXE boot, then on (cycle if on), so
//!   the discovery agent boots and wipes — unless an agent is already wiping it;
//! - accepted, unallocated and clean → **off** (the agent powers itself off after a wipe; the
//!   BMC does it when the agent has not within the grace period);
//! - allocated, OS not installed → **netboot**: one-time PXE boot, then on (cycle if on);
//! - allocated, installed → **on** (a node that was switched off is started again, from disk).
//!
//! At most one action is sent per goal and attempt. An action's effect is checked before
//! anything else is sent: the power state within `settle`, and for the boot goals the agent's
//! wipe (or the installation) within `boot_timeout`. An attempt without effect is a failure;
//! after `attempts` failures the controller gives up and says so, instead of power cycling a
//! broken machine forever.

use std::time::{Duration, Instant};

use crate::power::{PowerAction, PowerState};

/// Annotation that takes a server's power out of the controller's hands (`manual`).
pub const MANUAL_ANNOTATION: &str = "siderite.dev/power-management";
/// Annotation whose change (any new value) makes the controller try again after it gave up.
pub const RETRY_ANNOTATION: &str = "siderite.dev/power-retry";

/// The lifecycle facts the goal depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerFacts {
    pub accepted: bool,
    pub clean: bool,
    pub allocated: bool,
    /// The allocated server's OS is installed (its `Installed` condition).
    pub installed: bool,
    pub deleting: bool,
    /// Annotated `siderite.dev/power-management: manual`.
    pub manual: bool,
}

/// Why the controller leaves a server's power alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeftAlone {
    NotAccepted,
    Deleting,
    Manual,
}

/// What a server's power should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Goal {
    LeftAlone(LeftAlone),
    /// Boot the discovery agent so that it wipes the disks.
    Wipe,
    /// In the pool: off.
    Off,
    /// Allocated, not installed: boot the Environment from the network.
    Netboot,
    /// Allocated and installed: running its OS.
    On,
}

impl Goal {
    /// Words for conditions and Events: "to wipe the disks".
    pub fn purpose(self) -> &'static str {
        match self {
            Goal::LeftAlone(_) => "to leave it alone",
            Goal::Wipe => "so that the discovery agent wipes the disks",
            Goal::Off => "because the server is clean and in the pool",
            Goal::Netboot => "so that it netboots its Environment",
            Goal::On => "because the allocated server should run its installed OS",
        }
    }
}

/// The goal for a server in this state of its lifecycle.
pub fn goal(facts: &PowerFacts) -> Goal {
    if facts.deleting {
        Goal::LeftAlone(LeftAlone::Deleting)
    } else if facts.manual {
        Goal::LeftAlone(LeftAlone::Manual)
    } else if !facts.accepted {
        Goal::LeftAlone(LeftAlone::NotAccepted)
    } else if facts.allocated && facts.installed {
        Goal::On
    } else if facts.allocated {
        Goal::Netboot
    } else if facts.clean {
        Goal::Off
    } else {
        Goal::Wipe
    }
}

/// One power action, optionally preceded by a one-time PXE boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub pxe_once: bool,
    pub action: PowerAction,
}

impl Plan {
    /// The power state the action leads to.
    pub fn expected(self) -> PowerState {
        match self.action {
            PowerAction::Off | PowerAction::Soft => PowerState::Off,
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
        }
    }

    /// "set a one-time PXE boot and power cycled", for conditions and Events.
    pub fn describe(self) -> String {
        let action = match self.action {
            PowerAction::On => "powered on",
            PowerAction::Off => "powered off",
            PowerAction::Cycle => "power cycled",
            PowerAction::Reset => "reset",
            PowerAction::Soft => "asked the OS to shut down",
        };
        if self.pxe_once {
            format!("set a one-time PXE boot and {action}")
        } else {
            action.to_owned()
        }
    }
}

/// How patient the controller is with machines (not with BMC calls: that is `CallPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long after an action the power state must show it.
    pub settle: Duration,
    /// How long a running discovery agent gets to start a wipe, or to power off after one,
    /// before the BMC does it.
    pub agent_grace: Duration,
    /// How long after a PXE boot the agent must start wiping (wipe goal), or the OS be
    /// installed (netboot goal).
    pub boot_timeout: Duration,
    /// Attempts per goal before giving up.
    pub attempts: u32,
    /// Wait before trying again after a failed attempt or an unreachable BMC; doubled for each
    /// further failure, up to ten times this.
    pub backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            settle: Duration::from_secs(30),
            agent_grace: Duration::from_secs(60),
            boot_timeout: Duration::from_secs(30 * 60),
            attempts: 3,
            backoff: Duration::from_secs(30),
        }
    }
}

/// An action that was sent to the BMC for the current goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub plan: Plan,
    pub at: Instant,
}

/// What the controller remembers about one server's current goal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub goal: Goal,
    /// When this goal was first seen.
    pub since: Instant,
    /// The goal before this one, as far as this process saw.
    pub previous: Option<Goal>,
    /// Attempts that were sent (or may have been) for this goal.
    pub tries: u32,
    /// The attempt whose effect is awaited.
    pub last: Option<Sent>,
    /// Nothing is sent before this (backoff after a failure).
    pub not_before: Option<Instant>,
    /// Failures in a row without a successful call, for the backoff.
    pub failures: u32,
    /// Attempts are spent: nothing more is sent until the goal changes or the operator asks.
    pub gave_up: bool,
}

impl Record {
    pub fn new(goal: Goal, now: Instant) -> Record {
        Record {
            goal,
            since: now,
            previous: None,
            tries: 0,
            last: None,
            not_before: None,
            failures: 0,
            gave_up: false,
        }
    }

    /// Moves to `goal` if it differs from the current one (forgetting the attempts); returns
    /// whether it did.
    pub fn follow(&mut self, goal: Goal, now: Instant) -> bool {
        if goal == self.goal {
            return false;
        }
        let previous = self.goal;
        *self = Record::new(goal, now);
        self.previous = Some(previous);
        true
    }

    /// The operator asked for another round after the controller gave up.
    pub fn retry(&mut self, now: Instant) {
        let previous = self.previous;
        *self = Record::new(self.goal, now);
        self.previous = previous;
    }

    /// An action was sent (or may have reached the BMC: its answer was lost).
    pub fn sent(&mut self, plan: Plan, now: Instant) {
        self.tries += 1;
        self.last = Some(Sent { plan, at: now });
        self.not_before = None;
    }

    /// A call failed before the action could have happened (the BMC refused or could not be
    /// reached): try again after a backoff, without spending an attempt.
    pub fn unreachable(&mut self, now: Instant, timing: &Timing) {
        self.failures += 1;
        self.not_before = Some(now + backoff(self.failures, timing));
    }

    /// The awaited attempt had no effect: back off, or give up when the attempts are spent.
    /// Returns whether the controller gave up.
    pub fn failed(&mut self, now: Instant, timing: &Timing) -> bool {
        self.last = None;
        self.failures += 1;
        self.not_before = Some(now + backoff(self.failures, timing));
        self.gave_up = self.tries >= timing.attempts.max(1);
        self.gave_up
    }
}

fn backoff(failures: u32, timing: &Timing) -> Duration {
    let doubled = timing
        .backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(timing.backoff * 10)
}

/// Why the controller is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The power state is unknown (the BMC did not answer the last poll).
    UnknownState,
    /// A running agent may do it itself.
    AgentGrace,
    /// The action's effect on the power state is awaited.
    Settling,
    /// The machine is booting the agent or its Environment.
    Booting,
    /// Backing off after a failure.
    Backoff,
}

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The BMC accepted the action but the power state did not follow within `settle`.
    NoEffect {
        expected: PowerState,
        after: Duration,
    },
    /// The machine was PXE booted, but the agent did not start wiping (or the OS was not
    /// installed) within `boot_timeout`.
    BootTimeout { after: Duration },
}

/// The next step toward the goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: the goal holds, an agent is on it, or the controller gave up.
    Idle,
    /// Decide again at `until` (or when something changes).
    Wait { until: Instant, why: Waiting },
    /// Send this to the BMC.
    Act(Plan),
    /// The awaited attempt failed.
    Failed(Failure),
}

/// The next step for `record.goal`, given the observed power state (`None`: unknown) and
/// whether a discovery agent is wiping the server right now. Once an awaited action's settle
/// time is over, the caller must pass a state read after it.
pub fn next_step(
    record: &Record,
    state: Option<PowerState>,
    agent_wiping: bool,
    now: Instant,
    timing: &Timing,
) -> Step {
    let goal = record.goal;
    if matches!(goal, Goal::LeftAlone(_)) || record.gave_up {
        return Step::Idle;
    }
    // A wiping agent is the wipe goal's success, whoever booted it.
    if goal == Goal::Wipe && agent_wiping {
        return Step::Idle;
    }
    let Some(state) = state else {
        return Step::Wait {
            until: now + timing.settle,
            why: Waiting::UnknownState,
        };
    };
    if let Some(sent) = record.last {
        return judge(goal, sent, state, now, timing);
    }
    if let Some(at) = record.not_before.filter(|at| *at > now) {
        return Step::Wait {
            until: at,
            why: Waiting::Backoff,
        };
    }
    // A discovery agent may be running if this process has not seen the server run its OS.
    let agent_may_run = !matches!(record.previous, Some(Goal::On | Goal::Netboot));
    let grace_ends = record.since + timing.agent_grace;
    let grace = || Step::Wait {
        until: grace_ends,
        why: Waiting::AgentGrace,
    };
    let pxe = |action| {
        Step::Act(Plan {
            pxe_once: true,
            action,
        })
    };
    let plain = |action| {
        Step::Act(Plan {
            pxe_once: false,
            action,
        })
    };
    match (goal, state) {
        (Goal::Off, PowerState::Off) | (Goal::On, PowerState::On) => Step::Idle,
        (Goal::Off, PowerState::On) if agent_may_run && now < grace_ends => grace(),
        (Goal::Off, PowerState::On) => plain(PowerAction::Off),
        (Goal::On, PowerState::Off) => plain(PowerAction::On),
        (Goal::Netboot | Goal::Wipe, PowerState::Off) => pxe(PowerAction::On),
        (Goal::Netboot, PowerState::On) => pxe(PowerAction::Cycle),
        (Goal::Wipe, PowerState::On) if agent_may_run && now < grace_ends => grace(),
        (Goal::Wipe, PowerState::On) => pxe(PowerAction::Cycle),
        (Goal::LeftAlone(_), _) => Step::Idle,
    }
}

/// Whether the attempt `sent` had its effect, is still awaited, or failed.
fn judge(goal: Goal, sent: Sent, state: PowerState, now: Instant, timing: &Timing) -> Step {
    let age = now.saturating_duration_since(sent.at);
    let expected = sent.plan.expected();
    if state != expected {
        return if age < timing.settle {
            Step::Wait {
                until: sent.at + timing.settle,
                why: Waiting::Settling,
            }
        } else {
            Step::Failed(Failure::NoEffect {
                expected,
                after: timing.settle,
            })
        };
    }
    match goal {
        // The state is what was asked for: done.
        Goal::Off | Goal::On | Goal::LeftAlone(_) => Step::Idle,
        // Running; the agent's wipe (or the installation, which changes the goal) is awaited.
        Goal::Wipe | Goal::Netboot if age < timing.boot_timeout => Step::Wait {
            until: sent.at + timing.boot_timeout,
            why: Waiting::Booting,
        },
        Goal::Wipe | Goal::Netboot => Step::Failed(Failure::BootTimeout {
            after: timing.boot_timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            settle: Duration::from_secs(30),
            agent_grace: Duration::from_secs(60),
            boot_timeout: Duration::from_secs(600),
            attempts: 3,
            backoff: Duration::from_secs(10),
        }
    }

    fn facts(accepted: bool, clean: bool, allocated: bool, installed: bool) -> PowerFacts {
        PowerFacts {
            accepted,
            clean,
            allocated,
            installed,
            ..PowerFacts::default()
        }
    }

    const ON: Option<PowerState> = Some(PowerState::On);
    const OFF: Option<PowerState> = Some(PowerState::Off);

    fn act(pxe_once: bool, action: PowerAction) -> Step {
        Step::Act(Plan { pxe_once, action })
    }

    #[test]
    fn the_lifecycle_decides_the_goal() {
        let table = [
            (
                facts(false, false, true, false),
                Goal::LeftAlone(LeftAlone::NotAccepted),
            ),
            (facts(true, false, false, false), Goal::Wipe),
            (facts(true, true, false, false), Goal::Off),
            (facts(true, false, true, false), Goal::Netboot),
            (facts(true, false, true, true), Goal::On),
        ];
        for (facts, want) in table {
            assert_eq!(goal(&facts), want, "{facts:?}");
        }
        let manual = PowerFacts {
            manual: true,
            ..facts(true, false, false, false)
        };
        assert_eq!(goal(&manual), Goal::LeftAlone(LeftAlone::Manual));
        let deleting = PowerFacts {
            deleting: true,
            ..facts(true, true, false, false)
        };
        assert_eq!(goal(&deleting), Goal::LeftAlone(LeftAlone::Deleting));
    }

    #[test]
    fn an_off_machine_is_pxe_booted_for_a_wipe_or_a_netboot_and_a_running_one_cycled() {
        let t0 = Instant::now();
        let released = Record {
            previous: Some(Goal::On),
            ..Record::new(Goal::Wipe, t0)
        };
        assert_eq!(
            next_step(&released, OFF, false, t0, &timing()),
            act(true, PowerAction::On)
        );
        assert_eq!(
            next_step(&released, ON, false, t0, &timing()),
            act(true, PowerAction::Cycle)
        );
        let allocated = Record::new(Goal::Netboot, t0);
        assert_eq!(
            next_step(&allocated, OFF, false, t0, &timing()),
            act(true, PowerAction::On)
        );
        assert_eq!(
            next_step(&allocated, ON, false, t0, &timing()),
            act(true, PowerAction::Cycle)
        );
        let installed = Record::new(Goal::On, t0);
        assert_eq!(
            next_step(&installed, OFF, false, t0, &timing()),
            act(false, PowerAction::On)
        );
        assert_eq!(next_step(&installed, ON, false, t0, &timing()), Step::Idle);
    }

    #[test]
    fn a_running_agent_gets_its_grace_before_the_bmc_steps_in() {
        let t0 = Instant::now();
        // Just accepted while the agent waits: it starts the wipe itself.
        let accepted = Record::new(Goal::Wipe, t0);
        let step = next_step(&accepted, ON, false, t0, &timing());
        assert!(
            matches!(
                step,
                Step::Wait {
                    why: Waiting::AgentGrace,
                    ..
                }
            ),
            "{step:?}"
        );
        assert_eq!(next_step(&accepted, ON, true, t0, &timing()), Step::Idle);
        // No agent turned up: PXE and cycle.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            next_step(&accepted, ON, false, later, &timing()),
            act(true, PowerAction::Cycle)
        );
        // Clean after a wipe: the agent powers off by itself; the BMC only after the grace.
        let clean = Record {
            previous: Some(Goal::Wipe),
            ..Record::new(Goal::Off, t0)
        };
        assert!(matches!(
            next_step(&clean, ON, false, t0, &timing()),
            Step::Wait {
                why: Waiting::AgentGrace,
                ..
            }
        ));
        assert_eq!(next_step(&clean, OFF, false, t0, &timing()), Step::Idle);
        assert_eq!(
            next_step(&clean, ON, false, later, &timing()),
            act(false, PowerAction::Off)
        );
    }

    #[test]
    fn nothing_more_is_sent_while_an_attempt_is_awaited() {
        let t0 = Instant::now();
        let mut record = Record::new(Goal::Off, t0);
        record.previous = Some(Goal::On);
        let plan = Plan {
            pxe_once: false,
            action: PowerAction::Off,
        };
        record.sent(plan, t0);
        let soon = t0 + Duration::from_secs(5);
        assert!(matches!(
            next_step(&record, ON, false, soon, &timing()),
            Step::Wait {
                why: Waiting::Settling,
                ..
            }
        ));
        assert_eq!(next_step(&record, OFF, false, soon, &timing()), Step::Idle);
        // A BMC that said yes but did nothing: a failure, not a second action.
        let late = t0 + Duration::from_secs(31);
        assert_eq!(
            next_step(&record, ON, false, late, &timing()),
            Step::Failed(Failure::NoEffect {
                expected: PowerState::Off,
                after: Duration::from_secs(30)
            })
        );
    }

    #[test]
    fn a_pxe_boot_waits_for_the_agent_or_the_install_then_times_out() {
        let t0 = Instant::now();
        let mut record = Record::new(Goal::Wipe, t0);
        record.sent(
            Plan {
                pxe_once: true,
                action: PowerAction::On,
            },
            t0,
        );
        let booting = t0 + Duration::from_secs(40);
        assert!(matches!(
            next_step(&record, ON, false, booting, &timing()),
            Step::Wait {
                why: Waiting::Booting,
                ..
            }
        ));
        assert_eq!(next_step(&record, ON, true, booting, &timing()), Step::Idle);
        let late = t0 + Duration::from_secs(601);
        assert_eq!(
            next_step(&record, ON, false, late, &timing()),
            Step::Failed(Failure::BootTimeout {
                after: Duration::from_secs(600)
            })
        );
    }

    #[test]
    fn failures_back_off_and_the_attempts_run_out() {
        let t = timing();
        let t0 = Instant::now();
        let mut record = Record::new(Goal::Netboot, t0);
        let plan = Plan {
            pxe_once: true,
            action: PowerAction::On,
        };
        let mut now = t0;
        for attempt in 1..=3 {
            assert_eq!(next_step(&record, OFF, false, now, &t), Step::Act(plan));
            record.sent(plan, now);
            now += t.settle;
            let gave_up = record.failed(now, &t);
            assert_eq!(gave_up, attempt == 3);
            if attempt < 3 {
                assert!(matches!(
                    next_step(&record, OFF, false, now, &t),
                    Step::Wait {
                        why: Waiting::Backoff,
                        ..
                    }
                ));
                now = record.not_before.unwrap();
            }
        }
        assert_eq!(next_step(&record, OFF, false, now, &t), Step::Idle);
        record.retry(now);
        assert_eq!(next_step(&record, OFF, false, now, &t), Step::Act(plan));
    }

    #[test]
    fn an_unreachable_bmc_delays_without_spending_attempts_and_backs_off_to_a_cap() {
        let t = timing();
        let t0 = Instant::now();
        let mut record = Record::new(Goal::Off, t0);
        let mut waits = Vec::new();
        for _ in 0..8 {
            record.unreachable(t0, &t);
            waits.push(record.not_before.unwrap() - t0);
        }
        assert_eq!(record.tries, 0);
        assert_eq!(waits[0], Duration::from_secs(10));
        assert_eq!(waits[1], Duration::from_secs(20));
        assert_eq!(waits[7], Duration::from_secs(100));
        assert!(!record.gave_up);
    }

    #[test]
    fn an_unknown_state_sends_nothing_and_a_new_goal_forgets_the_attempts() {
        let t0 = Instant::now();
        let mut record = Record::new(Goal::Netboot, t0);
        assert!(matches!(
            next_step(&record, None, false, t0, &timing()),
            Step::Wait {
                why: Waiting::UnknownState,
                ..
            }
        ));
        record.sent(
            Plan {
                pxe_once: true,
                action: PowerAction::On,
            },
            t0,
        );
        assert!(!record.follow(Goal::Netboot, t0));
        assert!(record.follow(Goal::On, t0));
        assert_eq!(record.tries, 0);
        assert_eq!(record.last, None);
        assert_eq!(record.previous, Some(Goal::Netboot));
    }
}
