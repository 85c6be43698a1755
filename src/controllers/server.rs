//! The Server controller: keeps the `Accepted` condition true to `spec.accepted` once a server
//! has been accepted, and raises an `Accepted` Event when an operator accepts one, so `kubectl describe server` tells the
//! story (Registered → Accepted → Wiping → Clean) in order. Registration, wiping and cleanliness
//! are written by the agent API, which has the facts first-hand. It also keeps the
//! `hardware.siderite.dev/` labels (`policy::labels`) true to the inventory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::api::{Condition, ConditionStatus, Server, find_condition, set_condition};
use crate::policy::labels;
use crate::serve::resource_caches::{ServerChange, ServerFeed};
use crate::serve::servers::update_status;

/// Condition type for the operator's acceptance.
pub const ACCEPTED: &str = "Accepted";

/// At most this many servers reconcile at once: a rack's worth of servers registering (or the
/// first list of 10,000) would otherwise each hold a request and its parsed answer at the same
/// time.
const CONCURRENCY: u16 = 16;

/// Retry delay after a failed reconcile (the API was unreachable or a write conflicted).
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerControllerError {
    #[error("writing the status of Server {server}: {source}")]
    Status { server: String, source: kube::Error },
    #[error("writing the inventory labels of Server {server}: {source}")]
    Labels { server: String, source: kube::Error },
}

struct Context {
    servers: Api<Server>,
    recorder: Recorder,
}

/// Runs the controller on the process's Server feed until `shutdown` is cancelled.
pub async fn run(client: kube::Client, feed: ServerFeed, shutdown: CancellationToken) {
    let servers: Api<Server> = Api::all(client.clone());
    let context = Arc::new(Context {
        servers: servers.clone(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "siderite".into(),
                instance: None,
            },
        ),
    });
    // The feed's store and changes, not a watch of its own: one copy of the Servers per
    // process (decision 64). A deleted server needs nothing from this controller.
    let triggers = feed.subscribe().flat_map(|change| {
        futures::stream::iter(match change {
            ServerChange::Listed(all) => all,
            ServerChange::Applied(server) => vec![server],
            ServerChange::Deleted(_) => Vec::new(),
        })
    });
    Controller::for_shared_stream(triggers, feed.store().clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            crate::serve::metrics::reconciled(
                crate::serve::metrics::Controller::server,
                result.is_ok(),
            );
            if let Err(error) = result {
                tracing::debug!(%error, "server reconcile failed");
            }
        })
        .await;
}

/// What the `Accepted` condition should say for this `spec.accepted`.
fn accepted_condition(name: &str, accepted: bool, now: Time) -> Condition {
    if accepted {
        Condition::new(
            ACCEPTED,
            ConditionStatus::True,
            "AcceptedByOperator",
            "the server is managed by Siderite: it is wiped, then pooled",
            now,
        )
    } else {
        Condition::new(
            ACCEPTED,
            ConditionStatus::False,
            "AwaitingAcceptance",
            format!(
                "to admit it: kubectl patch server {name} --type merge -p '{{\"spec\":{{\"accepted\":true}}}}'"
            ),
            now,
        )
        .with_severity(Some(crate::api::ConditionSeverity::Info))
    }
}

async fn reconcile(
    server: Arc<Server>,
    context: Arc<Context>,
) -> Result<Action, ServerControllerError> {
    let name = server.name_any();
    sync_inventory_labels(&server, &context.servers).await?;
    let accepted = server.spec.accepted;
    let current = server
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, ACCEPTED))
        .map(|c| c.status);
    let wanted = if accepted {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    // A server that was never accepted needs no condition (its Registered condition already
    // says how to accept it): writing one would only cost a status write per discovered server.
    let nothing_to_say = current.is_none() && !accepted;
    if current == Some(wanted) || nothing_to_say || server.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Time(jiff::Timestamp::now());
    let written = update_status(&context.servers, &name, |latest, status| {
        set_condition(
            &mut status.conditions,
            accepted_condition(&name, latest.spec.accepted, now.clone()),
        )
    })
    .await
    .map_err(|source| ServerControllerError::Status {
        server: name.clone(),
        source,
    })?;
    if let Some(written) = written
        && accepted
        && written.spec.accepted
    {
        tracing::info!(server = %name, "server accepted");
        let event = Event {
            type_: EventType::Normal,
            reason: "Accepted".into(),
            note: Some("accepted by the operator: the server will be wiped and pooled".into()),
            action: "Accept".into(),
            secondary: None,
        };
        if let Err(error) = context
            .recorder
            .publish(&event, &written.object_ref(&()))
            .await
        {
            tracing::warn!(server = %name, %error, "could not publish the Accepted Event");
        }
    }
    Ok(Action::await_change())
}

/// Makes the `hardware.siderite.dev/` labels match the inventory: adds and updates them, and
/// removes those the inventory no longer implies. Other labels are the operator's.
async fn sync_inventory_labels(
    server: &Server,
    servers: &Api<Server>,
) -> Result<(), ServerControllerError> {
    let wanted = server
        .spec
        .hardware
        .as_ref()
        .map(labels::inventory_labels)
        .unwrap_or_default();
    let current: BTreeMap<String, String> = server
        .labels()
        .iter()
        .filter(|(k, _)| k.starts_with(labels::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if wanted == current || server.meta().deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut patch = serde_json::Map::new();
    for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
        patch.insert(key.clone(), serde_json::Value::Null);
    }
    for (key, value) in wanted {
        patch.insert(key, serde_json::Value::String(value));
    }
    let patch = serde_json::json!({ "metadata": { "labels": patch } });
    servers
        .patch(
            &server.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| ServerControllerError::Labels {
            server: server.name_any(),
            source,
        })?;
    Ok(())
}

fn error_policy(
    _server: Arc<Server>,
    error: &ServerControllerError,
    _context: Arc<Context>,
) -> Action {
    tracing::warn!(%error, "server reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::tests::at;

    #[test]
    fn unaccepted_condition_tells_the_operator_the_command() {
        let condition = accepted_condition("abc", false, at(1));
        assert_eq!(condition.status, ConditionStatus::False);
        assert!(
            condition
                .message
                .as_deref()
                .is_some_and(|m| m.contains("kubectl patch server abc --type merge")),
            "{condition:?}"
        );
    }

    #[test]
    fn accepted_condition_is_true_without_severity() {
        let condition = accepted_condition("abc", true, at(1));
        assert_eq!(condition.status, ConditionStatus::True);
        assert_eq!(condition.severity, None);
    }
}
