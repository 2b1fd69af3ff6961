//! The ops console: its admin endpoints (`/api/v1/admin/services`,
//! `/api/v1/admin/sagas`), the page's headers, and the page itself in headless Debian
//! Chromium (`crate::browser`: skipped without chromium, unless
//! `BAZAAR_TEST_BROWSER=required`).

use std::time::Duration;

use chassis::resilience::{Fault, PolicyOverrides};
use serde_json::json;

use crate::browser::{Browser, browser_available, ci_dir, png_size, variant};
use crate::helpers::{
    Api, TestApp, assert_problem, eventually, order_body, spawn_app, spawn_app_with, split_topology,
};

// ---- the page and the admin endpoints, without a browser -------------------------

#[tokio::test]
async fn the_console_page_holds_no_data_and_allows_only_its_own_files() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
    let page = app.get("/console", None).await.text().await.unwrap();
    // Nothing from elsewhere, and no inline code the CSP would block anyway.
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("<script>") && !page.contains("style="));
    assert!(page.contains("id=\"login-form\""));
}

#[tokio::test]
async fn services_lists_the_gateway_and_every_module_with_their_health() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/admin/services", None).await;
    assert_problem(response, 401).await;
    let (customer, _) = app.register("services@example.com").await;
    let response = app.get("/api/v1/admin/services", Some(&customer)).await;
    assert_problem(response, 403).await;

    let admin = app.admin_token().await;
    let body = app.get_json("/api/v1/admin/services", Some(&admin)).await;
    let split = split_topology();
    assert_eq!(body["topology"], if split { "split" } else { "monolith" });
    let items = body["items"].as_array().expect("items");
    let names: Vec<&str> = items.iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names[0], "gateway", "{body}");
    for module in bazaar::registry().names() {
        assert!(names.contains(&module), "{module} in {names:?}");
    }
    for item in items {
        assert_eq!(item["ready"], true, "{item}");
        let location = item["location"].as_str().unwrap_or_default();
        if split && item["name"] != "gateway" {
            assert!(location.starts_with("http://127.0.0.1:"), "{item}");
            assert_eq!(item["detail"]["status"], "ready", "{item}");
        } else {
            assert_eq!(location, "in-process", "{item}");
        }
    }
    let service = |name: &str| items.iter().find(|i| i["name"] == name).unwrap();
    assert_eq!(
        service("orders")["calls"],
        json!(["catalog", "cart", "payments"])
    );
    assert_eq!(service("cart")["calls"], json!(["catalog"]));
    assert_eq!(
        service("analytics")["consumes"],
        json!(["payments", "orders"])
    );
}

#[tokio::test]
async fn sagas_counts_orders_and_checks_its_threshold() {
    let app = spawn_app().await;
    let (customer, _) = app.register("sagas@example.com").await;
    let response = app.get("/api/v1/admin/sagas", Some(&customer)).await;
    assert_problem(response, 403).await;
    let admin = app.admin_token().await;
    for bad in ["abc", "-1", "1.5"] {
        let response = app
            .get(
                &format!("/api/v1/admin/sagas?stuck_after_secs={bad}"),
                Some(&admin),
            )
            .await;
        assert_problem(response, 400).await;
    }
    for out_of_range in ["0", "604801"] {
        let response = app
            .get(
                &format!("/api/v1/admin/sagas?stuck_after_secs={out_of_range}"),
                Some(&admin),
            )
            .await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(problem["errors"][0]["field"], "stuck_after_secs");
    }

    let product = app.first_product().await;
    let id = product["id"].as_str().unwrap();
    let (_, order) = app
        .place_ok(&customer, &order_body(&[(id, 1)], "tok_visa"))
        .await;
    app.wait_until_terminal(&customer, order["id"].as_str().unwrap())
        .await;
    let report = app.get_json("/api/v1/admin/sagas", Some(&admin)).await;
    assert_eq!(report["by_status"]["confirmed"], 1, "{report}");
    assert_eq!(report["by_status"]["pending"], 0, "{report}");
    assert_eq!(report["open"], 0, "{report}");
    assert_eq!(report["stuck_after_secs"], 60, "{report}");
    assert_eq!(report["stuck"], json!([]), "{report}");
    assert_eq!(report["by_step"]["charge"], 0, "{report}");
}

/// An order whose charge hangs (payments never answers within its long timeout) is
/// pending at step `charge`, its last event the reservation: past the threshold it is
/// listed as stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_lists_an_order_waiting_on_a_hanging_payment_as_stuck() {
    let app = spawn_app_with(|c| {
        c.set("checkout_wait_ms", 100);
        c.dependencies.insert(
            "payments".to_owned(),
            PolicyOverrides {
                timeout_ms: Some(30_000),
                ..PolicyOverrides::default()
            },
        );
        c.faults.insert(
            "payments.charge".to_owned(),
            Fault {
                hang: true,
                ..Fault::default()
            },
        );
    })
    .await;
    let admin = app.admin_token().await;
    let (customer, _) = app.register("stuck@example.com").await;
    let product = app.first_product().await;
    let (status, order) = app
        .place_ok(
            &customer,
            &order_body(&[(product["id"].as_str().unwrap(), 1)], "tok_visa"),
        )
        .await;
    assert_eq!((status, order["status"].as_str()), (202, Some("pending")));
    let id = order["id"].as_str().unwrap().to_owned();
    let stuck = eventually("the hanging order to be listed as stuck", || async {
        let report = app
            .get_json("/api/v1/admin/sagas?stuck_after_secs=1", Some(&admin))
            .await;
        match report["stuck"].as_array() {
            Some(stuck) if !stuck.is_empty() => Ok((report.clone(), stuck[0].clone())),
            _ => Err(report.to_string()),
        }
    })
    .await;
    let (report, entry) = stuck;
    assert_eq!(entry["id"], id.as_str(), "{report}");
    assert_eq!(entry["status"], "pending", "{report}");
    assert_eq!(entry["step"], "charge", "{report}");
    assert_eq!(entry["last_event"]["type"], "StockReserved", "{report}");
    assert!(entry["idle_secs"].as_f64().unwrap() >= 1.0, "{report}");
    assert_eq!(report["by_status"]["pending"], 1, "{report}");
    assert_eq!(report["by_step"]["charge"], 1, "{report}");
    assert_eq!(report["open"], 1, "{report}");
}

// ---- the page in a browser -------------------------------------------------------

/// The root span of a checkout, as the traces panel lists it.
const CHECKOUT: &str = "POST /api/v1/orders";

/// One checkout per payment token, each waited for until terminal.
async fn checkouts(api: &Api, customer: &str, tokens: &[&str]) {
    let products = api.all_products(3).await;
    for (i, token) in tokens.iter().enumerate() {
        let id = products[i % products.len()]["id"].as_str().unwrap();
        let (_, order) = api.place_ok(customer, &order_body(&[(id, 1)], token)).await;
        api.wait_until_terminal(customer, order["id"].as_str().unwrap())
            .await;
    }
}

/// The console in headless Chromium: a customer is turned away at sign-in; the admin
/// signs in through the form and sees every module on the service map, the checkout
/// among the recent traces, and its waterfall once clicked. A screenshot is kept in
/// `target/ci/` (CI's artifacts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_service_map_and_a_checkout_trace_in_a_browser() {
    if let Err(reason) = browser_available() {
        eprintln!("skipping the console browser test: {reason}");
        return;
    }
    let app: TestApp = spawn_app().await;
    let (customer, _) = app.register("console@example.com").await;
    checkouts(&app, &customer, &["tok_visa"]).await;

    let browser = Browser::start().await;
    browser.goto(&app.url("/console")).await;

    // A customer's credentials are refused with a clear message.
    browser.type_into("#email", "console@example.com").await;
    browser.type_into("#password", "password123").await;
    browser
        .click(&browser.find("#sign-in").await.unwrap())
        .await
        .unwrap();
    let refusal = browser
        .wait_for_text("#login-error", "the non-admin refusal", |t| !t.is_empty())
        .await;
    assert!(refusal.contains("not an administrator"), "{refusal}");

    browser
        .type_into("#email", crate::helpers::ADMIN_EMAIL)
        .await;
    browser
        .type_into("#password", crate::helpers::ADMIN_PASSWORD)
        .await;
    browser
        .click(&browser.find("#sign-in").await.unwrap())
        .await
        .unwrap();

    // The service map (the SVG's own text) names the gateway and every module.
    let map = browser
        .wait_for_text("#map svg", "every module on the service map", |t| {
            bazaar::registry().names().iter().all(|m| t.contains(m)) && t.contains("gateway")
        })
        .await;
    let services = browser
        .wait_for_text("#services", "the health table", |t| t.contains("ready"))
        .await;
    assert!(!services.contains("not ready"), "{services}");

    // Shop traffic while the rate panel samples /metrics: it shows a rate above zero.
    let traffic = {
        let api = app.api.clone();
        tokio::spawn(async move {
            for _ in 0..1_000 {
                let _ = api.get("/api/v1/products?limit=5", None).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let rate = browser
        .wait_for_text("#rate", "a request rate above zero", |t| {
            // "<rate> requests/s ... over the last <n> s": a rate, and a few samples
            // for the sparkline.
            let number_after = |word: &str| {
                t.split(word)
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok())
            };
            t.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|rps| rps > 0.0)
                && number_after("over the last").is_some_and(|secs| secs >= 8.0)
        })
        .await;
    traffic.abort();
    // Two more checkouts, a declined one and a confirmed one: the newest traces.
    checkouts(&app, &customer, &["tok_chargeDeclined", "tok_visa"]).await;

    // The checkout is among the recent traces, and a click opens a waterfall.
    browser
        .wait_for_text("#traces", "the checkout trace", |t| t.contains(CHECKOUT))
        .await;
    browser.click_containing("#traces tbody tr", CHECKOUT).await;
    browser
        .wait_for_text("#waterfall", "a waterfall", |t| t.contains("spans"))
        .await;
    // Which checkout that was is not known: the trace list is the test process's,
    // shared with every other test's app running at the same time. So the waterfall
    // checked is this test's own checkout's, opened by its trace id (as an operator
    // does with the id from a log line).
    let trace_id = crate::traces::new_trace_id();
    crate::traces::traced_checkout(&app, "console", &trace_id).await;
    browser.type_into("#trace-id", &trace_id).await;
    let open = browser.find("#trace-open button").await.unwrap();
    browser.click(&open).await.unwrap();
    let waterfall = browser
        .wait_for_text("#waterfall", "the checkout's waterfall", |t| {
            t.contains(&trace_id) && t.contains(CHECKOUT) && t.contains("spans")
        })
        .await;
    let bars = browser.find_all("#waterfall .wf-bar").await.unwrap();
    assert!(bars.len() >= 2, "{} span bars: {waterfall}", bars.len());

    // The other panels show their data (or say plainly it is not there).
    browser
        .wait_for_text("#sagas", "the saga counts", |t| {
            t.to_lowercase().contains("confirmed")
        })
        .await;
    browser
        .wait_for_text("#dead", "the dead letters", |t| !t.is_empty())
        .await;
    browser
        .wait_for_text("#bus", "the bus panel", |t| !t.is_empty())
        .await;

    browser.execute("window.scrollTo(0, 0)").await.unwrap();
    let png = browser.screenshot().await;
    let variant = variant(&app);
    let dir = ci_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("console{variant}.png"));
    std::fs::write(&path, &png).unwrap();
    let (width, height) = png_size(&png).expect("the screenshot is a PNG");
    assert!(
        width >= 1000 && height >= 700 && png.len() > 20_000,
        "a {width}x{height} screenshot of {} bytes is too small to show the console",
        png.len()
    );
    eprintln!(
        "console screenshot: {} ({width}x{height}, {} bytes); service map: {map:?}; rate: {rate:?}",
        path.display(),
        png.len()
    );
    browser.quit().await;
}
