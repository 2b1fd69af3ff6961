//! catalog: listing, paging, search, get, admin create and admin set stock.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{SEEDED, TestApp, assert_problem, error_fields, spawn_app, statuses, tally};

const PRODUCTS: &str = "/api/v1/products";
const PRODUCT_FIELDS: [&str; 7] = [
    "id",
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "stock",
];

fn assert_product_shape(product: &Value) {
    let object = product.as_object().expect("a product is an object");
    for field in PRODUCT_FIELDS {
        assert!(object.contains_key(field), "missing {field}: {product}");
    }
    assert!(uuid::Uuid::try_parse(product["id"].as_str().unwrap()).is_ok());
    assert!(product["sku"].is_string() && product["name"].is_string());
    assert!(product["description"].is_string());
    assert!(product["price_cents"].is_i64(), "{product}");
    assert!(product["stock"].is_i64(), "{product}");
    assert_eq!(product["currency"], "USD");
}

fn new_product(sku: &str) -> Value {
    json!({
        "sku": sku,
        "name": "Enamel Mug",
        "description": "A sturdy mug.",
        "price_cents": 1299,
        "currency": "USD",
        "stock": 25
    })
}

async fn create(app: &TestApp, token: &str, body: &Value) -> Value {
    let response = app.post_json(PRODUCTS, body, Some(token)).await;
    assert_eq!(response.status(), 201, "creating {body}");
    response.json().await.unwrap()
}

async fn list(app: &TestApp, query: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(app.url(PRODUCTS))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// Every product matching `q`, over all pages.
async fn search_all(app: &TestApp, q: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut query = vec![("q", q), ("limit", "100")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let response = list(app, &query).await;
        assert_eq!(response.status(), 200, "q={q:?}");
        let page: Value = response.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("search did not finish");
}

fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn list_returns_a_default_page_of_products() {
    let app = spawn_app().await;
    let response = app.get(PRODUCTS, None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 20, "the default page holds 20");
    for item in items {
        assert_product_shape(item);
    }
    assert!(body["next_cursor"].is_string(), "{body}");
}

#[tokio::test]
async fn limit_is_honoured_within_bounds() {
    let app = spawn_app().await;
    for (limit, expected) in [("1", 1), ("7", 7), ("100", SEEDED as usize)] {
        let response = list(&app, &[("limit", limit)]).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), expected, "{limit}");
    }
    // A page holding everything is the last page.
    let body: Value = list(&app, &[("limit", "100")]).await.json().await.unwrap();
    assert!(body["next_cursor"].is_null(), "{body}");
}

#[tokio::test]
async fn limit_out_of_range_is_422() {
    let app = spawn_app().await;
    for limit in ["0", "101", "1000000"] {
        let problem = assert_problem(list(&app, &[("limit", limit)]).await, 422).await;
        assert_eq!(error_fields(&problem), ["limit"], "{limit}: {problem}");
    }
}

#[tokio::test]
async fn limit_that_is_not_a_number_is_400() {
    let app = spawn_app().await;
    for limit in ["abc", "-1", "1.5", "99999999999999999999"] {
        assert_problem(list(&app, &[("limit", limit)]).await, 400).await;
    }
}

#[tokio::test]
async fn cursor_pagination_visits_every_seeded_product_once() {
    let app = spawn_app().await;
    // 7 does not divide 30: the last page is a partial one.
    let items = app.all_products(7).await;
    assert_eq!(items.len(), SEEDED as usize);
    let ids: HashSet<&str> = items.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), items.len(), "a product appeared twice");
    let skus: HashSet<String> = items
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = (1..=SEEDED).map(|i| format!("BZ-{i:05}")).collect();
    assert_eq!(skus, expected);
    for item in &items {
        assert_product_shape(item);
    }

    // Pages that divide the catalog exactly end with null too, with no empty page
    // needed to learn that.
    let items = app.all_products(10).await;
    assert_eq!(items.len(), SEEDED as usize);
    let items = app.all_products(1).await;
    assert_eq!(items.len(), SEEDED as usize);
}

#[tokio::test]
async fn the_last_full_page_has_no_next_cursor() {
    let app = spawn_app().await;
    let first: Value = list(&app, &[("limit", "15")]).await.json().await.unwrap();
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second: Value = list(&app, &[("limit", "15"), ("cursor", &cursor)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 15);
    assert!(second["next_cursor"].is_null(), "{second}");
}

#[tokio::test]
async fn invalid_cursor_is_400() {
    let app = spawn_app().await;
    let product = app.first_product().await;
    for cursor in [
        "garbage",
        "!!!",
        // base64url of "p1:not-a-uuid"
        "cDE6bm90LWEtdXVpZA",
        // a product id is not a cursor
        product["id"].as_str().unwrap(),
    ] {
        assert_problem(list(&app, &[("cursor", cursor)]).await, 400).await;
    }
}

#[tokio::test]
async fn search_is_case_insensitive_over_name_and_description() {
    let app = spawn_app().await;
    let lower = search_all(&app, "classic").await;
    let upper = search_all(&app, "CLASSIC").await;
    let mixed = search_all(&app, "cLaSsIc").await;
    assert!(!lower.is_empty(), "the demo catalog has Classic products");
    assert!(lower.len() < SEEDED as usize, "search must filter");
    assert_eq!(names(&lower), names(&upper));
    assert_eq!(names(&lower), names(&mixed));
    for product in &lower {
        let text = format!("{} {}", product["name"], product["description"]).to_lowercase();
        assert!(text.contains("classic"), "{product}");
    }
    // Every seeded product that mentions it is found.
    let all = app.all_products(100).await;
    let expected = all
        .iter()
        .filter(|p| {
            format!("{} {}", p["name"], p["description"])
                .to_lowercase()
                .contains("classic")
        })
        .count();
    assert_eq!(lower.len(), expected);

    // Descriptions are searched too.
    let in_description = search_all(&app, "demo catalog, item 1.").await;
    assert_eq!(in_description.len(), 1, "{in_description:?}");
    assert_eq!(in_description[0]["sku"], "BZ-00001");

    // An empty q filters nothing.
    let everything: Value = list(&app, &[("q", ""), ("limit", "100")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        everything["items"].as_array().unwrap().len(),
        SEEDED as usize
    );

    let nothing: Value = list(&app, &[("q", "no-such-product-anywhere")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nothing["items"], json!([]));
    assert!(nothing["next_cursor"].is_null());
}

#[tokio::test]
async fn search_pages_with_a_cursor() {
    let app = spawn_app().await;
    let expected = search_all(&app, "classic").await;
    assert!(expected.len() >= 2, "need two pages of results");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut query = vec![("q", "Classic"), ("limit", "1")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let page: Value = list(&app, &query).await.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(names(&seen), names(&expected));
}

#[tokio::test]
async fn search_wildcards_are_literal() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut percent = new_product("PCT-1");
    percent["name"] = json!("Mug 50% Off");
    create(&app, &admin, &percent).await;
    let mut underscore = new_product("UND-1");
    underscore["name"] = json!("snake_case Mug");
    create(&app, &admin, &underscore).await;
    let mut backslash = new_product("BSL-1");
    backslash["name"] = json!(r"Back\slash Mug");
    create(&app, &admin, &backslash).await;

    assert_eq!(names(&search_all(&app, "%").await), ["Mug 50% Off"]);
    assert_eq!(names(&search_all(&app, "50%").await), ["Mug 50% Off"]);
    assert_eq!(names(&search_all(&app, "_").await), ["snake_case Mug"]);
    assert_eq!(names(&search_all(&app, "E_C").await), ["snake_case Mug"]);
    assert_eq!(names(&search_all(&app, "\\").await), [r"Back\slash Mug"]);
    // `_` does not stand for any one character, nor `%` for any run.
    assert!(search_all(&app, "mu_").await.is_empty());
    assert!(search_all(&app, "m%g").await.is_empty());
}

#[tokio::test]
async fn overlong_query_is_422() {
    let app = spawn_app().await;
    let q = "x".repeat(201);
    let problem = assert_problem(list(&app, &[("q", &q)]).await, 422).await;
    assert_eq!(error_fields(&problem), ["q"], "{problem}");
}

#[tokio::test]
async fn get_by_id() {
    let app = spawn_app().await;
    let listed = app.first_product().await;
    let id = listed["id"].as_str().unwrap();
    let response = app.get(&format!("{PRODUCTS}/{id}"), None).await;
    assert_eq!(response.status(), 200);
    let product: Value = response.json().await.unwrap();
    assert_product_shape(&product);
    assert_eq!(product, listed);
}

#[tokio::test]
async fn unknown_product_is_404() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::now_v7();
    assert_problem(app.get(&format!("{PRODUCTS}/{unknown}"), None).await, 404).await;
    assert_problem(app.get(&format!("{PRODUCTS}/not-a-uuid"), None).await, 404).await;
}

#[tokio::test]
async fn admin_creates_a_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = create(&app, &admin, &new_product("MUG-001")).await;
    assert_product_shape(&created);
    assert_eq!(created["sku"], "MUG-001");
    assert_eq!(created["name"], "Enamel Mug");
    assert_eq!(created["description"], "A sturdy mug.");
    assert_eq!(created["price_cents"], 1299);
    assert_eq!(created["stock"], 25);

    let id = created["id"].as_str().unwrap();
    let fetched: Value = app
        .get(&format!("{PRODUCTS}/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);
    assert_eq!(app.all_products(100).await.len(), SEEDED as usize + 1);

    // description is optional.
    let mut bare = new_product("MUG-002");
    bare.as_object_mut().unwrap().remove("description");
    let created = create(&app, &admin, &bare).await;
    assert_eq!(created["description"], "");
}

#[tokio::test]
async fn duplicate_sku_is_409() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    create(&app, &admin, &new_product("DUP-1")).await;
    let again = app
        .post_json(PRODUCTS, &new_product("DUP-1"), Some(&admin))
        .await;
    assert_problem(again, 409).await;
    // A seeded SKU is taken too.
    let seeded = app
        .post_json(PRODUCTS, &new_product("BZ-00001"), Some(&admin))
        .await;
    assert_problem(seeded, 409).await;
}

#[tokio::test]
async fn invalid_product_lists_every_bad_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let body = json!({
        "sku": "bad sku!",
        "name": "",
        "description": "d".repeat(2001),
        "price_cents": -1,
        "currency": "EUR",
        "stock": -5
    });
    let problem = assert_problem(app.post_json(PRODUCTS, &body, Some(&admin)).await, 422).await;
    let mut fields = error_fields(&problem);
    fields.sort();
    assert_eq!(
        fields,
        [
            "currency",
            "description",
            "name",
            "price_cents",
            "sku",
            "stock"
        ],
        "{problem}"
    );
    assert_eq!(app.all_products(100).await.len(), SEEDED as usize);
}

#[tokio::test]
async fn create_with_missing_wrong_typed_or_unknown_fields() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    let mut missing = new_product("MISS-1");
    missing.as_object_mut().unwrap().remove("price_cents");
    let problem = assert_problem(app.post_json(PRODUCTS, &missing, Some(&admin)).await, 422).await;
    assert_eq!(error_fields(&problem), ["price_cents"], "{problem}");

    let mut wrong = new_product("WRONG-1");
    wrong["price_cents"] = json!("12.99");
    assert_problem(app.post_json(PRODUCTS, &wrong, Some(&admin)).await, 400).await;

    let mut fractional = new_product("WRONG-2");
    fractional["price_cents"] = json!(12.99);
    assert_problem(
        app.post_json(PRODUCTS, &fractional, Some(&admin)).await,
        400,
    )
    .await;

    let mut unknown = new_product("UNK-1");
    unknown["id"] = json!(uuid::Uuid::now_v7().to_string());
    assert_problem(app.post_json(PRODUCTS, &unknown, Some(&admin)).await, 400).await;
}

#[tokio::test]
async fn create_requires_an_admin() {
    let app = spawn_app().await;
    let (customer, _) = app.register("shopper@example.com").await;
    let forbidden = app
        .post_json(PRODUCTS, &new_product("NOPE-1"), Some(&customer))
        .await;
    assert_problem(forbidden, 403).await;
    let anonymous = app.post_json(PRODUCTS, &new_product("NOPE-2"), None).await;
    assert_problem(anonymous, 401).await;
    let forged = app
        .post_json(PRODUCTS, &new_product("NOPE-3"), Some("forged"))
        .await;
    assert_problem(forged, 401).await;
    assert_eq!(app.all_products(100).await.len(), SEEDED as usize);
}

#[tokio::test]
async fn admin_sets_stock() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.first_product().await;
    let id = product["id"].as_str().unwrap();
    let path = format!("{PRODUCTS}/{id}/stock");

    let response = app
        .put_json(&path, &json!({"stock": 7}), Some(&admin))
        .await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_product_shape(&updated);
    assert_eq!(updated["id"], id);
    assert_eq!(updated["stock"], 7);
    assert_eq!(updated["sku"], product["sku"]);

    let fetched: Value = app
        .get(&format!("{PRODUCTS}/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["stock"], 7);

    let zero = app
        .put_json(&path, &json!({"stock": 0}), Some(&admin))
        .await;
    assert_eq!(zero.status(), 200);
    let fetched: Value = app
        .get(&format!("{PRODUCTS}/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["stock"], 0);
}

#[tokio::test]
async fn invalid_stock_is_422_or_400() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.first_product().await;
    let id = product["id"].as_str().unwrap();
    let path = format!("{PRODUCTS}/{id}/stock");

    for stock in [json!(-1), json!(1_000_001)] {
        let problem = assert_problem(
            app.put_json(&path, &json!({"stock": stock}), Some(&admin))
                .await,
            422,
        )
        .await;
        assert_eq!(error_fields(&problem), ["stock"], "{problem}");
    }
    let problem = assert_problem(app.put_json(&path, &json!({}), Some(&admin)).await, 422).await;
    assert_eq!(error_fields(&problem), ["stock"], "{problem}");
    for body in [
        json!({"stock": "many"}),
        json!({"stock": 1.5}),
        json!({"stock": 3, "extra": true}),
    ] {
        assert_problem(app.put_json(&path, &body, Some(&admin)).await, 400).await;
    }
    // Nothing changed.
    let fetched: Value = app
        .get(&format!("{PRODUCTS}/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["stock"], product["stock"]);
}

#[tokio::test]
async fn stock_of_an_unknown_product_is_404() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let unknown = uuid::Uuid::now_v7();
    let response = app
        .put_json(
            &format!("{PRODUCTS}/{unknown}/stock"),
            &json!({"stock": 3}),
            Some(&admin),
        )
        .await;
    assert_problem(response, 404).await;
    let response = app
        .put_json(
            &format!("{PRODUCTS}/not-a-uuid/stock"),
            &json!({"stock": 3}),
            Some(&admin),
        )
        .await;
    assert_problem(response, 404).await;
}

#[tokio::test]
async fn set_stock_requires_an_admin() {
    let app = spawn_app().await;
    let (customer, _) = app.register("stocker@example.com").await;
    let product = app.first_product().await;
    let path = format!("{PRODUCTS}/{}/stock", product["id"].as_str().unwrap());
    assert_problem(
        app.put_json(&path, &json!({"stock": 1}), Some(&customer))
            .await,
        403,
    )
    .await;
    assert_problem(app.put_json(&path, &json!({"stock": 1}), None).await, 401).await;
    let fetched = app.first_product().await;
    assert_eq!(fetched["stock"], product["stock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_sku_make_one_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let body = new_product("RACE-1");
    let creates = (0..8).map(|_| app.post_json(PRODUCTS, &body, Some(&admin)));
    let statuses = statuses(creates).await;
    assert_eq!(tally(&statuses, [201, 409]), (1, 7), "{statuses:?}");
    assert_eq!(app.all_products(100).await.len(), SEEDED as usize + 1);
}
