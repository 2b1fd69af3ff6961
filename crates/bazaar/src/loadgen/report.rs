//! Recording (one HDR histogram per operation, in microseconds) and the final report:
//! a table on stdout and, with `--json`, the same numbers as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::cpu::CpuReport;
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

/// What a checkout's answer (or a later read of its order) said about the order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OrderSeen {
    Confirmed,
    /// With the order's `failure_reason`.
    Failed(String),
    /// Not ended yet: whose it is, so it can be read again later.
    Pending {
        user: usize,
        id: String,
    },
}

/// The orders of the measured checkouts, by how they ended.
#[derive(Debug, Default)]
struct Orders {
    confirmed: u64,
    failed: BTreeMap<String, u64>,
    /// Pending when answered and not (yet) seen to end.
    pending: Vec<(usize, String)>,
    /// How many were pending when their checkout answered (202).
    pending_at_answer: u64,
}

impl Orders {
    fn count(&mut self, seen: OrderSeen) {
        match seen {
            OrderSeen::Confirmed => self.confirmed += 1,
            OrderSeen::Failed(reason) => *self.failed.entry(reason).or_default() += 1,
            OrderSeen::Pending { user, id } => self.pending.push((user, id)),
        }
    }
}

struct Inner {
    operations: BTreeMap<Operation, Stats>,
    total: Stats,
    dropped: u64,
    warmup: u64,
    orders: Orders,
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
                orders: Orders::default(),
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

    /// The order a measured checkout (meant to be sent at `intended`) answered with.
    pub(crate) fn order(&self, intended: Instant, seen: OrderSeen) {
        if intended < self.measure_from {
            return;
        }
        let mut inner = self.lock();
        if matches!(seen, OrderSeen::Pending { .. }) {
            inner.orders.pending_at_answer += 1;
        }
        inner.orders.count(seen);
    }

    /// The measured orders still pending (owner, id), taken out to be read again;
    /// hand what they became to [`Recorder::settled`].
    pub(crate) fn take_pending_orders(&self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.lock().orders.pending)
    }

    /// What the orders taken by [`Recorder::take_pending_orders`] became.
    pub(crate) fn settled(&self, orders: Vec<OrderSeen>) {
        let mut inner = self.lock();
        for seen in orders {
            inner.orders.count(seen);
        }
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
        let orders = inner
            .operations
            .get(&Operation::Checkout)
            .is_some_and(|stats| !stats.histogram.is_empty())
            .then(|| OrdersReport::of(&inner.orders, secs));
        Report {
            orders,
            cpu: None,
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
///   "operations": { "listing" | "product_view" | "add_to_cart" | "view_cart" | "checkout": OP },
///   "orders": {             // only when the run made checkouts
///     "placed": 120, "confirmed": 118, "failed": 2, "pending": 0,
///     "confirmed_per_sec": 23.6, "pending_at_answer": 3,
///     "failure_reasons": { "out_of_stock": 2 }
///   },
///   "cpu": {                // Linux: over the measured window
///     "window_secs": 5.0,
///     "groups": { "loadgen" | <--cpu-pid name>: { "processes": 1, "unreadable": 0,
///                 "cpu_secs": 1.2, "cores": 0.24, "per_request_us": 48.0 } }
///   }
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
    /// Present when the run made checkouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) orders: Option<OrdersReport>,
    /// CPU over the measured window (Linux): loadgen's own, and the `--cpu-pid`
    /// groups'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<CpuReport>,
}

/// The orders of the measured checkouts. An order is counted by its final status:
/// the checkout's answer when terminal (201), otherwise what reading the order again
/// after the run said (loadgen waits up to `--settle` for pending ones to end).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct OrdersReport {
    /// Checkouts answered with an order (2xx): confirmed + failed + pending.
    pub(crate) placed: u64,
    pub(crate) confirmed: u64,
    pub(crate) failed: u64,
    /// Still pending when loadgen stopped waiting.
    pub(crate) pending: u64,
    /// `confirmed` over the measured duration.
    pub(crate) confirmed_per_sec: f64,
    /// How many were still pending when their checkout answered (202).
    pub(crate) pending_at_answer: u64,
    /// Failed orders by `failure_reason`.
    pub(crate) failure_reasons: BTreeMap<String, u64>,
}

impl OrdersReport {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    fn of(orders: &Orders, secs: f64) -> Self {
        let failed = orders.failed.values().sum::<u64>();
        let pending = orders.pending.len() as u64;
        Self {
            placed: orders.confirmed + failed + pending,
            confirmed: orders.confirmed,
            failed,
            pending,
            confirmed_per_sec: if secs > 0.0 {
                orders.confirmed as f64 / secs
            } else {
                0.0
            },
            pending_at_answer: orders.pending_at_answer,
            failure_reasons: orders.failed.clone(),
        }
    }
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
        if let Some(orders) = &self.orders {
            let reasons = orders
                .failure_reasons
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "orders: {} placed, {} confirmed ({:.1}/s), {} failed{}, {} still pending \
                 ({} were pending when answered)",
                orders.placed,
                orders.confirmed,
                orders.confirmed_per_sec,
                orders.failed,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({reasons})")
                },
                orders.pending,
                orders.pending_at_answer
            );
        }
        if let Some(cpu) = &self.cpu {
            let groups = cpu
                .groups
                .iter()
                .map(|(name, g)| {
                    format!(
                        "{name} {:.2}s ({:.2} cores, {:.1}µs/request{})",
                        g.cpu_secs,
                        g.cores,
                        g.per_request_us,
                        if g.unreadable > 0 {
                            format!(", {} unreadable", g.unreadable)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(out, "cpu over {:.1}s: {groups}", cpu.window_secs);
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
    fn orders_are_counted_by_their_final_status() {
        let start = Instant::now();
        let recorder = Recorder::new(start + Duration::from_secs(1)).unwrap();
        let measured = start + Duration::from_secs(2);
        for _ in 0..3 {
            recorder.record(
                Operation::Checkout,
                StatusClass::S2xx,
                measured,
                Duration::from_millis(5),
            );
        }
        recorder.order(measured, OrderSeen::Confirmed);
        recorder.order(measured, OrderSeen::Failed("out_of_stock".into()));
        recorder.order(
            measured,
            OrderSeen::Pending {
                user: 1,
                id: "a".into(),
            },
        );
        recorder.order(
            measured,
            OrderSeen::Pending {
                user: 2,
                id: "b".into(),
            },
        );
        recorder.order(
            measured,
            OrderSeen::Pending {
                user: 3,
                id: "c".into(),
            },
        );
        // A warmup checkout's order is not counted.
        recorder.order(start, OrderSeen::Confirmed);

        let pending = recorder.take_pending_orders();
        assert_eq!(
            pending,
            vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
        // Read again: one confirmed, one failed, one still pending.
        recorder.settled(vec![
            OrderSeen::Confirmed,
            OrderSeen::Failed("payment_declined".into()),
            OrderSeen::Pending {
                user: 3,
                id: "c".into(),
            },
        ]);
        let report = recorder.report(run(), Duration::from_secs(2));
        let orders = report.orders.clone().unwrap();
        assert_eq!(orders.placed, 5);
        assert_eq!(orders.confirmed, 2);
        assert_eq!(orders.failed, 2);
        assert_eq!(orders.pending, 1);
        assert_eq!(orders.pending_at_answer, 3);
        assert!((orders.confirmed_per_sec - 1.0).abs() < 1e-9);
        assert_eq!(orders.failure_reasons["out_of_stock"], 1);
        assert_eq!(orders.failure_reasons["payment_declined"], 1);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["orders"]["confirmed"], 2);
        assert_eq!(json["orders"]["failure_reasons"]["out_of_stock"], 1);
        assert!(json.get("cpu").is_none());
        let table = report.to_string();
        assert!(table.contains("2 confirmed (1.0/s)"), "{table}");
    }

    #[test]
    fn a_run_without_checkouts_has_no_orders() {
        let start = Instant::now();
        let recorder = Recorder::new(start).unwrap();
        recorder.record(
            Operation::ProductView,
            StatusClass::S2xx,
            start,
            Duration::from_millis(1),
        );
        let report = recorder.report(run(), Duration::from_secs(1));
        assert!(report.orders.is_none());
        assert!(
            serde_json::to_value(&report)
                .unwrap()
                .get("orders")
                .is_none()
        );
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
