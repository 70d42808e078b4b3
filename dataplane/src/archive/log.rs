//! The archive log: many producers, one committer thread, group commit.
//!
//! Producers call [`ArchiveLog::append`], which assigns the next sequence number, encodes the
//! record and queues it; the committer writes everything queued in one batch and one fsync,
//! then wakes the producers waiting in [`ArchiveLog::wait_durable`]. While one fsync runs, the
//! next batch accumulates, so throughput grows with concurrency instead of paying an fsync
//! per record.
//!
//! Invariants: sequence numbers are assigned under one lock in the order records are queued
//! and written in that order; `durable_seq` only grows and never passes what was fsynced;
//! when the unshipped bytes plus the queue would exceed the limit, `append` refuses with
//! [`ArchiveError::Full`] (back-pressure) instead of growing without bound; after a write
//! error the log refuses everything ([`ArchiveError::Failed`]) until it is reopened, because
//! what follows a failed batch must not be acknowledged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::error::ArchiveError;
use super::fs::Filesystem;
use super::record::Record;
use super::wal::{FRAME_HEADER, Recovery, Wal};

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Most bytes the log may hold before it has been shipped.
    pub max_unshipped_bytes: u64,
    /// Size at which a log file is rotated.
    pub max_file_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_unshipped_bytes: 1 << 30,
            max_file_bytes: 64 << 20,
        }
    }
}

#[derive(Default)]
struct State {
    queue: Vec<(u64, Vec<u8>)>,
    queued_bytes: u64,
    next_seq: u64,
    durable_seq: u64,
    on_disk_bytes: u64,
    release_through: Option<u64>,
    failed: Option<String>,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    queued: Condvar,
    committed: Condvar,
    limit: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A handle to the log; clone it freely.
#[derive(Clone)]
pub struct ArchiveLog {
    shared: Arc<Shared>,
    committer: Arc<Mutex<Option<JoinHandle<()>>>>,
    dir: PathBuf,
}

impl ArchiveLog {
    /// Opens and recovers the log in `dir`, and starts its committer.
    pub fn open<F: Filesystem>(
        fs: F,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(Self, Recovery), ArchiveError> {
        let (wal, recovery) = Wal::open(fs, dir, config.max_file_bytes)?;
        let state = State {
            next_seq: wal.next_seq(),
            durable_seq: wal.next_seq() - 1,
            on_disk_bytes: wal.bytes(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            queued: Condvar::new(),
            committed: Condvar::new(),
            limit: config.max_unshipped_bytes,
        });
        let worker = shared.clone();
        let committer = std::thread::Builder::new()
            .name("archive-commit".into())
            .spawn(move || commit_loop(&worker, wal))
            .map_err(|e| ArchiveError::io(dir, e))?;
        Ok((
            Self {
                shared,
                committer: Arc::new(Mutex::new(Some(committer))),
                dir: dir.to_owned(),
            },
            recovery,
        ))
    }

    /// The folder holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a record; `make` receives the sequence number assigned to it. Returns that
    /// number; the record is durable once [`wait_durable`](Self::wait_durable) returns for it.
    pub fn append(&self, make: impl FnOnce(u64) -> Record) -> Result<u64, ArchiveError> {
        let mut state = self.shared.lock();
        if let Some(reason) = &state.failed {
            return Err(ArchiveError::Failed(reason.clone()));
        }
        if state.closing {
            return Err(ArchiveError::Closed);
        }
        let unshipped = state.on_disk_bytes + state.queued_bytes;
        if unshipped >= self.shared.limit {
            return Err(ArchiveError::Full {
                unshipped,
                limit: self.shared.limit,
            });
        }
        let seq = state.next_seq;
        let payload = make(seq).to_json();
        state.next_seq += 1;
        state.queued_bytes += (payload.len() + FRAME_HEADER) as u64;
        state.queue.push((seq, payload));
        drop(state);
        self.shared.queued.notify_one();
        Ok(seq)
    }

    /// Waits until record `seq` is durable on local disk.
    pub fn wait_durable(&self, seq: u64) -> Result<(), ArchiveError> {
        let mut state = self.shared.lock();
        loop {
            if state.durable_seq >= seq {
                return Ok(());
            }
            if let Some(reason) = &state.failed {
                return Err(ArchiveError::Failed(reason.clone()));
            }
            state = self
                .shared
                .committed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The highest sequence number assigned so far (durable or not).
    pub fn last_seq(&self) -> u64 {
        self.shared.lock().next_seq - 1
    }

    /// The highest sequence number that is durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared.lock().durable_seq
    }

    /// Bytes in the log not yet released by the shipper.
    pub fn unshipped_bytes(&self) -> u64 {
        let state = self.shared.lock();
        state.on_disk_bytes + state.queued_bytes
    }

    /// Lets the log delete files holding only records at or below `seq` (shipped).
    pub fn release_through(&self, seq: u64) {
        self.shared.lock().release_through = Some(seq);
        self.shared.queued.notify_one();
    }

    /// Writes what is queued, stops the committer and waits for it.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.queued.notify_all();
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn commit_loop<F: Filesystem>(shared: &Shared, mut wal: Wal<F>) {
    loop {
        let (batch, release) = {
            let mut state = shared.lock();
            while state.queue.is_empty() && state.release_through.is_none() && !state.closing {
                state = shared
                    .queued
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.queue.is_empty() && state.release_through.is_none() && state.closing {
                return;
            }
            state.queued_bytes = 0;
            (
                std::mem::take(&mut state.queue),
                state.release_through.take(),
            )
        };
        let written = wal.write_batch(&batch);
        let released = match release {
            Some(seq) => wal.remove_through(seq),
            None => Ok(()),
        };
        let mut state = shared.lock();
        match written.and(released) {
            Ok(()) => {
                if let Some((last, _)) = batch.last() {
                    state.durable_seq = *last;
                }
                state.on_disk_bytes = wal.bytes();
            }
            Err(error) => {
                tracing::error!(%error, "archive log write failed; refusing further records");
                state.failed = Some(error.to_string());
            }
        }
        drop(state);
        shared.committed.notify_all();
    }
}
