//! Where the outbox is kept across restarts: a snapshot (`state.json`) and a journal of the
//! deliveries since (`sent.jsonl`), so that a delivery costs one small append, not a rewrite
//! of every alert.
//!
//! Invariants: the snapshot is replaced atomically and fsynced; a delivery is appended to the
//! journal and synced right after the receiver acknowledged it; the journal is emptied only
//! after a snapshot holding everything it says is durable (the caller holds the outbox, so no
//! delivery is recorded in between); loading gives the snapshot and the journal's entries,
//! which the caller applies after reading the log again from the snapshot's cursor (the log
//! holds every record after it), since alerts opened after the snapshot are made again with
//! the same ids; a torn last line (a crash mid-append) is ignored: at worst that notice is sent
//! again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::outbox::{Notice, Outbox, Status};
use crate::archive::fs::{Filesystem, StdFs};

/// The snapshot's file, inside the alerts folder.
pub const STATE_FILE: &str = "state.json";
/// The journal's file, inside the alerts folder.
pub const JOURNAL_FILE: &str = "sent.jsonl";

/// One delivery in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The receiver.
    pub receiver: String,
    /// What it took.
    pub status: Status,
    /// The alert.
    pub id: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The outbox's files.
pub struct Keeper {
    dir: PathBuf,
    journal: File,
}

/// What [`Keeper::open`] found.
pub struct Loaded {
    /// The snapshot, when there is one.
    pub snapshot: Option<Outbox>,
    /// The deliveries recorded since.
    pub sent: Vec<Sent>,
}

/// Why the outbox's files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The snapshot is damaged.
    #[error("{} is damaged ({reason}); move it aside to start over from the log's end (alerts for records since it was last written are then not sent)", path.display())]
    Damaged {
        /// Which.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeepError + '_ {
    move |source| KeepError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Keeper {
    /// Opens the files in `dir`, creating the folder.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), KeepError> {
        StdFs.create_dir_all(dir).map_err(io(dir))?;
        let state = dir.join(STATE_FILE);
        let snapshot = match StdFs.read(&state) {
            Ok(bytes) => Some(Outbox::from_json(&bytes).map_err(|e| KeepError::Damaged {
                path: state.clone(),
                reason: e.to_string(),
            })?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io(&state)(error)),
        };
        let path = dir.join(JOURNAL_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(io(&path)(error)),
        };
        let sent = text
            .lines()
            .filter_map(|line| match serde_json::from_str(line) {
                Ok(entry) => Some(entry),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "a torn or damaged line of the alert journal is ignored; its notice may be sent again");
                    None
                }
            })
            .collect();
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok((
            Self {
                dir: dir.to_owned(),
                journal,
            },
            Loaded { snapshot, sent },
        ))
    }

    /// Replaces the snapshot with `outbox` and empties the journal.
    pub fn snapshot(&mut self, outbox: &Outbox) -> Result<(), KeepError> {
        self.snapshot_json(&outbox.to_json())
    }

    /// Replaces the snapshot with `json` (an outbox's) and empties the journal.
    pub fn snapshot_json(&mut self, json: &[u8]) -> Result<(), KeepError> {
        let state = self.dir.join(STATE_FILE);
        StdFs.write_atomic(&state, json).map_err(io(&state))?;
        let journal = self.dir.join(JOURNAL_FILE);
        self.journal.set_len(0).map_err(io(&journal))?;
        self.journal.sync_data().map_err(io(&journal))
    }

    /// Records that `receiver` took `notices` at `at`.
    pub fn record(
        &mut self,
        receiver: &str,
        notices: &[Notice],
        at: DateTime<Utc>,
    ) -> Result<(), KeepError> {
        let mut lines = Vec::new();
        for notice in notices {
            let entry = Sent {
                receiver: receiver.to_owned(),
                status: notice.status,
                id: notice.alert.id.clone(),
                at,
            };
            serde_json::to_writer(&mut lines, &entry)
                .unwrap_or_else(|e| unreachable!("an entry serializes: {e}"));
            lines.push(b'\n');
        }
        let journal = self.dir.join(JOURNAL_FILE);
        self.journal.write_all(&lines).map_err(io(&journal))?;
        self.journal.sync_data().map_err(io(&journal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::outbox::tests::sample;

    #[test]
    fn deliveries_since_the_snapshot_come_back_and_a_torn_line_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut keeper, loaded) = Keeper::open(dir.path()).expect("open");
        assert!(loaded.snapshot.is_none() && loaded.sent.is_empty());
        let outbox = Outbox::starting_after(41);
        keeper.snapshot(&outbox).expect("snapshot");
        let notice = sample();
        let at = notice.alert.first;
        keeper
            .record("hook", std::slice::from_ref(&notice), at)
            .expect("record");
        drop(keeper);
        let journal = dir.path().join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&journal)
            .expect("open");
        file.write_all(b"{\"receiver\":\"ho").expect("torn");
        let (mut keeper, loaded) = Keeper::open(dir.path()).expect("open again");
        assert_eq!(loaded.snapshot.map(|o| o.cursor), Some(41));
        assert_eq!(
            loaded.sent,
            [Sent {
                receiver: "hook".into(),
                status: Status::Firing,
                id: notice.alert.id.clone(),
                at
            }]
        );
        keeper.snapshot(&outbox).expect("snapshot");
        assert_eq!(std::fs::read(&journal).expect("journal").len(), 0);
    }
}
