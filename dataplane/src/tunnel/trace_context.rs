//! The trace context a tunnel stream carries, between `tracing` spans and the stream header:
//! the connector puts the OpenTelemetry context of the span that carries a connection in the
//! header, and the dataplane's session span links to it, so a trace viewer can go from either
//! end of a proxied connection to the other.
//!
//! Invariants: without an OpenTelemetry layer (no trace export configured), nothing is read
//! and nothing is linked; a context from the header is marked remote.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::header::TraceParent;

/// The OpenTelemetry context of `span`, when it is exported.
pub fn of(span: &Span) -> Option<TraceParent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceParent {
        trace_id: span_context.trace_id().to_bytes(),
        span_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// Links `span` to the span in another process that `parent` names.
pub fn link(span: &Span, parent: TraceParent) {
    span.add_link(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    ));
}
