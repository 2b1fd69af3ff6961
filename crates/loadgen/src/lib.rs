//! `bazaar loadgen`: drives a running bazaar with a realistic shopper mix and reports
//! latency percentiles and outcomes per operation.
//!
//! - [`mix`]: the operations and their weights (shop, browse, product, checkout, web);
//! - [`scheduler`]: open loop (`--rate`, latency from the intended send time) and
//!   closed loop (`--users`);
//! - [`shopper`]: the HTTP requests themselves, against the public API;
//! - [`recorder`]: HDR histograms per operation and the orders' outcomes, made into
//!   the report at the end (the report's JSON and table are the `loadreport` crate's,
//!   which bench-report reads too);
//! - [`cpu`]: CPU time of the server processes and of loadgen over the measured
//!   window (`--cpu-pid`).
//!
//! Every run is bounded: by `--duration` (+ `--warmup`), by `--max-requests`, and by
//! the per-request timeout for the drain at the end. Test traffic goes to loopback
//! only unless `--allow-remote` says otherwise.

mod cpu;
mod error;
mod mix;
mod recorder;
mod scheduler;
mod shopper;
mod trace;

use std::io::{IsTerminal as _, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use loadreport::{RunInfo, human_us};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::time::Instant;

pub use crate::error::LoadgenError;
use crate::mix::{Mix, Sampler};
use crate::recorder::Recorder;
use crate::scheduler::Bounds;
use crate::shopper::Shopper;

/// The longest run loadgen agrees to (warmup included).
const MAX_RUN: Duration = Duration::from_secs(3600);

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("load").required(true).args(["rate", "users"])))]
pub struct LoadgenArgs {
    /// The bazaar to drive (http:// only), e.g. http://127.0.0.1:8080. Loopback only,
    /// unless --allow-remote.
    #[arg(long, value_name = "URL")]
    target: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// The workload: shop (listing 1, product 10, add to cart 2, view cart 3,
    /// checkout 1), browse (listing 1, product 10), product (product views only),
    /// checkout (add to cart 1, checkout 1) or web (the shop mix on the HTML pages:
    /// home, product, add to cart, cart, checkout form).
    #[arg(long, value_enum, default_value = "shop")]
    mix: Mix,
    /// Open loop: arrivals per second, sent on schedule whatever the responses do.
    #[arg(long, value_name = "R", conflicts_with = "users")]
    rate: Option<f64>,
    /// Closed loop: this many users, each sending its next request when the previous
    /// one has been answered.
    #[arg(long, value_name = "N")]
    users: Option<u64>,
    /// How long to measure, e.g. 30s, 2m, 500ms.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    duration: Duration,
    /// Load before the measurement, not in the report, e.g. 5s.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write every answer (warmup included) to this file, one JSON line each:
    /// `at_ms` (when it ended, Unix ms), `op`, `status` (absent on a transport
    /// error), `latency_us`, and a checkout's `order` id when the answer carried one.
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
    /// How many users to register up front (unique emails per run); requests are
    /// spread over them.
    #[arg(long, default_value_t = 20, value_name = "N")]
    users_pool: u32,
    /// Never send more than this many requests in all (warmup included).
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    max_requests: u64,
    /// Open loop: at most this many requests in flight; arrivals beyond are counted
    /// as dropped.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_in_flight: usize,
    /// Per-request timeout, e.g. 10s.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Seed of the operation and product choices (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// No live progress line on stderr (it is off anyway when stderr is not a TTY).
    #[arg(long)]
    no_progress: bool,
    /// After the run, how long to keep reading orders that were still pending when
    /// their checkout answered (202), so the report counts how they ended.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    settle: Duration,
    /// Report the CPU time this process spends over the measured window (Linux,
    /// from /proc), summed under NAME with every other PID of that name, e.g.
    /// `--cpu-pid bazaar=1234`. Repeatable.
    #[arg(long, value_name = "NAME=PID", value_parser = cpu::parse_watch)]
    cpu_pid: Vec<cpu::Watch>,
}

/// `30s`, `2m`, `500ms`, `1.5s`, `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m or h), e.g. 30s"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration, e.g. 30s"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// The target's base URL (no trailing slash), refused when it is not http:// or,
/// without `allow_remote`, not loopback.
fn check_target(target: &str, allow_remote: bool) -> Result<String, LoadgenError> {
    let url = reqwest::Url::parse(target).map_err(|source| LoadgenError::TargetUrl {
        target: target.to_owned(),
        source,
    })?;
    if url.scheme() != "http" {
        return Err(LoadgenError::TargetScheme {
            scheme: url.scheme().to_owned(),
        });
    }
    let Some(host) = url.host_str() else {
        return Err(LoadgenError::TargetHost {
            target: target.to_owned(),
        });
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        return Err(LoadgenError::TargetRemote {
            target: target.to_owned(),
        });
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `bazaar loadgen`: prepares the users, drives the target for the warmup and the
/// measured window, then prints the report (and writes it as JSON with `--json`).
pub async fn run(args: LoadgenArgs) -> Result<(), LoadgenError> {
    let base = check_target(&args.target, args.allow_remote)?;
    if args.duration.is_zero() {
        return Err(LoadgenError::ZeroDuration);
    }
    if args.duration + args.warmup > MAX_RUN || args.settle > MAX_RUN {
        return Err(LoadgenError::TooLong {
            max_secs: MAX_RUN.as_secs(),
        });
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
            return Err(LoadgenError::Rate);
        }
    }
    if args.users == Some(0) || args.max_in_flight == 0 || args.max_requests == 0 {
        return Err(LoadgenError::Counts);
    }

    let seed = args.seed.unwrap_or_else(rand::random);
    let shopper = Arc::new(
        Shopper::prepare(
            &base,
            args.timeout,
            if args.mix.needs_users() {
                args.users_pool.max(1)
            } else {
                0
            },
            seed,
        )
        .await?,
    );
    eprintln!(
        "loadgen: {} products, {} users; {} mix against {base} for {:.1}s (+{:.1}s warmup), seed {seed}",
        shopper.product_count(),
        shopper.user_count(),
        args.mix.name(),
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
    );

    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let trace = args
        .trace
        .as_deref()
        .map(crate::trace::Trace::create)
        .transpose()?;
    let recorder = Arc::new(Recorder::new(measure_from)?.with_trace(trace));
    // CPU is sampled at both ends of the measured window, on its own task.
    let cpu_window = {
        let watches = args.cpu_pid.clone();
        let end = measure_from + args.duration;
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            let before = cpu::sample(&watches);
            tokio::time::sleep_until(end).await;
            (before, cpu::sample(&watches))
        })
    };
    let bounds = Bounds {
        until: args.warmup + args.duration,
        max_requests: args.max_requests,
        drain: args.timeout + Duration::from_secs(1),
    };
    let progress = progress(&args, Arc::clone(&recorder), start);
    let sampler = Sampler::new(args.mix.weights());

    if let Some(rate) = args.rate {
        let mut rng = StdRng::seed_from_u64(seed);
        let shopper = Arc::clone(&shopper);
        scheduler::open_loop(
            rate,
            start,
            bounds,
            args.max_in_flight,
            Arc::clone(&recorder),
            move |i| {
                let op = sampler.sample(&mut rng);
                let plan = shopper.plan(op, i, &mut rng);
                let shopper = Arc::clone(&shopper);
                async move { shopper.perform(plan).await }
            },
        )
        .await;
    } else if let Some(users) = args.users {
        let shopper = Arc::clone(&shopper);
        let rngs: Arc<Vec<std::sync::Mutex<StdRng>>> = Arc::new(
            (0..users)
                .map(|u| std::sync::Mutex::new(StdRng::seed_from_u64(seed.wrapping_add(u))))
                .collect(),
        );
        scheduler::closed_loop(
            users,
            start,
            bounds,
            Arc::clone(&recorder),
            move |user, _| {
                let plan = {
                    let Some(rng) = usize::try_from(user).ok().and_then(|u| rngs.get(u)) else {
                        return nothing();
                    };
                    let mut rng = rng
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let op = sampler.sample(&mut *rng);
                    shopper.plan(op, user, &mut *rng)
                };
                let shopper = Arc::clone(&shopper);
                Box::pin(async move { shopper.perform(plan).await })
            },
        )
        .await;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    // A run cut short by --max-requests waits here for the window's end: the CPU
    // numbers always cover the whole window.
    let cpu_samples = cpu_window.await.ok();
    recorder.finish_trace()?;
    let pending = recorder.take_pending_orders();
    if !pending.is_empty() {
        eprintln!(
            "loadgen: {} orders were pending when answered; reading them for up to {:.1}s",
            pending.len(),
            args.settle.as_secs_f64()
        );
        recorder.settled(shopper.settle(pending, args.settle).await);
    }

    let mut report = recorder.report(
        RunInfo {
            target: base,
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            }
            .to_owned(),
            mix: args.mix.name().to_owned(),
            rate: args.rate,
            users: args.users,
            warmup_secs: args.warmup.as_secs_f64(),
        },
        args.duration,
    );
    report.cpu = cpu_samples
        .map(|(before, after)| cpu::report(&args.cpu_pid, &before, &after, report.total.count));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(LoadgenError::Encode)?;
        std::fs::write(path, json + "\n").map_err(|source| LoadgenError::Write {
            path: path.clone(),
            source,
        })?;
    }
    // A closed pipe (`bazaar loadgen ... | head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{report}");
    Ok(())
}

type Planned = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<scheduler::Step>> + Send>>;

/// An arrival that sends nothing (never happens: every user index has an RNG).
fn nothing() -> Planned {
    Box::pin(async { Vec::new() })
}

/// The live progress line (rate, p99, errors) on stderr, when it is a terminal.
fn progress(args: &LoadgenArgs, recorder: Arc<Recorder>, start: Instant) -> Option<ProgressBar> {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = args.warmup + args.duration;
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(total.as_millis()).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let ticking = bar.clone();
    let warmup = args.warmup;
    tokio::spawn(async move {
        let tick = Duration::from_millis(500);
        let mut last = recorder.snapshot();
        let mut interval = tokio::time::interval_at(start + tick, tick);
        while !ticking.is_finished() {
            interval.tick().await;
            let now = recorder.snapshot();
            let elapsed = start.elapsed();
            ticking.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            #[allow(clippy::cast_precision_loss)]
            let rate = (now.count - last.count) as f64 / tick.as_secs_f64();
            let phase = if elapsed < warmup { "warmup " } else { "" };
            ticking.set_message(format!(
                "{phase}{rate:.0} req/s  p99 {}  errors {}  dropped {}  total {}",
                human_us(now.p99_us),
                now.errors,
                now.dropped,
                now.count
            ));
            last = now;
        }
    });
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn targets_are_loopback_unless_allowed() {
        assert_eq!(
            check_target("http://127.0.0.1:8080/", false).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_target("http://localhost:8080", false).is_ok());
        assert!(check_target("http://[::1]:8080", false).is_ok());
        assert!(check_target("http://10.0.0.5:8080", false).is_err());
        assert!(check_target("http://shop.example.com", false).is_err());
        assert!(check_target("http://10.0.0.5:8080", true).is_ok());
        assert!(check_target("https://127.0.0.1:8080", true).is_err());
        assert!(check_target("not a url", true).is_err());
    }

    #[test]
    fn refusals_name_the_flag_and_keep_the_cause() {
        let remote = check_target("http://10.0.0.5:8080", false).unwrap_err();
        assert!(
            matches!(remote, LoadgenError::TargetRemote { .. }),
            "{remote:?}"
        );
        assert!(remote.to_string().contains("--allow-remote"), "{remote}");
        let scheme = check_target("https://127.0.0.1:8080", true).unwrap_err();
        assert_eq!(
            scheme.to_string(),
            "--target must be an http:// URL, not https://"
        );
        let unparsable = check_target("not a url", true).unwrap_err();
        assert_eq!(unparsable.to_string(), "--target \"not a url\"");
        let cause = std::error::Error::source(&unparsable).expect("the parse error is kept");
        assert!(cause.is::<url::ParseError>(), "{cause:?}");
    }
}
