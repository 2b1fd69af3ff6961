//! Recording (one HDR histogram per operation, in microseconds) and the final report:
//! a table on stdout and, with `--json`, the same numbers as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::mix::Operation;

/// The smallest and largest latency a histogram holds (µs), and its precision.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// How a request ended: the class of its status, or no status at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusClass {
    S2xx,
    S3xx,
    S4xx,
    S5xx,
    /// Connect/timeout/body errors: no HTTP status was received.
    Transport,
}

impl StatusClass {
    pub(crate) fn of(status: u16) -> Self {
        match status {
            300..=399 => Self::S3xx,
            400..=499 => Self::S4xx,
            500..=599 => Self::S5xx,
            // 1xx never reaches a reqwest caller; anything else odd counts as success.
            _ => Self::S2xx,
        }
    }
}

/// Requests by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Classes {
    #[serde(rename = "2xx")]
    pub(crate) s2xx: u64,
    #[serde(rename = "3xx")]
    pub(crate) s3xx: u64,
    #[serde(rename = "4xx")]
    pub(crate) s4xx: u64,
    #[serde(rename = "5xx")]
    pub(crate) s5xx: u64,
    pub(crate) transport: u64,
}

impl Classes {
    fn add(&mut self, class: StatusClass) {
        match class {
            StatusClass::S2xx => self.s2xx += 1,
            StatusClass::S3xx => self.s3xx += 1,
            StatusClass::S4xx => self.s4xx += 1,
            StatusClass::S5xx => self.s5xx += 1,
            StatusClass::Transport => self.transport += 1,
        }
    }

    /// Server errors and transport errors: what "errors" means in the progress line.
    pub(crate) fn errors(&self) -> u64 {
        self.s5xx + self.transport
    }
}

struct Stats {
    histogram: Histogram<u64>,
    classes: Classes,
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)?,
            classes: Classes::default(),
        })
    }

    fn record(&mut self, class: StatusClass, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Beyond 60 s it is recorded as 60 s (requests time out well before).
        self.histogram
            .saturating_record(micros.clamp(LOWEST_US, HIGHEST_US));
        self.classes.add(class);
    }
}

struct Inner {
    operations: BTreeMap<Operation, Stats>,
    total: Stats,
    dropped: u64,
    warmup: u64,
}

/// What the scheduler records into; shared by every in-flight request.
pub(crate) struct Recorder {
    inner: Mutex<Inner>,
    /// Requests intended before this instant are warmup: counted apart, not reported.
    measure_from: Instant,
}

/// A moment's totals, for the progress line.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) dropped: u64,
    pub(crate) p99_us: u64,
}

impl Recorder {
    pub(crate) fn new(measure_from: Instant) -> anyhow::Result<Self> {
        let mut operations = BTreeMap::new();
        for op in Operation::ALL {
            operations.insert(op, Stats::new()?);
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                operations,
                total: Stats::new()?,
                dropped: 0,
                warmup: 0,
            }),
            measure_from,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One response (or transport error) of `op`, meant to be sent at `intended`.
    pub(crate) fn record(
        &self,
        op: Operation,
        class: StatusClass,
        intended: Instant,
        latency: Duration,
    ) {
        let mut inner = self.lock();
        if intended < self.measure_from {
            inner.warmup += 1;
            return;
        }
        if let Some(stats) = inner.operations.get_mut(&op) {
            stats.record(class, latency);
        }
        inner.total.record(class, latency);
    }

    /// An arrival that was not sent: too many requests already in flight.
    pub(crate) fn dropped(&self, intended: Instant) {
        let mut inner = self.lock();
        if intended < self.measure_from {
            inner.warmup += 1;
        } else {
            inner.dropped += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            count: inner.total.histogram.len(),
            errors: inner.total.classes.errors(),
            dropped: inner.dropped,
            p99_us: inner.total.histogram.value_at_quantile(0.99),
        }
    }

    /// The report over the measured `duration`.
    pub(crate) fn report(&self, run: RunInfo, duration: Duration) -> Report {
        let inner = self.lock();
        let secs = duration.as_secs_f64();
        Report {
            operations: inner
                .operations
                .iter()
                .filter(|(_, stats)| !stats.histogram.is_empty())
                .map(|(op, stats)| (op.name().to_owned(), OpReport::of(stats, secs)))
                .collect(),
            total: OpReport::of(&inner.total, secs),
            dropped: inner.dropped,
            warmup_requests: inner.warmup,
            duration_secs: secs,
            run,
        }
    }
}

/// How the run was set up (echoed in the report).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunInfo {
    pub(crate) target: String,
    /// `"open"` (fixed arrival rate) or `"closed"` (N users back to back).
    pub(crate) mode: &'static str,
    pub(crate) mix: &'static str,
    /// Arrivals per second (open loop).
    pub(crate) rate: Option<f64>,
    /// Concurrent users (closed loop).
    pub(crate) users: Option<u64>,
    pub(crate) warmup_secs: f64,
}

/// The loadgen report. `--json PATH` writes it as one JSON object:
///
/// ```json
/// {
///   "target": "http://127.0.0.1:8080", "mode": "open" | "closed",
///   "mix": "shop" | "browse" | "checkout",
///   "rate": 500.0 | null, "users": 32 | null,
///   "warmup_secs": 5.0, "duration_secs": 30.0,
///   "dropped": 0,           // open loop: arrivals not sent (in-flight cap reached)
///   "warmup_requests": 2500, // completed during the warmup, not in the numbers
///   "total": OP,
///   "operations": { "listing" | "product_view" | "add_to_cart" | "view_cart" | "checkout": OP }
/// }
/// OP = { "count": 15000, "rate": 500.0,
///        "latency_us": { "p50", "p90", "p99", "p99_9", "max", "mean" },
///        "status": { "2xx", "3xx", "4xx", "5xx", "transport" } }
/// ```
///
/// Latencies are microseconds from the intended send time (open loop) or the send
/// time (closed loop) to the end of the response body; `count` includes every
/// outcome, and `rate` is `count / duration_secs`. Only operations that ran appear.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    pub(crate) run: RunInfo,
    pub(crate) duration_secs: f64,
    pub(crate) dropped: u64,
    pub(crate) warmup_requests: u64,
    pub(crate) total: OpReport,
    pub(crate) operations: BTreeMap<String, OpReport>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct OpReport {
    pub(crate) count: u64,
    pub(crate) rate: f64,
    pub(crate) latency_us: Latency,
    pub(crate) status: Classes,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p99_9: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
}

impl OpReport {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    fn of(stats: &Stats, secs: f64) -> Self {
        let h = &stats.histogram;
        let count = h.len();
        let (p50, p90, p99, p99_9, max) = if count == 0 {
            (0, 0, 0, 0, 0)
        } else {
            (
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
            )
        };
        Self {
            count,
            rate: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            latency_us: Latency {
                p50,
                p90,
                p99,
                p99_9,
                max,
                mean: if count == 0 { 0.0 } else { h.mean() },
            },
            status: stats.classes,
        }
    }
}

/// Microseconds as a short human string: `850µs`, `4.21ms`, `1.50s`.
pub(crate) fn human_us(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = us as f64;
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", f / 1e3)
    } else {
        format!("{:.2}s", f / 1e6)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = match (self.run.rate, self.run.users) {
            (Some(rate), _) => format!("rate {rate}/s"),
            (None, Some(users)) => format!("{users} users"),
            (None, None) => String::new(),
        };
        writeln!(
            f,
            "bazaar loadgen: {} mix against {}, {} loop, {load}, {:.1}s measured (+{:.1}s warmup)",
            self.run.mix, self.run.target, self.run.mode, self.duration_secs, self.run.warmup_secs
        )?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<13} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6}",
            "operation",
            "count",
            "rate/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "2xx",
            "3xx",
            "4xx",
            "5xx",
            "transp"
        );
        let rows = self
            .operations
            .iter()
            .map(|(name, op)| (name.as_str(), op))
            .chain(std::iter::once(("total", &self.total)));
        for (name, op) in rows {
            let l = &op.latency_us;
            let s = &op.status;
            let _ = writeln!(
                out,
                "{:<13} {:>8} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6}",
                name,
                op.count,
                op.rate,
                human_us(l.p50),
                human_us(l.p90),
                human_us(l.p99),
                human_us(l.p99_9),
                human_us(l.max),
                s.s2xx,
                s.s3xx,
                s.s4xx,
                s.s5xx,
                s.transport
            );
        }
        f.write_str(&out)?;
        write!(
            f,
            "dropped (in-flight cap reached): {}; warmup requests (not counted): {}",
            self.dropped, self.warmup_requests
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunInfo {
        RunInfo {
            target: "http://127.0.0.1:1".into(),
            mode: "open",
            mix: "shop",
            rate: Some(100.0),
            users: None,
            warmup_secs: 1.0,
        }
    }

    #[test]
    fn percentiles_counts_and_json_come_from_the_histograms() {
        let start = Instant::now();
        let recorder = Recorder::new(start + Duration::from_secs(1)).unwrap();
        let measured = start + Duration::from_secs(2);
        // Product views: 1 ms .. 1000 ms in 1 ms steps, one 503 among them.
        for ms in 1..=1000_u64 {
            let class = if ms == 500 {
                StatusClass::S5xx
            } else {
                StatusClass::S2xx
            };
            recorder.record(
                Operation::ProductView,
                class,
                measured,
                Duration::from_millis(ms),
            );
        }
        recorder.record(
            Operation::Checkout,
            StatusClass::S4xx,
            measured,
            Duration::from_micros(250),
        );
        recorder.record(
            Operation::Checkout,
            StatusClass::Transport,
            measured,
            Duration::from_secs(120),
        );
        // Warmup: not in the numbers.
        recorder.record(
            Operation::Listing,
            StatusClass::S2xx,
            start,
            Duration::from_millis(1),
        );
        recorder.dropped(measured);

        let report = recorder.report(run(), Duration::from_secs(10));
        let view = &report.operations["product_view"];
        assert_eq!(view.count, 1000);
        assert!((view.rate - 100.0).abs() < 1e-9);
        // 3 significant digits: within 0.1 % of the exact value.
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(view.latency_us.p50, 500_000), "{:?}", view.latency_us);
        assert!(near(view.latency_us.p90, 900_000), "{:?}", view.latency_us);
        assert!(near(view.latency_us.p99, 990_000), "{:?}", view.latency_us);
        assert!(
            near(view.latency_us.p99_9, 999_000),
            "{:?}",
            view.latency_us
        );
        assert!(
            near(view.latency_us.max, 1_000_000),
            "{:?}",
            view.latency_us
        );
        assert_eq!(view.status.s2xx, 999);
        assert_eq!(view.status.s5xx, 1);

        let checkout = &report.operations["checkout"];
        assert_eq!(checkout.status.s4xx, 1);
        assert_eq!(checkout.status.transport, 1);
        // Beyond the histogram's 60 s: saturated, not lost.
        assert!(near(checkout.latency_us.max, 60_000_000));
        assert!(!report.operations.contains_key("listing"));
        assert_eq!(report.total.count, 1002);
        assert_eq!(report.warmup_requests, 1);
        assert_eq!(report.dropped, 1);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mode"], "open");
        assert_eq!(json["mix"], "shop");
        assert_eq!(json["rate"], 100.0);
        assert!(json["users"].is_null());
        assert_eq!(json["duration_secs"], 10.0);
        assert_eq!(json["total"]["count"], 1002);
        assert_eq!(json["total"]["status"]["2xx"], 999);
        assert_eq!(json["total"]["status"]["transport"], 1);
        assert_eq!(json["operations"]["product_view"]["status"]["5xx"], 1);
        assert_eq!(
            json["operations"]["product_view"]["latency_us"]["p50"],
            view.latency_us.p50
        );
        assert_eq!(json["operations"]["checkout"]["count"], 2);

        let table = report.to_string();
        assert!(table.contains("product_view"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("total")), "{table}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(201), StatusClass::S2xx);
        assert_eq!(StatusClass::of(302), StatusClass::S3xx);
        assert_eq!(StatusClass::of(409), StatusClass::S4xx);
        assert_eq!(StatusClass::of(503), StatusClass::S5xx);
        assert_eq!(human_us(850), "850µs");
        assert_eq!(human_us(4_210), "4.21ms");
        assert_eq!(human_us(1_500_000), "1.50s");
    }
}
