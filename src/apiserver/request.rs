//! Parsing of Kubernetes API request paths and query parameters into a `Route` (what is being
//! asked for), following kube-apiserver's RequestInfoFactory so that every URL kubectl and
//! kube-rs build is understood the same way.

use std::collections::HashMap;

/// The endpoint a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz`
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    ResourceList { group: String, version: String },
    /// `/openapi/v2`, `/openapi/v3...`
    OpenApi(String),
    /// A resource, collection or subresource.
    Resource(ResourcePath),
}

/// `/apis/<group>/<version>[/namespaces/<ns>]/<resource>[/<name>[/<subresource>]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    #[error("the server could not find the requested resource")]
    NotFound,
}

/// Splits a path into a `Route`.
pub fn route(path: &str) -> Result<Route, RouteError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => Ok(Route::Version),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(Route::Health),
        ["openapi", rest @ ..] => Ok(Route::OpenApi(rest.join("/"))),
        ["api"] => Ok(Route::CoreVersions),
        ["apis"] => Ok(Route::Groups),
        ["api", "v1"] => Ok(Route::ResourceList {
            group: String::new(),
            version: "v1".into(),
        }),
        ["apis", group] => Ok(Route::Group((*group).to_owned())),
        ["apis", group, version] => Ok(Route::ResourceList {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["api", "v1", rest @ ..] => resource_path("", "v1", rest),
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest),
        _ => Err(RouteError::NotFound),
    }
}

/// Subresources of a namespace object that must not be read as resources in the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Result<Route, RouteError> {
    let (watch_prefix, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..]
            if !tail.is_empty() && !NAMESPACE_SUBRESOURCES.contains(&tail[0]) =>
        {
            (Some((*ns).to_owned()), tail)
        }
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Err(RouteError::NotFound),
    };
    if resource.is_empty() || name == Some("") {
        return Err(RouteError::NotFound);
    }
    Ok(Route::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        resource: resource.to_owned(),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
        watch_prefix,
    }))
}

/// Query parameters, first value wins (as in Go's `url.Values.Get`).
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Go's strconv.ParseBool-style flags (`watch=1`, `watch=true`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True" | "TRUE" | "t"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match route(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path} routed to {other:?}"),
        }
    }

    #[test]
    fn namespaced_and_cluster_scoped_paths_split_like_kube_apiserver() {
        let r = res(
            "/apis/infrastructure.cluster.x-k8s.io/v1alpha3/namespaces/default/metalmachines/m1/status",
        );
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.resource, "metalmachines");
        assert_eq!(r.name.as_deref(), Some("m1"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let s = res("/apis/metal.sidero.dev/v1alpha2/servers");
        assert_eq!(
            (s.namespace, s.resource, s.name),
            (None, "servers".into(), None)
        );
    }

    #[test]
    fn namespace_objects_and_their_subresources_are_not_read_as_contents() {
        let ns = res("/api/v1/namespaces/team-a");
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_deref()),
            ("namespaces", Some("team-a"))
        );
        let st = res("/api/v1/namespaces/team-a/status");
        assert_eq!(st.subresource.as_deref(), Some("status"));
        assert_eq!(st.namespace, None);
        let secrets = res("/api/v1/namespaces/team-a/secrets");
        assert_eq!(secrets.namespace.as_deref(), Some("team-a"));
        assert_eq!(secrets.resource, "secrets");
    }

    #[test]
    fn legacy_watch_prefix_and_discovery_paths() {
        assert!(res("/api/v1/watch/namespaces/default/configmaps").watch_prefix);
        assert_eq!(route("/apis").unwrap(), Route::Groups);
        assert_eq!(
            route("/apis/metal.sidero.dev/v1alpha2").unwrap(),
            Route::ResourceList {
                group: "metal.sidero.dev".into(),
                version: "v1alpha2".into()
            }
        );
        assert_eq!(route("/nope"), Err(RouteError::NotFound));
        assert_eq!(route("/api/v1/a/b/c/d"), Err(RouteError::NotFound));
    }

    #[test]
    fn query_takes_first_value_and_parses_flags() {
        let q = Query::parse(Some("watch=1&labelSelector=rack%3Drack-a&watch=0&limit="));
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("rack=rack-a"));
        assert_eq!(q.get("limit"), None, "empty values read as absent");
    }
}
