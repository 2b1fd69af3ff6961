//! Recording (one HDR histogram per operation, in microseconds) and, at the end, the
//! [`Report`] made of it (its table and JSON are the `loadreport` crate's).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use loadreport::{Classes, Latency, OpReport, OrdersReport, Report, RunInfo, StatusClass};
use tokio::time::Instant;

use crate::LoadgenError;
use crate::mix::Operation;

/// The smallest and largest latency a histogram holds (µs), and its precision.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

struct Stats {
    histogram: Histogram<u64>,
    classes: Classes,
}

impl Stats {
    fn new() -> Result<Self, LoadgenError> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
                .map_err(LoadgenError::Histogram)?,
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

    /// The percentiles and counts over `secs` measured seconds.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    fn report(&self, secs: f64) -> OpReport {
        let h = &self.histogram;
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
        OpReport {
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
            status: self.classes,
        }
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

    /// What the orders came to over `secs` measured seconds.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    fn report(&self, secs: f64) -> OrdersReport {
        let failed = self.failed.values().sum::<u64>();
        let pending = self.pending.len() as u64;
        OrdersReport {
            placed: self.confirmed + failed + pending,
            confirmed: self.confirmed,
            failed,
            pending,
            confirmed_per_sec: if secs > 0.0 {
                self.confirmed as f64 / secs
            } else {
                0.0
            },
            pending_at_answer: self.pending_at_answer,
            failure_reasons: self.failed.clone(),
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
    /// `--trace`: every answer, warmup included.
    trace: Option<crate::trace::Trace>,
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
    pub(crate) fn new(measure_from: Instant) -> Result<Self, LoadgenError> {
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
            trace: None,
        })
    }

    /// Also writes every answer to `trace`.
    pub(crate) fn with_trace(mut self, trace: Option<crate::trace::Trace>) -> Self {
        self.trace = trace;
        self
    }

    /// One answer, to the trace if there is one.
    pub(crate) fn trace(&self, step: &crate::scheduler::Step, latency: Duration) {
        if let Some(trace) = &self.trace {
            trace.write(step, latency);
        }
    }

    /// Flushes the trace.
    pub(crate) fn finish_trace(&self) -> Result<(), LoadgenError> {
        self.trace
            .as_ref()
            .map_or(Ok(()), crate::trace::Trace::finish)
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
            .then(|| inner.orders.report(secs));
        Report {
            orders,
            cpu: None,
            operations: inner
                .operations
                .iter()
                .filter(|(_, stats)| !stats.histogram.is_empty())
                .map(|(op, stats)| (op.name().to_owned(), stats.report(secs)))
                .collect(),
            total: inner.total.report(secs),
            dropped: inner.dropped,
            warmup_requests: inner.warmup,
            duration_secs: secs,
            run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunInfo {
        RunInfo {
            target: "http://127.0.0.1:1".into(),
            mode: "open".into(),
            mix: "shop".into(),
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
}
