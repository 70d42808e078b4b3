//! What every session of one tenant's dataplane shares: the compiled policy and the identity
//! directory (each swapped whole on reload, so a lookup sees either the old or the new one,
//! never a mix), the sender tracker, the archive log and the timeouts.
//!
//! Invariants: a record is appended for every event before the event's effect is forwarded,
//! and the effect waits (in [`Shared::settle`]) until the record is written to the log file,
//! or fsynced with [`ForwardAfter::Synced`]; an archive failure in fail-closed mode blocks
//! the event instead of forwarding it unrecorded, and in fail-open mode lets it go on (the
//! log counts the records it refused in its next `gap` record).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use imgate_crds::tenant::ForwardAfter;

use crate::archive::record::Body;
use crate::archive::{ArchiveError, ArchiveLog, Draft};
use crate::inspect::event::{Event, Party};
use crate::inspect::policy::{Action, CompiledPolicy, PolicyState, Verdict};
use crate::inspect::services::ServiceCatalogue;
use imgate_crds::policy::Protocol;

/// Failing open, the longest a batch waits for its records to be written (or synced) before
/// it goes on.
pub const PASS_WAIT: Duration = Duration::from_secs(5);

/// Timeouts and limits of a dataplane.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connecting upstream.
    pub connect: Duration,
    /// Waiting for a client's handshake and first bytes.
    pub handshake: Duration,
    /// A session with no traffic either way is closed after this.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(900),
        }
    }
}

/// One tenant's shared dataplane state.
pub struct Shared {
    /// The tenant.
    pub tenant: String,
    /// This dataplane's writer name in the archive.
    pub writer: String,
    policy: RwLock<Arc<CompiledPolicy>>,
    state: Mutex<PolicyState>,
    /// The archive log.
    pub archive: ArchiveLog,
    /// Forward nothing that is not durably archived (`onArchiveFailure: block`).
    pub fail_closed: bool,
    /// How far a record must get before its effect is forwarded.
    pub forward_after: ForwardAfter,
    /// Services recognised by TLS server name.
    pub services: ServiceCatalogue,
    /// Timeouts.
    pub limits: Limits,
    /// Where clients' sessions may go.
    pub destinations: super::destination::Destinations,
    /// TLS interception, when configured.
    pub tls: Option<Arc<super::xmpp_relay::TlsContext>>,
    /// Prometheus metrics.
    pub metrics: crate::telemetry::Metrics,
    directory: RwLock<Arc<crate::identity::Directory>>,
    /// Messages archived recently, so that carbon copies are archived once.
    pub copies: super::copies::Copies,
    /// How many client connections the listeners may hold.
    pub admission: Arc<super::admission::Admission>,
    /// How many bytes the sessions' read buffers may hold in all.
    pub buffers: Arc<super::budget::Budget>,
    /// The number the next session gets (its name is `<writer>-<run>-<number>`).
    next_session: std::sync::atomic::AtomicU64,
    /// This process's start (milliseconds since the Unix epoch, base 36), which keeps session
    /// names of different runs of one writer apart.
    run: String,
}

impl Shared {
    /// Shared state for `tenant` enforcing `policy`.
    pub fn new(
        tenant: &str,
        writer: &str,
        policy: CompiledPolicy,
        archive: ArchiveLog,
        fail_closed: bool,
    ) -> Self {
        Self {
            tenant: tenant.to_owned(),
            writer: writer.to_owned(),
            policy: RwLock::new(Arc::new(policy)),
            state: Mutex::new(PolicyState::default()),
            archive,
            fail_closed,
            forward_after: ForwardAfter::default(),
            services: ServiceCatalogue::default(),
            limits: Limits::default(),
            destinations: super::destination::Destinations::default(),
            tls: None,
            metrics: crate::telemetry::Metrics::default(),
            directory: RwLock::default(),
            copies: super::copies::Copies::default(),
            buffers: Arc::default(),
            admission: super::admission::Admission::new(
                super::admission::DEFAULT_MOST,
                super::admission::DEFAULT_MOST_PER_SOURCE,
            ),
            next_session: std::sync::atomic::AtomicU64::new(1),
            run: base36(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
        }
    }

    /// The name of session number `id`: `<writer>-<run>-<id>`, unique across the runs of
    /// this writer (which, with its data folder locked, never start in the same millisecond).
    pub fn session_name(&self, id: u64) -> String {
        format!("{}-{}-{id}", self.writer, self.run)
    }

    /// This process's run, as session names carry it.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// A number for a new session, unique in this dataplane whichever listener took it.
    pub fn next_session(&self) -> u64 {
        self.next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The sender `handle` (of `protocol`, when it is one of that protocol's handles),
    /// resolved through the directory; without an entry, nobody: a user name a client claims
    /// in its proxy handshake is never taken for a person. The first time a handle is
    /// resolved in a session, who it was and where that came from is archived (`identity`
    /// record).
    pub async fn party(
        &self,
        info: &SessionInfo,
        protocol: Option<Protocol>,
        handle: String,
    ) -> Party {
        let directory = self
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((identity, source)) = directory.resolve(protocol, &handle).await else {
            return Party {
                handle,
                person: None,
                groups: Vec::new(),
            };
        };
        let first = info
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.to_lowercase());
        if first {
            let record = Body::Identity {
                handle: handle.clone(),
                person: identity.person.clone(),
                groups: identity.groups.clone(),
                source: source.as_str().into(),
            };
            if let Err(error) = self.append(&info.session, &record) {
                tracing::warn!(%error, "the identity record could not be archived");
            }
        }
        Party {
            person: Some(identity.person),
            groups: identity.groups,
            handle,
        }
    }

    /// Replaces the policy; sessions pick it up with their next event.
    pub fn reload(&self, policy: CompiledPolicy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Resolves handles through `directory` from now on; lookups under way finish with the
    /// directory they started with.
    pub fn set_directory(&self, directory: crate::identity::Directory) {
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(directory);
    }

    /// Evaluates one event against the current policy.
    pub fn evaluate(&self, event: &Event) -> Verdict {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        policy.evaluate(event, &mut state)
    }

    /// Archives one record of conversation `conv` and waits as [`settle`](Self::settle)
    /// does.
    pub async fn archive(&self, conv: &str, body: Body) -> Result<u64, ArchiveError> {
        let seq = self.append(conv, &body)?;
        self.settle().await?;
        Ok(seq)
    }

    fn append(&self, conv: &str, body: &Body) -> Result<u64, ArchiveError> {
        self.archive
            .queue(&Draft::new(&self.tenant, &self.writer, conv, body))
    }

    /// Writes the records this session queued (on the calling thread when the log file is
    /// free, else by the log's writer thread) and waits until every record appended so far is
    /// written (or synced, per [`ForwardAfter`]), so that what is forwarded is in the log
    /// even if the process is killed next; failing open, for [`PASS_WAIT`] at most. Relays call it once per batch of stanzas or
    /// lines, before forwarding the batch, so that one write (or fsync) covers all the
    /// messages in flight. The wait holds no thread. When the log fails meanwhile, the
    /// error is returned in fail-closed mode; in fail-open mode the batch goes on (its
    /// records are kept and written when the log writes again).
    pub async fn settle(&self) -> Result<(), ArchiveError> {
        let seq = self.archive.last_seq();
        let wait = match (self.forward_after, self.archive.write_now(seq)) {
            (_, Err(error)) => Err(error),
            (ForwardAfter::Written, Ok(true)) => return Ok(()),
            (ForwardAfter::Written, Ok(false)) => Ok(false),
            (ForwardAfter::Synced, Ok(_)) => Ok(true),
        };
        let waiting = async {
            match wait? {
                false => self.archive.written(seq).await,
                true => self.archive.synced(seq).await,
            }
        };
        let settled = if self.fail_closed {
            waiting.await
        } else {
            // Failing open, a disk that stops answering does not stop the traffic.
            tokio::time::timeout(PASS_WAIT, waiting)
                .await
                .unwrap_or_else(|_| {
                    Err(ArchiveError::Failed(format!(
                        "the archive log took over {PASS_WAIT:?} to write"
                    )))
                })
        };
        match settled {
            Err(error) if !self.fail_closed => {
                tracing::warn!(%error, "archive failed; forwarding (fail open)");
                Ok(())
            }
            settled => settled,
        }
    }

    /// Appends an event's record and returns the action to take: the verdict's, or `block`
    /// when the record could not be appended in fail-closed mode. The caller forwards the
    /// effect only after [`settle`](Self::settle).
    pub fn archive_verdict(&self, conv: &str, body: Body, verdict: &Verdict) -> Action {
        let action = if self.record_event(conv, body) {
            verdict.action
        } else {
            Action::Block
        };
        self.metrics.verdict(action.as_str());
        action
    }

    /// Appends an event's record; returns whether the event may go on: `false` only when
    /// the record could not be appended in fail-closed mode. Events that policy does not
    /// judge (a join, a new nickname) use it directly. The caller forwards it only after
    /// [`settle`](Self::settle).
    pub fn record_event(&self, conv: &str, body: Body) -> bool {
        match self.append(conv, &body) {
            Ok(_) => true,
            Err(error) if self.fail_closed => {
                tracing::error!(%error, "archive failed; not forwarding (fail closed)");
                false
            }
            Err(error) => {
                tracing::error!(%error, "archive failed; forwarding (fail open)");
                true
            }
        }
    }
}

/// Who a session is, for events and records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Session id.
    pub session: String,
    /// The server, `host:port`.
    pub server: String,
    /// The client's address.
    pub client: std::net::IpAddr,
    /// Handles resolved so far in this session (lower case), each archived once.
    pub resolved: Arc<Mutex<HashSet<String>>>,
}

impl SessionInfo {
    /// A session from `client` with nothing resolved yet.
    pub fn new(session: String, server: String, client: std::net::IpAddr) -> Self {
        Self {
            session,
            server,
            client,
            resolved: Arc::default(),
        }
    }
}

/// Milliseconds since the Unix epoch, for event timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The client's write half, shared by a relay's two directions (both may write to the client).
pub type ClientWriter<C> = Arc<tokio::sync::Mutex<tokio::io::WriteHalf<C>>>;

/// Writes `bytes` and flushes them: a TLS stream may otherwise keep encrypted bytes that a
/// slow peer's socket did not take until the next write, which an idle session never makes.
pub async fn send<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// A relay's halves: what the client sends, the shared writer to the client, what the server
/// sends, and the writer to the server.
pub type RelayHalves<C, U> = (
    tokio::io::ReadHalf<C>,
    ClientWriter<C>,
    tokio::io::ReadHalf<U>,
    tokio::io::WriteHalf<U>,
);

/// Splits a session's two streams for a relay's two directions.
pub fn split_for_relay<C, U>(client: C, upstream: U) -> RelayHalves<C, U>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    (
        client_read,
        Arc::new(tokio::sync::Mutex::new(client_write)),
        upstream_read,
        upstream_write,
    )
}

/// `n` in base 36, lower case.
fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}
