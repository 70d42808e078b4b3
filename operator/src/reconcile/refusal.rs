//! What stops a Tenant's objects from being applied, shown on the Tenant, not only in the
//! operator's log: a write the API server refused (an invalid object, a permission the
//! operator lacks, an admission plugin's veto), or a namespace that belongs to an earlier
//! Tenant of the same name ([`super::adoption`]).
//!
//! Invariants: a refusal is a `4xx` answer other than `409 Conflict` (a race, retried at
//! once) and `429 Too Many Requests` (the server is busy, not refusing); the Tenant's `Ready`
//! condition becomes `False` with reason [`REFUSED`] (or [`HELD`]) and the API server's own
//! message, which names the object and the field; a Warning Event says the same once per
//! refused object and answer, not on every retry (messages that differ only in a request's
//! details, as a webhook's may, are not announced again); the other conditions are kept.

use imgate_crds::Tenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use super::conditions::{State, Wanted, find};
use super::status::with_ready;
use super::{Context, Error, warning, write_tenant_status};

/// The `Ready` reason of a Tenant whose objects the API server refuses.
pub const REFUSED: &str = "ApplyRefused";
/// The `Ready` reason of a Tenant whose namespace belongs to an earlier Tenant.
pub const HELD: &str = "NamespaceOfEarlierTenant";

/// What stops the apply, as a `Ready` reason and what to tell people, when `error` is such a
/// thing; `None` for any other failure (retried without a word on the Tenant).
pub fn message(error: &Error) -> Option<(&'static str, String)> {
    match error {
        Error::Api {
            action,
            object,
            source: kube::Error::Api(status),
        } if (400..500).contains(&status.code) && !matches!(status.code, 409 | 429) => Some((
            REFUSED,
            format!(
                "{}: {}; nothing after it was applied, and the operator retries it",
                headline(action, object, status.code, &status.reason),
                status.message
            ),
        )),
        Error::NamespaceHeld { .. } => Some((HELD, error.to_string())),
        _ => None,
    }
}

/// The start of a refusal's message: what was refused, and how.
fn headline(action: &str, object: &str, code: u16, reason: &str) -> String {
    format!("the API server refused to {action} {object} ({code} {reason})")
}

/// The part of `message` that says what was refused and how, without the details.
fn gist(message: &str) -> &str {
    message.split_once("): ").map_or(message, |(gist, _)| gist)
}

/// Shows what stops `tenant` (`reason`, `message`): its `Ready` condition, and a Warning
/// Event when it is new. A failure to write the status is logged only: the reconcile has
/// failed already and is retried.
pub async fn report(
    tenant: &Tenant,
    reason: &'static str,
    message: String,
    ctx: &Context,
    now: &Time,
) {
    let previous = tenant.status.clone().unwrap_or_default();
    let known = find(&previous.conditions, "Ready")
        .is_some_and(|c| c.reason == reason && gist(&c.message) == gist(&message));
    let ready = Wanted::new("Ready", State::False, reason, message.clone());
    let status = with_ready(&previous, tenant.meta().generation, ready, now);
    if let Err(error) = write_tenant_status(tenant, status, ctx).await {
        tracing::warn!(tenant = %tenant.name_any(), %error, "could not show on the Tenant what stops it");
    }
    if !known {
        warning::publish(ctx, &tenant.object_ref(&()), reason, "Apply", message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_known_by_what_was_refused_not_by_its_details() {
        let first = format!(
            "{}: admission webhook denied the request (id 1); nothing after it was applied",
            headline("apply", "StatefulSet/dataplane", 403, "Forbidden")
        );
        let again = first.replace("id 1", "id 2");
        assert_eq!(gist(&first), gist(&again));
        let other = first.replace("StatefulSet/dataplane", "Service/tunnel");
        assert_ne!(gist(&first), gist(&other));
    }
}
