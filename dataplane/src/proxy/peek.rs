//! Protocol identification on a live connection: read the client's and the server's first
//! bytes with a bound and a deadline, identify them with [`detect`] (or, for a server that
//! speaks first, [`detect_server`]), and hand both connections on with those bytes replayed
//! ([`Prefixed`]), as linkerd2-proxy's detection does.
//!
//! Invariants: at most [`MAX_PEEK`] bytes from each side (or, for TLS from the client, one
//! ClientHello up to [`MAX_HELLO`]) are buffered; the deadline bounds the wait, after which
//! a client that sent nothing is what its destination port says for a plain-text IM
//! protocol ([`expected_at`]), and anything else is `Unknown`, a decision policy takes like
//! any other; each handler reads exactly the bytes its peer sent, in order, prefix first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::inspect::detect::{Detected, Detection, MAX_PEEK, detect};
use crate::inspect::detect_server::{ServerDetection, detect_server, expected_at};
use crate::inspect::tls_hello::MAX_HELLO;

/// What identification found, and the bytes it read from each side.
#[derive(Debug)]
pub struct Peeked {
    /// The protocol.
    pub detected: Detected,
    /// The client's bytes read, to be replayed to the server's handler.
    pub prefix: Vec<u8>,
    /// The server's bytes read, to be replayed to the client's handler.
    pub server_prefix: Vec<u8>,
}

/// Reads from `client` and `server` until the protocol is known, both stop sending, or
/// `deadline` passes; `port` is the destination's.
pub async fn identify<C: AsyncRead + Unpin, S: AsyncRead + Unpin>(
    client: &mut C,
    server: &mut S,
    port: u16,
    deadline: Duration,
) -> io::Result<Peeked> {
    let until = tokio::time::Instant::now() + deadline;
    let mut peeked = Peeked {
        detected: Detected::Unknown,
        prefix: Vec::with_capacity(512),
        server_prefix: Vec::new(),
    };
    let mut chunk = vec![0u8; 4096];
    let mut from_server = vec![0u8; 1024];
    // Whether the server may still identify the connection.
    let mut server_open = true;
    loop {
        if let Detection::Done(detected) = detect(&peeked.prefix) {
            peeked.detected = detected;
            return Ok(peeked);
        }
        match detect_server(&peeked.server_prefix) {
            ServerDetection::Found(detected) => {
                peeked.detected = detected;
                return Ok(peeked);
            }
            ServerDetection::Unknown => server_open = false,
            ServerDetection::NeedMore => {}
        }
        let limit = if peeked.prefix.first() == Some(&0x16) {
            MAX_HELLO + 5
        } else {
            MAX_PEEK
        };
        let room = limit.saturating_sub(peeked.prefix.len()).min(chunk.len());
        if room == 0 {
            // The client's bytes decided: nothing imgate knows.
            return Ok(peeked);
        }
        let server_room = MAX_PEEK
            .saturating_sub(peeked.server_prefix.len())
            .min(from_server.len());
        server_open &= server_room > 0;
        let read = async {
            tokio::select! {
                read = client.read(&mut chunk[..room]) => (true, read),
                read = server.read(&mut from_server[..server_room]), if server_open => (false, read),
            }
        };
        match tokio::time::timeout_at(until, read).await {
            Err(_elapsed) => {
                // Neither side said anything: the destination says what is expected there.
                let silent = peeked.prefix.is_empty() && peeked.server_prefix.is_empty();
                if let Some(expected) = expected_at(port).filter(|_| silent) {
                    peeked.detected = expected;
                }
                return Ok(peeked);
            }
            // A client that stops sending will not say more: what it sent decides.
            Ok((true, Ok(0))) => return Ok(peeked),
            Ok((true, Ok(n))) => peeked.prefix.extend_from_slice(&chunk[..n]),
            Ok((false, Ok(0))) => server_open = false,
            Ok((false, Ok(n))) => peeked.server_prefix.extend_from_slice(&from_server[..n]),
            Ok((_, Err(error))) => return Err(error),
        }
    }
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight through.
/// Once the prefix is read (or when there is none) it adds one pointer to the stream, which
/// an idle session keeps for its whole life.
#[derive(Debug)]
pub struct Prefixed<S> {
    replay: Option<Box<Replay>>,
    inner: S,
}

/// Prefix bytes, and how many of them have been read.
#[derive(Debug)]
struct Replay {
    prefix: Vec<u8>,
    offset: usize,
}

impl<S> Prefixed<S> {
    /// Replays `prefix`, then reads `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            replay: (!prefix.is_empty()).then(|| Box::new(Replay { prefix, offset: 0 })),
            inner,
        }
    }

    /// The prefix's bytes not yet read, and the wrapped stream.
    pub fn into_parts(self) -> (Vec<u8>, S) {
        let rest = self.replay.map_or_else(Vec::new, |replay| {
            let Replay { mut prefix, offset } = *replay;
            prefix.drain(..offset);
            prefix
        });
        (rest, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(replay) = self.replay.as_mut() {
            let n = buf.remaining().min(replay.prefix.len() - replay.offset);
            let start = replay.offset;
            buf.put_slice(&replay.prefix[start..start + n]);
            replay.offset += n;
            if replay.offset == replay.prefix.len() {
                self.replay = None;
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
        let (_upstream, mut quiet) = duplex(64);
        let peeked = identify(&mut server, &mut quiet, 443, Duration::from_secs(5))
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

    #[tokio::test(start_paused = true)]
    async fn two_silent_peers_are_what_the_port_says_at_the_deadline() {
        for (port, expected) in [
            (5222, Detected::Xmpp),
            (6667, Detected::Irc),
            (8443, Detected::Unknown),
        ] {
            let (_client, mut from_client) = duplex(64);
            let (_server, mut from_server) = duplex(64);
            let peeked = identify(
                &mut from_client,
                &mut from_server,
                port,
                Duration::from_secs(10),
            )
            .await
            .expect("no error");
            assert_eq!(
                (peeked.detected, peeked.prefix.len()),
                (expected, 0),
                "port {port}"
            );
        }
    }

    #[tokio::test]
    async fn a_server_that_speaks_first_identifies_the_connection_and_is_replayed() {
        let (_client, mut from_client) = duplex(64);
        let (mut server, mut from_server) = duplex(256);
        server
            .write_all(b":irc.example.net NOTICE * :*** Looking up your hostname\r\n:irc")
            .await
            .expect("write");
        let peeked = identify(
            &mut from_client,
            &mut from_server,
            4000,
            Duration::from_secs(60),
        )
        .await
        .expect("identified");
        assert_eq!(peeked.detected, Detected::Irc);
        assert!(peeked.prefix.is_empty());
        drop(server);
        let mut replayed = Prefixed::new(peeked.server_prefix, from_server);
        let mut everything = Vec::new();
        replayed.read_to_end(&mut everything).await.expect("read");
        assert_eq!(
            everything,
            b":irc.example.net NOTICE * :*** Looking up your hostname\r\n:irc"
        );
    }

    #[tokio::test]
    async fn a_client_that_never_decides_is_cut_off_at_the_bound() {
        let (mut client, mut server) = duplex(1 << 16);
        let writer = tokio::spawn(async move {
            // Endless white space could still precede an XMPP header.
            let _ = client.write_all(&vec![b' '; 64 * 1024]).await;
        });
        let (_upstream, mut quiet) = duplex(64);
        let peeked = identify(&mut server, &mut quiet, 5222, Duration::from_secs(5))
            .await
            .expect("no error");
        assert_eq!(peeked.detected, Detected::Unknown);
        assert_eq!(peeked.prefix.len(), MAX_PEEK);
        writer.abort();
    }
}
