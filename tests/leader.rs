//! Leader election of the controllers: two `siderite serve --kubeconfig` replicas share an
//! embedded appliance whose own controllers are off (`--controllers=false`). Only the replica
//! holding the `siderite-controllers` Lease reconciles (each replica's reconcile counter at
//! `/metrics` says who did); killing the leader hands the Lease and the work to the other within
//! the lease duration; a leader that shuts down cleanly releases the Lease at once.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Appliance, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use siderite::api::MetalCluster;

const LEASE: &str = "siderite-controllers";
/// Short, so that the takeover test is quick; renewals every 4 s.
const LEASE_SECONDS: u64 = 6;
const RENEW_BEFORE: u64 = 2;

/// A controller replica; killed when dropped.
struct Replica {
    child: Option<Child>,
    identity: String,
    http: String,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(appliance: &Appliance, identity: &str, lease_seconds: u64) -> Replica {
        let http = format!("127.0.0.1:{}", free_port());
        let log = appliance.dir.path().join(format!("{identity}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_siderite"))
            .args(["serve", "--http-listen", &http, "--kubeconfig"])
            .arg(&appliance.kubeconfig)
            .arg("--state-dir")
            .arg(appliance.dir.path().join(identity))
            .args(["--leader-elect-identity", identity])
            .args(["--leader-elect-lease-duration", &lease_seconds.to_string()])
            .args(["--leader-elect-renew-before", &RENEW_BEFORE.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("replica log"))
            .spawn()
            .expect("start a replica");
        Replica {
            child: Some(child),
            identity: identity.to_owned(),
            http,
            log,
        }
    }

    /// Reconciles this replica ran so far, over all controllers (`None` until it answers).
    fn reconciles(&self) -> Option<u64> {
        let mut stream = std::net::TcpStream::connect(&self.http).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("siderite_controller_reconciles_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }

    fn signal(&mut self, signal: i32) {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).expect("a pid fits an i32");
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid})");
        }
    }

    fn wait_exit(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.wait().expect("reaping the replica");
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.identity, self.log_text());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Creates a MetalCluster naming its endpoint and waits until a controller made it ready:
/// proof that some replica reconciles.
async fn reconciled_cluster(client: &kube::Client, name: &str) {
    let clusters: Api<MetalCluster> = Api::namespaced(client.clone(), "default");
    let cluster: MetalCluster = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalCluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"controlPlaneEndpoint": {"host": "10.0.0.100", "port": 6443}},
    }))
    .expect("a valid MetalCluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create MetalCluster");
    wait_for(&format!("MetalCluster {name} ready"), 30, || async {
        let c = clusters.get(name).await.ok()?;
        c.status.filter(|s| s.ready).map(|_| ())
    })
    .await;
}

fn other<'a>(
    a: &'a mut Replica,
    b: &'a mut Replica,
    leader: &str,
) -> (&'a mut Replica, &'a mut Replica) {
    if a.identity == leader { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_the_other_takes_over_when_it_dies() {
    let appliance = Appliance::start_with(&["--controllers=false"]);
    let client = appliance.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let mut a = Replica::start(&appliance, "replica-a", LEASE_SECONDS);
    let mut b = Replica::start(&appliance, "replica-b", LEASE_SECONDS);

    let first = wait_for("a Lease holder", 30, || holder(&leases)).await;
    let (leader, follower) = other(&mut a, &mut b, &first);
    reconciled_cluster(&client, "one").await;
    // Both replicas serve (the boot plane is not elected); only the holder reconciled.
    let follower_count = wait_for("the follower's /metrics", 30, || async {
        follower.reconciles()
    })
    .await;
    assert_eq!(follower_count, 0, "the follower reconciled");
    assert!(leader.reconciles().expect("the leader's /metrics") > 0);

    // Renewals keep the holder over several lease durations; the follower stays idle.
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS)).await;
    assert_eq!(holder(&leases).await.as_deref(), Some(first.as_str()));
    assert_eq!(follower.reconciles(), Some(0), "the follower reconciled");

    // SIGKILL: no release; the follower must wait out the lease, and not much longer.
    leader.signal(libc::SIGKILL);
    let killed = Instant::now();
    leader.wait_exit();
    let second = wait_for(
        "the follower to take the Lease",
        3 * LEASE_SECONDS,
        || async { holder(&leases).await.filter(|h| *h != first) },
    )
    .await;
    let takeover = killed.elapsed();
    assert_eq!(second, follower.identity);
    // The lease duration, plus the up to 1 s of jitter kube-lease-manager waits before taking
    // an expired Lease and a round trip.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 2),
        "takeover after {takeover:?}, lease {LEASE_SECONDS} s"
    );
    reconciled_cluster(&client, "two").await;
    assert!(follower.reconciles().expect("the new leader's /metrics") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_releases_the_lease_for_the_next_at_once() {
    let appliance = Appliance::start_with(&["--controllers=false"]);
    let client = appliance.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    // A long lease: a successor that had to wait it out would fail the timing below.
    let mut first = Replica::start(&appliance, "first", 60);
    assert_eq!(
        wait_for("the first replica to lead", 30, || holder(&leases)).await,
        "first"
    );
    first.signal(libc::SIGTERM);
    first.wait_exit();
    assert!(
        first.log_text().contains("lease released"),
        "{}",
        first.log_text()
    );
    assert_eq!(holder(&leases).await, None, "the Lease still has a holder");

    // Well within the 60 s the Lease would otherwise have blocked it.
    let _second = Replica::start(&appliance, "second", 60);
    assert_eq!(
        wait_for("the second replica to lead", 20, || holder(&leases)).await,
        "second"
    );
    reconciled_cluster(&client, "after-handover").await;
}
