//! The log line format: JSON lines carrying `service`, the `trace_id`/`span_id` of
//! the span they were written in, and the request's `request_id`.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::sampling::Unsampled;
/// The request id a span (or its nearest ancestor) was given, kept in its extensions
/// for the log lines written inside it.
#[derive(Debug, Clone)]
struct RequestId(String);

pub(crate) struct RequestIdLayer;

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
pub(crate) struct JsonLines {
    pub(crate) service: String,
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
        line.insert(
            "timestamp".into(),
            Value::from(chassis_core::time::now_rfc3339()),
        );
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
        // its lines carry its nearest traced ancestor's), or that the head sampler
        // passed over (its mark has the request's trace id). No extensions are held
        // while asking the OTel layer, as it requires; asking starts a span not yet
        // started.
        let ids = ctx.event_scope().and_then(|scope| {
            let spans: Vec<(Id, Option<Unsampled>)> = scope
                .map(|span| (span.id(), span.extensions().get::<Unsampled>().copied()))
                .collect();
            tracing::dispatcher::get_default(|dispatch| {
                spans.iter().find_map(|(id, mark)| {
                    if let Some(mark) = mark {
                        return Some((mark.trace.to_string(), mark.span.to_string()));
                    }
                    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
                    let otel = cx.span();
                    let sc = otel.span_context();
                    sc.is_valid()
                        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
                })
            })
        });
        // A request not sampled whose span carries no mark here (the task-local is the
        // fallback, for robustness: a quiet log level alone does not disable spans).
        let ids = ids.or_else(|| {
            crate::sampling::current().map(|mark| (mark.trace.to_string(), mark.span.to_string()))
        });
        if let Some((trace_id, span_id)) = ids {
            line.insert("trace_id".into(), Value::from(trace_id));
            line.insert("span_id".into(), Value::from(span_id));
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}
