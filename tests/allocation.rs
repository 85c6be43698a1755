//! Allocation against the embedded API server, with two controller replicas running at once
//! (the appliance, and a second `siderite serve --kubeconfig` pointed at it) and no leader
//! election: 50 MetalMachines race for 40 eligible servers; 40 get one each through their
//! ServerBinding locks, 10 wait and say why, no server is bound twice. Deleting a MetalMachine
//! frees its server dirty; once wiped (clean), a waiting machine gets it. A MetalCluster is
//! ready once it names its control plane endpoint.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Appliance, owned_metal_machine, ready_cluster, wait_for};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use siderite::api::{MetalMachine, Server, ServerBinding};

const SERVERS: usize = 40;
const MACHINES: usize = 50;
const NS: &str = "default";

/// The second replica; killed when dropped.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Server names bound per MetalMachine (`spec.serverRef`), for the ones that have one.
async fn bound(machines: &Api<MetalMachine>) -> Vec<(String, String)> {
    machines
        .list(&Default::default())
        .await
        .expect("list MetalMachines")
        .items
        .into_iter()
        .filter_map(|m| {
            let server = m.spec.server_ref.as_ref()?.name.clone()?;
            Some((m.metadata.name.clone().unwrap_or_default(), server))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_machines_race_for_forty_servers_across_two_replicas() {
    // The embedded mode serves the stand-in Cluster and Machine CRDs itself.
    let appliance = Appliance::start();
    let replica_state = appliance.dir.path().join("replica");
    let replica = Replica(
        Command::new(env!("CARGO_BIN_EXE_siderite"))
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--leader-elect=false",
                "--kubeconfig",
            ])
            .arg(&appliance.kubeconfig)
            .arg("--state-dir")
            .arg(&replica_state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the second replica"),
    );
    let client = appliance.client().await;
    let servers: Api<Server> = Api::all(client.clone());
    let machines: Api<MetalMachine> = Api::namespaced(client.clone(), NS);
    let bindings: Api<ServerBinding> = Api::all(client.clone());

    for i in 0..SERVERS {
        let name = format!("00000000-0000-0000-0000-{i:012x}");
        let server: Server = serde_json::from_value(json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": name},
            "spec": {"accepted": true, "hardware": {"system": {"manufacturer": "Dell Inc."}}},
        }))
        .unwrap();
        servers
            .create(&PostParams::default(), &server)
            .await
            .unwrap();
        servers
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"isClean": true}})),
            )
            .await
            .unwrap();
    }
    ready_cluster(&client, "prod").await;

    // Cluster API's side: a Machine with bootstrap data, owning its MetalMachine.
    for i in 0..MACHINES {
        owned_metal_machine(&client, &format!("prod-{i:02}"), "prod", "any").await;
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    let pairs = loop {
        let pairs = bound(&machines).await;
        if pairs.len() == SERVERS {
            break pairs;
        }
        if Instant::now() > deadline {
            let conditions: Vec<String> = machines
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|m| m.spec.server_ref.is_none())
                .map(|m| {
                    format!(
                        "{:?}: {:?}",
                        m.metadata.name,
                        m.status.as_ref().map(|s| &s.conditions)
                    )
                })
                .take(5)
                .collect();
            let all = bindings.list(&Default::default()).await.unwrap().items;
            eprintln!("bindings: {}", all.len());
            let mut seen = std::collections::BTreeMap::new();
            for (m, s) in &pairs {
                if let Some(other) = seen.insert(s.clone(), m.clone()) {
                    let b = all
                        .iter()
                        .find(|b| b.metadata.name.as_deref() == Some(s.as_str()));
                    eprintln!(
                        "server {s} referenced by {m} and {other}; binding: {:?}",
                        b.map(|b| &b.spec.metal_machine_ref.name)
                    );
                }
            }
            let log = appliance.log_text();
            panic!(
                "{} of {SERVERS} bound after 90 s; some machines: {conditions:#?}\nlog tail:\n{}",
                pairs.len(),
                &log[log.len().saturating_sub(300)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let distinct: BTreeSet<&String> = pairs.iter().map(|(_, s)| s).collect();
    assert_eq!(
        distinct.len(),
        SERVERS,
        "a server is bound twice: {pairs:?}"
    );
    // Give both replicas time to do anything wrong, then look again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bound(&machines).await.len(), SERVERS);
    let binding_list = bindings.list(&Default::default()).await.unwrap().items;
    assert_eq!(binding_list.len(), SERVERS);
    for (machine, server) in &pairs {
        let binding = binding_list
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some(server.as_str()))
            .unwrap_or_else(|| panic!("no binding for {server}"));
        assert_eq!(
            binding.spec.metal_machine_ref.name.as_deref(),
            Some(machine.as_str())
        );
        let m = machines.get(machine).await.unwrap();
        assert_eq!(
            m.spec.provider_id.as_deref(),
            Some(format!("sidero://{server}").as_str())
        );
        let status = m.status.unwrap_or_default();
        assert!(status.ready && status.initialization.is_some_and(|i| i.provisioned));
        let s = servers.get(server).await.unwrap();
        assert!(
            s.status.unwrap_or_default().in_use,
            "{server} not marked in use"
        );
    }
    let waiting: Vec<MetalMachine> = machines
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|m| m.spec.server_ref.is_none())
        .collect();
    assert_eq!(waiting.len(), MACHINES - SERVERS);
    for m in &waiting {
        let ready = m
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .unwrap_or_else(|| panic!("no Ready condition on {:?}", m.metadata.name));
        assert_eq!(
            ready.reason.as_deref(),
            Some("WaitingForServer"),
            "{ready:?}"
        );
    }

    // Release: the server comes back dirty and free; once clean, a waiting machine gets it.
    let (released_machine, released_server) = pairs[0].clone();
    machines
        .delete(&released_machine, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the released server dirty and free", 30, || async {
        let s = servers.get(&released_server).await.ok()?;
        let status = s.status.unwrap_or_default();
        let gone = bindings.get_opt(&released_server).await.ok()?.is_none();
        (gone && !status.in_use && !status.is_clean).then_some(())
    })
    .await;
    servers
        .patch_status(
            &released_server,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"isClean": true}})),
        )
        .await
        .unwrap();
    let taker = wait_for("a waiting machine to take the wiped server", 60, || async {
        bound(&machines)
            .await
            .into_iter()
            .find(|(_, s)| *s == released_server)
            .map(|(m, _)| m)
    })
    .await;
    assert!(
        waiting
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some(taker.as_str()))
    );
    drop(replica);
}

#[test]
fn metal_cluster_is_ready_once_it_names_its_control_plane_endpoint() {
    let appliance = Appliance::start();
    let file = appliance.file(
        "cluster.yaml",
        r#"apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalCluster
metadata: {name: prod, namespace: default}
spec: {}
"#,
    );
    appliance.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let status = |appliance: &Appliance| -> serde_json::Value {
        let text = appliance.kubectl_ok(&["get", "metalcluster", "prod", "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["status"].clone()
    };
    let reason = common::eventually(15, "a Ready condition", || {
        status(&appliance)["conditions"][0]["reason"]
            .as_str()
            .map(str::to_owned)
    });
    assert_eq!(reason, "MissingControlPlaneEndpoint");
    assert_eq!(status(&appliance)["ready"], false);
    appliance.kubectl_ok(&[
        "patch",
        "metalcluster",
        "prod",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"controlPlaneEndpoint":{"host":"10.0.0.100","port":6443}}}"#,
    ]);
    common::eventually(15, "the MetalCluster ready", || {
        let s = status(&appliance);
        (s["ready"] == true
            && s["initialization"]["provisioned"] == true
            && s["apiEndpoints"][0]["host"] == "10.0.0.100")
            .then_some(())
    });
}
