//! The MetalMachine controller, Siderite's side of the Cluster API infrastructure contract:
//! a MetalMachine waits for its owner `Machine`, the Cluster's infrastructure and the Machine's
//! bootstrap data, then gets a server through a `ServerBinding` named after the server, created
//! as the lock (AlreadyExists → the next candidate, in `policy::allocate` order). It then sets
//! `spec.serverRef`, `spec.providerID` (`sidero://<uuid>`), `status.ready`,
//! `status.initialization.provisioned` and `status.addresses`. Deleting it (a finalizer)
//! deletes the binding and marks the server dirty and free, so the wipe cycle pools it again.
//!
//! Two replicas without leader election stay correct: only the create of a binding decides
//! who gets a server, and the API server lets exactly one create of a name succeed.
//!
//! An allocation pass reads no list from the API: the class's members come from the shared
//! [`Pool`] index and the existing bindings from a reflector cache. A cache may lag the API by
//! a watch event; that costs at most a refused create (AlreadyExists → the next candidate).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::pool::Pool;
use crate::api::{
    Condition, ConditionStatus, INSTALLED_CONDITION, Initialization, METADATA_TOKEN_ANNOTATION,
    MetalMachine, MetalMachineStatus, Server, ServerBinding, ServerBindingSpec, ServerClass,
    set_condition,
};
use crate::policy::allocate::{self, Candidate};
use crate::serve::resource_caches::{ServerChange, ServerFeed};
use crate::serve::servers::update_status;

/// The finalizer Sidero puts on MetalMachines (kept, so Sidero-created objects stay valid).
pub const FINALIZER: &str = "metalmachine.infrastructure.cluster.x-k8s.io";
/// The label Cluster API puts on every object of a cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Annotation on a Server: when it was last released (RFC 3339), for `policy::allocate`.
pub const RELEASED_AT: &str = "siderite.dev/released-at";
/// Condition type summarizing why a MetalMachine is not ready yet.
pub const READY: &str = "Ready";
/// Ready's reason while no eligible server is free.
const WAITING_FOR_SERVER: &str = "WaitingForServer";

/// How often a machine waiting for a server or for Cluster API objects looks again (it is
/// also woken by every Server change).
const WAIT: Duration = Duration::from_secs(30);
/// Retry delay after a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);
/// Machine reconciles that run at once. A thousand machines at once all tried the same few
/// servers first; fewer at a time see each other's bindings in the cache sooner.
const CONCURRENCY: u16 = 32;

#[derive(Debug, thiserror::Error)]
pub enum MetalMachineError {
    #[error("{what} for MetalMachine {machine}: {source}")]
    Kube {
        machine: String,
        what: &'static str,
        source: kube::Error,
    },
    #[error("finalizer of MetalMachine {machine}: {source}")]
    Finalizer {
        machine: String,
        source: Box<kube::runtime::finalizer::Error<MetalMachineError>>,
    },
}

struct Context {
    client: kube::Client,
    pool: Pool,
    bindings: Api<ServerBinding>,
    /// Every ServerBinding, from a reflector: what an allocation pass reads.
    binding_cache: Store<ServerBinding>,
    server_api: Api<Server>,
    classes: Api<ServerClass>,
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(client: kube::Client, pool: Pool, feed: ServerFeed, shutdown: CancellationToken) {
    let machines: Api<MetalMachine> = Api::all(client.clone());
    let servers: Api<Server> = Api::all(client.clone());
    let bindings: Api<ServerBinding> = Api::all(client.clone());
    let binding_events = bindings.clone();
    let binding_cache = crate::serve::resource_caches::cache(bindings.clone(), shutdown.clone());
    // A pass before the caches hold the API's objects would see no server and no binding.
    let ready = async {
        pool.ready().await;
        let _ = binding_cache.wait_until_ready().await;
    };
    tokio::select! {
        () = ready => {}
        () = shutdown.cancelled() => return,
    }

    debug!("metalmachine controller: caches listed, starting");
    let controller = Controller::new(machines, watcher::Config::default());
    let machine_store = controller.store();
    let waiting_store = controller.store();
    let context = Arc::new(Context {
        client: client.clone(),
        pool,
        bindings,
        binding_cache,
        server_api: servers.clone(),
        classes: Api::all(client),
    });
    controller
        // A freed or newly clean server may be what a machine waiting for one needs. A server
        // that cannot be handed out (one just bound, above all) helps nobody, and a machine
        // that has not looked yet is queued by its own events: re-queueing every unbound
        // machine on every Server event kept 1,000 machines reconciling in a loop.
        .watches_shared_stream(available_servers(&feed), move |_server: Arc<Server>| {
            waiting(&machine_store)
        })
        // A binding deleted frees its server without a Server event (a replica that lost the
        // claim of a machine gives its binding back): the waiting machines look again.
        .watches(
            binding_events,
            watcher::Config::default(),
            move |_binding: ServerBinding| waiting(&waiting_store),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            crate::serve::metrics::reconciled(
                crate::serve::metrics::Controller::metalmachine,
                result.is_ok(),
            );
            if let Err(error) = result {
                debug!(%error, "metalmachine reconcile failed");
            }
        })
        .await;
}

async fn reconcile(
    machine: Arc<MetalMachine>,
    context: Arc<Context>,
) -> Result<Action, MetalMachineError> {
    let namespace = machine.namespace().unwrap_or_else(|| "default".into());
    let api: Api<MetalMachine> = Api::namespaced(context.client.clone(), &namespace);
    let name = machine.name_any();
    finalizer(&api, FINALIZER, machine, |event| async {
        match event {
            Finalizer::Apply(machine) => apply(&machine, &context).await,
            Finalizer::Cleanup(machine) => release(&machine, &context).await,
        }
    })
    .await
    .map_err(|source| MetalMachineError::Finalizer {
        machine: name,
        source: Box::new(source),
    })
}

fn error_policy(
    machine: Arc<MetalMachine>,
    error: &MetalMachineError,
    _context: Arc<Context>,
) -> Action {
    warn!(machine = %machine.name_any(), %error, "metalmachine reconcile failed; retrying");
    Action::requeue(RETRY)
}

fn kube_error(
    machine: &MetalMachine,
    what: &'static str,
) -> impl FnOnce(kube::Error) -> MetalMachineError {
    let machine = format!(
        "{}/{}",
        machine.namespace().unwrap_or_default(),
        machine.name_any()
    );
    move |source| MetalMachineError::Kube {
        machine,
        what,
        source,
    }
}

/// A Cluster API object of the `cluster.x-k8s.io/v1beta1` group, read dynamically (Siderite
/// does not own these types).
pub(crate) async fn capi_object(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    plural: &str,
    name: &str,
) -> Result<Option<DynamicObject>, kube::Error> {
    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .get_opt(name)
        .await
}

/// Why a machine is still waiting, for its Ready condition.
struct Waiting {
    reason: &'static str,
    message: String,
}

async fn apply(machine: &MetalMachine, context: &Context) -> Result<Action, MetalMachineError> {
    let namespace = machine.namespace().unwrap_or_else(|| "default".into());
    match prerequisites(machine, context, &namespace).await? {
        Err(waiting) => {
            write_waiting(machine, context, &namespace, waiting).await?;
            return Ok(Action::requeue(WAIT));
        }
        Ok((cluster, failure_domain)) => {
            let server = match machine
                .spec
                .server_ref
                .as_ref()
                .and_then(|r| r.name.clone())
            {
                Some(pinned) => Some(pinned),
                None => {
                    match allocate(machine, context, &cluster, failure_domain.as_deref()).await? {
                        Ok(server) => server,
                        Err(waiting) => {
                            write_waiting(machine, context, &namespace, waiting).await?;
                            return Ok(Action::requeue(WAIT));
                        }
                    }
                }
            };
            if let Some(server) = server {
                provisioned(machine, context, &namespace, &server).await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// The owner Machine, the Cluster's infrastructure and the bootstrap data: `Ok((cluster,
/// failure domain))` when all are there.
async fn prerequisites(
    machine: &MetalMachine,
    context: &Context,
    namespace: &str,
) -> Result<Result<(String, Option<String>), Waiting>, MetalMachineError> {
    let Some(owner) = machine
        .owner_references()
        .iter()
        .find(|o| o.kind == "Machine" && o.api_version.starts_with("cluster.x-k8s.io/"))
    else {
        return Ok(Err(Waiting {
            reason: "WaitingForMachine",
            message: "waiting for Cluster API to set a Machine as owner".into(),
        }));
    };
    let Some(owner_machine) = capi_object(
        &context.client,
        namespace,
        "Machine",
        "machines",
        &owner.name,
    )
    .await
    .map_err(kube_error(machine, "reading the owner Machine"))?
    else {
        return Ok(Err(Waiting {
            reason: "WaitingForMachine",
            message: format!(
                "the owner Machine {namespace}/{} does not exist yet",
                owner.name
            ),
        }));
    };
    let spec = &owner_machine.data["spec"];
    let cluster = machine
        .labels()
        .get(CLUSTER_NAME_LABEL)
        .cloned()
        .or_else(|| spec["clusterName"].as_str().map(str::to_owned));
    let Some(cluster) = cluster else {
        return Ok(Err(Waiting {
            reason: "WaitingForCluster",
            message: format!(
                "neither the MetalMachine label {CLUSTER_NAME_LABEL} nor Machine spec.clusterName names the cluster"
            ),
        }));
    };
    let cluster_object = capi_object(&context.client, namespace, "Cluster", "clusters", &cluster)
        .await
        .map_err(kube_error(machine, "reading the Cluster"))?;
    let infrastructure_ready = cluster_object.as_ref().is_some_and(|c| {
        let status = &c.data["status"];
        status["infrastructureReady"] == Value::Bool(true)
            || status["initialization"]["infrastructureProvisioned"] == Value::Bool(true)
    });
    if !infrastructure_ready {
        return Ok(Err(Waiting {
            reason: "WaitingForClusterInfrastructure",
            message: format!(
                "waiting for Cluster {namespace}/{cluster} to report its infrastructure ready"
            ),
        }));
    }
    if spec["bootstrap"]["dataSecretName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Ok(Err(Waiting {
            reason: "WaitingForBootstrapData",
            message: format!(
                "waiting for Machine {namespace}/{} to get spec.bootstrap.dataSecretName",
                owner.name
            ),
        }));
    }
    let failure_domain = spec["failureDomain"].as_str().map(str::to_owned);
    Ok(Ok((cluster, failure_domain)))
}

/// Binds a server: `Ok(Some(server))`, or `Err(waiting)` when none is eligible.
async fn allocate(
    machine: &MetalMachine,
    context: &Context,
    cluster: &str,
    failure_domain: Option<&str>,
) -> Result<Result<Option<String>, Waiting>, MetalMachineError> {
    let Some((class_ref, class_name)) = machine
        .spec
        .server_class_ref
        .as_ref()
        .and_then(|r| Some((r, r.name.clone()?)))
    else {
        return Ok(Err(Waiting {
            reason: "NoServerClass",
            message: "spec.serverClassRef or spec.serverRef must name where the server comes from"
                .into(),
        }));
    };
    let Some(class) = context
        .classes
        .get_opt(&class_name)
        .await
        .map_err(kube_error(machine, "reading the ServerClass"))?
    else {
        return Ok(Err(Waiting {
            reason: "ServerClassNotFound",
            message: format!("ServerClass {class_name} does not exist"),
        }));
    };
    let members = match context.pool.members(&class) {
        Ok(members) => members,
        Err(error) => {
            return Ok(Err(Waiting {
                reason: "InvalidServerClass",
                message: format!("ServerClass {class_name}: {error}"),
            }));
        }
    };
    let bindings = context.binding_cache.state();
    // A binding this machine created in an earlier pass whose follow-up writes failed: adopt
    // it rather than lock a second server.
    if let Some(mine) = bindings.iter().find(|b| binds(b, machine)) {
        let server = mine.name_any();
        return Ok(Ok(claim(machine, context, &server)
            .await?
            .then_some(server)));
    }
    let bound: BTreeMap<String, &ServerBinding> =
        bindings.iter().map(|b| (b.name_any(), &**b)).collect();
    let mut per_domain: BTreeMap<Option<String>, usize> = BTreeMap::new();
    for binding in bound.values() {
        if binding.labels().get(CLUSTER_NAME_LABEL).map(String::as_str) == Some(cluster) {
            let domain = context
                .pool
                .server(&binding.name_any())
                .and_then(|s| allocate::failure_domain(s.labels()));
            *per_domain.entry(domain).or_default() += 1;
        }
    }
    let candidates: Vec<Candidate> = members
        .iter()
        .filter(|s| allocate::is_available(s) && !bound.contains_key(&s.name_any()))
        .map(|s| Candidate {
            name: s.name_any(),
            failure_domain: allocate::failure_domain(s.labels()),
            released_at: s
                .annotations()
                .get(RELEASED_AT)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second()),
        })
        .collect();
    for candidate in allocate::order(&candidates, failure_domain, &per_domain) {
        let binding = new_binding(machine, &candidate.name, cluster, Some(class_ref));
        match context
            .bindings
            .create(&PostParams::default(), &binding)
            .await
        {
            Ok(_) => {
                if !claim(machine, context, &candidate.name).await? {
                    // Another replica bound this machine meanwhile: give the server back.
                    match context
                        .bindings
                        .delete(&candidate.name, &DeleteParams::default())
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(error) => {
                            return Err(kube_error(machine, "undoing a ServerBinding")(error));
                        }
                    }
                    return Ok(Ok(None));
                }
                info!(machine = %machine.name_any(), server = %candidate.name, class = %class_name, "server bound");
                return Ok(Ok(Some(candidate.name.clone())));
            }
            // Another MetalMachine (or replica) got it first.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                crate::serve::metrics::lock_conflict();
                continue;
            }
            Err(error) => return Err(kube_error(machine, "creating the ServerBinding")(error)),
        }
    }
    let place = failure_domain
        .map(|d| format!(" in failure domain {d}"))
        .unwrap_or_default();
    let message = if candidates.is_empty() {
        format!(
            "no server of class {class_name}{place} is available (accepted, clean, not \
             cordoned, not in use); waiting for one"
        )
    } else {
        format!(
            "all {} eligible server(s) of class {class_name}{place} were taken by other \
             machines; waiting for one",
            candidates.len()
        )
    };
    Ok(Err(Waiting {
        reason: WAITING_FOR_SERVER,
        message,
    }))
}

/// Sets `spec.serverRef` and `spec.providerID` to `server`, unless the machine already has a
/// serverRef: the JSON patch tests that it is still unset, so of two replicas that each locked
/// a server for the same machine exactly one wins. `false`: the other one did.
async fn claim(
    machine: &MetalMachine,
    context: &Context,
    server: &str,
) -> Result<bool, MetalMachineError> {
    let namespace = machine.namespace().unwrap_or_else(|| "default".into());
    let api: Api<MetalMachine> = Api::namespaced(context.client.clone(), &namespace);
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/spec/serverRef", "value": null },
        { "op": "add", "path": "/spec/serverRef",
          "value": { "apiVersion": Server::api_version(&()), "kind": "Server", "name": server } },
        { "op": "add", "path": "/spec/providerID", "value": format!("sidero://{server}") },
    ]))
    .expect("a well-formed JSON patch");
    match api
        .patch(
            &machine.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
            // Already set: by the other replica, possibly to this very server (it adopted the
            // binding this pass created). Only a different server means this one lost.
            let current = api
                .get(&machine.name_any())
                .await
                .map_err(kube_error(machine, "reading the MetalMachine"))?;
            Ok(current.spec.server_ref.and_then(|r| r.name).as_deref() == Some(server))
        }
        Err(error) => Err(kube_error(machine, "setting spec.serverRef")(error)),
    }
}

fn new_binding(
    machine: &MetalMachine,
    server: &str,
    cluster: &str,
    class_ref: Option<&ObjectReference>,
) -> ServerBinding {
    let mut binding = ServerBinding::new(
        server,
        ServerBindingSpec {
            server_class_ref: class_ref.cloned(),
            metal_machine_ref: machine_reference(machine),
            ..Default::default()
        },
    );
    binding
        .labels_mut()
        .insert(CLUSTER_NAME_LABEL.to_owned(), cluster.to_owned());
    binding
        .annotations_mut()
        .insert(METADATA_TOKEN_ANNOTATION.to_owned(), metadata_token());
    binding
}

/// A fresh allocation token: 256 random bits, URL-safe (it goes into URLs and kernel
/// arguments unescaped).
fn metadata_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn machine_reference(machine: &MetalMachine) -> ObjectReference {
    ObjectReference {
        api_version: Some(MetalMachine::api_version(&()).into_owned()),
        kind: Some(MetalMachine::kind(&()).into_owned()),
        namespace: machine.namespace(),
        name: Some(machine.name_any()),
        uid: machine.uid(),
        ..Default::default()
    }
}

/// The unbound machines that looked for a server and found none.
fn waiting(machines: &Store<MetalMachine>) -> Vec<ObjectRef<MetalMachine>> {
    machines
        .state()
        .iter()
        .filter(|m| m.spec.server_ref.is_none() && waits_for_server(m))
        .map(|m| ObjectRef::from_obj(&**m))
        .collect()
}

/// Servers that became available to allocation, from the feed. The waiting machines are the
/// same whichever server it was, so a (re)list yields one available server, not thousands.
fn available_servers(feed: &ServerFeed) -> impl futures::Stream<Item = Arc<Server>> + Send + use<> {
    feed.subscribe().filter_map(|change| {
        futures::future::ready(match change {
            ServerChange::Listed(all) => all.into_iter().find(|s| allocate::is_available(s)),
            ServerChange::Applied(server) => Some(server).filter(|s| allocate::is_available(s)),
            ServerChange::Deleted(_) => None,
        })
    })
}

/// Whether `machine` looked for a server and found none (its Ready condition says so).
fn waits_for_server(machine: &MetalMachine) -> bool {
    machine.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == READY && c.reason.as_deref() == Some(WAITING_FOR_SERVER))
    })
}

/// Whether `binding` belongs to `machine`.
fn binds(binding: &ServerBinding, machine: &MetalMachine) -> bool {
    let reference = &binding.spec.metal_machine_ref;
    reference.name.as_deref() == Some(machine.name_any().as_str())
        && reference.namespace == machine.namespace()
        && (reference.uid.is_none() || reference.uid == machine.uid())
}

/// Records the bound server on the machine and the machine on the server.
async fn provisioned(
    machine: &MetalMachine,
    context: &Context,
    namespace: &str,
    server: &str,
) -> Result<(), MetalMachineError> {
    // A pinned server (spec.serverRef by hand) gets its binding here.
    match context
        .bindings
        .get_opt(server)
        .await
        .map_err(kube_error(machine, "reading the ServerBinding"))?
    {
        Some(binding) if binds(&binding, machine) => {}
        Some(_) => {
            let message = format!("server {server} is bound to another MetalMachine");
            let failed =
                json!({ "status": { "failureReason": "ServerTaken", "failureMessage": message } });
            patch_status(machine, context, namespace, &failed).await?;
            return Ok(());
        }
        None => {
            let cluster = machine
                .labels()
                .get(CLUSTER_NAME_LABEL)
                .cloned()
                .unwrap_or_default();
            let binding = new_binding(
                machine,
                server,
                &cluster,
                machine.spec.server_class_ref.as_ref(),
            );
            match context
                .bindings
                .create(&PostParams::default(), &binding)
                .await
            {
                Ok(_) => {}
                // Lost a race for the pinned server: the next reconcile reports who has it.
                Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
                Err(error) => return Err(kube_error(machine, "creating the ServerBinding")(error)),
            }
        }
    }
    let written = update_status(&context.server_api, server, |_, status| {
        let changed = !status.in_use;
        status.in_use = true;
        changed
    })
    .await
    .map_err(kube_error(machine, "marking the Server in use"))?;
    let provider_id = format!("sidero://{server}");
    if machine.spec.provider_id.as_deref() != Some(provider_id.as_str())
        || machine
            .spec
            .server_ref
            .as_ref()
            .and_then(|r| r.name.as_deref())
            != Some(server)
    {
        let api: Api<MetalMachine> = Api::namespaced(context.client.clone(), namespace);
        let patch = json!({ "spec": {
            "providerID": provider_id,
            "serverRef": { "apiVersion": Server::api_version(&()), "kind": "Server", "name": server },
        }});
        api.patch(
            &machine.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(kube_error(
            machine,
            "setting spec.serverRef and spec.providerID",
        ))?;
    }
    let addresses = written
        .and_then(|s| s.status)
        .map(|s| s.addresses)
        .unwrap_or_default();
    let mut status = machine.status.clone().unwrap_or_default();
    let before = status.clone();
    status.ready = true;
    status.initialization = Some(Initialization { provisioned: true });
    status.addresses = addresses;
    status.failure_reason = None;
    status.failure_message = None;
    set_condition(
        &mut status.conditions,
        Condition::new(
            READY,
            ConditionStatus::True,
            "ServerBound",
            format!("server {server} is bound"),
            Time(jiff::Timestamp::now()),
        ),
    );
    if status != before {
        patch_status(machine, context, namespace, &json!({ "status": status })).await?;
    }
    Ok(())
}

async fn write_waiting(
    machine: &MetalMachine,
    context: &Context,
    namespace: &str,
    waiting: Waiting,
) -> Result<(), MetalMachineError> {
    let mut status: MetalMachineStatus = machine.status.clone().unwrap_or_default();
    let before = status.clone();
    set_condition(
        &mut status.conditions,
        Condition::new(
            READY,
            ConditionStatus::False,
            waiting.reason,
            waiting.message,
            Time(jiff::Timestamp::now()),
        )
        .with_severity(Some(crate::api::ConditionSeverity::Info)),
    );
    if status == before {
        return Ok(());
    }
    patch_status(machine, context, namespace, &json!({ "status": status })).await
}

async fn patch_status(
    machine: &MetalMachine,
    context: &Context,
    namespace: &str,
    patch: &Value,
) -> Result<(), MetalMachineError> {
    let api: Api<MetalMachine> = Api::namespaced(context.client.clone(), namespace);
    api.patch_status(
        &machine.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(kube_error(machine, "writing the MetalMachine status"))?;
    Ok(())
}

/// Deletes the machine's binding and returns its server to the pool: not in use, dirty (the
/// wipe cycle makes it clean again), stamped with the release time.
async fn release(machine: &MetalMachine, context: &Context) -> Result<Action, MetalMachineError> {
    let Some(server) = machine
        .spec
        .server_ref
        .as_ref()
        .and_then(|r| r.name.clone())
    else {
        return Ok(Action::await_change());
    };
    if let Some(binding) = context
        .bindings
        .get_opt(&server)
        .await
        .map_err(kube_error(machine, "reading the ServerBinding"))?
        && binds(&binding, machine)
    {
        match context
            .bindings
            .delete(&server, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(kube_error(machine, "deleting the ServerBinding")(error)),
        }
        update_status(&context.server_api, &server, |_, status| {
            let installed = status
                .conditions
                .iter()
                .any(|c| c.type_ == INSTALLED_CONDITION);
            let changed = status.in_use || status.is_clean || installed;
            status.in_use = false;
            status.is_clean = false;
            // The next allocation installs afresh.
            status.conditions.retain(|c| c.type_ != INSTALLED_CONDITION);
            changed
        })
        .await
        .map_err(kube_error(machine, "returning the Server to the pool"))?;
        let stamp = json!({ "metadata": { "annotations": { RELEASED_AT: jiff::Timestamp::now().to_string() } } });
        context
            .server_api
            .patch(&server, &PatchParams::default(), &Patch::Merge(&stamp))
            .await
            .map_err(kube_error(machine, "stamping the Server's release time"))?;
        info!(machine = %machine.name_any(), %server, "server released; it will be wiped");
    }
    Ok(Action::await_change())
}
