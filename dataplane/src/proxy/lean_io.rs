//! Reads that hold no buffer while they wait, so that an idle session costs little more than
//! its sockets and its state (the dataplane is meant to hold tens of thousands of idle IM
//! sessions per pod): bytes are read into a stack buffer inside the poll that finds them
//! ready and appended to the caller's buffer, and a caller's buffer that is empty gives its
//! memory back before the wait.
//!
//! Invariants: a read appends at most [`READ_CHUNK`] bytes; while [`read_into`] waits, the
//! only memory it holds is the caller's non-empty buffer.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// Most bytes one read appends.
pub const READ_CHUNK: usize = 8192;

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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncWriteExt, duplex};

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
}
