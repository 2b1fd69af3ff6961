//! Logs as JSON lines carrying `service`, `trace_id`, `span_id` and `request_id`.
//!
//! Trace and span ids are W3C-shaped (32 and 16 hex digits) so a `traceparent` header
//! can seed them: a span that records a `trace_id` field starts that trace, every other
//! span inherits its parent's and gets a fresh `span_id`. The OpenTelemetry pipeline
//! (exporting spans) builds on these ids later; the log format does not change.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The ids a span carries, kept in its extensions.
#[derive(Debug, Clone)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
    pub request_id: Option<String>,
}

pub fn new_trace_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub fn new_span_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

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

/// Assigns [`SpanIds`] to every new span.
struct IdLayer;

#[derive(Default)]
struct IdFields {
    trace_id: Option<String>,
    request_id: Option<String>,
}

impl Visit for IdFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => self.trace_id = Some(value.to_owned()),
            "request_id" => self.request_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "trace_id" | "request_id" => {
                let text = format!("{value:?}");
                self.record_str(field, text.trim_matches('"'));
            }
            _ => {}
        }
    }
}

impl<S> Layer<S> for IdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = IdFields::default();
        attrs.record(&mut fields);
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanIds>().cloned());
        let trace_id = fields
            .trace_id
            .filter(|t| !t.is_empty())
            .or_else(|| parent.as_ref().map(|p| p.trace_id.clone()))
            .unwrap_or_else(new_trace_id);
        let request_id = fields
            .request_id
            .or_else(|| parent.and_then(|p| p.request_id));
        span.extensions_mut().insert(SpanIds {
            trace_id,
            span_id: new_span_id(),
            request_id,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = IdFields::default();
        values.record(&mut fields);
        if let Some(ids) = span.extensions_mut().get_mut::<SpanIds>() {
            if let Some(request_id) = fields.request_id {
                ids.request_id = Some(request_id);
            }
        }
    }
}

/// The current span's ids, if any (for echoing in responses or forwarding).
pub fn current_ids() -> Option<SpanIds> {
    let mut ids = None;
    tracing::Span::current().with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() {
            if let Some(span) = registry.span(id) {
                ids = span.extensions().get::<SpanIds>().cloned();
            }
        }
    });
    ids
}

/// The current span as a W3C `traceparent`, for propagation (events, outgoing calls).
pub fn current_traceparent() -> Option<String> {
    current_ids().map(|ids| format!("00-{}-{}-01", ids.trace_id, ids.span_id))
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
            if let Some(ids) = span.extensions().get::<SpanIds>() {
                line.insert("trace_id".into(), Value::from(ids.trace_id.as_str()));
                line.insert("span_id".into(), Value::from(ids.span_id.as_str()));
                if let Some(request_id) = &ids.request_id {
                    line.insert("request_id".into(), Value::from(request_id.as_str()));
                }
            }
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Installs the global subscriber. Calling it again (tests) is harmless.
pub fn init(service: &str, format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(IdLayer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines {
                        service: service.to_owned(),
                    })
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_target(false),
            )
            .try_init(),
    };
    // An already-installed subscriber (a second app in one test binary) is fine.
    drop(result);
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

    #[test]
    fn ids_are_w3c_shaped() {
        assert_eq!(new_trace_id().len(), 32);
        assert_eq!(new_span_id().len(), 16);
    }
}
