//! XMPP over direct TLS (XEP-0368; clients use port 5223 or offer the ALPN protocol
//! `xmpp-client`): when policy says `tls: intercept`, imgate connects to the server over
//! verified TLS first, then completes TLS with the client using a leaf for the name the client
//! asked for (SNI), minted from the tenant's CA, and relays the decrypted stream through the
//! same inspected XMPP relay as STARTTLS sessions.
//!
//! Invariants: no client byte reaches the server before the server's certificate verified;
//! a refused certificate ends the session before the client's handshake completes, with a
//! record of why; a ClientHello without a server name is never intercepted (there is no name
//! to verify the server against).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::shared::{SessionInfo, Shared};
use super::xmpp_relay::{self, Stage, TlsContext, connect_verified, ended};
use crate::inspect::tls_hello::ClientHello;

/// The ALPN protocol of XMPP client streams over direct TLS (XEP-0368).
pub const ALPN: &str = "xmpp-client";
/// The port XMPP clients use for direct TLS.
pub const PORT: u16 = 5223;

/// The server name to intercept for, when `hello` (to `port`) opens XMPP over direct TLS.
pub fn xmpp_server_name(hello: &ClientHello, port: u16) -> Option<&str> {
    let xmpp = port == PORT || hello.alpn.iter().any(|p| p == ALPN);
    hello.sni.as_deref().filter(|_| xmpp)
}

/// Intercepts an XMPP session that starts with TLS for `domain`, and gives the stage that
/// inspects it (see [`xmpp_relay::relaying`]).
pub async fn relaying<C, U>(
    shared: Arc<Shared>,
    client: C,
    upstream: U,
    info: SessionInfo,
    domain: String,
    tls: Arc<TlsContext>,
) -> std::io::Result<Stage>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(upstream) = connect_verified(&shared, &info, upstream, &domain, &tls).await else {
        // Before its TLS handshake a client can only be told by the connection's end.
        return Ok(ended());
    };
    let config = tls
        .ca
        .server_config(&domain)
        .map_err(std::io::Error::other)?;
    let client = Box::pin(super::tls_stream::accept(
        config,
        client,
        shared.limits.handshake,
    ))
    .await?;
    tracing::info!(target: "imgate::session", session = %info.session, "direct TLS intercepted for {domain}");
    Box::pin(xmpp_relay::relaying(
        shared, client, upstream, info, None, false,
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: Option<&str>, alpn: &[&str]) -> ClientHello {
        ClientHello {
            sni: sni.map(str::to_owned),
            alpn: alpn.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn direct_tls_xmpp_is_known_by_port_or_alpn_and_needs_a_name() {
        assert_eq!(
            xmpp_server_name(&hello(Some("chat.example"), &[]), 5223),
            Some("chat.example")
        );
        assert_eq!(
            xmpp_server_name(&hello(Some("chat.example"), &["xmpp-client"]), 443),
            Some("chat.example")
        );
        assert_eq!(
            xmpp_server_name(&hello(Some("chat.example"), &["h2"]), 443),
            None
        );
        assert_eq!(xmpp_server_name(&hello(None, &["xmpp-client"]), 5223), None);
    }
}
