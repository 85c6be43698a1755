//! The metadata server, on the boot HTTP port: an allocated server's Environment assets
//! (`/environments/<name>/{kernel,initrd,image}`), its bootstrap data for Talos
//! (`/configdata?uuid=&token=`) and for cloud-init (`/nocloud/<server>/<token>/{user-data,
//! meta-data,vendor-data,network-config}`), and the phone-home endpoint its OS reports to
//! (`POST /phone-home/<server>/<token>`).
//!
//! Bootstrap data goes only to a server that is allocated, and only with the token of its
//! current allocation (the `ServerBinding`'s annotation, which the boot plane put on the
//! kernel command line or the agent wrote into the config drive). Every other request gets
//! the same bare 404, whether the server exists or not, so nothing can be enumerated; the
//! refusals are logged at most once per [`REFUSAL_LOG_PERIOD`].
//!
//! The server counts as installed (its `Installed` condition) when its OS phones home, or,
//! for OSes that cannot, once this appliance served it the kernel, the initramfs (each to the
//! last byte) and the bootstrap data of the current allocation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::api::{
    Condition, ConditionStatus, INSTALLED_CONDITION, MetalMachine, Server, ServerBinding,
    set_condition,
};
use crate::controllers::metalmachine::capi_object;
use crate::policy::configpatch::{PatchSource, Patches, patch_config};
use crate::serve::environments::{AssetKind, EnvironmentCache, hex};
use crate::serve::http::{Body, LogLimiter, full, serve_file, text};
use crate::serve::servers::{Allocation, ServerIndex, is_installed, update_status};

/// Refused metadata requests are logged at most once per this period.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);
/// Largest phone-home body read (cloud-init posts a few SSH keys and names).
const MAX_PHONE_HOME_BYTES: usize = 64 * 1024;

/// What the metadata server needs; one per boot plane.
pub struct Metadata {
    client: kube::Client,
    index: ServerIndex,
    environments: Arc<EnvironmentCache>,
    /// `http://<appliance>:<port>`, without a trailing slash.
    base_url: String,
    /// Per server: the token of the allocation and what of it was delivered.
    deliveries: Mutex<HashMap<String, Delivery>>,
    refusals: Mutex<LogLimiter>,
}

#[derive(Debug, Default)]
struct Delivery {
    token: String,
    kernel: bool,
    initrd: bool,
    bootstrap: bool,
}

/// The bootstrap data of an allocation.
struct Bootstrap {
    value: String,
    /// The secret's `format`: `cloud-config` (default), `ignition`, or Talos' `talos`.
    format: String,
}

impl Metadata {
    pub fn new(
        client: kube::Client,
        index: ServerIndex,
        environments: Arc<EnvironmentCache>,
        base_url: String,
    ) -> Self {
        Metadata {
            client,
            index,
            environments,
            base_url,
            deliveries: Mutex::default(),
            refusals: Mutex::new(LogLimiter::new(REFUSAL_LOG_PERIOD)),
        }
    }

    /// Whether `path` is one of the metadata server's routes.
    pub fn owns(path: &str) -> bool {
        path == "/configdata"
            || path.starts_with("/nocloud/")
            || path.starts_with("/phone-home/")
            || path.starts_with("/environments/")
    }

    /// Answers one request to a path [`Metadata::owns`].
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let head = parts.method == Method::HEAD;
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let get = parts.method == Method::GET || head;
        match segments.as_slice() {
            ["environments", environment, kind] if get => {
                self.environment_asset(environment, kind, &parts, head)
                    .await
            }
            ["configdata"] if get => {
                let query = parse_query(parts.uri.query());
                match (query.get("uuid"), query.get("token")) {
                    (Some(server), Some(token)) => self.configdata(server, token, peer).await,
                    _ => self.refuse(peer, "configdata without uuid and token"),
                }
            }
            ["nocloud", server, token, file] if get => {
                self.nocloud(server, token, file, peer).await
            }
            ["phone-home", server, token] if parts.method == Method::POST => {
                let bytes = match Limited::new(body, MAX_PHONE_HOME_BYTES).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        return text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!("the body is larger than {MAX_PHONE_HOME_BYTES} bytes\n"),
                            false,
                        );
                    }
                };
                self.phone_home(server, token, &bytes, peer).await
            }
            _ => self.refuse(peer, "unknown metadata route or method"),
        }
    }

    /// The bare 404 every refused request gets; logs (rate-limited) why.
    fn refuse(&self, peer: SocketAddr, why: &str) -> Response<Body> {
        if let Some(suppressed) = self
            .refusals
            .lock()
            .expect("lock poisoned")
            .allow(Instant::now())
        {
            warn!(%peer, why, suppressed, "metadata request refused");
        }
        text(StatusCode::NOT_FOUND, "not found\n", false)
    }

    /// The allocation of `server` if `token` is its token.
    fn authorize(&self, server: &str, token: &str) -> Option<(Arc<Server>, Allocation)> {
        let allocation = self.index.allocation(server)?;
        let expected = allocation.token.as_deref()?;
        let matches: bool = expected.as_bytes().ct_eq(token.as_bytes()).into();
        if !matches {
            return None;
        }
        Some((self.index.get(server)?, allocation))
    }

    async fn environment_asset(
        &self,
        environment: &str,
        kind: &str,
        parts: &http::request::Parts,
        head: bool,
    ) -> Response<Body> {
        let not_found = || text(StatusCode::NOT_FOUND, "not found\n", head);
        let (Some(kind), Some(ready)) =
            (AssetKind::parse(kind), self.environments.ready(environment))
        else {
            return not_found();
        };
        let Some(file) = ready.assets.get(&kind) else {
            return not_found();
        };
        let relative = file.to_string_lossy().into_owned();
        let response =
            match serve_file(self.environments.dir(), &relative, &parts.headers, head).await {
                Ok(response) => response,
                Err(error) => return text(StatusCode::BAD_REQUEST, &format!("{error}\n"), head),
            };
        let delivered_to_end = !head
            && (response.status() == StatusCode::OK
                || (response.status() == StatusCode::PARTIAL_CONTENT
                    && range_reaches_end(response.headers())));
        if delivered_to_end
            && let Some(server) = parse_query(parts.uri.query()).get("server")
            && let Some(allocation) = self.index.allocation(server)
            && let (Some(token), Some(current)) = (&allocation.token, self.index.get(server))
            && self.index.environment_name(&current, &allocation.binding) == environment
        {
            self.delivered(server, token, Some(kind)).await;
        }
        response
    }

    /// Records that part of an allocation's netboot reached the server; once kernel, initramfs
    /// and bootstrap data all did, marks the server installed.
    async fn delivered(&self, server: &str, token: &str, kind: Option<AssetKind>) {
        let complete = {
            let mut deliveries = self.deliveries.lock().expect("lock poisoned");
            let delivery = deliveries.entry(server.to_owned()).or_default();
            if delivery.token != token {
                *delivery = Delivery {
                    token: token.to_owned(),
                    ..Delivery::default()
                };
            }
            match kind {
                Some(AssetKind::Kernel) => delivery.kernel = true,
                Some(AssetKind::Initrd) => delivery.initrd = true,
                Some(AssetKind::Image) => {}
                None => delivery.bootstrap = true,
            }
            delivery.kernel && delivery.initrd && delivery.bootstrap
        };
        if complete && self.index.get(server).is_some_and(|s| !is_installed(&s)) {
            self.mark_installed(
                server,
                "Delivered",
                "kernel, initramfs and bootstrap data were served for this allocation".into(),
            )
            .await;
        }
    }

    /// Sets the server's `Installed` condition.
    pub async fn mark_installed(&self, server: &str, reason: &str, message: String) {
        let api: Api<Server> = Api::all(self.client.clone());
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let result = update_status(&api, server, |_, status| {
            set_condition(
                &mut status.conditions,
                Condition::new(
                    INSTALLED_CONDITION,
                    ConditionStatus::True,
                    reason,
                    message.clone(),
                    now.clone(),
                ),
            )
        })
        .await;
        match result {
            Ok(_) => info!(%server, reason, "server installed"),
            Err(error) => warn!(%server, %error, "recording the installation failed"),
        }
    }

    /// Reads the bootstrap Secret of an allocation: binding → MetalMachine → owner Machine →
    /// `spec.bootstrap.dataSecretName`.
    async fn bootstrap(&self, binding: &ServerBinding) -> Result<Bootstrap, String> {
        let reference = &binding.spec.metal_machine_ref;
        let (Some(namespace), Some(name)) = (&reference.namespace, &reference.name) else {
            return Err("the ServerBinding names no MetalMachine".into());
        };
        let machines: Api<MetalMachine> = Api::namespaced(self.client.clone(), namespace);
        let metal_machine = machines
            .get(name)
            .await
            .map_err(|e| format!("MetalMachine {namespace}/{name}: {e}"))?;
        let owner = metal_machine
            .owner_references()
            .iter()
            .find(|o| o.kind == "Machine")
            .ok_or_else(|| format!("MetalMachine {namespace}/{name} has no owner Machine"))?;
        let machine = capi_object(&self.client, namespace, "Machine", "machines", &owner.name)
            .await
            .map_err(|e| format!("Machine {namespace}/{}: {e}", owner.name))?
            .ok_or_else(|| format!("Machine {namespace}/{} does not exist", owner.name))?;
        let secret_name = machine.data["spec"]["bootstrap"]["dataSecretName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "Machine {namespace}/{} has no bootstrap data yet",
                    owner.name
                )
            })?
            .to_owned();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets
            .get(&secret_name)
            .await
            .map_err(|e| format!("Secret {namespace}/{secret_name}: {e}"))?;
        let data = secret.data.unwrap_or_default();
        let value = data
            .get("value")
            .ok_or_else(|| format!("Secret {namespace}/{secret_name} has no `value` key"))?;
        let value = String::from_utf8(value.0.clone())
            .map_err(|_| format!("Secret {namespace}/{secret_name} `value` is not UTF-8"))?;
        let format = data
            .get("format")
            .and_then(|f| String::from_utf8(f.0.clone()).ok())
            .unwrap_or_else(|| "cloud-config".into());
        Ok(Bootstrap { value, format })
    }

    /// `/configdata`: the Talos machine config with the ServerClass and Server patches.
    async fn configdata(&self, server: &str, token: &str, peer: SocketAddr) -> Response<Body> {
        let Some((current, allocation)) = self.authorize(server, token) else {
            return self.refuse(peer, "configdata: not allocated or wrong token");
        };
        let bootstrap = match self.bootstrap(&allocation.binding).await {
            Ok(bootstrap) => bootstrap,
            Err(error) => return unavailable(server, &error),
        };
        let body = if bootstrap.format == "ignition" {
            bootstrap.value
        } else {
            let class = self.index.class_of(&allocation.binding);
            let mut sets = Vec::new();
            if let Some(class) = &class {
                sets.push(Patches {
                    source: PatchSource::ServerClass(class.metadata.name.as_deref().unwrap_or("")),
                    config_patches: &class.spec.config_patches,
                    strategic_patches: &class.spec.strategic_patches,
                });
            }
            sets.push(Patches {
                source: PatchSource::Server(server),
                config_patches: &current.spec.config_patches,
                strategic_patches: &current.spec.strategic_patches,
            });
            match patch_config(&bootstrap.value, &sets) {
                Ok(config) => config,
                Err(error) => {
                    warn!(%server, %error, "config patches do not apply");
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("{error}\n"),
                        false,
                    );
                }
            }
        };
        info!(%server, %peer, "bootstrap data served (configdata)");
        self.delivered(server, token, None).await;
        data(body, "application/yaml")
    }

    /// `/nocloud/<server>/<token>/<file>`: the NoCloud seed files.
    async fn nocloud(
        &self,
        server: &str,
        token: &str,
        file: &str,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Some((current, allocation)) = self.authorize(server, token) else {
            return self.refuse(peer, "nocloud: not allocated or wrong token");
        };
        match file {
            "user-data" => {
                let bootstrap = match self.bootstrap(&allocation.binding).await {
                    Ok(bootstrap) => bootstrap,
                    Err(error) => return unavailable(server, &error),
                };
                info!(%server, %peer, format = %bootstrap.format, "bootstrap data served (user-data)");
                self.delivered(server, token, None).await;
                let content_type = if bootstrap.format == "ignition" {
                    "application/vnd.coreos.ignition+json"
                } else {
                    "text/cloud-config"
                };
                data(bootstrap.value, content_type)
            }
            "meta-data" => {
                let hostname = current.spec.hostname.clone().unwrap_or_else(|| {
                    allocation
                        .binding
                        .spec
                        .metal_machine_ref
                        .name
                        .clone()
                        .unwrap_or_else(|| server.to_owned())
                });
                data(meta_data(server, &hostname), "application/yaml")
            }
            "vendor-data" => data(
                vendor_data(&self.base_url, server, token),
                "text/cloud-config",
            ),
            "network-config" => data(network_config(&current), "application/yaml"),
            _ => self.refuse(peer, "nocloud: unknown file"),
        }
    }

    /// `POST /phone-home/<server>/<token>`: the installed OS reports; cloud-init's
    /// `phone_home` posts a form with `instance_id` and `hostname` (JSON is accepted too);
    /// a `user_data` field is recorded by its SHA-256.
    async fn phone_home(
        &self,
        server: &str,
        token: &str,
        body: &[u8],
        peer: SocketAddr,
    ) -> Response<Body> {
        if self.authorize(server, token).is_none() {
            return self.refuse(peer, "phone-home: not allocated or wrong token");
        }
        let fields = report_fields(body);
        let field = |name: &str| -> String {
            fields
                .get(name)
                .map_or_else(|| "?".to_owned(), |v| v.chars().take(64).collect())
        };
        let mut message = format!(
            "the OS reported from {} as {} (instance {})",
            peer.ip(),
            field("hostname"),
            field("instance_id")
        );
        // The user-data is a secret: only its digest is recorded, so the operator can tell
        // which bootstrap data the node actually consumed.
        if let Some(user_data) = fields.get("user_data") {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(user_data.as_bytes());
            let hex = hex(&digest);
            message.push_str(&format!(
                "; user-data it read: {} bytes, sha256 {hex}",
                user_data.len()
            ));
        }
        self.mark_installed(server, "Reported", message).await;
        text(StatusCode::OK, "ok\n", false)
    }
}

/// `meta-data`: the instance id is the server's name, so cloud-init treats every allocation
/// of one server as the same instance only while its disk keeps the old state (it is wiped).
pub fn meta_data(server: &str, hostname: &str) -> String {
    format!("instance-id: {server}\nlocal-hostname: {hostname}\n")
}

/// `vendor-data`: cloud-init's `phone_home` module reports to this appliance once the OS is up.
pub fn vendor_data(base_url: &str, server: &str, token: &str) -> String {
    format!(
        "#cloud-config\nphone_home:\n  url: {base_url}/phone-home/{server}/{token}\n  post: [instance_id, hostname]\n  tries: 10\n"
    )
}

/// `network-config` (v2): DHCP on every NIC the inventory lists, matched by MAC.
pub fn network_config(server: &Server) -> String {
    let macs: Vec<String> = server
        .spec
        .hardware
        .as_ref()
        .and_then(|h| h.network.as_ref())
        .map(|n| {
            n.interfaces
                .iter()
                .filter_map(|i| i.mac.clone())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::from("version: 2\nethernets:\n");
    if macs.is_empty() {
        out.push_str("  all:\n    match:\n      name: \"e*\"\n    dhcp4: true\n");
    }
    for (index, mac) in macs.iter().enumerate() {
        out.push_str(&format!(
            "  nic{index}:\n    match:\n      macaddress: \"{mac}\"\n    dhcp4: true\n"
        ));
    }
    out
}

/// The fields of a phone-home body: form-encoded (cloud-init) or a JSON object.
fn report_fields(body: &[u8]) -> HashMap<String, String> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
        return map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
    }
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Whether a 206 answer's `Content-Range: bytes a-b/len` ends at the last byte.
fn range_reaches_end(headers: &http::HeaderMap) -> bool {
    let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
    else {
        return false;
    };
    let Some((span, len)) = range.split_once('/') else {
        return false;
    };
    let end = span
        .split_once('-')
        .and_then(|(_, end)| end.parse::<u64>().ok());
    matches!((end, len.parse::<u64>()), (Some(end), Ok(len)) if end + 1 == len)
}

/// Bootstrap data that cannot be read yet: 503 so the OS retries; the reason is logged, not
/// sent (it names cluster objects).
fn unavailable(server: &str, error: &str) -> Response<Body> {
    warn!(%server, %error, "bootstrap data unavailable");
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "bootstrap data is not available yet\n",
        false,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    response
}

fn data(body: String, content_type: &'static str) -> Response<Body> {
    let length = body.len();
    let mut response = Response::new(full(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    // Secrets must not linger in caches.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_reaching_the_last_byte_counts_as_delivered() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/200"),
        );
        assert!(range_reaches_end(&headers));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-99/200"),
        );
        assert!(!range_reaches_end(&headers));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes */200"),
        );
        assert!(!range_reaches_end(&headers));
    }

    #[test]
    fn phone_home_fields_come_from_a_form_or_json() {
        let form = report_fields(b"instance_id=abc&hostname=node-1&pub_key_rsa=ssh-rsa+AAA");
        assert_eq!(form["instance_id"], "abc");
        assert_eq!(form["hostname"], "node-1");
        assert_eq!(form["pub_key_rsa"], "ssh-rsa AAA");
        let json = report_fields(br#"{"instance_id": "abc", "hostname": "n"}"#);
        assert_eq!(json["hostname"], "n");
    }

    #[test]
    fn vendor_data_points_phone_home_at_the_allocation() {
        let text = vendor_data("http://10.0.0.2:8081", "uuid-1", "tok");
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert!(text.starts_with("#cloud-config\n"));
        assert_eq!(
            parsed["phone_home"]["url"],
            "http://10.0.0.2:8081/phone-home/uuid-1/tok"
        );
        assert_eq!(
            parsed["phone_home"]["post"],
            serde_json::json!(["instance_id", "hostname"])
        );
    }

    #[test]
    fn network_config_matches_every_inventory_nic_by_mac() {
        let server: Server = serde_json::from_value(serde_json::json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": "s"},
            "spec": {"hardware": {"network": {"interfaces": [
                {"name": "eth0", "mac": "52:54:00:00:00:01"},
                {"name": "eth1", "mac": "52:54:00:00:00:02"}
            ]}}}
        }))
        .expect("valid Server");
        let parsed: serde_json::Value =
            serde_saphyr::from_str(&network_config(&server)).expect("valid YAML");
        assert_eq!(parsed["version"], 2);
        assert_eq!(
            parsed["ethernets"]["nic1"]["match"]["macaddress"],
            "52:54:00:00:00:02"
        );
        assert_eq!(parsed["ethernets"]["nic0"]["dhcp4"], true);
    }
}
