//! The sample controller: a kube-runtime `Controller` over `Server` that keeps a finalizer on
//! every server, fills in `status.power`, and lets deletion through its finalizer. Run against
//! the embedded API server it must converge, then stay idle (the server emits no watch events
//! for writes that change nothing, so the controller's idempotent status writes cause no
//! reconcile storm), and deleting a server must go through the finalizer.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Appliance;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{ResourceExt, runtime};
use serde_json::json;
use siderite::api::{Server, ServerSpec};

const FINALIZER: &str = "sample.siderite.dev/cleanup";
const MANAGER: &str = "sample-controller";

#[derive(Debug, thiserror::Error)]
enum SampleError {
    #[error("cannot patch the status of {name}: {source}")]
    PatchStatus { name: String, source: kube::Error },
}

/// What the controller did, for the test to inspect.
#[derive(Default)]
struct Record {
    reconciles: HashMap<String, usize>,
    cleanups: HashMap<String, usize>,
    errors: Vec<String>,
}

struct Context {
    api: Api<Server>,
    record: Mutex<Record>,
}

impl Context {
    fn reconciles(&self) -> HashMap<String, usize> {
        self.record.lock().expect("record lock").reconciles.clone()
    }

    /// A copy, so that no lock is held while a failing assertion panics.
    fn errors(&self) -> Vec<String> {
        self.record.lock().expect("record lock").errors.clone()
    }
}

async fn reconcile(
    server: Arc<Server>,
    ctx: Arc<Context>,
) -> Result<Action, runtime::finalizer::Error<SampleError>> {
    let name = server.name_any();
    *ctx.record
        .lock()
        .expect("record lock")
        .reconciles
        .entry(name.clone())
        .or_default() += 1;
    finalizer(&ctx.api, FINALIZER, server, |event| async {
        match event {
            Event::Apply(server) => {
                // Written on every reconcile on purpose: once converged this is a no-op write,
                // which must not wake the controller again.
                let power = server
                    .status
                    .as_ref()
                    .and_then(|s| s.power.clone())
                    .unwrap_or_else(|| "off".into());
                ctx.api
                    .patch_status(
                        &name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(json!({
                            "apiVersion": "metal.sidero.dev/v1alpha2",
                            "kind": "Server",
                            "status": {"power": power}
                        })),
                    )
                    .await
                    .map_err(|source| SampleError::PatchStatus {
                        name: name.clone(),
                        source,
                    })?;
                Ok(Action::await_change())
            }
            Event::Cleanup(server) => {
                *ctx.record
                    .lock()
                    .expect("record lock")
                    .cleanups
                    .entry(server.name_any())
                    .or_default() += 1;
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    server: Arc<Server>,
    error: &runtime::finalizer::Error<SampleError>,
    ctx: Arc<Context>,
) -> Action {
    ctx.record
        .lock()
        .expect("record lock")
        .errors
        .push(format!("{}: {error}", server.name_any()));
    Action::requeue(Duration::from_millis(500))
}

fn converged(s: &Server) -> bool {
    s.finalizers().iter().any(|f| f == FINALIZER)
        && s.status.as_ref().and_then(|st| st.power.as_deref()) == Some("off")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_controller_converges_stays_idle_and_finalizes() {
    let appliance = Appliance::start();
    let body = async {
        let api: Api<Server> = Api::all(appliance.client().await);
        let ctx = Arc::new(Context {
            api: api.clone(),
            record: Mutex::default(),
        });
        let controller = tokio::spawn(
            Controller::new(api.clone(), watcher::Config::default())
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|_| async {}),
        );

        let names = ["s1", "s2", "s3"];
        for name in names {
            api.create(
                &PostParams::default(),
                &Server::new(
                    name,
                    ServerSpec {
                        hostname: Some(name.into()),
                        ..Default::default()
                    },
                ),
            )
            .await
            .expect("create server");
        }

        // Convergence: every server has the finalizer and a power state.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let list = api.list(&ListParams::default()).await.expect("list");
            if list.items.len() == 3 && list.items.iter().all(converged) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller did not converge: {:?}; errors: {:?}",
                list.items
                    .iter()
                    .map(|s| (s.name_any(), s.finalizers().to_vec(), s.status.clone()))
                    .collect::<Vec<_>>(),
                ctx.errors().into_iter().take(3).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Idle: at most one trailing reconcile per object (for the last write it observed).
        let before = ctx.reconciles();
        let rvs_before: Vec<Option<String>> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|s| s.resource_version())
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = ctx.reconciles();
        for name in names {
            let extra =
                after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
            assert!(
                extra <= 1,
                "{name} was reconciled {extra} times while idle (before {before:?}, after {after:?})"
            );
        }
        let rvs_after: Vec<Option<String>> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|s| s.resource_version())
            .collect();
        assert_eq!(
            rvs_after, rvs_before,
            "idempotent status writes while idle changed no resourceVersion"
        );
        let errors = ctx.errors();
        assert!(errors.is_empty(), "reconcile errors: {errors:?}");

        // Deletion goes through the finalizer and then the object disappears.
        api.delete("s2", &DeleteParams::default())
            .await
            .expect("delete");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while api.get_opt("s2").await.expect("get_opt").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "s2 was not finalized; errors: {:?}",
                ctx.errors()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cleanups = ctx
            .record
            .lock()
            .expect("record lock")
            .cleanups
            .get("s2")
            .copied()
            .unwrap_or(0);
        assert!(cleanups >= 1, "deletion went through Cleanup");
        for name in ["s1", "s3"] {
            assert!(
                converged(&api.get(name).await.expect("others stay")),
                "{name} untouched"
            );
        }
        controller.abort();
    };
    tokio::time::timeout(Duration::from_secs(90), body)
        .await
        .expect("test exceeded its time limit");
}
