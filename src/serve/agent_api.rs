//! The agent API (`/agent/v1/...` on the boot HTTP server): discovery agents register their
//! machine's inventory, long-poll for directives, and report wipe progress and outcome. Every
//! request is size-limited and strictly validated; every change lands on the `Server` resource
//! (spec.hardware, status conditions, Events), so `kubectl` shows what the agents did.
//!
//! What is only worth keeping for one boot of a machine (its boot id, whether a wipe failed
//! during it, when it was last heard from) stays in memory here; losing it on restart only
//! means a failed wipe is tried once more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use k8s_openapi::api::core::v1::NodeAddress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::api::agent::{
    self, Addresses, AgentError, BmcReport, BmcSetupResult, ConfigDriveSource, DeployReport,
    DeployResult, Directive, Heartbeat, ImageChecksum, ImageDeployment, LogLines, Progress,
    Registered, Registration, WipeMode, WipeReport,
};
use crate::api::{
    Bmc, Condition, ConditionStatus, CredentialSource, HardwareInformation, INSTALLED_CONDITION,
    SecretKeyRef, Server, ServerSpec, set_condition,
};
use crate::policy::agent::{
    AgentFacts, ImageStep, WipeVerdict, directive, judge_wipe, progress_message,
};
use crate::policy::identity::{parse_mac, server_identity};
use crate::serve::environments::{AssetKind, EnvironmentCache};
use crate::serve::servers::{
    ServerIndex, is_installed, nocloud_url, publish_event, truncate, update_status,
    update_status_from,
};

/// Longest long poll an agent may ask for; it re-asks after that.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Wipe progress is written to the Server at most this often (the agent reports more often).
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(2);

/// Condition types this API writes on Servers.
pub const REGISTERED: &str = "Registered";
pub const IDENTITY: &str = "IdentityFromBootMAC";
pub const IDENTITY_CONFLICT: &str = "IdentityConflict";
pub const WIPING: &str = "Wiping";
pub const CLEAN: &str = "Clean";

/// Label saying where a Server's name came from: `smbios-uuid` or `boot-mac`.
pub const IDENTITY_LABEL: &str = "siderite.dev/identity";

/// Where the credentials of BMC users the agents create are kept: Secret `<server>-bmc` in
/// this namespace, keys `user` and `pass`, owned by the Server (as Sidero kept them).
pub const BMC_SECRET_NAMESPACE: &str = "default";
pub const BMC_SECRET_USER_KEY: &str = "user";
pub const BMC_SECRET_PASS_KEY: &str = "pass";
/// clusterctl moves objects with this label along with the cluster (Sidero set it too).
const CLUSTERCTL_MOVE_LABEL: &str = "clusterctl.cluster.x-k8s.io/move";
/// Label naming the Server a BMC Secret belongs to.
pub const BMC_SECRET_SERVER_LABEL: &str = "siderite.dev/server";

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Settings of the agent API.
#[derive(Clone, Debug)]
pub struct AgentApiConfig {
    /// New Servers start accepted (`--auto-accept-servers`).
    pub auto_accept: bool,
    /// Wipe mode for Servers that name none (`--wipe-mode`).
    pub wipe_mode: WipeMode,
    /// Agents of Servers without `spec.bmc` create a BMC user in-band and report it
    /// (`--auto-bmc-setup`); off, they are told not to and their reports are refused.
    pub auto_bmc_setup: bool,
}

/// What the appliance remembers about the current boot of one machine.
#[derive(Debug)]
struct Session {
    boot_id: String,
    wipe_failed: bool,
    deploy_failed: bool,
    wipe_announced: bool,
    last_seen: Instant,
    phase: String,
    last_progress_write: Option<Instant>,
}

impl Session {
    fn new(boot_id: &str) -> Self {
        Session {
            boot_id: boot_id.to_owned(),
            wipe_failed: false,
            deploy_failed: false,
            wipe_announced: false,
            last_seen: Instant::now(),
            phase: "registered".to_owned(),
            last_progress_write: None,
        }
    }
}

/// The agent API's handlers and the state they share.
pub struct AgentApi {
    servers: Api<Server>,
    /// Secrets in [`BMC_SECRET_NAMESPACE`].
    secrets: Api<k8s_openapi::api::core::v1::Secret>,
    index: ServerIndex,
    /// Disk-image Environments the agent deploys come from this cache.
    environments: Arc<EnvironmentCache>,
    /// `http://<appliance>:<port>`: image and config-drive URLs in `deploy` directives.
    base_url: String,
    recorder: Recorder,
    config: AgentApiConfig,
    sessions: Mutex<HashMap<String, Session>>,
    /// Registrations talking to the Kubernetes API at once; the rest queue here. Without a
    /// bound, a rack powering on together opens one API connection per machine and every
    /// registration slows down until agents time out (`siderite bench agents`).
    registering: tokio::sync::Semaphore,
}

/// Registrations processed at once (see [`AgentApi::registering`]).
const CONCURRENT_REGISTRATIONS: usize = 64;

/// A refusal: status and a message for the agent's console and the operator.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn kube(what: &str, error: &kube::Error) -> Self {
        warn!(%error, what, "agent API could not reach the Kubernetes API");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the appliance could not {what}: {error}; retry shortly"),
        )
    }
}

type Handled = Result<Response<Body>, Refusal>;

impl AgentApi {
    pub fn new(
        client: kube::Client,
        index: ServerIndex,
        environments: Arc<EnvironmentCache>,
        base_url: String,
        config: AgentApiConfig,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "siderite".into(),
                instance: None,
            },
        );
        AgentApi {
            secrets: Api::namespaced(client.clone(), BMC_SECRET_NAMESPACE),
            servers: Api::all(client),
            index,
            environments,
            base_url,
            recorder,
            config,
            sessions: Mutex::new(HashMap::new()),
            registering: tokio::sync::Semaphore::new(CONCURRENT_REGISTRATIONS),
        }
    }

    /// Runs `f` on the session of `name`, starting one for `boot_id` if there is none (the
    /// appliance may have restarted since the agent registered). Marks the agent as seen.
    fn with_session<T>(&self, name: &str, boot_id: &str, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut sessions = self
            .sessions
            .lock()
            .expect("session map lock is never poisoned: no code panics while holding it");
        let session = sessions
            .entry(name.to_owned())
            .or_insert_with(|| Session::new(boot_id));
        session.last_seen = Instant::now();
        f(session)
    }

    /// Answers one request under [`agent::PREFIX`]; every outcome is a response.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let rest = path.strip_prefix(agent::PREFIX).unwrap_or("");
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let result = match (&parts.method, segments.as_slice()) {
            (&Method::POST, ["register"]) => match read_json(&parts, body).await {
                Ok(registration) => self.register(registration).await,
                Err(refusal) => Err(refusal),
            },
            (&Method::GET, ["servers", name, "directive"]) => {
                self.directive(name, parts.uri.query()).await
            }
            (&Method::POST, ["servers", name, action]) => {
                self.report(name, action, &parts, body).await
            }
            (_, ["register"]) | (_, ["servers", _, _]) => Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}", parts.method),
            )),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("{path} is not an agent API route"),
            )),
        };
        result.unwrap_or_else(|refusal| {
            debug!(%path, status = refusal.status.as_u16(), message = %refusal.message, "agent request refused");
            json(
                refusal.status,
                &AgentError {
                    error: refusal.message,
                },
            )
        })
    }

    async fn report<B>(
        &self,
        name: &str,
        action: &str,
        parts: &http::request::Parts,
        body: B,
    ) -> Handled
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        validate_name(name)?;
        match action {
            "progress" => self.progress(name, read_json(parts, body).await?).await,
            "wiped" => self.wiped(name, read_json(parts, body).await?).await,
            "addresses" => self.addresses(name, read_json(parts, body).await?).await,
            "heartbeat" => self.heartbeat(name, read_json(parts, body).await?),
            "deployed" => self.deployed(name, read_json(parts, body).await?).await,
            "log" => self.log(name, read_json(parts, body).await?),
            "bmc" => self.bmc(name, read_json(parts, body).await?).await,
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown agent report {action:?}; expected progress, wiped, deployed, addresses, heartbeat, bmc or log"
                ),
            )),
        }
    }

    async fn register(&self, registration: Registration) -> Handled {
        validate_registration(&registration)?;
        let _permit = self.registering.acquire().await.map_err(|_| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the appliance is shutting down",
            )
        })?;
        let identity = server_identity(
            registration.smbios_uuid.as_deref(),
            registration.boot_mac.as_deref(),
        )
        .map_err(|e| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let name = identity.name.clone();
        let existing = self
            .servers
            .get_opt(&name)
            .await
            .map_err(|e| Refusal::kube("read the Server", &e))?;
        let created = match existing {
            None => {
                self.create_server(&name, &registration, identity.fallback.is_some())
                    .await?
            }
            Some(server) => {
                self.refresh_server(&server, &registration).await?;
                None
            }
        };
        let (created, latest) = (created.is_some(), created);
        let now = now();
        let summary = inventory_summary(&registration.hardware);
        let addresses = registered_addresses(&registration.hardware);
        let fallback = identity.fallback.clone();
        let problems = registration.problems.join("; ");
        let written = update_status_from(&self.servers, &name, latest, |latest, status| {
            let mut changed = set_condition(
                &mut status.conditions,
                Condition::new(
                    REGISTERED,
                    ConditionStatus::True,
                    if created {
                        "Discovered"
                    } else {
                        "InventoryRefreshed"
                    },
                    registered_message(
                        &name,
                        &registration.agent_version,
                        &summary,
                        latest.spec.accepted,
                    ),
                    now.clone(),
                ),
            );
            if let Some(why) = &fallback {
                changed |= set_condition(
                    &mut status.conditions,
                    Condition::new(
                        IDENTITY,
                        ConditionStatus::True,
                        "SMBIOSUUIDUnusable",
                        why.clone(),
                        now.clone(),
                    ),
                );
            }
            if !addresses.is_empty() && status.addresses != addresses {
                status.addresses = addresses.clone();
                changed = true;
            }
            changed
        })
        .await
        .map_err(|e| Refusal::kube("write the Server's status", &e))?
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::CONFLICT,
                format!("Server {name} was deleted while registering; register again"),
            )
        })?;
        self.with_session(&name, &registration.boot_id, |session| {
            *session = Session::new(&registration.boot_id);
        });
        let note = if created {
            format!("discovered: {summary}")
        } else {
            format!("inventory refreshed: {summary}")
        };
        self.event(&written, EventType::Normal, "Registered", "Register", note);
        if !problems.is_empty() {
            self.event(
                &written,
                EventType::Warning,
                "InventoryIncomplete",
                "Register",
                problems,
            );
        }
        info!(server = %name, created, mac = registration.boot_mac.as_deref().unwrap_or(""), "agent registered");
        Ok(json(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &Registered {
                server: name,
                created,
                accepted: written.spec.accepted,
                identity_fallback: identity.fallback,
                bmc_setup: (self.config.auto_bmc_setup && written.spec.bmc.is_none()).then(|| {
                    agent::BmcSetup {
                        password: bmc_password(),
                    }
                }),
            },
        ))
    }

    /// Creates the Server; when another agent created it first, refreshes it instead.
    /// Creates the Server of a first registration: `Some(the created object)`, or `None` when
    /// another registration created it first and this one refreshed it instead.
    async fn create_server(
        &self,
        name: &str,
        registration: &Registration,
        from_mac: bool,
    ) -> Result<Option<Server>, Refusal> {
        let mut server = Server::new(
            name,
            ServerSpec {
                hardware: Some(registration.hardware.clone()),
                accepted: self.config.auto_accept,
                ..ServerSpec::default()
            },
        );
        server.labels_mut().insert(
            IDENTITY_LABEL.to_owned(),
            if from_mac { "boot-mac" } else { "smbios-uuid" }.to_owned(),
        );
        match self.servers.create(&PostParams::default(), &server).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = self
                    .servers
                    .get(name)
                    .await
                    .map_err(|e| Refusal::kube("read the Server", &e))?;
                self.refresh_server(&existing, registration).await?;
                Ok(None)
            }
            Err(error) => Err(Refusal::kube("create the Server", &error)),
        }
    }

    /// Replaces the inventory of a known Server, leaving `accepted`, `cordoned`, labels and
    /// everything else alone; refuses when the machine's NICs share no MAC with the Server's.
    async fn refresh_server(
        &self,
        server: &Server,
        registration: &Registration,
    ) -> Result<(), Refusal> {
        let name = server.name_any();
        let known = macs(server.spec.hardware.as_ref());
        let claimed = macs(Some(&registration.hardware));
        if !known.is_empty() && !claimed.is_empty() && known.is_disjoint(&claimed) {
            let message = format!(
                "a machine with MACs {} registered as this Server, which has MACs {}: two machines report the same SMBIOS UUID (cloned or unset firmware UUID?); the inventory was not changed. Fix the firmware UUID, or delete the Server if its NICs were really all replaced",
                join(&claimed),
                join(&known)
            );
            warn!(server = %name, claimed = %join(&claimed), known = %join(&known), "registration refused: identity conflict");
            let now = now();
            let conflict = message.clone();
            if let Ok(Some(written)) = update_status(&self.servers, &name, |_, status| {
                set_condition(
                    &mut status.conditions,
                    Condition::new(
                        IDENTITY_CONFLICT,
                        ConditionStatus::True,
                        "DuplicateSMBIOSUUID",
                        conflict.clone(),
                        now.clone(),
                    ),
                )
            })
            .await
            {
                self.event(
                    &written,
                    EventType::Warning,
                    "IdentityConflict",
                    "Register",
                    message.clone(),
                );
            }
            return Err(Refusal::new(StatusCode::CONFLICT, message));
        }
        if server.spec.hardware.as_ref() == Some(&registration.hardware) {
            return Ok(());
        }
        let patch = serde_json::json!([
            {"op": "add", "path": "/spec/hardware", "value": registration.hardware}
        ]);
        let patch: json_patch::Patch = serde_json::from_value(patch)
            .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.servers
            .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(|e| Refusal::kube("update the Server's inventory", &e))?;
        Ok(())
    }

    async fn directive(&self, name: &str, query: Option<&str>) -> Handled {
        validate_name(name)?;
        let mut wait = Duration::ZERO;
        let mut boot_id = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "wait" => {
                    let seconds: u64 = value.parse().map_err(|_| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            format!("wait={value:?} is not a number of seconds"),
                        )
                    })?;
                    wait = Duration::from_secs(seconds).min(MAX_WAIT);
                }
                "bootId" => boot_id = Some(value.into_owned()),
                _ => {}
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.index.subscribe();
        loop {
            // Read the API, not the cache: a directive right after `wiped` must see isClean.
            let server = self
                .servers
                .get_opt(name)
                .await
                .map_err(|e| Refusal::kube("read the Server", &e))?
                .ok_or_else(|| {
                    Refusal::new(
                        StatusCode::NOT_FOUND,
                        format!("no Server {name}: register first"),
                    )
                })?;
            let facts = self.facts(&server, boot_id.as_deref());
            let next = directive(&facts, self.config.wipe_mode);
            if next != Directive::Wait || tokio::time::Instant::now() >= deadline {
                if let Directive::Wipe { mode } = next {
                    self.announce_wipe(&server, mode).await;
                }
                return Ok(json(StatusCode::OK, &next));
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The watch ended (shutdown): answer with what we know.
                        return Ok(json(StatusCode::OK, &next));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn facts(&self, server: &Server, boot_id: Option<&str>) -> AgentFacts {
        let status = server.status.clone().unwrap_or_default();
        let mut sessions = self
            .sessions
            .lock()
            .expect("session map lock is never poisoned");
        let (wipe_failed, deploy_failed) = match sessions.get_mut(&server.name_any()) {
            Some(session) if boot_id.is_none_or(|b| b == session.boot_id) => {
                session.last_seen = Instant::now();
                (session.wipe_failed, session.deploy_failed)
            }
            _ => (false, false),
        };
        drop(sessions);
        AgentFacts {
            accepted: server.spec.accepted,
            clean: status.is_clean,
            allocated: status.in_use,
            wipe_failed_this_boot: wipe_failed,
            wipe_mode: server.spec.wipe_mode,
            installed: is_installed(server),
            image: status.in_use.then(|| self.image_step(server)).flatten(),
            deploy_failed_this_boot: deploy_failed,
        }
    }

    /// For an allocated server whose Environment is a disk image: what to deploy, if it can
    /// be deployed now. `None`: its Environment is netbooted (or none resolves).
    fn image_step(&self, server: &Server) -> Option<ImageStep> {
        let name = server.name_any();
        let allocation = self.index.allocation(&name)?;
        let environment = self.index.environment_name(server, &allocation.binding);
        let Some(ready) = self.environments.ready(&environment) else {
            // Not cached yet, or a netboot Environment that is not ready: the agent waits
            // rather than rebooting into an iPXE that would be told to retry.
            return Some(ImageStep::NotReady);
        };
        let image = ready.spec.image.as_ref()?;
        let (Some(token), Some(cached)) = (&allocation.token, ready.assets.get(&AssetKind::Image))
        else {
            warn!(server = %name, "the ServerBinding has no metadata token; the image cannot get a config drive");
            return Some(ImageStep::NotReady);
        };
        // The file's name in the cache is its SHA-512, verified when it was downloaded; the
        // agent checks the transfer against it.
        let sha512 = cached
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Some(ImageStep::Ready {
            image: ImageDeployment {
                url: format!("{}/environments/{environment}/image", self.base_url),
                checksum: ImageChecksum::Sha512(sha512),
                format: image.format,
                compression: image.compression,
                root_device_hints: image.root_device_hints.clone(),
            },
            config_drive: ConfigDriveSource {
                url: nocloud_url(&self.base_url, &name, token),
            },
        })
    }

    /// Once per boot: the Wiping condition and Event when the agent is first told to wipe.
    async fn announce_wipe(&self, server: &Server, mode: WipeMode) {
        let name = server.name_any();
        let first = self.with_session(&name, "", |session| {
            session.phase = "wiping".into();
            !std::mem::replace(&mut session.wipe_announced, true)
        });
        if !first {
            return;
        }
        let disks = server
            .spec
            .hardware
            .as_ref()
            .and_then(|h| h.storage.as_ref())
            .map(|s| {
                s.devices
                    .iter()
                    .filter(|d| crate::policy::agent::must_wipe(d))
                    .count()
            })
            .unwrap_or(0);
        let message = format!("wiping {disks} disk(s), mode {mode}");
        let now = now();
        let written = update_status(&self.servers, &name, |_, status| {
            set_condition(
                &mut status.conditions,
                Condition::new(
                    WIPING,
                    ConditionStatus::True,
                    "Started",
                    message.clone(),
                    now.clone(),
                ),
            )
        })
        .await;
        match written {
            Ok(Some(written)) => {
                self.event(&written, EventType::Normal, "Wiping", "Wipe", message);
            }
            Ok(None) => {}
            Err(error) => warn!(server = %name, %error, "could not record the wipe start"),
        }
    }

    async fn progress(&self, name: &str, progress: Progress) -> Handled {
        validate_boot_id(&progress.boot_id)?;
        if progress.disks.len() > agent::MAX_LOG_LINES {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too many disks in one progress report",
            ));
        }
        let due = self.with_session(name, &progress.boot_id, |session| {
            let due = session
                .last_progress_write
                .is_none_or(|at| at.elapsed() >= PROGRESS_WRITE_INTERVAL);
            if due {
                session.last_progress_write = Some(Instant::now());
            }
            due
        });
        if due {
            let message = progress_message(&progress.disks);
            let now = now();
            update_status(&self.servers, name, |_, status| {
                set_condition(
                    &mut status.conditions,
                    Condition::new(
                        WIPING,
                        ConditionStatus::True,
                        "InProgress",
                        message.clone(),
                        now.clone(),
                    ),
                )
            })
            .await
            .map_err(|e| Refusal::kube("record wipe progress", &e))?
            .ok_or_else(|| no_server(name))?;
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// The outcome of a `deploy` directive: a written image makes the server installed (it
    /// then boots from its disk); a failure is recorded and not retried during this boot.
    async fn deployed(&self, name: &str, report: DeployReport) -> Handled {
        validate_boot_id(&report.boot_id)?;
        let now = now();
        let (condition, failed) = match &report.result {
            DeployResult::Deployed {
                device,
                image_bytes,
                config_drive_partition,
            } => (
                Condition::new(
                    INSTALLED_CONDITION,
                    ConditionStatus::True,
                    "ImageWritten",
                    format!(
                        "{image_bytes} bytes of {} written to {device} and verified; config drive on partition {config_drive_partition}",
                        report.url
                    ),
                    now,
                ),
                false,
            ),
            DeployResult::Failed { error } => (
                Condition::new(
                    INSTALLED_CONDITION,
                    ConditionStatus::False,
                    "DeployFailed",
                    format!(
                        "deploying {} failed: {error}; the next boot retries",
                        report.url
                    ),
                    now,
                ),
                true,
            ),
        };
        self.with_session(name, &report.boot_id, |session| {
            session.deploy_failed = failed;
            session.phase = if failed { "deploy failed" } else { "deployed" }.into();
        });
        let message = condition.message.clone().unwrap_or_default();
        update_status(&self.servers, name, |_, status| {
            set_condition(&mut status.conditions, condition.clone())
        })
        .await
        .map_err(|e| Refusal::kube("record the deployment", &e))?
        .ok_or_else(|| no_server(name))?;
        if failed {
            warn!(server = %name, %message, "image deployment failed");
        } else {
            info!(server = %name, %message, "image deployed");
        }
        Ok(json(StatusCode::OK, &serde_json::json!({})))
    }

    async fn wiped(&self, name: &str, report: WipeReport) -> Handled {
        validate_boot_id(&report.boot_id)?;
        let server = self.existing_server(name).await?;
        let inventory = server
            .spec
            .hardware
            .as_ref()
            .and_then(|h| h.storage.as_ref())
            .map(|s| s.devices.clone())
            .unwrap_or_default();
        let verdict = judge_wipe(&inventory, &report.disks);
        let now = now();
        let (clean, message) = match &verdict {
            WipeVerdict::Clean { wiped } => (
                true,
                format!(
                    "wiped {} (mode {})",
                    if wiped.is_empty() {
                        "no disks".to_owned()
                    } else {
                        wiped.join(", ")
                    },
                    report.mode
                ),
            ),
            WipeVerdict::Dirty { problems } => (false, problems.join("; ")),
        };
        let written = update_status(&self.servers, name, |_, status| {
            let mut changed = status.is_clean != clean;
            status.is_clean = clean;
            let (wiping, clean_condition) = if clean {
                (
                    Condition::new(
                        WIPING,
                        ConditionStatus::False,
                        "Completed",
                        message.clone(),
                        now.clone(),
                    )
                    .with_severity(None),
                    Condition::new(
                        CLEAN,
                        ConditionStatus::True,
                        "Wiped",
                        message.clone(),
                        now.clone(),
                    ),
                )
            } else {
                (
                    Condition::new(
                        WIPING,
                        ConditionStatus::False,
                        "WipeFailed",
                        message.clone(),
                        now.clone(),
                    ),
                    Condition::new(
                        CLEAN,
                        ConditionStatus::False,
                        "WipeFailed",
                        message.clone(),
                        now.clone(),
                    ),
                )
            };
            changed |= set_condition(&mut status.conditions, wiping);
            changed |= set_condition(&mut status.conditions, clean_condition);
            changed
        })
        .await
        .map_err(|e| Refusal::kube("record the wipe", &e))?
        .ok_or_else(|| no_server(name))?;
        self.with_session(name, &report.boot_id, |session| {
            session.wipe_failed = !clean;
            session.phase = if clean { "clean" } else { "wipe failed" }.into();
        });
        if clean {
            info!(server = %name, %message, "server wiped and clean");
            self.event(&written, EventType::Normal, "Clean", "Wipe", message);
        } else {
            warn!(server = %name, %message, "wipe failed; the server stays dirty");
            self.event(&written, EventType::Warning, "WipeFailed", "Wipe", message);
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    async fn addresses(&self, name: &str, report: Addresses) -> Handled {
        validate_boot_id(&report.boot_id)?;
        if report.addresses.len() > 256 {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "more than 256 addresses",
            ));
        }
        let mut addresses = Vec::new();
        for text in &report.addresses {
            let ip: std::net::IpAddr = text.parse().map_err(|_| {
                Refusal::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "{text:?} is not an IP address (send addresses without a prefix length)"
                    ),
                )
            })?;
            addresses.push(internal_ip(ip));
        }
        update_status(&self.servers, name, |_, status| {
            if status.addresses == addresses {
                return false;
            }
            status.addresses = addresses.clone();
            true
        })
        .await
        .map_err(|e| Refusal::kube("record the addresses", &e))?
        .ok_or_else(|| no_server(name))?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// The outcome of an in-band BMC setup: for a configured user, the credentials go into a
    /// Secret owned by the Server and `spec.bmc` points at them, unless `spec.bmc` was set
    /// meanwhile (an operator's settings always win); other outcomes become Events.
    async fn bmc(&self, name: &str, report: BmcReport) -> Handled {
        validate_boot_id(&report.boot_id)?;
        if !self.config.auto_bmc_setup {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "automatic BMC setup is off (siderite serve --auto-bmc-setup=false); the report was not used",
            ));
        }
        let server = self.existing_server(name).await?;
        let (endpoint, port, user, password, user_id, channel) = match report.result {
            BmcSetupResult::NoBmc => {
                info!(server = %name, "no in-band BMC");
                self.event(
                    &server,
                    EventType::Normal,
                    "NoInBandBMC",
                    "SetUpBMC",
                    "the agent found no in-band IPMI interface (/dev/ipmi0); for power control set spec.bmc by hand".into(),
                );
                return Ok(empty(StatusCode::NO_CONTENT));
            }
            BmcSetupResult::Failed { error } => {
                warn!(server = %name, %error, "in-band BMC setup failed");
                self.event(
                    &server,
                    EventType::Warning,
                    "BMCSetupFailed",
                    "SetUpBMC",
                    format!("the agent could not set up a BMC user: {error}; set spec.bmc by hand, or fix the BMC and boot the server into discovery again"),
                );
                return Ok(empty(StatusCode::NO_CONTENT));
            }
            BmcSetupResult::Configured {
                endpoint,
                port,
                user,
                password,
                user_id,
                channel,
            } => (endpoint, port, user, password, user_id, channel),
        };
        let invalid =
            |message: String| Err(Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, message));
        if endpoint.parse::<std::net::IpAddr>().is_err() {
            return invalid(format!("endpoint {endpoint:?} is not an IP address"));
        }
        if port == 0 {
            return invalid("port 0 is not a BMC port".into());
        }
        if user.is_empty() || user.len() > 16 || password.is_empty() || password.len() > 20 {
            return invalid("IPMI user names have 1 to 16 bytes and passwords 1 to 20".into());
        }
        if server.spec.bmc.is_some() {
            self.event(
                &server,
                EventType::Normal,
                "BMCSetupIgnored",
                "SetUpBMC",
                format!("spec.bmc is already set; the BMC user {user:?} the agent created (ID {user_id}) is not used"),
            );
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        let secret_name = format!("{name}-bmc");
        self.write_bmc_secret(&server, &secret_name, &user, &password)
            .await?;
        let bmc = Bmc {
            endpoint: endpoint.clone(),
            port: Some(u32::from(port)),
            user: None,
            user_from: Some(secret_reference(&secret_name, BMC_SECRET_USER_KEY)),
            pass: None,
            pass_from: Some(secret_reference(&secret_name, BMC_SECRET_PASS_KEY)),
            interface: Some("lanplus".into()),
            ..Bmc::default()
        };
        let Some(written) = self.set_bmc_if_empty(name, bmc).await? else {
            self.event(
                &server,
                EventType::Normal,
                "BMCSetupIgnored",
                "SetUpBMC",
                format!("spec.bmc was set while the agent created BMC user {user:?} (ID {user_id}); it is not used"),
            );
            return Ok(empty(StatusCode::NO_CONTENT));
        };
        info!(server = %name, %endpoint, port, user_id, channel, "BMC user set up by the agent");
        self.event(
            &written,
            EventType::Normal,
            "BMCConfigured",
            "SetUpBMC",
            format!("the agent created BMC user {user:?} (ID {user_id}, administrator on LAN channel {channel}) on {endpoint}:{port}; credentials in Secret {BMC_SECRET_NAMESPACE}/{secret_name}"),
        );
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// The Server `name`, or 404 when there is none.
    async fn existing_server(&self, name: &str) -> Result<Server, Refusal> {
        self.servers
            .get_opt(name)
            .await
            .map_err(|e| Refusal::kube("read the Server", &e))?
            .ok_or_else(|| no_server(name))
    }

    /// Creates or replaces the Secret with the agent's BMC credentials, owned by the Server so
    /// that deleting the Server deletes it.
    async fn write_bmc_secret(
        &self,
        server: &Server,
        secret_name: &str,
        user: &str,
        password: &str,
    ) -> Result<(), Refusal> {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
        let owner = OwnerReference {
            api_version: "metal.sidero.dev/v1alpha2".into(),
            kind: "Server".into(),
            name: server.name_any(),
            uid: server.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.to_owned()),
                namespace: Some(BMC_SECRET_NAMESPACE.into()),
                labels: Some(
                    [
                        (CLUSTERCTL_MOVE_LABEL.to_owned(), String::new()),
                        (BMC_SECRET_SERVER_LABEL.to_owned(), server.name_any()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            data: Some(
                [
                    (
                        BMC_SECRET_USER_KEY.to_owned(),
                        ByteString(user.as_bytes().to_vec()),
                    ),
                    (
                        BMC_SECRET_PASS_KEY.to_owned(),
                        ByteString(password.as_bytes().to_vec()),
                    ),
                ]
                .into(),
            ),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // A Secret from an earlier setup: the password was just changed on the BMC.
                let mut existing = self
                    .secrets
                    .get(secret_name)
                    .await
                    .map_err(|e| Refusal::kube("read the BMC Secret", &e))?;
                existing.data = secret.data;
                existing.metadata.owner_references = secret.metadata.owner_references;
                existing.metadata.labels = secret.metadata.labels;
                self.secrets
                    .replace(secret_name, &PostParams::default(), &existing)
                    .await
                    .map_err(|e| Refusal::kube("update the BMC Secret", &e))?;
                Ok(())
            }
            Err(error) => Err(Refusal::kube("create the BMC Secret", &error)),
        }
    }

    /// Sets `spec.bmc` only while it is empty: read, check, replace with the read version,
    /// and read again on a conflict. `None` when it was set meanwhile.
    async fn set_bmc_if_empty(&self, name: &str, bmc: Bmc) -> Result<Option<Server>, Refusal> {
        for _ in 0..5 {
            let mut server = self.existing_server(name).await?;
            if server.spec.bmc.is_some() {
                return Ok(None);
            }
            server.spec.bmc = Some(bmc.clone());
            match self
                .servers
                .replace(name, &PostParams::default(), &server)
                .await
            {
                Ok(written) => return Ok(Some(written)),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(Refusal::kube("set spec.bmc", &error)),
            }
        }
        Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Server {name} kept changing while spec.bmc was set; retry"),
        ))
    }

    fn heartbeat(&self, name: &str, beat: Heartbeat) -> Handled {
        validate_boot_id(&beat.boot_id)?;
        if beat.phase.len() > 64 {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "phase is longer than 64 bytes",
            ));
        }
        self.with_session(name, &beat.boot_id, |session| session.phase = beat.phase);
        Ok(empty(StatusCode::NO_CONTENT))
    }

    fn log(&self, name: &str, lines: LogLines) -> Handled {
        validate_boot_id(&lines.boot_id)?;
        if lines.lines.len() > agent::MAX_LOG_LINES {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} log lines in one request; send at most {}",
                    lines.lines.len(),
                    agent::MAX_LOG_LINES
                ),
            ));
        }
        for line in &lines.lines {
            let line = truncate(line, agent::MAX_LOG_LINE_BYTES);
            info!(target: "siderite::agent_console", server = %name, "{}", line.escape_debug());
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// Publishes an Event about `server` in the background: the agent's answer does not wait
    /// for it, which halves registration latency when thousands of machines register at once.
    fn event(&self, server: &Server, type_: EventType, reason: &str, action: &str, note: String) {
        publish_event(&self.recorder, server, type_, reason, action, &note);
    }
}

/// Reads a JSON body of at most [`agent::MAX_BODY_BYTES`] into `T`, refusing other content types.
async fn read_json<T: DeserializeOwned, B>(
    parts: &http::request::Parts,
    body: B,
) -> Result<T, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {content_type:?} is not accepted; send application/json"),
        ));
    }
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", agent::MAX_BODY_BYTES),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > agent::MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = Limited::new(body, agent::MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {error}"),
                )
            }
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|error| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("malformed request body: {error}"),
        )
    })
}

/// Checks what serde cannot: lengths, identifiers and sizes that would make a bad Server.
fn validate_registration(registration: &Registration) -> Result<(), Refusal> {
    validate_boot_id(&registration.boot_id)?;
    let invalid = |message: String| Err(Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, message));
    if registration.agent_version.is_empty() || registration.agent_version.len() > 64 {
        return invalid("agentVersion must be 1 to 64 bytes".into());
    }
    if let Some(mac) = &registration.boot_mac
        && parse_mac(mac).is_none()
    {
        return invalid(format!(
            "bootMac {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
        ));
    }
    let hw = &registration.hardware;
    let storage = hw.storage.as_ref().map_or(0, |s| s.devices.len());
    let nics = hw.network.as_ref().map_or(0, |n| n.interfaces.len());
    let pci = hw.pci.as_ref().map_or(0, |p| p.devices.len());
    let memory = hw.memory.as_ref().map_or(0, |m| m.modules.len());
    let cpus = hw.compute.as_ref().map_or(0, |c| c.processors.len());
    for (what, count, limit) in [
        ("storage devices", storage, 1024),
        ("network interfaces", nics, 1024),
        ("PCI devices", pci, 4096),
        ("memory modules", memory, 1024),
        ("processors", cpus, 256),
    ] {
        if count > limit {
            return invalid(format!(
                "{count} {what} is more than the {limit} a registration may carry"
            ));
        }
    }
    for interface in hw.network.iter().flat_map(|n| &n.interfaces) {
        if let Some(mac) = &interface.mac
            && parse_mac(mac).is_none()
        {
            return invalid(format!("interface MAC {mac:?} is not a MAC address"));
        }
    }
    Ok(())
}

fn validate_boot_id(boot_id: &str) -> Result<(), Refusal> {
    let ok = !boot_id.is_empty()
        && boot_id.len() <= 64
        && boot_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "bootId {boot_id:?} must be 1 to 64 letters, digits or dashes (/proc/sys/kernel/random/boot_id)"
            ),
        ))
    }
}

fn validate_name(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a Server name; use the name the registration returned"),
        ))
    }
}

/// Characters of the BMC passwords the appliance chooses: accepted by the password rules of
/// the BMCs seen so far, and unambiguous when typed (no 0/O, 1/l/I).
const BMC_PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
/// 16 characters (93 bits): some BMCs keep only 16 bytes even of a 20-byte password
/// (ipmi_sim does, lanserv/bmc_app.c), so a longer one would not log in.
const BMC_PASSWORD_LEN: usize = 16;

/// A new password for an agent's BMC user, from the operating system's random source.
fn bmc_password() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..BMC_PASSWORD_LEN)
        .map(|_| BMC_PASSWORD_ALPHABET[rng.random_range(0..BMC_PASSWORD_ALPHABET.len())] as char)
        .collect()
}

/// A `userFrom`/`passFrom` reference to one key of a BMC Secret.
fn secret_reference(secret: &str, key: &str) -> CredentialSource {
    CredentialSource {
        secret_key_ref: Some(SecretKeyRef {
            namespace: BMC_SECRET_NAMESPACE.into(),
            name: secret.to_owned(),
            key: key.to_owned(),
        }),
    }
}

fn no_server(name: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!("no Server {name}: register first"),
    )
}

fn macs(hardware: Option<&HardwareInformation>) -> std::collections::BTreeSet<String> {
    hardware
        .and_then(|h| h.network.as_ref())
        .into_iter()
        .flat_map(|n| &n.interfaces)
        .filter_map(|i| i.mac.as_deref().and_then(parse_mac))
        .map(|mac| crate::policy::identity::format_mac(&mac))
        .collect()
}

fn join(set: &std::collections::BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// `status.addresses` from the interfaces' CIDR addresses, IPv4 first.
fn registered_addresses(hardware: &HardwareInformation) -> Vec<NodeAddress> {
    let mut ips: Vec<std::net::IpAddr> = hardware
        .network
        .iter()
        .flat_map(|n| &n.interfaces)
        .flat_map(|i| &i.addresses)
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .filter(|ip: &std::net::IpAddr| !ip.is_loopback())
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips.into_iter().map(internal_ip).collect()
}

fn internal_ip(ip: std::net::IpAddr) -> NodeAddress {
    NodeAddress {
        type_: "InternalIP".into(),
        address: ip.to_string(),
    }
}

/// `2 CPUs / 8 cores, 16 GiB, 2 disks, 2 NICs` for conditions and Events.
fn inventory_summary(hardware: &HardwareInformation) -> String {
    let cores = hardware
        .compute
        .as_ref()
        .and_then(|c| c.total_core_count)
        .unwrap_or(0);
    let sockets = hardware
        .compute
        .as_ref()
        .and_then(|c| c.processor_count)
        .unwrap_or(0);
    let memory = hardware
        .memory
        .as_ref()
        .and_then(|m| m.total_size_bytes)
        .map(|b| {
            // Small VMs and test rigs have less than a GiB; "0 GiB" would read as none.
            if b < 1 << 30 {
                format!("{} MiB", b >> 20)
            } else {
                format!("{:.0} GiB", b as f64 / f64::from(1u32 << 30))
            }
        })
        .unwrap_or_else(|| "unknown memory".into());
    let disks = hardware.storage.as_ref().map_or(0, |s| s.devices.len());
    let nics = hardware.network.as_ref().map_or(0, |n| n.interfaces.len());
    let maker = hardware
        .system
        .as_ref()
        .and_then(|s| s.manufacturer.clone())
        .unwrap_or_else(|| "unknown maker".into());
    format!("{maker}, {sockets} CPU(s) / {cores} cores, {memory}, {disks} disk(s), {nics} NIC(s)")
}

/// The Registered condition's message; for a server not yet accepted it says how to accept it.
fn registered_message(name: &str, agent_version: &str, summary: &str, accepted: bool) -> String {
    if accepted {
        format!("agent {agent_version}: {summary}")
    } else {
        format!(
            "agent {agent_version}: {summary}; accept it with: kubectl patch server {name} --type merge -p '{{\"spec\":{{\"accepted\":true}}}}'"
        )
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Serializing these plain structs cannot fail; an empty object is the safe fallback.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemoryInformation, SystemInformation};

    fn with_memory(bytes: u64) -> HardwareInformation {
        HardwareInformation {
            system: Some(SystemInformation {
                manufacturer: Some("Dell Inc.".into()),
                ..Default::default()
            }),
            memory: Some(MemoryInformation {
                total_size_bytes: Some(bytes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn summary_says_mib_below_a_gib_and_gib_above() {
        assert_eq!(
            inventory_summary(&with_memory(512 << 20)),
            "Dell Inc., 0 CPU(s) / 0 cores, 512 MiB, 0 disk(s), 0 NIC(s)"
        );
        assert!(inventory_summary(&with_memory(256 << 30)).contains(", 256 GiB,"));
        assert!(inventory_summary(&HardwareInformation::default()).contains("unknown memory"));
    }
}
