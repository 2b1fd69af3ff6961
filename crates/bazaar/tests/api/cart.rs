//! cart: a per-user cart priced by the catalog.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, error_fields, spawn_app, statuses, tally};

const CART: &str = "/api/v1/cart";
const ITEMS: &str = "/api/v1/cart/items";

async fn cart(app: &TestApp, token: &str) -> Value {
    let response = app.get(CART, Some(token)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn add(app: &TestApp, token: &str, product_id: &str, quantity: i64) -> reqwest::Response {
    app.post_json(
        ITEMS,
        &json!({"product_id": product_id, "quantity": quantity}),
        Some(token),
    )
    .await
}

/// Two distinct products: (id, price_cents) each.
async fn two_products(app: &TestApp) -> [(String, i64); 2] {
    let page: Value = app
        .get("/api/v1/products?limit=2", None)
        .await
        .json()
        .await
        .unwrap();
    let pick = |i: usize| {
        (
            page["items"][i]["id"].as_str().unwrap().to_owned(),
            page["items"][i]["price_cents"].as_i64().unwrap(),
        )
    };
    [pick(0), pick(1)]
}

fn assert_empty(cart: &Value) {
    assert_eq!(cart["items"], json!([]), "{cart}");
    assert_eq!(cart["total_cents"], 0, "{cart}");
}

#[tokio::test]
async fn a_new_user_has_an_empty_cart() {
    let app = spawn_app().await;
    let (token, _) = app.register("empty@example.com").await;
    let cart = cart(&app, &token).await;
    assert_empty(&cart);
}

#[tokio::test]
async fn adding_a_product_prices_the_line() {
    let app = spawn_app().await;
    let (token, _) = app.register("add@example.com").await;
    let [(id, price), _] = two_products(&app).await;

    let response = add(&app, &token, &id, 3).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["items"],
        json!([{"product_id": id, "quantity": 3, "price_cents": price}])
    );
    assert_eq!(body["total_cents"], price * 3);
    // GET agrees with what POST returned.
    assert_eq!(cart(&app, &token).await, body);
}

#[tokio::test]
async fn adding_the_same_product_increments_its_line() {
    let app = spawn_app().await;
    let (token, _) = app.register("inc@example.com").await;
    let [(a, price_a), (b, price_b)] = two_products(&app).await;

    assert_eq!(add(&app, &token, &a, 2).await.status(), 200);
    assert_eq!(add(&app, &token, &a, 3).await.status(), 200);
    let body = cart(&app, &token).await;
    assert_eq!(
        body["items"],
        json!([{"product_id": a, "quantity": 5, "price_cents": price_a}])
    );
    assert_eq!(body["total_cents"], price_a * 5);

    let response = add(&app, &token, &b, 1).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(body["total_cents"], price_a * 5 + price_b);
}

#[tokio::test]
async fn a_line_holds_at_most_100() {
    let app = spawn_app().await;
    let (token, _) = app.register("full@example.com").await;
    let [(id, price), _] = two_products(&app).await;

    assert_eq!(add(&app, &token, &id, 60).await.status(), 200);
    let problem = assert_problem(add(&app, &token, &id, 41).await, 422).await;
    assert_eq!(error_fields(&problem), ["quantity"], "{problem}");
    // The line is unchanged by the rejected add.
    let body = cart(&app, &token).await;
    assert_eq!(body["items"][0]["quantity"], 60);
    assert_eq!(body["total_cents"], price * 60);

    // Up to exactly 100 is fine.
    assert_eq!(add(&app, &token, &id, 40).await.status(), 200);
    assert_eq!(cart(&app, &token).await["items"][0]["quantity"], 100);
    let problem = assert_problem(add(&app, &token, &id, 1).await, 422).await;
    assert_eq!(error_fields(&problem), ["quantity"], "{problem}");
}

#[tokio::test]
async fn quantity_out_of_range_is_422() {
    let app = spawn_app().await;
    let (token, _) = app.register("range@example.com").await;
    let [(id, _), _] = two_products(&app).await;
    for quantity in [0, -1, 101, i64::from(u32::MAX) + 1] {
        let problem = assert_problem(add(&app, &token, &id, quantity).await, 422).await;
        assert_eq!(
            error_fields(&problem),
            ["quantity"],
            "{quantity}: {problem}"
        );
    }
    assert_empty(&cart(&app, &token).await);
    // 100 in one go is allowed.
    assert_eq!(add(&app, &token, &id, 100).await.status(), 200);
}

#[tokio::test]
async fn non_numeric_quantity_is_400() {
    let app = spawn_app().await;
    let (token, _) = app.register("nan@example.com").await;
    let [(id, _), _] = two_products(&app).await;
    for quantity in [
        json!("two"),
        json!(1.5),
        json!("1"),
        json!(null),
        json!(true),
    ] {
        let response = app
            .post_json(
                ITEMS,
                &json!({"product_id": id, "quantity": quantity}),
                Some(&token),
            )
            .await;
        assert_problem(response, 400).await;
    }
    assert_empty(&cart(&app, &token).await);
}

#[tokio::test]
async fn missing_wrong_typed_or_unknown_fields() {
    let app = spawn_app().await;
    let (token, _) = app.register("fields@example.com").await;
    let [(id, _), _] = two_products(&app).await;

    let missing = app
        .post_json(ITEMS, &json!({"product_id": id}), Some(&token))
        .await;
    let problem = assert_problem(missing, 422).await;
    assert_eq!(error_fields(&problem), ["quantity"], "{problem}");

    let missing = app
        .post_json(ITEMS, &json!({"quantity": 1}), Some(&token))
        .await;
    let problem = assert_problem(missing, 422).await;
    assert_eq!(error_fields(&problem), ["product_id"], "{problem}");

    let wrong = app
        .post_json(
            ITEMS,
            &json!({"product_id": 7, "quantity": 1}),
            Some(&token),
        )
        .await;
    assert_problem(wrong, 400).await;

    let unknown = app
        .post_json(
            ITEMS,
            &json!({"product_id": id, "quantity": 1, "price_cents": 1}),
            Some(&token),
        )
        .await;
    assert_problem(unknown, 400).await;

    let malformed = app
        .post_raw(
            ITEMS,
            "{\"product_id\":",
            Some("application/json"),
            Some(&token),
        )
        .await;
    assert_problem(malformed, 400).await;

    assert_empty(&cart(&app, &token).await);
}

#[tokio::test]
async fn unknown_product_is_404() {
    let app = spawn_app().await;
    let (token, _) = app.register("unknown@example.com").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_problem(add(&app, &token, &unknown, 1).await, 404).await;
    assert_problem(add(&app, &token, "not-a-uuid", 1).await, 404).await;
    assert_empty(&cart(&app, &token).await);
}

#[tokio::test]
async fn removing_a_line() {
    let app = spawn_app().await;
    let (token, _) = app.register("remove@example.com").await;
    let [(a, _), (b, price_b)] = two_products(&app).await;
    assert_eq!(add(&app, &token, &a, 2).await.status(), 200);
    assert_eq!(add(&app, &token, &b, 4).await.status(), 200);

    let response = app.delete(&format!("{ITEMS}/{a}"), Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["items"],
        json!([{"product_id": b, "quantity": 4, "price_cents": price_b}])
    );
    assert_eq!(body["total_cents"], price_b * 4);

    let response = app.delete(&format!("{ITEMS}/{b}"), Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_empty(&body);
    assert_empty(&cart(&app, &token).await);
}

#[tokio::test]
async fn removing_an_absent_line_is_200() {
    let app = spawn_app().await;
    let (token, _) = app.register("absent@example.com").await;
    let [(a, price), (b, _)] = two_products(&app).await;
    assert_eq!(add(&app, &token, &a, 1).await.status(), 200);

    for absent in [b, uuid::Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let response = app.delete(&format!("{ITEMS}/{absent}"), Some(&token)).await;
        assert_eq!(response.status(), 200, "{absent}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(body["total_cents"], price);
    }
}

#[tokio::test]
async fn carts_are_per_user() {
    let app = spawn_app().await;
    let (alice, _) = app.register("alice@example.com").await;
    let (bob, _) = app.register("bob@example.com").await;
    let [(a, price_a), (b, price_b)] = two_products(&app).await;

    assert_eq!(add(&app, &alice, &a, 2).await.status(), 200);
    assert_eq!(add(&app, &bob, &b, 3).await.status(), 200);

    let alices = cart(&app, &alice).await;
    assert_eq!(
        alices["items"],
        json!([{"product_id": a, "quantity": 2, "price_cents": price_a}])
    );
    assert_eq!(alices["total_cents"], price_a * 2);
    let bobs = cart(&app, &bob).await;
    assert_eq!(
        bobs["items"],
        json!([{"product_id": b, "quantity": 3, "price_cents": price_b}])
    );

    // Bob removing Alice's product touches only his own cart.
    assert_eq!(
        app.delete(&format!("{ITEMS}/{a}"), Some(&bob))
            .await
            .status(),
        200
    );
    assert_eq!(cart(&app, &alice).await, alices);
}

#[tokio::test]
async fn the_cart_needs_a_token() {
    let app = spawn_app().await;
    let [(id, _), _] = two_products(&app).await;
    assert_problem(app.get(CART, None).await, 401).await;
    assert_problem(
        app.post_json(ITEMS, &json!({"product_id": id, "quantity": 1}), None)
            .await,
        401,
    )
    .await;
    assert_problem(app.delete(&format!("{ITEMS}/{id}"), None).await, 401).await;
    assert_problem(app.get(CART, Some("not-a-token")).await, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_push_a_line_past_100() {
    let app = spawn_app().await;
    let (token, _) = app.register("busy@example.com").await;
    let [(id, price), _] = two_products(&app).await;
    let adds = (0..8).map(|_| add(&app, &token, &id, 20));
    let statuses = statuses(adds).await;
    assert_eq!(tally(&statuses, [200, 422]), (5, 3), "{statuses:?}");
    let body = cart(&app, &token).await;
    assert_eq!(body["items"][0]["quantity"], 100, "{body}");
    assert_eq!(body["total_cents"], price * 100);
}
