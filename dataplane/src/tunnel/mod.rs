//! The tunnel between a customer site's connector and the tenant's dataplane: QUIC with
//! mutual TLS under a per-tenant tunnel CA, one bidirectional stream per proxied TCP
//! connection. This module holds the parts with no I/O; [`header`] is the per-stream wire
//! format.

pub mod header;
