//! The agent API over the wire against a real `siderite serve`: registration creates and
//! refreshes Servers, directives follow acceptance, wipe reports decide cleanliness, and bad
//! input gets a clear 4xx without touching anything.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Appliance, eventually};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use siderite::agent::client::ApplianceClient;
use siderite::api::agent::{
    BmcReport, BmcSetupResult, Directive, DiskOutcome, DiskProgress, DiskResult, Progress,
    Registration, WipeMode, WipeReport,
};
use siderite::api::{
    Bmc, CredentialSource, HardwareInformation, NetworkInformation, NetworkInterface, SecretKeyRef,
    Server, StorageDevice, StorageInformation, SystemInformation,
};

const UUID: &str = "4C4C4544-0044-3610-8052-B4C04F4B3232";
const NAME: &str = "4c4c4544-0044-3610-8052-b4c04f4b3232";

fn registration(uuid: Option<&str>, macs: &[&str], disks: &[&str]) -> Registration {
    Registration {
        smbios_uuid: uuid.map(str::to_owned),
        boot_mac: macs.first().map(|m| m.to_string()),
        boot_id: "0b9f4d2e-8c1a-4f7e-9a55-1d2c3b4a5f60".into(),
        agent_version: "test".into(),
        hardware: HardwareInformation {
            system: Some(SystemInformation {
                uuid: uuid.map(str::to_owned),
                manufacturer: Some("Dell Inc.".into()),
                product_name: Some("PowerEdge R6525".into()),
                ..SystemInformation::default()
            }),
            storage: Some(StorageInformation {
                device_count: Some(disks.len() as u32),
                devices: disks
                    .iter()
                    .map(|d| StorageDevice {
                        name: Some(d.to_string()),
                        device_name: Some(format!("/dev/{d}")),
                        size: Some(1 << 30),
                        ..StorageDevice::default()
                    })
                    .collect(),
                ..StorageInformation::default()
            }),
            network: Some(NetworkInformation {
                interface_count: Some(macs.len() as u32),
                interfaces: macs
                    .iter()
                    .enumerate()
                    .map(|(i, mac)| NetworkInterface {
                        name: Some(format!("eth{i}")),
                        mac: Some(mac.to_string()),
                        addresses: if i == 0 {
                            vec!["10.77.0.123/24".into()]
                        } else {
                            vec![]
                        },
                        ..NetworkInterface::default()
                    })
                    .collect(),
            }),
            ..HardwareInformation::default()
        },
        problems: vec![],
    }
}

async fn server(appliance: &Appliance, name: &str) -> Server {
    let servers: Api<Server> = Api::all(appliance.client().await);
    servers.get(name).await.expect("Server exists")
}

fn condition<'a>(server: &'a Server, type_: &str) -> Option<&'a siderite::api::Condition> {
    server
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn accept(appliance: &Appliance, name: &str) {
    let servers: Api<Server> = Api::all(appliance.client().await);
    servers
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"accepted": true}})),
        )
        .await
        .expect("accepting");
}

#[tokio::test]
async fn registration_creates_the_server_named_by_its_uuid_and_refreshes_it_keeping_accepted() {
    let appliance = Appliance::start();
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let first = registration(Some(UUID), &["52:54:00:00:00:01"], &["vda"]);

    let registered = client.register(&first).await.expect("registration");
    assert_eq!(registered.server, NAME);
    assert!(registered.created && !registered.accepted);
    let created = server(&appliance, NAME).await;
    assert!(!created.spec.accepted);
    assert_eq!(created.spec.hardware, Some(first.hardware.clone()));
    assert_eq!(
        condition(&created, "Registered").map(|c| c.reason.as_deref()),
        Some(Some("Discovered"))
    );
    let status = created.status.clone().expect("status");
    assert_eq!(status.addresses[0].address, "10.77.0.123");

    // The operator accepts, cordons and labels it; a new boot registers a changed inventory.
    accept(&appliance, NAME).await;
    appliance.kubectl_ok(&["label", "server", NAME, "rack=rack-a"]);
    appliance.kubectl_ok(&[
        "patch",
        "server",
        NAME,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"cordoned":true}}"#,
    ]);
    let second = registration(
        Some(UUID),
        &["52:54:00:00:00:01", "52:54:00:00:00:02"],
        &["vda", "nvme0n1"],
    );
    let again = client.register(&second).await.expect("second registration");
    assert!(!again.created && again.accepted);
    let refreshed = server(&appliance, NAME).await;
    assert_eq!(refreshed.spec.hardware, Some(second.hardware));
    assert!(refreshed.spec.accepted && refreshed.spec.cordoned);
    assert_eq!(
        refreshed
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("rack")),
        Some(&"rack-a".to_owned())
    );
    assert_eq!(
        condition(&refreshed, "Registered").map(|c| c.reason.as_deref()),
        Some(Some("InventoryRefreshed"))
    );
    // Events are published in the background, after the agent got its answer.
    eventually(5, "Registered and Accepted events", || {
        let events = appliance.kubectl_ok(&["get", "events", "-A", "-o", "json"]);
        (events.contains("\"Registered\"") && events.contains("\"Accepted\"")).then_some(())
    });
}

/// A BMC report. Its address is on loopback: the appliance's power controller polls the BMCs
/// it learns of, and a test must not send to addresses outside loopback or its namespaces.
fn configured(boot_id: &str, password: &str) -> BmcReport {
    BmcReport {
        boot_id: boot_id.into(),
        result: BmcSetupResult::Configured {
            endpoint: "127.0.0.250".into(),
            port: 623,
            user: "siderite".into(),
            password: password.into(),
            user_id: 3,
            channel: 1,
        },
    }
}

fn from_secret(name: &str, key: &str) -> Option<CredentialSource> {
    Some(CredentialSource {
        secret_key_ref: Some(SecretKeyRef {
            namespace: "default".into(),
            name: name.into(),
            key: key.into(),
        }),
    })
}

#[tokio::test]
async fn a_bmc_report_fills_an_empty_spec_bmc_from_a_secret_owned_by_the_server() {
    let appliance = Appliance::start();
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let machine = registration(Some(UUID), &["52:54:00:00:00:01"], &["vda"]);
    let registered = client.register(&machine).await.expect("registration");
    let password = registered
        .bmc_setup
        .as_ref()
        .expect("a Server without spec.bmc asks for the setup")
        .password
        .clone();
    assert_eq!(password.len(), 16);
    assert!(
        password.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{password}"
    );

    let report = configured(&machine.boot_id, &password);
    client
        .report(NAME, "bmc", &report)
        .await
        .expect("report taken");
    let written = server(&appliance, NAME).await;
    let secret_name = format!("{NAME}-bmc");
    assert_eq!(
        written.spec.bmc,
        Some(Bmc {
            endpoint: "127.0.0.250".into(),
            port: Some(623),
            user: None,
            user_from: from_secret(&secret_name, "user"),
            pass: None,
            pass_from: from_secret(&secret_name, "pass"),
            interface: Some("lanplus".into()),
            ..Bmc::default()
        })
    );
    let secrets: Api<Secret> = Api::namespaced(appliance.client().await, "default");
    let secret = secrets.get(&secret_name).await.expect("the BMC Secret");
    let data = secret.data.clone().expect("data");
    assert_eq!(data["user"].0, b"siderite");
    assert_eq!(data["pass"].0, password.as_bytes());
    let owner = &secret.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Server", NAME));
    assert_eq!(Some(&owner.uid), written.metadata.uid.as_ref());
    // The appliance's log never shows the password.
    assert!(!appliance.log_text().contains(&password));

    // The next boot is not asked again, and a late report changes nothing.
    let again = client.register(&machine).await.expect("registration");
    assert!(again.bmc_setup.is_none(), "spec.bmc is set now");
    client
        .report(
            NAME,
            "bmc",
            &configured(&machine.boot_id, "ZzZzZzZz23456789"),
        )
        .await
        .expect("report taken and ignored");
    assert_eq!(server(&appliance, NAME).await.spec.bmc, written.spec.bmc);
    let secret = secrets.get(&secret_name).await.expect("the BMC Secret");
    assert_eq!(secret.data.expect("data")["pass"].0, password.as_bytes());
    eventually(5, "BMCConfigured and BMCSetupIgnored events", || {
        let events = appliance.kubectl_ok(&["get", "events", "-A", "-o", "json"]);
        (events.contains("\"BMCConfigured\"") && events.contains("\"BMCSetupIgnored\""))
            .then_some(())
    });

    // Deleting the Server deletes its BMC Secret.
    appliance.kubectl_ok(&["delete", "server", NAME]);
    let gone = common::wait_for("the BMC Secret to be collected", 10, || async {
        secrets
            .get_opt(&secret_name)
            .await
            .ok()
            .filter(Option::is_none)
    })
    .await;
    assert!(gone.is_none());
}

#[tokio::test]
async fn with_auto_bmc_setup_off_agents_are_not_asked_and_bmc_reports_are_refused() {
    let appliance = Appliance::start_with(&["--auto-bmc-setup=false"]);
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let machine = registration(Some(UUID), &["52:54:00:00:00:01"], &["vda"]);
    let registered = client.register(&machine).await.expect("registration");
    assert!(registered.bmc_setup.is_none());
    let error = client
        .report(
            NAME,
            "bmc",
            &configured(&machine.boot_id, "AbCdEfGh23456789"),
        )
        .await
        .expect_err("refused");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(409), "{error}");
    assert!(
        error.to_string().contains("--auto-bmc-setup=false"),
        "{error}"
    );
    assert_eq!(server(&appliance, NAME).await.spec.bmc, None);
}

#[tokio::test]
async fn directive_long_poll_answers_wipe_as_soon_as_the_operator_accepts() {
    let appliance = Appliance::start_with(&["--wipe-mode", "zeroes"]);
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let reg = registration(Some(UUID), &["52:54:00:00:00:01"], &["vda"]);
    client.register(&reg).await.expect("registration");

    assert_eq!(
        client
            .directive(NAME, &reg.boot_id, Duration::ZERO)
            .await
            .expect("directive"),
        Directive::Wait
    );
    let poll = {
        let client = client.clone();
        let boot_id = reg.boot_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let directive = client
                .directive(NAME, &boot_id, Duration::from_secs(30))
                .await;
            (directive, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    accept(&appliance, NAME).await;
    let (directive, waited) = poll.await.expect("poll task");
    assert_eq!(
        directive.expect("directive"),
        Directive::Wipe {
            mode: WipeMode::Zeroes
        }
    );
    assert!(waited < Duration::from_secs(20), "waited {waited:?}");
    let wiping = server(&appliance, NAME).await;
    assert_eq!(
        condition(&wiping, "Wiping").map(|c| c.reason.as_deref()),
        Some(Some("Started"))
    );
}

#[tokio::test]
async fn wipe_reports_decide_cleanliness_and_the_next_directive() {
    let appliance = Appliance::start_with(&["--auto-accept-servers"]);
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let reg = registration(Some(UUID), &["52:54:00:00:00:01"], &["vda", "nvme0n1"]);
    client.register(&reg).await.expect("registration");
    let directive = client
        .directive(NAME, &reg.boot_id, Duration::ZERO)
        .await
        .expect("directive");
    assert_eq!(
        directive,
        Directive::Wipe {
            mode: WipeMode::Fast
        }
    );

    client
        .report(
            NAME,
            "progress",
            &Progress {
                boot_id: reg.boot_id.clone(),
                disks: vec![DiskProgress {
                    name: "vda".into(),
                    done_bytes: 1 << 29,
                    total_bytes: 1 << 30,
                }],
            },
        )
        .await
        .expect("progress");
    let progressing = server(&appliance, NAME).await;
    assert_eq!(
        condition(&progressing, "Wiping").and_then(|c| c.message.as_deref()),
        Some("vda 50% of 1.0 GiB")
    );

    // One disk failed: the server stays dirty, the condition says which and why, and the agent
    // is not told to wipe again in this boot.
    let outcome = |name: &str, result| DiskOutcome {
        name: name.into(),
        size_bytes: 1 << 30,
        result,
    };
    client
        .report(
            NAME,
            "wiped",
            &WipeReport {
                boot_id: reg.boot_id.clone(),
                mode: WipeMode::Fast,
                disks: vec![
                    outcome("vda", DiskResult::Wiped),
                    outcome(
                        "nvme0n1",
                        DiskResult::Failed {
                            error: "write at 0: Input/output error".into(),
                        },
                    ),
                ],
            },
        )
        .await
        .expect("wiped report");
    let dirty = server(&appliance, NAME).await;
    assert!(!dirty.status.as_ref().expect("status").is_clean);
    assert_eq!(
        condition(&dirty, "Clean").and_then(|c| c.message.as_deref()),
        Some("nvme0n1: write at 0: Input/output error")
    );
    assert_eq!(
        client
            .directive(NAME, &reg.boot_id, Duration::ZERO)
            .await
            .expect("directive"),
        Directive::Wait
    );

    // The next boot retries, and a full success makes it clean and sends it to the pool.
    let mut reboot = reg.clone();
    reboot.boot_id = "a1b2c3d4-0000-4000-8000-000000000001".into();
    client.register(&reboot).await.expect("re-registration");
    assert!(matches!(
        client
            .directive(NAME, &reboot.boot_id, Duration::ZERO)
            .await
            .expect("directive"),
        Directive::Wipe { .. }
    ));
    client
        .report(
            NAME,
            "wiped",
            &WipeReport {
                boot_id: reboot.boot_id.clone(),
                mode: WipeMode::Fast,
                disks: vec![
                    outcome("vda", DiskResult::Wiped),
                    outcome("nvme0n1", DiskResult::Wiped),
                ],
            },
        )
        .await
        .expect("wiped report");
    let clean = server(&appliance, NAME).await;
    assert!(clean.status.as_ref().expect("status").is_clean);
    assert_eq!(
        condition(&clean, "Clean").map(|c| c.status),
        Some(siderite::api::ConditionStatus::True)
    );
    assert_eq!(
        client
            .directive(NAME, &reboot.boot_id, Duration::ZERO)
            .await
            .expect("directive"),
        Directive::PowerOff
    );
}

#[tokio::test]
async fn machine_without_smbios_uuid_is_named_after_its_boot_mac() {
    let appliance = Appliance::start();
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let reg = registration(
        Some("00000000-0000-0000-0000-000000000000"),
        &["52:54:00:AA:BB:CC"],
        &["vda"],
    );
    let registered = client.register(&reg).await.expect("registration");
    assert_eq!(registered.server, "00000000-0000-0000-0000-525400aabbcc");
    assert!(registered.identity_fallback.is_some());
    let server = server(&appliance, &registered.server).await;
    let reason = condition(&server, "IdentityFromBootMAC")
        .and_then(|c| c.message.clone())
        .expect("fallback condition");
    assert!(reason.contains("all zeroes"), "{reason}");
}

#[tokio::test]
async fn a_second_machine_claiming_a_known_uuid_is_refused_and_surfaced() {
    let appliance = Appliance::start();
    let client = ApplianceClient::new(&appliance.boot_url()).expect("boot URL");
    let original = registration(Some(UUID), &["52:54:00:00:00:01"], &["vda"]);
    client.register(&original).await.expect("registration");

    let impostor = registration(Some(UUID), &["52:54:00:99:99:99"], &["sda"]);
    let error = client
        .register(&impostor)
        .await
        .expect_err("a different machine with the same UUID must be refused");
    assert_eq!(error.status(), Some(http::StatusCode::CONFLICT));
    assert!(error.to_string().contains("52:54:00:99:99:99"), "{error}");
    let kept = server(&appliance, NAME).await;
    assert_eq!(kept.spec.hardware, Some(original.hardware));
    let conflict = condition(&kept, "IdentityConflict").expect("conflict condition");
    assert!(
        conflict
            .message
            .as_deref()
            .is_some_and(|m| m.contains("52:54:00:99:99:99") && m.contains("52:54:00:00:00:01")),
        "{conflict:?}"
    );
}

/// Sends raw bytes to the boot HTTP server and returns (status, body).
fn raw(url: &str, request: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A refused huge body may close the connection before all of it is written.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[test]
fn bad_input_gets_a_clear_4xx_and_creates_nothing() {
    let appliance = Appliance::start();
    let url = appliance.boot_url();
    let register = "/agent/v1/register";

    let (status, body) = raw(&url, &post(register, "application/json", b"{\"bootId\": "));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed request body"), "{body}");

    let unknown = br#"{"bootId":"b1","agentVersion":"1","hardware":{},"smbiosUUID":"x"}"#;
    let (status, body) = raw(&url, &post(register, "application/json", unknown));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unknown field") && body.contains("smbiosUUID"),
        "{body}"
    );

    let (status, body) = raw(&url, &post(register, "text/plain", b"{}"));
    assert_eq!(status, 415, "{body}");

    let huge = vec![b' '; 2 << 20];
    let (status, body) = raw(&url, &post(register, "application/json", &huge));
    assert_eq!(status, 413, "{body}");

    let no_identity = br#"{"bootId":"b1","agentVersion":"1","hardware":{}}"#;
    let (status, body) = raw(&url, &post(register, "application/json", no_identity));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("no usable identity"), "{body}");

    let bad_boot_id =
        br#"{"bootId":"../../etc","agentVersion":"1","hardware":{},"bootMac":"52:54:00:00:00:01"}"#;
    let (status, body) = raw(&url, &post(register, "application/json", bad_boot_id));
    assert_eq!(status, 422, "{body}");

    let (status, body) = raw(
        &url,
        b"GET /agent/v1/servers/NOT_A_NAME/directive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = raw(
        &url,
        b"GET /agent/v1/servers/unknown/directive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);

    let servers = appliance.kubectl_ok(&["get", "servers", "-o", "name"]);
    assert_eq!(servers.trim(), "", "bad input created a Server");
    eventually(5, "the appliance still serves", || {
        let (status, _) = raw(
            &url,
            b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        (status == 200).then_some(())
    });
}
