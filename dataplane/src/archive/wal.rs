//! The write-ahead log: append-only files of checksummed frames on local disk.
//!
//! Frame: `len: u32 LE | crc32c: u32 LE | seq: u64 LE | payload (len bytes)`; the checksum
//! covers `seq` and the payload. Files are named by the sequence number of their first frame
//! (`00000000000000000001.wal`) and rotated ([`Wal::rotate`]) once they pass `max_file_bytes`.
//! The next file is made ready beforehand, without the log's lock ([`Housekeeping`]): created
//! as `next/spare.wal` with `max_file_bytes` of disk reserved ([`LogFile::reserve`]; best
//! effort), so that appends never allocate blocks while the syncer writes the file back, and a
//! rotation only syncs the full file and renames the spare. A file's length is always the end
//! of its last frame. Recovery and readers read files in pieces ([`FrameReader`]), so neither
//! holds a whole file in memory.
//!
//! Invariants:
//! - sequence numbers are consecutive across all files, from the first file's name on;
//! - a batch is appended ([`Wal::append_batch`]) and becomes durable only when a sync of its
//!   file returns, and of the folder too when the file was renamed into place; a file is synced
//!   before the log moves on to the next one, so every record in an earlier file is durable; a
//!   batch that fails part-way is cut off again, so the log never holds half a frame that a
//!   later batch would follow;
//! - recovery cuts a torn tail (an incomplete or bad last frame of the last file) and reports
//!   any other damage with its file and byte offset: a corrupt record is never skipped; a spare
//!   left by a crash holds no record and is replaced;
//! - files leave the log only when every record in them has been shipped
//!   ([`Wal::detach_through`]), and are deleted oldest first, without the log's lock
//!   ([`Housekeeping::remove`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::error::ArchiveError;
use super::fs::{Filesystem, LogFile};

/// Bytes before each payload.
pub const FRAME_HEADER: usize = 16;
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// One log file.
#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Records in the log.
    pub records: u64,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
    /// The last sequence number in the log (0 when empty).
    pub last_seq: u64,
}

/// The folder, inside the log's, where the next file is made ready.
const SPARE_DIR: &str = "next";
/// The next file's name while it is made ready.
const SPARE_FILE: &str = "spare.wal";

/// The log.
pub struct Wal<F: Filesystem> {
    fs: F,
    dir: PathBuf,
    files: Vec<Segment>,
    current: Option<F::File>,
    next_seq: u64,
    max_file_bytes: u64,
    /// The next file, once made ready.
    spare: Arc<Mutex<Option<F::File>>>,
    /// Whether the current file's name still waits for a sync of the folder (it was renamed
    /// into place); shared with its [`SyncHandle`]s.
    name_unsynced: Arc<AtomicBool>,
}

/// What the archive log needs of a [`Wal`], without its filesystem type, so that the log can
/// share one between its writer thread and the producers that write for themselves.
pub trait WalWriter: Send {
    /// See [`Wal::rotation_due`].
    fn rotation_due(&self) -> bool;
    /// See [`Wal::append_batch`].
    fn append_batch(&mut self, batch: &[(u64, Vec<u8>)]) -> Result<bool, ArchiveError>;
    /// See [`Wal::sync_handle`].
    fn sync_handle(&self) -> Result<Option<Box<dyn SyncFile>>, ArchiveError>;
    /// See [`Wal::sync`].
    fn sync(&mut self) -> Result<(), ArchiveError>;
    /// See [`Wal::rotate`].
    fn rotate(&mut self) -> Result<Option<Box<dyn SyncFile>>, ArchiveError>;
    /// See [`Wal::detach_through`].
    fn detach_through(&mut self, seq: u64) -> Vec<PathBuf>;
    /// See [`Wal::bytes`].
    fn bytes(&self) -> u64;
    /// See [`Wal::oldest`].
    fn oldest(&self) -> Option<(PathBuf, u64)>;
}

impl<F: Filesystem> WalWriter for Wal<F> {
    fn rotation_due(&self) -> bool {
        Wal::rotation_due(self)
    }

    fn append_batch(&mut self, batch: &[(u64, Vec<u8>)]) -> Result<bool, ArchiveError> {
        Wal::append_batch(self, batch)
    }

    fn sync_handle(&self) -> Result<Option<Box<dyn SyncFile>>, ArchiveError> {
        Ok(Wal::sync_handle(self)?.map(|f| Box::new(f) as Box<dyn SyncFile>))
    }

    fn sync(&mut self) -> Result<(), ArchiveError> {
        Wal::sync(self)
    }

    fn rotate(&mut self) -> Result<Option<Box<dyn SyncFile>>, ArchiveError> {
        Ok(Wal::rotate(self)?.map(|f| Box::new(f) as Box<dyn SyncFile>))
    }

    fn detach_through(&mut self, seq: u64) -> Vec<PathBuf> {
        Wal::detach_through(self, seq)
    }

    fn bytes(&self) -> u64 {
        Wal::bytes(self)
    }

    fn oldest(&self) -> Option<(PathBuf, u64)> {
        Wal::oldest(self)
    }
}

/// The file work the log's writer thread does without holding the log's lock, so that
/// producers keep appending meanwhile: making the next file ready, deleting shipped files.
pub trait Housekeeping: Send {
    /// Makes the next file ready for [`Wal::rotate`], unless it is: creates it and reserves
    /// its disk.
    fn prepare_spare(&self) -> Result<(), ArchiveError>;
    /// Deletes a file that [`Wal::detach_through`] took out of the log.
    fn remove(&self, path: &Path) -> Result<(), ArchiveError>;
    /// The bytes at the start of `file` (the log's oldest, see [`Wal::oldest`], whose first
    /// record is `first_seq`) that hold records at or below `through`. Each byte is read once:
    /// a call goes on from where the last one on the same file stopped. What cannot be read
    /// counts as not released (the figure only ever errs high).
    fn released_bytes(&mut self, file: &Path, first_seq: u64, through: u64) -> u64;
}

/// [`Housekeeping`] for a [`Wal`] on filesystem `F`.
pub struct Housekeeper<F: Filesystem> {
    fs: F,
    dir: PathBuf,
    max_file_bytes: u64,
    spare: Arc<Mutex<Option<F::File>>>,
    /// How far [`Housekeeping::released_bytes`] has read: the file, the record next, and
    /// where it starts.
    released: Option<(PathBuf, u64, u64)>,
}

impl<F: Filesystem> Housekeeper<F> {
    /// Reads on from `(next_seq, offset)` in `file` past the records at or below `through`;
    /// returns where it stopped.
    fn read_released(
        &self,
        file: &Path,
        (mut next_seq, mut offset): (u64, u64),
        through: u64,
    ) -> std::io::Result<(u64, u64)> {
        let mut handle = self.fs.open_read(file)?;
        let len = handle.metadata()?.len();
        std::io::Seek::seek(&mut handle, std::io::SeekFrom::Start(offset))?;
        let mut frames = FrameReader::starting_at(handle, len, offset);
        while next_seq <= through {
            match frames.read_frame()? {
                Some(Frame::Good { seq, len, .. }) if seq == next_seq => {
                    next_seq += 1;
                    offset += len as u64;
                }
                _ => break,
            }
        }
        Ok((next_seq, offset))
    }
}

impl<F: Filesystem> Housekeeping for Housekeeper<F> {
    fn prepare_spare(&self) -> Result<(), ArchiveError> {
        if lock(&self.spare).is_some() {
            return Ok(());
        }
        let folder = self.dir.join(SPARE_DIR);
        self.fs
            .create_dir_all(&folder)
            .map_err(|e| ArchiveError::io(&folder, e))?;
        let file = open_current(&self.fs, &spare_path(&self.dir), self.max_file_bytes)?;
        *lock(&self.spare) = Some(file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<(), ArchiveError> {
        self.fs.remove(path).map_err(|e| ArchiveError::io(path, e))
    }

    fn released_bytes(&mut self, file: &Path, first_seq: u64, through: u64) -> u64 {
        let from = match &self.released {
            Some((path, next_seq, offset)) if path == file => (*next_seq, *offset),
            _ => (first_seq, 0),
        };
        match self.read_released(file, from, through) {
            Ok((next_seq, offset)) => {
                self.released = Some((file.to_owned(), next_seq, offset));
                offset
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "the shipped part of the oldest log file could not be measured; it counts as unshipped");
                from.1
            }
        }
    }
}

/// A handle that syncs the current file from another thread; its first sync also syncs the
/// log's folder when the file was renamed into place, so that its name is durable with it.
pub struct SyncHandle<F: Filesystem> {
    file: F::File,
    fs: F,
    dir: PathBuf,
    name_unsynced: Arc<AtomicBool>,
}

/// What the syncer thread holds: a way to make the current file durable.
pub trait SyncFile: Send {
    /// Makes everything appended to the file so far durable, and its name.
    fn sync(&mut self) -> std::io::Result<()>;
}

impl<F: Filesystem> SyncFile for SyncHandle<F> {
    fn sync(&mut self) -> std::io::Result<()> {
        sync_with_name(&self.fs, &self.dir, &self.name_unsynced, &mut self.file)
    }
}

/// Syncs `file`, and first the folder `dir` when the file's name is not durable yet.
fn sync_with_name<F: Filesystem>(
    fs: &F,
    dir: &Path,
    name_unsynced: &AtomicBool,
    file: &mut F::File,
) -> std::io::Result<()> {
    if name_unsynced.load(Ordering::Acquire) {
        fs.sync_dir(dir)?;
        name_unsynced.store(false, Ordering::Release);
    }
    file.sync()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn spare_path(dir: &Path) -> PathBuf {
    dir.join(SPARE_DIR).join(SPARE_FILE)
}

/// Removes a spare that a crash or an earlier run left (it never holds a record).
fn remove_leftover<F: Filesystem>(fs: &F, path: &Path) -> Result<(), ArchiveError> {
    match fs.remove(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(ArchiveError::io(path, error))
        }
        _ => Ok(()),
    }
}

/// Encodes one frame into `out`.
pub fn encode_frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One decoded frame, or why decoding stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A good frame and its total length.
    Good {
        /// Its sequence number.
        seq: u64,
        /// Its payload.
        payload: &'a [u8],
        /// Header plus payload.
        len: usize,
    },
    /// The file ends inside the frame.
    Incomplete,
    /// The frame is wrong; `to_end` when it reaches the end of the file (a torn write rather
    /// than damage inside the log).
    Bad {
        /// What is wrong.
        reason: &'static str,
        /// Whether the frame, as its length field gives it, reaches the end of the file.
        to_end: bool,
    },
}

/// A frame's header, read before its payload.
struct Header {
    len: usize,
    crc: u32,
    seq: [u8; 8],
}

impl Header {
    /// Parses the first [`FRAME_HEADER`] bytes of a frame.
    fn parse(bytes: &[u8; FRAME_HEADER]) -> Result<Self, &'static str> {
        let [l0, l1, l2, l3, c0, c1, c2, c3, seq @ ..] = *bytes;
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        if len > MAX_PAYLOAD {
            return Err("length field larger than any record");
        }
        Ok(Self {
            len,
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            seq,
        })
    }

    /// The sequence number, once `payload` (this frame's) has matched the checksum.
    fn verify(&self, payload: &[u8]) -> Result<u64, &'static str> {
        let actual = crc32c::crc32c_append(crc32c::crc32c(&self.seq), payload);
        if actual == self.crc {
            Ok(u64::from_le_bytes(self.seq))
        } else {
            Err("checksum mismatch")
        }
    }
}

/// Reads the frames of a log file one at a time through a buffer of [`READ_BUFFER`] bytes,
/// so that reading a file holds no more than that and the largest record, however large the
/// file is.
pub struct FrameReader<R> {
    reader: std::io::BufReader<R>,
    len: u64,
    offset: u64,
    payload: Vec<u8>,
}

/// Bytes read from a log file at a time.
const READ_BUFFER: usize = 256 << 10;

impl<R: Read> FrameReader<R> {
    /// Reads `file`, whose length is `len`, from its start.
    pub fn new(file: R, len: u64) -> Self {
        Self::starting_at(file, len, 0)
    }

    /// Reads `file`, whose length is `len`, from `offset`, where it is positioned and a frame
    /// starts.
    pub fn starting_at(file: R, len: u64, offset: u64) -> Self {
        Self {
            reader: std::io::BufReader::with_capacity(READ_BUFFER, file),
            len,
            offset,
            payload: Vec::new(),
        }
    }

    /// Where the frame that [`read_frame`](Self::read_frame) reads next starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, or `None` at the end of the file. After anything but a good frame the
    /// reader stays where that frame starts and reads no further.
    pub fn read_frame(&mut self) -> std::io::Result<Option<Frame<'_>>> {
        let remaining = self.len.saturating_sub(self.offset);
        if remaining == 0 {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER];
        if remaining < FRAME_HEADER as u64 || !self.fill(&mut header)? {
            return Ok(Some(Frame::Incomplete));
        }
        let header = match Header::parse(&header) {
            Ok(header) => header,
            Err(reason) => {
                return Ok(Some(Frame::Bad {
                    reason,
                    to_end: true,
                }));
            }
        };
        let len = FRAME_HEADER + header.len;
        if len as u64 > remaining {
            return Ok(Some(Frame::Incomplete));
        }
        // Only a length the file can hold is allocated, whatever the length field says.
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(header.len, 0);
        let complete = self.fill(&mut payload)?;
        self.payload = payload;
        if !complete {
            return Ok(Some(Frame::Incomplete));
        }
        match header.verify(&self.payload) {
            Ok(seq) => {
                self.offset += len as u64;
                Ok(Some(Frame::Good {
                    seq,
                    payload: &self.payload,
                    len,
                }))
            }
            Err(reason) => Ok(Some(Frame::Bad {
                reason,
                to_end: len as u64 >= remaining,
            })),
        }
    }

    /// Fills `buffer`; false when the file ends first.
    fn fill(&mut self, buffer: &mut [u8]) -> std::io::Result<bool> {
        match self.reader.read_exact(buffer) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// Opens a log file to read its frames.
fn read_frames<F: Filesystem>(fs: &F, path: &Path) -> Result<FrameReader<File>, ArchiveError> {
    let file = fs.open_read(path).map_err(|e| ArchiveError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| ArchiveError::io(path, e))?
        .len();
    Ok(FrameReader::new(file, len))
}

/// Opens the file the log appends to and reserves `max_file_bytes` of disk for it. A
/// filesystem that cannot reserve, or has no room to, still takes appends.
fn open_current<F: Filesystem>(
    fs: &F,
    path: &Path,
    max_file_bytes: u64,
) -> Result<F::File, ArchiveError> {
    let file = fs
        .open_append(path)
        .map_err(|e| ArchiveError::io(path, e))?;
    if let Err(error) = file.reserve(max_file_bytes) {
        tracing::debug!(path = %path.display(), %error, "log file not preallocated");
    }
    Ok(file)
}

fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

impl<F: Filesystem> Wal<F> {
    /// Opens (creating if needed) the log in `dir` and recovers it.
    pub fn open(fs: F, dir: &Path, max_file_bytes: u64) -> Result<(Self, Recovery), ArchiveError> {
        let max_file_bytes = max_file_bytes.max(1);
        fs.create_dir_all(dir)
            .map_err(|e| ArchiveError::io(dir, e))?;
        let mut files = Vec::new();
        let mut recovery = Recovery::default();
        let paths: Vec<PathBuf> = fs
            .list(dir)
            .map_err(|e| ArchiveError::io(dir, e))?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        let mut expected: Option<u64> = None;
        for (index, path) in paths.iter().enumerate() {
            let is_last = index + 1 == paths.len();
            let first_seq: u64 = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    ArchiveError::corrupt(path, 0, "the file name is not a sequence number")
                })?;
            if let Some(expected) = expected
                && first_seq != expected
            {
                return Err(ArchiveError::corrupt(
                    path,
                    0,
                    format!(
                        "starts at record {first_seq}, expected {expected}: a log file is missing"
                    ),
                ));
            }
            let mut frames = read_frames(&fs, path)?;
            let (records, good_len) = scan(path, &mut frames, first_seq, is_last)?;
            if good_len < frames.len {
                fs.truncate(path, good_len)
                    .map_err(|e| ArchiveError::io(path, e))?;
                recovery.truncated_bytes += frames.len - good_len;
            }
            recovery.records += records;
            expected = Some(first_seq + records);
            files.push(Segment {
                first_seq,
                path: path.clone(),
                bytes: good_len,
                records,
            });
        }
        remove_leftover(&fs, &spare_path(dir))?;
        let next_seq = expected.unwrap_or(1);
        recovery.last_seq = next_seq - 1;
        let current = match files.last() {
            Some(last) => Some(open_current(&fs, &last.path, max_file_bytes)?),
            None => None,
        };
        Ok((
            Self {
                fs,
                dir: dir.to_owned(),
                files,
                current,
                next_seq,
                max_file_bytes,
                spare: Arc::default(),
                // The last run may have renamed the current file into place and stopped
                // before syncing the folder: the first sync syncs it too.
                name_unsynced: Arc::new(AtomicBool::new(true)),
            },
            recovery,
        ))
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of the log's files on disk (shipped records in the oldest file included).
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Whether the current file is full: the writer thread should [`rotate`](Self::rotate).
    pub fn rotation_due(&self) -> bool {
        self.files
            .last()
            .is_some_and(|f| f.bytes >= self.max_file_bytes)
    }

    /// Appends a batch of `(seq, payload)` to the current file without syncing it (see
    /// [`sync_handle`](Self::sync_handle)), starting the first file if there is none yet.
    /// Sequence numbers must continue the log. Returns whether a file was started.
    pub fn append_batch(&mut self, batch: &[(u64, Vec<u8>)]) -> Result<bool, ArchiveError> {
        let Some((first, _)) = batch.first() else {
            return Ok(false);
        };
        if *first != self.next_seq {
            return Err(ArchiveError::Sequence {
                expected: self.next_seq,
                got: *first,
            });
        }
        let first_file = self.current.is_none();
        if first_file {
            let path = self.next_path();
            let file = open_current(&self.fs, &path, self.max_file_bytes)?;
            self.start_file(path, file, false);
        }
        let mut buffer =
            Vec::with_capacity(batch.iter().map(|(_, p)| p.len() + FRAME_HEADER).sum());
        for (seq, payload) in batch {
            encode_frame(*seq, payload, &mut buffer);
        }
        let (Some(segment), Some(file)) = (self.files.last_mut(), self.current.as_mut()) else {
            unreachable!("a file was opened above");
        };
        if let Err(error) = file.append(&buffer) {
            // Leave no partial frame for the next batch to follow.
            let path = segment.path.clone();
            let _ = self.fs.truncate(&path, segment.bytes);
            self.current = Some(open_current(&self.fs, &path, self.max_file_bytes)?);
            return Err(ArchiveError::io(&path, error));
        }
        segment.bytes += buffer.len() as u64;
        segment.records += batch.len() as u64;
        self.next_seq += batch.len() as u64;
        Ok(first_file)
    }

    /// Syncs the current file whole and moves on to the next, named for the next sequence
    /// number: the spare made ready by [`Housekeeping::prepare_spare`], renamed into place
    /// (its name becomes durable with its first sync), or else a file created now. Returns a
    /// handle that syncs the new file; `None` when there is no file yet.
    pub fn rotate(&mut self) -> Result<Option<SyncHandle<F>>, ArchiveError> {
        if self.current.is_none() {
            return Ok(None);
        }
        // The full file's name too, if it was renamed into place and not synced since.
        self.sync()?;
        let path = self.next_path();
        let spare = lock(&self.spare).take();
        match spare {
            Some(spare) => {
                let from = spare_path(&self.dir);
                self.fs
                    .rename(&from, &path)
                    .map_err(|e| ArchiveError::io(&from, e))?;
                self.start_file(path, spare, true);
            }
            None => {
                let file = open_current(&self.fs, &path, self.max_file_bytes)?;
                self.start_file(path, file, false);
            }
        }
        self.sync_handle()
    }

    /// Where the file starting at the next sequence number goes.
    fn next_path(&self) -> PathBuf {
        self.dir.join(file_name(self.next_seq))
    }

    /// Makes `file`, at `path`, the current file, starting at the next sequence number;
    /// `renamed` when its name is not durable yet.
    fn start_file(&mut self, path: PathBuf, file: F::File, renamed: bool) {
        self.name_unsynced = Arc::new(AtomicBool::new(renamed));
        self.files.push(Segment {
            first_seq: self.next_seq,
            path,
            bytes: 0,
            records: 0,
        });
        self.current = Some(file);
    }

    /// A handle that syncs the current file from another thread (none before the first
    /// append).
    pub fn sync_handle(&self) -> Result<Option<SyncHandle<F>>, ArchiveError> {
        match (self.current.as_ref(), self.files.last()) {
            (Some(file), Some(segment)) => Ok(Some(SyncHandle {
                file: file
                    .try_clone()
                    .map_err(|e| ArchiveError::io(&segment.path, e))?,
                fs: self.fs.clone(),
                dir: self.dir.clone(),
                name_unsynced: self.name_unsynced.clone(),
            })),
            _ => Ok(None),
        }
    }

    /// Syncs the current file (and the folder, when the file's name is not durable yet).
    pub fn sync(&mut self) -> Result<(), ArchiveError> {
        match (self.current.as_mut(), self.files.last()) {
            (Some(file), Some(segment)) => {
                sync_with_name(&self.fs, &self.dir, &self.name_unsynced, file)
                    .map_err(|e| ArchiveError::sync(&segment.path, e))
            }
            _ => Ok(()),
        }
    }

    /// Takes every file whose records are all at or below `seq` (they have been shipped) out
    /// of the log, oldest first, and returns their paths for [`Housekeeping::remove`]. The
    /// current file always stays.
    pub fn detach_through(&mut self, seq: u64) -> Vec<PathBuf> {
        let mut detached = Vec::new();
        while self.files.len() > 1 && self.files[0].first_seq + self.files[0].records <= seq + 1 {
            detached.push(self.files.remove(0).path);
        }
        detached
    }

    /// The log's oldest file and its first record's sequence number.
    pub fn oldest(&self) -> Option<(PathBuf, u64)> {
        self.files.first().map(|f| (f.path.clone(), f.first_seq))
    }

    /// What makes the next file ready and deletes shipped ones, without the log's lock.
    pub fn housekeeper(&self) -> Housekeeper<F> {
        Housekeeper {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            max_file_bytes: self.max_file_bytes,
            spare: self.spare.clone(),
            released: None,
        }
    }

    /// Reads records `from..=through` (both must be durable), calling `each(seq, payload)`;
    /// each file is read in pieces ([`FrameReader`]), however large it is.
    pub fn read_range(
        fs: &F,
        dir: &Path,
        from: u64,
        through: u64,
        each: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), ArchiveError> {
        let paths: Vec<PathBuf> = fs
            .list(dir)
            .map_err(|e| ArchiveError::io(dir, e))?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        for path in paths {
            let mut frames = read_frames(fs, &path)?;
            loop {
                let offset = frames.offset();
                match frames
                    .read_frame()
                    .map_err(|e| ArchiveError::io(&path, e))?
                {
                    Some(Frame::Good { seq, payload, .. }) => {
                        if seq > through {
                            return Ok(());
                        }
                        if seq >= from && !each(seq, payload) {
                            return Ok(());
                        }
                    }
                    // Records past the durable point may still be being written.
                    None | Some(Frame::Incomplete) => break,
                    Some(Frame::Bad { reason, .. }) => {
                        return Err(ArchiveError::corrupt(&path, offset, reason));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Scans one file; returns the records and the length of the good prefix.
fn scan<R: Read>(
    path: &Path,
    frames: &mut FrameReader<R>,
    first_seq: u64,
    is_last: bool,
) -> Result<(u64, u64), ArchiveError> {
    let mut records = 0;
    loop {
        let offset = frames.offset();
        match frames.read_frame().map_err(|e| ArchiveError::io(path, e))? {
            None => return Ok((records, offset)),
            Some(Frame::Good { seq, .. }) => {
                if seq != first_seq + records {
                    return Err(ArchiveError::corrupt(
                        path,
                        offset,
                        format!("record {seq} where {} was expected", first_seq + records),
                    ));
                }
                records += 1;
            }
            Some(Frame::Incomplete | Frame::Bad { to_end: true, .. }) if is_last => {
                return Ok((records, offset));
            }
            Some(Frame::Incomplete) => {
                return Err(ArchiveError::corrupt(
                    path,
                    offset,
                    "the file ends inside a record, and later files follow",
                ));
            }
            Some(Frame::Bad { reason, .. }) => {
                return Err(ArchiveError::corrupt(path, offset, reason));
            }
        }
    }
}
