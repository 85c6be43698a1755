//! The embedded Kubernetes-compatible API server: HTTPS, bearer-token authentication, discovery,
//! CRUD/patch/watch for CRDs and a few core kinds, persisted in SQLite through `crate::store`.
//!
//! It plays the role kine plays for k3s: on a single machine (and in every test) the
//! controllers and kubectl talk to it exactly as they would to kube-apiserver.

pub mod apply;
pub mod builtin;
pub mod gc;
pub mod http;
pub mod jsonpath;
pub mod meta;
pub mod openapi;
pub mod pki;
pub mod protobuf;
pub mod request;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod status;
pub mod table;
pub mod verbs;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Namespaces that exist on every Kubernetes API server.
const DEFAULT_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Request bodies larger than this are refused with 413 (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the database, PKI and kubeconfig.
    pub state_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (the kubeconfig records the real one).
    pub listen: SocketAddr,
    /// Extra DNS names and IP addresses for the serving certificate.
    pub extra_names: Vec<String>,
    /// Change events kept for watch resumption.
    pub history: usize,
    /// Bytes of object versions those events may hold at most.
    pub history_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot listen on {addr}: {source}; pick another address with --api-listen")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install {what}: {source}")]
    Bootstrap {
        what: String,
        source: status::ApiError,
    },
}

/// A running API server.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub api: Arc<verbs::Api>,
}

/// Opens the state, installs `crds`, and serves until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    crds: Vec<serde_json::Value>,
    shutdown: CancellationToken,
) -> Result<Running, ApiServerError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| ApiServerError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let store = Store::open_with_limits(
        &config.state_dir.join("state.db"),
        config.history,
        config.history_bytes,
    )?;
    let api = Arc::new(verbs::Api::new(store));
    for ns in DEFAULT_NAMESPACES {
        api.ensure_namespace(ns)
            .await
            .map_err(|source| ApiServerError::Bootstrap {
                what: format!("namespace {ns}"),
                source,
            })?;
    }
    for crd in crds {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        api.install_crd(crd)
            .await
            .map_err(|source| ApiServerError::Bootstrap {
                what: format!("CRD {name}"),
                source,
            })?;
    }

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !config.listen.ip().is_unspecified() && !config.listen.ip().is_loopback() {
        names.push(config.listen.ip().to_string());
    }
    names.extend(config.extra_names.iter().cloned());
    names.dedup();
    let creds = pki::load_or_create(&config.state_dir.join("pki"), &names)?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("https://{host}:{}", addr.port());
    let kubeconfig = config.state_dir.join("kubeconfig");
    pki::write_kubeconfig(&kubeconfig, &url, &creds)?;

    let server = Arc::new(http::Server {
        api: api.clone(),
        token: creds.token.clone(),
        max_body: MAX_BODY,
        server_address: format!("{host}:{}", addr.port()),
    });
    tokio::spawn(gc::run(api.clone(), shutdown.clone()));
    tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(creds.tls.clone()),
        server,
        shutdown,
    ));
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server listening");
    Ok(Running {
        addr,
        kubeconfig,
        api,
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    server: Arc<http::Server>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let server = server.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = match tls.accept(tcp).await {
                Ok(s) => s,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| http::handle(server.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = conn => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
