//! Protocol identification on a live connection: read the client's first bytes with a bound
//! and a deadline, identify them with [`detect`], and hand the connection on with those bytes
//! replayed ([`Prefixed`]), as linkerd2-proxy's detection does.
//!
//! Invariants: at most [`MAX_PEEK`] bytes (or, for TLS, one ClientHello up to
//! [`MAX_HELLO`]) are buffered; the deadline bounds the wait for a silent client, whose
//! connection is then `Unknown` with whatever it sent; the handler reads exactly the bytes the
//! client sent, in order, prefix first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::inspect::detect::{Detected, Detection, MAX_PEEK, detect};
use crate::inspect::tls_hello::MAX_HELLO;

/// What identification found, and the bytes it read.
#[derive(Debug)]
pub struct Peeked {
    /// The protocol.
    pub detected: Detected,
    /// The bytes read, to be replayed.
    pub prefix: Vec<u8>,
}

/// Reads from `stream` until its protocol is known, the client stops sending (EOF), or
/// `deadline` passes.
pub async fn identify<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Duration,
) -> io::Result<Peeked> {
    let until = tokio::time::Instant::now() + deadline;
    let mut prefix = Vec::with_capacity(512);
    let mut chunk = vec![0u8; 4096];
    loop {
        if let Detection::Done(detected) = detect(&prefix) {
            return Ok(Peeked { detected, prefix });
        }
        let limit = if prefix.first() == Some(&0x16) {
            MAX_HELLO + 5
        } else {
            MAX_PEEK
        };
        let room = limit.saturating_sub(prefix.len()).min(chunk.len());
        if room == 0 {
            return Ok(Peeked {
                detected: Detected::Unknown,
                prefix,
            });
        }
        match tokio::time::timeout_at(until, stream.read(&mut chunk[..room])).await {
            Err(_elapsed) => {
                return Ok(Peeked {
                    detected: Detected::Unknown,
                    prefix,
                });
            }
            Ok(Ok(0)) => {
                return Ok(Peeked {
                    detected: Detected::Unknown,
                    prefix,
                });
            }
            Ok(Ok(n)) => prefix.extend_from_slice(&chunk[..n]),
            Ok(Err(error)) => return Err(error),
        }
    }
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight through.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Replays `prefix`, then reads `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }

    /// The prefix's bytes not yet read, and the wrapped stream.
    pub fn into_parts(mut self) -> (Vec<u8>, S) {
        self.prefix.drain(..self.offset);
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.prefix[start..start + n]);
            self.offset += n;
            if self.offset == self.prefix.len() {
                self.prefix = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn identifies_across_reads_and_replays_every_byte() {
        let (mut client, mut server) = duplex(64);
        let writer = tokio::spawn(async move {
            client
                .write_all(b"<?xml version='1.0'?>")
                .await
                .expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .write_all(b"<stream:stream to='chat.example'>")
                .await
                .expect("write");
            client.write_all(b"<more/>").await.expect("write");
            client.shutdown().await.expect("shutdown");
        });
        let peeked = identify(&mut server, Duration::from_secs(5))
            .await
            .expect("identified");
        assert_eq!(peeked.detected, Detected::Xmpp);
        let mut replayed = Prefixed::new(peeked.prefix, server);
        let mut everything = Vec::new();
        replayed.read_to_end(&mut everything).await.expect("read");
        assert_eq!(
            everything,
            b"<?xml version='1.0'?><stream:stream to='chat.example'><more/>"
        );
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn a_silent_client_is_unknown_at_the_deadline() {
        let (_client, mut server) = duplex(64);
        let peeked = identify(&mut server, Duration::from_millis(50))
            .await
            .expect("no error");
        assert_eq!(
            (peeked.detected, peeked.prefix.len()),
            (Detected::Unknown, 0)
        );
    }

    #[tokio::test]
    async fn a_client_that_never_decides_is_cut_off_at_the_bound() {
        let (mut client, mut server) = duplex(1 << 16);
        let writer = tokio::spawn(async move {
            // Endless white space could still precede an XMPP header.
            let _ = client.write_all(&vec![b' '; 64 * 1024]).await;
        });
        let peeked = identify(&mut server, Duration::from_secs(5))
            .await
            .expect("no error");
        assert_eq!(peeked.detected, Detected::Unknown);
        assert_eq!(peeked.prefix.len(), MAX_PEEK);
        writer.abort();
    }
}
