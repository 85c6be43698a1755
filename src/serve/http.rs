//! The boot plane's HTTP server (plain HTTP/1.1 on hyper): `/boot.ipxe`, the per-machine
//! `/ipxe` answer chosen by the boot decision, and static files under `/assets/` (kernels,
//! initramfs images) and `/tftp/` (iPXE binaries for UEFI HTTP boot), streamed from disk.
//!
//! Static files: GET and HEAD only; a path with `..`, `.`, empty segments, `\` or NUL (also
//! percent-encoded) is refused with 400. Symlinks inside a served directory are the operator's
//! and are followed (Debian's `/usr/lib/ipxe/ipxe.efi` links to `/boot/ipxe.efi`).
//! Files are read in [`CHUNK_SIZE`] frames, never whole. One `Range: bytes=` range is honoured
//! (206, or 416 when it starts past the end); several ranges get the whole file with 200, as
//! RFC 9110 allows, since boot firmware never asks for multipart answers. `ETag` is
//! `"<size hex>-<mtime nanoseconds hex>"`, stable across restarts; `If-None-Match`,
//! `If-Modified-Since` (304) and `If-Range` are honoured.

use std::convert::Infallible;
use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::io::AsyncSeekExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use crate::policy::boot::{
    BootDecision, BootFromDiskMethod, MachineFacts, NetbootEnvironment, decide_boot,
};
use crate::proto::ipxe::{self, KernelArg, ScriptError, ScriptUrl};
use crate::serve::agent_api::AgentApi;
use crate::serve::cache::FileCache;
use crate::serve::metadata::Metadata;

/// Requests under this prefix go to the agent API.
const AGENT_PREFIX_SLASH: &str = "/agent/v1/";

/// Size of the frames a file is streamed in: large enough for few syscalls and thread hand-offs
/// (64 KiB frames cost 0.63x nginx's throughput in `scripts/bench-http`), small enough that
/// hundreds of machines fetching an initramfs at once hold little memory (at most
/// `FRAMES_IN_FLIGHT` frames each).
pub const CHUNK_SIZE: usize = 512 * 1024;

/// Frames read ahead of the socket per response.
const FRAMES_IN_FLIGHT: usize = 4;

/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// A client must send its request headers within this time, or the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for in-flight responses (e.g. an initramfs download) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `buildarch` values iPXE reports.
const KNOWN_ARCHES: &[&str] = &[
    "i386", "x86_64", "arm32", "arm64", "riscv32", "riscv64", "loong64",
];

/// Longest SMBIOS serial number accepted in `/ipxe` queries.
const MAX_SERIAL_LEN: usize = 64;

/// Seconds a machine is asked to wait when its Environment is not ready (`Retry-After`).
const ENVIRONMENT_RETRY_SECONDS: u32 = 5;

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Runtime configuration of the boot HTTP server.
#[derive(Clone, Debug)]
pub struct BootHttpConfig {
    /// `http://<address>:<port>` as the machines reach this server.
    pub base_url: ScriptUrl,
    /// Served at `/assets/`: the discovery kernel and initramfs, Environment assets.
    pub assets_dir: PathBuf,
    /// Served at `/tftp/`: iPXE binaries, for UEFI HTTP boot clients.
    pub tftp_dir: PathBuf,
    /// Served at `/discovery/`: the discovery image (`discovery-image/build`), if found.
    pub discovery_dir: Option<PathBuf>,
    /// What unknown and pooled machines boot.
    pub discovery: DiscoveryEnvironment,
    /// How servers that name no method boot from disk.
    pub disk_method: BootFromDiskMethod,
}

/// The discovery environment (the Siderite agent) served to machines in discovery.
#[derive(Clone, Debug)]
pub struct DiscoveryEnvironment {
    /// Kernel: a path under the assets directory, `/discovery/<file>` for the discovery image
    /// directory, or an absolute `http(s)://` URL.
    pub kernel: String,
    /// Initramfs, in the same form as `kernel`.
    pub initrd: String,
    /// Kernel arguments; `siderite.url=` (the appliance, for the agent API), `siderite.uuid=`
    /// and `siderite.mac=` are appended per machine.
    pub args: Vec<KernelArg>,
}

/// What the boot plane knows about a machine. Until the controllers exist, the appliance passes
/// [`UnknownMachines`], which sends every machine to discovery.
pub trait MachineLookup: Send + Sync {
    /// Facts about the machine with this SMBIOS UUID (lowercase, dashed) that asked from the NIC
    /// with this MAC (lowercase, colon-separated).
    fn facts(&self, uuid: &str, mac: &str) -> MachineFacts;
}

/// A [`MachineLookup`] that knows no machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnknownMachines;

impl MachineLookup for UnknownMachines {
    fn facts(&self, _uuid: &str, _mac: &str) -> MachineFacts {
        MachineFacts::default()
    }
}

/// A request the boot HTTP server refuses; the message is sent as the response body.
#[derive(Debug, Error)]
pub enum BootHttpError {
    #[error(
        "query parameter `{name}` is missing; /ipxe is requested by iPXE through the script at \
         /boot.ipxe"
    )]
    MissingParameter { name: &'static str },
    #[error("query parameter `{name}` is given more than once")]
    DuplicateParameter { name: &'static str },
    #[error("query parameter `{name}`={value:?} is invalid: expected {expected}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "path {path:?} is not a plain file path: `..`, `.`, empty segments, `\\`, NUL and \
         invalid UTF-8 are refused"
    )]
    BadPath { path: String },
    #[error(
        "environment {environment:?} cannot be netbooted: {source}; fix the Environment resource"
    )]
    Environment {
        environment: String,
        source: ScriptError,
    },
}

impl BootHttpError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Environment { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Serves boot HTTP on `listener` until `shutdown` is cancelled, then lets in-flight responses
/// finish for a short grace period.
pub async fn run(
    listener: TcpListener,
    cfg: Arc<BootHttpConfig>,
    lookup: Arc<dyn MachineLookup>,
    shutdown: CancellationToken,
) {
    run_with_services(listener, cfg, lookup, Services::default(), shutdown).await;
}

/// The APIs that share the boot HTTP port.
#[derive(Clone, Default)]
pub struct Services {
    /// The discovery agents' API, under `/agent/v1/`.
    pub agent: Option<Arc<AgentApi>>,
    /// Environment assets, bootstrap data and phone-home ([`Metadata::owns`]).
    pub metadata: Option<Arc<Metadata>>,
}

/// [`run`], also answering the [`Services`] given.
pub async fn run_with_services(
    listener: TcpListener,
    cfg: Arc<BootHttpConfig>,
    lookup: Arc<dyn MachineLookup>,
    services: Services,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut accept_warnings = LogLimiter::new(Duration::from_secs(10));

    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_closed) => break,
            },
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (cfg, lookup, services, shutdown) =
                        (Arc::clone(&cfg), Arc::clone(&lookup), services.clone(), shutdown.clone());
                    connections.spawn(async move {
                        serve_connection(stream, peer, cfg, lookup, services, shutdown).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    if let Some(suppressed) = accept_warnings.allow(Instant::now()) {
                        warn!(%error, suppressed, "boot http accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
        // Reap finished connections so the set stays as small as the number of open ones.
        while connections.try_join_next().is_some() {}
    }

    debug!(open = connections.len(), "boot http shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "boot http aborting connections after the grace period"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: Arc<BootHttpConfig>,
    lookup: Arc<dyn MachineLookup>,
    services: Services,
    shutdown: CancellationToken,
) {
    // Scripts are tiny: send them without waiting for Nagle.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let (cfg, lookup, services) = (Arc::clone(&cfg), Arc::clone(&lookup), services.clone());
        let span = debug_span!(
            "boot_http",
            %peer,
            method = %request.method(),
            path = %request.uri().path(),
        );
        async move {
            let path = request.uri().path();
            let response = match (&services.agent, &services.metadata) {
                (Some(agent), _) if path.starts_with(AGENT_PREFIX_SLASH) => {
                    agent.handle(request).await
                }
                (_, Some(metadata)) if Metadata::owns(path) => metadata.handle(request, peer).await,
                _ => respond(&request, &cfg, lookup.as_ref()).await,
            };
            debug!(status = response.status().as_u16(), "boot http request");
            Ok::<_, Infallible>(response)
        }
        .instrument(span)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "boot http connection failed");
    }
}

/// Answers one request; every outcome, including refusals, is a response.
async fn respond<B>(
    request: &Request<B>,
    cfg: &BootHttpConfig,
    lookup: &dyn MachineLookup,
) -> Response<Body> {
    let path = request.uri().path();
    let head = request.method() == Method::HEAD;
    let known = path == "/boot.ipxe"
        || path == "/ipxe"
        || path == "/metrics"
        || path.starts_with("/assets/")
        || path.starts_with("/tftp/")
        || path.starts_with("/discovery/");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n", head);
    }
    if request.method() != Method::GET && !head {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
            false,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }

    let result = if path == "/boot.ipxe" {
        Ok(script(ipxe::boot_script(&cfg.base_url), head))
    } else if path == "/ipxe" {
        machine_answer(request.uri().query(), cfg, lookup, head)
    } else if path == "/metrics" {
        let mut response = text(StatusCode::OK, &super::metrics::render(), head);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
    } else if let Some(rest) = path.strip_prefix("/assets/") {
        serve_file(&cfg.assets_dir, rest, request.headers(), head).await
    } else if let Some(rest) = path.strip_prefix("/tftp/") {
        serve_file(&cfg.tftp_dir, rest, request.headers(), head).await
    } else if let (Some(rest), Some(dir)) =
        (path.strip_prefix("/discovery/"), cfg.discovery_dir.as_ref())
    {
        serve_file(dir, rest, request.headers(), head).await
    } else {
        Ok(text(StatusCode::NOT_FOUND, "not found\n", head))
    };
    result.unwrap_or_else(|error| {
        debug!(%error, "boot http request refused");
        text(error.status(), &format!("{error}\n"), head)
    })
}

/// The `/ipxe` query, validated and normalised.
#[derive(Debug, PartialEq, Eq)]
struct BootQuery {
    /// Lowercase `8-4-4-4-12` SMBIOS UUID, or empty when the machine has none (the ProxyDHCP
    /// sends `uuid=` for clients without option 97 or with an all-zero/all-FF one).
    uuid: String,
    /// Lowercase colon-separated MAC.
    mac: String,
    arch: String,
    /// Printable ASCII, possibly empty (many boards leave it unset).
    serial: String,
}

/// Parses the query iPXE sends; unknown parameters are ignored (Sidero's script also sent
/// `domain` and `hostname`), repeated known ones refused so a value cannot smuggle in another.
fn parse_boot_query(query: Option<&str>) -> Result<BootQuery, BootHttpError> {
    let (mut uuid, mut mac, mut arch, mut serial) = (None, None, None, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let (name, slot) = match key.as_ref() {
            "uuid" => ("uuid", &mut uuid),
            "mac" => ("mac", &mut mac),
            "arch" => ("arch", &mut arch),
            "serial" => ("serial", &mut serial),
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(BootHttpError::DuplicateParameter { name });
        }
    }

    let uuid = uuid.unwrap_or_default();
    let uuid = if uuid.is_empty() {
        uuid
    } else {
        normalize_uuid(&uuid).ok_or(BootHttpError::InvalidParameter {
            name: "uuid",
            expected: "empty, or a UUID of 32 hex digits, optionally dashed 8-4-4-4-12",
            value: uuid,
        })?
    };
    let mac = mac.ok_or(BootHttpError::MissingParameter { name: "mac" })?;
    let mac = normalize_mac(&mac).ok_or(BootHttpError::InvalidParameter {
        name: "mac",
        expected: "six hex byte pairs separated by `-` or `:`",
        value: mac,
    })?;
    let arch = arch.ok_or(BootHttpError::MissingParameter { name: "arch" })?;
    // iPXE's own `${buildarch}` (from /boot.ipxe) or the DHCP option 93 code (from the
    // URL the ProxyDHCP hands to iPXE clients).
    let numeric = !arch.is_empty() && arch.len() <= 5 && arch.parse::<u16>().is_ok();
    if !numeric && !KNOWN_ARCHES.contains(&arch.as_str()) {
        return Err(BootHttpError::InvalidParameter {
            name: "arch",
            expected: "an iPXE buildarch (i386, x86_64, arm32, arm64, riscv32, riscv64, loong64) or a DHCP client architecture number",
            value: arch,
        });
    }
    let serial = serial.unwrap_or_default();
    if serial.len() > MAX_SERIAL_LEN || !serial.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(BootHttpError::InvalidParameter {
            name: "serial",
            expected: "at most 64 printable ASCII characters",
            value: serial,
        });
    }
    Ok(BootQuery {
        uuid,
        mac,
        arch,
        serial,
    })
}

/// `8-4-4-4-12` or 32 plain hex digits → lowercase `8-4-4-4-12`.
fn normalize_uuid(raw: &str) -> Option<String> {
    let hex: String = match raw.len() {
        36 => {
            let dashes_in_place = raw
                .char_indices()
                .all(|(index, c)| matches!(index, 8 | 13 | 18 | 23) == (c == '-'));
            if !dashes_in_place {
                return None;
            }
            raw.chars().filter(|&c| c != '-').collect()
        }
        32 => raw.to_owned(),
        _ => return None,
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// `aa-bb-cc-dd-ee-ff` or `aa:bb:…` → lowercase `aa:bb:cc:dd:ee:ff`.
fn normalize_mac(raw: &str) -> Option<String> {
    let separator = if raw.contains('-') { '-' } else { ':' };
    let octets: Vec<&str> = raw.split(separator).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| octets.join(":").to_ascii_lowercase())
}

fn machine_answer(
    query: Option<&str>,
    cfg: &BootHttpConfig,
    lookup: &dyn MachineLookup,
    head: bool,
) -> Result<Response<Body>, BootHttpError> {
    let query = parse_boot_query(query)?;
    let facts = lookup.facts(&query.uuid, &query.mac);
    let decision = decide_boot(&facts, cfg.disk_method);
    debug!(
        uuid = %query.uuid,
        mac = %query.mac,
        arch = %query.arch,
        serial = %query.serial,
        decision = decision_name(&decision),
        "boot decision"
    );
    match decision {
        BootDecision::Discovery => discovery_script(cfg, &query).map(|s| script(s, head)),
        BootDecision::Environment(environment) => {
            environment_script(cfg, &environment).map(|s| script(s, head))
        }
        BootDecision::EnvironmentUnavailable => {
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the Environment for this server is not ready yet; iPXE retries\n",
                head,
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ENVIRONMENT_RETRY_SECONDS),
            );
            Ok(response)
        }
        BootDecision::BootFromDisk(method) => Ok(match ipxe::exit_script(method) {
            Some(exit) => script(exit, head),
            // http-404: the failed chain makes the boot script fall through to the disk.
            None => text(StatusCode::NOT_FOUND, "boot from disk\n", head),
        }),
    }
}

fn decision_name(decision: &BootDecision) -> &'static str {
    match decision {
        BootDecision::Discovery => "discovery",
        BootDecision::Environment(_) => "environment",
        BootDecision::EnvironmentUnavailable => "environment-unavailable",
        BootDecision::BootFromDisk(BootFromDiskMethod::IpxeExit) => "ipxe-exit",
        BootDecision::BootFromDisk(BootFromDiskMethod::Http404) => "http-404",
        BootDecision::BootFromDisk(BootFromDiskMethod::IpxeSanboot) => "ipxe-sanboot",
    }
}

fn discovery_script(cfg: &BootHttpConfig, query: &BootQuery) -> Result<String, BootHttpError> {
    let in_discovery = |source| BootHttpError::Environment {
        environment: "discovery".to_owned(),
        source,
    };
    let discovery = &cfg.discovery;
    let kernel = asset_url(&cfg.base_url, &discovery.kernel).map_err(in_discovery)?;
    let initrd = asset_url(&cfg.base_url, &discovery.initrd).map_err(in_discovery)?;
    let mut args = discovery.args.clone();
    // The UUID and MAC were normalised to hex, dashes and colons, which are always valid.
    let mut extra = vec![
        format!("siderite.url={}", cfg.base_url.as_str()),
        format!("siderite.mac={}", query.mac),
    ];
    if !query.uuid.is_empty() {
        extra.insert(0, format!("siderite.uuid={}", query.uuid));
    }
    for arg in extra {
        args.push(KernelArg::parse(&arg).map_err(in_discovery)?);
    }
    Ok(ipxe::kernel_script(&kernel, &initrd, &args))
}

fn environment_script(
    cfg: &BootHttpConfig,
    environment: &NetbootEnvironment,
) -> Result<String, BootHttpError> {
    let invalid = |source| BootHttpError::Environment {
        environment: environment.name.clone(),
        source,
    };
    let kernel = asset_url(&cfg.base_url, &environment.kernel).map_err(invalid)?;
    let initrd = asset_url(&cfg.base_url, &environment.initrd).map_err(invalid)?;
    let args = environment
        .args
        .iter()
        .map(|arg| KernelArg::parse(arg))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    Ok(ipxe::kernel_script(&kernel, &initrd, &args))
}

/// An absolute `http(s)://` URL stays as it is (encoded); anything else names a file under the
/// assets directory. Any other scheme (`ftp://`, `tftp://`) is an error, not an asset name.
/// A path starting with `/discovery/` names a file of the discovery image.
fn asset_url(base: &ScriptUrl, asset: &str) -> Result<ScriptUrl, ScriptError> {
    if asset.contains("://") {
        ScriptUrl::parse(asset)
    } else if let Some(rest) = asset.strip_prefix("/discovery/") {
        Ok(base.join_path(&format!("discovery/{rest}")))
    } else {
        Ok(base.join_path(&format!("assets/{}", asset.trim_start_matches('/'))))
    }
}

fn script(body: String, head: bool) -> Response<Body> {
    let mut response = text(StatusCode::OK, &body, head);
    // The answer depends on the machine's state at this moment.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A `text/plain` response; for HEAD the body is left out but its length is announced.
pub(crate) fn text(status: StatusCode, body: &str, head: bool) -> Response<Body> {
    let length = body.len();
    let body = if head {
        empty()
    } else {
        full(Bytes::copy_from_slice(body.as_bytes()))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Serves `raw_path` (still percent-encoded) from below `root`.
pub(crate) async fn serve_file(
    root: &Path,
    raw_path: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, BootHttpError> {
    let not_found = || text(StatusCode::NOT_FOUND, "not found\n", head);
    let relative = relative_path(raw_path)?;
    // `relative` is made of plain segments; symlinks are followed (decision 19).
    let path = root.join(&relative);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return Ok(not_found());
    };
    // Size and time come from the open file, so they describe the bytes we are about to send.
    let metadata = match file.metadata().await {
        Ok(metadata) if metadata.is_file() => metadata,
        _ => return Ok(not_found()),
    };
    let len = metadata.len();
    let modified = metadata.modified().ok();
    let validators = Validators::new(len, modified);

    if not_modified(headers, &validators) {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        validators.insert(response.headers_mut());
        return Ok(response);
    }

    let range = match headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    {
        Some(range) if if_range_allows(headers, &validators) => parse_range(range, len),
        _ => ByteRange::Full,
    };
    let (status, start, count) = match range {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let mut response = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range not satisfiable\n",
                head,
            );
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{len}")),
            );
            return Ok(response);
        }
    };

    let body = if head || count == 0 {
        empty()
    } else if let Some(bytes) = cached(&path, len).await {
        cached_body(bytes, start, count)
    } else {
        if let Err(error) = file.seek(SeekFrom::Start(start)).await {
            debug!(path = %path.display(), %error, "boot http seek failed");
            return Ok(not_found());
        }
        file_body(file, count)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        response_headers.insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {start}-{end}/{len}")),
        );
    }
    validators.insert(response_headers);
    Ok(response)
}

/// Served files up to this size are kept in the shared cache (kernels and initramfs).
const CACHE_MAX_FILE_BYTES: u64 = 256 << 20;
/// Total bytes the boot HTTP server keeps in memory.
const CACHE_MAX_TOTAL_BYTES: u64 = 768 << 20;

/// One in-memory copy per asset version for every download: with hundreds of machines fetching
/// the same initramfs, reading it once beats reading it per request (nginx's `sendfile` avoids
/// that copy; see `docs/benchmarks.md`).
fn asset_cache() -> &'static FileCache {
    static CACHE: std::sync::OnceLock<FileCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| FileCache::new(CACHE_MAX_FILE_BYTES, CACHE_MAX_TOTAL_BYTES))
}

/// The whole file from the shared cache, if it is cacheable and still `len` bytes long.
async fn cached(path: &Path, len: u64) -> Option<Arc<[u8]>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).ok()?;
        let metadata = file.metadata().ok()?;
        // The headers already promised `len` bytes; a file replaced meanwhile is streamed from
        // the descriptor opened first instead.
        if metadata.len() != len {
            return None;
        }
        asset_cache().get_or_load(&path, &metadata, &file)
    })
    .await
    .ok()
    .flatten()
}

/// `count` bytes from `start` of a cached file, in frames of at most [`CHUNK_SIZE`] that share
/// the cached copy (no per-request copy).
fn cached_body(bytes: Arc<[u8]>, start: u64, count: u64) -> Body {
    let all = Bytes::from_owner(bytes);
    let (start, end) = (start as usize, (start + count) as usize);
    let frames: Vec<io::Result<Frame<Bytes>>> = (start..end)
        .step_by(CHUNK_SIZE)
        .map(|offset| {
            Ok(Frame::data(
                all.slice(offset..(offset + CHUNK_SIZE).min(end)),
            ))
        })
        .collect();
    StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
}

/// Streams `count` bytes from the file's current position in frames of at most
/// [`CHUNK_SIZE`]. A file that shrinks meanwhile ends the body with an error (the client sees
/// a short response, never padding).
fn file_body(file: tokio::fs::File, count: u64) -> Body {
    // One blocking reader per response, handing frames over a small channel: a tokio::fs read
    // per frame costs two thread hand-offs and a zeroed buffer each (see docs/benchmarks.md).
    let (frames, received) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(FRAMES_IN_FLIGHT);
    tokio::spawn(async move {
        let mut file = file.into_std().await;
        let reader = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut remaining = count;
            while remaining > 0 {
                let want = remaining.min(CHUNK_SIZE as u64);
                let mut buffer = Vec::with_capacity(want as usize);
                let frame = match (&mut file).take(want).read_to_end(&mut buffer) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being served",
                    )),
                    Ok(read) => {
                        remaining -= read as u64;
                        Ok(Bytes::from(buffer))
                    }
                    Err(error) => Err(error),
                };
                let failed = frame.is_err();
                // The client went away, or the read failed: stop reading either way.
                if frames.blocking_send(frame).is_err() || failed {
                    return;
                }
            }
        });
        let _ = reader.await;
    });
    let stream = futures::stream::unfold(received, |mut received| async move {
        let frame = received.recv().await?;
        Some((frame.map(Frame::data), received))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// The request path below the served directory, as a relative path of plain segments.
fn relative_path(raw: &str) -> Result<PathBuf, BootHttpError> {
    let bad = || BootHttpError::BadPath {
        path: raw.to_owned(),
    };
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    let mut path = PathBuf::new();
    for segment in decoded.split('/') {
        if matches!(segment, "" | "." | "..") || segment.contains(['\0', '\\']) {
            return Err(bad());
        }
        path.push(segment);
    }
    Ok(path)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `ETag` and `Last-Modified` of a file.
struct Validators {
    etag: String,
    last_modified: Option<String>,
    modified_secs: Option<u64>,
}

impl Validators {
    fn new(len: u64, modified: Option<SystemTime>) -> Self {
        let since_epoch = modified.and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map_or(0, |elapsed| elapsed.as_nanos());
        Self {
            etag: format!("\"{len:x}-{nanos:x}\""),
            last_modified: modified.map(httpdate::fmt_http_date),
            modified_secs: since_epoch.map(|elapsed| elapsed.as_secs()),
        }
    }

    fn insert(&self, headers: &mut HeaderMap) {
        headers.insert(header::ETAG, header_value(self.etag.clone()));
        if let Some(last_modified) = &self.last_modified {
            headers.insert(header::LAST_MODIFIED, header_value(last_modified.clone()));
        }
    }
}

/// RFC 9110 §13.2.2: `If-None-Match` (weak comparison) decides when present, otherwise
/// `If-Modified-Since` does.
fn not_modified(headers: &HeaderMap, validators: &Validators) -> bool {
    if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
        let Ok(tags) = tags.to_str() else {
            return false;
        };
        return tags
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == validators.etag);
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| httpdate::parse_http_date(value).ok())
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok());
    match (since, validators.modified_secs) {
        (Some(since), Some(modified)) => modified <= since.as_secs(),
        _ => false,
    }
}

/// `If-Range` (RFC 9110 §13.1.5): the range applies only if the validator still matches;
/// entity tags compare strongly, dates exactly.
fn if_range_allows(headers: &HeaderMap, validators: &Validators) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') {
        value == validators.etag
    } else if value.starts_with("W/") {
        false
    } else {
        validators.last_modified.as_deref() == Some(value)
    }
}

/// What a `Range` header asks of a representation of a given length.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// No usable single range: send everything with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110 §14.1.2). Other units, malformed
/// specs (ignored, as the RFC says) and multiple ranges (we do not send multipart bodies)
/// give [`ByteRange::Full`].
fn parse_range(header: &str, len: u64) -> ByteRange {
    let header = header.trim();
    let Some(spec) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .and_then(|_| header.get(6..))
    else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match digits(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(suffix) => ByteRange::Partial {
                start: len.saturating_sub(suffix),
                end: len - 1,
            },
            None => ByteRange::Full,
        };
    }
    let Some(start) = digits(first) else {
        return ByteRange::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(end) if end >= start => end,
            _ => return ByteRange::Full,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start,
        end: end.min(len - 1),
    }
}

/// A non-empty run of ASCII digits, saturating at `u64::MAX` (a huge position is still a
/// position: past the end for a start, clamped for an end).
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

fn header_value(value: String) -> HeaderValue {
    HeaderValue::try_from(value)
        .expect("header values built here are ASCII digits, hex, quotes and HTTP dates")
}

/// Lets a warning through at most once per period and counts what it held back, so a client
/// flood or a persistent accept failure cannot flood the log.
pub(crate) struct LogLimiter {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(number suppressed since the last one)` if a message may be logged now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::policy::boot::{ResolvedEnvironment, ServerFacts};

    const UUID: &str = "4c4c4544-0042-3510-8051-b2c04f4e3232";
    const MAC: &str = "52:54:00:12:34:56";

    /// Records the lookups it answers and gives every machine the same facts.
    struct FixedLookup {
        facts: MachineFacts,
        asked: Mutex<Vec<(String, String)>>,
    }

    impl FixedLookup {
        fn new(server: Option<ServerFacts>) -> Self {
            Self {
                facts: MachineFacts { server },
                asked: Mutex::new(Vec::new()),
            }
        }
    }

    impl MachineLookup for FixedLookup {
        fn facts(&self, uuid: &str, mac: &str) -> MachineFacts {
            self.asked
                .lock()
                .expect("test lock is not poisoned")
                .push((uuid.to_owned(), mac.to_owned()));
            self.facts.clone()
        }
    }

    fn allocated(environment: Option<NetbootEnvironment>) -> ServerFacts {
        ServerFacts {
            accepted: true,
            clean: false,
            cordoned: false,
            allocated: true,
            environment_delivered: false,
            pxe_boot_always: false,
            netboot_allowed: true,
            boot_from_disk: None,
            environment: environment.map(ResolvedEnvironment::Netboot),
        }
    }

    fn installed(method: Option<BootFromDiskMethod>) -> ServerFacts {
        ServerFacts {
            environment_delivered: true,
            boot_from_disk: method,
            ..allocated(None)
        }
    }

    struct TestServer {
        addr: SocketAddr,
        base: String,
        dir: tempfile::TempDir,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    impl TestServer {
        async fn start(lookup: Arc<dyn MachineLookup>) -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            for sub in ["assets", "tftp"] {
                std::fs::create_dir(dir.path().join(sub)).expect("create dir");
            }
            std::fs::write(dir.path().join("assets/small.bin"), b"0123456789").expect("write");
            std::fs::write(dir.path().join("tftp/ipxe.efi"), b"MZ-ipxe").expect("write");
            std::fs::write(dir.path().join("secret"), b"outside").expect("write");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let base = format!("http://{addr}");
            let cfg = Arc::new(config(&base, dir.path()));
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(run(listener, cfg, lookup, shutdown.clone()));
            Self {
                addr,
                base,
                dir,
                shutdown,
                task,
            }
        }

        async fn get(&self, target: &str) -> Reply {
            self.send("GET", target, &[]).await
        }

        async fn send(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
            let mut stream = TcpStream::connect(self.addr).await.expect("connect");
            let mut request =
                format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .expect("send request");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read response");
            Reply::parse(&raw)
        }

        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("run returns after cancellation")
                .expect("run does not panic");
        }
    }

    fn config(base: &str, dir: &Path) -> BootHttpConfig {
        BootHttpConfig {
            base_url: ScriptUrl::base(base).expect("valid base"),
            assets_dir: dir.join("assets"),
            tftp_dir: dir.join("tftp"),
            discovery_dir: None,
            discovery: DiscoveryEnvironment {
                kernel: "vmlinuz".to_owned(),
                initrd: "agent/initramfs.xz".to_owned(),
                args: vec![KernelArg::parse("console=ttyS0").expect("valid arg")],
            },
            disk_method: BootFromDiskMethod::IpxeExit,
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn parse(raw: &[u8]) -> Self {
            let split = raw
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
                .expect("response has a header block");
            let head = std::str::from_utf8(&raw[..split]).expect("ASCII headers");
            let mut lines = head.split("\r\n");
            let status_line = lines.next().expect("status line");
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .expect("status code");
            let headers = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
                .collect();
            Self {
                status,
                headers,
                body: raw[split + 4..].to_vec(),
            }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).expect("UTF-8 body")
        }
    }

    fn ipxe_query(uuid: &str, mac: &str) -> String {
        format!("/ipxe?uuid={uuid}&mac={mac}&arch=x86_64&serial=ABC%20123")
    }

    #[tokio::test]
    async fn boot_ipxe_serves_the_boot_script_for_the_base_url() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let reply = server.get("/boot.ipxe").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        let base = ScriptUrl::base(&server.base).expect("valid base");
        assert_eq!(reply.text(), ipxe::boot_script(&base));
        assert!(
            reply
                .text()
                .contains(&format!("chain --autofree {}/ipxe?", server.base))
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_machine_gets_the_discovery_script() {
        let lookup = Arc::new(FixedLookup::new(None));
        let server = TestServer::start(lookup.clone()).await;
        let reply = server
            .get(&ipxe_query(
                "4C4C4544-0042-3510-8051-B2C04F4E3232",
                "52-54-00-12-34-56",
            ))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let base = &server.base;
        assert_eq!(
            reply.text(),
            format!(
                "#!ipxe\n\
                 kernel {base}/assets/vmlinuz initrd=initrd console=ttyS0 siderite.uuid={UUID} siderite.url={base} siderite.mac={MAC}\n\
                 initrd --name initrd {base}/assets/agent/initramfs.xz\n\
                 boot\n"
            )
        );
        assert_eq!(
            *lookup.asked.lock().expect("test lock is not poisoned"),
            [(UUID.to_owned(), MAC.to_owned())]
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn invalid_queries_get_400_with_the_reason() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let cases = [
            (
                "/ipxe?uuid=&mac=52-54-00-12-34-56&arch=x86_64&arch=0",
                "`arch` is given more than once",
            ),
            (
                &*format!("/ipxe?uuid=nope&mac={MAC}&arch=x86_64"),
                "`uuid`=\"nope\" is invalid",
            ),
            (
                &*format!("/ipxe?uuid={UUID}&mac=52-54-00&arch=x86_64"),
                "`mac`=\"52-54-00\"",
            ),
            (
                &*format!("/ipxe?uuid={UUID}&mac={MAC}&arch=sparc"),
                "`arch`=\"sparc\"",
            ),
            (
                &*format!("/ipxe?uuid={UUID}&mac={MAC}"),
                "`arch` is missing",
            ),
            (
                &*format!(
                    "/ipxe?uuid={UUID}&mac={MAC}&arch=x86_64&serial={}",
                    "x".repeat(65)
                ),
                "`serial`",
            ),
        ];
        for (target, reason) in cases {
            let reply = server.get(target).await;
            assert_eq!(reply.status, 400, "{target}");
            assert!(reply.text().contains(reason), "{target}: {}", reply.text());
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn injection_attempts_in_the_query_are_refused() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let cases = [
            // A newline and a command in the serial number.
            format!("/ipxe?uuid={UUID}&mac={MAC}&arch=x86_64&serial=a%0Ashell"),
            // An iPXE expansion and a separator as the UUID.
            format!("/ipxe?uuid=%24%7Bnet0/mac%7D%20%26%26%20shell&mac={MAC}&arch=x86_64"),
            // A serial number that smuggles in a second UUID.
            format!("/ipxe?uuid={UUID}&mac={MAC}&arch=x86_64&serial=x&uuid={UUID}"),
        ];
        for target in cases {
            let reply = server.get(&target).await;
            assert_eq!(reply.status, 400, "{target}: {}", reply.text());
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn allocated_server_gets_its_environment_script() {
        let environment = NetbootEnvironment {
            name: "talos".to_owned(),
            kernel: "https://example.com/talos/vmlinuz-amd64".to_owned(),
            initrd: "env/talos/initramfs.xz".to_owned(),
            args: vec!["talos.platform=metal".to_owned()],
        };
        let lookup = Arc::new(FixedLookup::new(Some(allocated(Some(environment)))));
        let server = TestServer::start(lookup).await;
        let reply = server.get(&ipxe_query(UUID, MAC)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            format!(
                "#!ipxe\n\
                 kernel https://example.com/talos/vmlinuz-amd64 initrd=initrd talos.platform=metal\n\
                 initrd --name initrd {}/assets/env/talos/initramfs.xz\n\
                 boot\n",
                server.base
            )
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn environment_with_an_unsafe_argument_is_a_500_not_a_script() {
        let environment = NetbootEnvironment {
            name: "evil".to_owned(),
            kernel: "vmlinuz".to_owned(),
            initrd: "initrd".to_owned(),
            args: vec!["a ${net0/mac} && shell".to_owned()],
        };
        let lookup = Arc::new(FixedLookup::new(Some(allocated(Some(environment)))));
        let server = TestServer::start(lookup).await;
        let reply = server.get(&ipxe_query(UUID, MAC)).await;
        assert_eq!(reply.status, 500);
        assert!(
            reply
                .text()
                .starts_with("environment \"evil\" cannot be netbooted")
        );
        assert!(!reply.text().starts_with("#!ipxe"));
        server.stop().await;
    }

    #[tokio::test]
    async fn unavailable_environment_gets_503_with_retry_after() {
        let lookup = Arc::new(FixedLookup::new(Some(allocated(None))));
        let server = TestServer::start(lookup).await;
        let reply = server.get(&ipxe_query(UUID, MAC)).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("5"));
        server.stop().await;
    }

    #[tokio::test]
    async fn installed_server_boots_from_disk_by_each_method() {
        let cases = [
            (None, 200, "#!ipxe\nexit\n"),
            (
                Some(BootFromDiskMethod::IpxeSanboot),
                200,
                "#!ipxe\nsanboot --no-describe --drive 0x80\n",
            ),
            (Some(BootFromDiskMethod::Http404), 404, "boot from disk\n"),
        ];
        for (method, status, body) in cases {
            let lookup = Arc::new(FixedLookup::new(Some(installed(method))));
            let server = TestServer::start(lookup).await;
            let reply = server.get(&ipxe_query(UUID, MAC)).await;
            assert_eq!((reply.status, reply.text()), (status, body), "{method:?}");
            server.stop().await;
        }
    }

    #[tokio::test]
    async fn asset_get_returns_the_whole_file_with_validators() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let reply = server.get("/assets/small.bin").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"0123456789");
        assert_eq!(reply.header("content-length"), Some("10"));
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            reply.header("content-type"),
            Some("application/octet-stream")
        );
        let metadata = std::fs::metadata(server.dir.path().join("assets/small.bin")).expect("stat");
        let modified = metadata.modified().expect("mtime");
        let nanos = modified
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos();
        assert_eq!(reply.header("etag"), Some(&*format!("\"a-{nanos:x}\"")));
        assert_eq!(
            reply.header("last-modified"),
            Some(&*httpdate::fmt_http_date(modified))
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn etag_is_the_same_from_a_restarted_server() {
        let first = TestServer::start(Arc::new(UnknownMachines)).await;
        let etag = first
            .get("/assets/small.bin")
            .await
            .header("etag")
            .map(str::to_owned);
        // A second server over the same directory stands in for a restart.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let cfg = Arc::new(config(&format!("http://{addr}"), first.dir.path()));
        let task = tokio::spawn(run(
            listener,
            cfg,
            Arc::new(UnknownMachines),
            shutdown.clone(),
        ));
        let second = TestServer {
            addr,
            base: format!("http://{addr}"),
            dir: tempfile::tempdir().expect("temp dir"),
            shutdown,
            task,
        };
        let again = second.get("/assets/small.bin").await;
        assert!(etag.is_some());
        assert_eq!(again.header("etag").map(str::to_owned), etag);
        second.stop().await;
        first.stop().await;
    }

    #[tokio::test]
    async fn asset_head_announces_the_length_without_a_body() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let reply = server.send("HEAD", "/assets/small.bin", &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length"), Some("10"));
        assert!(reply.body.is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn asset_ranges_return_exact_bytes() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let cases = [
            ("bytes=2-5", "2345", "bytes 2-5/10"),
            ("bytes=7-", "789", "bytes 7-9/10"),
            ("bytes=-3", "789", "bytes 7-9/10"),
            ("bytes=8-100", "89", "bytes 8-9/10"),
            ("bytes=-50", "0123456789", "bytes 0-9/10"),
        ];
        for (range, body, content_range) in cases {
            let reply = server
                .send("GET", "/assets/small.bin", &[("Range", range)])
                .await;
            assert_eq!(reply.status, 206, "{range}");
            assert_eq!(reply.text(), body, "{range}");
            assert_eq!(
                reply.header("content-range"),
                Some(content_range),
                "{range}"
            );
            assert_eq!(
                reply.header("content-length"),
                Some(&*body.len().to_string()),
                "{range}"
            );
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn range_past_the_end_is_416_with_the_length() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let reply = server
            .send("GET", "/assets/small.bin", &[("Range", "bytes=10-")])
            .await;
        assert_eq!(reply.status, 416);
        assert_eq!(reply.header("content-range"), Some("bytes */10"));
        server.stop().await;
    }

    #[tokio::test]
    async fn multiple_ranges_get_the_whole_file() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let reply = server
            .send("GET", "/assets/small.bin", &[("Range", "bytes=0-1,4-5")])
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"0123456789");
        server.stop().await;
    }

    #[tokio::test]
    async fn stale_if_range_gets_the_whole_file() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let headers = [("Range", "bytes=0-1"), ("If-Range", "\"0-0\"")];
        let reply = server.send("GET", "/assets/small.bin", &headers).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"0123456789");
        server.stop().await;
    }

    #[tokio::test]
    async fn matching_validators_get_304() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let first = server.get("/assets/small.bin").await;
        let etag = first.header("etag").expect("etag").to_owned();
        let last_modified = first.header("last-modified").expect("date").to_owned();

        let reply = server
            .send(
                "GET",
                "/assets/small.bin",
                &[("If-None-Match", &format!("\"x\", W/{etag}"))],
            )
            .await;
        assert_eq!(reply.status, 304);
        assert_eq!(reply.header("etag"), Some(&*etag));
        assert!(reply.body.is_empty());

        let reply = server
            .send(
                "GET",
                "/assets/small.bin",
                &[("If-Modified-Since", &last_modified)],
            )
            .await;
        assert_eq!(reply.status, 304);

        let reply = server
            .send(
                "GET",
                "/assets/small.bin",
                &[("If-None-Match", "\"other\"")],
            )
            .await;
        assert_eq!(reply.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_asset_and_unknown_path_are_404() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        assert_eq!(server.get("/assets/missing.bin").await.status, 404);
        assert_eq!(server.get("/nothing").await.status, 404);
        // A directory is not a file.
        std::fs::create_dir(server.dir.path().join("assets/sub")).expect("mkdir");
        assert_eq!(server.get("/assets/sub").await.status, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn tftp_directory_is_served_too() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let reply = server.get("/tftp/ipxe.efi").await;
        assert_eq!(
            (reply.status, reply.body.as_slice()),
            (200, &b"MZ-ipxe"[..])
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn path_traversal_is_refused() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        for target in [
            "/assets/../secret",
            "/assets/%2e%2e/secret",
            "/assets/%2E%2E%2Fsecret",
            "/assets/./small.bin",
            "/assets//small.bin",
            "/assets/..%5csecret",
            "/assets/small.bin%00",
            "/tftp/../assets/small.bin",
        ] {
            let reply = server.get(target).await;
            assert_eq!(reply.status, 400, "{target}");
            assert_ne!(reply.body, b"outside", "{target}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn operator_symlinks_are_followed_in_and_out_of_the_directory() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let assets = server.dir.path().join("assets");
        std::os::unix::fs::symlink(server.dir.path().join("secret"), assets.join("escape"))
            .expect("symlink");
        std::os::unix::fs::symlink(assets.join("small.bin"), assets.join("alias"))
            .expect("symlink");
        std::fs::write(server.dir.path().join("secret"), b"linked").expect("write");
        assert_eq!(server.get("/assets/escape").await.body, b"linked");
        assert_eq!(server.get("/assets/alias").await.body, b"0123456789");
        // The request path itself still cannot climb out.
        assert_eq!(server.get("/assets/../secret").await.status, 400);
        server.stop().await;
    }

    #[tokio::test]
    async fn other_methods_get_405_with_allow() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        for target in ["/assets/small.bin", "/boot.ipxe", "/ipxe"] {
            let reply = server
                .send("POST", target, &[("Content-Length", "0")])
                .await;
            assert_eq!(reply.status, 405, "{target}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{target}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn large_file_is_streamed_in_bounded_frames() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("assets")).expect("mkdir");
        let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("assets/big.img"), &content).expect("write");
        let cfg = config("http://127.0.0.1:1", dir.path());
        let request = Request::get("/assets/big.img")
            .body(())
            .expect("valid request");

        let mut body = respond(&request, &cfg, &UnknownMachines).await.into_body();
        let mut frames = 0;
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame reads").into_data().expect("data frame");
            assert!(data.len() <= CHUNK_SIZE);
            frames += 1;
            received.extend_from_slice(&data);
        }
        assert!(frames >= content.len() / CHUNK_SIZE, "only {frames} frames");
        assert_eq!(received, content);
    }

    #[tokio::test]
    async fn large_file_arrives_whole_over_the_wire() {
        let server = TestServer::start(Arc::new(UnknownMachines)).await;
        let content: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 253) as u8).collect();
        std::fs::write(server.dir.path().join("assets/big.img"), &content).expect("write");
        let reply = server.get("/assets/big.img").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length"), Some("3145728"));
        assert!(reply.body == content);
        server.stop().await;
    }

    #[test]
    fn range_parsing_follows_rfc_9110() {
        use ByteRange::*;
        let cases: [(&str, u64, ByteRange); 14] = [
            ("bytes=0-0", 10, Partial { start: 0, end: 0 }),
            ("BYTES=1-2", 10, Partial { start: 1, end: 2 }),
            ("bytes=5-", 10, Partial { start: 5, end: 9 }),
            ("bytes=-1", 10, Partial { start: 9, end: 9 }),
            (
                "bytes=0-99999999999999999999999",
                10,
                Partial { start: 0, end: 9 },
            ),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=99999999999999999999999-", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=5-1", 10, Full),
            ("bytes=+1-2", 10, Full),
            ("bytes=0-1,3-4", 10, Full),
            ("items=0-1", 10, Full),
            ("bytes=", 10, Full),
        ];
        for (header, len, expected) in cases {
            assert_eq!(parse_range(header, len), expected, "{header} of {len}");
        }
    }

    #[test]
    fn uuid_and_mac_are_normalised() {
        assert_eq!(
            normalize_uuid("4C4C4544004235108051B2C04F4E3232").as_deref(),
            Some(UUID)
        );
        assert_eq!(normalize_uuid(UUID).as_deref(), Some(UUID));
        assert_eq!(normalize_uuid("4c4c4544-00423-510-8051-b2c04f4e3232"), None);
        assert_eq!(normalize_uuid("4c4c4544-0042-3510-8051-b2c04f4e323g"), None);
        assert_eq!(normalize_mac("52-54-00-12-34-56").as_deref(), Some(MAC));
        assert_eq!(normalize_mac("52:54:00:12:34:56").as_deref(), Some(MAC));
        assert_eq!(normalize_mac("52:54-00:12:34:56"), None);
        assert_eq!(normalize_mac("52:54:00:12:34"), None);
    }

    #[test]
    fn log_limiter_lets_one_warning_through_per_period() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(2)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), Some(2));
    }
}
