//! The MetalCluster controller: bare metal needs no cluster-wide infrastructure, so a
//! MetalCluster is ready as soon as it names the control plane endpoint (a VIP or load balancer
//! the operator provides, as with Sidero). It reports `status.ready`,
//! `status.initialization.provisioned` (Cluster API v1beta2) and `status.apiEndpoints`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{
    Condition, ConditionStatus, Initialization, MetalCluster, MetalClusterSpec, MetalClusterStatus,
    set_condition,
};

/// Condition type saying whether the cluster's infrastructure is ready.
pub const READY: &str = "Ready";
/// Retry delay after a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("writing the status of MetalCluster {cluster}: {source}")]
pub struct MetalClusterError {
    cluster: String,
    source: kube::Error,
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let clusters: Api<MetalCluster> = Api::all(client.clone());
    Controller::new(clusters, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| async move {
            crate::serve::metrics::reconciled(
                crate::serve::metrics::Controller::metalcluster,
                result.is_ok(),
            );
            if let Err(error) = result {
                debug!(%error, "metalcluster reconcile failed");
            }
        })
        .await;
}

/// The status `spec` calls for, keeping the transition times of `current`'s conditions.
pub fn cluster_status(
    spec: &MetalClusterSpec,
    current: &MetalClusterStatus,
    now: Time,
) -> MetalClusterStatus {
    let mut status = current.clone();
    let endpoint = spec
        .control_plane_endpoint
        .as_ref()
        .filter(|e| !e.host.is_empty() && e.port > 0);
    let condition = match endpoint {
        Some(endpoint) => {
            status.ready = true;
            status.api_endpoints = vec![endpoint.clone()];
            Condition::new(
                READY,
                ConditionStatus::True,
                "ControlPlaneEndpointSet",
                format!("control plane endpoint {}:{}", endpoint.host, endpoint.port),
                now,
            )
        }
        None => {
            status.ready = false;
            status.api_endpoints.clear();
            Condition::new(
                READY,
                ConditionStatus::False,
                "MissingControlPlaneEndpoint",
                "set spec.controlPlaneEndpoint {host, port} to the address that will serve the \
                 cluster's API (a VIP or load balancer in front of the control plane)",
                now,
            )
        }
    };
    status.initialization = Some(Initialization {
        provisioned: status.ready,
    });
    set_condition(&mut status.conditions, condition);
    status
}

async fn reconcile(
    cluster: Arc<MetalCluster>,
    client: Arc<kube::Client>,
) -> Result<Action, MetalClusterError> {
    let current = cluster.status.clone().unwrap_or_default();
    let wanted = cluster_status(&cluster.spec, &current, Time(jiff::Timestamp::now()));
    if wanted == current {
        return Ok(Action::await_change());
    }
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let api: Api<MetalCluster> = Api::namespaced((*client).clone(), &namespace);
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": wanted })),
    )
    .await
    .map_err(|source| MetalClusterError {
        cluster: format!("{namespace}/{}", cluster.name_any()),
        source,
    })?;
    Ok(Action::await_change())
}

fn error_policy(
    cluster: Arc<MetalCluster>,
    error: &MetalClusterError,
    _client: Arc<kube::Client>,
) -> Action {
    warn!(cluster = %cluster.name_any(), %error, "metalcluster reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiEndpoint;
    use crate::controllers::tests::at;

    #[test]
    fn ready_with_an_endpoint_and_says_what_is_missing_without() {
        let with = MetalClusterSpec {
            control_plane_endpoint: Some(ApiEndpoint {
                host: "10.0.0.100".into(),
                port: 6443,
            }),
        };
        let status = cluster_status(&with, &MetalClusterStatus::default(), at(1));
        assert!(
            status.ready
                && status
                    .initialization
                    .as_ref()
                    .is_some_and(|i| i.provisioned)
        );
        assert_eq!(status.api_endpoints[0].host, "10.0.0.100");

        let again = cluster_status(&with, &status, at(99));
        assert_eq!(
            again, status,
            "a second pass changes nothing, not even times"
        );

        let without = cluster_status(&MetalClusterSpec::default(), &status, at(100));
        assert!(!without.ready && without.api_endpoints.is_empty());
        let condition = &without.conditions[0];
        assert_eq!(
            condition.reason.as_deref(),
            Some("MissingControlPlaneEndpoint")
        );
        assert!(
            condition
                .message
                .as_deref()
                .is_some_and(|m| m.contains("spec.controlPlaneEndpoint"))
        );
    }
}
