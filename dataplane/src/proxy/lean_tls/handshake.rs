//! The TLS handshake of a lean connection, driven through rustls's unbuffered API.
//!
//! Invariants:
//! - received TLS bytes and encrypted bytes not yet sent each live in a buffer that is freed
//!   as soon as it is empty;
//! - TLS bytes are sent in the order rustls produced them;
//! - the handshake ends only once rustls has completed it in both directions and holds
//!   nothing to send, which is what handing the connection's secrets over needs; bytes the
//!   peer sent after it (records not yet processed, application data already decrypted) are
//!   handed over with it;
//! - malformed or hostile TLS ends the handshake with an error (`InvalidData`), never a
//!   panic; the alert rustls queues for it is sent on a best-effort basis.

use std::io;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, InsufficientSizeError, ReadTraffic, UnbufferedStatus,
};
use rustls::{ExtractedSecrets, SideData};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{invalid, poll_receive, release_if_empty};

/// A rustls unbuffered connection, client or server.
pub trait Unbuffered: Unpin {
    /// The side's connection data.
    type Data: SideData;

    /// Processes the TLS records at the front of `incoming`.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;

    /// Whether the handshake is still under way in either direction.
    fn handshaking(&self) -> bool;

    /// Hands the traffic secrets over, keeping what key updates and session tickets need.
    fn into_kernel(self)
    -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error>;
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

            fn into_kernel(
                self,
            ) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error> {
                self.dangerous_into_kernel_connection()
            }
        }
    };
}

unbuffered!(UnbufferedServerConnection, ServerConnectionData);
unbuffered!(UnbufferedClientConnection, ClientConnectionData);

/// A connection whose handshake is complete.
pub struct Handshaken<IO, C> {
    pub io: IO,
    pub conn: C,
    /// TLS bytes received after the handshake and not yet processed.
    pub incoming: Vec<u8>,
    /// Application data the peer sent with the end of its handshake.
    pub plaintext: Vec<u8>,
}

/// Completes the handshake of `conn` over `io`.
pub async fn complete<IO, C>(io: IO, conn: C) -> io::Result<Handshaken<IO, C>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Unbuffered,
{
    let mut handshake = Handshake {
        done: Handshaken {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
        },
        outgoing: Vec::new(),
        peer_closed: false,
    };
    loop {
        let processed = match handshake.process() {
            Ok(processed) => processed,
            Err(error) => {
                // Tell the peer why, if rustls queued an alert.
                let _ = handshake.send_outgoing().await;
                return Err(error);
            }
        };
        handshake.send_outgoing().await?;
        match processed {
            Processed::Complete => return Ok(handshake.done),
            Processed::NeedInput if handshake.peer_closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            Processed::NeedInput => {
                let done = &mut handshake.done;
                // Read inside a poll, so that the read buffer is not kept in the future.
                let more =
                    std::future::poll_fn(|cx| poll_receive(&mut done.io, &mut done.incoming, cx))
                        .await?;
                if !more {
                    handshake.peer_closed = true;
                }
            }
        }
    }
}

struct Handshake<IO, C> {
    done: Handshaken<IO, C>,
    /// TLS bytes produced and not yet sent.
    outgoing: Vec<u8>,
    /// The peer closed its side of the connection.
    peer_closed: bool,
}

/// What processing the received bytes came to.
enum Processed {
    /// More TLS bytes are needed to go on.
    NeedInput,
    /// The handshake is complete in both directions.
    Complete,
}

/// One step of processing.
enum Step {
    /// Go on processing.
    Continue,
    /// rustls takes application data to send.
    Writable,
    /// More TLS bytes are needed.
    NeedInput,
    /// rustls refused the peer's bytes (`None`: a state this connection never accepts).
    Failed(Option<rustls::Error>),
}

/// Appends what `encode` writes to `out`, growing it as the encoder asks.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        }
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

impl<IO, C> Handshake<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Unbuffered,
{
    /// Processes the received TLS bytes as far as they go: application data is kept for
    /// reading, and whatever rustls has to send is queued.
    fn process(&mut self) -> io::Result<Processed> {
        let done = &mut self.done;
        let result = loop {
            let UnbufferedStatus { discard, state } = done.conn.process(&mut done.incoming);
            let step = match state {
                Err(error) => Step::Failed(Some(error)),
                Ok(ConnectionState::ReadTraffic(traffic)) => {
                    match take_records(traffic, &mut done.plaintext) {
                        Ok(()) => Step::Continue,
                        Err(error) => Step::Failed(Some(error)),
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    match encode_into(&mut self.outgoing, |out| data.encode(out)) {
                        Ok(()) => Step::Continue,
                        Err(error) => Step::Failed(Some(rustls::Error::General(format!(
                            "encoding TLS data: {error}"
                        )))),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Sent from the outgoing buffer, in order, when the socket takes it.
                    data.done();
                    Step::Continue
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Step::NeedInput
                }
                Ok(ConnectionState::WriteTraffic(_)) => Step::Writable,
                Ok(ConnectionState::BlockedHandshake) => Step::NeedInput,
                Ok(_) => Step::Failed(None),
            };
            done.incoming.drain(..discard);
            match step {
                Step::Continue => {}
                Step::Writable if !done.conn.handshaking() => break Ok(Processed::Complete),
                // A server may write before the client's Finished arrives: wait for it.
                Step::Writable | Step::NeedInput => break Ok(Processed::NeedInput),
                Step::Failed(error) => break Err(error),
            }
        };
        release_if_empty(&mut done.incoming);
        result.map_err(|error| match error {
            Some(error) => self.fail(error),
            None => invalid("unexpected TLS state (early data is not accepted)"),
        })
    }

    /// Queues the alert that rustls prepared for the peer after `error`.
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        let UnbufferedStatus { state, .. } = self.done.conn.process(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
            let _ = encode_into(&mut self.outgoing, |out| alert.encode(out));
        }
        invalid(error)
    }

    /// Sends the outgoing TLS bytes.
    async fn send_outgoing(&mut self) -> io::Result<()> {
        if !self.outgoing.is_empty() {
            self.done.io.write_all(&self.outgoing).await?;
            self.outgoing.clear();
        }
        release_if_empty(&mut self.outgoing);
        Ok(())
    }
}
