//! The embedded API server's own controllers: owner-reference garbage collection (background,
//! foreground and orphan propagation) and namespace termination.
//!
//! Level-triggered: after relevant changes the collector sweeps the whole store, so a crash
//! between two steps is repaired by the next sweep after restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::apiserver::resources::{Builtin, NAMESPACE_STORAGE, ResourceInfo};
use crate::apiserver::verbs::{Api, DeleteOptions, PatchType, WriteOptions};
use crate::store::{EventType, ObjectKey, Stored};

/// Sweeps are at most this frequent, so a burst of writes costs one sweep.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

const MANAGER: &str = "siderite-garbage-collector";

/// Runs until `shutdown` is cancelled.
pub async fn run(api: Arc<Api>, shutdown: CancellationToken) {
    let mut version = api.store.subscribe();
    let mut seen = api.store.current_rv();
    // Repair whatever a previous run left half-done.
    sweep(&api).await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = version.changed() => if changed.is_err() { return },
        }
        tokio::time::sleep(MIN_SWEEP_INTERVAL).await;
        version.borrow_and_update();
        let relevant = match api.store.events_after(seen) {
            Ok(events) => {
                let r = events.iter().any(|e| {
                    e.kind == EventType::Deleted
                        || e.object.summary.deleting
                        || !e.object.summary.owner_uids.is_empty()
                });
                if let Some(last) = events.last() {
                    seen = last.rv;
                }
                r
            }
            Err(_) => {
                seen = api.store.current_rv();
                true
            }
        };
        if relevant {
            sweep(&api).await;
        }
    }
}

fn info_for(api: &Api, key: &ObjectKey) -> Option<Arc<ResourceInfo>> {
    api.registry().by_storage(&key.resource)
}

fn ns_of(key: &ObjectKey) -> Option<&str> {
    Some(key.namespace.as_str()).filter(|n| !n.is_empty())
}

async fn delete(api: &Api, key: &ObjectKey) {
    let Some(info) = info_for(api, key) else {
        return;
    };
    if let Err(e) = api
        .delete(&info, ns_of(key), &key.name, &DeleteOptions::default())
        .await
    {
        tracing::debug!(resource = %key.resource, name = %key.name, error = %e, "garbage collection delete failed");
    }
}

/// Merge-patches `metadata` of an object as the collector.
async fn patch_metadata(api: &Api, key: &ObjectKey, stored: &Stored, metadata: Value) {
    let Some(info) = info_for(api, key) else {
        return;
    };
    // The version makes the patch a compare-and-swap: a concurrent change wins, and the next
    // sweep looks again.
    let mut metadata = metadata;
    metadata["resourceVersion"] = json!(stored.rv.to_string());
    let body = json!({ "metadata": metadata });
    let opts = WriteOptions {
        manager: MANAGER.into(),
        ..Default::default()
    };
    let bytes = serde_json::to_vec(&body).expect("a serde_json::Value always serializes");
    if let Err(e) = api
        .patch(
            &info,
            ns_of(key),
            &key.name,
            PatchType::Merge,
            &bytes,
            &opts,
        )
        .await
    {
        tracing::debug!(name = %key.name, error = %e, "garbage collection patch failed");
    }
}

fn without_finalizer(stored: &Stored, finalizer: &str) -> Value {
    let kept: Vec<&String> = stored
        .summary
        .finalizers
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    json!({"finalizers": kept})
}

fn owner_refs_without(stored: &Stored, gone: &HashSet<&str>) -> Value {
    let refs: Vec<Value> = stored.value()["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["uid"].as_str().is_none_or(|u| !gone.contains(u)))
        .cloned()
        .collect();
    json!({"ownerReferences": refs})
}

/// One pass over every object.
pub async fn sweep(api: &Api) {
    let all = api.store.all();
    let by_uid: HashMap<&str, &(ObjectKey, Arc<Stored>)> =
        all.iter().map(|e| (e.1.summary.uid.as_str(), e)).collect();
    let mut dependents: HashMap<&str, Vec<&(ObjectKey, Arc<Stored>)>> = HashMap::new();
    for entry in &all {
        for owner in &entry.1.summary.owner_uids {
            dependents.entry(owner.as_str()).or_default().push(entry);
        }
    }

    // Contents of namespaces that no longer exist (repairs a crash during namespace deletion).
    let namespaces: HashSet<&str> = all
        .iter()
        .filter(|(k, _)| &*k.resource == NAMESPACE_STORAGE)
        .map(|(k, _)| k.name.as_str())
        .collect();
    for (key, stored) in &all {
        if !key.namespace.is_empty()
            && !namespaces.contains(key.namespace.as_str())
            && !stored.summary.deleting
        {
            delete(api, key).await;
        }
    }

    // Dependents whose owners are gone: delete them, or drop the dangling references when
    // another owner remains.
    for (key, stored) in &all {
        let owners = &stored.summary.owner_uids;
        if owners.is_empty() || stored.summary.deleting {
            continue;
        }
        let gone: HashSet<&str> = owners
            .iter()
            .map(String::as_str)
            .filter(|u| !by_uid.contains_key(u))
            .collect();
        if gone.is_empty() {
            continue;
        }
        if gone.len() == owners.len() {
            delete(api, key).await;
        } else {
            patch_metadata(api, key, stored, owner_refs_without(stored, &gone)).await;
        }
    }

    for (key, stored) in &all {
        if !stored.summary.deleting {
            continue;
        }
        let uid = stored.summary.uid.as_str();
        let deps = dependents.get(uid).cloned().unwrap_or_default();
        let finalizers = &stored.summary.finalizers;
        if finalizers.iter().any(|f| f == "orphan") {
            let gone: HashSet<&str> = [uid].into();
            for (dkey, dstored) in &deps {
                patch_metadata(api, dkey, dstored, owner_refs_without(dstored, &gone)).await;
            }
            patch_metadata(api, key, stored, without_finalizer(stored, "orphan")).await;
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            if deps.is_empty() {
                patch_metadata(
                    api,
                    key,
                    stored,
                    without_finalizer(stored, "foregroundDeletion"),
                )
                .await;
            } else {
                for (dkey, dstored) in &deps {
                    if !dstored.summary.deleting {
                        delete(api, dkey).await;
                    }
                }
            }
        }
        if &*key.resource == NAMESPACE_STORAGE {
            finish_namespace(api, key, stored).await;
        }
    }
}

/// Deletes a terminating namespace's contents, then releases the `kubernetes` finalizer.
async fn finish_namespace(api: &Api, key: &ObjectKey, stored: &Stored) {
    let registry = api.registry();
    let mut remaining = 0usize;
    for storage in registry.namespaced_storages() {
        for item in api.store.list(&storage, Some(&key.name)).objects {
            remaining += 1;
            if !item.summary.deleting {
                let item_key = ObjectKey {
                    resource: storage.clone(),
                    namespace: key.name.clone(),
                    name: item.summary.name.clone(),
                };
                delete(api, &item_key).await;
            }
        }
    }
    if remaining > 0 {
        return;
    }
    let Some(info) = registry.get("", "v1", "namespaces") else {
        return;
    };
    debug_assert_eq!(info.builtin, Some(Builtin::Namespace));
    let mut ns = stored.value();
    ns["spec"]["finalizers"] = json!([]);
    let opts = WriteOptions {
        manager: MANAGER.into(),
        subresource: Some("finalize".into()),
        ..Default::default()
    };
    if let Err(e) = api.update(&info, None, &key.name, ns, &opts).await {
        tracing::debug!(namespace = %key.name, error = %e, "namespace finalize failed");
    }
}
