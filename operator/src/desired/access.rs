//! The tenant's namespace, the dataplanes' service account and what it may do, the Secrets
//! the operator makes, and the policy ConfigMap (the compiled policy set, the tenant's
//! identity sources and its revoked connectors).
//!
//! Invariants: the namespace enforces the `restricted` Pod Security Standard and is not owned
//! by the Tenant (it outlives it, holding the write-ahead-log volumes); the service
//! account mounts no API token by itself (the dataplane pods ask for one) and is bound to
//! [`DATAPLANE_ROLE`](names::DATAPLANE_ROLE) alone, which lets it read and redeem the
//! enrollment token, follow the policy ConfigMap and keep the connectors' certificate record,
//! and nothing else; a tenant that supplies its own interception CA gets no
//! generated one.

use std::collections::BTreeMap;

use imgate_crds::Tenant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};

use super::GENERATED;
use crate::enrollment;
use crate::names;
use crate::policy::{IDENTITY_FILE, POLICY_FILE, PolicySet, REVOKED_FILE};

/// The annotation with the revision of the policy set in the policy ConfigMap.
pub const POLICY_REVISION: &str = "imgate.io/policy-revision";
/// The annotation EKS reads to give a service account's pods an IAM role.
pub const ROLE_ARN: &str = "eks.amazonaws.com/role-arn";

/// The tenant's namespace. It names no owner: deleting the Tenant (once drained) collects
/// everything else of it, but the namespace stays, with the write-ahead-log volume claims the
/// StatefulSet made in it, so that no record a dataplane could not ship is lost with them.
pub fn namespace(tenant: &Tenant) -> Namespace {
    let mut metadata = names::meta(tenant, &names::namespace(names::tenant_name(tenant)), false);
    metadata.owner_references = None;
    if let Some(uid) = &tenant.metadata.uid {
        metadata.annotations = Some(BTreeMap::from([(names::TENANT_UID.into(), uid.clone())]));
    }
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
    }
    Namespace {
        metadata,
        ..Namespace::default()
    }
}

pub fn service_account(tenant: &Tenant) -> ServiceAccount {
    let mut metadata = names::meta(tenant, names::SERVICE_ACCOUNT, true);
    if let Some(role) = &tenant.spec.archive.s3.role_arn {
        metadata.annotations = Some(BTreeMap::from([(ROLE_ARN.into(), role.clone())]));
    }
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Binds the dataplanes' service account to [`names::DATAPLANE_ROLE`] in the tenant's
/// namespace.
pub fn role_binding(tenant: &Tenant) -> RoleBinding {
    RoleBinding {
        metadata: names::meta(tenant, names::DATAPLANE, true),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: names::DATAPLANE_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names::SERVICE_ACCOUNT.into(),
            namespace: Some(names::namespace(names::tenant_name(tenant))),
            ..Subject::default()
        }]),
    }
}

/// A Secret of `type_` whose `keys` the operator makes once; `what` says what it holds.
fn generated(tenant: &Tenant, name: &str, type_: &str, what: &str) -> Secret {
    let mut metadata = names::meta(tenant, name, true);
    metadata.annotations = Some(BTreeMap::from([(GENERATED.into(), what.into())]));
    Secret {
        metadata,
        type_: Some(type_.into()),
        ..Secret::default()
    }
}

pub fn secrets(tenant: &Tenant) -> Vec<Secret> {
    let mut secrets = vec![generated(
        tenant,
        names::TUNNEL_CA_SECRET,
        "Opaque",
        "the tenant's tunnel CA (ca.pem, ca.key): signs connector and dataplane certificates",
    )];
    let supplied = tenant
        .spec
        .tls
        .as_ref()
        .is_some_and(|tls| tls.interception_ca_secret_ref.is_some());
    if !supplied {
        secrets.push(generated(
            tenant,
            names::INTERCEPTION_CA_SECRET,
            "kubernetes.io/tls",
            "the CA that signs intercepted servers' certificates; IM clients trust its tls.crt",
        ));
    }
    let mut enrollment = generated(
        tenant,
        names::ENROLLMENT_SECRET,
        "Opaque",
        "a one-time token (key token) that enrolls the connector it names; delete this Secret for a new one",
    );
    enrollment
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            enrollment::CONNECTOR.into(),
            tenant.spec.tunnel.enroll_connector.clone(),
        );
    secrets.push(enrollment);
    secrets.push(generated(
        tenant,
        names::GENERATIONS_SECRET,
        "Opaque",
        "each connector's newest tunnel certificate (generations.json), recorded by the dataplanes: an older one stops working after the renewal grace",
    ));
    secrets
}

pub fn policy_config_map(tenant: &Tenant, policy: &PolicySet) -> ConfigMap {
    let mut metadata = names::meta(tenant, names::POLICY_CONFIG_MAP, true);
    metadata.annotations = Some(BTreeMap::from([(
        POLICY_REVISION.into(),
        policy.revision.clone(),
    )]));
    let mut data = BTreeMap::from([(POLICY_FILE.into(), policy.yaml.clone())]);
    if let Some(identity) = &tenant.spec.identity {
        data.insert(
            IDENTITY_FILE.into(),
            serde_saphyr::to_string(identity).unwrap_or_else(|error| {
                unreachable!("an IdentitySpec always serializes to YAML: {error}")
            }),
        );
    }
    if let Some(alerts) = &tenant.spec.alerts {
        data.insert(
            super::alerts::ALERTS_FILE.into(),
            super::alerts::alerts_yaml(alerts),
        );
    }
    let revoked = &tenant.spec.tunnel.revoked_connectors;
    if !revoked.is_empty() {
        let lines: String = revoked.iter().map(|id| format!("{id}\n")).collect();
        data.insert(REVOKED_FILE.into(), lines);
    }
    ConfigMap {
        metadata,
        data: Some(data),
        ..ConfigMap::default()
    }
}
