//! The inspected part of an XMPP session, once negotiation (and any TLS interception) is
//! done: each direction frames its stream into elements, has each one judged and recorded
//! ([`super::xmpp_judge`]), and forwards what policy lets through.
//!
//! Invariants:
//! - an element's effect reaches the other side only after its record is settled (written
//!   or fsynced, per `forward_after`); if the archive fails, nothing more is forwarded;
//! - elements are forwarded in the order they arrived;
//! - a batch is forwarded when the read buffer holds no complete element, or sooner once
//!   it has waited [`BATCH_WAIT`] or holds [`BATCH_BYTES`], so that a long run of small
//!   elements does not hold the first back until the last is judged;
//! - elements are parsed where they lie in the read buffer, which is compacted once per
//!   read, not once per element;
//! - when either direction ends cleanly, both ends are shut down (each intercepted TLS stream
//!   sends its close_notify); a read that fails, such as a TLS stream truncated without
//!   close_notify, ends the session with an error that names the side, which becomes the
//!   session's archived end reason, and the other end is closed without close_notify, so
//!   that it sees the truncation too.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgate_crds::policy::Direction;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::shared::{ClientWriter, SessionInfo, Shared, send, split_for_relay};
use super::xmpp_judge::judge;
use super::xmpp_relay::{Side, broken, fill, record_stream_error};
use crate::inspect::xmpp::{Framer, Item, Stanza, stream_error};

/// The longest a judged element waits for the rest of its read to be judged.
pub const BATCH_WAIT: Duration = Duration::from_micros(100);

/// The longest a session's end waits for each side to take its close_notify.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The most bytes a batch gathers before it is forwarded (one TLS record's worth).
pub const BATCH_BYTES: usize = 16 * 1024;

/// What a session's two directions share.
pub(super) struct State {
    /// The full JID the server bound, once bound.
    pub(super) jid: Option<String>,
    /// The server's domain.
    pub(super) domain: String,
    /// Conversations that have had the disclaimer.
    pub(super) disclaimed: HashSet<String>,
    /// The client starts a new stream (after SASL success).
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

/// Judged bytes not yet forwarded.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    started: Option<Instant>,
}

impl Batch {
    fn add(&mut self, bytes: &[u8]) {
        self.started.get_or_insert_with(Instant::now);
        self.bytes.extend_from_slice(bytes);
    }

    /// Whether the batch should go before the read buffer is finished.
    fn due(&self) -> bool {
        self.bytes.len() >= BATCH_BYTES || self.started.is_some_and(|s| s.elapsed() >= BATCH_WAIT)
    }

    /// Settles the batch's records and takes its bytes to forward; `None` when the archive
    /// failed: nothing may be forwarded and the direction stops.
    async fn take_settled(
        &mut self,
        shared: &Shared,
        direction: Direction,
        read_at: Instant,
    ) -> Option<Vec<u8>> {
        if let Err(error) = Box::pin(shared.settle()).await {
            tracing::error!(%error, "archive failed; not forwarding (fail closed)");
            return None;
        }
        self.started = None;
        shared.metrics.held(direction, read_at);
        Some(std::mem::take(&mut self.bytes))
    }
}

/// Relays an XMPP session whose stream is readable, inspecting both directions. The
/// streams are split before the returned future is made, so it holds only their halves.
pub(super) fn inspect<C, U>(
    shared: Arc<Shared>,
    info: SessionInfo,
    client: C,
    upstream: U,
    from_client: Side,
    from_server: Side,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static
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
    let flow = Flow {
        shared,
        info,
        state,
        client: client_write,
    };
    async move {
        let mut upstream_write = upstream_write;
        let result = {
            let outbound = flow.run(
                Direction::Outbound,
                client_read,
                Upstream(&mut upstream_write),
                from_client,
            );
            let inbound = flow.run(
                Direction::Inbound,
                upstream_read,
                flow.client.clone(),
                from_server,
            );
            tokio::select! {
                result = outbound => result,
                result = inbound => result,
            }
        };
        // A side that ended badly (a truncated TLS stream, say) must not look clean to the
        // other: its close_notify goes only with a clean end.
        if result.is_ok() {
            flow.close(&mut upstream_write).await;
        }
        result
    }
}

/// Where a direction forwards to.
trait Forward {
    async fn forward(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// The server side's writer.
struct Upstream<W>(W);

impl<W: AsyncWrite + Unpin> Forward for Upstream<W> {
    async fn forward(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        send(&mut self.0, bytes).await
    }
}

impl<C: AsyncWrite + Unpin> Forward for ClientWriter<C> {
    async fn forward(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        send(&mut *self.lock().await, bytes).await
    }
}

/// The bytes to forward for an element (none when it is dropped).
type Out<'a> = std::io::Result<Option<Cow<'a, [u8]>>>;

/// What becomes of an element.
enum Judged<'a> {
    /// Known at once.
    Now(Option<Cow<'a, [u8]>>),
    /// Known once policy has judged it.
    Later(std::pin::Pin<Box<dyn Future<Output = Out<'a>> + Send + 'a>>),
}

/// What both directions of a session share.
struct Flow<C> {
    shared: Arc<Shared>,
    info: SessionInfo,
    state: Arc<Mutex<State>>,
    /// The client's writer: inbound forwards to it, and both directions answer on it.
    client: ClientWriter<C>,
}

impl<C: AsyncWrite + Unpin + Send> Flow<C> {
    /// Relays one direction (`wire`) until either side ends it.
    async fn run<R: AsyncRead + Unpin>(
        &self,
        wire: Direction,
        mut reader: R,
        mut to: impl Forward,
        mut side: Side,
    ) -> std::io::Result<()> {
        let mut batch = Batch::default();
        let mut read_at = Instant::now();
        loop {
            if wire == Direction::Outbound && std::mem::take(&mut self.state().restart_client) {
                side.framer.restart();
            }
            let need_more = match side.framer.next(&side.buffer[side.done..]) {
                Item::NeedMore => true,
                // Boxed, like judging: a relay does not carry the state of its rare paths.
                item @ (Item::TooLarge | Item::Malformed { .. }) => {
                    return Box::pin(self.end_broken(wire, &item)).await;
                }
                Item::Element { bytes, consumed } => {
                    let out = match self.judging(wire, bytes, &mut side.framer) {
                        Judged::Now(out) => out,
                        Judged::Later(judging) => judging.await?,
                    };
                    if let Some(out) = out {
                        batch.add(&out);
                    }
                    side.done += consumed;
                    false
                }
                Item::Header { consumed, .. }
                | Item::Whitespace { consumed }
                | Item::Close { consumed } => {
                    batch.add(&side.buffer[side.done..side.done + consumed]);
                    side.done += consumed;
                    false
                }
            };
            // An empty batch has nothing to settle or forward (and takes no writer's lock).
            if !batch.bytes.is_empty() && (need_more || batch.due()) {
                let settled = batch.take_settled(&self.shared, wire, read_at).await;
                let Some(bytes) = settled else {
                    return Ok(());
                };
                to.forward(&bytes).await?;
            }
            if need_more {
                let (idle, budget) = (self.shared.limits.idle, &self.shared.buffers);
                let filled = fill(&mut reader, &mut side, idle, budget).await;
                let more = filled.map_err(|error| {
                    let from = match wire {
                        Direction::Outbound => "the client",
                        Direction::Inbound => "the server",
                    };
                    std::io::Error::new(error.kind(), format!("{from}: {error}"))
                })?;
                if !more {
                    return Ok(());
                }
                read_at = Instant::now();
            }
        }
    }

    /// Tells both ends that the session is over: where TLS is intercepted, each gets a
    /// close_notify. A peer that does not take it is given [`CLOSE_WAIT`].
    async fn close<W: AsyncWrite + Unpin>(&self, upstream: &mut W) {
        let client = async {
            let _ = self.client.lock().await.shutdown().await;
        };
        let server = async {
            let _ = upstream.shutdown().await;
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, async { tokio::join!(client, server) }).await;
    }

    /// What becomes of one element: known at once, or once policy has judged it. Judging is
    /// boxed, and the element parsed outside the relay's frame, so that an idle relay carries
    /// neither.
    fn judging<'a>(&'a self, wire: Direction, bytes: &'a [u8], framer: &mut Framer) -> Judged<'a> {
        match Stanza::parse(bytes) {
            Ok(stanza) if wire == Direction::Inbound && stanza.name == "features" => {
                // Without stream management: see `inspect::xmpp::StreamManagement`.
                Judged::Now(Some(stanza.forwardable(bytes, None)))
            }
            Ok(stanza) => {
                if wire == Direction::Inbound {
                    self.follow_server(&stanza, bytes, framer);
                }
                let (shared, info, state) = (&self.shared, &self.info, &self.state);
                Judged::Later(Box::pin(judge(
                    shared,
                    info,
                    state,
                    wire,
                    stanza,
                    bytes,
                    &self.client,
                )))
            }
            // What cannot be read cannot be judged: it does not go on.
            Err(error) => {
                tracing::warn!(target: "imgate::session", session = %self.info.session, "an element that cannot be read is dropped: {error}");
                Judged::Now(None)
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the server's side of the negotiation that continues over the readable
    /// stream: SASL success restarts both streams, and a resource binding names the user.
    fn follow_server(&self, stanza: &Stanza, bytes: &[u8], framer: &mut Framer) {
        if stanza.sasl && stanza.name == "success" {
            self.state().restart_client = true;
            framer.restart();
        }
        if stanza.name == "iq"
            && let Some(jid) = bound_jid(bytes)
        {
            self.state().jid = Some(bare(&jid));
        }
    }

    /// Ends a direction whose stream cannot be read: a record of why, and a stream error to
    /// the client.
    async fn end_broken(&self, wire: Direction, item: &Item<'_>) -> std::io::Result<()> {
        let (condition, reason) = broken(item).unwrap_or(("not-well-formed", "malformed XML"));
        let (detail, condition, reason) = match wire {
            Direction::Outbound => (
                format!("client sent {reason}; session ended with <{condition}/>"),
                condition,
                reason,
            ),
            Direction::Inbound => (
                "the server sent an oversized or malformed element; session ended".into(),
                "undefined-condition",
                "the server's stream could not be read",
            ),
        };
        record_stream_error(&self.shared, &self.info, detail).await;
        send(
            &mut *self.client.lock().await,
            &stream_error(condition, reason),
        )
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_due_once_full_or_once_its_first_element_has_waited() {
        let mut batch = Batch::default();
        assert!(!batch.due(), "an empty batch has nothing to forward");
        std::thread::sleep(BATCH_WAIT * 2);
        assert!(!batch.due(), "waiting starts with the first element");

        batch.add(b"<message/>");
        std::thread::sleep(BATCH_WAIT * 2);
        assert!(batch.due(), "the first element has waited long enough");

        let mut full = Batch::default();
        full.add(&vec![b' '; BATCH_BYTES]);
        assert!(full.due(), "a full batch goes at once");
    }
}
