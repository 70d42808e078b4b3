//! A local directory with the bucket's layout: the embedded default, for trying imgate out
//! and for tests. It is not WORM storage: anyone with access to the disk can change it, which
//! `imgate archive verify` would detect but not prevent.

use std::path::{Path, PathBuf};

use crate::archive::error::ArchiveError;
use crate::archive::fs::{Filesystem, StdFs};

/// Legal holds are kept as marker files beside the object, under this suffix.
const HOLD_SUFFIX: &str = ".legal-hold";

/// A directory used as an object store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, ArchiveError> {
        if key.split('/').any(|part| part == ".." || part.is_empty()) || key.starts_with('/') {
            return Err(ArchiveError::Store {
                key: key.into(),
                message: "not a valid object key".into(),
            });
        }
        Ok(self.root.join(key))
    }

    pub(super) fn put(&self, key: &str, body: &[u8]) -> Result<(), ArchiveError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            StdFs
                .create_dir_all(parent)
                .map_err(|e| ArchiveError::io(parent, e))?;
        }
        StdFs
            .write_atomic(&path, body)
            .map_err(|e| ArchiveError::io(&path, e))
    }

    pub(super) fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = self.path(key)?;
        std::fs::read(&path).map_err(|e| ArchiveError::Store {
            key: key.into(),
            message: e.to_string(),
        })
    }

    pub(super) fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        if self.root.exists() {
            walk(&self.root, &self.root, &mut keys).map_err(|e| ArchiveError::io(&self.root, e))?;
        }
        keys.retain(|k| k.starts_with(prefix) && !k.ends_with(HOLD_SUFFIX) && !k.ends_with(".tmp"));
        keys.sort();
        Ok(keys)
    }

    pub(super) fn probe(&self) -> Result<(), ArchiveError> {
        StdFs
            .create_dir_all(&self.root)
            .map_err(|e| ArchiveError::io(&self.root, e))
    }

    pub(super) fn set_legal_hold(&self, key: &str, on: bool) -> Result<(), ArchiveError> {
        let path = self.path(key)?;
        if !path.exists() {
            return Err(ArchiveError::Store {
                key: key.into(),
                message: "no such object".into(),
            });
        }
        let marker = PathBuf::from(format!("{}{HOLD_SUFFIX}", path.display()));
        let result = if on {
            std::fs::write(&marker, b"ON")
        } else {
            std::fs::remove_file(&marker).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        result.map_err(|e| ArchiveError::io(&marker, e))
    }
}

fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, keys)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            keys.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
