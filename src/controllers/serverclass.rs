//! The ServerClass controller: keeps `status.serversAvailable` and `status.serversInUse` true to
//! the Servers that a class selects (`policy::serverclass`), reports an invalid class in its
//! `Valid` condition, and makes sure the built-in class `any` exists.
//!
//! Server changes re-queue every class, at most once per [`TRIGGER_EVERY`] (a burst of changes
//! becomes one round); each reconcile reads the class's members from the shared
//! [`Pool`](super::pool::Pool) index, which rematches only servers whose inventory or labels
//! changed, and writes the status only when it changed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::pool::Pool;
use crate::api::{
    Condition, ConditionStatus, Server, ServerClass, ServerClassSpec, ServerClassStatus,
    set_condition,
};
use crate::policy::allocate;
use crate::policy::serverclass::ClassError;

/// Condition type saying whether a class's qualifiers are valid.
pub const VALID: &str = "Valid";
/// The built-in class that selects every server (Sidero has it too).
pub const ANY: &str = "any";

/// Retry delay after a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);
/// Server changes re-queue the classes at most this often. A status lists up to thousands of
/// names, and the API server keeps every version it writes in its watch history for a while:
/// rewriting 100 classes four times a second while 1,000 machines were allocated took the
/// appliance past 3 GB (docs/benchmarks.md). A status two seconds late misleads nobody.
pub const TRIGGER_EVERY: Duration = Duration::from_secs(2);
/// Class reconciles that run at once.
const CONCURRENCY: u16 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ServerClassControllerError {
    #[error("writing the status of ServerClass {class}: {source}")]
    Status { class: String, source: kube::Error },
}

struct Context {
    classes: Api<ServerClass>,
    /// Every class, so that the pool matches all new ones in one pass.
    class_store: Store<ServerClass>,
    pool: Pool,
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(client: kube::Client, pool: Pool, shutdown: CancellationToken) {
    let classes: Api<ServerClass> = Api::all(client);
    ensure_any(&classes).await;

    // Statuses computed before the cache holds every server would list too few.
    tokio::select! {
        () = pool.ready() => {}
        () = shutdown.cancelled() => return,
    }
    let controller = Controller::new(classes.clone(), watcher::Config::default());
    let triggers = pool.triggers(TRIGGER_EVERY);
    let context = Arc::new(Context {
        classes,
        class_store: controller.store(),
        pool,
    });
    controller
        // Each reconcile builds, sends and receives a status of up to thousands of names: a
        // hundred at once held a gigabyte of transient JSON between them (docs/benchmarks.md).
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_all_on(triggers)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            crate::serve::metrics::reconciled(
                crate::serve::metrics::Controller::serverclass,
                result.is_ok(),
            );
            if let Err(error) = result {
                debug!(%error, "serverclass reconcile failed");
            }
        })
        .await;
}

/// Creates the built-in class `any` (empty qualifiers: every server) unless it exists.
async fn ensure_any(classes: &Api<ServerClass>) {
    let any = ServerClass::new(ANY, ServerClassSpec::default());
    match classes.create(&PostParams::default(), &any).await {
        Ok(_) => info!("created the built-in ServerClass {ANY}"),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => warn!(%error, "cannot create the built-in ServerClass {ANY}"),
    }
}

/// What a class's status should be, given the servers it selects (or why it selects none):
/// names sorted, available being the selected servers that are accepted, clean, not cordoned
/// and not in use.
pub fn class_status(selected: Result<&[Arc<Server>], &ClassError>, now: Time) -> ServerClassStatus {
    let mut status = ServerClassStatus::default();
    let valid = match selected {
        Err(error) => Condition::new(
            VALID,
            ConditionStatus::False,
            "InvalidQualifiers",
            format!("{error}; the class matches no server until this is fixed"),
            now,
        ),
        Ok(servers) => {
            for server in servers {
                if allocate::is_in_use(server) {
                    status.servers_in_use.push(server.name_any());
                } else if allocate::is_available(server) {
                    status.servers_available.push(server.name_any());
                }
            }
            status.servers_available.sort();
            status.servers_in_use.sort();
            Condition::new(
                VALID,
                ConditionStatus::True,
                "QualifiersCompiled",
                "the qualifiers and selector are valid",
                now,
            )
        }
    };
    set_condition(&mut status.conditions, valid);
    status
}

async fn reconcile(
    class: Arc<ServerClass>,
    context: Arc<Context>,
) -> Result<Action, ServerClassControllerError> {
    let name = class.name_any();
    context
        .pool
        .register(context.class_store.state().iter().map(|c| &**c));
    let selected = context.pool.members(&class);
    let mut wanted = class_status(selected.as_deref(), Time(jiff::Timestamp::now()));
    let current = class.status.clone().unwrap_or_default();
    // Keep the transition time of an unchanged condition.
    let mut conditions = current.conditions.clone();
    for condition in wanted.conditions.drain(..) {
        set_condition(&mut conditions, condition);
    }
    wanted.conditions = conditions;
    if wanted == current {
        return Ok(Action::await_change());
    }
    let patch = serde_json::json!({ "status": wanted });
    context
        .classes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ServerClassControllerError::Status {
            class: name.clone(),
            source,
        })?;
    debug!(class = %name, available = wanted.servers_available.len(), in_use = wanted.servers_in_use.len(), "serverclass status written");
    Ok(Action::await_change())
}

fn error_policy(
    class: Arc<ServerClass>,
    error: &ServerClassControllerError,
    _context: Arc<Context>,
) -> Action {
    warn!(class = %class.name_any(), %error, "serverclass reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ServerSpec, ServerStatus};
    use crate::controllers::tests::at;
    use crate::policy::serverclass::ClassMatcher;

    /// What the pool's index selects, matched directly.
    fn select(
        spec: &ServerClassSpec,
        servers: &[Arc<Server>],
    ) -> Result<Vec<Arc<Server>>, ClassError> {
        let matcher = ClassMatcher::compile(spec)?;
        Ok(servers
            .iter()
            .filter(|s| matcher.matches(s))
            .cloned()
            .collect())
    }

    fn server(
        name: &str,
        accepted: bool,
        clean: bool,
        cordoned: bool,
        in_use: bool,
    ) -> Arc<Server> {
        let mut server = Server::new(
            name,
            ServerSpec {
                accepted,
                cordoned,
                ..Default::default()
            },
        );
        server.status = Some(ServerStatus {
            is_clean: clean,
            in_use,
            ..Default::default()
        });
        Arc::new(server)
    }

    #[test]
    fn available_means_accepted_clean_uncordoned_and_free() {
        let servers = [
            server("b-free", true, true, false, false),
            server("a-free", true, true, false, false),
            server("dirty", true, false, false, false),
            server("unaccepted", false, true, false, false),
            server("cordoned", true, true, true, false),
            server("bound", true, false, false, true),
        ];
        let selected = select(&ServerClassSpec::default(), &servers);
        let status = class_status(selected.as_deref(), at(0));
        assert_eq!(status.servers_available, ["a-free", "b-free"]);
        assert_eq!(status.servers_in_use, ["bound"]);
        assert_eq!(status.conditions[0].status, ConditionStatus::True);
    }

    #[test]
    fn invalid_class_matches_nothing_and_says_why() {
        let mut spec = ServerClassSpec::default();
        spec.qualifiers.cpu.push(crate::api::CpuInformation {
            manufacturer: None,
            version: Some("EPYC[".into()),
        });
        let servers = [server("free", true, true, false, false)];
        let status = class_status(select(&spec, &servers).as_deref(), at(0));
        assert!(status.servers_available.is_empty());
        let valid = &status.conditions[0];
        assert_eq!(valid.status, ConditionStatus::False);
        assert!(
            valid
                .message
                .as_deref()
                .is_some_and(|m| m.contains("EPYC[")),
            "{valid:?}"
        );
    }
}
