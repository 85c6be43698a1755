//! iPXE scripts the boot plane serves (`/boot.ipxe`, the per-machine `/ipxe` answers), rendered
//! so that no interpolated value can add, remove or change an iPXE command (pure, no I/O).
//!
//! What iPXE does with a script line (src/image/script.c, src/core/exec.c, src/core/settings.c):
//! a trailing `\` joins the next line; the line is split on whitespace, with no quoting and no
//! escapes; a token that is exactly `||`, `&&` or `;` separates commands and a token starting
//! with `#` starts a comment; then each token on its own has every `${...}` expanded, repeatedly,
//! until none is left, so a setting's value is never re-split but can expand again.
//!
//! Hence the two validated types every interpolated value goes through:
//! - [`ScriptUrl`] percent-encodes everything iPXE could interpret (whitespace, control bytes,
//!   `\`, `$`, `{`, `}`, non-ASCII) and requires `http://` or `https://`, so a URL is always one
//!   inert token that does not start with `#`;
//! - [`KernelArg`] refuses what cannot be made inert: iPXE has no way to escape `${`, and a
//!   kernel argument cannot be percent-encoded, so an argument with whitespace, control bytes,
//!   `\`, `${`, a leading `#`, or equal to a separator is an error rather than silently altered.

use std::fmt::{self, Write as _};

use thiserror::Error;

use crate::api::BootFromDiskMethod;

/// Name under which the kernel script registers the initramfs: the `initrd=` argument points
/// EFI kernels (whose EFI stub loads the initramfs itself) at this image.
pub const INITRD_NAME: &str = "initrd";

/// Rounds over all NICs `/boot.ipxe` makes before it gives up on the appliance.
pub const BOOT_ATTEMPTS: u32 = 5;

/// Seconds `/boot.ipxe` waits between rounds.
pub const BOOT_RETRY_SECONDS: u32 = 5;

/// A value that cannot be placed in an iPXE script safely.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScriptError {
    #[error(
        "URL {url:?} must start with http:// or https:// followed by a host: machines fetch \
         scripts, kernels and initramfs images over HTTP"
    )]
    UnsupportedUrl { url: String },
    #[error(
        "base URL {url:?} must not contain a query or fragment: give it as http://<address>:<port>"
    )]
    BaseUrlWithQuery { url: String },
    #[error(
        "kernel argument {arg:?} {reason}; iPXE scripts have no quoting, so change the argument"
    )]
    UnsafeKernelArg { arg: String, reason: &'static str },
}

/// A URL that is safe to place anywhere in an iPXE script: one token, no expansion, no comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptUrl(String);

impl ScriptUrl {
    /// Validates an `http(s)://` URL and percent-encodes the bytes iPXE would interpret.
    /// Existing `%XX` escapes are kept; a `%` not followed by two hex digits is encoded.
    pub fn parse(raw: &str) -> Result<Self, ScriptError> {
        let scheme_len = ["http://", "https://"]
            .iter()
            .find(|scheme| {
                raw.get(..scheme.len())
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
            })
            .map(|scheme| scheme.len());
        match scheme_len {
            Some(len) if raw.len() > len && !raw[len..].starts_with('/') => {
                Ok(Self(encode(raw, is_url_byte)))
            }
            _ => Err(ScriptError::UnsupportedUrl {
                url: raw.to_owned(),
            }),
        }
    }

    /// Validates the appliance's own base URL (`http://<address>:<port>`, optionally with a
    /// path prefix) that per-machine paths are appended to; trailing slashes are dropped.
    pub fn base(raw: &str) -> Result<Self, ScriptError> {
        if raw.contains(['?', '#']) {
            return Err(ScriptError::BaseUrlWithQuery {
                url: raw.to_owned(),
            });
        }
        let trimmed = raw.trim_end_matches('/');
        Self::parse(trimmed)
    }

    /// Appends `path` (a plain file path, e.g. an asset name) as path segments: `?`, `#` and
    /// `%` in it are encoded too, so a file name can never turn into a query or an escape.
    pub fn join_path(&self, path: &str) -> Self {
        let mut url = self.0.trim_end_matches('/').to_owned();
        url.push('/');
        url.push_str(&encode(path.trim_start_matches('/'), is_path_byte));
        Self(url)
    }

    /// The encoded URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScriptUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One kernel command-line argument that iPXE passes through unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelArg(String);

impl KernelArg {
    /// Accepts visible ASCII only and refuses the few forms iPXE would interpret (see the
    /// module docs); nothing is rewritten, so the kernel sees exactly what was configured.
    pub fn parse(raw: &str) -> Result<Self, ScriptError> {
        let reason = if raw.is_empty() {
            Some("is empty")
        } else if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            Some("contains whitespace, a control character or non-ASCII text")
        } else if raw.contains('\\') {
            Some("contains `\\`, which iPXE reads as a line continuation")
        } else if raw.contains("${") {
            Some("contains `${`, which iPXE expands as a setting and cannot escape")
        } else if raw.starts_with('#') {
            Some("starts with `#`, which iPXE reads as a comment")
        } else if matches!(raw, "||" | "&&" | ";") {
            Some("is an iPXE command separator")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ScriptError::UnsafeKernelArg {
                arg: raw.to_owned(),
                reason,
            }),
            None => Ok(Self(raw.to_owned())),
        }
    }

    /// The argument as the kernel will see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KernelArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The script served at `/boot.ipxe`: bring up each NIC in turn with DHCP and chain the
/// per-machine `{base}/ipxe` answer; retry [`BOOT_ATTEMPTS`] rounds, then `exit 1` so the
/// firmware moves on to its next boot device (an installed server boots from disk even while
/// the appliance is down, and `http-404` ends there too).
///
/// The chained answer is not `--replace`d: when it fails (a kernel download error, a 404,
/// a failed `sanboot`), control comes back here and the next NIC or round is tried. When it
/// succeeds without booting (an `exit` answer), the `exit` after `chain` leaves iPXE.
///
/// The query values are iPXE settings that iPXE expands on the machine: `${uuid}` (SMBIOS
/// UUID, hex and dashes), the MAC of the NIC that got a lease as `hexhyp`, and `buildarch`
/// and `serial` as `uristring` (URI-encoded by older iPXE; newer iPXE encodes the whole URL).
/// `serial` comes last so that a serial number containing `&uuid=` can only add a duplicate
/// parameter, which the server refuses.
pub fn boot_script(base: &ScriptUrl) -> String {
    let base = base.as_str().trim_end_matches('/');
    format!(
        "#!ipxe\n\
         # Siderite: get a DHCP lease on some NIC, then ask the appliance what this machine boots.\n\
         set attempt:int32 0\n\
         :round\n\
         set idx:int32 0\n\
         :nic\n\
         isset ${{net${{idx}}/mac}} || goto round_done\n\
         dhcp net${{idx}} || goto next_nic\n\
         chain --autofree {base}/ipxe?uuid=${{uuid}}&mac=${{net${{idx}}/mac:hexhyp}}&arch=${{buildarch:uristring}}&serial=${{serial:uristring}} || goto next_nic\n\
         exit\n\
         :next_nic\n\
         inc idx\n\
         goto nic\n\
         :round_done\n\
         inc attempt\n\
         iseq ${{attempt}} {BOOT_ATTEMPTS} && goto give_up ||\n\
         echo Siderite: no boot instructions yet, retrying in {BOOT_RETRY_SECONDS} seconds\n\
         sleep {BOOT_RETRY_SECONDS}\n\
         goto round\n\
         :give_up\n\
         echo Siderite: no boot instructions after {BOOT_ATTEMPTS} rounds, trying the next boot device\n\
         exit 1\n"
    )
}

/// The script that netboots a kernel and initramfs (the discovery environment or an
/// Environment). `initrd=` is added first so EFI kernels find the initramfs; the configured
/// arguments follow in order.
pub fn kernel_script(kernel: &ScriptUrl, initrd: &ScriptUrl, args: &[KernelArg]) -> String {
    let mut kernel_line = format!("kernel {kernel} initrd={INITRD_NAME}");
    for arg in args {
        // Writing to a String cannot fail.
        let _ = write!(kernel_line, " {arg}");
    }
    format!("#!ipxe\n{kernel_line}\ninitrd --name {INITRD_NAME} {initrd}\nboot\n")
}

/// The script that makes iPXE boot from the local disk, or `None` for `http-404`, which has no
/// script: the HTTP layer answers 404 and the boot script falls through to the next device.
pub fn exit_script(method: BootFromDiskMethod) -> Option<String> {
    match method {
        // `exit` hands control back to the firmware, which tries its next boot device.
        BootFromDiskMethod::IpxeExit => Some("#!ipxe\nexit\n".to_owned()),
        // For firmwares that do not move on after `exit`: boot the first BIOS disk directly,
        // without describing it (no iBFT/aBFT tables), as Sidero does.
        BootFromDiskMethod::IpxeSanboot => {
            Some("#!ipxe\nsanboot --no-describe --drive 0x80\n".to_owned())
        }
        BootFromDiskMethod::Http404 => None,
    }
}

/// Bytes kept as they are in a URL: RFC 3986 unreserved and reserved characters except `$`
/// (iPXE expansion), plus `%`, whose escapes are checked separately by [`encode`].
fn is_url_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~:/?#[]@!&'()*+,;=%".contains(&byte)
}

/// Bytes kept as they are in an appended file path: like [`is_url_byte`] without the
/// delimiters `?` and `#` and without `%` (a `%` in a file name is a literal `%`).
fn is_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~:/[]@!&'()*+,;=".contains(&byte)
}

/// Percent-encodes every byte `keep` refuses, and every `%` that does not start a `%XX` escape.
fn encode(raw: &str, keep: fn(u8) -> bool) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (index, &byte) in bytes.iter().enumerate() {
        let is_escape = byte == b'%'
            && bytes
                .get(index + 1..index + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if keep(byte) && (byte != b'%' || is_escape) {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(raw: &str) -> ScriptUrl {
        ScriptUrl::parse(raw).expect("test URL is valid")
    }

    fn args(raw: &[&str]) -> Vec<KernelArg> {
        raw.iter()
            .map(|arg| KernelArg::parse(arg).expect("test argument is valid"))
            .collect()
    }

    /// The commands iPXE would run for `line`: its tokens split at separators, as exec.c does.
    fn commands(line: &str) -> Vec<Vec<&str>> {
        let mut commands = vec![Vec::new()];
        for token in line.split_ascii_whitespace() {
            if token.starts_with('#') {
                break;
            }
            if matches!(token, "||" | "&&" | ";") {
                commands.push(Vec::new());
            } else if let Some(last) = commands.last_mut() {
                last.push(token);
            }
        }
        commands
    }

    #[test]
    fn boot_script_matches_golden_text() {
        let base = ScriptUrl::base("http://10.5.0.1:8081/").expect("valid base");
        let expected = "#!ipxe
# Siderite: get a DHCP lease on some NIC, then ask the appliance what this machine boots.
set attempt:int32 0
:round
set idx:int32 0
:nic
isset ${net${idx}/mac} || goto round_done
dhcp net${idx} || goto next_nic
chain --autofree http://10.5.0.1:8081/ipxe?uuid=${uuid}&mac=${net${idx}/mac:hexhyp}&arch=${buildarch:uristring}&serial=${serial:uristring} || goto next_nic
exit
:next_nic
inc idx
goto nic
:round_done
inc attempt
iseq ${attempt} 5 && goto give_up ||
echo Siderite: no boot instructions yet, retrying in 5 seconds
sleep 5
goto round
:give_up
echo Siderite: no boot instructions after 5 rounds, trying the next boot device
exit 1
";
        assert_eq!(boot_script(&base), expected);
    }

    #[test]
    fn kernel_script_matches_golden_text() {
        let script = kernel_script(
            &url("http://10.5.0.1:8081/assets/vmlinuz"),
            &url("http://10.5.0.1:8081/assets/initramfs.xz"),
            &args(&["console=ttyS0,115200n8", "ip=dhcp", "siderite.uuid=abc"]),
        );
        assert_eq!(
            script,
            "#!ipxe\n\
             kernel http://10.5.0.1:8081/assets/vmlinuz initrd=initrd console=ttyS0,115200n8 ip=dhcp siderite.uuid=abc\n\
             initrd --name initrd http://10.5.0.1:8081/assets/initramfs.xz\n\
             boot\n"
        );
    }

    #[test]
    fn kernel_script_without_arguments_still_names_the_initrd() {
        let script = kernel_script(&url("http://a/k"), &url("http://a/i"), &[]);
        assert_eq!(
            script,
            "#!ipxe\nkernel http://a/k initrd=initrd\ninitrd --name initrd http://a/i\nboot\n"
        );
    }

    #[test]
    fn exit_script_for_ipxe_exit_is_exit() {
        assert_eq!(
            exit_script(BootFromDiskMethod::IpxeExit).as_deref(),
            Some("#!ipxe\nexit\n")
        );
    }

    #[test]
    fn exit_script_for_sanboot_boots_the_first_disk() {
        assert_eq!(
            exit_script(BootFromDiskMethod::IpxeSanboot).as_deref(),
            Some("#!ipxe\nsanboot --no-describe --drive 0x80\n")
        );
    }

    #[test]
    fn http_404_has_no_script() {
        assert_eq!(exit_script(BootFromDiskMethod::Http404), None);
    }

    #[test]
    fn url_with_newline_and_command_stays_one_token() {
        let kernel = url("http://a/vmlinuz\nshell");
        let script = kernel_script(&kernel, &url("http://a/initrd"), &[]);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "#!ipxe",
                "kernel http://a/vmlinuz%0Ashell initrd=initrd",
                "initrd --name initrd http://a/initrd",
                "boot",
            ]
        );
    }

    #[test]
    fn url_with_expansion_and_separator_stays_inert() {
        let kernel = url("http://a/x ${net0/mac} && shell # c\\");
        assert_eq!(
            kernel.as_str(),
            "http://a/x%20%24%7Bnet0/mac%7D%20&&%20shell%20#%20c%5C"
        );
        let script = kernel_script(&kernel, &url("http://a/i"), &[]);
        let kernel_line = script.lines().nth(1).expect("kernel line");
        assert_eq!(
            commands(kernel_line),
            [vec!["kernel", kernel.as_str(), "initrd=initrd"]]
        );
    }

    #[test]
    fn url_keeps_valid_escapes_and_encodes_stray_percent() {
        assert_eq!(
            url("http://a/b%20c%zz%4").as_str(),
            "http://a/b%20c%25zz%254"
        );
    }

    #[test]
    fn url_encodes_non_ascii_bytes() {
        assert_eq!(url("http://a/é").as_str(), "http://a/%C3%A9");
    }

    #[test]
    fn url_must_be_http_with_a_host() {
        for raw in [
            "ftp://a/b",
            "tftp://a/b",
            "/assets/x",
            "http://",
            "http:///x",
            "#http://a",
        ] {
            assert_eq!(
                ScriptUrl::parse(raw),
                Err(ScriptError::UnsupportedUrl {
                    url: raw.to_owned()
                }),
                "{raw}"
            );
        }
        assert!(ScriptUrl::parse("HTTPS://a").is_ok());
    }

    #[test]
    fn base_url_refuses_query_and_trims_slashes() {
        assert!(matches!(
            ScriptUrl::base("http://a/?x=1"),
            Err(ScriptError::BaseUrlWithQuery { .. })
        ));
        assert_eq!(
            ScriptUrl::base("http://a:1//").expect("valid").as_str(),
            "http://a:1"
        );
    }

    #[test]
    fn joined_path_encodes_query_and_fragment_characters() {
        let base = ScriptUrl::base("http://a:1").expect("valid");
        assert_eq!(
            base.join_path("/assets/env/x?y#z 100%.img").as_str(),
            "http://a:1/assets/env/x%3Fy%23z%20100%25.img"
        );
    }

    #[test]
    fn kernel_arg_refuses_what_ipxe_would_interpret() {
        for raw in [
            "",
            "a b",
            "x\nshell",
            "tab\there",
            "a${net0/mac}",
            "${x}",
            "#comment",
            "||",
            "&&",
            ";",
            "trailing\\",
            "caf\u{e9}",
        ] {
            assert!(
                matches!(
                    KernelArg::parse(raw),
                    Err(ScriptError::UnsafeKernelArg { .. })
                ),
                "{raw:?} was accepted"
            );
        }
    }

    #[test]
    fn kernel_arg_accepts_ordinary_arguments() {
        for raw in [
            "console=ttyS0,115200n8",
            "talos.config=http://10.0.0.1:8081/configdata?uuid=",
            "a|b",
            "x&&y",
            "cost=$5",
            "k={v}",
            "mid#hash",
            "--",
        ] {
            assert_eq!(
                KernelArg::parse(raw).map(|arg| arg.as_str().to_owned()),
                Ok(raw.to_owned())
            );
        }
    }

    #[test]
    fn kernel_arg_injection_attempt_is_refused_with_a_reason() {
        let error = KernelArg::parse("a ${net0/mac} && shell").expect_err("must be refused");
        assert_eq!(
            error.to_string(),
            "kernel argument \"a ${net0/mac} && shell\" contains whitespace, a control character \
             or non-ASCII text; iPXE scripts have no quoting, so change the argument"
        );
    }

    proptest! {
        #[test]
        fn any_url_renders_as_one_inert_token(tail in any::<String>()) {
            let kernel = url(&format!("http://h/{tail}"));
            let token = kernel.as_str();
            prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert!(!token.contains('$') && !token.contains('\\'));
            let script = kernel_script(&kernel, &kernel, &[]);
            let lines: Vec<&str> = script.lines().collect();
            prop_assert_eq!(lines.len(), 4);
            prop_assert_eq!(commands(lines[1]), vec![vec!["kernel", token, "initrd=initrd"]]);
            prop_assert_eq!(commands(lines[2]), vec![vec!["initrd", "--name", "initrd", token]]);
        }

        #[test]
        fn any_accepted_kernel_arg_is_exactly_one_argument(raw in "[ -~\t\n\r]{0,16}") {
            if let Ok(arg) = KernelArg::parse(&raw) {
                let script = kernel_script(&url("http://h/k"), &url("http://h/i"), &[arg]);
                let lines: Vec<&str> = script.lines().collect();
                prop_assert_eq!(lines.len(), 4);
                let expands = lines[1].contains("${");
                prop_assert!(!lines[1].ends_with('\\') && !expands);
                prop_assert_eq!(
                    commands(lines[1]),
                    vec![vec!["kernel", "http://h/k", "initrd=initrd", raw.as_str()]]
                );
            }
        }
    }
}
