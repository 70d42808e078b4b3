//! TLS over an async byte stream, with rustls protecting every record: its unbuffered API
//! makes the handshake and then seals, opens and acts on every record (alerts, key updates,
//! session tickets, refused renegotiation, and the limits rustls keeps against floods of
//! them). This module only moves bytes between the socket, rustls and the caller, in buffers
//! it owns, so that an intercepted session that waits holds no buffer at all.
//!
//! Invariants:
//! - no record is sealed, opened or interpreted here: every TLS byte received goes to
//!   rustls, every TLS byte sent comes from it, in the order it produced them;
//! - received TLS bytes, decrypted bytes not yet read and encrypted bytes not yet sent each
//!   live in a buffer that is freed as soon as it is empty, so an idle connection holds none;
//! - the socket is read only once every complete record received has been processed and
//!   its plaintext read, and never while more than [`MAX_PENDING`] bytes wait for rustls (a
//!   handshake message sent in tiny records ends the connection instead);
//! - at most [`MAX_UNSENT`] encrypted bytes and one record wait for a peer that does not
//!   read: writes wait. What received records make rustls send is bounded by rustls (one
//!   pending key-update answer, which goes with the next write; a few alerts), so reading
//!   never waits for the peer to read;
//! - the peer's end of stream before its close_notify is an error (`UnexpectedEof`, said to
//!   be a truncation), never a clean end; [`AsyncWrite::poll_shutdown`] sends close_notify;
//! - TLS that rustls refuses ends the connection with an error (`InvalidData`) and the alert
//!   rustls prepared, sent on a best-effort basis, never a panic; nothing is read or written
//!   after that.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most encrypted bytes held for a peer that does not read.
pub const MAX_UNSENT: usize = 64 * 1024;

/// Most application bytes encrypted per write (one TLS record).
const MAX_PLAINTEXT: usize = 16 * 1024;

/// Most bytes one read from the socket takes.
const READ_CHUNK: usize = 16 * 1024 + 256;

/// Most received bytes held that rustls has not consumed: the largest handshake message
/// rustls accepts (64 KiB) in records of a sensible size, and a record more.
const MAX_PENDING: usize = 64 * 1024 + 2 * READ_CHUNK;

/// A rustls unbuffered connection, client or server.
pub trait Unbuffered: Unpin {
    /// The side's connection data.
    type Data;

    /// Processes the TLS records at the front of `incoming`.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;

    /// Whether the handshake is still under way in either direction.
    fn handshaking(&self) -> bool;
}

/// rustls's client and server connections have the same methods under the same names, with
/// no trait of their own.
macro_rules! unbuffered {
    ($connection:ty, $data:ty) => {
        impl Unbuffered for $connection {
            type Data = $data;

            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }

            fn handshaking(&self) -> bool {
                self.is_handshaking()
            }
        }
    };
}

unbuffered!(
    UnbufferedServerConnection,
    rustls::server::ServerConnectionData
);
unbuffered!(
    UnbufferedClientConnection,
    rustls::client::ClientConnectionData
);

/// The client-facing side of an intercepted session (imgate is the TLS server).
pub type ServerTls<IO> = TlsStream<IO, UnbufferedServerConnection>;

/// The server-facing side of an intercepted session (imgate is the TLS client).
pub type ClientTls<IO> = TlsStream<IO, UnbufferedClientConnection>;

/// A TLS stream whose buffers are freed while it waits.
pub struct TlsStream<IO, C> {
    io: IO,
    conn: C,
    /// TLS bytes received; the first `processed` have been handed to rustls for good.
    incoming: Vec<u8>,
    processed: usize,
    /// Application bytes decrypted and not yet read.
    plaintext: Vec<u8>,
    /// TLS bytes produced and not yet sent.
    outgoing: Vec<u8>,
    /// The peer's close_notify arrived: reads return end of stream.
    peer_closed: bool,
    /// The socket reached its end.
    eof: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// Why the connection failed, once it has: it is not used again.
    failed: Option<(io::ErrorKind, String)>,
}

/// What to do once rustls lets this side write.
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where processing stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// Everything received is processed; this side may write.
    Writable,
    /// The handshake needs more from the peer.
    Blocked,
    /// Both sides sent close_notify.
    Closed,
}

/// Server side: completes a TLS handshake with a client on `io` within `limit`.
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
    limit: Duration,
) -> io::Result<ServerTls<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    within(limit, TlsStream::new(io, conn).handshake()).await
}

/// Client side: completes a TLS handshake with the server `name` on `io` within `limit`,
/// verifying the server's certificate.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: IO,
    limit: Duration,
) -> io::Result<ClientTls<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
    within(limit, TlsStream::new(io, conn).handshake()).await
}

/// A handshake, or a `TimedOut` error once `limit` has passed without it completing.
async fn within<T>(
    limit: Duration,
    handshake: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the TLS handshake did not complete within {limit:?}"),
            ))
        })
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Frees a buffer that has become empty.
fn release_if_empty(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = Vec::new();
    }
}

/// Appends what `write` produces to `out`, growing it as rustls asks; on error `out` is as
/// it was.
fn append<E>(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    too_small: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(error) => match too_small(&error) {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(error);
                }
            },
        }
    }
}

fn encode_into(
    out: &mut Vec<u8>,
    encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    append(out, encode, |error| match error {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    })
    .map_err(|error| rustls::Error::General(format!("encoding a TLS message: {error}")))
}

fn encrypt_into(
    out: &mut Vec<u8>,
    encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    append(out, encrypt, |error| match error {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    })
    .map_err(|error| match error {
        EncryptError::EncryptExhausted => rustls::Error::General(
            "the TLS connection has sent as many records as its cipher suite allows; it must \
             be reopened"
                .into(),
        ),
        other => rustls::Error::General(format!("encrypting: {other}")),
    })
}

impl<IO, C> TlsStream<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Unbuffered,
{
    fn new(io: IO, conn: C) -> Self {
        Self {
            io,
            conn,
            incoming: Vec::new(),
            processed: 0,
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            peer_closed: false,
            eof: false,
            close_queued: false,
            failed: None,
        }
    }

    /// Drives the handshake to its end in both directions, with nothing left to send.
    async fn handshake(mut self) -> io::Result<Self> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await?;
        Ok(self)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let reached = match self.drive(Action::Nothing) {
                Ok(reached) => reached,
                Err(error) => return Poll::Ready(Err(self.fail(cx, error))),
            };
            ready!(self.poll_send_outgoing(cx))?;
            if !self.conn.handshaking() && reached == Reached::Writable {
                return Poll::Ready(Ok(()));
            }
            if reached == Reached::Closed || self.peer_closed || self.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// Has rustls process the received bytes until it lets this side write (doing `action`
    /// then) or needs more: decrypted application data is kept for reading, and whatever
    /// rustls has to send is queued.
    fn drive(&mut self, mut action: Action<'_>) -> Result<Reached, rustls::Error> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process(&mut self.incoming[self.processed..]);
            let step = match state {
                Err(error) => Err(error),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut taken = Ok(None);
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => self.plaintext.extend_from_slice(record.payload),
                            Err(error) => {
                                taken = Err(error);
                                break;
                            }
                        }
                    }
                    taken
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode_into(&mut self.outgoing, |out| data.encode(out)).map(|()| None)
                }
                // Sent from the outgoing buffer, in order, as the socket takes it.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    Ok(None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => Ok(Some(Reached::Closed)),
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Reached::Blocked)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let done = match std::mem::replace(&mut action, Action::Nothing) {
                        Action::Nothing => Ok(()),
                        Action::Encrypt(data) => {
                            encrypt_into(&mut self.outgoing, |out| traffic.encrypt(data, out))
                        }
                        Action::CloseNotify => {
                            encrypt_into(&mut self.outgoing, |out| traffic.queue_close_notify(out))
                        }
                    };
                    done.map(|()| Some(Reached::Writable))
                }
                // Early data is never accepted, so rustls never offers it.
                Ok(_) => Err(rustls::Error::General("unexpected TLS state".into())),
            };
            self.processed += discard;
            if self.processed == self.incoming.len() {
                self.incoming = Vec::new();
                self.processed = 0;
            }
            if let Some(reached) = step? {
                return Ok(reached);
            }
        }
    }

    /// Marks the connection failed, queues the alert rustls prepared and tries to send it.
    fn fail(&mut self, cx: &mut Context<'_>, error: rustls::Error) -> io::Error {
        // rustls may be part of the way through a handshake message: it is given the same
        // bytes as before, never fewer.
        let UnbufferedStatus { state, .. } =
            self.conn.process(&mut self.incoming[self.processed..]);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
            let _ = encode_into(&mut self.outgoing, |out| alert.encode(out));
        }
        let _ = self.poll_send_outgoing(cx);
        let error = invalid(error);
        self.failed = Some((error.kind(), error.to_string()));
        error
    }

    fn check_usable(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, why)) => Err(io::Error::new(*kind, why.clone())),
            None => Ok(()),
        }
    }

    /// Reads more TLS bytes from the socket; ready once some arrived or the stream ended.
    /// The read goes to a stack buffer inside the poll, so no buffer is kept while waiting.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.incoming.drain(..std::mem::take(&mut self.processed));
        if self.incoming.len() > MAX_PENDING {
            // rustls keeps the records of a handshake message until it is whole; a peer
            // sending one in tiny records would make them many times its size.
            let error = invalid(format!(
                "the peer sent more than {MAX_PENDING} bytes of records without completing a \
                 message"
            ));
            self.failed = Some((error.kind(), error.to_string()));
            return Poll::Ready(Err(error));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = ReadBuf::new(&mut chunk);
        let received = Pin::new(&mut self.io).poll_read(cx, &mut read);
        release_if_empty(&mut self.incoming);
        ready!(received)?;
        self.incoming.extend_from_slice(read.filled());
        self.eof = read.filled().is_empty();
        Poll::Ready(Ok(()))
    }

    /// Sends as much of the outgoing TLS bytes as the socket takes; ready once all are sent.
    fn poll_send_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let sent = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.drain(..sent);
        }
        release_if_empty(&mut self.outgoing);
        Poll::Ready(Ok(()))
    }

    /// The socket, the connection and any received bytes not yet processed.
    #[cfg(test)]
    fn into_parts(mut self) -> (IO, C, Vec<u8>) {
        self.incoming.drain(..self.processed);
        (self.io, self.conn, self.incoming)
    }

    /// Bytes held in buffers (none when idle).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }
}

impl<IO, C> AsyncRead for TlsStream<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Unbuffered,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(buf.remaining());
                buf.put_slice(&this.plaintext[..n]);
                this.plaintext.drain(..n);
                release_if_empty(&mut this.plaintext);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                // Whatever follows a close_notify is ignored (RFC 8446 §6.1).
                this.incoming = Vec::new();
                this.processed = 0;
                return Poll::Ready(Ok(()));
            }
            this.check_usable()?;
            if let Err(error) = this.drive(Action::Nothing) {
                return Poll::Ready(Err(this.fail(cx, error)));
            }
            if let Poll::Ready(Err(error)) = this.poll_send_outgoing(cx) {
                return Poll::Ready(Err(error));
            }
            if !this.plaintext.is_empty() || this.peer_closed {
                continue;
            }
            if this.eof {
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer ended the connection without a TLS close_notify: what it sent may \
                     have been truncated",
                );
                this.failed = Some((error.kind(), error.to_string()));
                return Poll::Ready(Err(error));
            }
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl<IO, C> AsyncWrite for TlsStream<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Unbuffered,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_usable()?;
        if this.close_queued {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection is closed for writing",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() >= MAX_UNSENT {
            ready!(this.poll_send_outgoing(cx))?;
        }
        let written = data.len().min(MAX_PLAINTEXT);
        match this.drive(Action::Encrypt(&data[..written])) {
            Ok(Reached::Writable) => {}
            Ok(_) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS connection cannot be written to",
                )));
            }
            Err(error) => return Poll::Ready(Err(this.fail(cx, error))),
        }
        // Send what the socket takes now; the rest goes with the next write or flush. The
        // data is sealed: after a socket error it must not be written again.
        if let Poll::Ready(Err(error)) = this.poll_send_outgoing(cx) {
            this.failed = Some((error.kind(), error.to_string()));
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued && this.failed.is_none() {
            this.close_queued = true;
            if let Err(error) = this.drive(Action::CloseNotify) {
                return Poll::Ready(Err(this.fail(cx, error)));
            }
        }
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hostile;
