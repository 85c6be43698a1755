//! Controllers: one reconcile function per kind, run by kube-runtime against whichever API the
//! appliance uses (embedded or a real cluster). They read and write resources only through the
//! Kubernetes API.

pub mod server;
pub mod serverclass;

use tokio_util::sync::CancellationToken;

/// Starts every controller; they stop when `shutdown` is cancelled.
pub fn start(client: kube::Client, shutdown: CancellationToken) {
    tokio::spawn(server::run(client.clone(), shutdown.clone()));
    tokio::spawn(serverclass::run(client, shutdown));
}
