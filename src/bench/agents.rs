//! `siderite bench agents`: thousands of discovery agents register at once over the real agent
//! API (HTTP/JSON, one connection per request, as the agent does) against a fresh `siderite
//! serve` with its embedded API server. Prints registrations per second, latency percentiles,
//! errors and the appliance's peak RSS.
//!
//! The peer, run side by side on the same kind of fresh appliance: the same inventories
//! created directly as Server objects through the Kubernetes API (one POST each, which is all
//! Sidero's registration did), so the ratio shows what the agent API's validation, identity
//! checks, status conditions and Events cost on top of a bare create.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;

use crate::agent::client::ApplianceClient;
use crate::api::HardwareInformation;
use crate::api::agent::Registration;
use crate::bench::{Appliance, peak_rss_kib, realistic_server, send_all, start_appliance};

#[derive(clap::Args, Debug)]
pub struct AgentsBenchArgs {
    /// Agents registering.
    #[arg(long, default_value_t = 5_000)]
    pub agents: usize,
    /// Registrations in flight at once (default: all agents at once).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// The `siderite` binary to benchmark (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// A registration as an agent on server `i` sends it: the inventory of
/// [`realistic_server`], its SMBIOS UUID and its first NIC as the boot MAC.
fn registration(i: usize) -> anyhow::Result<Registration> {
    let server = realistic_server(i);
    let hardware: HardwareInformation = serde_json::from_value(server["spec"]["hardware"].clone())
        .context("the benchmark inventory is not valid hardware information")?;
    let boot_mac = hardware
        .network
        .as_ref()
        .and_then(|n| n.interfaces.first())
        .and_then(|i| i.mac.clone());
    Ok(Registration {
        smbios_uuid: server["metadata"]["name"].as_str().map(str::to_owned),
        boot_mac,
        boot_id: format!("00000000-0000-4000-8000-{i:012x}"),
        agent_version: "bench".into(),
        hardware,
        problems: Vec::new(),
    })
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    // Bind and release: the appliance binds it right after. A collision shows as a start error.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

pub async fn agents(args: AgentsBenchArgs) -> anyhow::Result<()> {
    let n = args.agents;
    let concurrency = args.concurrency.unwrap_or(n).max(1);
    let registrations: Vec<Registration> = (0..n).map(registration).collect::<Result<_, _>>()?;

    // The agent API.
    let port = free_port()?;
    let appliance = start_appliance(
        args.binary.clone(),
        &["--http-listen".into(), format!("127.0.0.1:{port}")],
    )
    .await?;
    let client = Arc::new(ApplianceClient::new(&format!("http://127.0.0.1:{port}"))?);
    let started = Instant::now();
    let results: Vec<(Duration, Result<(), String>)> = futures::stream::iter(registrations)
        .map(|registration| {
            let client = Arc::clone(&client);
            async move {
                let t = Instant::now();
                let result = client
                    .register(&registration)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                (t.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let agent_secs = started.elapsed().as_secs_f64();
    let rss_mib = peak_rss_kib(appliance.child.0.id()).unwrap_or(0) as f64 / 1024.0;
    let registered = count_servers(&appliance).await?;
    drop(appliance);
    let errors: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    let mut latencies: Vec<f64> = results.iter().map(|(d, _)| d.as_secs_f64()).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));

    // The peer: bare creates of the same inventories.
    let peer =
        start_appliance(args.binary, &["--http-listen".into(), "127.0.0.1:0".into()]).await?;
    let bodies: Vec<bytes::Bytes> = (0..n)
        .map(|i| bytes::Bytes::from(realistic_server(i).to_string()))
        .collect();
    let peer_secs = send_all(
        &peer.client,
        concurrency.min(256),
        bodies.into_iter().map(|b| {
            (
                http::Method::POST,
                "/apis/metal.sidero.dev/v1alpha2/servers".to_owned(),
                "application/json",
                b,
            )
        }),
        http::StatusCode::CREATED,
    )
    .await?;
    drop(peer);

    let rate = n as f64 / agent_secs;
    let peer_rate = n as f64 / peer_secs;
    println!("siderite bench agents: {n} agents, {concurrency} registering at once");
    println!(
        "  agent API:      {n} registrations in {agent_secs:.2} s = {rate:.0}/s; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} errors; {registered} Servers",
        percentile(&latencies, 0.50) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0,
        percentile(&latencies, 1.0) * 1000.0,
        errors.len(),
    );
    println!("  appliance peak RSS: {rss_mib:.0} MiB");
    println!(
        "  peer (bare Server creates over the Kubernetes API): {peer_secs:.2} s = {peer_rate:.0}/s; agent API / peer = {:.2}x",
        rate / peer_rate
    );
    if let Some(first) = errors.first() {
        println!("  first error: {first}");
    }
    if !errors.is_empty() || registered != n {
        bail!(
            "{} registrations failed and {registered} of {n} Servers exist",
            errors.len()
        );
    }
    Ok(())
}

async fn count_servers(appliance: &Appliance) -> anyhow::Result<usize> {
    let request = http::Request::get("/apis/metal.sidero.dev/v1alpha2/servers").body(Vec::new())?;
    let list: Value = appliance.client.request(request).await?;
    Ok(list["items"].as_array().map_or(0, Vec::len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_registrations_are_valid_and_distinct() {
        let a = registration(1).expect("valid");
        let b = registration(2).expect("valid");
        assert_ne!(a.smbios_uuid, b.smbios_uuid);
        assert!(a.boot_mac.is_some());
        let text = serde_json::to_string(&a).expect("serializes");
        let back: Registration = serde_json::from_str(&text).expect("round-trips");
        assert_eq!(back, a);
    }

    #[test]
    fn percentiles_pick_from_sorted_samples() {
        let samples = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&samples, 0.5), 3.0);
        assert_eq!(percentile(&samples, 1.0), 5.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
