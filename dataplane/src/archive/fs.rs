//! The filesystem behind the write-ahead log, as a small trait so that tests can inject
//! faults (a full disk, a failing fsync) the way Vector's disk buffer does.
//!
//! Invariants: [`Filesystem::write_atomic`] leaves either the old or the new content, never a
//! mix; [`LogFile::sync`] returns only once the bytes written are durable; [`LogFile::reserve`]
//! never changes a file's length or content; [`Filesystem::rename`] is durable only once
//! [`Filesystem::sync_dir`] of the target's folder returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file the log appends to.
pub trait LogFile: Send {
    /// Appends all of `bytes`, or fails having appended a prefix of them.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Allocates disk blocks for the file to grow to `bytes` without changing its length, so
    /// that appends write into blocks that already exist. On ext4, appending into blocks
    /// allocated while a sync writes the file back waits for the inode's block-map lock,
    /// which the sync can hold for milliseconds (a synchronous discard on `-o discard`).
    fn reserve(&self, bytes: u64) -> io::Result<()>;
    /// A second handle to the same file, so that another thread can sync it while appends
    /// continue on this one.
    fn try_clone(&self) -> io::Result<Self>
    where
        Self: Sized;
}

/// What the log needs from a filesystem.
pub trait Filesystem: Clone + Send + Sync + 'static {
    /// The file type for appends.
    type File: LogFile;
    /// Creates a folder and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The files in `dir`, sorted by name.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens `path` for appending, creating it if needed.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file to read it in pieces.
    fn open_read(&self, path: &Path) -> io::Result<File>;
    /// Replaces `path` with `bytes` atomically and durably.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Cuts a file to `len` bytes, durably.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`; durable once its folder is synced ([`sync_dir`]).
    ///
    /// [`sync_dir`]: Self::sync_dir
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of folder `dir` (files created, renamed or removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl LogFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn reserve(&self, bytes: u64) -> io::Result<()> {
        rustix::fs::fallocate(self, rustix::fs::FallocateFlags::KEEP_SIZE, 0, bytes)
            .map_err(io::Error::from)
    }

    fn try_clone(&self) -> io::Result<Self> {
        File::try_clone(self)
    }
}

impl Filesystem for StdFs {
    type File = File;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    fn open_append(&self, path: &Path) -> io::Result<File> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if let Some(parent) = path.parent() {
            self.sync_dir(parent)?;
        }
        Ok(file)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let temporary = path.with_extension("tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(parent) = path.parent() {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
pub(crate) mod faulty {
    //! A filesystem that runs out of space, fails or slows fsync, or holds a reservation or
    //! a removal until the test lets it go, on command.

    use std::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// Faults to inject.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// Bytes that may still be appended before writes fail with "no space".
        pub space_left: Option<u64>,
        /// Make every fsync fail.
        pub fail_sync: bool,
        /// Make every open for appending fail as at the open-file limit.
        pub fail_open: bool,
        /// Make every fsync take this long.
        pub sync_delay: Option<std::time::Duration>,
        /// Hold every disk reservation until this gate opens.
        pub hold_reserve: Option<Arc<Gate>>,
        /// Hold every removal until this gate opens.
        pub hold_remove: Option<Arc<Gate>>,
        /// Folders synced so far ([`Filesystem::sync_dir`]).
        pub dir_syncs: usize,
    }

    /// Where a filesystem call waits until the test opens it.
    #[derive(Debug, Default)]
    pub(crate) struct Gate {
        /// (someone is waiting or has waited, the gate is open)
        state: Mutex<(bool, bool)>,
        changed: Condvar,
    }

    impl Gate {
        /// Waits until the gate is open.
        fn pass(&self) {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.0 = true;
            self.changed.notify_all();
            while !state.1 {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }

        /// Waits until a call has reached the gate.
        pub fn reached(&self) {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            while !state.0 {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }

        /// Lets every call through, now and later.
        pub fn open(&self) {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
            self.changed.notify_all();
        }
    }

    /// Passes the gate that `which` picks from `faults`, if one is set.
    fn pass(faults: &Mutex<Faults>, which: fn(&Faults) -> &Option<Arc<Gate>>) {
        let gate = which(&faults.lock().unwrap_or_else(|p| p.into_inner())).clone();
        if let Some(gate) = gate {
            gate.pass();
        }
    }

    /// [`StdFs`] with injected faults.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FaultyFs {
        pub faults: Arc<Mutex<Faults>>,
    }

    pub(crate) struct FaultyFile {
        file: File,
        faults: Arc<Mutex<Faults>>,
    }

    fn no_space() -> io::Error {
        io::Error::new(io::ErrorKind::StorageFull, "No space left on device")
    }

    impl LogFile for FaultyFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            let allowed = {
                let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
                match faults.space_left.as_mut() {
                    Some(left) => {
                        let allowed = (*left).min(bytes.len() as u64);
                        *left -= allowed;
                        allowed as usize
                    }
                    None => bytes.len(),
                }
            };
            self.file.write_all(&bytes[..allowed])?;
            if allowed < bytes.len() {
                Err(no_space())
            } else {
                Ok(())
            }
        }

        fn sync(&mut self) -> io::Result<()> {
            let (fail, delay) = {
                let faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
                (faults.fail_sync, faults.sync_delay)
            };
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            if fail {
                return Err(io::Error::other("fsync failed (injected)"));
            }
            self.file.sync_data()
        }

        fn reserve(&self, bytes: u64) -> io::Result<()> {
            pass(&self.faults, |f| &f.hold_reserve);
            self.file.reserve(bytes)
        }

        fn try_clone(&self) -> io::Result<Self> {
            Ok(Self {
                file: self.file.try_clone()?,
                faults: self.faults.clone(),
            })
        }
    }

    impl Filesystem for FaultyFs {
        type File = FaultyFile;

        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            StdFs.create_dir_all(path)
        }

        fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            StdFs.list(dir)
        }

        fn open_append(&self, path: &Path) -> io::Result<FaultyFile> {
            if self
                .faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fail_open
            {
                // EMFILE.
                return Err(io::Error::from_raw_os_error(24));
            }
            Ok(FaultyFile {
                file: StdFs.open_append(path)?,
                faults: self.faults.clone(),
            })
        }

        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            StdFs.read(path)
        }

        fn open_read(&self, path: &Path) -> io::Result<File> {
            StdFs.open_read(path)
        }

        fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            StdFs.write_atomic(path, bytes)
        }

        fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
            StdFs.truncate(path, len)
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            pass(&self.faults, |f| &f.hold_remove);
            StdFs.remove(path)
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            StdFs.rename(from, to)
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dir_syncs += 1;
            StdFs.sync_dir(dir)
        }
    }
}
