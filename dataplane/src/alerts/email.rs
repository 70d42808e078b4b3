//! Alerts as e-mail: one message per notice, over SMTP with STARTTLS required.
//!
//! Invariants: the server's certificate is checked (against the receiver's roots or the
//! system's) before anything is said after STARTTLS, and a server that does not offer
//! STARTTLS gets nothing; the server's address obeys the same rule as every receiver's (the
//! name is resolved and checked here, and the checked address is the one dialled); each
//! message's `Message-ID` is made of the alert's id and status, so the same notice sent
//! twice is recognisably one.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{Kind, Receiver};
use super::deliver::{DeliveryError, within};
use super::http::{REQUEST_TIMEOUT, checked};
use super::outbox::{Notice, Status};

/// The subject line of a notice.
pub fn subject(notice: &Notice) -> String {
    let alert = &notice.alert;
    let state = match notice.status {
        Status::Firing => "",
        Status::Resolved => "[resolved] ",
    };
    format!(
        "[imgate] {state}{} {}: {} ({})",
        super::severity_name(alert.severity),
        alert.rule,
        alert
            .sender
            .person
            .as_deref()
            .unwrap_or(&alert.sender.handle),
        alert.count
    )
}

/// The body of a notice.
pub fn text(tenant: &str, notice: &Notice) -> String {
    let alert = &notice.alert;
    let mut body = format!(
        "{}\n\nTenant: {tenant}\nAlert: {} ({})\nRule: {}\nSeverity: {}\nSender: {}{}\nProtocol: {}\nAction: {}\nHits: {}\nFirst: {}\nLast: {}\nConversation: {}\nRecord: {}\n",
        super::summary(alert),
        alert.id,
        notice.status.as_str(),
        alert.rule,
        super::severity_name(alert.severity),
        alert.sender.handle,
        alert
            .sender
            .person
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        alert.protocol.as_str(),
        alert.action.as_str(),
        alert.count,
        alert.first.to_rfc3339(),
        alert.last.to_rfc3339(),
        alert.conv,
        alert.record,
    );
    if let Some(text) = &alert.text {
        body.push_str("\nText:\n");
        body.push_str(text);
        body.push('\n');
    }
    body
}

/// The TLS settings for the server `host`: its certificate checked against `roots` (PEM), or
/// the system's roots without them.
pub fn tls_parameters(host: &str, roots: Option<&[u8]>) -> Result<TlsParameters, DeliveryError> {
    let mut tls = TlsParameters::builder(host.to_owned());
    if let Some(pem) = roots {
        tls = tls
            .certificate_store(CertificateStore::None)
            .add_root_certificate(
                Certificate::from_pem(pem)
                    .map_err(|e| DeliveryError::Tls(format!("the receiver's ca.crt: {e}")))?,
            );
    }
    tls.build_rustls()
        .map_err(|e| DeliveryError::Tls(e.to_string()))
}

/// Sends each notice as one message, with the TLS settings `tls`.
pub async fn send(
    tenant: &str,
    receiver: &Receiver,
    tls: TlsParameters,
    notices: &[Notice],
) -> Result<(), DeliveryError> {
    let Kind::Email {
        host,
        port,
        from,
        to,
        credentials,
        ..
    } = &receiver.kind
    else {
        unreachable!("only e-mail receivers are sent e-mail")
    };
    let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
        .await
        .map_err(|e| DeliveryError::Connect(format!("{host}: {e}")))?
        .collect();
    let address = checked(host, found, receiver.allow_private)
        .map_err(|e| DeliveryError::Refused(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| DeliveryError::Connect(format!("{host} has no address")))?;
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.ip().to_string())
            .port(*port)
            .tls(Tls::Required(tls))
            .hello_name(ClientId::Domain("imgate.invalid".into()))
            .timeout(Some(REQUEST_TIMEOUT));
    if let Some((user, password)) = credentials {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let transport = transport.build();
    let from = from
        .parse()
        .map_err(|e| DeliveryError::Protocol(format!("from {from:?}: {e}")))?;
    for notice in notices {
        let mut message = Message::builder()
            .from(Clone::clone(&from))
            .subject(subject(notice))
            .message_id(Some(format!(
                "<{}.{}@imgate.invalid>",
                notice.alert.id,
                notice.status.as_str()
            )))
            .header(ContentType::TEXT_PLAIN);
        for recipient in to {
            message = message.to(recipient
                .parse()
                .map_err(|e| DeliveryError::Protocol(format!("to {recipient:?}: {e}")))?);
        }
        let message = message
            .body(text(tenant, notice))
            .map_err(|e| DeliveryError::Protocol(e.to_string()))?;
        within(async { transport.send(message).await.map_err(|e| smtp_error(&e)) }).await?;
    }
    Ok(())
}

fn smtp_error(error: &lettre::transport::smtp::Error) -> DeliveryError {
    let text = super::deliver::with_causes(error);
    if let Some(code) = error.status() {
        let code = u16::from(code);
        // The message itself refused (too large, or its content); a refused login, relay or
        // recipient is the receiver's settings, retried and reported.
        if error.is_permanent() && matches!(code, 552 | 554) {
            DeliveryError::Rejected(code, text)
        } else {
            DeliveryError::Status(code, text)
        }
    } else if error.is_tls() {
        DeliveryError::Tls(text)
    } else if error.is_timeout() {
        DeliveryError::Timeout(REQUEST_TIMEOUT)
    } else if error.is_response() || error.is_client() {
        DeliveryError::Protocol(text)
    } else {
        DeliveryError::Connect(text)
    }
}
