//! Byte streams read and written as pieces of shared memory ([`Bytes`]), so that the relay of
//! unread sessions moves bytes without copying them itself: a tunnel stream takes the pieces
//! read from a socket as they are, and the pieces a tunnel stream received go to a socket in
//! one vectored write. Tunnel streams implement these traits in `tunnel::stream_pieces`; any
//! tokio stream can be relayed through [`Plain`].
//!
//! Invariants: a read returns one or more non-empty pieces in order, or none at end of stream;
//! while a read waits it holds no buffer (a buffer is made inside the poll that finds bytes
//! ready, and dropped when there are none); a read keeps a large buffer only when it is at
//! least a quarter full, so a small read does not pin [`READ_CHUNK`] bytes while the pieces
//! wait to be sent; a write takes every piece, in order, or fails.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::task::{Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::peek::Prefixed;

/// Most bytes one read of a socket takes.
pub const READ_CHUNK: usize = 64 * 1024;

/// Most pieces one vectored write passes to the kernel.
pub const MAX_PIECES: usize = 64;

/// A source of bytes, read as pieces.
pub trait ReadPieces: Send {
    /// The next bytes: one or more non-empty pieces, in order; none at end of stream.
    fn read_pieces(&mut self) -> impl Future<Output = io::Result<Vec<Bytes>>> + Send;
}

/// A sink of bytes, written as pieces.
pub trait WritePieces: Send {
    /// Writes every piece, in order, and leaves `pieces` empty.
    fn write_pieces(
        &mut self,
        pieces: &mut Vec<Bytes>,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Ends this direction (a socket shuts down writing; a tunnel stream finishes).
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// A two-way stream that splits into a [`ReadPieces`] and a [`WritePieces`] half.
pub trait IntoPieces: Send + 'static {
    /// The reading half.
    type Reader: ReadPieces;
    /// The writing half.
    type Writer: WritePieces;

    /// Splits the stream.
    fn into_pieces(self) -> (Self::Reader, Self::Writer);
}

/// The reading half of a tokio stream: each read goes into a buffer made for it.
pub struct ByteReader<R>(R);

/// The writing half of a tokio stream: pieces go out in vectored writes.
pub struct ByteWriter<W>(W);

impl<R: AsyncRead + Unpin + Send> ReadPieces for ByteReader<R> {
    async fn read_pieces(&mut self) -> io::Result<Vec<Bytes>> {
        poll_fn(|cx| {
            let mut buffer = BytesMut::with_capacity(READ_CHUNK);
            {
                let reading = pin!(self.0.read_buf(&mut buffer));
                ready!(reading.poll(cx))?;
            }
            Poll::Ready(Ok(match buffer.len() {
                0 => Vec::new(),
                small if small < READ_CHUNK / 4 => vec![Bytes::copy_from_slice(&buffer)],
                _ => vec![buffer.freeze()],
            }))
        })
        .await
    }
}

impl<W: AsyncWrite + Unpin + Send> WritePieces for ByteWriter<W> {
    async fn write_pieces(&mut self, pieces: &mut Vec<Bytes>) -> io::Result<()> {
        let mut first = 0;
        while first < pieces.len() {
            let mut written = poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_PIECES];
                let count = pieces.len().saturating_sub(first).min(MAX_PIECES);
                for (slice, piece) in slices.iter_mut().zip(&pieces[first..first + count]) {
                    *slice = IoSlice::new(piece);
                }
                Pin::new(&mut self.0).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while first < pieces.len() && written >= pieces[first].len() {
                written -= pieces[first].len();
                first += 1;
            }
            if written > 0 {
                pieces[first].advance(written);
            }
        }
        pieces.clear();
        Ok(())
    }

    async fn finish(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

impl IntoPieces for TcpStream {
    type Reader = ByteReader<OwnedReadHalf>;
    type Writer = ByteWriter<OwnedWriteHalf>;

    fn into_pieces(self) -> (Self::Reader, Self::Writer) {
        let (read, write) = self.into_split();
        (ByteReader(read), ByteWriter(write))
    }
}

/// Any tokio stream, relayed through [`ByteReader`] and [`ByteWriter`] halves.
pub struct Plain<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Send + 'static> IntoPieces for Plain<T> {
    type Reader = ByteReader<ReadHalf<T>>;
    type Writer = ByteWriter<WriteHalf<T>>;

    fn into_pieces(self) -> (Self::Reader, Self::Writer) {
        let (read, write) = tokio::io::split(self.0);
        (ByteReader(read), ByteWriter(write))
    }
}

/// The reading half of a [`Prefixed`] stream: the bytes identification read come first.
pub struct Replayed<R> {
    prefix: Option<Bytes>,
    inner: R,
}

impl<R: ReadPieces> ReadPieces for Replayed<R> {
    async fn read_pieces(&mut self) -> io::Result<Vec<Bytes>> {
        match self.prefix.take() {
            Some(prefix) => Ok(vec![prefix]),
            None => self.inner.read_pieces().await,
        }
    }
}

impl<S: IntoPieces> IntoPieces for Prefixed<S> {
    type Reader = Replayed<S::Reader>;
    type Writer = S::Writer;

    fn into_pieces(self) -> (Self::Reader, Self::Writer) {
        let (prefix, inner) = self.into_parts();
        let (inner, writer) = inner.into_pieces();
        let prefix = (!prefix.is_empty()).then(|| Bytes::from(prefix));
        (Replayed { prefix, inner }, writer)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    #[tokio::test]
    async fn a_prefix_comes_first_then_the_stream_then_the_end() {
        let (mut client, server) = duplex(1024);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let (mut reader, _writer) = Prefixed::new(b"hello".to_vec(), Plain(server)).into_pieces();
        let mut read = Vec::new();
        loop {
            let pieces = reader.read_pieces().await.expect("read");
            if pieces.is_empty() {
                break;
            }
            assert!(pieces.iter().all(|piece| !piece.is_empty()));
            read.extend(pieces.iter().flat_map(|piece| piece.iter().copied()));
        }
        assert_eq!(read, b"hello world");
    }

    #[tokio::test]
    async fn a_small_read_does_not_keep_a_large_buffer() {
        let (mut client, server) = duplex(1024);
        client.write_all(b"hi").await.expect("write");
        let (mut reader, _writer) = Plain(server).into_pieces();
        let pieces = reader.read_pieces().await.expect("read");
        assert_eq!(pieces, vec![Bytes::from_static(b"hi")]);
        let owned: Vec<u8> = pieces.into_iter().next().expect("a piece").into();
        assert!(
            owned.capacity() < READ_CHUNK / 4,
            "the piece owns only what it holds"
        );
    }

    #[tokio::test]
    async fn a_write_takes_every_piece_in_order_through_a_narrow_peer() {
        let (client, mut server) = duplex(7);
        let (reader, mut writer) = Plain(client).into_pieces();
        let mut pieces: Vec<Bytes> = (0..200u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i % 13) as usize + 1]))
            .collect();
        let expected: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("read");
            got
        });
        writer.write_pieces(&mut pieces).await.expect("write");
        assert!(pieces.is_empty());
        writer.finish().await;
        drop((reader, writer));
        assert_eq!(reading.await.expect("reader"), expected);
    }
}
