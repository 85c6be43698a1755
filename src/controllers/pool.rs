//! The server pool the matching controllers share: one reflector cache of every Server, and
//! which ServerClasses select each server, kept from the same watch events.
//!
//! Matching is the expensive part of both the ServerClass status and allocation: a class
//! against a server walks its compiled patterns over the server's inventory serialized to JSON.
//! The index keeps each class's members and recomputes them only for a server whose labels or
//! inventory changed (a status write, such as `inUse`, changes neither), or for every server
//! when a class's spec changed. Readers then look up members instead of matching the pool.
//!
//! One cache for both controllers also means one copy of 10,000 inventories in memory, not one
//! per controller.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{HardwareInformation, Server, ServerClass, ServerClassSpec};
use crate::policy::serverclass::{ClassError, ClassMatcher, Prepared};

/// The shared Server cache and class membership index. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    servers: Store<Server>,
    index: Arc<Mutex<Index>>,
    changed: watch::Receiver<u64>,
}

impl Pool {
    /// Starts the reflector task that feeds the pool; it runs until `shutdown`.
    pub fn start(servers: Api<Server>, shutdown: CancellationToken) -> Pool {
        let (store, writer) = reflector::store();
        let index = Arc::new(Mutex::new(Index::default()));
        let (notify, changed) = watch::channel(0u64);
        let feed_index = Arc::clone(&index);
        let feed = reflector::reflector(writer, watcher(servers, watcher::Config::default()))
            .default_backoff()
            .take_until(shutdown.cancelled_owned())
            .for_each(move |event| {
                if let Ok(event) = event {
                    let mut index = lock(&feed_index);
                    match event {
                        watcher::Event::Apply(server) | watcher::Event::InitApply(server) => {
                            let _rematched = index.upsert(&server);
                        }
                        watcher::Event::Delete(server) => index.remove(&server.name_any()),
                        watcher::Event::Init => index.relist_started(),
                        watcher::Event::InitDone => index.relist_done(),
                    }
                    // Readers wake after the store and the index both hold the change.
                    notify.send_modify(|n| *n = n.wrapping_add(1));
                }
                futures::future::ready(())
            });
        tokio::spawn(feed);
        Pool {
            servers: store,
            index,
            changed,
        }
    }

    /// Returns once the cache and the index hold every Server of the initial list.
    pub async fn ready(&self) {
        // The writer lives as long as the feed task; a dropped one (shutdown) has nothing to
        // wait for.
        let _ = self.servers.wait_until_ready().await;
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

    /// The servers `class` selects, from the cache, sorted by name; an invalid class is an
    /// error (it selects nothing).
    pub fn members(&self, class: &ServerClass) -> Result<Vec<Arc<Server>>, ClassError> {
        let names = lock(&self.index).members(&class.name_any(), &class.spec)?;
        Ok(names.iter().filter_map(|name| self.server(name)).collect())
    }
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    // The index is plain data and every update leaves it consistent; a panic elsewhere while
    // it was held does not make it wrong.
    index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What matching reads of one server version.
struct Facts {
    labels: BTreeMap<String, String>,
    hardware: Option<HardwareInformation>,
    prepared: Prepared,
}

impl Facts {
    fn same_as(&self, server: &Server) -> bool {
        server.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()) == &self.labels
            && server.spec.hardware == self.hardware
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
        let facts = Facts {
            labels: server.metadata.labels.clone().unwrap_or_default(),
            hardware: server.spec.hardware.clone(),
            prepared: Prepared::new(server),
        };
        for class in self.classes.values_mut() {
            let selects = class
                .matcher
                .as_ref()
                .is_ok_and(|m| m.matches_prepared(&facts.prepared));
            if selects {
                class.members.insert(name.clone());
            } else {
                class.members.remove(&name);
            }
        }
        self.servers.insert(name, facts);
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

    /// The members of class `name` with `spec`, matched afresh over every known server when
    /// the spec is new or changed.
    fn members(
        &mut self,
        name: &str,
        spec: &ServerClassSpec,
    ) -> Result<&BTreeSet<String>, ClassError> {
        let stale = self.classes.get(name).is_none_or(|c| &c.spec != spec);
        if stale {
            let matcher = ClassMatcher::compile(spec);
            let members = match &matcher {
                Ok(m) => self
                    .servers
                    .iter()
                    .filter(|(_, facts)| m.matches_prepared(&facts.prepared))
                    .map(|(name, _)| name.clone())
                    .collect(),
                Err(_) => BTreeSet::new(),
            };
            self.classes.insert(
                name.to_owned(),
                ClassEntry {
                    spec: spec.clone(),
                    matcher,
                    members,
                },
            );
        }
        let class = self
            .classes
            .get(name)
            .expect("the class was inserted above when missing");
        match &class.matcher {
            Ok(_) => Ok(&class.members),
            Err(error) => Err(error.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CpuInformation, ServerSpec};
    use serde_json::json;

    fn server(name: &str, cpu: &str, rack: &str) -> Server {
        serde_json::from_value(json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": name, "labels": {"rack": rack}},
            "spec": {"accepted": true, "hardware": {"compute": {"processors": [{"manufacturer": cpu}]}}},
        }))
        .expect("a valid Server")
    }

    fn amd_class() -> ServerClassSpec {
        let mut spec = ServerClassSpec::default();
        spec.qualifiers.cpu.push(CpuInformation {
            manufacturer: Some("AMD".into()),
            version: None,
        });
        spec
    }

    fn members(index: &mut Index, class: &str, spec: &ServerClassSpec) -> Vec<String> {
        index
            .members(class, spec)
            .expect("valid")
            .iter()
            .cloned()
            .collect()
    }

    #[test]
    fn membership_follows_inventory_changes_of_one_server() {
        let mut index = Index::default();
        index.upsert(&server("a", "AMD", "r1"));
        index.upsert(&server("b", "Intel", "r1"));
        assert_eq!(members(&mut index, "amd", &amd_class()), ["a"]);
        // A class known to the index is updated by server events, without a rematch.
        index.upsert(&server("c", "AMD", "r2"));
        index.upsert(&server("a", "Intel", "r1"));
        assert_eq!(members(&mut index, "amd", &amd_class()), ["c"]);
        index.remove("c");
        assert!(members(&mut index, "amd", &amd_class()).is_empty());
    }

    #[test]
    fn a_changed_class_spec_is_matched_afresh() {
        let mut index = Index::default();
        index.upsert(&server("a", "AMD", "r1"));
        index.upsert(&server("b", "Intel", "r2"));
        assert_eq!(members(&mut index, "c", &amd_class()), ["a"]);
        let mut by_rack = ServerClassSpec::default();
        by_rack.selector.match_labels = Some([("rack".to_owned(), "r2".to_owned())].into());
        assert_eq!(members(&mut index, "c", &by_rack), ["b"]);
    }

    #[test]
    fn an_invalid_class_selects_nothing_and_says_why() {
        let mut index = Index::default();
        index.upsert(&server("a", "AMD", "r1"));
        let mut bad = ServerClassSpec::default();
        bad.qualifiers.cpu.push(CpuInformation {
            manufacturer: Some("AMD[".into()),
            version: None,
        });
        assert!(matches!(
            index.members("bad", &bad),
            Err(ClassError::BadRegex { .. })
        ));
    }

    #[test]
    fn a_relist_forgets_servers_deleted_while_the_watch_was_down() {
        let mut index = Index::default();
        index.upsert(&server("a", "AMD", "r1"));
        index.upsert(&server("b", "AMD", "r1"));
        assert_eq!(members(&mut index, "amd", &amd_class()), ["a", "b"]);
        index.relist_started();
        index.upsert(&server("b", "AMD", "r1"));
        index.relist_done();
        assert_eq!(members(&mut index, "amd", &amd_class()), ["b"]);
    }

    #[test]
    fn only_a_label_or_inventory_change_rematches_a_server() {
        let mut index = Index::default();
        let mut s = server("a", "AMD", "r1");
        assert!(index.upsert(&s));
        s.spec = ServerSpec {
            cordoned: true,
            ..s.spec.clone()
        };
        s.status = Some(crate::api::ServerStatus {
            in_use: true,
            ..Default::default()
        });
        assert!(!index.upsert(&s), "a status or cordon change is not rematched");
        s.labels_mut().insert("rack".into(), "r2".into());
        assert!(index.upsert(&s));
    }
}
