//! Metrics as operators consume them: every metric the alert rules
//! (`deploy/prometheus/rules`) and the dashboard (`deploy/grafana`) query exists on a
//! running bazaar after a little traffic, with its `# HELP`; the split gateway labels
//! its RED metrics with public route templates; and `GET /api/v1/admin/bus` reports
//! every module's outbox and consumers. (The split suite checks the same over real
//! processes, scraping each one: `split::split_every_process_exports_what_operators_query`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::helpers::{Api, cart_order_body, eventually, spawn_app, split_topology};

// ---- What the deploy files query ----

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The PromQL expressions of a Prometheus rule file: every `expr:` value, single-line
/// or a `|`/`>` block; and the names its `record:` rules define.
fn rule_file_exprs(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        let indent = line.len() - line.trim_start().len();
        if let Some(value) = trimmed.strip_prefix("record:") {
            recorded.insert(unquote(value.trim()).to_owned());
        } else if let Some(value) = trimmed.strip_prefix("expr:") {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let mut block = String::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push_str(next.trim());
                    block.push(' ');
                    i += 1;
                }
                exprs.push(block);
            } else {
                exprs.push(unquote(value).to_owned());
            }
        }
        i += 1;
    }
    (exprs, recorded)
}

fn unquote(value: &str) -> &str {
    let value = value.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Every `expr` of a Grafana dashboard (panel targets, at any depth) and the metric of
/// each `label_values(<metric>, <label>)` variable query.
fn dashboard_exprs(dashboard: &Value, out: &mut Vec<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    ("query" | "definition", Value::String(query))
                        if query.starts_with("label_values(") =>
                    {
                        let inner = &query["label_values(".len()..];
                        if let Some((metric, _)) = inner.split_once(',') {
                            out.push(metric.trim().to_owned());
                        }
                    }
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// PromQL words that are not metric names.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "atan2",
];
/// Grouping clauses: the parenthesised list after them names labels.
const GROUPINGS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` reads: strings, label matchers, ranges, Grafana
/// variables, functions, aggregations, keywords and grouping labels left out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    #[derive(Debug, PartialEq)]
    enum Token {
        Ident(String),
        Open,
        Close,
        Other,
    }
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let skip_until = |i: &mut usize, end: char| {
        while *i < chars.len() && chars[*i] != end {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                skip_until(&mut i, c);
            }
            // Label matchers (whose quoted values may hold braces) and range or
            // subquery selectors hold no metric names.
            '{' => {
                while i < chars.len() && chars[i] != '}' {
                    let quote = chars[i];
                    i += 1;
                    if quote == '"' || quote == '\'' || quote == '`' {
                        skip_until(&mut i, quote);
                    }
                }
                i += 1;
            }
            '[' => skip_until(&mut i, ']'),
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '$' => {
                // A Grafana variable ($job, ${job}, $__rate_interval).
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number, exponents (1e3) and durations (5m) included.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Token::Other);
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                tokens.push(Token::Other);
                i += 1;
            }
        }
    }
    let mut names = BTreeSet::new();
    let mut t = 0;
    while t < tokens.len() {
        if let Token::Ident(word) = &tokens[t] {
            let next_is_open = tokens.get(t + 1) == Some(&Token::Open);
            if GROUPINGS.contains(&word.as_str()) && next_is_open {
                // Skip the label list.
                while t < tokens.len() && tokens[t] != Token::Close {
                    t += 1;
                }
            } else if !next_is_open
                && !AGGREGATIONS.contains(&word.as_str())
                && !KEYWORDS.contains(&word.as_str())
            {
                names.insert(word.clone());
            }
        }
        t += 1;
    }
    names
}

/// Every metric name the rules and the dashboard query, less the names the rules
/// record themselves and the series Prometheus makes up (`up`).
pub fn queried_metrics() -> BTreeSet<String> {
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    let rules = deploy_dir().join("prometheus/rules");
    let mut rule_files = 0;
    for entry in std::fs::read_dir(&rules).expect("deploy/prometheus/rules exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Unit tests of the rules feed made-up series; they are not queries.
        let yaml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"));
        if !yaml || name.contains("_test") {
            continue;
        }
        let (e, r) = rule_file_exprs(&std::fs::read_to_string(&path).unwrap());
        exprs.extend(e);
        recorded.extend(r);
        rule_files += 1;
    }
    assert!(rule_files > 0, "no rule files in {}", rules.display());
    let grafana = deploy_dir().join("grafana");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&grafana).expect("deploy/grafana exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            dashboard_exprs(&dashboard, &mut exprs);
            dashboards += 1;
        }
    }
    assert!(dashboards > 0, "no dashboard in {}", grafana.display());
    let names: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|n| !recorded.contains(n) && n != "up")
        .collect();
    assert!(
        names.len() > 20,
        "the deploy files query only {names:?}: is the parser broken?"
    );
    names
}

/// Metrics only a split deployment has: calls over HTTP, JetStream, the proxy.
pub fn split_only(name: &str) -> bool {
    name.starts_with("rpc_") || name.starts_with("nats_") || name.starts_with("gateway_")
}

/// The metric names of a Prometheus text exposition (histograms as their `_bucket`,
/// `_sum` and `_count` series, as queries name them).
pub fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names described with `# HELP`.
pub fn described(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// What `queried` names that `scrapes` (together) do not export; split-only metrics
/// are not expected of a monolith.
pub fn missing(queried: &BTreeSet<String>, scrapes: &[String], split: bool) -> Vec<String> {
    let exported: BTreeSet<String> = scrapes.iter().flat_map(|s| exported(s)).collect();
    queried
        .iter()
        .filter(|n| split || !split_only(n))
        .filter(|n| !exported.contains(*n))
        .cloned()
        .collect()
}

// ---- Traffic ----

/// A little of everything operators watch: a product view, an add to cart, a
/// confirmed checkout whose events reach every consumer, and a declined one.
pub async fn drive_checkouts(api: &Api, tag: &str) {
    let product = api.first_product().await;
    let id = product["id"].as_str().unwrap().to_owned();
    let response = api.get(&format!("/api/v1/products/{id}"), None).await;
    assert_eq!(response.status(), 200);
    let (token, _) = api.register(&format!("metrics-{tag}@example.com")).await;
    for (payment, outcome) in [("tok_visa", "confirmed"), ("tok_chargeDeclined", "failed")] {
        let response = api
            .post_json(
                "/api/v1/cart/items",
                &json!({"product_id": id, "quantity": 1}),
                Some(&token),
            )
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let (_, order) = api.place_ok(&token, &cart_order_body(payment)).await;
        let order_id = order["id"].as_str().unwrap().to_owned();
        let order = api.wait_until_terminal(&token, &order_id).await;
        assert_eq!(order["status"], outcome, "{order}");
    }
    // The confirmation reached the consumers (its email is the last effect).
    let admin = api.admin_token().await;
    eventually("the confirmation email", || {
        let api = api.clone();
        let admin = admin.clone();
        async move {
            let sent = api
                .get_json("/api/v1/admin/notifications", Some(&admin))
                .await;
            let kinds: Vec<&str> = sent["items"]
                .as_array()
                .map(|items| items.iter().filter_map(|n| n["kind"].as_str()).collect())
                .unwrap_or_default();
            if kinds.contains(&"order_confirmed") && kinds.contains(&"order_failed") {
                Ok(())
            } else {
                Err(format!("emails so far: {kinds:?}"))
            }
        }
    })
    .await;
}

/// `GET /api/v1/admin/bus` for `modules`, once every consumer has caught up.
pub async fn assert_bus_report(api: &Api, modules: &[&str]) {
    let admin = api.admin_token().await;
    let report = eventually("every consumer caught up", || {
        let api = api.clone();
        let admin = admin.clone();
        async move {
            let report = api.get_json("/api/v1/admin/bus", Some(&admin)).await;
            let items = report["items"].as_array().cloned().unwrap_or_default();
            let lagging: Vec<&Value> = items
                .iter()
                .flat_map(|m| m["consumers"].as_array().into_iter().flatten())
                .filter(|c| c["lag"] != 0)
                .collect();
            let backlog: Vec<&Value> = items.iter().filter(|m| m["outbox_backlog"] != 0).collect();
            if lagging.is_empty() && backlog.is_empty() {
                Ok(report)
            } else {
                Err(format!("{report}"))
            }
        }
    })
    .await;
    let items = report["items"].as_array().unwrap();
    let services: BTreeSet<&str> = items.iter().filter_map(|m| m["service"].as_str()).collect();
    for module in modules {
        assert!(services.contains(module), "{module} missing: {report}");
    }
    for item in items {
        assert!(
            item["outbox_oldest_unsent_age_seconds"].is_number(),
            "{item}"
        );
        assert!(item["process"].is_string(), "{item}");
    }
    let consumers: BTreeSet<&str> = items
        .iter()
        .flat_map(|m| m["consumers"].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        consumers,
        BTreeSet::from(["analytics", "cart", "notifications"]),
        "{report}"
    );
    for consumer in items
        .iter()
        .flat_map(|m| m["consumers"].as_array().into_iter().flatten())
    {
        assert_eq!(consumer["dead_letters"], 0, "{consumer}");
        assert!(consumer["redeliveries"].is_u64(), "{consumer}");
        assert!(consumer["ack_pending"].is_u64(), "{consumer}");
    }
}

// ---- Tests ----

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_query_is_exported() {
    let queried = queried_metrics();
    let app = spawn_app().await;
    drive_checkouts(&app, "exported").await;
    // Gauges sampled in the background (pools, lag) have been set at start.
    let scrape = app.scrape().await.text().await.unwrap();
    let missing = missing(&queried, std::slice::from_ref(&scrape), split_topology());
    assert!(
        missing.is_empty(),
        "queried by deploy/prometheus or deploy/grafana but not exported: {missing:?}"
    );
    let described = described(&scrape);
    // A histogram is described once, under its base name.
    let undescribed: Vec<&str> = queried
        .iter()
        .filter(|n| split_topology() || !split_only(n))
        .map(|n| {
            n.strip_suffix("_bucket")
                .or_else(|| n.strip_suffix("_sum"))
                .or_else(|| n.strip_suffix("_count"))
                .unwrap_or(n)
        })
        .filter(|n| !described.contains(*n))
        .collect();
    assert!(undescribed.is_empty(), "no # HELP for {undescribed:?}");
    // Outcomes are there before they first happen.
    assert!(
        scrape.contains(r#"orders_total{outcome="cancelled"} 0"#),
        "orders_total is pre-registered"
    );
    if split_topology() {
        // The gateway forwards by prefix; its metrics still name the public route.
        assert!(
            scrape.lines().any(|l| l.starts_with("http_requests_total{")
                && l.contains(r#"service="gateway""#)
                && l.contains(r#"route="/api/v1/products/{id}""#)),
            "the gateway labels requests with the route template"
        );
        assert!(
            !scrape.contains("{*rest}"),
            "no catch-all route label on the gateway"
        );
    }
}

#[tokio::test]
async fn the_bus_report_covers_every_module_and_is_admin_only() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/admin/bus", None).await;
    assert_eq!(response.status(), 401);
    let (token, _) = app.register("bus-report@example.com").await;
    let response = app.get("/api/v1/admin/bus", Some(&token)).await;
    assert_eq!(response.status(), 403);
    drive_checkouts(&app, "bus").await;
    assert_bus_report(&app, &bazaar::registry().names()).await;
}

#[test]
fn promql_names_are_told_from_functions_labels_and_keywords() {
    let names = metric_names(
        r#"sum by (job, le) (rate(http_request_duration_seconds_bucket{service=~"a|b",route!="x{y}"}[5m])) / on (job) group_left (le) bazaar:x:rate5m > 14.4 * 0.001 unless max_over_time(dependency_breaker_state[$__rate_interval]) and changes(process_start_time_seconds{job=~"$job"}[1h]) offset 5m"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "bazaar:x:rate5m".to_owned(),
            "dependency_breaker_state".to_owned(),
            "http_request_duration_seconds_bucket".to_owned(),
            "process_start_time_seconds".to_owned(),
        ])
    );
    let (exprs, recorded) = rule_file_exprs(
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(x_total)\n      - alert: A\n        expr: |\n          y > 1\n          and z\n        for: 1m\n",
    );
    assert_eq!(exprs, ["sum(x_total)", "y > 1 and z "]);
    assert_eq!(recorded, BTreeSet::from(["a:b".to_owned()]));
    let scrape =
        "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\nb_bucket{le=\"1\"} 0\nc 2\n";
    assert_eq!(
        exported(scrape),
        BTreeSet::from(["a_total".to_owned(), "b_bucket".to_owned(), "c".to_owned()])
    );
    assert_eq!(described(scrape), BTreeSet::from(["a_total".to_owned()]));
}

/// `/metrics` carries business figures (orders, revenue): the API port serves it to
/// the scrape credential and to admins (the ops console), never to anonymous clients
/// or ordinary users. (Issue 14, finding 6.)
#[tokio::test]
async fn metrics_need_the_scrape_credential_or_an_admin() {
    let app = spawn_app().await;
    for token in [None, Some("not-the-scrape-token")] {
        let response = app.get("/metrics", token).await;
        assert_eq!(response.status(), 401, "{token:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    let (user, _) = app.register("metrics-reader@example.com").await;
    assert_eq!(app.get("/metrics", Some(&user)).await.status(), 401);
    let admin = app.admin_token().await;
    assert_eq!(app.get("/metrics", Some(&admin)).await.status(), 200);
    let scraped = app.scrape().await;
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("http_requests_total")
    );
}

/// Without a configured `metrics_token`, the first start generates one into the data
/// dir (owner-only), as it does the JWT secret.
#[tokio::test]
async fn an_unconfigured_scrape_credential_is_generated_into_the_data_dir() {
    if split_topology() {
        return; // the split processes are configured with one shared token
    }
    let app = crate::helpers::spawn_app_with(|c| c.metrics_token = None).await;
    let path = app.data_dir.path().join("metrics-token");
    let token = std::fs::read_to_string(&path).expect("metrics-token written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(app.get("/metrics", None).await.status(), 401);
    assert_eq!(app.get("/metrics", Some(token.trim())).await.status(), 200);
}
