//! A tenant's connector enrollment token, kept in the Secret
//! [`ENROLLMENT_SECRET`](crate::names::ENROLLMENT_SECRET) of its namespace: minted there by
//! the operator, handed to the customer by the MSP, and redeemed once by whichever of the
//! tenant's dataplanes the connector reaches ([`SecretTokens`]).
//!
//! The Secret holds the token's text under [`TOKEN_KEY`]; its annotations say which connector
//! it enrolls ([`CONNECTOR`]), until when ([`EXPIRES`], RFC 3339) and, once used, when and by
//! which dataplane ([`REDEEMED`]), so that the operator reports all of it from the Secret's
//! metadata without reading the token.
//!
//! Invariants: a token is accepted only if its secret matches the Secret's (compared by
//! digest), it names the connector the Secret's token was minted for, it has not expired,
//! and the Secret does not carry [`REDEEMED`]; redeeming is an update carrying the
//! `resourceVersion` that was read, so of two dataplanes racing for one token exactly one
//! wins (the other gets `409 Conflict`, reads again and sees it used); when the API server
//! cannot be asked, the enrollment is refused and the token stays unused.

mod generations;
mod redeem;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use imgate_dataplane::tunnel::tokens::{Token, TokenError};
use k8s_openapi::ByteString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

pub use generations::{RECORD_KEY, SecretGenerations};
pub use redeem::SecretTokens;

/// The Secret key holding the token's text.
pub const TOKEN_KEY: &str = "token";
/// The annotation naming the connector the token enrolls.
pub const CONNECTOR: &str = "imgate.io/connector";
/// The annotation with the token's expiry (RFC 3339).
pub const EXPIRES: &str = "imgate.io/expires";
/// The annotation a dataplane adds when it redeems the token: when, and which dataplane.
pub const REDEEMED: &str = "imgate.io/redeemed";
/// The annotation on the tunnel CA's Secret with the SHA-256 of its certificate, which
/// tokens carry for connectors to pin.
pub const CA_PIN: &str = "imgate.io/ca-sha256";
/// How long a token the operator mints stays valid.
pub const VALID: Duration = Duration::from_secs(7 * 24 * 3600);

/// A minted token, as its Secret holds it.
#[derive(Debug)]
pub struct Minted {
    /// The Secret's data: the token under [`TOKEN_KEY`].
    pub data: BTreeMap<String, ByteString>,
    /// The annotations that describe it: [`CONNECTOR`] and [`EXPIRES`].
    pub annotations: BTreeMap<String, String>,
}

/// A freshly minted token for `connector` under the CA pinned as `ca_pin`, valid from `now`.
pub fn mint(connector: &str, ca_pin: &str, now: Timestamp) -> Result<Minted, TokenError> {
    let token = Token::generate(connector, ca_pin)?;
    let valid = SignedDuration::try_from(VALID).unwrap_or(SignedDuration::MAX);
    let expires = now.saturating_add(valid).unwrap_or(now);
    let data = BTreeMap::from([(TOKEN_KEY.into(), ByteString(token.text().into_bytes()))]);
    let annotations = BTreeMap::from([
        (CONNECTOR.into(), connector.into()),
        (EXPIRES.into(), expires.to_string()),
    ]);
    Ok(Minted { data, annotations })
}
