//! Prometheus metrics: one process-wide recorder, the process's own figures (start
//! time, uptime, build), and the `# HELP` text of every platform metric. (The RED
//! middleware that records HTTP and RPC-server metrics is chassis-http's.)
//!
//! Metric names are a contract with `deploy/prometheus` and `deploy/grafana` (a test
//! scrapes a running bazaar for every name they use): rename one there too.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds): fine below 10 ms where the monolith lives, coarse above.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Turns metrics off in this process (`metrics_enabled = false`, to measure what they
/// cost): no recorder is installed, so every metric macro is a no-op, RED middleware
/// records nothing and `/metrics` renders empty. Call it before anything records.
pub fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// Whether metrics are recorded in this process (see [`disable`]).
pub fn enabled() -> bool {
    !DISABLED.load(Ordering::Relaxed)
}

/// Installs the global recorder on first use and returns its handle. Later calls (a
/// second app in the same test binary) share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            if !enabled() {
                return PrometheusBuilder::new().build_recorder().handle();
            }
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Someone else installed a recorder first: render an empty registry
                // of our own rather than fail the start.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe_platform();
            record_process_start();
            handle
        })
        .clone()
}

/// When this process started: wall clock (for `process_start_time_seconds`) and
/// monotonic (for uptime).
fn started() -> &'static (f64, Instant) {
    static STARTED: OnceLock<(f64, Instant)> = OnceLock::new();
    STARTED.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (wall, Instant::now())
    })
}

fn record_process_start() {
    metrics::gauge!("process_start_time_seconds").set(started().0);
    metrics::gauge!("process_uptime_seconds").set(started().1.elapsed().as_secs_f64());
}

/// Announces this process in `bazaar_build_info{service, version}` (always 1), so a
/// dashboard can tell which build each target runs.
pub fn register_process(service: &'static str) {
    drop(handle());
    zero_counter("http_requests_shed_total", &[]);
    metrics::gauge!("bazaar_build_info", "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// A counter series at 0, so alerts and dashboards never query an absent series.
pub fn zero_counter(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, *v))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

/// The `# HELP` text of the platform's metrics (modules describe their own).
fn describe_platform() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by service, method, route template and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        "Time to answer an HTTP request, by service, method, route template and status"
    );
    describe_counter!(
        "http_rate_limited_total",
        "Requests refused with 429 by the per-client rate limit"
    );
    describe_counter!(
        "http_requests_shed_total",
        "Requests refused with 503 because max_in_flight_requests were in progress"
    );
    describe_counter!(
        "rpc_client_requests_total",
        "Calls made to another module over HTTP, by peer, method and outcome (split topology)"
    );
    describe_histogram!(
        "rpc_client_duration_seconds",
        "Time of a call to another module over HTTP, by peer, method and outcome"
    );
    describe_counter!(
        "rpc_server_requests_total",
        "Calls served for another module, by service, method and outcome (split topology)"
    );
    describe_histogram!(
        "rpc_server_duration_seconds",
        "Time to serve a call from another module, by service, method and outcome"
    );
    describe_counter!(
        "dependency_calls_total",
        "Calls through a dependency's guard (both topologies), by dependency, method and outcome"
    );
    describe_histogram!(
        "dependency_call_duration_seconds",
        "Time of a whole call through a dependency's guard, retries included, by dependency and method"
    );
    describe_counter!(
        "dependency_retries_total",
        "Retries of calls to a dependency, by dependency and method"
    );
    describe_gauge!(
        "dependency_breaker_state",
        "Circuit breaker of a dependency: 0 closed, 1 half-open, 2 open"
    );
    describe_gauge!(
        "outbox_backlog",
        "Unsent outbox rows of a publishing module"
    );
    describe_gauge!(
        "outbox_oldest_unsent_age_seconds",
        "Age of the oldest unsent outbox row of a module; 0 when none"
    );
    describe_counter!(
        "outbox_relayed_total",
        "Outbox rows the relay has published and marked sent"
    );
    describe_counter!(
        "bus_published_total",
        "Events the bus accepted (in process: delivered to every consumer; JetStream: stored)"
    );
    describe_counter!(
        "consumer_events_total",
        "Event deliveries by consumer, topic and outcome (applied, duplicate, deferred)"
    );
    describe_counter!(
        "consumer_retries_total",
        "Handler attempts that failed transiently and were retried"
    );
    describe_histogram!(
        "consumer_handler_duration_seconds",
        "Time of one handler attempt including the inbox transaction, by consumer and topic"
    );
    describe_counter!(
        "consumer_redeliveries_total",
        "Events delivered to a consumer again (JetStream redelivery, or a relay republishing)"
    );
    describe_counter!(
        "dead_letters_total",
        "Events a consumer gave up on (dead-lettered in its store)"
    );
    describe_gauge!(
        "dead_letters_present",
        "Dead letters now in a consumer's store (until redriven or deleted)"
    );
    describe_gauge!(
        "consumer_lag",
        "Events published for a consumer and not yet applied, by consumer and source module"
    );
    describe_gauge!(
        "consumer_ack_pending",
        "Events being applied by a consumer right now (JetStream: delivered, not yet acked)"
    );
    describe_gauge!(
        "db_pool_connections",
        "Open database connections of a module's pool, by state (idle, in_use)"
    );
    describe_gauge!(
        "db_pool_max_connections",
        "Most connections a module's pool may open"
    );
    describe_gauge!(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds"
    );
    describe_gauge!(
        "process_uptime_seconds",
        "Seconds since the process started"
    );
    describe_gauge!(
        "bazaar_build_info",
        "Always 1; labelled with the process's service and bazaar version"
    );
    describe_counter!(
        "gateway_upstream_requests_total",
        "Requests the split gateway forwarded, by upstream module and outcome"
    );
    describe_counter!(
        "nats_publish_errors_total",
        "JetStream publishes that failed, by topic and kind"
    );
    describe_counter!(
        "nats_publish_duplicates_total",
        "Publishes JetStream dropped as duplicates (same Nats-Msg-Id)"
    );
    describe_counter!(
        "nats_naks_total",
        "Messages nak'ed for redelivery because the consumer's store failed"
    );
    describe_counter!(
        "nats_dead_letters_total",
        "Messages copied to the JetStream dead-letter stream"
    );
    describe_counter!(
        "nats_undecodable_total",
        "Messages that were not an event envelope"
    );
    describe_counter!(
        "nats_skipped_total",
        "Messages a consumer does not handle (servers without filter_subjects)"
    );
    describe_counter!(
        "nats_consumer_restarts_total",
        "Times a JetStream consume loop rebuilt its durable and pull"
    );
}

/// Prometheus text exposition of every metric of this process.
pub fn exposition() -> String {
    let handle = handle();
    metrics::gauge!("process_uptime_seconds").set(started().1.elapsed().as_secs_f64());
    handle.run_upkeep();
    handle.render()
}
