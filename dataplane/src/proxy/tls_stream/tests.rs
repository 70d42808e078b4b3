use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::default_provider;
use rustls::{SignatureAlgorithm, SupportedCipherSuite};

use super::*;
use crate::proxy::tls::{InterceptionCa, load_certificates, upstream_config};

/// A CA that mints `chat.example`, and a client configuration trusting it (or trusting
/// nothing).
fn setup(trusting: bool) -> (tempfile::TempDir, InterceptionCa, Arc<ClientConfig>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = InterceptionCa::load_or_generate(dir.path()).expect("CA");
    let roots = if trusting {
        load_certificates(&ca.cert_path).expect("CA certificate")
    } else {
        Vec::new()
    };
    let client = upstream_config(&roots).expect("client config");
    (dir, ca, client)
}

fn name() -> ServerName<'static> {
    ServerName::try_from("chat.example").expect("name")
}

type Pair = (ClientTls<DuplexStream>, ServerTls<DuplexStream>);

/// Long enough for any handshake in a test; the limit itself is tested with paused time.
const LIMIT: Duration = Duration::from_secs(3600);

async fn handshake(ca: &InterceptionCa, client: Arc<ClientConfig>) -> io::Result<Pair> {
    let (near, far) = tokio::io::duplex(1 << 16);
    let server = ca.server_config("chat.example").expect("server config");
    let (client, server) = tokio::join!(
        connect(client, name(), near, LIMIT),
        accept(server, far, LIMIT)
    );
    Ok((client?, server?))
}

/// A recognisable payload of `len` bytes.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn both_sides_exchange_data_across_many_records_and_hold_no_buffer_when_idle() {
    let (_dir, ca, client_config) = setup(true);
    let (mut client, mut server) = handshake(&ca, client_config).await.expect("handshake");

    let sent = payload(100_000);
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            client.write_all(&sent).await?;
            client.flush().await?;
            let mut echoed = vec![0u8; sent.len()];
            client.read_exact(&mut echoed).await?;
            Ok::<_, io::Error>((client, echoed))
        })
    };
    let mut received = vec![0u8; sent.len()];
    server
        .read_exact(&mut received)
        .await
        .expect("server reads");
    assert_eq!(received, sent, "the server reads what the client wrote");
    server.write_all(&received).await.expect("server writes");
    server.flush().await.expect("server flushes");
    let (mut client, echoed) = writer.await.expect("join").expect("client side");
    assert_eq!(echoed, sent, "the client reads what the server wrote");

    assert_eq!(
        client.held(),
        0,
        "an idle client connection holds no buffer"
    );
    assert_eq!(
        server.held(),
        0,
        "an idle server connection holds no buffer"
    );

    client.shutdown().await.expect("close_notify");
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.expect("end of stream");
    assert!(rest.is_empty(), "nothing follows close_notify");
}

/// The provider's cipher suites that the CA's (ECDSA) leaves can serve.
fn suites() -> Vec<SupportedCipherSuite> {
    default_provider()
        .cipher_suites
        .into_iter()
        .filter(|suite| suite.usable_for_signature_algorithm(SignatureAlgorithm::ECDSA))
        .collect()
}

/// A client configuration trusting the CA that offers `suite` alone.
fn client_offering(ca: &InterceptionCa, suite: SupportedCipherSuite) -> Arc<ClientConfig> {
    let provider = CryptoProvider {
        cipher_suites: vec![suite],
        ..default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(&ca.cert_path).expect("CA certificate") {
        roots.add(certificate).expect("root");
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[suite.version()])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Many records each way between one of ours and a rustls one, then close_notify
/// each way.
async fn exchange<L, B>(ours: &mut L, buffered: &mut B, what: &str)
where
    L: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let sent = payload(40_000);
    ours.write_all(&sent).await.expect("we write");
    ours.flush().await.expect("we flush");
    let mut received = vec![0u8; sent.len()];
    buffered
        .read_exact(&mut received)
        .await
        .expect("rustls reads");
    assert!(received == sent, "{what}: rustls reads what we wrote");
    buffered.write_all(&sent).await.expect("rustls writes");
    buffered.flush().await.expect("rustls flushes");
    ours.read_exact(&mut received).await.expect("we read");
    assert!(received == sent, "{what}: we read what rustls wrote");

    ours.shutdown().await.expect("our close_notify");
    let mut rest = Vec::new();
    buffered
        .read_to_end(&mut rest)
        .await
        .expect("rustls sees a clean end");
    buffered.shutdown().await.expect("rustls close_notify");
    ours.read_to_end(&mut rest)
        .await
        .expect("we see a clean end");
    assert!(rest.is_empty(), "{what}: nothing follows close_notify");
}

#[tokio::test]
async fn every_cipher_suite_works_with_rustls_on_the_other_side_in_both_roles() {
    let (_dir, ca, _) = setup(true);
    let suites = suites();
    assert!(
        suites.len() >= 6,
        "three TLS 1.3 and three TLS 1.2 suites: {suites:?}"
    );
    for suite in suites {
        let what = format!("{:?}", suite.suite());
        let ((mut ours_client, mut rustls_server), (mut rustls_client, mut ours_server)) =
            pairs_with_rustls(&ca, client_offering(&ca, suite)).await;
        assert_eq!(
            rustls_server.get_ref().1.negotiated_cipher_suite(),
            Some(suite)
        );
        assert_eq!(
            rustls_client.get_ref().1.negotiated_cipher_suite(),
            Some(suite)
        );
        exchange(
            &mut ours_client,
            &mut rustls_server,
            &format!("our client, {what}"),
        )
        .await;
        exchange(
            &mut ours_server,
            &mut rustls_client,
            &format!("our server, {what}"),
        )
        .await;
    }
}

/// Our client connected to a rustls server, and a rustls client to our server.
async fn pairs_with_rustls(
    ca: &InterceptionCa,
    client_config: Arc<ClientConfig>,
) -> (
    (
        ClientTls<DuplexStream>,
        tokio_rustls::server::TlsStream<DuplexStream>,
    ),
    (
        tokio_rustls::client::TlsStream<DuplexStream>,
        ServerTls<DuplexStream>,
    ),
) {
    let (near, far) = tokio::io::duplex(1 << 16);
    let acceptor =
        tokio_rustls::TlsAcceptor::from(ca.server_config("chat.example").expect("config"));
    let (ours_client, rustls_server) = tokio::join!(
        connect(client_config.clone(), name(), near, LIMIT),
        acceptor.accept(far)
    );
    let (near, far) = tokio::io::duplex(1 << 16);
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let server = ca.server_config("chat.example").expect("config");
    let (rustls_client, ours_server) =
        tokio::join!(connector.connect(name(), near), accept(server, far, LIMIT));
    (
        (
            ours_client.expect("our client"),
            rustls_server.expect("rustls server"),
        ),
        (
            rustls_client.expect("rustls client"),
            ours_server.expect("our server"),
        ),
    )
}

/// The peer updates its keys and asks for ours: this side reads under the peer's new key
/// and its answer reaches the peer.
async fn follows_a_key_update<S, B>(ours: &mut S, buffered: &mut B, refresh: impl FnOnce(&mut B))
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    ours.write_all(b"before").await.expect("write");
    let mut before = [0u8; 6];
    buffered.read_exact(&mut before).await.expect("read");

    refresh(buffered);
    buffered
        .write_all(b"after the update")
        .await
        .expect("write");
    buffered.flush().await.expect("flush");
    let mut after = [0u8; 16];
    ours.read_exact(&mut after)
        .await
        .expect("this side follows the peer's new key");
    assert_eq!(&after, b"after the update");

    ours.write_all(b"answer").await.expect("write");
    let mut answer = [0u8; 6];
    buffered
        .read_exact(&mut answer)
        .await
        .expect("the peer reads under the new key");
    assert_eq!(&answer, b"answer");
}

#[tokio::test]
async fn key_updates_from_the_peer_are_followed_and_answered_in_both_roles() {
    let (_dir, ca, client_config) = setup(true);
    let ((mut ours_client, mut rustls_server), (mut rustls_client, mut ours_server)) =
        pairs_with_rustls(&ca, client_config).await;
    follows_a_key_update(&mut ours_client, &mut rustls_server, |server| {
        server.get_mut().1.refresh_traffic_keys().expect("refresh");
    })
    .await;
    follows_a_key_update(&mut ours_server, &mut rustls_client, |client| {
        client.get_mut().1.refresh_traffic_keys().expect("refresh");
    })
    .await;
}

#[tokio::test]
async fn a_forged_record_after_the_handshake_is_refused_and_the_peer_told_why() {
    let (_dir, ca, client_config) = setup(true);
    let (_, (mut rustls_client, mut ours_server)) = pairs_with_rustls(&ca, client_config).await;
    let mut forged = vec![23, 3, 3, 0, 40];
    forged.extend_from_slice(&payload(40));
    rustls_client
        .get_mut()
        .0
        .write_all(&forged)
        .await
        .expect("write");
    let mut buffer = [0u8; 16];
    let error = ours_server.read(&mut buffer).await.expect_err("refused");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("cannot decrypt"), "{error}");
    assert!(
        ours_server.read(&mut buffer).await.is_err(),
        "not used again"
    );
    let told = rustls_client
        .read(&mut buffer)
        .await
        .expect_err("the alert arrives");
    assert!(told.to_string().contains("BadRecordMac"), "{told}");
}

#[tokio::test]
async fn a_server_the_client_does_not_trust_is_refused_on_both_sides() {
    let (_dir, ca, untrusting) = setup(false);
    let (near, far) = tokio::io::duplex(1 << 16);
    let server = ca.server_config("chat.example").expect("server config");
    let (client, server) = tokio::join!(
        connect(untrusting, name(), near, LIMIT),
        accept(server, far, LIMIT)
    );
    let error = client.err().expect("the client refuses the certificate");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    let error = server.err().expect("the server hears of it");
    assert!(
        error.to_string().contains("UnknownCA") || error.kind() == io::ErrorKind::UnexpectedEof,
        "the client's alert reaches the server: {error}"
    );
}

#[tokio::test]
async fn a_client_hello_claiming_more_than_rustls_takes_ends_the_handshake_without_a_panic() {
    let (_dir, ca, _) = setup(true);
    let (mut near, far) = tokio::io::duplex(1 << 16);
    // One record holding the start of a ClientHello that says it is 65,536 bytes long.
    near.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00])
        .await
        .expect("write");
    let server = ca.server_config("chat.example").expect("config");
    let error = accept(server, far, LIMIT)
        .await
        .err()
        .expect("refused, not a panic");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_from_a_client_ends_the_handshake_with_an_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..4000)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (_dir, ca, _) = setup(true);
        let accepted = runtime.block_on(async {
            let (mut near, far) = tokio::io::duplex(1 << 16);
            near.write_all(&bytes).await.expect("write");
            near.shutdown().await.expect("close");
            accept(ca.server_config("chat.example").expect("config"), far, LIMIT).await
        });
        prop_assert!(accepted.is_err(), "garbage never completes a handshake");
    }
}

#[tokio::test]
async fn a_peer_that_does_not_read_holds_back_writes_at_a_bounded_buffer_and_loses_nothing() {
    let (_dir, ca, client_config) = setup(true);
    let (mut client, mut server) = handshake(&ca, client_config).await.expect("handshake");

    // Write until the connection refuses more, with nobody reading on the other side.
    let chunk = payload(MAX_PLAINTEXT);
    let mut context = Context::from_waker(std::task::Waker::noop());
    let mut accepted = 0;
    while let Poll::Ready(written) = Pin::new(&mut client).poll_write(&mut context, &chunk) {
        accepted += written.expect("write");
        assert!(accepted < 16 << 20, "writes are never refused");
    }
    // At most MAX_UNSENT and one record wait; the buffer's capacity is at most twice that.
    let held = client.held();
    assert!(
        held <= 2 * (MAX_UNSENT + READ_CHUNK),
        "unsent bytes stay bounded: {held}"
    );

    // Once the peer reads, everything written arrives, in order.
    let reading = tokio::spawn(async move {
        let mut received = vec![0u8; accepted];
        server.read_exact(&mut received).await.map(|_| received)
    });
    client.flush().await.expect("flush");
    let received = reading.await.expect("join").expect("read");
    assert!(
        received
            .chunks(chunk.len())
            .all(|part| part == &chunk[..part.len()]),
        "every byte arrives as written"
    );
    assert_eq!(client.held(), 0, "nothing is held once the peer has read");
}

#[tokio::test]
async fn bytes_after_the_peers_close_notify_are_ignored_and_not_kept() {
    let (_dir, ca, client_config) = setup(true);
    let (_, (mut rustls_client, mut ours_server)) = pairs_with_rustls(&ca, client_config).await;
    rustls_client.write_all(b"last words").await.expect("write");
    rustls_client.get_mut().1.send_close_notify();
    rustls_client.flush().await.expect("flush");
    rustls_client
        .get_mut()
        .0
        .write_all(b"\x17\x03\x03\x00\x05after")
        .await
        .expect("write after close_notify");

    let mut received = Vec::new();
    ours_server
        .read_to_end(&mut received)
        .await
        .expect("a clean end at close_notify");
    assert_eq!(received, b"last words");
    assert_eq!(
        ours_server.held(),
        0,
        "what followed close_notify is not kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handshake_that_stalls_ends_at_its_limit_on_either_side() {
    let (_dir, ca, client_config) = setup(true);
    let limit = Duration::from_secs(10);

    // A client that connects and says nothing.
    let (_silent_client, far) = tokio::io::duplex(1 << 16);
    let server = ca.server_config("chat.example").expect("config");
    let error = accept(server, far, limit)
        .await
        .err()
        .expect("the handshake times out");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    assert!(error.to_string().contains("10s"), "{error}");

    // A server that takes the ClientHello and never answers.
    let (near, _silent_server) = tokio::io::duplex(1 << 16);
    let error = connect(client_config, name(), near, limit)
        .await
        .err()
        .expect("the handshake times out");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
}

#[tokio::test]
async fn an_end_of_stream_without_close_notify_is_a_truncation_not_a_clean_end() {
    let (_dir, ca, client_config) = setup(true);
    let (_, (rustls_client, mut ours)) = pairs_with_rustls(&ca, client_config).await;
    use std::io::Write as _;
    let (mut socket, mut connection) = rustls_client.into_inner();
    connection
        .writer()
        .write_all(b"half a sent")
        .expect("plaintext");
    let mut records = Vec::new();
    connection.write_tls(&mut records).expect("records");
    socket.write_all(&records).await.expect("write");
    socket
        .shutdown()
        .await
        .expect("end of stream, no close_notify");

    let mut received = [0u8; 11];
    ours.read_exact(&mut received).await.expect("what arrived");
    assert_eq!(&received, b"half a sent");
    let error = ours.read(&mut [0u8; 8]).await.expect_err("truncated");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert!(error.to_string().contains("truncated"), "{error}");
    assert!(ours.read(&mut [0u8; 8]).await.is_err(), "and stays so");
}
