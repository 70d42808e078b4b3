//! An XMPP client session up to the point where its stream is readable. Stream negotiation
//! is followed step by step: the headers and features are relayed (with stream management
//! removed from the features, so that dropping a stanza never desynchronises its counters),
//! and when the client asks for STARTTLS and policy says `intercept`, imgate connects to the
//! server over verified TLS first and only then completes TLS with the client using a leaf
//! minted from the tenant's CA; with `passthrough` the encrypted stream is relayed unread.
//! The readable stream is then inspected by [`super::xmpp_inspect`].
//!
//! Invariants: an upstream certificate that does not verify ends the session with a
//! STARTTLS `<failure/>` to the client and a record of why, before any client data flows;
//! oversized or malformed input ends the session with a stream error and a record.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::budget::Budget;
use super::lean_io::read_into;
use super::pieces::Plain;
use super::shared::{SessionInfo, Shared};
use super::tls::InterceptionCa;
use super::tls_stream::{self, ClientTls, ServerTls};
use super::unread_relay::relay_unread;
use crate::archive::record::Body;
use crate::inspect::xmpp::{Framer, Item, Stanza, stream_error};

/// What interception needs.
pub struct TlsContext {
    /// The tenant's interception CA.
    pub ca: Arc<InterceptionCa>,
    /// How upstream servers are verified.
    pub upstream: Arc<ClientConfig>,
}

/// A direction's read bytes and framer.
pub(super) struct Side {
    /// Bytes read; the first `done` are handled.
    pub(super) buffer: Vec<u8>,
    /// How many bytes at the front of `buffer` are handled.
    pub(super) done: usize,
    pub(super) framer: Framer,
    /// The session's client address, which its buffers are counted for.
    source: IpAddr,
    /// The dataplane's read-buffer budget, and what this buffer is counted for in it.
    counted: Option<(Arc<Budget>, usize)>,
}

impl Side {
    /// An empty side of a session from `source`.
    pub(super) fn of(source: IpAddr) -> Self {
        Self {
            buffer: Vec::new(),
            done: 0,
            framer: Framer::default(),
            source,
            counted: None,
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Some((budget, counted)) = self.counted.take() {
            budget.release(self.source, counted);
        }
    }
}

/// Drops the handled bytes and reads more; `false` when the peer closed or went quiet past
/// `idle`; an error when the buffer would take the read buffers over their `budget`.
pub(super) async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    side: &mut Side,
    idle: std::time::Duration,
    budget: &Arc<Budget>,
) -> std::io::Result<bool> {
    side.buffer.drain(..std::mem::take(&mut side.done));
    if side.buffer.is_empty() {
        // Handled whole: a session waiting to read holds no buffer, and is counted for none.
        side.buffer = Vec::new();
        if let Some((budget, counted)) = side.counted.as_mut() {
            // Counting down never fails.
            let _ = budget.count(side.source, counted, 0);
        }
    }
    let read = match tokio::time::timeout(idle, read_into(reader, &mut side.buffer)).await {
        Ok(Ok(0)) | Err(_) => false,
        Ok(Ok(_)) => true,
        Ok(Err(error)) => return Err(error),
    };
    let (budget, counted) = side.counted.get_or_insert_with(|| (budget.clone(), 0));
    budget
        .count(side.source, counted, side.buffer.capacity())
        .map_err(std::io::Error::other)?;
    Ok(read)
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
pub(super) fn broken(item: &Item<'_>) -> Option<(&'static str, &'static str)> {
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
        let item = side.framer.next(&side.buffer[side.done..]);
        if let Some((condition, reason)) = broken(&item) {
            return Ok(Next::Broken(condition, reason));
        }
        let (consumed, to) = match item {
            Item::Header { consumed, to } => (consumed, to),
            Item::Element { consumed, .. }
            | Item::Whitespace { consumed }
            | Item::Close { consumed } => (consumed, None),
            _ => {
                if !fill(reader, side, shared.limits.idle, &shared.buffers).await? {
                    return Ok(Next::End);
                }
                continue;
            }
        };
        let bytes = side.buffer[side.done..side.done + consumed].to_vec();
        side.done += consumed;
        return Ok(Next::Item(bytes, to));
    }
}

/// Archives why a stream was ended with a stream error.
pub(super) async fn record_stream_error(shared: &Shared, info: &SessionInfo, detail: String) {
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

/// Follows an XMPP client session until its stream is readable (or relayed unread), and
/// gives the stage that relays it from then on. The caller awaits the stage once this future
/// is dropped, so that an idle session holds only the stage, not what led to it.
pub async fn relaying<C, U>(
    shared: Arc<Shared>,
    client: C,
    upstream: U,
    info: SessionInfo,
    tls: Option<Arc<TlsContext>>,
    intercept: bool,
) -> std::io::Result<Stage>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each step is boxed and finishes before the next starts, so that the relaying stage is
    // made once the negotiation's and the handshakes' state is gone.
    let relaying: Stage = {
        let negotiated = Box::pin(negotiate(&shared, &info, client, upstream)).await?;
        match negotiated {
            Negotiated::Ended => return Ok(ended()),
            Negotiated::Plain {
                client,
                upstream,
                from_client,
                from_server,
            } => Box::pin(super::xmpp_inspect::inspect(
                shared,
                info,
                client,
                upstream,
                from_client,
                from_server,
            )),
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
                        return Ok(ended());
                    };
                    let source = info.client;
                    Box::pin(super::xmpp_inspect::inspect(
                        shared,
                        info,
                        client,
                        upstream,
                        Side::of(source),
                        Side::of(source),
                    ))
                }
                None => {
                    client.write_all(&proceed).await?;
                    tracing::info!(target: "imgate::session", session = %info.session, "TLS passed through unread");
                    Box::pin(relay_unread(
                        Plain(client),
                        Plain(upstream),
                        shared.limits.idle,
                    ))
                }
            },
        }
    };
    Ok(relaying)
}

/// A session's relaying stage, boxed.
pub type Stage = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// The stage of a session that has ended already (it allocates nothing).
pub fn ended() -> Stage {
    Box::pin(std::future::ready(Ok(())))
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
    let (mut from_client, mut from_server) = (Side::of(info.client), Side::of(info.client));
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
    let parsed = Stanza::parse(&features);
    let offered = parsed.as_ref().is_ok_and(|f| {
        String::from_utf8_lossy(&features).contains("urn:ietf:params:xml:ns:xmpp-tls")
            && f.name == "features"
    });
    // Without stream management: it does not cross imgate (see `inspect::xmpp::StreamManagement`).
    let forward = match &parsed {
        Ok(f) => f.forwardable(&features, None),
        Err(_) => features.as_slice().into(),
    };
    client.write_all(&forward).await?;
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
/// trusted roots; a refusal is logged and archived, and gives its reason.
pub(super) async fn connect_verified<U>(
    shared: &Shared,
    info: &SessionInfo,
    upstream: U,
    domain: &str,
    tls: &TlsContext,
) -> Result<ClientTls<U>, String>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let connected = match ServerName::try_from(domain.to_owned()) {
        Ok(name) => Box::pin(tls_stream::connect(
            tls.upstream.clone(),
            name,
            upstream,
            shared.limits.handshake,
        ))
        .await
        .map_err(|e| e.to_string()),
        Err(_) => Err("not a server name".to_owned()),
    };
    match connected {
        Ok(upstream) => Ok(upstream),
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
            Err(error)
        }
    }
}

/// The client's and the server's TLS streams of an intercepted session.
type Intercepted<C, U> = (ServerTls<C>, ClientTls<U>);

/// Completes STARTTLS on both sides: verified TLS to the server first, then TLS with the
/// client under a leaf for `domain` minted from the tenant's CA. `None` when the server's
/// certificate was refused: the client is told why in a `remote-connection-failed` stream
/// error (RFC 6120 4.9.3.14), and the session ends at once.
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
    let upstream = match connect_verified(shared, info, upstream, domain, tls).await {
        Ok(upstream) => upstream,
        Err(error) => {
            let reason = format!("imgate refused the certificate of {domain}: {error}");
            client
                .write_all(&stream_error("remote-connection-failed", &reason))
                .await?;
            client.shutdown().await?;
            return Ok(None);
        }
    };
    let config = tls
        .ca
        .server_config(domain)
        .map_err(std::io::Error::other)?;
    client.write_all(proceed).await?;
    let client = Box::pin(tls_stream::accept(config, client, shared.limits.handshake)).await?;
    tracing::info!(target: "imgate::session", session = %info.session, "TLS intercepted for {domain}");
    Ok(Some((client, upstream)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_buffer_handled_whole_is_freed_and_uncounted_while_the_next_read_waits() {
        let budget = Arc::new(Budget::new(1 << 20, 1 << 20));
        let idle = Duration::from_secs(3600);
        let (mut peer, mut reader) = tokio::io::duplex(1 << 20);
        let mut side = Side::of("10.0.0.1".parse().expect("ip"));
        peer.write_all(&vec![b'a'; 200 << 10]).await.expect("write");
        while side.buffer.len() < 200 << 10 {
            assert!(
                fill(&mut reader, &mut side, idle, &budget)
                    .await
                    .expect("read")
            );
        }
        assert!(budget.used() > 100 << 10, "a large stanza is counted");
        side.done = side.buffer.len();
        let mut read = Box::pin(fill(&mut reader, &mut side, idle, &budget));
        tokio::select! {
            biased;
            _ = &mut read => panic!("nothing was sent to read"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(budget.used(), 0, "an idle session is counted for nothing");
        peer.write_all(b"<r/>").await.expect("write");
        assert!((&mut read).await.expect("read"));
        drop(read);
        assert_eq!(side.buffer, b"<r/>");
    }
}
