//! Names, labels and owner references of what the operator makes for a tenant.
//!
//! Invariants: a tenant's objects live in [`namespace`] (`imgate-NAME`; tenant names are at
//! most 40 characters, so the namespace is a valid DNS label); every object carries
//! [`labels`], and the dataplane pods are selected by [`selector`] alone.

use std::collections::BTreeMap;

use imgate_crds::Tenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "imgate-operator";
/// The label naming an object's tenant.
pub const TENANT_LABEL: &str = "imgate.io/tenant";
/// The dataplane's StatefulSet, pods' name prefix and HorizontalPodAutoscaler.
pub const DATAPLANE: &str = "dataplane";
/// The dataplanes' service account.
pub const SERVICE_ACCOUNT: &str = "imgate-dataplane";
/// The UDP Service connectors reach the dataplanes through.
pub const TUNNEL_SERVICE: &str = "tunnel";
/// The ClusterIP Service Prometheus scrapes.
pub const METRICS_SERVICE: &str = "metrics";
/// The headless Service that governs the StatefulSet (stable pod names).
pub const PODS_SERVICE: &str = "dataplane-pods";
/// The Secret with the tenant's tunnel CA (`ca.pem`, `ca.key`).
pub const TUNNEL_CA_SECRET: &str = "tunnel-ca";
/// The Secret with the interception CA the operator makes when the tenant gives none.
pub const INTERCEPTION_CA_SECRET: &str = "interception-ca";
/// The Secret with the one-time token that enrolls the tenant's next connector.
pub const ENROLLMENT_SECRET: &str = "connector-enrollment";
/// The Secret with the record of each connector's newest tunnel certificate, which the
/// tenant's dataplanes share.
pub const GENERATIONS_SECRET: &str = "connector-generations";
/// The ClusterRole (made by the Helm chart) that each tenant's RoleBinding grants its
/// dataplanes: reading and redeeming the enrollment token, following the policy ConfigMap,
/// keeping the shared record of connectors' certificates and their report Leases; nothing
/// else.
pub const DATAPLANE_ROLE: &str = "imgate-dataplane";
/// The ConfigMap with the tenant's compiled-clean policy set.
pub const POLICY_CONFIG_MAP: &str = "policy";
/// The annotation on a tenant's namespace naming the uid of the Tenant it belongs to: the
/// namespace outlives its Tenant, and a later Tenant of the same name must not take its
/// write-ahead logs unasked.
pub const TENANT_UID: &str = "imgate.io/tenant-uid";
/// The annotation on a Tenant that lets it take the namespace (and the write-ahead logs in
/// it) of the earlier Tenant of its name whose uid it gives.
pub const ADOPT_NAMESPACE: &str = "imgate.io/adopt-namespace";

/// A Tenant's name (empty only for a Tenant that never passed the API server's checks).
pub fn tenant_name(tenant: &Tenant) -> &str {
    tenant.metadata.name.as_deref().unwrap_or_default()
}

/// The namespace holding everything of tenant `tenant`.
pub fn namespace(tenant: &str) -> String {
    format!("imgate-{tenant}")
}

/// The labels on every object of `tenant`.
pub fn labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "imgate".into()),
        ("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into()),
        (TENANT_LABEL.into(), tenant.into()),
    ])
}

/// The labels that select a tenant's dataplane pods.
pub fn selector(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/component".into(), DATAPLANE.into()),
        (TENANT_LABEL.into(), tenant.into()),
    ])
}

/// [`selector`] as a list request's `labelSelector` (`k=v,k=v`).
pub fn selector_query(tenant: &str) -> String {
    selector(tenant)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label selector for `tenant`'s dataplane pods ([`selector`]).
pub fn pod_selector(tenant: &Tenant) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector(tenant_name(tenant))),
        ..LabelSelector::default()
    }
}

/// The labels of a tenant's dataplane pods: [`labels`] and [`selector`].
pub fn pod_labels(tenant: &str) -> BTreeMap<String, String> {
    let mut labels = labels(tenant);
    labels.extend(selector(tenant));
    labels
}

/// The owner reference to `tenant` that every object of it carries, so that deleting the
/// Tenant (once its finalizer has let go) collects them.
pub fn owner(tenant: &Tenant) -> OwnerReference {
    OwnerReference {
        api_version: Tenant::api_version(&()).into_owned(),
        kind: Tenant::kind(&()).into_owned(),
        name: tenant_name(tenant).to_owned(),
        uid: tenant.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata for object `name` of `tenant`, in the tenant's namespace (`namespaced`) or
/// cluster-scoped; owned by the tenant once it has a uid (a Tenant read from a file, as
/// `imgate operator render` reads it, has none yet).
pub fn meta(tenant: &Tenant, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| namespace(tenant_name(tenant))),
        labels: Some(labels(tenant_name(tenant))),
        owner_references: tenant.metadata.uid.is_some().then(|| vec![owner(tenant)]),
        ..ObjectMeta::default()
    }
}
