//! `siderite bench allocate`: a fresh `siderite serve` (child process, own state directory) gets
//! a pool of 10,000 accepted, clean Servers with varied inventory, 100 overlapping ServerClasses
//! and the Cluster API objects around 1,000 MetalMachines, which are then created at once.
//! Measures the time until every MetalMachine is bound, the controllers' reconciles per second
//! (the appliance's `siderite_controller_reconciles_total` at `/metrics`), the appliance's peak
//! RSS, and checks that no server is bound twice and that every bound server is in its class.
//!
//! Goals (printed as ratios): every machine bound within 30 s, peak RSS under 500 MB.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::api::{MetalMachine, Server, ServerBinding, ServerClass};
use crate::bench::{ApplianceArgs, peak_rss_kib, realistic_server, send_all};
use crate::policy::serverclass::ClassMatcher;

/// Namespace of the Cluster API objects.
const NS: &str = "default";
/// The cluster's name.
const CLUSTER: &str = "bench";
/// Goal: every MetalMachine bound within this many seconds.
const GOAL_SECS: f64 = 30.0;
/// Goal: the appliance's peak RSS below this many MB.
const GOAL_RSS_MB: f64 = 500.0;

#[derive(clap::Args, Debug)]
pub struct AllocateBenchArgs {
    /// Servers in the pool (accepted and clean).
    #[arg(long, default_value_t = 10_000)]
    pub servers: usize,
    /// ServerClasses.
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    /// MetalMachines created at once.
    #[arg(long, default_value_t = 1_000)]
    pub machines: usize,
    /// Concurrent requests while setting up.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up when not every machine is bound after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Stop waiting for the ServerClass statuses to list the pool after this many seconds (the
    /// machines are created then anyway; allocation does not read class statuses).
    #[arg(long, default_value_t = 120)]
    pub settle_timeout: u64,
    #[command(flatten)]
    pub appliance: ApplianceArgs,
}

/// CPU models of the pool: (manufacturer, SMBIOS version, cores per socket).
const CPUS: [(&str, &str, u32); 5] = [
    ("AMD", "AMD EPYC 7543 32-Core Processor", 32),
    ("AMD", "AMD EPYC 7313 16-Core Processor", 16),
    ("AMD", "AMD EPYC 7763 64-Core Processor", 64),
    (
        "Intel(R) Corporation",
        "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        32,
    ),
    (
        "Intel(R) Corporation",
        "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz",
        16,
    ),
];

/// System vendors of the pool: (manufacturer, product).
const SYSTEMS: [(&str, &str); 4] = [
    ("Dell Inc.", "PowerEdge R6525"),
    ("HPE", "ProLiant DL385 Gen10 Plus"),
    ("Supermicro", "AS-1124US-TNRP"),
    ("Lenovo", "ThinkSystem SR645"),
];

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];
const RACKS: usize = 40;

/// Server `i` of the pool: [`realistic_server`] with its vendor, CPU model, socket count,
/// memory, rack, zone and tier varied (by different moduli, so classes cut across each other),
/// accepted.
pub fn pool_server(i: usize) -> Value {
    let mut server = realistic_server(i);
    let (maker, product) = SYSTEMS[i % SYSTEMS.len()];
    let (cpu_maker, cpu, cores) = CPUS[(i / 4) % CPUS.len()];
    let sockets: u32 = if i.is_multiple_of(7) { 1 } else { 2 };
    let memory_gib: u64 = [128, 256, 512, 1024][(i / 3) % 4];
    let hardware = &mut server["spec"]["hardware"];
    hardware["system"]["manufacturer"] = json!(maker);
    hardware["system"]["productName"] = json!(product);
    let processor = json!({"manufacturer": cpu_maker, "productName": cpu, "speed": 2600,
                           "coreCount": cores, "threadCount": cores * 2});
    hardware["compute"] = json!({
        "totalCoreCount": cores * sockets, "totalThreadCount": cores * sockets * 2,
        "processorCount": sockets,
        "processors": vec![processor; sockets as usize],
    });
    hardware["memory"]["totalSize"] = json!(format!("{memory_gib} GB"));
    hardware["memory"]["totalSizeBytes"] = json!(memory_gib << 30);
    server["spec"]["accepted"] = json!(true);
    server["metadata"]["labels"] = json!({
        "rack": format!("rack-{}", i % RACKS),
        "topology.kubernetes.io/zone": ZONES[(i / 5) % ZONES.len()],
        "tier": TIERS[(i / 11) % TIERS.len()],
    });
    server
}

/// ServerClass `k`: a mix of the qualifier kinds real cluster YAML uses, several of them
/// overlapping (a CPU class and a vendor class share servers; `bench-any` holds all).
pub fn pool_class(k: usize) -> Value {
    let (cpu_maker, cpu, _) = CPUS[k % CPUS.len()];
    let (maker, _) = SYSTEMS[k % SYSTEMS.len()];
    let spec = match k % 6 {
        // v1alpha1 cpu list with a regular expression, as published YAML writes it.
        0 => {
            json!({"qualifiers": {"cpu": [{"manufacturer": cpu_maker, "version": regex_of(cpu)}]}})
        }
        1 => json!({"qualifiers": {"systemInformation": [{"manufacturer": maker}]}}),
        2 => {
            let cores = ["32", "64", "96"][k % 3];
            json!({"qualifiers": {"expressions": [
                {"key": "compute.totalCoreCount", "operator": "Gte", "values": [cores]}]}})
        }
        3 => json!({"selector": {"matchLabels": {"rack": format!("rack-{}", k % RACKS)}}}),
        4 => json!({
            "qualifiers": {
                "systemInformation": [{"manufacturer": maker}],
                "expressions": [{"key": "memory.totalSizeGiB", "operator": "Gte", "values": ["256"]}],
            },
            "selector": {"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [ZONES[k % 3], ZONES[(k + 1) % 3]]}]},
        }),
        _ => json!({
            "qualifiers": {"hardware": [{"compute": {"processors": [{"manufacturer": cpu_maker}]}}]},
            "selector": {"matchLabels": {"tier": TIERS[k % TIERS.len()]}},
        }),
    };
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass",
        "metadata": {"name": format!("bench-{k:03}")},
        "spec": spec,
    })
}

/// A regular expression a cluster author would write for a CPU model: its family and what
/// follows (`EPYC 7543.*`, `Xeon\(R\) Gold.*`).
fn regex_of(cpu: &str) -> String {
    let words: Vec<&str> = cpu.split_whitespace().collect();
    let family = words
        .iter()
        .position(|w| w.starts_with("EPYC") || w.starts_with("Xeon"))
        .map_or(cpu.to_owned(), |at| {
            words[at..(at + 2).min(words.len())].join(" ")
        });
    format!("{}.*", regex::escape(&family))
}

fn capi_resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// The current RSS of process `pid` (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The appliance's reconcile counters, per controller, and its lost binding races.
async fn scrape(http: &str) -> anyhow::Result<(BTreeMap<&'static str, u64>, u64)> {
    let text = reqwest_get(http, "/metrics").await?;
    let reconciles = ["server", "serverclass", "metalmachine", "metalcluster"]
        .into_iter()
        .map(|c| (c, crate::serve::metrics::reconciles_in(&text, c)))
        .collect();
    let conflicts =
        crate::serve::metrics::counter_in(&text, "siderite_allocation_lock_conflicts_total");
    Ok((reconciles, conflicts))
}

/// A plain HTTP GET on the boot HTTP server (one connection, like a Prometheus scrape).
async fn reqwest_get(base: &str, path: &str) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(base)
        .await
        .with_context(|| format!("connecting to {base}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", base)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub async fn allocate(args: AllocateBenchArgs) -> anyhow::Result<()> {
    let port = crate::bench::agents::free_port()?;
    let http = format!("127.0.0.1:{port}");
    let appliance = args
        .appliance
        .start(vec!["--http-listen".to_owned(), http.clone()])
        .await?;
    let pid = appliance.child.0.id();
    let client = appliance.client.clone();
    let concurrency = args.concurrency.max(1);

    // The pool: servers created accepted, then marked clean through the status subresource
    // (as the agent API does after a wipe).
    let setup = Instant::now();
    let servers: Vec<Value> = (0..args.servers).map(pool_server).collect();
    let names: Vec<String> = servers
        .iter()
        .map(|s| {
            s["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    send_all(
        &client,
        concurrency,
        servers.iter().map(|s| {
            (
                http::Method::POST,
                "/apis/metal.sidero.dev/v1alpha2/servers".to_owned(),
                "application/json",
                bytes::Bytes::from(s.to_string()),
            )
        }),
        http::StatusCode::CREATED,
    )
    .await
    .context("creating the Servers")?;
    let clean = bytes::Bytes::from_static(br#"{"status":{"isClean":true}}"#);
    send_all(
        &client,
        concurrency,
        names.iter().map(|n| {
            (
                http::Method::PATCH,
                format!("/apis/metal.sidero.dev/v1alpha2/servers/{n}/status"),
                "application/merge-patch+json",
                clean.clone(),
            )
        }),
        http::StatusCode::OK,
    )
    .await
    .context("marking the Servers clean")?;
    let classes: Vec<Value> = (0..args.classes).map(pool_class).collect();
    send_all(
        &client,
        concurrency,
        classes.iter().map(|c| {
            (
                http::Method::POST,
                "/apis/metal.sidero.dev/v1alpha2/serverclasses".to_owned(),
                "application/json",
                bytes::Bytes::from(c.to_string()),
            )
        }),
        http::StatusCode::CREATED,
    )
    .await
    .context("creating the ServerClasses")?;
    let pool_secs = setup.elapsed().as_secs_f64();

    // Wait until the ServerClass controller has caught up with the pool: every class lists
    // what it selects. Machines are then created against a settled appliance, as they would
    // be in a rack that has been running.
    let class_api: Api<ServerClass> = Api::all(client.clone());
    let specs: Vec<ServerClass> = classes
        .iter()
        .map(|c| serde_json::from_value(c.clone()))
        .collect::<Result<_, _>>()?;
    let matchers: BTreeMap<String, ClassMatcher> = specs
        .iter()
        .map(|c| {
            Ok((
                c.metadata.name.clone().unwrap_or_default(),
                ClassMatcher::compile(&c.spec)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let pool: Vec<Server> = servers
        .iter()
        .map(|s| serde_json::from_value(s.clone()))
        .collect::<Result<_, _>>()?;
    let expected: BTreeMap<&String, usize> = matchers
        .iter()
        .map(|(name, m)| (name, pool.iter().filter(|s| m.matches(s)).count()))
        .collect();
    let settle = Instant::now();
    let settled_classes = loop {
        let listed = class_api.list(&Default::default()).await?;
        let settled = listed.items.iter().filter(|c| {
            let name = c.metadata.name.clone().unwrap_or_default();
            expected.get(&name).is_some_and(|n| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.servers_available.len() == *n)
            })
        });
        let settled = settled.count();
        if settled == expected.len() || settle.elapsed() > Duration::from_secs(args.settle_timeout)
        {
            break settled;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Then until the controllers are idle (the Server controller labels and conditions every
    // new server): allocation is measured on an appliance with nothing else to do.
    let mut last = scrape(&http).await?.0;
    let mut quiet = 0;
    while quiet < 4 && settle.elapsed() < Duration::from_secs(args.settle_timeout) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = scrape(&http).await?.0;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let settle_secs = settle.elapsed().as_secs_f64();
    let settled_rss_mb = rss_kib(pid).unwrap_or(0) as f64 * 1024.0 / 1e6;

    // Cluster API's side: the Cluster with its infrastructure ready, the MetalCluster, and per
    // machine a bootstrap Secret and a Machine naming it.
    let cluster_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &capi_resource("Cluster", "clusters"));
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": NS}, "spec": {},
    }))?;
    cluster_api.create(&PostParams::default(), &cluster).await?;
    cluster_api
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"infrastructureReady": true}})),
        )
        .await?;
    send_all(
        &client,
        1,
        std::iter::once((
            http::Method::POST,
            format!("/apis/infrastructure.cluster.x-k8s.io/v1alpha3/namespaces/{NS}/metalclusters"),
            "application/json",
            bytes::Bytes::from(
                json!({
                    "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalCluster",
                    "metadata": {"name": CLUSTER, "namespace": NS},
                    "spec": {"controlPlaneEndpoint": {"host": "10.0.0.100", "port": 6443}},
                })
                .to_string(),
            ),
        )),
        http::StatusCode::CREATED,
    )
    .await
    .context("creating the MetalCluster")?;
    let machine_name = |i: usize| format!("{CLUSTER}-{i:04}");
    send_all(
        &client,
        concurrency,
        (0..args.machines).map(|i| {
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("{}-bootstrap", machine_name(i)), "namespace": NS},
                "type": "cluster.x-k8s.io/secret",
                "stringData": {"value": "#cloud-config\n", "format": "cloud-config"},
            });
            (
                http::Method::POST,
                format!("/api/v1/namespaces/{NS}/secrets"),
                "application/json",
                bytes::Bytes::from(secret.to_string()),
            )
        }),
        http::StatusCode::CREATED,
    )
    .await
    .context("creating the bootstrap Secrets")?;
    let machine_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &capi_resource("Machine", "machines"));
    let owners: Vec<(usize, String)> = futures::stream::iter(0..args.machines)
        .map(|i| {
            let api = machine_api.clone();
            let name = machine_name(i);
            async move {
                let machine: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
                    "metadata": {"name": name, "namespace": NS,
                                 "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER}},
                    "spec": {"clusterName": CLUSTER,
                             "bootstrap": {"dataSecretName": format!("{name}-bootstrap")}},
                }))?;
                let created = api.create(&PostParams::default(), &machine).await?;
                Ok::<_, anyhow::Error>((i, created.metadata.uid.unwrap_or_default()))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .context("creating the Machines")?;
    let class_of = |i: usize| format!("bench-{:03}", i % args.classes.max(1));
    let metal_machines: Vec<bytes::Bytes> = owners
        .iter()
        .map(|(i, uid)| {
            let name = machine_name(*i);
            bytes::Bytes::from(
                json!({
                    "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalMachine",
                    "metadata": {
                        "name": name, "namespace": NS,
                        "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER},
                        "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1",
                                             "kind": "Machine", "name": name, "uid": uid}],
                    },
                    "spec": {"serverClassRef": {"apiVersion": "metal.sidero.dev/v1alpha2",
                                                "kind": "ServerClass", "name": class_of(*i)}},
                })
                .to_string(),
            )
        })
        .collect();

    // Watch the machines from before their creation, so no binding can be missed.
    let machines: Api<MetalMachine> = Api::namespaced(client.clone(), NS);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let wanted = args.machines;
    let watch = tokio::spawn({
        let machines = machines.clone();
        async move {
            let mut bound: HashMap<String, bool> = HashMap::new();
            let mut done = Some(done_tx);
            let mut stream =
                std::pin::pin!(watcher(machines, watcher::Config::default()).applied_objects());
            while let Some(machine) = stream.try_next().await? {
                let ready = machine.spec.server_ref.is_some()
                    && machine.status.as_ref().is_some_and(|s| s.ready);
                bound.insert(machine.metadata.name.clone().unwrap_or_default(), ready);
                if bound.values().filter(|r| **r).count() == wanted
                    && let Some(tx) = done.take()
                {
                    let _ = tx.send(Instant::now());
                }
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (counters_before, conflicts_before) = scrape(&http).await?;
    let started = Instant::now();
    send_all(
        &client,
        concurrency,
        metal_machines.into_iter().map(|body| {
            (
                http::Method::POST,
                format!(
                    "/apis/infrastructure.cluster.x-k8s.io/v1alpha3/namespaces/{NS}/metalmachines"
                ),
                "application/json",
                body,
            )
        }),
        http::StatusCode::CREATED,
    )
    .await
    .context("creating the MetalMachines")?;
    let created_secs = started.elapsed().as_secs_f64();
    let finished = tokio::time::timeout(Duration::from_secs(args.timeout), done_rx).await;
    let (counters_after, conflicts_after) = scrape(&http)
        .await
        .unwrap_or_else(|_| (counters_before.clone(), conflicts_before));
    watch.abort();
    let rss_mb = peak_rss_kib(pid).unwrap_or(0) as f64 * 1024.0 / 1e6;
    let bound_secs = match finished {
        Ok(Ok(at)) => Some(at.duration_since(started).as_secs_f64()),
        _ => None,
    };
    let window = bound_secs.unwrap_or(args.timeout as f64);

    // Correctness: one binding per bound machine, naming that machine; no server twice; every
    // bound server selected by the machine's class.
    // An appliance that no longer answers is a result too: the figures are printed anyway.
    let mut problems = Vec::new();
    let all_machines = machines
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_else(|e| {
            problems.push(format!("listing the MetalMachines failed: {e}"));
            Vec::new()
        });
    let bindings: Api<ServerBinding> = Api::all(client.clone());
    let binding_list = bindings
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_else(|e| {
            problems.push(format!("listing the ServerBindings failed: {e}"));
            Vec::new()
        });
    let binding_of: BTreeMap<String, String> = binding_list
        .into_iter()
        .map(|b| {
            (
                b.metadata.name.clone().unwrap_or_default(),
                b.spec.metal_machine_ref.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let by_name: HashMap<&str, &Server> = pool
        .iter()
        .map(|s| (s.metadata.name.as_deref().unwrap_or_default(), s))
        .collect();
    let mut seen = BTreeSet::new();
    let mut bound_count = 0;
    for m in &all_machines {
        let name = m.metadata.name.clone().unwrap_or_default();
        let Some(server) = m.spec.server_ref.as_ref().and_then(|r| r.name.clone()) else {
            continue;
        };
        bound_count += 1;
        if !seen.insert(server.clone()) {
            problems.push(format!("server {server} is the serverRef of two machines"));
        }
        if binding_of.get(&server) != Some(&name) {
            problems.push(format!(
                "machine {name} has server {server}, whose binding names {:?}",
                binding_of.get(&server)
            ));
        }
        let class = m
            .spec
            .server_class_ref
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        let in_class = matchers
            .get(&class)
            .zip(by_name.get(server.as_str()))
            .is_some_and(|(matcher, s)| matcher.matches(s));
        if !in_class {
            problems.push(format!(
                "machine {name} got {server}, which class {class} does not select"
            ));
        }
    }
    if binding_of.len() != bound_count {
        problems.push(format!(
            "{} ServerBindings for {bound_count} bound machines",
            binding_of.len()
        ));
    }
    drop(appliance);

    let reconciles: BTreeMap<&str, u64> = counters_after
        .iter()
        .map(|(c, after)| (*c, after - counters_before.get(c).copied().unwrap_or(0)))
        .collect();
    let total: u64 = reconciles.values().sum();
    let smallest = expected.values().min().copied().unwrap_or(0);
    println!(
        "siderite bench allocate: {} servers, {} classes (smallest selects {smallest}), {} MetalMachines at once",
        args.servers, args.classes, args.machines
    );
    println!(
        "  pool set up in {pool_secs:.1} s; {settled_classes} of {} class statuses listed their servers and the controllers were idle {settle_secs:.1} s later; {} MetalMachines created in {created_secs:.2} s",
        expected.len(),
        args.machines
    );
    match bound_secs {
        Some(secs) => println!(
            "  all {} bound after       {secs:>8.2} s   goal < {GOAL_SECS:.0} s      ratio to goal {:.2}",
            args.machines,
            secs / GOAL_SECS
        ),
        None => println!(
            "  NOT all bound: {bound_count} of {} after {} s",
            args.machines, args.timeout
        ),
    }
    println!(
        "  reconciles               {total:>8} = {:.0}/s ({})",
        total as f64 / window,
        reconciles
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  ServerBinding creates refused (lost races): {}",
        conflicts_after - conflicts_before
    );
    println!(
        "  appliance peak RSS       {rss_mb:>8.0} MB  goal < {GOAL_RSS_MB:.0} MB    ratio to goal {:.2}   (RSS before the machines: {settled_rss_mb:.0} MB)",
        rss_mb / GOAL_RSS_MB
    );
    println!(
        "  bindings {} for {bound_count} bound machines; servers bound twice: {}; outside their class: {}",
        binding_of.len(),
        problems
            .iter()
            .filter(|p| p.contains("two machines"))
            .count(),
        problems
            .iter()
            .filter(|p| p.contains("does not select"))
            .count()
    );
    if let Some(first) = problems.first() {
        bail!("{} problems, first: {first}", problems.len());
    }
    if bound_secs.is_none() {
        bail!("{bound_count} of {} machines bound", args.machines);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_class_compiles_and_selects_enough_of_the_pool() {
        let pool: Vec<Server> = (0..2_000)
            .map(|i| serde_json::from_value(pool_server(i)).expect("a valid Server"))
            .collect();
        let mut sizes = Vec::new();
        for k in 0..100 {
            let class: ServerClass = serde_json::from_value(pool_class(k)).expect("valid class");
            let matcher =
                ClassMatcher::compile(&class.spec).unwrap_or_else(|e| panic!("class {k}: {e}"));
            sizes.push(pool.iter().filter(|s| matcher.matches(s)).count());
        }
        // 10 machines per class out of a 10,000-server pool: a fifth of this pool is plenty.
        assert!(sizes.iter().all(|n| *n >= 40), "{sizes:?}");
        // Classes differ: they do not all select the same servers.
        assert!(sizes.iter().collect::<BTreeSet<_>>().len() > 5, "{sizes:?}");
    }

    #[test]
    fn cpu_class_regex_selects_the_model_family() {
        assert_eq!(regex_of("AMD EPYC 7543 32-Core Processor"), r"EPYC 7543.*");
        assert_eq!(
            regex_of("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"),
            r"Xeon\(R\) Gold.*"
        );
    }
}
