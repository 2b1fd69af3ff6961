//! The recent traces every process keeps in memory, so an operator can follow a
//! request without a tracing backend: a bounded buffer fed by an OpenTelemetry span
//! processor, served at `GET /api/v1/admin/traces` and `/api/v1/admin/traces/{id}`
//! (chassis's `admin::traces`).
//!
//! It holds the last [`CAPACITY`] finished spans of the process (oldest dropped first),
//! so a trace is complete only while its spans are recent. In the split topology each
//! process holds its own spans of a trace and the gateway gathers them
//! ([`merge_summaries`], [`merge_spans`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanProcessor};
use serde::{Deserialize, Serialize};

/// Spans kept per process: a checkout is ~20 spans, so the last few hundred requests.
pub const CAPACITY: usize = 8192;

/// The attribute naming the service a span ran in. The resource's `service.name` is
/// per process; this one lets an in-process composition (the monolith, or the test
/// suite's in-process split) say which module a request or event span belongs to.
pub const SERVICE_ATTRIBUTE: &str = "service";

/// One finished span, as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a trace's root; a parent in another process (or the caller's) has
    /// its id here too.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub service: String,
    /// `server`, `client`, `internal`, `producer` or `consumer`.
    pub kind: String,
    /// Microseconds since the Unix epoch (a JSON number stays exact at this size).
    pub start_unix_us: u64,
    pub duration_us: u64,
    /// `ok`, `error` or `unset`.
    pub status: String,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub links: Vec<SpanLink>,
}

/// A span this one follows from without being its child.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
}

/// One trace of the list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's name (the earliest span's when the root is elsewhere).
    pub name: String,
    pub services: Vec<String>,
    /// RFC 3339.
    pub started_at: String,
    /// The same instant in microseconds since the Unix epoch.
    pub start_unix_us: u64,
    pub duration_ms: f64,
    pub duration_us: u64,
    pub spans: usize,
    pub error: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceList {
    pub items: Vec<TraceSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<SpanRecord>,
}

/// The process-wide buffer the span processor fills.
#[derive(Debug)]
pub struct TraceBuffer {
    spans: Mutex<VecDeque<SpanData>>,
    capacity: usize,
    /// `service.name` of this process, for spans that carry no [`SERVICE_ATTRIBUTE`].
    service: Mutex<String>,
}

impl TraceBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            service: Mutex::new("bazaar".to_owned()),
        }
    }

    /// The buffer of this process (one per process, as the tracer provider is).
    pub fn global() -> Arc<TraceBuffer> {
        static BUFFER: OnceLock<Arc<TraceBuffer>> = OnceLock::new();
        Arc::clone(BUFFER.get_or_init(|| Arc::new(TraceBuffer::new(CAPACITY))))
    }

    pub(crate) fn set_service(&self, service: &str) {
        service.clone_into(&mut self.service.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn push(&self, span: SpanData) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if spans.len() >= self.capacity {
            spans.pop_front();
        }
        spans.push_back(span);
    }

    /// Converts under the lock only what is asked for: the hot path (push) stays a
    /// move into the deque.
    fn records(&self, wanted: impl Fn(&SpanData) -> bool) -> Vec<SpanRecord> {
        let service = self
            .service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        spans
            .iter()
            .filter(|s| wanted(s))
            .map(|s| record(s, &service))
            .collect()
    }

    /// Every span of `trace_id` this process holds, by start time.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        let mut spans = self.records(|s| s.span_context.trace_id().to_string() == trace_id);
        inherit_services(&mut spans);
        spans.sort_by_key(|s| s.start_unix_us);
        spans
    }

    /// The most recent traces, newest first.
    pub fn summaries(&self, limit: usize) -> Vec<TraceSummary> {
        let mut spans = self.records(|_| true);
        inherit_services(&mut spans);
        summarize(spans, limit)
    }
}

/// Spans without their own [`SERVICE_ATTRIBUTE`] (an RPC client span, a store call)
/// ran in the service of the nearest ancestor in this process that has one.
fn inherit_services(spans: &mut [SpanRecord]) {
    let own: HashMap<String, Option<String>> = spans
        .iter()
        .map(|s| {
            let own = s
                .attributes
                .get(SERVICE_ATTRIBUTE)
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            (s.span_id.clone(), own)
        })
        .collect();
    let parents: HashMap<String, Option<String>> = spans
        .iter()
        .map(|s| (s.span_id.clone(), s.parent_span_id.clone()))
        .collect();
    for span in spans.iter_mut() {
        let mut at = Some(span.span_id.clone());
        // Bounded: a parent chain cannot be longer than the buffer.
        for _ in 0..=parents.len() {
            let Some(id) = at else { break };
            if let Some(Some(service)) = own.get(&id) {
                span.service.clone_from(service);
                break;
            }
            at = parents.get(&id).cloned().flatten();
        }
    }
}

fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn unix_us(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros()
        .try_into()
        .unwrap_or(u64::MAX)
}

fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::I64(i) => serde_json::Value::from(*i),
        Value::F64(f) => serde_json::Value::from(*f),
        other => serde_json::Value::from(other.as_str().into_owned()),
    }
}

fn record(span: &SpanData, service: &str) -> SpanRecord {
    let attributes = span
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str().to_owned(), json_value(&kv.value)))
        .collect();
    SpanRecord {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: (span.parent_span_id != SpanId::INVALID)
            .then(|| span.parent_span_id.to_string()),
        name: span.name.to_string(),
        service: service.to_owned(),
        kind: kind(&span.span_kind).to_owned(),
        start_unix_us: unix_us(span.start_time),
        duration_us: span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or(Duration::ZERO)
            .as_micros()
            .try_into()
            .unwrap_or(u64::MAX),
        status: match span.status {
            Status::Unset => "unset",
            Status::Ok => "ok",
            Status::Error { .. } => "error",
        }
        .to_owned(),
        attributes,
        links: span
            .links
            .iter()
            .map(|l| SpanLink {
                trace_id: l.span_context.trace_id().to_string(),
                span_id: l.span_context.span_id().to_string(),
            })
            .collect(),
    }
}

/// Groups spans (of one process, or gathered from several) into trace summaries,
/// newest first. A span seen twice (the same buffer asked twice) counts once.
pub fn summarize(spans: Vec<SpanRecord>, limit: usize) -> Vec<TraceSummary> {
    let mut traces: HashMap<String, Vec<SpanRecord>> = HashMap::new();
    for span in spans {
        traces.entry(span.trace_id.clone()).or_default().push(span);
    }
    let mut items: Vec<TraceSummary> = traces
        .into_iter()
        .map(|(trace_id, spans)| summary(trace_id, &dedup(spans)))
        .collect();
    items.sort_by_key(|s| std::cmp::Reverse(s.start_unix_us));
    items.truncate(limit);
    items
}

fn dedup(mut spans: Vec<SpanRecord>) -> Vec<SpanRecord> {
    spans.sort_by(|a, b| (a.start_unix_us, &a.span_id).cmp(&(b.start_unix_us, &b.span_id)));
    spans.dedup_by(|a, b| a.span_id == b.span_id);
    spans
}

fn summary(trace_id: String, spans: &[SpanRecord]) -> TraceSummary {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    // The root is the span whose parent is not in the trace (the caller's, or none);
    // spans are sorted by start, so the first such is the outermost.
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)));
    let start = spans.iter().map(|s| s.start_unix_us).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.start_unix_us.saturating_add(s.duration_us))
        .max()
        .unwrap_or(start);
    let mut services: Vec<String> = Vec::new();
    for span in spans {
        if !services.contains(&span.service) {
            services.push(span.service.clone());
        }
    }
    TraceSummary {
        name: root.map(|s| s.name.clone()).unwrap_or_default(),
        services,
        started_at: rfc3339_us(start),
        start_unix_us: start,
        duration_ms: millis(end.saturating_sub(start)),
        duration_us: end.saturating_sub(start),
        spans: spans.len(),
        error: spans.iter().any(|s| s.status == "error"),
        trace_id,
    }
}

/// RFC 3339 with microseconds, so string order is time order.
fn rfc3339_us(unix_us: u64) -> String {
    let nanos = i128::from(unix_us) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Summaries gathered from several processes, merged by trace: each process knows only
/// its own spans of a trace, so the merge needs the spans, not the summaries. The
/// gateway asks every process for the spans of the traces they list.
pub fn merge_spans(parts: Vec<Vec<SpanRecord>>) -> Vec<SpanRecord> {
    dedup(parts.into_iter().flatten().collect())
}

/// Merges per-process summaries of the same traces (when fetching every trace's spans
/// would cost too much): services united, span counts added, the earliest start and
/// latest end kept, and the name taken from the earliest-starting part.
pub fn merge_summaries(parts: Vec<Vec<TraceSummary>>, limit: usize) -> Vec<TraceSummary> {
    let end = |s: &TraceSummary| s.start_unix_us.saturating_add(s.duration_us);
    let mut merged: HashMap<String, TraceSummary> = HashMap::new();
    // The same part twice is one process asked twice (an in-process composition
    // where every "process" shares this buffer), not two processes' spans.
    let mut seen = std::collections::HashSet::new();
    for summary in parts.into_iter().flatten() {
        let key = (
            summary.trace_id.clone(),
            summary.start_unix_us,
            summary.duration_us,
            summary.spans,
            summary.services.clone(),
        );
        if !seen.insert(key) {
            continue;
        }
        let Some(into) = merged.get_mut(&summary.trace_id) else {
            merged.insert(summary.trace_id.clone(), summary);
            continue;
        };
        let last = end(into).max(end(&summary));
        for service in &summary.services {
            if !into.services.contains(service) {
                into.services.push(service.clone());
            }
        }
        into.spans += summary.spans;
        into.error |= summary.error;
        if summary.start_unix_us < into.start_unix_us {
            into.start_unix_us = summary.start_unix_us;
            into.started_at = summary.started_at;
            into.name = summary.name;
        }
        into.duration_us = last.saturating_sub(into.start_unix_us);
        into.duration_ms = millis(into.duration_us);
    }
    let mut items: Vec<TraceSummary> = merged.into_values().collect();
    items.sort_by_key(|s| std::cmp::Reverse(s.start_unix_us));
    items.truncate(limit);
    items
}

fn millis(us: u64) -> f64 {
    Duration::from_micros(us).as_secs_f64() * 1000.0
}

/// Where this process's finished spans go: its [`TraceBuffer`] and, when export is on,
/// the OTLP batch processor. The provider feeds it every traced span that ends
/// ([`SinkProcessor`]); the sampling policy feeds it the server span of an unsampled
/// request it keeps ([`crate::sampling::keep`]).
#[derive(Debug)]
pub(crate) struct Sink {
    buffer: Arc<TraceBuffer>,
    export: Option<BatchSpanProcessor>,
}

static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

impl Sink {
    pub(crate) fn new(buffer: Arc<TraceBuffer>, export: Option<BatchSpanProcessor>) -> Self {
        Self { buffer, export }
    }

    /// Makes `sink` the process's (the first one installed stays).
    pub(crate) fn install(sink: Arc<Sink>) -> Arc<Sink> {
        Arc::clone(SINK.get_or_init(|| sink))
    }

    pub(crate) fn global() -> Option<&'static Arc<Sink>> {
        SINK.get()
    }

    pub(crate) fn push(&self, span: SpanData) {
        if let Some(export) = &self.export {
            export.on_end(span.clone());
        }
        self.buffer.push(span);
    }
}

/// The provider's span processor: every span that ends goes to the [`Sink`].
#[derive(Debug)]
pub(crate) struct SinkProcessor(pub(crate) Arc<Sink>);

impl SpanProcessor for SinkProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0
            .export
            .as_ref()
            .map_or(Ok(()), SpanProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0
            .export
            .as_ref()
            .map_or(Ok(()), |export| export.shutdown_with_timeout(timeout))
    }
}

/// Whether `id` is a W3C trace id (32 lowercase hex digits, not all zero).
pub fn is_trace_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: u64, dur: u64, service: &str) -> SpanRecord {
        SpanRecord {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: format!("op {id}"),
            service: service.into(),
            kind: "internal".into(),
            start_unix_us: start,
            duration_us: dur,
            status: "unset".into(),
            attributes: serde_json::Map::new(),
            links: vec![],
        }
    }

    #[test]
    fn summaries_name_the_root_and_span_the_whole_trace() {
        let spans = vec![
            span("b", Some("a"), 1_000_100, 50, "catalog"),
            span("a", Some("caller"), 1_000_000, 300, "gateway"),
            span("c", Some("a"), 1_000_200, 400, "orders"),
            // the same span gathered twice counts once
            span("c", Some("a"), 1_000_200, 400, "orders"),
        ];
        let items = summarize(spans, 10);
        assert_eq!(items.len(), 1);
        let trace = &items[0];
        assert_eq!(trace.name, "op a");
        assert_eq!(trace.spans, 3);
        assert_eq!(trace.services, ["gateway", "catalog", "orders"]);
        assert!(
            (trace.duration_ms - 0.6).abs() < 1e-9,
            "{}",
            trace.duration_ms
        );
        assert_eq!(trace.started_at, "1970-01-01T00:00:01.000000Z");
    }

    #[test]
    fn services_are_inherited_from_the_nearest_ancestor_that_names_one() {
        let mut root = span("a", None, 0, 10, "proc");
        root.attributes
            .insert(SERVICE_ATTRIBUTE.into(), "orders".into());
        let mut spans = vec![
            root,
            span("b", Some("a"), 1, 1, "proc"),
            span("c", Some("b"), 2, 1, "proc"),
        ];
        inherit_services(&mut spans);
        assert!(spans.iter().all(|s| s.service == "orders"), "{spans:?}");
    }

    #[test]
    fn merged_summaries_unite_services_and_extend_the_duration() {
        let a = summarize(vec![span("a", None, 1_000_000, 1000, "gateway")], 10);
        let b = summarize(vec![span("b", Some("a"), 1_000_500, 2000, "orders")], 10);
        let merged = merge_summaries(vec![a.clone(), b, a], 10);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].services, ["gateway", "orders"]);
        assert_eq!(merged[0].spans, 2);
        assert_eq!(merged[0].name, "op a");
        assert!(
            (merged[0].duration_ms - 2.5).abs() < 1e-6,
            "{}",
            merged[0].duration_ms
        );
    }

    #[test]
    fn trace_ids_are_validated() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id("00000000000000000000000000000000"));
        assert!(!is_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_trace_id("4bf92f35"));
    }
}
