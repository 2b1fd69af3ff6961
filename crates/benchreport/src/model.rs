//! The results file `bench/topology.sh` writes (`bench/results/topology.json`): one
//! object with the machine, the settings, the topologies and one entry per loadgen
//! run (the loadgen `--json` report itself, plus peak RSS per process), and the
//! numbers derived from each run.

use std::collections::BTreeMap;

use loadreport::{CpuGroup, Latency, Report};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Results {
    pub(crate) command: String,
    pub(crate) started_at: String,
    pub(crate) build_secs: f64,
    pub(crate) wall_secs: f64,
    pub(crate) commit: String,
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
    pub(crate) topologies: Vec<Topology>,
    pub(crate) runs: Vec<Run>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cores: u32,
    pub(crate) model: String,
    pub(crate) kernel: String,
    pub(crate) memory_gib: Option<f64>,
    pub(crate) load_avg_start: String,
    pub(crate) load_avg_end: String,
    pub(crate) rustc: String,
}

#[derive(Debug, Clone, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // the file's shape: four independent facts
pub(crate) struct Settings {
    pub(crate) duration_secs: f64,
    pub(crate) warmup_secs: f64,
    pub(crate) quick: bool,
    pub(crate) pinned: bool,
    pub(crate) server_cpus: Option<String>,
    pub(crate) loadgen_cpus: Option<String>,
    pub(crate) rates: BTreeMap<String, Vec<f64>>,
    pub(crate) users: BTreeMap<String, u64>,
    pub(crate) users_pool: u32,
    pub(crate) request_timeout: String,
    pub(crate) max_in_flight: u64,
    pub(crate) seed_products: u32,
    pub(crate) postgres_cpu: bool,
    pub(crate) nats_cpu: bool,
    #[serde(default)]
    pub(crate) extra_env: Vec<String>,
}

impl Settings {
    /// How many cores a `taskset -c` list such as `0-3,6` names.
    fn cores_in(list: Option<&str>) -> Option<f64> {
        let mut n = 0_u32;
        for part in list?.split(',') {
            let count = if let Some((a, b)) = part.split_once('-') {
                b.trim()
                    .parse::<u32>()
                    .ok()?
                    .checked_sub(a.trim().parse().ok()?)?
                    + 1
            } else {
                part.trim().parse::<u32>().ok()?;
                1
            };
            n += count;
        }
        Some(f64::from(n))
    }

    /// The cores the servers may use (all of them when not pinned).
    pub(crate) fn server_cores(&self, machine: &Machine) -> f64 {
        Self::cores_in(self.server_cpus.as_deref()).unwrap_or(f64::from(machine.cores))
    }

    /// The cores loadgen may use (all of them when not pinned).
    pub(crate) fn loadgen_cores(&self, machine: &Machine) -> f64 {
        Self::cores_in(self.loadgen_cpus.as_deref()).unwrap_or(f64::from(machine.cores))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Topology {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) processes: u32,
    pub(crate) audit: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Run {
    pub(crate) topology: String,
    pub(crate) mix: String,
    /// `open` (fixed arrival rate) or `closed` (users).
    pub(crate) mode: String,
    pub(crate) rate: Option<f64>,
    pub(crate) users: Option<u64>,
    #[serde(default)]
    pub(crate) peak_rss_kb: BTreeMap<String, u64>,
    pub(crate) report: Report,
}

/// Open-loop runs that got less than this share of the offered rate did not keep up.
const KEPT_UP_SHARE: f64 = 0.95;
/// Nor did runs with more than this share of errors (or any dropped arrival).
const KEPT_UP_ERRORS: f64 = 0.01;
/// Nor did open-loop runs whose p99 (of every request) passed this: the arrivals were
/// answered, but from a growing queue (a checkout run answering its rate with a p50
/// of seconds is saturated, not keeping up).
const KEPT_UP_P99_US: u64 = 1_000_000;

impl Run {
    fn group(&self, name: &str) -> Option<&CpuGroup> {
        self.report.cpu.as_ref()?.groups.get(name)
    }

    /// Successful (2xx) answers per second.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn ok_rate(&self) -> f64 {
        per_sec(self.report.total.status.s2xx, self.report.duration_secs)
    }

    /// The latency the tables and the chart show: of every request, except in the
    /// checkout mix, where it is the checkouts' own (the add-to-cart requests that
    /// make half the mix are far quicker, and a median across both would land on
    /// whichever half is larger).
    pub(crate) fn latency(&self) -> Latency {
        let own = (self.mix == "checkout")
            .then(|| self.report.operations.get("checkout"))
            .flatten();
        own.unwrap_or(&self.report.total).latency_us
    }

    /// CPU microseconds of `group` per successful request.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn cpu_us_per_ok(&self, group: &str) -> Option<f64> {
        let ok = self.report.total.status.s2xx;
        let g = self.group(group)?;
        (ok > 0).then(|| g.cpu_secs * 1e6 / ok as f64)
    }

    /// Successful requests per CPU-second of the server processes.
    pub(crate) fn ok_per_server_cpu_sec(&self) -> Option<f64> {
        self.cpu_us_per_ok("server")
            .filter(|us| *us > 0.0)
            .map(|us| 1e6 / us)
    }

    /// Cores `group` kept busy over the window.
    pub(crate) fn cores(&self, group: &str) -> Option<f64> {
        self.group(group).map(|g| g.cores)
    }

    /// Open loop: the server answered (nearly) every arrival, on time enough not to
    /// drop or fail, with a p99 under a second. Closed loop: no failures to speak of. Failures are 5xx and
    /// transport errors: a 4xx is the workload's own (e.g. a checkout of a cart that
    /// a confirmed order just emptied), not the server giving way.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn kept_up(&self) -> bool {
        let total = self.report.total.count.max(1) as f64;
        let s = self.report.total.status;
        let errors_ok = ((s.s5xx + s.transport) as f64) / total <= KEPT_UP_ERRORS;
        match self.rate {
            Some(rate) if self.mode == "open" => {
                errors_ok
                    && self.report.dropped == 0
                    && per_sec(self.report.total.count, self.report.duration_secs)
                        >= KEPT_UP_SHARE * rate
                    && self.report.total.latency_us.p99 <= KEPT_UP_P99_US
            }
            _ => errors_ok,
        }
    }

    /// The load, as the tables show it: `500/s` or `32 users`.
    pub(crate) fn load(&self) -> String {
        match (self.mode.as_str(), self.rate, self.users) {
            ("open", Some(rate), _) => format!("{}/s", thousands(rate)),
            (_, _, Some(users)) => format!("{users} users"),
            _ => "?".to_owned(),
        }
    }

    pub(crate) fn peak_rss_mb_total(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let kb = self.peak_rss_kb.values().sum::<u64>() as f64;
        kb / 1024.0
    }
}

#[allow(clippy::cast_precision_loss)]
fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// `12,345` (rounded).
pub(crate) fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = value.abs().round() as u64;
    let out = count(n);
    if value < 0.0 && n > 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Results {
    /// The runs of one topology and mix, open loop by rate, then the closed loop.
    pub(crate) fn runs_of<'a>(&'a self, topology: &'a str, mix: &'a str) -> Vec<&'a Run> {
        let mut runs: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.topology == topology && r.mix == mix)
            .collect();
        runs.sort_by(|a, b| {
            (a.mode != "open")
                .cmp(&(b.mode != "open"))
                .then(a.rate.unwrap_or(0.0).total_cmp(&b.rate.unwrap_or(0.0)))
        });
        runs
    }

    pub(crate) fn closed(&self, topology: &str, mix: &str) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.topology == topology && r.mix == mix && r.mode == "closed")
    }

    pub(crate) fn open_at(&self, topology: &str, mix: &str, rate: f64) -> Option<&Run> {
        self.runs.iter().find(|r| {
            r.topology == topology
                && r.mix == mix
                && r.mode == "open"
                && r.rate.is_some_and(|x| (x - rate).abs() < 1e-9)
        })
    }

    /// The mixes in the order the settings list them (product, shop, checkout).
    pub(crate) fn mixes(&self) -> Vec<String> {
        let order = ["product", "browse", "shop", "checkout"];
        let mut mixes: Vec<String> = self.runs.iter().map(|r| r.mix.clone()).collect();
        mixes.sort_by_key(|m| order.iter().position(|o| o == m).unwrap_or(order.len()));
        mixes.dedup();
        mixes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run with the numbers that matter to the derived figures.
    pub(crate) fn run(
        topology: &str,
        mix: &str,
        load: (&str, f64),
        ok: u64,
        p50_us: u64,
        server_cpu_secs: f64,
    ) -> Run {
        let (mode, value) = load;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let users = value as u64;
        let rate = if mode == "open" { Some(value) } else { None };
        let users = if mode == "closed" { Some(users) } else { None };
        // One operation's numbers as `bazaar loadgen --json` writes them.
        let op = |count: u64, p50: u64| {
            serde_json::json!({
                "count": count, "rate": count / 10,
                "latency_us": {"p50": p50, "p90": p50 * 2, "p99": p50 * 4, "p99_9": p50 * 6,
                               "max": p50 * 8, "mean": p50},
                "status": {"2xx": count, "3xx": 0, "4xx": 0, "5xx": 0, "transport": 0}
            })
        };
        let cpu_group = |cpu_secs: f64| {
            serde_json::json!({"processes": 1, "unreadable": 0, "cpu_secs": cpu_secs,
                               "cores": cpu_secs / 10.0, "per_request_us": 0.0})
        };
        let json = serde_json::json!({
            "topology": topology, "mix": mix, "mode": mode, "rate": rate, "users": users,
            "peak_rss_kb": {"bazaar": 40960},
            "report": {
                "target": "http://127.0.0.1:8080", "mode": mode, "mix": mix,
                "rate": rate, "users": users, "warmup_secs": 1.0,
                "duration_secs": 10.0, "dropped": 0, "warmup_requests": 0,
                "total": op(ok, p50_us),
                "operations": {"checkout": op(ok / 2, p50_us * 2)},
                "orders": if mix == "checkout" {
                    Some(serde_json::json!({"placed": ok / 2, "confirmed": ok / 2,
                        "failed": 0, "pending": 0, "pending_at_answer": 0,
                        "confirmed_per_sec": f64::from(u32::try_from(ok / 2).unwrap()) / 10.0,
                        "failure_reasons": {}}))
                } else { None },
                "cpu": {"window_secs": 10.0, "groups": {
                    "server": cpu_group(server_cpu_secs),
                    "loadgen": cpu_group(5.0)}}
            }
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn derived_figures() {
        let r = run("monolith", "shop", ("open", 1000.0), 10_000, 800, 0.5);
        assert!((r.ok_rate() - 1000.0).abs() < 1e-9);
        assert!((r.cpu_us_per_ok("server").unwrap() - 50.0).abs() < 1e-9);
        assert!((r.ok_per_server_cpu_sec().unwrap() - 20_000.0).abs() < 1e-6);
        assert!(r.kept_up());
        assert_eq!(r.load(), "1,000/s");
        // Latency: of every request, but of the checkouts alone in the checkout mix.
        assert_eq!(r.latency().p50, 800);
        let c = run("monolith", "checkout", ("open", 50.0), 500, 800, 0.5);
        assert_eq!(c.latency().p50, 1600);
        // 9,000 answers in 10 s at 1,000/s offered: did not keep up.
        let slow = run("split", "shop", ("open", 1000.0), 9_000, 800, 0.5);
        assert!(!slow.kept_up());
        // Every arrival answered, but a p99 past 1 s (p50 300 ms, p99 1.2 s): queueing.
        let queued = run("split", "shop", ("open", 1000.0), 10_000, 300_000, 0.5);
        assert!(!queued.kept_up());
        assert_eq!(
            run("m", "shop", ("closed", 32.0), 1, 1, 1.0).load(),
            "32 users"
        );
    }

    #[test]
    fn the_committed_results_read_back() {
        let text = include_str!("../../../bench/results/topology.json");
        let results: Results = serde_json::from_str(text).unwrap();
        assert!(!results.runs.is_empty());
        for run in &results.runs {
            assert_eq!(run.report.run.mix, run.mix);
            assert_eq!(run.report.run.mode, run.mode);
            assert!(run.report.total.count > 0, "{}/{}", run.topology, run.mix);
        }
    }

    #[test]
    fn core_lists() {
        assert_eq!(Settings::cores_in(Some("0-0")), Some(1.0));
        assert_eq!(Settings::cores_in(Some("0-3,6")), Some(5.0));
        assert_eq!(Settings::cores_in(Some("1")), Some(1.0));
        assert_eq!(Settings::cores_in(None), None);
        assert_eq!(Settings::cores_in(Some("x")), None);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(f64::NAN), "n/a");
        assert_eq!(thousands(-1234.4), "-1,234");
        assert_eq!(count(1_000), "1,000");
    }
}
