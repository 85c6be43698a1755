//! The Redfish manager against sushy-tools' emulator (its fake driver), started on loopback by
//! each test from the virtual environment `scripts/install-deps` builds (`target/sushy-venv`,
//! pinned in `scripts/sushy-requirements.txt`). sushy-tools 2.2.0 offers no SessionService, so
//! these tests speak basic auth (or none); sessions are tested against `fake_tests`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The emulator's Python, installed by `scripts/install-deps` once per test binary.
fn python() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let status = Command::new(repo().join("scripts/install-deps"))
            .status()
            .expect("scripts/install-deps runs");
        assert!(status.success(), "scripts/install-deps failed");
    });
    repo().join("target/sushy-venv/bin/python")
}

#[derive(Default)]
struct Options {
    /// PEM certificate and key to serve HTTPS with.
    tls: Option<(String, String)>,
    /// A user and password for sushy's htpasswd (bcrypt) basic auth.
    user: Option<(&'static str, &'static str)>,
    /// UUIDs of fake systems (all off); one default system when empty.
    systems: Vec<&'static str>,
}

/// One sushy-emulator process with its own state directory, killed (by PID) when dropped.
struct Sushy {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Sushy {
    fn start(options: Options) -> Sushy {
        let python = python();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = |name: &str| dir.path().join(name).display().to_string();
        // Its own state directory: the fake driver keeps systems in SQLite, by default in one
        // file under /tmp that every emulator on the machine would share.
        let mut config = format!(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = 0\nSUSHY_EMULATOR_STATE_DIR = {:?}\n",
            path("state")
        );
        if !options.systems.is_empty() {
            let systems: Vec<String> = options
                .systems
                .iter()
                .enumerate()
                .map(|(i, uuid)| {
                    format!(
                        "{{'uuid': '{uuid}', 'name': 'node-{i}', 'power_state': 'Off', 'nics': []}}"
                    )
                })
                .collect();
            config += &format!("SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n", systems.join(", "));
        }
        if let Some((cert, key)) = &options.tls {
            std::fs::write(path("cert.pem"), cert).expect("write certificate");
            std::fs::write(path("key.pem"), key).expect("write key");
            config += &format!(
                "SUSHY_EMULATOR_SSL_CERT = {:?}\nSUSHY_EMULATOR_SSL_KEY = {:?}\n",
                path("cert.pem"),
                path("key.pem")
            );
        }
        if let Some((user, password)) = options.user {
            // Cost 4: the lowest bcrypt allows, so each authenticated request stays quick.
            let hash = Command::new(&python)
                .args([
                    "-c",
                    "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                    password,
                ])
                .output()
                .expect("bcrypt hash");
            assert!(hash.status.success(), "bcrypt: {hash:?}");
            let hash = String::from_utf8(hash.stdout).expect("UTF-8 hash");
            std::fs::write(path("htpasswd"), format!("{user}:{}", hash.trim()))
                .expect("write htpasswd");
            config += &format!("SUSHY_EMULATOR_AUTH_FILE = {:?}\n", path("htpasswd"));
        }
        std::fs::write(path("emulator.conf"), config).expect("write config");
        let log = std::fs::File::create(path("sushy.log")).expect("log file");
        let child = Command::new(&python)
            .arg(repo().join("tests/fixtures/sushy/emulator.py"))
            .args(["--config", &path("emulator.conf")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start sushy-emulator");
        let mut sushy = Sushy {
            child,
            dir,
            url: String::new(),
        };
        // Werkzeug names the port it bound (port 0: the kernel chose) once it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = sushy.log();
            if let Some(url) = log
                .split_whitespace()
                .find(|w| w.starts_with("http://127.0.0.1:") || w.starts_with("https://127.0.0.1:"))
            {
                sushy.url = url.to_owned();
                return sushy;
            }
            if let Ok(Some(status)) = sushy.child.try_wait() {
                panic!("sushy-emulator exited with {status}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("sushy.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The ResetTypes the emulator applied, in order.
    fn resets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split("power state set to \"").nth(1))
            .map(|rest| rest.trim_end_matches('"').to_owned())
            .collect()
    }

    /// The number of requests the emulator answered with `status`.
    fn answered(&self, status: u16) -> usize {
        self.log()
            .lines()
            // Werkzeug colours some request lines even into a file: `…HTTP/1.1\x1b[0m" 401 -`.
            .filter(|l| l.contains(" HTTP/1.1") && l.contains(&format!("\" {status} ")))
            .count()
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sushy-emulator log ----\n{}", self.log());
        }
    }
}

fn credentials(user: &str, password: &str) -> Credentials {
    Credentials {
        user: user.into(),
        password: password.into(),
    }
}

fn quick() -> CallPolicy {
    CallPolicy {
        timeout: Duration::from_secs(5),
        attempts: 3,
        backoff: Duration::from_millis(50),
    }
}

fn manager(endpoint: &str, trust: Trust, credentials: Credentials) -> Redfish {
    Redfish::new(Config {
        trust,
        policy: quick(),
        settle: Duration::from_secs(10),
        ..Config::new(endpoint, credentials)
    })
    .expect("valid configuration")
}

/// Polls the power state until it is `want`; sushy applies resets about a second later.
async fn settles_to(redfish: &Redfish, want: PowerState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = redfish.power_state().await.expect("power state");
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {got:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The system document as sushy serves it, read without the manager.
async fn system_document(sushy: &Sushy, path: &str) -> Value {
    reqwest::get(format!("{}{path}", sushy.url))
        .await
        .expect("GET the system")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("JSON"))
        .expect("body")
}

const DEFAULT_SYSTEM: &str = "/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094";

#[tokio::test]
async fn sushy_power_state_reads_and_reset_actions_change_it() {
    let sushy = Sushy::start(Options::default());
    let redfish = manager(&sushy.url, Trust::PublicRoots, credentials("x", "y"));
    assert_eq!(redfish.describe(), format!("redfish {}", sushy.url));

    assert_eq!(
        redfish.power_state().await.expect("succeeds"),
        PowerState::Off
    );
    redfish.power(PowerAction::On).await.expect("succeeds");
    settles_to(&redfish, PowerState::On).await;
    redfish.power(PowerAction::Off).await.expect("succeeds");
    settles_to(&redfish, PowerState::Off).await;
    assert_eq!(sushy.resets(), ["On", "ForceOff"]);

    // sushy offers no PowerCycle: the cycle is ForceOff, a wait for Off, then On.
    redfish.power(PowerAction::On).await.expect("succeeds");
    settles_to(&redfish, PowerState::On).await;
    redfish.power(PowerAction::Cycle).await.expect("succeeds");
    assert_eq!(sushy.resets()[3..], ["ForceOff", "On"]);
    settles_to(&redfish, PowerState::On).await;

    redfish.power(PowerAction::Reset).await.expect("succeeds");
    assert_eq!(sushy.resets()[5..], ["ForceRestart"]);
    settles_to(&redfish, PowerState::On).await;

    redfish.power(PowerAction::Soft).await.expect("succeeds");
    assert_eq!(sushy.resets()[6..], ["GracefulShutdown"]);
    settles_to(&redfish, PowerState::Off).await;

    // Off when off sends nothing.
    redfish.power(PowerAction::Off).await.expect("succeeds");
    assert_eq!(sushy.resets().len(), 7);
}

#[tokio::test]
async fn sushy_pxe_once_overrides_the_boot_target_and_mode() {
    let sushy = Sushy::start(Options::default());
    let redfish = manager(&sushy.url, Trust::PublicRoots, credentials("x", "y"));
    let before = system_document(&sushy, DEFAULT_SYSTEM).await;
    assert_eq!(before["Boot"]["BootSourceOverrideTarget"], "Hdd");

    redfish.pxe_once(BootMode::Bios).await.expect("succeeds");
    let after = system_document(&sushy, DEFAULT_SYSTEM).await;
    assert_eq!(after["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(after["Boot"]["BootSourceOverrideMode"], "Legacy");

    redfish.pxe_once(BootMode::Uefi).await.expect("succeeds");
    let after = system_document(&sushy, DEFAULT_SYSTEM).await;
    assert_eq!(after["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(after["Boot"]["BootSourceOverrideMode"], "UEFI");
    // sushy records the target and mode but reports every override as Continuous, so that
    // the PATCH asks for Once is checked against the fake BMC (fake_tests).
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM: (CA, certificate, key).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("succeeds");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("succeeds");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Siderite test BMC CA");
    let ca_cert = ca.self_signed(&ca_key).expect("succeeds");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("succeeds");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("succeeds")
        .signed_by(&key, &issuer)
        .expect("succeeds");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn sushy_over_tls_is_trusted_through_the_given_ca_and_refused_clearly_without_it() {
    let (ca, cert, key) = test_pki();
    let sushy = Sushy::start(Options {
        tls: Some((cert, key)),
        ..Options::default()
    });
    assert!(sushy.url.starts_with("https://"), "{}", sushy.url);

    let trusting = manager(&sushy.url, Trust::Ca(ca.clone()), credentials("x", "y"));
    assert_eq!(
        trusting.power_state().await.expect("succeeds"),
        PowerState::Off
    );
    trusting.power(PowerAction::On).await.expect("succeeds");
    settles_to(&trusting, PowerState::On).await;

    let started = Instant::now();
    let public = manager(&sushy.url, Trust::PublicRoots, credentials("x", "y"));
    let err = public.power_state().await.unwrap_err();
    assert!(matches!(err.cause, Cause::Config(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "BMC redfish {}: could not read the power state: invalid configuration: TLS: the BMC's certificate is not trusted",
            sushy.url
        )),
        "{text}"
    );
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(text.contains("spec.bmc.tls.caCert"), "{text}");
    // Not retried: trust does not come with time.
    assert!(
        started.elapsed() < quick().backoff,
        "{:?}",
        started.elapsed()
    );

    let (other_ca, _, _) = test_pki();
    let wrong = manager(&sushy.url, Trust::Ca(other_ca), credentials("x", "y"));
    let err = wrong.power_state().await.unwrap_err();
    assert!(matches!(err.cause, Cause::Config(_)), "{err}");

    let skipping = manager(&sushy.url, Trust::InsecureSkipVerify, credentials("x", "y"));
    assert_eq!(
        skipping.power_state().await.expect("succeeds"),
        PowerState::On
    );
}

#[tokio::test]
async fn sushy_basic_auth_accepts_the_right_password_and_a_wrong_one_is_an_authentication_error() {
    let sushy = Sushy::start(Options {
        user: Some(("admin", "correct horse")),
        ..Options::default()
    });
    let right = manager(
        &sushy.url,
        Trust::PublicRoots,
        credentials("admin", "correct horse"),
    );
    right.power(PowerAction::On).await.expect("succeeds");
    settles_to(&right, PowerState::On).await;
    right.pxe_once(BootMode::Uefi).await.expect("succeeds");
    assert_eq!(sushy.answered(401), 0);

    let wrong = manager(
        &sushy.url,
        Trust::PublicRoots,
        credentials("admin", "battery staple"),
    );
    let err = wrong.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err.cause, Cause::Authentication(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "BMC redfish {}: could not power off: authentication failed: GET /redfish/v1/Systems: HTTP 401 Unauthorized: Incorrect username or password; check the user, password and role in spec.bmc (or the Secrets it names)",
            sushy.url
        )
    );
    // One refused request, not three: retrying a wrong password only locks accounts.
    assert_eq!(sushy.answered(401), 1);
    assert_eq!(right.power_state().await.expect("succeeds"), PowerState::On);
}

#[tokio::test]
async fn sushy_with_two_systems_needs_the_endpoint_to_name_one() {
    const FIRST: &str = "0b0b5a6e-6f8a-4f3e-9a6e-000000000001";
    const SECOND: &str = "0b0b5a6e-6f8a-4f3e-9a6e-000000000002";
    let sushy = Sushy::start(Options {
        systems: vec![FIRST, SECOND],
        ..Options::default()
    });
    let ambiguous = manager(&sushy.url, Trust::PublicRoots, credentials("x", "y"));
    let err = ambiguous.power_state().await.unwrap_err();
    assert!(matches!(err.cause, Cause::Config(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("the BMC has 2 systems"), "{text}");
    assert!(
        text.contains(&format!("{}/redfish/v1/Systems/{FIRST}", sushy.url)),
        "{text}"
    );

    let second = manager(
        &format!("{}/redfish/v1/Systems/{SECOND}", sushy.url),
        Trust::PublicRoots,
        credentials("x", "y"),
    );
    second.power(PowerAction::On).await.expect("succeeds");
    settles_to(&second, PowerState::On).await;
    let first = system_document(&sushy, &format!("/redfish/v1/Systems/{FIRST}")).await;
    assert_eq!(first["PowerState"], "Off");

    // sushy also answers a system's name, with a redirect (307) to its UUID path.
    let by_name = manager(
        &format!("{}/redfish/v1/Systems/node-1", sushy.url),
        Trust::PublicRoots,
        credentials("x", "y"),
    );
    assert_eq!(
        by_name.power_state().await.expect("succeeds"),
        PowerState::On
    );
    assert_eq!(sushy.answered(307), 1);
}
