//! Tunnel streams as [`pieces`](crate::proxy::pieces): quinn takes the pieces written to a
//! stream without copying them, and hands out the pieces it received (slices of the
//! datagrams they arrived in) without copying them either.
//!
//! Invariants: a read returns at most [`MAX_PIECES`] pieces, in order, and holds none of them
//! while it waits; a write passes every piece to quinn, in order, or fails.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::ready;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::io::Join;

use crate::proxy::pieces::{IntoPieces, MAX_PIECES, ReadPieces, WritePieces};

impl ReadPieces for RecvStream {
    async fn read_pieces(&mut self) -> io::Result<Vec<Bytes>> {
        poll_fn(|cx| {
            let mut pieces: [Bytes; MAX_PIECES] = std::array::from_fn(|_| Bytes::new());
            // Reading chunks is cancel-safe: a read that finds nothing is dropped, and the
            // stream wakes this task when bytes arrive.
            let read = {
                let reading = pin!(self.read_chunks(&mut pieces));
                ready!(reading.poll(cx))
            };
            std::task::Poll::Ready(match read {
                Ok(Some(count)) => Ok(pieces.into_iter().take(count).collect()),
                Ok(None) => Ok(Vec::new()),
                Err(error) => Err(error.into()),
            })
        })
        .await
    }
}

impl WritePieces for SendStream {
    async fn write_pieces(&mut self, pieces: &mut Vec<Bytes>) -> io::Result<()> {
        self.write_all_chunks(pieces).await?;
        pieces.clear();
        Ok(())
    }

    async fn finish(&mut self) {
        let _ = SendStream::finish(self);
    }
}

impl IntoPieces for Join<RecvStream, SendStream> {
    type Reader = RecvStream;
    type Writer = SendStream;

    fn into_pieces(self) -> (RecvStream, SendStream) {
        self.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::proxy::peek::Prefixed;
    use crate::proxy::unread_relay::relay_unread;
    use crate::tunnel::trust::TunnelCa;
    use crate::tunnel::trust::tests::{DIALLED, connector, dataplane};

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(seed) % 251) as u8)
            .collect()
    }

    /// A tunnel stream relayed to a TCP socket, as the dataplane relays an unread session:
    /// the identified prefix first, then every byte both ways, in order, and both ends close.
    #[tokio::test]
    async fn a_tunnel_stream_and_a_socket_exchange_every_byte_in_order() {
        let ca = TunnelCa::generate("acme").expect("CA");
        let server = dataplane(&ca);
        let at = server.local_addr().expect("address");
        let client = connector(&ca, &ca, "site-1");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_at = listener.local_addr().expect("address");

        let relaying = tokio::spawn(async move {
            let connection = server
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("connection");
            let (send, mut receive) = connection.accept_bi().await.expect("stream");
            let mut prefix = [0u8; 5];
            receive.read_exact(&mut prefix).await.expect("prefix");
            let upstream = TcpStream::connect(upstream_at).await.expect("upstream");
            let stream = Prefixed::new(prefix.to_vec(), tokio::io::join(receive, send));
            let relayed = relay_unread(stream, upstream, Duration::from_secs(60)).await;
            (relayed, connection, server)
        });

        let connection = client
            .connect(at, DIALLED)
            .expect("dial")
            .await
            .expect("connected");
        let (mut send, mut receive) = connection.open_bi().await.expect("stream");
        let out = pattern(3 << 20, 7);
        let back = pattern(2 << 20, 13);
        let sent = out.clone();
        let writing = tokio::spawn(async move {
            send.write_all(b"hello").await.expect("prefix");
            send.write_all(&sent).await.expect("write");
            send.finish().expect("finish");
            send
        });
        let (mut upstream, _) = listener.accept().await.expect("accept");
        let mut received = Vec::new();
        upstream.read_to_end(&mut received).await.expect("read");
        assert_eq!(received.len(), 5 + out.len());
        assert_eq!(&received[..5], b"hello", "the prefix comes first");
        assert!(received[5..] == out[..], "every byte, in order");
        upstream.write_all(&back).await.expect("write back");
        upstream.shutdown().await.expect("shutdown");
        let answer = receive.read_to_end(8 << 20).await.expect("read back");
        assert!(answer == back, "every byte back, in order");
        drop(writing.await.expect("writer"));
        let (relayed, _connection, _server) = relaying.await.expect("relay task");
        relayed.expect("the relay ends cleanly");
    }
}
