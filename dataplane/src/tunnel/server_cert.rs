//! The dataplane's own tunnel certificate: issued by the tenant's tunnel CA for the names
//! connectors dial, and issued again while the dataplane runs, so that a dataplane presents a
//! valid certificate however long it runs and never needs a restart for it.
//!
//! Invariants: a new certificate is issued once two thirds of the current one's lifetime have
//! passed, and every handshake from then on presents it; open connections keep the keys they
//! agreed and are not disturbed; when issuing fails, the current certificate stays in use and
//! issuing is tried again after [`RETRY`] (or sooner, when less than that is left).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::endpoint;
use super::trust::{TrustError, TunnelCa, dataplane_config};

/// How long after a failed issue it is tried again.
pub const RETRY: Duration = Duration::from_secs(60);

/// What the dataplane's certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    names: Vec<String>,
    lifetime: Duration,
}

impl ServerCertificate {
    /// A certificate for `names` (what connectors dial), valid for `lifetime`.
    pub fn new(names: &[String], lifetime: Duration) -> Self {
        Self {
            names: names.to_vec(),
            lifetime,
        }
    }

    /// A QUIC server configuration presenting a certificate newly issued by `ca`, and when
    /// it was issued.
    pub fn issue(&self, ca: &TunnelCa) -> Result<(quinn::ServerConfig, Instant), TrustError> {
        let issued = Instant::now();
        let identity = ca.issue_dataplane(&self.names, self.lifetime)?;
        let config = endpoint::server(dataplane_config(ca.certificate(), identity)?)?;
        Ok((config, issued))
    }
}

/// Has `endpoint`, whose certificate was `issued` as `certificate` says, present a new one
/// from `ca` whenever one is due, for as long as it runs.
pub async fn keep_renewed(
    endpoint: quinn::Endpoint,
    ca: Arc<TunnelCa>,
    certificate: ServerCertificate,
    issued: Instant,
) {
    let mut expires = issued + certificate.lifetime;
    let mut due = issued + certificate.lifetime * 2 / 3;
    loop {
        tokio::time::sleep_until(due).await;
        match certificate.issue(&ca) {
            Ok((config, issued)) => {
                endpoint.set_server_config(Some(config));
                tracing::info!(target: "imgate::tunnel", "the dataplane presents a new tunnel certificate, valid for {}", humantime::format_duration(certificate.lifetime));
                expires = issued + certificate.lifetime;
                due = issued + certificate.lifetime * 2 / 3;
            }
            Err(error) => {
                let left = expires.saturating_duration_since(Instant::now());
                tracing::error!(target: "imgate::tunnel", "cannot issue the dataplane a new tunnel certificate ({error}); the current one expires in {}; trying again", humantime::format_duration(Duration::from_secs(left.as_secs())));
                due = Instant::now() + RETRY.min(left / 2).max(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests;
