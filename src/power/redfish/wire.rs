//! The Redfish documents the power manager reads and writes, as pure functions: where the BMC
//! is (endpoint → base URL and system path), what a ComputerSystem offers (power state, reset
//! types, boot override modes), which ResetType an action needs, the Boot override body, and
//! what an error answer says. No I/O here, so every rule has a plain unit test.

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::power::{BootMode, Cause, PowerAction, PowerState};

/// The path under which every Redfish service lives (DSP0266).
pub const SERVICE_ROOT: &str = "/redfish/v1/";
/// Where systems are listed when the service root does not say.
const SYSTEMS: &str = "/redfish/v1/Systems";
/// Where sessions are created when the service root does not say.
pub const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// Where a BMC is: the service's base URL, and the ComputerSystem the endpoint named, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host:port/`, nothing else.
    pub base: Url,
    /// `/redfish/v1/Systems/<Id>` when the endpoint's path named one system.
    pub system: Option<String>,
}

impl Endpoint {
    /// How errors and events name this BMC: the endpoint as a URL.
    pub fn describe(&self) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        format!("redfish {base}{}", self.system.as_deref().unwrap_or(""))
    }
}

/// Reads `spec.bmc.endpoint` (host, `host:port`, IPv6 address or URL) and `spec.bmc.port`.
/// A bare host means HTTPS, the only scheme real BMCs serve Redfish on.
pub fn parse_endpoint(endpoint: &str, port: Option<u16>) -> Result<Endpoint, Cause> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Err(Cause::Config(
            "spec.bmc.endpoint is empty; give the BMC's address or https:// URL".into(),
        ));
    }
    let text = if endpoint.contains("://") {
        endpoint.to_owned()
    } else if endpoint.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("https://[{endpoint}]")
    } else {
        format!("https://{endpoint}")
    };
    let mut url = Url::parse(&text).map_err(|e| {
        Cause::Config(format!(
            "spec.bmc.endpoint {endpoint:?} is not a host or URL ({e}); write e.g. 10.0.0.5 or https://bmc-1/redfish/v1/Systems/1"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(Cause::Config(format!(
            "spec.bmc.endpoint {endpoint:?} must be an https:// (or http://) URL with a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Cause::Config(
            "spec.bmc.endpoint carries credentials; put them in spec.bmc.userFrom/passFrom instead"
                .into(),
        ));
    }
    match (url.port(), port) {
        (Some(in_url), Some(given)) if in_url != given => {
            return Err(Cause::Config(format!(
                "spec.bmc.port {given} contradicts port {in_url} in spec.bmc.endpoint; drop one of them"
            )));
        }
        (None, Some(given)) => {
            url.set_port(Some(given))
                .map_err(|()| Cause::Config(format!("spec.bmc.port {given} cannot be used")))?;
        }
        _ => {}
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let system = match path.as_str() {
        "" | "/redfish" | "/redfish/v1" | "/redfish/v1/Systems" => None,
        p if p
            .strip_prefix("/redfish/v1/Systems/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            Some(p.to_owned())
        }
        p => {
            return Err(Cause::Config(format!(
                "spec.bmc.endpoint path {p:?} is not /redfish/v1/Systems/<Id>; give that path to pick one system, or none"
            )));
        }
    };
    url.set_path("/");
    url.set_query(None);
    url.set_fragment(None);
    Ok(Endpoint { base: url, system })
}

/// What the service root says about where things are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoot {
    pub systems: String,
    /// The SessionService's session collection, when the BMC offers sessions.
    pub sessions: Option<String>,
}

pub fn parse_service_root(root: &Value) -> ServiceRoot {
    let systems = odata_id(&root["Systems"]).unwrap_or(SYSTEMS).to_owned();
    // `Links.Sessions` is where DSP0266 puts it; a SessionService link alone implies the
    // standard collection below it.
    let sessions = odata_id(&root["Links"]["Sessions"])
        .map(str::to_owned)
        .or_else(|| {
            odata_id(&root["SessionService"])
                .map(|s| format!("{}/Sessions", s.trim_end_matches('/')))
        });
    ServiceRoot { systems, sessions }
}

/// The member paths of a collection.
pub fn members(collection: &Value) -> Vec<String> {
    collection["Members"]
        .as_array()
        .map(|m| m.iter().filter_map(odata_id).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn odata_id(v: &Value) -> Option<&str> {
    v["@odata.id"].as_str()
}

/// What one ComputerSystem says about its power and what it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    pub power: PowerState,
    /// Where to POST `ComputerSystem.Reset`.
    pub reset_target: String,
    /// `ResetType@Redfish.AllowableValues`, when advertised.
    pub reset_types: Option<Vec<String>>,
    /// `BootSourceOverrideTarget@Redfish.AllowableValues`, when advertised.
    pub boot_targets: Option<Vec<String>>,
    pub boot_modes: BootModes,
}

/// Whether a system lets the override choose UEFI or Legacy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootModes {
    /// No `BootSourceOverrideMode` at all: the firmware has one mode; sending it may be refused.
    NotAdvertised,
    /// The property exists without a list of allowed values.
    Any,
    /// `BootSourceOverrideMode@Redfish.AllowableValues`.
    Allowed(Vec<String>),
}

pub fn parse_system(path: &str, system: &Value) -> Result<System, Cause> {
    let power = match system["PowerState"].as_str() {
        Some("Off") => PowerState::Off,
        // Power is still (PoweringOff) or already (PoweringOn) applied; Paused keeps it on.
        Some("On" | "PoweringOn" | "PoweringOff" | "Paused") => PowerState::On,
        Some(other) => {
            return Err(Cause::Protocol(format!(
                "{path} reports PowerState {other:?}, which is not a Redfish power state"
            )));
        }
        None => {
            return Err(Cause::Protocol(format!(
                "{path} has no PowerState; is it a ComputerSystem?"
            )));
        }
    };
    let reset = &system["Actions"]["#ComputerSystem.Reset"];
    let reset_target = reset["target"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
    let boot = &system["Boot"];
    let boot_modes = match strings(&boot["BootSourceOverrideMode@Redfish.AllowableValues"]) {
        Some(list) => BootModes::Allowed(list),
        None if boot.get("BootSourceOverrideMode").is_some() => BootModes::Any,
        None => BootModes::NotAdvertised,
    };
    Ok(System {
        power,
        reset_target,
        reset_types: strings(&reset["ResetType@Redfish.AllowableValues"]),
        boot_targets: strings(&boot["BootSourceOverrideTarget@Redfish.AllowableValues"]),
        boot_modes,
    })
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    })
}

/// How to carry out a power action on one system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetPlan {
    /// One `ComputerSystem.Reset` with this ResetType.
    Reset(&'static str),
    /// `ForceOff`, wait until the system reports Off, then `On`: a cycle on BMCs without
    /// `PowerCycle`.
    OffThenOn,
}

/// Chooses the ResetType for `action` from the advertised values (all standard types are
/// assumed when the BMC lists none).
pub fn reset_plan(action: PowerAction, allowed: Option<&[String]>) -> Result<ResetPlan, Cause> {
    let offers = |t: &str| allowed.is_none_or(|list| list.iter().any(|a| a == t));
    let first = |candidates: &[&'static str]| candidates.iter().copied().find(|t| offers(t));
    let chosen = match action {
        // ForceOn skips the BMC's power-on checks, so it is only the fallback.
        PowerAction::On => first(&["On", "ForceOn"]),
        PowerAction::Off => first(&["ForceOff"]),
        PowerAction::Soft => first(&["GracefulShutdown"]),
        PowerAction::Reset => first(&["ForceRestart"]),
        PowerAction::Cycle => {
            // Without a list nobody promised PowerCycle; ForceOff + On works everywhere.
            if allowed.is_some() && offers("PowerCycle") {
                Some("PowerCycle")
            } else if offers("ForceOff") && (offers("On") || offers("ForceOn")) {
                return Ok(ResetPlan::OffThenOn);
            } else {
                None
            }
        }
    };
    chosen.map(ResetPlan::Reset).ok_or_else(|| {
        Cause::Unsupported(format!(
            "the system offers ResetType {:?}, none of which does this",
            allowed.unwrap_or_default()
        ))
    })
}

/// The PATCH body that makes the next boot (only the next) a PXE boot in `mode`.
pub fn pxe_once_body(system: &System, mode: BootMode) -> Result<Value, Cause> {
    if let Some(targets) = &system.boot_targets
        && !targets.iter().any(|t| t == "Pxe")
    {
        return Err(Cause::Unsupported(format!(
            "the system cannot override its boot to Pxe (it offers {targets:?})"
        )));
    }
    let wanted = match mode {
        BootMode::Bios => "Legacy",
        BootMode::Uefi => "UEFI",
    };
    let mut boot = json!({
        "BootSourceOverrideTarget": "Pxe",
        "BootSourceOverrideEnabled": "Once",
    });
    match &system.boot_modes {
        BootModes::NotAdvertised => {}
        BootModes::Any => boot["BootSourceOverrideMode"] = json!(wanted),
        BootModes::Allowed(modes) if modes.iter().any(|m| m == wanted) => {
            boot["BootSourceOverrideMode"] = json!(wanted);
        }
        BootModes::Allowed(modes) => {
            let hint = if wanted == "Legacy" { "uefi" } else { "bios" };
            return Err(Cause::Unsupported(format!(
                "the system boots only {modes:?}, not {wanted}; set spec.pxeMode: {hint}"
            )));
        }
    }
    Ok(json!({ "Boot": boot }))
}

/// Turns an unsuccessful answer into a cause: the HTTP status, what the BMC said
/// (`@Message.ExtendedInfo` messages, else `error.message`, else the start of the body) and,
/// for what an operator can fix, what to do.
pub fn status_cause(what: &str, status: StatusCode, body: &[u8]) -> Cause {
    let said = message(body);
    let text = if said.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {said}")
    };
    match status.as_u16() {
        401 | 403 => Cause::Authentication(format!(
            "{text}; check the user, password and role in spec.bmc (or the Secrets it names)"
        )),
        405 | 501 => Cause::Unsupported(text),
        // Busy, rate-limited or a passing server fault: worth another attempt.
        408 | 409 | 429 | 500..=599 => Cause::Refused(text),
        _ => Cause::Protocol(text),
    }
}

/// What a Redfish error body says, in one line.
pub fn message(body: &[u8]) -> String {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return text.chars().take(200).collect();
    };
    let error = &doc["error"];
    let extended: Vec<&str> = error["@Message.ExtendedInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            doc["@Message.ExtendedInfo"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|info| info["Message"].as_str())
        .collect();
    if !extended.is_empty() {
        return extended.join("; ");
    }
    error["message"].as_str().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_bare_host_means_https_and_a_path_names_the_system() {
        let e = parse_endpoint("10.0.0.5", None).unwrap();
        assert_eq!(e.base.as_str(), "https://10.0.0.5/");
        assert_eq!(e.system, None);
        assert_eq!(e.describe(), "redfish https://10.0.0.5");

        let e = parse_endpoint("bmc-1:8443", None).unwrap();
        assert_eq!(e.base.as_str(), "https://bmc-1:8443/");

        let e = parse_endpoint("fd00::5", Some(8443)).unwrap();
        assert_eq!(e.base.as_str(), "https://[fd00::5]:8443/");

        let e =
            parse_endpoint("https://bmc-1/redfish/v1/Systems/System.Embedded.1/", None).unwrap();
        assert_eq!(e.base.as_str(), "https://bmc-1/");
        assert_eq!(
            e.system.as_deref(),
            Some("/redfish/v1/Systems/System.Embedded.1")
        );
        assert_eq!(
            e.describe(),
            "redfish https://bmc-1/redfish/v1/Systems/System.Embedded.1"
        );

        let e = parse_endpoint("http://127.0.0.1:8000/redfish/v1", None).unwrap();
        assert_eq!(e.base.as_str(), "http://127.0.0.1:8000/");
        assert_eq!(e.system, None);
    }

    #[test]
    fn endpoints_that_cannot_work_are_configuration_errors_saying_what_to_write() {
        for (endpoint, port, says) in [
            ("", None, "is empty"),
            ("ftp://bmc", None, "https://"),
            ("https://admin:pw@bmc", None, "userFrom"),
            ("https://bmc:8443", Some(443), "contradicts"),
            (
                "https://bmc/redfish/v1/Managers/1",
                None,
                "/redfish/v1/Systems/<Id>",
            ),
            ("https://bmc/redfish/v1/Systems/", None, ""),
        ] {
            let result = parse_endpoint(endpoint, port);
            if says.is_empty() {
                // A trailing slash after Systems names no system: discover it.
                assert_eq!(result.unwrap().system, None);
                continue;
            }
            match result {
                Err(Cause::Config(text)) => assert!(text.contains(says), "{endpoint}: {text}"),
                other => panic!("{endpoint}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_service_root_gives_systems_and_sessions_with_standard_fallbacks() {
        let root = json!({
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
        });
        assert_eq!(
            parse_service_root(&root),
            ServiceRoot {
                systems: "/redfish/v1/Systems".into(),
                sessions: Some("/redfish/v1/SessionService/Sessions".into())
            }
        );
        let root = json!({"SessionService": {"@odata.id": "/redfish/v1/SessionService"}});
        assert_eq!(
            parse_service_root(&root).sessions.as_deref(),
            Some("/redfish/v1/SessionService/Sessions")
        );
        assert_eq!(parse_service_root(&json!({})).sessions, None);
    }

    #[test]
    fn a_system_reports_power_reset_types_and_boot_modes() {
        let doc = json!({
            "PowerState": "PoweringOff",
            "Boot": {
                "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd"],
                "BootSourceOverrideMode": "UEFI"
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]
            }}
        });
        let system = parse_system("/redfish/v1/Systems/1", &doc).unwrap();
        assert_eq!(system.power, PowerState::On);
        assert_eq!(system.reset_types, Some(allowed(&["On", "ForceOff"])));
        assert_eq!(system.boot_targets, Some(allowed(&["Pxe", "Hdd"])));
        assert_eq!(system.boot_modes, BootModes::Any);

        let bare = parse_system("/redfish/v1/Systems/2", &json!({"PowerState": "Off"})).unwrap();
        assert_eq!(bare.power, PowerState::Off);
        assert_eq!(
            bare.reset_target,
            "/redfish/v1/Systems/2/Actions/ComputerSystem.Reset"
        );
        assert_eq!(bare.boot_modes, BootModes::NotAdvertised);

        assert!(matches!(
            parse_system("/x", &json!({"PowerState": "Sleeping"})),
            Err(Cause::Protocol(_))
        ));
    }

    #[test]
    fn reset_types_come_from_what_the_system_allows() {
        let sushy = allowed(&[
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "Nmi",
            "ForceOn",
        ]);
        let plan = |a, l: Option<&[String]>| reset_plan(a, l).unwrap();
        assert_eq!(plan(PowerAction::On, Some(&sushy)), ResetPlan::Reset("On"));
        assert_eq!(
            plan(PowerAction::Off, Some(&sushy)),
            ResetPlan::Reset("ForceOff")
        );
        assert_eq!(
            plan(PowerAction::Soft, Some(&sushy)),
            ResetPlan::Reset("GracefulShutdown")
        );
        assert_eq!(
            plan(PowerAction::Reset, Some(&sushy)),
            ResetPlan::Reset("ForceRestart")
        );
        // No PowerCycle offered: off, then on.
        assert_eq!(plan(PowerAction::Cycle, Some(&sushy)), ResetPlan::OffThenOn);
        let with_cycle = allowed(&["On", "ForceOff", "PowerCycle"]);
        assert_eq!(
            plan(PowerAction::Cycle, Some(&with_cycle)),
            ResetPlan::Reset("PowerCycle")
        );
        // Nothing advertised: the standard types, and a cycle as off + on.
        assert_eq!(plan(PowerAction::On, None), ResetPlan::Reset("On"));
        assert_eq!(plan(PowerAction::Cycle, None), ResetPlan::OffThenOn);
        // Only ForceOn: used for On.
        let force_on = allowed(&["ForceOn", "ForceOff"]);
        assert_eq!(
            plan(PowerAction::On, Some(&force_on)),
            ResetPlan::Reset("ForceOn")
        );
        match reset_plan(PowerAction::Soft, Some(&force_on)) {
            Err(Cause::Unsupported(text)) => assert!(text.contains("ForceOn"), "{text}"),
            other => panic!("{other:?}"),
        }
    }

    fn system(modes: BootModes, targets: Option<&[&str]>) -> System {
        System {
            power: PowerState::Off,
            reset_target: String::new(),
            reset_types: None,
            boot_targets: targets.map(allowed),
            boot_modes: modes,
        }
    }

    #[test]
    fn the_pxe_override_is_once_and_names_the_mode_only_where_the_system_has_one() {
        let body = pxe_once_body(&system(BootModes::Any, None), BootMode::Uefi).unwrap();
        assert_eq!(
            body,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}})
        );
        let body = pxe_once_body(
            &system(BootModes::Allowed(allowed(&["Legacy", "UEFI"])), None),
            BootMode::Bios,
        )
        .unwrap();
        assert_eq!(body["Boot"]["BootSourceOverrideMode"], "Legacy");
        let body = pxe_once_body(&system(BootModes::NotAdvertised, None), BootMode::Uefi).unwrap();
        assert_eq!(
            body,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
        );
    }

    #[test]
    fn a_pxe_override_the_system_cannot_do_says_what_to_change() {
        let uefi_only = system(BootModes::Allowed(allowed(&["UEFI"])), None);
        match pxe_once_body(&uefi_only, BootMode::Bios) {
            Err(Cause::Unsupported(text)) => assert!(text.contains("spec.pxeMode: uefi"), "{text}"),
            other => panic!("{other:?}"),
        }
        let no_pxe = system(BootModes::Any, Some(&["Hdd", "Cd"]));
        assert!(matches!(
            pxe_once_body(&no_pxe, BootMode::Uefi),
            Err(Cause::Unsupported(_))
        ));
    }

    #[test]
    fn error_answers_become_causes_with_the_status_and_the_bmcs_message() {
        let body = br#"{"error": {"code": "Base.1.0.GeneralError", "message": "general",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.PropertyValueNotInList",
            "Message": "The value Bogus for the property ResetType is not in the list of acceptable values."}]}}"#;
        let cause = status_cause("POST /x", StatusCode::BAD_REQUEST, body);
        assert!(matches!(cause, Cause::Protocol(_)), "{cause:?}");
        assert_eq!(
            cause.to_string(),
            "protocol error: POST /x: HTTP 400 Bad Request: The value Bogus for the property ResetType is not in the list of acceptable values."
        );
        let cause = status_cause(
            "GET /y",
            StatusCode::UNAUTHORIZED,
            br#"{"error": {"message": "Authorization required", "code": 401}}"#,
        );
        match cause {
            Cause::Authentication(text) => {
                assert!(text.starts_with("GET /y: HTTP 401 Unauthorized: Authorization required"));
                assert!(text.contains("check the user, password"));
            }
            other => panic!("{other:?}"),
        }
        assert!(status_cause("x", StatusCode::SERVICE_UNAVAILABLE, b"").is_transient());
        assert!(matches!(
            status_cause("x", StatusCode::METHOD_NOT_ALLOWED, b"no"),
            Cause::Unsupported(_)
        ));
        assert_eq!(message(b"  plain text  "), "plain text");
    }
}
