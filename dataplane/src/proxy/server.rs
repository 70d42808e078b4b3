//! The listeners: each accepts connections and serves every one in a task of its own, as long
//! as the dataplane's connection limits ([`super::admission`]) leave room for it.
//!
//! Invariants: a connection over a limit is closed at once and counted, never served; a
//! served connection holds its place until its task ends.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::frontend::Frontend;
use super::session::serve;
use super::shared::Shared;

/// Accepts on every listener until `shutdown` resolves.
pub async fn run(
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, Frontend)>,
    shutdown: impl Future<Output = ()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, frontend) in listeners {
        let shared = shared.clone();
        tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, peer)) => {
                        let slot = match shared.admission.admit(peer.ip()) {
                            Ok(slot) => slot,
                            Err(full) => {
                                shared.metrics.connection_refused(full.label());
                                tracing::debug!(%peer, reason = full.label(), "connection refused: at the limit");
                                drop(client);
                                continue;
                            }
                        };
                        let _ = client.set_nodelay(true);
                        let id = shared.next_session();
                        // The session holds its slot: a wrapping future would hold the
                        // session's future twice for its whole life.
                        tokio::spawn(serve(shared.clone(), frontend.clone(), client, peer, id, slot));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    shutdown.await;
    tasks.abort_all();
}
