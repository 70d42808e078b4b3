//! TLS interception: the tenant's interception CA, leaf certificates minted from it per
//! server name (cached), the client-facing server configuration, and the upstream client
//! configuration that verifies the real server against the system roots plus configured
//! extra roots.
//!
//! Invariants: the CA's private key never leaves its file (mode 0600) and memory; a leaf and
//! the server configuration presenting it are made once per name and shared by every
//! session for that name (a configuration carries a session cache of its own, too large to
//! make per session); upstream certificates are always verified (no option
//! turns verification off); one crypto provider (ring) is used explicitly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::ClientConfig;
use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const CA_NAME: &str = "imgate interception CA";

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
}

/// The interception CA and its leaf cache.
pub struct InterceptionCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM: what clients must trust.
    pub cert_pem: String,
    /// Where the CA certificate is.
    pub cert_path: PathBuf,
    /// Per server name: the leaf and the configuration presenting it.
    minted: Mutex<HashMap<String, Minted>>,
}

/// A leaf and the server configuration presenting it.
type Minted = (Arc<CertifiedKey>, Arc<ServerConfig>);

/// The parameters of an imgate CA named `common_name`, which signs leaves only.
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
    params
}

impl InterceptionCa {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), generating it on first use.
    pub fn load_or_generate(dir: &Path) -> Result<Self, TlsError> {
        let (key, cert_pem, cert_path) = load_or_generate_ca(dir, &ca_params(CA_NAME))?;
        Ok(Self {
            issuer: Issuer::new(ca_params(CA_NAME), key),
            cert_pem,
            cert_path,
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// The leaf certificate for `name`, minted on first use.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        Ok(self.minted(name)?.0)
    }

    /// A server configuration presenting the leaf for `name` to the client.
    pub fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(self.minted(name)?.1)
    }

    /// The leaf for `name` and the configuration presenting it, made on first use.
    fn minted(&self, name: &str) -> Result<Minted, TlsError> {
        let name = name.to_ascii_lowercase();
        if let Some(minted) = self
            .minted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(minted.clone());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(3600)).into();
        params.not_after = (now + std::time::Duration::from_secs(90 * 86_400)).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| rustls::Error::General(e.to_owned()))?;
        let signing = default_provider().key_provider.load_private_key(private)?;
        let leaf = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf.clone())));
        // Intercepted connections protect their own records after the handshake.
        config.enable_secret_extraction = true;
        let config = Arc::new(config);
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        // Another session may have minted this name meanwhile: keep the first.
        Ok(minted.entry(name).or_insert((leaf, config)).clone())
    }
}

/// A CA's key, its certificate (PEM) and where that is, from `dir` (`ca.key`, `ca.pem`);
/// generated from `params` on first use, the key readable by its owner only.
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

/// The upstream client configuration: the system's roots plus `extra_roots`, always verified.
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
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Intercepted connections protect their own records after the handshake.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    #[tokio::test]
    async fn a_client_trusting_the_ca_accepts_minted_leaves_and_others_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = InterceptionCa::load_or_generate(dir.path()).expect("CA");
        let again = InterceptionCa::load_or_generate(dir.path()).expect("reloaded");
        assert_eq!(ca.cert_pem, again.cert_pem, "the CA is generated once");
        assert!(
            Arc::ptr_eq(
                &ca.leaf("chat.example").expect("leaf"),
                &ca.leaf("CHAT.example").expect("leaf")
            ),
            "leaves are cached"
        );
        assert!(
            Arc::ptr_eq(
                &ca.server_config("chat.example").expect("config"),
                &ca.server_config("Chat.Example").expect("config")
            ),
            "sessions for one name share one server configuration"
        );
        let roots = load_certificates(&ca.cert_path).expect("CA certificate");
        let trusting = upstream_config(&roots).expect("client config");
        let untrusting = upstream_config(&[]).expect("client config");
        for (client_config, should_work) in [(trusting, true), (untrusting, false)] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let acceptor =
                TlsAcceptor::from(ca.server_config("chat.example").expect("server config"));
            let server = tokio::spawn(async move {
                let mut tls = acceptor.accept(server).await?;
                tls.write_all(b"hello").await?;
                tls.flush().await?;
                Ok::<_, std::io::Error>(())
            });
            let name = rustls_pki_types::ServerName::try_from("chat.example").expect("name");
            let connected = TlsConnector::from(client_config)
                .connect(name, client)
                .await;
            match (connected, should_work) {
                (Ok(mut tls), true) => {
                    let mut greeting = [0u8; 5];
                    tls.read_exact(&mut greeting).await.expect("read");
                    assert_eq!(&greeting, b"hello");
                }
                (Err(error), false) => assert!(
                    error.to_string().contains("UnknownIssuer")
                        || error.to_string().contains("invalid peer certificate"),
                    "{error}"
                ),
                (result, _) => panic!("unexpected: {:?}", result.map(|_| ())),
            }
            let _ = server.await;
        }
    }
}
