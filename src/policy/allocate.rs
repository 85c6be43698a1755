//! Which server a MetalMachine gets, pure: the order in which the allocator tries eligible
//! servers (each try is a ServerBinding create, the lock; AlreadyExists moves on to the next).
//!
//! The order, deterministic so that two controller replicas mostly agree and tests can tell:
//! 1. When the Machine names a failure domain (`Machine.spec.failureDomain`, chosen by Cluster
//!    API from the MetalCluster's failure domains), only servers whose failure-domain label has
//!    that value are tried: placing a control plane machine elsewhere would defeat the spread
//!    Cluster API asked for. The machine waits if that domain has no eligible server.
//! 2. Otherwise servers in the failure domain where the machine's cluster has the fewest servers
//!    come first, so a cluster spreads over racks by itself (servers without the label form one
//!    domain of their own).
//! 3. Then the least recently released first (never released counts as released longest ago),
//!    so wear and the wipe queue spread over the pool; then by name.

use std::collections::BTreeMap;

use crate::api::Server;

/// The label naming a server's failure domain (a rack, a room, a power feed).
pub const FAILURE_DOMAIN_LABEL: &str = "siderite.dev/failure-domain";
/// Also honoured: the well-known zone label, for sites that already label servers with it.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// An eligible server: accepted, clean, not cordoned, not in use, matching the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The Server's name.
    pub name: String,
    /// Its failure domain label, if any.
    pub failure_domain: Option<String>,
    /// When it was last released, in Unix seconds; `None` when never.
    pub released_at: Option<i64>,
}

/// Whether `server` may be handed out: accepted, clean, not cordoned, not in use and not being
/// deleted. A ServerClass lists exactly these matching servers as available.
pub fn is_available(server: &Server) -> bool {
    let status = server.status.as_ref();
    server.spec.accepted
        && !server.spec.cordoned
        && status.is_some_and(|s| s.is_clean && !s.in_use)
        && server.metadata.deletion_timestamp.is_none()
}

/// Whether `server` is bound to a machine (`status.inUse`).
pub fn is_in_use(server: &Server) -> bool {
    server.status.as_ref().is_some_and(|s| s.in_use)
}

/// The failure domain of a server with `labels`: [`FAILURE_DOMAIN_LABEL`], else [`ZONE_LABEL`].
pub fn failure_domain(labels: &BTreeMap<String, String>) -> Option<String> {
    labels
        .get(FAILURE_DOMAIN_LABEL)
        .or_else(|| labels.get(ZONE_LABEL))
        .cloned()
}

/// The candidates to try, in order. `wanted_domain` is the Machine's failure domain;
/// `cluster_per_domain` counts the servers already bound to the machine's cluster per failure
/// domain (key `None`: servers without one).
pub fn order<'a>(
    candidates: &'a [Candidate],
    wanted_domain: Option<&str>,
    cluster_per_domain: &BTreeMap<Option<String>, usize>,
) -> Vec<&'a Candidate> {
    let mut chosen: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| wanted_domain.is_none_or(|d| c.failure_domain.as_deref() == Some(d)))
        .collect();
    chosen.sort_by(|a, b| {
        let used = |c: &Candidate| {
            cluster_per_domain
                .get(&c.failure_domain)
                .copied()
                .unwrap_or(0)
        };
        used(a)
            .cmp(&used(b))
            .then(
                a.released_at
                    .unwrap_or(i64::MIN)
                    .cmp(&b.released_at.unwrap_or(i64::MIN)),
            )
            .then(a.name.cmp(&b.name))
    });
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, domain: Option<&str>, released_at: Option<i64>) -> Candidate {
        Candidate {
            name: name.into(),
            failure_domain: domain.map(str::to_owned),
            released_at,
        }
    }

    fn names(ordered: Vec<&Candidate>) -> Vec<&str> {
        ordered.into_iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn never_released_first_then_least_recently_released_then_name() {
        let pool = [
            candidate("c", None, Some(300)),
            candidate("b", None, None),
            candidate("a", None, Some(100)),
            candidate("d", None, None),
        ];
        assert_eq!(
            names(order(&pool, None, &BTreeMap::new())),
            ["b", "d", "a", "c"]
        );
    }

    #[test]
    fn a_named_failure_domain_is_strict() {
        let pool = [
            candidate("a1", Some("rack-a"), None),
            candidate("b1", Some("rack-b"), None),
            candidate("n1", None, None),
        ];
        assert_eq!(
            names(order(&pool, Some("rack-b"), &BTreeMap::new())),
            ["b1"]
        );
        assert!(order(&pool, Some("rack-c"), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn without_a_named_domain_the_cluster_spreads_over_domains() {
        let pool = [
            candidate("a1", Some("rack-a"), None),
            candidate("a2", Some("rack-a"), None),
            candidate("b1", Some("rack-b"), Some(50)),
            candidate("n1", None, None),
        ];
        let used = BTreeMap::from([(Some("rack-a".to_owned()), 2), (None, 1)]);
        assert_eq!(names(order(&pool, None, &used)), ["b1", "n1", "a1", "a2"]);
    }

    #[test]
    fn the_domain_label_wins_over_the_zone_label() {
        let labels = BTreeMap::from([
            (ZONE_LABEL.to_owned(), "zone-1".to_owned()),
            (FAILURE_DOMAIN_LABEL.to_owned(), "rack-a".to_owned()),
        ]);
        assert_eq!(failure_domain(&labels).as_deref(), Some("rack-a"));
        let zone_only = BTreeMap::from([(ZONE_LABEL.to_owned(), "zone-1".to_owned())]);
        assert_eq!(failure_domain(&zone_only).as_deref(), Some("zone-1"));
        assert_eq!(failure_domain(&BTreeMap::new()), None);
    }
}
