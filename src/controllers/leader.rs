//! Leader election for the controllers (real-cluster mode): only the replica holding the
//! `coordination.k8s.io/v1` Lease runs them; it renews the Lease before it expires and releases
//! it on shutdown, so a successor starts at once instead of after a lease duration. The boot
//! plane is not elected: every replica serves its own provisioning network.
//!
//! The Lease protocol is `kube-lease-manager`'s (server-side apply, so two candidates taking a
//! free Lease at once conflict and exactly one wins). Correctness of allocation does not rest on
//! it: should two replicas ever reconcile at once (a partition longer than the grace period),
//! the ServerBinding lock still hands each server out once (decision 39). Election only saves
//! the duplicated work and the conflicts.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Name of the Lease the controllers' replicas compete for.
pub const LEASE_NAME: &str = "siderite-controllers";

/// Delay before asking the API again after an election error (unreachable API, conflict).
const RETRY: Duration = Duration::from_secs(2);

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity, written to `spec.holderIdentity` (unique per replica).
    pub identity: String,
    /// `spec.leaseDurationSeconds`: how long a Lease not renewed stays held.
    pub lease_duration: Duration,
    /// How long before expiry the holder renews (also the clock skew tolerated between nodes).
    pub renew_before: Duration,
}

impl LeaderConfig {
    /// An identity for this process: host name and a random suffix, so two replicas on one host
    /// (or a restarted one) never mistake each other's Lease for their own.
    pub fn default_identity() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "siderite".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..8])
    }
}

/// Runs `start` with a fresh token each time this replica becomes the leader and cancels that
/// token when it stops being one. Returns after `shutdown`, having stopped the controllers and
/// released the Lease if it held it.
pub async fn run_elected(
    client: kube::Client,
    config: LeaderConfig,
    shutdown: CancellationToken,
    start: impl Fn(CancellationToken),
) {
    let Some(manager) = build(&client, &config, &shutdown).await else {
        return;
    };
    let mut leading: Option<CancellationToken> = None;
    loop {
        // `changed` renews the Lease while held and waits for it while not; it returns only
        // when this replica's leadership flips (or on an API error).
        let changed = tokio::select! {
            () = shutdown.cancelled() => break,
            changed = manager.changed() => changed,
        };
        match changed {
            Ok(true) => {
                info!(identity = %config.identity, lease = LEASE_NAME, "leading: starting the controllers");
                let token = shutdown.child_token();
                start(token.clone());
                leading = Some(token);
            }
            Ok(false) => {
                warn!(identity = %config.identity, lease = LEASE_NAME, "lost the lease: stopping the controllers");
                if let Some(token) = leading.take() {
                    token.cancel();
                }
            }
            Err(error) => {
                // The controllers keep running through a short API outage: the Lease is still
                // ours until it expires, and the next renewal says whether it still is.
                warn!(identity = %config.identity, %error, "leader election failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
    if let Some(token) = leading.take() {
        token.cancel();
        match manager.release().await {
            Ok(()) => info!(identity = %config.identity, "lease released"),
            Err(error) => warn!(%error, "releasing the lease failed; it expires by itself"),
        }
    }
}

/// The Lease manager, retried until the API answers or `shutdown`.
async fn build(
    client: &kube::Client,
    config: &LeaderConfig,
    shutdown: &CancellationToken,
) -> Option<LeaseManager> {
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.lease_duration.as_secs().max(1))
            .with_grace(config.renew_before.as_secs().max(1))
            .build()
            .await;
        match built {
            Ok(manager) => return Some(manager),
            Err(error) => {
                warn!(%error, namespace = %config.namespace, lease = LEASE_NAME,
                      "cannot use the leader Lease (does the kubeconfig allow leases in that namespace?); retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}
