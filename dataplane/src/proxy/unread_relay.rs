//! The relay of sessions whose content is not read (an unknown protocol, TLS passed through,
//! every connection a connector carries): bytes go both ways as [`pieces`](super::pieces), so
//! that between a socket and a tunnel stream the relay copies nothing itself.
//!
//! Invariants: while a direction waits to read, it holds no buffer; every byte is passed on
//! unchanged and in order; a direction that reaches the end of its stream ends the other
//! side's writing; the session ends only when both directions have closed, or both have been
//! quiet for the idle limit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::pieces::{IntoPieces, ReadPieces, WritePieces};

/// When either direction of a session last moved bytes.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Relays `a` and `b` to each other until both directions have closed, or both have been
/// quiet for `idle`.
pub async fn relay_unread<A: IntoPieces, B: IntoPieces>(
    a: A,
    b: B,
    idle: Duration,
) -> io::Result<()> {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let (mut a_read, mut a_write) = a.into_pieces();
    let (mut b_read, mut b_write) = b.into_pieces();
    tokio::try_join!(
        copy(&mut a_read, &mut b_write, &activity, idle),
        copy(&mut b_read, &mut a_write, &activity, idle),
    )
    .map(|_| ())
}

async fn copy<R: ReadPieces, W: WritePieces>(
    reader: &mut R,
    writer: &mut W,
    activity: &Activity,
    idle: Duration,
) -> io::Result<()> {
    loop {
        let wait = idle.saturating_sub(activity.quiet_for());
        match tokio::time::timeout(wait, reader.read_pieces()).await {
            Err(_) if activity.quiet_for() >= idle => {
                writer.finish().await;
                return Ok(());
            }
            Err(_) => continue,
            Ok(Ok(pieces)) if pieces.is_empty() => {
                writer.finish().await;
                return Ok(());
            }
            Ok(Ok(mut pieces)) => {
                activity.touch();
                writer.write_pieces(&mut pieces).await?;
            }
            Ok(Err(error)) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::super::pieces::Plain;
    use super::*;

    /// Sends `big` from `client` to `server` and a short answer back through `relay`, and
    /// checks that every byte arrived in order and that the relay ended cleanly.
    async fn check_both_ways<C, S>(
        mut client: C,
        mut server: S,
        big: Vec<u8>,
        relay: tokio::task::JoinHandle<io::Result<()>>,
    ) where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.expect("read");
            answer
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.expect("read");
        assert!(received == big, "every byte, in order");
        server.write_all(b"bye").await.expect("write");
        server.shutdown().await.expect("shutdown");
        assert_eq!(writer.await.expect("client"), b"bye");
        relay.await.expect("relay").expect("no error");
    }

    #[tokio::test]
    async fn relays_every_byte_both_ways_until_both_close() {
        let (client, near) = duplex(1024);
        let (far, server) = duplex(1024);
        let relay = tokio::spawn(relay_unread(
            Plain(near),
            Plain(far),
            Duration::from_secs(60),
        ));
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        check_both_ways(client, server, big, relay).await;
    }

    #[tokio::test]
    async fn relays_between_tcp_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let client = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (near, _) = listener.accept().await.expect("accept");
        let far = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let relay = tokio::spawn(relay_unread(near, far, Duration::from_secs(60)));
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        check_both_ways(client, server, big, relay).await;
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Whatever the peers' buffers, bytes a writer cannot take at once are kept and
        /// sent after, in order.
        #[test]
        fn relays_any_bytes_through_any_buffers(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300_000),
            near_buffer in 1usize..100_000,
            far_buffer in 1usize..100_000,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let received = runtime.block_on(async {
                let (mut client, near) = duplex(near_buffer);
                let (far, mut server) = duplex(far_buffer);
                let relay = tokio::spawn(relay_unread(
                    Plain(near),
                    Plain(far),
                    Duration::from_secs(60),
                ));
                let sent = data.clone();
                let writer = tokio::spawn(async move {
                    client.write_all(&sent).await.expect("write");
                    client.shutdown().await.expect("shutdown");
                    client
                });
                let mut received = Vec::new();
                server.read_to_end(&mut received).await.expect("read");
                drop(server);
                drop(writer.await.expect("writer"));
                relay.await.expect("relay").expect("no error");
                received
            });
            proptest::prop_assert_eq!(received, data);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_both_directions_are_quiet_but_not_while_one_talks() {
        let (mut client, near) = duplex(1024);
        let (far, mut server) = duplex(1024);
        let relay = tokio::spawn(relay_unread(
            Plain(near),
            Plain(far),
            Duration::from_secs(10),
        ));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            client.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.expect("relayed");
        }
        assert!(
            !relay.is_finished(),
            "one direction talking keeps the session"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        relay.await.expect("relay").expect("ended cleanly");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("closed");
        assert!(rest.is_empty());
    }
}
