//! The dataplane's side of the tunnel: it accepts connectors' QUIC connections and serves
//! each bidirectional stream as a session, through the same pipeline as a local listener's
//! connections ([`crate::proxy::session::serve`]).
//!
//! Invariants: a connection is served only when its certificate, verified against the
//! tenant's tunnel CA, names a connector of this tenant; a stream's connector id is the
//! certificate's, never the stream header's alone; refusals are logged with the reason on
//! this side and sent to the connector in the connection's close.

use std::future::Future;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio::task::JoinSet;

use super::trust::connector_of;
use crate::proxy::frontend::Frontend;
use crate::proxy::session::serve;
use crate::proxy::shared::Shared;

/// QUIC close code for a connector this dataplane does not serve.
const NOT_OURS: u32 = 1;

/// Serves connectors on `endpoint` until `shutdown` resolves.
pub async fn run(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    connections.spawn(connection(shared.clone(), incoming));
                }
                None => break,
            },
            () = &mut shutdown => break,
        }
    }
    endpoint.close(0u32.into(), b"the dataplane is shutting down");
    connections.abort_all();
}

/// Serves one connector's connection.
async fn connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::warn!(target: "imgate::tunnel", %remote, "a connector was refused: {error}");
            return;
        }
    };
    let named = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().and_then(connector_of));
    let id = match named {
        Some((tenant, id)) if tenant == shared.tenant => id,
        other => {
            let reason = match other {
                Some((tenant, id)) => format!("connector {id} belongs to tenant {tenant}"),
                None => "the certificate names no connector".to_owned(),
            };
            tracing::warn!(target: "imgate::tunnel", %remote, "a connector was refused: {reason}");
            connection.close(NOT_OURS.into(), reason.as_bytes());
            return;
        }
    };
    tracing::info!(target: "imgate::tunnel", %remote, connector = %id, "connector connected");
    loop {
        match connection.accept_bi().await {
            Ok((send, receive)) => {
                let frontend = Frontend::Tunnel {
                    connector: id.clone(),
                };
                let stream = tokio::io::join(receive, send);
                let session = shared.next_session();
                tokio::spawn(serve(shared.clone(), frontend, stream, remote, session));
            }
            Err(error) => {
                tracing::info!(target: "imgate::tunnel", %remote, connector = %id, "connector disconnected: {error}");
                return;
            }
        }
    }
}
