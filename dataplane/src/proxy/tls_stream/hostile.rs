//! Hostile TLS peers: authenticated by a real handshake, then sending what no well-behaved
//! peer sends (floods of key updates, renegotiation, alerts and empty records, padded
//! oversized records). Each case shows that the connection ends with an error naming why,
//! or goes on correctly, and that its buffers stay bounded throughout.
//!
//! The peer seals its records itself with ChaCha20-Poly1305 (RFC 8446 §5.2, RFC 7905), under
//! keys rustls hands it through its kernel-connection API, so that it can send records
//! rustls would refuse to make.

use std::pin::Pin;
use std::task::{Context, Poll};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{ConnectionTrafficSecrets, ContentType, HandshakeType, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::proxy::tls::{InterceptionCa, load_certificates, upstream_config};

/// Long enough for any handshake in a test.
const LIMIT: Duration = Duration::from_secs(3600);

/// The most a connection may hold in buffers while a peer floods it: what waits to be sent
/// for a peer that does not read, one read and one post-handshake message.
const BOUND: usize = MAX_UNSENT + 2 * MAX_PLAINTEXT + READ_CHUNK + 70 * 1024;

/// One direction's record protection, as the hostile peer does it.
struct Sealer {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
    tls13: bool,
}

impl Sealer {
    fn new(tls13: bool, (seq, secrets): (u64, ConnectionTrafficSecrets)) -> Self {
        let ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } = secrets else {
            panic!("hostile peers negotiate ChaCha20-Poly1305");
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, key.as_ref()).expect("key");
        let mut fixed = [0u8; 12];
        fixed.copy_from_slice(iv.as_ref());
        Self {
            key: LessSafeKey::new(key),
            iv: fixed,
            seq,
            tls13,
        }
    }

    /// One protected record of `content` with `padding` zero bytes (TLS 1.3 only).
    fn record(&mut self, content_type: ContentType, content: &[u8], padding: usize) -> Vec<u8> {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        let mut body = content.to_vec();
        let (outer, aad) = if self.tls13 {
            body.push(u8::from(content_type));
            body.resize(body.len() + padding, 0);
            let header = header(ContentType::ApplicationData, body.len() + 16);
            (header, header.to_vec())
        } else {
            let mut aad = (self.seq - 1).to_be_bytes().to_vec();
            aad.extend_from_slice(&[u8::from(content_type), 3, 3]);
            aad.extend_from_slice(&u16::try_from(content.len()).expect("len").to_be_bytes());
            (header(content_type, body.len() + 16), aad)
        };
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("seal");
        let mut record = outer.to_vec();
        record.extend_from_slice(&body);
        record.extend_from_slice(tag.as_ref());
        record
    }
}

fn header(content_type: ContentType, len: usize) -> [u8; 5] {
    let [high, low] = u16::try_from(len).expect("len").to_be_bytes();
    [u8::from(content_type), 3, 3, high, low]
}

/// A peer past its handshake that sends whatever records it likes and never reads.
struct Hostile {
    io: DuplexStream,
    tx: Sealer,
    /// The next sending key, from rustls.
    rekey: Rekey,
}

impl Hostile {
    fn record(&mut self, content_type: ContentType, content: &[u8]) -> Vec<u8> {
        self.tx.record(content_type, content, 0)
    }

    /// A TLS 1.3 key update, after which this peer sends under its next key.
    fn key_update(&mut self, requested: bool) -> Vec<u8> {
        let message = [
            u8::from(HandshakeType::KeyUpdate),
            0,
            0,
            1,
            u8::from(requested),
        ];
        let record = self.record(ContentType::Handshake, &message);
        self.tx = Sealer::new(true, (self.rekey)());
        record
    }

    fn close_notify(&mut self) -> Vec<u8> {
        self.record(ContentType::Alert, &[1, 0])
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io
            .write_all(bytes)
            .await
            .expect("the hostile peer sends");
    }
}

/// What a test needs of our side, whichever role it plays.
trait Ours: AsyncRead + AsyncWrite + Unpin {
    fn held(&self) -> usize;
}

impl<C: Unbuffered> Ours for TlsStream<DuplexStream, C> {
    fn held(&self) -> usize {
        TlsStream::held(self)
    }
}

/// Which side the hostile peer plays.
#[derive(Clone, Copy, Debug)]
enum Peer {
    Client,
    Server,
}

#[derive(Debug)]
struct Leaf(Arc<CertifiedKey>);

impl ResolvesServerCert for Leaf {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The hostile peer's crypto: ChaCha20-Poly1305 alone, in the version asked for.
fn chacha(tls13: bool) -> (CryptoProvider, &'static SupportedProtocolVersion) {
    let (suite, version) = if tls13 {
        (
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            &rustls::version::TLS13,
        )
    } else {
        (
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            &rustls::version::TLS12,
        )
    };
    let provider = CryptoProvider {
        cipher_suites: vec![suite],
        ..default_provider()
    };
    (provider, version)
}

fn name() -> ServerName<'static> {
    ServerName::try_from("chat.example").expect("name")
}

/// The next sending key of a peer, from rustls.
type Rekey = Box<dyn FnMut() -> (u64, ConnectionTrafficSecrets)>;

/// What the hostile peer takes from rustls once its handshake is done: the keys, and how to
/// get the next ones.
trait IntoKernel {
    fn into_kernel(self) -> (rustls::ExtractedSecrets, Rekey);
}

macro_rules! into_kernel {
    ($connection:ty) => {
        impl IntoKernel for $connection {
            fn into_kernel(self) -> (rustls::ExtractedSecrets, Rekey) {
                let (secrets, mut kernel) =
                    self.dangerous_into_kernel_connection().expect("kernel");
                let rekey = move || kernel.update_tx_secret().expect("next key");
                (secrets, Box::new(rekey))
            }
        }
    };
}

into_kernel!(UnbufferedClientConnection);
into_kernel!(UnbufferedServerConnection);

fn into_kernel<C: Unbuffered + IntoKernel>(
    hostile: io::Result<TlsStream<DuplexStream, C>>,
) -> (DuplexStream, rustls::ExtractedSecrets, Rekey) {
    let (io, conn, _) = hostile.expect("hostile handshake").into_parts();
    let (secrets, rekey) = conn.into_kernel();
    (io, secrets, rekey)
}

/// Our side of a completed handshake with a hostile `peer`, over a pipe that buffers
/// `pipe` bytes each way.
async fn against(
    peer: Peer,
    tls13: bool,
    pipe: usize,
) -> (tempfile::TempDir, Box<dyn Ours>, Hostile) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = InterceptionCa::load_or_generate(dir.path()).expect("CA");
    let roots = load_certificates(&ca.cert_path).expect("CA certificate");
    let (provider, version) = chacha(tls13);
    let (near, far) = tokio::io::duplex(pipe);
    let (ours, io, secrets, rekey): (Box<dyn Ours>, _, _, Rekey) = match peer {
        Peer::Client => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root).expect("root");
            }
            let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .expect("version")
                .with_root_certificates(store)
                .with_no_client_auth();
            config.enable_secret_extraction = true;
            let server = ca.server_config("chat.example").expect("config");
            let (hostile, ours) = tokio::join!(
                connect(Arc::new(config), name(), near, LIMIT),
                accept(server, far, LIMIT)
            );
            let (io, secrets, rekey) = into_kernel(hostile);
            (Box::new(ours.expect("our handshake")), io, secrets, rekey)
        }
        Peer::Server => {
            let leaf = ca.leaf("chat.example").expect("leaf");
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .expect("version")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Leaf(leaf)));
            config.enable_secret_extraction = true;
            config.send_tls13_tickets = 0;
            let client = upstream_config(&roots).expect("client config");
            let (ours, hostile) = tokio::join!(
                connect(client, name(), near, LIMIT),
                accept(Arc::new(config), far, LIMIT)
            );
            let (io, secrets, rekey) = into_kernel(hostile);
            (Box::new(ours.expect("our handshake")), io, secrets, rekey)
        }
    };
    let hostile = Hostile {
        io,
        tx: Sealer::new(tls13, secrets.tx),
        rekey,
    };
    (dir, ours, hostile)
}

/// How reading ended.
struct Outcome {
    received: Vec<u8>,
    end: io::Result<()>,
    /// The most the connection held in buffers at any point.
    most_held: usize,
}

/// Reads until the stream ends or fails.
async fn read_to_the_end(ours: &mut dyn Ours) -> Outcome {
    let mut received = Vec::new();
    let mut most_held = 0;
    let mut chunk = [0u8; 4096];
    loop {
        let read = ours.read(&mut chunk).await;
        most_held = most_held.max(ours.held());
        match read {
            Ok(0) => {
                break Outcome {
                    received,
                    end: Ok(()),
                    most_held,
                };
            }
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) => {
                break Outcome {
                    received,
                    end: Err(error),
                    most_held,
                };
            }
        }
    }
}

/// Sends `records`, then reads to the end on our side.
async fn flood(ours: &mut dyn Ours, hostile: &mut Hostile, records: Vec<u8>) -> Outcome {
    let (_, outcome) = tokio::join!(hostile.send(&records), read_to_the_end(ours));
    assert!(
        outcome.most_held <= BOUND,
        "buffers stay bounded under a flood: {}",
        outcome.most_held
    );
    outcome
}

/// The error a flood ended with, checked to be a refusal of the peer's TLS.
fn refused(outcome: Outcome, what: &str) -> String {
    let error = outcome.end.expect_err(what);
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}: {error}");
    error.to_string()
}

#[tokio::test]
async fn a_key_update_flood_from_a_peer_that_does_not_read_is_followed_with_bounded_buffers() {
    for peer in [Peer::Client, Peer::Server] {
        let (_dir, mut ours, mut hostile) = against(peer, true, 1 << 16).await;
        let mut context = Context::from_waker(std::task::Waker::noop());
        let mut most_held = 0;
        let mut blocked_writes = 0;
        for round in 0..400u32 {
            // Each update asks for ours; a byte of data after each lets rustls go on
            // following them (it refuses long runs of updates with nothing between).
            let mut records = Vec::new();
            for _ in 0..50 {
                records.extend(hostile.key_update(true));
                records.extend(hostile.record(ContentType::ApplicationData, b"x"));
            }
            let mut received = [0u8; 50];
            let (_, read) = tokio::join!(hostile.send(&records), ours.read_exact(&mut received));
            read.unwrap_or_else(|e| panic!("{peer:?}, round {round}: {e}"));
            assert_eq!(received, [b'x'; 50]);
            // We write as well, and the peer never reads.
            match Pin::new(&mut *ours).poll_write(&mut context, &[0u8; 1024]) {
                Poll::Ready(written) => {
                    written.expect("writes are held, never refused");
                }
                Poll::Pending => blocked_writes += 1,
            }
            most_held = most_held.max(ours.held());
        }
        assert!(
            blocked_writes > 0,
            "{peer:?}: writes wait once the peer stops reading"
        );
        assert!(
            most_held <= MAX_UNSENT + 2 * MAX_PLAINTEXT,
            "{peer:?}: 20,000 requested key updates grow nothing: {most_held}"
        );
    }
}

#[tokio::test]
async fn a_run_of_key_updates_with_nothing_between_is_refused() {
    for peer in [Peer::Client, Peer::Server] {
        let (_dir, mut ours, mut hostile) = against(peer, true, 1 << 20).await;
        let records = (0..1000).flat_map(|_| hostile.key_update(false)).collect();
        let outcome = flood(&mut *ours, &mut hostile, records).await;
        let error = refused(outcome, "a run of key updates");
        assert!(
            error.contains("TooManyKeyUpdateRequests"),
            "{peer:?}: {error}"
        );
    }
}

#[tokio::test]
async fn renegotiation_and_hello_requests_are_refused_in_both_roles_and_versions() {
    // What the peer sends: a HelloRequest from a server, a ClientHello from a client.
    let hello_request = [u8::from(HandshakeType::HelloRequest), 0, 0, 0];
    let mut client_hello = vec![u8::from(HandshakeType::ClientHello), 0, 0, 40, 3, 3];
    client_hello.extend_from_slice(&[7; 32]);
    client_hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    client_hello[3] = u8::try_from(client_hello.len() - 4).expect("len");
    for tls13 in [false, true] {
        for (peer, message) in [
            (Peer::Server, &hello_request[..]),
            (Peer::Client, &client_hello[..]),
        ] {
            let what = format!("{peer:?}, TLS 1.{}", if tls13 { 3 } else { 2 });
            let (_dir, mut ours, mut hostile) = against(peer, tls13, 1 << 20).await;
            let records = (0..100)
                .flat_map(|_| hostile.record(ContentType::Handshake, message))
                .collect();
            let outcome = flood(&mut *ours, &mut hostile, records).await;
            let error = refused(outcome, &what);
            assert!(
                error.contains("enegotiation") || error.contains("unexpected handshake message"),
                "{what}: {error}"
            );
        }
    }
}

#[tokio::test]
async fn alert_floods_are_refused() {
    for tls13 in [false, true] {
        for peer in [Peer::Client, Peer::Server] {
            let what = format!("{peer:?}, TLS 1.{}", if tls13 { 3 } else { 2 });
            let (_dir, mut ours, mut hostile) = against(peer, tls13, 1 << 20).await;
            // Warning alerts: no_renegotiation (TLS 1.2), user_canceled (both).
            let description = if tls13 { 90 } else { 100 };
            let records = (0..1000)
                .flat_map(|_| hostile.record(ContentType::Alert, &[1, description]))
                .collect();
            let outcome = flood(&mut *ours, &mut hostile, records).await;
            let error = refused(outcome, &what);
            assert!(error.contains("TooManyWarningAlerts"), "{what}: {error}");
        }
    }
}

#[tokio::test]
async fn empty_record_floods_end_with_bounded_buffers() {
    for tls13 in [false, true] {
        for peer in [Peer::Client, Peer::Server] {
            let what = format!("{peer:?}, TLS 1.{}", if tls13 { 3 } else { 2 });
            let (_dir, mut ours, mut hostile) = against(peer, tls13, 4 << 20).await;
            let mut records: Vec<u8> = (0..100_000)
                .flat_map(|_| hostile.record(ContentType::ApplicationData, b""))
                .collect();
            records.extend(hostile.record(ContentType::ApplicationData, b"hello"));
            records.extend(hostile.close_notify());
            let outcome = flood(&mut *ours, &mut hostile, records).await;
            let error = refused(outcome, &what);
            assert!(error.contains("TooManyEmptyFragments"), "{what}: {error}");
        }
    }
}

#[tokio::test]
async fn a_padded_record_longer_than_the_protocol_allows_is_refused() {
    for peer in [Peer::Client, Peer::Server] {
        let (_dir, mut ours, mut hostile) = against(peer, true, 1 << 20).await;
        // Full-size content with padding: allowed while the inner plaintext is at most
        // 2^14 + 1 bytes (RFC 8446 §5.4), refused past it.
        let full = vec![b'a'; MAX_PLAINTEXT];
        let mut records = hostile.tx.record(
            ContentType::ApplicationData,
            &full[..MAX_PLAINTEXT - 200],
            200,
        );
        records.extend(hostile.tx.record(ContentType::ApplicationData, &full, 1));
        let outcome = flood(&mut *ours, &mut hostile, records).await;
        assert_eq!(
            outcome.received.len(),
            MAX_PLAINTEXT - 200,
            "{peer:?}: the padded record within the limit is read"
        );
        let error = outcome.end.expect_err("the oversized record is refused");
        assert!(
            error.to_string().contains("excess record size"),
            "{peer:?}: {error}"
        );
    }
}

#[tokio::test]
async fn a_post_handshake_message_sent_in_tiny_records_is_refused_at_a_bound() {
    for peer in [Peer::Client, Peer::Server] {
        let (_dir, mut ours, mut hostile) = against(peer, true, 4 << 20).await;
        // A session ticket claiming 65,000 bytes, one byte a record: 23 bytes on the wire for
        // each byte of message, which rustls keeps until the message is whole.
        let mut records = hostile.record(ContentType::Handshake, &[4, 0, 0xfd, 0xe8]);
        for _ in 0..65_000 {
            records.extend(hostile.record(ContentType::Handshake, &[0]));
        }
        let outcome = flood(&mut *ours, &mut hostile, records).await;
        let error = refused(outcome, &format!("{peer:?}"));
        assert!(
            error.contains("without completing a message"),
            "{peer:?}: {error}"
        );
    }
}
