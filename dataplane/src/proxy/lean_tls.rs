//! TLS over an async byte stream with rustls's unbuffered API, for sessions that stay open
//! and mostly idle. rustls's buffered connections keep a 4 KiB receive buffer for as long as
//! they live; here the connection holds no buffer while it waits.
//!
//! Invariants:
//! - received TLS bytes, decrypted bytes not yet read, and encrypted bytes not yet sent each
//!   live in a buffer that is freed as soon as it is empty, so an idle connection holds none;
//! - TLS bytes are sent in the order rustls produced them: handshake messages, alerts and
//!   application data all pass through one outgoing buffer;
//! - at most [`MAX_UNSENT`] encrypted bytes (and one record) wait for a slow peer: a write
//!   beyond that waits until the peer reads;
//! - malformed or hostile TLS ends the connection with an error (`InvalidData`), never a
//!   panic; the alert rustls queues for it is sent on a best-effort basis.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, ReadTraffic,
    UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most encrypted bytes held for a peer that does not read.
pub const MAX_UNSENT: usize = 64 * 1024;

/// Most application bytes encrypted per write (one TLS record).
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Most bytes one read from the socket takes.
const READ_CHUNK: usize = 16 * 1024 + 256;

/// A rustls unbuffered connection, client or server.
pub trait Unbuffered: Unpin {
    /// The side's connection data.
    type Data;

    /// Processes the TLS records at the front of `incoming`.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// A TLS stream with no buffers while idle.
pub struct LeanTls<IO, C> {
    io: IO,
    conn: C,
    /// TLS bytes received and not yet processed (an incomplete record).
    incoming: Vec<u8>,
    /// Application bytes decrypted and not yet read.
    plaintext: Vec<u8>,
    /// TLS bytes produced and not yet sent.
    outgoing: Vec<u8>,
    /// The peer closed (close_notify or end of stream): reads return end of stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls reported an error: the connection is not used again.
    failed: bool,
}

/// Why processing stopped short.
enum Failure {
    /// rustls refused the peer's bytes (an alert may be due).
    Tls(rustls::Error),
    /// Anything else.
    Io(io::Error),
}

/// What processing the received bytes came to.
enum Processed {
    /// More TLS bytes are needed to go on.
    NeedInput,
    /// Application data may be written now.
    Writable,
}

/// Server side: completes a TLS handshake with a client on `io`.
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> io::Result<LeanTls<IO, UnbufferedServerConnection>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    LeanTls::new(io, conn).handshake().await
}

/// Client side: completes a TLS handshake with the server `name` on `io`, verifying it.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: IO,
) -> io::Result<LeanTls<IO, UnbufferedClientConnection>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
    LeanTls::new(io, conn).handshake().await
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Appends what `produce` writes to `out`, growing it as the producer asks.
fn produce_into<E>(
    out: &mut Vec<u8>,
    mut produce: impl FnMut(&mut [u8]) -> Result<usize, E>,
    too_small: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match produce(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(error) => match too_small(&error) {
                Some(required) => room = required,
                None => {
                    out.truncate(start);
                    return Err(error);
                }
            },
        }
    }
}

fn encode_too_small(error: &EncodeError) -> Option<usize> {
    match error {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

fn encrypt_too_small(error: &EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

/// Appends the decrypted application data rustls holds to `plaintext`.
fn take_records<Data>(
    mut traffic: ReadTraffic<'_, '_, Data>,
    plaintext: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    while let Some(record) = traffic.next_record() {
        plaintext.extend_from_slice(record?.payload);
    }
    Ok(())
}

/// Frees a buffer that has become empty.
fn release_if_empty(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = Vec::new();
    }
}

impl<IO, C> LeanTls<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Unbuffered,
{
    fn new(io: IO, conn: C) -> Self {
        Self {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            peer_closed: false,
            close_queued: false,
            failed: false,
        }
    }

    /// Marks the connection failed after rustls reported `error`, and queues the alert that
    /// rustls prepared for the peer. rustls is not asked to process anything after that.
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        self.failed = true;
        let UnbufferedStatus { state, .. } = self.conn.process(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
            let _ = produce_into(
                &mut self.outgoing,
                |out| alert.encode(out),
                encode_too_small,
            );
        }
        invalid(error)
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(invalid("the TLS connection failed earlier"));
        }
        Ok(())
    }

    /// Drives the handshake until application data may be written.
    async fn handshake(mut self) -> io::Result<Self> {
        loop {
            let processed = match self.process() {
                Ok(processed) => processed,
                Err(error) => {
                    // Tell the peer why, if rustls queued an alert.
                    let _ = self.send_outgoing().await;
                    return Err(error);
                }
            };
            self.send_outgoing().await?;
            match processed {
                Processed::Writable => return Ok(self),
                Processed::NeedInput if self.peer_closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                Processed::NeedInput => {
                    // Read inside a poll, so that the read buffer is not kept in the future.
                    if !std::future::poll_fn(|cx| self.poll_receive(cx)).await? {
                        self.peer_closed = true;
                    }
                }
            }
        }
    }

    /// Processes the received TLS bytes as far as they go: application data is kept for
    /// reading, and whatever rustls has to send is queued.
    fn process(&mut self) -> io::Result<Processed> {
        self.check_usable()?;
        let result = loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
            let step = match state {
                Err(error) => Err(Failure::Tls(error)),
                Ok(ConnectionState::ReadTraffic(traffic)) => {
                    take_records(traffic, &mut self.plaintext)
                        .map(|()| None)
                        .map_err(Failure::Tls)
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    produce_into(&mut self.outgoing, |out| data.encode(out), encode_too_small)
                        .map(|()| None)
                        .map_err(|error| Failure::Io(invalid(error)))
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Sent from the outgoing buffer, in order, when the socket takes it.
                    data.done();
                    Ok(None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Ok(Some(Processed::NeedInput))
                }
                Ok(ConnectionState::WriteTraffic(_)) => Ok(Some(Processed::Writable)),
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Processed::NeedInput)),
                Ok(_) => Err(Failure::Io(invalid(
                    "unexpected TLS state (early data is not accepted)",
                ))),
            };
            self.incoming.drain(..discard);
            match step {
                Ok(None) => continue,
                Ok(Some(processed)) => break Ok(processed),
                Err(failure) => break Err(failure),
            }
        };
        release_if_empty(&mut self.incoming);
        result.map_err(|failure| self.failure(failure))
    }

    fn failure(&mut self, failure: Failure) -> io::Error {
        match failure {
            Failure::Tls(error) => self.fail(error),
            Failure::Io(error) => {
                self.failed = true;
                error
            }
        }
    }

    /// Has rustls encrypt with `write` into the outgoing buffer; `false` when the connection
    /// takes no application data now. Call after [`Self::process`], which consumes what
    /// rustls held for reading.
    fn write_traffic(
        &mut self,
        mut write: impl FnMut(&mut WriteTraffic<'_, C::Data>, &mut [u8]) -> Result<usize, EncryptError>,
    ) -> io::Result<bool> {
        let UnbufferedStatus { discard, state } = self.conn.process(&mut self.incoming);
        let result = match state {
            Ok(ConnectionState::WriteTraffic(mut traffic)) => produce_into(
                &mut self.outgoing,
                |out| write(&mut traffic, out),
                encrypt_too_small,
            )
            .map(|()| true)
            .map_err(|error| Failure::Io(invalid(error))),
            Ok(_) => Ok(false),
            Err(error) => Err(Failure::Tls(error)),
        };
        self.incoming.drain(..discard);
        result.map_err(|failure| self.failure(failure))
    }

    /// Sends the outgoing TLS bytes.
    async fn send_outgoing(&mut self) -> io::Result<()> {
        if !self.outgoing.is_empty() {
            self.io.write_all(&self.outgoing).await?;
            self.outgoing.clear();
        }
        release_if_empty(&mut self.outgoing);
        Ok(())
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

    /// Reads more TLS bytes from the socket; ready with `false` at its end.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        self.incoming.extend_from_slice(read.filled());
        Poll::Ready(Ok(!read.filled().is_empty()))
    }

    /// Bytes held in buffers (none when idle).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }
}

impl<IO, C> AsyncRead for LeanTls<IO, C>
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
                return Poll::Ready(Ok(()));
            }
            if let Err(error) = this.process() {
                // The alert rustls queued, if the socket takes it now.
                let _ = this.poll_send_outgoing(cx);
                return Poll::Ready(Err(error));
            }
            // Post-handshake messages (session tickets, key updates) go out as they come.
            if let Poll::Ready(Err(error)) = this.poll_send_outgoing(cx) {
                return Poll::Ready(Err(error));
            }
            if !this.plaintext.is_empty() || this.peer_closed {
                continue;
            }
            if !ready!(this.poll_receive(cx))? {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection inside a TLS record",
                    )));
                }
                this.peer_closed = true;
            }
        }
    }
}

impl<IO, C> AsyncWrite for LeanTls<IO, C>
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
        if this.outgoing.len() >= MAX_UNSENT {
            ready!(this.poll_send_outgoing(cx))?;
        }
        let closed = || {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection is closed for writing",
            )
        };
        if let Processed::NeedInput = this.process()? {
            return Poll::Ready(Err(closed()));
        }
        let written = data.len().min(RECORD_PLAINTEXT);
        if !this.write_traffic(|traffic, out| traffic.encrypt(&data[..written], out))? {
            return Poll::Ready(Err(closed()));
        }
        // Send what the socket takes now; the rest goes with the next write or flush.
        if let Poll::Ready(Err(error)) = this.poll_send_outgoing(cx) {
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
        if !this.close_queued && !this.failed {
            this.close_queued = true;
            // Nothing to close politely when the connection is closed already.
            this.write_traffic(|traffic, out| traffic.queue_close_notify(out))?;
        }
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
