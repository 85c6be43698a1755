//! Which Server a machine is: its name comes from the SMBIOS system UUID, or, when the firmware
//! gives none worth using (missing, unparsable, all zeroes, all ones), from the MAC of the NIC it
//! booted from. The agent (registration) and the boot HTTP server (`/ipxe?uuid=&mac=`) both use
//! this one function, so the two always agree on a machine's name.

/// A machine's Server name and, when it is not the SMBIOS UUID, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Lowercase hyphenated UUID: a valid Kubernetes name.
    pub name: String,
    /// Why the boot MAC was used instead of the SMBIOS UUID.
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the machine has no usable identity: {uuid_problem}, and {mac_problem}; boot it through Siderite's iPXE script (which passes siderite.mac=) or fix its SMBIOS UUID in the firmware setup"
    )]
    None {
        uuid_problem: String,
        mac_problem: String,
    },
}

/// Names a machine from its SMBIOS UUID, falling back to `00000000-0000-0000-0000-<mac>`.
///
/// The fallback keeps the MAC readable in `kubectl get servers`, and its all-zero head cannot
/// collide with a real SMBIOS UUID because all-zero UUIDs are exactly the ones refused here.
pub fn server_identity(
    smbios_uuid: Option<&str>,
    boot_mac: Option<&str>,
) -> Result<Identity, IdentityError> {
    let uuid_problem = match smbios_uuid.map(str::trim) {
        None | Some("") => "the firmware reports no SMBIOS UUID".to_owned(),
        Some(text) => match uuid::Uuid::try_parse(text) {
            Ok(uuid) if uuid.is_nil() => format!("the SMBIOS UUID {text} is all zeroes"),
            Ok(uuid) if uuid.is_max() => format!("the SMBIOS UUID {text} is all ones"),
            Ok(uuid) => {
                return Ok(Identity {
                    name: uuid.hyphenated().to_string(),
                    fallback: None,
                });
            }
            Err(_) => format!("the SMBIOS UUID {text:?} is not a UUID"),
        },
    };
    match boot_mac.map(parse_mac) {
        Some(Some(mac)) => Ok(Identity {
            name: format!(
                "00000000-0000-0000-0000-{}",
                mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            fallback: Some(format!(
                "{uuid_problem}; named after boot MAC {}",
                format_mac(&mac)
            )),
        }),
        Some(None) => Err(IdentityError::None {
            uuid_problem,
            mac_problem: format!(
                "the boot MAC {:?} is not a MAC address",
                boot_mac.unwrap_or("")
            ),
        }),
        None => Err(IdentityError::None {
            uuid_problem,
            mac_problem: "no boot MAC is known".to_owned(),
        }),
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC the way Linux and Kubernetes write it: lowercase, colon-separated.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbios_uuid_is_lowercased_and_used_as_is() {
        let id = server_identity(
            Some("4C4C4544-0044-3610-8052-B4C04F4B3232"),
            Some("52:54:00:12:34:56"),
        )
        .expect("valid identity");
        assert_eq!(id.name, "4c4c4544-0044-3610-8052-b4c04f4b3232");
        assert_eq!(id.fallback, None);
    }

    #[test]
    fn all_zero_uuid_falls_back_to_the_boot_mac_and_says_why() {
        let id = server_identity(
            Some("00000000-0000-0000-0000-000000000000"),
            Some("52:54:00:AB:CD:EF"),
        )
        .expect("valid identity");
        assert_eq!(id.name, "00000000-0000-0000-0000-525400abcdef");
        let why = id.fallback.expect("fallback reason");
        assert!(
            why.contains("all zeroes") && why.contains("52:54:00:ab:cd:ef"),
            "{why}"
        );
    }

    #[test]
    fn all_ones_garbage_and_missing_uuids_fall_back() {
        for uuid in [
            Some("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"),
            Some("Not Settable"),
            Some(""),
            None,
        ] {
            let id = server_identity(uuid, Some("52-54-00-00-00-01")).expect("valid identity");
            assert_eq!(id.name, "00000000-0000-0000-0000-525400000001", "{uuid:?}");
            assert!(id.fallback.is_some());
        }
    }

    #[test]
    fn no_uuid_and_no_mac_is_an_error_naming_both() {
        let error = server_identity(None, Some("52:54:00")).expect_err("no identity");
        let text = error.to_string();
        assert!(
            text.contains("no SMBIOS UUID") && text.contains("not a MAC"),
            "{text}"
        );
    }

    #[test]
    fn mac_parsing_refuses_wrong_lengths() {
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("5:54:00:12:34:56"), None);
        assert_eq!(parse_mac("52:54:00:12:34:zz"), None);
        assert_eq!(
            parse_mac("52-54-00-12-34-56"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
    }
}
