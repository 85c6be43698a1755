//! Siderite's Kubernetes resource types, wire-compatible with Sidero Metal: `Server`,
//! `ServerClass` and `Environment` (metal.sidero.dev/v1alpha2, cluster-scoped) and the Cluster
//! API kinds `MetalCluster`, `MetalMachine`, `MetalMachineTemplate` (namespaced) and
//! `ServerBinding` (cluster-scoped) in infrastructure.cluster.x-k8s.io/v1alpha3.
//!
//! These types are the only serialized boundary of the project: their CRDs are generated from
//! them ([`all_crds`], [`crds_yaml`]) and committed as `manifests/crds/siderite-crds.yaml`; a test
//! fails when the two drift apart. Field names are Sidero's, so existing Sidero YAML applies
//! unchanged; see `docs/api.md` for which fields are Siderite additions.

pub mod agent;
mod capi;
mod common;
mod environment;
mod hardware;
mod server;
mod serverclass;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use self::capi::{
    ApiEndpoint, Initialization, METADATA_TOKEN_ANNOTATION, MetalCluster, MetalClusterSpec,
    MetalClusterStatus, MetalMachine, MetalMachineSpec, MetalMachineStatus, MetalMachineTemplate,
    MetalMachineTemplateResource, MetalMachineTemplateSpec, ServerBinding, ServerBindingSpec,
    ServerBindingStatus, SideroLinkSpec,
};
pub use self::common::{
    BootFromDiskMethod, Condition, ConditionSeverity, ConditionStatus, ConfigPatch, PatchOp,
    find_condition, set_condition,
};
pub use self::environment::{
    AssetCondition, DiskImage, Environment, EnvironmentSpec, EnvironmentStatus, ImageCompression,
    ImageFormat, Initrd, Kernel, RootDeviceHints,
};
pub use self::hardware::{
    BaseboardInformation, BiosInformation, ChassisInformation, ComputeInformation,
    HardwareInformation, MemoryInformation, MemoryModule, NetworkInformation, NetworkInterface,
    PciDevice, PciInformation, Processor, StorageDevice, StorageInformation, SystemInformation,
};
pub use self::server::{
    Bmc, BmcTls, CredentialSource, INSTALLED_CONDITION, ManagementApi, PxeMode, RedfishAuth,
    SecretKeyRef, Server, ServerSpec, ServerStatus,
};
pub use self::serverclass::{
    CpuInformation, ExpressionOperator, QualifierExpression, Qualifiers, ServerClass,
    ServerClassSpec, ServerClassStatus,
};

/// The CRD of every kind Siderite serves, Sidero's kinds first, in a fixed order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Server::crd(),
        ServerClass::crd(),
        Environment::crd(),
        MetalCluster::crd(),
        MetalMachine::crd(),
        MetalMachineTemplate::crd(),
        ServerBinding::crd(),
    ]
}

/// The stand-in CRDs for Cluster API's `Cluster` and `Machine` (`manifests/testing/`), which
/// the embedded mode serves so that cluster YAML applies without Cluster API installed.
pub fn capi_stand_in_crds() -> Vec<CustomResourceDefinition> {
    const YAML: &str = include_str!("../../manifests/testing/capi-stand-in-crds.yaml");
    serde_saphyr::from_multiple(YAML).expect("manifests/testing/capi-stand-in-crds.yaml parses")
}

/// Every CRD as a multi-document YAML stream, each document starting with `---`; the content
/// of `manifests/crds/siderite-crds.yaml`.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(&crd).expect(
                "a CRD is plain maps, lists, strings, numbers and bools, which YAML can hold",
            ),
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!("../../manifests/crds/siderite-crds.yaml");

    #[test]
    fn committed_crd_manifest_matches_the_rust_types() {
        assert!(
            crds_yaml() == COMMITTED,
            "manifests/crds/siderite-crds.yaml is out of date: \
             run `cargo run -- crds > manifests/crds/siderite-crds.yaml`"
        );
    }

    #[test]
    fn stand_in_crds_are_cluster_and_machine() {
        let names: Vec<String> = capi_stand_in_crds()
            .into_iter()
            .filter_map(|crd| crd.metadata.name)
            .collect();
        assert_eq!(
            names,
            ["clusters.cluster.x-k8s.io", "machines.cluster.x-k8s.io"]
        );
    }

    #[test]
    fn crd_yaml_parses_back_to_the_same_crds() {
        let docs: Vec<CustomResourceDefinition> =
            serde_saphyr::from_multiple(&crds_yaml()).expect("generated YAML parses");
        assert_eq!(docs, all_crds());
    }

    #[test]
    fn crds_have_sidero_names_and_scopes() {
        let names: Vec<(String, String)> = all_crds()
            .into_iter()
            .map(|crd| (crd.metadata.name.unwrap_or_default(), crd.spec.scope))
            .collect();
        let expected = [
            ("servers.metal.sidero.dev", "Cluster"),
            ("serverclasses.metal.sidero.dev", "Cluster"),
            ("environments.metal.sidero.dev", "Cluster"),
            (
                "metalclusters.infrastructure.cluster.x-k8s.io",
                "Namespaced",
            ),
            (
                "metalmachines.infrastructure.cluster.x-k8s.io",
                "Namespaced",
            ),
            (
                "metalmachinetemplates.infrastructure.cluster.x-k8s.io",
                "Namespaced",
            ),
            ("serverbindings.infrastructure.cluster.x-k8s.io", "Cluster"),
        ]
        .map(|(name, scope)| (name.to_owned(), scope.to_owned()));
        assert_eq!(names, expected);
    }

    #[test]
    fn server_printer_columns_follow_the_design_in_order() {
        let crd = Server::crd();
        let columns: Vec<(String, String, Option<i32>)> = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.json_path, c.priority))
            .collect();
        let expected = [
            ("Hostname", ".spec.hostname", None),
            ("BMC IP", ".spec.bmc.endpoint", None),
            ("Accepted", ".spec.accepted", None),
            ("Cordoned", ".spec.cordoned", None),
            ("Allocated", ".status.inUse", None),
            ("Clean", ".status.isClean", None),
            ("Power", ".status.power", None),
            ("Age", ".metadata.creationTimestamp", None),
        ]
        .map(|(name, path, priority)| (name.to_owned(), path.to_owned(), priority));
        assert_eq!(columns, expected);
    }

    #[test]
    fn every_schema_node_is_structural() {
        for crd in all_crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .unwrap_or_else(|| panic!("{name} has no openAPIV3Schema"));
                let value = serde_json::to_value(schema).expect("schema serializes");
                let mut problems = Vec::new();
                check_structural(&value, &name, &mut problems);
                assert!(
                    problems.is_empty(),
                    "non-structural schema nodes: {problems:#?}"
                );
            }
        }
    }

    #[test]
    fn structural_check_flags_untyped_and_junctor_nodes() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "typed": {"type": "string"},
                "untyped": {"description": "no type"},
                "any": {"x-kubernetes-preserve-unknown-fields": true},
                "list": {"type": "array", "items": {"anyOf": [{"type": "string"}]}},
            }
        });
        let mut problems = Vec::new();
        check_structural(&schema, "x", &mut problems);
        problems.sort();
        assert_eq!(
            problems,
            [
                "x.list[]: no type",
                "x.list[]: uses anyOf",
                "x.untyped: no type"
            ]
        );
    }

    /// Collects every node that lacks a `type` (and is not an explicit escape hatch) or that uses
    /// a construct a structural schema forbids.
    fn check_structural(node: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
        let Some(object) = node.as_object() else {
            problems.push(format!("{path}: not an object"));
            return;
        };
        let escape = object.contains_key("x-kubernetes-preserve-unknown-fields")
            || object.contains_key("x-kubernetes-int-or-string");
        if !object.contains_key("type") && !escape {
            problems.push(format!("{path}: no type"));
        }
        for forbidden in [
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "not",
            "definitions",
            "const",
        ] {
            if object.contains_key(forbidden) {
                problems.push(format!("{path}: uses {forbidden}"));
            }
        }
        if let Some(properties) = object.get("properties").and_then(|p| p.as_object()) {
            for (key, child) in properties {
                check_structural(child, &format!("{path}.{key}"), problems);
            }
        }
        if let Some(items) = object.get("items") {
            check_structural(items, &format!("{path}[]"), problems);
        }
        if let Some(extra) = object.get("additionalProperties").filter(|a| a.is_object()) {
            check_structural(extra, &format!("{path}{{}}"), problems);
        }
    }
}
