//! QUIC endpoint configurations from the tunnel's TLS configurations ([`super::trust`]).
//!
//! Invariants: idle connections are closed after [`IDLE_TIMEOUT`] unless the connector's
//! keep-alives ([`KEEP_ALIVE`]) hold them open; a connection carries at most
//! [`MAX_STREAMS`] proxied sessions at once; a connection holds at most [`RECEIVE_WINDOW`]
//! bytes that have arrived and that its sessions have not read yet, whatever its peer sends
//! and however many streams it spreads them over (QUIC's connection-level flow control: the
//! peer may send more only as the sessions read); every tunnel socket asks the kernel for
//! [`SOCKET_BUFFER`] bytes of receive and send buffer, and says so when it gets less; no
//! datagram is larger than the endpoint's `max_datagram` ([`MAX_DATAGRAM`] unless a
//! connector is told less) nor than what its path has been found to carry.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::client::ClientConfig;
use rustls::server::ServerConfig;
use socket2::{Domain, Protocol, Socket, Type};

use super::trust::TrustError;

/// A connection with no traffic and no keep-alive for this long is closed: how long a
/// connector takes to notice that a dataplane has gone (and move to another).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How often each end proves an idle connection alive (a packet of a few dozen bytes).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Most proxied sessions (bidirectional streams) open at once on one connection.
pub const MAX_STREAMS: u32 = 4096;

/// Most bytes one connection accepts that its sessions have not read yet. Without it, a
/// connector (or a dataplane, seen from the connector) could make the other end buffer every
/// stream's own window (about 1.2 MB, QUIC's default here) in each of [`MAX_STREAMS`] streams:
/// gigabytes. Several times one stream's window, so that one busy session still runs at full
/// speed, and one stalled session (whose upstream does not read) leaves room for the others.
pub const RECEIVE_WINDOW: u32 = 8 << 20;

/// Receive and send buffer asked for each tunnel socket. A QUIC sender bursts many datagrams
/// at once; with the kernel's usual 208 KiB, a busy connection loses some of them at the
/// receiver and its congestion controller then holds it to half the rate it reaches without
/// losses. The kernel grants at most `net.core.rmem_max` (and `wmem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// The largest UDP payload a tunnel endpoint sends or accepts by default: a 9,000-byte
/// (jumbo) frame less the IPv6 and UDP headers. Each connection starts with QUIC's 1,200-byte
/// datagrams and probes for larger ones (RFC 9000 §14.3): over the internet it settles near
/// 1,452 bytes, on networks with jumbo frames and within one host it reaches this. Most of a
/// tunnel's cost is per datagram, so a path that carries larger ones carries more bytes for
/// the same CPU.
pub const MAX_DATAGRAM: u16 = 8952;

/// Opens a tunnel endpoint on a UDP socket bound to `address`, with [`SOCKET_BUFFER`]
/// bytes of socket buffer (logging what the kernel granted when that is less) that accepts
/// datagrams of up to `max_datagram` bytes (from 1,200 to 65,527); a dataplane's when
/// `server` is given, a connector's otherwise. An IPv6 wildcard address also accepts IPv4
/// where the system allows it.
pub fn bind(
    address: SocketAddr,
    server: Option<quinn::ServerConfig>,
    max_datagram: u16,
) -> io::Result<quinn::Endpoint> {
    let mut config = EndpointConfig::default();
    config.max_udp_payload_size(max_datagram).map_err(|_| {
        let range = "QUIC's range (1,200 to 65,527)";
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a tunnel datagram of at most {max_datagram} bytes is out of {range}"),
        )
    })?;
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() && address.ip().is_unspecified() {
        let _ = socket.set_only_v6(false);
    }
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    // Linux reports twice what it grants, the other half being its bookkeeping.
    let reported = socket.recv_buffer_size()?.min(socket.send_buffer_size()?);
    let granted = if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    };
    if granted < SOCKET_BUFFER {
        tracing::warn!(
            target: "imgate::tunnel",
            granted,
            wanted = SOCKET_BUFFER,
            "the tunnel's UDP socket buffers are smaller than wanted, which slows busy connections; raise the sysctls net.core.rmem_max and net.core.wmem_max to {SOCKET_BUFFER}"
        );
    }
    socket.bind(&address.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| io::Error::other("a tunnel endpoint needs a Tokio runtime"))?;
    quinn::Endpoint::new(config, server, socket.into(), runtime)
}

/// Transport settings of both ends; a connection probes for datagrams of up to
/// `max_datagram` bytes.
fn transport(max_datagram: u16) -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.receive_window(VarInt::from_u32(RECEIVE_WINDOW));
    transport.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    let mut discovery = MtuDiscoveryConfig::default();
    discovery.upper_bound(max_datagram);
    transport.mtu_discovery_config(Some(discovery));
    Arc::new(transport)
}

/// The dataplane's QUIC configuration: datagrams of up to [`MAX_DATAGRAM`] bytes where the
/// path carries them and the connector accepts them.
pub fn server(tls: ServerConfig) -> Result<quinn::ServerConfig, TrustError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TrustError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(MAX_DATAGRAM));
    Ok(config)
}

/// A connector's QUIC configuration: it sends datagrams of up to `max_datagram` bytes where
/// the path carries them (its endpoint, [`bind`] with the same figure, tells the dataplane
/// to send no larger ones).
pub fn client(tls: ClientConfig, max_datagram: u16) -> Result<quinn::ClientConfig, TrustError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TrustError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(max_datagram));
    Ok(config)
}

#[cfg(test)]
mod tests;
