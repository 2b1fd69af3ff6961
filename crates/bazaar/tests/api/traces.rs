//! One trace across every hop: a checkout sent with a W3C `traceparent` continues that
//! trace through the gateway, the modules, their RPCs and the events they publish, and
//! the admin traces API shows it whole (gathered from every process when split).

use std::collections::{BTreeSet, HashMap};

use chassis::resilience::Fault;
use serde_json::Value;

use crate::helpers::{Api, cart_order_body, eventually, spawn_app, spawn_app_with, split_topology};

/// The caller's span: the parent of the trace's first span in bazaar.
pub const CLIENT_SPAN: &str = "00f067aa0ba902b7";

pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Places one order with `traceparent` set to (`trace_id`, [`CLIENT_SPAN`]); returns
/// the order id.
pub async fn traced_checkout(api: &Api, tag: &str, trace_id: &str) -> String {
    let (token, _) = api.register(&format!("traced-{tag}@example.com")).await;
    let products = api.get_json("/api/v1/products?limit=1", None).await;
    let product = products["items"][0]["id"].as_str().unwrap().to_owned();
    let added = api
        .post_json(
            "/api/v1/cart/items",
            &serde_json::json!({"product_id": product, "quantity": 1}),
            Some(&token),
        )
        .await;
    assert_eq!(added.status(), 200);
    let response = api
        .client
        .post(api.url("/api/v1/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{CLIENT_SPAN}-01"))
        .json(&cart_order_body("tok_visa"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let order: Value = response.json().await.unwrap();
    assert!(status == 201 || status == 202, "{status}: {order}");
    order["id"].as_str().unwrap().to_owned()
}

/// Waits until the admin API shows `trace_id` with spans from every one of `services`
/// (event consumers finish after the response), then checks its shape: one root,
/// whose parent is the caller's span; every other span's parent in the trace; a
/// server span of one service the child of another service's span (the hop was
/// propagated, not restarted); consumer spans children of the producer's.
pub async fn assert_trace(api: &Api, admin: &str, trace_id: &str, services: &[&str]) -> Vec<Value> {
    let path = format!("/api/v1/admin/traces/{trace_id}");
    let spans = eventually(
        "the trace, whole, with spans from every service",
        || async {
            let response = api.get(&path, Some(admin)).await;
            if response.status() != 200 {
                return Err(format!(
                    "{} {}",
                    response.status(),
                    response.text().await.unwrap()
                ));
            }
            let body: Value = response.json().await.unwrap();
            let spans = body["spans"].as_array().cloned().unwrap_or_default();
            let seen: BTreeSet<&str> = spans.iter().filter_map(|s| s["service"].as_str()).collect();
            let missing: Vec<&&str> = services.iter().filter(|s| !seen.contains(**s)).collect();
            // A span is exported when it ends: until its parent ends too, it looks like a
            // second root.
            let ids: BTreeSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
            let orphans = spans
                .iter()
                .filter(|s| !ids.contains(s["parent_span_id"].as_str().unwrap_or("")))
                .count();
            if missing.is_empty() && orphans == 1 {
                Ok(spans)
            } else {
                Err(format!(
                    "missing {missing:?}; have {seen:?}; {orphans} roots"
                ))
            }
        },
    )
    .await;
    let describe = || {
        spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} [{}] {} <- {}",
                    s["span_id"], s["service"], s["kind"], s["name"], s["parent_span_id"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    assert_eq!(
        by_id.len(),
        spans.len(),
        "a span listed twice:\n{}",
        describe()
    );
    for span in &spans {
        assert_eq!(span["trace_id"], trace_id, "{span}");
    }
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| !by_id.contains_key(s["parent_span_id"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(roots.len(), 1, "one root expected:\n{}", describe());
    assert_eq!(roots[0]["parent_span_id"], CLIENT_SPAN, "{}", describe());
    assert_eq!(roots[0]["kind"], "server", "{}", describe());
    assert_eq!(roots[0]["name"], "POST /api/v1/orders", "{}", describe());
    let parent_service = |span: &Value| {
        by_id
            .get(span["parent_span_id"].as_str().unwrap_or(""))
            .and_then(|p| p["service"].as_str())
            .map(str::to_owned)
    };
    for span in &spans {
        let kind = span["kind"].as_str().unwrap_or("");
        let service = span["service"].as_str().unwrap_or("");
        if span["span_id"] == roots[0]["span_id"] {
            continue;
        }
        // A module's server span is entered from another process (the gateway or a
        // peer's RPC client); a consumer's first span from the producer's.
        if split_topology_or_real(services) && kind == "server" {
            let parent = parent_service(span).unwrap_or_default();
            assert_ne!(
                parent,
                service,
                "{span} should continue another service's span:\n{}",
                describe()
            );
        }
        if kind == "consumer" {
            let parent = by_id[span["parent_span_id"].as_str().unwrap()];
            let upstream = parent["kind"] != "consumer" || parent["service"] != span["service"];
            if upstream {
                assert_ne!(
                    parent["service"],
                    span["service"],
                    "{span} should follow its producer:\n{}",
                    describe()
                );
            }
        }
    }
    spans
}

/// Whether the spans come from more than one process (module names, not `bazaar`).
fn split_topology_or_real(services: &[&str]) -> bool {
    services.contains(&"gateway")
}

/// The services a checkout's trace must reach.
pub fn checkout_services(split: bool) -> Vec<&'static str> {
    if split {
        vec![
            "gateway",
            "orders",
            "catalog",
            "payments",
            "notifications",
            "analytics",
        ]
    } else {
        // One process: request spans are the monolith's; event handlers say whose.
        vec!["bazaar", "notifications", "analytics"]
    }
}

#[tokio::test]
async fn a_checkout_is_one_trace_from_the_callers_span_through_events() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let trace_id = new_trace_id();
    traced_checkout(&app, "one", &trace_id).await;
    let spans = assert_trace(
        &app,
        &admin,
        &trace_id,
        &checkout_services(split_topology()),
    )
    .await;

    // The list names it by its root span.
    let list = app
        .get_json("/api/v1/admin/traces?limit=500", Some(&admin))
        .await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == trace_id.as_str())
        .unwrap_or_else(|| panic!("{trace_id} not listed: {list}"));
    assert_eq!(listed["name"], "POST /api/v1/orders", "{listed}");
    assert!(
        listed["spans"].as_u64().unwrap() >= spans.len() as u64,
        "{listed}"
    );
    assert_eq!(listed["error"], false, "{listed}");
}

#[tokio::test]
async fn the_traces_api_is_admin_only_and_validates_its_input() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (user, _) = app.register("traces-user@example.com").await;
    for path in [
        "/api/v1/admin/traces",
        "/api/v1/admin/traces/4bf92f3577b34da6a3ce929d0e0e4736",
    ] {
        assert_eq!(app.get(path, None).await.status(), 401, "{path}");
        assert_eq!(app.get(path, Some(&user)).await.status(), 403, "{path}");
    }
    for (path, status) in [
        ("/api/v1/admin/traces/not-a-trace", 400),
        ("/api/v1/admin/traces/00000000000000000000000000000000", 404),
        ("/api/v1/admin/traces?limit=0", 400),
        ("/api/v1/admin/traces?limit=ten", 400),
        ("/api/v1/admin/traces/4bf92f3577b34da6a3ce929d0e0e4799", 404),
    ] {
        let response = app.get(path, Some(&admin)).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

/// A caller that did not sample its trace (W3C sampled flag off) is followed under the
/// default `parentbased_always_on`: nothing of the request is traced, and the same
/// request with the flag on appears (ADR 0020).
#[tokio::test]
async fn a_request_its_caller_did_not_sample_is_not_traced() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let read = |flag: &'static str, trace_id: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(app.url("/api/v1/products?limit=1"))
                .header("traceparent", format!("00-{trace_id}-{CLIENT_SPAN}-{flag}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    let (unsampled, sampled) = (new_trace_id(), new_trace_id());
    read("00", unsampled.clone()).await;
    read("01", sampled.clone()).await;
    // The sampled one shows up; by then the other one would have too.
    eventually("the sampled read's trace", || async {
        let response = app
            .get(&format!("/api/v1/admin/traces/{sampled}"), Some(&admin))
            .await;
        if response.status() == 200 {
            Ok(())
        } else {
            Err(response.status().to_string())
        }
    })
    .await;
    let response = app
        .get(&format!("/api/v1/admin/traces/{unsampled}"), Some(&admin))
        .await;
    if response.status() == 404 {
        return;
    }
    // A loaded machine can make the read take the keep threshold (1 s): then it is kept
    // as slow, and only as its one server span, never as an ordinary trace.
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let spans = body["spans"].as_array().cloned().unwrap_or_default();
    assert!(
        spans.len() == 1 && spans[0]["attributes"]["sampling.kept"] == "slow",
        "an unsampled request was traced: {spans:?}"
    );
}

/// The server layer's wiring of kept spans: a product read failed by a route fault
/// (503) whose caller did not sample it is kept as its server span alone, marked
/// `failed`; the same read sampled is traced as usual, with nothing marked.
#[tokio::test]
async fn a_failed_request_its_caller_did_not_sample_is_kept_as_its_server_span() {
    let app = spawn_app_with(|c| {
        c.faults.insert(
            "GET /api/v1/products/{id}".to_owned(),
            Fault {
                error_rate: 1.0,
                ..Fault::default()
            },
        );
    })
    .await;
    let admin = app.admin_token().await;
    // The list route has no fault.
    let product = app.first_product().await["id"].as_str().unwrap().to_owned();
    let read = |flag: &'static str, trace_id: String| {
        let (app, product) = (&app, &product);
        async move {
            let response = app
                .client
                .get(app.url(&format!("/api/v1/products/{product}")))
                .header("traceparent", format!("00-{trace_id}-{CLIENT_SPAN}-{flag}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 503);
        }
    };
    // Each process of the split keeps its own server span; the monolith has one.
    let one_per_process = |spans: &[Value]| split_topology() || spans.len() == 1;
    let spans_of = |trace_id: String| {
        let (app, admin) = (&app, &admin);
        move || {
            let path = format!("/api/v1/admin/traces/{trace_id}");
            async move {
                let response = app.get(&path, Some(admin)).await;
                if response.status() != 200 {
                    return Err(response.status().to_string());
                }
                let body: Value = response.json().await.unwrap();
                let spans = body["spans"].as_array().cloned().unwrap_or_default();
                // The server span ends last, maybe after the client has its answer.
                if spans.iter().any(|s| s["kind"] == "server") {
                    Ok(spans)
                } else {
                    Err(format!("no server span yet: {spans:?}"))
                }
            }
        }
    };

    let unsampled = new_trace_id();
    read("00", unsampled.clone()).await;
    let spans = eventually("the failed unsampled read's span", spans_of(unsampled)).await;
    assert!(
        one_per_process(&spans)
            && spans.iter().all(|s| {
                s["kind"] == "server"
                    && s["attributes"]["sampling.kept"] == "failed"
                    && s["attributes"]["http.response.status_code"] == 503
            }),
        "{spans:?}"
    );

    let sampled = new_trace_id();
    read("01", sampled.clone()).await;
    let spans = eventually("the failed sampled read's trace", spans_of(sampled)).await;
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == "server").collect();
    assert!(
        (split_topology() || servers.len() == 1)
            && !servers.is_empty()
            && spans
                .iter()
                .all(|s| s["attributes"].get("sampling.kept").is_none()),
        "{spans:?}"
    );
}
