//! One client connection from accept to close: the front-end handshake, the upstream
//! connection, protocol identification, the session-level policy decision, and then the
//! protocol's relay (inspected for IRC and XMPP; relayed unread, with its metadata archived,
//! for everything else).
//!
//! Invariants: every session that reaches identification gets a `session_start` record and a
//! `session_end` record; a session refused by policy is closed before any byte reaches the
//! server; each session runs in its own task, so one misbehaving peer affects no other.

use std::net::SocketAddr;
use std::sync::Arc;

use imgate_crds::policy::{Direction, Protocol, TlsMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;
use tracing::field::Empty;

use super::destination::Destinations;
use super::destination::{DialError, Network, Rule, dial};
use super::frontend::{Frontend, HandshakeError, Refusal, Target};
use super::peek::{Prefixed, identify};
use super::pieces::IntoPieces;
use super::shared::SessionInfo;
use super::shared::{Shared, now_ms};
use super::xmpp_relay;
use super::{irc_relay, xmpp_direct_tls};
use crate::TRACE_TARGET;
use crate::archive::record::Body;
use crate::inspect::detect::Detected;
use crate::inspect::event::{Content, ConversationKind, Event};
use crate::inspect::policy::Action;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client's handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The client did not finish its handshake in time.
    #[error("the client did not complete its handshake in time")]
    HandshakeTimeout,
    /// The upstream could not be reached.
    #[error("cannot reach {server}: {reason}")]
    Upstream {
        /// `host:port`.
        server: String,
        /// Why.
        reason: String,
    },
    /// A connection failed mid-session.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one accepted connection (a TCP connection, or a tunnel stream); errors are logged,
/// never propagated. `_hold` (the connection's admission slot, ...) is dropped when the session
/// ends.
pub async fn serve<S: Client, H: Send + 'static>(
    shared: Arc<Shared>,
    frontend: Frontend,
    mut client: S,
    peer: SocketAddr,
    id: u64,
    _hold: H,
) {
    let _open = shared.metrics.session_open();
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "session",
        imgate.session = %shared.session_name(id),
        imgate.tenant = %shared.tenant,
        imgate.frontend = frontend.kind(),
        imgate.connector = Empty,
        client.address = %peer,
        server.address = Empty,
        imgate.protocol = Empty,
        imgate.action = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    // The front end's handshake runs before the session's span is first entered, so that the
    // span a connector names in a tunnel stream's header can still become its parent. In a
    // block of its own, so that its state is not kept beside the session's.
    let target = {
        let handshake = tokio::time::timeout(
            shared.limits.handshake,
            Box::pin(frontend.accept(&mut client)),
        )
        .await;
        match handshake {
            Ok(Ok(target)) => Box::new(target),
            Ok(Err(error)) => return failed(&span, &shared, id, peer, &error.into()),
            Err(_) => return failed(&span, &shared, id, peer, &SessionError::HandshakeTimeout),
        }
    };
    if let Some(parent) = target.trace {
        crate::tunnel::trace_context::adopt(&span, parent);
    }
    // Pinned in place and awaited through a reference, so that the span is read back from the
    // instrumented future rather than kept twice in every idle session.
    let mut session = std::pin::pin!(
        serve_session(&shared, &frontend, client, target, peer, id).instrument(span)
    );
    if let Err(error) = session.as_mut().await {
        failed(session.span(), &shared, id, peer, &error);
    }
}

/// Marks the session's span as failed and logs why the session ended.
fn failed(span: &tracing::Span, shared: &Shared, id: u64, peer: SocketAddr, error: &SessionError) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(error));
    tracing::info!(target: "imgate::session", parent: span, session = %shared.session_name(id), %peer, "session ended: {error}");
}

/// Every IPv4 and IPv6 address: where an operator's fixed port-forward may go.
static ANYWHERE: std::sync::LazyLock<Destinations> = std::sync::LazyLock::new(|| {
    Destinations::new(vec![
        Rule::Network(Network::everywhere(false)),
        Rule::Network(Network::everywhere(true)),
    ])
});

/// Archives a session refused before dialling because its destination is not allowed
/// (`why`): a start and an end record, so that reports show who tried to reach what.
async fn archive_refused(
    shared: &Shared,
    target: &Target,
    server: &str,
    peer: SocketAddr,
    id: u64,
    why: &str,
) {
    let session = shared.session_name(id);
    let start = Body::SessionStart {
        session: session.clone(),
        connector: target.connector.clone(),
        client: peer.to_string(),
        server: server.to_owned(),
        protocol: Protocol::Unknown,
        handle: target.user.clone(),
        tls: None,
    };
    let end = Body::SessionEnd {
        session: session.clone(),
        reason: format!("destination refused: {why}"),
    };
    for body in [start, end] {
        if let Err(error) = shared.archive(&session, body).await {
            tracing::error!(%error, "cannot archive a refused destination");
        }
    }
    tracing::warn!(target: "imgate::session", %session, %peer, server, "destination refused: {why}");
}

/// How an admitted session is relayed.
enum Route {
    /// XMPP over direct TLS, intercepted for this server name.
    DirectXmpp(String, Arc<xmpp_relay::TlsContext>),
    /// IRC, inspected.
    Irc,
    /// XMPP, inspected (STARTTLS intercepted when `true`).
    Xmpp(bool),
    /// Anything else, relayed unread.
    Unread,
}

/// What a session's client side can be: a TCP connection or a tunnel stream.
pub trait Client: AsyncRead + AsyncWrite + IntoPieces + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + IntoPieces + Unpin + Send + 'static> Client for S {}

/// A session that policy let through: its two connections, who it is, and how to relay it.
struct Admitted<S> {
    client: Prefixed<S>,
    upstream: Prefixed<TcpStream>,
    info: SessionInfo,
    route: Route,
}

async fn serve_session<S: Client>(
    shared: &Arc<Shared>,
    frontend: &Frontend,
    client: S,
    target: Box<Target>,
    peer: SocketAddr,
    id: u64,
) -> Result<(), SessionError> {
    // Admission and the relay are separate boxed stages: what admission needed is freed before
    // the relay starts, so an idle session holds only its relay. The session's span goes to
    // admission by value, so that this frame keeps no copy of it.
    let Some(Admitted {
        client,
        upstream,
        info,
        route,
    }) = Box::pin(admit(
        shared,
        frontend,
        client,
        target,
        peer,
        id,
        tracing::Span::current(),
    ))
    .instrument(tracing::info_span!(target: TRACE_TARGET, "admit"))
    .await?
    else {
        return Ok(());
    };
    let outcome = match route {
        Route::DirectXmpp(domain, context) => {
            let relaying = Box::pin(xmpp_direct_tls::relaying(
                shared.clone(),
                client,
                upstream,
                info,
                domain,
                context,
            ))
            .await;
            run_stage(relaying).await
        }
        Route::Irc => Box::pin(irc_relay::relay(shared.clone(), client, upstream, info)).await,
        Route::Xmpp(intercept) => {
            let relaying = Box::pin(xmpp_relay::relaying(
                shared.clone(),
                client,
                upstream,
                info,
                shared.tls.clone(),
                intercept,
            ))
            .await;
            run_stage(relaying).await
        }
        Route::Unread => {
            Box::pin(super::unread_relay::relay_unread(
                client,
                upstream,
                shared.limits.idle,
            ))
            .await
        }
    };
    let reason = match &outcome {
        Ok(()) => "closed".to_owned(),
        Err(error) => error.to_string(),
    };
    // Named again rather than kept: an idle session carries no copy of its name here.
    let session = shared.session_name(id);
    // Boxed: the session's task does not carry this last step's state while it relays.
    let end = Body::SessionEnd {
        session: session.clone(),
        reason,
    };
    let _ = Box::pin(shared.archive(&session, end)).await;
    tracing::info!(target: "imgate::session", %session, "ended");
    outcome.map_err(Into::into)
}

/// Relays with the stage that preparing the relay gave, once that preparation is dropped.
async fn run_stage(relaying: std::io::Result<xmpp_relay::Stage>) -> std::io::Result<()> {
    relaying?.await
}

/// The upstream connection, identification and the session-level verdict for the `target`
/// the front end's handshake gave; `None` when policy refused the session (which is then
/// archived as ended).
async fn admit<S: Client>(
    shared: &Arc<Shared>,
    frontend: &Frontend,
    mut client: S,
    target: Box<Target>,
    peer: SocketAddr,
    id: u64,
    span: tracing::Span,
) -> Result<Option<Admitted<S>>, SessionError> {
    let server = format!("{}:{}", target.host, target.port);
    // Through a connector, the client is the one the connector saw.
    let peer = target.client.unwrap_or(peer);
    span.record("server.address", server.as_str());
    span.record("client.address", tracing::field::display(peer));
    if let Some(connector) = &target.connector {
        span.record("imgate.connector", connector.as_str());
    }
    // A fixed port-forward's destination is the operator's; any other is the client's
    // choice, and policy.
    let destinations = match frontend {
        Frontend::Forward { .. } => &*ANYWHERE,
        _ => &shared.destinations,
    };
    let connected = dial(
        &target.host,
        target.port,
        destinations,
        shared.limits.connect,
    )
    .await;
    let mut upstream = match connected {
        Ok(upstream) => {
            // Messages are small and forwarded as soon as they are judged: no Nagle delay.
            let _ = upstream.set_nodelay(true);
            upstream
        }
        Err(error) => {
            // Archived before the client is answered, so that a client that goes away at
            // once leaves the record all the same.
            if let DialError::Refused(why) = &error {
                Box::pin(archive_refused(shared, &target, &server, peer, id, why)).await;
            }
            frontend.refuse(&mut client, Refusal::Unreachable).await?;
            return Err(SessionError::Upstream {
                server,
                reason: error.to_string(),
            });
        }
    };
    frontend.succeed(&mut client).await?;
    // Both sides' first bytes: an IRC server speaks first, and a client that waits must not
    // turn into traffic nobody reads.
    let peeked = Box::pin(identify(
        &mut client,
        &mut upstream,
        target.port,
        shared.limits.handshake,
    ))
    .await?;
    let session = shared.session_name(id);
    let (service, sni) = match &peeked.detected {
        Detected::Tls(hello) => (
            hello
                .sni
                .as_deref()
                .and_then(|s| shared.services.classify(s))
                .map(str::to_owned),
            hello.sni.clone(),
        ),
        _ => (None, None),
    };
    let protocol = peeked.detected.protocol();
    shared.metrics.session(protocol.as_str());
    // The user a SOCKS5 or HTTP client names is a claim nobody checked (the password is not
    // verified): it selects no policy and names no person. It is archived as claimed, in the
    // session's start record; the session is judged as its client address.
    let handle = peer.ip().to_string();
    let info = SessionInfo::new(session.clone(), server.clone(), peer.ip());
    let sender = shared.party(&info, None, handle.clone()).await;
    let event = Event {
        tenant: shared.tenant.clone(),
        protocol,
        service: service.clone(),
        direction: Direction::Outbound,
        sender,
        recipients: Vec::new(),
        room: None,
        conversation: ConversationKind::Direct,
        content: Content::Session,
        urls: Vec::new(),
        at_ms: now_ms(),
    };
    let verdict = shared.evaluate(&event);
    // XMPP over direct TLS is intercepted like STARTTLS when policy says so.
    let direct_xmpp = match (&peeked.detected, verdict.tls, &shared.tls) {
        (Detected::Tls(hello), Some(TlsMode::Intercept), Some(context)) => {
            xmpp_direct_tls::xmpp_server_name(hello, target.port)
                .map(|name| (name.to_owned(), context.clone()))
        }
        _ => None,
    };
    let tls = match (&peeked.detected, verdict.tls) {
        (Detected::Tls(_), _) if direct_xmpp.is_some() => Some("intercept".to_owned()),
        (Detected::Tls(_), Some(TlsMode::Intercept | TlsMode::Passthrough) | None) => {
            Some("passthrough".to_owned())
        }
        _ => None,
    };
    let start = Body::SessionStart {
        session: session.clone(),
        connector: target.connector.clone(),
        client: peer.to_string(),
        server: server.clone(),
        protocol,
        handle: target.user.clone(),
        tls,
    };
    let mut action = shared.archive_verdict(&session, start, &verdict);
    if let Err(error) = shared.settle().await {
        tracing::error!(%error, "archive failed; refusing the session (fail closed)");
        action = Action::Block;
    }
    let what = match (&service, &sni) {
        (Some(service), _) => format!("{} ({service})", protocol.as_str()),
        (None, Some(sni)) => format!("{} ({sni})", protocol.as_str()),
        _ => protocol.as_str().to_owned(),
    };
    span.record("imgate.protocol", protocol.as_str());
    span.record("imgate.action", action.as_str());
    tracing::info!(target: "imgate::session", %session, "{peer} -> {server}: {what}, {}{}", action.as_str(), verdict.rules_note());
    if matches!(action, Action::Block | Action::Quarantine)
        || verdict.tls == Some(TlsMode::Block) && matches!(peeked.detected, Detected::Tls(_))
    {
        let _ = shared
            .archive(
                &session,
                Body::SessionEnd {
                    session: session.clone(),
                    reason: format!(
                        "refused by policy ({})",
                        verdict.rule_names().collect::<Vec<_>>().join(", ")
                    ),
                },
            )
            .await;
        return Ok(None);
    }
    let route = if let Some((domain, context)) = direct_xmpp {
        Route::DirectXmpp(domain, context)
    } else if protocol == Protocol::Irc {
        Route::Irc
    } else if protocol == Protocol::Xmpp {
        Route::Xmpp(verdict.tls == Some(TlsMode::Intercept))
    } else {
        Route::Unread
    };
    Ok(Some(Admitted {
        client: Prefixed::new(peeked.prefix, client),
        upstream: Prefixed::new(peeked.server_prefix, upstream),
        info,
        route,
    }))
}
