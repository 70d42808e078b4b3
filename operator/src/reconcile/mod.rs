//! The reconcilers: each Tenant, with the IMPolicies that name it, made to match its desired
//! state on the API server.
//!
//! Invariants:
//! - Every object is written by server-side apply with the field manager
//!   [`names::FIELD_MANAGER`](crate::names::FIELD_MANAGER) and `force`, so a change made by
//!   hand to a field the operator owns is undone on the next reconcile (drift), while fields
//!   the operator does not set (a StatefulSet's `replicas`) stay with whoever owns them.
//! - Generated Secrets are created once and never written again: keys are never replaced
//!   under running dataplanes and connectors, and a Secret another replica created first
//!   (`409 AlreadyExists`) is left as it is.
//! - A policy set that does not compile leaves the policy ConfigMap untouched, so the
//!   dataplanes keep enforcing the last good set; the offending IMPolicy says why in its
//!   `Accepted` condition and in a Warning Event.
//! - A Tenant carries the finalizer [`FINALIZER`] from its first reconcile. Deleting it scales
//!   the dataplanes to zero and lets go only once no dataplane pod is left, so every record
//!   in a write-ahead log has been flushed to the archive. The operator has no access to the
//!   archive bucket at all: records are never deleted by it.
//! - Status is written only when it changes, and `lastTransitionTime` moves only when a
//!   condition's status does.

mod adoption;
pub(crate) mod apply;
pub mod conditions;
pub mod controller;
mod enrollment_status;
mod finalizer;
pub mod leader;
pub mod metrics;
mod pods;
mod policies;
mod refusal;
pub mod status;
mod tenant;
mod warning;

#[cfg(test)]
pub(crate) mod chart_rbac;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt::Debug;

use imgate_crds::{Tenant, TenantStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use controller::run;
pub use metrics::Metrics;
pub use tenant::reconcile;

use crate::settings::Settings;

/// The finalizer that holds a Tenant until its dataplanes have flushed and stopped.
pub const FINALIZER: &str = "imgate.io/drain";

/// What every reconcile shares.
pub struct Context {
    /// The API server.
    pub client: Client,
    /// The operator's settings (the Helm chart's values).
    pub settings: Settings,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Reconcile counts, errors and durations.
    pub metrics: Metrics,
    /// Failed reconciles in a row, by Tenant name: how long the next retry waits.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`, publishing Events as `instance` of the operator.
    pub fn new(client: Client, settings: Settings, instance: Option<String>) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: crate::names::FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics: Metrics::default(),
            failures: std::sync::Mutex::default(),
        }
    }
}

/// Why a reconcile failed; it is retried with a growing delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{action} {object}: {source}")]
    Api {
        /// What the operator was doing (`apply`, `create`, `list`, ...).
        action: &'static str,
        /// `Kind/name` or what was listed.
        object: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The tenant's namespace belongs to an earlier Tenant of the same name.
    #[error(
        "namespace {namespace} and the write-ahead-log volumes in it belong to an earlier Tenant of this name (uid {earlier}), whose unshipped records this Tenant's dataplanes would ship to its own archive; if it is the same firm, annotate this Tenant {adopt}={earlier}; otherwise ship or keep those records (imgate archive verify shows what the archive holds) and delete the namespace",
        adopt = crate::names::ADOPT_NAMESPACE
    )]
    NamespaceHeld {
        /// The namespace.
        namespace: String,
        /// The uid of the Tenant it belongs to.
        earlier: String,
    },
    /// A CA for a generated Secret could not be made.
    #[error("generating Secret {secret}: {message}")]
    Generate {
        /// The Secret's name.
        secret: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// The label of this error in the `errors` metric: the step that failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { action, .. } => action,
            Error::NamespaceHeld { .. } => "namespace",
            Error::Generate { .. } => "generate",
        }
    }
}

/// Wraps a kube error with what was being done to what.
fn api(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Api {
        action,
        object,
        source,
    }
}

/// Writes `status` on `tenant` by server-side apply, unless it is what the Tenant has.
async fn write_tenant_status(
    tenant: &Tenant,
    status: TenantStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let stored = tenant.status.as_ref().map(status::reconciled_part);
    if stored == Some(status::reconciled_part(&status)) {
        return Ok(());
    }
    let tenants: Api<Tenant> = Api::all(ctx.client.clone());
    apply_status(&tenants, &tenant.name_any(), &status).await
}

/// Writes `status` on object `name` of `objects` by server-side apply of its status
/// subresource, with the operator's field manager.
async fn apply_status<K>(objects: &Api<K>, name: &str, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    apply_status_as(crate::names::FIELD_MANAGER, objects, name, status).await
}

/// [`apply_status`] with field manager `manager`.
pub(crate) async fn apply_status_as<K>(
    manager: &str,
    objects: &Api<K>,
    name: &str,
    status: &impl Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    objects
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(api(
            "status",
            match objects.namespace() {
                Some(namespace) => format!("{}/{namespace}/{name}", K::kind(&())),
                None => format!("{}/{name}", K::kind(&())),
            },
        ))?;
    Ok(())
}
