//! Read-only TFTP server for iPXE binaries: owns the port-69 socket and one socket per
//! transfer, and drives `proto::tftp::Transfer` with tokio timers and positional file reads.
//!
//! Siderite has its own server rather than async-tftp 0.4.2 because that crate's read loop
//! (`server/read_req.rs`, `recv_ack`) ignores a client's ERROR, so every PXE `tsize` probe
//! held a transfer slot until its timeouts ran out; here an ERROR frees the slot at once.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::proto::tftp::{
    self, BlockSource, ErrorCode, Limits, Outcome, Packet, PathError, Request, Transfer,
};
use crate::serve::cache::FileCache;

/// Files up to this size are kept in memory and shared by all their transfers (iPXE binaries
/// are well under 2 MiB); larger ones are read from disk block by block.
const CACHE_MAX_FILE_BYTES: u64 = 16 << 20;
/// Bound on the memory all cached files may take together.
const CACHE_MAX_TOTAL_BYTES: u64 = 64 << 20;
/// Receive buffer for requests and ACKs. RFC 2347 caps requests at 512 bytes; the slack keeps
/// an oversized ERROR message from being mistaken for something else.
const RECV_BUFFER_LEN: usize = 4096;
/// Log lines per second allowed for anything triggered by network packets.
const LOG_LINES_PER_SECOND: u32 = 20;
/// Pause after a failed receive on the port-69 socket, so a persistent error cannot spin.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What the TFTP server serves and how.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Directory the requested names are resolved under.
    pub root: PathBuf,
    /// Concurrent transfers; requests beyond it get ERROR 0 "server busy".
    pub max_transfers: usize,
    /// Largest block size granted, from the serving interface's MTU (see [`mtu_blksize`]).
    pub max_blksize: u16,
    /// Largest RFC 7440 window granted.
    pub max_windowsize: u16,
    /// Interface the transfer sockets are bound to with SO_BINDTODEVICE, if any.
    pub bind_device: Option<String>,
    /// Address the transfer sockets are bound to (port 0: a fresh transfer ID each).
    pub bind_ip: Ipv4Addr,
}

/// Counters for metrics and tests. Every started transfer ends in exactly one of
/// `completed`, `client_errors`, `timeouts` or `failed`; `active` counts slots in use.
#[derive(Debug, Default)]
pub struct TftpStats {
    /// Transfers that got past the checks and sent their first packet.
    pub transfers_started: AtomicU64,
    /// Transfers whose final block was acknowledged.
    pub completed: AtomicU64,
    /// Transfers the client ended with an ERROR (including `tsize` probes).
    pub client_errors: AtomicU64,
    /// Transfers that ended after their last retransmission.
    pub timeouts: AtomicU64,
    /// Transfers that ended on an illegal packet, a read error, a socket error or shutdown.
    pub failed: AtomicU64,
    /// Requests answered with an ERROR before any transfer (busy, not found, WRQ, ...).
    pub refused: AtomicU64,
    /// Transfer slots currently held.
    pub active: AtomicUsize,
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// The requested name is not an acceptable path.
    #[error("refused file name: {source}")]
    BadPath {
        /// What is wrong with it.
        source: PathError,
    },
    /// Nothing at the requested path.
    #[error("{path} not found")]
    NotFound {
        /// The path under the root.
        path: PathBuf,
    },
    /// The path is a directory or a special file.
    #[error("{path} is not a regular file")]
    NotRegularFile {
        /// The resolved path.
        path: PathBuf,
    },
    /// The file exists but cannot be opened or inspected.
    #[error("cannot open {path}: {source}; check its permissions")]
    Open {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The blocking lookup task did not finish (it panicked or the runtime is shutting down).
    #[error("file lookup did not complete: {source}")]
    Lookup {
        /// Why.
        source: tokio::task::JoinError,
    },
    /// The transfer socket could not be created, bound or connected.
    #[error("cannot set up a transfer socket on {bind_ip}: {source}")]
    Socket {
        /// The configured bind address.
        bind_ip: Ipv4Addr,
        /// The I/O error.
        source: io::Error,
    },
    /// SO_BINDTODEVICE failed.
    #[error(
        "cannot bind a transfer socket to {device}: {source}; check the interface name and that \
         the process has CAP_NET_RAW"
    )]
    BindDevice {
        /// The interface.
        device: String,
        /// The I/O error.
        source: io::Error,
    },
}

impl TftpError {
    /// The ERROR sent to the client. Messages never name server paths.
    fn reply(&self) -> (ErrorCode, &'static str) {
        match self {
            TftpError::NotFound { .. } => (ErrorCode::FILE_NOT_FOUND, "file not found"),
            TftpError::BadPath { .. } | TftpError::NotRegularFile { .. } => {
                (ErrorCode::ACCESS_VIOLATION, "access violation")
            }
            TftpError::Open { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                (ErrorCode::ACCESS_VIOLATION, "access violation")
            }
            _ => (ErrorCode::NOT_DEFINED, "server error, try again"),
        }
    }
}

/// The block size for an interface's MTU, read from `/sys/class/net/<interface>/mtu`;
/// `None` if the name is not a plain interface name or the file cannot be read.
pub fn mtu_blksize(interface: &str) -> Option<u16> {
    if interface.is_empty() || interface.contains('/') || interface == "." || interface == ".." {
        return None;
    }
    let path = Path::new("/sys/class/net").join(interface).join("mtu");
    let mtu = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Some(tftp::blksize_for_mtu(mtu))
}

/// Serves TFTP read requests arriving on `socket` (already bound to port 69) until
/// `shutdown` is cancelled; then ends the running transfers and returns.
pub async fn run(
    socket: UdpSocket,
    cfg: Arc<TftpConfig>,
    stats: Arc<TftpStats>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        limits: Limits {
            max_blksize: cfg.max_blksize,
            max_windowsize: cfg.max_windowsize,
            ..Limits::default()
        },
        cfg,
        stats,
        listener: socket,
        cache: FileCache::new(CACHE_MAX_FILE_BYTES, CACHE_MAX_TOTAL_BYTES),
        log: LogBudget::new(),
        shutdown,
    });
    let slots = Arc::new(Semaphore::new(
        shared.cfg.max_transfers.min(Semaphore::MAX_PERMITS),
    ));
    let mut transfers = JoinSet::new();
    let mut buf = vec![0; RECV_BUFFER_LEN];
    loop {
        while transfers.try_join_next().is_some() {}
        let (len, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            received = shared.listener.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    if shared.log.allow() {
                        tracing::warn!(%error, "tftp receive failed");
                    }
                    tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        match Packet::decode(&buf[..len]) {
            Ok(Packet::Rrq(request)) => {
                // Taken here, not in the task, so that the busy decision follows arrival order.
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    shared
                        .refuse(peer, ErrorCode::NOT_DEFINED, "server busy, try again")
                        .await;
                    continue;
                };
                let slot = Slot::new(Arc::clone(&shared.stats), permit);
                let span = tracing::info_span!("tftp_transfer", %peer, file = %request.filename);
                transfers.spawn(
                    serve_request(Arc::clone(&shared), request, peer, slot).instrument(span),
                );
            }
            Ok(Packet::Wrq(_)) => {
                shared
                    .refuse(
                        peer,
                        ErrorCode::ACCESS_VIOLATION,
                        "read-only server: writes are not accepted",
                    )
                    .await;
            }
            // DATA, ACK, ERROR or OACK on port 69 belong to no transfer; answering could
            // reflect traffic, so they are dropped.
            Ok(other) => {
                if shared.log.allow() {
                    tracing::debug!(%peer, opcode = ?other.opcode(), "tftp packet outside a transfer ignored");
                }
            }
            Err(error) => {
                if shared.log.allow() {
                    tracing::debug!(%peer, %error, "malformed tftp request ignored");
                }
            }
        }
    }
    while transfers.join_next().await.is_some() {}
}

/// What every transfer task shares.
struct Shared {
    cfg: Arc<TftpConfig>,
    stats: Arc<TftpStats>,
    limits: Limits,
    /// The port-69 socket: refusals are sent from it, so a refused request costs no socket.
    listener: UdpSocket,
    cache: FileCache,
    log: LogBudget,
    shutdown: CancellationToken,
}

impl Shared {
    async fn refuse(&self, peer: SocketAddr, code: ErrorCode, message: &str) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        if self.log.allow() {
            tracing::info!(%peer, %code, reason = message, "tftp request refused");
        }
        if let Err(error) = self
            .listener
            .send_to(&tftp::error_datagram(code, message), peer)
            .await
            && self.log.allow()
        {
            tracing::warn!(%peer, %error, "cannot send tftp error");
        }
    }
}

/// A held transfer slot; dropping it frees the slot and decrements `active`.
struct Slot {
    stats: Arc<TftpStats>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(stats: Arc<TftpStats>, permit: OwnedSemaphorePermit) -> Slot {
        stats.active.fetch_add(1, Ordering::Relaxed);
        Slot {
            stats,
            _permit: permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a transfer task ended, beyond what the state machine knows.
#[derive(Debug)]
enum End {
    Outcome(Outcome),
    /// Sending or receiving failed; ECONNREFUSED means the client's port is closed.
    Socket(io::Error),
    Shutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Outcome(Outcome::Completed) => f.write_str("completed"),
            End::Outcome(Outcome::ClientError { code, message }) => {
                write!(f, "client sent error {code}: {message:?}")
            }
            End::Outcome(Outcome::TimedOut) => f.write_str("timed out"),
            End::Outcome(Outcome::IllegalOperation { opcode }) => {
                write!(f, "client sent an illegal {opcode:?} packet")
            }
            End::Outcome(Outcome::ReadFailed { kind }) => {
                write!(f, "reading the file failed: {kind}")
            }
            End::Socket(error) => write!(f, "socket error: {error}"),
            End::Shutdown => f.write_str("server shutting down"),
        }
    }
}

async fn serve_request(shared: Arc<Shared>, request: Request, peer: SocketAddr, slot: Slot) {
    let (mut transfer, source, socket) = match prepare(&shared, &request, peer).await {
        Ok(prepared) => prepared,
        Err(Refused::Error(error)) => {
            let (code, message) = error.reply();
            if shared.log.allow() {
                tracing::info!(%error, "tftp request cannot be served");
            }
            shared.refuse(peer, code, message).await;
            return;
        }
        Err(Refused::Protocol(refusal)) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            if shared.log.allow() {
                tracing::info!(%refusal, "tftp request refused");
            }
            let _ = shared.listener.send_to(&refusal.datagram(), peer).await;
            return;
        }
    };
    shared
        .stats
        .transfers_started
        .fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let end = drive(&mut transfer, &source, &socket, &shared.shutdown).await;
    let counter = match &end {
        End::Outcome(Outcome::Completed) => &shared.stats.completed,
        End::Outcome(Outcome::ClientError { .. }) => &shared.stats.client_errors,
        End::Outcome(Outcome::TimedOut) => &shared.stats.timeouts,
        _ => &shared.stats.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if shared.log.allow() {
        let negotiated = transfer.negotiated();
        tracing::info!(
            end = %end,
            bytes = transfer.file_len(),
            blksize = negotiated.blksize,
            windowsize = negotiated.windowsize,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tftp transfer ended"
        );
    }
    drop(slot);
}

enum Refused {
    Error(TftpError),
    Protocol(tftp::Refusal),
}

impl From<TftpError> for Refused {
    fn from(error: TftpError) -> Refused {
        Refused::Error(error)
    }
}

/// Resolves and opens the file, negotiates, and opens the transfer's own socket.
async fn prepare(
    shared: &Arc<Shared>,
    request: &Request,
    peer: SocketAddr,
) -> Result<(Transfer, Source, UdpSocket), Refused> {
    let relative =
        tftp::resolve(&request.filename).map_err(|source| TftpError::BadPath { source })?;
    let lookup = Arc::clone(shared);
    let (source, len) = tokio::task::spawn_blocking(move || {
        open_source(&lookup.cfg.root, relative.as_str(), &lookup.cache)
    })
    .await
    .map_err(|source| TftpError::Lookup { source })??;
    let transfer = Transfer::new(request, len, &shared.limits).map_err(Refused::Protocol)?;
    let socket = transfer_socket(&shared.cfg, peer)?;
    Ok((transfer, source, socket))
}

/// Runs the state machine until it ends, the socket fails or shutdown is requested.
async fn drive(
    transfer: &mut Transfer,
    source: &Source,
    socket: &UdpSocket,
    shutdown: &CancellationToken,
) -> End {
    let mut buf = vec![0; RECV_BUFFER_LEN];
    let mut outgoing = transfer.start(Instant::now(), source);
    loop {
        for datagram in &outgoing {
            if let Err(error) = socket.send(datagram).await {
                return End::Socket(error);
            }
        }
        if let Some(outcome) = transfer.is_done() {
            return End::Outcome(outcome);
        }
        let Some(deadline) = transfer.deadline() else {
            // A running transfer always has a deadline; treat a missing one as a stall.
            return End::Outcome(Outcome::TimedOut);
        };
        outgoing = tokio::select! {
            () = shutdown.cancelled() => {
                let bye = tftp::error_datagram(ErrorCode::NOT_DEFINED, "server shutting down, try again");
                let _ = socket.send(&bye).await;
                return End::Shutdown;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                transfer.on_timeout(Instant::now(), source)
            }
            received = socket.recv(&mut buf) => match received {
                Ok(len) => transfer.on_packet(&buf[..len], Instant::now(), source),
                Err(error) => return End::Socket(error),
            },
        };
    }
}

/// A socket of its own for one transfer (its port is the server's transfer ID, RFC 1350),
/// connected to the client so the kernel drops datagrams from any other address or port
/// and reports the client's closed port as ECONNREFUSED.
fn transfer_socket(cfg: &TftpConfig, peer: SocketAddr) -> Result<UdpSocket, TftpError> {
    let socket_error = |source| TftpError::Socket {
        bind_ip: cfg.bind_ip,
        source,
    };
    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(socket_error)?;
    if let Some(device) = &cfg.bind_device {
        socket
            .bind_device(Some(device.as_bytes()))
            .map_err(|source| TftpError::BindDevice {
                device: device.clone(),
                source,
            })?;
    }
    socket.set_nonblocking(true).map_err(socket_error)?;
    socket
        .bind(&SocketAddr::from((cfg.bind_ip, 0)).into())
        .map_err(socket_error)?;
    socket.connect(&peer.into()).map_err(socket_error)?;
    UdpSocket::from_std(socket.into()).map_err(socket_error)
}

/// A transfer's bytes: shared memory for small files, the open file for large ones.
enum Source {
    Memory(Arc<[u8]>),
    /// Positional reads on the file opened at request time, so a file replaced mid-transfer
    /// keeps serving the old inode. These reads block the task briefly; TFTP only serves
    /// iPXE binaries, which are small enough to be cached, so this path is rare.
    Disk(File),
}

impl BlockSource for Source {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::Memory(bytes) => bytes.read_exact_at(offset, buf),
            Source::Disk(file) => FileExt::read_exact_at(file, buf, offset),
        }
    }
}

/// Opens `relative` under `root`. Traversal is refused lexically by `resolve` before this;
/// symlinks inside the root are the operator's and are followed wherever they point (Debian's
/// own `/usr/lib/ipxe/ipxe.efi` is a link to `/boot/ipxe.efi`). Blocking: run on a blocking
/// thread.
fn open_source(root: &Path, relative: &str, cache: &FileCache) -> Result<(Source, u64), TftpError> {
    // `relative` was checked lexically (`resolve`); symlinks are followed (decision 19), so the
    // joined path is opened as it is, without resolving it first.
    let path = root.join(relative);
    let open_error = |source| TftpError::Open {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            TftpError::NotFound { path: path.clone() }
        }
        _ => open_error(source),
    })?;
    let metadata = file.metadata().map_err(open_error)?;
    if !metadata.is_file() {
        return Err(TftpError::NotRegularFile { path });
    }
    let len = metadata.len();
    match cache.get_or_load(&path, &metadata, &file) {
        Some(bytes) => Ok((Source::Memory(bytes), len)),
        None => Ok((Source::Disk(file), len)),
    }
}

/// A per-second budget of log lines for packet-driven events, so a noisy or hostile segment
/// cannot flood the log.
struct LogBudget {
    epoch: Instant,
    second: AtomicU64,
    used: AtomicU32,
}

impl LogBudget {
    fn new() -> LogBudget {
        LogBudget {
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
        }
    }

    fn allow(&self) -> bool {
        let second = self.epoch.elapsed().as_secs();
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < LOG_LINES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tftp::{Datagram, Mode};

    const WAIT: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        stats: Arc<TftpStats>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start_server(root: &Path, max_transfers: usize) -> Server {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let cfg = Arc::new(TftpConfig {
            root: root.to_owned(),
            max_transfers,
            max_blksize: 1468,
            max_windowsize: 8,
            bind_device: None,
            bind_ip: Ipv4Addr::LOCALHOST,
        });
        let stats = Arc::new(TftpStats::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(socket, cfg, Arc::clone(&stats), shutdown.clone()));
        Server {
            addr,
            stats,
            shutdown,
            task,
        }
    }

    impl Server {
        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(WAIT, self.task)
                .await
                .expect("run returns promptly after shutdown")
                .unwrap();
        }
    }

    fn rrq(filename: &str, options: &[(&str, &str)]) -> Datagram {
        Packet::Rrq(Request {
            filename: filename.into(),
            mode: Mode::Octet,
            options: options
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
        .to_bytes()
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    async fn recv(client: &UdpSocket) -> (Packet, SocketAddr) {
        let mut buf = vec![0; 70_000];
        let (len, from) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .expect("server answers in time")
            .unwrap();
        (
            Packet::decode(&buf[..len]).expect("server sends valid packets"),
            from,
        )
    }

    async fn send(client: &UdpSocket, packet: &Packet, to: SocketAddr) {
        client.send_to(&packet.to_bytes(), to).await.unwrap();
    }

    /// Downloads `name` like an RFC 7440 client, returning the bytes.
    async fn download(
        server: SocketAddr,
        name: &str,
        blksize: usize,
        windowsize: usize,
    ) -> Vec<u8> {
        let client = client().await;
        let (b, w) = (blksize.to_string(), windowsize.to_string());
        let options = [
            ("blksize", b.as_str()),
            ("windowsize", w.as_str()),
            ("tsize", "0"),
        ];
        client.send_to(&rrq(name, &options), server).await.unwrap();
        let (oack, tid) = recv(&client).await;
        let Packet::OAck { options } = oack else {
            panic!("expected OACK, got {oack:?}");
        };
        assert_ne!(tid, server, "transfers use a fresh port");
        assert!(options.contains(&("blksize".into(), b.clone())));
        assert!(options.contains(&("windowsize".into(), w.clone())));
        send(&client, &Packet::Ack { block: 0 }, tid).await;
        let mut bytes = Vec::new();
        let mut expected: u16 = 1;
        let mut in_window = 0;
        loop {
            let (packet, from) = recv(&client).await;
            assert_eq!(from, tid);
            let Packet::Data { block, payload } = packet else {
                panic!("expected DATA, got {packet:?}");
            };
            assert_eq!(block, expected);
            expected = expected.wrapping_add(1);
            bytes.extend_from_slice(&payload);
            in_window += 1;
            let last = payload.len() < blksize;
            if in_window == windowsize || last {
                send(&client, &Packet::Ack { block }, tid).await;
                in_window = 0;
            }
            if last {
                return bytes;
            }
        }
    }

    async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < limit,
                "{what} did not happen within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn one_megabyte_download_with_windowsize_4_is_byte_exact() {
        let root = tempfile::tempdir().unwrap();
        let file: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::write(root.path().join("undionly.kpxe"), &file).unwrap();
        let server = start_server(root.path(), 4).await;
        let got = download(server.addr, "undionly.kpxe", 1468, 4).await;
        assert_eq!(got.len(), file.len());
        assert!(got == file, "downloaded bytes differ");
        wait_for("completion", WAIT, || {
            server.stats.completed.load(Ordering::Relaxed) == 1
        })
        .await;
        assert_eq!(server.stats.active.load(Ordering::Relaxed), 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn client_error_after_oack_frees_the_slot_at_once() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("ipxe.efi"), vec![1u8; 5000]).unwrap();
        let server = start_server(root.path(), 1).await;
        let client = client().await;
        client
            .send_to(
                &rrq("ipxe.efi", &[("tsize", "0"), ("blksize", "1468")]),
                server.addr,
            )
            .await
            .unwrap();
        let (oack, tid) = recv(&client).await;
        assert_eq!(
            oack,
            Packet::OAck {
                options: vec![
                    ("tsize".into(), "5000".into()),
                    ("blksize".into(), "1468".into())
                ]
            }
        );
        assert_eq!(server.stats.active.load(Ordering::Relaxed), 1);
        let probe_done = Packet::Error {
            code: ErrorCode::OPTION_NEGOTIATION,
            message: "tsize probe".into(),
        };
        send(&client, &probe_done, tid).await;
        let took = wait_for("slot release", Duration::from_millis(100), || {
            server.stats.active.load(Ordering::Relaxed) == 0
        })
        .await;
        assert!(took < Duration::from_millis(100));
        assert_eq!(server.stats.client_errors.load(Ordering::Relaxed), 1);
        // The only slot is free again: the real download right after the probe is served.
        let got = download(server.addr, "ipxe.efi", 1468, 1).await;
        assert_eq!(got, vec![1u8; 5000]);
        server.stop().await;
    }

    #[tokio::test]
    async fn request_over_the_transfer_cap_gets_busy_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("ipxe.efi"), vec![1u8; 5000]).unwrap();
        let server = start_server(root.path(), 1).await;
        let first = client().await;
        first
            .send_to(&rrq("ipxe.efi", &[("tsize", "0")]), server.addr)
            .await
            .unwrap();
        let (oack, _) = recv(&first).await;
        assert!(matches!(oack, Packet::OAck { .. }));
        // The first client never ACKs, so it holds the only slot.
        let second = client().await;
        second
            .send_to(&rrq("ipxe.efi", &[]), server.addr)
            .await
            .unwrap();
        let (reply, from) = recv(&second).await;
        assert_eq!(from, server.addr, "refusals come from port 69");
        let Packet::Error { code, message } = reply else {
            panic!("expected ERROR, got {reply:?}");
        };
        assert_eq!(code, ErrorCode::NOT_DEFINED);
        assert!(message.contains("busy"), "{message}");
        assert_eq!(server.stats.refused.load(Ordering::Relaxed), 1);
        let stats = Arc::clone(&server.stats);
        server.stop().await;
        assert_eq!(
            stats.active.load(Ordering::Relaxed),
            0,
            "shutdown ends the held transfer"
        );
    }

    async fn error_for(server: SocketAddr, request: Datagram) -> ErrorCode {
        let client = client().await;
        client.send_to(&request, server).await.unwrap();
        match recv(&client).await.0 {
            Packet::Error { code, .. } => code,
            other => panic!("expected ERROR, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_requests_get_the_matching_error_code() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("efi")).unwrap();
        let server = start_server(root.path(), 4).await;
        let cases = [
            ("missing.kpxe", ErrorCode::FILE_NOT_FOUND),
            ("../secret", ErrorCode::ACCESS_VIOLATION),
            ("efi/../../secret", ErrorCode::ACCESS_VIOLATION),
            ("efi", ErrorCode::ACCESS_VIOLATION),
        ];
        for (name, expected) in cases {
            assert_eq!(
                error_for(server.addr, rrq(name, &[])).await,
                expected,
                "{name}"
            );
        }
        let wrq = Packet::Wrq(Request {
            filename: "x".into(),
            mode: Mode::Octet,
            options: Vec::new(),
        });
        assert_eq!(
            error_for(server.addr, wrq.to_bytes()).await,
            ErrorCode::ACCESS_VIOLATION
        );
        assert_eq!(server.stats.refused.load(Ordering::Relaxed), 5);
        assert_eq!(server.stats.transfers_started.load(Ordering::Relaxed), 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn netascii_request_for_an_existing_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("boot.txt"), b"text").unwrap();
        let server = start_server(root.path(), 4).await;
        let netascii = Packet::Rrq(Request {
            filename: "boot.txt".into(),
            mode: Mode::NetAscii,
            options: Vec::new(),
        });
        assert_eq!(
            error_for(server.addr, netascii.to_bytes()).await,
            ErrorCode::ILLEGAL_OPERATION
        );
        server.stop().await;
    }

    #[test]
    fn disk_source_reads_exact_blocks_and_fails_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let source = Source::Disk(File::open(&path).unwrap());
        let mut buf = [0; 4];
        source.read_exact_at(3, &mut buf).unwrap();
        assert_eq!(&buf, b"3456");
        let past_end = source.read_exact_at(8, &mut buf).unwrap_err();
        assert_eq!(past_end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn mtu_blksize_refuses_non_interface_names() {
        for name in ["", ".", "..", "../../etc", "lo/x"] {
            assert_eq!(mtu_blksize(name), None, "{name:?}");
        }
        if Path::new("/sys/class/net/lo/mtu").exists() {
            let blksize = mtu_blksize("lo").expect("lo has an MTU");
            assert!((tftp::MIN_BLKSIZE..=tftp::MAX_BLKSIZE).contains(&blksize));
        }
    }
}
