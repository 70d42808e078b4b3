//! Archive errors. Each names the file, offset or object concerned and what to do.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An fsync failed: what was written may not be on disk, whatever reading it back shows.
    #[error("{}: fsync failed: {source}; restart imgate (after a failed fsync the log cannot tell what reached the disk)", path.display())]
    Sync {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Damaged data in the log or a segment.
    #[error("{} is corrupt at byte {offset}: {reason}; keep the file for inspection and restore it from a copy or move it aside, then restart", path.display())]
    Corrupt {
        /// The file or object.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record out of sequence was offered to the log.
    #[error("record {got} offered where {expected} was expected")]
    Sequence {
        /// The next sequence number.
        expected: u64,
        /// What was offered.
        got: u64,
    },
    /// The local log holds as much unshipped data as it may: back-pressure.
    #[error(
        "the archive log is full ({unshipped} bytes not yet shipped, limit {limit}): the object store is not keeping up or is unreachable"
    )]
    Full {
        /// Bytes not yet shipped.
        unshipped: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The log failed and accepts nothing until its writer has reopened it.
    #[error("the archive log cannot write and refuses records until it can again: {0}")]
    Failed(String),
    /// The log is shutting down.
    #[error("the archive log is closed")]
    Closed,
    /// The object store refused or failed a request.
    #[error("object store: {key}: {message}")]
    Store {
        /// The object key.
        key: String,
        /// What the store said.
        message: String,
    },
}

impl ArchiveError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// What a failed sync of `path` is: [`Sync`](Self::Sync), unless it failed before it
    /// synced anything because no file descriptor was left (opening the folder to sync its
    /// entries), which another try recovers from.
    pub(crate) fn sync(path: &Path, source: std::io::Error) -> Self {
        // EMFILE, ENFILE.
        if matches!(source.raw_os_error(), Some(23 | 24)) {
            return Self::io(path, source);
        }
        Self::Sync {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_owned(),
            offset,
            reason: reason.into(),
        }
    }

    /// A short label for metrics (`io`, `corrupt`, `full`, ...).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Sync { .. } => "sync",
            Self::Corrupt { .. } => "corrupt",
            Self::Sequence { .. } => "sequence",
            Self::Full { .. } => "full",
            Self::Failed(_) => "failed",
            Self::Closed => "closed",
            Self::Store { .. } => "store",
        }
    }
}
