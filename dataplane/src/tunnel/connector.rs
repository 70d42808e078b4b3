//! The connector's side of the tunnel: each TCP connection a local front end accepts is
//! carried as one bidirectional stream to the tenant's dataplane, which answers with a
//! [`Reply`] that the connector turns into the front end's own answer to its client.
//!
//! The connector keeps several connections ("slots"), each from a UDP socket of its own (so
//! a load balancer in front of the dataplanes can spread them) and each preferring a
//! dataplane no other slot uses. A slot that loses a connection it held for a while dials the
//! next dataplane at once; one that cannot connect, or whose connections end soon after they
//! start, backs off exponentially with jitter. A dataplane that
//! answers [`Status::Draining`] gets no new streams; its slot dials another dataplane, and the
//! stream is opened on another connection.
//!
//! Invariants: a client gets its front end's success answer only after a dataplane said
//! `Connected`, so no client byte is sent before the session is admitted, and a stream
//! retried elsewhere has carried none; the stream header carries the client's address and
//! the SOCKS user as the connector saw them; an idle carried session holds no copy buffer
//! ([`relay_unread`]); when no dataplane can be reached within
//! [`WAIT_FOR_CONNECTION`] the client is told so (unreachable), never left waiting; a local
//! client whose front-end handshake takes longer than [`HANDSHAKE_LIMIT`] is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::Instrument;
use tracing::field::Empty;

use super::connector_metrics::ConnectorMetrics;
use super::header::{Decoded, Reply, Status, StreamHeader};
use super::target::Target;
use crate::TRACE_TARGET;
use crate::proxy::frontend::{Frontend, HandshakeError, Refusal};
use crate::proxy::unread_relay::relay_unread;

/// How long a new client waits for a usable connection to a dataplane.
pub const WAIT_FOR_CONNECTION: Duration = Duration::from_secs(5);

/// The longest a local client's front-end handshake (SOCKS5, HTTP CONNECT) may take.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// How long a carried session may be quiet both ways; the dataplane's own idle limit is
/// shorter and ends it first.
const SESSION_IDLE: Duration = Duration::from_secs(86_400);

/// The longest pause between attempts to reach a dataplane.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The first pause after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A connection that ends sooner than this counts as a failed attempt: with TLS 1.3 a
/// dataplane refuses a client certificate only after the connector's handshake completed.
const STABLE: Duration = Duration::from_secs(10);

/// Why a connection could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The client's handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// No dataplane could be reached.
    #[error("no dataplane could be reached within {WAIT_FOR_CONNECTION:?}")]
    Unreachable,
    /// The client's handshake did not finish in time.
    #[error("the client's handshake did not finish within {HANDSHAKE_LIMIT:?}")]
    HandshakeTimedOut,
    /// The dataplane refused the connection.
    #[error("the dataplane refused the connection ({status:?}): {reason}")]
    Refused {
        /// Its answer.
        status: Status,
        /// Why.
        reason: String,
    },
    /// The tunnel stream broke.
    #[error("tunnel stream: {0}")]
    Stream(String),
    /// Copying between the client and the tunnel failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn stream_error(error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Stream(error.to_string())
}

/// The pause before attempt `failures + 1`: doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], scaled by a random factor in [0.5, 1.5) so that connectors cut off
/// together do not return together.
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.min(16));
    doubled
        .min(MAX_BACKOFF)
        .mul_f64(rand::random_range(0.5..1.5))
}

/// A slot's current connection.
#[derive(Clone)]
struct Live {
    connection: quinn::Connection,
    /// The target it was dialled as (its index in the connector's list).
    target: usize,
    dataplane: SocketAddr,
    draining: Arc<AtomicBool>,
    drain: Arc<Notify>,
}

impl Live {
    fn usable(&self) -> bool {
        self.connection.close_reason().is_none() && !self.draining.load(Ordering::SeqCst)
    }

    fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            self.drain.notify_one();
        }
    }
}

struct Slot {
    endpoint: quinn::Endpoint,
    current: Mutex<Option<Live>>,
}

impl Slot {
    fn current(&self) -> Option<Live> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, live: Option<Live>) {
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = live;
    }
}

/// A connector: its id and its connections to the tenant's dataplanes.
pub struct Connector {
    id: String,
    config: Mutex<quinn::ClientConfig>,
    dataplanes: Vec<Target>,
    slots: Vec<Slot>,
    next: AtomicUsize,
    changed: Notify,
    /// Its metrics.
    pub metrics: ConnectorMetrics,
}

impl Connector {
    /// A connector `id` keeping one connection per endpoint to `dataplanes`, with `config`
    /// (its identity). Nothing is dialled until [`Connector::maintain`] runs.
    pub fn new(
        id: &str,
        endpoints: Vec<quinn::Endpoint>,
        config: quinn::ClientConfig,
        dataplanes: Vec<Target>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            config: Mutex::new(config),
            dataplanes,
            slots: endpoints
                .into_iter()
                .map(|endpoint| Slot {
                    endpoint,
                    current: Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            changed: Notify::new(),
            metrics: ConnectorMetrics::default(),
        }
    }

    /// Uses `config` (a renewed identity) for every connection made from now on.
    pub fn set_client_config(&self, config: quinn::ClientConfig) {
        *self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }

    fn client_config(&self) -> quinn::ClientConfig {
        self.config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The connections usable now.
    fn usable(&self) -> impl Iterator<Item = Live> + '_ {
        self.slots
            .iter()
            .filter_map(Slot::current)
            .filter(Live::usable)
    }

    /// The dataplanes the connector is connected to now, one entry per usable connection.
    pub fn connected(&self) -> Vec<SocketAddr> {
        self.usable().map(|live| live.dataplane).collect()
    }

    /// The largest datagram each usable connection sends now (what discovery found its path
    /// carries), the smallest across them; `None` while none is usable.
    pub fn datagram(&self) -> Option<u16> {
        self.usable()
            .map(|live| live.connection.stats().path.current_mtu)
            .min()
    }

    /// Keeps every slot connected, for as long as it runs.
    pub async fn maintain(self: Arc<Self>) {
        let mut slots = tokio::task::JoinSet::new();
        for index in 0..self.slots.len() {
            slots.spawn(self.clone().keep(index));
        }
        while slots.join_next().await.is_some() {}
    }

    /// The target a slot dials on attempt `choice` (its index): the first from there on that
    /// no other slot is connected to, else the one at `choice`.
    fn pick(&self, index: usize, choice: usize) -> usize {
        let taken: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .filter_map(|(_, slot)| slot.current().filter(Live::usable))
            .map(|live| live.target)
            .collect();
        let count = self.dataplanes.len();
        (0..count)
            .map(|k| (choice + k) % count)
            .find(|target| !taken.contains(target))
            .unwrap_or(choice % count)
    }

    /// Dials `target` from `slot`; attempt `choice` uses the target's addresses in turn.
    async fn dial(
        &self,
        slot: &Slot,
        target: &Target,
        choice: usize,
    ) -> Result<(SocketAddr, quinn::Connection), String> {
        let addresses = target.resolve().await.map_err(|e| e.to_string())?;
        let address = addresses[choice % addresses.len()];
        let connecting = slot
            .endpoint
            .connect_with(self.client_config(), address, &target.server_name)
            .map_err(|e| e.to_string())?;
        let connection = connecting.await.map_err(|e| e.to_string())?;
        Ok((address, connection))
    }

    /// Keeps slot `index` connected.
    async fn keep(self: Arc<Self>, index: usize) {
        if self.dataplanes.is_empty() {
            return;
        }
        let slot = &self.slots[index];
        let mut choice = index;
        let mut failures = 0;
        loop {
            let target = self.pick(index, choice);
            let dialled = self.dial(slot, &self.dataplanes[target], choice).await;
            choice += 1;
            let (address, connection) = match dialled {
                Ok(dialled) => dialled,
                Err(error) => {
                    tracing::warn!(target: "imgate::tunnel", dataplane = %self.dataplanes[target], "cannot reach the dataplane: {error}");
                    tokio::time::sleep(backoff(failures)).await;
                    failures += 1;
                    continue;
                }
            };
            let since = tokio::time::Instant::now();
            tracing::info!(target: "imgate::tunnel", dataplane = %address, connector = %self.id, "connected to the dataplane");
            let live = Live {
                connection: connection.clone(),
                target,
                dataplane: address,
                draining: Arc::new(AtomicBool::new(false)),
                drain: Arc::new(Notify::new()),
            };
            slot.set(Some(live.clone()));
            self.changed.notify_waiters();
            tokio::select! {
                reason = connection.closed() => {
                    tracing::warn!(target: "imgate::tunnel", dataplane = %address, "lost the dataplane: {reason}");
                }
                () = live.drain.notified() => {
                    tracing::info!(target: "imgate::tunnel", dataplane = %address, "the dataplane is draining; moving new streams elsewhere");
                }
            }
            slot.set(None);
            if since.elapsed() < STABLE {
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
            } else {
                failures = 0;
            }
        }
    }

    /// A usable connection, in turn, waiting up to [`WAIT_FOR_CONNECTION`] for one.
    async fn ready(&self) -> Option<Live> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_CONNECTION;
        loop {
            let changed = self.changed.notified();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let count = self.slots.len();
            let found = (0..count)
                .filter_map(|k| self.slots[(start + k) % count].current())
                .find(Live::usable);
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Admits one accepted connection through the tunnel, then relays it in a task of its own
    /// until both sides close; returns once it is admitted or refused. The admission is a
    /// trace span (`carry`) when traces are exported.
    pub async fn serve(
        self: Arc<Self>,
        frontend: Frontend,
        client: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ConnectorError> {
        let span = tracing::info_span!(
            target: TRACE_TARGET,
            "carry",
            imgate.frontend = frontend.kind(),
            client.address = %peer,
            server.address = Empty,
            imgate.dataplane = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let carried = self
            .carry(frontend, client, peer, &span)
            .instrument(span.clone())
            .await;
        if let Err(error) = &carried {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", tracing::field::display(error));
        }
        carried
    }

    async fn carry(
        self: Arc<Self>,
        frontend: Frontend,
        mut client: TcpStream,
        peer: SocketAddr,
        span: &tracing::Span,
    ) -> Result<(), ConnectorError> {
        let target = tokio::time::timeout(HANDSHAKE_LIMIT, frontend.accept(&mut client))
            .await
            .map_err(|_| ConnectorError::HandshakeTimedOut)??;
        span.record(
            "server.address",
            tracing::field::display(format_args!("{}:{}", target.host, target.port)),
        );
        let header = StreamHeader {
            host: target.host,
            port: target.port,
            client: Some(peer),
            connector: self.id.clone(),
            user: target.user,
            trace: super::trace_context::of(span),
        };
        let header = header.encode().map_err(stream_error)?;
        // Each slot may be found draining or broken once; then there is nowhere left to try.
        for _ in 0..=self.slots.len() {
            let Some(live) = self.ready().await else {
                break;
            };
            let (reply, send, receive) = match open(&live.connection, &header).await {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::info!(target: "imgate::tunnel", dataplane = %live.dataplane, "opening a stream failed, trying another connection: {error}");
                    self.metrics.stream("retried");
                    continue;
                }
            };
            let refusal = match reply.status {
                Status::Connected => None,
                Status::Draining => {
                    live.start_draining();
                    self.metrics.stream("retried");
                    continue;
                }
                Status::Busy => {
                    tracing::info!(target: "imgate::tunnel", dataplane = %live.dataplane, "the dataplane is full, trying another connection: {}", reply.reason);
                    self.metrics.stream("retried");
                    continue;
                }
                Status::Refused => Some(Refusal::NotAllowed),
                Status::Unreachable | Status::TimedOut | Status::BadRequest => {
                    Some(Refusal::Unreachable)
                }
            };
            if let Some(refusal) = refusal {
                self.metrics.stream("refused");
                frontend.refuse(&mut client, refusal).await?;
                return Err(ConnectorError::Refused {
                    status: reply.status,
                    reason: reply.reason,
                });
            }
            self.metrics.stream("connected");
            span.record("imgate.dataplane", tracing::field::display(&live.dataplane));
            frontend.succeed(&mut client).await?;
            let tunnel = tokio::io::join(receive, send);
            // A task of its own, so that what admission needed is freed while it relays.
            tokio::spawn(async move {
                if let Err(error) = relay_unread(client, tunnel, SESSION_IDLE).await {
                    tracing::debug!(target: "imgate::tunnel", %peer, "a carried connection ended: {error}");
                }
            });
            return Ok(());
        }
        self.metrics.stream("unreachable");
        frontend.refuse(&mut client, Refusal::Unreachable).await?;
        Err(ConnectorError::Unreachable)
    }
}

/// Opens a stream, sends `header` and reads the dataplane's reply.
async fn open(
    connection: &quinn::Connection,
    header: &[u8],
) -> Result<(Reply, quinn::SendStream, quinn::RecvStream), ConnectorError> {
    let (mut send, mut receive) = connection.open_bi().await.map_err(stream_error)?;
    send.write_all(header).await.map_err(stream_error)?;
    let reply = read_reply(&mut receive).await?;
    Ok((reply, send, receive))
}

/// Reads the dataplane's reply, exactly: what follows it is the server's.
async fn read_reply(receive: &mut quinn::RecvStream) -> Result<Reply, ConnectorError> {
    let mut bytes = Vec::new();
    let mut needed = 3;
    loop {
        let start = bytes.len();
        bytes.resize(start + needed, 0);
        receive
            .read_exact(&mut bytes[start..])
            .await
            .map_err(stream_error)?;
        match Reply::decode(&bytes).map_err(stream_error)? {
            Decoded::Complete(reply, _) => return Ok(reply),
            Decoded::NeedMore(more) => needed = more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        for failures in 0..40 {
            let pause = backoff(failures);
            let nominal = FIRST_BACKOFF
                .saturating_mul(1u32 << failures.min(16))
                .min(MAX_BACKOFF);
            assert!(
                pause >= nominal / 2 && pause < nominal.mul_f64(1.5),
                "{failures}: {pause:?}"
            );
        }
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }
}
