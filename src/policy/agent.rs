//! What the discovery agent on a machine is told to do next, and whether a wipe it reported
//! leaves the server clean: plain functions over the Server's state (no I/O, no clock).
//!
//! Directive precedence, first match wins:
//! 1. Not accepted → wait. The operator has not consented; the agent only keeps its inventory
//!    fresh (Sidero's agent rebooted in a loop here, which is hard on machines without a BMC).
//! 2. Allocated → reboot, so that the machine netboots its Environment or, once installed,
//!    boots its disk; except for a disk-image Environment not yet written: deploy it (or wait
//!    while the image is not cached, or after a deployment failed during this boot).
//! 3. Not clean and no wipe failed during this boot → wipe in the Server's mode, else the
//!    appliance default.
//! 4. Not clean and a wipe failed during this boot → wait: the failure is on the Server for the
//!    operator to read, and the next boot retries instead of hammering a broken disk.
//! 5. Clean and unallocated → power off: the server is in the pool.

use crate::api::StorageDevice;
use crate::api::agent::{
    ConfigDriveSource, Directive, DiskOutcome, DiskResult, ImageDeployment, WipeMode,
};

/// The state of a Server that decides its agent's next step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentFacts {
    pub accepted: bool,
    pub clean: bool,
    pub allocated: bool,
    /// A wipe reported failure since the machine's current boot.
    pub wipe_failed_this_boot: bool,
    /// `spec.wipeMode`, if set.
    pub wipe_mode: Option<WipeMode>,
    /// The allocated server's OS is installed (its `Installed` condition).
    pub installed: bool,
    /// The allocated server's Environment is a disk image the agent writes.
    pub image: Option<ImageStep>,
    /// A deployment reported failure since the machine's current boot.
    pub deploy_failed_this_boot: bool,
}

/// A disk-image Environment, as far as the agent is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageStep {
    /// The image is cached and verified: write it and this config drive.
    Ready {
        image: ImageDeployment,
        config_drive: ConfigDriveSource,
    },
    /// The image is not cached yet, or the allocation has no token for its config drive.
    NotReady,
}

/// The agent's next step.
pub fn directive(facts: &AgentFacts, default_mode: WipeMode) -> Directive {
    if !facts.accepted {
        Directive::Wait
    } else if facts.allocated {
        match &facts.image {
            _ if facts.installed => Directive::Reboot,
            Some(ImageStep::Ready { .. }) if facts.deploy_failed_this_boot => Directive::Wait,
            Some(ImageStep::Ready {
                image,
                config_drive,
            }) => Directive::Deploy {
                image: image.clone(),
                config_drive: config_drive.clone(),
            },
            Some(ImageStep::NotReady) => Directive::Wait,
            None => Directive::Reboot,
        }
    } else if !facts.clean && !facts.wipe_failed_this_boot {
        Directive::Wipe {
            mode: facts.wipe_mode.unwrap_or(default_mode),
        }
    } else if !facts.clean {
        Directive::Wait
    } else {
        Directive::PowerOff
    }
}

/// Whether a disk must be wiped (and so must appear as wiped in the report).
pub fn must_wipe(device: &StorageDevice) -> bool {
    device.read_only != Some(true) && device.removable != Some(true)
}

/// The verdict on a wipe report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WipeVerdict {
    /// Every disk that must be wiped reported success.
    Clean { wiped: Vec<String> },
    /// At least one disk failed or is missing from the report; one line per problem.
    Dirty { problems: Vec<String> },
}

/// Judges a wipe report against the inventory: the server is clean only when every disk that
/// must be wiped (per the inventory the agent registered) reported success. A disk the report
/// leaves out counts as a failure, so an agent bug cannot make a dirty disk look clean.
pub fn judge_wipe(inventory: &[StorageDevice], report: &[DiskOutcome]) -> WipeVerdict {
    let mut problems = Vec::new();
    let mut wiped = Vec::new();
    for outcome in report {
        match &outcome.result {
            DiskResult::Wiped => wiped.push(outcome.name.clone()),
            DiskResult::Skipped { .. } => {}
            DiskResult::Failed { error } => problems.push(format!("{}: {error}", outcome.name)),
        }
    }
    for device in inventory.iter().filter(|d| must_wipe(d)) {
        let Some(name) = device.name.as_deref() else {
            continue;
        };
        if !report.iter().any(|o| o.name == name) {
            problems.push(format!("{name}: missing from the agent's wipe report"));
        } else if !wiped.iter().any(|w| w == name)
            && !problems.iter().any(|p| p.starts_with(&format!("{name}:")))
        {
            problems.push(format!(
                "{name}: skipped by the agent, but the inventory says it is writable"
            ));
        }
    }
    if problems.is_empty() {
        WipeVerdict::Clean { wiped }
    } else {
        WipeVerdict::Dirty { problems }
    }
}

/// One line summarising wipe progress, e.g. `vda 50% of 1.0 GiB, nvme0n1 done`.
pub fn progress_message(disks: &[crate::api::agent::DiskProgress]) -> String {
    disks
        .iter()
        .map(|d| {
            if d.total_bytes > 0 && d.done_bytes >= d.total_bytes {
                format!("{} done", d.name)
            } else {
                let percent = (d.done_bytes.saturating_mul(100))
                    .checked_div(d.total_bytes)
                    .unwrap_or(0);
                format!(
                    "{} {percent}% of {:.1} GiB",
                    d.name,
                    d.total_bytes as f64 / f64::from(1u32 << 30)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent::DiskProgress;

    fn accepted() -> AgentFacts {
        AgentFacts {
            accepted: true,
            ..AgentFacts::default()
        }
    }

    #[test]
    fn unaccepted_servers_wait_even_when_dirty_or_allocated() {
        let facts = AgentFacts {
            allocated: true,
            ..AgentFacts::default()
        };
        assert_eq!(directive(&facts, WipeMode::Fast), Directive::Wait);
    }

    #[test]
    fn accepted_dirty_server_is_wiped_in_its_own_mode_before_the_default() {
        assert_eq!(
            directive(&accepted(), WipeMode::Fast),
            Directive::Wipe {
                mode: WipeMode::Fast
            }
        );
        let zeroes = AgentFacts {
            wipe_mode: Some(WipeMode::Zeroes),
            ..accepted()
        };
        assert_eq!(
            directive(&zeroes, WipeMode::Fast),
            Directive::Wipe {
                mode: WipeMode::Zeroes
            }
        );
    }

    #[test]
    fn failed_wipe_waits_instead_of_retrying_in_the_same_boot() {
        let failed = AgentFacts {
            wipe_failed_this_boot: true,
            ..accepted()
        };
        assert_eq!(directive(&failed, WipeMode::Fast), Directive::Wait);
    }

    #[test]
    fn clean_pooled_server_powers_off_and_allocated_one_reboots() {
        let clean = AgentFacts {
            clean: true,
            ..accepted()
        };
        assert_eq!(directive(&clean, WipeMode::Fast), Directive::PowerOff);
        let allocated = AgentFacts {
            allocated: true,
            ..clean
        };
        assert_eq!(directive(&allocated, WipeMode::Fast), Directive::Reboot);
    }

    fn ready_image() -> ImageStep {
        ImageStep::Ready {
            image: ImageDeployment {
                url: "http://10.0.0.2:8081/environments/kubeadm/image".into(),
                checksum: crate::api::agent::ImageChecksum::Sha256("00".into()),
                format: crate::api::ImageFormat::Raw,
                compression: crate::api::ImageCompression::None,
                root_device_hints: None,
            },
            config_drive: ConfigDriveSource {
                url: "http://10.0.0.2:8081/nocloud/s/t/".into(),
            },
        }
    }

    #[test]
    fn allocated_server_with_a_disk_image_deploys_it_once_then_reboots() {
        let allocated = AgentFacts {
            allocated: true,
            image: Some(ready_image()),
            ..accepted()
        };
        assert!(matches!(
            directive(&allocated, WipeMode::Fast),
            Directive::Deploy { .. }
        ));
        let failed = AgentFacts {
            deploy_failed_this_boot: true,
            ..allocated.clone()
        };
        assert_eq!(directive(&failed, WipeMode::Fast), Directive::Wait);
        let written = AgentFacts {
            installed: true,
            ..allocated.clone()
        };
        assert_eq!(directive(&written, WipeMode::Fast), Directive::Reboot);
        let not_cached = AgentFacts {
            image: Some(ImageStep::NotReady),
            ..allocated
        };
        assert_eq!(directive(&not_cached, WipeMode::Fast), Directive::Wait);
    }

    fn disk(name: &str) -> StorageDevice {
        StorageDevice {
            name: Some(name.into()),
            ..StorageDevice::default()
        }
    }

    fn outcome(name: &str, result: DiskResult) -> DiskOutcome {
        DiskOutcome {
            name: name.into(),
            size_bytes: 1 << 30,
            result,
        }
    }

    #[test]
    fn wipe_is_clean_only_when_every_writable_disk_reported_success() {
        let cd = StorageDevice {
            read_only: Some(true),
            ..disk("sr0")
        };
        let inventory = [disk("vda"), disk("nvme0n1"), cd];
        let report = [
            outcome("vda", DiskResult::Wiped),
            outcome("nvme0n1", DiskResult::Wiped),
            outcome(
                "sr0",
                DiskResult::Skipped {
                    reason: "read-only".into(),
                },
            ),
        ];
        assert_eq!(
            judge_wipe(&inventory, &report),
            WipeVerdict::Clean {
                wiped: vec!["vda".into(), "nvme0n1".into()]
            }
        );
    }

    #[test]
    fn failed_missing_and_wrongly_skipped_disks_each_leave_the_server_dirty() {
        let inventory = [disk("vda"), disk("nvme0n1"), disk("sda")];
        let report = [
            outcome(
                "vda",
                DiskResult::Failed {
                    error: "I/O error at 4096".into(),
                },
            ),
            outcome(
                "sda",
                DiskResult::Skipped {
                    reason: "removable".into(),
                },
            ),
        ];
        let WipeVerdict::Dirty { problems } = judge_wipe(&inventory, &report) else {
            panic!("a failed disk must leave the server dirty");
        };
        assert_eq!(
            problems,
            vec![
                "vda: I/O error at 4096".to_owned(),
                "nvme0n1: missing from the agent's wipe report".to_owned(),
                "sda: skipped by the agent, but the inventory says it is writable".to_owned(),
            ]
        );
    }

    #[test]
    fn progress_message_names_each_disk() {
        let message = progress_message(&[
            DiskProgress {
                name: "vda".into(),
                done_bytes: 1 << 29,
                total_bytes: 1 << 30,
            },
            DiskProgress {
                name: "nvme0n1".into(),
                done_bytes: 1 << 20,
                total_bytes: 1 << 20,
            },
        ]);
        assert_eq!(message, "vda 50% of 1.0 GiB, nvme0n1 done");
    }
}
