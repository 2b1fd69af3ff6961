//! Which traces are kept (ADR 0018): a head decision by the standard
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (a W3C parent's sampled flag
//! honoured by the `parentbased_*` samplers), and a tail decision that keeps a request
//! the head sampler passed over when it failed or was slow.
//!
//! The tail costs nothing for a request the head sampler drops and that makes one span
//! (a product read): `tracing-opentelemetry` holds a span as a builder until it closes
//! (or until a child or a log line needs its context), so the sampler runs at the end,
//! sees the status (and the [`PRIORITY`] mark) the server layer recorded, and a
//! dropped span is never built.
//! A request whose span had to start earlier (it has child spans) is recorded without
//! being sampled ([`SamplingDecision::RecordOnly`]); [`Tail`] holds those spans until
//! their local root ends and passes them on, marked sampled, only if the root is kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceId,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor,
};

/// The attribute a server span gets when its request ends and must be kept whatever
/// the head sampler said (a 5xx, or slower than [`slow_threshold`]): `1`.
pub const PRIORITY: &str = "sampling.priority";

/// The attribute the server layer records on a server span when the response is
/// known: with it, the sampler knows the request is over.
pub const STATUS_CODE: &str = "http.response.status_code";

/// Requests at least this slow are kept, unless `BAZAAR_TRACES_KEEP_SLOWER_THAN_MS`
/// says otherwise.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(1);

/// Spans [`Tail`] holds at most while their local roots run; past it, further
/// unsampled spans are dropped (a kept trace then shows partially).
pub const PENDING_CAPACITY: usize = 8192;

/// The slow threshold of this process, in milliseconds ([`Policy`] sets it).
static SLOW_MS: AtomicU64 = AtomicU64::new(1000);

/// Whether a request that ended with `status` after `elapsed` must be kept.
pub fn keep(status: u16, elapsed: Duration) -> bool {
    status >= 500 || elapsed >= slow_threshold()
}

/// Requests at least this slow are kept whatever the head sampler said.
pub fn slow_threshold() -> Duration {
    Duration::from_millis(SLOW_MS.load(Ordering::Relaxed))
}

/// The sampler of every bazaar process: the head sampler, then the tail's rules.
#[derive(Debug, Clone)]
pub struct Policy {
    head: Sampler,
    slow: Duration,
}

impl Policy {
    pub fn new(head: Sampler, slow: Duration) -> Self {
        Self { head, slow }
    }

    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as the specification
    /// defines them (default `parentbased_always_on`), and
    /// `BAZAAR_TRACES_KEEP_SLOWER_THAN_MS`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let slow = var("BAZAAR_TRACES_KEEP_SLOWER_THAN_MS").map_or(DEFAULT_SLOW, |ms| {
            ms.trim().parse().map(Duration::from_millis).unwrap_or_else(|_| {
                eprintln!(
                    "BAZAAR_TRACES_KEEP_SLOWER_THAN_MS={ms} is not a number of milliseconds; using {}",
                    DEFAULT_SLOW.as_millis()
                );
                DEFAULT_SLOW
            })
        });
        Self::parse(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            slow,
        )
    }

    /// The policy for a sampler named as `OTEL_TRACES_SAMPLER` names it (`None`: the
    /// default), its argument, and the slow threshold.
    pub fn parse(sampler: Option<&str>, arg: Option<&str>, slow: Duration) -> Self {
        Self::new(head_sampler(sampler, arg), slow)
    }

    /// Makes this policy's slow threshold the one [`keep`] applies.
    pub(crate) fn install(&self) {
        let ms = u64::try_from(self.slow.as_millis()).unwrap_or(u64::MAX);
        SLOW_MS.store(ms, Ordering::Relaxed);
    }

    /// Whether the tail keeps a local root that was not head-sampled.
    fn keeps(&self, root: &SpanData) -> bool {
        priority(&root.attributes).is_some_and(|p| p > 0)
            || matches!(root.status, Status::Error { .. })
            || root
                .end_time
                .duration_since(root.start_time)
                .is_ok_and(|d| d >= self.slow)
    }
}

/// The head sampler the standard variables name; an unknown name or a bad ratio
/// falls back as the specification says (`parentbased_always_on`, ratio 1).
fn head_sampler(name: Option<&str>, arg: Option<&str>) -> Sampler {
    let ratio = || {
        arg.and_then(|a| a.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or_else(|| {
                eprintln!("OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio in [0, 1]; using 1");
                1.0
            })
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match name.map(str::trim) {
        None | Some("parentbased_always_on") => parent_based(Sampler::AlwaysOn),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()),
        Some("parentbased_always_off") => parent_based(Sampler::AlwaysOff),
        Some("parentbased_traceidratio") => parent_based(Sampler::TraceIdRatioBased(ratio())),
        Some(other) => {
            eprintln!(
                "OTEL_TRACES_SAMPLER={other} is not supported here; using parentbased_always_on"
            );
            parent_based(Sampler::AlwaysOn)
        }
    }
}

fn priority(attributes: &[KeyValue]) -> Option<i64> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == PRIORITY)
        .map(|kv| match kv.value {
            Value::I64(p) => p,
            Value::Bool(b) => i64::from(b),
            _ => 0,
        })
}

impl ShouldSample for Policy {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let head = self
            .head
            .should_sample(parent, trace_id, name, kind, attributes, links);
        if head.decision == SamplingDecision::RecordAndSample {
            return head;
        }
        let ended =
            *kind == SpanKind::Server && attributes.iter().any(|kv| kv.key.as_str() == STATUS_CODE);
        let decision = match priority(attributes) {
            // A request that ended and must be kept.
            Some(p) if p > 0 => SamplingDecision::RecordAndSample,
            // A request that ended normally: dropped without being built.
            _ if ended => return head,
            // Still running (its context was needed early) or not a request: recorded,
            // and its local root's end decides ([`Tail`]); a child of a span that is
            // not even recorded follows it.
            _ => {
                let dropped_local_parent = parent.is_some_and(|cx| {
                    cx.has_active_span() && {
                        let span = cx.span();
                        !span.span_context().is_remote() && !span.is_recording()
                    }
                });
                if dropped_local_parent {
                    return head;
                }
                SamplingDecision::RecordOnly
            }
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: head.trace_state,
        }
    }
}

/// The span processor in front of the trace buffer and the exporter: sampled spans go
/// straight through; recorded but unsampled ones wait for their local root (the span
/// of this process without a parent here), and go through, marked sampled, only if
/// [`Policy`] keeps that root.
#[derive(Debug)]
pub struct Tail {
    policy: Policy,
    inner: Vec<Box<dyn SpanProcessor>>,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Each running unsampled span's local root.
    roots: HashMap<SpanId, SpanId>,
    /// Ended spans by local root.
    ended: HashMap<SpanId, Vec<SpanData>>,
    held: usize,
}

impl Tail {
    pub fn new(policy: Policy, inner: Vec<Box<dyn SpanProcessor>>) -> Self {
        Self {
            policy,
            inner,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn forward(&self, span: SpanData) {
        if let Some((last, first)) = self.inner.split_last() {
            for processor in first {
                processor.on_end(span.clone());
            }
            last.on_end(span);
        }
    }
}

fn sampled(mut span: SpanData) -> SpanData {
    let sc = &span.span_context;
    span.span_context = SpanContext::new(
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().with_sampled(true),
        sc.is_remote(),
        sc.trace_state().clone(),
    );
    span
}

impl SpanProcessor for Tail {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let sc = span.span_context();
        if sc.is_sampled() || !span.is_recording() {
            return;
        }
        let id = sc.span_id();
        let parent = cx.span();
        let parent = parent.span_context();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let root = if parent.is_valid() && !parent.is_remote() {
            pending.roots.get(&parent.span_id()).copied().unwrap_or(id)
        } else {
            id
        };
        pending.roots.insert(id, root);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.forward(span);
            return;
        }
        let id = span.span_context.span_id();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let root = pending.roots.remove(&id).unwrap_or(id);
        if root != id {
            if pending.held < PENDING_CAPACITY {
                pending.held += 1;
                pending.ended.entry(root).or_default().push(span);
            }
            return;
        }
        let held = pending.ended.remove(&id).unwrap_or_default();
        pending.held -= held.len();
        drop(pending);
        if self.policy.keeps(&span) {
            for span in held.into_iter().chain(std::iter::once(span)) {
                self.forward(sampled(span));
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.iter().try_for_each(|p| p.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner
            .iter()
            .try_for_each(|p| p.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        for processor in &mut self.inner {
            processor.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::traces::{TraceBuffer, TraceSummary};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn policy(sampler: &str, arg: Option<&str>) -> Policy {
        Policy::new(head_sampler(Some(sampler), arg), Duration::from_secs(3600))
    }

    /// The traces `policy` keeps of what `f` does.
    fn kept(policy: Policy, f: impl FnOnce()) -> Vec<TraceSummary> {
        let buffer = Arc::new(TraceBuffer::new(64));
        let (subscriber, provider) = crate::subscriber::capturing(policy, Arc::clone(&buffer));
        tracing::subscriber::with_default(subscriber, f);
        drop(provider);
        buffer.summaries(100)
    }

    fn server_span() -> tracing::Span {
        tracing::info_span!(
            "request",
            otel.kind = "server",
            { STATUS_CODE } = tracing::field::Empty,
            { PRIORITY } = tracing::field::Empty,
        )
    }

    /// How the server layer ends a request: its status, and the mark if it must be
    /// kept.
    fn end(span: &tracing::Span, priority: i64) {
        span.record(STATUS_CODE, if priority > 0 { 500 } else { 200 });
        if priority > 0 {
            span.record(PRIORITY, priority);
        }
    }

    fn request(priority: i64, traceparent: Option<&str>) {
        let span = server_span();
        if let Some(traceparent) = traceparent {
            crate::set_parent(&span, traceparent, None);
        }
        end(&span, priority);
    }

    /// A request whose span starts before it ends (a child needs its context).
    fn request_with_child(priority: i64) {
        let span = server_span();
        span.in_scope(|| {
            let _child = tracing::info_span!("child").entered();
        });
        end(&span, priority);
    }

    #[test]
    fn ratio_zero_drops_a_normal_request_and_keeps_a_marked_one() {
        let ratio_zero = || policy("parentbased_traceidratio", Some("0"));
        assert!(kept(ratio_zero(), || request(0, None)).is_empty());
        let traces = kept(ratio_zero(), || request(1, None));
        assert_eq!(traces.len(), 1, "{traces:?}");
        assert_eq!(traces[0].spans, 1);
    }

    #[test]
    fn the_default_keeps_every_request() {
        let traces = kept(Policy::new(head_sampler(None, None), DEFAULT_SLOW), || {
            request(0, None);
            request_with_child(0);
        });
        assert_eq!(traces.len(), 2, "{traces:?}");
    }

    #[test]
    fn a_parents_sampled_flag_is_honoured() {
        let sampled = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let traces = kept(policy("parentbased_traceidratio", Some("0")), || {
            request(0, Some(&sampled));
        });
        assert_eq!(traces.len(), 1, "{traces:?}");
        assert_eq!(traces[0].trace_id, TRACE);

        let not_sampled = format!("00-{TRACE}-00f067aa0ba902b7-00");
        let traces = kept(policy("parentbased_always_on", None), || {
            request(0, Some(&not_sampled));
        });
        assert!(traces.is_empty(), "{traces:?}");
        // ... unless it failed.
        let traces = kept(policy("parentbased_always_on", None), || {
            request(1, Some(&not_sampled));
        });
        assert_eq!(traces.len(), 1, "{traces:?}");
    }

    #[test]
    fn a_request_with_children_is_kept_whole_only_when_its_root_is() {
        let ratio_zero = || policy("parentbased_traceidratio", Some("0"));
        assert!(kept(ratio_zero(), || request_with_child(0)).is_empty());
        let traces = kept(ratio_zero(), || request_with_child(1));
        assert_eq!(traces.len(), 1, "{traces:?}");
        assert_eq!(traces[0].spans, 2, "the child comes with its root");
    }

    #[test]
    fn a_root_that_is_not_a_request_is_kept_when_it_fails_or_is_slow() {
        let failing = || {
            let span = tracing::info_span!("consume");
            span.in_scope(|| tracing::error!("the handler failed"));
        };
        let quiet = || drop(tracing::info_span!("consume").entered());
        let off = || policy("always_off", None);
        assert_eq!(kept(off(), failing).len(), 1);
        assert!(kept(off(), quiet).is_empty());
        let everything_is_slow = Policy::new(Sampler::AlwaysOff, Duration::ZERO);
        let traces = kept(everything_is_slow, || {
            let span = tracing::info_span!("consume");
            // started early (a child), so the tail decides by its duration
            span.in_scope(|| drop(tracing::info_span!("child").entered()));
        });
        assert_eq!(traces.len(), 1, "{traces:?}");
    }

    #[test]
    fn the_standard_sampler_names_are_understood() {
        assert!(matches!(head_sampler(None, None), Sampler::ParentBased(_)));
        assert!(matches!(
            head_sampler(Some("always_off"), None),
            Sampler::AlwaysOff
        ));
        assert!(matches!(
            head_sampler(Some("traceidratio"), Some("0.25")),
            Sampler::TraceIdRatioBased(r) if (r - 0.25).abs() < f64::EPSILON
        ));
        // a bad ratio falls back to 1, an unknown sampler to the default
        assert!(matches!(
            head_sampler(Some("traceidratio"), Some("lots")),
            Sampler::TraceIdRatioBased(r) if (r - 1.0).abs() < f64::EPSILON
        ));
        assert!(matches!(
            head_sampler(Some("xray"), None),
            Sampler::ParentBased(_)
        ));
    }

    #[test]
    fn failures_and_slow_requests_are_kept() {
        assert!(keep(500, Duration::ZERO));
        assert!(keep(503, Duration::ZERO));
        assert!(!keep(404, Duration::ZERO));
        assert!(!keep(200, Duration::from_millis(10)));
        assert!(keep(200, DEFAULT_SLOW));
    }
}
