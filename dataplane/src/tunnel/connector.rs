//! The connector's side of the tunnel: each TCP connection a local front end accepts is
//! carried as one bidirectional stream to the tenant's dataplane, which answers with a
//! [`Reply`] that the connector turns into the front end's own answer to its client.
//!
//! Invariants: a client gets its front end's success answer only after the dataplane said
//! `Connected`, so no client byte is sent before the session is admitted; the stream header
//! carries the client's address and the SOCKS user as the connector saw them; when no
//! dataplane can be reached the client is told so (unreachable), never left waiting.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::header::{Decoded, Reply, Status, StreamHeader};
use crate::proxy::frontend::{Frontend, HandshakeError, Refusal};

/// Why a connection could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The client's handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// No dataplane could be reached.
    #[error("no dataplane could be reached: {0}")]
    Unreachable(String),
    /// The dataplane refused the connection.
    #[error("the dataplane refused the connection ({status:?}): {reason}")]
    Refused {
        /// Its answer.
        status: Status,
        /// Why.
        reason: String,
    },
    /// The tunnel stream broke.
    #[error("tunnel stream: {0}")]
    Stream(String),
    /// Copying between the client and the tunnel failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn stream_error(error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Stream(error.to_string())
}

/// A connector: its id and its QUIC connection to the tenant's dataplanes.
pub struct Connector {
    id: String,
    endpoint: quinn::Endpoint,
    /// The dataplanes to try, in order, and the name each one's certificate carries.
    dataplanes: Vec<(SocketAddr, String)>,
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
}

impl Connector {
    /// A connector `id` dialling `dataplanes` from `endpoint` (a client endpoint whose default
    /// configuration holds the connector's identity).
    pub fn new(id: &str, endpoint: quinn::Endpoint, dataplanes: Vec<(SocketAddr, String)>) -> Self {
        Self {
            id: id.to_owned(),
            endpoint,
            dataplanes,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The open connection, or a new one to the first dataplane that answers.
    async fn connection(&self) -> Result<quinn::Connection, ConnectorError> {
        let mut current = self.connection.lock().await;
        if let Some(connection) = current.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(connection.clone());
        }
        let mut failures = Vec::new();
        for (address, name) in &self.dataplanes {
            let connecting = self.endpoint.connect(*address, name);
            match connecting {
                Ok(connecting) => match connecting.await {
                    Ok(connection) => {
                        tracing::info!(target: "imgate::tunnel", dataplane = %address, "connected to the dataplane");
                        *current = Some(connection.clone());
                        return Ok(connection);
                    }
                    Err(error) => failures.push(format!("{address}: {error}")),
                },
                Err(error) => failures.push(format!("{address}: {error}")),
            }
        }
        tracing::warn!(target: "imgate::tunnel", "no dataplane could be reached: {}", failures.join("; "));
        Err(ConnectorError::Unreachable(failures.join("; ")))
    }

    /// Carries one accepted connection through the tunnel until either side closes.
    pub async fn serve(
        self: Arc<Self>,
        frontend: Frontend,
        mut client: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ConnectorError> {
        let target = frontend.accept(&mut client).await?;
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => {
                frontend.refuse(&mut client, Refusal::Unreachable).await?;
                return Err(error);
            }
        };
        let (mut send, mut receive) = connection.open_bi().await.map_err(stream_error)?;
        let header = StreamHeader {
            host: target.host,
            port: target.port,
            client: Some(peer),
            connector: self.id.clone(),
            user: target.user,
        };
        let header = header.encode().map_err(stream_error)?;
        send.write_all(&header).await.map_err(stream_error)?;
        let reply = read_reply(&mut receive).await?;
        let refusal = match reply.status {
            Status::Connected => None,
            Status::Refused => Some(Refusal::NotAllowed),
            Status::TimedOut => Some(Refusal::TimedOut),
            Status::Unreachable | Status::BadRequest | Status::Draining => {
                Some(Refusal::Unreachable)
            }
        };
        if let Some(refusal) = refusal {
            frontend.refuse(&mut client, refusal).await?;
            return Err(ConnectorError::Refused {
                status: reply.status,
                reason: reply.reason,
            });
        }
        frontend.succeed(&mut client).await?;
        let mut tunnel = tokio::io::join(receive, send);
        tokio::io::copy_bidirectional(&mut client, &mut tunnel).await?;
        Ok(())
    }
}

/// Reads the dataplane's reply, exactly: what follows it is the server's.
async fn read_reply(receive: &mut quinn::RecvStream) -> Result<Reply, ConnectorError> {
    let mut bytes = Vec::new();
    let mut needed = 3;
    loop {
        let start = bytes.len();
        bytes.resize(start + needed, 0);
        receive
            .read_exact(&mut bytes[start..])
            .await
            .map_err(stream_error)?;
        match Reply::decode(&bytes).map_err(stream_error)? {
            Decoded::Complete(reply, _) => return Ok(reply),
            Decoded::NeedMore(more) => needed = more,
        }
    }
}
