//! Which certificate of each connector is current. Every certificate the dataplane signs for
//! a connector (at enrollment or renewal) is recorded here by its SHA-256 and its start
//! (`notBefore`); once a connector has a newer certificate, an older one keeps working for a grace period (so that
//! the connector's own connections move over) and is refused after it. A copy of a
//! connector's key and certificate kept by someone else therefore stops working once the
//! real connector renews, and renewing first with the copy locks the real connector out,
//! which its operators see.
//!
//! A renewal needs the connector's newest certificate itself, so a copy cannot renew once the
//! real connector has; the one exception is a renewal, within the grace, whose request is
//! signed with the newest certificate's own key: the real connector asking again for a
//! certificate whose answer it lost (no one else holds that key). Open connections are checked again as the revocation
//! list is ([`super::listener`]), so a copy's connection ends when its grace does.
//!
//! The record is shared by every dataplane of a tenant that can be reached by the same
//! connector: dataplanes that share the tunnel folder (`imgate up --tunnel-state`) share its
//! file; in a cluster, where each dataplane pod has a folder of its own, the record is a
//! [`SharedRecord`] (a Secret, through the API server) that each renewal updates before its
//! certificate is returned, and that is delivered to every dataplane as it changes.
//!
//! Invariants: the folder's record (`generations.json`) is replaced atomically (written
//! beside, synced, renamed), so a crash leaves the old record or the new one; a shared record
//! is replaced only at the version it was read at (a renewal signed by another dataplane
//! meanwhile is read again and kept); a connector's recorded start never moves back (of two
//! certificates with the same start, the one signed last is the newest); a certificate is
//! current when it is the recorded one, or starts after it; a connector with no record
//! (enrolled before records were kept) is not refused on this account. Renewals decide on
//! the shared record as stored; connections are checked against the last delivered copy (or
//! this dataplane's own last write), so until the first delivery after a start only
//! connectors without a record are known, and a replaced certificate's connection closes at
//! the next check after the delivery.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokens::TokenError;
use super::trust::validity_of;

/// How many times a renewal reads a shared record again after another dataplane replaced it.
const ATTEMPTS: usize = 5;

/// A connector's newest certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Generation {
    /// Its SHA-256, hex.
    sha256: String,
    /// The SHA-256 of its public key (SubjectPublicKeyInfo), hex.
    #[serde(default)]
    public_key: String,
    /// Its start, in seconds since the Unix epoch.
    not_before: u64,
    /// When it was signed, in seconds since the Unix epoch.
    issued_at: u64,
}

/// Each connector's newest certificate, by connector id.
type Record = HashMap<String, Generation>;

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "connector {id} presented a certificate that a newer one replaced {ago} s ago; only its \
     newest certificate is accepted (a copy of an old key and certificate does not work)"
)]
pub struct Superseded {
    /// The connector.
    pub id: String,
    /// Seconds since the newer certificate was signed.
    pub ago: u64,
}

/// A future a [`SharedRecord`] returns.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, TokenError>> + Send + 'a>>;

/// A record kept outside the dataplane and shared by all of a tenant's dataplanes.
pub trait SharedRecord: Send + Sync {
    /// The record's bytes as stored (`None` while there are none) and the version they are at.
    fn load(&self) -> Pending<'_, (Option<Vec<u8>>, String)>;
    /// Stores `bytes` if the record is still at `version`: `false` when another dataplane
    /// replaced it first.
    fn replace<'a>(&'a self, bytes: Vec<u8>, version: &'a str) -> Pending<'a, bool>;
    /// Where the record is, for messages.
    fn describe(&self) -> String;
}

enum Backing {
    /// `generations.json` in the tunnel folder; `writing` serialises this process's updates.
    Folder { path: PathBuf, writing: Mutex<()> },
    /// A shared record, and its last delivered or written copy (none before the first).
    Shared {
        store: Arc<dyn SharedRecord>,
        copy: RwLock<Option<Arc<Record>>>,
    },
}

/// The record of every connector's newest certificate.
pub struct Generations {
    backing: Backing,
}

impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backing {
            Backing::Folder { path, .. } => write!(f, "Generations({})", path.display()),
            Backing::Shared { store, .. } => write!(f, "Generations({})", store.describe()),
        }
    }
}

fn files(path: &Path) -> impl Fn(std::io::Error) -> TokenError + '_ {
    move |error| TokenError::Files {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// What must still hold of the record, as it is when a certificate is recorded, for the
/// certificate to be recorded: the decision to sign it, made again on the record written to.
pub type Still<'a> = &'a (dyn Fn(&Snapshot) -> Result<(), Superseded> + Sync);

/// Whether a certificate was recorded, and if not, why.
pub type Recorded = Result<Result<(), Superseded>, TokenError>;

impl Generations {
    /// The record kept in the tunnel folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            backing: Backing::Folder {
                path: dir.join("generations.json"),
                writing: Mutex::new(()),
            },
        }
    }

    /// The record kept in `store`, known from the first [`Self::current`], [`Self::deliver`]
    /// or recorded certificate on.
    pub fn shared(store: Arc<dyn SharedRecord>) -> Self {
        Self {
            backing: Backing::Shared {
                store,
                copy: RwLock::default(),
            },
        }
    }

    /// The record as it is known now, to check connections against: an error while a shared
    /// record has not been read yet.
    pub fn snapshot(&self) -> Result<Snapshot, TokenError> {
        match &self.backing {
            Backing::Folder { path, .. } => read_folder(path).map(|r| Snapshot(Arc::new(r))),
            Backing::Shared { store, copy } => copy
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .map(Snapshot)
                .ok_or_else(|| {
                    TokenError::Store(format!(
                        "{} has not been read yet, so which certificates are current is not known",
                        store.describe()
                    ))
                }),
        }
    }

    /// The record as stored now.
    pub async fn current(&self) -> Result<Snapshot, TokenError> {
        match &self.backing {
            Backing::Folder { .. } => self.snapshot(),
            Backing::Shared { store, .. } => {
                let (bytes, _) = store.load().await?;
                let record = Arc::new(parse_shared(bytes.as_deref(), store.as_ref())?);
                self.keep(record.clone());
                Ok(Snapshot(record))
            }
        }
    }

    /// Takes `bytes`, the shared record as delivered (nothing while there is none), as the
    /// copy to check connections against. Bytes that cannot be read leave the last copy.
    pub fn deliver(&self, bytes: Option<&[u8]>) -> Result<(), TokenError> {
        if let Backing::Shared { store, .. } = &self.backing {
            let record = parse_shared(bytes, store.as_ref())?;
            self.keep(Arc::new(record));
        }
        Ok(())
    }

    fn keep(&self, record: Arc<Record>) {
        if let Backing::Shared { copy, .. } = &self.backing {
            *copy.write().unwrap_or_else(|p| p.into_inner()) = Some(record);
        }
    }

    /// Records that connector `id` was issued `cert` at `now` (seconds since the Unix epoch),
    /// if `still` holds of the record it is written to; not when `still` fails (a newer
    /// certificate was recorded since the decision), or when the record holds a certificate
    /// that starts later (the signer's clock is behind), which is an error to try again.
    pub async fn issued(
        &self,
        id: &str,
        cert: &CertificateDer<'_>,
        now: u64,
        still: Still<'_>,
    ) -> Recorded {
        let store = match &self.backing {
            Backing::Folder { path, writing } => {
                let _writing = writing.lock().unwrap_or_else(|p| p.into_inner());
                let mut record = read_folder(path)?;
                if let Err(superseded) = still(&Snapshot(Arc::new(record.clone()))) {
                    return Ok(Err(superseded));
                }
                newer(&mut record, id, cert, now)?;
                return write_folder(path, &record).map(Ok);
            }
            Backing::Shared { store, .. } => store,
        };
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Another dataplane wrote meanwhile: a pause, spread so that two renewals do
                // not collide again.
                let pause = Duration::from_millis(25 << attempt);
                tokio::time::sleep(pause.mul_f64(rand::random_range(0.5..1.5))).await;
            }
            let (bytes, version) = store.load().await?;
            let mut record = parse_shared(bytes.as_deref(), store.as_ref())?;
            self.keep(Arc::new(record.clone()));
            if let Err(superseded) = still(&Snapshot(Arc::new(record.clone()))) {
                return Ok(Err(superseded));
            }
            newer(&mut record, id, cert, now)?;
            let bytes =
                serde_json::to_vec(&record).map_err(|e| TokenError::Store(e.to_string()))?;
            if store.replace(bytes, &version).await? {
                self.keep(Arc::new(record));
                return Ok(Ok(()));
            }
        }
        Err(TokenError::Store(format!(
            "{} kept changing while a certificate was recorded",
            store.describe()
        )))
    }

    /// Adds to a shared record what the tunnel folder `dir` recorded before the record was
    /// shared (each connector's later entry wins); how many connectors it brought in.
    pub async fn adopt(&self, dir: &Path) -> Result<usize, TokenError> {
        let Backing::Shared { store, .. } = &self.backing else {
            return Ok(0);
        };
        let folder = read_folder(&dir.join("generations.json"))?;
        if folder.is_empty() {
            return Ok(0);
        }
        for _ in 0..ATTEMPTS {
            let (bytes, version) = store.load().await?;
            let mut record = parse_shared(bytes.as_deref(), store.as_ref())?;
            let mut brought = 0;
            for (id, generation) in &folder {
                let later = record.get(id).is_none_or(|known| {
                    (generation.not_before, generation.issued_at)
                        > (known.not_before, known.issued_at)
                });
                if later {
                    record.insert(id.clone(), generation.clone());
                    brought += 1;
                }
            }
            if brought == 0 {
                self.keep(Arc::new(record));
                return Ok(0);
            }
            let bytes =
                serde_json::to_vec(&record).map_err(|e| TokenError::Store(e.to_string()))?;
            if store.replace(bytes, &version).await? {
                self.keep(Arc::new(record));
                return Ok(brought);
            }
        }
        Err(TokenError::Store(format!(
            "{} kept changing while the tunnel folder's record was added",
            store.describe()
        )))
    }

    /// Records in the tunnel folder `dir` that connector `id` was issued `cert` at `now`,
    /// for a certificate signed offline (`imgate tunnel sign`).
    pub fn issued_offline(
        dir: &Path,
        id: &str,
        cert: &CertificateDer<'_>,
        now: u64,
    ) -> Result<(), TokenError> {
        let path = dir.join("generations.json");
        let mut record = read_folder(&path)?;
        newer(&mut record, id, cert, now)?;
        write_folder(&path, &record)
    }

    /// Whether connector `id`'s `cert` may be used at `now`: it is the newest, or a newer
    /// one was signed less than `grace` ago.
    pub fn check(
        &self,
        id: &str,
        cert: &CertificateDer<'_>,
        now: u64,
        grace: Duration,
    ) -> Result<Result<(), Superseded>, TokenError> {
        Ok(self.snapshot()?.check(id, cert, now, grace))
    }
}

/// Records `cert` as connector `id`'s newest in `record`; refused when the record holds one
/// that starts later.
fn newer(
    record: &mut Record,
    id: &str,
    cert: &CertificateDer<'_>,
    now: u64,
) -> Result<(), TokenError> {
    let not_before = start(cert);
    if record.get(id).is_some_and(|g| not_before < g.not_before) {
        return Err(TokenError::Store(format!(
            "connector {id} already has a certificate that starts later than the one just signed (is this dataplane's clock behind?); try again"
        )));
    }
    record.insert(
        id.to_owned(),
        Generation {
            sha256: sha256(cert),
            public_key: public_key(cert),
            not_before,
            issued_at: now,
        },
    );
    Ok(())
}

fn read_folder(path: &Path) -> Result<Record, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Files {
            path: path.to_owned(),
            message: e.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(error) => Err(files(path)(error)),
    }
}

fn parse_shared(bytes: Option<&[u8]>, store: &dyn SharedRecord) -> Result<Record, TokenError> {
    match bytes {
        None => Ok(HashMap::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
            TokenError::Store(format!(
                "{} does not hold a record of connector certificates ({e}); an administrator can delete it to start a new record",
                store.describe()
            ))
        }),
    }
}

fn write_folder(path: &Path, record: &Record) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec(record).map_err(|e| TokenError::Files {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let fresh = path.with_extension("json.new");
    write_synced(&fresh, &bytes)
        .and_then(|()| std::fs::rename(&fresh, path))
        .and_then(|()| sync_dir(path))
        .map_err(files(path))
}

/// The record at one moment.
#[derive(Debug)]
pub struct Snapshot(Arc<Record>);

impl Snapshot {
    /// Whether `key` (a SubjectPublicKeyInfo, DER) is the key of connector `id`'s newest
    /// certificate.
    pub fn is_newest_key(&self, id: &str, key: &[u8]) -> bool {
        self.0.get(id).is_some_and(|newest| {
            !newest.public_key.is_empty() && newest.public_key == hex::encode(Sha256::digest(key))
        })
    }

    /// [`Generations::check`] against this snapshot.
    pub fn check(
        &self,
        id: &str,
        cert: &CertificateDer<'_>,
        now: u64,
        grace: Duration,
    ) -> Result<(), Superseded> {
        let Some(newest) = self.0.get(id) else {
            return Ok(());
        };
        let ago = now.saturating_sub(newest.issued_at);
        let current = newest.sha256 == sha256(cert) || start(cert) > newest.not_before;
        if current || ago < grace.as_secs() {
            return Ok(());
        }
        Err(Superseded {
            id: id.to_owned(),
            ago,
        })
    }
}

fn sha256(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo, hex (empty if it cannot be read).
fn public_key(cert: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert)
        .map(|(_, parsed)| hex::encode(Sha256::digest(parsed.public_key().raw)))
        .unwrap_or_default()
}

/// A certificate's start; 0 when it cannot be read (it was verified, so it can).
fn start(cert: &CertificateDer<'_>) -> u64 {
    validity_of(cert).map_or(0, |(not_before, _)| not_before)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
