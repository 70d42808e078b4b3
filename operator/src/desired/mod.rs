//! The objects a Tenant becomes: a pure function of the Tenant, its policy set and the
//! operator's [`Settings`], unit-tested here and applied by the reconciler with server-side
//! apply.
//!
//! Invariants: the list is in an order that can be applied front to back (the namespace
//! first, then what pods need before they start, then the workload and what scales, guards
//! and reaches it); every object carries its tenant's labels, and all but the namespace an
//! owner reference to it (the namespace outlives the Tenant, keeping the write-ahead-log
//! volumes);
//! generated Secrets ([`Object::Secret`] with [`GENERATED`]) are listed without data, because
//! their keys are made once by the operator and never replaced.

mod access;
mod alerts;
mod network;
mod workload;

#[cfg(test)]
mod tests;

use imgate_crds::Tenant;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

pub use access::POLICY_REVISION;

use crate::policy::PolicySet;
use crate::settings::Settings;

/// The annotation on a Secret whose keys the operator makes once and never replaces.
pub const GENERATED: &str = "imgate.io/generated";

/// One object of a tenant's desired state.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    /// The tenant's namespace.
    Namespace(Namespace),
    /// The dataplanes' identity (and cloud IAM role).
    ServiceAccount(ServiceAccount),
    /// What the dataplanes may ask of the API server.
    RoleBinding(RoleBinding),
    /// Keys and certificates.
    Secret(Secret),
    /// The policy set the dataplanes enforce.
    ConfigMap(ConfigMap),
    /// The dataplanes (boxed: it is by far the largest).
    StatefulSet(Box<StatefulSet>),
    /// The tunnel, metrics and pods' Services.
    Service(Service),
    /// Scaling within the tenant's range.
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    /// At most one dataplane down for maintenance at a time.
    PodDisruptionBudget(PodDisruptionBudget),
    /// The dataplanes' ingress and egress.
    NetworkPolicy(NetworkPolicy),
}

/// Evaluates `$body` with `$o` bound to the object inside whichever variant `$object` is.
macro_rules! on_each {
    ($object:expr, $o:ident => $body:expr) => {
        match $object {
            Object::Namespace($o) => $body,
            Object::ServiceAccount($o) => $body,
            Object::RoleBinding($o) => $body,
            Object::Secret($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::StatefulSet(boxed) => {
                let $o = boxed.as_ref();
                $body
            }
            Object::Service($o) => $body,
            Object::HorizontalPodAutoscaler($o) => $body,
            Object::PodDisruptionBudget($o) => $body,
            Object::NetworkPolicy($o) => $body,
        }
    };
}

impl Object {
    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        on_each!(self, o => &o.metadata)
    }

    /// The object as JSON, with its `apiVersion` and `kind`.
    pub fn to_json(&self) -> serde_json::Value {
        fn typed<K: k8s_openapi::Resource + Serialize>(object: &K) -> serde_json::Value {
            let mut value = serde_json::to_value(object).unwrap_or_default();
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), K::API_VERSION.into());
                map.insert("kind".into(), K::KIND.into());
            }
            value
        }
        on_each!(self, o => typed(o))
    }

    /// The object's `kind`.
    pub fn kind(&self) -> &'static str {
        fn of<K: k8s_openapi::Resource>(_: &K) -> &'static str {
            K::KIND
        }
        on_each!(self, o => of(o))
    }

    /// The Secret, when this is one whose keys the operator makes once ([`GENERATED`]).
    pub fn generated_secret(&self) -> Option<&Secret> {
        match self {
            Object::Secret(secret)
                if secret
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(GENERATED)) =>
            {
                Some(secret)
            }
            _ => None,
        }
    }

    /// The object's API group, version and resource, for requests about it.
    pub fn api_resource(&self) -> kube::core::ApiResource {
        fn of<K: kube::Resource<DynamicType = ()>>(_: &K) -> kube::core::ApiResource {
            kube::core::ApiResource::erase::<K>(&())
        }
        on_each!(self, o => of(o))
    }

    /// `Kind/name`, for logs and messages.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.kind(),
            self.meta().name.as_deref().unwrap_or_default()
        )
    }
}

/// Everything `tenant` becomes, given its compiled `policy` set (none yet: no ConfigMap, and
/// the dataplanes wait for it) and the operator's `settings`, in the order they are applied:
/// the namespace, then the policy ConfigMap (a changed policy reaches running dataplanes
/// after two writes, not after every object), then what the dataplanes run with.
pub fn desired(tenant: &Tenant, policy: Option<&PolicySet>, settings: &Settings) -> Vec<Object> {
    let mut objects = vec![Object::Namespace(access::namespace(tenant))];
    if let Some(policy) = policy {
        objects.push(Object::ConfigMap(access::policy_config_map(tenant, policy)));
    }
    objects.push(Object::ServiceAccount(access::service_account(tenant)));
    objects.push(Object::RoleBinding(access::role_binding(tenant)));
    objects.extend(access::secrets(tenant).into_iter().map(Object::Secret));
    objects.push(Object::Service(network::pods_service(tenant, settings)));
    objects.push(Object::StatefulSet(Box::new(workload::stateful_set(
        tenant, settings,
    ))));
    objects.push(Object::Service(network::tunnel_service(tenant, settings)));
    objects.push(Object::Service(network::metrics_service(tenant, settings)));
    objects.push(Object::HorizontalPodAutoscaler(workload::autoscaler(
        tenant,
    )));
    objects.push(Object::PodDisruptionBudget(workload::disruption_budget(
        tenant,
    )));
    objects.push(Object::NetworkPolicy(network::network_policy(
        tenant, settings,
    )));
    objects
}
