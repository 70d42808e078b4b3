//! The API server's own validation of the objects imgate makes: the rules a real
//! kube-apiserver enforces beyond each field's type (required fields, formats of names and
//! labels, enumerations, and rules across fields, such as a topology spread constraint's
//! `matchLabelKeys` needing a `labelSelector`), for the fields imgate sets. Type checks alone
//! (what [`crate::check`] does first) pass objects that every cluster refuses; these rules
//! are where such objects are caught before a cluster sees them.
//!
//! Invariants: every problem names the field by its path from the object's root and is worded
//! as the API server words it (`Required value`, `Invalid value`, `Forbidden`, `Unsupported
//! value`, `Duplicate value`, `Not found`), so a message can be searched for in the
//! Kubernetes sources and issue trackers; a rule is checked only as strictly as upstream
//! checks it (a pass here never refuses what a cluster accepts); kinds without rules of
//! their own get the metadata rules every object gets.
//!
//! A pod template gets the rules of a pod: a cluster refuses a workload whose template
//! breaks them, or, for some rules on older clusters, accepts the workload and refuses its
//! pods (which a Tenant then shows as dataplane pods that do not start).
//!
//! What is not checked: admission (Pod Security, quotas, webhooks, the owner-reference
//! permission plugin), defaults, immutability of fields on update, and rules on fields imgate
//! never sets.

mod config;
mod format;
mod meta;
mod network;
mod pod;
mod workload;

#[cfg(test)]
mod tests;

use k8s_openapi::api::{apps, autoscaling, core, networking, policy, rbac};

pub use format::Problems;

/// An object the API server validates.
pub trait Validate {
    /// Adds the problems the API server would report for this object to `problems`.
    fn validate(&self, problems: &mut Problems);
}

/// The problems a real API server would report for `object` (none when it would accept it).
pub fn problems_of(object: &impl Validate) -> Vec<String> {
    let mut problems = Problems::default();
    object.validate(&mut problems);
    problems.into_messages()
}

/// Kinds whose own rules imgate neither makes nor checks: their metadata is still checked,
/// their names in the format the kind demands.
macro_rules! metadata_only {
    ($($kind:ty => $rule:ident),* $(,)?) => {
        $(impl Validate for $kind {
            fn validate(&self, problems: &mut Problems) {
                meta::object_meta(&self.metadata, meta::NameRule::$rule, problems);
            }
        })*
    };
}

metadata_only! {
    apps::v1::Deployment => Subdomain,
    rbac::v1::ClusterRole => Path,
    rbac::v1::ClusterRoleBinding => Path,
    rbac::v1::Role => Path,
    k8s_openapi::api::coordination::v1::Lease => Subdomain,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition => Subdomain,
}

impl Validate for core::v1::Namespace {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Label, problems);
    }
}

impl Validate for core::v1::ServiceAccount {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
    }
}

impl Validate for rbac::v1::RoleBinding {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Path, problems);
        config::role_binding(self, problems);
    }
}

impl Validate for core::v1::Secret {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
        config::secret(self, problems);
    }
}

impl Validate for core::v1::ConfigMap {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
        config::config_map(self, problems);
    }
}

impl Validate for apps::v1::StatefulSet {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
        workload::stateful_set(self, problems);
    }
}

impl Validate for core::v1::Service {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Dns1035, problems);
        network::service(self, problems);
    }
}

impl Validate for autoscaling::v2::HorizontalPodAutoscaler {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
        workload::autoscaler(self, problems);
    }
}

impl Validate for policy::v1::PodDisruptionBudget {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
        workload::disruption_budget(self, problems);
    }
}

impl Validate for networking::v1::NetworkPolicy {
    fn validate(&self, problems: &mut Problems) {
        meta::object_meta(&self.metadata, meta::NameRule::Subdomain, problems);
        network::network_policy(self, problems);
    }
}
