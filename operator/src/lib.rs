//! The imgate operator: each `Tenant` becomes a namespace of dataplanes, and each tenant's
//! `IMPolicy` set becomes the policy those dataplanes enforce.
//!
//! The desired state ([`desired`]) is a pure function of the Tenant, its policies and the
//! operator's [`Settings`]: the reconciler applies what it returns, `imgate operator render`
//! prints it, and [`check`] proves that every object is the Kubernetes type it claims to be and passes
//! the API server's own validation ([`validation`]).
//!
//! Invariants:
//! - Every object the operator makes carries the labels of [`names`], so that `kubectl get
//!   -l imgate.io/tenant=NAME` finds it all, and all but the tenant's namespace an owner
//!   reference to its Tenant (the namespace outlives it, keeping the write-ahead-log volumes;
//!   a later Tenant of the same name takes it only when told to).
//! - The operator never sets what another controller owns: a StatefulSet's `replicas` belong
//!   to its HorizontalPodAutoscaler.
//! - An invalid policy set changes nothing a dataplane sees: the policy ConfigMap is made only
//!   from a set that compiles.
#![forbid(unsafe_code)]

pub mod check;
pub mod desired;
pub mod enrollment;
#[cfg(test)]
mod examples;
pub mod names;
pub mod policy;
pub mod policy_follow;
pub mod reconcile;
pub mod render;
pub mod report;
pub mod settings;
pub mod validation;

pub use desired::{Object, desired};
pub use settings::Settings;
