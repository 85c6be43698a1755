//! The power reconcile against faulty BMCs: a `siderite serve` process drives servers whose
//! `spec.managementApi` points at a simulated rig on loopback that can lie (answer 200 and do
//! nothing) or fall silent (take requests and never answer). The controller must mark the
//! server (conditions, Events), stay within its attempts, never send a second power action
//! while one is unaccounted for, and carry on by itself once the BMC is sound again.
//! The lifecycle with real VMs is `tests/power_lifecycle.rs`.

mod common;
mod lab;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Appliance, wait_for};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lab::power_api::read_request;
use serde_json::json;
use siderite::api::{Condition, ConditionSeverity, ConditionStatus, Server, find_condition};

/// The simulated machine behind the rig's power API.
#[derive(Default)]
struct Machine {
    on: bool,
    pxe_next: bool,
    /// Answer 200 to actions without carrying them out.
    liar: bool,
    /// Take requests and never answer them.
    silent: bool,
    /// Carry out the next reboot, then fall silent.
    silent_after_reboot: bool,
    /// `POST /action` requests, in order (status polls are only counted).
    actions: Vec<String>,
    polls: usize,
    /// For each start: whether it was a network boot.
    starts: Vec<bool>,
    /// The `Authorization` header the Redfish face accepts (`Basic …`).
    redfish_auth: Option<String>,
}

#[derive(Clone)]
struct Rig {
    endpoint: String,
    machine: Arc<Mutex<Machine>>,
}

impl Rig {
    fn start(on: bool) -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let rig = Rig {
            endpoint: listener.local_addr().expect("address").to_string(),
            machine: Arc::new(Mutex::new(Machine {
                on,
                ..Machine::default()
            })),
        };
        let served = rig.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let rig = served.clone();
                std::thread::spawn(move || rig.handle(stream));
            }
        });
        rig
    }

    fn with<T>(&self, f: impl FnOnce(&mut Machine) -> T) -> T {
        f(&mut self.machine.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn actions(&self) -> Vec<String> {
        self.with(|m| m.actions.clone())
    }

    fn count(&self, action: &str) -> usize {
        self.actions().iter().filter(|a| *a == action).count()
    }

    fn handle(&self, stream: TcpStream) {
        let Some((request, mut writer)) = read_request(stream) else {
            return;
        };
        let path = request.path;
        if path.starts_with("/redfish/") {
            let (status, reply) =
                self.redfish(&path, request.authorization.as_deref(), &request.body);
            let _ = write!(
                writer,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
            return;
        }
        let action = path.trim_start_matches('/').to_owned();
        let body = self.with(|m| {
            if m.silent {
                return None;
            }
            if action == "status" {
                m.polls += 1;
            } else {
                m.actions.push(action.clone());
            }
            let honest = !m.liar;
            match action.as_str() {
                "status" => return Some(format!("{{\"PoweredOn\":{}}}", m.on)),
                "poweron" if honest && !m.on => {
                    m.on = true;
                    let network = std::mem::take(&mut m.pxe_next);
                    m.starts.push(network);
                }
                "poweroff" if honest => m.on = false,
                "reboot" if honest => {
                    m.on = true;
                    let network = std::mem::take(&mut m.pxe_next);
                    m.starts.push(network);
                    if std::mem::take(&mut m.silent_after_reboot) {
                        m.silent = true;
                        return None;
                    }
                }
                "pxeboot" if honest => m.pxe_next = true,
                _ => {}
            }
            Some(String::new())
        });
        match body {
            Some(body) => {
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            // A hung BMC: the connection stays open, unanswered, until the fault clears.
            None => {
                while self.with(|m| m.silent) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Rig {
    /// A Redfish service with one system, `/redfish/v1/Systems/1`, basic auth only: enough of
    /// DSP0266 for the manager to read the power state and send resets.
    fn redfish(
        &self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> (&'static str, String) {
        const SYSTEM: &str = "/redfish/v1/Systems/1";
        self.with(|m| {
            // The service root is public (DSP0266); everything else needs the credentials.
            let public = matches!(path.trim_end_matches('/'), "/redfish" | "/redfish/v1");
            if !public && (authorization.is_none() || authorization != m.redfish_auth.as_deref()) {
                return (
                    "401 Unauthorized",
                    json!({"error": {"message": "bad credentials"}}).to_string(),
                );
            }
            match path.trim_end_matches('/') {
                "/redfish/v1" => (
                    "200 OK",
                    json!({"Systems": {"@odata.id": "/redfish/v1/Systems"}}).to_string(),
                ),
                SYSTEM => (
                    "200 OK",
                    json!({
                        "@odata.id": SYSTEM,
                        "PowerState": if m.on { "On" } else { "Off" },
                        "Actions": {"#ComputerSystem.Reset": {
                            "target": format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
                            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "PowerCycle"],
                        }},
                    })
                    .to_string(),
                ),
                p if p == format!("{SYSTEM}/Actions/ComputerSystem.Reset") => {
                    let reset: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                    let reset = reset["ResetType"].as_str().unwrap_or_default().to_owned();
                    m.on = reset != "ForceOff";
                    m.actions.push(reset);
                    ("204 No Content", String::new())
                }
                _ => ("404 Not Found", String::new()),
            }
        })
    }
}

/// Flags that make the controller's patience fit a test: polls every 0.3 s, effects due
/// within 2 s, BMC requests cut off after 0.5 s.
const QUICK: &[&str] = &[
    "--power-poll-interval",
    "0.3",
    "--power-settle",
    "2",
    "--power-backoff",
    "1",
    "--bmc-timeout",
    "0.5",
];

/// An appliance with [`QUICK`] and `extra` flags, a client, and its Servers.
async fn appliance(extra: &[&str]) -> (Appliance, kube::Client, Api<Server>) {
    let flags: Vec<&str> = QUICK.iter().chain(extra).copied().collect();
    let appliance = Appliance::start_with(&flags);
    let client = appliance.client().await;
    let servers = Api::all(client.clone());
    (appliance, client, servers)
}

async fn create_server(servers: &Api<Server>, name: &str, rig: &Rig, clean: bool) {
    let server: Server = serde_json::from_value(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2",
        "kind": "Server",
        "metadata": {"name": name},
        "spec": {"accepted": true, "managementApi": {"endpoint": rig.endpoint}},
    }))
    .expect("a valid Server");
    servers
        .create(&PostParams::default(), &server)
        .await
        .expect("create the Server");
    mark_clean(servers, name, clean).await;
}

/// Writes `status.isClean`, as the agent API does after a wipe.
async fn mark_clean(servers: &Api<Server>, name: &str, clean: bool) {
    servers
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"isClean": clean}})),
        )
        .await
        .expect("write the Server's status");
}

async fn condition(servers: &Api<Server>, name: &str, type_: &str) -> Option<Condition> {
    let server = servers.get(name).await.ok()?;
    find_condition(&server.status?.conditions, type_).cloned()
}

async fn power(servers: &Api<Server>, name: &str) -> Option<String> {
    servers.get(name).await.ok()?.status?.power
}

/// Reasons of the Events about Server `name`, oldest first.
async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::all(client.clone());
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .is_some_and(|n| n == name)
        })
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn a_bmc_that_claims_success_without_effect_is_marked_given_up_on_and_retried_on_request() {
    // Clean, accepted, unallocated, running: it belongs off. The BMC says yes and does nothing.
    let rig = Rig::start(true);
    rig.with(|m| m.liar = true);
    let (_appliance, client, servers) =
        appliance(&["--power-agent-grace", "1", "--power-attempts", "2"]).await;
    create_server(&servers, "liar", &rig, true).await;

    let gave_up = wait_for("the controller to give up on the lying BMC", 60, || async {
        condition(&servers, "liar", "PowerCycle")
            .await
            .filter(|c| c.reason.as_deref() == Some("GaveUp"))
    })
    .await;
    assert_eq!(gave_up.status, ConditionStatus::False);
    assert_eq!(gave_up.severity, Some(ConditionSeverity::Error));
    let message = gave_up.message.unwrap_or_default();
    assert!(
        message.contains("was not off") && message.contains("attempt 2 of 2"),
        "{message}"
    );
    assert!(
        message.contains("kubectl annotate server liar siderite.dev/power-retry="),
        "{message}"
    );
    assert_eq!(power(&servers, "liar").await.as_deref(), Some("on"));
    // Two attempts, each one power-off, and nothing more while the server waits for the
    // operator (the rig is polled all the while).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rig.actions(), ["poweroff", "poweroff"]);
    let reasons = event_reasons(&client, "liar").await;
    for reason in ["PowerAction", "NoEffect", "GaveUp"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }

    // The machine is mended, and the operator asks for another round: one more power-off,
    // which now works.
    rig.with(|m| m.liar = false);
    servers
        .patch(
            "liar",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"siderite.dev/power-retry": "1"}}})),
        )
        .await
        .expect("annotate");
    wait_for("status.power off", 30, || async {
        (power(&servers, "liar").await.as_deref() == Some("off")).then_some(())
    })
    .await;
    let requested = condition(&servers, "liar", "PowerCycle").await.unwrap();
    assert_eq!(requested.status, ConditionStatus::True, "{requested:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rig.actions(), ["poweroff", "poweroff", "poweroff"]);

    // Power control taken away: what the BMC said is cleared, and nothing is asked any more.
    servers
        .patch(
            "liar",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"managementApi": null}})),
        )
        .await
        .expect("remove spec.managementApi");
    wait_for("status.power and BMCReachable cleared", 30, || async {
        let status = servers.get("liar").await.ok()?.status?;
        (status.power.is_none() && find_condition(&status.conditions, "BMCReachable").is_none())
            .then_some(())
    })
    .await;
    let requests = rig.with(|m| m.actions.len() + m.polls);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.with(|m| m.actions.len() + m.polls), requests);
}

#[tokio::test]
async fn a_bmc_that_stops_answering_mid_cycle_is_marked_and_the_cycle_is_not_sent_twice() {
    // Accepted and dirty, running something that is not the agent: PXE boot it and cycle it.
    // The BMC carries out the reboot, then hangs.
    let rig = Rig::start(true);
    rig.with(|m| m.silent_after_reboot = true);
    let (_appliance, client, servers) =
        appliance(&["--power-agent-grace", "0", "--power-boot-timeout", "12"]).await;
    create_server(&servers, "hung", &rig, false).await;

    let no_answer = wait_for("the unanswered cycle on the Server", 30, || async {
        condition(&servers, "hung", "PowerCycle")
            .await
            .filter(|c| c.reason.as_deref() == Some("NoAnswer"))
    })
    .await;
    assert!(
        no_answer
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not sent again")),
        "{no_answer:?}"
    );
    let unreachable = wait_for("BMCReachable false", 30, || async {
        condition(&servers, "hung", "BMCReachable")
            .await
            .filter(|c| c.status == ConditionStatus::False)
    })
    .await;
    assert_eq!(unreachable.reason.as_deref(), Some("Unreachable"));
    assert_eq!(power(&servers, "hung").await.as_deref(), Some("unknown"));
    // While the BMC hangs, the cycle is not repeated (polls keep trying).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rig.actions(), ["pxeboot", "reboot"]);
    assert_eq!(rig.with(|m| m.starts.clone()), [true]);

    // The BMC recovers: the state is read again and the condition clears, still without a
    // second cycle until the boot timeout says the first one led nowhere.
    rig.with(|m| m.silent = false);
    wait_for("BMCReachable true again", 30, || async {
        condition(&servers, "hung", "BMCReachable")
            .await
            .filter(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(power(&servers, "hung").await.as_deref(), Some("on"));
    assert_eq!(rig.count("reboot"), 1);
    let reasons = event_reasons(&client, "hung").await;
    for reason in ["PowerNoAnswer", "Unreachable"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
    // No agent ever wiped it: after the boot timeout, a second attempt (and only one).
    let retried = wait_for("the second attempt after the boot timeout", 60, || async {
        condition(&servers, "hung", "PowerCycle").await.filter(|c| {
            c.message
                .as_deref()
                .is_some_and(|m| m.contains("attempt 2 of 3"))
        })
    })
    .await;
    assert_eq!(retried.status, ConditionStatus::True, "{retried:?}");
    assert!(
        event_reasons(&client, "hung")
            .await
            .iter()
            .any(|r| r == "BootTimeout")
    );
    assert_eq!(rig.actions(), ["pxeboot", "reboot", "pxeboot", "reboot"]);
}

#[tokio::test]
async fn bmc_credentials_come_from_secrets_and_every_setup_problem_is_on_the_server() {
    use base64::Engine as _;
    let rig = Rig::start(true);
    let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
    rig.with(|m| m.redfish_auth = Some(format!("Basic {basic}")));
    let (_appliance, client, servers) = appliance(&["--power-agent-grace", "1"]).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    for (name, pass) in [("bmc-good", "s3cret"), ("bmc-wrong", "guess")] {
        let secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"},
            "stringData": {"user": "admin", "pass": pass},
        }))
        .expect("a valid Secret");
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the Secret");
    }
    let endpoint = format!("http://{}/redfish/v1/Systems/1", rig.endpoint);
    let from = |secret: &str| {
        json!({
            "userFrom": {"secretKeyRef": {"namespace": "default", "name": secret, "key": "user"}},
            "passFrom": {"secretKeyRef": {"namespace": "default", "name": secret, "key": "pass"}},
        })
    };
    let bmc = |extra: serde_json::Value| {
        let mut bmc = json!({"endpoint": endpoint, "interface": "redfish"});
        bmc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        bmc
    };
    // Clean and pooled (belongs off), its credentials in a Secret; then three servers that
    // are not accepted (only polled): a missing Secret, a wrong password, inline credentials.
    let specs = [
        ("pooled", true, bmc(from("bmc-good"))),
        ("no-secret", false, bmc(from("bmc-missing"))),
        ("wrong-password", false, bmc(from("bmc-wrong"))),
        (
            "inline",
            false,
            bmc(json!({"user": "admin", "pass": "s3cret"})),
        ),
    ];
    for (name, accepted, bmc) in specs {
        let server: Server = serde_json::from_value(json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": name},
            "spec": {"accepted": accepted, "bmc": bmc},
        }))
        .expect("a valid Server");
        servers
            .create(&PostParams::default(), &server)
            .await
            .expect("create the Server");
    }
    mark_clean(&servers, "pooled", true).await;

    wait_for("the pooled server powered off over Redfish", 30, || async {
        (power(&servers, "pooled").await.as_deref() == Some("off")).then_some(())
    })
    .await;
    assert_eq!(rig.actions(), ["ForceOff"]);

    let missing = wait_for("the missing Secret on the Server", 30, || async {
        condition(&servers, "no-secret", "BMCReachable").await
    })
    .await;
    assert_eq!(missing.status, ConditionStatus::False);
    assert_eq!(missing.reason.as_deref(), Some("Misconfigured"));
    let message = missing.message.unwrap_or_default();
    assert!(
        message.contains("Secret default/bmc-missing") && message.contains("does not exist"),
        "{message}"
    );
    assert_eq!(
        power(&servers, "no-secret").await.as_deref(),
        Some("unknown")
    );

    let refused = wait_for("the wrong password on the Server", 30, || async {
        condition(&servers, "wrong-password", "BMCReachable").await
    })
    .await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("AuthenticationFailed"),
        "{refused:?}"
    );

    // Inline credentials work, and are reported.
    wait_for("the inline server's power state", 30, || async {
        (power(&servers, "inline").await.as_deref() == Some("off")).then_some(())
    })
    .await;
    let reasons = wait_for("the InlineCredentials Event", 30, || async {
        let reasons = event_reasons(&client, "inline").await;
        reasons
            .iter()
            .any(|r| r == "InlineCredentials")
            .then_some(reasons)
    })
    .await;
    assert!(!reasons.iter().any(|r| r == "PowerAction"), "{reasons:?}");
    assert!(
        event_reasons(&client, "pooled")
            .await
            .iter()
            .all(|r| r != "InlineCredentials")
    );
    // Only the pooled server was acted on.
    assert_eq!(rig.actions(), ["ForceOff"]);
}
