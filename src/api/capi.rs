//! The Cluster API infrastructure kinds (infrastructure.cluster.x-k8s.io/v1alpha3): MetalCluster,
//! MetalMachine, MetalMachineTemplate and ServerBinding. Field names follow Sidero's
//! `caps-controller-manager/api/v1alpha3`; `status.initialization` is added for the Cluster API
//! v1beta2 contract, which reads it instead of `status.ready`.

use k8s_openapi::api::core::v1::{NodeAddress, ObjectReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, is_false};

/// Desired state of a MetalCluster.
// clippy takes the repeated keys of kube's `printcolumn(...)` lists for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "MetalCluster",
    namespaced,
    status = "MetalClusterStatus",
    derive = "PartialEq",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    doc = "The infrastructure side of a Cluster API cluster on Siderite servers.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        description = "Cluster to which this MetalCluster belongs"
    ),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.controlPlaneEndpoint.host",
        priority = 1,
        description = "Control Plane Endpoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MetalClusterSpec {
    /// Endpoint of the cluster's Kubernetes API (usually a VIP or load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
}

/// A Kubernetes API endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiEndpoint {
    /// Host name or IP address the API server is served on.
    pub host: String,
    /// Port the API server is served on.
    pub port: i32,
}

/// Observed state of a MetalCluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalClusterStatus {
    /// The infrastructure is ready (Cluster API v1beta1 contract).
    #[serde(default)]
    pub ready: bool,
    /// Cluster API v1beta2 contract: whether the infrastructure is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// Machine-readable reason for a terminal failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Human-readable description of a terminal failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Endpoints of the control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_endpoints: Vec<ApiEndpoint>,
    /// Conditions of the MetalCluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Cluster API v1beta2 `status.initialization`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Initialization {
    /// The infrastructure is provisioned; Cluster API waits for this before going on.
    #[serde(default)]
    pub provisioned: bool,
}

/// Desired state of a MetalMachine.
// clippy takes the repeated keys of kube's `printcolumn(...)` lists for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "MetalMachine",
    namespaced,
    status = "MetalMachineStatus",
    derive = "PartialEq",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    doc = "The infrastructure side of a Cluster API Machine: one Siderite server.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "MetalMachine ready status"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        description = "Cluster to which this MetalMachine belongs"
    ),
    printcolumn(
        name = "Machine",
        type_ = "string",
        json_path = ".metadata.ownerReferences[?(@.kind==\"Machine\")].name",
        description = "Machine object to which this MetalMachine belongs"
    ),
    printcolumn(
        name = "Server",
        type_ = "string",
        json_path = ".spec.serverRef.name",
        description = "Server ID"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineSpec {
    /// Provider ID of the node, `sidero://<server UUID>`.
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// The Server bound to this machine; set by Siderite, or by hand to pin a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ObjectReference>,
    /// The ServerClass to allocate a server from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class_ref: Option<ObjectReference>,
}

/// Observed state of a MetalMachine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineStatus {
    /// The server is bound and provisioned (Cluster API v1beta1 contract).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ready: bool,
    /// Cluster API v1beta2 contract: whether the machine is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// Addresses of the bound server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Machine-readable reason for a terminal failure that needs an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Human-readable description of a terminal failure that needs an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Conditions of the MetalMachine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Desired state of a MetalMachineTemplate.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "MetalMachineTemplate",
    namespaced,
    derive = "PartialEq",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    doc = "A template Cluster API stamps MetalMachines from."
)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineTemplateSpec {
    /// The MetalMachine to create.
    pub template: MetalMachineTemplateResource,
}

/// The part of a MetalMachine a template fixes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineTemplateResource {
    /// Spec of the MetalMachines created from this template.
    pub spec: MetalMachineSpec,
}

/// Desired state of a ServerBinding.
// clippy takes the repeated keys of kube's `printcolumn(...)` lists for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "ServerBinding",
    status = "ServerBindingStatus",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    doc = "Binds one Server to one MetalMachine; named like the Server it binds.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "ServerBinding ready status"
    ),
    printcolumn(
        name = "Server",
        type_ = "string",
        json_path = ".metadata.name",
        priority = 1,
        description = "Server ID"
    ),
    printcolumn(
        name = "ServerClass",
        type_ = "string",
        json_path = ".spec.serverClassRef.name",
        priority = 1,
        description = "Server Class"
    ),
    printcolumn(
        name = "MetalMachine",
        type_ = "string",
        json_path = ".spec.metalMachineRef.name",
        priority = 1,
        description = "Metal Machine"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        priority = 1,
        description = "Cluster to which this ServerBinding belongs"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerBindingSpec {
    /// The ServerClass the server was picked from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class_ref: Option<ObjectReference>,
    /// The MetalMachine the server is bound to.
    pub metal_machine_ref: ObjectReference,
    /// State of the SideroLink tunnel (Sidero/Talos only; Siderite does not use it).
    #[serde(
        rename = "siderolink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sidero_link: Option<SideroLinkSpec>,
    /// Addresses of the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Host name of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Annotation on a `ServerBinding`: the allocation's metadata token. The boot plane puts it on
/// the server's kernel command line (or in its config drive), and the metadata server hands out
/// bootstrap data only to requests that carry it; a new allocation gets a new token.
pub const METADATA_TOKEN_ANNOTATION: &str = "siderite.dev/metadata-token";

/// SideroLink tunnel endpoint of a node, kept so Sidero-written bindings read back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SideroLinkSpec {
    /// Tunnel address of the node.
    #[serde(rename = "address")]
    pub node_address: String,
    /// WireGuard public key of the node.
    #[serde(rename = "publicKey")]
    pub node_public_key: String,
}

/// Observed state of a ServerBinding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerBindingStatus {
    /// A matching server was found and bound.
    #[serde(default)]
    pub ready: bool,
    /// Conditions of the ServerBinding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(yaml: &str)
    where
        T: serde::de::DeserializeOwned + Serialize,
    {
        let original: serde_json::Value = serde_saphyr::from_str(yaml).expect("valid YAML");
        let typed: T = serde_saphyr::from_str(yaml).expect("valid resource");
        assert_eq!(serde_json::to_value(&typed).expect("serializes"), original);
    }

    #[test]
    fn sidero_cluster_template_kinds_round_trip_unchanged() {
        round_trip::<MetalCluster>(
            r#"apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalCluster
metadata: {name: prod, namespace: default}
spec:
  controlPlaneEndpoint: {host: 10.0.1.100, port: 6443}
status:
  ready: true
  initialization: {provisioned: true}
"#,
        );
        round_trip::<MetalMachineTemplate>(
            r#"apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachineTemplate
metadata: {name: prod-cp, namespace: default}
spec:
  template:
    spec:
      serverClassRef:
        apiVersion: metal.sidero.dev/v1alpha2
        kind: ServerClass
        name: control-plane
        namespace: default
"#,
        );
    }

    #[test]
    fn bound_machine_and_binding_round_trip_unchanged() {
        round_trip::<MetalMachine>(
            r#"apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachine
metadata:
  name: prod-cp-abcde
  namespace: default
  labels: {cluster.x-k8s.io/cluster-name: prod}
spec:
  providerID: sidero://4c4c4544-0044-3610-8052-b4c04f4b3232
  serverClassRef: {apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: control-plane}
  serverRef: {apiVersion: metal.sidero.dev/v1alpha2, kind: Server, name: 4c4c4544-0044-3610-8052-b4c04f4b3232}
status:
  ready: true
  addresses: [{type: InternalIP, address: 10.0.1.21}, {type: Hostname, address: worker-1}]
  conditions:
  - {type: Ready, status: "True", lastTransitionTime: "2024-05-01T10:00:00Z"}
"#,
        );
        round_trip::<ServerBinding>(
            r#"apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: ServerBinding
metadata: {name: 4c4c4544-0044-3610-8052-b4c04f4b3232}
spec:
  metalMachineRef: {kind: MetalMachine, name: prod-cp-abcde, namespace: default}
  serverClassRef: {apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: control-plane}
  siderolink: {address: "fdae:41e4:649b:9303::a/64", publicKey: "Zm9vYmFyCg=="}
  addresses: [10.0.1.21]
  hostname: worker-1
status:
  ready: true
"#,
        );
    }

    #[test]
    fn provider_id_uses_the_capi_spelling() {
        let spec = MetalMachineSpec {
            provider_id: Some("sidero://abc".to_owned()),
            ..MetalMachineSpec::default()
        };
        let value = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(value, serde_json::json!({"providerID": "sidero://abc"}));
    }

    #[test]
    fn machine_ready_false_is_omitted_like_sidero_but_binding_ready_is_not() {
        let machine = serde_json::to_value(MetalMachineStatus::default()).expect("serializes");
        let binding = serde_json::to_value(ServerBindingStatus::default()).expect("serializes");

        assert_eq!(machine, serde_json::json!({}));
        assert_eq!(binding, serde_json::json!({"ready": false}));
    }
}
