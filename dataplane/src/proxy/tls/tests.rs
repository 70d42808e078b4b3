use rcgen::SanType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::*;

/// Whether a client with `client_config` completes TLS with a server presenting
/// `server_config` for `chat.example`, and reads what it sends; the client's error if not.
async fn greets(
    server_config: Arc<ServerConfig>,
    client_config: Arc<ClientConfig>,
) -> Result<(), String> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let acceptor = TlsAcceptor::from(server_config);
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
    let _ = server.await;
    let mut tls = connected.map_err(|e| e.to_string())?;
    let mut greeting = [0u8; 5];
    tls.read_exact(&mut greeting)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(&greeting, b"hello");
    Ok(())
}

/// A client trusting only `roots`.
fn trusting(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

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
    assert_eq!(ca.leaves_kept(), 1);
    let roots = load_certificates(&ca.cert_path).expect("CA certificate");
    let config = ca.server_config("chat.example").expect("config");
    greets(config.clone(), trusting(&roots))
        .await
        .expect("a client trusting the CA accepts its leaf");
    let error = greets(config, trusting(&[]))
        .await
        .expect_err("a client trusting nothing refuses it");
    assert!(error.contains("UnknownIssuer"), "{error}");
}

/// A root and an interception CA below it, as a firm's own PKI issues them; `dir` gets the
/// interception CA's key, and its certificate followed by the root's. Gives the root.
fn tenant_pki(dir: &Path) -> CertificateDer<'static> {
    let root_key = KeyPair::generate().expect("key");
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Example Corp Root CA");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::new(root_params, root_key);

    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Example Corp IM Inspection");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.use_authority_key_identifier_extension = true;
    let intermediate = params.signed_by(&key, &root_issuer).expect("intermediate");

    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("ca.pem"),
        format!("{}{}", intermediate.pem(), root.pem()),
    )
    .expect("ca.pem");
    write_private(&dir.join("ca.key"), key.serialize_pem().as_bytes()).expect("ca.key");
    root.der().clone()
}

#[tokio::test]
async fn a_tenant_ca_below_a_root_signs_leaves_that_chain_to_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = tenant_pki(dir.path());
    let ca = InterceptionCa::load_or_generate(dir.path()).expect("the tenant's CA loads");

    let leaf = ca.leaf("chat.example").expect("leaf");
    assert_eq!(leaf.cert.len(), 3, "leaf, interception CA, root");
    let (_, minted) = X509Certificate::from_der(&leaf.cert[0]).expect("leaf parses");
    let (_, issuer) = X509Certificate::from_der(&leaf.cert[1]).expect("CA parses");
    assert_eq!(
        minted.issuer(),
        issuer.subject(),
        "the leaf names its issuer as the CA names itself"
    );
    let key_id = |cert: &X509Certificate<'_>, authority: bool| {
        cert.extensions()
            .iter()
            .find_map(|extension| match extension.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) if authority => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                ParsedExtension::SubjectKeyIdentifier(ski) if !authority => Some(ski.0.to_vec()),
                _ => None,
            })
    };
    assert!(key_id(&issuer, false).is_some());
    assert_eq!(
        key_id(&minted, true),
        key_id(&issuer, false),
        "the leaf's authority key identifier is the CA's key identifier"
    );
    let usage = minted
        .key_usage()
        .expect("key usage")
        .expect("present")
        .value;
    assert!(usage.digital_signature(), "{usage}");
    assert!(
        !usage.key_encipherment() && !usage.key_cert_sign(),
        "digitalSignature only (RFC 5480): {usage}"
    );
    let lifetime =
        minted.validity().not_after.timestamp() - minted.validity().not_before.timestamp();
    assert_eq!(
        u64::try_from(lifetime).expect("positive"),
        LEAF_LIFETIME.as_secs() + 3600,
        "a leaf lives a week (from an hour back, for clocks behind)"
    );

    greets(
        ca.server_config("chat.example").expect("config"),
        trusting(&[root]),
    )
    .await
    .expect("a client trusting only the firm's root accepts the leaf");
}

/// Writes a CA made from `params` (signed by itself with `key`) and `key_file`'s key.
fn write_ca(dir: &Path, params: &CertificateParams, key: &KeyPair, key_file: &KeyPair) {
    std::fs::create_dir_all(dir).expect("dir");
    let cert = params.self_signed(key).expect("certificate");
    std::fs::write(dir.join("ca.pem"), cert.pem()).expect("ca.pem");
    write_private(&dir.join("ca.key"), key_file.serialize_pem().as_bytes()).expect("ca.key");
}

#[test]
fn a_ca_that_cannot_sign_leaves_is_refused_at_start_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let other = KeyPair::generate().expect("key");

    let mut server_cert = CertificateParams::new(vec!["chat.example".to_owned()]).expect("params");
    server_cert.subject_alt_names =
        vec![SanType::DnsName("chat.example".try_into().expect("name"))];
    let mut no_signing = ca_params("no signing");
    no_signing.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut expired = ca_params("expired");
    let now = SystemTime::now();
    expired.not_before = (now - Duration::from_secs(3 * 86_400)).into();
    expired.not_after = (now - Duration::from_secs(86_400)).into();
    let cases = [
        ("server", &server_cert, &key, "not a CA certificate"),
        ("no-signing", &no_signing, &key, "keyCertSign"),
        ("expired", &expired, &key, "expired on"),
        (
            "other-key",
            &ca_params("someone else's"),
            &other,
            "not this certificate's key",
        ),
    ];
    for (name, params, key_file, expected) in cases {
        let folder = dir.path().join(name);
        write_ca(&folder, params, &key, key_file);
        let error = InterceptionCa::load_or_generate(&folder)
            .err()
            .unwrap_or_else(|| panic!("{name}: refused"));
        let text = error.to_string();
        assert!(
            text.contains(expected) && text.contains("ca.pem"),
            "{name}: {text}"
        );
    }
}

#[test]
fn generated_cas_are_valid_for_a_bounded_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = InterceptionCa::load_or_generate(dir.path()).expect("CA");
    let left = ca
        .not_after
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(
        left <= CA_LIFETIME && left > CA_LIFETIME - Duration::from_secs(86_400),
        "{left:?}"
    );
    let leaf = ca.leaf("chat.example").expect("leaf");
    let (_, minted) = X509Certificate::from_der(&leaf.cert[0]).expect("leaf parses");
    assert!(
        minted.validity().not_after.timestamp()
            <= i64::try_from(
                ca.not_after
                    .duration_since(UNIX_EPOCH)
                    .expect("time")
                    .as_secs()
            )
            .expect("time"),
        "no leaf outlives its CA"
    );
}

#[tokio::test]
async fn a_rotated_ca_signs_every_leaf_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = InterceptionCa::load_or_generate(dir.path()).expect("CA");
    let old_roots = load_certificates(&old.cert_path).expect("old CA");

    // The rotation in docs/interception-ca.md: the successor replaces both files.
    let next = InterceptionCa::generate_pem().expect("successor");
    std::fs::remove_file(dir.path().join("ca.key")).expect("old key");
    write_private(&dir.path().join("ca.key"), next.key.as_bytes()).expect("new key");
    std::fs::write(dir.path().join("ca.pem"), &next.cert).expect("new certificate");

    let rotated = InterceptionCa::load_or_generate(dir.path()).expect("rotated CA");
    assert_eq!(rotated.cert_pem, next.cert);
    let new_roots = load_certificates(&rotated.cert_path).expect("new CA");
    let config = rotated.server_config("chat.example").expect("config");
    greets(config.clone(), trusting(&new_roots))
        .await
        .expect("clients that trust the successor accept its leaves");
    let error = greets(config, trusting(&old_roots))
        .await
        .expect_err("clients that trust only the old CA do not");
    // Both CAs have imgate's name: the old one is found and its signature does not match.
    assert!(error.contains("invalid peer certificate"), "{error}");
}

#[test]
fn a_ca_whose_name_repeats_an_attribute_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/O=Example Corp/OU=Compliance/OU=IM Inspection/CN=Example Inspection CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-days",
            "30",
            "-keyout",
        ])
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(dir.path().join("ca.pem"))
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let error = InterceptionCa::load_or_generate(dir.path())
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("repeats an attribute"),
        "{error}"
    );
}
