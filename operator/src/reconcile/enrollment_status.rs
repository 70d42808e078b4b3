//! The `ConnectorEnrollment` condition: whether the tenant's enrollment Secret holds a token
//! the MSP can hand out, and if not, what to do for a new one. Read from the Secret's
//! metadata alone (the token itself never passes through the operator's status).
//!
//! Invariants: `True` only for a token that is unused, unexpired and minted for the connector
//! `spec.tunnel.enrollConnector` names; every `False` says how to get a new token (delete the
//! Secret; the operator mints one on its next reconcile). The condition never affects `Ready`:
//! a used token is the normal state of an enrolled tenant.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::conditions::{State, Wanted};
use crate::enrollment::{CONNECTOR, EXPIRES, REDEEMED, TOKEN_KEY};
use crate::names;

/// The condition's type.
pub const TYPE: &str = "ConnectorEnrollment";

/// The condition for enrollment Secret `secret` of `tenant`, whose spec wants a token for
/// connector `wanted`, at `now`.
pub fn condition(secret: &ObjectMeta, tenant: &str, wanted: &str, now: Timestamp) -> Wanted {
    let annotations = secret.annotations.clone().unwrap_or_default();
    let place = format!(
        "Secret {}/{}",
        names::namespace(tenant),
        names::ENROLLMENT_SECRET
    );
    let anew = format!("delete {place} and the operator mints a new token");
    let connector = annotations.get(CONNECTOR).map_or("", String::as_str);
    let expires = annotations
        .get(EXPIRES)
        .and_then(|at| at.parse::<Timestamp>().ok());
    let (state, reason, message) = if let Some(by) = annotations.get(REDEEMED) {
        (
            State::False,
            "Redeemed",
            format!(
                "the token enrolled connector {connector} ({by}); to enroll another, set spec.tunnel.enrollConnector to its name and {anew}"
            ),
        )
    } else if connector != wanted {
        (
            State::False,
            "ConnectorChanged",
            format!(
                "the token in {place} enrolls connector {connector}, not {wanted} as spec.tunnel.enrollConnector says; {anew}"
            ),
        )
    } else if let Some(at) = expires.filter(|at| *at > now) {
        (
            State::True,
            "TokenAvailable",
            format!(
                "the token in {place} (key {TOKEN_KEY}) enrolls connector {connector} until {at}: give it to the site's connector (imgate connector run --enrollment-token, or the imgate-connector chart)"
            ),
        )
    } else {
        (
            State::False,
            "Expired",
            format!("the token for connector {connector} in {place} has expired; {anew}"),
        )
    };
    Wanted::new(TYPE, state, reason, message)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("a time")
    }

    fn secret(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn an_unused_token_is_available_until_it_expires() {
        let expires = at(1_800_000_000).to_string();
        let minted = secret(&[(CONNECTOR, "site-a"), (EXPIRES, &expires)]);
        let fresh = condition(&minted, "acme", "site-a", at(1_799_999_000));
        assert_eq!((fresh.state, fresh.reason), (State::True, "TokenAvailable"));
        assert!(
            fresh
                .message
                .contains("Secret imgate-acme/connector-enrollment (key token)"),
            "{}",
            fresh.message
        );
        let late = condition(&minted, "acme", "site-a", at(1_800_000_001));
        assert_eq!((late.state, late.reason), (State::False, "Expired"));
        assert!(
            late.message
                .contains("delete Secret imgate-acme/connector-enrollment")
        );
    }

    #[test]
    fn a_used_token_or_another_connector_says_how_to_get_a_new_token() {
        let expires = at(1_800_000_000).to_string();
        let used = secret(&[
            (CONNECTOR, "site-a"),
            (EXPIRES, &expires),
            (REDEEMED, "2027-01-15T09:00:00Z by dataplane-1"),
        ]);
        let redeemed = condition(&used, "acme", "site-a", at(1_799_999_000));
        assert_eq!(
            (redeemed.state, redeemed.reason),
            (State::False, "Redeemed")
        );
        assert!(
            redeemed.message.contains("by dataplane-1"),
            "{}",
            redeemed.message
        );
        assert!(redeemed.message.contains("spec.tunnel.enrollConnector"));
        let unused = secret(&[(CONNECTOR, "site-a"), (EXPIRES, &expires)]);
        let changed = condition(&unused, "acme", "site-b", at(1_799_999_000));
        assert_eq!(
            (changed.state, changed.reason),
            (State::False, "ConnectorChanged")
        );
        assert!(
            changed.message.contains("not site-b"),
            "{}",
            changed.message
        );
    }
}
