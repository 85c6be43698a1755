//! kubectl v1.32 against the embedded API server: the commands an operator types (apply, get with
//! printer columns and selectors, patch, wait, delete with finalizers, server-side apply,
//! namespaces, secrets, events, discovery, explain, watch) behave as they do against
//! kube-apiserver.

mod common;

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Appliance, eventually};
use serde_json::{Value, json};

const UUID_A: &str = "4c4c4544-0035-5910-8031-c2c04f4a4d31";
const UUID_B: &str = "4c4c4544-0035-5910-8031-c2c04f4a4d32";
const UUID_C: &str = "4c4c4544-0035-5910-8031-c2c04f4a4d33";
const UUID_D: &str = "4c4c4544-0035-5910-8031-c2c04f4a4d34";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs kubectl and asserts that it failed, returning its standard error.
fn kubectl_err(a: &Appliance, args: &[&str]) -> String {
    let out = a.kubectl(args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded but should have failed:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

/// A Server manifest with an optional `rack` label.
fn server_yaml(name: &str, hostname: &str, rack: Option<&str>) -> String {
    let labels = match rack {
        Some(r) => format!("  labels:\n    rack: {r}\n"),
        None => String::new(),
    };
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: {name}
{labels}spec:
  hostname: {hostname}
  accepted: false
  cordoned: false
  bmc:
    endpoint: 10.0.0.5
"
    )
}

fn create_server(a: &Appliance, name: &str, hostname: &str, rack: Option<&str>) {
    let out = a.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&server_yaml(name, hostname, rack)),
    );
    assert!(
        out.status.success(),
        "creating server {name}: {}",
        stderr(&out)
    );
}

fn get_json(a: &Appliance, args: &[&str]) -> Value {
    let mut full: Vec<&str> = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&a.kubectl_ok(&full)).expect("kubectl -o json prints JSON")
}

/// Starts kubectl in the background against the appliance.
fn spawn_kubectl(a: &Appliance, args: &[&str]) -> Child {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &a.kubeconfig)
        .env("HOME", a.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl (preinstalled at /usr/bin/kubectl)")
}

/// Waits up to `secs` for a background kubectl to exit and returns its output.
fn finish(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("polling kubectl").is_some() {
            return child.wait_with_output().expect("kubectl output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("kubectl output");
            panic!(
                "{what} did not finish within {secs}s\nstdout: {}\nstderr: {}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whitespace-separated words of a kubectl table line.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The table row (as words) whose first word is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(words)
        .find(|w| w.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

#[test]
fn apply_reports_created_then_unchanged_then_configured() {
    let a = Appliance::start();
    let path = a.file(
        "server.yaml",
        &server_yaml(UUID_A, "node-1", Some("rack-a")),
    );
    let path = path.to_str().unwrap();

    let first = a.kubectl_ok(&["apply", "-f", path]);
    assert!(
        first.contains(&format!("server.metal.sidero.dev/{UUID_A} created")),
        "{first}"
    );
    let second = a.kubectl_ok(&["apply", "-f", path]);
    assert!(
        second.contains(&format!("server.metal.sidero.dev/{UUID_A} unchanged")),
        "{second}"
    );

    a.file(
        "server.yaml",
        &server_yaml(UUID_A, "node-renamed", Some("rack-a")),
    );
    let third = a.kubectl_ok(&["apply", "-f", path]);
    assert!(
        third.contains(&format!("server.metal.sidero.dev/{UUID_A} configured")),
        "{third}"
    );
    let hostname = a.kubectl_ok(&["get", "server", UUID_A, "-o", "jsonpath={.spec.hostname}"]);
    assert_eq!(hostname, "node-renamed");
}

#[test]
fn operator_serverclass_and_template_round_trip_through_apply() {
    let a = Appliance::start();
    let yaml = r#"apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: worker-large
spec:
  qualifiers:
    cpu:
      - manufacturer: "AMD"
        version: "EPYC.*"
    systemInformation:
      - manufacturer: "Dell Inc."
  selector:
    matchLabels:
      rack: rack-a
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachineTemplate
metadata:
  name: workers
  namespace: default
spec:
  template:
    spec:
      serverClassRef:
        apiVersion: metal.sidero.dev/v1alpha2
        kind: ServerClass
        name: worker-large
"#;
    let path = a.file("operator.yaml", yaml);
    let out = a.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.contains("serverclass.metal.sidero.dev/worker-large created"),
        "{out}"
    );
    assert!(
        out.contains("metalmachinetemplate.infrastructure.cluster.x-k8s.io/workers created"),
        "{out}"
    );

    let class = get_json(&a, &["serverclass", "worker-large"]);
    assert_eq!(
        class["spec"],
        json!({
            "qualifiers": {
                "cpu": [{"manufacturer": "AMD", "version": "EPYC.*"}],
                "systemInformation": [{"manufacturer": "Dell Inc."}]
            },
            "selector": {"matchLabels": {"rack": "rack-a"}}
        })
    );
    let template = get_json(&a, &["metalmachinetemplate", "workers", "-n", "default"]);
    assert_eq!(
        template["spec"],
        json!({"template": {"spec": {"serverClassRef": {
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "name": "worker-large"
        }}}})
    );
}

#[test]
fn patch_merge_and_json_work_and_strategic_is_refused_for_custom_resources() {
    let a = Appliance::start();
    create_server(&a, UUID_A, "node-1", None);

    a.kubectl_ok(&[
        "patch",
        "server",
        UUID_A,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"accepted":true}}"#,
    ]);
    let accepted = a.kubectl_ok(&["get", "server", UUID_A, "-o", "jsonpath={.spec.accepted}"]);
    assert_eq!(accepted, "true");

    a.kubectl_ok(&[
        "patch", "server", UUID_A, "--type", "json", "-p",
        r#"[{"op":"test","path":"/spec/hostname","value":"node-1"},{"op":"replace","path":"/spec/cordoned","value":true}]"#,
    ]);
    let cordoned = a.kubectl_ok(&["get", "server", UUID_A, "-o", "jsonpath={.spec.cordoned}"]);
    assert_eq!(cordoned, "true");

    let err = kubectl_err(
        &a,
        &[
            "patch",
            "server",
            UUID_A,
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/hostname","value":"other"},{"op":"replace","path":"/spec/cordoned","value":false}]"#,
        ],
    );
    assert!(
        err.contains("/spec/hostname"),
        "failing test op error does not name the path: {err}"
    );
    assert!(
        err.contains("test") || err.contains("did not match"),
        "failing test op error does not say the test failed: {err}"
    );
    let cordoned = a.kubectl_ok(&["get", "server", UUID_A, "-o", "jsonpath={.spec.cordoned}"]);
    assert_eq!(
        cordoned, "true",
        "a patch whose test op failed must change nothing"
    );

    let err = kubectl_err(
        &a,
        &[
            "patch",
            "server",
            UUID_A,
            "-p",
            r#"{"spec":{"hostname":"x"}}"#,
        ],
    );
    assert!(
        err.contains(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        ),
        "{err}"
    );
}

#[test]
fn get_prints_the_printer_columns_of_servers_classes_and_environments() {
    let a = Appliance::start();
    create_server(&a, UUID_A, "node-1", Some("rack-a"));
    a.kubectl_ok(&[
        "patch",
        "server",
        UUID_A,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"power":"on","inUse":true,"isClean":false}}"#,
    ]);

    let out = a.kubectl_ok(&["get", "servers"]);
    let header = words(out.lines().next().unwrap_or_default());
    assert_eq!(
        header,
        [
            "NAME",
            "HOSTNAME",
            "BMC",
            "IP",
            "ACCEPTED",
            "CORDONED",
            "ALLOCATED",
            "CLEAN",
            "POWER",
            "AGE"
        ],
        "{out}"
    );
    let r = row(&out, UUID_A);
    assert_eq!(
        &r[..8],
        [
            UUID_A, "node-1", "10.0.0.5", "false", "false", "true", "false", "on"
        ],
        "{out}"
    );
    assert_eq!(r.len(), 9, "{out}");

    // Priority-1 columns appear only with -o wide (MetalCluster's Endpoint).
    let cluster = "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalCluster
metadata: {name: production, namespace: default}
spec:
  controlPlaneEndpoint: {host: 10.5.0.10, port: 6443}
";
    let out = a.kubectl_stdin(&["apply", "-f", "-"], Some(cluster));
    assert!(out.status.success(), "{}", stderr(&out));
    let narrow = a.kubectl_ok(&["get", "metalclusters"]);
    assert!(!narrow.contains("ENDPOINT"), "{narrow}");
    let wide = a.kubectl_ok(&["get", "metalclusters", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or_default().contains("ENDPOINT"),
        "{wide}"
    );
    assert!(wide.contains("10.5.0.10"), "{wide}");

    let labelled = a.kubectl_ok(&["get", "servers", "--show-labels"]);
    let header = words(labelled.lines().next().unwrap_or_default());
    assert_eq!(header.last(), Some(&"LABELS"), "{labelled}");
    assert_eq!(
        row(&labelled, UUID_A).last(),
        Some(&"rack=rack-a"),
        "{labelled}"
    );

    let class = "apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata:
  name: pool
spec: {}
";
    let out = a.kubectl_stdin(&["create", "-f", "-"], Some(class));
    assert!(out.status.success(), "{}", stderr(&out));
    // The ServerClass controller fills the lists: UUID_A is in use, UUID_B accepted and clean.
    create_server(&a, UUID_B, "node-2", Some("rack-a"));
    a.kubectl_ok(&[
        "patch",
        "server",
        UUID_B,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"accepted":true}}"#,
    ]);
    a.kubectl_ok(&[
        "patch",
        "server",
        UUID_B,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"isClean":true}}"#,
    ]);
    let out = eventually(15, "the pool class to list both servers", || {
        let out = a.kubectl_ok(&["get", "serverclasses"]);
        out.lines()
            .any(|l| l.starts_with("pool") && l.contains(UUID_A) && l.contains(UUID_B))
            .then_some(out)
    });
    assert_eq!(
        words(out.lines().next().unwrap_or_default()),
        ["NAME", "AVAILABLE", "IN", "USE", "AGE"],
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("pool"))
        .expect("pool row");
    let available = line
        .find(UUID_B)
        .unwrap_or_else(|| panic!("available server missing: {out}"));
    let in_use = line
        .find(UUID_A)
        .unwrap_or_else(|| panic!("in-use server missing: {out}"));
    assert!(
        available < in_use,
        "AVAILABLE must come before IN USE: {out}"
    );

    // The Environment controller downloads the assets (from a loopback upstream) and sets
    // READY itself.
    let upstream = common::file_server(
        vec![
            ("vmlinuz", b"kernel".to_vec()),
            ("initramfs.xz", b"initrd".to_vec()),
        ],
        &[],
    );
    let env = format!(
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata:
  name: talos
spec:
  kernel:
    url: {0}/vmlinuz
    args: [console=ttyS0]
  initrd:
    url: {0}/initramfs.xz
",
        upstream.url
    );
    let out = a.kubectl_stdin(&["create", "-f", "-"], Some(&env));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut last = String::new();
    let ready = (0..150).find_map(|_| {
        let out = a.kubectl_ok(&["get", "environments"]);
        if row(&out, "talos").get(3) == Some(&"True") {
            return Some(out);
        }
        last = out;
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    let out = ready.unwrap_or_else(|| panic!("the Environment never became ready:\n{last}"));
    assert_eq!(
        words(out.lines().next().unwrap_or_default()),
        ["NAME", "KERNEL", "INITRD", "READY", "AGE"],
        "{out}"
    );
    let r = row(&out, "talos");
    assert_eq!(
        &r[..4],
        [
            "talos",
            &format!("{}/vmlinuz", upstream.url),
            &format!("{}/initramfs.xz", upstream.url),
            "True"
        ],
        "{out}"
    );
}

#[test]
fn label_and_field_selectors_select_servers() {
    let a = Appliance::start();
    create_server(&a, UUID_A, "a", Some("rack-a"));
    create_server(&a, UUID_B, "b", Some("rack-b"));
    create_server(&a, UUID_C, "c", Some("rack-c"));
    create_server(&a, UUID_D, "d", None);
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get", "servers"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "jsonpath={.items[*].metadata.name}"]);
        let mut n: Vec<String> = a
            .kubectl_ok(&full)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&["-l", "rack=rack-a"]), [UUID_A]);
    assert_eq!(names(&["-l", "rack in (rack-a,rack-b)"]), [UUID_A, UUID_B]);
    assert_eq!(names(&["-l", "!rack"]), [UUID_D]);
    assert_eq!(names(&["-l", "rack!=rack-a"]), [UUID_B, UUID_C, UUID_D]);
    assert_eq!(
        names(&["--field-selector", &format!("metadata.name={UUID_C}")]),
        [UUID_C]
    );
    assert_eq!(names(&[]), [UUID_A, UUID_B, UUID_C, UUID_D]);

    let err = kubectl_err(
        &a,
        &["get", "servers", "--field-selector", "spec.hostname=a"],
    );
    assert!(err.contains("field label not supported"), "{err}");
}

#[test]
fn wait_for_jsonpath_returns_once_status_changes() {
    let a = Appliance::start();
    create_server(&a, UUID_A, "node-1", None);
    let condition = "--for=jsonpath={.status.power}=on";
    let mut wait = spawn_kubectl(
        &a,
        &[
            "wait",
            condition,
            &format!("server/{UUID_A}"),
            "--timeout=30s",
        ],
    );
    // Give kubectl time to fetch the object and start watching; then check it is really waiting.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        wait.try_wait().expect("polling kubectl wait").is_none(),
        "kubectl wait returned before the status changed"
    );

    let kubeconfig = a.kubeconfig.clone();
    let home = a.dir.path().to_owned();
    let patcher = std::thread::spawn(move || {
        Command::new("kubectl")
            .args([
                "patch",
                "server",
                UUID_A,
                "--subresource=status",
                "--type",
                "merge",
                "-p",
                r#"{"status":{"power":"on"}}"#,
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home)
            .output()
            .expect("kubectl patch")
    });
    let patched = patcher.join().expect("patch thread");
    assert!(
        patched.status.success(),
        "status patch failed: {}",
        stderr(&patched)
    );

    let out = finish(wait, 30, "kubectl wait");
    assert!(
        out.status.success(),
        "kubectl wait failed: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("condition met"), "{}", stdout(&out));
}

#[test]
fn delete_waits_for_finalizers_to_be_removed() {
    let a = Appliance::start();
    let yaml = format!(
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: {UUID_A}
  finalizers: [example.com/hold]
spec:
  hostname: node-1
"
    );
    let out = a.kubectl_stdin(&["create", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));

    let mut delete = spawn_kubectl(
        &a,
        &["delete", "server", UUID_A, "--wait=true", "--timeout=60s"],
    );
    // The finalizer holds the object; the delete must still be waiting a second later.
    let started = Instant::now();
    eventually(10, "deletionTimestamp to be set", || {
        let obj = get_json(&a, &["server", UUID_A]);
        obj["metadata"]["deletionTimestamp"].as_str().map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    assert!(
        delete.try_wait().expect("polling kubectl delete").is_none(),
        "kubectl delete --wait returned while the finalizer was still present"
    );
    // The object is still readable while finalizing.
    a.kubectl_ok(&["get", "server", UUID_A]);

    let kubeconfig = a.kubeconfig.clone();
    let home = a.dir.path().to_owned();
    let remover = std::thread::spawn(move || {
        Command::new("kubectl")
            .args([
                "patch",
                "server",
                UUID_A,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home)
            .output()
            .expect("kubectl patch")
    });
    let removed = remover.join().expect("finalizer removal thread");
    assert!(
        removed.status.success(),
        "removing the finalizer failed: {}",
        stderr(&removed)
    );

    let out = finish(delete, 60, "kubectl delete --wait");
    assert!(
        out.status.success(),
        "kubectl delete failed: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("deleted"), "{}", stdout(&out));
    let err = kubectl_err(&a, &["get", "server", UUID_A]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[test]
fn server_side_apply_detects_conflicts_and_forces_them() {
    let a = Appliance::start();
    let path = a.file("server.yaml", &server_yaml(UUID_A, "node-1", None));
    let out = a.kubectl_ok(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "server.metal.sidero.dev/{UUID_A} serverside-applied"
        )),
        "{out}"
    );

    let other = a.file(
        "other.yaml",
        &format!(
            "apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata:
  name: {UUID_A}
spec:
  hostname: taken-over
"
        ),
    );
    let other = other.to_str().unwrap();
    let err = kubectl_err(
        &a,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            other,
        ],
    );
    assert!(err.to_lowercase().contains("conflict"), "{err}");
    assert!(
        err.contains(".spec.hostname"),
        "conflict does not name the field: {err}"
    );
    assert!(
        err.contains("kubectl"),
        "conflict does not name the owning manager: {err}"
    );
    let hostname = a.kubectl_ok(&["get", "server", UUID_A, "-o", "jsonpath={.spec.hostname}"]);
    assert_eq!(
        hostname, "node-1",
        "a conflicting apply must change nothing"
    );

    let out = a.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        other,
    ]);
    assert!(out.contains("serverside-applied"), "{out}");
    let hostname = a.kubectl_ok(&["get", "server", UUID_A, "-o", "jsonpath={.spec.hostname}"]);
    assert_eq!(hostname, "taken-over");
}

#[test]
fn status_subresource_patches_status_only_and_main_resource_ignores_status() {
    let a = Appliance::start();
    create_server(&a, UUID_A, "node-1", None);

    a.kubectl_ok(&[
        "patch",
        "server",
        UUID_A,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"power":"on"},"spec":{"hostname":"changed-through-status"}}"#,
    ]);
    let obj = get_json(&a, &["server", UUID_A]);
    assert_eq!(obj["status"]["power"], "on");
    assert_eq!(
        obj["spec"]["hostname"], "node-1",
        "the status subresource changed spec"
    );

    a.kubectl_ok(&[
        "patch",
        "server",
        UUID_A,
        "--type",
        "merge",
        "-p",
        r#"{"status":{"power":"off"},"spec":{"cordoned":true}}"#,
    ]);
    let obj = get_json(&a, &["server", UUID_A]);
    assert_eq!(
        obj["status"]["power"], "on",
        "a patch of the main resource changed status"
    );
    assert_eq!(obj["spec"]["cordoned"], true);
}

#[test]
fn deleting_a_namespace_removes_its_contents() {
    let a = Appliance::start();
    a.kubectl_ok(&["create", "namespace", "team-a"]);
    a.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team-a",
        "--from-literal=k=v",
    ]);
    let machine = "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachine
metadata:
  name: worker-0
spec:
  serverClassRef:
    apiVersion: metal.sidero.dev/v1alpha2
    kind: ServerClass
    name: any
";
    let out = a.kubectl_stdin(&["create", "-n", "team-a", "-f", "-"], Some(machine));
    assert!(out.status.success(), "{}", stderr(&out));
    a.kubectl_ok(&["get", "configmap", "settings", "-n", "team-a"]);
    a.kubectl_ok(&["get", "metalmachine", "worker-0", "-n", "team-a"]);

    let out = a.kubectl_ok(&["delete", "namespace", "team-a"]);
    assert!(out.contains("namespace \"team-a\" deleted"), "{out}");
    eventually(30, "namespace team-a to disappear", || {
        let out = a.kubectl(&["get", "ns", "team-a"]);
        (!out.status.success() && stderr(&out).contains("NotFound")).then_some(())
    });
    let err = kubectl_err(&a, &["get", "configmap", "settings", "-n", "team-a"]);
    assert!(err.contains("not found"), "{err}");
    let err = kubectl_err(&a, &["get", "metalmachine", "worker-0", "-n", "team-a"]);
    assert!(err.contains("not found"), "{err}");
    let left = a.kubectl_ok(&["get", "configmaps,metalmachines", "-A", "-o", "json"]);
    assert!(
        !left.contains("\"team-a\""),
        "objects of team-a survived: {left}"
    );
}

#[test]
fn creating_in_a_missing_namespace_is_not_found() {
    let a = Appliance::start();
    let machine = "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachine
metadata:
  name: worker-0
spec: {}
";
    let out = a.kubectl_stdin(&["create", "-n", "nope", "-f", "-"], Some(machine));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"namespaces "nope" not found"#),
        "{}",
        stderr(&out)
    );
    let configmap = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
";
    let out = a.kubectl_stdin(&["create", "-n", "nope", "-f", "-"], Some(configmap));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"namespaces "nope" not found"#),
        "{}",
        stderr(&out)
    );

    let err = kubectl_err(
        &a,
        &[
            "create",
            "configmap",
            "x",
            "-n",
            "nope",
            "--from-literal=k=v",
        ],
    );
    assert!(err.contains(r#"namespaces "nope" not found"#), "{err}");
}

#[test]
fn secret_from_literal_reads_back_as_base64() {
    let a = Appliance::start();
    a.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=user=admin",
    ]);
    let data = a.kubectl_ok(&["get", "secret", "s", "-o", "jsonpath={.data.user}"]);
    assert_eq!(data, "YWRtaW4=", "base64 of \"admin\"");
}

#[test]
fn a_core_event_is_listed_by_both_event_apis() {
    let a = Appliance::start();

    let event = format!(
        "apiVersion: v1
kind: Event
metadata:
  name: server-accepted.1
  namespace: default
involvedObject:
  apiVersion: metal.sidero.dev/v1alpha2
  kind: Server
  name: {UUID_A}
reason: Accepted
message: server admitted by the operator
type: Normal
firstTimestamp: \"2024-01-01T00:00:00Z\"
lastTimestamp: \"2024-01-01T00:00:00Z\"
count: 1
source:
  component: siderite
"
    );
    let path = a.file("event.yaml", &event);
    a.kubectl_ok(&["create", "-f", path.to_str().unwrap()]);

    let out = a.kubectl_ok(&["get", "events"]);
    let header = words(out.lines().next().unwrap_or_default());
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    let line = out.lines().nth(1).unwrap_or_default();
    assert!(line.contains("Normal"), "{out}");
    assert!(line.contains("Accepted"), "{out}");
    assert!(line.contains(&format!("server/{UUID_A}")), "{out}");
    assert!(line.contains("server admitted by the operator"), "{out}");

    // events.k8s.io/v1 prints with the same server-side printer as core Events.
    let out = a.kubectl_ok(&["get", "events.v1.events.k8s.io"]);
    let header = words(out.lines().next().unwrap_or_default());
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    let line = out.lines().nth(1).unwrap_or_default();
    assert!(line.contains("Accepted"), "{out}");
    assert!(line.contains(&format!("server/{UUID_A}")), "{out}");
    assert!(line.contains("server admitted by the operator"), "{out}");
    assert!(!line.contains("<unknown>"), "LAST SEEN not computed: {out}");
    let v1 = get_json(&a, &["events.v1.events.k8s.io", "server-accepted.1"]);
    assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v1["note"], "server admitted by the operator");
    assert_eq!(v1["regarding"]["name"], UUID_A);
}

#[test]
fn discovery_api_resources_and_explain() {
    let a = Appliance::start();
    let version: Value =
        serde_json::from_str(&a.kubectl_ok(&["get", "--raw", "/version"])).unwrap();
    assert_eq!(version["major"], "1");
    assert!(
        version["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{version}"
    );

    let api: Value = serde_json::from_str(&a.kubectl_ok(&["get", "--raw", "/api"])).unwrap();
    assert_eq!(api["kind"], "APIVersions");
    assert!(
        api["versions"].as_array().unwrap().contains(&json!("v1")),
        "{api}"
    );

    let apis: Value = serde_json::from_str(&a.kubectl_ok(&["get", "--raw", "/apis"])).unwrap();
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for g in [
        "metal.sidero.dev",
        "infrastructure.cluster.x-k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(groups.contains(&g), "{g} missing from /apis: {groups:?}");
    }

    let list: Value =
        serde_json::from_str(&a.kubectl_ok(&["get", "--raw", "/apis/metal.sidero.dev/v1alpha2"]))
            .unwrap();
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "metal.sidero.dev/v1alpha2");
    let names: Vec<&str> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for r in ["servers", "servers/status", "serverclasses", "environments"] {
        assert!(names.contains(&r), "{r} missing: {names:?}");
    }
    let servers = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "servers")
        .unwrap();
    assert_eq!(servers["kind"], "Server");
    assert_eq!(servers["namespaced"], false);

    let out = a.kubectl_ok(&["api-resources"]);
    let server_row = out
        .lines()
        .map(words)
        .find(|w| w.first() == Some(&"servers"))
        .unwrap_or_else(|| panic!("servers missing from api-resources:\n{out}"));
    assert!(
        server_row.contains(&"metal.sidero.dev/v1alpha2"),
        "{server_row:?}"
    );
    assert!(server_row.contains(&"Server"), "{server_row:?}");
    assert!(out.lines().any(|l| l.starts_with("namespaces ")), "{out}");

    let out = a.kubectl(&["explain", "server.spec"]);
    assert!(
        out.status.success(),
        "kubectl explain failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("KIND:") && text.contains("Server"), "{text}");
    for field in ["accepted", "hostname", "bmc", "cordoned"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(field)),
            "field {field} missing from explain:\n{text}"
        );
    }
}

#[test]
fn get_watch_prints_rows_as_servers_are_added() {
    let a = Appliance::start();
    create_server(&a, UUID_A, "first", None);
    let mut watch = spawn_kubectl(&a, &["get", "servers", "-w"]);
    let seen = Arc::new(Mutex::new(String::new()));
    let mut pipe = watch.stdout.take().expect("piped stdout");
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    eventually(30, "the initial row", || {
        seen.lock().unwrap().contains(UUID_A).then_some(())
    });
    assert!(
        seen.lock().unwrap().contains("HOSTNAME"),
        "{}",
        seen.lock().unwrap()
    );
    assert!(!seen.lock().unwrap().contains(UUID_B));

    create_server(&a, UUID_B, "second", None);
    eventually(30, "a row for the added server", || {
        seen.lock()
            .unwrap()
            .lines()
            .any(|l| l.contains(UUID_B) && l.contains("second"))
            .then_some(())
    });
    let still_running = watch.try_wait().expect("polling kubectl watch").is_none();
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    assert!(still_running, "kubectl get -w exited on its own");
}
