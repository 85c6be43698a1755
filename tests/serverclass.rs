//! The ServerClass controller against a real `siderite serve`: the seed ServerClass applied with
//! kubectl lists exactly the matching, available servers; status changes move servers between
//! available and in use; an invalid class reports why and lists nothing; `any` is built in;
//! servers carry labels derived from their inventory.

mod common;

use common::{Appliance, eventually};
use serde_json::Value;

/// The seed ServerClass (DESIGN.md), in the v1alpha1 list form published cluster YAML uses.
const SEED_CLASS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seed/worker-large.yaml"
));

/// A Server as the agent would have registered it, accepted, in `rack`.
fn server(name: &str, maker: &str, cpu: &str, rack: &str) -> String {
    format!(
        r#"apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {{name: {name}, labels: {{rack: {rack}}}}}
spec:
  accepted: true
  hardware:
    system: {{manufacturer: "{maker}"}}
    compute:
      processors: [{{manufacturer: AMD, productName: "{cpu}"}}]
"#
    )
}

fn set_status(appliance: &Appliance, name: &str, status: &str) {
    appliance.kubectl_ok(&[
        "patch",
        "server",
        name,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"status":{status}}}"#),
    ]);
}

fn class_status(appliance: &Appliance, name: &str) -> Value {
    let text = appliance.kubectl_ok(&["get", "serverclass", name, "-o", "json"]);
    serde_json::from_str::<Value>(&text).expect("JSON")["status"].clone()
}

fn names(status: &Value, list: &str) -> Vec<String> {
    status[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn seed_class_lists_matching_available_servers_and_follows_their_state() {
    let appliance = Appliance::start();
    let epyc = "AMD EPYC 7543 32-Core Processor";
    let mut manifests = vec![SEED_CLASS.to_owned()];
    manifests.push(server("dell-a1", "Dell Inc.", epyc, "rack-a"));
    manifests.push(server("dell-a2", "Dell Inc.", epyc, "rack-a"));
    manifests.push(server("dell-b1", "Dell Inc.", epyc, "rack-b"));
    manifests.push(server("hpe-a1", "HPE", epyc, "rack-a"));
    manifests.push(server(
        "dell-opteron",
        "Dell Inc.",
        "AMD Opteron 6376",
        "rack-a",
    ));
    let file = appliance.file("cluster.yaml", &manifests.join("---\n"));
    appliance.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    for name in ["dell-a1", "dell-a2", "dell-b1", "hpe-a1", "dell-opteron"] {
        set_status(&appliance, name, r#"{"isClean":true}"#);
    }

    eventually(15, "worker-large to list dell-a1 and dell-a2", || {
        let status = class_status(&appliance, "worker-large");
        (names(&status, "serversAvailable") == ["dell-a1", "dell-a2"]).then_some(())
    });
    // Binding one (what allocation will do) moves it to in use; a dirty one is not available.
    set_status(&appliance, "dell-a1", r#"{"inUse":true,"isClean":false}"#);
    set_status(&appliance, "dell-a2", r#"{"isClean":false}"#);
    eventually(15, "dell-a1 in use, nothing available", || {
        let status = class_status(&appliance, "worker-large");
        (names(&status, "serversInUse") == ["dell-a1"]
            && names(&status, "serversAvailable").is_empty())
        .then_some(())
    });
    // The built-in class selects every available server.
    eventually(
        15,
        "class any to list the three other clean servers",
        || {
            let status = class_status(&appliance, "any");
            (names(&status, "serversAvailable") == ["dell-b1", "dell-opteron", "hpe-a1"])
                .then_some(())
        },
    );
    // The Server controller labels servers from their inventory, for plain label selectors.
    eventually(15, "inventory labels on the four Dells", || {
        let dells = appliance.kubectl_ok(&[
            "get",
            "servers",
            "-l",
            "hardware.siderite.dev/system-manufacturer=Dell-Inc",
            "-o",
            "name",
        ]);
        (dells.lines().count() == 4).then_some(())
    });
    let table = appliance.kubectl_ok(&["get", "serverclasses"]);
    assert!(
        table.contains("worker-large") && table.contains("any"),
        "{table}"
    );
}

#[test]
fn invalid_class_reports_why_and_lists_nothing() {
    let appliance = Appliance::start();
    let file = appliance.file(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            server("dell-a1", "Dell Inc.", "AMD EPYC 7543", "rack-a"),
            r#"apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {name: broken}
spec:
  qualifiers:
    cpu: [{version: "EPYC["}]
    expressions: [{key: compute.totalCoreCount, operator: Gte, values: ["64"]}]
"#
        ),
    );
    appliance.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    set_status(&appliance, "dell-a1", r#"{"isClean":true}"#);
    let message = eventually(15, "the Valid condition", || {
        let status = class_status(&appliance, "broken");
        let valid = status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Valid")?
            .clone();
        (valid["status"] == "False").then(|| valid["message"].as_str().unwrap_or("").to_owned())
    });
    assert!(
        message.contains("EPYC[") && message.contains("cpu[0]"),
        "{message}"
    );
    assert!(names(&class_status(&appliance, "broken"), "serversAvailable").is_empty());
}
