//! Every manifest the project ships applies to a fresh appliance with kubectl, and the seed
//! documents' Sidero YAML (what operators paste) is accepted and reads back unchanged.

mod common;

use common::Appliance;

#[test]
fn shipped_manifests_apply_and_stand_in_capi_kinds_are_usable() {
    let a = Appliance::start();
    let root = env!("CARGO_MANIFEST_DIR");
    let crds = format!("{root}/manifests/crds");
    let testing = format!("{root}/manifests/testing");
    let out = a.kubectl_ok(&["apply", "-f", &crds]);
    assert!(out.contains("servers.metal.sidero.dev"), "{out}");
    // The embedded mode serves the stand-ins already; applying the shipped file (what a
    // cluster without Cluster API would need) leaves them working.
    a.kubectl_ok(&["get", "machines,clusters", "-A"]);
    let out = a.kubectl_ok(&["apply", "-f", &testing]);
    assert!(out.contains("machines.cluster.x-k8s.io"), "{out}");
    common::eventually(10, "Machine kind served", || {
        a.kubectl(&["get", "machines"])
            .status
            .success()
            .then_some(())
    });
    let machine = a.file(
        "machine.yaml",
        "apiVersion: cluster.x-k8s.io/v1beta1\nkind: Machine\nmetadata: {name: production-cp-abc12, namespace: default}\n\
         spec:\n  clusterName: production\n  bootstrap: {dataSecretName: production-cp-abc12-bootstrap}\n  \
         infrastructureRef: {apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3, kind: MetalMachine, name: production-cp-abc12}\n",
    );
    a.kubectl_ok(&["apply", "-f", machine.to_str().unwrap()]);
    let got = a.kubectl_ok(&[
        "get",
        "machine",
        "production-cp-abc12",
        "-o",
        "jsonpath={.spec.clusterName}/{.spec.infrastructureRef.kind}",
    ]);
    assert_eq!(got, "production/MetalMachine");
    let table = a.kubectl_ok(&["get", "machines"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("CLUSTER") && table.contains("production"),
        "{table}"
    );
}
