//! Process-wide Prometheus metrics (prometheus-client), served as text at `GET /metrics` on the
//! boot HTTP server: how many reconciles each controller ran and how they ended.
//!
//! One registry for the process because the counters are bumped from controller tasks that
//! share nothing else; a scrape renders whatever they hold at that moment.

use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The controller a reconcile belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values Prometheus shows: lowercase, like the modules
pub enum Controller {
    server,
    serverclass,
    metalmachine,
    metalcluster,
}

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: Controller,
    result: Outcome,
}

struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    lock_conflicts: Counter,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("siderite");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "controller_reconciles",
            "Reconciles run by each controller, by outcome",
            reconciles.clone(),
        );
        let lock_conflicts = Counter::default();
        registry.register(
            "allocation_lock_conflicts",
            "ServerBinding creates refused because the server was already bound (lost races)",
            lock_conflicts.clone(),
        );
        Metrics {
            registry,
            reconciles,
            lock_conflicts,
        }
    })
}

/// Counts one finished reconcile of `controller`.
pub fn reconciled(controller: Controller, ok: bool) {
    let result = if ok { Outcome::ok } else { Outcome::error };
    metrics()
        .reconciles
        .get_or_create(&ReconcileLabels { controller, result })
        .inc();
}

/// Counts one ServerBinding create that found the server already bound.
pub fn lock_conflict() {
    metrics().lock_conflicts.inc();
}

/// The metrics in the Prometheus text exposition format.
pub fn render() -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric type.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &metrics().registry) {
        tracing::warn!(%error, "encoding the metrics failed");
    }
    text
}

/// The value of the counter `name` (e.g. `siderite_allocation_lock_conflicts_total`) in a
/// scrape of [`render`]'s format; 0 when absent.
pub fn counter_in(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The value of `siderite_controller_reconciles_total` for `controller` (both outcomes) in a
/// scrape of [`render`]'s format; 0 when absent.
pub fn reconciles_in(scrape: &str, controller: &str) -> u64 {
    let label = format!("controller=\"{controller}\"");
    scrape
        .lines()
        .filter(|l| l.starts_with("siderite_controller_reconciles_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_per_controller_and_read_back_from_a_scrape() {
        let before = reconciles_in(&render(), "metalcluster");
        reconciled(Controller::metalcluster, true);
        reconciled(Controller::metalcluster, false);
        let scrape = render();
        assert!(
            scrape.contains(
                r#"siderite_controller_reconciles_total{controller="metalcluster",result="error"}"#
            ),
            "{scrape}"
        );
        assert_eq!(reconciles_in(&scrape, "metalcluster"), before + 2);
    }
}
