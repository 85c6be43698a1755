//! Versioned object store: SQLite (WAL, group commit) on disk, an in-memory index for reads, and a
//! bounded ring of change events for watch resumption.
//!
//! This is the embedded API server's etcd. It knows nothing about Kubernetes semantics beyond
//! "an object is a JSON document with `metadata.resourceVersion`": the API layer above decides
//! what to write, the store decides *when* and assigns versions. One writer thread owns the SQLite
//! connection and is the only place that allocates resource versions, so versions are handed out
//! in commit order and a watcher never sees version N+1 before N.
//!
//! Durability: a write is acknowledged only after the transaction holding it has committed with
//! `synchronous=FULL`. The writer batches whatever requests are queued into one transaction
//! (group commit), so many concurrent writers share one fsync.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock, mpsc};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

/// How many change events are kept for watches that resume from an older version.
pub const DEFAULT_HISTORY: usize = 50_000;

/// At most this many bytes of objects are kept by the history, whatever the event count:
/// 50,000 events of 200 KB ServerClass statuses would otherwise hold 10 GB. A watcher that
/// falls further behind catches up from the current objects ([`Store::changes_since`])
/// instead of relisting, so the history only has to cover ordinary lag (decision 65).
pub const HISTORY_BYTES: usize = 8 << 20;

/// Most write requests folded into one SQLite transaction.
const MAX_BATCH: usize = 512;

/// Identifies one stored object. `resource` is `group/plural` (`""` group for core), so all
/// versions of one kind share storage; `namespace` is empty for cluster-scoped objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: Arc<str>,
    pub namespace: String,
    pub name: String,
}

/// The metadata the server needs often, extracted once per write so that lists, selectors and
/// the garbage collector never re-parse the JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub owner_uids: Vec<String>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

/// The strings of a JSON array (anything else, or non-string items, read as absent).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Summary {
    /// Reads the summary from an object's `metadata`; missing fields read as empty.
    pub fn of(object: &Value) -> Summary {
        let meta = &object["metadata"];
        Summary {
            api_version: object["apiVersion"].as_str().unwrap_or_default().to_owned(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_owned(),
            name: meta["name"].as_str().unwrap_or_default().to_owned(),
            uid: meta["uid"].as_str().unwrap_or_default().to_owned(),
            labels: meta["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            owner_uids: meta["ownerReferences"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r["uid"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            finalizers: strings(&meta["finalizers"]),
            deleting: !meta["deletionTimestamp"].is_null(),
        }
    }
}

/// One object as stored: its version, its serialized JSON (served as-is) and its summary.
#[derive(Debug)]
pub struct Stored {
    pub rv: u64,
    pub json: Bytes,
    pub summary: Summary,
}

impl Stored {
    /// Parses the stored JSON. The store only ever holds JSON it serialized itself.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("the store holds only JSON it serialized")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change. `object` is the new state (for deletions: the last state, carrying the
/// deletion's version); `previous` the state before, so watchers can compute selector
/// transitions.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: ObjectKey,
    pub object: Arc<Stored>,
    pub previous: Option<Arc<Stored>>,
}

/// A write, with its precondition.
#[derive(Debug)]
pub enum Op {
    /// Fails with `AlreadyExists` if the key is taken.
    Create { key: ObjectKey, object: Value },
    /// Fails with `NotFound`, or `Conflict` if the current version is not `expected_rv`. An
    /// update whose serialized result equals the current object is a no-op: no new version and
    /// no event.
    Update {
        key: ObjectKey,
        expected_rv: u64,
        object: Value,
    },
    /// Fails with `NotFound`, or `Conflict` when `expected_rv` is given and differs.
    Delete {
        key: ObjectKey,
        expected_rv: Option<u64>,
    },
}

impl Op {
    fn key(&self) -> &ObjectKey {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The result of a successful write.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The object now stored (for a delete: the deleted object at its final version).
    pub object: Arc<Stored>,
    /// False when an update changed nothing.
    pub changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object already exists")]
    AlreadyExists,
    #[error("object not found")]
    NotFound,
    #[error("object was modified: current resourceVersion is {current}")]
    Conflict { current: u64 },
    #[error("storage failure in {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("stored object {resource}/{namespace}/{name} is not valid JSON: {source}")]
    Corrupt {
        resource: String,
        namespace: String,
        name: String,
        source: serde_json::Error,
    },
    #[error("the store's writer has stopped; restart the appliance")]
    Closed,
}

/// Too old to resume: the requested version has left the history ring.
#[derive(Debug, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

/// Objects of one resource, by (namespace, name).
type ByName = BTreeMap<(String, String), Arc<Stored>>;

/// At most this many deletions are remembered for watches that catch up from the current
/// objects ([`Store::changes_since`]), holding at most [`TOMBSTONE_BYTES`] of last states.
pub const TOMBSTONES: usize = 10_000;
pub const TOMBSTONE_BYTES: usize = 16 << 20;

/// A deletion, remembered after its event may have left the history.
#[derive(Debug, Clone)]
pub struct Tombstone {
    pub key: ObjectKey,
    /// The object's last state (typed clients decode it whole), at the deletion's version.
    pub last: Arc<Stored>,
}

/// What changed in one resource after some version, as the current objects show it.
#[derive(Debug)]
pub struct CatchUp {
    /// The store's version when this was taken: a watch goes on from here.
    pub rv: u64,
    /// Objects whose current version is later, oldest version first.
    pub changed: Vec<Arc<Stored>>,
    /// Objects deleted later, oldest first.
    pub deleted: Vec<Tombstone>,
}

struct Memory {
    objects: HashMap<Arc<str>, ByName>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Every event with a version at or above this one is still in `history`.
    history_start: u64,
    history_cap: usize,
    /// The JSON bytes of the objects of the events in `history` (an event's previous version
    /// is usually the object of the event before it, so it is not counted again).
    history_bytes: usize,
    history_bytes_cap: usize,
    tombstones: VecDeque<Tombstone>,
    tombstone_bytes: usize,
    /// Every deletion with a version at or above this one is in `tombstones` (deletions before
    /// the store was opened are not known).
    tombstones_start: u64,
}

impl Memory {
    fn get(&self, key: &ObjectKey) -> Option<&Arc<Stored>> {
        self.objects
            .get(&key.resource)?
            .get(&(key.namespace.clone(), key.name.clone()))
    }

    fn push_event(&mut self, event: Arc<Event>) {
        self.history_bytes += event_bytes(&event);
        self.history.push_back(event);
        // The newest event always stays: a live watcher must see every change.
        while self.history.len() > 1
            && (self.history.len() > self.history_cap
                || self.history_bytes > self.history_bytes_cap)
            && let Some(evicted) = self.history.pop_front()
        {
            self.history_bytes -= event_bytes(&evicted);
            self.history_start = evicted.rv + 1;
        }
    }

    fn push_tombstone(&mut self, key: &ObjectKey, last: &Arc<Stored>) {
        self.tombstone_bytes += last.json.len();
        self.tombstones.push_back(Tombstone {
            key: key.clone(),
            last: Arc::clone(last),
        });
        while (self.tombstones.len() > TOMBSTONES || self.tombstone_bytes > TOMBSTONE_BYTES)
            && let Some(evicted) = self.tombstones.pop_front()
        {
            self.tombstone_bytes -= evicted.last.json.len();
            self.tombstones_start = evicted.last.rv + 1;
        }
    }
}

fn event_bytes(event: &Event) -> usize {
    event.object.json.len()
}

struct WriteRequest {
    op: Op,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    memory: Arc<RwLock<Memory>>,
    writer: mpsc::Sender<WriteRequest>,
    version: watch::Receiver<u64>,
}

/// A consistent snapshot of one resource's objects.
pub struct Snapshot {
    pub rv: u64,
    pub objects: Vec<Arc<Stored>>,
}

impl Store {
    /// Opens (or creates) the database at `path`, loads every object into memory and starts the
    /// writer thread.
    pub fn open(path: &Path, history_cap: usize) -> Result<Store, StoreError> {
        Self::open_with_limits(path, history_cap, HISTORY_BYTES)
    }

    /// [`Store::open`] keeping at most `history_cap` events and `history_bytes` bytes of
    /// object versions in the history.
    pub fn open_with_limits(
        path: &Path,
        history_cap: usize,
        history_bytes: usize,
    ) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        let sql = |source| StoreError::Sqlite {
            path: display.clone(),
            source,
        };
        let conn = rusqlite::Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // FULL: a commit is on disk before it is acknowledged, also across power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                 resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 rv INTEGER NOT NULL, body BLOB NOT NULL,
                 PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(sql)?;

        let mut rv: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'rv'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })
            .map_err(sql)?;
        let mut objects: HashMap<Arc<str>, ByName> = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT resource, namespace, name, rv, body FROM objects")
                .map_err(sql)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(sql)?;
            for row in rows {
                let (resource, namespace, name, obj_rv, body) = row.map_err(sql)?;
                let value: Value =
                    serde_json::from_slice(&body).map_err(|source| StoreError::Corrupt {
                        resource: resource.clone(),
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })?;
                rv = rv.max(obj_rv as u64);
                objects.entry(Arc::from(resource)).or_default().insert(
                    (namespace, name),
                    Arc::new(Stored {
                        rv: obj_rv as u64,
                        summary: Summary::of(&value),
                        json: Bytes::from(body),
                    }),
                );
            }
        }
        let memory = Arc::new(RwLock::new(Memory {
            objects,
            rv,
            history: VecDeque::new(),
            history_start: rv + 1,
            history_cap: history_cap.max(1),
            history_bytes: 0,
            history_bytes_cap: history_bytes,
            tombstones: VecDeque::new(),
            tombstone_bytes: 0,
            tombstones_start: rv + 1,
        }));
        let (version_tx, version) = watch::channel(rv);
        let (writer, requests) = mpsc::channel();
        let writer_memory = memory.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(conn, display, writer_memory, requests, version_tx))
            .map_err(|e| StoreError::Sqlite {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store {
            memory,
            writer,
            version,
        })
    }

    /// Submits one write and waits until it is durable (or rejected).
    pub async fn commit(&self, op: Op) -> Result<Committed, StoreError> {
        let (reply, result) = oneshot::channel();
        self.writer
            .send(WriteRequest { op, reply })
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// The latest committed resource version.
    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Stored>> {
        self.read().get(key).cloned()
    }

    /// Every object of `resource` (in `namespace` when given), ordered by namespace then name.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Snapshot {
        let memory = self.read();
        let objects = match memory.objects.get(resource) {
            None => Vec::new(),
            Some(map) => match namespace {
                None => map.values().cloned().collect(),
                Some(ns) => map
                    .range((ns.to_owned(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        Snapshot {
            rv: memory.rv,
            objects,
        }
    }

    /// Every stored object of every resource, with its key (used by the garbage collector).
    pub fn all(&self) -> Vec<(ObjectKey, Arc<Stored>)> {
        let memory = self.read();
        memory
            .objects
            .iter()
            .flat_map(|(resource, map)| {
                map.iter().map(move |((ns, name), stored)| {
                    (
                        ObjectKey {
                            resource: resource.clone(),
                            namespace: ns.clone(),
                            name: name.clone(),
                        },
                        stored.clone(),
                    )
                })
            })
            .collect()
    }

    /// Events with a version above `after`, oldest first, or `TooOld` when some of them have
    /// left the history ring.
    pub fn events_after(&self, after: u64) -> Result<Vec<Arc<Event>>, TooOld> {
        let memory = self.read();
        if after + 1 < memory.history_start {
            return Err(TooOld {
                requested: after,
                oldest: memory.history_start,
            });
        }
        let Some(first) = memory.history.front() else {
            return Ok(Vec::new());
        };
        let skip = ((after + 1).saturating_sub(first.rv) as usize).min(memory.history.len());
        Ok(memory.history.range(skip..).cloned().collect())
    }

    /// What changed in `resource` after version `after`, from the current objects and the
    /// remembered deletions: how a watch that fell out of the history catches up without a
    /// relist. Intermediate versions are skipped (each object comes once, as it is now).
    /// `TooOld` when a deletion after `after` may have been forgotten.
    pub fn changes_since(&self, resource: &str, after: u64) -> Result<CatchUp, TooOld> {
        let memory = self.read();
        if after + 1 < memory.tombstones_start {
            return Err(TooOld {
                requested: after,
                oldest: memory.tombstones_start,
            });
        }
        let mut changed: Vec<Arc<Stored>> = memory
            .objects
            .get(resource)
            .into_iter()
            .flat_map(|map| map.values())
            .filter(|s| s.rv > after)
            .cloned()
            .collect();
        changed.sort_by_key(|s| s.rv);
        let deleted = memory
            .tombstones
            .iter()
            .filter(|t| t.last.rv > after && &*t.key.resource == resource)
            .cloned()
            .collect();
        Ok(CatchUp {
            rv: memory.rv,
            changed,
            deleted,
        })
    }

    /// A receiver that changes whenever a new version is committed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Memory> {
        // A poisoned lock means a panic while holding it; the data is still consistent because
        // the writer only mutates memory after a successful commit, in one step.
        self.memory.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The staged result of one request within a batch.
enum Staged {
    Put(Arc<Stored>, Option<Arc<Stored>>),
    Remove(Arc<Stored>, Arc<Stored>),
    Unchanged(Arc<Stored>),
}

fn write_loop(
    mut conn: rusqlite::Connection,
    path: String,
    memory: Arc<RwLock<Memory>>,
    requests: mpsc::Receiver<WriteRequest>,
    version: watch::Sender<u64>,
) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let start_rv = memory.read().unwrap_or_else(|e| e.into_inner()).rv;
        let mut rv = start_rv;
        // Later requests in a batch must see earlier ones: overlay on top of memory.
        let mut overlay: HashMap<ObjectKey, Option<Arc<Stored>>> = HashMap::new();
        let mut outcomes: Vec<Result<(ObjectKey, Staged), StoreError>> = Vec::new();
        {
            let mem = memory.read().unwrap_or_else(|e| e.into_inner());
            for req in &batch {
                let key = req.op.key().clone();
                let current = match overlay.get(&key) {
                    Some(v) => v.clone(),
                    None => mem.get(&key).cloned(),
                };
                let outcome = stage(&req.op, current, &mut rv);
                if let Ok(staged) = &outcome {
                    match staged {
                        Staged::Put(new, _) => {
                            overlay.insert(key.clone(), Some(new.clone()));
                        }
                        Staged::Remove(..) => {
                            overlay.insert(key.clone(), None);
                        }
                        Staged::Unchanged(_) => {}
                    }
                }
                outcomes.push(outcome.map(|s| (key, s)));
            }
        }
        let persisted = if rv == start_rv {
            Ok(())
        } else {
            persist(&mut conn, &outcomes, rv)
        };
        if let Err(source) = persisted {
            tracing::error!(%path, error = %source, "store commit failed; writes rejected");
            for req in batch {
                let _ = req.reply.send(Err(StoreError::Sqlite {
                    path: path.clone(),
                    source: clone_sql_error(&source),
                }));
            }
            continue;
        }
        {
            let mut mem = memory.write().unwrap_or_else(|e| e.into_inner());
            for (key, staged) in outcomes.iter().flatten() {
                let event = match staged {
                    Staged::Unchanged(_) => continue,
                    Staged::Put(new, previous) => {
                        mem.objects
                            .entry(key.resource.clone())
                            .or_default()
                            .insert((key.namespace.clone(), key.name.clone()), new.clone());
                        Event {
                            rv: new.rv,
                            kind: if previous.is_some() {
                                EventType::Modified
                            } else {
                                EventType::Added
                            },
                            key: key.clone(),
                            object: new.clone(),
                            previous: previous.clone(),
                        }
                    }
                    Staged::Remove(last, previous) => {
                        if let Some(map) = mem.objects.get_mut(&key.resource) {
                            map.remove(&(key.namespace.clone(), key.name.clone()));
                        }
                        mem.push_tombstone(key, last);
                        Event {
                            rv: last.rv,
                            kind: EventType::Deleted,
                            key: key.clone(),
                            object: last.clone(),
                            previous: Some(previous.clone()),
                        }
                    }
                };
                mem.push_event(Arc::new(event));
            }
            mem.rv = rv;
        }
        if rv != start_rv {
            version.send_replace(rv);
        }
        for (req, outcome) in batch.into_iter().zip(outcomes) {
            let reply = outcome.map(|(_, staged)| match staged {
                Staged::Put(object, _) => Committed {
                    object,
                    changed: true,
                },
                Staged::Remove(object, _) => Committed {
                    object,
                    changed: true,
                },
                Staged::Unchanged(object) => Committed {
                    object,
                    changed: false,
                },
            });
            let _ = req.reply.send(reply);
        }
    }
}

/// Checks a request's precondition against the current state and builds the new state,
/// allocating the next version when something changes.
fn stage(op: &Op, current: Option<Arc<Stored>>, rv: &mut u64) -> Result<Staged, StoreError> {
    match op {
        Op::Create { object, .. } => {
            if current.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            *rv += 1;
            Ok(Staged::Put(stamp(object.clone(), *rv), None))
        }
        Op::Update {
            object,
            expected_rv,
            ..
        } => {
            let current = current.ok_or(StoreError::NotFound)?;
            if current.rv != *expected_rv {
                return Err(StoreError::Conflict {
                    current: current.rv,
                });
            }
            // Compare as JSON values, not bytes: a client that re-sends the same object with
            // its fields in another order has changed nothing.
            let mut unchanged = object.clone();
            set_rv(&mut unchanged, current.rv);
            if unchanged == current.value() {
                return Ok(Staged::Unchanged(current));
            }
            *rv += 1;
            Ok(Staged::Put(stamp(object.clone(), *rv), Some(current)))
        }
        Op::Delete { expected_rv, .. } => {
            let current = current.ok_or(StoreError::NotFound)?;
            if let Some(expected) = expected_rv
                && *expected != current.rv
            {
                return Err(StoreError::Conflict {
                    current: current.rv,
                });
            }
            *rv += 1;
            Ok(Staged::Remove(stamp(current.value(), *rv), current))
        }
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn stamp(mut object: Value, rv: u64) -> Arc<Stored> {
    set_rv(&mut object, rv);
    let json = serde_json::to_vec(&object).expect("a serde_json::Value always serializes");
    Arc::new(Stored {
        rv,
        summary: Summary::of(&object),
        json: Bytes::from(json),
    })
}

fn persist(
    conn: &mut rusqlite::Connection,
    outcomes: &[Result<(ObjectKey, Staged), StoreError>],
    rv: u64,
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO objects (resource, namespace, name, rv, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (resource, namespace, name) DO UPDATE SET rv = excluded.rv, body = excluded.body",
        )?;
        let mut remove = tx.prepare_cached(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?;
        for (key, staged) in outcomes.iter().flatten() {
            match staged {
                Staged::Put(new, _) => {
                    put.execute(rusqlite::params![
                        &*key.resource,
                        key.namespace,
                        key.name,
                        new.rv as i64,
                        &new.json[..]
                    ])?;
                }
                Staged::Remove(..) => {
                    remove.execute(rusqlite::params![&*key.resource, key.namespace, key.name])?;
                }
                Staged::Unchanged(_) => {}
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('rv', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [rv as i64],
        )?;
    }
    tx.commit()
}

/// rusqlite errors are not `Clone`; every request of a failed batch gets an equivalent error.
fn clone_sql_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::InvalidParameterName(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            resource: Arc::from("metal.sidero.dev/servers"),
            namespace: String::new(),
            name: name.into(),
        }
    }

    fn obj(name: &str, accepted: bool) -> Value {
        json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
               "metadata": {"name": name, "uid": format!("uid-{name}")},
               "spec": {"accepted": accepted}})
    }

    /// Updates `name` from its current version.
    async fn update_latest(store: &Store, name: &str, accepted: bool) {
        let op = Op::Update {
            key: key(name),
            expected_rv: store.get(&key(name)).unwrap().rv,
            object: obj(name, accepted),
        };
        store.commit(op).await.unwrap();
    }

    #[tokio::test]
    async fn a_version_out_of_the_history_catches_up_from_current_objects_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path, 2).unwrap();
        let create = |n: &'static str| Op::Create {
            key: key(n),
            object: obj(n, false),
        };
        for n in ["a", "b", "c"] {
            store.commit(create(n)).await.unwrap();
        }
        let since = store.current_rv();
        for accepted in [true, false, true] {
            update_latest(&store, "a", accepted).await;
        }
        store
            .commit(Op::Delete {
                key: key("b"),
                expected_rv: None,
            })
            .await
            .unwrap();
        store.commit(create("d")).await.unwrap();
        assert!(store.events_after(since).is_err(), "out of the history");

        let catch_up = store
            .changes_since("metal.sidero.dev/servers", since)
            .unwrap();
        assert_eq!(catch_up.rv, store.current_rv());
        let changed: Vec<(String, bool)> = catch_up
            .changed
            .iter()
            .map(|s| {
                (
                    s.summary.name.clone(),
                    s.value()["spec"]["accepted"] == true,
                )
            })
            .collect();
        // `a` once, as it is now; `c` did not change; `d` is new.
        assert_eq!(changed, [("a".to_string(), true), ("d".to_string(), false)]);
        assert_eq!(catch_up.deleted.len(), 1);
        let b = &catch_up.deleted[0];
        assert_eq!(b.key, key("b"));
        assert_eq!(b.last.value()["metadata"]["uid"], "uid-b");
        assert_eq!(
            b.last.value()["spec"]["accepted"],
            false,
            "the last state, whole"
        );
        assert!(
            store
                .changes_since("other/kinds", since)
                .unwrap()
                .changed
                .is_empty()
        );

        // Deletions before a restart are not known: too old.
        drop(store);
        let store = Store::open(&path, 2).unwrap();
        assert!(
            store
                .changes_since("metal.sidero.dev/servers", since)
                .is_err()
        );
        assert!(
            store
                .changes_since("metal.sidero.dev/servers", store.current_rv())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn versions_increase_in_commit_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path, 100).unwrap();
        let a = store
            .commit(Op::Create {
                key: key("a"),
                object: obj("a", false),
            })
            .await
            .unwrap();
        let b = store
            .commit(Op::Create {
                key: key("b"),
                object: obj("b", false),
            })
            .await
            .unwrap();
        assert!(b.object.rv > a.object.rv);
        store
            .commit(Op::Delete {
                key: key("b"),
                expected_rv: None,
            })
            .await
            .unwrap();
        let last = store.current_rv();
        drop(store);
        let reopened = Store::open(&path, 100).unwrap();
        assert_eq!(reopened.current_rv(), last, "counter must not go backwards");
        assert!(reopened.get(&key("a")).is_some());
        assert!(reopened.get(&key("b")).is_none());
        assert_eq!(
            reopened.get(&key("a")).unwrap().value()["metadata"]["resourceVersion"],
            "1"
        );
    }

    #[tokio::test]
    async fn stale_update_conflicts_and_noop_update_keeps_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 100).unwrap();
        let created = store
            .commit(Op::Create {
                key: key("a"),
                object: obj("a", false),
            })
            .await
            .unwrap();
        let rv = created.object.rv;
        let same = store
            .commit(Op::Update {
                key: key("a"),
                expected_rv: rv,
                object: obj("a", false),
            })
            .await
            .unwrap();
        assert!(!same.changed);
        assert_eq!(store.current_rv(), rv, "a no-op write allocates no version");
        let changed = store
            .commit(Op::Update {
                key: key("a"),
                expected_rv: rv,
                object: obj("a", true),
            })
            .await
            .unwrap();
        assert!(changed.changed);
        let stale = store
            .commit(Op::Update {
                key: key("a"),
                expected_rv: rv,
                object: obj("a", false),
            })
            .await;
        assert!(matches!(stale, Err(StoreError::Conflict { current }) if current == rv + 1));
        let dup = store
            .commit(Op::Create {
                key: key("a"),
                object: obj("a", false),
            })
            .await;
        assert!(matches!(dup, Err(StoreError::AlreadyExists)));
    }

    #[tokio::test]
    async fn history_serves_events_after_a_version_and_reports_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 3).unwrap();
        for n in ["a", "b", "c", "d", "e"] {
            store
                .commit(Op::Create {
                    key: key(n),
                    object: obj(n, false),
                })
                .await
                .unwrap();
        }
        let events = store.events_after(3).unwrap();
        assert_eq!(events.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![4, 5]);
        assert!(store.events_after(2).is_ok(), "3, 4, 5 are all still held");
        assert!(store.events_after(1).is_err(), "version 2 has been evicted");
    }

    #[tokio::test]
    async fn history_holds_at_most_its_byte_budget_but_always_the_newest_event() {
        let dir = tempfile::tempdir().unwrap();
        // The size of one stored create (every name below has one letter, every version one
        // digit), measured on a store of its own.
        let probe = Store::open(&dir.path().join("p.db"), 100).unwrap();
        let one = probe
            .commit(Op::Create {
                key: key("a"),
                object: obj("a", false),
            })
            .await
            .unwrap()
            .object
            .json
            .len();
        // Room for three creates' worth of bytes, ample room in events.
        let store = Store::open_with_limits(&dir.path().join("s.db"), 100, 3 * one + 1).unwrap();
        for n in ["a", "b", "c", "d", "e"] {
            store
                .commit(Op::Create {
                    key: key(n),
                    object: obj(n, false),
                })
                .await
                .unwrap();
        }
        assert!(store.events_after(2).is_ok(), "3, 4, 5 fit the budget");
        assert!(store.events_after(1).is_err(), "version 2 is beyond it");
        // An event larger than the whole budget is still served to live watchers.
        let tiny = Store::open_with_limits(&dir.path().join("t.db"), 100, 1).unwrap();
        tiny.commit(Op::Create {
            key: key("a"),
            object: obj("a", false),
        })
        .await
        .unwrap();
        assert_eq!(tiny.events_after(0).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_writers_are_batched_and_all_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), 10_000).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("s{i}");
                store
                    .commit(Op::Create {
                        key: key(&name),
                        object: obj(&name, false),
                    })
                    .await
                    .map(|c| c.object.rv)
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap().unwrap());
        }
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(versions.len(), 200, "every write gets its own version");
        assert_eq!(
            store.list("metal.sidero.dev/servers", None).objects.len(),
            200
        );
    }
}
