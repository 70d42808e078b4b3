//! The tunnel between a customer site's connector and the tenant's dataplane: QUIC with
//! mutual TLS under a per-tenant tunnel CA, one bidirectional stream per proxied TCP
//! connection: [`header`] is the per-stream wire format, [`trust`] the CA, certificates and TLS
//! configurations, [`endpoint`] the QUIC configurations, [`listener`] the dataplane's side and
//! [`connector`] the connector's.

pub mod connector;
pub mod endpoint;
pub mod header;
pub mod listener;
pub mod trust;
