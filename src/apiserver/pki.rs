//! Certificates, the admin token and the kubeconfig of the embedded API server.
//!
//! On first start a CA and a serving certificate are generated under `<state-dir>/pki/`; later
//! starts reuse them so that a kubeconfig handed out earlier stays valid. The serving
//! certificate is re-issued (by the same CA) only when the requested names change.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}: {source}; check that the state directory is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{path} is not a valid PEM {what}: {detail}; delete the pki directory to start afresh")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the server needs to terminate TLS and authenticate clients.
pub struct Credentials {
    pub tls: Arc<rustls::ServerConfig>,
    pub ca_pem: String,
    pub token: String,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Writes a file readable only by its owner (keys, tokens, kubeconfigs carry secrets).
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Loads or creates the CA, serving certificate (for `names`: DNS names and IP addresses) and
/// admin token under `dir`.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Credentials, PkiError> {
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let gen_err = |what| move |source| PkiError::Generate { what, source };

    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let (ca_pem, ca_key_pem) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(gen_err("CA key"))?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA parameters"))?;
            params
                .distinguished_name
                .push(DnType::CommonName, "siderite-ca");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
            let cert = params
                .self_signed(&key)
                .map_err(gen_err("CA certificate"))?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            write_private(&ca_cert_path, &cert.pem())?;
            (cert.pem(), key.serialize_pem())
        }
    };

    let names_path = dir.join("apiserver.names");
    let cert_path = dir.join("apiserver.crt");
    let key_path = dir.join("apiserver.key");
    let wanted_names = names.join("\n");
    let reuse = read(&names_path)?.as_deref() == Some(wanted_names.as_str())
        && cert_path.exists()
        && key_path.exists();
    if !reuse {
        let bad = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |e: rcgen::Error| PkiError::BadPem {
                path,
                what,
                detail: e.to_string(),
            }
        };
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(bad("key", &ca_key_path))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(bad("certificate", &ca_cert_path))?;
        let key = KeyPair::generate().map_err(gen_err("serving key"))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(gen_err("serving parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "siderite-apiserver");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(gen_err("serving certificate"))?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        write_private(&names_path, &wanted_names)?;
    }

    let token_path = dir.join("admin.token");
    let token = match read(&token_path)? {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let bytes: [u8; 32] = rand::rng().random();
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(&token_path, &token)?;
            token
        }
    };

    let cert_pem = read(&cert_path)?.unwrap_or_default();
    let key_pem = read(&key_path)?.unwrap_or_default();
    let pem_err = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| PkiError::BadPem {
            path,
            what,
            detail: e.to_string(),
        }
    };
    let chain = vec![
        CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(pem_err("certificate", &cert_path))?,
        CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(pem_err("certificate", &ca_cert_path))?,
    ];
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err("key", &key_path))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Credentials {
        tls: Arc::new(tls),
        ca_pem,
        token,
    })
}

/// Writes an admin kubeconfig for `server` (an `https://` URL).
pub fn write_kubeconfig(path: &Path, server: &str, creds: &Credentials) -> Result<(), PkiError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(creds.ca_pem.as_bytes());
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: siderite
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: siderite-admin
  user:
    token: {token}
contexts:
- name: siderite
  context:
    cluster: siderite
    user: siderite-admin
    namespace: default
current-context: siderite
",
        token = creds.token
    );
    write_private(path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_reused_across_starts_and_reissued_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = load_or_create(dir.path(), &names).unwrap();
        let cert = fs::read(dir.path().join("apiserver.crt")).unwrap();
        let again = load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.token, again.token);
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(cert, fs::read(dir.path().join("apiserver.crt")).unwrap());
        let more = [names.clone(), vec!["10.0.0.1".to_owned()]].concat();
        let third = load_or_create(dir.path(), &more).unwrap();
        assert_eq!(third.ca_pem, first.ca_pem, "the CA survives a re-issue");
        assert_ne!(cert, fs::read(dir.path().join("apiserver.crt")).unwrap());
    }

    #[test]
    fn secrets_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let creds = load_or_create(dir.path(), &["localhost".to_owned()]).unwrap();
        let kc = dir.path().join("kubeconfig");
        write_kubeconfig(&kc, "https://127.0.0.1:6443", &creds).unwrap();
        for f in ["ca.key", "apiserver.key", "admin.token", "kubeconfig"] {
            let mode = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} must not be readable by others");
        }
        assert!(fs::read_to_string(&kc).unwrap().contains(&creds.token));
    }
}
