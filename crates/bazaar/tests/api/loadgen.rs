//! `bazaar loadgen` against a real `bazaar serve`: the report's counts must agree with
//! the server's own `/metrics`.
//!
//! The server is a child process ([`Server`]) rather than `spawn_app`: the Prometheus
//! recorder is process-wide, so an app inside this test binary would count every
//! other test's requests too, and the comparison would mean nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{DataDir, Server};

/// The value of the one series of `name` whose labels include `label`, 0 when absent.
fn series(metrics: &str, name: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum()
}

/// `http_requests_total` summed over statuses, by (method, route).
fn requests_by_route(metrics: &str) -> HashMap<(String, String), u64> {
    let mut counts = HashMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("http_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            let end = labels[start..].find('"').unwrap() + start;
            labels[start..end].to_owned()
        };
        *counts.entry((label("method"), label("route"))).or_default() +=
            value.trim().parse::<u64>().unwrap();
    }
    counts
}

#[tokio::test]
async fn loadgen_counts_agree_with_the_servers_metrics() {
    let dir = DataDir::new().await;
    let server = Server::start(
        &dir,
        &[
            ("BAZAAR_RATE_LIMIT_PER_SECOND", "0"),
            ("BAZAAR_AUTH_RATE_LIMIT_PER_SECOND", "0"),
            ("BAZAAR_SEED_PRODUCTS", "30"),
        ],
    )
    .await;
    let report_path = dir.path().join("loadgen.json");
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
            .args(["loadgen", "--target", &server.base, "--mix", "shop"])
            .args(["--rate", "50", "--duration", "3s", "--users-pool", "4"])
            .args(["--seed", "42", "--no-progress", "--timeout", "5s"])
            .args(["--cpu-pid", &format!("server={}", server.proc.child.id())])
            .arg("--json")
            .arg(&report_path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadgen ends within its bounds")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(stdout.contains("product_view"), "{stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["mode"], "open");
    assert_eq!(report["mix"], "shop");
    assert_eq!(report["rate"], 50.0);
    assert_eq!(report["dropped"], 0, "{report:#}");
    // 50/s for 3 s: 150 arrivals (a checkout on an empty cart adds one request more).
    let total = report["total"]["count"].as_u64().unwrap();
    assert!((150..=200).contains(&total), "{report:#}");
    assert_eq!(report["total"]["status"]["5xx"], 0, "{report:#}");
    assert_eq!(report["total"]["status"]["transport"], 0, "{report:#}");
    assert!(
        report["operations"]["product_view"]["count"]
            .as_u64()
            .unwrap()
            > 50
    );

    let metrics = server.scrape().await;
    let served = requests_by_route(&metrics);
    for (op, method, route) in [
        ("product_view", "GET", "/api/v1/products/{id}"),
        ("add_to_cart", "POST", "/api/v1/cart/items"),
        ("view_cart", "GET", "/api/v1/cart"),
        ("checkout", "POST", "/api/v1/orders"),
        ("listing", "GET", "/api/v1/products"),
    ] {
        let sent = report["operations"][op]["count"].as_u64().unwrap_or(0);
        let server_count = served
            .get(&(method.to_owned(), route.to_owned()))
            .copied()
            .unwrap_or(0);
        // The server counts a request before its response leaves, and loadgen waits
        // for every response before it reports, so the server never has fewer. It has
        // more only by loadgen's own set-up: the product listing it reads once (one
        // page of 100 holds the 30 products). No transport errors (asserted above)
        // means no request the server saw and loadgen did not count.
        let setup = u64::from(op == "listing");
        assert!(
            server_count >= sent && server_count <= sent + setup,
            "{op}: loadgen {sent}, server {server_count} ({method} {route})\n{report:#}"
        );
    }

    // Orders: every checkout answered 2xx placed one, each counted by how it ended,
    // as the server's saga counted them.
    let orders = &report["orders"];
    let checkouts_ok = report["operations"]["checkout"]["status"]["2xx"]
        .as_u64()
        .unwrap();
    assert_eq!(orders["placed"], checkouts_ok, "{report:#}");
    assert_eq!(orders["pending"], 0, "{report:#}");
    let confirmed = orders["confirmed"].as_u64().unwrap();
    let failed = orders["failed"].as_u64().unwrap();
    assert!(confirmed > 0, "{report:#}");
    assert_eq!(confirmed + failed, checkouts_ok, "{report:#}");
    assert_eq!(
        confirmed,
        series(&metrics, "orders_total", "outcome=\"confirmed\""),
        "{report:#}\n{metrics}"
    );
    assert_eq!(
        failed,
        series(&metrics, "orders_total", "outcome=\"failed\""),
        "{report:#}"
    );

    // CPU over the window: loadgen's own and the server's, both read.
    let cpu = &report["cpu"]["groups"];
    assert_eq!(cpu["server"]["processes"], 1, "{report:#}");
    assert_eq!(cpu["server"]["unreadable"], 0, "{report:#}");
    assert_eq!(cpu["loadgen"]["processes"], 1, "{report:#}");
}

#[tokio::test]
async fn loadgen_waits_out_the_sign_in_limit_while_registering_its_users() {
    let dir = DataDir::new().await;
    // A sign-in limit far below the users to register: setting them up must wait
    // out the 429s (Retry-After) rather than fail.
    let server = Server::start(
        &dir,
        &[
            ("BAZAAR_RATE_LIMIT_PER_SECOND", "0"),
            ("BAZAAR_AUTH_RATE_LIMIT_PER_SECOND", "2"),
            ("BAZAAR_AUTH_RATE_LIMIT_BURST", "2"),
            ("BAZAAR_SEED_PRODUCTS", "30"),
        ],
    )
    .await;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
            .args(["loadgen", "--target", &server.base, "--mix", "shop"])
            .args(["--rate", "5", "--duration", "1s", "--users-pool", "8"])
            .args(["--seed", "7", "--no-progress", "--timeout", "5s"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadgen ends within its bounds")
    .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
