//! Head sampling decided when a trace's first span in this process is created, so a
//! request nobody samples never becomes an OpenTelemetry span (ADR 0020).
//!
//! Building the OpenTelemetry span is what costs (`tracing-opentelemetry`'s attribute
//! visitor, the formatted name, the builder), and it happens when the `tracing` span is
//! created, before any SDK sampler runs. So the decision is taken here, in the
//! OpenTelemetry layer's per-layer filter ([`HeadFilter`]), before the layer sees the
//! span:
//!
//! - A root span (no parent in this process, or made with [`root_span`], which takes
//!   the caller's `traceparent`) asks the SDK's own sampler, the one
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` configure (`parentbased_*`
//!   follow the caller's W3C sampled flag).
//! - A child follows its parent: a span inside a request or event that was not sampled
//!   ([`scope`]), or under a span the filter turned away, is turned away too.
//! - A span not sampled is never seen by the OpenTelemetry layer. It carries an
//!   [`Unsampled`] mark instead ([`Marks`]): the trace id (the caller's, or a new one)
//!   and a span id, which logs print and propagation sends on with the sampled flag
//!   off, so a callee that follows its parent skips too.
//!
//! A request the head passed over that fails (5xx) or is slow is still kept: the
//! server layer hands what it knows at the end to [`keep`], which exports one root span
//! (no children: they were never built) to the trace buffer and the OTLP exporter.

use std::borrow::Cow;
use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanLinks,
};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context as LayerContext, Filter};
use tracing_subscriber::registry::LookupSpan;

use crate::traces::Sink;

/// Requests at least this slow are kept whatever the head sampler said, unless
/// `BAZAAR_TRACES_KEEP_SLOWER_THAN_MS` says otherwise.
pub const DEFAULT_KEEP_SLOWER_THAN: Duration = Duration::from_secs(1);

/// The mark of a span this process does not trace: the ids its logs print and its
/// calls propagate (sampled flag off). Every span of an unsampled request shares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsampled {
    pub(crate) trace: TraceId,
    pub(crate) span: SpanId,
    /// The caller's span, when the trace came with a `traceparent`.
    pub(crate) parent: SpanId,
}

impl Unsampled {
    /// The W3C `traceparent` a call made under this span sends: sampled flag off.
    pub(crate) fn traceparent(&self) -> String {
        format!("00-{}-{}-00", self.trace, self.span)
    }

    pub fn trace_id(&self) -> String {
        self.trace.to_string()
    }
}

/// The head decision for roots, taken with the SDK's sampler.
#[derive(Debug)]
pub(crate) struct Policy {
    sampler: Box<dyn ShouldSample>,
    /// A root without a remote parent gets the same answer whatever its trace id
    /// (always_on, always_off, parentbased_always_*, a ratio of 0 or 1): no id need be
    /// drawn to decide.
    root: Option<bool>,
    ids: RandomIdGenerator,
}

impl Policy {
    /// The sampler `OTEL_TRACES_SAMPLER` / `_ARG` configure, as the SDK reads them
    /// (unknown values fall back as the SDK and the specification say).
    pub(crate) fn from_env() -> Self {
        Self::new(opentelemetry_sdk::trace::Config::default().sampler)
    }

    pub(crate) fn new(sampler: Box<dyn ShouldSample>) -> Self {
        let ask = |id: u128| {
            matches!(
                sampler
                    .should_sample(None, TraceId::from(id), "", &SpanKind::Internal, &[], &[])
                    .decision,
                SamplingDecision::RecordAndSample
            )
        };
        // A trace-id ratio is monotone in the id: the lowest and the highest id agree
        // only when every id gets the same answer.
        let (low, high) = (ask(1), ask(u128::MAX));
        Self {
            root: (low == high).then_some(low),
            sampler,
            ids: RandomIdGenerator::default(),
        }
    }

    /// `None`: sampled (trace it); `Some`: not sampled, with its ids.
    fn decide(&self, remote: Option<&Context>, name: &str) -> Option<Unsampled> {
        let parent = remote
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let trace_id = match (&parent, self.root) {
            (Some(parent), _) => parent.trace_id(),
            (None, Some(true)) => return None,
            (None, _) => self.ids.new_trace_id(),
        };
        let sampled = match (&parent, self.root) {
            (None, Some(root)) => root,
            _ => matches!(
                self.sampler
                    .should_sample(remote, trace_id, name, &SpanKind::Internal, &[], &[])
                    .decision,
                SamplingDecision::RecordAndSample
            ),
        };
        if sampled && parent.is_none() {
            // The ratio was drawn on this id: the trace must keep it ([`HeadIds`]).
            DRAWN.with(|d| d.set(Some(trace_id)));
        }
        (!sampled).then(|| Unsampled {
            trace: trace_id,
            span: self.ids.new_span_id(),
            parent: parent.map_or(SpanId::INVALID, |p| p.span_id()),
        })
    }
}

tokio::task_local! {
    /// The mark of the request or event the current task is handling, when it was not
    /// sampled ([`scope`]), so that its children, logs and calls know the trace without
    /// relying on its spans: for robustness (a span is only disabled outright when
    /// every layer's filter turns it away, which a quiet log level alone does not do
    /// in tracing-subscriber 0.3, but a future filter set-up might).
    static UNSAMPLED: Unsampled;
}

/// Runs `work` (a request's or an event's handling) as part of the unsampled trace
/// `mark`: spans it creates are not traced, its logs and calls carry `mark`'s ids.
pub fn scope<F: Future>(mark: Unsampled, work: F) -> impl Future<Output = F::Output> {
    UNSAMPLED.scope(mark, work)
}

/// The mark of the unsampled request or event this task is handling, if any.
pub(crate) fn current() -> Option<Unsampled> {
    UNSAMPLED.try_with(|mark| *mark).ok()
}

thread_local! {
    /// Set by [`root_span`] around the creation of its span: the remote parent in,
    /// the decision out.
    static PENDING: Cell<Option<Pending>> = const { Cell::new(None) };
    /// What [`HeadFilter`] decided for the span being created, for [`Marks`]: the
    /// span's callsite (its metadata's address) and the decision.
    static DECIDED: Cell<Option<(usize, Decision)>> = const { Cell::new(None) };
    /// The trace id [`Policy::decide`] drew for a root it sampled without a caller.
    static DRAWN: Cell<Option<TraceId>> = const { Cell::new(None) };
    /// The trace id [`HeadIds`] hands out next: set by [`root_span`] only around the
    /// start of the OpenTelemetry span of the root it made.
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The SDK's id generator: random ids, except that a root [`root_span`] sampled on a
/// trace id it drew keeps that id. Otherwise a later root of the same trace (a callee,
/// or this process's event consumer) asking a plain `traceidratio` sampler about the
/// SDK's new id would decide independently, and a sampled trace would lose parts.
#[derive(Debug, Default)]
pub(crate) struct HeadIds(RandomIdGenerator);

impl IdGenerator for HeadIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

enum Pending {
    /// A root span is about to be created, with this remote parent if any.
    Root(Option<Context>),
    /// What [`HeadFilter`] decided for it.
    Decided(Option<Decision>),
}

#[derive(Debug, Clone, Copy)]
enum Decision {
    /// Not sampled: this mark.
    Mark(Unsampled),
    /// Not sampled, as its parent (which has the mark).
    Inherit,
}

fn callsite(metadata: &Metadata<'_>) -> usize {
    std::ptr::from_ref(metadata).addr()
}

/// Creates a span with `make` as the first span of a trace in this process: a child
/// of the remote span `traceparent` names when it is well formed (a caller, or the
/// producer of an event), otherwise a child of the current span or a new root. Returns
/// the span and, when it is not sampled, its [`Unsampled`] mark (`None` when it is
/// traced, or when telemetry is off); run the work under it with [`scope`].
pub fn root_span(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    make: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, Option<Unsampled>) {
    let remote = traceparent.and_then(|tp| crate::propagation::extract(tp, tracestate));
    PENDING.with(|p| p.set(Some(Pending::Root(remote.clone()))));
    DRAWN.with(|d| d.set(None));
    let span = make();
    let decided = match PENDING.with(Cell::take) {
        Some(Pending::Decided(Some(Decision::Mark(mark)))) => Some(mark),
        Some(Pending::Decided(Some(Decision::Inherit))) => unsampled(&span),
        // Traced; or telemetry is off, or the span is disabled: nothing was decided.
        _ => None,
    };
    if decided.is_none() {
        if let Some(cx) = remote {
            crate::propagation::set_parent(&span, cx);
        }
        // Sampled on an id drawn here: start the OpenTelemetry span now (it would start
        // at its first use anyway, maybe on another thread) so that it gets that id.
        if let Some(trace_id) = DRAWN.with(Cell::take) {
            NEXT_TRACE_ID.with(|n| n.set(Some(trace_id)));
            let _started = span.context();
            NEXT_TRACE_ID.with(|n| n.set(None));
        }
    }
    (span, decided)
}

/// The OpenTelemetry layer's filter: spans of `level` and above (`targets`), and of
/// those only the ones the head sampler chose and their descendants.
pub(crate) struct HeadFilter {
    targets: Targets,
    policy: Policy,
}

impl HeadFilter {
    pub(crate) fn new(targets: Targets, policy: Policy) -> Self {
        Self { targets, policy }
    }

    /// For a span `targets` lets through: the head decision (`None`: trace it).
    fn decide<S>(&self, metadata: &Metadata<'_>, cx: &LayerContext<'_, S>) -> Option<Decision>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        match PENDING.with(Cell::take) {
            Some(Pending::Root(Some(remote))) => {
                let mark = self.policy.decide(Some(&remote), metadata.name());
                PENDING.with(|p| p.set(Some(Pending::Decided(mark.map(Decision::Mark)))));
                mark.map(Decision::Mark)
            }
            Some(Pending::Root(None)) => {
                let decision = self.follow(metadata, cx);
                PENDING.with(|p| p.set(Some(Pending::Decided(decision))));
                decision
            }
            _ => self.follow(metadata, cx),
        }
    }

    /// A span without a remote parent: as the unsampled request it is part of, or as
    /// its parent, or a root's decision.
    fn follow<S>(&self, metadata: &Metadata<'_>, cx: &LayerContext<'_, S>) -> Option<Decision>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(mark) = current() {
            return Some(Decision::Mark(mark));
        }
        let current = cx.current_span();
        let Some(id) = current.id() else {
            return self
                .policy
                .decide(None, metadata.name())
                .map(Decision::Mark);
        };
        // The parent was turned away if it is a span `targets` lets through that this
        // filter disabled (the filtered context does not see it). Under a span
        // `targets` turns away (debug), the OpenTelemetry layer finds the nearest
        // traced ancestor, as before.
        let parent = current.metadata()?;
        let unsampled = Filter::<S>::enabled(&self.targets, parent, cx) && cx.span(id).is_none();
        unsampled.then_some(Decision::Inherit)
    }
}

impl<S> Filter<S> for HeadFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, cx: &LayerContext<'_, S>) -> bool {
        if !Filter::<S>::enabled(&self.targets, metadata, cx) {
            return false;
        }
        if !metadata.is_span() {
            return true;
        }
        let decision = self.decide(metadata, cx);
        DECIDED.with(|d| d.set(decision.map(|decision| (callsite(metadata), decision))));
        decision.is_none()
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        let interest = Filter::<S>::callsite_enabled(&self.targets, metadata);
        // A span's answer depends on the request it belongs to.
        if metadata.is_span() && !interest.is_never() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.targets)
    }
}

/// Puts the [`Unsampled`] mark on the spans [`HeadFilter`] turned away, for logs and
/// propagation. Everything else it ignores (no per-span cost on traced spans beyond a
/// thread-local read when one is created).
pub(crate) struct Marks;

impl<S> Layer<S> for Marks
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some((site, decision)) = DECIDED.with(Cell::take) else {
            return;
        };
        if site != callsite(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mark = match decision {
            Decision::Mark(mark) => Some(mark),
            Decision::Inherit => span
                .parent()
                .and_then(|parent| parent.extensions().get::<Unsampled>().copied()),
        };
        if let Some(mark) = mark {
            span.extensions_mut().insert(mark);
        }
    }
}

/// The mark of `span`, if it is a span this process does not trace.
pub fn unsampled(span: &tracing::Span) -> Option<Unsampled> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        span.extensions().get::<Unsampled>().copied()
    })
    .flatten()
}

/// Why an unsampled request was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Failed,
    Slow,
}

impl Kept {
    /// The reason to keep a request that answered `status` after `elapsed`, if any.
    pub fn reason(status: u16, elapsed: Duration) -> Option<Kept> {
        if status >= 500 {
            Some(Kept::Failed)
        } else if elapsed >= keep_slower_than() {
            Some(Kept::Slow)
        } else {
            None
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kept::Failed => "failed",
            Kept::Slow => "slow",
        }
    }
}

/// `BAZAAR_TRACES_KEEP_SLOWER_THAN_MS`, read once.
pub fn keep_slower_than() -> Duration {
    static THRESHOLD: OnceLock<Duration> = OnceLock::new();
    *THRESHOLD.get_or_init(|| {
        let Ok(value) = std::env::var("BAZAAR_TRACES_KEEP_SLOWER_THAN_MS") else {
            return DEFAULT_KEEP_SLOWER_THAN;
        };
        if let Ok(ms) = value.trim().parse::<u64>() {
            return Duration::from_millis(ms);
        }
        // Read once per process: said once, not at every request.
        tracing::warn!(
            value,
            default_ms = DEFAULT_KEEP_SLOWER_THAN.as_millis(),
            "BAZAAR_TRACES_KEEP_SLOWER_THAN_MS is not a number of milliseconds; using the default"
        );
        DEFAULT_KEEP_SLOWER_THAN
    })
}

/// What the server layer knows of a finished request it did not trace.
#[derive(Debug)]
pub struct Finished<'a> {
    /// `METHOD route`.
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub status: u16,
    pub reason: Kept,
    /// The request span's own fields (service, method, path, request id).
    pub attributes: &'a [(&'static str, &'a str)],
}

/// Exports an unsampled request's server span, built now from what the server layer
/// knows, to the trace buffer and the OTLP exporter: the request failed or was slow.
/// Its children were never built and are not there.
pub fn keep(mark: &Unsampled, finished: &Finished<'_>) {
    if let Some(sink) = Sink::global() {
        sink.push(server_span(mark, finished));
    }
}

pub(crate) fn server_span(mark: &Unsampled, finished: &Finished<'_>) -> SpanData {
    let mut attributes: Vec<KeyValue> = finished
        .attributes
        .iter()
        .map(|(k, v)| KeyValue::new(*k, (*v).to_owned()))
        .collect();
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(finished.status),
    ));
    attributes.push(KeyValue::new("sampling.kept", finished.reason.as_str()));
    SpanData {
        span_context: SpanContext::new(
            mark.trace,
            mark.span,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: mark.parent,
        parent_span_is_remote: mark.parent != SpanId::INVALID,
        span_kind: SpanKind::Server,
        name: Cow::Owned(finished.name.clone()),
        start_time: finished.start,
        end_time: finished.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if finished.status >= 500 {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder(crate::subscriber::TRACER).build(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing::Dispatch;
    use tracing::Level;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::traces::{SinkProcessor, TraceBuffer};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";

    /// A subscriber built as `subscriber::init` builds it, spans going to a buffer of
    /// its own.
    fn traced(sampler: Sampler) -> (Dispatch, Arc<TraceBuffer>, Arc<Sink>, SdkTracerProvider) {
        let buffer = Arc::new(TraceBuffer::new(1000));
        let sink = Arc::new(Sink::new(Arc::clone(&buffer), None));
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .with_id_generator(HeadIds::default())
            .with_span_processor(SinkProcessor(Arc::clone(&sink)))
            .build();
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_tracked_inactivity(false)
            .with_context_activation(false);
        let subscriber = tracing_subscriber::registry()
            .with(otel.with_filter(HeadFilter::new(
                Targets::new().with_default(Level::INFO),
                Policy::new(Box::new(sampler)),
            )))
            .with(Marks);
        (Dispatch::new(subscriber), buffer, sink, provider)
    }

    fn parentbased() -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
    }

    /// A request span continuing `traceparent`, with one child that calls out; the
    /// `traceparent` that call would send.
    fn request(traceparent: &str) -> (Option<Unsampled>, Option<String>) {
        let (span, mark) = root_span(Some(traceparent), None, || {
            tracing::info_span!("request", otel.kind = "server")
        });
        let sent = span.in_scope(|| {
            let child = tracing::info_span!("rpc");
            child.in_scope(|| {
                tracing::info!("inside");
                crate::current_traceparent()
            })
        });
        (mark, sent)
    }

    #[test]
    fn a_sampled_parent_keeps_the_request_whole() {
        let (dispatch, buffer, _sink, _provider) = traced(parentbased());
        let (mark, sent) = tracing::dispatcher::with_default(&dispatch, || {
            request(&format!("00-{TRACE}-{CALLER}-01"))
        });
        assert_eq!(mark, None);
        let sent = sent.expect("a traceparent to send");
        assert!(
            sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with("-01"),
            "{sent}"
        );
        let spans = buffer.trace(TRACE);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(spans[0].parent_span_id.as_deref(), Some(CALLER));
        assert_eq!(spans[1].parent_span_id.as_ref(), Some(&spans[0].span_id));
    }

    #[test]
    fn an_unsampled_parent_exports_nothing_and_passes_the_trace_on_unsampled() {
        let (dispatch, buffer, _sink, _provider) = traced(parentbased());
        let (mark, sent) = tracing::dispatcher::with_default(&dispatch, || {
            request(&format!("00-{TRACE}-{CALLER}-00"))
        });
        let mark = mark.expect("not sampled");
        assert_eq!(mark.trace_id(), TRACE);
        assert_eq!(sent, Some(format!("00-{TRACE}-{}-00", mark.span)));
        assert!(
            buffer.summaries(10).is_empty(),
            "{:?}",
            buffer.summaries(10)
        );
        // Logs and ids still know the trace.
        tracing::dispatcher::with_default(&dispatch, || {
            let (span, _) = root_span(Some(&format!("00-{TRACE}-{CALLER}-00")), None, || {
                tracing::info_span!("request")
            });
            assert_eq!(crate::trace_id(&span).as_deref(), Some(TRACE));
        });
    }

    #[test]
    fn a_sampled_root_keeps_the_trace_id_its_ratio_was_drawn_on() {
        // Plain traceidratio: a later root of the same trace (an event consumer) asks
        // the ratio again about the exported id, so it must be the one drawn.
        let ratio = Sampler::TraceIdRatioBased(0.5);
        let (dispatch, buffer, _sink, _provider) = traced(ratio.clone());
        let consumer = Policy::new(Box::new(ratio));
        let mut sampled = 0;
        for _ in 0..64 {
            let (span, mark) = tracing::dispatcher::with_default(&dispatch, || {
                root_span(None, None, || tracing::info_span!("job"))
            });
            if mark.is_some() {
                continue;
            }
            sampled += 1;
            let trace = crate::trace_id(&span).expect("a traced span has a trace id");
            drop(span);
            let spans = buffer.trace(&trace);
            assert_eq!(spans.len(), 1, "{trace}: {spans:?}");
            // The consumer's root, decided on the exported id, is sampled too.
            let tp = format!("00-{trace}-{CALLER}-01");
            let remote = crate::propagation::extract(&tp, None).expect("well formed");
            assert!(
                consumer.decide(Some(&remote), "consume").is_none(),
                "{trace} was sampled by the root but not by its consumer"
            );
        }
        assert!(sampled > 0, "none of 64 roots sampled at 0.5");
    }

    #[test]
    fn an_unsampled_request_that_failed_is_one_root_span() {
        let (dispatch, buffer, sink, _provider) = traced(Sampler::AlwaysOff);
        let (mark, _) = tracing::dispatcher::with_default(&dispatch, || {
            request(&format!("00-{TRACE}-{CALLER}-01"))
        });
        let mark = mark.expect("always_off samples nothing");
        let reason = Kept::reason(503, Duration::from_millis(3)).expect("a 5xx is kept");
        let end = SystemTime::now();
        sink.push(server_span(
            &mark,
            &Finished {
                name: "POST /api/v1/orders".into(),
                start: end - Duration::from_millis(3),
                end,
                status: 503,
                reason,
                attributes: &[("service", "orders"), ("request_id", "r-1")],
            },
        ));
        let spans = buffer.trace(TRACE);
        assert_eq!(spans.len(), 1, "{spans:?}");
        let root = &spans[0];
        assert_eq!(root.name, "POST /api/v1/orders");
        assert_eq!(root.kind, "server");
        assert_eq!(root.status, "error");
        assert_eq!(root.span_id, mark.span.to_string());
        assert_eq!(root.parent_span_id.as_deref(), Some(CALLER));
        assert_eq!(root.attributes["http.response.status_code"], 503);
        assert_eq!(root.attributes["sampling.kept"], "failed");
        assert_eq!(root.service, "orders");
    }

    #[test]
    fn failed_and_slow_requests_are_kept_and_others_are_not() {
        assert_eq!(Kept::reason(500, Duration::ZERO), Some(Kept::Failed));
        assert_eq!(Kept::reason(404, Duration::ZERO), None);
        assert_eq!(Kept::reason(200, Duration::from_millis(5)), None);
        assert_eq!(
            Kept::reason(200, DEFAULT_KEEP_SLOWER_THAN.max(keep_slower_than())),
            Some(Kept::Slow)
        );
    }

    #[test]
    fn ratio_samplers_keep_their_share_of_roots() {
        let ratio = |r: f64| Policy::new(Box::new(Sampler::TraceIdRatioBased(r)));
        // Constant answers need no id drawn.
        assert_eq!(ratio(0.0).root, Some(false));
        assert_eq!(ratio(1.0).root, Some(true));
        assert_eq!(Policy::new(Box::new(parentbased())).root, Some(true));
        assert_eq!(Policy::new(Box::new(Sampler::AlwaysOff)).root, Some(false));
        assert!(ratio(0.0).decide(None, "r").is_some());
        assert!(ratio(1.0).decide(None, "r").is_none());
        let quarter = ratio(0.25);
        assert_eq!(quarter.root, None);
        let sampled = (0..4000)
            .filter(|_| quarter.decide(None, "r").is_none())
            .count();
        assert!((800..1200).contains(&sampled), "{sampled} of 4000");
        // Parent-based: the caller's flag decides, whatever the ratio.
        let pb = |r: f64| {
            Policy::new(Box::new(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(r),
            ))))
        };
        let parent = |flag: &str| {
            crate::propagation::extract(&format!("00-{TRACE}-{CALLER}-{flag}"), None)
                .expect("well formed")
        };
        assert!(pb(0.0).decide(Some(&parent("01")), "r").is_none());
        assert!(pb(1.0).decide(Some(&parent("00")), "r").is_some());
        // Not parent-based: the ratio decides on the caller's trace id.
        let unsampled = ratio(0.0)
            .decide(Some(&parent("01")), "r")
            .expect("ratio 0");
        assert_eq!(unsampled.trace_id(), TRACE);
    }
}
