//! The set of resources the embedded API server serves: the built-in core kinds plus every
//! version of every stored CustomResourceDefinition, and the discovery documents describing them.
//!
//! The registry is rebuilt from the stored CRDs whenever one changes; requests hold an `Arc` of
//! the registry they started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

/// Kinds with behaviour of their own; everything else is a custom resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Namespace,
    Secret,
    ConfigMap,
    /// `coordination.k8s.io/v1` Lease: leader election of controller replicas.
    Lease,
    /// `core/v1` Event (the storage form).
    Event,
    /// `events.k8s.io/v1` Event, a view converted to and from the core form.
    EventsV1,
    Crd,
}

/// Everything the server needs to know about one served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Store key prefix shared by all versions: `group/plural`.
    pub storage: Arc<str>,
    /// `openAPIV3Schema` of this version, for pruning, defaulting and validation.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns` of this version.
    pub printer_columns: Vec<Value>,
    pub builtin: Option<Builtin>,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Custom resources carry `metadata.generation`; the core kinds served here do not.
    pub fn has_generation(&self) -> bool {
        self.builtin.is_none() || self.builtin == Some(Builtin::Crd)
    }

    pub fn target(&self, name: &str) -> Box<crate::apiserver::status::Target> {
        Box::new(crate::apiserver::status::Target {
            group: self.group.clone(),
            resource: self.plural.clone(),
            kind: self.kind.clone(),
            name: name.to_owned(),
        })
    }
}

/// `gvrk`: group, version, plural resource name, kind.
fn builtin(
    [group, version, plural, kind]: [&str; 4],
    namespaced: bool,
    short: &[&str],
    storage: &str,
    which: Builtin,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        status_subresource: which == Builtin::Namespace || which == Builtin::Crd,
        storage: Arc::from(storage),
        schema: None,
        printer_columns: Vec::new(),
        builtin: Some(which),
    }
}

/// Store key of the CRD objects themselves.
pub const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
pub const NAMESPACE_STORAGE: &str = "/namespaces";
pub const EVENT_STORAGE: &str = "/events";

fn builtins() -> Vec<ResourceInfo> {
    vec![
        builtin(
            ["", "v1", "namespaces", "Namespace"],
            false,
            &["ns"],
            NAMESPACE_STORAGE,
            Builtin::Namespace,
        ),
        builtin(
            ["", "v1", "secrets", "Secret"],
            true,
            &[],
            "/secrets",
            Builtin::Secret,
        ),
        builtin(
            ["", "v1", "configmaps", "ConfigMap"],
            true,
            &["cm"],
            "/configmaps",
            Builtin::ConfigMap,
        ),
        builtin(
            ["coordination.k8s.io", "v1", "leases", "Lease"],
            true,
            &[],
            "coordination.k8s.io/leases",
            Builtin::Lease,
        ),
        builtin(
            ["", "v1", "events", "Event"],
            true,
            &["ev"],
            EVENT_STORAGE,
            Builtin::Event,
        ),
        builtin(
            ["events.k8s.io", "v1", "events", "Event"],
            true,
            &["ev"],
            EVENT_STORAGE,
            Builtin::EventsV1,
        ),
        builtin(
            [
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
            ],
            false,
            &["crd", "crds"],
            CRD_STORAGE,
            Builtin::Crd,
        ),
    ]
}

/// Served resources, indexed for routing and discovery.
#[derive(Debug, Default)]
pub struct Registry {
    by_path: HashMap<(String, String, String), Arc<ResourceInfo>>,
    /// group → versions in preference order.
    groups: BTreeMap<String, Vec<String>>,
}

impl Registry {
    /// Builds the registry from the built-ins and the stored CRD objects.
    pub fn build(crds: &[Value]) -> Registry {
        let mut infos = builtins();
        for crd in crds {
            infos.extend(from_crd(crd));
        }
        let mut registry = Registry::default();
        for info in infos {
            let versions = registry.groups.entry(info.group.clone()).or_default();
            if !versions.contains(&info.version) {
                versions.push(info.version.clone());
            }
            registry.by_path.insert(
                (
                    info.group.clone(),
                    info.version.clone(),
                    info.plural.clone(),
                ),
                Arc::new(info),
            );
        }
        for versions in registry.groups.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        registry
    }

    /// Every served resource version.
    pub fn infos(&self) -> impl Iterator<Item = &ResourceInfo> {
        self.by_path.values().map(|i| &**i)
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.by_path
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// Every served version of the resource stored under `storage`.
    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceInfo>> {
        self.by_path
            .values()
            .filter(|i| &*i.storage == storage && i.builtin != Some(Builtin::EventsV1))
            .max_by_key(|i| version_priority(&i.version))
            .cloned()
    }

    /// The store keys of every namespaced resource (for emptying a namespace).
    pub fn namespaced_storages(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self
            .by_path
            .values()
            .filter(|i| i.namespaced)
            .map(|i| i.storage.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|v| v.iter().any(|x| x == version))
    }

    /// `/api` (APIVersions).
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    fn group_doc(&self, group: &str, versions: &[String]) -> Value {
        let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
        json!({
            "name": group,
            "versions": versions.iter().map(gv).collect::<Vec<_>>(),
            "preferredVersion": versions.first().map(gv).unwrap_or(Value::Null),
        })
    }

    /// `/apis` (APIGroupList).
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, v)| self.group_doc(g, v))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>` (APIGroup).
    pub fn group(&self, group: &str) -> Option<Value> {
        let versions = self.groups.get(group).filter(|_| !group.is_empty())?;
        let mut doc = self.group_doc(group, versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `/api/v1` or `/apis/<group>/<version>` (APIResourceList).
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let mut infos: Vec<&Arc<ResourceInfo>> = self
            .by_path
            .values()
            .filter(|i| i.group == group && i.version == version)
            .collect();
        infos.sort_by(|a, b| a.plural.cmp(&b.plural));
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut resources = Vec::new();
        for i in infos {
            let mut r = json!({
                "name": i.plural,
                "singularName": i.singular,
                "namespaced": i.namespaced,
                "kind": i.kind,
                "verbs": verbs,
            });
            if !i.short_names.is_empty() {
                r["shortNames"] = json!(i.short_names);
            }
            if !i.categories.is_empty() {
                r["categories"] = json!(i.categories);
            }
            resources.push(r);
            if i.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", i.plural),
                    "singularName": "",
                    "namespaced": i.namespaced,
                    "kind": i.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stage, n) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (stage, major, n)
}

/// One `ResourceInfo` per served version of a CRD.
pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let strings = crate::store::strings;
    let storage: Arc<str> = Arc::from(format!("{group}/{plural}"));
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] == Value::Bool(false) {
            continue;
        }
        out.push(ResourceInfo {
            group: group.to_owned(),
            version: v["name"].as_str().unwrap_or_default().to_owned(),
            plural: plural.to_owned(),
            singular: names["singular"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.to_owned(),
            namespaced: spec["scope"] == "Namespaced",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: v["subresources"]["status"].is_object(),
            storage: storage.clone(),
            schema: v["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| v["schema"]["openAPIV3Schema"].clone()),
            printer_columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            builtin: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "servers.metal.sidero.dev"},
            "spec": {"group": "metal.sidero.dev", "scope": "Cluster",
                "names": {"plural": "servers", "singular": "server", "kind": "Server", "listKind": "ServerList"},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false},
                    {"name": "v1alpha2", "served": true, "storage": true, "subresources": {"status": {}}}]}})
    }

    #[test]
    fn crd_versions_are_served_and_the_newest_is_preferred() {
        let r = Registry::build(&[crd()]);
        let info = r.get("metal.sidero.dev", "v1alpha2", "servers").unwrap();
        assert!(!info.namespaced && info.status_subresource);
        let doc = r.group("metal.sidero.dev").unwrap();
        assert_eq!(doc["preferredVersion"]["version"], "v1alpha2");
        let list = r.resource_list("metal.sidero.dev", "v1alpha2").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["servers", "servers/status"]);
        assert!(r.resource_list("metal.sidero.dev", "v9").is_none());
    }

    #[test]
    fn leases_are_served_for_leader_election() {
        let r = Registry::build(&[]);
        let lease = r.get("coordination.k8s.io", "v1", "leases").unwrap();
        assert!(lease.namespaced);
        assert_eq!(lease.kind, "Lease");
        assert!(!lease.has_generation(), "core kinds carry no generation");
        assert!(r.has_group_version("coordination.k8s.io", "v1"));
    }

    #[test]
    fn core_kinds_and_both_event_views_are_served() {
        let r = Registry::build(&[]);
        assert!(r.get("", "v1", "secrets").unwrap().namespaced);
        let core = r.get("", "v1", "events").unwrap();
        let v1 = r.get("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(core.storage, v1.storage, "both views share one storage");
        assert!(
            r.group_list()["groups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["name"] != "")
        );
    }

    #[test]
    fn version_priority_orders_ga_beta_alpha() {
        let mut v = vec!["v1alpha1", "v2", "v1beta1", "v1", "v1alpha3"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v1beta1", "v1alpha3", "v1alpha1"]);
    }
}
