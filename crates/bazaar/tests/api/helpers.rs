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
