//! Redfish power manager: one ComputerSystem behind a BMC's Redfish service, reached over
//! HTTPS with reqwest (rustls). It finds the system (the one the endpoint names, else the only
//! member of the Systems collection), reads `PowerState`, powers through
//! `ComputerSystem.Reset` with a ResetType the system allows, and sets a one-time PXE boot
//! through the `Boot` override. Authentication is a Redfish session (`X-Auth-Token`, renewed
//! when the BMC forgets it, deleted when the manager goes) or HTTP basic auth.

mod wire;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod sushy_tests;

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::{
    BootMode, CallPolicy, Cause, Credentials, Operation, PowerAction, PowerError, PowerManager,
    PowerState,
};
pub use crate::api::RedfishAuth;
use wire::{Endpoint, ResetPlan, System};

/// Which certificates the client accepts from the BMC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The usual public roots (webpki): right for BMCs with certificates from a public CA.
    #[default]
    PublicRoots,
    /// Only these PEM CA certificates: the BMC's private CA or its self-signed certificate.
    Ca(String),
    /// Any certificate at all: encrypts, but anyone on the path can pose as the BMC.
    InsecureSkipVerify,
}

/// Everything a Redfish manager needs, with the credentials already resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// `spec.bmc.endpoint`: host, `host:port` or URL (its path may name the system).
    pub endpoint: String,
    /// `spec.bmc.port`, when set.
    pub port: Option<u16>,
    pub credentials: Credentials,
    /// `None`: a session when the BMC offers a SessionService, else basic auth.
    pub auth: Option<RedfishAuth>,
    pub trust: Trust,
    pub policy: CallPolicy,
    /// How long a cycle done as ForceOff + On waits for the system to report Off.
    pub settle: Duration,
}

impl Config {
    /// A config with the default policy, public-root trust and automatic auth.
    pub fn new(endpoint: impl Into<String>, credentials: Credentials) -> Config {
        Config {
            endpoint: endpoint.into(),
            port: None,
            credentials,
            auth: None,
            trust: Trust::default(),
            policy: CallPolicy::default(),
            settle: Duration::from_secs(30),
        }
    }
}

/// A Redfish BMC's power control for one ComputerSystem.
pub struct Redfish {
    name: String,
    endpoint: Endpoint,
    http: reqwest::Client,
    credentials: Credentials,
    auth: Option<RedfishAuth>,
    policy: CallPolicy,
    settle: Duration,
    /// How often a ForceOff + On cycle re-reads the power state while waiting for Off.
    poll: Duration,
    state: tokio::sync::Mutex<State>,
}

/// What the manager learnt from the BMC and keeps between calls.
#[derive(Default)]
struct State {
    found: Option<Found>,
    session: Option<Session>,
}

/// Where the system is and how to authenticate, found once per manager.
#[derive(Clone)]
struct Found {
    auth: RedfishAuth,
    sessions: String,
    system: String,
}

#[derive(Clone)]
struct Session {
    token: String,
    /// The session resource, deleted on close; BMCs allow only a few sessions at once.
    location: Option<Url>,
}

impl Redfish {
    /// Builds the manager; fails only on configuration that can never work (bad endpoint,
    /// unreadable CA). Nothing is sent until the first call.
    pub fn new(config: Config) -> Result<Redfish, Cause> {
        let endpoint = wire::parse_endpoint(&config.endpoint, config.port)?;
        // Redirects only within the BMC: X-Auth-Token is no header reqwest knows to strip
        // when a redirect leaves the origin.
        let same_origin = reqwest::redirect::Policy::custom(|attempt| {
            let origin = attempt.previous().first().map(Url::origin);
            if attempt.previous().len() < 5 && origin == Some(attempt.url().origin()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("siderite/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.policy.timeout)
            .redirect(same_origin);
        match &config.trust {
            Trust::PublicRoots => {}
            Trust::Ca(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .ok()
                    .filter(|certs| !certs.is_empty())
                    .ok_or_else(|| {
                        Cause::Config(
                            "spec.bmc.tls.caCert holds no PEM certificate; paste the CA's -----BEGIN CERTIFICATE----- block"
                                .into(),
                        )
                    })?;
                builder = builder.tls_built_in_root_certs(false);
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Trust::InsecureSkipVerify => builder = builder.danger_accept_invalid_certs(true),
        }
        let http = builder
            .build()
            .map_err(|e| Cause::Config(format!("cannot set up the HTTPS client: {e}")))?;
        Ok(Redfish {
            name: endpoint.describe(),
            endpoint,
            http,
            credentials: config.credentials,
            auth: config.auth,
            policy: config.policy,
            settle: config.settle,
            poll: Duration::from_millis(250),
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    /// Logs out of the BMC (deletes the session, if one is open). Dropping the manager does
    /// the same in the background when a Tokio runtime is there to run it.
    pub async fn close(&self) {
        let session = self.state.lock().await.session.take();
        if let Some(session) = session {
            delete_session(self.http.clone(), session).await;
        }
    }

    fn error(&self, operation: Operation, cause: Cause) -> PowerError {
        PowerError {
            bmc: self.name.clone(),
            operation,
            cause,
        }
    }

    fn url(&self, path: &str) -> Result<Url, Cause> {
        self.endpoint.base.join(path).map_err(|e| {
            Cause::Protocol(format!(
                "the BMC named a path {path:?} that is not a URL: {e}"
            ))
        })
    }

    /// One request without authentication or with the given one; transport failures become
    /// causes, answers (whatever their status) are returned.
    async fn send(
        &self,
        method: Method,
        url: Url,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<Answer, Cause> {
        let mut request = self
            .http
            .request(method, url)
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        request = match auth {
            Auth::None => request,
            Auth::Basic => {
                request.basic_auth(&self.credentials.user, Some(&self.credentials.password))
            }
            Auth::Token(token) => request.header("X-Auth-Token", token),
        };
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        Ok(Answer {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    fn transport(&self, error: reqwest::Error) -> Cause {
        let chain = super::error_chain(&error);
        if error.is_timeout() {
            Cause::Timeout(self.policy.timeout)
        } else if chain.contains("NotValidForName") {
            Cause::Config(format!(
                "TLS: the BMC's certificate does not name {} ({chain}); use a name or address it carries in spec.bmc.endpoint, or set spec.bmc.tls.insecureSkipVerify: true",
                self.endpoint.base.host_str().unwrap_or_default()
            ))
        } else if chain.contains("certificate") {
            // Retrying cannot fix trust; the operator has to say which certificate is right.
            Cause::Config(format!(
                "TLS: the BMC's certificate is not trusted ({chain}); give its CA in spec.bmc.tls.caCert, or set spec.bmc.tls.insecureSkipVerify: true"
            ))
        } else if error.is_decode() || error.is_body() {
            Cause::Protocol(chain)
        } else if error.is_connect() {
            Cause::Unreachable(chain)
        } else {
            // Connected and sent: the BMC may have acted on it.
            Cause::NoAnswer(chain)
        }
    }

    /// The service root, the auth mode and the system; asked once, then remembered.
    async fn found(&self) -> Result<Found, Cause> {
        if let Some(found) = self.state.lock().await.found.clone() {
            return Ok(found);
        }
        let root_url = self.url(wire::SERVICE_ROOT)?;
        // The service root answers without credentials (DSP0266), so it can tell whether
        // sessions are offered before any are sent.
        let root = self.send(Method::GET, root_url, Auth::None, None).await?;
        let root = root.json("GET /redfish/v1/")?;
        let root = wire::parse_service_root(&root);
        let auth = self.auth.unwrap_or(if root.sessions.is_some() {
            RedfishAuth::Session
        } else {
            RedfishAuth::Basic
        });
        let sessions = root
            .sessions
            .clone()
            .unwrap_or_else(|| wire::SESSIONS.to_owned());
        let mut found = Found {
            auth,
            sessions,
            system: String::new(),
        };
        found.system = match &self.endpoint.system {
            Some(system) => system.clone(),
            None => {
                let collection = self
                    .authorized(&found, Method::GET, &root.systems, None)
                    .await?
                    .json(&format!("GET {}", root.systems))?;
                match wire::members(&collection).as_slice() {
                    [only] => only.clone(),
                    [] => {
                        return Err(Cause::Protocol(format!(
                            "{} lists no ComputerSystem",
                            root.systems
                        )));
                    }
                    several => {
                        return Err(Cause::Config(format!(
                            "the BMC has {} systems ({}); name one in spec.bmc.endpoint, e.g. {}{}",
                            several.len(),
                            several.join(", "),
                            self.endpoint.base.as_str().trim_end_matches('/'),
                            several[0]
                        )));
                    }
                }
            }
        };
        self.state.lock().await.found = Some(found.clone());
        Ok(found)
    }

    /// A request with credentials. With sessions, logs in first if needed, and once more if
    /// the BMC no longer knows the token (sessions time out on the BMC's side).
    async fn authorized(
        &self,
        found: &Found,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Cause> {
        let url = self.url(path)?;
        if found.auth == RedfishAuth::Basic {
            return self.send(method, url, Auth::Basic, body).await;
        }
        let mut renewed = false;
        loop {
            let token = self.session(found).await?;
            let answer = self
                .send(method.clone(), url.clone(), Auth::Token(&token), body)
                .await?;
            if answer.status != StatusCode::UNAUTHORIZED || renewed {
                return Ok(answer);
            }
            tracing::debug!(bmc = %self.name, "Redfish session no longer valid, logging in again");
            let mut state = self.state.lock().await;
            if state.session.as_ref().is_some_and(|s| s.token == token) {
                state.session = None;
            }
            renewed = true;
        }
    }

    /// The current session token, logging in when there is none. The lock is held across the
    /// login so that concurrent calls open one session, not several.
    async fn session(&self, found: &Found) -> Result<String, Cause> {
        let mut state = self.state.lock().await;
        if let Some(session) = &state.session {
            return Ok(session.token.clone());
        }
        let url = self.url(&found.sessions)?;
        let login = serde_json::json!({
            "UserName": self.credentials.user,
            "Password": self.credentials.password,
        });
        let answer = self
            .send(Method::POST, url.clone(), Auth::None, Some(&login))
            .await?;
        let what = format!(
            "POST {} (log in as {:?})",
            found.sessions, self.credentials.user
        );
        answer.ok(&what)?;
        let token = answer
            .headers
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Cause::Protocol(format!("{what}: no X-Auth-Token in the answer")))?
            .to_owned();
        let location = answer
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|b| b["@odata.id"].as_str().map(str::to_owned))
            })
            .and_then(|l| url.join(&l).ok());
        tracing::debug!(bmc = %self.name, "Redfish session opened");
        state.session = Some(Session {
            token: token.clone(),
            location,
        });
        Ok(token)
    }

    /// The system as it is now.
    async fn system(&self) -> Result<(Found, System), Cause> {
        let found = self.found().await?;
        let doc = self
            .authorized(&found, Method::GET, &found.system, None)
            .await?
            .json(&format!("GET {}", found.system))?;
        let system = wire::parse_system(&found.system, &doc)?;
        Ok((found, system))
    }

    async fn post_reset(&self, found: &Found, target: &str, reset_type: &str) -> Result<(), Cause> {
        let body = serde_json::json!({ "ResetType": reset_type });
        self.authorized(found, Method::POST, target, Some(&body))
            .await?
            .ok(&format!("POST {target} ResetType {reset_type}"))
    }

    async fn do_power(&self, action: PowerAction) -> Result<(), PowerError> {
        let operation = Operation::Power(action);
        let (found, system) = self
            .policy
            .run(&self.name, operation, || self.system())
            .await?;
        // On and off are states: asking for the state the system is in changes nothing (and
        // some BMCs answer 409 to it).
        match (action, system.power) {
            (PowerAction::On, PowerState::On)
            | (PowerAction::Off | PowerAction::Soft, PowerState::Off) => return Ok(()),
            _ => {}
        }
        let plan = wire::reset_plan(action, system.reset_types.as_deref())
            .map_err(|cause| self.error(operation, cause))?;
        let on = match wire::reset_plan(PowerAction::On, system.reset_types.as_deref()) {
            Ok(ResetPlan::Reset(on)) => on,
            _ => "On",
        };
        let (found, target) = (&found, system.reset_target.as_str());
        let run = |reset_type: &'static str| async move {
            let attempt = move || self.post_reset(found, target, reset_type);
            // On and off are states; a restart whose answer was lost may have happened, and
            // sending it again could restart the machine twice.
            if matches!(
                reset_type,
                "On" | "ForceOn" | "ForceOff" | "GracefulShutdown"
            ) {
                self.policy.run(&self.name, operation, attempt).await
            } else {
                self.policy
                    .run_unrepeatable(&self.name, operation, attempt)
                    .await
            }
        };
        match plan {
            // A cycle of a machine that is off is a power-on, whichever way it is done.
            ResetPlan::Reset("PowerCycle") | ResetPlan::OffThenOn
                if system.power == PowerState::Off =>
            {
                run(on).await
            }
            ResetPlan::Reset(reset_type) => run(reset_type).await,
            ResetPlan::OffThenOn => {
                run("ForceOff").await?;
                self.wait_for_off(operation).await?;
                run(on).await
            }
        }
    }

    /// Waits until the system reports Off after a ForceOff (BMCs apply resets
    /// asynchronously; an On sent too early is ignored or refused).
    async fn wait_for_off(&self, operation: Operation) -> Result<(), PowerError> {
        let deadline = Instant::now() + self.settle;
        loop {
            let (_, system) = self
                .policy
                .run(&self.name, operation, || self.system())
                .await?;
            if system.power == PowerState::Off {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.error(
                    operation,
                    Cause::Refused(format!(
                        "the system still reports power on {:?} after ForceOff",
                        self.settle
                    )),
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn do_pxe_once(&self, mode: BootMode) -> Result<(), PowerError> {
        self.policy
            .run(&self.name, Operation::PxeOnce(mode), || async move {
                let (found, system) = self.system().await?;
                let body = wire::pxe_once_body(&system, mode)?;
                self.authorized(&found, Method::PATCH, &found.system, Some(&body))
                    .await?
                    .ok(&format!("PATCH {} Boot", found.system))
            })
            .await
    }
}

impl PowerManager for Redfish {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, PowerError>> {
        let read = || async { Ok(self.system().await?.1.power) };
        self.policy
            .run(&self.name, Operation::PowerState, read)
            .boxed()
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>> {
        self.do_power(action).boxed()
    }

    fn pxe_once(&self, mode: BootMode) -> BoxFuture<'_, Result<(), PowerError>> {
        self.do_pxe_once(mode).boxed()
    }
}

impl Drop for Redfish {
    fn drop(&mut self) {
        // Sessions use up a BMC's few session slots until they time out; give this one back.
        if let Some(session) = self.state.get_mut().session.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(delete_session(self.http.clone(), session));
        }
    }
}

async fn delete_session(http: reqwest::Client, session: Session) {
    let Some(location) = session.location else {
        return;
    };
    let result = http
        .delete(location)
        .header("X-Auth-Token", &session.token)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    if let Err(error) = result {
        tracing::debug!(%error, "could not delete the Redfish session");
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic,
    Token(&'a str),
}

/// A BMC's answer, read in full.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    /// Success, or the cause the status and body give.
    fn ok(&self, what: &str) -> Result<(), Cause> {
        if self.status.is_success() {
            Ok(())
        } else {
            Err(wire::status_cause(what, self.status, &self.body))
        }
    }

    fn json(&self, what: &str) -> Result<Value, Cause> {
        self.ok(what)?;
        serde_json::from_slice(&self.body)
            .map_err(|e| Cause::Protocol(format!("{what}: the answer is not JSON: {e}")))
    }
}
