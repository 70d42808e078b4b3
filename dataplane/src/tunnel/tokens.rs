//! One-time enrollment tokens and the revocation list, kept in the tenant's tunnel folder
//! (in a cluster, the operator delivers both through the API instead), and the record of
//! each connector's newest certificate ([`Generations`]).
//!
//! A token reads `imgt1.<connector>.<secret>.<ca>`: the connector it enrolls, 32 random bytes
//! (base64url), and the SHA-256 of the tunnel CA's certificate (hex), which the connector pins
//! to know it is talking to its own tenant's dataplane before it has the CA.
//!
//! Tokens are redeemed through a [`Redeemer`]: [`TunnelState`] here, for a dataplane on its
//! own; in a cluster, the Secret the operator mints into, shared by all of a tenant's
//! dataplanes.
//!
//! Invariants: the secret is never stored, only its SHA-256 (`tokens/<hash>.json`); a token is
//! redeemed at most once, by an atomic rename to `<hash>.used`, so two dataplanes sharing the
//! folder cannot both accept it; a used token stays recognisable as used, so its reuse is
//! refused as such; a revoked connector id is never served again. Once a revocation list has
//! been delivered through the API ([`TunnelState::deliver_revocations`]), it alone says who is
//! revoked, for every clone of that state.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::generations::{Generations, SharedRecord};

/// The prefix of every token this version makes.
const PREFIX: &str = "imgt1";

/// Why a token or a connector id was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The text is not a token.
    #[error("this is not an imgate enrollment token (they start with {PREFIX}.)")]
    Malformed,
    /// A connector id outside the allowed characters.
    #[error("connector id {0:?}: use 1 to 63 letters, digits, '-' or '_'")]
    BadId(String),
    /// No such token was minted here.
    #[error("unknown enrollment token (mint one with imgate tunnel token)")]
    Unknown,
    /// The token was used before.
    #[error("enrollment token for connector {0} was already used (mint a new one)")]
    Reused(String),
    /// The token is past its expiry.
    #[error("enrollment token for connector {0} has expired (mint a new one)")]
    Expired(String),
    /// The token names another connector than the one it was minted for.
    #[error("enrollment token was minted for another connector")]
    WrongConnector,
    /// The connector was revoked.
    #[error("connector {0} is revoked")]
    Revoked(String),
    /// The shared token store (the cluster's API server) could not be asked.
    #[error("enrollment tokens cannot be checked now, try again: {0}")]
    Store(String),
    /// The folder could not be read or written.
    #[error("tunnel tokens in {path}: {message}")]
    Files {
        /// Where.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

fn files(path: &Path) -> impl Fn(std::io::Error) -> TokenError + '_ {
    move |error| TokenError::Files {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// Checks that `id` can name a connector (it goes into a URI and a token).
pub fn check_id(id: &str) -> Result<(), TokenError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if (1..=63).contains(&id.len()) && id.chars().all(allowed) {
        Ok(())
    } else {
        Err(TokenError::BadId(id.to_owned()))
    }
}

/// The pin of a CA certificate, as tokens carry it.
pub fn ca_pin(ca: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(ca.as_ref()))
}

/// The pin of a CA certificate given as PEM, when the text holds one.
pub fn ca_pin_of_pem(pem: &str) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| ca_pin(&der))
}

/// A token's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The connector it enrolls.
    pub connector: String,
    /// The secret (base64url).
    pub secret: String,
    /// The SHA-256 of the tunnel CA certificate (hex).
    pub ca_pin: String,
}

impl Token {
    /// A new token, with a fresh secret, enrolling `connector` under the CA whose pin is
    /// `ca_pin` ([`ca_pin`]).
    pub fn generate(connector: &str, ca_pin: &str) -> Result<Self, TokenError> {
        check_id(connector)?;
        Ok(Self {
            connector: connector.to_owned(),
            secret: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            ca_pin: ca_pin.to_owned(),
        })
    }

    /// Whether `other` carries the same secret, compared by digest (no early exit on the
    /// secret's own bytes).
    pub fn same_secret(&self, other: &Token) -> bool {
        self.file_stem() == other.file_stem()
    }

    /// Parses a token's text.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(connector), Some(secret), Some(pin), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        check_id(connector)?;
        let secret_ok = URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|bytes| bytes.len() == 32);
        let pin_ok = pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit());
        if !secret_ok || !pin_ok {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            connector: connector.to_owned(),
            secret: secret.to_owned(),
            ca_pin: pin.to_ascii_lowercase(),
        })
    }

    /// The token's text.
    pub fn text(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            self.connector, self.secret, self.ca_pin
        )
    }

    fn file_stem(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

/// Where one-time tokens are redeemed.
pub trait Redeemer: Send + Sync {
    /// Redeems `token`, once: the connector it enrolls.
    fn redeem<'a>(
        &'a self,
        token: &'a Token,
    ) -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>>;
}

/// The tenant's tunnel folder: its tokens and its revocation list.
#[derive(Debug, Clone)]
pub struct TunnelState {
    dir: PathBuf,
    revocations: PathBuf,
    delivered: Arc<RwLock<Option<HashSet<String>>>>,
    generations: Arc<Generations>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TunnelState {
    /// The state kept in `dir` (the folder that also holds the tunnel CA).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            revocations: dir.join("revoked"),
            delivered: Arc::default(),
            generations: Arc::new(Generations::new(dir)),
        }
    }

    /// The same state with its revocation list read from `file` (one connector id a line),
    /// e.g. one the operator delivers.
    pub fn with_revocations(mut self, file: &Path) -> Self {
        self.revocations = file.to_owned();
        self
    }

    /// The same state with its record of each connector's newest certificate kept in `store`,
    /// which every dataplane of the tenant shares, and no longer in the folder.
    pub fn with_shared_generations(mut self, store: Arc<dyn SharedRecord>) -> Self {
        self.generations = Arc::new(Generations::shared(store));
        self
    }

    /// Which certificate of each connector is current.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// Mints a one-time token enrolling `connector`, valid for `valid`, under the CA `ca`.
    pub fn mint(
        &self,
        connector: &str,
        ca: &CertificateDer<'_>,
        valid: Duration,
    ) -> Result<Token, TokenError> {
        check_id(connector)?;
        if self.revoked()?.contains(connector) {
            return Err(TokenError::Revoked(connector.to_owned()));
        }
        let token = Token::generate(connector, &ca_pin(ca))?;
        let dir = self.tokens();
        std::fs::create_dir_all(&dir).map_err(files(&dir))?;
        let path = dir.join(format!("{}.json", token.file_stem()));
        let record = serde_json::json!({
            "connector": connector,
            "expires": unix_now() + valid.as_secs(),
        });
        crate::proxy::tls::write_private(&path, record.to_string().as_bytes())
            .map_err(files(&path))?;
        Ok(token)
    }

    /// Redeems `token`, once: the connector it enrolls.
    pub fn redeem(&self, token: &Token) -> Result<String, TokenError> {
        let stem = token.file_stem();
        let fresh = self.tokens().join(format!("{stem}.json"));
        let used = self.tokens().join(format!("{stem}.used"));
        let text = match std::fs::read_to_string(&fresh) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(if used.exists() {
                    TokenError::Reused(token.connector.clone())
                } else {
                    TokenError::Unknown
                });
            }
            Err(error) => return Err(files(&fresh)(error)),
        };
        let record: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TokenError::Files {
                path: fresh.clone(),
                message: e.to_string(),
            })?;
        if record["connector"] != token.connector.as_str() {
            return Err(TokenError::WrongConnector);
        }
        if record["expires"].as_u64().is_none_or(|at| at < unix_now()) {
            return Err(TokenError::Expired(token.connector.clone()));
        }
        if self.revoked()?.contains(&token.connector) {
            return Err(TokenError::Revoked(token.connector.clone()));
        }
        match std::fs::rename(&fresh, &used) {
            Ok(()) => Ok(token.connector.clone()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(TokenError::Reused(token.connector.clone()))
            }
            Err(error) => Err(files(&fresh)(error)),
        }
    }

    /// Revokes `connector`: no connection of it is served from now on.
    pub fn revoke(&self, connector: &str) -> Result<(), TokenError> {
        check_id(connector)?;
        let path = &self.revocations;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(files(dir))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(files(path))?;
        writeln!(file, "{connector}")
            .and_then(|()| file.sync_all())
            .map_err(files(path))
    }

    /// From now on the revoked connectors are `ids`, as the operator delivers them through the
    /// API, and no longer the revocation file's (which the kubelet refreshes a minute or more
    /// later); this state's clones see them too.
    pub fn deliver_revocations(&self, ids: HashSet<String>) {
        *self
            .delivered
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(ids);
    }

    /// The revoked connectors.
    pub fn revoked(&self) -> Result<HashSet<String>, TokenError> {
        if let Some(ids) = self
            .delivered
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            return Ok(ids.clone());
        }
        let path = &self.revocations;
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(error) => Err(files(path)(error)),
        }
    }
}

impl Redeemer for TunnelState {
    fn redeem<'a>(
        &'a self,
        token: &'a Token,
    ) -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>> {
        Box::pin(std::future::ready(TunnelState::redeem(self, token)))
    }
}

#[cfg(test)]
mod tests;
