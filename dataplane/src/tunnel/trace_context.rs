//! The trace context a tunnel stream carries, between `tracing` spans and the stream header:
//! the connector puts the OpenTelemetry context of the span that carries a connection in the
//! header, and the dataplane's session span becomes its child, so that one trace shows a
//! proxied connection from the connector's accept to the dataplane's relay.
//!
//! Invariants: without an OpenTelemetry layer (no trace export configured), nothing is read
//! and nothing is adopted; a context from the header is marked remote; a span adopts its
//! parent before it is first entered (the OpenTelemetry layer fixes a span's parent then).

use opentelemetry::Context;
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

/// Makes the span in another process that `parent` names the parent of `span`, which must
/// not have been entered yet.
pub fn adopt(span: &Span, parent: TraceParent) {
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    // Refused only without a layer, for a disabled span, or for one already entered, which
    // `proxy::session::serve` never passes (the OTLP test checks the parent).
    if let Err(error) = span.set_parent(Context::new().with_remote_span_context(remote)) {
        tracing::debug!(%error, "the connector's trace context was not adopted");
    }
}
