//! How an upstream server's certificate is verified: by rustls's own WebPKI verifier against
//! the system's roots and the extra certificates an operator gives (`--extra-roots`), and,
//! besides, a server presenting exactly one of those extra certificates is accepted, pinned.
//!
//! The second rule is for the self-signed certificate a server is usually given
//! (`openssl req -x509` makes one with CA:TRUE): WebPKI refuses a CA as a server's own
//! certificate (`CaUsedAsEndEntity`), though an operator who named that certificate means
//! exactly that server.
//!
//! Invariants: every certificate is first put to the WebPKI verifier, whose answer stands
//! unless it refused and the server's certificate is byte for byte one the operator gave;
//! a pinned certificate must still name the server and be valid now; handshake signatures
//! are always checked with the one crypto provider's algorithms; with no root at all, only a
//! pinned certificate is accepted.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;

/// The WebPKI verifier (none without a single root), and the certificates the operator gave.
#[derive(Debug)]
pub struct UpstreamVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl UpstreamVerifier {
    /// A verifier on `roots` (the extra certificates among them), with the `pinned`
    /// certificates accepted as their servers' own; `provider` checks every signature.
    pub fn new(
        roots: rustls::RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, rustls::Error> {
        let webpki = if roots.is_empty() {
            None
        } else {
            let built =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            Some(built)
        };
        Ok(Self {
            webpki,
            pinned,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// Accepts `end_entity`, which the operator gave, as the certificate of `server_name`
    /// if it names it and is valid at `now`.
    fn pinned(
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = parsed.validity();
        if now < validity.not_before.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        if now > validity.not_after.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match verified {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Self::pinned(end_entity, server_name, now)
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::crypto::ring::default_provider;

    use super::*;

    /// A self-signed certificate for `name`, a CA as `openssl req -x509` makes it, valid
    /// from `days_from_now.0` to `days_from_now.1` days from now.
    fn self_signed(name: &str, days_from_now: (i64, i64)) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let at = |days: i64| {
            let span = std::time::Duration::from_secs(days.unsigned_abs() * 86_400);
            let now = std::time::SystemTime::now();
            if days < 0 { now - span } else { now + span }
        };
        params.not_before = at(days_from_now.0).into();
        params.not_after = at(days_from_now.1).into();
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("signed").der().clone()
    }

    fn verifier(given: &[CertificateDer<'static>]) -> UpstreamVerifier {
        let mut roots = rustls::RootCertStore::empty();
        for cert in given {
            roots.add(cert.clone()).expect("a root");
        }
        UpstreamVerifier::new(roots, given.to_vec(), &Arc::new(default_provider()))
            .expect("verifier")
    }

    fn verify(
        verifier: &UpstreamVerifier,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).expect("a name");
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn a_given_self_signed_certificate_is_its_servers_own_and_nothing_more() {
        let server = self_signed("chat.acme.example", (-1, 30));
        let given = verifier(std::slice::from_ref(&server));
        assert!(
            verify(&verifier(&[]), &server, "chat.acme.example").is_err(),
            "not given: refused"
        );
        assert!(verify(&given, &server, "chat.acme.example").is_ok());
        assert!(
            verify(&given, &server, "other.acme.example").is_err(),
            "for another name: refused"
        );
        let stranger = self_signed("chat.acme.example", (-1, 30));
        assert!(
            verify(&given, &stranger, "chat.acme.example").is_err(),
            "another certificate for the same name: refused"
        );
        let expired = self_signed("chat.acme.example", (-30, -1));
        assert!(
            matches!(
                verify(
                    &verifier(std::slice::from_ref(&expired)),
                    &expired,
                    "chat.acme.example"
                ),
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                ))
            ),
            "a given certificate out of its validity: refused"
        );
    }
}
