//! Controllers: one reconcile function per kind, run by kube-runtime against whichever API the
//! appliance uses (embedded or a real cluster). They read and write resources only through the
//! Kubernetes API.

pub mod leader;
pub mod metalcluster;
pub mod metalmachine;
pub mod pool;
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
    // One Server cache and class index for the two controllers that match servers.
    let pool = pool::Pool::start(Api::<Server>::all(client.clone()), shutdown.clone());
    tokio::spawn(server::run(client.clone(), shutdown.clone()));
    tokio::spawn(serverclass::run(
        client.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(metalcluster::run(client.clone(), shutdown.clone()));
    tokio::spawn(metalmachine::run(client, pool, shutdown));
}

/// A cache of every `K`, kept by a reflector task that runs until `shutdown`; controllers read
/// it instead of listing from the API. Only one task may wait on its `wait_until_ready`:
/// kube-runtime 5 wakes just the last of several tasks waiting at once (decision 63).
pub fn cache<K>(api: Api<K>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let feed = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_managed_fields)
        .reflect(writer)
        .touched_objects()
        .take_until(shutdown.cancelled_owned())
        .for_each(|_| async {});
    tokio::spawn(feed);
    store
}

/// Drops `metadata.managedFields` from a cached object: no controller reads them, and as parsed
/// JSON trees they took about a third of a cached Server's memory.
pub fn strip_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// `seconds` after the Unix epoch, for condition timestamps in tests.
    pub(crate) fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }
}
