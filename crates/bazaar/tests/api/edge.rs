//! The edge: body limit, request ids, fallbacks, rate limiting, CORS and the API
//! description.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};

const LIMIT: usize = 1024 * 1024;
const REGISTER: &str = "/api/v1/auth/register";

/// A JSON registration padded with trailing whitespace to exactly `len` bytes. Its
/// password is too long, so once read it is a 422, never a 201.
fn padded_body(len: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"email":"big@example.com","password":"{}","name":"Big"}}"#,
        "p".repeat(2000)
    )
    .into_bytes();
    assert!(body.len() < len);
    body.resize(len, b' ');
    body
}

/// `body` sent with chunked transfer encoding (no Content-Length), 64 KiB a chunk.
async fn post_chunked(app: &TestApp, body: Vec<u8>) -> Response {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures::stream::iter(chunks);
    app.client
        .post(app.url(REGISTER))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("an oversize body is answered, not dropped")
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn body_over_1_mib_with_content_length_is_413() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url(REGISTER))
        .header("content-type", "application/json")
        .body(padded_body(LIMIT + 1))
        .send()
        .await
        .expect("an oversize body is answered, not dropped");
    assert_problem(response, 413).await;
}

#[tokio::test]
async fn body_over_1_mib_chunked_is_413() {
    let app = spawn_app().await;
    let response = post_chunked(&app, padded_body(LIMIT + 1)).await;
    assert_problem(response, 413).await;
    let response = post_chunked(&app, padded_body(2 * LIMIT)).await;
    assert_problem(response, 413).await;
}

#[tokio::test]
async fn body_of_exactly_1_mib_is_read() {
    let app = spawn_app().await;
    let response = app
        .post_raw(REGISTER, padded_body(LIMIT), Some("application/json"), None)
        .await;
    assert_problem(response, 422).await;
    let response = post_chunked(&app, padded_body(LIMIT)).await;
    assert_problem(response, 422).await;
}

#[tokio::test]
async fn request_id_is_generated_when_absent() {
    let app = spawn_app().await;
    let first = app.get("/health/live", None).await;
    let second = app.get("/api/v1/products?limit=1", None).await;
    let a = header(&first, "x-request-id").expect("a generated x-request-id");
    let b = header(&second, "x-request-id").expect("a generated x-request-id");
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "each request gets its own id");
}

#[tokio::test]
async fn request_id_is_echoed_when_given() {
    let app = spawn_app().await;
    for path in [
        "/health/live",
        "/api/v1/products?limit=1",
        "/api/v1/nowhere",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("x-request-id", "test-request-42")
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&response, "x-request-id").as_deref(),
            Some("test-request-42"),
            "{path}"
        );
    }
    // Error responses carry it too.
    let response = app
        .client
        .get(app.url("/api/v1/me"))
        .header("x-request-id", "test-request-43")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-request-id").as_deref(),
        Some("test-request-43")
    );
    assert_problem(response, 401).await;
}

#[tokio::test]
async fn unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/nope",
        "/nope",
        "/api/v2/products",
        // `/` is the shop's home page (storefront.rs); only it, not every path.
        "/nopage/deeper",
        "/api/v1/products/",
        "/api/v1/products/x/y",
    ] {
        assert_problem(app.get(path, None).await, 404).await;
    }
    let response = app.post_json("/api/v1/nope", &json!({}), None).await;
    assert_problem(response, 404).await;
}

#[tokio::test]
async fn wrong_method_is_a_405_problem() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::DELETE, "/api/v1/products"),
        (Method::PATCH, "/api/v1/cart"),
        (Method::GET, "/api/v1/auth/register"),
        (Method::PUT, "/api/v1/me"),
        (Method::POST, "/health/live"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_problem(response, 405).await;
    }
}

#[tokio::test]
async fn wrong_method_names_the_allowed_methods() {
    // RFC 9110 15.5.6: a 405 MUST carry Allow.
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/api/v1/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let allow = header(&response, "allow").unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow:?}"
    );
}

#[tokio::test]
async fn over_the_rate_a_client_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    let mut limited = None;
    for _ in 0..30 {
        let response = app.get("/api/v1/products?limit=1", None).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = limited.expect("30 rapid requests at 1/s with a burst of 3 hit the limit");
    let retry_after = header(&response, "retry-after").expect("Retry-After on a 429");
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is a number of seconds: {retry_after:?}"));
    assert!(seconds >= 1, "{seconds}");
    assert_problem(response, 429).await;

    // Probes and scrapes are never limited.
    for _ in 0..20 {
        assert_eq!(app.get("/health/live", None).await.status(), 200);
        assert_eq!(app.get("/health/ready", None).await.status(), 200);
    }
    assert_eq!(app.scrape().await.status(), 200);
}

/// `n` rapid reads as the client `X-Forwarded-For` names; their statuses.
async fn reads_as(app: &TestApp, client: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let response = app
            .client
            .get(app.url("/api/v1/products?limit=1"))
            .header("x-forwarded-for", client)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn the_rate_limit_follows_x_forwarded_for_only_from_trusted_proxies() {
    // The test client connects from 127.0.0.1: a trusted proxy here.
    let behind = spawn_app_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
        c.trusted_proxies = "127.0.0.1/32, 10.0.0.0/8".to_owned();
    })
    .await;
    let first = reads_as(&behind, "203.0.113.1", 30).await;
    assert!(first.contains(&429), "one client over the limit: {first:?}");
    // Another client behind the same proxy has a bucket of its own.
    assert_eq!(reads_as(&behind, "203.0.113.2", 3).await, [200, 200, 200]);

    // By default the header is not believed: every request is the proxy's own.
    let direct = spawn_app_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    let first = reads_as(&direct, "203.0.113.1", 30).await;
    assert!(first.contains(&429), "{first:?}");
    let other = reads_as(&direct, "203.0.113.2", 10).await;
    assert!(other.contains(&429), "one bucket for all: {other:?}");
}

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

async fn shop_cors_app() -> TestApp {
    spawn_app_with(|c| c.cors_origins = vec!["https://shop.example".into()]).await
}

#[tokio::test]
async fn cors_preflight_from_a_configured_origin_is_allowed() {
    let app = shop_cors_app().await;
    let mut failures = Vec::new();
    for (path, method) in [
        ("/api/v1/cart/items", "POST"),
        ("/api/v1/products", "GET"),
        ("/api/v1/products", "POST"),
        ("/api/v1/me", "GET"),
        ("/api/v1/auth/login", "POST"),
    ] {
        let response = preflight(&app, path, "https://shop.example", method).await;
        let status = response.status();
        let origin = header(&response, "access-control-allow-origin");
        let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
        let headers = header(&response, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let ok = status.is_success()
            && origin.as_deref() == Some("https://shop.example")
            && methods.contains(method)
            && headers.contains("authorization")
            && headers.contains("content-type");
        if !ok {
            failures.push(format!(
                "OPTIONS {path} (for {method}): {status}, allow-origin {origin:?}, \
                 allow-methods {methods:?}, allow-headers {headers:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn cors_preflight_from_another_origin_is_not_allowed() {
    let app = shop_cors_app().await;
    let denied = preflight(&app, "/api/v1/cart/items", "https://evil.example", "POST").await;
    assert_eq!(header(&denied, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_allows_requests_from_a_configured_origin_only() {
    let app = shop_cors_app().await;
    let get = |origin: &'static str| {
        app.client
            .get(app.url("/api/v1/products?limit=1"))
            .header("origin", origin)
            .send()
    };
    let response = get("https://shop.example").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    let response = get("https://evil.example").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_allows_no_origin_by_default() {
    let app = spawn_app().await;
    let response = preflight(&app, "/api/v1/products", "https://shop.example", "GET").await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn openapi_describes_every_public_route() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    assert!(
        header(&response, "content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let doc: Value = response.json().await.unwrap();
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1"), "{version}");

    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/api/v1/auth/register", &["post"][..]),
        ("/api/v1/auth/login", &["post"]),
        ("/api/v1/me", &["get"]),
        ("/api/v1/products", &["get", "post"]),
        ("/api/v1/products/{id}", &["get"]),
        ("/api/v1/products/{id}/stock", &["put"]),
        ("/api/v1/cart", &["get"]),
        ("/api/v1/cart/items", &["post"]),
        ("/api/v1/cart/items/{product_id}", &["delete"]),
        ("/health/live", &["get"]),
        ("/health/ready", &["get"]),
        ("/metrics", &["get"]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing from /openapi.json"));
        for method in methods {
            assert!(item.get(*method).is_some(), "{method} {path} is missing");
        }
    }

    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("components.securitySchemes");
    let bearer = schemes
        .iter()
        .find(|(_, s)| {
            s["type"] == "http"
                && s["scheme"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case("bearer"))
        })
        .map(|(name, _)| name.clone())
        .expect("an http bearer security scheme");

    // The routes that need a token say so.
    for (path, method) in [
        ("/api/v1/me", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}/stock", "put"),
        ("/api/v1/cart", "get"),
        ("/api/v1/cart/items", "post"),
        ("/api/v1/cart/items/{product_id}", "delete"),
    ] {
        let security = doc["paths"][path][method]["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no security"));
        assert!(
            security.iter().any(|s| s.get(&bearer).is_some()),
            "{method} {path} does not use the bearer scheme"
        );
        assert!(
            doc["paths"][path][method]["responses"].get("401").is_some(),
            "{method} {path} does not document its 401"
        );
    }
    // Admin routes document their 403, bodies their 400/413/415/422.
    for (path, method) in [
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}/stock", "put"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"].get("403").is_some(),
            "{method} {path} does not document its 403"
        );
    }
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}/stock", "put"),
        ("/api/v1/cart/items", "post"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in ["400", "413", "415", "422"] {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} does not document its {status}"
            );
        }
    }
    // Error responses are documented as problem+json.
    let conflict = &doc["paths"]["/api/v1/auth/register"]["post"]["responses"]["409"];
    assert!(
        conflict["content"]
            .get("application/problem+json")
            .is_some(),
        "{conflict}"
    );
}

#[tokio::test]
async fn docs_page_is_html() {
    let app = spawn_app().await;
    let response = app.get("/docs", None).await;
    assert_eq!(response.status(), 200);
    assert!(
        header(&response, "content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
    );
    let body = response.text().await.unwrap();
    assert!(body.to_ascii_lowercase().contains("<html"), "{body}");
    assert!(
        body.contains("openapi.json"),
        "the page renders /openapi.json"
    );
}

#[tokio::test]
async fn an_array_body_where_an_object_is_expected_is_400_everywhere() {
    // Each body is an object: a positional array is the wrong type (400), not
    // another spelling of the same request.
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (customer, _) = app.register("arrays@example.com").await;
    let product = app.first_product().await;
    let id = product["id"].as_str().unwrap();
    let stock_path = format!("/api/v1/products/{id}/stock");
    let cases: Vec<(Method, String, Value, Option<&str>)> = vec![
        (
            Method::POST,
            REGISTER.to_owned(),
            json!(["array@example.com", "password123", "Ada"]),
            None,
        ),
        (
            Method::POST,
            "/api/v1/auth/login".to_owned(),
            json!(["arrays@example.com", "password123"]),
            None,
        ),
        (
            Method::POST,
            "/api/v1/products".to_owned(),
            json!(["ARR-1", "Array Mug", "", 100, "USD", 1]),
            Some(&admin),
        ),
        (Method::PUT, stock_path, json!([5]), Some(&admin)),
        (
            Method::POST,
            "/api/v1/cart/items".to_owned(),
            json!([id, 1]),
            Some(&customer),
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, token) in cases {
        let mut request = app
            .client
            .request(method.clone(), app.url(&path))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = header(&response, "content-type").unwrap_or_default();
        if status != 400 || content_type != "application/problem+json" {
            let text = response.text().await.unwrap_or_default();
            failures.push(format!("{method} {path} {body}: {status} {text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn odd_path_parameters_are_client_errors() {
    let app = spawn_app().await;
    let (token, _) = app.register("paths@example.com").await;
    let admin = app.admin_token().await;
    let mut failures = Vec::new();
    for (method, path, token) in [
        (Method::GET, "/api/v1/products/%FF", None),
        (Method::GET, "/api/v1/products/%00", None),
        (Method::GET, "/api/v1/products/..%2F..%2Fetc", None),
        (Method::DELETE, "/api/v1/cart/items/%FF", Some(&token)),
        (Method::PUT, "/api/v1/products/%FF/stock", Some(&admin)),
    ] {
        let mut request = app
            .client
            .request(method.clone(), app.url(path))
            .json(&json!({"stock": 1}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = header(&response, "content-type").unwrap_or_default();
        if !status.is_client_error() || content_type != "application/problem+json" {
            failures.push(format!("{method} {path}: {status} {content_type}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn deeply_nested_json_is_400() {
    let app = spawn_app().await;
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let response = app
        .post_raw(REGISTER, body, Some("application/json"), None)
        .await;
    assert_problem(response, 400).await;
    // And the server is still there.
    assert_eq!(app.get("/health/live", None).await.status(), 200);
}

/// PostgreSQL cannot store NUL in text; every backend refuses it the same way, as a
/// 400 before anything reaches a store (run with BAZAAR_TEST_BACKEND=postgres too).
#[tokio::test]
async fn nul_characters_in_text_are_400_everywhere() {
    let app = spawn_app().await;
    let (token, _) = app.register("nul@example.com").await;
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "nul2@example.com", "password": "password123", "name": "a\u{0}b"}),
            None,
        )
        .await;
    assert_problem(response, 400).await;
    assert_problem(app.get("/api/v1/products?q=a%00b", None).await, 400).await;
    assert_problem(
        app.delete("/api/v1/cart/items/%00", Some(&token)).await,
        400,
    )
    .await;
    assert_problem(app.get("/api/v1/orders/%00", Some(&token)).await, 400).await;
    // Nothing was created by the refused registration.
    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "nul2@example.com", "password": "password123"}),
            None,
        )
        .await;
    assert_eq!(login.status(), 401);
}
