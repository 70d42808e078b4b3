//! The dataplane's side of the tunnel: it accepts connectors' QUIC connections and serves
//! each bidirectional stream as a session, through the same pipeline as a local listener's
//! connections ([`crate::proxy::session::serve`]); connections speaking the enrollment ALPN
//! are served by the tenant's [`Authority`].
//!
//! Invariants:
//! - a tunnel connection is served only when its certificate, verified against the tenant's
//!   tunnel CA, names a connector of this tenant that is not revoked; a stream's connector id
//!   is the certificate's, never the stream header's alone;
//! - a connector holds at most [`MAX_CONNECTIONS_PER_CONNECTOR`] connections;
//! - revoking a connector closes its open connections within [`REVOCATION_CHECK`];
//! - a connection is in the live map (and the connections gauge) from its admission until its
//!   serving task ends;
//! - refusals are logged with the reason on this side and sent to the connector in the
//!   connection's close;
//! - once draining, new streams are answered [`Status::Draining`] (the connector opens them
//!   elsewhere) while open sessions run on until they end or the drain deadline passes.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::enroll::Authority;
use super::header::{Reply, Status};
use super::trust::{ENROLL_ALPN, connector_of};
use crate::proxy::frontend::Frontend;
use crate::proxy::session::serve;
use crate::proxy::shared::Shared;

/// QUIC close code for a connector this dataplane does not serve.
pub const NOT_OURS: u32 = 1;
/// QUIC close code for a revoked connector.
pub const REVOKED: u32 = 2;
/// QUIC close code for a connector over its connection limit.
pub const TOO_MANY: u32 = 3;
/// QUIC close code of a dataplane that has drained and stops.
pub const DRAINED: u32 = 4;

/// Most connections one connector may hold open to one dataplane.
pub const MAX_CONNECTIONS_PER_CONNECTOR: usize = 8;

/// How often the revocation list is read again.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// A dataplane's tunnel: its sessions' shared state, its signing authority, and the
/// connections it serves.
pub struct Tunnel {
    shared: Arc<Shared>,
    authority: Authority,
    live: Mutex<HashMap<String, Vec<quinn::Connection>>>,
    draining: AtomicBool,
    sessions: AtomicUsize,
    ended: Notify,
}

impl Tunnel {
    /// The tunnel of the dataplane whose sessions share `shared`.
    pub fn new(shared: Arc<Shared>, authority: Authority) -> Self {
        Self {
            shared,
            authority,
            live: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            sessions: AtomicUsize::new(0),
            ended: Notify::new(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<quinn::Connection>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `connection` of connector `id`, unless it is over its limit.
    fn admit(&self, id: &str, connection: &quinn::Connection) -> bool {
        let mut live = self.live();
        let open = live.entry(id.to_owned()).or_default();
        let usable = open.iter().filter(|c| c.close_reason().is_none()).count();
        if usable >= MAX_CONNECTIONS_PER_CONNECTOR {
            return false;
        }
        open.push(connection.clone());
        self.shared.metrics.tunnel_connection(1);
        true
    }

    fn forget(&self, id: &str, connection: &quinn::Connection) {
        let mut live = self.live();
        if let Some(open) = live.get_mut(id) {
            let before = open.len();
            open.retain(|c| c.stable_id() != connection.stable_id());
            if open.len() < before {
                self.shared.metrics.tunnel_connection(-1);
            }
            if open.is_empty() {
                live.remove(id);
            }
        }
    }

    /// The connectors with a usable connection to this dataplane now, by id.
    pub fn connectors(&self) -> Vec<String> {
        let live = self.live();
        let mut ids: Vec<String> = live
            .iter()
            .filter(|(_, open)| open.iter().any(|c| c.close_reason().is_none()))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Closes the connections of connectors revoked since the last check.
    fn enforce_revocations(&self) {
        let revoked = match self.authority.state.revoked() {
            Ok(revoked) => revoked,
            Err(error) => {
                tracing::error!(target: "imgate::tunnel", "cannot read the revocation list: {error}");
                return;
            }
        };
        let live = self.live();
        let revoked = live.iter().filter(|(id, _)| revoked.contains(*id));
        for (id, connections) in revoked {
            for connection in connections.iter().filter(|c| c.close_reason().is_none()) {
                tracing::warn!(target: "imgate::tunnel", remote = %connection.remote_address(), connector = %id, "closing a revoked connector's connection");
                self.shared.metrics.tunnel_refused("revoked");
                connection.close(
                    REVOKED.into(),
                    format!("connector {id} is revoked").as_bytes(),
                );
            }
        }
    }
}

/// Serves connectors on `endpoint` until `shutdown` resolves, then drains: new streams are
/// sent elsewhere, and open sessions get until `drain` to end before the endpoint closes.
pub async fn run(
    tunnel: Arc<Tunnel>,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut connections = JoinSet::new();
    let mut revocations = tokio::time::interval(REVOCATION_CHECK);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    connections.spawn(connection(tunnel.clone(), incoming));
                }
                None => break,
            },
            _ = revocations.tick() => tunnel.enforce_revocations(),
            () = &mut shutdown => break,
        }
    }
    tunnel.draining.store(true, Ordering::SeqCst);
    let open = tunnel.sessions.load(Ordering::SeqCst);
    tracing::info!(target: "imgate::tunnel", "draining: {open} tunnel sessions open, new streams go to other dataplanes");
    let drained = tokio::time::timeout(drain, async {
        loop {
            let ended = tunnel.ended.notified();
            if tunnel.sessions.load(Ordering::SeqCst) == 0 {
                break;
            }
            ended.await;
        }
    })
    .await;
    if drained.is_err() {
        let open = tunnel.sessions.load(Ordering::SeqCst);
        tracing::warn!(target: "imgate::tunnel", "drain deadline passed with {open} tunnel sessions open; closing them");
    }
    endpoint.close(DRAINED.into(), b"the dataplane is shutting down");
    connections.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// The tenant and connector a connection's verified certificate names, if it gave one.
fn named_by(connection: &quinn::Connection) -> Option<(String, String)> {
    connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().and_then(connector_of))
}

fn refuse(
    tunnel: &Tunnel,
    connection: &quinn::Connection,
    remote: SocketAddr,
    code: u32,
    reason: &str,
) {
    tracing::warn!(target: "imgate::tunnel", %remote, "a connector was refused: {reason}");
    tunnel.shared.metrics.tunnel_refused(match code {
        REVOKED => "revoked",
        TOO_MANY => "too_many_connections",
        _ => "not_ours",
    });
    connection.close(code.into(), reason.as_bytes());
}

/// Serves one connection: enrollment, or a connector's sessions.
async fn connection(tunnel: Arc<Tunnel>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::warn!(target: "imgate::tunnel", %remote, "a connector was refused: {error}");
            tunnel.shared.metrics.tunnel_refused("handshake");
            return;
        }
    };
    let named = named_by(&connection);
    let ours = match &named {
        Some((tenant, id)) if *tenant == tunnel.shared.tenant => Some(id.clone()),
        _ => None,
    };
    let enrolling = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|protocol| protocol == ENROLL_ALPN);
    if enrolling && (named.is_none() || ours.is_some()) {
        tunnel
            .authority
            .serve(connection, remote, ours, &tunnel.shared.metrics)
            .await;
        return;
    }
    let Some(id) = ours else {
        let reason = match named {
            Some((tenant, id)) => format!("connector {id} belongs to tenant {tenant}"),
            None => "no connector certificate (enroll first: imgate connector enroll)".to_owned(),
        };
        refuse(&tunnel, &connection, remote, NOT_OURS, &reason);
        return;
    };
    match tunnel.authority.state.revoked() {
        Ok(revoked) if !revoked.contains(&id) => {}
        Ok(_) => {
            return refuse(
                &tunnel,
                &connection,
                remote,
                REVOKED,
                &format!("connector {id} is revoked"),
            );
        }
        Err(error) => return refuse(&tunnel, &connection, remote, REVOKED, &error.to_string()),
    }
    if !tunnel.admit(&id, &connection) {
        let reason = format!(
            "connector {id} already holds {MAX_CONNECTIONS_PER_CONNECTOR} connections to this dataplane"
        );
        return refuse(&tunnel, &connection, remote, TOO_MANY, &reason);
    }
    tracing::info!(target: "imgate::tunnel", %remote, connector = %id, "connector connected");
    let error = streams(&tunnel, &connection, remote, &id).await;
    tunnel.forget(&id, &connection);
    tracing::info!(target: "imgate::tunnel", %remote, connector = %id, "connector disconnected: {error}");
}

/// Serves a connector's streams until its connection ends; returns why it ended.
async fn streams(
    tunnel: &Arc<Tunnel>,
    connection: &quinn::Connection,
    remote: SocketAddr,
    id: &str,
) -> quinn::ConnectionError {
    loop {
        let (mut send, receive) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => return error,
        };
        if tunnel.draining.load(Ordering::SeqCst) {
            let reply = Reply {
                status: Status::Draining,
                reason: "this dataplane is shutting down".into(),
            };
            let _ = send.write_all(&reply.encode()).await;
            let _ = send.finish();
            continue;
        }
        let frontend = Frontend::Tunnel {
            connector: id.to_owned(),
        };
        let stream = tokio::io::join(receive, send);
        let shared = tunnel.shared.clone();
        let session = shared.next_session();
        tunnel.sessions.fetch_add(1, Ordering::SeqCst);
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            serve(shared, frontend, stream, remote, session).await;
            if tunnel.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
                tunnel.ended.notify_waiters();
            }
        });
    }
}
