//! Who may use a tenant's tunnel. Each tenant has a tunnel CA of its own: it signs the
//! dataplane's server certificate and each connector's client certificate. Both ends verify
//! the other against that CA and nothing else, so a connector of one tenant can never reach
//! another tenant's dataplane. A connector's id is carried in its certificate (a URI
//! `imgate://connector/<tenant>/<id>`), and the dataplane takes it from there, never from
//! what the connector says in a stream header.
//!
//! Invariants: connector certificates are only ever issued for a certificate request, so a
//! connector's private key never leaves the connector; every TLS configuration speaks TLS 1.3
//! only (QUIC requires it). The dataplane accepts a connection without a client certificate
//! only for enrollment ([`ENROLL_ALPN`]); the listener refuses tunnel traffic from any
//! connection whose certificate does not name one of its tenant's connectors.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::ClientConfig;
use rustls::crypto::ring::default_provider;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{RootCertStore, version::TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::proxy::tls::load_or_generate_ca;

/// The tunnel's ALPN protocol name.
pub const ALPN: &[u8] = b"imgate-tunnel/1";

/// The ALPN protocol name of enrollment and renewal ([`super::enroll`]).
pub const ENROLL_ALPN: &[u8] = b"imgate-enroll/1";

/// What can go wrong with the tunnel's certificates.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Generating, parsing or signing failed.
    #[error("tunnel certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a key, a certificate or a configuration.
    #[error("tunnel TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("tunnel TLS: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A private key in an unusable form.
    #[error("tunnel key: {0}")]
    Key(String),
    /// The CA's files could not be read or written.
    #[error("tunnel CA: {0}")]
    Files(#[from] crate::proxy::tls::TlsError),
    /// A connector id that cannot be used.
    #[error(transparent)]
    Id(#[from] super::tokens::TokenError),
    /// A TLS configuration QUIC cannot use.
    #[error("the tunnel's TLS configuration cannot be used for QUIC: {0}")]
    Quic(String),
}

/// A certificate chain and its private key.
pub struct Identity {
    /// The certificate first, then its issuers.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

/// A tenant's tunnel CA.
pub struct TunnelCa {
    tenant: String,
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

fn ca_params(tenant: &str) -> CertificateParams {
    crate::proxy::tls::ca_params(&format!("imgate tunnel CA for {tenant}"))
}

/// Validity from an hour ago (clock skew) for `lifetime` from now.
fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + lifetime).into();
}

/// The URI naming connector `id` of `tenant` in its certificate.
fn connector_uri(tenant: &str, id: &str) -> String {
    format!("imgate://connector/{tenant}/{id}")
}

impl TunnelCa {
    /// A new CA for `tenant`.
    pub fn generate(tenant: &str) -> Result<Self, TrustError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(tenant).self_signed(&key)?;
        Ok(Self {
            tenant: tenant.to_owned(),
            cert: cert.der().clone(),
            issuer: Issuer::new(ca_params(tenant), key),
        })
    }

    /// A new CA for `tenant`, as PEM, for a store other than the tunnel folder.
    pub fn generate_pem(tenant: &str) -> Result<crate::proxy::tls::CaPem, TrustError> {
        Ok(crate::proxy::tls::generate_ca_pem(&ca_params(tenant))?)
    }

    /// Loads `tenant`'s CA from `dir` (`ca.pem`, `ca.key`), generating it on first use.
    pub fn load_or_generate(dir: &Path, tenant: &str) -> Result<Self, TrustError> {
        let (key, pem, cert_path) = load_or_generate_ca(dir, &ca_params(tenant))?;
        let cert = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| TrustError::Key(format!("{}: {e}", cert_path.display())))?;
        Ok(Self {
            tenant: tenant.to_owned(),
            cert,
            issuer: Issuer::new(ca_params(tenant), key),
        })
    }

    /// The CA certificate: what both ends trust.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issues the dataplane's server certificate for the names connectors dial, valid for
    /// `lifetime` from now ([`super::server_cert`] issues it again in time); the chain carries
    /// the CA, which a connector holding only a token's pin of it needs.
    pub fn issue_dataplane(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<Identity, TrustError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("imgate dataplane for {}", self.tenant),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: private_key(&key)?,
        })
    }

    /// Signs connector `id`'s certificate request (PEM), for `days`.
    pub fn sign_connector(
        &self,
        request_pem: &str,
        id: &str,
        days: u64,
    ) -> Result<CertificateDer<'static>, TrustError> {
        let request = read_request(request_pem)?;
        self.sign_request(request, id, Duration::from_secs(days * 86_400))
    }

    /// Signs a certificate request already read ([`read_request`]) for connector `id`, valid
    /// for `lifetime` from now (and from an hour back, for clocks behind).
    pub fn sign_request(
        &self,
        request: CertificateSigningRequestParams,
        id: &str,
        lifetime: Duration,
    ) -> Result<CertificateDer<'static>, TrustError> {
        let now = SystemTime::now();
        self.sign_between(request, id, now - Duration::from_secs(3600), now + lifetime)
    }

    /// [`Self::sign_request`], valid from `not_before` to `not_after`.
    pub(crate) fn sign_between(
        &self,
        mut request: CertificateSigningRequestParams,
        id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertificateDer<'static>, TrustError> {
        super::tokens::check_id(id)?;
        // The CA decides what the certificate says, not the request.
        let params = &mut request.params;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("imgate connector {id}"));
        params.subject_alt_names = vec![SanType::URI(connector_uri(&self.tenant, id).try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        Ok(request.signed_by(&self.issuer)?.der().clone())
    }
}

/// Reads a connector's certificate request (PEM), checking its signature: what a request
/// must pass before anything is spent on it (an enrollment token, say).
pub fn read_request(request_pem: &str) -> Result<CertificateSigningRequestParams, TrustError> {
    Ok(CertificateSigningRequestParams::from_pem(request_pem)?)
}

/// A certificate's start and end (`notBefore`, `notAfter`), in seconds since the Unix epoch.
pub fn validity_of(cert: &CertificateDer<'_>) -> Option<(u64, u64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let validity = parsed.validity();
    let seconds = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).ok();
    Some((seconds(validity.not_before)?, seconds(validity.not_after)?))
}

fn private_key(key: &KeyPair) -> Result<PrivateKeyDer<'static>, TrustError> {
    PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TrustError::Key(e.to_owned()))
}

/// A connector's key and its certificate request (PEM), made on the connector.
pub fn connector_request(id: &str) -> Result<(KeyPair, String), TrustError> {
    let key = KeyPair::generate()?;
    let request = request_for(&key, id)?;
    Ok((key, request))
}

/// A certificate request (PEM) for connector `id`'s existing `key`.
pub fn request_for(key: &KeyPair, id: &str) -> Result<String, TrustError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("imgate connector {id}"));
    Ok(params.serialize_request(key)?.pem()?)
}

/// The connector's identity from its key and the certificate the CA signed.
pub fn connector_identity(
    key: &KeyPair,
    cert: CertificateDer<'static>,
) -> Result<Identity, TrustError> {
    Ok(Identity {
        chain: vec![cert],
        key: private_key(key)?,
    })
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}

/// The dataplane's TLS configuration: its own identity; a client certificate, when given,
/// must be one the tenant's CA signed. Tunnel and enrollment ALPN.
pub fn dataplane_config(
    ca: &CertificateDer<'static>,
    identity: Identity,
) -> Result<ServerConfig, TrustError> {
    let provider = Arc::new(default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN.to_vec(), ENROLL_ALPN.to_vec()];
    Ok(config)
}

/// A connector's TLS configuration: its identity, and only its tenant's dataplanes.
pub fn connector_config(
    ca: &CertificateDer<'static>,
    identity: Identity,
) -> Result<ClientConfig, TrustError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A connector's TLS configuration for renewing its certificate: as [`connector_config`],
/// speaking the enrollment protocol.
pub fn renewal_config(
    ca: &CertificateDer<'static>,
    identity: Identity,
) -> Result<ClientConfig, TrustError> {
    let mut config = connector_config(ca, identity)?;
    config.alpn_protocols = vec![ENROLL_ALPN.to_vec()];
    Ok(config)
}

/// A new connector's TLS configuration for enrolling with a token: no identity yet, and a
/// dataplane whose chain holds the CA of the token's `pin`.
pub fn enrollment_config(pin: &str) -> Result<ClientConfig, TrustError> {
    let provider = Arc::new(default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(super::pinned::PinnedCa::new(pin, provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ENROLL_ALPN.to_vec()];
    Ok(config)
}

/// The tenant and connector id a verified connector certificate names.
pub fn connector_of(cert: &CertificateDer<'_>) -> Option<(String, String)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let names = parsed.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => {
                let rest = uri.strip_prefix("imgate://connector/")?;
                let (tenant, id) = rest.split_once('/')?;
                Some((tenant.to_owned(), id.to_owned()))
            }
            _ => None,
        })
}

#[cfg(test)]
pub(super) mod tests;
