//! Alerts as syslog messages (RFC 5424) over TLS (RFC 5425), the way SIEMs take them.
//!
//! Invariants: each notice is one octet-counted frame (`LEN SP MSG`), so a text with line
//! breaks stays one message; the alert's fields are structured data (`[imgate@32473 …]`, with
//! `"`, `\` and `]` escaped as RFC 5424 says), the text is in the message only when the
//! receiver takes text; a delivery succeeds only when every frame was written and imgate
//! closed its side, and the collector then closed its own or, keeping it open, did not
//! reset it within two seconds (syslog has no acknowledgement of its own); the collector's
//! certificate is checked against the receiver's roots or the system's, and its address
//! against the same rule as every receiver's.

use rustls_pki_types::ServerName;
use std::fmt::Write as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::sync::Arc;

use super::deliver::{DeliveryError, within};
use super::http::checked;
use super::outbox::{Notice, Status};
use imgate_crds::policy::Severity;

/// The structured-data id: `imgate` under the documentation enterprise number (RFC 5612).
pub const SD_ID: &str = "imgate@32473";
/// How long the collector has to close its side once imgate closed its own.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Facility 13, log audit.
const FACILITY: u8 = 13;

/// One notice as an RFC 5424 message (without the frame's length).
pub fn message(tenant: &str, notice: &Notice, now: chrono::DateTime<chrono::Utc>) -> String {
    let alert = &notice.alert;
    let severity = match (notice.status, alert.severity) {
        (Status::Resolved, _) => 5,
        (_, Severity::Critical) => 2,
        (_, Severity::High) => 3,
        (_, Severity::Medium) => 4,
        (_, Severity::Low) => 5,
    };
    let mut line = format!(
        "<{}>1 {} imgate imgate - {} [{SD_ID}",
        FACILITY * 8 + severity,
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        match notice.status {
            Status::Firing => "alert",
            Status::Resolved => "resolved",
        }
    );
    let mut param = |name: &str, value: &str| {
        let _ = write!(line, " {name}=\"{}\"", escape(value));
    };
    param("tenant", tenant);
    param("id", &alert.id);
    param("status", notice.status.as_str());
    param("rule", &alert.rule);
    param("severity", super::severity_name(alert.severity));
    param("sender", &alert.sender.handle);
    if let Some(person) = &alert.sender.person {
        param("person", person);
    }
    param("count", &alert.count.to_string());
    param("protocol", alert.protocol.as_str());
    param("action", alert.action.as_str());
    param("conversation", &alert.conv);
    param("record", &alert.record);
    param("first", &alert.first.to_rfc3339());
    param("last", &alert.last.to_rfc3339());
    line.push_str("] \u{feff}");
    line.push_str(&super::summary(alert));
    if let Some(text) = &alert.text {
        line.push_str(": ");
        line.push_str(text);
    }
    line
}

/// A structured-data parameter value, escaped (RFC 5424 §6.3.3).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Sends `notices` to the collector at `host:port`.
pub async fn send(
    tenant: &str,
    (host, port): (&str, u16),
    tls: Arc<rustls::ClientConfig>,
    allow_private: bool,
    notices: &[Notice],
) -> Result<(), DeliveryError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        DeliveryError::Tls(format!(
            "{host:?} cannot be checked against a certificate: {e}"
        ))
    })?;
    let exchange = async {
        let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| DeliveryError::Connect(format!("{host}: {e}")))?
            .collect();
        let addresses = checked(host, found, allow_private).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                DeliveryError::Refused(e.to_string())
            } else {
                DeliveryError::Connect(e.to_string())
            }
        })?;
        let tcp = tokio::net::TcpStream::connect(&addresses[..])
            .await
            .map_err(|e| DeliveryError::Connect(format!("{host}:{port}: {e}")))?;
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| DeliveryError::Tls(format!("{host}:{port}: {e}")))?;
        let now = chrono::Utc::now();
        let mut frames = Vec::new();
        for notice in notices {
            let message = message(tenant, notice, now);
            frames.extend_from_slice(format!("{} ", message.len()).as_bytes());
            frames.extend_from_slice(message.as_bytes());
        }
        stream
            .write_all(&frames)
            .await
            .map_err(|e| DeliveryError::Connect(format!("{host}:{port}: {e}")))?;
        stream
            .shutdown()
            .await
            .map_err(|e| DeliveryError::Connect(format!("{host}:{port}: {e}")))?;
        // The collector closes once it has read everything. One that keeps its side open
        // is trusted after CLOSE_WAIT: everything was written and imgate's side closed.
        let mut rest = [0u8; 512];
        let closed = async {
            loop {
                match stream.read(&mut rest).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(DeliveryError::Connect(format!("{host}:{port}: {e}"))),
                }
            }
        };
        match tokio::time::timeout(CLOSE_WAIT, closed).await {
            Ok(closed) => closed,
            Err(_) => {
                tracing::debug!(%host, port, "the syslog collector kept its side open; the frames were all written");
                Ok(())
            }
        }
    };
    within(exchange).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::outbox::tests::sample;

    #[test]
    fn a_message_is_rfc_5424_with_escaped_structured_data_and_no_text_unless_asked() {
        let mut notice = sample();
        notice.alert.sender.handle = "eve\"]@chat.example".into();
        let now = notice.alert.first;
        let line = message("acme", &notice, now);
        assert!(line.starts_with("<107>1 2027-01-15T08:00:00.000Z imgate imgate - alert [imgate@32473 tenant=\"acme\""), "{line}");
        assert!(line.contains(r#"sender="eve\"\]@chat.example""#), "{line}");
        assert!(!line.contains("20% return"), "{line}");
        notice.alert.text = Some("promise you a 20% return".into());
        notice.status = Status::Resolved;
        let line = message("acme", &notice, now);
        assert!(line.starts_with("<109>1 "), "{line}");
        assert!(line.ends_with(": promise you a 20% return"), "{line}");
    }
}
