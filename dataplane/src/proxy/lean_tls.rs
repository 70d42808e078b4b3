//! TLS over an async byte stream for sessions that stay open and mostly idle: rustls makes
//! the handshake (unbuffered API, `handshake`), then hands the traffic secrets over and the
//! connection protects its records itself (`tls_records`), keeping from rustls only what key
//! updates and session tickets need (its kernel connection). A rustls connection keeps its
//! whole state and an expanded AEAD key per direction for as long as it lives; this keeps
//! about 60 bytes of key material per direction and no buffer while it waits.
//!
//! Invariants:
//! - received TLS bytes, decrypted bytes not yet read, encrypted bytes not yet sent and a
//!   post-handshake message split across records each live in a buffer that is freed as
//!   soon as it is empty, so an idle connection holds none;
//! - TLS bytes are sent in the order they were produced, alerts and key updates included;
//! - at most [`MAX_UNSENT`] encrypted bytes (and one record) wait for a slow peer: a write
//!   beyond that waits until the peer reads;
//! - a key update from the peer (TLS 1.3) is followed, and answered when it asks; this side
//!   updates its own key before it reaches the cipher suite's confidentiality limit, and a
//!   TLS 1.2 connection refuses to write past it;
//! - malformed or hostile TLS ends the connection with an error (`InvalidData`) and an alert
//!   sent on a best-effort basis, never a panic; nothing is read or written after that.

mod handshake;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{
    AlertDescription, ClientConfig, ContentType, HandshakeType, ProtocolVersion, ServerConfig,
    SupportedCipherSuite,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::handshake::{Handshaken, Unbuffered};
use super::tls_records::{Direction, MAX_PLAINTEXT, RecordError, Version, record_len};

/// Most encrypted bytes held for a peer that does not read.
pub const MAX_UNSENT: usize = 64 * 1024;

/// Most application bytes encrypted per write (one TLS record).
const RECORD_PLAINTEXT: usize = MAX_PLAINTEXT;

/// Most bytes one read from the socket takes.
const READ_CHUNK: usize = 16 * 1024 + 256;

/// Most bytes of post-handshake messages held while they arrive (a session ticket may be
/// up to 64 KiB, RFC 8446 §4.6.1).
const MAX_HANDSHAKE: usize = 70 * 1024;

/// Bytes of a handshake message's header: type and 24-bit length.
const HANDSHAKE_HEADER: usize = 4;

/// What a side does with a post-handshake message only the other side may send.
pub trait Side: Sized {
    /// Takes a session ticket from the peer.
    fn session_ticket(kernel: &mut KernelConnection<Self>, ticket: &[u8]) -> Result<(), Refused>;
}

impl Side for ClientConnectionData {
    fn session_ticket(kernel: &mut KernelConnection<Self>, ticket: &[u8]) -> Result<(), Refused> {
        kernel
            .handle_new_session_ticket(ticket)
            .map_err(|error| Refused::Protocol {
                alert: AlertDescription::DecodeError,
                reason: format!("the server sent a session ticket that was refused: {error}"),
            })
    }
}

impl Side for ServerConnectionData {
    fn session_ticket(_: &mut KernelConnection<Self>, _: &[u8]) -> Result<(), Refused> {
        Err(Refused::Protocol {
            alert: AlertDescription::UnexpectedMessage,
            reason: "the client sent a session ticket, which only a server may send".into(),
        })
    }
}

/// Why a connection was ended.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A record was refused.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The peer broke the protocol, or the connection cannot go on.
    #[error("{reason}")]
    Protocol {
        /// The alert that tells the peer.
        alert: AlertDescription,
        /// What happened, for the log.
        reason: String,
    },
    /// The peer ended the connection with an alert.
    #[error("the peer ended the TLS connection with alert {0:?}")]
    PeerAlert(AlertDescription),
}

impl Refused {
    /// The alert to send the peer, if any.
    fn alert(&self) -> Option<AlertDescription> {
        match self {
            Self::Record(error) => Some(error.alert()),
            Self::Protocol { alert, .. } => Some(*alert),
            Self::PeerAlert(_) => None,
        }
    }

    fn key_update(error: rustls::Error) -> Self {
        Self::Protocol {
            alert: AlertDescription::InternalError,
            reason: format!("the TLS keys could not be updated: {error}"),
        }
    }
}

/// A TLS stream with no buffers while idle.
pub struct LeanTls<IO, Data> {
    io: IO,
    kernel: KernelConnection<Data>,
    version: Version,
    /// Protection of received records.
    rx: Direction,
    /// Protection of sent records.
    tx: Direction,
    /// Most records sent with one key (the cipher suite's confidentiality limit).
    records_per_key: u64,
    /// TLS bytes received and not yet processed (an incomplete record).
    incoming: Vec<u8>,
    /// Application bytes decrypted and not yet read.
    plaintext: Vec<u8>,
    /// TLS bytes produced and not yet sent.
    outgoing: Vec<u8>,
    /// Post-handshake message bytes received and not yet processed.
    handshake: Vec<u8>,
    /// The peer closed (close_notify or end of stream): reads return end of stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// The connection was refused: it is not used again.
    failed: bool,
}

/// Server side: completes a TLS handshake with a client on `io`.
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> io::Result<LeanTls<IO, ServerConnectionData>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    LeanTls::after(handshake::complete(io, conn).await?)
}

/// Client side: completes a TLS handshake with the server `name` on `io`, verifying it.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: IO,
) -> io::Result<LeanTls<IO, ClientConnectionData>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
    LeanTls::after(handshake::complete(io, conn).await?)
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

/// Reads more TLS bytes from `io` into `incoming`; ready with `false` at the stream's end.
/// The read goes to a stack buffer inside the poll, so no buffer is kept while waiting.
fn poll_receive<IO: AsyncRead + Unpin>(
    io: &mut IO,
    incoming: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut read = ReadBuf::new(&mut chunk);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    incoming.extend_from_slice(read.filled());
    Poll::Ready(Ok(!read.filled().is_empty()))
}

impl<IO, Data> LeanTls<IO, Data>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    Data: Side,
{
    /// Takes over a connection whose handshake is complete.
    fn after<C: Unbuffered<Data = Data>>(done: Handshaken<IO, C>) -> io::Result<Self> {
        let (secrets, kernel) = done.conn.into_kernel().map_err(invalid)?;
        let version = match kernel.protocol_version() {
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            other => return Err(invalid(format!("TLS version {other:?} is not supported"))),
        };
        let records_per_key = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
        };
        Ok(Self {
            io: done.io,
            records_per_key,
            rx: Direction::new(version, secrets.rx).map_err(invalid)?,
            tx: Direction::new(version, secrets.tx).map_err(invalid)?,
            kernel,
            version,
            incoming: done.incoming,
            plaintext: done.plaintext,
            outgoing: Vec::new(),
            handshake: Vec::new(),
            peer_closed: false,
            close_queued: false,
            failed: false,
        })
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(invalid("the TLS connection failed earlier"));
        }
        Ok(())
    }

    /// Marks the connection failed and queues the alert that tells the peer why.
    fn fail(&mut self, refused: Refused) -> io::Error {
        self.failed = true;
        if let Some(alert) = refused.alert() {
            let _ = self.tx.seal(
                ContentType::Alert,
                &[2, u8::from(alert)],
                &mut self.outgoing,
            );
        }
        invalid(refused)
    }

    /// Processes every complete record received: application data is kept for reading,
    /// alerts and post-handshake messages are acted on.
    fn process(&mut self) -> Result<(), Refused> {
        while !self.peer_closed {
            let Some(len) = record_len(self.version, &self.incoming)? else {
                break;
            };
            if self.incoming.len() < len {
                break;
            }
            let (content_type, content) = self.rx.open(&mut self.incoming[..len])?;
            let mut alert = None;
            match content_type {
                ContentType::ApplicationData if self.handshake.is_empty() => {
                    self.plaintext.extend_from_slice(content);
                }
                ContentType::Alert => alert = Some(<[u8; 2]>::try_from(content)),
                ContentType::Handshake if self.handshake.len() + content.len() <= MAX_HANDSHAKE => {
                    self.handshake.extend_from_slice(content);
                }
                ContentType::Handshake => {
                    return Err(Refused::Protocol {
                        alert: AlertDescription::DecodeError,
                        reason: "the peer sent a post-handshake message that is too long".into(),
                    });
                }
                ContentType::ApplicationData => {
                    return Err(Refused::Protocol {
                        alert: AlertDescription::UnexpectedMessage,
                        reason: "the peer sent application data inside a post-handshake message"
                            .into(),
                    });
                }
                other => return Err(RecordError::UnexpectedType(other).into()),
            }
            self.incoming.drain(..len);
            match alert {
                Some(Ok(alert)) => self.on_alert(alert)?,
                Some(Err(_)) => {
                    return Err(Refused::Protocol {
                        alert: AlertDescription::DecodeError,
                        reason: "the peer sent a malformed alert".into(),
                    });
                }
                None => self.on_handshake_messages()?,
            }
        }
        if self.peer_closed {
            // Whatever follows a close_notify is ignored (RFC 8446 §6.1).
            self.incoming = Vec::new();
            self.handshake = Vec::new();
        }
        release_if_empty(&mut self.incoming);
        Ok(())
    }

    /// Acts on an alert: a close_notify ends the peer's side, a warning in TLS 1.2 and a
    /// user_canceled are noted, anything else ends the connection.
    fn on_alert(&mut self, [level, description]: [u8; 2]) -> Result<(), Refused> {
        match AlertDescription::from(description) {
            AlertDescription::CloseNotify => {
                self.peer_closed = true;
                Ok(())
            }
            AlertDescription::UserCanceled => Ok(()),
            _ if self.version == Version::Tls12 && level == 1 => Ok(()),
            other => Err(Refused::PeerAlert(other)),
        }
    }

    /// Acts on the complete post-handshake messages received.
    fn on_handshake_messages(&mut self) -> Result<(), Refused> {
        while let [kind, a, b, c, ..] = self.handshake[..] {
            let len =
                HANDSHAKE_HEADER + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
            if self.handshake.len() < len {
                break;
            }
            match (self.version, HandshakeType::from(kind)) {
                (Version::Tls13, HandshakeType::NewSessionTicket) => {
                    Data::session_ticket(&mut self.kernel, &self.handshake[HANDSHAKE_HEADER..len])?;
                }
                (Version::Tls13, HandshakeType::KeyUpdate) => {
                    // RFC 8446 §5.1: a key change must end its record.
                    if self.handshake.len() != len {
                        return Err(Refused::Protocol {
                            alert: AlertDescription::UnexpectedMessage,
                            reason: "the peer sent a key update that does not end its record"
                                .into(),
                        });
                    }
                    let requested = match self.handshake[HANDSHAKE_HEADER..] {
                        [0] => false,
                        [1] => true,
                        _ => {
                            return Err(Refused::Protocol {
                                alert: AlertDescription::DecodeError,
                                reason: "the peer sent a malformed key update".into(),
                            });
                        }
                    };
                    let next = self
                        .kernel
                        .update_rx_secret()
                        .map_err(Refused::key_update)?;
                    self.rx = Direction::new(self.version, next)?;
                    if requested {
                        self.update_tx()?;
                    }
                }
                // A client may ignore a server's request to renegotiate (RFC 5246 §7.4.1.1).
                (Version::Tls12, HandshakeType::HelloRequest) if len == HANDSHAKE_HEADER => {}
                (_, other) => {
                    return Err(Refused::Protocol {
                        alert: AlertDescription::UnexpectedMessage,
                        reason: format!(
                            "the peer sent a {other:?} message after the handshake, which is \
                             not supported (renegotiation or post-handshake authentication)"
                        ),
                    });
                }
            }
            self.handshake.drain(..len);
        }
        release_if_empty(&mut self.handshake);
        Ok(())
    }

    /// Sends a key update (TLS 1.3) and protects what follows with the next key.
    fn update_tx(&mut self) -> Result<(), Refused> {
        let key_update = [u8::from(HandshakeType::KeyUpdate), 0, 0, 1, 0];
        self.tx
            .seal(ContentType::Handshake, &key_update, &mut self.outgoing)?;
        let next = self
            .kernel
            .update_tx_secret()
            .map_err(Refused::key_update)?;
        self.tx = Direction::new(self.version, next)?;
        Ok(())
    }

    /// Protects `data` (at most one record's worth) into the outgoing buffer.
    fn seal_data(&mut self, data: &[u8]) -> Result<(), Refused> {
        if self.tx.seq() >= self.records_per_key {
            match self.version {
                Version::Tls13 => self.update_tx()?,
                Version::Tls12 => {
                    return Err(Refused::Protocol {
                        alert: AlertDescription::InternalError,
                        reason: "the TLS 1.2 connection has sent as many records as its cipher \
                                 suite allows; it must be reopened"
                            .into(),
                    });
                }
            }
        }
        self.tx
            .seal(ContentType::ApplicationData, data, &mut self.outgoing)?;
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

    /// Bytes held in buffers (none when idle).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.incoming.capacity()
            + self.plaintext.capacity()
            + self.outgoing.capacity()
            + self.handshake.capacity()
    }
}

impl<IO, Data> AsyncRead for LeanTls<IO, Data>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    Data: Side + Unpin,
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
            this.check_usable()?;
            if let Err(refused) = this.process() {
                let error = this.fail(refused);
                // The alert, if the socket takes it now.
                let _ = this.poll_send_outgoing(cx);
                return Poll::Ready(Err(error));
            }
            // Answers to key updates go out as they come.
            if let Poll::Ready(Err(error)) = this.poll_send_outgoing(cx) {
                return Poll::Ready(Err(error));
            }
            if !this.plaintext.is_empty() || this.peer_closed {
                continue;
            }
            if !ready!(poll_receive(&mut this.io, &mut this.incoming, cx))? {
                if !this.incoming.is_empty() || !this.handshake.is_empty() {
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

impl<IO, Data> AsyncWrite for LeanTls<IO, Data>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    Data: Side + Unpin,
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
        let written = data.len().min(RECORD_PLAINTEXT);
        if let Err(refused) = this.seal_data(&data[..written]) {
            return Poll::Ready(Err(this.fail(refused)));
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
            let close_notify = [1, u8::from(AlertDescription::CloseNotify)];
            if let Err(error) = this
                .tx
                .seal(ContentType::Alert, &close_notify, &mut this.outgoing)
            {
                return Poll::Ready(Err(this.fail(error.into())));
            }
        }
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
