//! Following the log: reading records in sequence as they become durable, from where the
//! reader left off, without reading a file from its start again.
//!
//! Invariants: [`LogTail::read`] hands out each record once, in sequence, with no gaps; it
//! reads only records the caller says are durable (no torn or half-written frame is ever
//! read); a record that is missing (its file was shipped and deleted before the reader got
//! to it) is reported as [`TailError::Missing`] with the first record still in the log, never
//! silently skipped; damage is reported with its file and offset.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::ArchiveError;
use super::fs::Filesystem;
use super::wal::{Frame, FrameReader};

/// Why [`LogTail::read`] stopped short.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The records from `wanted` are no longer in the log: they were shipped and their files
    /// deleted; the log now starts at `first` (0 when empty).
    #[error("records {wanted} to {} left the log before they were read", first.saturating_sub(1))]
    Missing {
        /// The record the reader wanted next.
        wanted: u64,
        /// The first record still in the log.
        first: u64,
    },
    /// Reading failed or found damage.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// A reader that follows a log folder.
pub struct LogTail<F: Filesystem> {
    fs: F,
    dir: PathBuf,
    next_seq: u64,
    /// The file being read, its first record and where the next frame starts.
    at: Option<(PathBuf, u64, u64)>,
}

impl<F: Filesystem> LogTail<F> {
    /// A reader of the log in `dir` whose next record is `next_seq`.
    pub fn new(fs: F, dir: &Path, next_seq: u64) -> Self {
        Self {
            fs,
            dir: dir.to_owned(),
            next_seq: next_seq.max(1),
            at: None,
        }
    }

    /// The record read next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Goes on from `seq` instead (after [`TailError::Missing`]).
    pub fn skip_to(&mut self, seq: u64) {
        self.next_seq = seq.max(1);
        self.at = None;
    }

    /// Reads records from the next one through `through` (which must be durable), calling
    /// `each(seq, payload)` for each; returns how many were read.
    pub fn read(
        &mut self,
        through: u64,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64, TailError> {
        let mut read = 0;
        while self.next_seq <= through {
            let (path, first, offset) = match self.at.clone() {
                Some(at) => at,
                None => {
                    let (path, first) = self.file_holding(self.next_seq)?;
                    (path, first, 0)
                }
            };
            let file = match self.fs.open_read(&path) {
                Ok(file) => file,
                // The file was read to its end, shipped and deleted: what follows is in a
                // later one.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && self.at.is_some() => {
                    self.at = None;
                    continue;
                }
                Err(error) => return Err(ArchiveError::io(&path, error).into()),
            };
            let len = file
                .metadata()
                .map_err(|e| ArchiveError::io(&path, e))?
                .len();
            let mut file = file;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| ArchiveError::io(&path, e))?;
            let mut frames = FrameReader::starting_at(file, len, offset);
            let mut reached_end = false;
            loop {
                let start = frames.offset();
                match frames
                    .read_frame()
                    .map_err(|e| ArchiveError::io(&path, e))?
                {
                    Some(Frame::Good { seq, payload, .. }) => {
                        if seq < self.next_seq {
                            continue;
                        }
                        if seq > self.next_seq {
                            return Err(ArchiveError::corrupt(
                                &path,
                                start,
                                format!("record {seq} where {} was expected", self.next_seq),
                            )
                            .into());
                        }
                        if seq > through {
                            self.at = Some((path.clone(), first, start));
                            break;
                        }
                        each(seq, payload);
                        read += 1;
                        self.next_seq = seq + 1;
                    }
                    // What lies past the durable point may still be being written.
                    None | Some(Frame::Incomplete) => {
                        self.at = Some((path.clone(), first, start));
                        reached_end = true;
                        break;
                    }
                    Some(Frame::Bad { reason, .. }) => {
                        return Err(ArchiveError::corrupt(&path, start, reason).into());
                    }
                }
            }
            if !reached_end || self.next_seq > through {
                break;
            }
            // The file is read to its end: the next record is in a later file, if durable.
            match self.file_holding(self.next_seq) {
                Ok((next, first_next)) if first_next == self.next_seq && next != path => {
                    self.at = Some((next, first_next, 0));
                }
                Ok(_) => {
                    return Err(ArchiveError::corrupt(
                        &path,
                        self.at.as_ref().map_or(0, |a| a.2),
                        format!(
                            "record {} should be durable but the log ends before it",
                            self.next_seq
                        ),
                    )
                    .into());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(read)
    }

    /// The log file whose records include `seq`: the last one starting at or before it.
    fn file_holding(&self, seq: u64) -> Result<(PathBuf, u64), TailError> {
        let mut files: Vec<(u64, PathBuf)> = self
            .fs
            .list(&self.dir)
            .map_err(|e| ArchiveError::io(&self.dir, e))?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .filter_map(|p| {
                let first = p.file_stem()?.to_str()?.parse().ok()?;
                Some((first, p))
            })
            .collect();
        files.sort();
        match files.iter().rev().find(|(first, _)| *first <= seq) {
            Some((first, path)) => Ok((path.clone(), *first)),
            None => Err(TailError::Missing {
                wanted: seq,
                first: files.first().map_or(0, |(first, _)| *first),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fs::StdFs;
    use crate::archive::wal::Wal;

    fn payload(seq: u64) -> Vec<u8> {
        format!("record {seq}").into_bytes()
    }

    #[test]
    fn follows_the_log_across_files_reading_each_record_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(StdFs, dir.path(), 200).expect("open");
        let mut tail = LogTail::new(StdFs, dir.path(), 1);
        let mut seen = Vec::new();
        let mut next = 1;
        for round in 0..6 {
            let batch: Vec<(u64, Vec<u8>)> = (next..next + 5).map(|s| (s, payload(s))).collect();
            next += 5;
            wal.append_batch(&batch).expect("append");
            wal.sync().expect("sync");
            if wal.rotation_due() {
                wal.rotate().expect("rotate");
            }
            // Read only part of what is there, then the rest.
            let through = next - 1 - (round % 2);
            tail.read(through, &mut |seq, bytes| {
                seen.push((seq, bytes.to_vec()));
            })
            .expect("read");
        }
        tail.read(next - 1, &mut |seq, bytes| seen.push((seq, bytes.to_vec())))
            .expect("read");
        let expected: Vec<(u64, Vec<u8>)> = (1..next).map(|s| (s, payload(s))).collect();
        assert_eq!(seen, expected);
        let files = StdFs.list(dir.path()).expect("list").len();
        assert!(files > 3, "the test crosses files: {files}");
    }

    #[test]
    fn a_file_read_to_its_end_may_be_deleted_before_the_next_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(StdFs, dir.path(), 100).expect("open");
        let mut tail = LogTail::new(StdFs, dir.path(), 1);
        let mut seen = Vec::new();
        let mut seq = 0;
        while !wal.rotation_due() {
            seq += 1;
            wal.append_batch(&[(seq, payload(seq))]).expect("append");
        }
        wal.sync().expect("sync");
        tail.read(seq, &mut |s, _| seen.push(s)).expect("read");
        wal.rotate().expect("rotate");
        for path in wal.detach_through(seq) {
            std::fs::remove_file(path).expect("remove");
        }
        wal.append_batch(&[(seq + 1, payload(seq + 1))])
            .expect("append");
        wal.sync().expect("sync");
        tail.read(seq + 1, &mut |s, _| seen.push(s))
            .expect("read on");
        assert_eq!(seen, (1..=seq + 1).collect::<Vec<_>>());
    }

    #[test]
    fn records_gone_from_the_log_are_reported_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(StdFs, dir.path(), 100).expect("open");
        for seq in 1..=12 {
            wal.append_batch(&[(seq, payload(seq))]).expect("append");
            if wal.rotation_due() {
                wal.rotate().expect("rotate");
            }
        }
        wal.sync().expect("sync");
        let gone = wal.detach_through(6);
        assert!(!gone.is_empty());
        for path in &gone {
            std::fs::remove_file(path).expect("remove");
        }
        let mut tail = LogTail::new(StdFs, dir.path(), 2);
        let first = match tail.read(12, &mut |_, _| {}) {
            Err(TailError::Missing { wanted: 2, first }) => first,
            other => panic!("expected the gap to be reported: {other:?}"),
        };
        assert!(first > 2 && first <= 7, "{first}");
        tail.skip_to(first);
        let mut seen = Vec::new();
        tail.read(12, &mut |seq, _| seen.push(seq)).expect("read");
        assert_eq!(seen, (first..=12).collect::<Vec<_>>());
    }
}
