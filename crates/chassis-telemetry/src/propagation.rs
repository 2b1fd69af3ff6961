//! W3C trace context across hops: extracted from incoming requests and events
//! ([`crate::sampling::root_span`]) and injected into outgoing calls and events
//! ([`current_traceparent`]).

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Parses a W3C `traceparent` (`00-<trace>-<parent span>-<flags>`), returning the
/// trace id when it is well formed and not all zeros.
pub fn trace_id_from_traceparent(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2)
        || version == "ff"
        || !hex(trace_id, 32)
        || !hex(span_id, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace_id.to_ascii_lowercase())
}

/// A `traceparent` (and `tracestate`) read from wherever a caller put them.
struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The remote span context a well-formed `traceparent` (and `tracestate`) names.
pub(crate) fn extract(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    trace_id_from_traceparent(traceparent)?;
    let cx = TraceContextPropagator::new().extract(&Carrier {
        traceparent,
        tracestate,
    });
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the remote context `cx`. Must be called before the span is
/// first entered; [`crate::sampling::root_span`] does, for a span it traces.
pub(crate) fn set_parent(span: &tracing::Span, cx: Context) {
    // Fails only when telemetry is not installed (or the span is disabled): then
    // there is nothing to continue.
    drop(span.set_parent(cx));
}

/// `span`'s trace id, when telemetry is installed and the span enabled (traced, or
/// marked as not sampled: its trace id is still the request's).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if let Some(mark) = crate::sampling::unsampled(span) {
        return Some(mark.trace_id());
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span as a W3C `traceparent`, for propagation (events, outgoing calls).
/// A span not sampled sends its trace id with the sampled flag off, so a callee that
/// follows its parent does not trace its part either.
pub fn current_traceparent() -> Option<String> {
    let current = tracing::Span::current();
    if let Some(mark) = crate::sampling::current().or_else(|| crate::sampling::unsampled(&current))
    {
        return Some(mark.traceparent());
    }
    let cx = current.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_from_traceparent(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            trace_id_from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(trace_id_from_traceparent("garbage").is_none());
        assert!(trace_id_from_traceparent("00-4bf92f35-00f067aa0ba902b7-01").is_none());
    }
}
