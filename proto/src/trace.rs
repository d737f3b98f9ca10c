//! Trace context across the relay (OpenTelemetry, W3C `traceparent`): the gateway starts a
//! span for each client message and sends its context with the frame; the node continues
//! it, so one client message is one trace across both processes.
//!
//! Off unless the process exports traces ([`set_enabled`], by `conclave` when `OTEL_*`
//! variables ask for it): then no span is created and no context is sent.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the spans that make up traces (only the OpenTelemetry layer
/// listens to it).
pub const TARGET: &str = "conclave::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether this process exports traces.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of `span`, to send along.
pub fn traceparent(span: &tracing::Span) -> String {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the span `traceparent` names (sent by another process).
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
}

/// The `traceparent` of the current span, when traces are exported (else empty).
pub fn current() -> String {
    if !enabled() {
        return String::new();
    }
    traceparent(&tracing::Span::current())
}

/// `work`, run inside `span` when there is one (else inside a disabled span, which costs a
/// check per poll). Not an `async fn`: its state would hold `work` twice, as the argument
/// and as the future being awaited.
pub fn within<F: std::future::Future>(
    span: Option<tracing::Span>,
    work: F,
) -> tracing::instrument::Instrumented<F> {
    use tracing::Instrument;
    work.instrument(span.unwrap_or_else(tracing::Span::none))
}
