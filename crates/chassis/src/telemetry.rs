//! Logs as JSON lines carrying `service`, `trace_id`, `span_id` and `request_id`.
//!
//! Trace and span ids are W3C-shaped (32 and 16 hex digits) so a `traceparent` header
//! can seed them: a span that records a `trace_id` field starts that trace, every other
//! span inherits its parent's and gets a fresh `span_id`. The OpenTelemetry pipeline
//! (exporting spans) builds on these ids later; the log format does not change.

//! Tracing and logs.
//!
//! Spans come from `tracing` and become OpenTelemetry spans
//! (`tracing-opentelemetry`): W3C trace context is extracted from incoming requests
//! and events ([`set_parent`]) and injected into outgoing calls and events
//! ([`current_traceparent`]). Every finished span goes to this process's
//! [`TraceBuffer`](crate::traces::TraceBuffer) (the admin traces API) and, when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, to an
//! OTLP/HTTP collector in batches from the exporter's own thread. `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` apply as usual, and
//! `OTEL_SDK_DISABLED=true` turns tracing off.
//!
//! Logs are JSON lines carrying `service` and the `trace_id`/`span_id` of the span
//! they were written in, plus the request's `request_id`.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::traces::{BufferProcessor, TraceBuffer};

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

/// Makes `span` a child of the remote span `traceparent` names (an HTTP caller, or
/// the producer of an event). Must be called before the span is first entered; a
/// malformed header leaves the span a new root.
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if trace_id_from_traceparent(traceparent).is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Carrier {
        traceparent,
        tracestate,
    });
    // Fails only when telemetry is not installed (or the span is disabled): then
    // there is nothing to continue.
    drop(span.set_parent(cx));
}

/// `span`'s trace id, when telemetry is installed and the span enabled.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span as a W3C `traceparent`, for propagation (events, outgoing calls).
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
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

/// The request id a span (or its nearest ancestor) was given, kept in its extensions
/// for the log lines written inside it.
#[derive(Debug, Clone)]
struct RequestId(String);

struct RequestIdLayer;

#[derive(Default)]
struct RequestIdField(Option<String>);

impl Visit for RequestIdField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "request_id" && !value.is_empty() {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "request_id" {
            let text = format!("{value:?}");
            self.record_str(field, text.trim_matches('"'));
        }
    }
}

impl<S> Layer<S> for RequestIdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut field = RequestIdField::default();
        attrs.record(&mut field);
        let request_id = field.0.or_else(|| {
            span.parent()
                .and_then(|p| p.extensions().get::<RequestId>().map(|r| r.0.clone()))
        });
        if let Some(request_id) = request_id {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut field = RequestIdField::default();
        values.record(&mut field);
        if let Some(request_id) = field.0 {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }
}

/// One JSON object per event.
struct JsonLines {
    service: String,
}

struct FieldsVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::from(crate::time::now_rfc3339()));
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("service".into(), Value::from(self.service.as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        let mut fields = Map::new();
        event.record(&mut FieldsVisitor(&mut fields));
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or(Value::from("")),
        );
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), Value::from(span.name()));
            if let Some(request_id) = span.extensions().get::<RequestId>() {
                line.insert("request_id".into(), Value::from(request_id.0.as_str()));
            }
        }
        // The ids of the innermost span that is traced (a debug-level span is not:
        // its lines carry its nearest traced ancestor's). No extensions are held while
        // asking, as the OTel layer requires; asking starts a span not yet started.
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Id> = scope.map(|span| span.id()).collect();
            let ids = tracing::dispatcher::get_default(|dispatch| {
                spans.iter().find_map(|id| {
                    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
                    let otel = cx.span();
                    let sc = otel.span_context();
                    sc.is_valid()
                        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
                })
            });
            if let Some((trace_id, span_id)) = ids {
                line.insert("trace_id".into(), Value::from(trace_id));
                line.insert("span_id".into(), Value::from(span_id));
            }
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the standard variables ask for OTLP export.
fn otlp_requested() -> bool {
    let exporter = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !exporter.split(',').any(|e| e.trim() == "none")
}

fn tracer_provider(service: &str) -> SdkTracerProvider {
    let buffer = TraceBuffer::global();
    // `OTEL_SERVICE_NAME` (read by the resource builder) wins over our module name.
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    buffer.set_service(&service);
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(BufferProcessor(buffer));
    if otlp_requested() {
        if std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p.trim() == "grpc") {
            eprintln!("OTLP: only http/protobuf is built in; exporting with it");
        }
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            // Telemetry must not stop the service; the buffer still works.
            Err(e) => eprintln!("OTLP span export is off: {e}"),
        }
    }
    builder.build()
}

/// Installs the global subscriber: logs filtered by `filter` (or `RUST_LOG`), spans of
/// level INFO and above traced. Calling it again (tests) is harmless.
pub fn init(service: &str, format: LogFormat, filter: &str) {
    if PROVIDER.get().is_some() {
        return;
    }
    let log_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // `OTEL_SDK_DISABLED=true`: no tracing at all (no spans, no ids in logs, no
    // context passed on), the baseline its overhead is measured against.
    let provider = (!std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")))
    .then(|| tracer_provider(service));
    // Traces do not follow the log level: a quiet log still records every request.
    // Library spans (hyper, h2, sqlx) stay out; they are debug or trace level.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("bazaar"))
            .with_location(false)
            .with_threads(false)
            // busy/idle time per span costs two clock reads per poll of every future
            // in a span; the span's own start and end are what trace views use.
            .with_tracked_inactivity(false)
            // Nothing here reads `opentelemetry::Context::current()` (propagation asks
            // the tracing span), so the OTel context need not be attached to the
            // thread on every poll of every future in a span.
            .with_context_activation(false)
            .with_filter(Targets::new().with_default(Level::INFO))
    });
    let registry = tracing_subscriber::registry()
        .with(otel)
        .with(RequestIdLayer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines {
                        service: service.to_owned(),
                    })
                    .with_writer(std::io::stdout)
                    .with_filter(log_filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_target(false)
                    .with_filter(log_filter),
            )
            .try_init(),
    };
    // An already-installed subscriber (a second app in one test binary) is fine.
    if let (Ok(()), Some(provider)) = (result, provider) {
        drop(PROVIDER.set(provider));
    }
}

/// Flushes the spans still waiting for export; blocking (the exporter's thread
/// answers), so call it off the async runtime, once serving has stopped.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("OTLP span export did not flush: {e}");
        }
    }
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
