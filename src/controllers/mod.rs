//! Controllers: one reconcile function per kind, run by kube-runtime against whichever API the
//! appliance uses (embedded or a real cluster). They read and write resources only through the
//! Kubernetes API.

pub mod leader;
pub mod metalcluster;
pub mod metalmachine;
pub mod server;
pub mod serverclass;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::api::Server;

/// Starts every controller; they stop when `shutdown` is cancelled.
pub fn start(client: kube::Client, shutdown: CancellationToken) {
    tokio::spawn(server::run(client.clone(), shutdown.clone()));
    tokio::spawn(serverclass::run(client.clone(), shutdown.clone()));
    tokio::spawn(metalcluster::run(client.clone(), shutdown.clone()));
    tokio::spawn(metalmachine::run(client, shutdown));
}

/// A cache of every Server, kept by a reflector task that runs for the life of the process;
/// the controllers that match servers read it instead of listing them from the API.
pub fn server_cache(servers: Api<Server>) -> Store<Server> {
    let (store, writer) = reflector::store();
    let feed = reflector::reflector(writer, watcher(servers, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(|_| async {});
    tokio::spawn(feed);
    store
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// `seconds` after the Unix epoch, for condition timestamps in tests.
    pub(crate) fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }
}
