//! Reads that hold no buffer while they wait, so that an idle session costs little more than
//! its sockets and its state (the dataplane is meant to hold tens of thousands of idle IM
//! sessions per pod): bytes are read into a stack buffer inside the poll that finds them
//! ready and appended to the caller's buffer, and a caller's buffer that is empty gives its
//! memory back before the wait.
//!
//! [`relay_unread`] hands what it reads to the other side in the same poll, and keeps (in a
//! buffer of its own) only what that side cannot take at once.
//!
//! Invariants: a read appends at most [`READ_CHUNK`] bytes; while [`read_into`] waits, the
//! only memory it holds is the caller's non-empty buffer; while [`relay_unread`] waits to
//! read, it holds no buffer; it ends a session only when both directions have been quiet for
//! the idle limit (or both have closed), and passes every byte through unchanged, in order.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// Most bytes one read appends.
pub const READ_CHUNK: usize = 8192;

/// Most bytes [`relay_unread`] moves at once: larger than [`READ_CHUNK`], as nothing parses
/// what it relays, and each write to a tunnel stream has a fixed cost.
const RELAY_CHUNK: usize = 64 * 1024;

/// Reads what is available and appends it to `buffer`; returns how many bytes were read
/// (0 at end of stream).
pub async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> io::Result<usize> {
    if buffer.is_empty() {
        *buffer = Vec::new();
    }
    poll_fn(|cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut read))?;
        buffer.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
    .await
}

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

/// Relays a session whose content is not read (an unknown protocol, TLS passed through) in
/// both directions until both have closed, or both have been quiet for `idle`.
pub async fn relay_unread<A, B>(a: A, b: B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    tokio::try_join!(
        copy(&mut a_read, &mut b_write, &activity, idle),
        copy(&mut b_read, &mut a_write, &activity, idle),
    )
    .map(|_| ())
}

async fn copy<R, W>(
    reader: &mut R,
    writer: &mut W,
    activity: &Activity,
    idle: Duration,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let wait = idle.saturating_sub(activity.quiet_for());
        match tokio::time::timeout(wait, forward_once(reader, writer)).await {
            Err(_) if activity.quiet_for() >= idle => {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Err(_) => continue,
            Ok(Ok((0, _))) => {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Ok(Ok((_, rest))) => {
                activity.touch();
                if !rest.is_empty() {
                    writer.write_all(&rest).await?;
                }
            }
            Ok(Err(error)) => return Err(error),
        }
    }
}

/// Reads at most [`RELAY_CHUNK`] bytes and hands them to `writer` in the same poll, so that
/// they are copied once more only when the writer cannot take them all at once; returns how
/// many bytes were read (0 at end of stream) and those the writer has yet to take. Waiting,
/// it holds nothing.
async fn forward_once<R, W>(reader: &mut R, writer: &mut W) -> io::Result<(usize, Vec<u8>)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); RELAY_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut read))?;
        let filled = read.filled();
        let mut written = 0;
        while written < filled.len() {
            match Pin::new(&mut *writer).poll_write(cx, &filled[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(taken)) => written += taken,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok((filled.len(), filled[written..].to_vec())))
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, duplex};

    use super::*;

    #[tokio::test]
    async fn reads_append_and_an_empty_buffer_is_released() {
        let (mut client, mut server) = duplex(64);
        client.write_all(b"hello").await.expect("write");
        let mut buffer = Vec::with_capacity(4096);
        assert_eq!(read_into(&mut server, &mut buffer).await.expect("read"), 5);
        assert_eq!(buffer, b"hello");
        buffer.clear();
        client.write_all(b"!").await.expect("write");
        read_into(&mut server, &mut buffer).await.expect("read");
        assert_eq!(buffer, b"!");
        assert!(buffer.capacity() < 4096, "the empty buffer was given back");
        drop(client);
        assert_eq!(read_into(&mut server, &mut buffer).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn relays_every_byte_both_ways_until_both_close() {
        let (mut client, near) = duplex(1024);
        let (far, mut server) = duplex(1024);
        let relay = tokio::spawn(relay_unread(near, far, Duration::from_secs(60)));
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
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
        assert_eq!(received, big);
        server.write_all(b"bye").await.expect("write");
        server.shutdown().await.expect("shutdown");
        assert_eq!(writer.await.expect("client"), b"bye");
        relay.await.expect("relay").expect("no error");
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
                let relay = tokio::spawn(relay_unread(near, far, Duration::from_secs(60)));
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
        let relay = tokio::spawn(relay_unread(near, far, Duration::from_secs(10)));
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
