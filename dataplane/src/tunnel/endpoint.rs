//! QUIC endpoint configurations from the tunnel's TLS configurations ([`super::trust`]).
//!
//! Invariants: idle connections are closed after [`IDLE_TIMEOUT`] unless the connector's
//! keep-alives ([`KEEP_ALIVE`]) hold them open; a connection carries at most
//! [`MAX_STREAMS`] proxied sessions at once.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::ClientConfig;
use rustls::server::ServerConfig;

use super::trust::TrustError;

/// A connection with no traffic and no keep-alive for this long is closed: how long a
/// connector takes to notice that a dataplane has gone (and move to another).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How often each end proves an idle connection alive (a packet of a few dozen bytes).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Most proxied sessions (bidirectional streams) open at once on one connection.
pub const MAX_STREAMS: u32 = 4096;

fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    Arc::new(transport)
}

/// The dataplane's QUIC configuration.
pub fn server(tls: ServerConfig) -> Result<quinn::ServerConfig, TrustError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TrustError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// A connector's QUIC configuration.
pub fn client(tls: ClientConfig) -> Result<quinn::ClientConfig, TrustError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TrustError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}
