//! Durability: SIGKILL in the middle of a stream of acknowledged writes loses none of them, and
//! the resourceVersion counter never goes backwards across the restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Appliance;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;

fn configmaps() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_nothing_acknowledged() {
    let mut appliance = Appliance::start();
    let client = appliance.client().await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &configmaps());

    // Several writers create objects as fast as they can and record what was acknowledged.
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"i": i.to_string()}
                }))
                .unwrap();
                match api.create(&PostParams::default(), &obj).await {
                    Ok(created) => {
                        let rv = created.metadata.resource_version.unwrap().parse().unwrap();
                        acked.lock().unwrap().push((name, rv));
                    }
                    // The server died under us: anything unacknowledged may or may not exist.
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the stream run, then kill the server while writes are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    appliance.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    let highest = acked.iter().map(|(_, rv)| *rv).max().unwrap();

    appliance.spawn();
    let api: Api<DynamicObject> =
        Api::namespaced_with(appliance.client().await, "default", &configmaps());
    let list = api.list(&ListParams::default()).await.unwrap();
    let present: std::collections::HashSet<String> = list
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !present.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged objects were lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        list_rv >= highest,
        "resourceVersion went backwards: {list_rv} < {highest}"
    );

    // A new write after the restart gets a version above everything acknowledged before.
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv > highest, "new version {rv} not above {highest}");
}
