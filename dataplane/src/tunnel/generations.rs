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
//! The record is the tunnel folder's: dataplanes that share the folder (`imgate up
//! --tunnel-state`) share it; dataplane pods with a folder each only know the renewals they
//! signed themselves.
//!
//! Invariants: the record (`generations.json` in the tunnel folder) is replaced atomically
//! (written beside, synced, renamed), so a crash leaves the old record or the new one; a
//! connector's recorded start never moves back (of two certificates with the same start, the
//! one signed last is the newest); a certificate is current when it is the recorded one, or
//! starts after it; a connector with no record (enrolled before records were kept) is not
//! refused on this account.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokens::TokenError;
use super::trust::validity_of;

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

/// The record of every connector's newest certificate.
#[derive(Debug)]
pub struct Generations {
    path: PathBuf,
    /// Serialises this process's updates of the record.
    writing: Mutex<()>,
}

fn files(path: &Path) -> impl Fn(std::io::Error) -> TokenError + '_ {
    move |error| TokenError::Files {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

impl Generations {
    /// The record kept in the tunnel folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("generations.json"),
            writing: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<HashMap<String, Generation>, TokenError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Files {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(error) => Err(files(&self.path)(error)),
        }
    }

    /// The record as it is now, to check many certificates against.
    pub fn snapshot(&self) -> Result<Snapshot, TokenError> {
        self.read().map(Snapshot)
    }

    /// Records that connector `id` was issued `cert` at `now` (seconds since the Unix epoch).
    pub fn issued(&self, id: &str, cert: &CertificateDer<'_>, now: u64) -> Result<(), TokenError> {
        let not_before = start(cert);
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.read()?;
        let newest = record.get(id).map_or(0, |g| g.not_before);
        if not_before < newest {
            return Ok(());
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
        let bytes = serde_json::to_vec(&record).map_err(|e| TokenError::Files {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let fresh = self.path.with_extension("json.new");
        write_synced(&fresh, &bytes)
            .and_then(|()| std::fs::rename(&fresh, &self.path))
            .and_then(|()| sync_dir(&self.path))
            .map_err(files(&self.path))
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

/// The record at one moment.
#[derive(Debug)]
pub struct Snapshot(HashMap<String, Generation>);

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
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::tunnel::trust::{TunnelCa, connector_request, read_request};

    const GRACE: Duration = Duration::from_secs(600);

    /// A certificate for `desk-1` starting at `start` (seconds since the Unix epoch).
    fn cert(ca: &TunnelCa, start: u64) -> CertificateDer<'static> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
        let request = read_request(&connector_request("desk-1").expect("request").1);
        ca.sign_between(
            request.expect("read"),
            "desk-1",
            start,
            start + GRACE * 1000,
        )
        .expect("signed")
    }

    #[test]
    fn an_older_certificate_works_for_the_grace_period_after_a_newer_one_then_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TunnelCa::generate("acme").expect("CA");
        let record = Generations::new(dir.path());
        let (first, second) = (cert(&ca, 100), cert(&ca, 2_000));
        assert_eq!(
            record.check("desk-1", &first, 1_000, GRACE).expect("read"),
            Ok(()),
            "no record: enrolled before records were kept"
        );
        record.issued("desk-1", &first, 1_000).expect("first");
        assert_eq!(
            record.check("desk-1", &first, 5_000, GRACE).expect("read"),
            Ok(())
        );

        record.issued("desk-1", &second, 2_100).expect("renewed");
        assert_eq!(
            record.check("desk-1", &second, 9_000, GRACE).expect("read"),
            Ok(()),
            "the newest always works"
        );
        assert_eq!(
            record
                .check("desk-1", &first, 2_100 + 599, GRACE)
                .expect("read"),
            Ok(()),
            "the older one, within the grace period"
        );
        assert_eq!(
            record
                .check("desk-1", &first, 2_100 + 600, GRACE)
                .expect("read"),
            Err(Superseded {
                id: "desk-1".into(),
                ago: 600
            }),
            "and not after it"
        );
        assert_eq!(
            record.check("desk-2", &first, 9_000, GRACE).expect("read"),
            Ok(()),
            "other connectors are not concerned"
        );
    }

    #[test]
    fn of_two_certificates_with_the_same_start_the_one_signed_last_is_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TunnelCa::generate("acme").expect("CA");
        let record = Generations::new(dir.path());
        let (enrolled, renewed) = (cert(&ca, 100), cert(&ca, 100));
        record.issued("desk-1", &enrolled, 1_000).expect("enrolled");
        record
            .issued("desk-1", &renewed, 1_000)
            .expect("renewed at once");
        assert_eq!(
            record
                .check("desk-1", &renewed, 1_000, Duration::ZERO)
                .expect("read"),
            Ok(())
        );
        assert!(
            record
                .check("desk-1", &enrolled, 1_000, Duration::ZERO)
                .expect("read")
                .is_err(),
            "a copy of the first certificate stops working"
        );
    }

    #[test]
    fn the_record_survives_a_restart_and_never_moves_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TunnelCa::generate("acme").expect("CA");
        let (older, newer) = (cert(&ca, 1_000), cert(&ca, 2_000));
        Generations::new(dir.path())
            .issued("desk-1", &newer, 2_100)
            .expect("issued");
        let again = Generations::new(dir.path());
        again.issued("desk-1", &older, 3_000).expect("an older one");
        assert!(
            again
                .check("desk-1", &older, 9_000, GRACE)
                .expect("read")
                .is_err(),
            "the newer certificate still rules"
        );
        assert!(
            !dir.path().join("generations.json.new").exists(),
            "nothing is left beside the record"
        );
    }
}
