//! The dataplane's side of the tunnel: it accepts connectors' QUIC connections and serves
//! each bidirectional stream as a session, through the same pipeline as a local listener's
//! connections ([`crate::proxy::session::serve`]); connections speaking the enrollment ALPN
//! are served by the tenant's [`Authority`].
//!
//! Invariants:
//! - a tunnel connection is served only when its certificate, verified against the tenant's
//!   tunnel CA, names a connector of this tenant that is not revoked; a stream's connector id
//!   is the certificate's, never the stream header's alone;
//! - a connection whose certificate a newer one of its connector replaced more than the
//!   renewal grace ago is refused, and an open one closed within [`REVOCATION_CHECK`]
//!   ([`super::generations`]);
//! - a connector holds at most [`MAX_CONNECTIONS_PER_CONNECTOR`] connections; a connection
//!   from another address than its connector's open ones is counted and logged, as its key
//!   may be in two hands;
//! - an enrollment connection (no certificate needed) ends within [`ENROLL_DEADLINE`], and one
//!   source holds at most [`MAX_ENROLLING_PER_SOURCE`] of them at once;
//! - revoking a connector closes its open connections within [`REVOCATION_CHECK`];
//! - a connection is in the live map (and the connections gauge) from its admission until its
//!   serving task ends;
//! - refusals are logged with the reason on this side and sent to the connector in the
//!   connection's close;
//! - once draining, new streams are answered [`Status::Draining`] (the connector opens them
//!   elsewhere) while open sessions run on until they end or the drain deadline passes.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::enroll::{Authority, Presented};
use super::header::{Reply, Status};
use super::tokens::unix_now;
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
/// QUIC close code for a certificate a newer one of its connector replaced.
pub const SUPERSEDED: u32 = 5;
/// QUIC close code for an enrollment that took too long.
pub const TOO_SLOW: u32 = 6;
/// QUIC close code for a connector the dataplane cannot check now (its revocation list or its
/// record of current certificates cannot be read): the connector tries again later.
pub const UNAVAILABLE: u32 = 7;

/// The longest an enrollment or renewal connection is served.
pub const ENROLL_DEADLINE: Duration = Duration::from_secs(30);

/// Most enrollment or renewal connections one source address holds at once.
pub const MAX_ENROLLING_PER_SOURCE: usize = 4;

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
    /// Enrollment connections being served, by source address.
    enrolling: Mutex<HashMap<IpAddr, usize>>,
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
            enrolling: Mutex::new(HashMap::new()),
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
        let usable: Vec<&quinn::Connection> =
            open.iter().filter(|c| c.close_reason().is_none()).collect();
        if usable.len() >= MAX_CONNECTIONS_PER_CONNECTOR {
            return false;
        }
        let here = connection.remote_address().ip();
        if let Some(elsewhere) = usable.iter().find(|c| c.remote_address().ip() != here) {
            tracing::warn!(target: "imgate::tunnel", connector = %id, remote = %here, also = %elsewhere.remote_address(), "connector {id} is connected from two addresses: if it is not one connector moving between networks, its key may be in two hands (revoke it: imgate tunnel revoke)");
            self.shared.metrics.tunnel_two_places();
        }
        open.push(connection.clone());
        self.shared.metrics.tunnel_connection(1);
        true
    }

    /// Takes an enrollment slot for `source`, unless it holds all of its own.
    fn enrolling(self: &Arc<Self>, source: IpAddr) -> Option<EnrollSlot> {
        let mut enrolling = self.enrolling.lock().unwrap_or_else(|p| p.into_inner());
        let count = enrolling.entry(source).or_default();
        if *count >= MAX_ENROLLING_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(EnrollSlot {
            tunnel: self.clone(),
            source,
        })
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

    /// Closes the connections of connectors revoked since the last check, and those whose
    /// certificate a newer one replaced more than the renewal grace ago.
    fn enforce_revocations(&self) {
        let revoked = match self.authority.state.revoked() {
            Ok(revoked) => revoked,
            Err(error) => {
                tracing::error!(target: "imgate::tunnel", "cannot read the revocation list: {error}");
                return;
            }
        };
        let generations = match self.authority.state.generations().snapshot() {
            Ok(generations) => generations,
            Err(error) => {
                tracing::error!(target: "imgate::tunnel", "cannot read the connectors' certificates: {error}");
                return;
            }
        };
        let (now, grace) = (unix_now(), self.authority.renewal_grace);
        let live = self.live();
        for (id, connections) in live.iter() {
            for connection in connections.iter().filter(|c| c.close_reason().is_none()) {
                let remote = connection.remote_address();
                if revoked.contains(id) {
                    tracing::warn!(target: "imgate::tunnel", %remote, connector = %id, "closing a revoked connector's connection");
                    self.shared.metrics.tunnel_refused("revoked");
                    connection.close(
                        REVOKED.into(),
                        format!("connector {id} is revoked").as_bytes(),
                    );
                    continue;
                }
                let superseded = named_by(connection)
                    .and_then(|(_, _, cert)| generations.check(id, &cert, now, grace).err());
                if let Some(superseded) = superseded {
                    tracing::warn!(target: "imgate::tunnel", %remote, connector = %id, "closing a connection whose certificate was replaced: {superseded}");
                    self.shared.metrics.tunnel_refused("superseded");
                    connection.close(SUPERSEDED.into(), superseded.to_string().as_bytes());
                }
            }
        }
    }
}

/// An enrollment connection's place in its source's count, given back when dropped.
struct EnrollSlot {
    tunnel: Arc<Tunnel>,
    source: IpAddr,
}

impl Drop for EnrollSlot {
    fn drop(&mut self) {
        let mut enrolling = self
            .tunnel
            .enrolling
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = enrolling.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                enrolling.remove(&self.source);
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

/// The tenant and connector a connection's verified certificate names, and the certificate,
/// if it gave one.
fn named_by(connection: &quinn::Connection) -> Option<(String, String, CertificateDer<'static>)> {
    let chain = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let cert = chain.first()?;
    let (tenant, id) = connector_of(cert)?;
    Some((tenant, id, cert.clone()))
}

/// Why connector `id` presenting `cert` may not connect now, if it may not: it is revoked,
/// its certificate was replaced, or either record cannot be read.
fn standing(
    tunnel: &Tunnel,
    id: &str,
    cert: &rustls_pki_types::CertificateDer<'_>,
) -> Option<(u32, String)> {
    let state = &tunnel.authority.state;
    match state.revoked() {
        Ok(revoked) if revoked.contains(id) => {
            return Some((REVOKED, format!("connector {id} is revoked")));
        }
        Ok(_) => {}
        Err(error) => return Some((UNAVAILABLE, error.to_string())),
    }
    match state
        .generations()
        .check(id, cert, unix_now(), tunnel.authority.renewal_grace)
    {
        Ok(Ok(())) => None,
        Ok(Err(superseded)) => Some((SUPERSEDED, superseded.to_string())),
        Err(error) => Some((UNAVAILABLE, error.to_string())),
    }
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
        SUPERSEDED => "superseded",
        TOO_SLOW => "enrollment_too_slow",
        UNAVAILABLE => "unavailable",
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
        Some((tenant, id, cert)) if *tenant == tunnel.shared.tenant => Some(Presented {
            id: id.clone(),
            cert: cert.clone(),
        }),
        _ => None,
    };
    let enrolling = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|protocol| protocol == ENROLL_ALPN);
    if enrolling && (named.is_none() || ours.is_some()) {
        let Some(_slot) = tunnel.enrolling(remote.ip()) else {
            let reason = format!(
                "{MAX_ENROLLING_PER_SOURCE} enrollments are already under way from this address"
            );
            return refuse(&tunnel, &connection, remote, TOO_MANY, &reason);
        };
        let served =
            tunnel
                .authority
                .serve(connection.clone(), remote, ours, &tunnel.shared.metrics);
        if tokio::time::timeout(ENROLL_DEADLINE, served).await.is_err() {
            let reason = format!(
                "the enrollment did not finish within {} s",
                ENROLL_DEADLINE.as_secs()
            );
            refuse(&tunnel, &connection, remote, TOO_SLOW, &reason);
        }
        return;
    }
    let Some(Presented { id, cert }) = ours else {
        let reason = match named {
            Some((tenant, id, _)) => format!("connector {id} belongs to tenant {tenant}"),
            None => "no connector certificate (enroll first: imgate connector enroll)".to_owned(),
        };
        refuse(&tunnel, &connection, remote, NOT_OURS, &reason);
        return;
    };
    if let Some((code, reason)) = standing(&tunnel, &id, &cert) {
        return refuse(&tunnel, &connection, remote, code, &reason);
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
        // Counted before the drain is checked, so that a drain that finds no session open
        // never misses one that started as it began.
        tunnel.sessions.fetch_add(1, Ordering::SeqCst);
        let open = OpenSession(tunnel.clone());
        if tunnel.draining.load(Ordering::SeqCst) {
            refuse_stream(
                &mut send,
                Status::Draining,
                "this dataplane is shutting down",
            )
            .await;
            continue;
        }
        let slot = match tunnel.shared.admission.admit_carried() {
            Ok(slot) => slot,
            Err(full) => {
                tunnel.shared.metrics.connection_refused(full.label());
                let reason = "this dataplane holds its most connections (--max-connections)";
                refuse_stream(&mut send, Status::Busy, reason).await;
                continue;
            }
        };
        let frontend = Frontend::Tunnel {
            connector: id.to_owned(),
        };
        let stream = tokio::io::join(receive, send);
        let shared = tunnel.shared.clone();
        let session = shared.next_session();
        tokio::spawn(serve(
            shared,
            frontend,
            stream,
            remote,
            session,
            (slot, open),
        ));
    }
}

/// Answers a stream that is not served with why, and ends it.
async fn refuse_stream(send: &mut quinn::SendStream, status: Status, reason: &str) {
    let reply = Reply {
        status,
        reason: reason.into(),
    };
    let _ = send.write_all(&reply.encode()).await;
    let _ = send.finish();
}

/// A tunnel session counted open until it is dropped, when the session ends.
struct OpenSession(Arc<Tunnel>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        if self.0.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}
