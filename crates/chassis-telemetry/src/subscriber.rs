//! Tracing and logs, installed once per process.
//!
//! Spans come from `tracing` and become OpenTelemetry spans
//! (`tracing-opentelemetry`). Every finished span goes to this process's
//! [`TraceBuffer`](crate::traces::TraceBuffer) (the admin traces API) and, when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, to an
//! OTLP/HTTP collector in batches from the exporter's own thread. `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` apply as usual (the head
//! decision is taken before the span is built: see `sampling.rs`), and
//! `OTEL_SDK_DISABLED=true` turns tracing off.
//!
//! Logs are JSON lines (see `logs.rs`) or, for humans, pretty ones.

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanProcessor as _,
};
use serde::{Deserialize, Serialize};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::logs::{JsonLines, RequestIdLayer};
use crate::sampling::{HeadFilter, Marks, Policy};
use crate::traces::{Sink, SinkProcessor, TraceBuffer};

/// The instrumentation scope of every span bazaar makes.
pub(crate) const TRACER: &str = "bazaar";

/// Log output: JSON lines for machines (default) or pretty for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
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
    let mut export = None;
    if otlp_requested() {
        if std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p.trim() == "grpc") {
            eprintln!("OTLP: only http/protobuf is built in; exporting with it");
        }
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let mut batch = BatchSpanProcessor::builder(exporter).build();
                // The provider would do this for a processor it owns; this one is
                // shared with the sampling policy's kept spans (`Sink`).
                batch.set_resource(&resource);
                export = Some(batch);
            }
            // Telemetry must not stop the service; the buffer still works.
            Err(e) => eprintln!("OTLP span export is off: {e}"),
        }
    }
    let sink = Sink::install(Arc::new(Sink::new(buffer, export)));
    SdkTracerProvider::builder()
        .with_resource(resource)
        // Every span that reaches the SDK was chosen by the head sampler
        // (`sampling::HeadFilter`, with the `OTEL_TRACES_SAMPLER` one) or is the child
        // of one that was: the SDK must not draw again.
        .with_sampler(Sampler::AlwaysOn)
        .with_id_generator(crate::sampling::HeadIds::default())
        .with_span_processor(SinkProcessor(sink))
        .build()
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
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(TRACER))
            .with_location(false)
            .with_threads(false)
            // busy/idle time per span costs two clock reads per poll of every future
            // in a span; the span's own start and end are what trace views use.
            .with_tracked_inactivity(false)
            // Nothing here reads `opentelemetry::Context::current()` (propagation asks
            // the tracing span), so the OTel context need not be attached to the
            // thread on every poll of every future in a span.
            .with_context_activation(false);
        // Spans of requests the head sampler passes over never reach it.
        otel.with_filter(HeadFilter::new(
            Targets::new().with_default(Level::INFO),
            Policy::from_env(),
        ))
    });
    let registry = tracing_subscriber::registry()
        .with(otel)
        .with(provider.as_ref().map(|_| Marks))
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
