//! Crash recovery with the real binary: the test-only fault switch
//! (`BAZAAR_FAULT_ABORT_AT`) aborts `bazaar serve` right after a checkout step is
//! persisted; a restart on the same data dir, without the fault, must finish the
//! order — confirmed, the stock taken once, one charge, the cart emptied — and leave
//! stores that `bazaar audit` finds clean. With `BAZAAR_TEST_BACKEND=postgres` the
//! server's stores are a fresh PostgreSQL database.

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, CONFIRMED_EVENTS, DataDir, EXIT, Server, assert_audit_clean,
    cart_order_body, event_types, eventually, is_terminal, ledger,
};

const PASSWORD: &str = "crash-password";
const QUANTITY: i64 = 2;

/// The environment of every start: a small catalog, an admin, no rate limit.
fn environment() -> Vec<(&'static str, &'static str)> {
    vec![
        ("BAZAAR_SEED_PRODUCTS", "5"),
        ("BAZAAR_ADMIN_EMAIL", ADMIN_EMAIL),
        ("BAZAAR_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("BAZAAR_RATE_LIMIT_PER_SECOND", "0"),
        ("BAZAAR_AUTH_RATE_LIMIT_PER_SECOND", "0"),
    ]
}

async fn get_json(server: &Server, path: &str, token: Option<&str>) -> Value {
    let mut request = server.client.get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn stock(server: &Server, product_id: &str) -> i64 {
    let product = get_json(server, &format!("/api/v1/products/{product_id}"), None).await;
    product["stock"].as_i64().expect("stock is an integer")
}

async fn crash_then_recover(point: &str) {
    let dir = DataDir::new().await;
    let mut faulty = environment();
    faulty.push(("BAZAAR_FAULT_ABORT_AT", point));
    let mut first = Server::start(&dir, &faulty).await;

    let session = first
        .register(&format!("crash-{point}@example.com"), PASSWORD)
        .await;
    let token = session["token"].as_str().unwrap().to_owned();
    let products = first.products().await;
    assert_eq!(products.len(), 5);
    let product = products[0]["id"].as_str().unwrap().to_owned();
    let price = products[0]["price_cents"].as_i64().unwrap();
    let before = products[0]["stock"].as_i64().unwrap();
    assert!(before >= QUANTITY, "{}", products[0]);
    let response = first
        .client
        .post(first.url("/api/v1/cart/items"))
        .bearer_auth(&token)
        .json(&json!({"product_id": product, "quantity": QUANTITY}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The checkout kills the process mid-request: the connection drops (any answer
    // that did get out is ignored; the order is looked up after the restart).
    let outcome = first
        .client
        .post(first.url("/api/v1/orders"))
        .bearer_auth(&token)
        .json(&cart_order_body("tok_visa"))
        .send()
        .await;
    let status = first.proc.wait(EXIT);
    assert!(
        !status.success(),
        "{point}: bazaar should have aborted, exited {status}; request: {outcome:?}; stderr:\n{}",
        first.proc.stderr()
    );
    drop(first);

    let mut second = Server::start(&dir, &environment()).await;
    let mine = get_json(&second, "/api/v1/orders", Some(&token)).await;
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{point}: {mine}");
    let id = items[0]["id"].as_str().unwrap().to_owned();

    let order = eventually(&format!("{point}: order {id} to finish"), || async {
        let order = get_json(&second, &format!("/api/v1/orders/{id}"), Some(&token)).await;
        if is_terminal(&order) {
            Ok(order)
        } else {
            Err(order.to_string())
        }
    })
    .await;
    assert_eq!(order["status"], "confirmed", "{point}: {order}");
    assert_eq!(order["total_cents"], price * QUANTITY, "{point}: {order}");

    let events = get_json(
        &second,
        &format!("/api/v1/orders/{id}/events"),
        Some(&token),
    )
    .await;
    assert_eq!(event_types(&events), CONFIRMED_EVENTS, "{point}: {events}");
    assert_eq!(stock(&second, &product).await, before - QUANTITY, "{point}");

    // OrderConfirmed reaches the cart, even when it was still unsent at the crash.
    eventually(&format!("{point}: the cart to empty"), || async {
        let cart = get_json(&second, "/api/v1/cart", Some(&token)).await;
        if cart["items"] == json!([]) {
            Ok(())
        } else {
            Err(cart.to_string())
        }
    })
    .await;

    let status = second.terminate();
    assert!(status.success(), "{point}: SIGTERM exit {status}");
    let (captures, captured, refunded) = ledger(&dir, &id).await;
    assert_eq!(
        (captures, captured, refunded),
        (1, price * QUANTITY, 0),
        "{point}: the ledger"
    );
    assert_audit_clean(&dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_after_the_reservation_is_recovered() {
    crash_then_recover("after_reserve").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_after_the_charge_is_recovered_without_a_second_charge() {
    crash_then_recover("after_charge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_before_publishing_still_empties_the_cart() {
    crash_then_recover("before_publish").await;
}
