//! Test harness: starts a real `siderite serve` process with a private state directory and an
//! embedded API server on a free loopback port, and talks to it only over the wire (kubectl,
//! kube-rs, raw HTTPS). The process is killed when the `Appliance` is dropped; on a failing test
//! its log is printed.
#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Appliance {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
}

impl Appliance {
    /// Starts an appliance on a fresh state directory.
    pub fn start() -> Appliance {
        Self::start_with(&[])
    }

    /// Starts an appliance with extra `serve` flags.
    pub fn start_with(extra_args: &[&str]) -> Appliance {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = dir.path().join("state");
        let mut a = Appliance {
            child: None,
            kubeconfig: state.join("kubeconfig"),
            log: dir.path().join("siderite.log"),
            state,
            dir,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        a.spawn();
        a
    }

    /// (Re)starts the process on the existing state directory and waits until it answers.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_siderite"))
            .args([
                "serve",
                "--api-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(&self.state)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting siderite");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.kubeconfig)
                && let Some(port) = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
                && std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("siderite exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "siderite did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reaping");
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `input` on its standard input.
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl (preinstalled at /usr/bin/kubectl)");
        if let Some(text) = input {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl, asserts success and returns its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes `text` to a file in the test directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A kube-rs client built from the written kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Sends a raw request and returns the status code and the parsed JSON body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let client = self.client().await;
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(body).unwrap();
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .expect("send");
        let code = resp.status().as_u16();
        use http_body_util::BodyExt;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        (code, value)
    }

    /// The boot HTTP server's base URL (`http://127.0.0.1:<port>`), read from the log.
    pub fn boot_url(&self) -> String {
        eventually(30, "the boot HTTP server's address in the log", || {
            let log = self.log_text();
            let at = log.find("base_url=http://")? + "base_url=".len();
            let url: String = log[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            Some(url)
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- siderite log ----\n{}", self.log_text());
        }
    }
}

/// Polls `f` until it returns `Some`, failing the test after `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async [`eventually`]: polls `f` every 200 ms until it returns `Some`, failing the test after
/// `secs` seconds.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Cluster API (`cluster.x-k8s.io/v1beta1`) kind in the `default` namespace, read
/// dynamically as Siderite does.
pub fn capi(
    client: &kube::Client,
    kind: &str,
    plural: &str,
) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", kind);
    kube::Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Creates the stand-in Cluster `name` in `default` with its infrastructure ready, as Cluster
/// API does once the MetalCluster is ready.
pub async fn ready_cluster(client: &kube::Client, name: &str) {
    use kube::api::{Patch, PatchParams, PostParams};
    let clusters = capi(client, "Cluster", "clusters");
    let cluster: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "default"}, "spec": {},
    }))
    .expect("a valid Cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create the Cluster");
    clusters
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"infrastructureReady": true}})),
        )
        .await
        .expect("mark the Cluster's infrastructure ready");
}

/// A file server on loopback that records the requests it got; the first request for a path
/// listed in `truncate` gets half its body and a closed connection.
pub struct FileServer {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn file_server(
    files: Vec<(&'static str, Vec<u8>)>,
    truncate: &'static [&'static str],
) -> FileServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the source server");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&requests);
    std::thread::spawn(move || {
        let mut truncated: Vec<&str> = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut range_start = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range_start = value.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push(format!(
                "{path}{}",
                range_start
                    .map(|s| format!(" from {s}"))
                    .unwrap_or_default()
            ));
            let Some((name, body)) = files.iter().find(|(n, _)| path == format!("/{n}")) else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            };
            let (status, start) = match range_start {
                Some(start) if start < body.len() => ("206 Partial Content", start),
                _ => ("200 OK", 0),
            };
            let rest = &body[start..];
            let mut head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                rest.len()
            );
            if start > 0 {
                head += &format!(
                    "content-range: bytes {start}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                );
            }
            head += "\r\n";
            let _ = stream.write_all(head.as_bytes());
            if truncate.contains(name) && !truncated.contains(name) {
                truncated.push(name);
                let _ = stream.write_all(&rest[..rest.len() / 2]);
                let _ = stream.flush();
                // Dropping the stream cuts the body short.
                continue;
            }
            let _ = stream.write_all(rest);
        }
    });
    FileServer { url, requests }
}

/// Cluster API's side of one machine in `default`: a Machine of `cluster` naming the bootstrap
/// Secret `<name>-bootstrap`, and the MetalMachine it owns, asking for a server of `class`.
pub async fn owned_metal_machine(client: &kube::Client, name: &str, cluster: &str, class: &str) {
    use kube::api::PostParams;
    let owner: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterName": cluster, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")}},
    }))
    .expect("a valid Machine");
    let owner = capi(client, "Machine", "machines")
        .create(&PostParams::default(), &owner)
        .await
        .expect("create the Machine");
    let metal: siderite::api::MetalMachine = serde_json::from_value(serde_json::json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalMachine",
        "metadata": {
            "name": name, "namespace": "default",
            "labels": {"cluster.x-k8s.io/cluster-name": cluster},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
                                 "name": name, "uid": owner.metadata.uid.clone().expect("a uid")}],
        },
        "spec": {"serverClassRef": {"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "name": class}},
    }))
    .expect("a valid MetalMachine");
    kube::Api::<siderite::api::MetalMachine>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &metal)
        .await
        .expect("create the MetalMachine");
}
