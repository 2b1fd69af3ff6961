//! orders: checkout end to end through the public API — the saga's outcomes, stock,
//! the cart, idempotency, cancel, reservation expiry and validation.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    Api, CONFIRMED_EVENTS, DataDir, TestApp, accepted_repeats, assert_audit_clean, assert_problem,
    cart_order_body, client, emails, error_fields, event_types, eventually, id_of, ledger, open_db,
    order_body, outbox_payloads, spawn_app, spawn_app_with, test_config,
};

const ORDERS: &str = "/api/v1/orders";
/// An id in the right shape that no product or order has.
const NO_SUCH_ID: &str = "01890000-0000-7000-8000-000000000000";

/// (id, price_cents) of each product on the catalog's first page of `n`.
async fn pick_products(app: &TestApp, n: u32) -> Vec<(String, i64)> {
    let products = app.products(n).await;
    assert_eq!(products.len(), n as usize);
    products
        .iter()
        .map(|p| (id_of(p), p["price_cents"].as_i64().unwrap()))
        .collect()
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

fn assert_rfc3339(value: &Value) {
    let text = value.as_str().unwrap_or_default();
    assert!(
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok(),
        "not an RFC 3339 time: {value}"
    );
}

async fn cart(app: &TestApp, token: &str) -> Value {
    let response = app.get("/api/v1/cart", Some(token)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn cancel(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.post_raw(&format!("{ORDERS}/{id}/cancel"), "", None, Some(token))
        .await
}

#[tokio::test]
async fn checkout_from_the_cart_confirms_takes_the_stock_and_empties_the_cart() {
    let app = spawn_app().await;
    let (token, _) = app.register("buyer@example.com").await;
    let products = pick_products(&app, 2).await;
    let [(a, price_a), (b, price_b)] = [products[0].clone(), products[1].clone()];
    let (stock_a, stock_b) = (app.stock(&a).await, app.stock(&b).await);
    app.add_to_cart(&token, &a, 2).await;
    app.add_to_cart(&token, &b, 1).await;

    let response = app
        .place_order(&token, &cart_order_body("tok_visa"), None)
        .await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["total_cents"], price_a * 2 + price_b, "{order}");
    assert_eq!(order["currency"], "USD", "{order}");
    assert!(order.get("failure_reason").is_none(), "{order}");
    let id = id_of(&order);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{order}");
    assert_rfc3339(&order["created_at"]);
    assert_rfc3339(&order["updated_at"]);
    let mut items = order["items"].as_array().unwrap().clone();
    items.sort_by_key(|line| line["product_id"].as_str().unwrap_or_default().to_owned());
    let mut expected = vec![
        json!({"product_id": a, "quantity": 2, "price_cents": price_a}),
        json!({"product_id": b, "quantity": 1, "price_cents": price_b}),
    ];
    expected.sort_by_key(|line| line["product_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(items, expected);

    // The stock is taken once, by the quantities bought.
    assert_eq!(app.stock(&a).await, stock_a - 2);
    assert_eq!(app.stock(&b).await, stock_b - 1);
    // Charged once, the total.
    assert_eq!(
        ledger(&app.data_dir, &id).await,
        (1, price_a * 2 + price_b, 0)
    );

    // The cart empties itself when it hears OrderConfirmed.
    eventually("the cart to empty after OrderConfirmed", || async {
        let cart = cart(&app, &token).await;
        if cart["items"] == json!([]) && cart["total_cents"] == 0 {
            Ok(())
        } else {
            Err(cart.to_string())
        }
    })
    .await;

    // Lists and reads.
    let mine = app.my_orders(&token).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], id.as_str());
    assert_eq!(mine[0]["status"], "confirmed");
    let read = app.order(&token, &id).await;
    assert_eq!(read["id"], id.as_str());
    assert_eq!(read["status"], "confirmed");
    assert_eq!(read["total_cents"], order["total_cents"]);
    let (stranger, _) = app.register("stranger@example.com").await;
    assert_problem(
        app.get(&format!("{ORDERS}/{id}"), Some(&stranger)).await,
        404,
    )
    .await;
    assert!(
        app.my_orders(&stranger).await.is_empty(),
        "another user's orders listed"
    );
    let admin = app.admin_token().await;
    assert_eq!(app.order(&admin, &id).await["id"], id.as_str());

    // The event stream, in sequence order, the payment token not shown.
    let events = app.order_events(&token, &id, None).await;
    assert_eq!(event_types(&events), CONFIRMED_EVENTS, "{events}");
    let sequences: Vec<u64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence is an integer"))
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "not in sequence order: {sequences:?}"
    );
    for event in events["items"].as_array().unwrap() {
        assert_rfc3339(&event["occurred_at"]);
    }
    assert_eq!(events["status"], "confirmed", "{events}");
    assert!(
        !events.to_string().contains("tok_visa"),
        "the payment token is shown: {events}"
    );
    let placed = &events["items"][0]["data"];
    assert_eq!(placed["total_cents"], order["total_cents"], "{placed}");
    assert_problem(
        app.get(&format!("{ORDERS}/{id}/events"), Some(&stranger))
            .await,
        404,
    )
    .await;
    assert_eq!(
        event_types(&app.order_events(&admin, &id, None).await).len(),
        5
    );

    // `as_of` the placement: only what had happened then, and the state it gave.
    let placed_at = events["items"][0]["occurred_at"].as_str().unwrap();
    let then = app.order_events(&token, &id, Some(placed_at)).await;
    let then_types = event_types(&then);
    assert!(
        !then_types.is_empty() && then_types.len() < 5,
        "as_of={placed_at}: {then}"
    );
    assert_eq!(then_types, event_types(&events)[..then_types.len()]);
    assert_eq!(then["status"], "pending", "as_of={placed_at}: {then}");
    // Before the order existed: nothing.
    let before = app
        .order_events(&token, &id, Some("2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(before["items"], json!([]), "{before}");

    for bad in ["yesterday", "2026-13-01T00:00:00Z", ""] {
        let response = app
            .client
            .get(app.url(&format!("{ORDERS}/{id}/events")))
            .query(&[("as_of", bad)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_buyers_for_twenty_units_twenty_confirmed_twenty_out_of_stock() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (product, _) = pick_products(&app, 1).await.remove(0);
    app.set_stock(&admin, &product, 20).await;

    let tokens: Vec<String> = join_all((0..40).map(|i| {
        let app = &app;
        async move { app.register(&format!("buyer{i}@example.com")).await.0 }
    }))
    .await;
    let body = order_body(&[(&product, 1)], "tok_visa");
    let placed = join_all(tokens.iter().map(|token| app.place_ok(token, &body))).await;

    let (mut confirmed, mut out_of_stock) = (0, 0);
    for (token, (_, order)) in tokens.iter().zip(&placed) {
        let order = app.wait_until_terminal(token, &id_of(order)).await;
        match (order["status"].as_str(), order["failure_reason"].as_str()) {
            (Some("confirmed"), None) => confirmed += 1,
            (Some("failed"), Some("out_of_stock")) => out_of_stock += 1,
            _ => panic!("unexpected outcome: {order}"),
        }
    }
    assert_eq!((confirmed, out_of_stock), (20, 20));
    assert_eq!(app.stock(&product).await, 0);

    // Once the events have reached every consumer (one email per outcome, analytics
    // counting each confirmation once), the stores pass the audit.
    eventually("20 confirmations in the sales report", || async {
        let response = app.get("/api/v1/admin/analytics/sales", Some(&admin)).await;
        let report: Value = response.json().await.unwrap();
        if report["orders_confirmed"] == 20 {
            Ok(())
        } else {
            Err(report.to_string())
        }
    })
    .await;
    eventually("one email per order outcome", || async {
        let mut kinds = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let path = match &cursor {
                Some(c) => format!("/api/v1/admin/notifications?limit=100&cursor={c}"),
                None => "/api/v1/admin/notifications?limit=100".to_owned(),
            };
            let page: Value = app.get(&path, Some(&admin)).await.json().await.unwrap();
            for email in page["items"].as_array().unwrap() {
                if let (Some(kind), Some(order)) =
                    (email["kind"].as_str(), email["order_id"].as_str())
                {
                    kinds.push((kind.to_owned(), order.to_owned()));
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        kinds.sort();
        let total = kinds.len();
        kinds.dedup();
        let of = |k: &str| kinds.iter().filter(|(kind, _)| kind == k).count();
        if total == 40
            && kinds.len() == 40
            && of("order_confirmed") == 20
            && of("order_failed") == 20
        {
            Ok(())
        } else {
            Err(format!("{total} order emails: {kinds:?}"))
        }
    })
    .await;
    assert_audit_clean(&app.data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_makes_one_order_and_one_charge() {
    let app = spawn_app().await;
    let (token, _) = app.register("idem@example.com").await;
    let (product, price) = pick_products(&app, 1).await.remove(0);
    let stock = app.stock(&product).await;
    let body = order_body(&[(&product, 1)], "tok_visa");
    let key = "checkout-3f1c9a";

    let responses = join_all((0..10).map(|_| async {
        let response = app.place_order(&token, &body, Some(key)).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }))
    .await;
    let accepted = accepted_repeats(&responses);
    assert!(
        !accepted.is_empty(),
        "no request was accepted: {responses:?}"
    );
    let (first_status, first) = accepted[0].clone();
    for (status, order) in &accepted {
        assert_eq!(
            (*status, order),
            (first_status, &first),
            "repeats differ: {responses:?}"
        );
    }
    let id = id_of(&first);

    let mine = app.my_orders(&token).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], id.as_str());
    let order = app.wait_until_terminal(&token, &id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let types = event_types(&app.order_events(&token, &id, None).await);
    assert_eq!(count(&types, "PaymentCaptured"), 1, "{types:?}");
    assert_eq!(ledger(&app.data_dir, &id).await, (1, price, 0));
    assert_eq!(app.stock(&product).await, stock - 1);

    // Later, the same request replays the first response, status and body.
    let response = app.place_order(&token, &body, Some(key)).await;
    assert_eq!(response.status().as_u16(), first_status);
    let replay: Value = response.json().await.unwrap();
    assert_eq!(replay, first);

    // The same key with another body is refused, and creates nothing.
    let other_body = order_body(&[(&product, 2)], "tok_visa");
    let problem = assert_problem(app.place_order(&token, &other_body, Some(key)).await, 422).await;
    assert!(
        error_fields(&problem).contains(&"Idempotency-Key".to_owned()),
        "{problem}"
    );
    assert_eq!(app.my_orders(&token).await.len(), 1);

    // Keys are per user: someone else's identical key is a new order.
    let (other, _) = app.register("idem-other@example.com").await;
    let response = app.place_order(&other, &body, Some(key)).await;
    assert_eq!(response.status(), 201);
    let theirs: Value = response.json().await.unwrap();
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(theirs["status"], "confirmed", "{theirs}");
    assert_eq!(app.my_orders(&other).await.len(), 1);
    assert_eq!(app.my_orders(&token).await.len(), 1);
    assert_eq!(app.stock(&product).await, stock - 2);
}

#[tokio::test]
async fn a_declined_card_fails_the_order_and_gives_the_stock_back() {
    let app = spawn_app().await;
    let (token, _) = app.register("declined@example.com").await;
    let (product, _) = pick_products(&app, 1).await.remove(0);
    let stock = app.stock(&product).await;

    let response = app
        .place_order(
            &token,
            &order_body(&[(&product, 3)], "tok_chargeDeclined"),
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(order["failure_reason"], "payment_declined", "{order}");
    assert_eq!(app.stock(&product).await, stock);
    let types = event_types(&app.order_events(&token, &id_of(&order), None).await);
    assert_eq!(count(&types, "PaymentCaptured"), 0, "{types:?}");
    assert_eq!(count(&types, "StockReleased"), 1, "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("OrderFailed"));
    assert_eq!(ledger(&app.data_dir, &id_of(&order)).await, (0, 0, 0));
}

#[tokio::test]
async fn a_payment_timeout_answers_pending_then_fails_and_gives_the_stock_back() {
    let app = spawn_app_with(|c| {
        c.set("payment_timeout_ms", 200);
        c.set("checkout_wait_ms", 100);
    })
    .await;
    let (token, _) = app.register("timeout@example.com").await;
    let (product, _) = pick_products(&app, 1).await.remove(0);
    let stock = app.stock(&product).await;

    let response = app
        .place_order(&token, &order_body(&[(&product, 2)], "tok_timeout"), None)
        .await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "pending", "{order}");
    assert!(order.get("failure_reason").is_none(), "{order}");

    let order = app.wait_until_terminal(&token, &id_of(&order)).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(order["failure_reason"], "payment_unavailable", "{order}");
    assert_eq!(app.stock(&product).await, stock);
    let types = event_types(&app.order_events(&token, &id_of(&order), None).await);
    assert_eq!(count(&types, "PaymentCaptured"), 0, "{types:?}");
    assert!(
        count(&types, "PaymentAttemptFailed") >= 2,
        "no retries: {types:?}"
    );
    assert_eq!(ledger(&app.data_dir, &id_of(&order)).await, (0, 0, 0));
}

#[tokio::test]
async fn cancelling_a_confirmed_order_refunds_and_restocks_once() {
    let app = spawn_app().await;
    let (token, _) = app.register("cancel@example.com").await;
    let (stranger, _) = app.register("cancel-stranger@example.com").await;
    let (product, price) = pick_products(&app, 1).await.remove(0);
    let stock = app.stock(&product).await;

    let (status, order) = app
        .place_ok(&token, &order_body(&[(&product, 2)], "tok_visa"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(order["status"], "confirmed", "{order}");
    let id = id_of(&order);
    assert_eq!(app.stock(&product).await, stock - 2);

    // Someone else cannot, and does not learn the order exists.
    assert_problem(cancel(&app, &stranger, &id).await, 404).await;
    assert_eq!(app.order(&token, &id).await["status"], "confirmed");

    let response = cancel(&app, &token, &id).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert!(
        body["status"] == "cancelled" || body["status"] == "confirmed",
        "{body}"
    );
    let order = app
        .wait_for_order(&token, &id, |o| o["status"] == "cancelled")
        .await;
    assert!(order.get("failure_reason").is_none(), "{order}");
    assert_eq!(app.stock(&product).await, stock);
    let events = app.order_events(&token, &id, None).await;
    let types = event_types(&events);
    assert_eq!(
        types[5..],
        [
            "CancellationRequested",
            "PaymentRefunded",
            "StockRestocked",
            "OrderCancelled"
        ],
        "{events}"
    );
    let refunded = &events["items"][6]["data"];
    assert_eq!(refunded["amount_cents"], price * 2, "{events}");
    assert_eq!(events["items"][8]["data"]["refunded_cents"], price * 2);
    // Money is conserved: what was captured went back.
    assert_eq!(ledger(&app.data_dir, &id).await, (1, price * 2, price * 2));

    // Again: nothing more happens.
    let response = cancel(&app, &token, &id).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(app.stock(&product).await, stock);
    assert_eq!(
        event_types(&app.order_events(&token, &id, None).await),
        types
    );
    assert_eq!(ledger(&app.data_dir, &id).await, (1, price * 2, price * 2));

    // A failed order cannot be cancelled.
    let (_, failed) = app
        .place_ok(&token, &order_body(&[(&product, 1)], "tok_chargeDeclined"))
        .await;
    let failed = app.wait_until_terminal(&token, &id_of(&failed)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_problem(cancel(&app, &token, &id_of(&failed)).await, 409).await;
    assert_problem(cancel(&app, &token, NO_SUCH_ID).await, 404).await;
    assert_eq!(app.stock(&product).await, stock);
}

#[tokio::test]
async fn an_expired_reservation_is_released_once_while_the_payment_is_retried() {
    // Each charge attempt hangs 1.5 s, three attempts; the hold lasts 1 s.
    let app = spawn_app_with(|c| {
        c.set("reservation_ttl_secs", 1);
        c.set("payment_timeout_ms", 1500);
    })
    .await;
    let admin = app.admin_token().await;
    let (slow, _) = app.register("slow@example.com").await;
    let (quick, _) = app.register("quick@example.com").await;
    let (product, _) = pick_products(&app, 1).await.remove(0);
    app.set_stock(&admin, &product, 1).await;

    let (_, held) = app
        .place_ok(&slow, &order_body(&[(&product, 1)], "tok_timeout"))
        .await;
    let held = id_of(&held);
    // The sweeper gives the unit back when the hold expires...
    eventually("the expired reservation to be released", || async {
        match app.stock(&product).await {
            1 => Ok(()),
            n => Err(format!("stock {n}")),
        }
    })
    .await;
    // ...so another buyer can have it.
    let (_, bought) = app
        .place_ok(&quick, &order_body(&[(&product, 1)], "tok_visa"))
        .await;
    let bought = app.wait_until_terminal(&quick, &id_of(&bought)).await;
    assert_eq!(bought["status"], "confirmed", "{bought}");

    // The slow order still ends, and its own release does not free the unit again.
    let order = app.wait_until_terminal(&slow, &held).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(order["failure_reason"], "payment_unavailable", "{order}");
    assert_eq!(app.stock(&product).await, 0);
    let types = event_types(&app.order_events(&slow, &held, None).await);
    assert_eq!(count(&types, "PaymentCaptured"), 0, "{types:?}");

    // It was the sweeper that released it, exactly once.
    let releases = outbox_payloads(&app, "catalog", "catalog.StockReleased")
        .await
        .into_iter()
        .filter(|p| p["order_id"] == held.as_str())
        .collect::<Vec<_>>();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0]["reason"], "expired", "{releases:?}");
}

/// A `POST /orders` body with one line, for breaking one field at a time.
fn valid_body(product: &str) -> Value {
    order_body(&[(product, 1)], "tok_visa")
}

#[tokio::test]
async fn invalid_orders_are_refused_naming_the_field_and_create_nothing() {
    let app = spawn_app().await;
    let (token, _) = app.register("invalid@example.com").await;
    let (product, _) = pick_products(&app, 1).await.remove(0);
    let stock = app.stock(&product).await;

    let mut missing_address = valid_body(&product);
    missing_address
        .as_object_mut()
        .unwrap()
        .remove("shipping_address");
    let mut bad_country = valid_body(&product);
    bad_country["shipping_address"]["country"] = json!("XX");
    let mut empty_name = valid_body(&product);
    empty_name["shipping_address"]["name"] = json!("");
    let mut no_token = valid_body(&product);
    no_token["payment_token"] = json!("");
    let cases = [
        (missing_address, "shipping_address"),
        (bad_country, "shipping_address.country"),
        (empty_name, "shipping_address.name"),
        (no_token, "payment_token"),
        (
            order_body(&[(&product, 0)], "tok_visa"),
            "items[0].quantity",
        ),
        (
            order_body(&[(&product, 101)], "tok_visa"),
            "items[0].quantity",
        ),
        (
            order_body(&[(&product, -1)], "tok_visa"),
            "items[0].quantity",
        ),
        (
            order_body(&[(NO_SUCH_ID, 1)], "tok_visa"),
            "items[0].product_id",
        ),
        (
            order_body(&[(&product, 1), ("not-a-product", 1)], "tok_visa"),
            "items[1].product_id",
        ),
        (order_body(&[], "tok_visa"), "items"),
        // No items and an empty cart.
        (cart_order_body("tok_visa"), "items"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.place_order(&token, &body, None).await, 422).await;
        assert!(
            error_fields(&problem).contains(&field.to_owned()),
            "{body} -> {problem}, expected a complaint about {field}"
        );
    }

    // Malformed JSON and wrong types are 400.
    let response = app
        .post_raw(
            ORDERS,
            "{\"items\": [",
            Some("application/json"),
            Some(&token),
        )
        .await;
    assert_problem(response, 400).await;
    let mut wrong_type = valid_body(&product);
    wrong_type["items"][0]["quantity"] = json!("two");
    assert_problem(app.place_order(&token, &wrong_type, None).await, 400).await;

    // A bad Idempotency-Key is a bad request.
    for key in ["k".repeat(300), "has space".to_owned()] {
        let response = app
            .place_order(&token, &valid_body(&product), Some(&key))
            .await;
        assert_problem(response, 400).await;
    }

    // Without a token: 401.
    let response = app.post_json(ORDERS, &valid_body(&product), None).await;
    assert_problem(response, 401).await;
    assert_problem(app.get(ORDERS, None).await, 401).await;
    assert_problem(app.get(&format!("{ORDERS}/{NO_SUCH_ID}"), None).await, 401).await;

    // Nothing was ordered, nothing reserved.
    assert!(app.my_orders(&token).await.is_empty());
    assert_eq!(app.stock(&product).await, stock);
}

#[tokio::test]
async fn order_reads_refuse_bad_paging_and_unknown_ids() {
    let app = spawn_app().await;
    let (token, _) = app.register("paging@example.com").await;

    for limit in ["0", "101"] {
        let problem = assert_problem(
            app.get(&format!("{ORDERS}?limit={limit}"), Some(&token))
                .await,
            422,
        )
        .await;
        assert_eq!(error_fields(&problem), ["limit"], "{problem}");
    }
    // A cursor is opaque: one the API did not issue is malformed, as on every list.
    for cursor in ["garbage", "cDE6bm90LWEtdXVpZA"] {
        assert_problem(
            app.get(&format!("{ORDERS}?cursor={cursor}"), Some(&token))
                .await,
            400,
        )
        .await;
    }
    assert_problem(
        app.get(&format!("{ORDERS}?limit=many"), Some(&token)).await,
        400,
    )
    .await;

    for id in [NO_SUCH_ID, "not-an-id"] {
        assert_problem(app.get(&format!("{ORDERS}/{id}"), Some(&token)).await, 404).await;
        assert_problem(
            app.get(&format!("{ORDERS}/{id}/events"), Some(&token))
                .await,
            404,
        )
        .await;
    }
}

#[tokio::test]
async fn order_lists_page_newest_first() {
    let app = spawn_app().await;
    let (token, _) = app.register("pages@example.com").await;
    let (product, _) = pick_products(&app, 1).await.remove(0);
    let mut placed = Vec::new();
    for _ in 0..3 {
        let (_, order) = app
            .place_ok(&token, &order_body(&[(&product, 1)], "tok_visa"))
            .await;
        placed.push(id_of(&order));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("{ORDERS}?limit=2&cursor={c}"),
            None => format!("{ORDERS}?limit=2"),
        };
        let page: Value = app.get(&path, Some(&token)).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        seen.extend(items.iter().map(id_of));
        match &page["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => break,
            other => panic!("next_cursor: {other}"),
        }
    }
    placed.reverse();
    assert_eq!(seen, placed, "newest first, each once");
}

/// `items` (of a cart or an order) as `(product_id, quantity)`, sorted.
fn quantities(items: &Value) -> Vec<(String, u64)> {
    let mut lines: Vec<(String, u64)> = items
        .as_array()
        .unwrap_or_else(|| panic!("not a list of items: {items}"))
        .iter()
        .map(|l| {
            (
                l["product_id"].as_str().unwrap().to_owned(),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect();
    lines.sort();
    lines
}

/// A slow payment provider: the confirmation lands well after the order was placed.
fn slow_payments(config: &mut bazaar::config::Config) {
    config.set("payment_provider_latency_ms", 800);
    config.set("checkout_wait_ms", 100);
}

#[tokio::test]
async fn lines_added_while_an_order_is_paid_stay_in_the_cart() {
    let app = spawn_app_with(slow_payments).await;
    let (token, _) = app.register("late-adds@example.com").await;
    let products = pick_products(&app, 3).await;
    let [(a, _), (b, _), (c, _)] = [
        products[0].clone(),
        products[1].clone(),
        products[2].clone(),
    ];
    app.add_to_cart(&token, &a, 2).await;
    app.add_to_cart(&token, &b, 1).await;
    let response = app
        .place_order(&token, &cart_order_body("tok_visa"), None)
        .await;
    assert_eq!(
        response.status(),
        202,
        "the payment should still be running"
    );
    let id = id_of(&response.json().await.unwrap());

    // While the payment runs: a new product, and one more unit of a line bought.
    app.add_to_cart(&token, &c, 1).await;
    app.add_to_cart(&token, &b, 2).await;
    assert_eq!(
        app.order(&token, &id).await["status"],
        "pending",
        "the order was confirmed before the cart changed: the test proves nothing"
    );
    let order = app.wait_until_terminal(&token, &id).await;
    assert_eq!(order["status"], "confirmed", "{order}");

    // The confirmation takes what was bought (all of a, one b) and nothing else.
    let mut expected = vec![(b.clone(), 2), (c.clone(), 1)];
    expected.sort();
    eventually("the bought lines to leave the cart", || async {
        let lines = quantities(&cart(&app, &token).await["items"]);
        if lines == expected {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    })
    .await;

    // The next checkout buys what is left.
    let (_, second) = app.place_ok(&token, &cart_order_body("tok_visa")).await;
    let second = app.wait_until_terminal(&token, &id_of(&second)).await;
    assert_eq!(second["status"], "confirmed", "{second}");
    assert_eq!(quantities(&second["items"]), expected);
}

#[tokio::test]
async fn the_confirmation_email_names_the_products() {
    let app = spawn_app().await;
    let (token, _) = app.register("named@example.com").await;
    let product = app.products(1).await.remove(0);
    let (id, name) = (
        id_of(&product),
        product["name"].as_str().unwrap().to_owned(),
    );
    let price = product["price_cents"].as_i64().unwrap();
    let (_, order) = app
        .place_ok(&token, &order_body(&[(&id, 2)], "tok_visa"))
        .await;
    let order_id = id_of(&order);
    assert_eq!(
        app.wait_until_terminal(&token, &order_id).await["status"],
        "confirmed"
    );
    let subject = format!("Subject: Your bazaar order {order_id} is confirmed");
    let email = eventually("the confirmation email", || async {
        emails(&app.data_dir)
            .into_iter()
            .find(|text| text.contains(&subject))
            .ok_or_else(|| "not written yet".to_owned())
    })
    .await;
    let cents = |c: i64| format!("${}.{:02}", c / 100, c % 100);
    let line = format!("2 x {name} at {} = {}", cents(price), cents(price * 2));
    assert!(email.contains(&line), "no `{line}` in:\n{email}");
    assert!(!email.contains(&id), "the product id is shown:\n{email}");
    // The order's events carry the name as sold.
    let published = outbox_payloads(&app, "orders", "orders.OrderConfirmed").await;
    let confirmed = published
        .iter()
        .find(|p| p["order_id"] == order_id.as_str())
        .expect("OrderConfirmed in the outbox");
    assert_eq!(confirmed["lines"][0]["name"], name.as_str(), "{confirmed}");
    // The public order keeps its shape.
    assert_eq!(
        app.order(&token, &order_id).await["items"],
        json!([{"product_id": id, "quantity": 2, "price_cents": price}])
    );
}

/// The types of an order's stored events, read from its store.
async fn stored_event_types(data: &DataDir, order_id: &str) -> Vec<String> {
    let pool = open_db(data, "orders").await;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT event_type FROM order_events WHERE order_id = $1 ORDER BY sequence")
            .bind(order_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().map(|(t,)| t).collect()
}

/// Stopping bazaar while a saga step runs: the step finishes and is recorded before
/// the stores close (the capture is not lost to a closed pool), and the next start
/// goes on from there without charging again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_running_saga_step_then_a_restart_finishes_the_order() {
    let data = DataDir::new().await;
    let config = || {
        let mut config = test_config(data.path());
        data.configure(&mut config);
        slow_payments(&mut config);
        config
    };
    let start = |config: bazaar::config::Config| async move {
        let app = bazaar::Application::build(config)
            .await
            .expect("app builds");
        let api = Api {
            address: format!("http://127.0.0.1:{}", app.port()),
            client: client(),
        };
        let stop = app.shutdown_token();
        (api, stop, tokio::spawn(app.run_until_stopped()))
    };

    let (api, stop, running) = start(config()).await;
    let (token, _) = api.register("drain@example.com").await;
    let product = api.products(1).await.remove(0);
    let (id, price) = (id_of(&product), product["price_cents"].as_i64().unwrap());
    let response = api
        .place_order(&token, &order_body(&[(&id, 1)], "tok_visa"), None)
        .await;
    assert_eq!(response.status(), 202);
    let order_id = id_of(&response.json().await.unwrap());
    // Stop once the charge is under way (the provider takes 800 ms).
    eventually("the stock to be reserved", || async {
        let types = event_types(&api.order_events(&token, &order_id, None).await);
        if types.iter().any(|t| t == "StockReserved") {
            Ok(())
        } else {
            Err(format!("{types:?}"))
        }
    })
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();

    assert_eq!(
        stored_event_types(&data, &order_id).await,
        ["OrderPlaced", "StockReserved", "PaymentCaptured"],
        "the charge that was running is recorded, and nothing after it"
    );
    assert_eq!(ledger(&data, &order_id).await, (1, price, 0));

    let (api, stop, running) = start(config()).await;
    let order = api.wait_until_terminal(&token, &order_id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(
        ledger(&data, &order_id).await,
        (1, price, 0),
        "charged again"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_audit_clean(&data).await;
}
