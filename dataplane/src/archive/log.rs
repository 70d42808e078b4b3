//! The archive log: many producers, a writer thread and a syncer thread, group commit.
//!
//! Producers call [`ArchiveLog::append`], which assigns the next sequence number, encodes the
//! record and queues it. The dataplane's sessions [`queue`](ArchiveLog::queue) records they
//! have encoded beforehand ([`Draft`]), so that under the log's lock only the sequence number
//! and the timestamp are encoded. The writer appends everything queued in one write and reports
//! it *written* (in the log file: it survives a crash or kill of the process). A producer that
//! must wait for its records anyway may instead [`queue`](ArchiveLog::queue) them and write
//! them itself with [`ArchiveLog::write_now`] (one page-cache write, no thread hand-off),
//! falling back to the writer thread when the writer holds the file; the syncer
//! fsyncs whatever has been written, one fsync at a time, and reports it *durable* (it survives
//! the machine losing power). Sessions wait without holding a thread in [`ArchiveLog::written`]
//! or [`ArchiveLog::synced`]; [`ArchiveLog::wait_durable`] blocks. While one fsync runs, writes
//! continue and the next fsync covers them all, so throughput grows with concurrency instead of
//! paying an fsync per record, and waiting for a write never waits behind an fsync. The syncer
//! syncs at once when someone waits for durability or 1 MiB is unsynced; otherwise it syncs
//! once per [`LogConfig::sync_interval`], so a dataplane that forwards once records are written
//! does not spend a core on fsyncs nobody awaits. A thread is notified only when it sleeps
//! (each sleeper says so under the lock before it waits), so appending to a busy log costs no
//! system call.
//!
//! Invariants: sequence numbers are assigned under one lock in the order records are queued and
//! written in that order, and [`queue`](ArchiveLog::queue) stamps records under that lock, so
//! that their timestamps follow their sequence (only the holder of the WAL's lock takes the
//! queue, and it takes all of it); only the writer thread rotates files (a rotation fsyncs the
//! full file) and deletes them, after taking them out of the log; `durable_seq
//! <= written_seq`, both only grow, and neither passes what was written or synced; the syncer's
//! file handle and its target are published together, so a target is never claimed durable by
//! syncing another file (the writer syncs a full file itself before moving to the next); when
//! files are deleted only through records both shipped and not held by a reader that follows
//! the log ([`ArchiveLog::hold_after`], the alert outbox), and held records count as
//! unshipped; when the unshipped bytes plus the queue would exceed the limit, `append` refuses with
//! [`ArchiveError::Full`] (back-pressure) instead of growing without bound; after a write error
//! the log refuses everything ([`ArchiveError::Failed`]) until its writer has reopened it (see
//! [`log_commit`](super::log_commit)), and after a failed fsync until the process restarts,
//! because what follows a failed batch must not be acknowledged; every record refused, for a failure or back-pressure, is counted
//! in a gap, and the first record the log takes afterwards is preceded by a `gap` record
//! saying since when, why and how many; a written record waits at most one `sync_interval`
//! (plus one fsync) to become durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use super::draft::Draft;
use super::error::ArchiveError;
use super::fs::Filesystem;
use super::log_commit::{Progress, Reopen, Shared, State, sync_loop, write_loop, write_queued};
use super::record::Record;
use super::wal::{FRAME_HEADER, Recovery, Wal, WalWriter};

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Most bytes the log may hold before it has been shipped.
    pub max_unshipped_bytes: u64,
    /// Size at which a log file is rotated.
    pub max_file_bytes: u64,
    /// Longest a written record waits for an fsync when no one is waiting for it to be
    /// durable (the window a power loss can take from a dataplane that forwards once
    /// records are written).
    pub sync_interval: Duration,
    /// How long the log waits, after a failure, before it tries to write again (the wait
    /// doubles after each try that fails, up to 30 s).
    pub retry: Duration,
    /// The tenant and the writer named in the log's own records (`gap`).
    pub origin: (String, String),
    /// Whether the producers forward the events whose records the log refuses
    /// (`onArchiveFailure: pass`), as `gap` records then say.
    pub forwards_refused: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_unshipped_bytes: 1 << 30,
            max_file_bytes: 64 << 20,
            sync_interval: Duration::from_millis(100),
            retry: Duration::from_secs(1),
            origin: (String::new(), String::new()),
            forwards_refused: false,
        }
    }
}

/// A handle to the log; clone it freely.
#[derive(Clone)]
pub struct ArchiveLog {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    dir: PathBuf,
}

impl ArchiveLog {
    /// Opens and recovers the log in `dir`, and starts its committer.
    pub fn open<F: Filesystem>(
        fs: F,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(Self, Recovery), ArchiveError> {
        let (wal, recovery) = Wal::open(fs.clone(), dir, config.max_file_bytes)?;
        let housekeeper = Box::new(wal.housekeeper());
        let (folder, max_file_bytes) = (dir.to_owned(), config.max_file_bytes);
        let reopen: Box<Reopen> = Box::new(move || {
            let (wal, recovery) = Wal::open(fs.clone(), &folder, max_file_bytes)?;
            let housekeeper = Box::new(wal.housekeeper());
            Ok((
                Box::new(wal) as Box<dyn super::wal::WalWriter>,
                housekeeper as _,
                recovery,
            ))
        });
        let last = wal.next_seq() - 1;
        let state = State {
            next_seq: wal.next_seq(),
            written_seq: last,
            durable_seq: last,
            sync_file: WalWriter::sync_handle(&wal)?,
            on_disk_bytes: wal.bytes(),
            ..State::default()
        };
        let progress = tokio::sync::watch::Sender::new(Progress {
            written: last,
            durable: last,
            failed: false,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wal: Mutex::new(Box::new(wal)),
            progress,
            queued: Condvar::new(),
            wanted: Condvar::new(),
            committed: Condvar::new(),
            limit: config.max_unshipped_bytes,
            sync_interval: config.sync_interval,
            retry: config.retry,
            origin: config.origin,
            forwards_refused: config.forwards_refused,
        });
        let (writer, syncer) = (shared.clone(), shared.clone());
        let threads = vec![
            std::thread::Builder::new()
                .name("archive-write".into())
                .spawn(move || write_loop(&writer, housekeeper, &*reopen))
                .map_err(|e| ArchiveError::io(dir, e))?,
            std::thread::Builder::new()
                .name("archive-sync".into())
                .spawn(move || sync_loop(&syncer))
                .map_err(|e| ArchiveError::io(dir, e))?,
        ];
        Ok((
            Self {
                shared,
                threads: Arc::new(Mutex::new(threads)),
                dir: dir.to_owned(),
            },
            recovery,
        ))
    }

    /// The folder holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a record for the writer thread; `make` receives the sequence number assigned to
    /// it. Returns that number; the record is durable once
    /// [`wait_durable`](Self::wait_durable) returns for it.
    pub fn append(&self, make: impl FnOnce(u64) -> Record) -> Result<u64, ArchiveError> {
        self.push(|seq| make(seq).to_json(), true)
    }

    /// Queues a drafted record, stamped with the current time, for the writer thread, which is
    /// woken to write it: for a caller that must not write itself (the shipper, at idle
    /// priority, would hold the log's file while it waits for a CPU).
    pub fn append_draft(&self, draft: &Draft) -> Result<u64, ArchiveError> {
        self.push(|seq| draft.finish(seq, Utc::now()), true)
    }

    /// Queues a drafted record, stamped with the current time, without waking the writer
    /// thread: the caller follows with [`write_now`](Self::write_now),
    /// [`written`](Self::written), [`synced`](Self::synced) or
    /// [`wait_durable`](Self::wait_durable), which write it or wake the writer. Only the
    /// sequence number and the time are encoded under the log's lock. Returns the sequence
    /// number.
    pub fn queue(&self, draft: &Draft) -> Result<u64, ArchiveError> {
        self.push(|seq| draft.finish(seq, Utc::now()), false)
    }

    /// Assigns the next sequence number, encodes the record with `encode` and queues it,
    /// all under the log's lock (so that records are queued in sequence and time order).
    fn push(&self, encode: impl FnOnce(u64) -> Vec<u8>, wake: bool) -> Result<u64, ArchiveError> {
        let mut state = self.shared.lock();
        if state.closing {
            return Err(ArchiveError::Closed);
        }
        if let Some(reason) = &state.failed {
            let error = ArchiveError::Failed(reason.clone());
            Shared::refused(&mut state, &error);
            return Err(error);
        }
        let unshipped = state.unshipped();
        if unshipped >= self.shared.limit {
            let error = ArchiveError::Full {
                unshipped,
                limit: self.shared.limit,
            };
            Shared::refused(&mut state, &error);
            return Err(error);
        }
        self.shared.close_gap(&mut state, None);
        let seq = state.next_seq;
        let payload = encode(seq);
        state.next_seq += 1;
        state.queued_bytes += (payload.len() + FRAME_HEADER) as u64;
        state.queue.push((seq, payload));
        if wake && std::mem::take(&mut state.writer_asleep) {
            drop(state);
            self.shared.queued.notify_one();
        }
        Ok(seq)
    }

    /// Writes what is queued on the calling thread when the log file is free, and otherwise
    /// (the writer thread holds it) wakes the writer thread to write it; returns whether record
    /// `seq` is written (`false`: the writer thread will; wait with
    /// [`written`](Self::written)). The write goes to the page cache and does not sync.
    pub fn write_now(&self, seq: u64) -> Result<bool, ArchiveError> {
        if self.progress(seq)? {
            return Ok(true);
        }
        let wal = match self.shared.wal.try_lock() {
            Ok(wal) => Some(wal),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        match wal {
            Some(mut wal) => {
                write_queued(&self.shared, &mut **wal);
                drop(wal);
                self.progress(seq)
            }
            None => {
                self.wake_writer(seq);
                Ok(false)
            }
        }
    }

    /// Whether record `seq` is written; the log's failure, if it failed.
    fn progress(&self, seq: u64) -> Result<bool, ArchiveError> {
        let state = self.shared.lock();
        match &state.failed {
            Some(reason) => Err(ArchiveError::Failed(reason.clone())),
            None => Ok(state.written_seq >= seq),
        }
    }

    /// Wakes the writer thread if it sleeps and record `seq` is not written yet.
    fn wake_writer(&self, seq: u64) {
        let mut state = self.shared.lock();
        let wake = state.written_seq < seq && std::mem::take(&mut state.writer_asleep);
        drop(state);
        if wake {
            self.shared.queued.notify_one();
        }
    }

    /// Waits until record `seq` is durable on local disk.
    pub fn wait_durable(&self, seq: u64) -> Result<(), ArchiveError> {
        self.wake_writer(seq);
        let mut state = self.want_sync(seq);
        loop {
            if state.durable_seq >= seq {
                return Ok(());
            }
            if let Some(reason) = &state.failed {
                return Err(ArchiveError::Failed(reason.clone()));
            }
            state.blocked_waiters += 1;
            state = self
                .shared
                .committed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.blocked_waiters -= 1;
        }
    }

    /// Waits, without blocking a thread, until record `seq` is written to the log file.
    pub async fn written(&self, seq: u64) -> Result<(), ArchiveError> {
        self.wake_writer(seq);
        self.reached(seq, |p| p.written).await
    }

    /// Waits, without blocking a thread, until record `seq` is durable on local disk.
    pub async fn synced(&self, seq: u64) -> Result<(), ArchiveError> {
        self.wake_writer(seq);
        drop(self.want_sync(seq));
        self.reached(seq, |p| p.durable).await
    }

    /// Tells the syncer that someone waits for record `seq` to be durable, so that it syncs
    /// now instead of at its next interval.
    fn want_sync(&self, seq: u64) -> MutexGuard<'_, State> {
        let mut state = self.shared.lock();
        if seq > state.sync_wanted {
            state.sync_wanted = seq;
            self.shared.wanted.notify_one();
        }
        state
    }

    async fn reached(&self, seq: u64, mark: impl Fn(&Progress) -> u64) -> Result<(), ArchiveError> {
        let mut progress = self.shared.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.failed || mark(p) >= seq)
            .await
            .map(|p| mark(&p) >= seq)
            .unwrap_or(false);
        if reached {
            return Ok(());
        }
        let state = self.shared.lock();
        match &state.failed {
            Some(reason) => Err(ArchiveError::Failed(reason.clone())),
            None if state.closing => Err(ArchiveError::Closed),
            // It failed, and was reopened before this waiter looked: whether this record was
            // kept is not known here; the caller treats it as failed.
            None => Err(ArchiveError::Failed(
                "the log failed while this record waited".into(),
            )),
        }
    }

    /// The highest sequence number assigned so far (durable or not).
    pub fn last_seq(&self) -> u64 {
        self.shared.lock().next_seq - 1
    }

    /// Why the log refuses records, while it cannot write.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failed.clone()
    }

    /// Whether the log failed in a way only a restart recovers from (an fsync failed).
    pub fn failed_for_good(&self) -> bool {
        self.shared.lock().for_good
    }

    /// Closes the gap the log is in, if it writes again (back-pressure ended, or it was
    /// reopened) and has not recorded it yet: its `gap` record is queued now, for a caller
    /// about to flush the log.
    pub fn record_gap(&self) {
        let mut state = self.shared.lock();
        if state.failed.is_none() {
            self.shared.close_gap(&mut state, None);
        }
    }

    /// Records refused since the log opened (it could not write, or it was full).
    pub fn refused(&self) -> u64 {
        self.shared.lock().refused_total
    }

    /// The highest sequence number that is durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared.lock().durable_seq
    }

    /// Bytes in the log not yet released by the shipper: queued, or on disk and not yet
    /// shipped (a release is measured by the writer thread, so it shows a moment later).
    pub fn unshipped_bytes(&self) -> u64 {
        self.shared.lock().unshipped()
    }

    /// Lets the log delete files holding only records at or below `seq` (shipped), and not
    /// past what a [hold](Self::hold_after) keeps.
    pub fn release_through(&self, seq: u64) {
        let mut state = self.shared.lock();
        state.shipped_seq = state.shipped_seq.max(seq);
        state.release_through = Some(state.releasable());
        drop(state);
        self.shared.queued.notify_one();
    }

    /// Keeps every record after `seq` in the log, shipped or not, until a later call moves
    /// the hold on: a reader that follows the log (the alert outbox) holds what it has not
    /// read yet. Held records count as unshipped, so a reader that stops holds back the log.
    pub fn hold_after(&self, seq: u64) {
        let mut state = self.shared.lock();
        state.hold = Some(seq);
        if state.shipped_seq > 0 {
            state.release_through = Some(state.releasable());
            drop(state);
            self.shared.queued.notify_one();
        }
    }

    /// Waits, without blocking a thread and without asking for an fsync, until a record
    /// after `seq` is durable; returns the highest durable record. While the log has failed
    /// it waits on, for the records written once it writes again.
    pub async fn durable_after(&self, seq: u64) -> u64 {
        let mut progress = self.shared.progress.subscribe();
        let durable = progress
            .wait_for(|p| p.durable > seq)
            .await
            .map(|p| p.durable);
        match durable {
            Ok(durable) => durable,
            // The log is gone: nothing more becomes durable.
            Err(_) => std::future::pending().await,
        }
    }

    /// Writes and syncs what is queued (with the `gap` record of a gap still open; a log that
    /// failed, unless for good, is tried once more), stops the writer and the syncer and
    /// waits for them.
    pub fn close(&self) {
        {
            let mut state = self.shared.lock();
            state.closing = true;
            if state.failed.is_none() {
                self.shared.close_gap(&mut state, None);
            }
        }
        self.shared.queued.notify_all();
        self.shared.wanted.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in threads {
            let _ = handle.join();
        }
    }
}
