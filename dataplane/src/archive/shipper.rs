//! The shipper: seals durable log records into segments and ships them to the object store.
//!
//! Order of effects, so that a crash at any point loses nothing and duplicates nothing:
//! 1. seal: write the segment and its manifest to `outbox/` (fsynced), then record in
//!    `state.json` that those records are sealed and the chain head moved;
//! 2. ship: put the segment, then its manifest (re-putting the same bytes to the same key
//!    after a crash is harmless), then record in `state.json` that they are shipped;
//! 3. only then delete the outbox files and let the log delete its files (data is deleted
//!    only after the store acknowledged it).
//!
//! Invariants: segments are shipped one at a time in chain order; an outbox file not covered
//! by `state.json` (sealed, then a crash before the state was written) is ignored and
//! rebuilt from the log; failures are retried with exponential back-off and full jitter; each
//! round's outcome is recorded in the shipper's [`ShipMonitor`], which health reports read;
//! while nothing is due, the store is probed every [`ShipperConfig::probe_every`] (after a
//! failed probe, every [`PROBE_RETRY`]), so that an idle dataplane knows whether its records
//! would reach the store, and whether it keeps them under Object Lock when retention is asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::draft::Draft;
use super::error::ArchiveError;
use super::fs::Filesystem;
use super::log::ArchiveLog;
use super::record::Body;
use super::segment::{GENESIS, Layout, Manifest, SegmentInput, seal};
use super::ship_health::ShipMonitor;
use super::store::{Encryption, PutOptions, Retention, Store};
use super::wal::Wal;

/// What a shipper that stopped left in the log unshipped, and why.
#[derive(Debug, thiserror::Error)]
#[error("{records} record(s) are not in the object store yet: {error}")]
pub struct Unflushed {
    /// Records in the log not shipped.
    pub records: u64,
    /// Why.
    #[source]
    pub error: ArchiveError,
}

/// How soon a failed probe of the store is repeated.
pub const PROBE_RETRY: Duration = Duration::from_secs(30);

/// Shipper settings.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Tenant, writer and key prefix.
    pub layout: Layout,
    /// Seal when this many unshipped bytes are in the log.
    pub max_segment_bytes: u64,
    /// Seal when the oldest unsealed record is this old.
    pub max_segment_age: Duration,
    /// Object Lock retention in days, and whether in COMPLIANCE mode.
    pub retention: Option<(u32, bool)>,
    /// Server-side encryption.
    pub encryption: Option<Encryption>,
    /// How often the store is probed while nothing is due to ship.
    pub probe_every: Duration,
}

impl ShipperConfig {
    /// Defaults for `layout`: 32 MiB or 20 s per segment, no retention, no encryption, a
    /// probe of the store every 5 minutes while idle.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            max_segment_bytes: 32 << 20,
            max_segment_age: Duration::from_secs(20),
            retention: None,
            encryption: None,
            probe_every: Duration::from_secs(300),
        }
    }

    fn put_options(&self) -> PutOptions {
        PutOptions {
            retention: self.retention.map(|(days, compliance)| Retention {
                compliance,
                until: Utc::now() + chrono::Duration::days(i64::from(days)),
            }),
            encryption: self.encryption.clone(),
        }
    }
}

/// What has been sealed and shipped, persisted in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipState {
    /// Last record sealed into a segment.
    pub sealed_through: u64,
    /// Last record shipped.
    pub shipped_through: u64,
    /// SHA-256 of the last sealed segment.
    pub chain_head: String,
    /// Index the next segment gets.
    pub next_index: u64,
}

impl Default for ShipState {
    fn default() -> Self {
        Self {
            sealed_through: 0,
            shipped_through: 0,
            chain_head: GENESIS.into(),
            next_index: 1,
        }
    }
}

/// Seals and ships one writer's log.
pub struct Shipper<F: Filesystem> {
    fs: F,
    dir: PathBuf,
    log: ArchiveLog,
    store: Store,
    config: ShipperConfig,
    state: ShipState,
    unsealed_since: Option<Instant>,
    health: Arc<ShipMonitor>,
    next_probe: Instant,
}

impl<F: Filesystem> Shipper<F> {
    /// Opens the shipper for the log in `dir` (its `wal/`, `outbox/` and `state.json`).
    pub fn open(
        fs: F,
        dir: &Path,
        log: ArchiveLog,
        store: Store,
        config: ShipperConfig,
    ) -> Result<Self, ArchiveError> {
        let outbox = dir.join("outbox");
        fs.create_dir_all(&outbox)
            .map_err(|e| ArchiveError::io(&outbox, e))?;
        let state_path = dir.join("state.json");
        let state = match fs.read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ArchiveError::corrupt(&state_path, 0, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ShipState::default(),
            Err(e) => return Err(ArchiveError::io(&state_path, e)),
        };
        let durable = log.durable_seq();
        if durable < state.sealed_through {
            return Err(ArchiveError::corrupt(
                &state_path,
                0,
                format!(
                    "segments up to record {} were sealed but the log ends at record {durable}: the log was lost or replaced; restore it, or give this dataplane a new writer name",
                    state.sealed_through
                ),
            ));
        }
        let shipper = Self {
            fs,
            dir: dir.to_owned(),
            log,
            store,
            config,
            state,
            unsealed_since: None,
            health: Arc::default(),
            next_probe: Instant::now(),
        };
        shipper.remove_stale_outbox()?;
        Ok(shipper)
    }

    /// Removes outbox files left by a crash: already shipped, or sealed but never recorded.
    fn remove_stale_outbox(&self) -> Result<(), ArchiveError> {
        let outbox = self.dir.join("outbox");
        for path in self
            .fs
            .list(&outbox)
            .map_err(|e| ArchiveError::io(&outbox, e))?
        {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let first_seq: u64 = name
                .split('.')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if first_seq <= self.state.shipped_through || first_seq > self.state.sealed_through {
                self.fs
                    .remove(&path)
                    .map_err(|e| ArchiveError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Where the shipper writes its health, for whoever reports it.
    pub fn health(&self) -> Arc<ShipMonitor> {
        self.health.clone()
    }

    /// What has been sealed and shipped.
    pub fn state(&self) -> &ShipState {
        &self.state
    }

    fn save_state(&self) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        self.fs
            .write_atomic(&path, &bytes)
            .map_err(|e| ArchiveError::io(&path, e))
    }

    fn outbox_paths(&self, first_seq: u64) -> (PathBuf, PathBuf) {
        let outbox = self.dir.join("outbox");
        (
            outbox.join(format!("{first_seq:020}.jsonl.zst")),
            outbox.join(format!("{first_seq:020}.manifest.json")),
        )
    }

    /// Seals what is durable when a segment is due (full or old enough), or always with
    /// `force`. Returns the number of segments sealed.
    pub fn seal_due(&mut self, force: bool) -> Result<usize, ArchiveError> {
        let durable = self.log.durable_seq();
        if durable <= self.state.sealed_through {
            self.unsealed_since = None;
            return Ok(0);
        }
        let since = *self.unsealed_since.get_or_insert_with(Instant::now);
        let full = self.log.unshipped_bytes() >= self.config.max_segment_bytes;
        if !(force || full || since.elapsed() >= self.config.max_segment_age) {
            return Ok(0);
        }
        let mut sealed = 0;
        while self.state.sealed_through < durable {
            self.seal_one(durable)?;
            sealed += 1;
        }
        self.unsealed_since = None;
        Ok(sealed)
    }

    fn seal_one(&mut self, durable: u64) -> Result<(), ArchiveError> {
        let mut input = SegmentInput::default();
        let mut failure = None;
        let limit = self.config.max_segment_bytes;
        let wal_dir = self.log.dir().to_owned();
        Wal::read_range(
            &self.fs,
            &wal_dir,
            self.state.sealed_through + 1,
            durable,
            &mut |seq, payload| {
                match serde_json::from_slice::<TimestampOnly>(payload) {
                    Ok(record) => input.push(seq, record.ts, payload),
                    Err(error) => {
                        failure = Some(ArchiveError::corrupt(
                            &wal_dir,
                            seq,
                            format!("record {seq} is not valid JSON: {error}"),
                        ))
                    }
                }
                failure.is_none() && input.line_bytes < limit
            },
        )?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if input.records == 0 || input.first_seq != self.state.sealed_through + 1 {
            return Err(ArchiveError::corrupt(
                &wal_dir,
                0,
                format!(
                    "record {} is missing from the log",
                    self.state.sealed_through + 1
                ),
            ));
        }
        let sealed = seal(
            &self.config.layout,
            self.state.next_index,
            &self.state.chain_head,
            input,
        );
        let (body_path, manifest_path) = self.outbox_paths(sealed.manifest.first_seq);
        self.fs
            .write_atomic(&body_path, &sealed.body)
            .map_err(|e| ArchiveError::io(&body_path, e))?;
        let manifest = serde_json::to_vec_pretty(&sealed.manifest).unwrap_or_default();
        self.fs
            .write_atomic(&manifest_path, &manifest)
            .map_err(|e| ArchiveError::io(&manifest_path, e))?;
        self.state.sealed_through = sealed.manifest.last_seq;
        self.state.chain_head = sealed.manifest.sha256.clone();
        self.state.next_index += 1;
        self.save_state()
    }

    /// Ships every sealed segment not yet shipped, in order. Returns how many were shipped.
    pub async fn ship_sealed(&mut self) -> Result<usize, ArchiveError> {
        let mut shipped = 0;
        while self.state.shipped_through < self.state.sealed_through {
            let (body_path, manifest_path) = self.outbox_paths(self.state.shipped_through + 1);
            let body = self
                .fs
                .read(&body_path)
                .map_err(|e| ArchiveError::io(&body_path, e))?;
            let manifest_bytes = self
                .fs
                .read(&manifest_path)
                .map_err(|e| ArchiveError::io(&manifest_path, e))?;
            let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| ArchiveError::corrupt(&manifest_path, 0, e.to_string()))?;
            let options = self.config.put_options();
            self.store.put(&manifest.key, body, &options).await?;
            self.store
                .put(
                    &self.config.layout.manifest_key(manifest.first_seq),
                    manifest_bytes,
                    &options,
                )
                .await?;
            self.state.shipped_through = manifest.last_seq;
            self.save_state()?;
            for path in [&body_path, &manifest_path] {
                self.fs
                    .remove(path)
                    .map_err(|e| ArchiveError::io(path, e))?;
            }
            self.log.release_through(manifest.last_seq);
            tracing::debug!(key = %manifest.key, records = manifest.records, "segment shipped");
            shipped += 1;
        }
        Ok(shipped)
    }

    /// Seals what is due (everything durable when `force`) and ships it, recording the outcome
    /// in the shipper's health; returns how many segments were shipped.
    async fn round(&mut self, force: bool) -> Result<usize, ArchiveError> {
        let result = match self.seal_due(force) {
            Ok(_) => self.ship_sealed().await,
            Err(error) => Err(error),
        };
        match &result {
            Ok(0) => {}
            Ok(_) => {
                if let Some(since) = self.health.shipped() {
                    self.resumed(since);
                }
            }
            Err(error) => {
                if self.health.failed(error) {
                    self.began_failing(error);
                }
            }
        }
        result
    }

    /// Marks in the archive itself, and in the log, that shipping began failing with `error`:
    /// records written from now on wait in the log until the store takes them.
    fn began_failing(&self, error: &ArchiveError) {
        tracing::error!(%error, "archive shipping is failing: records wait in the log until the object store takes them");
        self.mark("archive-shipping-failing", error.to_string());
    }

    /// Marks that shipping works again after failing since `since`.
    fn resumed(&self, since: chrono::DateTime<Utc>) {
        tracing::info!(%since, "archive shipping works again");
        self.mark(
            "archive-shipping-resumed",
            format!("shipping had failed since {}", since.to_rfc3339()),
        );
    }

    /// Appends a `system` record of `event` to the log (which ships it with the rest).
    fn mark(&self, event: &str, detail: String) {
        let body = Body::System {
            event: event.into(),
            detail,
        };
        let layout = &self.config.layout;
        let draft = Draft::new(&layout.tenant, &layout.writer, "archive", &body);
        if let Err(error) = self.log.append_draft(&draft) {
            tracing::error!(%error, event, "cannot record this in the archive log");
        }
    }

    /// Checks that the store answers (and keeps objects under Object Lock when retention is
    /// configured), records the outcome in the shipper's health, and schedules the next probe.
    pub async fn probe(&mut self) -> Result<(), ArchiveError> {
        let result = self.store.probe(self.config.retention.is_some()).await;
        let wait = match &result {
            Ok(()) => {
                if let Some(since) = self.health.reachable() {
                    self.resumed(since);
                }
                self.config.probe_every
            }
            Err(error) => {
                if self.health.failed(error) {
                    self.began_failing(error);
                }
                PROBE_RETRY
            }
        };
        self.next_probe = Instant::now() + wait;
        result
    }

    /// Waits until every record appended so far is durable, then seals everything durable
    /// and ships it, retrying failures, for no longer than `deadline` in all (a request the
    /// store leaves unanswered is abandoned when it ends).
    pub async fn flush(&mut self, deadline: Duration) -> Result<(), ArchiveError> {
        let end = tokio::time::Instant::now() + deadline;
        match tokio::time::timeout_at(end, self.log.synced(self.log.last_seq())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "the archive log failed; shipping what is durable");
            }
            Err(_) => {
                tracing::error!("the archive log did not sync in time; shipping what is durable");
            }
        }
        let mut backoff = Backoff::default();
        loop {
            let error = match tokio::time::timeout_at(end, self.round(true)).await {
                Ok(Ok(_)) if self.unshipped_records() == 0 => return Ok(()),
                Ok(Ok(_)) => {
                    // Records written meanwhile (this very round's marker that shipping works
                    // again, sessions' last words): once durable, they go too.
                    let last = self.log.last_seq();
                    match tokio::time::timeout_at(end, self.log.synced(last)).await {
                        Ok(Ok(())) if tokio::time::Instant::now() < end => continue,
                        Ok(Err(error)) => return Err(error),
                        _ => {
                            return Err(ArchiveError::Store {
                                key: self.store.describe(),
                                message: "records were still being written when the time given to ship ended".into(),
                            });
                        }
                    }
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    // The round was abandoned before it could say so.
                    let error = ArchiveError::Store {
                        key: self.store.describe(),
                        message: format!(
                            "no answer within the {} s given to ship",
                            deadline.as_secs_f64()
                        ),
                    };
                    if self.health.failed(&error) {
                        self.began_failing(&error);
                    }
                    error
                }
            };
            if !retryable(&error) || tokio::time::Instant::now() >= end {
                return Err(error);
            }
            tracing::warn!(%error, "archive shipping failed; retrying");
            let pause = backoff.next_delay();
            if tokio::time::timeout_at(end, tokio::time::sleep(pause))
                .await
                .is_err()
            {
                return Err(error);
            }
        }
    }

    /// Records in the log not yet shipped to the store.
    fn unshipped_records(&self) -> u64 {
        self.log
            .last_seq()
            .saturating_sub(self.state.shipped_through)
    }

    fn unflushed(&self, error: ArchiveError) -> Unflushed {
        Unflushed {
            records: self.unshipped_records(),
            error,
        }
    }

    /// Runs [`run`](Self::run) on a thread of its own with its own runtime, so that sealing
    /// (reading the log, compressing, fsyncing) never holds a worker that sessions need. The
    /// thread runs in the idle scheduling class: compressing a segment is the largest
    /// burst of work a dataplane does, and it must not delay the sessions' threads when they
    /// share a core with it.
    pub fn spawn(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<Result<(), Unflushed>>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("archive-ship".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(self.run(stop, drain))
            })
    }

    /// Runs until `stop` resolves: seals when due and ships, retrying with back-off; then
    /// flushes for up to `drain`. A round in progress when `stop` comes is abandoned (as a
    /// crash would leave it: nothing is lost, and the flush does it again). What could not be
    /// shipped is said, with how many records wait in the log for the next start.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        drain: Duration,
    ) -> Result<(), Unflushed> {
        let mut backoff = Backoff::default();
        tokio::pin!(stop);
        loop {
            let round = tokio::select! {
                round = self.round(false) => Some(round),
                () = &mut stop => None,
            };
            let Some(round) = round else {
                let flushed = self.flush(drain).await;
                return flushed.map_err(|error| self.unflushed(error));
            };
            let delay = match round {
                Ok(shipped) => {
                    backoff = Backoff::default();
                    if shipped > 0 {
                        self.next_probe = Instant::now() + self.config.probe_every;
                    } else if Instant::now() >= self.next_probe
                        && let Err(error) = self.probe().await
                    {
                        tracing::warn!(%error, "the archive's object store does not answer as it should; nothing is due to ship yet");
                    }
                    Duration::from_millis(500)
                }
                Err(error) if retryable(&error) => {
                    tracing::warn!(%error, "archive shipping failed; retrying");
                    backoff.next_delay()
                }
                Err(error) => return Err(self.unflushed(error)),
            };
            tokio::select! {
                () = &mut stop => {
                    let flushed = self.flush(drain).await;
                    return flushed.map_err(|error| self.unflushed(error));
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Only a record's timestamp, for sealing without parsing whole records.
#[derive(Deserialize)]
struct TimestampOnly {
    ts: chrono::DateTime<Utc>,
}

fn retryable(error: &ArchiveError) -> bool {
    matches!(error, ArchiveError::Store { .. } | ArchiveError::Io { .. })
}

/// Exponential back-off with full jitter, from 200 ms up to 30 s.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = (200u64 << self.attempt.min(8)).min(30_000);
        self.attempt += 1;
        Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
    }
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`): it runs only when no
/// other thread wants the CPU, and any session thread that wakes preempts it at once. Failing
/// is harmless (sealing then competes with sessions as an equal), so it is only logged.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    if let Err(error) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!(?error, "cannot move the sealing thread to the idle class");
    }
}
