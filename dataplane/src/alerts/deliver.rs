//! Sending notices to a receiver, whatever its kind, and how a failure is named.
//!
//! Invariants: [`Delivery::send`] returns `Ok` only when the receiver acknowledged every
//! notice given (a 2xx answer, a syslog connection that took every frame and closed cleanly,
//! an accepted SMTP transaction); anything else is an error the runner retries.

use std::time::Duration;

use super::config::{Kind, Receiver};
use super::http::{HttpClient, REQUEST_TIMEOUT};
use super::outbox::Notice;
use super::{alertmanager, email, syslog, webhook};

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver's address is not one alerts may go to.
    #[error("refused: {0}")]
    Refused(String),
    /// No connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The receiver answered with an error.
    #[error("the receiver answered {0}: {1}")]
    Status(u16, String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// TLS failed (the certificate, or the handshake).
    #[error("TLS: {0}")]
    Tls(String),
    /// The receiver spoke, but not as expected.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The receiver refused what it was sent, and would again (HTTP 400, 413, 415, 422; SMTP
    /// 552, 554).
    #[error("refused for good with {0}: {1}")]
    Rejected(u16, String),
}

impl DeliveryError {
    /// A label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DeliveryError::Refused(_) => "refused",
            DeliveryError::Connect(_) => "connect",
            DeliveryError::Status(..) => "status",
            DeliveryError::Timeout(_) => "timeout",
            DeliveryError::Tls(_) => "tls",
            DeliveryError::Protocol(_) => "protocol",
            DeliveryError::Rejected(..) => "rejected",
        }
    }

    /// Whether sending the same again would fail the same way.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Rejected(..))
    }

    /// From a hyper client error, naming a refused address as such.
    pub fn from_client(error: &hyper_util::client::legacy::Error) -> Self {
        let mut source: Option<&dyn std::error::Error> = Some(error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::PermissionDenied
            {
                return DeliveryError::Refused(io.to_string());
            }
            if cause.downcast_ref::<rustls::Error>().is_some() {
                return DeliveryError::Tls(cause.to_string());
            }
            source = cause.source();
        }
        DeliveryError::Connect(with_causes(error))
    }
}

/// `error` and each of its causes, joined by `: `.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// A TLS client configuration trusting `roots` (PEM), or the system's roots without them.
pub fn tls_config(
    roots: Option<&[u8]>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, DeliveryError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| DeliveryError::Tls(format!("the receiver's ca.crt: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| DeliveryError::Tls(format!("the receiver's ca.crt: {e}")))?;
            }
        }
        None => {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| unreachable!("ring supports the default versions: {e}"))
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// `exchange`, failed with [`DeliveryError::Timeout`] past [`REQUEST_TIMEOUT`].
pub async fn within<T>(
    exchange: impl std::future::Future<Output = Result<T, DeliveryError>>,
) -> Result<T, DeliveryError> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| DeliveryError::Timeout(REQUEST_TIMEOUT))?
}

/// What a receiver's deliveries share, made once: its HTTP client, or its TLS settings (a
/// `ca.crt` that cannot be read fails each delivery with why).
enum Prepared {
    Http(Box<HttpClient>),
    Syslog(Result<std::sync::Arc<rustls::ClientConfig>, String>),
    Email(Result<lettre::transport::smtp::client::TlsParameters, String>),
}

/// A receiver, ready to send to.
pub struct Delivery {
    receiver: Receiver,
    prepared: Prepared,
    tenant: String,
}

impl Delivery {
    /// A delivery for `receiver`, for `tenant`'s alerts.
    pub fn new(receiver: Receiver, tenant: &str) -> Self {
        let prepared = match &receiver.kind {
            Kind::Alertmanager { .. } | Kind::Webhook { .. } => {
                Prepared::Http(Box::new(HttpClient::new(receiver.allow_private)))
            }
            Kind::Syslog { roots, .. } => {
                Prepared::Syslog(tls_config(roots.as_deref()).map_err(|e| e.to_string()))
            }
            Kind::Email { host, roots, .. } => Prepared::Email(
                email::tls_parameters(host, roots.as_deref()).map_err(|e| e.to_string()),
            ),
        };
        Self {
            receiver,
            prepared,
            tenant: tenant.to_owned(),
        }
    }

    /// The receiver.
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// The most notices sent at once (one a mail: a mail refused after others were taken
    /// must not send those again).
    pub fn batch(&self) -> usize {
        match self.receiver.kind {
            Kind::Email { .. } => 1,
            _ => 100,
        }
    }

    /// Sends `notices`; `Ok` once the receiver took them all.
    pub async fn send(&self, notices: &[Notice]) -> Result<(), DeliveryError> {
        let http = || match &self.prepared {
            Prepared::Http(client) => client,
            _ => unreachable!("HTTP receivers have a client"),
        };
        let prepared_tls = |why: &String| DeliveryError::Tls(why.clone());
        match &self.receiver.kind {
            Kind::Alertmanager { url } => {
                let body = alertmanager::body(&self.tenant, notices, chrono::Utc::now());
                http().post(url, &[], body).await
            }
            Kind::Webhook { url, secret } => {
                let body = webhook::body(&self.tenant, notices);
                let timestamp = chrono::Utc::now().timestamp();
                let signature = webhook::sign(secret, timestamp, &body);
                let headers = [
                    (webhook::TIMESTAMP_HEADER, timestamp.to_string()),
                    (webhook::SIGNATURE_HEADER, signature),
                ];
                http().post(url, &headers, body).await
            }
            Kind::Syslog { host, port, .. } => {
                let Prepared::Syslog(tls) = &self.prepared else {
                    unreachable!("syslog receivers have TLS settings")
                };
                let tls = tls.as_ref().map_err(prepared_tls)?.clone();
                syslog::send(
                    &self.tenant,
                    (host, *port),
                    tls,
                    self.receiver.allow_private,
                    notices,
                )
                .await
            }
            Kind::Email { .. } => {
                let Prepared::Email(tls) = &self.prepared else {
                    unreachable!("e-mail receivers have TLS settings")
                };
                let tls = tls.as_ref().map_err(prepared_tls)?.clone();
                email::send(&self.tenant, &self.receiver, tls, notices).await
            }
        }
    }
}
