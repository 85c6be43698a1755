//! The server pool the matching controllers share: the process's Server cache
//! (`serve::resource_caches::ServerFeed`), and which ServerClasses select each server, kept from the
//! feed's changes.
//!
//! Matching is the expensive part of both the ServerClass status and allocation: a class
//! against a server walks its compiled patterns over the server's inventory serialized to JSON.
//! The index keeps each class's members and rematches a server only when its labels or spec
//! changed (its `metadata.generation` moves with the spec; a status write such as `inUse` moves
//! neither), matching it then against every known class with one serialization. New or changed
//! classes are matched together in one pass over the servers ([`Pool::register`]). Readers
//! look up members instead of matching the pool.
//!
//! The serialized inventories are not kept: at about 20 KB of JSON tree per server they would
//! cost more memory than the 10,000 Servers themselves. The Servers themselves are the feed's:
//! one copy for the boot plane and every controller (decision 64).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{Server, ServerClass, ServerClassSpec};
use crate::policy::serverclass::{ClassError, ClassMatcher, Prepared};
use crate::serve::resource_caches::{ServerChange, ServerFeed};

/// The shared Server cache and class membership index. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    servers: Store<Server>,
    index: Arc<Mutex<Index>>,
    changed: watch::Receiver<u64>,
    /// True once the cache and the index hold the initial list (decision 63: not the store's
    /// own `wait_until_ready`, which wakes only one of several waiting tasks).
    ready: watch::Receiver<bool>,
}

impl Pool {
    /// Starts the task that keeps the index from the process's Server feed; it runs until
    /// `shutdown` (the controllers' token: a replica that loses the leader Lease stops it).
    pub fn start(feed: &ServerFeed, shutdown: CancellationToken) -> Pool {
        let index = Arc::new(Mutex::new(Index::default()));
        let (notify, changed) = watch::channel(0u64);
        let (listed, ready) = watch::channel(false);
        let feed_index = Arc::clone(&index);
        let changes = feed
            .subscribe()
            .take_until(shutdown.cancelled_owned())
            .for_each(move |change| {
                let mut index = lock(&feed_index);
                match change {
                    ServerChange::Listed(servers) => {
                        index.relist_started();
                        for server in &servers {
                            let _rematched = index.upsert(server);
                        }
                        index.relist_done();
                        listed.send_replace(true);
                    }
                    ServerChange::Applied(server) => {
                        let _rematched = index.upsert(&server);
                    }
                    ServerChange::Deleted(server) => index.remove(&server.name_any()),
                }
                // Readers wake after the store and the index both hold the change.
                notify.send_modify(|n| *n = n.wrapping_add(1));
                futures::future::ready(())
            });
        tokio::spawn(changes);
        Pool {
            servers: feed.store().clone(),
            index,
            changed,
            ready,
        }
    }

    /// Returns once the cache and the index hold every Server of the initial list.
    /// Any number of tasks may wait at once.
    pub async fn ready(&self) {
        // The sender lives as long as the feed task; a dropped one (shutdown) has nothing to
        // wait for.
        let _ = self.ready.clone().wait_for(|listed| *listed).await;
    }

    /// The reflector cache of every Server.
    pub fn servers(&self) -> &Store<Server> {
        &self.servers
    }

    /// The Server named `name`, from the cache.
    pub fn server(&self, name: &str) -> Option<Arc<Server>> {
        self.servers.get(&ObjectRef::new(name))
    }

    /// A receiver that changes after every Server event has reached the cache and the index.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// A stream that yields once after Server changes, at most once per `every`: the changes
    /// of a burst, and those that arrive while it waits, become one item.
    pub fn triggers(&self, every: Duration) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.changes(), move |mut changes| async move {
            changes.changed().await.ok()?;
            tokio::time::sleep(every).await;
            changes.mark_unchanged();
            Some(((), changes))
        })
    }

    /// Makes the index know `classes` as they are now: the new or changed ones are matched
    /// against every server in one pass.
    pub fn register<'a>(&self, classes: impl IntoIterator<Item = &'a ServerClass>) {
        let servers = self.servers.state();
        lock(&self.index).register(classes, &servers);
    }

    /// The servers `class` selects, from the cache, sorted by name; an invalid class is an
    /// error (it selects nothing).
    pub fn members(&self, class: &ServerClass) -> Result<Vec<Arc<Server>>, ClassError> {
        self.register([class]);
        let index = lock(&self.index);
        let names = index.members(&class.name_any())?;
        Ok(names.iter().filter_map(|name| self.server(name)).collect())
    }
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    // The index is plain data and every update leaves it consistent; a panic elsewhere while
    // it was held does not make it wrong.
    index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What decides a server's memberships, short of its inventory: matched afresh when either
/// moves.
struct Facts {
    /// `metadata.generation`, which moves with every spec change; `None` (an API server that
    /// does not keep it) rematches on every event.
    generation: Option<i64>,
    labels: BTreeMap<String, String>,
}

impl Facts {
    fn of(server: &Server) -> Facts {
        Facts {
            generation: server.metadata.generation,
            labels: server.metadata.labels.clone().unwrap_or_default(),
        }
    }

    fn same_as(&self, server: &Server) -> bool {
        self.generation.is_some()
            && server.metadata.generation == self.generation
            && server.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()) == &self.labels
    }
}

struct ClassEntry {
    spec: ServerClassSpec,
    matcher: Result<ClassMatcher, ClassError>,
    members: BTreeSet<String>,
}

#[derive(Default)]
struct Index {
    servers: HashMap<String, Facts>,
    classes: HashMap<String, ClassEntry>,
    /// Names seen since a relist started (the watch restarted): the others are gone.
    relisting: Option<HashSet<String>>,
}

impl Index {
    /// Records a server version; `true` when its memberships were matched afresh (its labels
    /// or inventory are new).
    fn upsert(&mut self, server: &Server) -> bool {
        let name = server.name_any();
        if let Some(seen) = &mut self.relisting {
            seen.insert(name.clone());
        }
        if self.servers.get(&name).is_some_and(|f| f.same_as(server)) {
            return false;
        }
        let prepared = Prepared::new(server);
        for class in self.classes.values_mut() {
            let selects = class
                .matcher
                .as_ref()
                .is_ok_and(|m| m.matches_prepared(&prepared));
            if selects {
                class.members.insert(name.clone());
            } else {
                class.members.remove(&name);
            }
        }
        self.servers.insert(name, Facts::of(server));
        true
    }

    fn remove(&mut self, name: &str) {
        self.servers.remove(name);
        for class in self.classes.values_mut() {
            class.members.remove(name);
        }
    }

    fn relist_started(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    fn relist_done(&mut self) {
        if let Some(seen) = self.relisting.take() {
            let gone: Vec<String> = self
                .servers
                .keys()
                .filter(|name| !seen.contains(*name))
                .cloned()
                .collect();
            for name in gone {
                self.remove(&name);
            }
        }
    }

    /// Compiles the classes whose spec is new or changed and matches them against `servers`
    /// in one pass: each inventory is serialized once for all of them.
    fn register<'a>(
        &mut self,
        classes: impl IntoIterator<Item = &'a ServerClass>,
        servers: &[Arc<Server>],
    ) {
        let stale: Vec<(String, ServerClassSpec, Result<ClassMatcher, ClassError>)> = classes
            .into_iter()
            .filter(|c| {
                self.classes
                    .get(&c.name_any())
                    .is_none_or(|known| known.spec != c.spec)
            })
            .map(|c| (c.name_any(), c.spec.clone(), ClassMatcher::compile(&c.spec)))
            .collect();
        if stale.is_empty() {
            return;
        }
        let mut members: Vec<BTreeSet<String>> = vec![BTreeSet::new(); stale.len()];
        for server in servers {
            let prepared = Prepared::new(server);
            for (i, (_, _, matcher)) in stale.iter().enumerate() {
                if matcher
                    .as_ref()
                    .is_ok_and(|m| m.matches_prepared(&prepared))
                {
                    members[i].insert(server.name_any());
                }
            }
        }
        for ((name, spec, matcher), members) in stale.into_iter().zip(members) {
            self.classes.insert(
                name,
                ClassEntry {
                    spec,
                    matcher,
                    members,
                },
            );
        }
    }

    /// The members of the registered class `name`; an unknown class has none.
    fn members(&self, name: &str) -> Result<&BTreeSet<String>, ClassError> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        match self.classes.get(name) {
            None => Ok(&NONE),
            Some(ClassEntry {
                matcher: Err(error),
                ..
            }) => Err(error.clone()),
            Some(class) => Ok(&class.members),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CpuInformation;
    use serde_json::json;

    #[tokio::test]
    async fn every_task_waiting_for_the_pool_wakes_when_the_first_list_is_in() {
        let (events, input) = futures::channel::mpsc::unbounded();
        let feed = ServerFeed::from_events(input, CancellationToken::new());
        let pool = super::Pool::start(&feed, CancellationToken::new());
        // The ServerClass and MetalMachine controllers both wait, at the same time.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.ready().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "ready before the list"
        );
        for event in [
            kube::runtime::watcher::Event::Init,
            kube::runtime::watcher::Event::InitDone,
        ] {
            events.unbounded_send(Ok(event)).expect("the feed runs");
        }
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("every waiter wakes")
                .expect("the waiter does not panic");
        }
    }

    /// The index and the cache it is read with, as the feed keeps them.
    #[derive(Default)]
    struct Pool {
        index: Index,
        servers: BTreeMap<String, Arc<Server>>,
    }

    impl Pool {
        /// Stores `server` (a new spec version when `generation` moves) and indexes it; `true`
        /// when it was matched afresh.
        fn put(&mut self, name: &str, cpu: &str, rack: &str, generation: i64) -> bool {
            let server: Server = serde_json::from_value(json!({
                "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
                "metadata": {"name": name, "labels": {"rack": rack}, "generation": generation},
                "spec": {"accepted": true, "hardware": {"compute": {"processors": [{"manufacturer": cpu}]}}},
            }))
            .expect("a valid Server");
            self.servers
                .insert(name.to_owned(), Arc::new(server.clone()));
            self.index.upsert(&server)
        }

        fn delete(&mut self, name: &str) {
            self.servers.remove(name);
            self.index.remove(name);
        }

        fn members(
            &mut self,
            class: &str,
            spec: &ServerClassSpec,
        ) -> Result<Vec<String>, ClassError> {
            let servers: Vec<Arc<Server>> = self.servers.values().cloned().collect();
            let class = ServerClass::new(class, spec.clone());
            self.index.register([&class], &servers);
            Ok(self
                .index
                .members(&class.name_any())?
                .iter()
                .cloned()
                .collect())
        }
    }

    fn amd() -> ServerClassSpec {
        let mut spec = ServerClassSpec::default();
        spec.qualifiers.cpu.push(CpuInformation {
            manufacturer: Some("AMD".into()),
            version: None,
        });
        spec
    }

    #[test]
    fn membership_follows_the_changes_of_one_server() {
        let mut pool = Pool::default();
        pool.put("a", "AMD", "r1", 1);
        pool.put("b", "Intel", "r1", 1);
        assert_eq!(pool.members("amd", &amd()).unwrap(), ["a"]);
        // Once registered, the class follows server events without a pass over the pool.
        pool.put("c", "AMD", "r2", 1);
        pool.put("a", "Intel", "r1", 2);
        assert_eq!(pool.index.members("amd").unwrap().len(), 1);
        assert_eq!(pool.members("amd", &amd()).unwrap(), ["c"]);
        pool.delete("c");
        assert!(pool.members("amd", &amd()).unwrap().is_empty());
    }

    #[test]
    fn a_changed_class_spec_is_matched_afresh() {
        let mut pool = Pool::default();
        pool.put("a", "AMD", "r1", 1);
        pool.put("b", "Intel", "r2", 1);
        assert_eq!(pool.members("c", &amd()).unwrap(), ["a"]);
        let mut by_rack = ServerClassSpec::default();
        by_rack.selector.match_labels = Some([("rack".to_owned(), "r2".to_owned())].into());
        assert_eq!(pool.members("c", &by_rack).unwrap(), ["b"]);
    }

    #[test]
    fn an_invalid_class_selects_nothing_and_says_why() {
        let mut pool = Pool::default();
        pool.put("a", "AMD", "r1", 1);
        let mut bad = ServerClassSpec::default();
        bad.qualifiers.cpu.push(CpuInformation {
            manufacturer: Some("AMD[".into()),
            version: None,
        });
        assert!(matches!(
            pool.members("bad", &bad),
            Err(ClassError::BadRegex { .. })
        ));
    }

    #[test]
    fn a_relist_forgets_servers_deleted_while_the_watch_was_down() {
        let mut pool = Pool::default();
        pool.put("a", "AMD", "r1", 1);
        pool.put("b", "AMD", "r1", 1);
        assert_eq!(pool.members("amd", &amd()).unwrap(), ["a", "b"]);
        pool.index.relist_started();
        pool.put("b", "AMD", "r1", 1);
        pool.index.relist_done();
        assert_eq!(
            pool.index
                .members("amd")
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn only_a_new_spec_or_new_labels_rematch_a_server() {
        let mut pool = Pool::default();
        assert!(pool.put("a", "AMD", "r1", 1));
        // Same generation and labels: a status write, such as inUse.
        assert!(!pool.put("a", "AMD", "r1", 1));
        assert!(pool.put("a", "AMD", "r2", 1), "new labels");
        assert!(pool.put("a", "AMD", "r2", 2), "new spec");
    }
}
