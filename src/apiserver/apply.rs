//! Server-side apply: field ownership (`metadata.managedFields`, FieldsV1) and the apply merge,
//! computed over plain JSON objects the way kube-apiserver's field manager does it.
//!
//! The model follows kubernetes-sigs/structured-merge-diff (smd) and
//! k8s.io/apimachinery/pkg/util/managedfields without an OpenAPI schema:
//!
//! - every JSON object is a granular map (each key a named field); every list is atomic except
//!   `metadata.finalizers` (a set, items `v:"name"`) and `metadata.ownerReferences` (a map list
//!   keyed by `uid`, items `k:{"uid":"…"}`), as in ObjectMeta's real schema;
//! - an applier owns exactly the leaves of its configuration; an updater owns what its write
//!   added or changed, including maps it created (which is why update entries carry `".": {}`);
//! - `status` belongs to the status subresource: main-resource writes neither change nor own it,
//!   status writes touch nothing else.
//!
//! Known simplifications: items merged into the two associative lists keep the live order and
//! new items go last (smd interleaves them by the applied order); `null` in an applied
//! configuration is stored as a value rather than meaning "absent"; update entries are not capped
//! at ten (smd folds the oldest into `ancient-changes`); the client-side-apply
//! `last-applied-configuration` annotation is not rewritten on server-side apply.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Longest field manager name the server keeps (`validation.FieldManagerMaxLength`).
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// `StatusCause.type` of each conflict in a 409 response to an apply.
pub const CONFLICT_CAUSE_TYPE: &str = "FieldManagerConflict";

/// Manager name the server records when a request names none (smd `buildManagerInfo`).
const UNKNOWN_MANAGER: &str = "unknown";

/// Metadata fields the server sets itself. Nobody owns them, and an applied configuration never
/// changes them: the live object (or the create path of the caller) is their only source.
const SYSTEM_METADATA: [&str; 9] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "clusterName",
];

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration changes fields that other managers own (HTTP 409, reason Conflict).
    #[error("{}", conflict_message(.conflicts))]
    Conflict { conflicts: Vec<Conflict> },
    /// The request or the stored object cannot be applied (HTTP 400, reason BadRequest).
    #[error("{message}")]
    Invalid { message: String },
}

/// Whether a managedFields entry was written by an apply or by any other write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    /// The wire spelling in `managedFields[].operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One field of an applied configuration that another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// How the other manager wrote the field.
    pub operation: Operation,
    /// The other manager's apiVersion (shown for updaters only, as the server does).
    pub api_version: String,
    /// The subresource the other manager wrote through, if any.
    pub subresource: Option<String>,
    /// The field, in smd path notation: `.spec.accepted`, `.metadata.finalizers[="x"]`.
    pub field: String,
}

impl Conflict {
    /// The manager as the server names it: `"kubectl"`, `"m" with subresource "status"`,
    /// `"kubectl-client-side-apply" using metal.sidero.dev/v1alpha2` (updaters show their version).
    pub fn manager_description(&self) -> String {
        let mut out = go_quote(&self.manager);
        if let Some(subresource) = &self.subresource {
            out.push_str(&format!(" with subresource {}", go_quote(subresource)));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// `StatusCause.message` for this conflict.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }

    /// The server's manager identifier (a JSON object); conflicts are grouped and sorted by it.
    fn identifier(&self) -> String {
        manager_identifier(
            &self.manager,
            self.operation,
            &self.api_version,
            self.subresource.as_deref(),
        )
    }
}

/// Builds the message of a 409 apply conflict, word for word as kube-apiserver does.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_description(),
            only.field
        );
    }
    let mut by_manager: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
    for conflict in conflicts {
        by_manager
            .entry(conflict.identifier())
            .or_insert_with(|| (conflict.manager_description(), Vec::new()))
            .1
            .push(&conflict.field);
    }
    let mut lines = Vec::new();
    for (description, fields) in by_manager.values() {
        lines.push(format!("conflicts with {description}:"));
        lines.extend(fields.iter().map(|field| format!("- {field}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Server-side apply of `applied` by `manager`; returns the object to store.
///
/// `live` is the stored object (None creates it). `subresource` None applies everything but
/// `status`; `Some("status")` applies only `status`. `now` is the RFC 3339 time recorded for the
/// manager when the object changes. Without `force`, changing a field that another manager owns
/// is refused with [`ApplyError::Conflict`]; with it, the applier takes the field over.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: &str,
) -> Result<Value, ApplyError> {
    let manager = if manager.is_empty() {
        UNKNOWN_MANAGER
    } else {
        manager
    };
    if !applied.is_object() {
        return Err(invalid("an apply patch must be a JSON or YAML object"));
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|fields| !fields.is_null())
    {
        return Err(invalid("metadata.managedFields must be nil"));
    }
    let patch_version = api_version_of(applied);
    let live_object = match live {
        Some(object) if object.is_object() => object.clone(),
        Some(_) => return Err(invalid("the stored object is not a JSON object")),
        None => Value::Object(Map::new()),
    };
    let api_version = match live {
        Some(object) => {
            let expected = api_version_of(object);
            if patch_version != expected {
                return Err(invalid(format!(
                    "Incorrect version specified in apply patch. Specified patch version: \
                     {patch_version}, expected: {expected}"
                )));
            }
            expected
        }
        None if patch_version.is_empty() => {
            return Err(invalid(
                "the apply patch has no apiVersion: set apiVersion to the resource's group/version",
            ));
        }
        None => patch_version,
    };
    let entries = decode_entries(&live_object)
        .map_err(|message| invalid(format!("failed to decode managed fields: {message}")))?;

    let scope = Scope::of(subresource);
    let config = scope.applied_config(applied);
    let mut merged = live_object.clone();
    merge(&mut Vec::new(), &mut merged, &config);

    let me = ManagerId::new(manager, Operation::Apply, &api_version, subresource);
    let config_fields = applied_fields(&config);
    let last_fields = entries
        .iter()
        .find(|entry| entry.id() == me)
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    if !last_fields.is_empty() {
        // Fields the applier owned last time and dropped now go, unless someone (including this
        // configuration) still owns them or anything beneath them.
        let mut keep = config_fields.union(&protected_fields());
        for entry in entries.iter().filter(|entry| entry.id() != me) {
            keep = keep.union(&entry.fields);
        }
        prune(
            &mut Vec::new(),
            &mut merged,
            &last_fields.with_all_nodes_as_members(),
            &keep.with_all_nodes_as_members(),
        );
    }

    let comparison = compare_objects(&scope.project(&live_object), &scope.project(&merged));
    let changed_fields = comparison.modified.union(&comparison.added);
    let mut conflicts = Vec::new();
    let mut next = Vec::with_capacity(entries.len() + 1);
    for entry in &entries {
        if entry.id() == me {
            continue;
        }
        let taken = entry.fields.intersection(&changed_fields);
        conflicts.extend(taken.paths().iter().map(|path| Conflict {
            manager: entry.manager.clone(),
            operation: entry.operation,
            api_version: entry.api_version.clone(),
            subresource: entry.subresource.clone(),
            field: path_string(path),
        }));
        let mut kept = entry.clone();
        kept.fields = entry
            .fields
            .difference(&taken)
            .difference(&comparison.removed);
        next.push(kept);
    }
    if !conflicts.is_empty() && !force {
        // Stable: paths stay in set order within one manager, as the server prints them.
        conflicts.sort_by_key(Conflict::identifier);
        return Err(ApplyError::Conflict { conflicts });
    }

    let changed = merged != live_object;
    let my_fields = config_fields.difference(&stripped_fields());
    let previous = entries.iter().find(|entry| entry.id() == me);
    let mine = ManagedEntry {
        manager: manager.to_owned(),
        operation: Operation::Apply,
        api_version,
        // The server stamps the time only when the object changed; a no-op apply keeps it.
        time: if changed {
            Some(now.to_owned())
        } else {
            previous.and_then(|entry| entry.time.clone())
        },
        subresource: subresource.map(str::to_owned),
        fields: my_fields,
    };
    match entries.iter().position(|entry| entry.id() == me) {
        Some(index) => next.insert(index.min(next.len()), mine),
        None => next.push(mine),
    }
    next.retain(|entry| !entry.fields.is_empty());
    if next != entries {
        write_entries(&mut merged, next);
    }
    Ok(merged)
}

/// Records the ownership change of a non-apply write (create, PUT, merge or JSON patch) in
/// `new.metadata.managedFields`: what the write added or changed now belongs to `manager`
/// (operation Update) and no longer to anyone else; what it removed belongs to nobody.
///
/// A write that changes nothing leaves managedFields byte for byte as they were. Like the
/// server, a client may replace managedFields wholesale through the main resource (`[]` or
/// `[{}]` clears them); writes through a subresource always start from `old`'s.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    if !new.is_object() {
        return;
    }
    let manager = if manager.is_empty() {
        UNKNOWN_MANAGER
    } else {
        manager
    };
    let mut api_version = api_version_of(new);
    if api_version.is_empty() {
        api_version = old.map(api_version_of).unwrap_or_default();
    }
    if api_version.is_empty() {
        // An entry without apiVersion would make the whole managedFields undecodable later;
        // objects always carry one by the time they are stored, so there is nothing to record.
        return;
    }
    let empty = Value::Object(Map::new());
    let old_object = old.filter(|object| object.is_object()).unwrap_or(&empty);
    let (entries, source) = decode_live_or_new(old_object, new, subresource.is_some());

    let scope = Scope::of(subresource);
    let comparison = compare_objects(&scope.project(old_object), &scope.project(new));
    let written = comparison.modified.union(&comparison.added);
    let mut next: Vec<ManagedEntry> = entries
        .iter()
        .map(|entry| {
            let mut kept = entry.clone();
            kept.fields = entry
                .fields
                .difference(&written)
                .difference(&comparison.removed);
            kept
        })
        .collect();
    let mine = written.difference(&stripped_fields());
    if !mine.is_empty() {
        let me = ManagerId::new(manager, Operation::Update, &api_version, subresource);
        match next.iter_mut().find(|entry| entry.id() == me) {
            Some(entry) => {
                entry.fields = entry.fields.union(&mine);
                entry.time = Some(now.to_owned());
            }
            None => next.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: Operation::Update,
                api_version,
                time: Some(now.to_owned()),
                subresource: subresource.map(str::to_owned),
                fields: mine,
            }),
        }
    }
    next.retain(|entry| !entry.fields.is_empty());

    if next == entries {
        match source {
            // Already in `new`, exactly as the client sent it.
            EntriesSource::New => {}
            EntriesSource::Old => {
                let stored = old_object.pointer("/metadata/managedFields").cloned();
                set_managed_fields(new, stored);
            }
            EntriesSource::Reset => write_entries(new, next),
        }
    } else {
        write_entries(new, next);
    }
}

/// The fields an apply of `object` would claim, as FieldsV1 JSON (e.g.
/// `{"f:metadata":{"f:labels":{"f:rack":{}}},"f:spec":{"f:accepted":{}}}`). Server-owned
/// metadata (name, uid, …), apiVersion and kind are left out; `status` is kept.
pub fn field_set(object: &Value) -> Value {
    applied_fields(object)
        .difference(&stripped_fields())
        .to_fields_v1()
}

/// The field manager the server derives from a User-Agent when the request names none: the text
/// before the first `/`, without unprintable characters, cut at 128 bytes.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let product = user_agent
        .split_once('/')
        .map_or(user_agent, |(product, _)| product);
    let mut manager = String::new();
    for c in product.chars() {
        // Go's unicode.IsPrint: graphic characters plus the ASCII space only.
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            continue;
        }
        if manager.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        manager.push(c);
    }
    manager
}

fn invalid(message: impl Into<String>) -> ApplyError {
    ApplyError::Invalid {
        message: message.into(),
    }
}

fn api_version_of(object: &Value) -> String {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Which part of the object a write may touch and own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything but `status` (the main resource of a kind with a status subresource).
    Main,
    /// Only `status`.
    Status,
}

impl Scope {
    fn of(subresource: Option<&str>) -> Self {
        if subresource == Some("status") {
            Scope::Status
        } else {
            Scope::Main
        }
    }

    fn includes(self, top_level_key: &str) -> bool {
        (top_level_key == "status") == (self == Scope::Status)
    }

    /// The part of `object` this scope compares, without managedFields (never a field).
    fn project(self, object: &Value) -> Value {
        let mut out = Map::new();
        if let Value::Object(map) = object {
            for (key, value) in map.iter().filter(|(key, _)| self.includes(key)) {
                let mut value = value.clone();
                if key == "metadata"
                    && let Value::Object(metadata) = &mut value
                {
                    metadata.shift_remove("managedFields");
                }
                out.insert(key.clone(), value);
            }
        }
        Value::Object(out)
    }

    /// The part of an applied configuration that is merged and owned: this scope, minus the
    /// metadata only the server sets.
    fn applied_config(self, applied: &Value) -> Value {
        let mut config = self.project(applied);
        if let Some(Value::Object(metadata)) = config.get_mut("metadata") {
            for key in SYSTEM_METADATA {
                metadata.shift_remove(key);
            }
        }
        config
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and field sets
// ---------------------------------------------------------------------------------------------

/// One step of a field path (smd `PathElement`); the variant order is the FieldsV1 key order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathElement {
    /// A map key: `f:name`.
    Field(String),
    /// An item of a map list, by its key fields sorted by name: `k:{"uid":"…"}`.
    Key(Vec<(String, Value)>),
    /// An item of a set list, by value: `v:"name"`.
    Item(Value),
    /// An item of a list by position: `i:0` (only ever read from stored data).
    Index(i64),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Item(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The FieldsV1 object key.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| {
                        format!(
                            "{}:{}",
                            go_json(&Value::from(name.as_str())),
                            go_json(value)
                        )
                    })
                    .collect();
                format!("k:{{{}}}", fields.join(","))
            }
            PathElement::Item(value) => format!("v:{}", go_json(value)),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a FieldsV1 object key; `Ok(None)` for element types this server does not know,
    /// which smd drops rather than failing.
    fn decode(key: &str) -> Result<Option<Self>, String> {
        let Some((kind, rest)) = key.split_once(':').filter(|(kind, _)| kind.len() == 1) else {
            return Err(format!(
                "{key:?}: a FieldsV1 key starts with one letter and a colon"
            ));
        };
        let element = match kind {
            "f" => PathElement::Field(rest.to_owned()),
            "v" => PathElement::Item(
                serde_json::from_str(rest).map_err(|error| format!("{key:?}: {error}"))?,
            ),
            "k" => {
                let fields: Map<String, Value> =
                    serde_json::from_str(rest).map_err(|error| format!("{key:?}: {error}"))?;
                let mut fields: Vec<(String, Value)> = fields.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PathElement::Key(fields)
            }
            "i" => PathElement::Index(
                rest.parse()
                    .map_err(|error| format!("{key:?}: bad index: {error}"))?,
            ),
            _ => return Ok(None),
        };
        Ok(Some(element))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((a_name, a_value), (b_name, b_value)) in a.iter().zip(b) {
                    let order = a_name
                        .cmp(b_name)
                        .then_with(|| compare_values(a_value, b_value));
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Item(a), PathElement::Item(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PathElement {
    /// smd's path notation, used in conflict messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", go_display(value)))
                    .collect();
                write!(f, "[{}]", fields.join(","))
            }
            PathElement::Item(value) => write!(f, "[={}]", go_display(value)),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

type Path = Vec<PathElement>;

fn path_string(path: &[PathElement]) -> String {
    path.iter().map(PathElement::to_string).collect()
}

/// smd's value order: numbers, strings, booleans, lists, maps, null.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| compare_values(x, y))
            .find(|order| *order != Ordering::Equal)
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(x), Value::Object(y)) => {
            let x: BTreeMap<&String, &Value> = x.iter().collect();
            let y: BTreeMap<&String, &Value> = y.iter().collect();
            x.iter()
                .zip(&y)
                .map(|((xk, xv), (yk, yv))| xk.cmp(yk).then_with(|| compare_values(xv, yv)))
                .find(|order| *order != Ordering::Equal)
                .unwrap_or_else(|| x.len().cmp(&y.len()))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// JSON as Go's encoding/json writes it: compact, with `<`, `>`, `&`, U+2028 and U+2029
/// escaped, so FieldsV1 keys match what kube-apiserver writes.
fn go_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A quoted string as Go's `%q` prints it (JSON quoting agrees for every printable string).
fn go_quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// A value as smd's `value.ToString` prints it inside path elements.
fn go_display(value: &Value) -> String {
    match value {
        Value::String(text) => go_quote(text),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_display).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| format!("{key}={}", go_display(value)))
            .collect(),
        other => other.to_string(),
    }
}

/// A set of field paths as a trie (smd `fieldpath.Set`): a node is a *member* when its own
/// path is in the set, and may also hold children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    nodes: BTreeMap<PathElement, FieldNode>,
}

/// Invariant: every stored node is a member or has children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldNode {
    member: bool,
    children: FieldSet,
}

impl FieldNode {
    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for (element, theirs) in &other.nodes {
            let node = out.nodes.entry(element.clone()).or_default();
            node.member |= theirs.member;
            node.children = node.children.union(&theirs.children);
        }
        out
    }

    /// Paths of `self` that are not paths of `other` (not recursive: removing a map's own path
    /// keeps the fields beneath it, as in smd).
    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (element, ours) in &self.nodes {
            let node = match other.nodes.get(element) {
                Some(theirs) => FieldNode {
                    member: ours.member && !theirs.member,
                    children: ours.children.difference(&theirs.children),
                },
                None => ours.clone(),
            };
            if !node.is_empty() {
                out.nodes.insert(element.clone(), node);
            }
        }
        out
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (element, ours) in &self.nodes {
            if let Some(theirs) = other.nodes.get(element) {
                let node = FieldNode {
                    member: ours.member && theirs.member,
                    children: ours.children.intersection(&theirs.children),
                };
                if !node.is_empty() {
                    out.nodes.insert(element.clone(), node);
                }
            }
        }
        out
    }

    /// The set with every ancestor of a path made a path too (smd
    /// `EnsureNamedFieldsAreMembers`, with every map key a named field): pruning works on these.
    fn with_all_nodes_as_members(&self) -> FieldSet {
        FieldSet {
            nodes: self
                .nodes
                .iter()
                .map(|(element, node)| {
                    let node = FieldNode {
                        member: true,
                        children: node.children.with_all_nodes_as_members(),
                    };
                    (element.clone(), node)
                })
                .collect(),
        }
    }

    /// Every path, in smd's iteration order: a level's members first, then each child's paths.
    fn paths(&self) -> Vec<Path> {
        fn walk(set: &FieldSet, prefix: &mut Path, out: &mut Vec<Path>) {
            for (element, node) in &set.nodes {
                if node.member {
                    let mut path = prefix.clone();
                    path.push(element.clone());
                    out.push(path);
                }
            }
            for (element, node) in &set.nodes {
                if !node.children.is_empty() {
                    prefix.push(element.clone());
                    walk(&node.children, prefix, out);
                    prefix.pop();
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// FieldsV1 JSON: sorted keys, `{}` for a leaf, `".": {}` for a member that has children.
    fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        for (element, node) in &self.nodes {
            let mut inner = Map::new();
            if node.member && !node.children.is_empty() {
                inner.insert(".".to_owned(), Value::Object(Map::new()));
            }
            if let Value::Object(children) = node.children.to_fields_v1() {
                inner.extend(children);
            }
            out.insert(element.encode(), Value::Object(inner));
        }
        Value::Object(out)
    }

    fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err("fieldsV1 must be a JSON object".to_owned());
        };
        let mut out = FieldSet::default();
        for (key, inner) in map.iter().filter(|(key, _)| *key != ".") {
            let Some(element) = PathElement::decode(key)? else {
                continue;
            };
            let Value::Object(inner_map) = inner else {
                return Err(format!("{key:?}: the value must be a JSON object"));
            };
            let children = FieldSet::from_fields_v1(inner)?;
            // A key whose object holds nothing known (`{}`) is itself a member.
            let member = inner_map.contains_key(".") || children.is_empty();
            out.nodes.insert(element, FieldNode { member, children });
        }
        Ok(out)
    }
}

/// Paths never recorded for anyone (smd's strip-meta manager), plus deletionTimestamp.
fn stripped_fields() -> FieldSet {
    let mut set = FieldSet::default();
    for top in ["apiVersion", "kind", "metadata"] {
        set.insert(&[PathElement::Field(top.to_owned())]);
    }
    for key in ["name", "namespace"].into_iter().chain(SYSTEM_METADATA) {
        set.insert(&[
            PathElement::Field("metadata".to_owned()),
            PathElement::Field(key.to_owned()),
        ]);
    }
    set
}

/// Paths pruning must never remove whatever anybody owns: identity and server metadata.
fn protected_fields() -> FieldSet {
    stripped_fields()
}

// ---------------------------------------------------------------------------------------------
// Walking objects
// ---------------------------------------------------------------------------------------------

/// How a value at a path is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A JSON object: each key is tracked separately.
    Map,
    /// `metadata.finalizers`: each item is tracked by value.
    Set,
    /// `metadata.ownerReferences`: each item is tracked by its uid, and its fields beneath.
    Keyed,
    /// Scalars, null and atomic lists: tracked as a whole.
    Leaf,
}

fn is_metadata_field(path: &[PathElement], name: &str) -> bool {
    matches!(path, [PathElement::Field(top), PathElement::Field(field)]
        if top == "metadata" && field == name)
}

fn shape(path: &[PathElement], value: &Value) -> Shape {
    match value {
        Value::Object(_) => Shape::Map,
        // Malformed items (say, a finalizer that is an object) make the list atomic rather than
        // failing: validation reports them, ownership just tracks the list whole.
        Value::Array(items)
            if is_metadata_field(path, "finalizers")
                && items
                    .iter()
                    .all(|item| !item.is_object() && !item.is_array()) =>
        {
            Shape::Set
        }
        Value::Array(items)
            if is_metadata_field(path, "ownerReferences")
                && items
                    .iter()
                    .all(|item| item.get("uid").is_some_and(Value::is_string)) =>
        {
            Shape::Keyed
        }
        _ => Shape::Leaf,
    }
}

/// The path element of one item of a Set or Keyed list.
fn item_element(shape: Shape, item: &Value) -> Option<PathElement> {
    match shape {
        Shape::Set => Some(PathElement::Item(item.clone())),
        Shape::Keyed => item
            .get("uid")
            .map(|uid| PathElement::Key(vec![("uid".to_owned(), uid.clone())])),
        Shape::Map | Shape::Leaf => None,
    }
}

/// The tracked children of a value, first occurrence winning over duplicates.
fn elements(shape: Shape, value: &Value) -> Vec<(PathElement, &Value)> {
    match (shape, value) {
        (Shape::Map, Value::Object(map)) => map
            .iter()
            .map(|(key, child)| (PathElement::Field(key.clone()), child))
            .collect(),
        (Shape::Set | Shape::Keyed, Value::Array(items)) => {
            let mut seen = BTreeSet::new();
            items
                .iter()
                .filter_map(|item| item_element(shape, item).map(|element| (element, item)))
                .filter(|(element, _)| seen.insert(element.clone()))
                .collect()
        }
        _ => Vec::new(),
    }
}

fn has_elements(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

/// The fields an applied configuration claims (smd `ToFieldSet`): its leaves, empty maps, and
/// each item of the associative lists.
fn applied_fields(object: &Value) -> FieldSet {
    fn children(path: &mut Path, value: &Value, set: &mut FieldSet) {
        let value_shape = shape(path, value);
        for (element, child) in elements(value_shape, value) {
            path.push(element);
            claim(path, child, set);
            if matches!(value_shape, Shape::Set | Shape::Keyed) {
                set.insert(path);
            }
            path.pop();
        }
    }
    fn claim(path: &mut Path, value: &Value, set: &mut FieldSet) {
        match shape(path, value) {
            Shape::Map if has_elements(value) => children(path, value, set),
            Shape::Set | Shape::Keyed => children(path, value, set),
            Shape::Map | Shape::Leaf => set.insert(path),
        }
    }
    let mut set = FieldSet::default();
    children(&mut Vec::new(), object, &mut set);
    set
}

/// What changed between two versions of an object (smd `Comparison`).
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

fn compare_objects(old: &Value, new: &Value) -> Comparison {
    let mut comparison = Comparison::default();
    compare(&mut Vec::new(), Some(old), Some(new), &mut comparison);
    comparison
}

/// Like smd's compare walker: maps and associative lists are walked item by item, and a map or
/// list that appears or disappears is itself added or removed (so updaters own maps they
/// create). Two empty-or-absent containers compare as leaves, keeping `{}` apart from absent.
fn compare(path: &mut Path, old: Option<&Value>, new: Option<&Value>, out: &mut Comparison) {
    let old_shape = old.map(|value| shape(path, value));
    let new_shape = new.map(|value| shape(path, value));
    let walked = |value: Option<&Value>, value_shape: Option<Shape>| {
        value.is_some_and(has_elements) && value_shape.is_some_and(|s| s != Shape::Leaf)
    };
    if !walked(old, old_shape) && !walked(new, new_shape) {
        match (old, new) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(old), Some(new)) if old != new => out.modified.insert(path),
            _ => {}
        }
        return;
    }
    let old_elements = match (old, old_shape) {
        (Some(value), Some(value_shape)) => elements(value_shape, value),
        _ => Vec::new(),
    };
    let new_elements = match (new, new_shape) {
        (Some(value), Some(value_shape)) => elements(value_shape, value),
        _ => Vec::new(),
    };
    let new_by_element: BTreeMap<&PathElement, &Value> =
        new_elements.iter().map(|(e, v)| (e, *v)).collect();
    let old_by_element: BTreeMap<&PathElement, &Value> =
        old_elements.iter().map(|(e, v)| (e, *v)).collect();
    for (element, old_child) in &old_elements {
        path.push(element.clone());
        compare(
            path,
            Some(old_child),
            new_by_element.get(element).copied(),
            out,
        );
        path.pop();
    }
    for (element, new_child) in &new_elements {
        if !old_by_element.contains_key(element) {
            path.push(element.clone());
            compare(path, None, Some(new_child), out);
            path.pop();
        }
    }
    match (old_shape, new_shape) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        // A map turned into a scalar (or back) is a change of the field itself.
        (Some(old_shape), Some(new_shape)) if old_shape != new_shape => out.modified.insert(path),
        _ => {}
    }
}

/// Merges an applied configuration into the live object (smd `Merge`): maps recursively,
/// associative lists item by item, everything else replaced by the configuration's value.
fn merge(path: &mut Path, live: &mut Value, config: &Value) {
    let live_shape = shape(path, live);
    if live_shape == shape(path, config) {
        match (live_shape, &mut *live, config) {
            (Shape::Map, Value::Object(live_map), Value::Object(config_map)) => {
                for (key, config_child) in config_map {
                    match live_map.get_mut(key) {
                        Some(live_child) => {
                            path.push(PathElement::Field(key.clone()));
                            merge(path, live_child, config_child);
                            path.pop();
                        }
                        None => {
                            live_map.insert(key.clone(), config_child.clone());
                        }
                    }
                }
                return;
            }
            (Shape::Set, Value::Array(live_items), Value::Array(config_items)) => {
                for item in config_items {
                    if !live_items.contains(item) {
                        live_items.push(item.clone());
                    }
                }
                return;
            }
            (Shape::Keyed, Value::Array(live_items), Value::Array(config_items)) => {
                for config_item in config_items {
                    let element = item_element(Shape::Keyed, config_item);
                    let existing = live_items
                        .iter_mut()
                        .find(|live_item| item_element(Shape::Keyed, live_item) == element);
                    match (existing, element) {
                        (Some(live_item), Some(element)) => {
                            path.push(element);
                            merge(path, live_item, config_item);
                            path.pop();
                        }
                        _ => live_items.push(config_item.clone()),
                    }
                }
                return;
            }
            _ => {}
        }
    }
    *live = config.clone();
}

/// Removes from `value` every field or item in `last` (every node a member) that is not in
/// `keep` (every node a member), with all it contains.
fn prune(path: &mut Path, value: &mut Value, last: &FieldSet, keep: &FieldSet) {
    let value_shape = shape(path, value);
    match (value_shape, value) {
        (Shape::Map, Value::Object(map)) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let element = PathElement::Field(key.clone());
                let Some(last_node) = last.nodes.get(&element) else {
                    continue;
                };
                match (keep.nodes.get(&element), map.get_mut(&key)) {
                    (None, _) => {
                        // shift_remove keeps the order of the remaining keys.
                        map.shift_remove(&key);
                    }
                    (Some(keep_node), Some(child)) => {
                        path.push(element);
                        prune(path, child, &last_node.children, &keep_node.children);
                        path.pop();
                    }
                    (Some(_), None) => {}
                }
            }
        }
        (Shape::Set | Shape::Keyed, Value::Array(items)) => {
            items.retain(|item| {
                item_element(value_shape, item).is_none_or(|element| {
                    !last.nodes.contains_key(&element) || keep.nodes.contains_key(&element)
                })
            });
            for item in items.iter_mut() {
                let Some(element) = item_element(value_shape, item) else {
                    continue;
                };
                if let (Some(last_node), Some(keep_node)) =
                    (last.nodes.get(&element), keep.nodes.get(&element))
                {
                    path.push(element);
                    prune(path, item, &last_node.children, &keep_node.children);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------------------------

/// What makes two entries the same manager (smd's manager identifier): an applier is one entry
/// whatever version it applies; an updater has one entry per apiVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagerId {
    manager: String,
    operation: Operation,
    api_version: String,
    subresource: Option<String>,
}

impl ManagerId {
    fn new(
        manager: &str,
        operation: Operation,
        api_version: &str,
        subresource: Option<&str>,
    ) -> Self {
        ManagerId {
            manager: manager.to_owned(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => api_version.to_owned(),
            },
            subresource: subresource.filter(|s| !s.is_empty()).map(str::to_owned),
        }
    }
}

/// The identifier as the server serializes it (a ManagedFieldsEntry without fields or time).
fn manager_identifier(
    manager: &str,
    operation: Operation,
    api_version: &str,
    subresource: Option<&str>,
) -> String {
    let mut out = format!(
        "{{\"manager\":{},\"operation\":\"{}\"",
        go_json(&Value::from(manager)),
        operation.as_str()
    );
    if operation == Operation::Update && !api_version.is_empty() {
        out.push_str(&format!(
            ",\"apiVersion\":{}",
            go_json(&Value::from(api_version))
        ));
    }
    if let Some(subresource) = subresource.filter(|s| !s.is_empty()) {
        out.push_str(&format!(
            ",\"subresource\":{}",
            go_json(&Value::from(subresource))
        ));
    }
    out.push('}');
    out
}

/// One decoded `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagedEntry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
}

impl ManagedEntry {
    fn id(&self) -> ManagerId {
        ManagerId::new(
            &self.manager,
            self.operation,
            &self.api_version,
            self.subresource.as_deref(),
        )
    }

    /// Decodes and validates one entry with the server's messages.
    fn decode(index: usize, value: &Value) -> Result<ManagedEntry, String> {
        let text = |key: &str| -> Result<Option<String>, String> {
            match value.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(format!(
                    "{key} in managed fields entry {index} must be a string"
                )),
            }
        };
        if !value.is_object() {
            return Err(format!("managed fields entry {index} must be an object"));
        }
        let operation = match text("operation")?.as_deref() {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".to_owned()),
        };
        let api_version = text("apiVersion")?.unwrap_or_default();
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".to_owned());
        }
        match text("fieldsType")?.as_deref() {
            Some("FieldsV1") => {}
            None | Some("") => {
                return Err(format!(
                    "missing fieldsType in managed fields entry {index}"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {index}"
                ));
            }
        }
        let fields = match value.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(fields) => FieldSet::from_fields_v1(fields)
                .map_err(|error| format!("managed fields entry {index}: {error}"))?,
        };
        Ok(ManagedEntry {
            manager: text("manager")?.unwrap_or_default(),
            operation,
            api_version,
            time: text("time")?,
            subresource: text("subresource")?.filter(|s| !s.is_empty()),
            fields,
        })
    }

    /// The wire form, keys in metav1.ManagedFieldsEntry's order.
    fn encode(&self) -> Value {
        let mut out = Map::new();
        if !self.manager.is_empty() {
            out.insert("manager".to_owned(), Value::from(self.manager.as_str()));
        }
        out.insert("operation".to_owned(), Value::from(self.operation.as_str()));
        out.insert(
            "apiVersion".to_owned(),
            Value::from(self.api_version.as_str()),
        );
        if let Some(time) = &self.time {
            out.insert("time".to_owned(), Value::from(time.as_str()));
        }
        out.insert("fieldsType".to_owned(), Value::from("FieldsV1"));
        out.insert("fieldsV1".to_owned(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            out.insert("subresource".to_owned(), Value::from(subresource.as_str()));
        }
        Value::Object(out)
    }
}

/// Decodes `object.metadata.managedFields`; a later entry for the same manager replaces an
/// earlier one, as in the server's map.
fn decode_entries(object: &Value) -> Result<Vec<ManagedEntry>, String> {
    let items = match object.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("metadata.managedFields must be a list".to_owned()),
    };
    let mut entries: Vec<ManagedEntry> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let entry = ManagedEntry::decode(index, item)?;
        match entries.iter_mut().find(|known| known.id() == entry.id()) {
            Some(known) => *known = entry,
            None => entries.push(entry),
        }
    }
    Ok(entries)
}

/// Where [`record_update`] took the managers it starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntriesSource {
    /// The stored object (the request sent none, or garbage, or wrote a subresource).
    Old,
    /// The request object, which replaced them.
    New,
    /// The request cleared them with `[]` or `[{}]`.
    Reset,
}

/// smd's `decodeLiveOrNew`: the request's managedFields win when it carries valid, non-empty
/// ones, so a client that does not know about them cannot erase them by omission.
fn decode_live_or_new(
    old: &Value,
    new: &Value,
    is_subresource: bool,
) -> (Vec<ManagedEntry>, EntriesSource) {
    let from_old = || (decode_entries(old).unwrap_or_default(), EntriesSource::Old);
    if is_subresource {
        return from_old();
    }
    if let Some(Value::Array(items)) = new.pointer("/metadata/managedFields") {
        let cleared = match items.as_slice() {
            [] => true,
            [only] => only.as_object().is_some_and(Map::is_empty),
            _ => false,
        };
        if cleared {
            return (Vec::new(), EntriesSource::Reset);
        }
    }
    match decode_entries(new) {
        Ok(entries) if !entries.is_empty() => (entries, EntriesSource::New),
        _ => from_old(),
    }
}

/// Writes `entries` in the server's order (Apply before Update, then oldest first, then by
/// manager, apiVersion and subresource); no entries removes the key, as the server omits it.
fn write_entries(object: &mut Value, mut entries: Vec<ManagedEntry>) {
    // RFC 3339 UTC times of one format order like the instants they name; a missing time
    // counts as the epoch, as in the server.
    entries.sort_by(|a, b| {
        a.operation
            .as_str()
            .cmp(b.operation.as_str())
            .then_with(|| {
                a.time
                    .as_deref()
                    .unwrap_or("")
                    .cmp(b.time.as_deref().unwrap_or(""))
            })
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let encoded = (!entries.is_empty())
        .then(|| Value::Array(entries.iter().map(ManagedEntry::encode).collect()));
    set_managed_fields(object, encoded);
}

fn set_managed_fields(object: &mut Value, managed_fields: Option<Value>) {
    let Value::Object(map) = object else {
        return;
    };
    match managed_fields {
        Some(managed_fields) => {
            let metadata = map
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(metadata) = metadata {
                metadata.insert("managedFields".to_owned(), managed_fields);
            }
        }
        None => {
            if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
                metadata.shift_remove("managedFields");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V: &str = "metal.sidero.dev/v1alpha2";
    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:01:00Z";
    const T2: &str = "2025-01-01T00:02:00Z";

    fn server(spec: Value) -> Value {
        json!({"apiVersion": V, "kind": "Server", "metadata": {"name": "s1"}, "spec": spec})
    }

    fn entries(object: &Value) -> Vec<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(object: &'a Value, manager: &str) -> &'a Value {
        object["metadata"]["managedFields"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["manager"] == manager))
            .unwrap_or_else(|| panic!("no entry for {manager} in {object}"))
    }

    fn conflict_text(result: Result<Value, ApplyError>) -> String {
        match result {
            Err(error @ ApplyError::Conflict { .. }) => error.to_string(),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn apply_creates_the_object_and_records_the_applier() {
        let config = json!({"apiVersion": V, "kind": "Server",
            "metadata": {"name": "s1", "labels": {"rack": "a"}}, "spec": {"accepted": true}});
        let created = apply(None, &config, "kubectl", false, None, T0).unwrap();
        assert_eq!(created["spec"], json!({"accepted": true}));
        assert_eq!(created["metadata"]["labels"], json!({"rack": "a"}));
        assert_eq!(
            created["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": V, "time": T0,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:rack": {}}},
                             "f:spec": {"f:accepted": {}}}}])
        );
    }

    #[test]
    fn reapplying_the_same_config_changes_nothing_not_even_the_time() {
        let config = server(json!({"accepted": true, "hostname": "n1"}));
        let created = apply(None, &config, "kubectl", false, None, T0).unwrap();
        let again = apply(Some(&created), &config, "kubectl", false, None, T1).unwrap();
        assert_eq!(again, created);
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&created).unwrap()
        );
        assert_eq!(entry(&again, "kubectl")["time"], T0);
    }

    #[test]
    fn applying_without_a_field_removes_it() {
        let first = json!({"apiVersion": V, "kind": "Server",
            "metadata": {"name": "s1", "labels": {"rack": "a"}},
            "spec": {"accepted": true, "hostname": "n1"}});
        let live = apply(None, &first, "kubectl", false, None, T0).unwrap();
        let second = server(json!({"accepted": true}));
        let next = apply(Some(&live), &second, "kubectl", false, None, T1).unwrap();
        assert_eq!(next["spec"], json!({"accepted": true}));
        assert!(next["metadata"].get("labels").is_none(), "{next}");
        assert_eq!(next["metadata"]["name"], "s1");
        assert_eq!(
            entry(&next, "kubectl")["fieldsV1"],
            json!({"f:spec": {"f:accepted": {}}})
        );
        assert_eq!(entry(&next, "kubectl")["time"], T1);
    }

    #[test]
    fn a_dropped_field_another_manager_owns_stays() {
        let live = apply(
            None,
            &server(json!({"hostname": "n1"})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let live = apply(
            Some(&live),
            &server(json!({"hostname": "n1"})),
            "b",
            false,
            None,
            T1,
        )
        .unwrap();
        let next = apply(Some(&live), &server(json!({})), "a", false, None, T2).unwrap();
        assert_eq!(next["spec"], json!({"hostname": "n1"}));
        assert_eq!(
            entry(&next, "b")["fieldsV1"],
            json!({"f:spec": {"f:hostname": {}}})
        );
    }

    #[test]
    fn two_appliers_of_different_fields_coexist() {
        let live = apply(
            None,
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let live = apply(
            Some(&live),
            &server(json!({"hostname": "n1"})),
            "b",
            false,
            None,
            T1,
        )
        .unwrap();
        let live = apply(
            Some(&live),
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(live["spec"], json!({"accepted": true, "hostname": "n1"}));
        assert_eq!(entries(&live).len(), 2);
        assert_eq!(
            entry(&live, "b")["fieldsV1"],
            json!({"f:spec": {"f:hostname": {}}})
        );
    }

    #[test]
    fn equal_values_are_shared_not_conflicts() {
        let live = apply(
            None,
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let live = apply(
            Some(&live),
            &server(json!({"accepted": true})),
            "b",
            false,
            None,
            T1,
        )
        .unwrap();
        for manager in ["a", "b"] {
            assert_eq!(
                entry(&live, manager)["fieldsV1"],
                json!({"f:spec": {"f:accepted": {}}})
            );
        }
        // The object did not change, so (as in kube-apiserver) "b" gets no timestamp.
        assert!(entry(&live, "b").get("time").is_none(), "{live}");
        assert_eq!(entry(&live, "a")["time"], T0);
    }

    #[test]
    fn two_appliers_disagreeing_on_a_field_conflict_with_the_servers_message() {
        let live = apply(
            None,
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let result = apply(
            Some(&live),
            &server(json!({"accepted": false})),
            "b",
            false,
            None,
            T1,
        );
        assert_eq!(
            conflict_text(result),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.accepted"
        );
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let live = apply(
            None,
            &server(json!({"accepted": true, "hostname": "n1"})),
            "m",
            false,
            None,
            T0,
        )
        .unwrap();
        let mut updated = live.clone();
        updated["spec"]["cordoned"] = json!(true);
        record_update(Some(&live), &mut updated, "kubectl-edit", None, T1);
        let result = apply(
            Some(&updated),
            &server(json!({"accepted": false, "hostname": "n2", "cordoned": false})),
            "other",
            false,
            None,
            T2,
        );
        assert_eq!(
            conflict_text(result),
            "Apply failed with 3 conflicts: conflicts with \"kubectl-edit\" using \
             metal.sidero.dev/v1alpha2:\n- .spec.cordoned\nconflicts with \"m\":\n\
             - .spec.accepted\n- .spec.hostname"
        );
    }

    #[test]
    fn conflicts_carry_cause_details() {
        let live = apply(
            None,
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let Err(ApplyError::Conflict { conflicts }) = apply(
            Some(&live),
            &server(json!({"accepted": false})),
            "b",
            false,
            None,
            T1,
        ) else {
            panic!("expected a conflict");
        };
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, ".spec.accepted");
        assert_eq!(conflicts[0].cause_message(), "conflict with \"a\"");
    }

    #[test]
    fn force_moves_ownership_to_the_applier() {
        let live = apply(
            None,
            &server(json!({"accepted": true, "hostname": "n1"})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let next = apply(
            Some(&live),
            &server(json!({"accepted": false})),
            "b",
            true,
            None,
            T1,
        )
        .unwrap();
        assert_eq!(next["spec"], json!({"accepted": false, "hostname": "n1"}));
        assert_eq!(
            entry(&next, "a")["fieldsV1"],
            json!({"f:spec": {"f:hostname": {}}})
        );
        assert_eq!(
            entry(&next, "b")["fieldsV1"],
            json!({"f:spec": {"f:accepted": {}}})
        );
        // The former owner no longer conflicts with itself losing the field.
        let back = apply(
            Some(&next),
            &server(json!({"hostname": "n1"})),
            "a",
            false,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(back["spec"]["accepted"], false);
    }

    #[test]
    fn a_forced_takeover_of_all_fields_drops_the_old_entry() {
        let live = apply(
            None,
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let next = apply(
            Some(&live),
            &server(json!({"accepted": false})),
            "b",
            true,
            None,
            T1,
        )
        .unwrap();
        assert_eq!(entries(&next).len(), 1);
        assert_eq!(entry(&next, "b")["operation"], "Apply");
    }

    #[test]
    fn an_updaters_field_changed_by_an_apply_is_a_conflict() {
        let mut created = server(json!({"accepted": false}));
        record_update(None, &mut created, "kubectl-client-side-apply", None, T0);
        assert_eq!(
            entry(&created, "kubectl-client-side-apply")["fieldsV1"],
            json!({"f:spec": {".": {}, "f:accepted": {}}})
        );
        let result = apply(
            Some(&created),
            &server(json!({"accepted": true})),
            "kubectl",
            false,
            None,
            T1,
        );
        assert_eq!(
            conflict_text(result),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using \
             metal.sidero.dev/v1alpha2: .spec.accepted"
        );
    }

    #[test]
    fn status_in_an_apply_to_the_main_resource_is_ignored() {
        let mut live = server(json!({"accepted": true}));
        live["status"] = json!({"ready": false});
        let live = apply(
            Some(&live),
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let mut config = server(json!({"accepted": true}));
        config["status"] = json!({"ready": true, "power": "on"});
        let next = apply(Some(&live), &config, "a", false, None, T1).unwrap();
        assert_eq!(next, live);
        assert_eq!(next["status"], json!({"ready": false}));
    }

    #[test]
    fn a_status_apply_touches_and_owns_only_status() {
        let live = apply(
            None,
            &server(json!({"accepted": true})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let config = json!({"apiVersion": V, "kind": "Server", "metadata": {"name": "s1"},
            "spec": {"accepted": false}, "status": {"ready": true}});
        let next = apply(Some(&live), &config, "a", false, Some("status"), T1).unwrap();
        assert_eq!(next["spec"], json!({"accepted": true}));
        assert_eq!(next["status"], json!({"ready": true}));
        let status_entry = entries(&next)
            .into_iter()
            .find(|e| e["subresource"] == "status")
            .unwrap();
        assert_eq!(
            status_entry["fieldsV1"],
            json!({"f:status": {"f:ready": {}}})
        );
        assert_eq!(entries(&next).len(), 2);
    }

    #[test]
    fn finalizers_from_two_appliers_both_survive() {
        let with = |finalizers: Value| {
            json!({"apiVersion": V, "kind": "Server",
                "metadata": {"name": "s1", "finalizers": finalizers}})
        };
        let live = apply(None, &with(json!(["a.dev/one"])), "a", false, None, T0).unwrap();
        assert_eq!(
            entry(&live, "a")["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"a.dev/one\"": {}}}})
        );
        let live = apply(
            Some(&live),
            &with(json!(["b.dev/two"])),
            "b",
            false,
            None,
            T1,
        )
        .unwrap();
        assert_eq!(
            live["metadata"]["finalizers"],
            json!(["a.dev/one", "b.dev/two"])
        );
        let live = apply(
            Some(&live),
            &with(json!(["a.dev/one"])),
            "a",
            false,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(
            live["metadata"]["finalizers"],
            json!(["a.dev/one", "b.dev/two"])
        );
        let live = apply(Some(&live), &server(json!({})), "b", false, None, T2).unwrap();
        assert_eq!(live["metadata"]["finalizers"], json!(["a.dev/one"]));
    }

    #[test]
    fn owner_references_are_keyed_by_uid() {
        let reference =
            |uid: &str| json!({"apiVersion": "v1", "kind": "Thing", "name": uid, "uid": uid});
        let with = |references: Value| {
            json!({"apiVersion": V, "kind": "Server",
                "metadata": {"name": "s1", "ownerReferences": references}})
        };
        let live = apply(None, &with(json!([reference("u1")])), "a", false, None, T0).unwrap();
        assert_eq!(
            entry(&live, "a")["fieldsV1"],
            json!({"f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u1\"}": {
                ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}}}})
        );
        let live = apply(
            Some(&live),
            &with(json!([reference("u2")])),
            "b",
            false,
            None,
            T1,
        )
        .unwrap();
        assert_eq!(
            live["metadata"]["ownerReferences"],
            json!([reference("u1"), reference("u2")])
        );
    }

    #[test]
    fn record_update_of_a_create_owns_the_maps_it_made() {
        let mut object = json!({"apiVersion": V, "kind": "Server",
            "metadata": {"name": "s1", "labels": {"rack": "a"}},
            "spec": {"accepted": false}, "status": {"ready": false}});
        record_update(None, &mut object, "kubectl-create", None, T0);
        assert_eq!(
            object["metadata"]["managedFields"],
            json!([{"manager": "kubectl-create", "operation": "Update", "apiVersion": V,
                "time": T0, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:rack": {}}},
                             "f:spec": {".": {}, "f:accepted": {}}}}])
        );
    }

    #[test]
    fn a_no_op_update_leaves_the_object_byte_identical() {
        let mut live = server(json!({"accepted": false}));
        record_update(None, &mut live, "kubectl-create", None, T0);
        let mut same = live.clone();
        record_update(Some(&live), &mut same, "controller", None, T1);
        assert_eq!(
            serde_json::to_string(&same).unwrap(),
            serde_json::to_string(&live).unwrap()
        );
        // A client that drops managedFields from its PUT does not erase them either.
        let mut stripped = live.clone();
        stripped["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("managedFields");
        record_update(Some(&live), &mut stripped, "controller", None, T1);
        assert_eq!(
            serde_json::to_string(&stripped).unwrap(),
            serde_json::to_string(&live).unwrap()
        );
    }

    #[test]
    fn an_update_takes_changed_fields_from_others_and_removals_drop_everywhere() {
        let config = server(json!({"accepted": true, "hostname": "n1", "cordoned": false}));
        let live = apply(None, &config, "a", false, None, T0).unwrap();
        let mut new = live.clone();
        new["spec"] = json!({"accepted": false, "cordoned": false});
        record_update(Some(&live), &mut new, "kubectl-patch", None, T1);
        assert_eq!(
            entry(&new, "a")["fieldsV1"],
            json!({"f:spec": {"f:cordoned": {}}})
        );
        assert_eq!(entry(&new, "a")["time"], T0);
        assert_eq!(
            entry(&new, "kubectl-patch")["fieldsV1"],
            json!({"f:spec": {"f:accepted": {}}})
        );
        assert_eq!(entry(&new, "kubectl-patch")["operation"], "Update");
    }

    #[test]
    fn an_update_removing_an_appliers_only_fields_drops_its_entry() {
        let live = apply(
            None,
            &server(json!({"hostname": "n1"})),
            "a",
            false,
            None,
            T0,
        )
        .unwrap();
        let mut new = live.clone();
        new["spec"] = json!({"accepted": false});
        record_update(Some(&live), &mut new, "kubectl-patch", None, T1);
        assert_eq!(entries(&new).len(), 1);
        assert_eq!(
            entry(&new, "kubectl-patch")["fieldsV1"],
            json!({"f:spec": {"f:accepted": {}}})
        );
    }

    #[test]
    fn a_status_update_is_recorded_with_its_subresource_and_ignores_the_rest() {
        let mut live = server(json!({"accepted": true}));
        record_update(None, &mut live, "kubectl-create", None, T0);
        let mut new = live.clone();
        new["status"] = json!({"ready": true});
        record_update(Some(&live), &mut new, "siderite", Some("status"), T1);
        let status_entry = entry(&new, "siderite");
        assert_eq!(status_entry["subresource"], "status");
        assert_eq!(
            status_entry["fieldsV1"],
            json!({"f:status": {".": {}, "f:ready": {}}})
        );
        assert_eq!(entry(&new, "kubectl-create")["time"], T0);
    }

    #[test]
    fn an_update_by_the_same_manager_merges_into_its_entry_and_restamps_it() {
        let mut live = server(json!({"accepted": true}));
        record_update(None, &mut live, "m", None, T0);
        let mut new = live.clone();
        new["spec"]["hostname"] = json!("n1");
        record_update(Some(&live), &mut new, "m", None, T1);
        assert_eq!(entries(&new).len(), 1);
        assert_eq!(entry(&new, "m")["time"], T1);
        assert_eq!(
            entry(&new, "m")["fieldsV1"],
            json!({"f:spec": {".": {}, "f:accepted": {}, "f:hostname": {}}})
        );
    }

    #[test]
    fn a_client_can_clear_managed_fields() {
        let mut live = server(json!({"accepted": true}));
        record_update(None, &mut live, "m", None, T0);
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        record_update(Some(&live), &mut new, "m", None, T1);
        assert!(new["metadata"].get("managedFields").is_none(), "{new}");
    }

    #[test]
    fn apply_refuses_managed_fields_and_wrong_versions() {
        let live = apply(None, &server(json!({})), "a", false, None, T0).unwrap();
        let mut config = server(json!({}));
        config["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply(Some(&live), &config, "a", false, None, T1)
                .unwrap_err()
                .to_string(),
            "metadata.managedFields must be nil"
        );
        let mut config = server(json!({}));
        config["apiVersion"] = json!("metal.sidero.dev/v1alpha1");
        assert_eq!(
            apply(Some(&live), &config, "a", false, None, T1)
                .unwrap_err()
                .to_string(),
            "Incorrect version specified in apply patch. Specified patch version: \
             metal.sidero.dev/v1alpha1, expected: metal.sidero.dev/v1alpha2"
        );
    }

    #[test]
    fn system_metadata_in_a_config_never_reaches_the_object() {
        let mut live = server(json!({}));
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["resourceVersion"] = json!("7");
        let mut config = server(json!({"accepted": true}));
        config["metadata"]["uid"] = json!("forged");
        config["metadata"]["creationTimestamp"] = json!(null);
        let next = apply(Some(&live), &config, "a", false, None, T0).unwrap();
        assert_eq!(next["metadata"]["uid"], "u-1");
        assert_eq!(next["metadata"]["resourceVersion"], "7");
        assert!(next["metadata"].get("creationTimestamp").is_none());
    }

    #[test]
    fn fields_v1_round_trips_and_orders_keys_like_the_server() {
        let set = FieldSet::from_fields_v1(&json!({
            "f:spec": {".": {}, "f:b": {}, "f:a": {"f:x": {}}},
            "f:metadata": {"f:finalizers": {"v:\"z\"": {}, "v:\"a\"": {}}},
        }))
        .unwrap();
        let encoded = set.to_fields_v1();
        assert_eq!(
            serde_json::to_string(&encoded).unwrap(),
            r#"{"f:metadata":{"f:finalizers":{"v:\"a\"":{},"v:\"z\"":{}}},"f:spec":{".":{},"f:a":{"f:x":{}},"f:b":{}}}"#
        );
        assert_eq!(FieldSet::from_fields_v1(&encoded).unwrap(), set);
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".spec",
                ".metadata.finalizers[=\"a\"]",
                ".metadata.finalizers[=\"z\"]",
                ".spec.b",
                ".spec.a.x"
            ]
        );
    }

    #[test]
    fn values_in_fields_v1_keys_are_escaped_like_go() {
        assert_eq!(
            PathElement::Item(json!("a<b>&c")).encode(),
            "v:\"a\\u003cb\\u003e\\u0026c\""
        );
    }

    #[test]
    fn field_set_lists_the_leaves_of_an_object() {
        let object = json!({"apiVersion": V, "kind": "Server",
            "metadata": {"name": "s1", "uid": "u", "labels": {"rack": "a"}},
            "spec": {"accepted": true, "empty": {}, "list": [1, 2]}});
        assert_eq!(
            field_set(&object),
            json!({"f:metadata": {"f:labels": {"f:rack": {}}},
                   "f:spec": {"f:accepted": {}, "f:empty": {}, "f:list": {}}})
        );
    }

    #[test]
    fn manager_names_come_from_the_user_agent_product() {
        assert_eq!(
            manager_from_user_agent(
                "kubectl-client-side-apply/v1.32.4 (linux/amd64) kubernetes/59526cd"
            ),
            "kubectl-client-side-apply"
        );
        assert_eq!(
            manager_from_user_agent("kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd"),
            "kubectl"
        );
        assert_eq!(manager_from_user_agent("no-slash"), "no-slash");
        assert_eq!(manager_from_user_agent("a\tb/1"), "ab");
        assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
    }
}
