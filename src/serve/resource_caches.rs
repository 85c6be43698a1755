//! Watch-fed caches shared by the boot plane and the controllers: the one Server feed of a
//! process ([`ServerFeed`]) and plain reflector caches of other kinds ([`cache`]).
//!
//! 10,000 Servers with real inventories take 100–150 MB as typed objects. The boot plane, the
//! Server controller, the pool index and the MetalMachine controller all need them; each used
//! to watch and cache its own copy. Now one watch fills one store, and every user reads that
//! store and follows the changes through its own lossless subscription (decision 64).

use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::Server;

/// A change, as a subscriber of the [`ServerFeed`] sees it.
#[derive(Clone, Debug)]
pub enum ServerChange {
    /// Every Server there is, replacing whatever the subscriber knew: sent first, and again
    /// after each relist (a watch that fell out of the API server's history starts over).
    Listed(Vec<Arc<Server>>),
    /// A Server was created or changed (the object is the one in the store).
    Applied(Arc<Server>),
    /// A Server is gone (its last state).
    Deleted(Arc<Server>),
}

struct Shared {
    subscribers: Vec<mpsc::UnboundedSender<ServerChange>>,
    /// The store holds a complete list (the first list, or the latest relist, is done).
    listed: bool,
}

/// The one watch of Servers in a process: a reflector store and a lossless stream of changes
/// per subscriber. Cheap to clone.
#[derive(Clone)]
pub struct ServerFeed {
    store: Store<Server>,
    shared: Arc<Mutex<Shared>>,
    changes: watch::Receiver<u64>,
    ready: watch::Receiver<bool>,
}

impl ServerFeed {
    /// Starts watching every Server through `api`; runs until `shutdown`.
    pub fn start(api: Api<Server>, shutdown: CancellationToken) -> ServerFeed {
        let events = watcher(api, watcher::Config::default()).default_backoff();
        ServerFeed::from_events(events, shutdown)
    }

    /// [`ServerFeed::start`] on any stream of watch events (a test feeds its own).
    pub(crate) fn from_events<S>(events: S, shutdown: CancellationToken) -> ServerFeed
    where
        S: Stream<Item = Result<watcher::Event<Server>, watcher::Error>> + Send + 'static,
    {
        let (store, mut writer) = reflector::store();
        let shared = Arc::new(Mutex::new(Shared {
            subscribers: Vec::new(),
            listed: false,
        }));
        let (counter, changes) = watch::channel(0u64);
        let (listed, ready) = watch::channel(false);
        let feed = ServerFeed {
            store: store.clone(),
            shared: Arc::clone(&shared),
            changes,
            ready,
        };
        let events = events
            .modify(strip_managed_fields)
            .take_until(shutdown.cancelled_owned());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, "watching Servers failed; retrying");
                        continue;
                    }
                };
                // The store first, so that a subscriber woken by the change reads it there.
                writer.apply_watcher_event(&event);
                let change = match event {
                    watcher::Event::Init => {
                        lock(&shared).listed = false;
                        None
                    }
                    // Part of a list: the store takes it at the end of the list.
                    watcher::Event::InitApply(_) => None,
                    watcher::Event::InitDone => {
                        lock(&shared).listed = true;
                        listed.send_replace(true);
                        Some(ServerChange::Listed(store.state()))
                    }
                    watcher::Event::Apply(server) => Some(ServerChange::Applied(
                        store
                            .get(&ObjectRef::from_obj(&server))
                            .unwrap_or_else(|| Arc::new(server)),
                    )),
                    watcher::Event::Delete(server) => Some(ServerChange::Deleted(Arc::new(server))),
                };
                if let Some(change) = change {
                    lock(&shared)
                        .subscribers
                        .retain(|subscriber| subscriber.send(change.clone()).is_ok());
                    counter.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        });
        feed
    }

    /// The store every Server is cached in.
    pub fn store(&self) -> &Store<Server> {
        &self.store
    }

    /// The cached Server of this name.
    pub fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.store.get(&ObjectRef::new(name))
    }

    /// Every change from now on, starting with [`ServerChange::Listed`] (at once when the
    /// store holds a complete list, otherwise when the list in progress is done). Nothing is
    /// dropped however slowly the subscriber reads; it ends when the subscriber is dropped or
    /// the feed stops.
    pub fn subscribe(&self) -> impl Stream<Item = ServerChange> + Send + 'static + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = lock(&self.shared);
        // Under the feed's lock: no change can slip in between the snapshot and the
        // subscription.
        if shared.listed {
            let _ = tx.send(ServerChange::Listed(self.store.state()));
        }
        shared.subscribers.push(tx);
        futures::stream::unfold(rx, |mut rx| async move {
            let change = rx.recv().await?;
            Some((change, rx))
        })
    }

    /// A receiver whose value moves after every change has reached the store.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Returns once the store holds the first complete list. Any number of tasks may wait at
    /// once (decision 63).
    pub async fn ready(&self) {
        // The sender lives as long as the feed task; a dropped one (shutdown) has nothing to
        // wait for.
        let _ = self.ready.clone().wait_for(|listed| *listed).await;
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A subscriber list stays valid whatever panicked while it was held.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cache of every `K`, kept by a reflector task that runs until `shutdown`; controllers and
/// the boot plane read it instead of listing from the API. Only one task may wait on its
/// `wait_until_ready`: kube-runtime 5 wakes just the last of several tasks waiting at once
/// (decision 63).
pub fn cache<K>(api: Api<K>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let feed = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_managed_fields)
        .reflect(writer)
        .touched_objects()
        .take_until(shutdown.cancelled_owned())
        .for_each(|_| async {});
    tokio::spawn(feed);
    store
}

/// Drops `metadata.managedFields` from a cached object: no controller reads them, and as parsed
/// JSON trees they took about a third of a cached Server's memory.
pub fn strip_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use std::time::Duration;

    fn server(name: &str, accepted: bool) -> Server {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": name, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"accepted": accepted},
        }))
        .expect("a valid Server")
    }

    fn names(change: &ServerChange) -> Vec<String> {
        let mut names: Vec<String> = match change {
            ServerChange::Listed(all) => all.iter().map(|s| s.name_any()).collect(),
            ServerChange::Applied(s) => vec![format!("applied {}", s.name_any())],
            ServerChange::Deleted(s) => vec![format!("deleted {}", s.name_any())],
        };
        names.sort();
        names
    }

    async fn next(changes: &mut (impl Stream<Item = ServerChange> + Unpin)) -> Vec<String> {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("a change arrives")
            .expect("the feed runs");
        names(&change)
    }

    #[tokio::test]
    async fn subscribers_early_and_late_see_the_whole_list_then_every_change_in_order() {
        let (events, input) = futures::channel::mpsc::unbounded();
        let feed = ServerFeed::from_events(input, CancellationToken::new());
        let send = |event| events.unbounded_send(Ok(event)).expect("the feed runs");
        // Subscribed before anything was listed: the list arrives when it is done.
        let mut early = Box::pin(feed.subscribe());
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(server("a", false)));
        send(watcher::Event::InitApply(server("b", true)));
        send(watcher::Event::InitDone);
        assert_eq!(next(&mut early).await, ["a", "b"]);
        feed.ready().await;
        assert!(
            feed.get("a")
                .expect("cached")
                .metadata
                .managed_fields
                .is_none()
        );

        send(watcher::Event::Apply(server("c", true)));
        assert_eq!(next(&mut early).await, ["applied c"]);
        // Subscribed late: the store as it is now, then what follows.
        let mut late = Box::pin(feed.subscribe());
        assert_eq!(next(&mut late).await, ["a", "b", "c"]);
        send(watcher::Event::Delete(server("a", false)));
        send(watcher::Event::Apply(server("b", false)));
        for changes in [&mut early, &mut late] {
            assert_eq!(next(changes).await, ["deleted a"]);
            assert_eq!(next(changes).await, ["applied b"]);
        }
        let b = feed.get("b").expect("cached");
        assert!(!b.spec.accepted, "the store holds the latest version");

        // A relist replaces the list; its parts are not sent one by one.
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(server("d", true)));
        send(watcher::Event::InitDone);
        assert_eq!(next(&mut early).await, ["d"]);
        assert!(feed.get("b").is_none());
    }

    #[tokio::test]
    async fn a_dropped_subscriber_is_forgotten_and_the_others_go_on() {
        let (events, input) = futures::channel::mpsc::unbounded();
        let feed = ServerFeed::from_events(input, CancellationToken::new());
        let send = |event| events.unbounded_send(Ok(event)).expect("the feed runs");
        send(watcher::Event::Init);
        send(watcher::Event::InitDone);
        feed.ready().await;
        let gone = feed.subscribe();
        let mut kept = Box::pin(feed.subscribe());
        assert_eq!(next(&mut kept).await, Vec::<String>::new());
        drop(gone);
        send(watcher::Event::Apply(server("a", true)));
        assert_eq!(next(&mut kept).await, ["applied a"]);
        assert_eq!(lock(&feed.shared).subscribers.len(), 1);
    }
}
