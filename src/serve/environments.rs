//! Environment assets: a controller that downloads each Environment's kernel, initramfs and
//! disk image into a content-addressed cache under the state directory, verifies their
//! checksums, writes the Environment's status, and tells the boot plane which Environments it
//! can serve. Every boot-plane replica keeps its own cache, so this runs in every replica.
//!
//! Cache layout (`<state-dir>/environments/`):
//! - `sha512/<hex>`: verified files, named by their SHA-512; two Environments with the same
//!   kernel share one file, and a file is never served before it is complete and verified.
//! - `partial/<key>`: downloads in progress, keyed by URL and expected checksums; an interrupted
//!   download resumes from its length with an HTTP `Range` request.
//!
//! A checksum mismatch deletes the partial file and leaves the asset not ready, with a
//! condition naming the expected and actual digests; failures are retried with exponential
//! backoff (from [`RETRY_MIN`] to [`RETRY_MAX`]) because an upstream may be fixed later.
//! An asset without a checksum (Sidero's default Environment has `sha512: ""`) is downloaded
//! and served, marked `Unverified` with the digest it had.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{AssetCondition, ConditionStatus, Environment, EnvironmentSpec};

/// First retry delay after a failed download; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest wait between download attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Connecting to an asset's server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No byte for this long fails the download (it resumes on the next attempt).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Which part of an Environment an asset is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssetKind {
    Kernel,
    Initrd,
    Image,
}

impl AssetKind {
    /// The path segment under `/environments/<name>/`.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Kernel => "kernel",
            AssetKind::Initrd => "initrd",
            AssetKind::Image => "image",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "kernel" => Some(AssetKind::Kernel),
            "initrd" => Some(AssetKind::Initrd),
            "image" => Some(AssetKind::Image),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            AssetKind::Kernel => "spec.kernel",
            AssetKind::Initrd => "spec.initrd",
            AssetKind::Image => "spec.image",
        }
    }
}

/// An Environment whose every asset is cached and verified.
#[derive(Debug)]
pub struct ReadyEnvironment {
    pub name: String,
    /// The spec the assets were fetched for; a changed spec is not ready until fetched again.
    pub spec: EnvironmentSpec,
    /// Cached files, relative to the cache directory.
    pub assets: HashMap<AssetKind, PathBuf>,
}

/// The cache and what it holds; shared by the controller and the boot HTTP server.
pub struct EnvironmentCache {
    dir: PathBuf,
    ready: RwLock<HashMap<String, Arc<ReadyEnvironment>>>,
    /// The Environments as the controller last saw them (set once the controller starts).
    store: OnceLock<Store<Environment>>,
    /// Digests of assets fetched without a SHA-512 to address them by, per (URL, expected
    /// checksums): saves downloading them again on every reconcile of this process.
    known: Mutex<HashMap<String, String>>,
    /// One lock per partial file, so two Environments naming one URL do not write it at once.
    downloads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    http: reqwest::Client,
}

/// Why an asset is not ready.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{field}.url is empty; set the URL of the file")]
    MissingUrl { field: &'static str },
    #[error("{field}.{algorithm} {value:?} is not a hex {algorithm} digest ({len} hex digits)")]
    BadChecksum {
        field: &'static str,
        algorithm: &'static str,
        value: String,
        len: usize,
    },
    #[error("{algorithm} mismatch: expected {expected}, downloaded file has {actual}")]
    Mismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("GET {url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("GET {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("cache file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    fn reason(&self) -> &'static str {
        match self {
            FetchError::MissingUrl { .. } | FetchError::BadChecksum { .. } => "InvalidSpec",
            FetchError::Mismatch { .. } => "ChecksumMismatch",
            FetchError::Status { .. } | FetchError::Request { .. } => "DownloadFailed",
            FetchError::Io { .. } => "CacheError",
        }
    }
}

/// Checksums an asset must have, validated and lowercased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Expected {
    sha512: Option<String>,
    sha256: Option<String>,
}

/// A cached, checked asset.
#[derive(Clone, Debug)]
struct Fetched {
    sha512: String,
    verified: bool,
}

impl EnvironmentCache {
    /// A cache in `dir` (created when needed).
    pub fn new(dir: PathBuf) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .expect("the HTTP client's TLS backend initializes");
        Arc::new(EnvironmentCache {
            dir,
            ready: RwLock::default(),
            store: OnceLock::new(),
            known: Mutex::default(),
            downloads: Mutex::default(),
            http,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Environment `name` if it exists and every asset of its current spec is cached.
    pub fn ready(&self, name: &str) -> Option<Arc<ReadyEnvironment>> {
        let current = self.store.get()?.get(&ObjectRef::new(name))?;
        let ready = self
            .ready
            .read()
            .expect("lock poisoned")
            .get(name)
            .cloned()?;
        (ready.spec == current.spec).then_some(ready)
    }

    /// Runs the Environment controller until `shutdown`.
    pub fn start(self: &Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let api: Api<Environment> = Api::all(client);
        let controller = Controller::new(api.clone(), watcher::Config::default());
        let _ = self.store.set(controller.store());
        let context = Arc::new(Context {
            cache: Arc::clone(self),
            api,
            attempts: Mutex::default(),
        });
        let run = controller
            .graceful_shutdown_on(shutdown.cancelled_owned())
            .run(reconcile, error_policy, context)
            .for_each(|_| async {});
        tokio::spawn(run);
    }

    /// Makes `url` available in the cache, verified against `expected`.
    async fn fetch(&self, url: &str, expected: &Expected) -> Result<Fetched, FetchError> {
        let key = cache_key(url, expected);
        if let Some(sha512) = &expected.sha512
            && self.dir.join("sha512").join(sha512).is_file()
        {
            return Ok(Fetched {
                sha512: sha512.clone(),
                verified: true,
            });
        }
        if let Some(sha512) = self.known.lock().expect("lock poisoned").get(&key).cloned()
            && self.dir.join("sha512").join(&sha512).is_file()
        {
            return Ok(Fetched {
                verified: expected.sha256.is_some(),
                sha512,
            });
        }
        let lock = Arc::clone(
            self.downloads
                .lock()
                .expect("lock poisoned")
                .entry(key.clone())
                .or_default(),
        );
        let _guard = lock.lock().await;
        let fetched = self.download(url, expected, &key).await?;
        self.known
            .lock()
            .expect("lock poisoned")
            .insert(key, fetched.sha512.clone());
        Ok(fetched)
    }

    /// Downloads (or resumes) `url` into `partial/<key>`, checks it, and moves it into place.
    async fn download(
        &self,
        url: &str,
        expected: &Expected,
        key: &str,
    ) -> Result<Fetched, FetchError> {
        let partial_dir = self.dir.join("partial");
        let final_dir = self.dir.join("sha512");
        for dir in [&partial_dir, &final_dir] {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let partial = partial_dir.join(key);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .await
            .map_err(io(&partial))?;
        let mut sha512 = Sha512::new();
        let mut sha256 = Sha256::new();
        let have = hash_existing(&mut file, &mut sha512, &mut sha256)
            .await
            .map_err(io(&partial))?;

        let mut request = self.http.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let request_error = |source| FetchError::Request {
            url: url.to_owned(),
            source,
        };
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if have > 0 && status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            // The upstream file shrank or changed: start over.
            file.set_len(0).await.map_err(io(&partial))?;
            return Err(FetchError::Status {
                url: url.to_owned(),
                status,
            });
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status,
            });
        }
        if status != reqwest::StatusCode::PARTIAL_CONTENT {
            // A full answer: whatever was there is replaced.
            if have > 0 {
                info!(%url, have, "the server ignored the Range request; downloading again");
            }
            file.set_len(0).await.map_err(io(&partial))?;
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(io(&partial))?;
            sha512 = Sha512::new();
            sha256 = Sha256::new();
        } else {
            info!(%url, from = have, "resuming download");
        }
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            sha512.update(&chunk);
            sha256.update(&chunk);
            file.write_all(&chunk).await.map_err(io(&partial))?;
        }
        file.sync_all().await.map_err(io(&partial))?;
        drop(file);

        let actual512 = hex(&sha512.finalize());
        let actual256 = hex(&sha256.finalize());
        let mismatch = match (&expected.sha512, &expected.sha256) {
            (Some(want), _) if *want != actual512 => Some(("sha512", want, actual512.clone())),
            (None, Some(want)) if *want != actual256 => Some(("sha256", want, actual256)),
            _ => None,
        };
        if let Some((algorithm, want, actual)) = mismatch {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(FetchError::Mismatch {
                algorithm,
                expected: want.clone(),
                actual,
            });
        }
        let target = final_dir.join(&actual512);
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(io(&target))?;
        // The rename must survive a crash before anything is served from it.
        if let Ok(dir) = tokio::fs::File::open(&final_dir).await {
            let _ = dir.sync_all().await;
        }
        info!(%url, sha512 = %actual512, "asset cached");
        Ok(Fetched {
            sha512: actual512,
            verified: expected.sha512.is_some() || expected.sha256.is_some(),
        })
    }
}

struct Context {
    cache: Arc<EnvironmentCache>,
    api: Api<Environment>,
    /// Failed reconciles in a row, per Environment, for the backoff.
    attempts: Mutex<HashMap<String, u32>>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("environment {name}: {count} asset(s) not ready")]
    NotReady { name: String, count: usize },
    #[error("environment {name}: writing status: {source}")]
    Status { name: String, source: kube::Error },
}

/// One asset of a spec: where it comes from and what it must hash to.
struct Wanted {
    kind: AssetKind,
    url: Option<String>,
    sha512: Option<String>,
    sha256: Option<String>,
}

/// The assets `spec` needs: kernel and initramfs for a netboot Environment, the image for a
/// disk-image Environment (plus kernel/initrd when given).
fn wanted(spec: &EnvironmentSpec) -> Vec<Wanted> {
    let mut assets = Vec::new();
    let image = spec.image.as_ref();
    if image.is_none() || spec.kernel.url.is_some() {
        assets.push(Wanted {
            kind: AssetKind::Kernel,
            url: spec.kernel.url.clone(),
            sha512: spec.kernel.sha512.clone(),
            sha256: None,
        });
    }
    if image.is_none() || spec.initrd.url.is_some() {
        assets.push(Wanted {
            kind: AssetKind::Initrd,
            url: spec.initrd.url.clone(),
            sha512: spec.initrd.sha512.clone(),
            sha256: None,
        });
    }
    if let Some(image) = image {
        assets.push(Wanted {
            kind: AssetKind::Image,
            url: Some(image.url.clone()),
            sha512: image.sha512.clone(),
            sha256: image.sha256.clone(),
        });
    }
    assets
}

async fn reconcile(
    environment: Arc<Environment>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = environment.name_any();
    let mut conditions = Vec::new();
    let mut assets = HashMap::new();
    let mut failed = 0;
    for asset in wanted(&environment.spec) {
        let url = asset.url.clone().unwrap_or_default();
        let result = match validate(&asset) {
            Ok(expected) => context.cache.fetch(&url, &expected).await,
            Err(error) => Err(error),
        };
        let condition = match result {
            Ok(fetched) => {
                assets.insert(asset.kind, PathBuf::from("sha512").join(&fetched.sha512));
                let (reason, message) = if fetched.verified {
                    (
                        "Verified",
                        format!("{} cached and verified", asset.kind.as_str()),
                    )
                } else {
                    (
                        "Unverified",
                        format!(
                            "{} cached without verification: {}.sha512 is not set (the file's \
                             sha512 is recorded here)",
                            asset.kind.as_str(),
                            asset.kind.field()
                        ),
                    )
                };
                AssetCondition {
                    url: Some(url),
                    sha512: Some(fetched.sha512),
                    status: ConditionStatus::True,
                    type_: "Ready".into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                }
            }
            Err(error) => {
                failed += 1;
                warn!(environment = %name, asset = asset.kind.as_str(), %error, "environment asset not ready");
                AssetCondition {
                    url: Some(url),
                    sha512: asset.sha512.clone().filter(|s| !s.is_empty()),
                    status: ConditionStatus::False,
                    type_: "Ready".into(),
                    reason: Some(error.reason().into()),
                    message: Some(format!("{}: {error}", asset.kind.as_str())),
                }
            }
        };
        conditions.push(condition);
    }

    let current = environment
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if current != conditions {
        let mut updated = (*environment).clone();
        updated.status.get_or_insert_default().conditions = conditions;
        match context
            .api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Changed meanwhile: the watch brings the new version and another reconcile.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
            Err(source) => return Err(ReconcileError::Status { name, source }),
        }
    }

    let mut ready = context.cache.ready.write().expect("lock poisoned");
    if failed == 0 {
        ready.insert(
            name.clone(),
            Arc::new(ReadyEnvironment {
                name: name.clone(),
                spec: environment.spec.clone(),
                assets,
            }),
        );
        drop(ready);
        context
            .attempts
            .lock()
            .expect("lock poisoned")
            .remove(&name);
        Ok(Action::await_change())
    } else {
        ready.remove(&name);
        Err(ReconcileError::NotReady {
            name,
            count: failed,
        })
    }
}

fn error_policy(
    environment: Arc<Environment>,
    error: &ReconcileError,
    context: Arc<Context>,
) -> Action {
    let name = environment.name_any();
    let mut attempts = context.attempts.lock().expect("lock poisoned");
    let attempt = attempts.entry(name).or_default();
    let delay = backoff(*attempt);
    *attempt = attempt.saturating_add(1);
    if let ReconcileError::Status { .. } = error {
        warn!(%error, "environment status not written; retrying");
    }
    Action::requeue(delay)
}

/// The wait before retry number `attempt` (0-based): [`RETRY_MIN`] doubling up to
/// [`RETRY_MAX`].
pub fn backoff(attempt: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(RETRY_MAX)
}

/// Checks the asset's URL and checksums; `""` counts as absent (Sidero wrote `sha512: ""`).
fn validate(asset: &Wanted) -> Result<Expected, FetchError> {
    let field = asset.kind.field();
    if asset.url.as_deref().unwrap_or_default().is_empty() {
        return Err(FetchError::MissingUrl { field });
    }
    let check = |value: &Option<String>, algorithm: &'static str, len: usize| match value
        .as_deref()
        .map(str::trim)
    {
        None | Some("") => Ok(None),
        Some(hex) if hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(hex.to_ascii_lowercase()))
        }
        Some(other) => Err(FetchError::BadChecksum {
            field,
            algorithm,
            value: other.to_owned(),
            len,
        }),
    };
    Ok(Expected {
        sha512: check(&asset.sha512, "sha512", 128)?,
        sha256: check(&asset.sha256, "sha256", 64)?,
    })
}

/// Hashes what a partial file already holds and leaves the cursor at its end.
async fn hash_existing(
    file: &mut tokio::fs::File,
    sha512: &mut Sha512,
    sha256: &mut Sha256,
) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(total);
        }
        sha512.update(&buffer[..read]);
        sha256.update(&buffer[..read]);
        total += read as u64;
    }
}

/// Name of the partial file for `url` with these expected checksums.
fn cache_key(url: &str, expected: &Expected) -> String {
    let mut hasher = Sha256::new();
    for part in [
        url,
        expected.sha512.as_deref().unwrap_or_default(),
        expected.sha256.as_deref().unwrap_or_default(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DiskImage, Initrd, Kernel};

    #[test]
    fn backoff_doubles_from_the_minimum_to_the_maximum() {
        assert_eq!(backoff(0), RETRY_MIN);
        assert_eq!(backoff(1), RETRY_MIN * 2);
        assert_eq!(backoff(3), RETRY_MIN * 8);
        assert_eq!(backoff(40), RETRY_MAX);
    }

    #[test]
    fn checksums_are_validated_and_empty_means_absent() {
        let asset = |sha512: &str| Wanted {
            kind: AssetKind::Kernel,
            url: Some("http://x/k".into()),
            sha512: Some(sha512.into()),
            sha256: None,
        };
        assert_eq!(
            validate(&asset("")).expect("empty is absent"),
            Expected::default()
        );
        let upper = "AB".repeat(64);
        assert_eq!(
            validate(&asset(&upper)).expect("valid").sha512,
            Some("ab".repeat(64))
        );
        let error = validate(&asset("abc")).expect_err("too short");
        assert_eq!(
            error.to_string(),
            "spec.kernel.sha512 \"abc\" is not a hex sha512 digest (128 hex digits)"
        );
        let missing = Wanted {
            url: None,
            ..asset("")
        };
        assert_eq!(
            validate(&missing).expect_err("no URL").to_string(),
            "spec.kernel.url is empty; set the URL of the file"
        );
    }

    #[test]
    fn a_netboot_environment_needs_kernel_and_initrd_an_image_one_only_its_image() {
        let netboot = EnvironmentSpec {
            kernel: Kernel {
                url: Some("http://x/k".into()),
                ..Default::default()
            },
            initrd: Initrd::default(),
            image: None,
        };
        let kinds: Vec<_> = wanted(&netboot).iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [AssetKind::Kernel, AssetKind::Initrd]);
        let image = EnvironmentSpec {
            image: Some(DiskImage {
                url: "http://x/disk.raw".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let kinds: Vec<_> = wanted(&image).iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [AssetKind::Image]);
    }
}
