//! The boot plane's view of `Server` resources: watch-fed caches of Servers, ServerBindings and
//! ServerClasses that answer the boot decision's lookups without a round trip per iPXE request
//! (including which Environment an allocated server boots, resolved Server > ServerClass >
//! `default`, and its metadata token), a change signal for long polls, and the one way this
//! code base writes a Server's status (read, change, write with the resourceVersion, retry on
//! conflict).

use std::sync::Arc;

use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ConditionStatus, INSTALLED_CONDITION, METADATA_TOKEN_ANNOTATION, Server, ServerBinding,
    ServerClass, ServerStatus, find_condition,
};
use crate::policy::boot::{MachineFacts, NetbootEnvironment, ResolvedEnvironment, ServerFacts};
use crate::policy::identity::server_identity;
use crate::serve::environments::{AssetKind, EnvironmentCache};
use crate::serve::http::MachineLookup;
use crate::serve::resource_caches::{ServerFeed, cache};

/// The Environment an allocated server boots when neither it nor its ServerClass names one.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// How often a status write is retried after a conflicting concurrent write.
const STATUS_CONFLICT_RETRIES: usize = 8;

/// Watch-fed cache of every Server plus a counter that moves on every change, and caches of
/// the ServerBindings and ServerClasses the boot decision and the metadata server consult.
#[derive(Clone)]
pub struct ServerIndex {
    store: Store<Server>,
    bindings: Store<ServerBinding>,
    classes: Store<ServerClass>,
    changes: watch::Receiver<u64>,
}

impl ServerIndex {
    /// Reads Servers from the process's feed and starts watching ServerBindings and
    /// ServerClasses through `client`; the caches fill in the background.
    pub fn start(client: kube::Client, feed: &ServerFeed, shutdown: CancellationToken) -> Self {
        let bindings = cache::<ServerBinding>(Api::all(client.clone()), shutdown.clone());
        let classes = cache::<ServerClass>(Api::all(client), shutdown);
        ServerIndex {
            store: feed.store().clone(),
            bindings,
            classes,
            changes: feed.changes(),
        }
    }

    /// The cached Server of this name.
    pub fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.store.get(&ObjectRef::new(name))
    }

    /// A receiver that is notified whenever any Server changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The binding of server `name` (bindings are named after their server).
    pub fn binding(&self, name: &str) -> Option<Arc<ServerBinding>> {
        self.bindings.get(&ObjectRef::new(name))
    }

    pub fn class(&self, name: &str) -> Option<Arc<ServerClass>> {
        self.classes.get(&ObjectRef::new(name))
    }

    /// The current allocation of server `name`: its binding and the binding's metadata token.
    pub fn allocation(&self, name: &str) -> Option<Allocation> {
        let binding = self.binding(name)?;
        let token = binding
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(METADATA_TOKEN_ANNOTATION))
            .cloned();
        Some(Allocation { binding, token })
    }

    /// The ServerClass a bound server came from, if it still exists.
    pub fn class_of(&self, binding: &ServerBinding) -> Option<Arc<ServerClass>> {
        let name = binding.spec.server_class_ref.as_ref()?.name.as_deref()?;
        self.class(name)
    }

    /// The Environment an allocated server boots: the Server's `environmentRef`, else its
    /// ServerClass's, else `default`.
    pub fn environment_name(&self, server: &Server, binding: &ServerBinding) -> String {
        server
            .spec
            .environment_ref
            .as_ref()
            .and_then(|r| r.name.clone())
            .or_else(|| {
                self.class_of(binding)?
                    .spec
                    .environment_ref
                    .as_ref()?
                    .name
                    .clone()
            })
            .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_owned())
    }
}

/// A server's binding and the token its bootstrap data is guarded by.
#[derive(Clone, Debug)]
pub struct Allocation {
    pub binding: Arc<ServerBinding>,
    /// `None` for a binding written without one (by hand or by Sidero): such a server gets no
    /// bootstrap data from this appliance.
    pub token: Option<String>,
}

/// Whether the Server's OS is installed (its `Installed` condition is true).
pub fn is_installed(server: &Server) -> bool {
    server
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, INSTALLED_CONDITION))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// Answers the boot decision's questions from the [`ServerIndex`] and the Environment cache;
/// renders the URLs and kernel arguments an allocated server's Environment boots with.
pub struct BootFacts {
    pub index: ServerIndex,
    pub environments: Arc<EnvironmentCache>,
    /// `http://<appliance>:<port>`, without a trailing slash.
    pub base_url: String,
}

impl BootFacts {
    /// The ready Environment of an allocated server, with its per-server URLs and arguments.
    fn environment(&self, server: &Server, allocation: &Allocation) -> Option<ResolvedEnvironment> {
        let name = self.index.environment_name(server, &allocation.binding);
        let Some(ready) = self.environments.ready(&name) else {
            tracing::debug!(server = %server.name_any(), environment = %name, "environment not ready or missing");
            return None;
        };
        if ready.spec.image.is_some() {
            return Some(ResolvedEnvironment::DiskImage);
        }
        let server_name = server.name_any();
        let asset = |kind: AssetKind| {
            format!(
                "{}/environments/{name}/{}?server={server_name}",
                self.base_url,
                kind.as_str()
            )
        };
        let mut args = ready.spec.kernel.args.clone();
        if let Some(token) = &allocation.token {
            args.push(metadata_arg(&self.base_url, &server_name, token, &args));
        }
        args.retain(|a| !a.is_empty());
        Some(ResolvedEnvironment::Netboot(NetbootEnvironment {
            name: name.clone(),
            kernel: asset(AssetKind::Kernel),
            initrd: asset(AssetKind::Initrd),
            args,
        }))
    }
}

/// The kernel argument that tells the booted OS where its bootstrap data is: Talos
/// (recognised by a `talos.` argument) gets `talos.config=`, unless the Environment already
/// names its own config source; everything else gets a NoCloud seed (`ds=nocloud;s=`).
/// Both carry the allocation's token. An empty string means "add nothing".
pub fn metadata_arg(base_url: &str, server: &str, token: &str, args: &[String]) -> String {
    if args.iter().any(|a| a.starts_with("talos.config=")) {
        String::new()
    } else if args.iter().any(|a| a.starts_with("talos.")) {
        format!("talos.config={base_url}/configdata?uuid={server}&token={token}")
    } else {
        format!("ds=nocloud;s={}", nocloud_url(base_url, server, token))
    }
}

/// The NoCloud seed URL of an allocation (cloud-init appends `user-data`, `meta-data`, …).
pub fn nocloud_url(base_url: &str, server: &str, token: &str) -> String {
    format!("{base_url}/nocloud/{server}/{token}/")
}

impl MachineLookup for BootFacts {
    fn facts(&self, uuid: &str, mac: &str) -> MachineFacts {
        let Ok(identity) = server_identity(Some(uuid), Some(mac)) else {
            return MachineFacts::default();
        };
        let Some(server) = self.index.get(&identity.name) else {
            return MachineFacts::default();
        };
        let status = server.status.clone().unwrap_or_default();
        let allocation = self.index.allocation(&identity.name);
        let environment = allocation
            .as_ref()
            .and_then(|a| self.environment(&server, a));
        MachineFacts {
            server: Some(ServerFacts {
                accepted: server.spec.accepted,
                clean: status.is_clean,
                cordoned: server.spec.cordoned,
                allocated: allocation.is_some(),
                environment_delivered: is_installed(&server),
                pxe_boot_always: server.spec.pxe_boot_always,
                netboot_allowed: true,
                boot_from_disk: server.spec.boot_from_disk_method.or_else(|| {
                    let class = self.index.class_of(&allocation.as_ref()?.binding)?;
                    class.spec.boot_from_disk_method
                }),
                environment,
            }),
        }
    }
}

/// Changes a Server's status with `change` (which returns whether it changed anything) and
/// writes it with the resourceVersion it read, retrying when someone else wrote in between.
/// Returns the Server as written (or as read, when nothing changed); `None` when it is gone.
/// Publishes an Event about `server` in the background: callers (an agent waiting for its
/// answer, a power task) do not wait for it, as Events are best effort in Kubernetes too. The
/// note is cut to 1 KiB.
pub fn publish_event(
    recorder: &Recorder,
    server: &Server,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let reference = server.object_ref(&());
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, 1024).to_owned()),
        action: action.to_owned(),
        secondary: None,
    };
    let recorder = recorder.clone();
    let name = server.name_any();
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(server = %name, %error, reason = %event.reason, "could not publish an Event");
        }
    });
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub async fn update_status(
    api: &Api<Server>,
    name: &str,
    change: impl FnMut(&Server, &mut ServerStatus) -> bool,
) -> Result<Option<Server>, kube::Error> {
    update_status_from(api, name, None, change).await
}

/// [`update_status`], starting from `latest` when the caller has just read or written the
/// Server (saving a GET; a stale copy only costs a conflict and a retry).
pub async fn update_status_from(
    api: &Api<Server>,
    name: &str,
    mut latest: Option<Server>,
    mut change: impl FnMut(&Server, &mut ServerStatus) -> bool,
) -> Result<Option<Server>, kube::Error> {
    for _ in 0..STATUS_CONFLICT_RETRIES {
        let server = match latest.take() {
            Some(server) => Some(server),
            None => api.get_opt(name).await?,
        };
        let Some(mut server) = server else {
            return Ok(None);
        };
        let mut status = server.status.clone().unwrap_or_default();
        if !change(&server, &mut status) {
            return Ok(Some(server));
        }
        server.status = Some(status);
        match api
            .replace_status(name, &PostParams::default(), &server)
            .await
        {
            Ok(written) => return Ok(Some(written)),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error),
        }
    }
    // Every attempt lost a race: one last try, whose conflict is reported as it is.
    let mut server = api.get(name).await?;
    let mut status = server.status.clone().unwrap_or_default();
    change(&server, &mut status);
    server.status = Some(status);
    api.replace_status(name, &PostParams::default(), &server)
        .await
        .map(Some)
}
