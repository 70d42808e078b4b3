use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{MAX_DATAGRAM, RECEIVE_WINDOW};
use crate::tunnel::trust::TunnelCa;
use crate::tunnel::trust::tests::{connector, connector_with, dataplane, dial};

const CHUNK: usize = 16 << 10;

/// Streams the test spreads its bytes over: more than the connection's window holds at one
/// stream's window each, so that the connection's window, not a stream's, is what stops them.
const STREAMS: usize = 8;

/// Writes a chunk to each stream in turn for as long as a write completes without waiting;
/// returns the bytes written.
fn write_while_ready(streams: &mut [quinn::SendStream]) -> usize {
    let chunk = vec![7u8; CHUNK];
    let mut total = 0;
    loop {
        let before = total;
        for stream in streams.iter_mut() {
            let write = pin!(stream.write(&chunk));
            if let Poll::Ready(written) = write.poll(&mut Context::from_waker(Waker::noop())) {
                total += written.expect("write");
            }
        }
        if total == before {
            return total;
        }
    }
}

#[tokio::test]
async fn a_connection_takes_no_more_unread_bytes_than_its_window_and_reopens_as_they_are_read() {
    let ca = TunnelCa::generate("acme").expect("CA");
    let server = dataplane(&ca);
    let at = server.local_addr().expect("address");
    let accepting = tokio::spawn(async move {
        let incoming = server.accept().await.expect("incoming");
        (incoming.await.expect("accepted"), server)
    });
    let client = connector(&ca, &ca, "laptop-3");
    let connection = dial(&client, at).await.expect("connected");
    let (accepted, _server) = accepting.await.expect("join");

    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(connection.open_bi().await.expect("stream").0);
    }
    let written = write_while_ready(&mut streams);
    assert_eq!(
        written, RECEIVE_WINDOW as usize,
        "the peer may send exactly the connection's window while nothing is read"
    );

    // The dataplane reads two streams to their end so far; the credit comes back.
    let read = RECEIVE_WINDOW as usize / STREAMS;
    for _ in 0..2 {
        let (_send, mut recv) = accepted.accept_bi().await.expect("stream");
        let mut bytes = vec![0u8; read];
        recv.read_exact(&mut bytes).await.expect("read");
        assert!(bytes.iter().all(|&b| b == 7), "the bytes arrive unchanged");
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        streams[STREAMS - 1].write_all(&[7u8; CHUNK]),
    )
    .await
    .expect("once the dataplane reads, the connector may send again")
    .expect("write");
}

/// Sends `bytes` over a new stream of `connection`, reads them back from `echo`'s side and
/// echoes them; returns once the echo has been read in full.
async fn echo_through(connection: &quinn::Connection, echoing: &quinn::Connection, bytes: usize) {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let chunk = vec![7u8; CHUNK];
    let writing = async {
        for _ in 0..bytes / CHUNK {
            send.write_all(&chunk).await.expect("write");
        }
        send.finish().expect("finish");
    };
    let echo = async {
        let (mut back, mut from) = echoing.accept_bi().await.expect("accepted stream");
        let mut buf = vec![0u8; CHUNK];
        while let Some(n) = from.read(&mut buf).await.expect("read") {
            back.write_all(&buf[..n]).await.expect("echo");
        }
        back.finish().expect("finish");
    };
    let reading = async {
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        while let Some(n) = recv.read(&mut buf).await.expect("read echo") {
            total += n;
        }
        total
    };
    let ((), (), total) = tokio::join!(writing, echo, reading);
    assert_eq!(total, bytes, "every byte comes back");
}

/// Connects a connector endpoint whose datagrams are held to `max_datagram` bytes to a
/// dataplane on loopback (whose path carries 64 KiB datagrams) and echoes 16 MiB each way;
/// returns the path statistics of the connector's and the dataplane's ends.
async fn echoed_over_loopback(max_datagram: u16) -> (quinn::PathStats, quinn::PathStats) {
    let ca = TunnelCa::generate("acme").expect("CA");
    let server = dataplane(&ca);
    let at = server.local_addr().expect("address");
    let client = connector_with(&ca, &ca, "laptop-3", max_datagram);
    let accepting = server.accept();
    let (connection, accepted) = tokio::join!(dial(&client, at), async {
        accepting.await.expect("incoming").await.expect("accepted")
    });
    let connection = connection.expect("connected");
    echo_through(&connection, &accepted, 16 << 20).await;
    (connection.stats().path, accepted.stats().path)
}

#[tokio::test]
async fn a_path_that_carries_jumbo_datagrams_keeps_them_both_ways() {
    let (near, far) = echoed_over_loopback(MAX_DATAGRAM).await;
    for (end, path) in [("connector", near), ("dataplane", far)] {
        assert_eq!(
            path.current_mtu, MAX_DATAGRAM,
            "the {end} finds that loopback carries the largest datagrams it may send: {path:?}"
        );
        assert_eq!(
            path.black_holes_detected, 0,
            "no batch of large datagrams is refused by the socket: {path:?}"
        );
    }
}

#[tokio::test]
async fn a_connector_held_to_smaller_datagrams_gets_none_larger_from_the_dataplane() {
    let (near, far) = echoed_over_loopback(1452).await;
    for (end, path) in [("connector", near), ("dataplane", far)] {
        assert!(
            path.current_mtu > 1200 && path.current_mtu <= 1452,
            "the {end} probes up to the connector's limit and no further: {path:?}"
        );
    }
}

#[tokio::test]
async fn a_datagram_size_quic_cannot_use_is_refused_saying_the_range() {
    let refused = super::bind("127.0.0.1:0".parse().expect("address"), None, 1199)
        .expect_err("QUIC's datagrams are at least 1,200 bytes");
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert!(refused.to_string().contains("1,200 to 65,527"), "{refused}");
}
