//! Environments and the metadata server against a real appliance, over the wire:
//! - an Environment whose sha512 is wrong never becomes ready and says expected and actual; a
//!   correct one becomes ready, resumes an interrupted download with a Range request, and the
//!   bytes served at `/environments/<name>/kernel` equal the source;
//! - an allocated Talos server's iPXE script carries `talos.config=` with its allocation's
//!   token; `/configdata` answers the bootstrap config with the ServerClass then Server patches,
//!   only with that token (404 otherwise); once kernel, initramfs and config were delivered the
//!   server is installed and boots from disk;
//! - a cloud-init server gets a NoCloud seed with user-data, meta-data, vendor-data and
//!   network-config, and its phone-home marks it installed;
//! - releasing the server invalidates the token.

mod common;

use common::{Appliance, file_server, owned_metal_machine, ready_cluster, wait_for};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use siderite::api::{Environment, MetalMachine, Server, ServerBinding};

const NS: &str = "default";

fn sha512(bytes: &[u8]) -> String {
    Sha512::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn environment(
    name: &str,
    kernel: (&str, &str),
    initrd: (&str, &str),
    args: &[&str],
) -> Environment {
    serde_json::from_value(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Environment",
        "metadata": {"name": name},
        "spec": {
            "kernel": {"url": kernel.0, "sha512": kernel.1, "args": args},
            "initrd": {"url": initrd.0, "sha512": initrd.1},
        },
    }))
    .expect("valid Environment")
}

/// The Ready conditions of an Environment as (status, reason, message).
async fn asset_conditions(api: &Api<Environment>, name: &str) -> Vec<(String, String, String)> {
    api.get(name)
        .await
        .ok()
        .and_then(|e| e.status)
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| {
                    (
                        format!("{:?}", c.status),
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_checksums_gate_readiness_and_downloads_resume() {
    let kernel = pseudo_random(3 << 20, 1);
    let initrd = pseudo_random(700 << 10, 2);
    let src = file_server(
        vec![("vmlinuz", kernel.clone()), ("initramfs", initrd.clone())],
        &["vmlinuz"],
    );
    let appliance = Appliance::start();
    let client = appliance.client().await;
    let api: Api<Environment> = Api::all(client);
    let kernel_url = format!("{}/vmlinuz", src.url);
    let initrd_url = format!("{}/initramfs", src.url);
    let wrong = "ab".repeat(64);

    api.create(
        &PostParams::default(),
        &environment(
            "bad",
            (&kernel_url, &wrong),
            (&initrd_url, &sha512(&initrd)),
            &[],
        ),
    )
    .await
    .expect("create Environment bad");
    let conditions = wait_for("the bad kernel's mismatch condition", 60, || async {
        let c = asset_conditions(&api, "bad").await;
        c.iter()
            .any(|(_, reason, _)| reason == "ChecksumMismatch")
            .then_some(c)
    })
    .await;
    let mismatch = conditions
        .iter()
        .find(|(_, reason, _)| reason == "ChecksumMismatch")
        .unwrap();
    assert_eq!(mismatch.0, "False");
    assert!(
        mismatch.2.contains(&format!("expected {wrong}")) && mismatch.2.contains(&sha512(&kernel)),
        "the condition names expected and actual: {}",
        mismatch.2
    );

    api.create(
        &PostParams::default(),
        &environment(
            "good",
            (&kernel_url, &sha512(&kernel)),
            (&initrd_url, &sha512(&initrd)),
            &["console=ttyS0"],
        ),
    )
    .await
    .expect("create Environment good");
    let conditions = wait_for("Environment good to be ready", 90, || async {
        let c = asset_conditions(&api, "good").await;
        (c.len() == 2 && c.iter().all(|(status, _, _)| status == "True")).then_some(c)
    })
    .await;
    assert!(
        conditions.iter().all(|(_, reason, _)| reason == "Verified"),
        "{conditions:?}"
    );
    // The first kernel download was cut in half; a later attempt resumed it.
    let requests = src.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.starts_with("/vmlinuz from ")),
        "no Range request resumed the kernel: {requests:?}"
    );

    let boot = appliance.boot_url();
    let http = reqwest::Client::new();
    let served = http
        .get(format!("{boot}/environments/good/kernel"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), kernel.as_slice());
    let served = http
        .get(format!("{boot}/environments/good/initrd"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(served.as_ref(), initrd.as_slice());
    // The bad Environment is still not ready (and nothing is served for it).
    let conditions = asset_conditions(&api, "bad").await;
    assert!(
        conditions.iter().any(|(status, _, _)| status == "False"),
        "{conditions:?}"
    );
    let refused = http
        .get(format!("{boot}/environments/bad/kernel"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}

/// Creates an accepted, clean Server with one NIC.
async fn pooled_server(servers: &Api<Server>, name: &str, mac: &str, extra_spec: Value) {
    let mut spec = json!({
        "accepted": true,
        "hardware": {"system": {"manufacturer": "Dell Inc."},
                      "network": {"interfaces": [{"name": "eth0", "mac": mac}]}},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra_spec.as_object().unwrap().clone());
    let server: Server = serde_json::from_value(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
        "metadata": {"name": name, "labels": {"role": name}},
        "spec": spec,
    }))
    .unwrap();
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    servers
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"isClean": true}})),
        )
        .await
        .unwrap();
}

/// Cluster API's side for one machine: bootstrap Secret, Machine, and the MetalMachine.
async fn machine(client: &kube::Client, name: &str, class: &str, bootstrap: &str, format: &str) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-bootstrap"), "namespace": NS},
        "type": "cluster.x-k8s.io/secret",
        "stringData": {"value": bootstrap, "format": format},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    owned_metal_machine(client, name, "demo", class).await;
}

const TALOS_CONFIG: &str = "\
version: v1alpha1
machine:
  type: worker
  install:
    disk: /dev/sda
cluster:
  clusterName: demo
";

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.expect("request the boot server");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_data_is_patched_token_guarded_and_installs_the_server() {
    let kernel = pseudo_random(200 << 10, 3);
    let initrd = pseudo_random(100 << 10, 4);
    let src = file_server(
        vec![("vmlinuz", kernel.clone()), ("initramfs", initrd.clone())],
        &[],
    );
    let appliance = Appliance::start();
    let client = appliance.client().await;
    let boot = appliance.boot_url();
    let http = reqwest::Client::new();
    let (kernel_url, initrd_url) = (
        format!("{}/vmlinuz", src.url),
        format!("{}/initramfs", src.url),
    );
    let environments: Api<Environment> = Api::all(client.clone());
    for (name, args) in [
        ("talos", vec!["console=ttyS0", "talos.platform=metal"]),
        ("ubuntu", vec!["console=ttyS0"]),
    ] {
        environments
            .create(
                &PostParams::default(),
                &environment(
                    name,
                    (&kernel_url, &sha512(&kernel)),
                    (&initrd_url, &sha512(&initrd)),
                    &args,
                ),
            )
            .await
            .unwrap();
    }
    let classes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metal.sidero.dev", "v1alpha2", "ServerClass"),
            "serverclasses",
        ),
    );
    for (class, env, patches) in [
        (
            "talos-workers",
            "talos",
            json!({
                "configPatches": [
                    {"op": "replace", "path": "/machine/install/disk", "value": "/dev/vda"},
                    {"op": "add", "path": "/machine/kubelet", "value": {"extraArgs": {"rotate-server-certificates": "true"}}},
                ],
                "strategicPatches": ["machine:\n  network:\n    nameservers: [10.77.0.1]\n"],
            }),
        ),
        ("ubuntu-workers", "ubuntu", json!({})),
    ] {
        let mut spec = json!({
            "environmentRef": {"name": env},
            "selector": {"matchLabels": {"role": class}},
        });
        spec.as_object_mut()
            .unwrap()
            .extend(patches.as_object().unwrap().clone());
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass",
            "metadata": {"name": class}, "spec": spec,
        }))
        .unwrap();
        classes
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let servers: Api<Server> = Api::all(client.clone());
    let talos_uuid = "4c4c4544-0000-1000-8000-000000000001";
    let ubuntu_uuid = "4c4c4544-0000-1000-8000-000000000002";
    pooled_server(
        &servers,
        talos_uuid,
        "52:54:00:00:00:01",
        json!({
            "configPatches": [{"op": "add", "path": "/machine/kubelet/extraArgs/node-labels", "value": "rack=a"}],
            "strategicPatches": ["machine:\n  network:\n    hostname: talos-1\n"],
        }),
    )
    .await;
    // Labels pick the class: each server matches exactly one.
    servers
        .patch(
            talos_uuid,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "talos-workers"}}})),
        )
        .await
        .unwrap();
    pooled_server(&servers, ubuntu_uuid, "52:54:00:00:00:02", json!({})).await;
    servers
        .patch(
            ubuntu_uuid,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "ubuntu-workers"}}})),
        )
        .await
        .unwrap();

    ready_cluster(&client, "demo").await;
    let user_data = "#cloud-config\nruncmd: [kubeadm join 10.0.0.1:6443]\n";
    machine(&client, "talos-0", "talos-workers", TALOS_CONFIG, "talos").await;
    machine(
        &client,
        "ubuntu-0",
        "ubuntu-workers",
        user_data,
        "cloud-config",
    )
    .await;

    let bindings: Api<ServerBinding> = Api::all(client.clone());
    let token = |uuid: &'static str| {
        let bindings = bindings.clone();
        async move {
            bindings
                .get_opt(uuid)
                .await
                .ok()
                .flatten()?
                .metadata
                .annotations?
                .get("siderite.dev/metadata-token")
                .cloned()
        }
    };
    let talos_token = wait_for("the talos server's binding", 60, || token(talos_uuid)).await;
    let ubuntu_token = wait_for("the ubuntu server's binding", 60, || token(ubuntu_uuid)).await;
    assert_ne!(
        talos_token, ubuntu_token,
        "each allocation has its own token"
    );
    assert!(
        talos_token.len() >= 43,
        "the token carries 256 bits: {talos_token}"
    );

    // The Talos server's iPXE answer: its Environment, with talos.config and the token.
    let ipxe = |uuid: &str, mac: &str| format!("{boot}/ipxe?uuid={uuid}&mac={mac}&arch=x86_64");
    let script = wait_for("the talos server's environment script", 90, || {
        let (http, url) = (http.clone(), ipxe(talos_uuid, "52-54-00-00-00-01"));
        async move {
            let (status, body) = get(&http, &url).await;
            (status == 200 && body.contains("/environments/talos/kernel")).then_some(body)
        }
    })
    .await;
    let config_url = format!("{boot}/configdata?uuid={talos_uuid}&token={talos_token}");
    assert!(
        script.contains(&format!(" talos.config={config_url}")),
        "the script passes talos.config with the token:\n{script}"
    );
    assert!(script.contains(" talos.platform=metal"), "{script}");

    // Without the token, with a wrong one, or for another server: the same bare 404.
    for url in [
        format!("{boot}/configdata?uuid={talos_uuid}"),
        format!("{boot}/configdata?uuid={talos_uuid}&token=wrong"),
        format!("{boot}/configdata?uuid={ubuntu_uuid}&token={talos_token}"),
        format!("{boot}/nocloud/{talos_uuid}/{ubuntu_token}/user-data"),
        format!("{boot}/nocloud/{ubuntu_uuid}/not-the-token/user-data"),
    ] {
        assert_eq!(
            get(&http, &url).await,
            (404, "not found\n".to_owned()),
            "{url}"
        );
    }

    // With it: the config with the class patches, then the server's, then strategic ones.
    let (status, config) = get(&http, &config_url).await;
    assert_eq!(status, 200, "{config}");
    let config: Value = serde_saphyr::from_str(&config).expect("configdata is YAML");
    assert_eq!(
        config,
        json!({
            "version": "v1alpha1",
            "machine": {
                "type": "worker",
                "install": {"disk": "/dev/vda"},
                "kubelet": {"extraArgs": {"rotate-server-certificates": "true", "node-labels": "rack=a"}},
                "network": {"nameservers": ["10.77.0.1"], "hostname": "talos-1"},
            },
            "cluster": {"clusterName": "demo"},
        })
    );
    // Kernel and initramfs through the script's URLs: now everything was delivered.
    for line in script
        .lines()
        .filter(|l| l.starts_with("kernel ") || l.starts_with("initrd "))
    {
        let url = line
            .split_whitespace()
            .find(|t| t.starts_with("http://"))
            .expect("a URL on the line");
        let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
        let expected = if line.starts_with("kernel ") {
            &kernel
        } else {
            &initrd
        };
        assert_eq!(bytes.as_ref(), expected.as_slice(), "{url}");
    }
    let installed = |uuid: &'static str| {
        let servers = servers.clone();
        async move {
            let server = servers.get(uuid).await.ok()?;
            server
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Installed" && format!("{:?}", c.status) == "True")
                .and_then(|c| c.reason)
        }
    };
    let reason = wait_for("the talos server to be installed", 30, || {
        installed(talos_uuid)
    })
    .await;
    assert_eq!(reason, "Delivered");
    let after = wait_for("the installed server's boot-from-disk answer", 30, || {
        let (http, url) = (http.clone(), ipxe(talos_uuid, "52-54-00-00-00-01"));
        async move {
            let (_, body) = get(&http, &url).await;
            (body == "#!ipxe\nexit\n").then_some(body)
        }
    })
    .await;
    assert_eq!(after, "#!ipxe\nexit\n");

    // The cloud-init server: a NoCloud seed on its command line, served with its token.
    let script = wait_for("the ubuntu server's environment script", 30, || {
        let (http, url) = (http.clone(), ipxe(ubuntu_uuid, "52-54-00-00-00-02"));
        async move {
            let (status, body) = get(&http, &url).await;
            (status == 200 && body.contains("/environments/ubuntu/kernel")).then_some(body)
        }
    })
    .await;
    let seed = format!("{boot}/nocloud/{ubuntu_uuid}/{ubuntu_token}/");
    assert!(
        script.contains(&format!(" ds=nocloud;s={seed}")),
        "{script}"
    );
    assert!(!script.contains("talos.config"), "{script}");
    assert_eq!(
        get(&http, &format!("{seed}user-data")).await,
        (200, user_data.to_owned())
    );
    assert_eq!(
        get(&http, &format!("{seed}meta-data")).await,
        (
            200,
            format!("instance-id: {ubuntu_uuid}\nlocal-hostname: ubuntu-0\n")
        )
    );
    let (status, vendor) = get(&http, &format!("{seed}vendor-data")).await;
    assert_eq!(status, 200);
    let phone_home = format!("{boot}/phone-home/{ubuntu_uuid}/{ubuntu_token}");
    assert!(vendor.contains(&format!("url: {phone_home}\n")), "{vendor}");
    let (status, network) = get(&http, &format!("{seed}network-config")).await;
    assert_eq!(status, 200);
    assert!(
        network.contains("macaddress: \"52:54:00:00:00:02\""),
        "{network}"
    );
    // cloud-init's phone_home posts a form.
    let response = http
        .post(&phone_home)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("instance_id={ubuntu_uuid}&hostname=ubuntu-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reason = wait_for("the ubuntu server to be installed", 30, || {
        installed(ubuntu_uuid)
    })
    .await;
    assert_eq!(reason, "Reported");

    // Releasing the server ends its allocation: the old token opens nothing any more.
    Api::<MetalMachine>::namespaced(client.clone(), NS)
        .delete("ubuntu-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the ubuntu binding to go", 30, || {
        let bindings = bindings.clone();
        async move {
            bindings
                .get_opt(ubuntu_uuid)
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    wait_for("the old token to be refused", 30, || {
        let (http, url) = (http.clone(), format!("{seed}user-data"));
        async move { (get(&http, &url).await.0 == 404).then_some(()) }
    })
    .await;
    // The binding goes first (so the token stops working at once), then the Server is
    // returned to the pool.
    let status = wait_for("the server returned to the pool, dirty", 30, || {
        let servers = servers.clone();
        async move {
            let status = servers.get(ubuntu_uuid).await.ok()?.status?;
            (!status.in_use && !status.is_clean).then_some(status)
        }
    })
    .await;
    assert!(
        !status.conditions.iter().any(|c| c.type_ == "Installed"),
        "release clears Installed: {:?}",
        status.conditions
    );
}
