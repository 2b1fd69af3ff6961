//! `spawn_app()`: one fresh bazaar per test (port 0, temp data dir), plus a client
//! that speaks its API.

use std::sync::Once;

use bazaar::Application;
use bazaar::config::Config;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";
/// Products seeded into each test app: enough for paging, cheap to create.
pub const SEEDED: u32 = 30;

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub data_dir: TempDir,
    shutdown: chassis::CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Test logs are silent unless `TEST_LOG` is set.
fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            chassis::telemetry::init("test", chassis::config::LogFormat::Json, "debug");
        }
    });
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        admin_email: Some(ADMIN_EMAIL.to_owned()),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        seed_products: SEEDED,
        // Tests share one client IP; they exercise the limiter on purpose only.
        rate_limit_per_second: 0,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with the configuration adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(data_dir.path());
    adjust(&mut config);
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
        data_dir,
        shutdown,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn put_json(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut req = self.client.put(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    /// Registers a fresh customer; returns (token, user id).
    pub async fn register(&self, email: &str) -> (String, String) {
        let response = self
            .post_json(
                "/api/v1/auth/register",
                &json!({"email": email, "password": "password123", "name": "Test User"}),
                None,
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (
            body["token"].as_str().unwrap().to_owned(),
            body["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn admin_token(&self) -> String {
        let response = self
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// POSTs `body` as is, with `content_type` if given (or none at all).
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
        token: Option<&str>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    /// Every product in the catalog, walking the pages `limit` at a time.
    pub async fn all_products(&self, limit: u32) -> Vec<Value> {
        all_products(&self.client, &self.address, limit).await
    }

    /// The id of the first product in the catalog.
    pub async fn first_product(&self) -> Value {
        let body: Value = self
            .get("/api/v1/products?limit=1", None)
            .await
            .json()
            .await
            .unwrap();
        body["items"][0].clone()
    }
}

/// Asserts a problem+json response with `status`, returning its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["title"].is_string(),
        "{body}"
    );
    body
}

/// Every product behind `base`, walking `/api/v1/products` pages of `limit` (bounded:
/// panics rather than loop forever on a cursor that never ends).
pub async fn all_products(client: &Client, base: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let response = client
            .get(format!("{base}/api/v1/products"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        let page_items = page["items"].as_array().expect("items is an array");
        assert!(page_items.len() <= limit as usize, "page larger than limit");
        items.extend(page_items.iter().cloned());
        match &page["next_cursor"] {
            Value::Null => return items,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor is neither a string nor null: {other}"),
        }
    }
    panic!("pagination did not end after 1000 pages");
}

/// The `field` of each entry of a problem's `errors` array.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
