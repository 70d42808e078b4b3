//! Enrollment and renewal, on the tunnel's own QUIC endpoint under the ALPN
//! [`ENROLL_ALPN`](super::trust::ENROLL_ALPN): a connector opens one stream, sends its certificate request with either a
//! one-time token (enrollment) or its current certificate in the handshake (renewal), and
//! gets its certificate and the tenant's CA back.
//!
//! Invariants:
//! - a request is signed only for the connector the token was minted for, or for the
//!   connector the presented certificate names; a revoked connector is never signed for;
//! - the request is read and its signature checked before a token is redeemed, so a broken
//!   request never spends a token;
//! - a certificate renews only in the last third of its life (when the connector renews on
//!   its own), and only while it is the connector's newest (see [`super::generations`]);
//!   every certificate signed is recorded as the connector's newest;
//! - messages are bounded by [`MAX_MESSAGE`]; every refusal is logged here and sent to the
//!   connector with its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::generations::{Snapshot, Superseded};
use super::tokens::{Redeemer, Token, TokenError, TunnelState, unix_now};
use super::trust::{TunnelCa, read_request, validity_of};
use crate::telemetry::Metrics;
use rcgen::PublicKeyData;

/// The largest request or answer, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// What a connector sends.
#[derive(Serialize, Deserialize)]
struct Request {
    /// The one-time token, when enrolling.
    #[serde(default)]
    token: Option<String>,
    /// The certificate request (PEM).
    request: String,
}

/// What the dataplane answers.
#[derive(Serialize, Deserialize)]
struct Answer {
    /// The connector's new certificate (PEM).
    #[serde(default)]
    certificate: Option<String>,
    /// The tenant's tunnel CA (PEM).
    #[serde(default)]
    ca: Option<String>,
    /// Why the request was refused.
    #[serde(default)]
    error: Option<String>,
}

/// Why enrollment failed, as either side sees it.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The dataplane refused, saying why.
    #[error("the dataplane refused: {0}")]
    Refused(String),
    /// The token or the request was unacceptable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Signing failed.
    #[error(transparent)]
    Trust(#[from] super::trust::TrustError),
    /// The connection or stream failed.
    #[error("enrollment connection: {0}")]
    Connection(String),
    /// A message that does not parse.
    #[error("enrollment message: {0}")]
    Message(String),
    /// A renewal before the last third of the certificate's life.
    #[error(
        "connector {id} may renew from {from} (the last third of its certificate's life), \
         when it renews on its own"
    )]
    TooEarly {
        /// The connector.
        id: String,
        /// When renewal opens (RFC 3339).
        from: String,
    },
    /// A renewal with a certificate a newer one replaced.
    #[error(transparent)]
    Superseded(#[from] Superseded),
}

impl EnrollError {
    /// A short name for the reason, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EnrollError::Token(TokenError::Reused(_)) => "token_reused",
            EnrollError::Token(TokenError::Expired(_)) => "token_expired",
            EnrollError::Token(TokenError::Unknown | TokenError::WrongConnector) => "token_unknown",
            EnrollError::Token(TokenError::Revoked(_)) => "revoked",
            EnrollError::Token(TokenError::Store(_)) => "token_store",
            EnrollError::Connection(_) => "enrollment_broken",
            EnrollError::TooEarly { .. } => "renewal_too_early",
            EnrollError::Superseded(_) => "superseded",
            _ => "enrollment_invalid",
        }
    }
}

fn connection_error(error: impl std::fmt::Display) -> EnrollError {
    EnrollError::Connection(error.to_string())
}

/// What the dataplane needs to sign connectors' certificates.
pub struct Authority {
    /// The tenant's tunnel CA.
    pub ca: Arc<TunnelCa>,
    /// Where its one-time tokens are redeemed.
    pub tokens: Arc<dyn Redeemer>,
    /// Its revocation list and its record of each connector's newest certificate.
    pub state: TunnelState,
    /// How long a connector's certificate is valid.
    pub lifetime: Duration,
    /// How long a connector's older certificate keeps working once a newer one is signed.
    pub renewal_grace: Duration,
}

/// The certificate a connector presented, verified against the tenant's tunnel CA.
pub struct Presented {
    /// The connector it names.
    pub id: String,
    /// The certificate.
    pub cert: rustls_pki_types::CertificateDer<'static>,
}

impl Authority {
    /// Signs the certificate request in `bytes` for the connector its token enrolls or, with
    /// no token, for `presented`, the connector its verified certificate names. Returns the
    /// connector and its certificate (PEM).
    async fn decide(
        &self,
        bytes: &[u8],
        presented: Option<&Presented>,
    ) -> Result<(String, String), EnrollError> {
        let request: Request =
            serde_json::from_slice(bytes).map_err(|e| EnrollError::Message(e.to_string()))?;
        let csr = read_request(&request.request)?;
        let request_key = csr.public_key.subject_public_key_info();
        let renewal = presented.filter(|_| request.token.is_none());
        let id = match (&request.token, presented) {
            (Some(token), _) => {
                let token = Token::parse(token)?;
                self.refuse_revoked(&token.connector)?;
                // The record must be readable before the token is spent: a certificate that
                // cannot be recorded is not given.
                self.state.generations().current().await?;
                self.tokens.redeem(&token).await?
            }
            (None, Some(presented)) => {
                self.refuse_revoked(&presented.id)?;
                self.check_renewal(presented, &request_key).await?;
                presented.id.clone()
            }
            (None, None) => {
                return Err(EnrollError::Refused(
                    "give an enrollment token (imgate tunnel token) or renew with a certificate"
                        .into(),
                ));
            }
        };
        let certificate = self.ca.sign_request(csr, &id, self.lifetime)?;
        // A renewal's decision holds of the record the certificate is written to: another
        // dataplane may have recorded a renewal of the same connector since.
        let now = unix_now();
        let still = |record: &Snapshot| match renewal {
            Some(presented) => self.may_renew(record, presented, &request_key, now),
            None => Ok(()),
        };
        self.state
            .generations()
            .issued(&id, &certificate, now, &still)
            .await??;
        Ok((id, pem(&certificate)))
    }

    /// Whether `record` lets `presented` renew with a request for `request_key` at `now`: it
    /// is the connector's newest certificate itself, since a copy of an older one, even
    /// within its grace, would take the connector's place; or, within the grace, the request
    /// is signed with the newest certificate's key (the connector asking again for an answer
    /// it lost).
    fn may_renew(
        &self,
        record: &Snapshot,
        presented: &Presented,
        request_key: &[u8],
        now: u64,
    ) -> Result<(), Superseded> {
        let Err(superseded) = record.check(&presented.id, &presented.cert, now, Duration::ZERO)
        else {
            return Ok(());
        };
        let within_grace = record
            .check(&presented.id, &presented.cert, now, self.renewal_grace)
            .is_ok();
        if within_grace && record.is_newest_key(&presented.id, request_key) {
            Ok(())
        } else {
            Err(superseded)
        }
    }

    /// A renewal is allowed with the connector's newest certificate, in its last third;
    /// `request_key` is the request's public key (SubjectPublicKeyInfo, DER).
    async fn check_renewal(
        &self,
        presented: &Presented,
        request_key: &[u8],
    ) -> Result<(), EnrollError> {
        let (not_before, not_after) = validity_of(&presented.cert).ok_or_else(|| {
            EnrollError::Message("the presented certificate cannot be read".into())
        })?;
        let now = unix_now();
        let record = self.state.generations().current().await?;
        self.may_renew(&record, presented, request_key, now)?;
        // Rounded so that it never opens later than the connector computes it.
        let opens = not_after - not_after.saturating_sub(not_before).div_ceil(3);
        if now < opens {
            let from = chrono::DateTime::from_timestamp(i64::try_from(opens).unwrap_or(0), 0)
                .map_or_else(|| opens.to_string(), |t| t.to_rfc3339());
            return Err(EnrollError::TooEarly {
                id: presented.id.clone(),
                from,
            });
        }
        Ok(())
    }

    fn refuse_revoked(&self, id: &str) -> Result<(), TokenError> {
        if self.state.revoked()?.contains(id) {
            return Err(TokenError::Revoked(id.to_owned()));
        }
        Ok(())
    }

    /// Serves one enrollment connection from `remote`; `presented` is the certificate it
    /// gave, verified, if it gave one.
    pub async fn serve(
        &self,
        connection: quinn::Connection,
        remote: SocketAddr,
        presented: Option<Presented>,
        metrics: &Metrics,
    ) {
        let (mut send, mut receive) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::warn!(target: "imgate::tunnel", %remote, "enrollment ended: {error}");
                return;
            }
        };
        let decided = match receive.read_to_end(MAX_MESSAGE).await {
            Ok(bytes) => self.decide(&bytes, presented.as_ref()).await,
            Err(error) => Err(connection_error(error)),
        };
        let answer = match decided {
            Ok((id, certificate)) => {
                let how = if presented.is_some() {
                    "renewed its certificate"
                } else {
                    "enrolled"
                };
                tracing::info!(target: "imgate::tunnel", %remote, connector = %id, "connector {how}");
                metrics.tunnel_enrolled(if presented.is_some() {
                    "renewal"
                } else {
                    "token"
                });
                Answer {
                    certificate: Some(certificate),
                    ca: Some(pem(self.ca.certificate())),
                    error: None,
                }
            }
            Err(error) => {
                tracing::warn!(target: "imgate::tunnel", %remote, "enrollment refused: {error}");
                metrics.tunnel_refused(error.reason());
                Answer {
                    certificate: None,
                    ca: None,
                    error: Some(error.to_string()),
                }
            }
        };
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        if send.write_all(&bytes).await.is_ok() && send.finish().is_ok() {
            // The connector closes once it has read the answer.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(10), connection.closed()).await;
        }
    }
}

/// A certificate in PEM.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}

/// A connector's new certificate and its tenant's CA.
pub struct Enrolled {
    /// The certificate, for the request's key.
    pub certificate: CertificateDer<'static>,
    /// The tenant's tunnel CA.
    pub ca: CertificateDer<'static>,
}

/// Asks the dataplane at `address` (its certificate naming `server_name`) to sign
/// `request_pem`, with `token` when enrolling; `config` must speak [`ENROLL_ALPN`](super::trust::ENROLL_ALPN) and carry
/// either the token's pin or the connector's current identity.
pub async fn request(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    address: SocketAddr,
    server_name: &str,
    token: Option<&str>,
    request_pem: &str,
) -> Result<Enrolled, EnrollError> {
    let connection = endpoint
        .connect_with(config, address, server_name)
        .map_err(connection_error)?
        .await
        .map_err(connection_error)?;
    let answer = exchange(&connection, token, request_pem).await;
    connection.close(0u32.into(), b"enrolled");
    let answer = answer?;
    if let Some(error) = answer.error {
        return Err(EnrollError::Refused(error));
    }
    let read = |pem: Option<String>, what: &str| {
        let pem = pem.ok_or_else(|| EnrollError::Message(format!("no {what} in the answer")))?;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| EnrollError::Message(format!("{what}: {e}")))
    };
    Ok(Enrolled {
        certificate: read(answer.certificate, "certificate")?,
        ca: read(answer.ca, "CA")?,
    })
}

async fn exchange(
    connection: &quinn::Connection,
    token: Option<&str>,
    request_pem: &str,
) -> Result<Answer, EnrollError> {
    let (mut send, mut receive) = connection.open_bi().await.map_err(connection_error)?;
    let request = Request {
        token: token.map(str::to_owned),
        request: request_pem.to_owned(),
    };
    let bytes = serde_json::to_vec(&request).map_err(|e| EnrollError::Message(e.to_string()))?;
    send.write_all(&bytes).await.map_err(connection_error)?;
    send.finish().map_err(connection_error)?;
    let bytes = receive
        .read_to_end(MAX_MESSAGE)
        .await
        .map_err(connection_error)?;
    serde_json::from_slice(&bytes).map_err(|e| EnrollError::Message(e.to_string()))
}

#[cfg(test)]
mod tests;
