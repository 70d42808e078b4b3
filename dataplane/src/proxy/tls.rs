//! TLS interception: the tenant's interception CA, leaf certificates minted from it per
//! server name, the client-facing server configurations, and the upstream client
//! configuration that verifies the real server against the system roots plus configured
//! extra roots.
//!
//! Invariants:
//! - the CA's private key never leaves its file (mode 0600) and memory; a CA is used only
//!   once it is shown to be a CA (basicConstraints CA:TRUE, keyCertSign if key usage is
//!   given), the key shown to be the certificate's, and the certificate to be valid now;
//! - a leaf names the CA as its issuer exactly as the CA's certificate names itself, carries
//!   the CA's key identifier as its authority key identifier, allows digitalSignature only
//!   (RFC 5480 for its ECDSA key), never outlives the CA, and is sent with the CA's
//!   certificate and whatever follows it in `ca.pem` (intermediates up to a root);
//! - at most [`MAX_LEAVES`] names are kept, each for [`LEAF_TTL`], well within a leaf's
//!   [`LEAF_LIFETIME`], and new names are minted at most [`MINT_PER_SECOND`] a second after a
//!   burst of [`MINT_BURST`] (see [`super::leaf_cache`]); the server configurations share
//!   one session store, so a name costs its leaf and a configuration, not a cache;
//! - CAs imgate generates are valid for [`CA_LIFETIME`]; a CA within [`CA_RENEW_BEFORE`] of
//!   its end is reported at start (docs/interception-ca.md says how to rotate it);
//! - upstream certificates are always verified (no option turns verification off): by
//!   WebPKI, or as exactly a certificate the operator gave ([`UpstreamVerifier`]); one crypto
//!   provider (ring) is used explicitly.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::client::ClientConfig;
use rustls::crypto::ring::default_provider;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::leaf_cache::{LeafCache, RateLimited};
use super::upstream_verifier::UpstreamVerifier;

const CA_NAME: &str = "imgate interception CA";

/// How long a CA imgate generates is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(2 * 365 * 86_400);

/// A CA this close to its end is reported at start, so that its successor can be
/// distributed to clients in time.
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(90 * 86_400);

/// How long a minted leaf is valid (never past the CA's own end).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// How long a minted leaf is served before it is minted again.
pub const LEAF_TTL: Duration = Duration::from_secs(86_400);

/// Most server names whose leaves are kept.
pub const MAX_LEAVES: usize = 1024;

/// New leaves minted at once before the rate applies.
pub const MINT_BURST: u32 = 64;

/// New leaves minted a second, sustained.
pub const MINT_PER_SECOND: u32 = 16;

/// TLS sessions kept for resumption, across every name.
const SESSIONS_KEPT: usize = 4096;

/// What can go wrong with certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Generating or signing failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a key or configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A PEM file held nothing usable.
    #[error("{}: no certificate found (expected PEM)", .0.display())]
    NoCertificate(PathBuf),
    /// A CA cannot sign leaves.
    #[error("{}: cannot be used as the interception CA: {reason}", path.display())]
    UnusableCa {
        /// The CA certificate's file.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Too many new names.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
}

/// The interception CA and the leaves minted from it.
pub struct InterceptionCa {
    issuer: Issuer<'static, KeyPair>,
    /// What follows a leaf in the chain: the CA's certificate and any above it.
    chain: Vec<CertificateDer<'static>>,
    /// The CA certificate, PEM: what clients must trust (with any certificates above it).
    pub cert_pem: String,
    /// Where the CA certificate is.
    pub cert_path: PathBuf,
    /// When the CA's certificate ends.
    pub not_after: SystemTime,
    /// Sessions kept for resumption, shared by every name's configuration.
    sessions: Arc<dyn StoresServerSessions>,
    /// Per server name: the leaf and the configuration presenting it.
    minted: Mutex<LeafCache<Minted>>,
}

/// A leaf and the server configuration presenting it.
type Minted = (Arc<CertifiedKey>, Arc<ServerConfig>);

/// The parameters of an imgate CA named `common_name`, which signs leaves only, valid for
/// [`CA_LIFETIME`] from now.
pub(crate) fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "imgate");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + CA_LIFETIME).into();
    params
}

/// Checks that `cert` is a CA certificate, valid now, whose key is `key`; gives its end.
fn check_ca(cert: &CertificateDer<'_>, key: &KeyPair, path: &Path) -> Result<SystemTime, TlsError> {
    let unusable = |reason: &str| TlsError::UnusableCa {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| unusable(&format!("the certificate cannot be read ({e})")))?;
    match x509.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {}
        _ => {
            return Err(unusable(
                "it is not a CA certificate (basicConstraints CA:TRUE is missing); issue one \
                 that is, or let imgate generate one",
            ));
        }
    }
    if let Ok(Some(usage)) = x509.key_usage()
        && !usage.value.key_cert_sign()
    {
        return Err(unusable(
            "its key usage does not allow signing certificates (keyCertSign)",
        ));
    }
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(unusable(
            "the private key in ca.key is not this certificate's key",
        ));
    }
    let validity = x509.validity();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if validity.not_before.timestamp() > now {
        return Err(unusable(&format!(
            "it is not valid before {}",
            validity.not_before
        )));
    }
    if validity.not_after.timestamp() <= now {
        return Err(unusable(&format!(
            "it expired on {}; rotate it (docs/interception-ca.md)",
            validity.not_after
        )));
    }
    let end = u64::try_from(validity.not_after.timestamp()).unwrap_or(0);
    Ok(UNIX_EPOCH + Duration::from_secs(end))
}

impl InterceptionCa {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), generating it on first use. `ca.pem`
    /// holds the CA's certificate first, then any intermediates above it (and its root, if
    /// clients are to be sent it).
    pub fn load_or_generate(dir: &Path) -> Result<Self, TlsError> {
        let (key, cert_pem, cert_path) = load_or_generate_ca(dir, &ca_params(CA_NAME))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::UnusableCa {
                path: cert_path.clone(),
                reason: format!("it is not PEM ({e})"),
            })?;
        let first = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(cert_path.clone()))?;
        let not_after = check_ca(first, &key, &cert_path)?;
        let issuer = Issuer::from_ca_cert_der(first, key)?;
        let left = not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left < CA_RENEW_BEFORE {
            tracing::warn!(
                "the interception CA {} ends in {} days: distribute its successor to clients \
                 and rotate it (docs/interception-ca.md)",
                cert_path.display(),
                left.as_secs() / 86_400
            );
        }
        let ca = Self {
            issuer,
            chain,
            cert_pem,
            cert_path,
            not_after,
            sessions: ServerSessionMemoryCache::new(SESSIONS_KEPT),
            minted: Mutex::new(LeafCache::new(
                NonZeroUsize::new(MAX_LEAVES).unwrap_or(NonZeroUsize::MIN),
                LEAF_TTL,
                MINT_BURST,
                MINT_PER_SECOND,
                Instant::now(),
            )),
        };
        ca.check_issuer_name()?;
        Ok(ca)
    }

    /// Checks that a leaf names the CA as the CA names itself, byte for byte: clients find
    /// a leaf's issuer by that name.
    fn check_issuer_name(&self) -> Result<(), TlsError> {
        let (leaf, _) = self.mint("issuer-check.invalid")?;
        let parse = |der: &CertificateDer<'_>| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert.subject().as_raw().to_vec())
                .ok()
        };
        let issuer = x509_parser::parse_x509_certificate(&leaf.cert[0])
            .map(|(_, cert)| cert.issuer().as_raw().to_vec())
            .ok();
        if issuer.is_none() || issuer != self.chain.first().and_then(parse) {
            return Err(TlsError::UnusableCa {
                path: self.cert_path.clone(),
                reason: "its name repeats an attribute (several OU= or DC=, say), which the \
                         certificates minted from it cannot copy exactly, so clients would not \
                         find it as their issuer; issue the interception CA with each \
                         attribute of its name once"
                    .into(),
            });
        }
        Ok(())
    }

    /// The leaf certificate for `name`, minted on first use.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        Ok(self.minted(name)?.0)
    }

    /// A server configuration presenting the leaf for `name` to the client.
    pub fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(self.minted(name)?.1)
    }

    /// How many names' leaves are kept.
    pub fn leaves_kept(&self) -> usize {
        self.cache().len()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LeafCache<Minted>> {
        self.minted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leaf for `name` and the configuration presenting it, minted when none younger
    /// than [`LEAF_TTL`] is kept.
    fn minted(&self, name: &str) -> Result<Minted, TlsError> {
        let name = name.to_ascii_lowercase();
        {
            let mut cache = self.cache();
            if let Some(minted) = cache.get(&name, Instant::now()) {
                return Ok(minted);
            }
            cache.allow_mint(Instant::now())?;
        }
        let minted = self.mint(&name)?;
        // Another session may have minted this name meanwhile: keep the first.
        Ok(self.cache().insert(&name, minted, Instant::now()))
    }

    fn mint(&self, name: &str) -> Result<Minted, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_owned());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + LEAF_LIFETIME).min(self.not_after).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| rustls::Error::General(e.to_owned()))?;
        let signing = default_provider().key_provider.load_private_key(private)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let leaf = Arc::new(CertifiedKey::new(chain, signing));
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf.clone())));
        config.session_storage = self.sessions.clone();
        Ok((leaf, Arc::new(config)))
    }
}

/// A new CA made from `params`, as PEM: the certificate and its private key.
pub(crate) fn generate_ca_pem(params: &CertificateParams) -> Result<CaPem, TlsError> {
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A CA certificate and its private key, as PEM, for a store other than a folder (the
/// operator keeps them in Secrets; each dataplane reads them as `ca.pem` and `ca.key`).
pub struct CaPem {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
}

impl InterceptionCa {
    /// A new interception CA, as PEM.
    pub fn generate_pem() -> Result<CaPem, TlsError> {
        generate_ca_pem(&ca_params(CA_NAME))
    }
}

/// A CA's key, its certificate (PEM) and where that is, from `dir` (`ca.key`, `ca.pem`);
/// generated from `params` on first use, the key readable by its owner only.
pub(crate) fn load_or_generate_ca(
    dir: &Path,
    params: &CertificateParams,
) -> Result<(KeyPair, String, PathBuf), TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if !key_path.exists() {
        let made = generate_ca_pem(params)?;
        write_private(&key_path, made.key.as_bytes()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, made.cert).map_err(io(&cert_path))?;
    }
    let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?;
    let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    Ok((key, cert_pem, cert_path))
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Writes a new private-key file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Certificates from a PEM file (extra roots for upstream servers).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certificates)
}

/// The upstream client configuration: the system's roots plus `extra_roots`, always verified;
/// a server presenting exactly one of `extra_roots` is accepted as that certificate's server
/// ([`UpstreamVerifier`]).
pub fn upstream_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    for certificate in extra_roots {
        roots.add(certificate.clone())?;
    }
    let provider = Arc::new(default_provider());
    let verifier = UpstreamVerifier::new(roots, extra_roots.to_vec(), &provider)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A leaf is minted again well before it ends.
const _: () = assert!(LEAF_TTL.as_secs() * 2 < LEAF_LIFETIME.as_secs());

#[cfg(test)]
mod tests;
