//! An inspected XMPP client session. Stream negotiation is followed step by step: the
//! headers and features are relayed (with stream management removed from the features, so
//! that dropping a stanza never desynchronises its counters), and when the client asks for
//! STARTTLS and policy says `intercept`, imgate connects to the server over verified TLS
//! first and only then completes TLS with the client using a leaf minted from the tenant's
//! CA; with `passthrough` the encrypted stream is relayed unread. Over the readable stream,
//! messages and file offers go through policy and into the archive before their effect
//! reaches the other side (forwarded, body rewritten, or bounced to the sender as a
//! `<policy-violation/>` error); SASL is passed through. A carbon copy is judged as the
//! message it copies and archived only if that message is not already archived
//! ([`super::copies`]); the user's room joins and leaves are archived
//! ([`super::xmpp_rooms`]).
//!
//! Invariants: an upstream certificate that does not verify ends the session with a
//! STARTTLS `<failure/>` to the client and a record of why, before any client data flows;
//! oversized or malformed input ends the session with a stream error and a record; the
//! disclaimer is sent once per conversation per session.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use imgate_crds::policy::{Direction, Protocol};
use rustls::client::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::copies::MessageCopy;
use super::lean_io::{read_into, relay_unread};
use super::shared::{ClientWriter, SessionInfo, Shared, now_ms, split_for_relay};
use super::tls::InterceptionCa;
use crate::archive::record::{Body, Kind, Participant, RecordedVerdict};
use crate::inspect::event::{Content, ConversationKind, Event, FileOffer};
use crate::inspect::policy::{Action, Verdict};
use crate::inspect::xmpp::{Carbon, Forwarded, Framer, Item, Stanza, policy_error, stream_error};

/// What interception needs.
pub struct TlsContext {
    /// The tenant's interception CA.
    pub ca: Arc<InterceptionCa>,
    /// How upstream servers are verified.
    pub upstream: Arc<ClientConfig>,
}

/// A direction's unread bytes and framer.
#[derive(Default)]
struct Side {
    buffer: Vec<u8>,
    framer: Framer,
}

async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    side: &mut Side,
    shared: &Shared,
) -> std::io::Result<bool> {
    match tokio::time::timeout(shared.limits.idle, read_into(reader, &mut side.buffer)).await {
        Ok(Ok(0)) | Err(_) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(error)) => Err(error),
    }
}

/// What a negotiation read produced.
enum Next {
    /// An item's bytes (and a header's `to`).
    Item(Vec<u8>, Option<String>),
    /// The peer closed, or went quiet past the idle limit.
    End,
    /// The stream cannot be read: the stream-error condition and why.
    Broken(&'static str, &'static str),
}

/// The stream-error condition and reason for an unreadable item.
fn broken(item: &Item<'_>) -> Option<(&'static str, &'static str)> {
    match item {
        Item::TooLarge => Some(("policy-violation", "stanza too large")),
        Item::Malformed { .. } => Some(("not-well-formed", "malformed XML")),
        _ => None,
    }
}

/// The next item's bytes, consumed.
async fn next_item<R: AsyncRead + Unpin>(
    reader: &mut R,
    side: &mut Side,
    shared: &Shared,
) -> std::io::Result<Next> {
    loop {
        let item = side.framer.next(&side.buffer);
        if let Some((condition, reason)) = broken(&item) {
            return Ok(Next::Broken(condition, reason));
        }
        let (consumed, to) = match item {
            Item::Header { consumed, to } => (consumed, to),
            Item::Element { consumed, .. }
            | Item::Whitespace { consumed }
            | Item::Close { consumed } => (consumed, None),
            _ => {
                if !fill(reader, side, shared).await? {
                    return Ok(Next::End);
                }
                continue;
            }
        };
        let bytes: Vec<u8> = side.buffer.drain(..consumed).collect();
        return Ok(Next::Item(bytes, to));
    }
}

/// Archives why a stream was ended with a stream error.
async fn record_stream_error(shared: &Shared, info: &SessionInfo, detail: String) {
    let body = Body::System {
        event: "xmpp-stream-error".into(),
        detail,
    };
    if let Err(error) = shared.archive(&info.session, body).await {
        tracing::error!(%error, "the stream error could not be archived");
    }
}

/// Reads the client's next negotiation item; an unreadable one ends the stream with a stream
/// error and a record. `opened` says whether the client already has a stream header from us.
async fn client_item<C: AsyncWrite + AsyncRead + Unpin>(
    client: &mut C,
    side: &mut Side,
    shared: &Shared,
    info: &SessionInfo,
    opened: bool,
) -> std::io::Result<Option<(Vec<u8>, Option<String>)>> {
    match next_item(client, side, shared).await? {
        Next::Item(bytes, to) => Ok(Some((bytes, to))),
        Next::End => Ok(None),
        Next::Broken(condition, reason) => {
            record_stream_error(
                shared,
                info,
                format!("client sent {reason}; session ended with <{condition}/>"),
            )
            .await;
            if !opened {
                client.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").await?;
            }
            client.write_all(&stream_error(condition, reason)).await?;
            Ok(None)
        }
    }
}

/// Reads the server's next negotiation item; an unreadable one ends the session with a record.
async fn server_item<U: AsyncRead + Unpin>(
    upstream: &mut U,
    side: &mut Side,
    shared: &Shared,
    info: &SessionInfo,
) -> std::io::Result<Option<(Vec<u8>, Option<String>)>> {
    match next_item(upstream, side, shared).await? {
        Next::Item(bytes, to) => Ok(Some((bytes, to))),
        Next::End => Ok(None),
        Next::Broken(_, reason) => {
            record_stream_error(
                shared,
                info,
                format!("the server sent {reason}; session ended"),
            )
            .await;
            Ok(None)
        }
    }
}

/// Removes stream-management offers from a features element.
fn strip_stream_management(features: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(features);
    let mut out = text.into_owned();
    for version in ["2", "3"] {
        for quote in ['\'', '"'] {
            out = out.replace(
                &format!("<sm xmlns={quote}urn:xmpp:sm:{version}{quote}/>"),
                "",
            );
            let open = format!("<sm xmlns={quote}urn:xmpp:sm:{version}{quote}>");
            while let Some(start) = out.find(&open) {
                let Some(end) = out[start..].find("</sm>") else {
                    break;
                };
                out.replace_range(start..start + end + 5, "");
            }
        }
    }
    out.into_bytes()
}

/// Relays an XMPP client session.
pub async fn relay<C, U>(
    shared: Arc<Shared>,
    client: C,
    upstream: U,
    info: SessionInfo,
    tls: Option<Arc<TlsContext>>,
    intercept: bool,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each stage is boxed and finishes before the next starts, so an idle session holds only
    // the stage it is in, not the negotiation's or the handshakes' state.
    let negotiated = Box::pin(negotiate(&shared, &info, client, upstream)).await?;
    match negotiated {
        Negotiated::Ended => Ok(()),
        Negotiated::Plain {
            client,
            upstream,
            from_client,
            from_server,
        } => {
            Box::pin(inspect(
                shared,
                info,
                client,
                upstream,
                from_client,
                from_server,
            ))
            .await
        }
        Negotiated::StartTls {
            mut client,
            upstream,
            domain,
            proceed,
        } => match tls.filter(|_| intercept) {
            Some(tls) => {
                let streams = Box::pin(intercept_tls(
                    &shared, &info, client, upstream, &domain, &proceed, &tls,
                ))
                .await?;
                let Some((client, upstream)) = streams else {
                    return Ok(());
                };
                Box::pin(inspect(
                    shared,
                    info,
                    client,
                    upstream,
                    Side::default(),
                    Side::default(),
                ))
                .await
            }
            None => {
                client.write_all(&proceed).await?;
                tracing::info!(target: "imgate::session", session = %info.session, "TLS passed through unread");
                Box::pin(relay_unread(client, upstream, shared.limits.idle)).await
            }
        },
    }
}

/// Where stream negotiation left a session.
enum Negotiated<C, U> {
    /// A side closed or sent something unreadable (already answered and recorded).
    Ended,
    /// The stream goes on unencrypted (the server did not offer STARTTLS, or refused it).
    Plain {
        client: C,
        upstream: U,
        from_client: Side,
        from_server: Side,
    },
    /// The server said `<proceed/>` to the client's STARTTLS for `domain`; the client has
    /// not been told yet.
    StartTls {
        client: C,
        upstream: U,
        domain: String,
        proceed: Vec<u8>,
    },
}

/// Relays the stream headers and features, and a STARTTLS request and its answer.
async fn negotiate<C, U>(
    shared: &Shared,
    info: &SessionInfo,
    mut client: C,
    mut upstream: U,
) -> std::io::Result<Negotiated<C, U>>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_client, mut from_server) = (Side::default(), Side::default());
    let Some((header, to)) =
        client_item(&mut client, &mut from_client, shared, info, false).await?
    else {
        return Ok(Negotiated::Ended);
    };
    let domain = to.unwrap_or_else(|| info.server.split(':').next().unwrap_or_default().to_owned());
    upstream.write_all(&header).await?;
    let Some((server_header, _)) =
        server_item(&mut upstream, &mut from_server, shared, info).await?
    else {
        return Ok(Negotiated::Ended);
    };
    client.write_all(&server_header).await?;
    let Some((features, _)) = server_item(&mut upstream, &mut from_server, shared, info).await?
    else {
        return Ok(Negotiated::Ended);
    };
    let offered = Stanza::parse(&features)
        .map(|f| {
            String::from_utf8_lossy(&features).contains("urn:ietf:params:xml:ns:xmpp-tls")
                && f.name == "features"
        })
        .unwrap_or(false);
    client
        .write_all(&strip_stream_management(&features))
        .await?;
    if offered {
        let Some((request, _)) =
            client_item(&mut client, &mut from_client, shared, info, true).await?
        else {
            return Ok(Negotiated::Ended);
        };
        let starttls = Stanza::parse(&request).is_ok_and(|s| s.starttls);
        upstream.write_all(&request).await?;
        if starttls {
            let Some((answer, _)) =
                server_item(&mut upstream, &mut from_server, shared, info).await?
            else {
                return Ok(Negotiated::Ended);
            };
            if Stanza::parse(&answer).is_ok_and(|s| s.starttls) {
                return Ok(Negotiated::StartTls {
                    client,
                    upstream,
                    domain,
                    proceed: answer,
                });
            }
            client.write_all(&answer).await?;
        }
    }
    Ok(Negotiated::Plain {
        client,
        upstream,
        from_client,
        from_server,
    })
}

/// Connects to the server over TLS, verifying its certificate for `domain` against the
/// trusted roots; a refusal is logged and archived, and gives `None`.
pub(super) async fn connect_verified<U>(
    shared: &Shared,
    info: &SessionInfo,
    upstream: U,
    domain: &str,
    tls: &TlsContext,
) -> Option<tokio_rustls::client::TlsStream<U>>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let connected = match ServerName::try_from(domain.to_owned()) {
        Ok(name) => Box::pin(TlsConnector::from(tls.upstream.clone()).connect(name, upstream))
            .await
            .map_err(|e| e.to_string()),
        Err(_) => Err("not a server name".to_owned()),
    };
    match connected {
        Ok(upstream) => Some(upstream),
        Err(error) => {
            tracing::warn!(target: "imgate::session", session = %info.session, "the server's certificate for {domain} was refused: {error}");
            let _ = shared
                .archive(
                    &info.session,
                    Body::System {
                        event: "tls-upstream-refused".into(),
                        detail: format!("{domain}: {error}"),
                    },
                )
                .await;
            None
        }
    }
}

/// The client's and the server's TLS streams of an intercepted session.
type Intercepted<C, U> = (
    tokio_rustls::server::TlsStream<C>,
    tokio_rustls::client::TlsStream<U>,
);

/// Completes STARTTLS on both sides: verified TLS to the server first, then TLS with the
/// client under a leaf for `domain` minted from the tenant's CA. `None` when the server's
/// certificate was refused (the client is told with a STARTTLS `<failure/>`).
async fn intercept_tls<C, U>(
    shared: &Shared,
    info: &SessionInfo,
    mut client: C,
    upstream: U,
    domain: &str,
    proceed: &[u8],
    tls: &TlsContext,
) -> std::io::Result<Option<Intercepted<C, U>>>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Some(upstream) = connect_verified(shared, info, upstream, domain, tls).await else {
        client
            .write_all(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>")
            .await?;
        return Ok(None);
    };
    let config = tls
        .ca
        .server_config(domain)
        .map_err(std::io::Error::other)?;
    client.write_all(proceed).await?;
    let client = Box::pin(TlsAcceptor::from(config).accept(client)).await?;
    tracing::info!(target: "imgate::session", session = %info.session, "TLS intercepted for {domain}");
    Ok(Some((client, upstream)))
}

/// What a session's two directions share.
pub(super) struct State {
    jid: Option<String>,
    domain: String,
    disclaimed: HashSet<String>,
    restart_client: bool,
    /// Rooms joined (bare, lower case).
    pub(super) rooms: HashSet<String>,
}

impl State {
    /// The user's bare address, once bound.
    pub(super) fn me(&self) -> String {
        self.jid
            .clone()
            .unwrap_or_else(|| format!("unknown@{}", self.domain))
    }
}

async fn inspect<C, U>(
    shared: Arc<Shared>,
    info: SessionInfo,
    client: C,
    upstream: U,
    from_client: Side,
    from_server: Side,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client_read, client_write, upstream_read, upstream_write) =
        split_for_relay(client, upstream);
    let domain = info.server.split(':').next().unwrap_or_default().to_owned();
    let state = Arc::new(Mutex::new(State {
        jid: None,
        domain,
        disclaimed: HashSet::new(),
        restart_client: false,
        rooms: HashSet::new(),
    }));
    let outbound = outbound(
        shared.clone(),
        info.clone(),
        state.clone(),
        client_read,
        upstream_write,
        client_write.clone(),
        from_client,
    );
    let inbound = inbound(
        shared,
        info,
        state,
        upstream_read,
        client_write,
        from_server,
    );
    tokio::select! {
        result = outbound => result,
        result = inbound => result,
    }
}

async fn outbound<R, W, C>(
    shared: Arc<Shared>,
    info: SessionInfo,
    state: Arc<Mutex<State>>,
    mut reader: R,
    mut upstream: W,
    client: ClientWriter<C>,
    mut side: Side,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    C: AsyncWrite + Unpin,
{
    // Complete elements are judged and recorded as they are framed; the batch is forwarded
    // once its records are durable (one fsync for everything in flight).
    let mut batch = Vec::new();
    let mut read_at = Instant::now();
    loop {
        if std::mem::take(
            &mut state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restart_client,
        ) {
            side.framer.restart();
        }
        match side.framer.next(&side.buffer) {
            Item::NeedMore => {
                if !batch.is_empty() {
                    if let Err(error) = shared.settle().await {
                        tracing::error!(%error, "archive failed; not forwarding (fail closed)");
                        return Ok(());
                    }
                    upstream.write_all(&std::mem::take(&mut batch)).await?;
                    shared.metrics.held(Direction::Outbound, read_at);
                }
                if !fill(&mut reader, &mut side, &shared).await? {
                    return Ok(());
                }
                read_at = Instant::now();
            }
            item @ (Item::TooLarge | Item::Malformed { .. }) => {
                let (condition, reason) =
                    broken(&item).unwrap_or(("not-well-formed", "malformed XML"));
                record_stream_error(
                    &shared,
                    &info,
                    format!("client sent {reason}; session ended with <{condition}/>"),
                )
                .await;
                client
                    .lock()
                    .await
                    .write_all(&stream_error(condition, reason))
                    .await?;
                return Ok(());
            }
            Item::Element { bytes, consumed } => {
                let bytes = bytes.to_vec();
                side.buffer.drain(..consumed);
                // Judging is boxed: an idle relay then does not carry its state.
                if let Some(out) = Box::pin(judge(
                    &shared,
                    &info,
                    &state,
                    Direction::Outbound,
                    &bytes,
                    &client,
                ))
                .await?
                {
                    batch.extend_from_slice(&out);
                }
            }
            Item::Header { consumed, .. }
            | Item::Whitespace { consumed }
            | Item::Close { consumed } => {
                batch.extend(side.buffer.drain(..consumed));
            }
        }
    }
}

async fn inbound<R, C>(
    shared: Arc<Shared>,
    info: SessionInfo,
    state: Arc<Mutex<State>>,
    mut reader: R,
    client: ClientWriter<C>,
    mut side: Side,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    C: AsyncWrite + Unpin,
{
    let mut batch = Vec::new();
    let mut read_at = Instant::now();
    loop {
        match side.framer.next(&side.buffer) {
            Item::NeedMore => {
                if !batch.is_empty() {
                    if let Err(error) = shared.settle().await {
                        tracing::error!(%error, "archive failed; not forwarding (fail closed)");
                        return Ok(());
                    }
                    client
                        .lock()
                        .await
                        .write_all(&std::mem::take(&mut batch))
                        .await?;
                    shared.metrics.held(Direction::Inbound, read_at);
                }
                if !fill(&mut reader, &mut side, &shared).await? {
                    return Ok(());
                }
                read_at = Instant::now();
            }
            Item::TooLarge | Item::Malformed { .. } => {
                record_stream_error(
                    &shared,
                    &info,
                    "the server sent an oversized or malformed element; session ended".into(),
                )
                .await;
                client
                    .lock()
                    .await
                    .write_all(&stream_error(
                        "undefined-condition",
                        "the server's stream could not be read",
                    ))
                    .await?;
                return Ok(());
            }
            Item::Element { bytes, consumed } => {
                let bytes = bytes.to_vec();
                side.buffer.drain(..consumed);
                let stanza = Stanza::parse(&bytes).ok();
                if let Some(stanza) = &stanza {
                    if stanza.sasl && stanza.name == "success" {
                        // Both sides start new streams after SASL success.
                        state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .restart_client = true;
                        side.framer.restart();
                    }
                    if stanza.name == "iq"
                        && let Some(jid) = bound_jid(&bytes)
                    {
                        state.lock().unwrap_or_else(|p| p.into_inner()).jid = Some(bare(&jid));
                    }
                }
                let out = if stanza.as_ref().is_some_and(|s| s.name == "features") {
                    Some(strip_stream_management(&bytes))
                } else {
                    Box::pin(judge(
                        &shared,
                        &info,
                        &state,
                        Direction::Inbound,
                        &bytes,
                        &client,
                    ))
                    .await?
                };
                if let Some(out) = out {
                    batch.extend_from_slice(&out);
                }
            }
            Item::Header { consumed, .. }
            | Item::Whitespace { consumed }
            | Item::Close { consumed } => {
                batch.extend(side.buffer.drain(..consumed));
            }
        }
    }
}

/// The full JID the server bound for this session, from a resource-binding result.
fn bound_jid(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    if !text.contains("urn:ietf:params:xml:ns:xmpp-bind") {
        return None;
    }
    let start = text.find("<jid>")? + 5;
    let end = text[start..].find("</jid>")? + start;
    Some(text[start..end].to_owned())
}

/// A JID without its resource, in lower case.
pub(super) fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_lowercase()
}

/// Applies policy to one element; returns the bytes to pass on, if any.
async fn judge<C: AsyncWrite + Unpin>(
    shared: &Shared,
    info: &SessionInfo,
    state: &Mutex<State>,
    wire: Direction,
    bytes: &[u8],
    client: &ClientWriter<C>,
) -> std::io::Result<Option<Vec<u8>>> {
    let Ok(stanza) = Stanza::parse(bytes) else {
        return Ok(Some(bytes.to_vec()));
    };
    if stanza.name == "presence" && wire == Direction::Outbound {
        let forward = super::xmpp_rooms::presence(shared, info, state, &stanza).await;
        return Ok(forward.then(|| bytes.to_vec()));
    }
    if stanza.sasl || stanza.starttls || (stanza.body.is_none() && stanza.file.is_none()) {
        return Ok(Some(bytes.to_vec()));
    }
    let (me, domain) = {
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        (state.me(), state.domain.clone())
    };
    // A carbon is judged as the message it copies: sent by the user, or to them.
    let (direction, address) = match (stanza.carbon, &stanza.forwarded) {
        (Some(Carbon::Sent), Some(inner)) => (Direction::Outbound, inner.clone()),
        (Some(Carbon::Received), Some(inner)) => (Direction::Inbound, inner.clone()),
        _ => (
            wire,
            Forwarded {
                from: stanza.from.clone(),
                to: stanza.to.clone(),
                kind: stanza.kind.clone(),
                id: stanza.id.clone(),
            },
        ),
    };
    let group = address.kind.as_deref() == Some("groupchat");
    let (sender, peer) = match direction {
        Direction::Outbound => (
            me.clone(),
            address
                .to
                .as_deref()
                .map(bare)
                .unwrap_or_else(|| domain.clone()),
        ),
        Direction::Inbound => (
            address
                .from
                .as_deref()
                .map(|f| if group { f.to_owned() } else { bare(f) })
                .unwrap_or_else(|| domain.clone()),
            me.clone(),
        ),
    };
    let room = group.then(|| {
        bare(if direction == Direction::Outbound {
            address.to.as_deref().unwrap_or_default()
        } else {
            address.from.as_deref().unwrap_or_default()
        })
    });
    let conv = match &room {
        Some(room) => format!("xmpp:{room}"),
        None => {
            let mut pair = [bare(&sender), peer.clone()];
            pair.sort();
            format!("xmpp:{}", pair.join("/"))
        }
    };
    let named = (direction == Direction::Outbound)
        .then(|| info.user.clone())
        .flatten();
    let party = shared
        .party(info, Some(Protocol::Xmpp), sender.clone(), named)
        .await;
    let recipients = if room.is_some() {
        Vec::new()
    } else {
        vec![peer.clone()]
    };
    let content = match (&stanza.body, &stanza.file) {
        (Some(text), _) => Content::Message { text: text.clone() },
        (None, Some(file)) => Content::File(FileOffer {
            name: file
                .name
                .clone()
                .unwrap_or_else(|| format!("({} transfer)", file.mechanism)),
            size: file.size,
            sha256: None,
        }),
        (None, None) => return Ok(Some(bytes.to_vec())),
    };
    let event = Event {
        tenant: shared.tenant.clone(),
        protocol: Protocol::Xmpp,
        service: None,
        direction,
        sender: party.clone(),
        recipients: recipients.clone(),
        conversation: if room.is_some() {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        },
        room: room.clone(),
        content: content.clone(),
        urls: stanza.urls.clone(),
        at_ms: now_ms(),
    };
    let verdict = shared.evaluate(&event);
    let from = Participant::from(&party);
    let (body, text) = match &content {
        Content::Message { text } => {
            let delivered = verdict.delivered(text).into_owned();
            let record = Body::Message {
                session: info.session.clone(),
                dir: direction,
                protocol: Protocol::Xmpp,
                from,
                to: recipients,
                room: room.clone(),
                kind: if room.is_some() {
                    Kind::Group
                } else {
                    Kind::Direct
                },
                text: text.clone(),
                delivered: (delivered != *text).then_some(delivered),
                verdict: RecordedVerdict::from(&verdict),
            };
            (record, text.clone())
        }
        Content::File(file) => {
            let record = Body::FileOffer {
                session: info.session.clone(),
                dir: direction,
                protocol: Protocol::Xmpp,
                from,
                to: recipients,
                name: file.name.clone(),
                size: file.size,
                sha256: None,
                verdict: RecordedVerdict::from(&verdict),
            };
            (record, format!("offers {}", file.name))
        }
        _ => return Ok(Some(bytes.to_vec())),
    };
    // A carbon of a message already archived (or the direct copy of one archived from its
    // carbon) is judged but not archived again.
    let sender_bare = bare(&sender);
    let copy = match (&room, &stanza.body, &address.id) {
        (None, Some(text), Some(id)) => Some(MessageCopy {
            from: &sender_bare,
            to: &peer,
            id,
            text,
        }),
        _ => None,
    };
    let first = shared.copies.first(copy, stanza.carbon.is_some());
    let action = if first {
        shared.archive_verdict(&conv, body, &verdict)
    } else {
        verdict.action
    };
    tracing::info!(
        target: "imgate::message",
        session = %info.session,
        "{} {sender} in {conv}: {text:?} -> {}{}{}",
        if direction == Direction::Outbound { "out" } else { "in " },
        action.as_str(),
        verdict.rules_note(),
        if first { "" } else { " (a copy, already archived)" }
    );
    match action {
        Action::Allow | Action::Redact => {
            let mut out = Vec::new();
            if wire == Direction::Outbound
                && let (Some(disclaimer), Some(to)) = (&verdict.disclaimer, &stanza.to)
                && state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .disclaimed
                    .insert(conv.clone())
            {
                let kind = stanza.kind.as_deref().unwrap_or("chat");
                // Known to the copies, so that its carbon is not taken for a message.
                let id = format!("{}-disclaimer", info.session);
                shared.copies.first(
                    Some(MessageCopy {
                        from: &me,
                        to: &peer,
                        id: &id,
                        text: &disclaimer.text,
                    }),
                    false,
                );
                out.extend_from_slice(
                    format!(
                        "<message to='{}' type='{}' id='{}'><body>{}</body></message>",
                        quick_xml::escape::escape(to.as_str()),
                        quick_xml::escape::escape(kind),
                        quick_xml::escape::escape(&id),
                        quick_xml::escape::escape(&*disclaimer.text)
                    )
                    .as_bytes(),
                );
            }
            match (&stanza.body, action) {
                (Some(text), Action::Redact) => {
                    out.extend_from_slice(&stanza.with_body(bytes, &verdict.delivered(text)))
                }
                _ => out.extend_from_slice(bytes),
            }
            Ok(Some(out))
        }
        Action::Block | Action::Quarantine => {
            if wire == Direction::Outbound {
                client
                    .lock()
                    .await
                    .write_all(&policy_error(&stanza, &notice(&verdict)))
                    .await?;
            }
            Ok(None)
        }
    }
}

fn notice(verdict: &Verdict) -> String {
    verdict.notices.first().cloned().unwrap_or_else(|| {
        let rules: Vec<&str> = verdict.rule_names().collect();
        format!("Blocked by policy ({})", rules.join(", "))
    })
}
