//! `siderite bench power`: what it costs the appliance to keep the power state of 1,000 BMCs.
//! Starts a fresh `siderite serve` (its own state directory, default poll interval) and nginx on
//! 127.0.0.1 serving static Redfish documents for 1,000 ComputerSystems (a service root without
//! SessionService, so every poll is one GET with basic auth). 1,000 Servers (not accepted: the
//! power controller only polls and never acts) name one system each in `spec.bmc`.
//!
//! Once every Server shows `status.power: on` (the first round), it measures over a window: the
//! polls the BMC side served (counted in nginx's access log, the peer's own record), the
//! appliance's CPU time (utime + stime of all its threads, `/proc/<pid>/stat`), the Servers
//! written, and the appliance's peak RSS. The issue's goal: under 5% of one core.
//!
//! The peer, run after it in the same invocation: the same number of polls over a window of the
//! same length, each done by a process of its own (`curl -u user:pass <system URL>`), the way
//! Sidero reached BMCs (it started `ipmitool` per call); its CPU is the children's rusage. nginx
//! serves both, so the BMC side's CPU is in neither figure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::api::Server;
use crate::bench::{ApplianceArgs, Child, peak_rss_kib, realistic_server, send_all};

/// Goal: the appliance's CPU while polling, as a share of one core.
const GOAL_CPU_PERCENT: f64 = 5.0;
/// The BMC user and password the Secret holds and nginx checks.
const USER: &str = "bench";
const PASSWORD: &str = "bench-power-password";
/// Namespace and name of the credentials Secret.
const SECRET_NS: &str = "default";
const SECRET: &str = "bench-power-bmc";

#[derive(clap::Args, Debug)]
pub struct PowerBenchArgs {
    /// Simulated BMCs (Redfish ComputerSystems), one Server each.
    #[arg(long, default_value_t = 1_000)]
    pub bmcs: usize,
    /// Seconds of measurement, for the appliance and again for the peer.
    #[arg(long, default_value_t = 180)]
    pub window: u64,
    /// The appliance's `--power-poll-interval`, in seconds (its default is 60).
    #[arg(long, default_value_t = 60)]
    pub poll_interval: u64,
    /// nginx's `keepalive_timeout` in seconds: how long the fake BMCs keep an idle connection.
    /// Shorter than the poll interval, every poll opens a connection, as with most BMCs.
    #[arg(long, default_value_t = 5)]
    pub bmc_keepalive: u64,
    /// Serve Redfish over HTTPS, as real BMCs do (a lab CA, given to the Servers in
    /// `spec.bmc.tls.caCert` and to the peer's curl): every new connection pays a handshake.
    #[arg(long)]
    pub tls: bool,
    /// Give up when the first round has not reached every Server after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    pub appliance: ApplianceArgs,
}

/// The Redfish service root: Systems, and no SessionService (so clients use basic auth).
fn service_root() -> Value {
    json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Root Service",
        "RedfishVersion": "1.6.0",
        "UUID": "92384634-2938-2342-8820-489239905423",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
    })
}

fn systems_collection(n: usize) -> Value {
    let members: Vec<Value> = (1..=n)
        .map(|i| json!({"@odata.id": format!("/redfish/v1/Systems/{i}")}))
        .collect();
    json!({
        "@odata.id": "/redfish/v1/Systems",
        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
        "Name": "Computer System Collection",
        "Members@odata.count": n,
        "Members": members,
    })
}

/// ComputerSystem `i` as a BMC reports a running server: powered on, with the reset types
/// and boot override a real one advertises (about 1.2 KB of JSON).
fn computer_system(i: usize) -> Value {
    let path = format!("/redfish/v1/Systems/{i}");
    json!({
        "@odata.id": path,
        "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
        "Id": i.to_string(),
        "Name": "System",
        "SystemType": "Physical",
        "Manufacturer": "Dell Inc.",
        "Model": "PowerEdge R6525",
        "SerialNumber": format!("{i:07X}"),
        "UUID": format!("4c4c4544-{:04x}-4b10-8034-{:012x}", i % 65536, i),
        "PowerState": "On",
        "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"},
        "ProcessorSummary": {"Count": 2, "Model": "AMD EPYC 7543 32-Core Processor",
                             "Status": {"State": "Enabled", "Health": "OK"}},
        "MemorySummary": {"TotalSystemMemoryGiB": 512,
                          "Status": {"State": "Enabled", "Health": "OK"}},
        "Boot": {
            "BootSourceOverrideEnabled": "Disabled",
            "BootSourceOverrideTarget": "None",
            "BootSourceOverrideTarget@Redfish.AllowableValues":
                ["None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiTarget"],
            "BootSourceOverrideMode": "UEFI",
            "BootSourceOverrideMode@Redfish.AllowableValues": ["Legacy", "UEFI"],
        },
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("{path}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues":
                ["On", "ForceOff", "ForceRestart", "GracefulShutdown", "PowerCycle", "Nmi"],
        }},
        "Links": {"Chassis": [{"@odata.id": format!("/redfish/v1/Chassis/{i}")}],
                  "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/1"}]},
    })
}

/// Server `i` of [`realistic_server`], not accepted, whose BMC is system `i + 1` at `base`,
/// credentials from the benchmark's Secret.
fn bmc_server(i: usize, base: &str, ca: Option<&str>) -> Value {
    let mut server = realistic_server(i);
    let from =
        |key: &str| json!({"secretKeyRef": {"namespace": SECRET_NS, "name": SECRET, "key": key}});
    server["spec"]["bmc"] = json!({
        "endpoint": format!("{base}/redfish/v1/Systems/{}", i + 1),
        "interface": "redfish",
        "userFrom": from("user"),
        "passFrom": from("pass"),
    });
    if let Some(ca) = ca {
        server["spec"]["bmc"]["tls"] = json!({"caCert": ca});
    }
    server
}

/// A lab CA and a certificate for 127.0.0.1 it signed, written as `ca.pem`, `bmc.pem` and
/// `bmc.key` in `dir`; returns the CA's PEM.
fn write_tls(dir: &Path) -> anyhow::Result<String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "siderite bench BMC CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, "bmc");
    let cert = leaf.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), &ca_pem)?;
    std::fs::write(dir.join("bmc.pem"), cert.pem())?;
    std::fs::write(dir.join("bmc.key"), key.serialize_pem())?;
    Ok(ca_pem)
}

/// Writes the documents, the password file and nginx's configuration under `dir`.
fn write_fake_bmcs(
    dir: &Path,
    n: usize,
    port: u16,
    keepalive: u64,
    tls: bool,
) -> anyhow::Result<PathBuf> {
    let docs = dir.join("docs/redfish/v1/Systems");
    std::fs::create_dir_all(&docs)?;
    std::fs::write(
        dir.join("docs/redfish/v1/index.json"),
        service_root().to_string(),
    )?;
    std::fs::write(docs.join("index.json"), systems_collection(n).to_string())?;
    for i in 1..=n {
        std::fs::write(docs.join(i.to_string()), computer_system(i).to_string())?;
    }
    std::fs::write(
        dir.join("htpasswd"),
        format!("{USER}:{{PLAIN}}{PASSWORD}\n"),
    )?;
    let d = dir.display();
    let listen = if tls {
        format!(
            "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/bmc.pem;\n    ssl_certificate_key {d}/bmc.key;"
        )
    } else {
        format!("listen 127.0.0.1:{port};")
    };
    let config = format!(
        // One process (no master): its PID is the whole BMC side, measured and stopped by it.
        r#"master_process off;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  log_format polls '$msec $status $request_uri';
  access_log {d}/access.log polls;
  default_type application/json;
  keepalive_timeout {keepalive}s;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    {listen}
    root {d}/docs;
    location = /redfish/v1/ {{ try_files /redfish/v1/index.json =404; }}
    location = /redfish/v1/Systems {{
      auth_basic "Redfish"; auth_basic_user_file {d}/htpasswd;
      try_files /redfish/v1/Systems/index.json =404;
    }}
    location /redfish/v1/Systems/ {{ auth_basic "Redfish"; auth_basic_user_file {d}/htpasswd; }}
  }}
}}
"#
    );
    std::fs::create_dir_all(dir.join("tmp"))?;
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime (in ticks) from the text of `/proc/<pid>/stat`.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds process `pid` (all its threads) has used so far.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = stat_ticks(&stat).context("an unexpected /proc/<pid>/stat")?;
    Ok(ticks as f64 / clock_ticks())
}

/// CPU seconds of all children this process has waited for.
fn children_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through the pointer, which points to `usage`.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Seconds since the Unix epoch, as nginx's `$msec` writes them.
fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// GETs of a ComputerSystem in the access log between `from` and `to` (epoch seconds): those
/// answered 200, and the others.
fn count_polls(log: &str, from: f64, to: f64) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    for line in log.lines() {
        let mut parts = line.split(' ');
        let (Some(at), Some(status), Some(uri)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(at) = at.parse::<f64>() else { continue };
        if at < from || at > to || !uri.starts_with("/redfish/v1/Systems/") {
            continue;
        }
        if status == "200" {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    (ok, failed)
}

/// Marks every descriptor above stderr close-on-exec, so that no child inherits them. `flock
/// /tmp/siderite-bench.lock siderite bench power` hands the lock to this process as one; a
/// child that outlived the benchmark would hold the lock for everyone.
fn keep_descriptors_from_children() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change a flag of the descriptor; on one that the
        // directory listing itself used and has closed since, they fail harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Waits until `url` answers 200 (nginx is up), trusting `ca` for HTTPS.
async fn wait_for_http(url: &str, pid: u32, ca: Option<&str>) -> anyhow::Result<()> {
    let mut http = reqwest::Client::builder();
    if let Some(ca) = ca {
        http = http.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?);
    }
    let http = http.build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("nginx did not answer {url} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resource versions of every Server, by name.
async fn versions(api: &Api<Server>) -> anyhow::Result<Vec<(String, String)>> {
    let mut list: Vec<(String, String)> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect();
    list.sort();
    Ok(list)
}

/// The peer: `polls` processes of `curl -u … <system URL>` spread evenly over `window`
/// (`--cacert ca` for HTTPS). Returns the successful calls and the children's CPU seconds.
async fn curl_peer(
    base: &str,
    ca: Option<&Path>,
    n: usize,
    polls: u64,
    window: Duration,
) -> anyhow::Result<(u64, f64)> {
    let before = children_cpu_secs();
    let start = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for k in 0..polls {
        tokio::time::sleep_until(start + window.mul_f64(k as f64 / polls.max(1) as f64)).await;
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sf", "-o", "/dev/null", "-u"])
            .arg(format!("{USER}:{PASSWORD}"))
            .args(
                ca.map(|ca| ["--cacert".as_ref(), ca.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            .arg(format!("{base}/redfish/v1/Systems/{}", k as usize % n + 1))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().context("starting curl")?;
        // Waiting reaps the child, which puts its CPU into RUSAGE_CHILDREN.
        calls.spawn(async move { child.wait().await.is_ok_and(|s| s.success()) });
    }
    let mut ok = 0;
    while let Some(done) = calls.join_next().await {
        ok += u64::from(done.unwrap_or(false));
    }
    Ok((ok, children_cpu_secs() - before))
}

pub async fn power(args: PowerBenchArgs) -> anyhow::Result<()> {
    for tool in ["nginx", "curl"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!("{tool} is not installed; scripts/install-deps installs it");
        }
    }
    keep_descriptors_from_children();
    let n = args.bmcs.max(1);
    let interval = Duration::from_secs(args.poll_interval.max(1));
    let window = Duration::from_secs(args.window.max(1));

    // The fake BMCs: nginx on loopback, its files readable by its unprivileged workers.
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let port = crate::bench::agents::free_port()?;
    let scheme = if args.tls { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{port}");
    let ca = args.tls.then(|| write_tls(dir.path())).transpose()?;
    let config = write_fake_bmcs(dir.path(), n, port, args.bmc_keepalive, args.tls)?;
    let nginx = Child(
        std::process::Command::new("nginx")
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    let nginx_pid = nginx.0.id();
    wait_for_http(&format!("{base}/redfish/v1/"), nginx_pid, ca.as_deref()).await?;

    // The appliance, idle first (no Servers yet): what it uses when there is nothing to poll.
    let http_port = crate::bench::agents::free_port()?;
    let appliance = args
        .appliance
        .start(vec![
            "--http-listen".to_owned(),
            format!("127.0.0.1:{http_port}"),
            format!("--power-poll-interval={}", args.poll_interval.max(1)),
        ])
        .await?;
    let pid = appliance.child.0.id();
    let client = appliance.client.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_secs = 10.0;
    let idle_before = cpu_secs(pid)?;
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle_cpu = cpu_secs(pid)? - idle_before;

    // The Secret and the Servers.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": SECRET_NS},
        "stringData": {"user": USER, "pass": PASSWORD},
    });
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret)?;
    Api::namespaced(client.clone(), SECRET_NS)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the BMC Secret")?;
    let first_round = Instant::now();
    let cpu_before_round = cpu_secs(pid)?;
    send_all(
        &client,
        64,
        (0..n).map(|i| {
            (
                http::Method::POST,
                "/apis/metal.sidero.dev/v1alpha2/servers".to_owned(),
                "application/json",
                bytes::Bytes::from(bmc_server(i, &base, ca.as_deref()).to_string()),
            )
        }),
        http::StatusCode::CREATED,
    )
    .await
    .context("creating the Servers")?;

    // The first round: every Server polled once and its status.power written.
    let servers: Api<Server> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let list = servers.list(&ListParams::default()).await?;
        let on = list
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|s| s.power.as_deref()) == Some("on"))
            .count();
        if on == n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {on} of {n} Servers show status.power on after {} s; see {}",
                args.timeout,
                dir.path().join("access.log").display()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let round_secs = first_round.elapsed().as_secs_f64();
    let round_cpu = cpu_secs(pid)? - cpu_before_round;

    // Half an interval later the first round's polls are as far from the window's edges as
    // they can be: a window of whole intervals then holds whole rounds (jitter spreads a
    // round by ±10% per interval, less than half an interval for the first four).
    tokio::time::sleep(interval / 2).await;
    let before = versions(&servers).await?;
    let (from, cpu_from, nginx_from) = (epoch_secs(), cpu_secs(pid)?, cpu_secs(nginx_pid)?);
    tokio::time::sleep(window).await;
    let (to, cpu_to, nginx_to) = (epoch_secs(), cpu_secs(pid)?, cpu_secs(nginx_pid)?);
    let after = versions(&servers).await?;
    let rss_mib = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    drop(appliance);
    let written = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.0 == a.0 && b.1 != a.1)
        .count();
    let log = std::fs::read_to_string(dir.path().join("access.log"))?;
    let (polls, failed) = count_polls(&log, from, to);
    let secs = to - from;
    let cpu = cpu_to - cpu_from;
    let nginx_cpu = nginx_to - nginx_from;

    // The peer: as many polls over as long a window, one process each.
    let peer_from = epoch_secs();
    let peer_nginx_from = cpu_secs(nginx_pid)?;
    let (peer_ok, peer_cpu) = curl_peer(
        &base,
        ca.is_some().then(|| dir.path().join("ca.pem")).as_deref(),
        n,
        polls,
        Duration::from_secs_f64(secs),
    )
    .await?;
    let peer_to = epoch_secs();
    let peer_nginx_cpu = cpu_secs(nginx_pid)? - peer_nginx_from;
    let log = std::fs::read_to_string(dir.path().join("access.log"))?;
    let (peer_polls, peer_failed) = count_polls(&log, peer_from, peer_to);
    let peer_secs = peer_to - peer_from;
    drop(nginx);

    let expected = n as f64 / interval.as_secs_f64();
    let rate = polls as f64 / secs;
    let percent = cpu / secs * 100.0;
    let per_poll_us = cpu * 1e6 / polls.max(1) as f64;
    let peer_per_poll_us = peer_cpu * 1e6 / peer_polls.max(1) as f64;
    println!(
        "siderite bench power: {n} Redfish BMCs (nginx on {base}, keepalive {} s), poll interval {} s, window {secs:.0} s",
        args.bmc_keepalive,
        interval.as_secs()
    );
    println!(
        "  idle appliance, no Servers       {:>8.2} % of one core ({idle_cpu:.2} s in {idle_secs:.0} s)",
        idle_cpu / idle_secs * 100.0
    );
    println!(
        "  first round: {n} Servers created, polled and written in {round_secs:.1} s, appliance CPU {round_cpu:.2} s"
    );
    println!(
        "  polls/s                          {rate:>8.2}   expected {expected:.2} ({n}/{} s); {polls} polls answered 200, {failed} others",
        interval.as_secs()
    );
    println!(
        "  appliance CPU                    {percent:>8.2} % of one core ({cpu:.2} s)   goal < {GOAL_CPU_PERCENT:.0} %   ratio to goal {:.2}",
        percent / GOAL_CPU_PERCENT
    );
    println!("  appliance CPU per poll           {per_poll_us:>8.0} µs");
    println!("  Servers written in the window    {written:>8}");
    println!("  appliance peak RSS               {rss_mib:>8.1} MiB");
    println!(
        "  nginx (the BMCs) CPU per poll    {:>8.0} µs",
        nginx_cpu * 1e6 / polls.max(1) as f64
    );
    println!(
        "  peer: curl per poll              {peer_polls} polls answered 200 ({peer_failed} others, {peer_ok} curls succeeded) in {peer_secs:.0} s = {:.2}/s",
        peer_polls as f64 / peer_secs
    );
    println!(
        "  peer CPU                         {:>8.2} % of one core ({peer_cpu:.2} s), {peer_per_poll_us:.0} µs per poll; nginx {:.0} µs per poll",
        peer_cpu / peer_secs * 100.0,
        peer_nginx_cpu * 1e6 / peer_polls.max(1) as f64
    );
    println!(
        "  siderite/peer CPU per poll       {:>8.3}",
        per_poll_us / peer_per_poll_us
    );
    if polls == 0 {
        bail!("no polls reached the BMCs in the window");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 123 45 0 0 20 0 9 0";
        assert_eq!(stat_ticks(stat), Some(168));
    }

    #[test]
    fn polls_are_system_gets_inside_the_window() {
        let log = "100.000 200 /redfish/v1/\n\
                   100.500 200 /redfish/v1/Systems/1\n\
                   101.000 401 /redfish/v1/Systems/2\n\
                   102.000 200 /redfish/v1/Systems/3\n\
                   103.500 200 /redfish/v1/Systems/4\n";
        assert_eq!(count_polls(log, 100.5, 102.0), (2, 1));
    }

    #[test]
    fn fake_systems_offer_basic_auth_and_a_powered_on_system() {
        let root = service_root();
        assert!(root.get("SessionService").is_none() && root["Links"]["Sessions"].is_null());
        let system = computer_system(17);
        assert_eq!(system["PowerState"], "On");
        assert_eq!(system["@odata.id"], "/redfish/v1/Systems/17");
        let server = bmc_server(16, "http://127.0.0.1:8443", None);
        let server: Server = serde_json::from_value(server).expect("a valid Server");
        let bmc = server.spec.bmc.expect("spec.bmc");
        assert_eq!(bmc.endpoint, "http://127.0.0.1:8443/redfish/v1/Systems/17");
        assert!(!server.spec.accepted);
        let credentials = crate::power::Credentials {
            user: USER.into(),
            password: PASSWORD.into(),
        };
        let spec = crate::api::ServerSpec {
            bmc: Some(bmc),
            ..Default::default()
        };
        let manager = crate::power::manager_for(&spec, Some(credentials), Default::default())
            .expect("the spec sets up")
            .expect("a manager");
        assert_eq!(
            manager.describe(),
            "redfish http://127.0.0.1:8443/redfish/v1/Systems/17"
        );
    }
}
