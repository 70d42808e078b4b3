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
//! notification is sent only to a marked sleeper; after a failure nothing more is written.
//! The WAL's lock is held only to append, to take files out of the log and for the last step
//! of a rotation (syncing what was appended since the writer synced the full file without the
//! lock, and renaming the next file, made ready beforehand, into place): making files ready
//! and deleting them, which can wait on the disk for many milliseconds, happen without it, so
//! that producers writing for themselves do not wait for them. A full file keeps taking
//! appends until the writer rotates it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::ArchiveError;
use super::wal::{FRAME_HEADER, Housekeeping, SyncFile, WalWriter};

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
    pub(super) release_through: Option<u64>,
    /// The current file is full: the writer should rotate it.
    pub(super) rotation_wanted: bool,
    pub(super) failed: Option<String>,
    pub(super) closing: bool,
    /// Who sleeps, so that a notification is only sent (a system call) when someone is
    /// there to receive it.
    pub(super) writer_asleep: bool,
    pub(super) syncer: SyncerWait,
    /// Bytes written since the syncer last took its target.
    pub(super) unsynced_bytes: u64,
    pub(super) blocked_waiters: usize,
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
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Records a failure: the log refuses everything from now on, and every waiter is woken.
fn fail(shared: &Shared, mut state: MutexGuard<'_, State>, error: &ArchiveError) {
    tracing::error!(%error, "archive log failed; refusing further records");
    state.failed = Some(error.to_string());
    notify(shared, state);
}

/// The writer thread: writes what is queued whenever it is woken (by a producer that waits, a
/// full file, a release or closing), rotates full files and deletes released ones; on
/// closing, syncs and returns.
pub(super) fn write_loop(shared: &Shared, housekeeper: &dyn Housekeeping) {
    loop {
        let mut state = shared.lock();
        while state.queue.is_empty()
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
        let closed = state.queue.is_empty() && state.release_through.is_none() && state.closing;
        let rotate = std::mem::take(&mut state.rotation_wanted) && !closed;
        let release = state.release_through.take();
        drop(state);
        if rotate && !prepare_rotation(shared, housekeeper) {
            return;
        }
        let mut wal = shared.wal.lock().unwrap_or_else(|p| p.into_inner());
        if closed {
            // Everything written becomes durable before the log closes.
            let synced = wal.sync();
            let mut state = shared.lock();
            match synced {
                Ok(()) => state.durable_seq = state.written_seq,
                Err(error) => return fail(shared, state, &error),
            }
            notify(shared, state);
            return;
        }
        if rotate && !finish_rotation(shared, &mut **wal) {
            return;
        }
        if !write_queued(shared, &mut **wal) {
            return;
        }
        let detached = release.map_or_else(Vec::new, |seq| wal.detach_through(seq));
        if !detached.is_empty() {
            shared.lock().on_disk_bytes = wal.bytes();
        }
        drop(wal);
        for path in detached {
            if let Err(error) = housekeeper.remove(&path) {
                return fail(shared, shared.lock(), &error);
            }
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
            file.sync()
                .map_err(|error| ArchiveError::Failed(format!("fsync failed: {error}")))
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
        state.queued_bytes = 0;
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
            state.on_disk_bytes = wal.bytes();
            if wal.rotation_due() && !state.rotation_wanted {
                state.rotation_wanted = true;
                wake_writer = std::mem::take(&mut state.writer_asleep);
            }
        }
        Err(error) => {
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
        let (target, mut file) = {
            let mut state = shared.lock();
            loop {
                if state.failed.is_some() {
                    return;
                }
                if state.written_seq > state.durable_seq && state.sync_file.is_some() {
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
            (state.written_seq, file)
        };
        let synced = file.as_mut().map_or(Ok(()), |f| f.sync());
        last_sync = Instant::now();
        let mut state = shared.lock();
        if state.sync_file.is_none() {
            state.sync_file = file;
        }
        match synced {
            Ok(()) => state.durable_seq = state.durable_seq.max(target),
            Err(error) => {
                return fail(
                    shared,
                    state,
                    &ArchiveError::Failed(format!("fsync failed: {error}")),
                );
            }
        }
        notify(shared, state);
    }
}
