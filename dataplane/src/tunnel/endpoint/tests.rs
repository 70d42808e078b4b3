use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::RECEIVE_WINDOW;
use crate::tunnel::trust::TunnelCa;
use crate::tunnel::trust::tests::{connector, dataplane, dial};

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
