//! HTTP/JSON client of the agent API, used by the discovery agent and by `siderite bench
//! agents`. One connection per request: agents talk rarely, and a fresh connection survives an
//! appliance restart without any reconnection logic. The appliance is addressed by IP (the
//! agent has no DNS), from `siderite.url=` on the kernel command line.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use hyper::body::Incoming;

use crate::api::agent::{AgentError, DeployReport, Directive, PREFIX, Registered, Registration};

/// Time allowed to connect and send a request; long polls add their wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest response read (directives and registrations are tiny).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the appliance URL {url:?} is not http://<IPv4 or [IPv6]>:<port> (the agent has no DNS; check siderite.url= on the kernel command line)"
    )]
    Url { url: String },
    #[error("cannot connect to the appliance at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{method} {path} to {addr} failed: {source}")]
    Http {
        method: Method,
        path: String,
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{method} {path} to {addr} got no answer within {seconds} s")]
    Timeout {
        method: Method,
        path: String,
        addr: SocketAddr,
        seconds: u64,
    },
    #[error("the appliance refused {method} {path} with {status}: {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("the appliance's answer to {path} is not what this agent understands: {detail}")]
    Decode { path: String, detail: String },
}

impl ClientError {
    /// The appliance's HTTP status, when it answered with a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one appliance.
#[derive(Clone, Debug)]
pub struct ApplianceClient {
    addr: SocketAddr,
}

impl ApplianceClient {
    /// `url` is `http://<ip>:<port>` (a trailing path is ignored).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let parsed = HttpUrl::parse(url).ok_or_else(|| ClientError::Url {
            url: url.to_owned(),
        })?;
        Ok(ApplianceClient { addr: parsed.addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers the machine; returns the Server name to use from now on.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, ClientError> {
        let path = format!("{PREFIX}/register");
        let bytes = self
            .request(
                Method::POST,
                &path,
                Some(json_body(registration)?),
                Duration::ZERO,
            )
            .await?;
        decode(&path, &bytes)
    }

    /// Asks what to do next, letting the appliance hold the request up to `wait`.
    pub async fn directive(
        &self,
        server: &str,
        boot_id: &str,
        wait: Duration,
    ) -> Result<Directive, ClientError> {
        let path = format!(
            "{PREFIX}/servers/{server}/directive?wait={}&bootId={boot_id}",
            wait.as_secs()
        );
        let bytes = self.request(Method::GET, &path, None, wait).await?;
        decode(&path, &bytes)
    }

    /// Posts a report (`progress`, `wiped`, `addresses`, `heartbeat`, `log`).
    pub async fn report<T: Serialize>(
        &self,
        server: &str,
        what: &str,
        body: &T,
    ) -> Result<(), ClientError> {
        let path = format!("{PREFIX}/servers/{server}/{what}");
        self.request(Method::POST, &path, Some(json_body(body)?), Duration::ZERO)
            .await
            .map(drop)
    }

    /// Reports the outcome of a `deploy` directive.
    pub async fn deployed(&self, server: &str, report: &DeployReport) -> Result<(), ClientError> {
        self.report(server, "deployed", report).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        extra_time: Duration,
    ) -> Result<Bytes, ClientError> {
        let timeout = REQUEST_TIMEOUT + extra_time;
        let exchange = self.exchange(method.clone(), path, body);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                method,
                path: path.to_owned(),
                addr: self.addr,
                seconds: timeout.as_secs(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, ClientError> {
        let http_error = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            addr: self.addr,
            source,
        };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        tokio::spawn(async move {
            // The connection ends with the response; its error, if any, surfaces there.
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Decode {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                path: path.to_owned(),
                detail: e.to_string(),
            })?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<AgentError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_owned());
        Err(ClientError::Refused {
            method,
            path: path.to_owned(),
            status,
            message,
        })
    }
}

/// An `http://<IPv4 or [IPv6]>:<port>/<path>` URL, split for a request. There is no DNS in the
/// agent, so a host name is refused rather than looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Option<HttpUrl> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        Some(HttpUrl {
            addr: authority.parse().ok()?,
            path: path.to_owned(),
        })
    }

    /// This URL with `name` appended to its path (the path ends in `/` for a directory).
    pub fn join(&self, name: &str) -> HttpUrl {
        HttpUrl {
            addr: self.addr,
            path: format!("{}{name}", self.path),
        }
    }
}

/// Why a download failed. It never names the URL: some URLs carry secrets (the config drive's
/// token), so the caller adds what may be said about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP exchange with {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{addr} sent nothing for {seconds} s")]
    Timeout { addr: SocketAddr, seconds: u64 },
    #[error("{addr} answered {status}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
    },
    #[error("{addr} answered a range request with {detail}")]
    Range { addr: SocketAddr, detail: String },
}

/// Time allowed for a download to connect and for each later piece of its body to arrive.
pub const DOWNLOAD_STALL: Duration = Duration::from_secs(60);

/// Starts `GET url`, optionally for the bytes `range.0..range.1`, and returns the response
/// once its head arrived with a success status; its body is streamed by the caller. A 404 is
/// `FetchError::Status` like any other refusal.
pub async fn get(
    url: &HttpUrl,
    range: Option<(u64, u64)>,
) -> Result<http::Response<Incoming>, FetchError> {
    let addr = url.addr;
    let timeout = || FetchError::Timeout {
        addr,
        seconds: DOWNLOAD_STALL.as_secs(),
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| FetchError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| FetchError::Http { addr, source })?;
        tokio::spawn(async move {
            // Errors of the connection surface through the response body.
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(&url.path)
            .header(header::HOST, addr.to_string());
        if let Some((start, end)) = range {
            // HTTP ranges are inclusive.
            builder = builder.header(
                header::RANGE,
                format!("bytes={start}-{}", end.saturating_sub(1)),
            );
        }
        let request = builder
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| FetchError::Range {
                addr,
                detail: format!("an unusable request ({e})"),
            })?;
        sender
            .send_request(request)
            .await
            .map_err(|source| FetchError::Http { addr, source })
    };
    let response = tokio::time::timeout(DOWNLOAD_STALL, exchange)
        .await
        .map_err(|_| timeout())??;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status { addr, status });
    }
    if range.is_some() && status != StatusCode::PARTIAL_CONTENT {
        return Err(FetchError::Range {
            addr,
            detail: format!("{status} instead of 206 Partial Content"),
        });
    }
    Ok(response)
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_body(
    addr: SocketAddr,
    body: Incoming,
    limit: usize,
) -> Result<Option<Bytes>, FetchError> {
    let collect = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(DOWNLOAD_STALL, collect).await {
        Err(_) => Err(FetchError::Timeout {
            addr,
            seconds: DOWNLOAD_STALL.as_secs(),
        }),
        Ok(Ok(collected)) => Ok(Some(collected.to_bytes())),
        // Over the limit (the only other error of `Limited` comes from hyper).
        Ok(Err(error)) if error.downcast_ref::<hyper::Error>().is_none() => Ok(None),
        Ok(Err(error)) => Err(FetchError::Range {
            addr,
            detail: format!("a broken body ({error})"),
        }),
    }
}

/// A response body read from blocking code (the image writer runs on a blocking thread): each
/// `read` waits on the runtime for the next piece, at most [`DOWNLOAD_STALL`].
pub struct BlockingBody {
    handle: tokio::runtime::Handle,
    addr: SocketAddr,
    body: Incoming,
    chunk: Bytes,
    done: bool,
}

impl BlockingBody {
    /// `handle` must belong to a runtime that some other thread keeps driving (the agent's
    /// main thread is in `block_on` while the image is written).
    pub fn new(handle: tokio::runtime::Handle, addr: SocketAddr, body: Incoming) -> BlockingBody {
        BlockingBody {
            handle,
            addr,
            body,
            chunk: Bytes::new(),
            done: false,
        }
    }
}

impl std::io::Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() && !self.done {
            let next = self
                .handle
                .block_on(tokio::time::timeout(DOWNLOAD_STALL, self.body.frame()));
            match next {
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        FetchError::Timeout {
                            addr: self.addr,
                            seconds: DOWNLOAD_STALL.as_secs(),
                        },
                    ));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(source))) => {
                    return Err(std::io::Error::other(FetchError::Http {
                        addr: self.addr,
                        source,
                    }));
                }
                // Trailers carry no data.
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

fn json_body<T: Serialize>(value: &T) -> Result<Bytes, ClientError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ClientError::Decode {
            path: String::new(),
            detail: e.to_string(),
        })
}

fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_must_be_http_with_an_ip_and_port() {
        let client = ApplianceClient::new("http://10.77.0.2:8081").expect("valid URL");
        assert_eq!(client.addr(), "10.77.0.2:8081".parse().expect("address"));
        assert!(ApplianceClient::new("http://[fd00::1]:80/x").is_ok());
        for bad in [
            "https://10.0.0.1:1",
            "http://appliance:8081",
            "http://10.0.0.1",
        ] {
            let error = ApplianceClient::new(bad).expect_err("invalid URL");
            assert!(error.to_string().contains("siderite.url"), "{error}");
        }
    }

    #[test]
    fn http_urls_split_into_address_and_path() {
        let url = HttpUrl::parse("http://10.0.0.1:8081/nocloud/t/").expect("valid URL");
        assert_eq!(url.addr, "10.0.0.1:8081".parse().expect("address"));
        assert_eq!(url.join("user-data").path, "/nocloud/t/user-data");
        let bare = HttpUrl::parse("http://[fd00::1]:80").expect("valid URL");
        assert_eq!(bare.path, "/");
        assert_eq!(HttpUrl::parse("http://host.example:80/x"), None, "no DNS");
    }
}
