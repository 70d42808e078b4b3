//! A write the API server refused (an invalid object, a permission the operator lacks, an
//! admission plugin's veto): shown on the Tenant, not only in the operator's log.
//!
//! Invariants: a refusal is a `4xx` answer other than `409 Conflict` (a race, retried at
//! once) and `429 Too Many Requests` (the server is busy, not refusing); the Tenant's `Ready`
//! condition becomes `False` with reason [`REASON`] and the API server's own message, which
//! names the object and the field; a Warning Event says the same, once per new message, not
//! on every retry; the other conditions are kept as they were.

use imgate_crds::Tenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use super::conditions::{State, Wanted, find};
use super::status::with_ready;
use super::{Context, Error, warning, write_tenant_status};

/// The `Ready` reason of a Tenant whose objects the API server refuses.
pub const REASON: &str = "ApplyRefused";

/// What to tell people when `error` is the API server refusing a write; `None` for any other
/// failure.
pub fn message(error: &Error) -> Option<String> {
    let Error::Api {
        action,
        object,
        source: kube::Error::Api(status),
    } = error
    else {
        return None;
    };
    let refused = (400..500).contains(&status.code) && !matches!(status.code, 409 | 429);
    refused.then(|| {
        format!(
            "the API server refused to {action} {object} ({} {}): {}; nothing after it was applied, and the operator retries it",
            status.code, status.reason, status.message
        )
    })
}

/// Shows the refusal `message` on `tenant`: its `Ready` condition, and a Warning Event when
/// the message is new. A failure to write the status is logged only: the reconcile has
/// failed already and is retried.
pub async fn report(tenant: &Tenant, message: String, ctx: &Context, now: &Time) {
    let previous = tenant.status.clone().unwrap_or_default();
    let known = find(&previous.conditions, "Ready")
        .is_some_and(|c| c.reason == REASON && c.message == message);
    let ready = Wanted::new("Ready", State::False, REASON, message.clone());
    let status = with_ready(&previous, tenant.meta().generation, ready, now);
    if let Err(error) = write_tenant_status(tenant, status, ctx).await {
        tracing::warn!(tenant = %tenant.name_any(), %error, "could not show the refusal on the Tenant");
    }
    if !known {
        warning::publish(ctx, &tenant.object_ref(&()), REASON, "Apply", message).await;
    }
}
