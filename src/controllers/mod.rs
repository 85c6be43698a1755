//! Controllers: one reconcile function per kind, run by kube-runtime against whichever API the
//! appliance uses (embedded or a real cluster). They read and write resources only through the
//! Kubernetes API.

pub mod leader;
pub mod metalcluster;
pub mod metalmachine;
pub mod pool;
pub mod power;
pub mod server;
pub mod serverclass;

use tokio_util::sync::CancellationToken;

use crate::serve::resource_caches::ServerFeed;

/// Starts every controller on the process's Server feed; they stop when `shutdown` is
/// cancelled.
pub fn start(
    client: kube::Client,
    feed: ServerFeed,
    power: power::PowerSettings,
    shutdown: CancellationToken,
) {
    // One class index for the two controllers that match servers.
    let pool = pool::Pool::start(&feed, shutdown.clone());
    tokio::spawn(server::run(client.clone(), feed.clone(), shutdown.clone()));
    tokio::spawn(power::run(
        client.clone(),
        feed.clone(),
        power,
        shutdown.clone(),
    ));
    tokio::spawn(serverclass::run(
        client.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(metalcluster::run(client.clone(), shutdown.clone()));
    tokio::spawn(metalmachine::run(client, pool, feed, shutdown));
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// `seconds` after the Unix epoch, for condition timestamps in tests.
    pub(crate) fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }
}
