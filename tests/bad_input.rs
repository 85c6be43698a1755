//! Bad requests get the Kubernetes `Status` kube-apiserver would send (right code, reason,
//! causes) and never a 5xx, and they leave the server answering and its objects intact.

mod common;

use std::process::Command;

use common::Appliance;
use serde_json::{Value, json};

const SERVERS: &str = "/apis/metal.sidero.dev/v1alpha2/servers";
const SEED: &str = "4c4c4544-0035-5910-8031-c2c04f4a4d30";

fn server(name: &str) -> Value {
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
        "metadata": {"name": name},
        "spec": {"hostname": "seed", "accepted": true}
    })
}

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Starts an appliance with one Server in it, to check later that bad requests left it alone.
async fn seeded() -> Appliance {
    let a = Appliance::start();
    let (code, created) = a
        .raw(
            "POST",
            SERVERS,
            Some("application/json"),
            body(&server(SEED)),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    // The seed is accepted, so the Server controller writes its Accepted condition once; wait
    // for that write so that it cannot race the writes a test makes.
    let path = format!("{SERVERS}/{SEED}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, current) = a.raw("GET", &path, None, Vec::new()).await;
        let conditions = current["status"]["conditions"].as_array().cloned();
        if conditions.is_some_and(|c| c.iter().any(|c| c["type"] == "Accepted")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Accepted condition: {current}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    a
}

/// Asserts that `code`/`status` form a failure Status with this code and reason.
fn assert_status(code: u16, status: &Value, want_code: u16, want_reason: &str) {
    assert!(code < 500, "server error {code}: {status}");
    assert_eq!(code, want_code, "{status}");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["apiVersion"], "v1", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["code"], want_code, "{status}");
    assert_eq!(status["reason"], want_reason, "{status}");
    assert!(
        status["message"].as_str().is_some_and(|m| !m.is_empty()),
        "Status without a message: {status}"
    );
}

fn causes_fields(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// After bad requests: `/version` answers and the seed Server is unchanged.
async fn assert_intact(a: &Appliance) {
    let (code, version) = a.raw("GET", "/version", None, Vec::new()).await;
    assert_eq!(code, 200, "{version}");
    assert_eq!(version["major"], "1");
    let (code, seed) = a
        .raw("GET", &format!("{SERVERS}/{SEED}"), None, Vec::new())
        .await;
    assert_eq!(code, 200, "{seed}");
    assert_eq!(seed["spec"]["hostname"], "seed");
    assert_eq!(seed["spec"]["accepted"], true);
    let (code, list) = a.raw("GET", SERVERS, None, Vec::new()).await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, [SEED], "bad requests created or removed objects");
}

/// The API server's URL, read from the written kubeconfig.
fn server_url(a: &Appliance) -> String {
    let text = std::fs::read_to_string(&a.kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server line in the kubeconfig")
        .trim()
        .to_owned()
}

/// GETs `path` with curl (TLS unverified) and the given extra headers; returns code and body.
fn curl(a: &Appliance, path: &str, headers: &[&str]) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-k", "-s", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("{}{path}", server_url(a)))
        .output()
        .expect("curl (preinstalled at /usr/bin/curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text
        .rsplit_once('\n')
        .expect("curl printed the status code");
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (code.trim().parse().expect("numeric status code"), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_bad_request_saying_what_is_wrong() {
    let a = seeded().await;
    let (code, status) = a
        .raw(
            "POST",
            SERVERS,
            Some("application/json"),
            br#"{"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": "x"#.to_vec(),
        )
        .await;
    assert_status(code, &status, 400, "BadRequest");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("JSON"),
        "message does not say the JSON is bad: {message}"
    );
    assert!(
        message.contains("line") || message.contains("column") || message.contains("EOF"),
        "message does not say where: {message}"
    );
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_yaml_is_a_bad_request() {
    let a = seeded().await;
    let yaml = b"apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: [unclosed\n  spec: {\n";
    let (code, status) = a
        .raw("POST", SERVERS, Some("application/yaml"), yaml.to_vec())
        .await;
    assert_status(code, &status, 400, "BadRequest");
    assert!(
        status["message"].as_str().unwrap().contains("YAML"),
        "{status}"
    );
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_three_mebibytes_is_refused_as_too_large() {
    let a = seeded().await;
    let big = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"blob": "x".repeat(3 * 1024 * 1024 + 1024)}
    });
    let (code, status) = a
        .raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/json"),
            body(&big),
        )
        .await;
    assert_status(code, &status, 413, "RequestEntityTooLarge");
    let (code, _) = a
        .raw(
            "GET",
            "/api/v1/namespaces/default/configmaps/big",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(code, 404, "the oversized object was stored");
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_resource_and_unknown_group_are_not_found() {
    let a = seeded().await;
    for path in [
        "/apis/metal.sidero.dev/v1alpha2/nonsense",
        "/apis/metal.sidero.dev/v1alpha2/nonsense/x",
        "/apis/metal.sidero.dev/v9",
        "/apis/nope.example.com/v1/things",
        "/apis/nope.example.com",
    ] {
        let (code, status) = a.raw("GET", path, None, Vec::new()).await;
        assert_status(code, &status, 404, "NotFound");
    }
    let (code, status) = a
        .raw(
            "POST",
            "/apis/metal.sidero.dev/v1alpha2/nonsense",
            Some("application/json"),
            body(&server("x")),
        )
        .await;
    assert_status(code, &status, 404, "NotFound");
    assert_intact(&a).await;
}

/// kube-apiserver has no handler for a group or version it does not serve (the CRD handler
/// delegates to its NotFound handler), so any method there is 404, not 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_unknown_groups_and_versions_are_not_found() {
    let a = seeded().await;
    for path in [
        "/apis/metal.sidero.dev/v9",
        "/apis/nope.example.com",
        "/apis/nope.example.com/v1",
    ] {
        let (code, status) = a
            .raw("POST", path, Some("application/json"), body(&server("x")))
            .await;
        assert!(code < 500, "POST {path}: {code} {status}");
        assert_eq!(code, 404, "POST {path}: {status}");
    }
    let (code, status) = a
        .raw(
            "POST",
            "/apis/metal.sidero.dev/v1alpha2",
            Some("application/json"),
            body(&server("x")),
        )
        .await;
    assert!(code < 500, "POST to a discovery document: {code} {status}");
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_object_name_is_unprocessable_with_a_cause_on_metadata_name() {
    let a = seeded().await;
    let (code, status) = a
        .raw(
            "POST",
            SERVERS,
            Some("application/json"),
            body(&server("Bad_Name")),
        )
        .await;
    assert_status(code, &status, 422, "Invalid");
    assert!(
        causes_fields(&status).contains(&"metadata.name".to_owned()),
        "{status}"
    );
    assert_eq!(status["details"]["name"], "Bad_Name", "{status}");
    assert_eq!(status["details"]["kind"], "Server", "{status}");

    // kubectl shows the same error.
    let manifest = serde_json::to_string(&server("Bad_Name")).unwrap();
    let out = a.kubectl_stdin(&["create", "-f", "-"], Some(&manifest));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Bad_Name") && err.contains("metadata.name"),
        "{err}"
    );
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violation_is_unprocessable_with_a_cause_on_the_field() {
    let a = seeded().await;
    let mut obj = server("4c4c4544-0035-5910-8031-c2c04f4a4d39");
    obj["spec"]["accepted"] = json!("yes");
    let (code, status) = a
        .raw("POST", SERVERS, Some("application/json"), body(&obj))
        .await;
    assert_status(code, &status, 422, "Invalid");
    assert!(
        causes_fields(&status).contains(&"spec.accepted".to_owned()),
        "{status}"
    );

    // The same violation by update and by merge patch of the existing object.
    let (code, mut current) = a
        .raw("GET", &format!("{SERVERS}/{SEED}"), None, Vec::new())
        .await;
    assert_eq!(code, 200);
    current["spec"]["accepted"] = json!("yes");
    let (code, status) = a
        .raw(
            "PUT",
            &format!("{SERVERS}/{SEED}"),
            Some("application/json"),
            body(&current),
        )
        .await;
    assert_status(code, &status, 422, "Invalid");
    assert!(
        causes_fields(&status).contains(&"spec.accepted".to_owned()),
        "{status}"
    );
    let (code, status) = a
        .raw(
            "PATCH",
            &format!("{SERVERS}/{SEED}"),
            Some("application/merge-patch+json"),
            br#"{"spec":{"accepted":"yes"}}"#.to_vec(),
        )
        .await;
    assert_status(code, &status, 422, "Invalid");
    assert!(
        causes_fields(&status).contains(&"spec.accepted".to_owned()),
        "{status}"
    );

    let manifest = serde_json::to_string(&obj).unwrap();
    let out = a.kubectl_stdin(&["create", "-f", "-"], Some(&manifest));
    assert!(!out.status.success(), "kubectl created an invalid Server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.accepted"), "{err}");
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_content_types_are_refused() {
    let a = seeded().await;
    let obj = body(&server("4c4c4544-0035-5910-8031-c2c04f4a4d39"));
    for ct in ["application/vnd.kubernetes.protobuf", "text/plain"] {
        let (code, status) = a.raw("POST", SERVERS, Some(ct), obj.clone()).await;
        assert_status(code, &status, 415, "UnsupportedMediaType");
    }
    for ct in [
        "text/plain",
        "application/json",
        "application/vnd.kubernetes.protobuf",
    ] {
        let (code, status) = a
            .raw(
                "PATCH",
                &format!("{SERVERS}/{SEED}"),
                Some(ct),
                br#"{"spec":{"accepted":false}}"#.to_vec(),
            )
            .await;
        assert_status(code, &status, 415, "UnsupportedMediaType");
    }
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_unauthorized() {
    let a = seeded().await;
    let (code, status) = curl(&a, SERVERS, &[]);
    assert_status(code, &status, 401, "Unauthorized");
    let (code, status) = curl(&a, SERVERS, &["Authorization: Bearer wrong"]);
    assert_status(code, &status, 401, "Unauthorized");
    let (code, status) = curl(
        &a,
        "/api/v1/namespaces",
        &["Authorization: Basic YWRtaW46YWRtaW4="],
    );
    assert_status(code, &status, 401, "Unauthorized");

    // kube-rs with a wrong token gets the same answer.
    let kc = kube::config::Kubeconfig::read_from(&a.kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube config");
    config.auth_info.token = Some("wrong".to_owned().into());
    let client = kube::Client::try_from(config).expect("kube client");
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    match ns.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{s:?}"),
        other => panic!("a wrong token was not refused with 401: {other:?}"),
    }
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_kind_and_non_object_bodies_are_bad_requests() {
    let a = seeded().await;
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    let (code, status) = a
        .raw("POST", SERVERS, Some("application/json"), body(&configmap))
        .await;
    assert_status(code, &status, 400, "BadRequest");

    let mut wrong_version = server("4c4c4544-0035-5910-8031-c2c04f4a4d39");
    wrong_version["apiVersion"] = json!("metal.sidero.dev/v1alpha1");
    let (code, status) = a
        .raw(
            "POST",
            SERVERS,
            Some("application/json"),
            body(&wrong_version),
        )
        .await;
    assert_status(code, &status, 400, "BadRequest");

    for array in [
        json!([server("4c4c4544-0035-5910-8031-c2c04f4a4d39")]),
        json!("text"),
        json!(7),
    ] {
        let (code, status) = a
            .raw("POST", SERVERS, Some("application/json"), body(&array))
            .await;
        assert_status(code, &status, 400, "BadRequest");
    }
    let (code, status) = a
        .raw(
            "PATCH",
            &format!("{SERVERS}/{SEED}"),
            Some("application/json-patch+json"),
            br#"{"op":"replace"}"#.to_vec(),
        )
        .await;
    assert_status(code, &status, 400, "BadRequest");
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_a_stale_resource_version_conflicts() {
    let a = seeded().await;
    let path = format!("{SERVERS}/{SEED}");
    let (_, stale) = a.raw("GET", &path, None, Vec::new()).await;
    let mut fresh = stale.clone();
    fresh["spec"]["cordoned"] = json!(true);
    let (code, updated) = a
        .raw("PUT", &path, Some("application/json"), body(&fresh))
        .await;
    assert_eq!(code, 200, "{updated}");

    let mut late = stale.clone();
    late["spec"]["hostname"] = json!("lost-update");
    let (code, status) = a
        .raw("PUT", &path, Some("application/json"), body(&late))
        .await;
    assert_status(code, &status, 409, "Conflict");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{status}"
    );
    let (_, now) = a.raw("GET", &path, None, Vec::new()).await;
    assert_eq!(now["spec"]["cordoned"], true);
    assert_eq!(now["spec"]["hostname"], "seed", "a stale PUT was applied");
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_under_strict_validation() {
    let a = seeded().await;
    let mut obj = server("4c4c4544-0035-5910-8031-c2c04f4a4d39");
    obj["spec"]["bogus"] = json!(1);
    let (code, status) = a
        .raw(
            "POST",
            &format!("{SERVERS}?fieldValidation=Strict"),
            Some("application/json"),
            body(&obj),
        )
        .await;
    assert_status(code, &status, 400, "BadRequest");
    assert!(
        status["message"].as_str().unwrap().contains("spec.bogus"),
        "{status}"
    );
    assert_intact(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrage_of_bad_requests_leaves_the_server_healthy() {
    let a = seeded().await;
    let seed_path = format!("{SERVERS}/{SEED}");
    let requests: Vec<(&str, String, Option<&str>, Vec<u8>)> = vec![
        ("POST", SERVERS.into(), Some("application/json"), b"{".to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), b"\xff\xfe".to_vec()),
        ("POST", SERVERS.into(), Some("application/yaml"), b"a: [".to_vec()),
        ("POST", SERVERS.into(), Some("application/yaml"), b"\xff".to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), b"null".to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), b"{}".to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), br#"{"metadata":7}"#.to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), br#"{"apiVersion":"metal.sidero.dev/v1alpha2","kind":"Server","metadata":{"name":""},"spec":{}}"#.to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), br#"{"apiVersion":"metal.sidero.dev/v1alpha2","kind":"Server","metadata":{"name":"x","labels":{"bad key!":"v"}},"spec":{}}"#.to_vec()),
        ("POST", SERVERS.into(), Some("application/json"), br#"{"apiVersion":"metal.sidero.dev/v1alpha2","kind":"Server","metadata":{"name":"x"},"spec":[]}"#.to_vec()),
        ("PUT", seed_path.clone(), Some("application/json"), b"[]".to_vec()),
        ("PUT", seed_path.clone(), Some("application/json"), br#"{"apiVersion":"metal.sidero.dev/v1alpha2","kind":"Server","metadata":{"name":"other"},"spec":{}}"#.to_vec()),
        ("PATCH", seed_path.clone(), Some("application/merge-patch+json"), b"{".to_vec()),
        ("PATCH", seed_path.clone(), Some("application/merge-patch+json"), br#"{"metadata":{"name":"renamed"}}"#.to_vec()),
        ("PATCH", seed_path.clone(), Some("application/json-patch+json"), br#"[{"op":"remove","path":"/spec/nothing"}]"#.to_vec()),
        ("PATCH", seed_path.clone(), Some("application/json-patch+json"), br#"[{"op":"frobnicate","path":"/spec"}]"#.to_vec()),
        ("PATCH", seed_path.clone(), Some("application/apply-patch+yaml"), b"spec: {hostname: x}".to_vec()),
        ("PATCH", format!("{seed_path}?fieldManager=m"), Some("application/apply-patch+yaml"), b"{{{".to_vec()),
        ("PATCH", format!("{SERVERS}/does-not-exist"), Some("application/merge-patch+json"), b"{}".to_vec()),
        ("DELETE", format!("{SERVERS}/does-not-exist"), None, Vec::new()),
        ("DELETE", seed_path.clone(), Some("application/json"), b"{not json".to_vec()),
        ("DELETE", seed_path.clone(), Some("application/json"), br#"{"preconditions":{"uid":"not-the-uid"}}"#.to_vec()),
        ("GET", format!("{SERVERS}?labelSelector=a%20in%20(("), None, Vec::new()),
        ("GET", format!("{SERVERS}?fieldSelector=spec.hostname%3Dx"), None, Vec::new()),
        ("GET", format!("{SERVERS}?limit=-1"), None, Vec::new()),
        ("GET", format!("{SERVERS}?continue=garbage&limit=1"), None, Vec::new()),
        ("GET", format!("{SERVERS}?watch=true&resourceVersion=notanumber"), None, Vec::new()),
        ("GET", format!("{seed_path}/nonsense"), None, Vec::new()),
        ("POST", seed_path.clone(), Some("application/json"), body(&server(SEED))),
        ("POST", "/api/v1/namespaces/nope/configmaps".into(), Some("application/json"), br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#.to_vec()),
        ("PUT", "/version".into(), Some("application/json"), b"{}".to_vec()),
    ];
    for (method, path, ct, payload) in requests {
        let (code, status) = a.raw(method, &path, ct, payload).await;
        assert!(code < 500, "{method} {path} answered {code}: {status}");
        assert!(
            code >= 400,
            "{method} {path} was accepted ({code}): {status}"
        );
        assert_eq!(status["kind"], "Status", "{method} {path}: {status}");
    }
    assert_intact(&a).await;
}
