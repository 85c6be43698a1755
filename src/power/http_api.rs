//! `spec.managementApi` power manager: the plain HTTP power API of test rigs and VM labs, as
//! Sidero's client speaks it (and Talos's QEMU launcher serves it): `POST /poweron`,
//! `/poweroff`, `/reboot`, `/pxeboot`, each answering 200 on success, and `GET /status`
//! answering `{"PoweredOn": bool}`. The endpoint is Sidero's `host:port` (plain HTTP) or, as
//! a Siderite addition, a base URL.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::{
    BootMode, CallPolicy, Cause, Operation, PowerAction, PowerError, PowerManager, PowerState,
};

/// The answer of `GET /status`.
#[derive(Debug, Deserialize)]
struct Status {
    // Go's encoding/json, which wrote Sidero's client and Talos's server, matches field names
    // without regard to case.
    #[serde(rename = "PoweredOn", alias = "poweredOn", alias = "poweredon")]
    powered_on: bool,
}

/// A test rig's power API.
pub struct HttpApi {
    name: String,
    base: Url,
    http: reqwest::Client,
    policy: CallPolicy,
}

impl HttpApi {
    pub fn new(endpoint: &str, policy: CallPolicy) -> Result<HttpApi, Cause> {
        let endpoint = endpoint.trim();
        let text = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let mut base = Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Cause::Config(format!(
                    "spec.managementApi.endpoint {endpoint:?} is neither host:port nor an http:// URL; write e.g. 10.5.0.1:8001"
                ))
            })?;
        // The actions are relative to the base, so a base path must end in '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("siderite/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.timeout)
            .build()
            .map_err(|e| Cause::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HttpApi {
            name: format!("managementApi {}", base.as_str().trim_end_matches('/')),
            base,
            http,
            policy,
        })
    }

    async fn call(&self, method: Method, action: &str) -> Result<Vec<u8>, Cause> {
        let url = self
            .base
            .join(action)
            .map_err(|e| Cause::Config(format!("cannot form the URL of {action}: {e}")))?;
        let response = self
            .http
            .request(method.clone(), url)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    Cause::Timeout(self.policy.timeout)
                } else if e.is_connect() {
                    Cause::Unreachable(super::error_chain(&e))
                } else {
                    // Connected and sent: the rig may have acted on it.
                    Cause::NoAnswer(super::error_chain(&e))
                }
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Cause::NoAnswer(super::error_chain(&e)))?;
        if status == StatusCode::OK {
            return Ok(body.to_vec());
        }
        let said = String::from_utf8_lossy(&body);
        let said: String = said.trim().chars().take(200).collect();
        let text = format!(
            "{method} /{action}: HTTP {status}{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        );
        Err(match status.as_u16() {
            // The rig's own failure (Talos answers 500 with the error): may pass.
            500..=599 if status != StatusCode::NOT_IMPLEMENTED => Cause::Refused(text),
            401 | 403 => Cause::Authentication(text),
            404 | 405 | 501 => Cause::Unsupported(text),
            _ => Cause::Protocol(text),
        })
    }

    async fn status(&self) -> Result<PowerState, Cause> {
        let body = self.call(Method::GET, "status").await?;
        let status: Status = serde_json::from_slice(&body).map_err(|e| {
            Cause::Protocol(format!(
                "GET /status: expected {{\"PoweredOn\": true|false}}: {e}"
            ))
        })?;
        Ok(if status.powered_on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn post(&self, operation: Operation, action: &str) -> Result<(), PowerError> {
        let attempt = || async { self.call(Method::POST, action).await.map(drop) };
        // A reboot whose answer was lost may have happened: sending it again could restart
        // the machine twice. Power on, off and pxeboot are states; repeating them is harmless.
        if action == "reboot" {
            self.policy
                .run_unrepeatable(&self.name, operation, attempt)
                .await
        } else {
            self.policy.run(&self.name, operation, attempt).await
        }
    }
}

impl PowerManager for HttpApi {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, PowerError>> {
        self.policy
            .run(&self.name, Operation::PowerState, || self.status())
            .boxed()
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>> {
        async move {
            let operation = Operation::Power(action);
            let path = match action {
                PowerAction::On => "poweron",
                PowerAction::Off => "poweroff",
                // The API has one restart, which Sidero used for its power cycle.
                PowerAction::Cycle | PowerAction::Reset => "reboot",
                PowerAction::Soft => {
                    return Err(PowerError {
                        bmc: self.name.clone(),
                        operation,
                        cause: Cause::Unsupported(
                            "the management API has no soft power-off; use a hard off".into(),
                        ),
                    });
                }
            };
            self.post(operation, path).await
        }
        .boxed()
    }

    fn pxe_once(&self, mode: BootMode) -> BoxFuture<'_, Result<(), PowerError>> {
        // The API cannot name a firmware mode (nor could Sidero's client): the rig boots the
        // way its VM is built.
        async move { self.post(Operation::PxeOnce(mode), "pxeboot").await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A loopback stand-in for a rig that records `METHOD /path` and answers from `reply`.
    fn rig(
        reply: impl Fn(&str) -> (u16, &'static str) + Send + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                reader.read_exact(&mut vec![0; length]).unwrap();
                let request: Vec<&str> = line.split_whitespace().take(2).collect();
                let request = request.join(" ");
                let (status, body) = reply(&request);
                log.lock().unwrap().push(request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (endpoint, seen)
    }

    fn quick() -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_secs(2),
            attempts: 2,
            backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn actions_post_to_sideros_paths_and_status_reads_powered_on() {
        let (endpoint, seen) = rig(|request| match request {
            "GET /status" => (200, r#"{"PoweredOn":true}"#),
            _ => (200, ""),
        });
        let api = HttpApi::new(&endpoint, quick()).unwrap();
        assert_eq!(api.describe(), format!("managementApi http://{endpoint}"));
        assert_eq!(api.power_state().await.unwrap(), PowerState::On);
        api.pxe_once(BootMode::Uefi).await.unwrap();
        api.power(PowerAction::On).await.unwrap();
        api.power(PowerAction::Off).await.unwrap();
        api.power(PowerAction::Cycle).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "GET /status",
                "POST /pxeboot",
                "POST /poweron",
                "POST /poweroff",
                "POST /reboot"
            ]
        );
        let err = api.power(PowerAction::Soft).await.unwrap_err();
        assert!(matches!(err.cause, Cause::Unsupported(_)), "{err}");
    }

    #[tokio::test]
    async fn a_url_endpoint_keeps_its_path_and_rig_errors_carry_status_and_text() {
        let (endpoint, seen) = rig(|request| match request {
            "POST /power/vm-1/poweron" => (500, "qemu: cannot open tap1"),
            "GET /power/vm-1/status" => (200, "not json"),
            _ => (404, ""),
        });
        let api = HttpApi::new(&format!("http://{endpoint}/power/vm-1"), quick()).unwrap();
        let err = api.power(PowerAction::On).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "BMC managementApi http://{endpoint}/power/vm-1: could not power on: refused: POST /poweron: HTTP 500 Internal Server Error: qemu: cannot open tap1"
            )
        );
        let err = api.power_state().await.unwrap_err();
        assert!(matches!(err.cause, Cause::Protocol(_)), "{err}");
        // The 500 was tried again (it may pass); the bad status document was not.
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "POST /power/vm-1/poweron",
                "POST /power/vm-1/poweron",
                "GET /power/vm-1/status"
            ]
        );
    }

    #[test]
    fn an_endpoint_that_is_no_address_is_a_configuration_error() {
        assert!(matches!(
            HttpApi::new("ftp://rig", quick()),
            Err(Cause::Config(_))
        ));
        assert!(matches!(HttpApi::new("", quick()), Err(Cause::Config(_))));
    }
}
