//! The archive log's shared state and its two threads: the writer, which writes what is
//! queued when a producer asks for it, rotates full files and deletes shipped ones, and the
//! syncer, which fsyncs what has been written: at once for a waiter, as soon as
//! [`SYNC_BYTES`] are unsynced (so that a waiter never inherits a long fsync), and otherwise
//! every `sync_interval`.
//!
//! Invariants: the queue is taken only by the holder of the WAL's lock, whole, so batches
//! reach the file in sequence order; progress (`written_seq`, `durable_seq`, failure) changes
//! only under the state lock and is published to every waiter, blocking or async, by
//! [`notify`]; a sleeper marks itself under the state lock before it waits, and a
//! notification is sent only to a marked sleeper; after a failure nothing more is written
//! until the log is reopened (a batch already being written finishes, and fails or not).
//! The WAL's lock is held only to append, to take files out of the log and for the last step
//! of a rotation (syncing what was appended since the writer synced the full file without the
//! lock, and renaming the next file, made ready beforehand, into place): making files ready
//! and deleting them, which can wait on the disk for many milliseconds, happen without it, so
//! that producers writing for themselves do not wait for them. A full file keeps taking
//! appends until the writer rotates it.
//!
//! After a failure the writer keeps what was queued and not written (the failed batch first)
//! and tries, after one `retry` and then at doubling intervals up to [`MOST_RETRY`], to
//! reopen the log ([`Reopen`]): recovered from its files as at start, synced, and continued
//! with what was kept, so no sequence number is ever given to two records and a record that
//! was numbered is written or the log stays failed. The kept records and then a `gap` record
//! are the first written after the failure, in one batch; until that batch is written the log
//! stays failed and the gap open, so a failure is one `gap` record however many tries it
//! takes. A failed fsync is never recovered from in the process (`for_good`): the kernel may
//! have dropped pages that reading the file back would still show. A sync that started before
//! a reopen and succeeded is moot (the `generation` tells them apart); one that failed fails
//! the log.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::draft::Draft;
use super::error::ArchiveError;
use super::record::Body;
use super::wal::{FRAME_HEADER, Housekeeping, Recovery, SyncFile, WalWriter};

/// The longest wait between two tries to write again after a failure.
pub(super) const MOST_RETRY: Duration = Duration::from_secs(30);

/// Opens the log's files again after a failure: a fresh writer, its housekeeper, and what
/// recovery found.
pub(super) type Reopen = dyn Fn() -> Result<(Box<dyn WalWriter>, Box<dyn Housekeeping>, Recovery), ArchiveError>
    + Send
    + Sync;

/// Unsynced bytes at which the syncer syncs without waiting for its interval.
pub(super) const SYNC_BYTES: u64 = 1 << 20;

#[derive(Default)]
pub(super) struct State {
    pub(super) queue: Vec<(u64, Vec<u8>)>,
    pub(super) queued_bytes: u64,
    pub(super) next_seq: u64,
    pub(super) written_seq: u64,
    pub(super) durable_seq: u64,
    /// The highest record someone waits to see durable.
    pub(super) sync_wanted: u64,
    /// What the syncer should sync next: a handle to the file holding `written_seq`.
    pub(super) sync_file: Option<Box<dyn SyncFile>>,
    pub(super) on_disk_bytes: u64,
    /// Bytes at the start of the oldest file whose records are shipped: on disk until the
    /// file is deleted, yet no longer unshipped. Only ever an underestimate.
    pub(super) released_bytes: u64,
    pub(super) release_through: Option<u64>,
    /// The last record the shipper released.
    pub(super) shipped_seq: u64,
    /// Records after this one stay in the log whatever is shipped (a reader follows them).
    pub(super) hold: Option<u64>,
    /// The current file is full: the writer should rotate it.
    pub(super) rotation_wanted: bool,
    pub(super) failed: Option<String>,
    /// The failure cannot be recovered from in this process: an fsync failed, after which
    /// the kernel may have dropped written pages that reading the file back would still
    /// show, so what the log holds cannot be trusted until it is recovered from disk at the
    /// next start.
    pub(super) for_good: bool,
    /// Records refused since the log last recorded (a failure, or back-pressure), not yet
    /// told in a `gap` record.
    pub(super) gap: Option<Gap>,
    /// Records refused since the log opened.
    pub(super) refused_total: u64,
    /// A shipped file could not be deleted: none is deleted any more in this process.
    pub(super) deletes_held: bool,
    /// How many times the log was reopened after a failure.
    pub(super) generation: u64,
    pub(super) closing: bool,
    /// Who sleeps, so that a notification is only sent (a system call) when someone is
    /// there to receive it.
    pub(super) writer_asleep: bool,
    pub(super) syncer: SyncerWait,
    /// Bytes written since the syncer last took its target.
    pub(super) unsynced_bytes: u64,
    pub(super) blocked_waiters: usize,
}

impl State {
    /// How far files may be deleted: what is shipped and not held.
    pub(super) fn releasable(&self) -> u64 {
        self.hold
            .map_or(self.shipped_seq, |hold| hold.min(self.shipped_seq))
    }

    /// Bytes written or queued that are not shipped yet.
    pub(super) fn unshipped(&self) -> u64 {
        self.on_disk_bytes.saturating_sub(self.released_bytes) + self.queued_bytes
    }
}

/// A time when the log refused records, until the next record it takes.
#[derive(Debug, Clone)]
pub(super) struct Gap {
    pub(super) since: DateTime<Utc>,
    pub(super) reason: String,
    pub(super) refused: u64,
}

/// What the syncer waits for on [`Shared::wanted`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum SyncerWait {
    /// It is not waiting.
    #[default]
    Awake,
    /// Nothing is written that is not durable: any write wakes it.
    Idle,
    /// Its interval has not passed: a waiter or [`SYNC_BYTES`] unsynced wakes it.
    Interval,
}

/// What async waiters watch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    pub(super) written: u64,
    pub(super) durable: u64,
    pub(super) failed: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The log's files; whoever holds this lock may take the queue and write it.
    pub(super) wal: Mutex<Box<dyn WalWriter>>,
    pub(super) progress: tokio::sync::watch::Sender<Progress>,
    pub(super) queued: Condvar,
    pub(super) wanted: Condvar,
    pub(super) committed: Condvar,
    pub(super) limit: u64,
    pub(super) sync_interval: Duration,
    /// The first wait before writing again after a failure.
    pub(super) retry: Duration,
    /// Whose records the log's own `gap` records are: tenant and writer.
    pub(super) origin: (String, String),
    /// Whether producers forward the events whose records the log refuses.
    pub(super) forwards_refused: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a record refused (the log failed, or it is full) as part of the current gap,
    /// which begins now for `reason` if none is open.
    pub(super) fn refused(state: &mut State, reason: &ArchiveError) {
        state.refused_total += 1;
        state
            .gap
            .get_or_insert_with(|| Gap {
                since: Utc::now(),
                reason: reason.to_string(),
                refused: 0,
            })
            .refused += 1;
    }

    /// Queues the `gap` record of the gap that ends now, if one is open: under the state
    /// lock, with the next sequence number.
    /// `late`: the first and last records numbered before the failure and written only now.
    pub(super) fn close_gap(&self, state: &mut State, late: Option<[u64; 2]>) {
        let Some(gap) = state.gap.take() else {
            return;
        };
        let body = Body::Gap {
            since: gap
                .since
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason: gap.reason,
            refused: gap.refused,
            on_failure: if self.forwards_refused {
                "pass"
            } else {
                "block"
            }
            .into(),
            late,
        };
        let (tenant, writer) = &self.origin;
        let seq = state.next_seq;
        let payload = Draft::new(tenant, writer, "archive", &body).finish(seq, Utc::now());
        state.next_seq += 1;
        state.queued_bytes += (payload.len() + FRAME_HEADER) as u64;
        state.queue.push((seq, payload));
    }
}

/// Publishes the log's progress to every waiter, blocking or async.
pub(super) fn notify(shared: &Shared, mut state: MutexGuard<'_, State>) {
    let progress = Progress {
        written: state.written_seq,
        durable: state.durable_seq,
        failed: state.failed.is_some(),
    };
    let blocked = state.blocked_waiters > 0;
    let syncer = match state.syncer {
        SyncerWait::Idle => state.written_seq > state.durable_seq || state.failed.is_some(),
        SyncerWait::Interval => state.unsynced_bytes >= SYNC_BYTES || state.failed.is_some(),
        SyncerWait::Awake => false,
    };
    if syncer {
        state.syncer = SyncerWait::Awake;
    }
    drop(state);
    shared.progress.send_replace(progress);
    if blocked {
        shared.committed.notify_all();
    }
    if syncer {
        shared.wanted.notify_one();
    }
}

/// Records a failure: the log refuses everything until the writer reopens it, and every
/// waiter is woken.
fn fail(shared: &Shared, mut state: MutexGuard<'_, State>, error: &ArchiveError) {
    tracing::error!(%error, "archive log failed; refusing records until it can write again");
    state.failed = Some(error.to_string());
    state.for_good |= matches!(error, ArchiveError::Sync { .. });
    let reason = error.to_string();
    let gap = state.gap.get_or_insert_with(|| Gap {
        since: Utc::now(),
        reason: reason.clone(),
        refused: 0,
    });
    gap.reason = reason;
    // The writer reopens the log: wake it if the failure was another thread's.
    let wake_writer = std::mem::take(&mut state.writer_asleep);
    notify(shared, state);
    if wake_writer {
        shared.queued.notify_one();
    }
}

/// Waits out the retry interval (or until the log closes) and tries to reopen the log once.
/// Returns the reopened log's housekeeper, or `None`: still failed (`retry` doubled), or
/// closing with nothing more to try.
fn try_reopen(
    shared: &Shared,
    reopen: &Reopen,
    retry: &mut Duration,
) -> Option<Box<dyn Housekeeping>> {
    let due = Instant::now() + *retry;
    let mut state = shared.lock();
    while !state.closing {
        let now = Instant::now();
        if now >= due {
            break;
        }
        state = shared
            .queued
            .wait_timeout(state, due - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
    drop(state);
    match reopen_log(shared, reopen) {
        Ok(housekeeper) => {
            *retry = shared.retry.max(Duration::from_millis(1));
            Some(housekeeper)
        }
        Err(error) => {
            tracing::warn!(%error, retry = ?*retry, "the archive log still cannot write");
            *retry = (*retry * 2).min(MOST_RETRY);
            let mut state = shared.lock();
            state.failed = Some(error.to_string());
            // What only a restart (or a person) can repair.
            state.for_good |= matches!(
                error,
                ArchiveError::Sync { .. }
                    | ArchiveError::Corrupt { .. }
                    | ArchiveError::Sequence { .. }
            );
            None
        }
    }
}

/// Opens the log's files again, as at start, syncs what they hold, and continues the log
/// with what was queued and not written followed by the `gap` record, written in one batch
/// under the state lock (producers wait for it: it happens once per failure). Until that
/// write succeeds the log stays failed and the gap open, so one failure, however many tries
/// it takes, is one `gap` record.
fn reopen_log(shared: &Shared, reopen: &Reopen) -> Result<Box<dyn Housekeeping>, ArchiveError> {
    let mut wal = shared.wal.lock().unwrap_or_else(|p| p.into_inner());
    let (mut fresh, housekeeper, recovery) = reopen()?;
    fresh.sync()?;
    let mut state = shared.lock();
    if state.for_good {
        // An fsync failed while this reopen waited.
        return Err(ArchiveError::Failed(
            state.failed.clone().unwrap_or_default(),
        ));
    }
    let last = recovery.last_seq;
    if last < state.written_seq {
        state.for_good = true;
        return Err(ArchiveError::Failed(format!(
            "records {}..={} were written before the failure and are no longer in the log; \
             keep its folder for inspection and restart",
            last + 1,
            state.written_seq
        )));
    }
    state.queue.retain(|(seq, _)| *seq > last);
    if let Some((first, _)) = state.queue.first()
        && *first != last + 1
    {
        return Err(ArchiveError::Sequence {
            expected: last + 1,
            got: *first,
        });
    }
    state.next_seq = last + 1 + state.queue.len() as u64;
    state.queued_bytes = state
        .queue
        .iter()
        .map(|(_, p)| (p.len() + FRAME_HEADER) as u64)
        .sum();
    let gap = state.gap.clone();
    let late = state
        .queue
        .first()
        .zip(state.queue.last())
        .map(|((first, _), (last, _))| [*first, *last]);
    shared.close_gap(&mut state, late);
    if let Err(error) = fresh.append_batch(&state.queue) {
        // Kept for the next try, with the gap still open.
        if gap.is_some()
            && let Some((seq, record)) = state.queue.pop()
        {
            state.next_seq = seq;
            state.queued_bytes -= (record.len() + FRAME_HEADER) as u64;
        }
        state.gap = gap;
        return Err(error);
    }
    // Written: from here on they are in the log, whatever fails next.
    let written: u64 = state
        .queue
        .drain(..)
        .map(|(_, p)| (p.len() + FRAME_HEADER) as u64)
        .sum();
    state.queued_bytes = 0;
    state.written_seq = state.next_seq - 1;
    state.durable_seq = last;
    state.sync_file = None;
    state.unsynced_bytes = written;
    state.on_disk_bytes = fresh.bytes();
    state.released_bytes = 0;
    state.rotation_wanted = fresh.rotation_due();
    state.generation += 1;
    state.failed = None;
    if let Some(gap) = gap {
        tracing::warn!(since = %gap.since, refused = gap.refused, "the archive log writes again; the gap is recorded");
    }
    *wal = fresh;
    match wal.sync_handle() {
        Ok(handle) => state.sync_file = handle,
        Err(error) => {
            drop(wal);
            fail(shared, state, &error);
            return Ok(housekeeper);
        }
    }
    drop(wal);
    notify(shared, state);
    Ok(housekeeper)
}

/// The writer thread: writes what is queued whenever it is woken (by a producer that waits, a
/// full file, a release or closing), rotates full files and deletes released ones; after a
/// failure, reopens the log when it can; on closing, syncs and returns (trying once more to
/// reopen a failed log, so that its gap is recorded).
pub(super) fn write_loop(shared: &Shared, mut housekeeper: Box<dyn Housekeeping>, reopen: &Reopen) {
    let mut retry = shared.retry.max(Duration::from_millis(1));
    loop {
        let mut state = shared.lock();
        if state.failed.is_some() {
            if state.for_good {
                while !state.closing {
                    state = shared
                        .queued
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                return;
            }
            let closing = state.closing;
            drop(state);
            match try_reopen(shared, reopen, &mut retry) {
                Some(fresh) => housekeeper = fresh,
                None if closing => return,
                None => {}
            }
            continue;
        }
        while state.queue.is_empty()
            && state.failed.is_none()
            && state.release_through.is_none()
            && !state.rotation_wanted
            && !state.closing
        {
            state.writer_asleep = true;
            state = shared
                .queued
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.writer_asleep = false;
        if state.failed.is_some() {
            continue;
        }
        let closed = state.queue.is_empty() && state.release_through.is_none() && state.closing;
        let rotate = std::mem::take(&mut state.rotation_wanted) && !closed;
        // Once a shipped file could not be deleted, none newer is: the files left are always
        // the log's oldest, so the log stays whole for the next start to open.
        let held = state.deletes_held;
        let release = state.release_through.take().filter(|_| !held);
        drop(state);
        if rotate && !prepare_rotation(shared, &*housekeeper) {
            continue;
        }
        let mut wal = shared.wal.lock().unwrap_or_else(|p| p.into_inner());
        if closed {
            // Everything written becomes durable before the log closes.
            let synced = wal.sync();
            let mut state = shared.lock();
            match synced {
                Ok(()) => state.durable_seq = state.written_seq,
                Err(error) => {
                    fail(shared, state, &error);
                    continue;
                }
            }
            notify(shared, state);
            return;
        }
        if rotate && !finish_rotation(shared, &mut **wal) {
            continue;
        }
        if !write_queued(shared, &mut **wal) {
            continue;
        }
        let detached = release.map_or_else(Vec::new, |seq| wal.detach_through(seq));
        if !detached.is_empty() {
            let mut state = shared.lock();
            state.on_disk_bytes = wal.bytes();
            state.released_bytes = 0;
        }
        let oldest = release.zip(wal.oldest());
        drop(wal);
        // Read without the WAL's lock: the records read are shipped, so durable and
        // unchanging, and only this thread changes which file is the oldest.
        if let Some((seq, (path, first_seq))) = oldest {
            let released = housekeeper.released_bytes(&path, first_seq, seq);
            shared.lock().released_bytes = released;
        }
        // Oldest first, so that what is left is always the log's oldest files, which the
        // next start takes back into the log (their records are shipped) and deletes again.
        if let Some(error) = detached
            .iter()
            .find_map(|path| housekeeper.remove(path).err())
        {
            tracing::error!(%error, "a shipped log file could not be deleted; no newer one is deleted until imgate restarts, which deletes them once it ships again");
            shared.lock().deletes_held = true;
        }
        if rotate && let Err(error) = housekeeper.prepare_spare() {
            tracing::warn!(%error, "the next log file could not be made ready; the rotation will create it");
        }
    }
}

/// The part of a rotation done without the WAL's lock: makes the next file ready (unless it
/// is) and syncs what the full file holds so far, so that the rotation under the lock syncs
/// only what producers append meanwhile. Returns `false` once the log has failed.
fn prepare_rotation(shared: &Shared, housekeeper: &dyn Housekeeping) -> bool {
    if let Err(error) = housekeeper.prepare_spare() {
        tracing::warn!(%error, "the next log file could not be made ready; the rotation will create it");
    }
    let handle = shared
        .wal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sync_handle();
    let synced = handle.and_then(|handle| {
        handle.map_or(Ok(()), |mut file| {
            file.sync().map_err(|source| {
                ArchiveError::sync(std::path::Path::new("the archive log's full file"), source)
            })
        })
    });
    match synced {
        Ok(()) => true,
        Err(error) => {
            fail(shared, shared.lock(), &error);
            false
        }
    }
}

/// Rotates the full file with `wal`, whose lock the caller holds, and hands the syncer the
/// new file: everything written so far, all in the full file, is durable. Returns `false`
/// once the log has failed.
fn finish_rotation(shared: &Shared, wal: &mut dyn WalWriter) -> bool {
    let rotated = wal.rotate();
    let mut state = shared.lock();
    match rotated {
        Ok(handle) => {
            if let Some(handle) = handle {
                state.durable_seq = state.written_seq;
                state.sync_file = Some(handle);
                state.unsynced_bytes = 0;
            }
            notify(shared, state);
            true
        }
        Err(error) => {
            fail(shared, state, &error);
            false
        }
    }
}

/// Takes everything queued and writes it with `wal`, whose lock the caller holds; publishes
/// the progress, and asks the writer thread to rotate once the file is full. Returns `false`
/// once the log has failed.
pub(super) fn write_queued(shared: &Shared, wal: &mut dyn WalWriter) -> bool {
    let batch = {
        let mut state = shared.lock();
        if state.failed.is_some() {
            return false;
        }
        if state.queue.is_empty() {
            return true;
        }
        // Its bytes stay counted as queued until they are counted on disk, so that the
        // back-pressure limit holds while the batch is written.
        std::mem::take(&mut state.queue)
    };
    let appended = wal.append_batch(&batch);
    let handle = match &appended {
        Ok(true) => wal.sync_handle(),
        _ => Ok(None),
    };
    let mut state = shared.lock();
    let mut wake_writer = false;
    match appended.and(handle) {
        Ok(handle) => {
            let bytes: u64 = batch
                .iter()
                .map(|(_, p)| (p.len() + FRAME_HEADER) as u64)
                .sum();
            if let Some(handle) = handle {
                // The first file.
                state.sync_file = Some(handle);
                state.unsynced_bytes = 0;
            }
            state.unsynced_bytes += bytes;
            if let Some((last, _)) = batch.last() {
                state.written_seq = *last;
            }
            state.queued_bytes = state.queued_bytes.saturating_sub(bytes);
            state.on_disk_bytes = wal.bytes();
            if wal.rotation_due() && !state.rotation_wanted {
                state.rotation_wanted = true;
                wake_writer = std::mem::take(&mut state.writer_asleep);
            }
        }
        Err(error) => {
            // Kept, to be written first when the log is reopened.
            let mut batch = batch;
            batch.append(&mut state.queue);
            state.queued_bytes = batch
                .iter()
                .map(|(_, p)| (p.len() + FRAME_HEADER) as u64)
                .sum();
            state.queue = batch;
            fail(shared, state, &error);
            return false;
        }
    }
    notify(shared, state);
    if wake_writer {
        shared.queued.notify_one();
    }
    true
}

pub(super) fn sync_loop(shared: &Shared) {
    let mut last_sync = Instant::now();
    loop {
        let (target, mut file, generation) = {
            let mut state = shared.lock();
            loop {
                // A failed log is waited out as an idle one: the writer reopens it (and the
                // first write after that wakes this thread) or it closes.
                if state.failed.is_none()
                    && state.written_seq > state.durable_seq
                    && state.sync_file.is_some()
                {
                    let due = last_sync + shared.sync_interval;
                    let now = Instant::now();
                    if state.closing
                        || state.sync_wanted > state.durable_seq
                        || state.unsynced_bytes >= SYNC_BYTES
                        || now >= due
                    {
                        break;
                    }
                    state.syncer = SyncerWait::Interval;
                    state = shared
                        .wanted
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                    state.syncer = SyncerWait::Awake;
                    continue;
                }
                if state.closing {
                    return;
                }
                state.syncer = SyncerWait::Idle;
                state = shared
                    .wanted
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                state.syncer = SyncerWait::Awake;
            }
            let file = state.sync_file.take();
            state.unsynced_bytes = 0;
            (state.written_seq, file, state.generation)
        };
        let synced = file.as_mut().map_or(Ok(()), |f| f.sync());
        last_sync = Instant::now();
        let mut state = shared.lock();
        if state.generation != generation && synced.is_ok() {
            // The log was reopened meanwhile (and synced whole): this sync is moot.
            continue;
        }
        if state.sync_file.is_none() {
            state.sync_file = file;
        }
        match synced {
            Ok(()) => state.durable_seq = state.durable_seq.max(target),
            Err(source) => {
                let error = ArchiveError::sync(
                    std::path::Path::new("the archive log's current file"),
                    source,
                );
                fail(shared, state, &error);
                continue;
            }
        }
        notify(shared, state);
    }
}
