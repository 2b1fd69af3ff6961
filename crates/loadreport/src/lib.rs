//! The loadgen report: the numbers of one `bazaar loadgen` run, as the table it prints
//! and the JSON it writes with `--json`. bench-report reads that JSON back with these
//! same types, so the file format is declared once, here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How a request ended: the class of its status, or no status at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    S2xx,
    S3xx,
    S4xx,
    S5xx,
    /// Connect/timeout/body errors: no HTTP status was received.
    Transport,
}

impl StatusClass {
    pub fn of(status: u16) -> Self {
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classes {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    pub transport: u64,
}

impl Classes {
    /// Counts one request that ended as `class`.
    pub fn add(&mut self, class: StatusClass) {
        match class {
            StatusClass::S2xx => self.s2xx += 1,
            StatusClass::S3xx => self.s3xx += 1,
            StatusClass::S4xx => self.s4xx += 1,
            StatusClass::S5xx => self.s5xx += 1,
            StatusClass::Transport => self.transport += 1,
        }
    }

    /// Server errors and transport errors: what "errors" means in the progress line.
    pub fn errors(&self) -> u64 {
        self.s5xx + self.transport
    }
}

/// How the run was set up (echoed in the report).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub target: String,
    /// `"open"` (fixed arrival rate) or `"closed"` (N users back to back).
    pub mode: String,
    pub mix: String,
    /// Arrivals per second (open loop).
    pub rate: Option<f64>,
    /// Concurrent users (closed loop).
    pub users: Option<u64>,
    pub warmup_secs: f64,
}

/// The loadgen report. `--json PATH` writes it as one JSON object (every field below
/// is read back as it is, so a field added here is one the results files must carry):
///
/// ```json
/// {
///   "target": "http://127.0.0.1:8080", "mode": "open" | "closed",
///   "mix": "shop" | "browse" | "product" | "checkout",
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub duration_secs: f64,
    pub dropped: u64,
    pub warmup_requests: u64,
    pub total: OpReport,
    pub operations: BTreeMap<String, OpReport>,
    /// Present when the run made checkouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<OrdersReport>,
    /// CPU over the measured window (Linux): loadgen's own, and the `--cpu-pid`
    /// groups'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReport>,
}

/// The orders of the measured checkouts. An order is counted by its final status:
/// the checkout's answer when terminal (201), otherwise what reading the order again
/// after the run said (loadgen waits up to `--settle` for pending ones to end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrdersReport {
    /// Checkouts answered with an order (2xx): confirmed + failed + pending.
    pub placed: u64,
    pub confirmed: u64,
    pub failed: u64,
    /// Still pending when loadgen stopped waiting.
    pub pending: u64,
    /// `confirmed` over the measured duration.
    pub confirmed_per_sec: f64,
    /// How many were still pending when their checkout answered (202).
    pub pending_at_answer: u64,
    /// Failed orders by `failure_reason`.
    pub failure_reasons: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpReport {
    pub count: u64,
    pub rate: f64,
    pub latency_us: Latency,
    pub status: Classes,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

/// The CPU of the measured window, per group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuReport {
    pub window_secs: f64,
    pub groups: BTreeMap<String, CpuGroup>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuGroup {
    /// Processes whose CPU is in the numbers.
    pub processes: u32,
    /// Processes that could not be read at both ends of the window (exited, or not
    /// ours to read): not in the numbers.
    pub unreadable: u32,
    pub cpu_secs: f64,
    /// `cpu_secs` over the window: 1.0 is one core kept busy.
    pub cores: f64,
    /// `cpu_secs` per measured request, in microseconds.
    pub per_request_us: f64,
}

/// Microseconds as a short human string: `850µs`, `4.21ms`, `1.50s`.
pub fn human_us(us: u64) -> String {
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

    fn op(count: u64, p50: u64) -> OpReport {
        let mut status = Classes::default();
        for class in [
            StatusClass::of(200),
            StatusClass::of(404),
            StatusClass::of(503),
        ] {
            status.add(class);
        }
        status.add(StatusClass::Transport);
        OpReport {
            count,
            rate: 12.5,
            latency_us: Latency {
                p50,
                p90: p50 * 2,
                p99: p50 * 3,
                p99_9: p50 * 4,
                max: p50 * 5,
                mean: 1.5,
            },
            status,
        }
    }

    fn report() -> Report {
        Report {
            run: RunInfo {
                target: "http://127.0.0.1:8080".into(),
                mode: "open".into(),
                mix: "checkout".into(),
                rate: Some(50.0),
                users: None,
                warmup_secs: 1.0,
            },
            duration_secs: 4.0,
            dropped: 2,
            warmup_requests: 7,
            total: op(50, 900),
            operations: BTreeMap::from([("checkout".to_owned(), op(25, 1_500))]),
            orders: Some(OrdersReport {
                placed: 25,
                confirmed: 24,
                failed: 1,
                pending: 0,
                confirmed_per_sec: 6.0,
                pending_at_answer: 3,
                failure_reasons: BTreeMap::from([("out_of_stock".to_owned(), 1)]),
            }),
            cpu: Some(CpuReport {
                window_secs: 4.0,
                groups: BTreeMap::from([(
                    "loadgen".to_owned(),
                    CpuGroup {
                        processes: 1,
                        unreadable: 0,
                        cpu_secs: 1.0,
                        cores: 0.25,
                        per_request_us: 10_000.0,
                    },
                )]),
            }),
        }
    }

    #[test]
    fn the_json_is_flat_and_reads_back_as_written() {
        let written = report();
        let json = serde_json::to_value(&written).unwrap();
        // The run's settings sit at the top level, next to the numbers.
        assert_eq!(json["mode"], "open");
        assert_eq!(json["rate"], 50.0);
        assert!(json["users"].is_null());
        assert_eq!(json["total"]["status"]["2xx"], 1);
        assert_eq!(json["total"]["status"]["transport"], 1);
        assert_eq!(json["operations"]["checkout"]["latency_us"]["p99_9"], 6_000);
        let read: Report = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), json);
        assert_eq!(read.total.status.errors(), 2);
        assert_eq!(read.orders, written.orders);
    }

    #[test]
    fn orders_and_cpu_are_left_out_when_absent_and_read_as_absent() {
        let mut written = report();
        written.orders = None;
        written.cpu = None;
        let json = serde_json::to_value(&written).unwrap();
        assert!(json.get("orders").is_none() && json.get("cpu").is_none());
        let read: Report = serde_json::from_value(json).unwrap();
        assert!(read.orders.is_none() && read.cpu.is_none());
        assert!(!read.to_string().contains("orders:"));
    }

    #[test]
    fn the_table_has_a_row_per_operation_then_the_total() {
        let table = report().to_string();
        let lines: Vec<_> = table.lines().collect();
        assert!(
            lines[0].starts_with(
                "bazaar loadgen: checkout mix against http://127.0.0.1:8080, open loop, rate 50/s"
            ),
            "{table}"
        );
        assert!(lines[1].starts_with("operation"), "{table}");
        assert!(lines[2].starts_with("checkout"), "{table}");
        assert!(lines[2].contains("1.50ms"), "{table}");
        assert!(lines[3].starts_with("total"), "{table}");
        assert!(
            table.contains("orders: 25 placed, 24 confirmed (6.0/s), 1 failed (out_of_stock 1)"),
            "{table}"
        );
        assert!(
            table.contains("cpu over 4.0s: loadgen 1.00s (0.25 cores"),
            "{table}"
        );
        assert!(
            table.ends_with("warmup requests (not counted): 7"),
            "{table}"
        );
    }

    #[test]
    fn status_classes_and_human_durations() {
        assert_eq!(StatusClass::of(201), StatusClass::S2xx);
        assert_eq!(StatusClass::of(302), StatusClass::S3xx);
        assert_eq!(StatusClass::of(409), StatusClass::S4xx);
        assert_eq!(StatusClass::of(503), StatusClass::S5xx);
        assert_eq!(human_us(850), "850µs");
        assert_eq!(human_us(4_210), "4.21ms");
        assert_eq!(human_us(1_500_000), "1.50s");
    }
}
