//! The Redfish manager against a small fake BMC on loopback, for what sushy-tools does not
//! offer or does not show: sessions (login, reuse, renewal after the BMC forgets the token,
//! logout), `PowerCycle`, a Boot override without a mode, error messages from
//! `@Message.ExtendedInfo`, and a BMC that accepts connections but never answers.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

const SYSTEM: &str = "/redfish/v1/Systems/1";
const SESSIONS_PATH: &str = "/redfish/v1/SessionService/Sessions";

/// One request as the fake BMC saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    basic: bool,
    body: Value,
}

impl Seen {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What the fake BMC is and does.
struct Bmc {
    sessions: bool,
    tokens: HashSet<String>,
    logins: u32,
    power: &'static str,
    reset_types: Vec<&'static str>,
    boot_mode: bool,
    /// Status and body for every reset request, instead of doing it.
    refuse_resets: Option<(u16, Value)>,
    seen: Vec<Seen>,
}

impl Default for Bmc {
    fn default() -> Bmc {
        Bmc {
            sessions: true,
            tokens: HashSet::new(),
            logins: 0,
            power: "On",
            reset_types: vec![
                "On",
                "ForceOff",
                "GracefulShutdown",
                "ForceRestart",
                "PowerCycle",
            ],
            boot_mode: false,
            refuse_resets: None,
            seen: Vec::new(),
        }
    }
}

struct Fake {
    url: String,
    bmc: Arc<Mutex<Bmc>>,
}

impl Fake {
    fn start(bmc: Bmc) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let bmc = Arc::new(Mutex::new(bmc));
        let shared = Arc::clone(&bmc);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Fake { url, bmc }
    }

    fn seen(&self) -> Vec<Seen> {
        self.bmc.lock().expect("lock").seen.clone()
    }

    fn lines(&self) -> Vec<String> {
        self.seen().iter().map(Seen::line).collect()
    }
}

fn serve(stream: TcpStream, bmc: &Mutex<Bmc>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut stream = stream;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let (mut length, mut token, mut basic) = (0, None, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "x-auth-token" => token = Some(value.trim().to_owned()),
            "authorization" => basic = value.trim().starts_with("Basic "),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, headers, answer) = {
        let mut bmc = bmc.lock().expect("lock");
        bmc.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            token: token.clone(),
            basic,
            body: body.clone(),
        });
        answer(&mut bmc, &method, &path, token, basic, &body)
    };
    let text = answer.map(|a| a.to_string()).unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        text.len()
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    let _ = stream.write_all(format!("{head}\r\n{text}").as_bytes());
}

type Reply = (u16, Vec<(&'static str, String)>, Option<Value>);

fn answer(
    bmc: &mut Bmc,
    method: &str,
    path: &str,
    token: Option<String>,
    basic: bool,
    body: &Value,
) -> Reply {
    let none = Vec::new();
    if (method, path) == ("GET", "/redfish/v1/") {
        let mut root = json!({"Systems": {"@odata.id": "/redfish/v1/Systems"}});
        if bmc.sessions {
            root["Links"] = json!({"Sessions": {"@odata.id": SESSIONS_PATH}});
        }
        return (200, none, Some(root));
    }
    if bmc.sessions && (method, path) == ("POST", SESSIONS_PATH) {
        if body["UserName"] != "admin" || body["Password"] != "secret" {
            return (401, none, Some(json!({"error": {"message": "bad login"}})));
        }
        bmc.logins += 1;
        let token = format!("token-{}", bmc.logins);
        bmc.tokens.insert(token.clone());
        let location = format!("{SESSIONS_PATH}/{}", bmc.logins);
        return (
            201,
            vec![("X-Auth-Token", token), ("Location", location.clone())],
            Some(json!({"@odata.id": location})),
        );
    }
    let authorized = token.is_some_and(|t| bmc.tokens.contains(&t)) || (!bmc.sessions && basic);
    if !authorized {
        return (401, none, Some(json!({"error": {"message": "no session"}})));
    }
    match (method, path) {
        ("DELETE", p) if p.starts_with(SESSIONS_PATH) => {
            let n = p.rsplit('/').next().unwrap_or_default();
            bmc.tokens.remove(&format!("token-{n}"));
            (204, none, None)
        }
        ("GET", "/redfish/v1/Systems") => {
            (200, none, Some(json!({"Members": [{"@odata.id": SYSTEM}]})))
        }
        ("GET", SYSTEM) => {
            let mut boot = json!({"BootSourceOverrideTarget": "None"});
            if bmc.boot_mode {
                boot["BootSourceOverrideMode"] = json!("UEFI");
            }
            let system = json!({
                "PowerState": bmc.power,
                "Boot": boot,
                "Actions": {"#ComputerSystem.Reset": {
                    "target": format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
                    "ResetType@Redfish.AllowableValues": bmc.reset_types,
                }},
            });
            (200, none, Some(system))
        }
        ("POST", p) if p == format!("{SYSTEM}/Actions/ComputerSystem.Reset") => {
            if let Some((status, body)) = &bmc.refuse_resets {
                return (*status, none, Some(body.clone()));
            }
            bmc.power = match body["ResetType"].as_str() {
                Some("ForceOff" | "GracefulShutdown") => "Off",
                _ => "On",
            };
            (204, none, None)
        }
        ("PATCH", SYSTEM) => (204, none, None),
        _ => (404, none, None),
    }
}

fn quick() -> CallPolicy {
    CallPolicy {
        timeout: Duration::from_millis(500),
        attempts: 3,
        backoff: Duration::from_millis(10),
    }
}

fn manager(url: &str, auth: Option<RedfishAuth>) -> Redfish {
    Redfish::new(Config {
        auth,
        policy: quick(),
        ..Config::new(
            url,
            Credentials {
                user: "admin".into(),
                password: "secret".into(),
            },
        )
    })
    .expect("valid configuration")
}

#[tokio::test]
async fn a_session_is_opened_once_reused_renewed_when_the_bmc_forgets_it_and_deleted_on_close() {
    let fake = Fake::start(Bmc::default());
    let redfish = manager(&fake.url, None);

    assert_eq!(redfish.power_state().await.expect("state"), PowerState::On);
    assert_eq!(redfish.power_state().await.expect("state"), PowerState::On);
    assert_eq!(
        fake.lines(),
        [
            "GET /redfish/v1/",
            "POST /redfish/v1/SessionService/Sessions",
            "GET /redfish/v1/Systems",
            "GET /redfish/v1/Systems/1",
            "GET /redfish/v1/Systems/1",
        ]
    );
    let seen = fake.seen();
    assert_eq!(
        seen[1].body,
        json!({"UserName": "admin", "Password": "secret"})
    );
    assert!(
        seen[2..]
            .iter()
            .all(|s| s.token.as_deref() == Some("token-1") && !s.basic)
    );

    // The BMC drops the session (a timeout on its side): one refused request, a new login,
    // and the request again.
    fake.bmc.lock().expect("lock").tokens.clear();
    redfish.power(PowerAction::Off).await.expect("power off");
    assert_eq!(
        fake.lines()[5..],
        [
            "GET /redfish/v1/Systems/1",
            "POST /redfish/v1/SessionService/Sessions",
            "GET /redfish/v1/Systems/1",
            "POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
        ]
    );
    assert_eq!(fake.seen()[8].token.as_deref(), Some("token-2"));

    redfish.close().await;
    let last = fake.seen().pop().expect("a request");
    assert_eq!(last.line(), "DELETE /redfish/v1/SessionService/Sessions/2");
    assert_eq!(last.token.as_deref(), Some("token-2"));
    assert!(fake.bmc.lock().expect("lock").tokens.is_empty());
}

#[tokio::test]
async fn dropping_the_manager_logs_out() {
    let fake = Fake::start(Bmc::default());
    let redfish = manager(&fake.url, None);
    redfish.power_state().await.expect("state");
    drop(redfish);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fake.bmc.lock().expect("lock").tokens.is_empty() {
        assert!(Instant::now() < deadline, "the session was not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.lines().last().map(String::as_str),
        Some("DELETE /redfish/v1/SessionService/Sessions/1")
    );
}

#[tokio::test]
async fn basic_auth_is_used_when_asked_for_or_when_the_bmc_offers_no_sessions() {
    let fake = Fake::start(Bmc {
        sessions: false,
        ..Bmc::default()
    });
    let redfish = manager(&fake.url, None);
    assert_eq!(redfish.power_state().await.expect("state"), PowerState::On);
    let seen = fake.seen();
    assert!(
        seen[1..].iter().all(|s| s.basic && s.token.is_none()),
        "{seen:?}"
    );

    let fake = Fake::start(Bmc {
        sessions: true,
        ..Bmc::default()
    });
    let redfish = manager(&fake.url, Some(RedfishAuth::Basic));
    // This BMC takes only sessions, so basic auth is refused, once, as an authentication error.
    let err = redfish.power_state().await.expect_err("refused");
    assert!(matches!(err.cause, Cause::Authentication(_)), "{err}");
    assert!(!fake.lines().iter().any(|l| l.starts_with("POST")));
    assert_eq!(fake.lines().len(), 2);
}

#[tokio::test]
async fn a_wrong_password_at_login_is_an_authentication_error() {
    let fake = Fake::start(Bmc::default());
    let redfish = Redfish::new(Config {
        policy: quick(),
        ..Config::new(
            &fake.url,
            Credentials {
                user: "admin".into(),
                password: "wrong".into(),
            },
        )
    })
    .expect("valid configuration");
    let err = redfish.pxe_once(BootMode::Uefi).await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "BMC redfish {}: could not set a one-time PXE boot (UEFI): authentication failed: POST /redfish/v1/SessionService/Sessions (log in as \"admin\"): HTTP 401 Unauthorized: bad login; check the user, password and role in spec.bmc (or the Secrets it names)",
            fake.url
        )
    );
}

#[tokio::test]
async fn power_cycle_is_used_where_offered_and_a_cycle_of_an_off_machine_powers_it_on() {
    let fake = Fake::start(Bmc::default());
    let redfish = manager(&fake.url, None);
    redfish.power(PowerAction::Cycle).await.expect("cycle");
    let resets: Vec<Value> = fake
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("ComputerSystem.Reset"))
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(resets, [json!({"ResetType": "PowerCycle"})]);

    fake.bmc.lock().expect("lock").power = "Off";
    redfish.power(PowerAction::Cycle).await.expect("cycle");
    let last = fake.seen().pop().expect("a request");
    assert_eq!(last.body, json!({"ResetType": "On"}));
    assert_eq!(redfish.power_state().await.expect("state"), PowerState::On);
}

#[tokio::test]
async fn the_boot_override_asks_for_pxe_once_and_leaves_out_a_mode_the_system_does_not_have() {
    let fake = Fake::start(Bmc::default());
    let redfish = manager(&fake.url, None);
    redfish.pxe_once(BootMode::Uefi).await.expect("pxe once");
    let patch = fake.seen().pop().expect("a request");
    assert_eq!(patch.line(), "PATCH /redfish/v1/Systems/1");
    assert_eq!(
        patch.body,
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
    );

    fake.bmc.lock().expect("lock").boot_mode = true;
    redfish.pxe_once(BootMode::Bios).await.expect("pxe once");
    let patch = fake.seen().pop().expect("a request");
    assert_eq!(
        patch.body,
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "Legacy"}})
    );
}

#[tokio::test]
async fn a_refused_reset_names_the_bmc_the_operation_the_status_and_the_bmcs_message() {
    let fake = Fake::start(Bmc {
        refuse_resets: Some((
            400,
            json!({"error": {
                "code": "Base.1.8.GeneralError",
                "message": "A general error has occurred.",
                "@Message.ExtendedInfo": [{
                    "MessageId": "Base.1.8.ActionNotSupported",
                    "Message": "The action ForceOff is not supported while a firmware update runs."
                }]
            }}),
        )),
        ..Bmc::default()
    });
    let redfish = manager(&fake.url, None);
    let err = redfish.power(PowerAction::Off).await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "BMC redfish {}: could not power off: protocol error: POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset ResetType ForceOff: HTTP 400 Bad Request: The action ForceOff is not supported while a firmware update runs.",
            fake.url
        )
    );
    // A 400 does not go away by asking again; a 503 might.
    let posts = |fake: &Fake| {
        fake.lines()
            .iter()
            .filter(|l| l.starts_with("POST /redfish/v1/Systems"))
            .count()
    };
    assert_eq!(posts(&fake), 1);
    fake.bmc.lock().expect("lock").refuse_resets =
        Some((503, json!({"error": {"message": "busy"}})));
    let err = redfish.power(PowerAction::Off).await.expect_err("refused");
    assert!(matches!(err.cause, Cause::Refused(_)), "{err}");
    assert_eq!(posts(&fake), 1 + 3);
}

#[tokio::test]
async fn a_bmc_that_never_answers_fails_with_a_timeout_within_the_policy_bound() {
    // Accepts connections (the kernel does, into the backlog) and never reads them.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", silent.local_addr().expect("bound address"));
    let redfish = manager(&url, None);
    let started = Instant::now();
    let err = redfish.power_state().await.expect_err("silent");
    assert!(matches!(err.cause, Cause::Timeout(_)), "{err}");
    assert!(
        started.elapsed() <= quick().worst_case() + Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    drop(silent);

    // Nobody listening: unreachable, after every attempt.
    let err = manager(&url, None).power_state().await.expect_err("closed");
    assert!(matches!(err.cause, Cause::Unreachable(_)), "{err}");
}
