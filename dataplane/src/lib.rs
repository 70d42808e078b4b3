//! imgate's dataplane: everything on the path of a message.
//!
//! - [`inspect`], the inspection core, with no I/O: protocol identification, the parsers that
//!   turn bytes into events, and the policy engine that turns events into verdicts;
//! - [`proxy`], the front ends, the per-session pipeline, the protocol relays and TLS
//!   interception;
//! - [`archive`], the write-ahead log, sealed segments and their shipping, and the read side;
//! - [`identity`], who a handle belongs to;
//! - [`tunnel`], the connector's tunnel to the dataplane;
//! - [`telemetry`], metrics.
#![forbid(unsafe_code)]

/// The target of the tracing spans that are exported as OpenTelemetry traces when an OTLP
/// endpoint is configured (a session, its admission); disabled otherwise.
pub const TRACE_TARGET: &str = "imgate::trace";

pub mod alerts;
pub mod archive;
pub mod identity;
pub mod inspect;
pub mod proxy;
pub mod telemetry;
pub mod tunnel;
