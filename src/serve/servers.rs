//! The boot plane's view of `Server` resources: a watch-fed cache that answers the boot
//! decision's lookups without a round trip per iPXE request, a change signal for long polls,
//! and the one way this code base writes a Server's status (read, change, write with the
//! resourceVersion, retry on conflict).

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{Server, ServerStatus};
use crate::policy::boot::{MachineFacts, ServerFacts};
use crate::policy::identity::server_identity;
use crate::serve::http::MachineLookup;

/// How often a status write is retried after a conflicting concurrent write.
const STATUS_CONFLICT_RETRIES: usize = 8;

/// Watch-fed cache of every Server plus a counter that moves on every change.
#[derive(Clone)]
pub struct ServerIndex {
    store: Store<Server>,
    changes: watch::Receiver<u64>,
}

impl ServerIndex {
    /// Starts watching Servers through `client`; the cache fills in the background.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Self {
        let (store, writer) = reflector::store();
        let (tx, changes) = watch::channel(0u64);
        let api: Api<Server> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(_)) => {
                            tx.send_modify(|n| *n = n.wrapping_add(1));
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "watching Servers failed; retrying");
                        }
                        None => break,
                    },
                }
            }
        });
        ServerIndex { store, changes }
    }

    /// The cached Server of this name.
    pub fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.store.get(&ObjectRef::new(name))
    }

    /// A receiver that is notified whenever any Server changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

impl MachineLookup for ServerIndex {
    fn facts(&self, uuid: &str, mac: &str) -> MachineFacts {
        let Ok(identity) = server_identity(Some(uuid), Some(mac)) else {
            return MachineFacts::default();
        };
        let Some(server) = self.get(&identity.name) else {
            return MachineFacts::default();
        };
        let status = server.status.clone().unwrap_or_default();
        MachineFacts {
            server: Some(ServerFacts {
                accepted: server.spec.accepted,
                clean: status.is_clean,
                cordoned: server.spec.cordoned,
                allocated: status.in_use,
                environment_delivered: false,
                pxe_boot_always: server.spec.pxe_boot_always,
                netboot_allowed: true,
                boot_from_disk: server.spec.boot_from_disk_method,
                environment: None,
            }),
        }
    }
}

/// Changes a Server's status with `change` (which returns whether it changed anything) and
/// writes it with the resourceVersion it read, retrying when someone else wrote in between.
/// Returns the Server as written (or as read, when nothing changed); `None` when it is gone.
pub async fn update_status(
    api: &Api<Server>,
    name: &str,
    change: impl FnMut(&Server, &mut ServerStatus) -> bool,
) -> Result<Option<Server>, kube::Error> {
    update_status_from(api, name, None, change).await
}

/// [`update_status`], starting from `latest` when the caller has just read or written the
/// Server (saving a GET; a stale copy only costs a conflict and a retry).
pub async fn update_status_from(
    api: &Api<Server>,
    name: &str,
    mut latest: Option<Server>,
    mut change: impl FnMut(&Server, &mut ServerStatus) -> bool,
) -> Result<Option<Server>, kube::Error> {
    for _ in 0..STATUS_CONFLICT_RETRIES {
        let server = match latest.take() {
            Some(server) => Some(server),
            None => api.get_opt(name).await?,
        };
        let Some(mut server) = server else {
            return Ok(None);
        };
        let mut status = server.status.clone().unwrap_or_default();
        if !change(&server, &mut status) {
            return Ok(Some(server));
        }
        server.status = Some(status);
        match api
            .replace_status(name, &PostParams::default(), &server)
            .await
        {
            Ok(written) => return Ok(Some(written)),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error),
        }
    }
    // Every attempt lost a race: one last try, whose conflict is reported as it is.
    let mut server = api.get(name).await?;
    let mut status = server.status.clone().unwrap_or_default();
    change(&server, &mut status);
    server.status = Some(status);
    api.replace_status(name, &PostParams::default(), &server)
        .await
        .map(Some)
}
