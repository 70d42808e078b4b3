//! The `imgate.io` Kubernetes API: the cluster-scoped [`Tenant`] and the namespaced
//! [`IMPolicy`], their schemas, and the checks that a manifest must pass before the API
//! server (or `imgate policy lint`) accepts it.
//!
//! Invariants:
//! - The Rust types are the single source of truth. The CRD YAML under `crds/` is generated
//!   from them ([`crd_yaml`]) and a test fails when the checked-in copy drifts.
//! - The schemas are structural and stay in exact agreement with the types: every value the
//!   API server can store decodes into the Rust types (see `shared/kubernetes-crds.md`).
//! - [`validate_object`] applies the same rules as the API server does (types, enums,
//!   patterns, ranges, required fields, CEL rules) plus a strict unknown-field check, so that
//!   what lints clean here is accepted by a cluster.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod conditions;
mod generate;
pub mod policy;
mod schema_check;
pub mod tenant;
pub mod units;
mod validate;

pub use generate::{crd_yaml, crds};
pub use policy::{IMPolicy, IMPolicySpec, IMPolicyStatus};
pub use tenant::{Tenant, TenantSpec, TenantStatus};
pub use validate::{FieldError, ResourceKind, validate_object};

/// The API group of every imgate resource.
pub const GROUP: &str = "imgate.io";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "imgate.io/v1alpha1";
/// A DNS-1123 label: the shape of tenant, rule and object names.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
