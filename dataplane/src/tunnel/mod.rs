//! The tunnel between a customer site's connector and the tenant's dataplane: QUIC with
//! mutual TLS under a per-tenant tunnel CA, one bidirectional stream per proxied TCP
//! connection: [`header`] is the per-stream wire format, [`trust`] the CA, certificates and TLS
//! configurations, [`tokens`] the one-time enrollment tokens and the revocation list,
//! [`enroll`] enrollment and renewal, [`server_cert`] the dataplane's own certificate and its
//! renewal, [`pinned`] how a new connector trusts its dataplane, [`endpoint`] the QUIC
//! configurations, [`listener`] the dataplane's side and [`connector`] the connector's, with
//! its [`connector_metrics`] and the [`target`]s it dials; `stream_pieces` lets the relay move a
//! tunnel stream's bytes without copying them, and [`trace_context`] joins the spans at its two
//! ends in one trace.

pub mod connector;
pub mod connector_metrics;
pub mod endpoint;
pub mod enroll;
pub mod generations;
pub mod header;
pub mod listener;
pub mod pinned;
pub mod server_cert;
mod stream_pieces;
pub mod target;
pub mod tokens;
pub mod trace_context;
pub mod trust;
