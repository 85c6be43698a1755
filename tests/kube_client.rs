//! The embedded API server as kube-rs sees it: CRUD, resourceVersion and generation rules, the
//! status subresource, the three patch types, list selectors and pagination, deletion with
//! finalizers and garbage collection, CRD schemas, Status errors and the two Event APIs. Every
//! test starts its own appliance and talks to it only over HTTPS.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use common::Appliance;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::discovery::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use siderite::api::{MetalMachine, MetalMachineSpec, Server, ServerSpec, ServerStatus};

/// No test may hang: every body runs under this limit.
const TEST_LIMIT: Duration = Duration::from_secs(120);

async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test exceeded its time limit");
}

/// Polls `f` until it yields `Some`, failing after `secs` seconds.
async fn until<T, Fut: Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Status of a failed call; panics when the call succeeded or failed off the wire.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn server(name: &str, hostname: &str) -> Server {
    Server::new(
        name,
        ServerSpec {
            hostname: Some(hostname.into()),
            ..Default::default()
        },
    )
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn rv<K: Resource>(obj: &K) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .expect("every stored object has a resourceVersion")
        .parse()
        .expect("siderite resourceVersions are integers")
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create namespace");
}

fn owner_ref(owner: &ConfigMap, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().expect("created objects have a uid"),
        block_owner_deletion: Some(block),
        controller: None,
    }
}

// ---------------------------------------------------------------------------------------------
// CRUD and names

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_on_a_cluster_scoped_server() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let created = api
            .create(&PostParams::default(), &server("s1", "one"))
            .await
            .expect("create");
        assert_eq!(created.name_any(), "s1");
        assert!(created.uid().is_some(), "uid assigned");
        assert!(created.metadata.creation_timestamp.is_some());
        assert_eq!(created.metadata.namespace, None, "cluster-scoped");

        let got = api.get("s1").await.expect("get");
        assert_eq!(got.spec.hostname.as_deref(), Some("one"));
        let names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(names, ["s1"]);

        let mut changed = got.clone();
        changed.spec.hostname = Some("uno".into());
        let replaced = api
            .replace("s1", &PostParams::default(), &changed)
            .await
            .expect("replace");
        assert_eq!(replaced.spec.hostname.as_deref(), Some("uno"));
        let patched = api
            .patch(
                "s1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"cordoned": true}})),
            )
            .await
            .expect("patch");
        assert!(patched.spec.cordoned);
        assert_eq!(patched.spec.hostname.as_deref(), Some("uno"));
        assert_eq!(api.get("s1").await.expect("get").spec, patched.spec);

        api.delete("s1", &DeleteParams::default())
            .await
            .expect("delete");
        let gone = api_error(api.get("s1").await);
        assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
        assert!(api.get_opt("s1").await.expect("get_opt").is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_on_namespaced_metal_machine_and_config_map() {
    let appliance = Appliance::start();
    within(async {
        let client = appliance.client().await;
        create_namespace(&client, "other").await;
        let machines: Api<MetalMachine> = Api::namespaced(client.clone(), "default");
        let mut mm = MetalMachine::new("mm1", MetalMachineSpec::default());
        mm.spec.provider_id = Some("sidero://a".into());
        let created = machines
            .create(&PostParams::default(), &mm)
            .await
            .expect("create MetalMachine");
        assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
        // The MetalMachine controller adds its finalizer meanwhile, so a replace may meet a
        // newer resourceVersion (409) and is retried on a fresh read, as clients do.
        let replaced = loop {
            let mut got = machines.get("mm1").await.expect("get");
            assert_eq!(got.spec.provider_id.as_deref(), Some("sidero://a"));
            got.spec.provider_id = Some("sidero://b".into());
            match machines.replace("mm1", &PostParams::default(), &got).await {
                Ok(replaced) => break replaced,
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => panic!("replace: {error}"),
            }
        };
        assert_eq!(replaced.spec.provider_id.as_deref(), Some("sidero://b"));
        // The same name in another namespace is another object.
        let elsewhere: Api<MetalMachine> = Api::namespaced(client.clone(), "other");
        assert!(elsewhere.get_opt("mm1").await.expect("get_opt").is_none());
        let everywhere: Api<MetalMachine> = Api::all(client.clone());
        assert_eq!(
            everywhere
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
            1
        );
        machines
            .delete("mm1", &DeleteParams::default())
            .await
            .expect("delete");
        // Gone once the controller has run its finalizer (it has no server to release).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while machines.get_opt("mm1").await.expect("get_opt").is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "mm1 was never deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
        cms.create(&PostParams::default(), &config_map("cm", &[]))
            .await
            .expect("create ConfigMap");
        let patched = cms
            .patch(
                "cm",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "w", "n": "1"}})),
            )
            .await
            .expect("patch ConfigMap");
        let data = patched.data.expect("data");
        assert_eq!(data["k"], "w");
        assert_eq!(data["n"], "1");
        assert_eq!(
            cms.get("cm")
                .await
                .expect("get")
                .metadata
                .namespace
                .as_deref(),
            Some("other")
        );
        cms.delete("cm", &DeleteParams::default())
            .await
            .expect("delete");
        let gone = api_error(cms.get("cm").await);
        assert_eq!(gone.code, 404);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_produces_a_name_with_the_prefix() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let mut template = server("", "h");
        template.metadata.name = None;
        template.metadata.generate_name = Some("srv-".into());
        let a = api
            .create(&PostParams::default(), &template)
            .await
            .expect("create a");
        let b = api
            .create(&PostParams::default(), &template)
            .await
            .expect("create b");
        for name in [a.name_any(), b.name_any()] {
            assert!(
                name.starts_with("srv-") && name.len() > "srv-".len(),
                "generated name {name:?}"
            );
            api.get(&name).await.expect("generated object is stored");
        }
        assert_ne!(a.name_any(), b.name_any());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_name_is_rejected_with_422_naming_metadata_name() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let status = api_error(
            api.create(&PostParams::default(), &server("Not_Valid", "h"))
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        let causes = status.details.expect("details").causes;
        assert!(
            causes.iter().any(|c| c.field == "metadata.name"),
            "causes: {causes:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_must_exist() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<ConfigMap> = Api::namespaced(appliance.client().await, "nosuch");
        let status = api_error(
            api.create(&PostParams::default(), &config_map("cm", &[]))
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        assert!(
            status.message.contains(r#"namespaces "nosuch" not found"#),
            "message: {}",
            status.message
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// resourceVersion, uid, generation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_version_increases_across_writes() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let a = api
            .create(&PostParams::default(), &server("a", "1"))
            .await
            .expect("create");
        let b = api
            .create(&PostParams::default(), &server("b", "1"))
            .await
            .expect("create");
        let a2 = api
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostname": "2"}})),
            )
            .await
            .expect("patch");
        let list = api.list(&ListParams::default()).await.expect("list");
        let list_rv: u64 = list
            .metadata
            .resource_version
            .expect("list rv")
            .parse()
            .expect("integer");
        assert!(rv(&a) < rv(&b), "{} < {}", rv(&a), rv(&b));
        assert!(rv(&b) < rv(&a2), "{} < {}", rv(&b), rv(&a2));
        assert!(list_rv >= rv(&a2), "list rv {list_rv} >= {}", rv(&a2));
        assert_eq!(rv(&api.get("a").await.expect("get")), rv(&a2));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_with_a_stale_resource_version_conflicts() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let stale = api
            .create(&PostParams::default(), &server("s", "old"))
            .await
            .expect("create");
        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": "newer"}})),
        )
        .await
        .expect("patch");
        let mut edit = stale.clone();
        edit.spec.hostname = Some("lost update".into());
        let status = api_error(api.replace("s", &PostParams::default(), &edit).await);
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        assert!(
            status.message.contains("the object has been modified"),
            "message: {}",
            status.message
        );
        assert_eq!(
            api.get("s").await.expect("get").spec.hostname.as_deref(),
            Some("newer")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_op_writes_keep_the_resource_version_and_emit_no_event() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let quiet = api
            .create(&PostParams::default(), &server("quiet", "same"))
            .await
            .expect("create quiet");
        let loud = api
            .create(&PostParams::default(), &server("loud", "x"))
            .await
            .expect("create loud");
        let start = rv(&loud).max(rv(&quiet));

        let replaced = api
            .replace("quiet", &PostParams::default(), &quiet)
            .await
            .expect("replace with the same object");
        assert_eq!(rv(&replaced), rv(&quiet), "no-op replace kept the rv");
        let patched = api
            .patch(
                "quiet",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostname": "same"}})),
            )
            .await
            .expect("merge patch with the same value");
        assert_eq!(rv(&patched), rv(&quiet), "no-op merge patch kept the rv");

        // Any event for the no-op writes would be replayed before the change to `loud`.
        api.patch(
            "loud",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": "y"}})),
        )
        .await
        .expect("patch loud");
        let mut events = api
            .watch(
                &WatchParams::default().disable_bookmarks().timeout(10),
                &start.to_string(),
            )
            .await
            .expect("watch")
            .boxed();
        let first = tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .expect("an event within 5 s")
            .expect("watch stream ok")
            .expect("stream not ended");
        match first {
            WatchEvent::Modified(s) => {
                assert_eq!(s.name_any(), "loud", "first event after the no-ops")
            }
            other => panic!("expected MODIFIED loud first, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_and_creation_timestamp_cannot_be_changed() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let original = api
            .create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        let uid = original.uid().expect("uid");
        let created_at = original
            .metadata
            .creation_timestamp
            .clone()
            .expect("creationTimestamp");

        // A forged uid is a precondition that fails (kube-apiserver: 409) or is ignored;
        // either way the stored uid stays.
        let mut forged = original.clone();
        forged.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
        forged.spec.hostname = Some("forged".into());
        match api.replace("s", &PostParams::default(), &forged).await {
            Ok(returned) => assert_eq!(returned.uid().as_deref(), Some(uid.as_str())),
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
            Err(e) => panic!("replace failed off the wire: {e}"),
        }
        assert_eq!(api.get("s").await.expect("get").uid(), Some(uid.clone()));

        // A forged creationTimestamp is silently reset to the stored one.
        let mut older = api.get("s").await.expect("get");
        older.metadata.creation_timestamp = Some(Time(
            "2001-01-01T00:00:00Z".parse().expect("timestamp literal"),
        ));
        older.spec.hostname = Some("older".into());
        let replaced = api
            .replace("s", &PostParams::default(), &older)
            .await
            .expect("replace with forged creationTimestamp");
        assert_eq!(replaced.spec.hostname.as_deref(), Some("older"));
        assert_eq!(
            replaced.metadata.creation_timestamp,
            Some(created_at.clone())
        );
        let stored = api.get("s").await.expect("get");
        assert_eq!(stored.metadata.creation_timestamp, Some(created_at));
        assert_eq!(stored.uid(), Some(uid));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_increments_on_spec_changes_only() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let created = api
            .create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        assert_eq!(created.metadata.generation, Some(1));
        let spec = api
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostname": "h2"}})),
            )
            .await
            .expect("spec change");
        assert_eq!(spec.metadata.generation, Some(2));
        let labelled = api
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await
            .expect("label change");
        assert_eq!(labelled.metadata.generation, Some(2), "labels are not spec");
        assert!(rv(&labelled) > rv(&spec), "the label change was stored");
        let status = api
            .patch_status(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"power": "on"}})),
            )
            .await
            .expect("status change");
        assert_eq!(status.metadata.generation, Some(2), "status is not spec");
        assert_eq!(status.status.and_then(|s| s.power).as_deref(), Some("on"));
        let again = api
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"accepted": true}})),
            )
            .await
            .expect("second spec change");
        assert_eq!(again.metadata.generation, Some(3));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// status subresource

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_resource_writes_ignore_status() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        api.create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        api.patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"power": "off"}})),
        )
        .await
        .expect("set status");

        let mut edit = api.get("s").await.expect("get");
        edit.spec.hostname = Some("h2".into());
        edit.status = Some(ServerStatus {
            power: Some("on".into()),
            in_use: true,
            ..Default::default()
        });
        let replaced = api
            .replace("s", &PostParams::default(), &edit)
            .await
            .expect("replace");
        assert_eq!(replaced.spec.hostname.as_deref(), Some("h2"));
        let st = replaced.status.clone().expect("status kept");
        assert_eq!(st.power.as_deref(), Some("off"), "PUT ignored .status");
        assert!(!st.in_use);

        let patched = api
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostname": "h3"}, "status": {"power": "on"}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(patched.spec.hostname.as_deref(), Some("h3"));
        assert_eq!(
            patched.status.and_then(|s| s.power).as_deref(),
            Some("off"),
            "merge patch ignored .status"
        );
        let stored = api.get("s").await.expect("get");
        assert_eq!(stored.status.and_then(|s| s.power).as_deref(), Some("off"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_changes_only_status() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        api.create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        let patched = api
            .patch_status(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostname": "evil"}, "status": {"power": "on"}})),
            )
            .await
            .expect("patch_status");
        assert_eq!(patched.spec.hostname.as_deref(), Some("h"), "spec kept");
        assert_eq!(
            patched.status.clone().and_then(|s| s.power).as_deref(),
            Some("on")
        );

        let mut edit = patched.clone();
        edit.spec.hostname = Some("evil again".into());
        edit.status = Some(ServerStatus {
            power: Some("unknown".into()),
            is_clean: true,
            ..Default::default()
        });
        let replaced = api
            .replace_status("s", &PostParams::default(), &edit)
            .await
            .expect("replace_status");
        assert_eq!(replaced.spec.hostname.as_deref(), Some("h"), "spec kept");
        let st = replaced.status.expect("status");
        assert_eq!(st.power.as_deref(), Some("unknown"));
        assert!(st.is_clean);
        let stored = api.get("s").await.expect("get");
        assert_eq!(stored.spec.hostname.as_deref(), Some("h"));
        assert_eq!(
            stored.status.and_then(|s| s.power).as_deref(),
            Some("unknown")
        );
        assert_eq!(stored.metadata.generation, Some(1));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// patches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_merge_patch_sets_and_removes_fields() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let mut s = server("s", "h");
        s.metadata.labels = Some(BTreeMap::from([
            ("keep".to_string(), "1".to_string()),
            ("drop".to_string(), "1".to_string()),
        ]));
        api.create(&PostParams::default(), &s)
            .await
            .expect("create");
        let patched = api
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"labels": {"drop": null, "new": "2"}},
                    "spec": {"hostname": null, "bmc": {"endpoint": "10.0.0.9"}}
                })),
            )
            .await
            .expect("merge patch");
        let labels = patched.labels();
        assert_eq!(labels.get("keep").map(String::as_str), Some("1"));
        assert_eq!(labels.get("new").map(String::as_str), Some("2"));
        assert!(!labels.contains_key("drop"));
        assert_eq!(patched.spec.hostname, None);
        assert_eq!(
            patched.spec.bmc.map(|b| b.endpoint).as_deref(),
            Some("10.0.0.9")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_applies_and_a_failing_test_is_422() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        api.create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        let ok: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/hostname", "value": "h"},
            {"op": "replace", "path": "/spec/hostname", "value": "h2"},
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
        ]))
        .expect("patch literal");
        let patched = api
            .patch("s", &PatchParams::default(), &Patch::<()>::Json(ok))
            .await
            .expect("json patch with a passing test");
        assert_eq!(patched.spec.hostname.as_deref(), Some("h2"));
        assert_eq!(patched.labels().get("a").map(String::as_str), Some("b"));

        let failing: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/hostname", "value": "h"},
            {"op": "replace", "path": "/spec/hostname", "value": "h3"}
        ]))
        .expect("patch literal");
        let status = api_error(
            api.patch("s", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await,
        );
        assert_eq!(status.code, 422, "{status:?}");
        assert_eq!(
            api.get("s").await.expect("get").spec.hostname.as_deref(),
            Some("h2"),
            "a failed patch changes nothing"
        );
    })
    .await;
}

/// kube-runtime's finalizer helper adds the first finalizer with exactly this patch; like
/// kube-apiserver's JSON patch library, `test` of an absent member against `null` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_test_of_an_absent_field_against_null_passes() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        api.create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]}
        ]))
        .expect("patch literal");
        let patched = api
            .patch("s", &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .expect("test of an absent field against null passes");
        assert_eq!(patched.finalizers(), ["example.com/f"]);

        // The same test fails once the field exists.
        let again: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/g"]}
        ]))
        .expect("patch literal");
        let status = api_error(
            api.patch("s", &PatchParams::default(), &Patch::<()>::Json(again))
                .await,
        );
        assert_eq!(status.code, 422, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_records_managers_and_detects_conflicts() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let intent = |hostname: &str| {
            json!({
                "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
                "metadata": {"name": "s"},
                "spec": {"hostname": hostname}
            })
        };
        let applied = api
            .patch(
                "s",
                &PatchParams::apply("mgr"),
                &Patch::Apply(intent("one")),
            )
            .await
            .expect("apply creates");
        assert_eq!(applied.spec.hostname.as_deref(), Some("one"));
        let managed = applied.metadata.managed_fields.clone().unwrap_or_default();
        let entry = managed
            .iter()
            .find(|m| m.manager.as_deref() == Some("mgr"))
            .unwrap_or_else(|| panic!("no managedFields entry for mgr: {managed:?}"));
        assert_eq!(entry.operation.as_deref(), Some("Apply"));
        let fields = serde_json::to_string(&entry.fields_v1).expect("fieldsV1 serializes");
        assert!(fields.contains("f:hostname"), "fieldsV1: {fields}");

        let status = api_error(
            api.patch(
                "s",
                &PatchParams::apply("other"),
                &Patch::Apply(intent("two")),
            )
            .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        let causes = status.details.expect("details").causes;
        assert!(
            causes.iter().any(|c| c.field.contains("hostname")),
            "causes name the field: {causes:?}"
        );
        assert_eq!(
            api.get("s").await.expect("get").spec.hostname.as_deref(),
            Some("one")
        );

        let forced = api
            .patch(
                "s",
                &PatchParams::apply("other").force(),
                &Patch::Apply(intent("two")),
            )
            .await
            .expect("forced apply");
        assert_eq!(forced.spec.hostname.as_deref(), Some("two"));
        let managed = forced.metadata.managed_fields.unwrap_or_default();
        let other = managed
            .iter()
            .find(|m| m.manager.as_deref() == Some("other"))
            .expect("other now manages fields");
        assert!(
            serde_json::to_string(&other.fields_v1)
                .expect("serializes")
                .contains("f:hostname")
        );
        let mgr_owns_hostname = managed
            .iter()
            .filter(|m| m.manager.as_deref() == Some("mgr"))
            .any(|m| {
                serde_json::to_string(&m.fields_v1)
                    .expect("serializes")
                    .contains("f:hostname")
            });
        assert!(!mgr_owns_hostname, "forcing took the field away from mgr");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_without_a_field_manager_is_400() {
    let appliance = Appliance::start();
    within(async {
        let body = b"apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s\nspec:\n  hostname: h\n";
        let (code, status) = appliance
            .raw(
                "PATCH",
                "/apis/metal.sidero.dev/v1alpha2/servers/s",
                Some("application/apply-patch+yaml"),
                body.to_vec(),
            )
            .await;
        assert_eq!(code, 400, "{status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "BadRequest");
        let api: Api<Server> = Api::all(appliance.client().await);
        assert!(api.get_opt("s").await.expect("get_opt").is_none());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// lists

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_filter_lists() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<ConfigMap> = Api::namespaced(appliance.client().await, "default");
        for (name, labels) in [
            ("gold-a", vec![("tier", "gold"), ("zone", "a")]),
            ("silver-b", vec![("tier", "silver"), ("zone", "b")]),
            ("bronze", vec![("tier", "bronze")]),
            ("bare", vec![]),
        ] {
            api.create(&PostParams::default(), &config_map(name, &labels))
                .await
                .expect("create");
        }
        let select = |sel: &'static str| {
            let api = api.clone();
            async move {
                let mut names: Vec<String> = api
                    .list(&ListParams::default().labels(sel))
                    .await
                    .unwrap_or_else(|e| panic!("list {sel}: {e}"))
                    .items
                    .iter()
                    .map(|c| c.name_any())
                    .collect();
                names.sort();
                names
            }
        };
        assert_eq!(select("tier=gold").await, ["gold-a"]);
        assert_eq!(select("tier==gold").await, ["gold-a"]);
        assert_eq!(select("tier!=gold").await, ["bare", "bronze", "silver-b"]);
        assert_eq!(
            select("tier in (gold,silver)").await,
            ["gold-a", "silver-b"]
        );
        assert_eq!(select("tier notin (gold,silver)").await, ["bare", "bronze"]);
        assert_eq!(select("zone").await, ["gold-a", "silver-b"]);
        assert_eq!(select("!zone").await, ["bare", "bronze"]);
        assert_eq!(select("tier,!zone").await, ["bronze"]);
        assert_eq!(select("tier=gold,zone=b").await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selectors_on_name_and_namespace() {
    let appliance = Appliance::start();
    within(async {
        let client = appliance.client().await;
        create_namespace(&client, "other").await;
        for ns in ["default", "other"] {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            for name in ["x", "y"] {
                api.create(&PostParams::default(), &config_map(name, &[]))
                    .await
                    .expect("create");
            }
        }
        let all: Api<ConfigMap> = Api::all(client.clone());
        let select = |sel: &'static str| {
            let all = all.clone();
            async move {
                let mut names: Vec<String> = all
                    .list(&ListParams::default().fields(sel))
                    .await
                    .unwrap_or_else(|e| panic!("list {sel}: {e}"))
                    .items
                    .iter()
                    .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
                    .collect();
                names.sort();
                names
            }
        };
        assert_eq!(select("metadata.name=x").await, ["default/x", "other/x"]);
        assert_eq!(
            select("metadata.namespace=other").await,
            ["other/x", "other/y"]
        );
        assert_eq!(
            select("metadata.namespace=other,metadata.name!=x").await,
            ["other/y"]
        );

        let servers: Api<Server> = Api::all(client.clone());
        servers
            .create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create server");
        assert_eq!(
            servers
                .list(&ListParams::default().fields("metadata.name=s"))
                .await
                .expect("list")
                .items
                .len(),
            1
        );
        let status = api_error(
            servers
                .list(&ListParams::default().fields("spec.hostname=h"))
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_continue_paginate_25_objects_in_3_pages() {
    let appliance = Appliance::start();
    within(async {
        let client = appliance.client().await;
        create_namespace(&client, "pages").await;
        let api: Api<ConfigMap> = Api::namespaced(client, "pages");
        for i in 0..25 {
            api.create(
                &PostParams::default(),
                &config_map(&format!("cm-{i:02}"), &[]),
            )
            .await
            .expect("create");
        }
        let mut seen = Vec::new();
        let mut remaining = Vec::new();
        let mut sizes = Vec::new();
        let mut token: Option<String> = None;
        for page in 0.. {
            assert!(page < 5, "pagination did not end");
            let mut lp = ListParams::default().limit(10);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let list = api.list(&lp).await.expect("list page");
            sizes.push(list.items.len());
            seen.extend(list.items.iter().map(|c| c.name_any()));
            remaining.push(list.metadata.remaining_item_count);
            token = list.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(remaining, [Some(15), Some(5), None]);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 25, "every object exactly once: {seen:?}");
        assert_eq!(seen.len(), 25);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// deletion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_until_removed() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let mut s = server("s", "h");
        s.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&PostParams::default(), &s)
            .await
            .expect("create");
        api.delete("s", &DeleteParams::default())
            .await
            .expect("delete");
        let held = api.get("s").await.expect("still there");
        assert!(held.metadata.deletion_timestamp.is_some());
        assert_eq!(held.finalizers(), ["example.com/hold"]);
        // The finalizer keeps holding it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(api.get_opt("s").await.expect("get_opt").is_some());

        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("remove finalizer");
        until(10, "s to be deleted", || {
            let api = api.clone();
            async move {
                api.get_opt("s")
                    .await
                    .expect("get_opt")
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_collects_dependents() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<ConfigMap> = Api::namespaced(appliance.client().await, "default");
        let owner = api
            .create(&PostParams::default(), &config_map("owner", &[]))
            .await
            .expect("owner");
        for name in ["dep-1", "dep-2"] {
            let mut dep = config_map(name, &[]);
            dep.metadata.owner_references = Some(vec![owner_ref(&owner, false)]);
            api.create(&PostParams::default(), &dep)
                .await
                .expect("dependent");
        }
        let bystander = api
            .create(&PostParams::default(), &config_map("bystander", &[]))
            .await
            .expect("bystander");
        api.delete("owner", &DeleteParams::background())
            .await
            .expect("delete owner");
        until(20, "dependents to be collected", || {
            let api = api.clone();
            async move {
                let a = api.get_opt("dep-1").await.expect("get");
                let b = api.get_opt("dep-2").await.expect("get");
                (a.is_none() && b.is_none()).then_some(())
            }
        })
        .await;
        assert!(api.get_opt("owner").await.expect("get").is_none());
        assert_eq!(
            api.get("bystander")
                .await
                .expect("bystander survives")
                .uid(),
            bystander.uid()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_dependents() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<ConfigMap> = Api::namespaced(appliance.client().await, "default");
        let owner = api
            .create(&PostParams::default(), &config_map("owner", &[]))
            .await
            .expect("owner");
        let mut dep = config_map("dep", &[]);
        dep.metadata.owner_references = Some(vec![owner_ref(&owner, true)]);
        // The dependent's own finalizer keeps it, and so the owner, around for inspection.
        dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&PostParams::default(), &dep).await.expect("dep");

        api.delete("owner", &DeleteParams::foreground())
            .await
            .expect("foreground delete");
        let waiting = api
            .get("owner")
            .await
            .expect("owner waits for its dependents");
        assert!(waiting.metadata.deletion_timestamp.is_some());
        assert!(
            waiting
                .finalizers()
                .iter()
                .any(|f| f == "foregroundDeletion"),
            "finalizers: {:?}",
            waiting.finalizers()
        );
        until(20, "the dependent to be marked for deletion", || {
            let api = api.clone();
            async move {
                let d = api.get("dep").await.expect("dep still held");
                d.metadata.deletion_timestamp.is_some().then_some(())
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            api.get_opt("owner").await.expect("get").is_some(),
            "the owner stays while a blocking dependent exists"
        );

        api.patch(
            "dep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release dependent");
        until(20, "dependent and then owner to disappear", || {
            let api = api.clone();
            async move {
                let d = api.get_opt("dep").await.expect("get");
                let o = api.get_opt("owner").await.expect("get");
                (d.is_none() && o.is_none()).then_some(())
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_and_strips_owner_references() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<ConfigMap> = Api::namespaced(appliance.client().await, "default");
        let owner = api
            .create(&PostParams::default(), &config_map("owner", &[]))
            .await
            .expect("owner");
        let mut dep = config_map("dep", &[]);
        dep.metadata.owner_references = Some(vec![owner_ref(&owner, false)]);
        api.create(&PostParams::default(), &dep).await.expect("dep");
        api.delete("owner", &DeleteParams::orphan())
            .await
            .expect("orphan delete");
        until(20, "the owner to be gone", || {
            let api = api.clone();
            async move {
                api.get_opt("owner")
                    .await
                    .expect("get")
                    .is_none()
                    .then_some(())
            }
        })
        .await;
        let orphan = until(20, "ownerReferences to be removed", || {
            let api = api.clone();
            async move {
                let d = api.get("dep").await.expect("the dependent stays");
                d.owner_references().is_empty().then_some(d)
            }
        })
        .await;
        assert!(orphan.metadata.deletion_timestamp.is_none());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(api.get_opt("dep").await.expect("get").is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_contents_then_itself() {
    let appliance = Appliance::start();
    within(async {
        let client = appliance.client().await;
        create_namespace(&client, "doomed").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
        let machines: Api<MetalMachine> = Api::namespaced(client.clone(), "doomed");
        let survivors: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        cms.create(&PostParams::default(), &config_map("cm", &[]))
            .await
            .expect("cm");
        machines
            .create(
                &PostParams::default(),
                &MetalMachine::new("mm", MetalMachineSpec::default()),
            )
            .await
            .expect("mm");
        survivors
            .create(&PostParams::default(), &config_map("cm", &[]))
            .await
            .expect("cm in default");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .delete("doomed", &DeleteParams::default())
            .await
            .expect("delete namespace");
        until(30, "namespace and contents to be gone", || {
            let (cms, machines, namespaces) = (cms.clone(), machines.clone(), namespaces.clone());
            async move {
                let cm = cms.get_opt("cm").await.expect("get");
                let mm = machines.get_opt("mm").await.expect("get");
                let ns = namespaces.get_opt("doomed").await.expect("get");
                (cm.is_none() && mm.is_none() && ns.is_none()).then_some(())
            }
        })
        .await;
        survivors
            .get("cm")
            .await
            .expect("other namespaces are untouched");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// CRDs

fn widget_crd(size_schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.siderite.dev"},
        "spec": {
            "group": "example.siderite.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["color"],
                            "properties": {
                                "size": size_schema,
                                "color": {"type": "string", "enum": ["red", "blue"]},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        }
                    }
                }}
            }]
        }
    })
}

fn widgets() -> ApiResource {
    ApiResource {
        group: "example.siderite.dev".into(),
        version: "v1".into(),
        api_version: "example.siderite.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

fn crds() -> ApiResource {
    ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    }
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object literal")
}

/// Creates the Widget CRD and waits until discovery lists `widgets`.
async fn install_widgets(appliance: &Appliance) {
    let api: Api<DynamicObject> = Api::all_with(appliance.client().await, &crds());
    api.create(
        &PostParams::default(),
        &dynamic(widget_crd(json!({"type": "integer", "default": 3}))),
    )
    .await
    .expect("create CRD");
    until(20, "widgets to be served", || async {
        let (code, list) = appliance
            .raw("GET", "/apis/example.siderite.dev/v1", None, vec![])
            .await;
        (code == 200
            && list["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == "widgets")))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_objects_are_defaulted_and_pruned() {
    let appliance = Appliance::start();
    within(async {
        install_widgets(&appliance).await;
        let api: Api<DynamicObject> =
            Api::namespaced_with(appliance.client().await, "default", &widgets());
        let created = api
            .create(
                &PostParams::default(),
                &dynamic(json!({
                    "apiVersion": "example.siderite.dev/v1", "kind": "Widget",
                    "metadata": {"name": "w"},
                    "spec": {"color": "red", "extra": 1, "free": {"anything": {"x": 1}}},
                    "bogus": true
                })),
            )
            .await
            .expect("create widget");
        let stored = api.get("w").await.expect("get widget");
        for obj in [&created, &stored] {
            let spec = &obj.data["spec"];
            assert_eq!(spec["size"], 3, "default applied: {spec}");
            assert_eq!(spec["color"], "red");
            assert!(spec.get("extra").is_none(), "unknown field pruned: {spec}");
            assert_eq!(spec["free"]["anything"]["x"], 1, "preserved: {spec}");
            assert!(
                obj.data.get("bogus").is_none(),
                "unknown top-level field pruned"
            );
        }
        let explicit = api
            .create(
                &PostParams::default(),
                &dynamic(json!({
                    "apiVersion": "example.siderite.dev/v1", "kind": "Widget",
                    "metadata": {"name": "w2"},
                    "spec": {"color": "blue", "size": 7}
                })),
            )
            .await
            .expect("create widget with a size");
        assert_eq!(explicit.data["spec"]["size"], 7, "defaults do not override");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_schema_violations_are_422_naming_the_field() {
    let appliance = Appliance::start();
    within(async {
        install_widgets(&appliance).await;
        let api: Api<DynamicObject> =
            Api::namespaced_with(appliance.client().await, "default", &widgets());
        for (name, spec, field) in [
            ("type", json!({"color": "red", "size": "big"}), "spec.size"),
            ("enum", json!({"color": "green"}), "spec.color"),
            ("required", json!({"size": 1}), "spec.color"),
        ] {
            let status = api_error(
                api.create(
                    &PostParams::default(),
                    &dynamic(json!({
                        "apiVersion": "example.siderite.dev/v1", "kind": "Widget",
                        "metadata": {"name": name}, "spec": spec
                    })),
                )
                .await,
            );
            assert_eq!(
                (status.code, status.reason.as_str()),
                (422, "Invalid"),
                "{name}: {status:?}"
            );
            let causes = status.details.expect("details").causes;
            assert!(
                causes.iter().any(|c| c.field == field),
                "{name}: expected a cause for {field}: {causes:?}"
            );
            assert!(api.get_opt(name).await.expect("get").is_none());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_structural_crd_is_rejected() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<DynamicObject> = Api::all_with(appliance.client().await, &crds());
        let status = api_error(
            api.create(
                &PostParams::default(),
                &dynamic(widget_crd(json!({"description": "no type"}))),
            )
            .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert!(
            api.get_opt("widgets.example.siderite.dev")
                .await
                .expect("get")
                .is_none()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_objects_like_kube_apiserver() {
    let appliance = Appliance::start();
    within(async {
        let api: Api<Server> = Api::all(appliance.client().await);

        let not_found = api_error(api.get("missing").await);
        assert_eq!(
            (not_found.code, not_found.reason.as_str()),
            (404, "NotFound")
        );
        assert_eq!(
            not_found.message,
            r#"servers.metal.sidero.dev "missing" not found"#
        );
        let details = not_found.details.expect("details");
        assert_eq!(details.name, "missing");
        assert_eq!(details.group, "metal.sidero.dev");
        assert_eq!(details.kind, "servers");

        let (code, raw) = appliance
            .raw(
                "GET",
                "/apis/metal.sidero.dev/v1alpha2/servers/missing",
                None,
                vec![],
            )
            .await;
        assert_eq!(code, 404);
        assert_eq!(raw["kind"], "Status");
        assert_eq!(raw["apiVersion"], "v1");
        assert_eq!(raw["status"], "Failure");
        assert_eq!(raw["code"], 404);

        let original = api
            .create(&PostParams::default(), &server("s", "h"))
            .await
            .expect("create");
        let exists = api_error(api.create(&PostParams::default(), &server("s", "h")).await);
        assert_eq!(
            (exists.code, exists.reason.as_str()),
            (409, "AlreadyExists")
        );
        assert_eq!(
            exists.message,
            r#"servers.metal.sidero.dev "s" already exists"#
        );

        api.patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": "h2"}})),
        )
        .await
        .expect("patch");
        let conflict = api_error(api.replace("s", &PostParams::default(), &original).await);
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

        let invalid = api_error(
            api.create(&PostParams::default(), &server("UPPER", "h"))
                .await,
        );
        assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
        assert!(
            invalid
                .message
                .starts_with(r#"Server.metal.sidero.dev "UPPER" is invalid"#),
            "message: {}",
            invalid.message
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_convert_between_events_v1_and_core_v1() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let appliance = Appliance::start();
    within(async {
        let client = appliance.client().await;
        let new_api: Api<NewEvent> = Api::namespaced(client.clone(), "default");
        let core_api: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
        let target = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some("cm".into()),
            namespace: Some("default".into()),
            uid: Some("11111111-2222-3333-4444-555555555555".into()),
            ..Default::default()
        };
        let now = MicroTime(jiff::Timestamp::now());
        new_api
            .create(
                &PostParams::default(),
                &NewEvent {
                    metadata: ObjectMeta {
                        name: Some("from-new".into()),
                        ..Default::default()
                    },
                    event_time: Some(now.clone()),
                    regarding: Some(target.clone()),
                    note: Some("written as events.k8s.io/v1".into()),
                    reason: Some("Tested".into()),
                    type_: Some("Normal".into()),
                    action: Some("Testing".into()),
                    reporting_controller: Some("siderite.dev/test".into()),
                    reporting_instance: Some("test-1".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("create events.k8s.io/v1 Event");
        let as_core = core_api.get("from-new").await.expect("read as core/v1");
        assert_eq!(as_core.involved_object, target);
        assert_eq!(
            as_core.message.as_deref(),
            Some("written as events.k8s.io/v1")
        );
        assert_eq!(as_core.reason.as_deref(), Some("Tested"));
        assert_eq!(as_core.type_.as_deref(), Some("Normal"));

        core_api
            .create(
                &PostParams::default(),
                &CoreEvent {
                    metadata: ObjectMeta {
                        name: Some("from-core".into()),
                        ..Default::default()
                    },
                    involved_object: target.clone(),
                    message: Some("written as core/v1".into()),
                    reason: Some("Legacy".into()),
                    type_: Some("Warning".into()),
                    count: Some(1),
                    first_timestamp: Some(Time(jiff::Timestamp::now())),
                    last_timestamp: Some(Time(jiff::Timestamp::now())),
                    source: Some(k8s_openapi::api::core::v1::EventSource {
                        component: Some("test".into()),
                        host: None,
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("create core/v1 Event");
        let as_new = new_api
            .get("from-core")
            .await
            .expect("read as events.k8s.io/v1");
        assert_eq!(as_new.regarding, Some(target));
        assert_eq!(as_new.note.as_deref(), Some("written as core/v1"));
        assert_eq!(as_new.reason.as_deref(), Some("Legacy"));
        assert_eq!(as_new.type_.as_deref(), Some("Warning"));

        let mut listed: Vec<String> = new_api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|e| e.name_any())
            .collect();
        listed.sort();
        assert!(
            listed.contains(&"from-core".to_string()) && listed.contains(&"from-new".to_string()),
            "one store, two views: {listed:?}"
        );
    })
    .await;
}
