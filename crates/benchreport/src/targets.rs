//! The targets of issue 8, computed from the measured runs: each with its measured
//! value, pass or miss, the runs it rests on, and what bound those runs (which CPU
//! was saturated), so a miss says what limits it. Nothing here tunes anything: the
//! workload is the script's, the thresholds are the issue's.

use std::fmt::Write as _;

use crate::model::{Results, Run, thousands};

pub(crate) const BASELINE: &str = "baseline";
pub(crate) const MONOLITH: &str = "monolith";
pub(crate) const MONOLITH_PG: &str = "monolith-pg";
pub(crate) const SPLIT: &str = "split";

/// A group using at least this share of the cores it may use is saturated.
const SATURATED: f64 = 0.85;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Miss,
    /// The runs it needs are not in the results (topology or mix not measured).
    NotMeasured,
}

impl Verdict {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "**pass**",
            Verdict::Miss => "**miss**",
            Verdict::NotMeasured => "not measured",
        }
    }

    fn of(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Miss }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) measured: String,
    pub(crate) verdict: Verdict,
    /// The runs the figure comes from.
    pub(crate) basis: String,
    /// What bound those runs.
    pub(crate) limits: String,
}

impl Target {
    fn not_measured(target: &str, needs: &str) -> Self {
        Self {
            name: target.to_owned(),
            measured: "-".to_owned(),
            verdict: Verdict::NotMeasured,
            basis: format!("needs {needs}"),
            limits: "-".to_owned(),
        }
    }
}

/// Which CPU bound a run, from the cores each group used against what it may use.
pub(crate) fn bound(results: &Results, run: &Run) -> String {
    let server_budget = results.settings.server_cores(&results.machine);
    let loadgen_budget = results.settings.loadgen_cores(&results.machine);
    let server = run.cores("server").unwrap_or(0.0);
    let loadgen = run.cores("loadgen").unwrap_or(0.0);
    let postgres = run.cores("postgres");
    let nats = run.cores("nats");
    let mut parts = Vec::new();
    if server >= SATURATED * server_budget {
        parts.push(format!(
            "server CPU saturated ({server:.2} of {server_budget:.0} cores)"
        ));
    }
    if loadgen >= SATURATED * loadgen_budget {
        parts.push(format!(
            "loadgen CPU saturated ({loadgen:.2} of {loadgen_budget:.0}): the server may have had more to give"
        ));
    }
    if parts.is_empty() {
        let why = if run.mode == "open" && run.kept_up() {
            "below capacity: the offered rate set the pace"
        } else if run.mode == "open" {
            "the server fell behind waiting, not computing (locks, commits, I/O)"
        } else {
            "each user waited on latency (locks, commits, I/O), not on CPU"
        };
        parts.push(format!(
            "no CPU saturated (server {server:.2} of {server_budget:.0} cores, loadgen {loadgen:.2}): {why}"
        ));
    }
    let infra: Vec<String> = [("PostgreSQL", postgres), ("NATS", nats)]
        .into_iter()
        .filter_map(|(name, cores)| cores.map(|c| format!("{name} {c:.2} cores")))
        .collect();
    if !infra.is_empty() {
        parts.push(infra.join(", "));
    }
    parts.join("; ")
}

/// The highest open-loop rate of `mix` that both topologies kept up with; the lowest
/// rate both ran (and `false`) when there is none.
pub(crate) fn common_rate(results: &Results, mix: &str, a: &str, b: &str) -> Option<(f64, bool)> {
    let rates = results.settings.rates.get(mix)?;
    let both = |rate: f64| {
        Some((
            results.open_at(a, mix, rate)?,
            results.open_at(b, mix, rate)?,
        ))
    };
    let kept_up = rates
        .iter()
        .copied()
        .filter(|&rate| both(rate).is_some_and(|(x, y)| x.kept_up() && y.kept_up()))
        .max_by(f64::total_cmp);
    match kept_up {
        Some(rate) => Some((rate, true)),
        None => rates
            .iter()
            .copied()
            .filter(|&rate| both(rate).is_some())
            .min_by(f64::total_cmp)
            .map(|rate| (rate, false)),
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

pub(crate) fn mix_label(mix: &str) -> &str {
    match mix {
        "product" => "product reads",
        "shop" => "shopper mix",
        "checkout" => "checkout",
        other => other,
    }
}

pub(crate) fn targets(results: &Results) -> Vec<Target> {
    let mut out = vec![
        product_reads_vs_baseline(results),
        requests_per_cpu_sec(
            results,
            MONOLITH,
            10_000.0,
            "shopper mix, monolith: ≥ 10,000 requests per server CPU-second",
        ),
        requests_per_cpu_sec(
            results,
            SPLIT,
            3_000.0,
            "shopper mix, split: ≥ 3,000 requests per server CPU-second",
        ),
    ];
    for mix in ["shop", "product", "checkout"] {
        out.extend(split_ratios(results, mix));
    }
    out.push(confirmed_orders(results));
    out
}

/// Whether loadgen used (nearly) all the cores it may: then the server may have had
/// more to give, and the rate says more about the client than the server.
fn loadgen_bound(results: &Results, run: &Run) -> bool {
    run.cores("loadgen").unwrap_or(0.0)
        >= SATURATED * results.settings.loadgen_cores(&results.machine)
}

fn product_reads_vs_baseline(results: &Results) -> Target {
    let name =
        "product reads, monolith: ≥ 50 % of the bare baseline's rate at the same concurrency";
    let (Some(mono), Some(base)) = (
        results.closed(MONOLITH, "product"),
        results.closed(BASELINE, "product"),
    ) else {
        return Target::not_measured(
            name,
            "the closed-loop product runs of the baseline and the monolith",
        );
    };
    let Some(share) = ratio(mono.ok_rate(), base.ok_rate()) else {
        return Target::not_measured(name, "a baseline run with answers");
    };
    // Requests per server CPU-second: the rate each would reach with its cores busy.
    let capacity = mono
        .ok_per_server_cpu_sec()
        .zip(base.ok_per_server_cpu_sec())
        .and_then(|(m, b)| Some((ratio(m, b)?, m, b)));
    let mut measured = format!(
        "{:.0} % of the rate ({} vs {} req/s)",
        share * 100.0,
        thousands(mono.ok_rate()),
        thousands(base.ok_rate())
    );
    if let Some((c, m, b)) = capacity {
        let _ = write!(
            measured,
            "; {:.0} % per server CPU-second ({} vs {})",
            c * 100.0,
            thousands(m),
            thousands(b)
        );
    }
    let mut basis = format!("product mix, closed loop, {}", mono.load());
    // When loadgen was the bottleneck of the baseline run, equal rates say nothing
    // about the servers: judge by what each server spent per request instead.
    let judged = match capacity {
        Some((c, _, _)) if loadgen_bound(results, base) => {
            basis.push_str(
                "; judged per server CPU-second, because loadgen, not the baseline, \
                 was saturated",
            );
            c
        }
        _ => share,
    };
    Target {
        name: name.to_owned(),
        measured,
        verdict: Verdict::of(judged >= 0.5),
        basis,
        limits: format!(
            "monolith: {}. baseline: {}",
            bound(results, mono),
            bound(results, base)
        ),
    }
}

fn requests_per_cpu_sec(results: &Results, topology: &str, aim: f64, name: &str) -> Target {
    let Some(run) = results.closed(topology, "shop") else {
        return Target::not_measured(name, "the closed-loop shop run");
    };
    let Some(per_sec) = run.ok_per_server_cpu_sec() else {
        return Target::not_measured(name, "CPU figures (Linux /proc)");
    };
    let mut measured = format!("{} req/CPU-s", thousands(per_sec));
    let infra: f64 = ["postgres", "nats"]
        .iter()
        .filter_map(|g| run.cpu_us_per_ok(g))
        .sum();
    if infra > 0.0 {
        let with = 1e6 / (1e6 / per_sec + infra);
        let _ = write!(
            measured,
            " ({} counting PostgreSQL and NATS too)",
            thousands(with)
        );
    }
    // The best of the open-loop runs too: CPU per request falls as load rises.
    let best_open = results
        .runs_of(topology, "shop")
        .into_iter()
        .filter(|r| r.mode == "open" && r.kept_up())
        .filter_map(|r| Some((r.ok_per_server_cpu_sec()?, r.load())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut basis = format!("shop mix, closed loop, {}", run.load());
    if let Some((best, load)) = best_open {
        let _ = write!(
            basis,
            "; best open-loop run kept up with: {} req/CPU-s at {load}",
            thousands(best)
        );
    }
    Target {
        name: name.to_owned(),
        measured,
        verdict: Verdict::of(per_sec >= aim),
        basis,
        limits: bound(results, run),
    }
}

fn split_ratios(results: &Results, mix: &str) -> Vec<Target> {
    let p50_name = format!("split / monolith, {}: p50 ≤ 3×", mix_label(mix));
    let cpu_name = format!(
        "split / monolith, {}: CPU-seconds per request ≤ 3×",
        mix_label(mix)
    );
    let Some((rate, kept_up)) = common_rate(results, mix, SPLIT, MONOLITH) else {
        let needs = format!("open-loop {mix} runs of the split and the monolith");
        return vec![
            Target::not_measured(&p50_name, &needs),
            Target::not_measured(&cpu_name, &needs),
        ];
    };
    let (Some(split), Some(mono)) = (
        results.open_at(SPLIT, mix, rate),
        results.open_at(MONOLITH, mix, rate),
    ) else {
        return Vec::new();
    };
    let basis = if kept_up {
        format!(
            "{mix} mix, open loop at {}/s: the highest rate both kept up with",
            thousands(rate)
        )
    } else {
        format!(
            "{mix} mix, open loop at {}/s: NO rate was kept up with by both",
            thousands(rate)
        )
    };
    let limits = format!(
        "split: {}. monolith: {}",
        bound(results, split),
        bound(results, mono)
    );
    #[allow(clippy::cast_precision_loss)]
    let p50 = ratio(split.latency().p50 as f64, mono.latency().p50 as f64);
    let cpu = split
        .cpu_us_per_ok("server")
        .zip(mono.cpu_us_per_ok("server"))
        .and_then(|(s, m)| ratio(s, m));
    let mut out = Vec::new();
    out.push(match p50 {
        Some(x) => Target {
            name: p50_name,
            measured: format!(
                "{x:.2}× ({} vs {})",
                human_us(split.latency().p50),
                human_us(mono.latency().p50)
            ),
            verdict: Verdict::of(x <= 3.0),
            basis: basis.clone(),
            limits: limits.clone(),
        },
        None => Target::not_measured(&p50_name, "latencies"),
    });
    out.push(match cpu {
        Some(x) => Target {
            name: cpu_name,
            measured: format!(
                "{x:.2}× ({:.0} vs {:.0} µs)",
                split.cpu_us_per_ok("server").unwrap_or(0.0),
                mono.cpu_us_per_ok("server").unwrap_or(0.0)
            ),
            verdict: Verdict::of(x <= 3.0),
            basis,
            limits,
        },
        None => Target::not_measured(&cpu_name, "CPU figures (Linux /proc)"),
    });
    out
}

fn confirmed_orders(results: &Results) -> Target {
    let name = "checkout, monolith: ≥ 1,000 confirmed orders/s";
    let best = results
        .runs_of(MONOLITH, "checkout")
        .into_iter()
        .filter_map(|r| Some((r.report.orders.as_ref()?.confirmed_per_sec, r)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let Some((per_sec, run)) = best else {
        return Target::not_measured(name, "the monolith's checkout runs");
    };
    Target {
        name: name.to_owned(),
        measured: format!("{} confirmed orders/s", thousands(per_sec)),
        verdict: Verdict::of(per_sec >= 1000.0),
        basis: format!("checkout mix, the best run: {}", run.load()),
        limits: bound(results, run),
    }
}

/// Microseconds as `850 µs`, `4.2 ms`, `1.50 s`.
pub(crate) fn human_us(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = us as f64;
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 100_000 {
        format!("{:.1} ms", f / 1e3)
    } else if us < 1_000_000 {
        format!("{:.0} ms", f / 1e3)
    } else {
        format!("{:.2} s", f / 1e6)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::tests::run;

    pub(crate) fn results(runs: Vec<crate::model::Run>) -> Results {
        let json = serde_json::json!({
            "command": "bench/topology.sh", "started_at": "now", "build_secs": 1.0,
            "wall_secs": 2.0, "commit": "abc",
            "machine": {"cores": 2, "model": "cpu", "kernel": "6", "memory_gib": 1.0,
                        "load_avg_start": "0", "load_avg_end": "0", "rustc": "rustc"},
            "settings": {"duration_secs": 10.0, "warmup_secs": 1.0, "quick": false,
                         "pinned": true, "server_cpus": "0-0", "loadgen_cpus": "1-1",
                         "rates": {"product": [1000.0, 5000.0], "shop": [100.0, 1000.0],
                                   "checkout": [50.0]},
                         "users": {"product": 32, "shop": 32, "checkout": 16},
                         "users_pool": 32, "request_timeout": "5s", "max_in_flight": 2000,
                         "seed_products": 100, "postgres_cpu": true, "nats_cpu": true},
            "topologies": [],
            "runs": [],
        });
        let mut results: Results = serde_json::from_value(json).unwrap();
        results.runs = runs;
        results
    }

    fn find<'a>(targets: &'a [Target], prefix: &str) -> &'a Target {
        targets
            .iter()
            .find(|t| t.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}: {targets:#?}"))
    }

    #[test]
    fn targets_come_from_the_runs_they_name() {
        let r = results(vec![
            run(BASELINE, "product", ("closed", 32.0), 1_000_000, 200, 9.0),
            run(MONOLITH, "product", ("closed", 32.0), 600_000, 400, 9.0),
            // Monolith shop: 100,000 ok in 10 s on 5 CPU-s = 20,000 req/CPU-s.
            run(MONOLITH, "shop", ("closed", 32.0), 100_000, 900, 5.0),
            run(SPLIT, "shop", ("closed", 32.0), 20_000, 5_000, 9.0),
            run(MONOLITH, "shop", ("open", 100.0), 1_000, 500, 0.1),
            run(MONOLITH, "shop", ("open", 1000.0), 10_000, 600, 0.5),
            run(SPLIT, "shop", ("open", 100.0), 1_000, 1_000, 0.3),
            // The split did not keep up at 1,000/s: the ratios use 100/s.
            run(SPLIT, "shop", ("open", 1000.0), 8_000, 90_000, 9.0),
            // 5,000 ok of which half confirmed over 10 s: 250 orders/s.
            run(MONOLITH, "checkout", ("closed", 16.0), 5_000, 15_000, 9.0),
        ]);
        let t = targets(&r);
        let reads = find(&t, "product reads, monolith");
        assert_eq!(reads.verdict, Verdict::Pass, "{reads:?}");
        assert!(reads.measured.starts_with("60 % of the rate"), "{reads:?}");
        // Both at 0.9 server cores: 66,667 vs 111,111 per server CPU-second.
        assert!(
            reads.measured.contains("; 60 % per server CPU-second"),
            "{reads:?}"
        );
        // 1.0 core of 1 on the server: saturated, said so.
        assert!(reads.limits.contains("server CPU saturated"), "{reads:?}");

        let mono = find(&t, "shopper mix, monolith");
        assert_eq!(mono.verdict, Verdict::Pass, "{mono:?}");
        assert!(mono.measured.starts_with("20,000"), "{mono:?}");
        let split = find(&t, "shopper mix, split");
        // 20,000 ok on 9 CPU-s: 2,222 req/CPU-s.
        assert_eq!(split.verdict, Verdict::Miss, "{split:?}");
        assert!(split.measured.starts_with("2,222"), "{split:?}");

        let p50 = find(&t, "split / monolith, shopper mix: p50");
        assert!(p50.basis.contains("100/s"), "{p50:?}");
        assert!(p50.measured.starts_with("2.00×"), "{p50:?}");
        assert_eq!(p50.verdict, Verdict::Pass);
        // 300 µs vs 100 µs per request at 100/s.
        let cpu = find(&t, "split / monolith, shopper mix: CPU");
        assert!(cpu.measured.starts_with("3.00×"), "{cpu:?}");
        assert_eq!(cpu.verdict, Verdict::Pass);

        let orders = find(&t, "checkout, monolith");
        assert_eq!(orders.verdict, Verdict::Miss, "{orders:?}");
        assert!(orders.measured.starts_with("250 "), "{orders:?}");

        // Not measured: the product and checkout mixes of the split.
        assert_eq!(
            find(&t, "split / monolith, product reads: p50").verdict,
            Verdict::NotMeasured
        );
    }

    #[test]
    fn a_client_bound_baseline_is_judged_per_server_cpu_second() {
        let mut base = run(BASELINE, "product", ("closed", 32.0), 500_000, 200, 1.0);
        let mut mono = run(MONOLITH, "product", ("closed", 32.0), 450_000, 300, 4.0);
        // loadgen kept its one core busy in both runs.
        for r in [&mut base, &mut mono] {
            if let Some(cpu) = r.report.cpu.as_mut() {
                if let Some(g) = cpu.groups.get_mut("loadgen") {
                    g.cores = 0.97;
                }
            }
        }
        let t = targets(&results(vec![base, mono]));
        let reads = find(&t, "product reads, monolith");
        // 90 % of the rate, but 500,000 vs 112,500 per CPU-second: 22 %.
        assert!(reads.measured.starts_with("90 % of the rate"), "{reads:?}");
        assert!(
            reads.measured.contains("22 % per server CPU-second"),
            "{reads:?}"
        );
        assert_eq!(reads.verdict, Verdict::Miss, "{reads:?}");
        assert!(reads.basis.contains("loadgen"), "{reads:?}");
        assert!(reads.limits.contains("loadgen CPU saturated"), "{reads:?}");
    }

    #[test]
    fn without_a_common_kept_up_rate_the_lowest_is_used_and_said() {
        let r = results(vec![
            run(MONOLITH, "shop", ("open", 100.0), 1_000, 500, 0.1),
            run(SPLIT, "shop", ("open", 100.0), 500, 900_000, 1.0),
            run(MONOLITH, "shop", ("open", 1000.0), 10_000, 600, 0.5),
            run(SPLIT, "shop", ("open", 1000.0), 500, 900_000, 1.0),
        ]);
        assert_eq!(
            common_rate(&r, "shop", SPLIT, MONOLITH),
            Some((100.0, false))
        );
        let t = targets(&r);
        let p50 = find(&t, "split / monolith, shopper mix: p50");
        assert_eq!(p50.verdict, Verdict::Miss);
        assert!(p50.basis.contains("NO rate"), "{p50:?}");
    }

    #[test]
    fn human_latencies() {
        assert_eq!(human_us(850), "850 µs");
        assert_eq!(human_us(4_210), "4.2 ms");
        assert_eq!(human_us(420_000), "420 ms");
        assert_eq!(human_us(1_500_000), "1.50 s");
    }
}
