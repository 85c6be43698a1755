//! The API verbs (get, list, create, update, patch, delete) with kube-apiserver's semantics:
//! server-owned metadata, optimistic concurrency, the status subresource, generation, schema
//! pruning/defaulting/validation, managed fields, finalizers and two-phase deletion.
//!
//! Everything here works on JSON values and the store; HTTP framing lives in `http`.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::apiserver::resources::{
    Builtin, CRD_STORAGE, NAMESPACE_STORAGE, Registry, ResourceInfo,
};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::status::{ApiError, StatusCause};
use crate::apiserver::{apply, builtin, meta, schema};
use crate::store::{Committed, ObjectKey, Op, Store, StoreError, Stored};

/// How many times a patch or unconditional update is retried when another writer got in first.
const MAX_RETRIES: usize = 16;

/// The state shared by every request.
pub struct Api {
    pub store: Store,
    registry: std::sync::RwLock<Arc<Registry>>,
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub manager: String,
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields are an error instead of being pruned silently.
    pub strict: bool,
    /// The subresource written (`status`, or `finalize` for namespaces), if any.
    pub subresource: Option<String>,
}

/// `DeleteOptions` (body or query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// Options of a list (or the initial state of a watch).
#[derive(Debug, Default)]
pub struct ListOptions {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

pub struct ListResult {
    pub rv: u64,
    pub items: Vec<Arc<Stored>>,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

pub enum DeleteOutcome {
    /// Gone now; the last state.
    Deleted(Value),
    /// Marked for deletion; waiting for finalizers.
    Pending(Value),
}

/// How `managedFields` are maintained for a write.
enum Track<'a> {
    /// A non-apply write by this manager.
    Update(&'a str),
    /// Already computed (server-side apply).
    Keep,
}

/// Current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn storage_error(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists => ApiError::AlreadyExists(info.target(name)),
        StoreError::NotFound => ApiError::NotFound(info.target(name)),
        StoreError::Conflict { .. } => ApiError::Conflict {
            target: info.target(name),
            message: "the object has been modified; please apply your changes to the latest version and try again".into(),
        },
        other => ApiError::Internal(other.to_string()),
    }
}

fn invalid(info: &ResourceInfo, name: &str, causes: Vec<StatusCause>) -> ApiError {
    ApiError::Invalid {
        target: info.target(name),
        causes,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

impl Api {
    pub fn new(store: Store) -> Api {
        let api = Api {
            store,
            registry: std::sync::RwLock::new(Arc::new(Registry::default())),
        };
        api.refresh_registry();
        api
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds the served resources from the stored CRDs.
    pub fn refresh_registry(&self) {
        let crds: Vec<Value> = self
            .store
            .list(CRD_STORAGE, None)
            .objects
            .iter()
            .map(|s| s.value())
            .collect();
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Registry::build(&crds));
    }

    fn key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            resource: info.storage.clone(),
            namespace: if info.namespaced {
                ns.unwrap_or_default().to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    /// The object as a client of `info`'s version sees it.
    pub fn view(info: &ResourceInfo, stored: &Stored) -> Value {
        let v = stored.value();
        Self::view_value(info, v)
    }

    fn view_value(info: &ResourceInfo, mut v: Value) -> Value {
        if info.builtin == Some(Builtin::EventsV1) {
            return builtin::event_to_v1(v);
        }
        let api_version = info.api_version();
        if v["apiVersion"] != api_version.as_str() {
            v["apiVersion"] = Value::String(api_version);
        }
        v
    }

    /// A not-stored state (dry run), serialized as the client's view.
    fn render(info: &ResourceInfo, v: Value) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&Self::view_value(info, v))
                .expect("a serde_json::Value always serializes"),
        )
    }

    /// Serialized view, without re-encoding when the stored form already is the view.
    pub fn view_bytes(info: &ResourceInfo, stored: &Stored) -> Bytes {
        if info.builtin != Some(Builtin::EventsV1)
            && stored.summary.api_version == info.api_version()
        {
            return stored.json.clone();
        }
        Bytes::from(
            serde_json::to_vec(&Self::view(info, stored))
                .expect("a serde_json::Value always serializes"),
        )
    }

    pub fn get(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Stored>, ApiError> {
        self.store
            .get(&Self::key(info, ns, name))
            .ok_or_else(|| ApiError::NotFound(info.target(name)))
    }

    pub fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let ns = ns.filter(|_| info.namespaced);
        let snapshot = self.store.list(&info.storage, ns);
        let start = match &opts.continue_token {
            None => None,
            Some(token) => Some(decode_continue(token)?),
        };
        let mut matching = snapshot.objects.into_iter().filter(|s| {
            let (o_ns, o_name) = (s.summary.namespace.clone(), s.summary.name.clone());
            if let Some((start_ns, start_name)) = &start
                && (o_ns.as_str(), o_name.as_str()) <= (start_ns.as_str(), start_name.as_str())
            {
                return false;
            }
            opts.labels
                .as_ref()
                .is_none_or(|l| l.matches(&s.summary.labels))
                && opts.fields.as_ref().is_none_or(|f| {
                    f.matches(&o_name, Some(o_ns.as_str()).filter(|n| !n.is_empty()))
                })
        });
        let mut items = Vec::new();
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        for s in matching.by_ref() {
            items.push(s);
            if items.len() == limit {
                break;
            }
        }
        let rest = matching.count() as u64;
        let (continue_token, remaining) = if rest > 0 {
            let last = items
                .last()
                .map(|s| (s.summary.namespace.clone(), s.summary.name.clone()));
            let token = last.map(|(n, m)| encode_continue(snapshot.rv, &n, &m));
            // Like kube-apiserver: no count when a selector makes it expensive to know.
            let count = (opts.labels.is_none() && opts.fields.is_none()).then_some(rest);
            (token, count)
        } else {
            (None, None)
        };
        Ok(ListResult {
            rv: snapshot.rv,
            items,
            continue_token,
            remaining,
        })
    }

    /// Refuses writes into a namespace that does not exist or is being deleted.
    fn check_namespace(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<(), ApiError> {
        let key = ObjectKey {
            resource: Arc::from(NAMESPACE_STORAGE),
            namespace: String::new(),
            name: ns.to_owned(),
        };
        match self.store.get(&key) {
            None => Err(ApiError::NotFound(Box::new(
                crate::apiserver::status::Target {
                    resource: "namespaces".into(),
                    kind: "Namespace".into(),
                    name: ns.to_owned(),
                    ..Default::default()
                },
            ))),
            Some(n) if n.summary.deleting => Err(ApiError::Forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                info.target(name).group_resource()
            ))),
            Some(_) => Ok(()),
        }
    }

    fn check_type(info: &ResourceInfo, body: &Value) -> Result<(), ApiError> {
        let api_version = body["apiVersion"].as_str().unwrap_or_default();
        let kind = body["kind"].as_str().unwrap_or_default();
        if !api_version.is_empty() && api_version != info.api_version() {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
        if !kind.is_empty() && kind != info.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({}); send it to its own endpoint",
                info.kind
            )));
        }
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON or YAML object".into(),
            ));
        }
        Ok(())
    }

    /// Kind-specific normalisation, schema pruning/defaulting and validation of a new state.
    fn admit(
        &self,
        info: &ResourceInfo,
        name: &str,
        obj: &mut Value,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        let mut causes = Vec::new();
        match info.builtin {
            Some(Builtin::Secret) => {
                builtin::normalize_secret(obj);
                causes.extend(builtin::validate_secret(obj));
            }
            Some(Builtin::Crd) => {
                causes.extend(builtin::validate_crd(obj));
                obj["status"] = builtin::crd_status(obj, &now());
            }
            _ => {}
        }
        causes.extend(validate_labels(obj));
        if let Some(schema_doc) = &info.schema {
            let pruned = schema::prune(obj, schema_doc);
            if opts.strict && !pruned.is_empty() {
                let fields: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field \"{}\"", p.trim_start_matches('.')))
                    .collect();
                return Err(ApiError::BadRequest(format!(
                    "strict decoding error: {}",
                    fields.join(", ")
                )));
            }
            schema::apply_defaults(obj, schema_doc);
            causes.extend(
                schema::validate(obj, schema_doc)
                    .into_iter()
                    .map(|c| StatusCause {
                        reason: c.reason.as_str().to_owned(),
                        message: c.message,
                        field: c.field,
                    }),
            );
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(invalid(info, name, causes))
        }
    }

    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Bytes, ApiError> {
        Self::check_type(info, &body)?;
        let body = if info.builtin == Some(Builtin::EventsV1) {
            builtin::event_from_v1(body)
        } else {
            body
        };
        self.create_with(info, ns, body, opts, Track::Update(&opts.manager))
            .await
    }

    async fn create_with(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        track: Track<'_>,
    ) -> Result<Bytes, ApiError> {
        let given_name = str_at(&obj, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let generate = str_at(&obj, &["metadata", "generateName"])
            .unwrap_or_default()
            .to_owned();
        if given_name.is_empty() && generate.is_empty() {
            return Err(invalid(
                info,
                "",
                vec![StatusCause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        let namespace = if info.namespaced {
            let path_ns = ns.unwrap_or("default");
            if let Some(body_ns) = str_at(&obj, &["metadata", "namespace"])
                && !body_ns.is_empty()
                && body_ns != path_ns
            {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            self.check_namespace(info, path_ns, &given_name)?;
            Some(path_ns.to_owned())
        } else {
            None
        };
        let timestamp = now();
        {
            let m = meta::metadata_mut(&mut obj);
            for f in meta::SYSTEM_FIELDS {
                m.remove(f);
            }
            m.remove("resourceVersion");
            match &namespace {
                Some(n) => {
                    m.insert("namespace".into(), json!(n));
                }
                None => {
                    m.remove("namespace");
                }
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(timestamp));
            if info.has_generation() {
                m.insert("generation".into(), json!(1));
            }
        }
        if info.status_subresource
            && info.builtin.is_none()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        if info.builtin == Some(Builtin::Namespace) {
            builtin::init_namespace(&mut obj);
        }
        // generateName: retry on the (rare) collision, as clients would.
        for _ in 0..8 {
            let name = if given_name.is_empty() {
                let name = meta::generated_name(&generate, rand::random());
                meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
                name
            } else {
                given_name.clone()
            };
            if let Some(cause) =
                meta::validate_name(&name, info.builtin == Some(Builtin::Namespace))
            {
                return Err(invalid(info, &name, vec![cause]));
            }
            let mut candidate = obj.clone();
            self.admit(info, &name, &mut candidate, opts)?;
            if let Track::Update(manager) = track {
                apply::record_update(None, &mut candidate, manager, None, &timestamp);
            }
            if opts.dry_run {
                return Ok(Self::render(info, candidate));
            }
            let key = Self::key(info, namespace.as_deref(), &name);
            match self
                .store
                .commit(Op::Create {
                    key,
                    object: candidate,
                })
                .await
            {
                Ok(c) => {
                    self.after_write(info);
                    return Ok(Self::view_bytes(info, &c.object));
                }
                Err(StoreError::AlreadyExists) if given_name.is_empty() => continue,
                Err(e) => return Err(storage_error(info, &name, e)),
            }
        }
        Err(ApiError::Internal(format!(
            "could not find a free name with generateName \"{generate}\""
        )))
    }

    fn after_write(&self, info: &ResourceInfo) {
        if info.builtin == Some(Builtin::Crd) {
            self.refresh_registry();
        }
    }

    /// Builds the next state of an object from the stored one and what the client sent.
    fn prepare_update(
        &self,
        info: &ResourceInfo,
        name: &str,
        old: &Value,
        new: Value,
        opts: &WriteOptions,
        track: Track<'_>,
    ) -> Result<Value, ApiError> {
        let subresource = opts.subresource.as_deref();
        let mut new = if info.builtin == Some(Builtin::EventsV1) {
            builtin::event_from_v1(new)
        } else {
            new
        };
        if let Some(body_name) = str_at(&new, &["metadata", "name"])
            && body_name != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if info.namespaced
            && let (Some(a), Some(b)) = (
                str_at(&new, &["metadata", "namespace"]),
                str_at(old, &["metadata", "namespace"]),
            )
            && a != b
        {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        match subresource {
            Some("status") => {
                let status = new.get("status").cloned();
                let managed = new["metadata"].get("managedFields").cloned();
                new = old.clone();
                if let Some(o) = new.as_object_mut() {
                    match status {
                        Some(s) => o.insert("status".into(), s),
                        None => o.remove("status"),
                    };
                }
                if let (Some(m), Track::Keep) = (managed, &track) {
                    meta::metadata_mut(&mut new).insert("managedFields".into(), m);
                }
            }
            Some("finalize") if info.builtin == Some(Builtin::Namespace) => {
                let finalizers = new["spec"]["finalizers"].clone();
                new = old.clone();
                new["spec"]["finalizers"] = finalizers;
            }
            Some(other) => {
                return Err(ApiError::NotFound(info.target(&format!("{name}/{other}"))));
            }
            None => {
                meta::keep_system_fields(old, &mut new);
                let m = meta::metadata_mut(&mut new);
                m.insert("name".into(), json!(name));
                if let Some(ns) = old["metadata"].get("namespace") {
                    m.insert("namespace".into(), ns.clone());
                }
                if info.status_subresource
                    && let Some(o) = new.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                if info.builtin == Some(Builtin::Namespace) {
                    new["spec"] = old["spec"].clone();
                }
                if new["apiVersion"].is_null() {
                    new["apiVersion"] = json!(info.api_version());
                }
                if new["kind"].is_null() {
                    new["kind"] = json!(info.kind);
                }
            }
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            let before = string_set(&old["metadata"]["finalizers"]);
            let added: Vec<String> = string_set(&new["metadata"]["finalizers"])
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(invalid(
                    info,
                    name,
                    vec![StatusCause {
                        reason: "FieldValueForbidden".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                        ),
                        field: "metadata.finalizers".into(),
                    }],
                ));
            }
        }
        self.admit(info, name, &mut new, opts)?;
        if info.has_generation() {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let bump = meta::spec_changed(old, &new, info.status_subresource);
            meta::metadata_mut(&mut new).insert(
                "generation".into(),
                json!(if bump { generation + 1 } else { generation }),
            );
        }
        if let Track::Update(manager) = track {
            apply::record_update(Some(old), &mut new, manager, subresource, &now());
        }
        Ok(new)
    }

    /// Writes `new` over `current`, turning it into a deletion once a deleting object has lost
    /// its last finalizer.
    async fn commit_update(
        &self,
        info: &ResourceInfo,
        key: ObjectKey,
        current: &Stored,
        new: Value,
    ) -> Result<Committed, StoreError> {
        let finished = !new["metadata"]["deletionTimestamp"].is_null()
            && string_set(&new["metadata"]["finalizers"]).is_empty()
            && (info.builtin != Some(Builtin::Namespace)
                || string_set(&new["spec"]["finalizers"]).is_empty());
        let op = if finished {
            Op::Delete {
                key,
                expected_rv: Some(current.rv),
            }
        } else {
            Op::Update {
                key,
                expected_rv: current.rv,
                object: new,
            }
        };
        self.store.commit(op).await
    }

    /// Commits `new` over `current` (or only renders it, for a dry run) and returns the view.
    async fn write_over(
        &self,
        info: &ResourceInfo,
        key: ObjectKey,
        current: &Stored,
        new: Value,
        dry_run: bool,
    ) -> Result<Bytes, StoreError> {
        if dry_run {
            return Ok(Self::render(info, new));
        }
        let committed = self.commit_update(info, key, current, new).await?;
        self.after_write(info);
        Ok(Self::view_bytes(info, &committed.object))
    }

    /// PUT on an object or its status.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Bytes, ApiError> {
        Self::check_type(info, &body)?;
        let key = Self::key(info, ns, name);
        let wanted_rv = str_at(&body, &["metadata", "resourceVersion"]).map(str::to_owned);
        for _ in 0..MAX_RETRIES {
            let current = self.get(info, ns, name)?;
            if let Some(rv) = &wanted_rv
                && *rv != current.rv.to_string()
            {
                return Err(storage_error(
                    info,
                    name,
                    StoreError::Conflict {
                        current: current.rv,
                    },
                ));
            }
            // Like kube-apiserver, a uid in the body is a precondition.
            if let Some(uid) = str_at(&body, &["metadata", "uid"]).filter(|u| !u.is_empty()) {
                check_uid(info, name, uid, &current)?;
            }
            let old = current.value();
            let new = self.prepare_update(
                info,
                name,
                &old,
                body.clone(),
                opts,
                Track::Update(&opts.manager),
            )?;
            match self
                .write_over(info, key.clone(), &current, new, opts.dry_run)
                .await
            {
                Ok(v) => return Ok(v),
                Err(StoreError::Conflict { .. }) if wanted_rv.is_none() => continue,
                Err(e) => return Err(storage_error(info, name, e)),
            }
        }
        Err(gave_up(info, name))
    }

    /// PATCH in any of the supported patch types.
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Bytes, ApiError> {
        let subresource = opts.subresource.as_deref();
        let parsed: Value = match patch_type {
            PatchType::Apply => crate::apiserver::http::parse_yaml(body)?,
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?,
        };
        if patch_type == PatchType::Apply {
            Self::check_type(info, &parsed)?;
            if parsed["apiVersion"].is_null() || parsed["kind"].is_null() {
                return Err(ApiError::BadRequest(
                    "apiVersion and kind must be set in an apply patch".into(),
                ));
            }
            if opts.manager.is_empty() {
                return Err(ApiError::BadRequest(
                    "PATCH requests of type application/apply-patch+yaml must name a fieldManager (query parameter fieldManager)".into(),
                ));
            }
        }
        let json_patch = match patch_type {
            PatchType::Json => Some(
                serde_json::from_value::<json_patch::Patch>(parsed.clone())
                    .map_err(|e| ApiError::BadRequest(format!("error decoding JSON patch: {e}")))?,
            ),
            _ => None,
        };
        let key = Self::key(info, ns, name);
        for _ in 0..MAX_RETRIES {
            let current = match self.store.get(&key) {
                Some(c) => c,
                None if patch_type == PatchType::Apply && subresource.is_none() => {
                    let mut created =
                        apply::apply(None, &parsed, &opts.manager, opts.force, None, &now())
                            .map_err(|e| apply_error(info, name, e))?;
                    meta::metadata_mut(&mut created).insert("name".into(), json!(name));
                    let body = if info.builtin == Some(Builtin::EventsV1) {
                        builtin::event_from_v1(created)
                    } else {
                        created
                    };
                    match self.create_with(info, ns, body, opts, Track::Keep).await {
                        Err(ApiError::AlreadyExists(_)) => continue,
                        other => return other,
                    }
                }
                None => return Err(ApiError::NotFound(info.target(name))),
            };
            let old = current.value();
            let view = Self::view_value(info, old.clone());
            let (patched, track) = match patch_type {
                PatchType::Merge => {
                    let mut doc = view;
                    json_patch::merge(&mut doc, &parsed);
                    (doc, Track::Update(&opts.manager))
                }
                PatchType::Json => {
                    let mut doc = view;
                    let ops = json_patch.as_ref().expect("parsed above for JSON patches");
                    apply_json_patch(&mut doc, ops)
                        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
                    (doc, Track::Update(&opts.manager))
                }
                PatchType::Apply => {
                    let applied = apply::apply(
                        Some(&view),
                        &parsed,
                        &opts.manager,
                        opts.force,
                        subresource,
                        &now(),
                    )
                    .map_err(|e| apply_error(info, name, e))?;
                    (applied, Track::Keep)
                }
            };
            if let Some(rv) = str_at(&patched, &["metadata", "resourceVersion"])
                && rv != current.rv.to_string()
            {
                return Err(storage_error(
                    info,
                    name,
                    StoreError::Conflict {
                        current: current.rv,
                    },
                ));
            }
            let new = self.prepare_update(info, name, &old, patched, opts, track)?;
            match self
                .write_over(info, key.clone(), &current, new, opts.dry_run)
                .await
            {
                Ok(v) => return Ok(v),
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound) => continue,
                Err(e) => return Err(storage_error(info, name, e)),
            }
        }
        Err(gave_up(info, name))
    }

    /// DELETE: immediate when nothing holds the object, else two-phase via finalizers.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let key = Self::key(info, ns, name);
        for _ in 0..MAX_RETRIES {
            let current = self.get(info, ns, name)?;
            let old = current.value();
            if let Some(uid) = &opts.precondition_uid {
                check_uid(info, name, uid, &current)?;
            }
            if let Some(rv) = &opts.precondition_rv
                && *rv != current.rv.to_string()
            {
                return Err(ApiError::Conflict {
                    target: info.target(name),
                    message: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.rv
                    ),
                });
            }
            if current.summary.deleting {
                return Ok(DeleteOutcome::Pending(Self::view_value(info, old)));
            }
            let mut finalizers = current.summary.finalizers.clone();
            let extra = match opts.propagation.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                Some("Background") | None => None,
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "propagationPolicy \"{other}\" is not one of Foreground, Background, Orphan"
                    )));
                }
            };
            if let Some(f) = extra
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_owned());
            }
            let namespace_held = info.builtin == Some(Builtin::Namespace)
                && !string_set(&old["spec"]["finalizers"]).is_empty();
            if finalizers.is_empty() && !namespace_held {
                if opts.dry_run {
                    return Ok(DeleteOutcome::Deleted(Self::view_value(info, old)));
                }
                match self
                    .store
                    .commit(Op::Delete {
                        key: key.clone(),
                        expected_rv: Some(current.rv),
                    })
                    .await
                {
                    Ok(c) => {
                        if info.builtin == Some(Builtin::Crd) {
                            self.drop_custom_resources(&old).await;
                            self.refresh_registry();
                        }
                        return Ok(DeleteOutcome::Deleted(Self::view(info, &c.object)));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(storage_error(info, name, e)),
                }
            }
            let mut new = old.clone();
            {
                let m = meta::metadata_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
                if info.has_generation() {
                    let g = m.get("generation").and_then(Value::as_i64).unwrap_or(1);
                    m.insert("generation".into(), json!(g + 1));
                }
            }
            if info.builtin == Some(Builtin::Namespace) {
                new["status"]["phase"] = json!("Terminating");
            }
            if opts.dry_run {
                return Ok(DeleteOutcome::Pending(Self::view_value(info, new)));
            }
            match self.commit_update(info, key.clone(), &current, new).await {
                Ok(c) => return Ok(DeleteOutcome::Pending(Self::view(info, &c.object))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(storage_error(info, name, e)),
            }
        }
        Err(gave_up(info, name))
    }

    /// Removes every stored instance of a deleted CRD.
    async fn drop_custom_resources(&self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        let storage = format!("{group}/{plural}");
        for stored in self.store.list(&storage, None).objects {
            let key = ObjectKey {
                resource: Arc::from(storage.as_str()),
                namespace: stored.summary.namespace.clone(),
                name: stored.summary.name.clone(),
            };
            let _ = self
                .store
                .commit(Op::Delete {
                    key,
                    expected_rv: None,
                })
                .await;
        }
    }

    /// Ensures a CRD exists with exactly this spec (used at start-up for Siderite's own).
    pub async fn install_crd(&self, crd: Value) -> Result<(), ApiError> {
        let registry = self.registry();
        let info = registry
            .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("the CRD resource is built in");
        let name = str_at(&crd, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let opts = WriteOptions {
            manager: "siderite".into(),
            ..Default::default()
        };
        match self.get(&info, None, &name) {
            Err(_) => self.create(&info, None, crd, &opts).await.map(|_| ()),
            Ok(current) => {
                let mut merged = current.value();
                merged["spec"] = crd["spec"].clone();
                self.update(&info, None, &name, merged, &opts)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Creates a namespace if it does not exist.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        let info = self
            .registry()
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        let opts = WriteOptions {
            manager: "siderite".into(),
            ..Default::default()
        };
        match self
            .create(
                &info,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                &opts,
            )
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The supported PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Apply,
}

fn apply_error(info: &ResourceInfo, name: &str, e: apply::ApplyError) -> ApiError {
    match e {
        apply::ApplyError::Conflict { conflicts } => {
            let message = apply::ApplyError::Conflict {
                conflicts: conflicts.clone(),
            }
            .to_string();
            ApiError::ApplyConflict {
                target: info.target(name),
                message,
                causes: conflicts
                    .iter()
                    .map(|c| StatusCause {
                        reason: "FieldManagerConflict".into(),
                        message: format!("conflict with \"{}\"", c.manager),
                        field: c.field.clone(),
                    })
                    .collect(),
            }
        }
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// RFC 6902 with kube-apiserver's leniency: a `test` for `null` passes when the path is absent
/// (kube-runtime's finalizer helper relies on it to add the first finalizer).
fn apply_json_patch(
    doc: &mut Value,
    ops: &json_patch::Patch,
) -> Result<(), json_patch::PatchError> {
    for op in ops.iter() {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op))?;
    }
    Ok(())
}

/// A uid precondition: the object must still be the one the client means.
fn check_uid(info: &ResourceInfo, name: &str, uid: &str, current: &Stored) -> Result<(), ApiError> {
    if uid == current.summary.uid {
        return Ok(());
    }
    Err(ApiError::Conflict {
        target: info.target(name),
        message: format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            current.summary.uid
        ),
    })
}

/// Retries exhausted: other writers kept winning.
fn gave_up(info: &ResourceInfo, name: &str) -> ApiError {
    storage_error(info, name, StoreError::Conflict { current: 0 })
}

use crate::store::strings as string_set;

/// Label keys and values must be valid, as kube-apiserver checks on every write.
fn validate_labels(obj: &Value) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    for (k, v) in obj["metadata"]["labels"].as_object().into_iter().flatten() {
        let value = v.as_str().unwrap_or_default();
        if let Some(message) = meta::validate_label(k, value) {
            causes.push(StatusCause {
                reason: "FieldValueInvalid".into(),
                message,
                field: "metadata.labels".into(),
            });
        }
    }
    causes
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let token = json!({"rv": rv, "ns": ns, "name": name});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "continue key is not valid: {token}; start the list again without it"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["ns"].as_str().ok_or_else(bad)?.to_owned(),
        v["name"].as_str().ok_or_else(bad)?.to_owned(),
    ))
}
