//! Object stores the archive ships to: the tenant's S3 bucket, or a local directory with the
//! same layout for the embedded default (which is **not** WORM storage).
//!
//! Invariants: `put` of the same key and bytes twice is harmless (re-upload after a crash);
//! `list` returns keys in lexical order, which for segment and manifest keys is sequence order.

mod local;
mod s3;

use chrono::{DateTime, Utc};
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

use super::error::ArchiveError;

/// Object Lock retention for a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `COMPLIANCE` (nobody can shorten it) or `GOVERNANCE`.
    pub compliance: bool,
    /// Until when.
    pub until: DateTime<Utc>,
}

/// Server-side encryption for a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (AES256).
    S3,
    /// SSE-KMS with this key.
    Kms(String),
}

/// How an object is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Object Lock retention.
    pub retention: Option<Retention>,
    /// Server-side encryption.
    pub encryption: Option<Encryption>,
}

/// A store of archive objects.
#[derive(Debug, Clone)]
pub enum Store {
    /// A local directory (not WORM).
    Local(LocalStore),
    /// An S3 bucket.
    S3(S3Store),
}

impl Store {
    /// Writes an object.
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        options: &PutOptions,
    ) -> Result<(), ArchiveError> {
        match self {
            Store::Local(store) => store.put(key, &body),
            Store::S3(store) => store.put(key, body, options).await,
        }
    }

    /// Reads an object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        match self {
            Store::Local(store) => store.get(key),
            Store::S3(store) => store.get(key).await,
        }
    }

    /// Keys under `prefix`, in lexical order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        match self {
            Store::Local(store) => store.list(prefix),
            Store::S3(store) => store.list(prefix).await,
        }
    }

    /// Sets or clears a legal hold on an object.
    pub async fn set_legal_hold(&self, key: &str, on: bool) -> Result<(), ArchiveError> {
        match self {
            Store::Local(store) => store.set_legal_hold(key, on),
            Store::S3(store) => store.set_legal_hold(key, on).await,
        }
    }

    /// Checks that the store answers and, when `locked`, that it keeps objects under Object
    /// Lock: what a dataplane with nothing due to ship knows of its store.
    pub async fn probe(&self, locked: bool) -> Result<(), ArchiveError> {
        match self {
            Store::Local(store) => store.probe(),
            Store::S3(store) => store.probe(locked).await,
        }
    }

    /// Where the store is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(store) => format!(
                "local directory {} (not WORM storage)",
                store.root().display()
            ),
            Store::S3(store) => format!("s3://{}", store.bucket()),
        }
    }
}
