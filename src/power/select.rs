//! Which power manager a Server gets: `spec.bmc` with interface `lanplus` (IPMI) or `redfish`,
//! else `spec.managementApi` (a test rig's HTTP API), else none. The caller has already read
//! the credentials (from `spec.bmc.user`/`pass` or the Secrets `userFrom`/`passFrom` name).

use std::time::Duration;

use super::http_api::HttpApi;
use super::ipmi;
use super::redfish::{self, Redfish, Trust};
use super::{CallPolicy, Cause, Credentials, PowerManager};
use crate::api::{Bmc, ServerSpec};

/// A Server whose power cannot be managed as its spec is written.
#[derive(Debug, thiserror::Error)]
#[error("power control through {what}: {cause}")]
pub struct SetupError {
    /// The part of the spec at fault, e.g. `spec.bmc (redfish https://10.0.0.5)`.
    pub what: String,
    #[source]
    pub cause: Cause,
}

/// The kind of power control a spec asks for, decided without I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind<'a> {
    Ipmi(&'a Bmc),
    Redfish(&'a Bmc),
    ManagementApi(&'a str),
}

fn kind(spec: &ServerSpec) -> Result<Option<Kind<'_>>, Cause> {
    if let Some(bmc) = &spec.bmc {
        return bmc_kind(bmc).map(Some);
    }
    Ok(spec
        .management_api
        .as_ref()
        .map(|api| Kind::ManagementApi(&api.endpoint)))
}

fn bmc_kind(bmc: &Bmc) -> Result<Kind<'_>, Cause> {
    let is_url = bmc.endpoint.contains("://");
    match bmc.interface.as_deref().map(str::trim).unwrap_or("") {
        "redfish" => Ok(Kind::Redfish(bmc)),
        "" if is_url => Ok(Kind::Redfish(bmc)),
        "" | "lanplus" if !is_url => Ok(Kind::Ipmi(bmc)),
        "lanplus" | "" => Err(Cause::Config(format!(
            "spec.bmc.interface is lanplus (IPMI) but the endpoint {:?} is a URL; give the BMC's address, or set interface: redfish",
            bmc.endpoint
        ))),
        "lan" => Err(Cause::Unsupported(
            "spec.bmc.interface lan (IPMI v1.5) is not supported; use lanplus (IPMI v2.0) or redfish"
                .into(),
        )),
        other => Err(Cause::Config(format!(
            "spec.bmc.interface {other:?} is unknown; use lanplus or redfish"
        ))),
    }
}

fn port(bmc: &Bmc) -> Result<Option<u16>, Cause> {
    bmc.port
        .map(|p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Cause::Config(format!("spec.bmc.port {p} is not a TCP/UDP port")))
        })
        .transpose()
}

fn trust(bmc: &Bmc) -> Result<Trust, Cause> {
    let Some(tls) = &bmc.tls else {
        return Ok(Trust::PublicRoots);
    };
    match (&tls.ca_cert, tls.insecure_skip_verify) {
        (Some(_), true) => Err(Cause::Config(
            "spec.bmc.tls sets both caCert and insecureSkipVerify; keep one".into(),
        )),
        (Some(pem), false) => Ok(Trust::Ca(pem.clone())),
        (None, true) => Ok(Trust::InsecureSkipVerify),
        (None, false) => Ok(Trust::PublicRoots),
    }
}

/// Builds the power manager for a Server, or `None` when its spec asks for no power control
/// (neither `spec.bmc` nor `spec.managementApi`). `credentials` are required for `spec.bmc`.
pub fn manager_for(
    spec: &ServerSpec,
    credentials: Option<Credentials>,
    policy: CallPolicy,
) -> Result<Option<Box<dyn PowerManager>>, SetupError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |cause| SetupError { what, cause }
    };
    let (bmc, what, ipmi) = match kind(spec).map_err(fail("spec.bmc"))? {
        None => return Ok(None),
        Some(Kind::ManagementApi(endpoint)) => {
            let api = HttpApi::new(endpoint, policy).map_err(fail("spec.managementApi"))?;
            return Ok(Some(Box::new(api)));
        }
        Some(Kind::Redfish(bmc)) => (bmc, format!("spec.bmc (redfish {})", bmc.endpoint), false),
        Some(Kind::Ipmi(bmc)) => (bmc, format!("spec.bmc (lanplus {})", bmc.endpoint), true),
    };
    let credentials = credentials.ok_or_else(|| SetupError {
        what: what.clone(),
        cause: Cause::Config(
            "spec.bmc has no credentials; set userFrom and passFrom (or user and pass)".into(),
        ),
    })?;
    let port = port(bmc).map_err(fail(&what))?;
    if ipmi {
        let config = ipmi::IpmiConfig {
            host: bmc.endpoint.clone(),
            port: port.unwrap_or(ipmi::command::RMCP_PORT),
            user: credentials.user,
            password: credentials.password,
            cipher_suites: ipmi::CipherSuites::Auto,
            policy,
        };
        // IpmiLan's own error already names the BMC; the spec part says where it came from.
        let manager = ipmi::IpmiLan::new(config).map_err(|e| SetupError {
            what: what.clone(),
            cause: e.cause,
        })?;
        return Ok(Some(Box::new(manager)));
    }
    let config = redfish::Config {
        endpoint: bmc.endpoint.clone(),
        port,
        credentials,
        auth: bmc.redfish_auth,
        trust: trust(bmc).map_err(fail(&what))?,
        policy,
        settle: Duration::from_secs(30),
    };
    let manager = Redfish::new(config).map_err(fail(&what))?;
    Ok(Some(Box::new(manager)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BmcTls, ManagementApi};

    fn creds() -> Option<Credentials> {
        Some(Credentials {
            user: "admin".into(),
            password: "secret".into(),
        })
    }

    fn bmc(endpoint: &str, interface: Option<&str>) -> ServerSpec {
        ServerSpec {
            bmc: Some(Bmc {
                endpoint: endpoint.into(),
                interface: interface.map(str::to_owned),
                ..Bmc::default()
            }),
            ..ServerSpec::default()
        }
    }

    #[test]
    fn the_interface_or_a_url_endpoint_chooses_redfish() {
        let is = |spec: ServerSpec, want: &str| {
            let got = match kind(&spec).unwrap() {
                Some(Kind::Ipmi(_)) => "ipmi",
                Some(Kind::Redfish(_)) => "redfish",
                Some(Kind::ManagementApi(_)) => "managementApi",
                None => "none",
            };
            assert_eq!(got, want, "{spec:?}");
        };
        is(bmc("10.0.0.5", None), "ipmi");
        is(bmc("10.0.0.5", Some("lanplus")), "ipmi");
        is(bmc("10.0.0.5", Some("redfish")), "redfish");
        is(bmc("https://10.0.0.5", None), "redfish");
        assert!(matches!(
            kind(&bmc("https://10.0.0.5", Some("lanplus"))),
            Err(Cause::Config(_))
        ));
        assert!(matches!(
            kind(&bmc("10.0.0.5", Some("lan"))),
            Err(Cause::Unsupported(_))
        ));
        is(ServerSpec::default(), "none");
    }

    #[test]
    fn each_spec_gets_its_manager_named_after_its_endpoint() {
        let redfish = manager_for(
            &bmc("bmc-1.example", Some("redfish")),
            creds(),
            CallPolicy::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(redfish.describe(), "redfish https://bmc-1.example");

        let spec = ServerSpec {
            management_api: Some(ManagementApi {
                endpoint: "10.5.0.1:8001".into(),
            }),
            ..ServerSpec::default()
        };
        let api = manager_for(&spec, None, CallPolicy::default())
            .unwrap()
            .unwrap();
        assert_eq!(api.describe(), "managementApi http://10.5.0.1:8001");

        assert!(
            manager_for(&ServerSpec::default(), None, CallPolicy::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn specs_that_cannot_work_say_what_to_change() {
        let err = manager_for(&bmc("bmc-1", Some("redfish")), None, CallPolicy::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("set userFrom and passFrom"),
            "{err}"
        );

        for (ca_cert, insecure_skip_verify, says) in [
            (Some("x"), true, "keep one"),
            (Some("not a certificate"), false, "no PEM certificate"),
        ] {
            let mut spec = bmc("bmc-1", Some("redfish"));
            spec.bmc.as_mut().unwrap().tls = Some(BmcTls {
                ca_cert: ca_cert.map(str::to_owned),
                insecure_skip_verify,
            });
            let err = manager_for(&spec, creds(), CallPolicy::default())
                .err()
                .unwrap();
            assert!(err.to_string().contains(says), "{err}");
        }

        let mut long_password = bmc("10.0.0.5", None);
        long_password.bmc.as_mut().unwrap().interface = Some("lanplus".into());
        let err = manager_for(
            &long_password,
            Some(Credentials {
                user: "admin".into(),
                password: "p".repeat(21),
            }),
            CallPolicy::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(err.cause, Cause::Config(_)), "{err}");
        assert!(err.to_string().contains("at most 20 bytes"), "{err}");
    }

    #[test]
    fn an_address_with_lanplus_or_no_interface_gets_ipmi_on_port_623() {
        for interface in [None, Some("lanplus")] {
            let ipmi = manager_for(&bmc("10.0.0.5", interface), creds(), CallPolicy::default())
                .unwrap()
                .unwrap();
            assert_eq!(ipmi.describe(), "ipmi 10.0.0.5:623");
        }
        let mut spec = bmc("10.0.0.5", Some("lanplus"));
        spec.bmc.as_mut().unwrap().port = Some(6230);
        let ipmi = manager_for(&spec, creds(), CallPolicy::default())
            .unwrap()
            .unwrap();
        assert_eq!(ipmi.describe(), "ipmi 10.0.0.5:6230");
    }
}
