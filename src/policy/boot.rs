//! The boot decision: what a machine's iPXE is told to do when it asks the appliance, as a plain
//! function over the facts the controllers know about the machine (pure: no I/O, no clock).
//!
//! Precedence, first match wins (each rule is a test below):
//!
//! 1. Unknown machine (no `Server` yet) → the discovery environment, so it gets registered.
//! 2. Cordoned, or netboot disallowed → boot from disk. The operator's "hands off" wins over
//!    every other state, including servers not yet accepted: a cordoned server is never handed
//!    the agent or an Environment.
//! 3. Not accepted → discovery. Acceptance is the operator's consent to touch the machine; until
//!    then it only runs the (read-only) discovery agent, even if a stale binding exists.
//! 4. Accepted but not allocated (not clean, or clean and in the pool) → discovery: the agent
//!    wipes an unclean server and keeps the inventory of a pooled one fresh.
//! 5. Allocated and its Environment not yet delivered, or `pxeBootAlways` → its Environment
//!    (resolved Server > ServerClass > `default` by the caller); if none could be resolved or
//!    it is not ready, [`BootDecision::EnvironmentUnavailable`] so the machine retries later.
//! 6. Allocated and installed → boot from disk.
//!
//! A disk-image Environment (`spec.image`) is deployed by the discovery agent, so rule 5 sends
//! such a server to discovery, and once the image is written it always boots from disk:
//! `pxeBootAlways` would only loop it through the agent.
//!
//! `clean` does not matter once a server is allocated: an allocated server stops being clean as
//! soon as its Environment writes to the disk, and that must not send it back to discovery.

/// How a server is told to boot from its disk; shared with the `Server` resource so the spec's
/// `bootFromDiskMethod` feeds the decision unchanged. The appliance default is `IpxeExit`.
pub use crate::api::BootFromDiskMethod;

/// Everything the boot plane knows about the machine behind one iPXE request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineFacts {
    /// The matching `Server`; `None` for a machine the appliance has never seen.
    pub server: Option<ServerFacts>,
}

/// The facts about a known `Server` that the boot decision depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// `spec.accepted`: the operator allowed Siderite to manage this server.
    pub accepted: bool,
    /// `status.isClean`: the disks were wiped since the server was last used.
    pub clean: bool,
    /// `spec.cordoned`: the operator took the server out of service.
    pub cordoned: bool,
    /// A `ServerBinding` ties the server to a `MetalMachine`.
    pub allocated: bool,
    /// The allocated Environment was delivered (the server PXE-booted it and installed).
    pub environment_delivered: bool,
    /// `spec.pxeBootAlways`: netboot the Environment on every boot, even once installed.
    pub pxe_boot_always: bool,
    /// Whether the appliance may netboot this server at all (false: always boot from disk).
    pub netboot_allowed: bool,
    /// `spec.bootFromDiskMethod`; `None` falls back to the appliance default.
    pub boot_from_disk: Option<BootFromDiskMethod>,
    /// The Environment, already resolved Server > ServerClass > `default` and ready; `None`
    /// when none resolves or its assets are not downloaded yet.
    pub environment: Option<ResolvedEnvironment>,
}

/// A ready Environment, by how it reaches the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedEnvironment {
    /// Netbooted: kernel, initramfs and arguments.
    Netboot(NetbootEnvironment),
    /// A disk image the discovery agent writes (`spec.image`).
    DiskImage,
}

/// A resolved, ready Environment: what the HTTP layer needs to render its iPXE script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetbootEnvironment {
    /// Name of the `Environment` resource, for logs.
    pub name: String,
    /// The kernel: an absolute `http://`/`https://` URL, or a path under the appliance's assets
    /// directory (served at `/assets/`).
    pub kernel: String,
    /// The initramfs, in the same form as `kernel`.
    pub initrd: String,
    /// Kernel command-line arguments, one per element.
    pub args: Vec<String>,
}

/// The answer to a machine's iPXE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootDecision {
    /// Boot the discovery environment (the Siderite agent).
    Discovery,
    /// Boot this Environment.
    Environment(NetbootEnvironment),
    /// The server should boot an Environment but none is resolvable or ready yet; the machine
    /// is told to retry rather than being sent to discovery or to an empty disk.
    EnvironmentUnavailable,
    /// Leave the network boot and boot from the local disk with this method.
    BootFromDisk(BootFromDiskMethod),
}

/// Decides what the machine described by `facts` boots; `default_disk_method` applies when the
/// server does not name its own boot-from-disk method. See the module docs for the precedence.
pub fn decide_boot(facts: &MachineFacts, default_disk_method: BootFromDiskMethod) -> BootDecision {
    let Some(server) = &facts.server else {
        return BootDecision::Discovery;
    };
    let disk = BootDecision::BootFromDisk(server.boot_from_disk.unwrap_or(default_disk_method));

    if server.cordoned || !server.netboot_allowed {
        return disk;
    }
    if !server.accepted || !server.allocated {
        return BootDecision::Discovery;
    }
    let disk_image = server.environment == Some(ResolvedEnvironment::DiskImage);
    if server.environment_delivered && (!server.pxe_boot_always || disk_image) {
        return disk;
    }
    match &server.environment {
        Some(ResolvedEnvironment::Netboot(environment)) => {
            BootDecision::Environment(environment.clone())
        }
        Some(ResolvedEnvironment::DiskImage) => BootDecision::Discovery,
        None => BootDecision::EnvironmentUnavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: BootFromDiskMethod = BootFromDiskMethod::IpxeExit;

    fn talos() -> NetbootEnvironment {
        NetbootEnvironment {
            name: "default".to_owned(),
            kernel: "env/default/vmlinuz".to_owned(),
            initrd: "env/default/initramfs.xz".to_owned(),
            args: vec!["talos.platform=metal".to_owned()],
        }
    }

    /// An accepted, clean, unallocated server in the pool: the baseline each test changes.
    fn pooled() -> ServerFacts {
        ServerFacts {
            accepted: true,
            clean: true,
            cordoned: false,
            allocated: false,
            environment_delivered: false,
            pxe_boot_always: false,
            netboot_allowed: true,
            boot_from_disk: None,
            environment: Some(ResolvedEnvironment::Netboot(talos())),
        }
    }

    fn allocated() -> ServerFacts {
        ServerFacts {
            allocated: true,
            clean: false,
            ..pooled()
        }
    }

    fn installed() -> ServerFacts {
        ServerFacts {
            environment_delivered: true,
            ..allocated()
        }
    }

    fn decide(server: ServerFacts) -> BootDecision {
        decide_boot(
            &MachineFacts {
                server: Some(server),
            },
            DEFAULT,
        )
    }

    #[test]
    fn unknown_machine_boots_discovery() {
        assert_eq!(
            decide_boot(&MachineFacts::default(), DEFAULT),
            BootDecision::Discovery
        );
    }

    #[test]
    fn unaccepted_server_boots_discovery() {
        let server = ServerFacts {
            accepted: false,
            clean: false,
            ..pooled()
        };
        assert_eq!(decide(server), BootDecision::Discovery);
    }

    #[test]
    fn accepted_unclean_server_boots_discovery_to_be_wiped() {
        let server = ServerFacts {
            clean: false,
            ..pooled()
        };
        assert_eq!(decide(server), BootDecision::Discovery);
    }

    #[test]
    fn pooled_server_boots_discovery() {
        assert_eq!(decide(pooled()), BootDecision::Discovery);
    }

    #[test]
    fn allocated_server_boots_its_environment_until_delivered() {
        assert_eq!(decide(allocated()), BootDecision::Environment(talos()));
    }

    #[test]
    fn installed_server_with_pxe_boot_always_boots_its_environment() {
        let server = ServerFacts {
            pxe_boot_always: true,
            ..installed()
        };
        assert_eq!(decide(server), BootDecision::Environment(talos()));
    }

    #[test]
    fn installed_server_boots_from_disk_with_the_default_method() {
        assert_eq!(
            decide(installed()),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }

    #[test]
    fn installed_server_boots_from_disk_with_its_own_method() {
        let server = ServerFacts {
            boot_from_disk: Some(BootFromDiskMethod::IpxeSanboot),
            ..installed()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeSanboot)
        );
    }

    #[test]
    fn appliance_default_method_applies_when_server_names_none() {
        let decision = decide_boot(
            &MachineFacts {
                server: Some(installed()),
            },
            BootFromDiskMethod::Http404,
        );
        assert_eq!(
            decision,
            BootDecision::BootFromDisk(BootFromDiskMethod::Http404)
        );
    }

    #[test]
    fn cordoned_server_boots_from_disk() {
        let server = ServerFacts {
            cordoned: true,
            ..pooled()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }

    #[test]
    fn server_with_netboot_disallowed_boots_from_disk() {
        let server = ServerFacts {
            netboot_allowed: false,
            ..pooled()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }

    #[test]
    fn cordon_wins_over_not_accepted() {
        let server = ServerFacts {
            accepted: false,
            cordoned: true,
            ..pooled()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }

    #[test]
    fn cordon_wins_over_an_undelivered_environment() {
        let server = ServerFacts {
            cordoned: true,
            boot_from_disk: Some(BootFromDiskMethod::Http404),
            ..allocated()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::Http404)
        );
    }

    #[test]
    fn netboot_disallowed_wins_over_pxe_boot_always() {
        let server = ServerFacts {
            netboot_allowed: false,
            pxe_boot_always: true,
            ..installed()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }

    #[test]
    fn not_accepted_wins_over_allocation() {
        let server = ServerFacts {
            accepted: false,
            ..allocated()
        };
        assert_eq!(decide(server), BootDecision::Discovery);
    }

    #[test]
    fn allocation_wins_over_not_clean() {
        // `allocated()` is unclean, as a server is once its Environment touched the disk.
        assert!(!allocated().clean);
        assert_eq!(decide(allocated()), BootDecision::Environment(talos()));
    }

    #[test]
    fn allocated_server_with_a_disk_image_boots_the_agent_then_its_disk() {
        let image = ServerFacts {
            environment: Some(ResolvedEnvironment::DiskImage),
            ..allocated()
        };
        assert_eq!(decide(image.clone()), BootDecision::Discovery);
        let written = ServerFacts {
            environment_delivered: true,
            pxe_boot_always: true,
            ..image
        };
        assert_eq!(
            decide(written),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }

    #[test]
    fn allocated_server_without_a_ready_environment_is_told_to_retry() {
        let server = ServerFacts {
            environment: None,
            ..allocated()
        };
        assert_eq!(decide(server), BootDecision::EnvironmentUnavailable);
    }

    #[test]
    fn installed_server_boots_from_disk_even_without_an_environment() {
        let server = ServerFacts {
            environment: None,
            ..installed()
        };
        assert_eq!(
            decide(server),
            BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit)
        );
    }
}
