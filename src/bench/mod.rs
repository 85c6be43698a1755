//! `siderite bench apiserver`: creates Server objects with realistic inventory against a freshly
//! started `siderite serve` (a child process), and measures create throughput, full-list latency,
//! watch fan-out and the server's peak RSS. `siderite bench agents` is in [`agents`], `siderite
//! bench allocate` in [`allocate`], `siderite bench power` in [`power`].
//!
//! The peer that runs side by side is SQLite itself: the same bodies inserted one durable
//! transaction at a time (what a naive store would do), so the ratio shows what the API layer
//! and group commit cost or gain over the raw database on this very machine, whatever its load.

pub mod agents;
pub mod allocate;
pub mod power;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const SERVERS: &str = "/apis/metal.sidero.dev/v1alpha2/servers";

#[derive(clap::Args, Debug)]
pub struct ApiserverBenchArgs {
    /// Server objects to create.
    #[arg(long, default_value_t = 10_000)]
    pub objects: usize,
    /// Concurrent watchers that must each see every event.
    #[arg(long, default_value_t = 50)]
    pub watchers: usize,
    /// Concurrent create requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The `siderite` binary to benchmark (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// A Server as the discovery agent would register it: SMBIOS, CPUs, DIMMs, disks, NICs.
pub fn realistic_server(i: usize) -> Value {
    let uuid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i,
        i % 65536,
        i % 4096,
        (i * 7) % 4096,
        i * 31
    );
    let modules: Vec<Value> = (0..16)
        .map(|d| json!({"manufacturer": "Samsung", "productName": "M393A4K40DB3-CWE", "serialNumber": format!("{:08X}", i * 16 + d),
                         "type": "DDR4", "size": 32768, "speed": 3200}))
        .collect();
    let disks: Vec<Value> = (0..4)
        .map(|d| json!({"type": "NVME", "size": 3_840_755_982_336u64, "model": "SAMSUNG MZQL23T8HCLS-00A07",
                         "serial": format!("S64HNE0R{:06}", i * 4 + d), "name": format!("nvme{d}n1"),
                         "deviceName": format!("/dev/nvme{d}n1"), "wwid": format!("eui.36344830529{:05}", i * 4 + d)}))
        .collect();
    let nics: Vec<Value> = (0..4)
        .map(|n| json!({"index": n + 1, "name": format!("enp{}s0f{}", 65 + n / 2, n % 2), "flags": "up|broadcast|multicast",
                         "mtu": 1500, "mac": format!("b8:ce:f6:{:02x}:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff, n),
                         "addresses": [format!("10.0.{}.{}/16", (i >> 8) & 0xff, i & 0xff)]}))
        .collect();
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2",
        "kind": "Server",
        "metadata": {"name": uuid, "labels": {"rack": format!("rack-{}", i % 40), "hardware.siderite.dev/cpu-manufacturer": "AMD"}},
        "spec": {
            "accepted": false,
            "hostname": format!("node-{i:05}"),
            "hardware": {
                "system": {"uuid": uuid, "manufacturer": "Dell Inc.", "productName": "PowerEdge R6525", "version": "",
                           "serialNumber": format!("{:07X}", i), "skuNumber": "SKU=0A6B;ModelName=PowerEdge R6525", "family": "PowerEdge"},
                "compute": {"totalCoreCount": 64, "totalThreadCount": 128, "processorCount": 2,
                            "processors": [
                                {"manufacturer": "AMD", "productName": "AMD EPYC 7543 32-Core Processor", "speed": 2800, "coreCount": 32, "threadCount": 64},
                                {"manufacturer": "AMD", "productName": "AMD EPYC 7543 32-Core Processor", "speed": 2800, "coreCount": 32, "threadCount": 64}]},
                "memory": {"totalSize": "512 GB", "moduleCount": 16, "modules": modules},
                "storage": {"totalSize": "15 TB", "deviceCount": 4, "devices": disks},
                "network": {"interfaceCount": 4, "interfaces": nics}
            }
        }
    })
}

/// The appliance a benchmark starts: which binary, and extra flags for its `serve`.
#[derive(clap::Args, Debug)]
pub struct ApplianceArgs {
    /// The `siderite` binary to benchmark (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Extra flag for the appliance's `serve` (repeatable), e.g. `--serve-arg=--watch-history=5000`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
}

impl ApplianceArgs {
    /// Starts the appliance with `flags`, then the `--serve-arg`s, as [`start_appliance`] does.
    pub(crate) async fn start(&self, mut flags: Vec<String>) -> anyhow::Result<Appliance> {
        flags.extend(self.serve_args.iter().cloned());
        start_appliance(self.binary.clone(), &flags).await
    }
}

pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The peer: the same bodies, one durable SQLite transaction per insert.
fn sqlite_peer(dir: &Path, bodies: &[Vec<u8>]) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(dir.join("peer.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (name TEXT PRIMARY KEY, body BLOB NOT NULL)")?;
    let started = Instant::now();
    for (i, b) in bodies.iter().enumerate() {
        conn.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            rusqlite::params![i.to_string(), b],
        )?;
    }
    Ok(bodies.len() as f64 / started.elapsed().as_secs_f64())
}

/// Sends every request with `concurrency` in flight; fails unless each answers `expect`.
/// Returns the elapsed seconds.
pub(crate) async fn send_all(
    client: &kube::Client,
    concurrency: usize,
    requests: impl Iterator<Item = (http::Method, String, &'static str, bytes::Bytes)>,
    expect: http::StatusCode,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    futures::stream::iter(requests)
        .map(|(method, path, content_type, body)| {
            let client = client.clone();
            async move {
                let req = http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("content-type", content_type)
                    .body(kube::client::Body::from(body.to_vec()))?;
                let resp = client.send(req).await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                if status != expect {
                    bail!("request answered {status}, expected {expect}");
                }
                Ok::<(), anyhow::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

pub(crate) struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `siderite serve` child process on a fresh state directory, and a client for its API.
pub(crate) struct Appliance {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
}

/// Starts `binary serve` with the API and boot HTTP on loopback plus `extra` flags, and waits
/// until its API answers.
pub(crate) async fn start_appliance(
    binary: Option<PathBuf>,
    extra: &[String],
) -> anyhow::Result<Appliance> {
    let dir = tempfile::tempdir().context("creating a temporary state directory")?;
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe()?,
    };
    let child = Child(
        std::process::Command::new(&binary)
            .args(["serve", "--api-listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path().join("state"))
            .args(extra)
            // SIDERITE_BENCH_LOG sets the appliance's RUST_LOG, to see why a run went wrong.
            .env(
                "RUST_LOG",
                std::env::var("SIDERITE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?,
    );
    let kubeconfig = dir.path().join("state/kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            bail!(
                "the server did not write {} within 30 s",
                kubeconfig.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &server_resource());
    // Wait until the server answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.list(&ListParams::default().limit(1)).await.is_err() {
        if Instant::now() > deadline {
            bail!("the server did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Appliance { child, dir, client })
}

fn server_resource() -> ApiResource {
    ApiResource {
        group: "metal.sidero.dev".into(),
        version: "v1alpha2".into(),
        api_version: "metal.sidero.dev/v1alpha2".into(),
        kind: "Server".into(),
        plural: "servers".into(),
    }
}

pub async fn apiserver(args: ApiserverBenchArgs) -> anyhow::Result<()> {
    let Appliance { child, dir, client } = start_appliance(
        args.binary.clone(),
        &["--http-listen".into(), "127.0.0.1:0".into()],
    )
    .await?;
    let resource = server_resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let n = args.objects;
    let bodies: Vec<bytes::Bytes> = (0..n)
        .map(|i| bytes::Bytes::from(realistic_server(i).to_string()))
        .collect();
    let names: Vec<String> = (0..n)
        .map(|i| {
            realistic_server(i)["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let mean_size = bodies.iter().map(|b| b.len()).sum::<usize>() / n.max(1);

    // Phase 1: creates alone.
    let create_secs = send_all(
        &client,
        args.concurrency,
        bodies.iter().map(|b| {
            (
                http::Method::POST,
                SERVERS.to_owned(),
                "application/json",
                b.clone(),
            )
        }),
        http::StatusCode::CREATED,
    )
    .await?;
    let creates_per_sec = n as f64 / create_secs;

    // Phase 2: full lists, timed to the last byte; the count is checked outside the timing.
    let mut list_times = Vec::new();
    let mut list_bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let req = http::Request::get(SERVERS).body(kube::client::Body::empty())?;
        let body = client
            .send(req)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        list_times.push(t.elapsed().as_secs_f64());
        list_bytes = body.len();
        let list: Value = serde_json::from_slice(&body)?;
        let items = list["items"].as_array().map_or(0, Vec::len);
        if items != n {
            bail!("list returned {items} objects, expected {n}");
        }
    }
    list_times.sort_by(|a, b| a.total_cmp(b));
    let list_median = list_times[list_times.len() / 2];

    // Phase 3: fan-out. Watchers connect, then every Server is updated once; each watcher must
    // receive every one of the n events.
    let fanout_rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let received = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let client = client.clone();
        let path = format!("{SERVERS}?watch=true&resourceVersion={fanout_rv}&timeoutSeconds=290");
        let received = received.clone();
        watchers.push(tokio::spawn(async move {
            let req = http::Request::get(path).body(kube::client::Body::empty())?;
            let mut body = client.send(req).await?.into_body();
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    // One event per line: objects are compact JSON with no raw newlines.
                    let lines = data.iter().filter(|b| **b == b'\n').count();
                    seen += lines;
                    received.fetch_add(lines, Ordering::Relaxed);
                    if seen >= n {
                        return Ok::<Instant, anyhow::Error>(Instant::now());
                    }
                }
            }
            bail!("watch ended after {seen} of {n} events")
        }));
    }
    let patch = bytes::Bytes::from_static(br#"{"metadata":{"labels":{"bench":"fanout"}}}"#);
    let fanout_started = Instant::now();
    let update_secs = send_all(
        &client,
        args.concurrency,
        names.iter().map(|name| {
            (
                http::Method::PATCH,
                format!("{SERVERS}/{name}"),
                "application/merge-patch+json",
                patch.clone(),
            )
        }),
        http::StatusCode::OK,
    )
    .await?;
    let updates_per_sec = n as f64 / update_secs;
    let mut fanout_done = fanout_started;
    for w in watchers {
        let t = w.await.context("watcher task")??;
        fanout_done = fanout_done.max(t);
    }
    let fanout_lag = fanout_done
        .saturating_duration_since(fanout_started + Duration::from_secs_f64(update_secs));
    let rss_mib = peak_rss_kib(child.0.id()).unwrap_or(0) as f64 / 1024.0;
    drop(child);

    let peer_bodies: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_vec()).collect();
    let peer = sqlite_peer(dir.path(), &peer_bodies)?;

    let total_events = received.load(Ordering::Relaxed);
    let expected_events = n * args.watchers;
    println!(
        "siderite bench apiserver: {n} Server objects (mean {mean_size} bytes), {} in flight, {} watchers",
        args.concurrency, args.watchers
    );
    println!(
        "  creates/s              {creates_per_sec:>9.0}   target >= 2000    ratio to target {:.2}",
        creates_per_sec / 2000.0
    );
    println!(
        "  peer: SQLite inserts/s {peer:>9.0}   (one durable transaction each)   siderite/peer {:.2}",
        creates_per_sec / peer
    );
    println!(
        "  full list, median of 5 {list_median:>9.3} s target < 1 s      ratio to target {:.2}   ({:.1} MiB)",
        list_median / 1.0,
        list_bytes as f64 / 1_048_576.0
    );
    println!(
        "  updates/s with {} watchers {updates_per_sec:>5.0}   events delivered {total_events} of {expected_events}: every watcher saw every event: {}",
        args.watchers,
        total_events == expected_events
    );
    println!(
        "  last watcher done      {:>9.3} s after the last update was acknowledged",
        fanout_lag.as_secs_f64()
    );
    println!(
        "  server peak RSS        {rss_mib:>9.1} MiB target < 300 MiB  ratio to target {:.2}",
        rss_mib / 300.0
    );
    Ok(())
}
