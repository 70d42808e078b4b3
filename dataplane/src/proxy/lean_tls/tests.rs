use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

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

type Pair = (
    LeanTls<DuplexStream, UnbufferedClientConnection>,
    LeanTls<DuplexStream, UnbufferedServerConnection>,
);

async fn handshake(ca: &InterceptionCa, client: Arc<ClientConfig>) -> io::Result<Pair> {
    let (near, far) = tokio::io::duplex(1 << 16);
    let server = ca.server_config("chat.example").expect("server config");
    let (client, server) = tokio::join!(connect(client, name(), near), accept(server, far));
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

#[tokio::test]
async fn works_with_rustls_buffered_connections_on_the_other_side() {
    let (_dir, ca, client_config) = setup(true);

    let (near, far) = tokio::io::duplex(1 << 16);
    let acceptor =
        tokio_rustls::TlsAcceptor::from(ca.server_config("chat.example").expect("config"));
    let (lean, buffered) = tokio::join!(
        connect(client_config.clone(), name(), near),
        acceptor.accept(far)
    );
    let (mut lean, mut buffered) = (lean.expect("lean client"), buffered.expect("server"));
    buffered.write_all(b"<stream>").await.expect("write");
    buffered.flush().await.expect("flush");
    let mut greeting = [0u8; 8];
    lean.read_exact(&mut greeting).await.expect("read");
    assert_eq!(&greeting, b"<stream>");

    let (near, far) = tokio::io::duplex(1 << 16);
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let server = ca.server_config("chat.example").expect("config");
    let (buffered, lean) = tokio::join!(connector.connect(name(), near), accept(server, far));
    let (mut buffered, mut lean) = (buffered.expect("client"), lean.expect("lean server"));
    buffered.write_all(b"<message/>").await.expect("write");
    buffered.flush().await.expect("flush");
    let mut message = [0u8; 10];
    lean.read_exact(&mut message).await.expect("read");
    assert_eq!(&message, b"<message/>");
}

#[tokio::test]
async fn a_server_the_client_does_not_trust_is_refused_on_both_sides() {
    let (_dir, ca, untrusting) = setup(false);
    let (near, far) = tokio::io::duplex(1 << 16);
    let server = ca.server_config("chat.example").expect("server config");
    let (client, server) = tokio::join!(connect(untrusting, name(), near), accept(server, far));
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
            accept(ca.server_config("chat.example").expect("config"), far).await
        });
        prop_assert!(accepted.is_err(), "garbage never completes a handshake");
    }
}

#[tokio::test]
async fn a_peer_that_does_not_read_holds_back_writes_at_a_bounded_buffer_and_loses_nothing() {
    let (_dir, ca, client_config) = setup(true);
    let (mut client, mut server) = handshake(&ca, client_config).await.expect("handshake");

    // Write until the connection refuses more, with nobody reading on the other side.
    let chunk = payload(RECORD_PLAINTEXT);
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
