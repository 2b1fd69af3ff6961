//! `spawn_app()`: one fresh bazaar per test (port 0, temp data dir), plus a client
//! that speaks its API; [`Server`]: the real `bazaar` binary as a child process.
//!
//! The backend: SQLite files in the data dir by default; with
//! `BAZAAR_TEST_BACKEND=postgres`, every app and every server gets a fresh PostgreSQL
//! database (`bz_<unix time>_<random>`) in the server `BAZAAR_TEST_DATABASE_URL` names,
//! dropped with its [`DataDir`]. The same tests run on both.
//!
//! The topology: with `BAZAAR_TEST_TOPOLOGY=split` (PostgreSQL implied, plus
//! `BAZAAR_TEST_NATS_SERVER` for a 3-node JetStream cluster with R3 streams, or
//! `BAZAAR_TEST_NATS_URL` for a single server), `spawn_app` starts every module as its own `Application`
//! (`only = <module>`: its own listener, store pool, NATS connection and HTTP clients
//! for its peers) and the gateway in front of them, and the tests talk to the gateway.
//! The same scenarios thereby run against both topologies and cannot drift apart.
//! With `BAZAAR_TEST_REPLICAS=N` as well, every module runs as N `Application`s, each
//! module's peers given the list of them: the suite through balanced replicas.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bazaar::Application;
use bazaar::config::Config;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tempfile::TempDir;
pub use testkit::nats::delete_streams;
pub use testkit::postgres::TestDatabase;
pub use testkit::{PATIENCE, eventually, eventually_within, free_port};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";
/// Products seeded into each test app: enough for paging, cheap to create.
pub const SEEDED: u32 = 30;

/// The public API of a running bazaar as a client sees it: its base URL and an HTTP
/// client (cheap to clone into client tasks).
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub client: Client,
}

/// A bazaar started in this process; speaks its API through [`Api`] (`Deref`).
pub struct TestApp {
    pub api: Api,
    pub data_dir: DataDir,
    shutdown: chassis::CancellationToken,
    /// Split topology: the NATS URL and the JetStream prefix of this app's streams,
    /// deleted on drop.
    nats_streams: Option<(String, String)>,
    /// The user-token secret, when configured (the split topology shares one).
    jwt_secret: Option<String>,
}

/// Whether `spawn_app` runs the split topology (`BAZAAR_TEST_TOPOLOGY=split`).
pub fn split_topology() -> bool {
    static SPLIT: OnceLock<bool> = OnceLock::new();
    *SPLIT.get_or_init(|| {
        match std::env::var("BAZAAR_TEST_TOPOLOGY")
            .unwrap_or_default()
            .as_str()
        {
            "" | "monolith" => false,
            "split" => true,
            other => panic!("BAZAAR_TEST_TOPOLOGY must be monolith or split, not {other:?}"),
        }
    })
}

/// How many replicas of each module the split topology runs
/// (`BAZAAR_TEST_REPLICAS`, default 1).
pub fn replicas() -> usize {
    static REPLICAS: OnceLock<usize> = OnceLock::new();
    *REPLICAS.get_or_init(|| match std::env::var("BAZAAR_TEST_REPLICAS") {
        Err(_) => 1,
        Ok(n) => n
            .parse()
            .ok()
            .filter(|n| (1..=4).contains(n))
            .unwrap_or_else(|| panic!("BAZAAR_TEST_REPLICAS must be 1 to 4, not {n:?}")),
    })
}

/// The NATS of split-topology tests: the test binary's 3-node JetStream cluster (R3
/// streams) when `BAZAAR_TEST_NATS_SERVER` names a nats-server, as in CI; else the
/// server `BAZAAR_TEST_NATS_URL` names (plain local runs against 127.0.0.1:4222).
pub fn split_nats() -> testkit::nats::SharedNats {
    testkit::nats::shared("the split topology")
        .expect("BAZAAR_TEST_TOPOLOGY=split needs BAZAAR_TEST_NATS_SERVER or BAZAAR_TEST_NATS_URL")
}

// ---- The backend: SQLite (default) or PostgreSQL ----

/// Connections per module pool of a test bazaar on PostgreSQL: 7 modules x 2 = 14 per
/// app, so a few apps at once stay well under the server's `max_connections` (100).
pub const PG_POOL: u32 = 2;

/// The server URL the tests create their databases in, when they run on PostgreSQL.
pub fn postgres_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        let mut backend = std::env::var("BAZAAR_TEST_BACKEND").unwrap_or_default();
        if split_topology() {
            // The split topology keeps its stores in PostgreSQL.
            "postgres".clone_into(&mut backend);
        }
        match backend.as_str() {
            "" | "sqlite" => None,
            "postgres" => Some(std::env::var("BAZAAR_TEST_DATABASE_URL").expect(
                "BAZAAR_TEST_BACKEND=postgres needs BAZAAR_TEST_DATABASE_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/test)",
            )),
            other => panic!("BAZAAR_TEST_BACKEND must be sqlite or postgres, not {other:?}"),
        }
    })
    .as_deref()
}

/// Where one bazaar keeps its data: a temp dir (SQLite files, `jwt-secret`, mail)
/// and, on PostgreSQL, its own database.
pub struct DataDir {
    dir: TempDir,
    database: Option<TestDatabase>,
}

impl DataDir {
    pub async fn new() -> Self {
        let database = match postgres_url() {
            Some(url) => Some(TestDatabase::create(url).await),
            None => None,
        };
        Self {
            dir: tempfile::tempdir().unwrap(),
            database,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|db| db.url.as_str())
    }

    /// Points `config` at this data's database, if it has one.
    pub fn configure(&self, config: &mut Config) {
        if let Some(url) = self.database_url() {
            config.database_url = Some(url.to_owned());
            config.db_max_connections = PG_POOL;
        }
    }

    /// The environment a `bazaar` child needs for this data's database.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.database_url() {
            Some(url) => vec![
                ("BAZAAR_DATABASE_URL", url.to_owned()),
                ("BAZAAR_DB_MAX_CONNECTIONS", PG_POOL.to_string()),
            ],
            None => Vec::new(),
        }
    }

    /// `bazaar <args> --data-dir <this>`, with the database when there is one.
    pub fn bazaar(&self, args: &[&str]) -> Command {
        let mut command = bazaar(args);
        command.arg("--data-dir").arg(self.path()).envs(self.env());
        command
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some((url, prefix)) = self.nats_streams.take() {
            delete_streams(&url, &prefix);
        }
    }
}

/// Telemetry as in production (spans traced, so the traces API has something to
/// show); logs are silent unless `TEST_LOG` is set.
fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = if std::env::var_os("TEST_LOG").is_some() {
            "debug"
        } else {
            "off"
        };
        chassis::telemetry::init("test", chassis::config::LogFormat::Json, filter);
    });
}

/// The scrape credential of every server the tests start.
pub const METRICS_TOKEN: &str = "metrics-token-of-the-api-tests-000000";

/// How long a test bazaar's registrations and logins wait for a hashing slot: long,
/// within the 10 s request budget.
pub const HASH_WAIT_MS: u64 = 8_000;

pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        // Tests share one client IP; they exercise the limiter on purpose only.
        rate_limit_per_second: 0,
        auth_rate_limit_per_second: 0,
        ..Config::default()
    };
    config.metrics_token = Some(METRICS_TOKEN.to_owned());
    config
        .set("admin_email", ADMIN_EMAIL)
        .set("admin_password", ADMIN_PASSWORD)
        .set("seed_products", SEEDED)
        // Tests register dozens of users at once on a busy machine: hashing waits
        // rather than sheds (shedding has tests of its own).
        .set("password_hash_wait_ms", HASH_WAIT_MS);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with the configuration adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let data_dir = DataDir::new().await;
    let mut config = test_config(data_dir.path());
    data_dir.configure(&mut config);
    adjust(&mut config);
    if split_topology() {
        // The split processes share one configured secret.
        config.jwt_secret.get_or_insert_with(test_secret);
    }
    let jwt_secret = config.jwt_secret.clone();
    let (address, shutdown, nats_streams) = if split_topology() {
        let (address, shutdown, streams) = spawn_split(config).await;
        (address, shutdown, Some(streams))
    } else {
        let app = Application::build(config).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        tokio::spawn(app.run_until_stopped());
        (address, shutdown, None)
    };
    TestApp {
        nats_streams,
        jwt_secret,
        api: Api {
            address,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
        },
        data_dir,
        shutdown,
    }
}

/// The answers of concurrent repeats of one idempotent request: each is the order
/// (201/202) or a 409 problem (the first still in progress); anything else fails the
/// test. Returns the accepted ones.
pub fn accepted_repeats(responses: &[(u16, String)]) -> Vec<(u16, Value)> {
    let mut accepted = Vec::new();
    for (status, text) in responses {
        match status {
            201 | 202 => accepted.push((*status, serde_json::from_str(text).unwrap())),
            409 => {
                let problem: Value = serde_json::from_str(text).unwrap();
                assert_eq!(problem["status"], 409, "{text}");
            }
            other => panic!("a concurrent repeat answered {other}: {text}"),
        }
    }
    accepted
}

/// The modules in an order where each one's peers start before it, then the edge.
pub const SPLIT_START_ORDER: [&str; 9] = [
    "identity",
    "catalog",
    "payments",
    "notifications",
    "analytics",
    "cart",
    "orders",
    "storefront",
    "gateway",
];

/// A random secret of the length the configuration demands.
pub fn test_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Starts `config` as the split topology in this process: one `Application` per module
/// (each with its own listener, pool and NATS connection, sharing the data dir and
/// database), then the gateway; returns the gateway's URL, a token stopping them all and
/// the NATS URL and JetStream prefix of its streams.
async fn spawn_split(mut config: Config) -> (String, chassis::CancellationToken, (String, String)) {
    let nats = split_nats();
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    config.nats_url = Some(nats.url.clone());
    config.nats_stream_replicas = nats.replicas;
    config.nats_prefix.clone_from(&prefix);
    config.service_secret = Some(test_secret());
    if replicas() > 1 && !config.modules.contains_key("catalog_cache_ttl_ms") {
        // Each catalog replica caches product reads for a TTL (docs/operations.md):
        // the scenarios read their own writes at once, which another replica's cache
        // may not show yet. Not what these runs are about.
        config.set("catalog_cache_ttl_ms", 0);
    }
    let shutdown = chassis::CancellationToken::new();
    let mut gateway = String::new();
    for module in SPLIT_START_ORDER {
        // One gateway; `replicas()` of every module, its peers given them all.
        let count = if module == "gateway" { 1 } else { replicas() };
        let mut urls = Vec::new();
        for _ in 0..count {
            let mut own = config.clone();
            own.only = Some(module.to_owned());
            if module != "gateway" {
                // A role per module (ADR 0008): each connects as its own, which owns
                // its schema only; the database's owner provisions it.
                let url = config
                    .database_url
                    .clone()
                    .expect("the split runs on PostgreSQL");
                own.database_url = Some(testkit::postgres::as_role(
                    &url,
                    &testkit::postgres::module_role(module),
                    None,
                ));
                own.database_admin_url = Some(url);
            }
            let app = Application::build(own)
                .await
                .unwrap_or_else(|e| panic!("{module} builds: {e:?}"));
            urls.push(format!("http://127.0.0.1:{}", app.port()));
            let stop = app.shutdown_token();
            let all = shutdown.clone();
            tokio::spawn(async move {
                all.cancelled().await;
                stop.cancel();
            });
            tokio::spawn(app.run_until_stopped());
        }
        if module == "gateway" {
            gateway = urls.join(",");
        } else {
            config.peers.insert(module.to_owned(), urls.join(","));
        }
    }
    (gateway, shutdown, (nats.url, prefix))
}

impl TestApp {
    /// The secret user tokens are signed with: configured, or the one the app
    /// generated into its data dir on first start.
    pub fn jwt_secret(&self) -> String {
        self.jwt_secret.clone().unwrap_or_else(|| {
            std::fs::read_to_string(self.data_dir.path().join("jwt-secret"))
                .expect("the app keeps its secret in <data_dir>/jwt-secret")
                .trim()
                .to_owned()
        })
    }
}

impl Api {
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

    /// Adds `quantity` of `product` to the caller's cart, which must answer 200; the cart.
    pub async fn add_to_cart(&self, token: &str, product: &str, quantity: i64) -> Value {
        let response = self
            .post_json(
                "/api/v1/cart/items",
                &json!({"product_id": product, "quantity": quantity}),
                Some(token),
            )
            .await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "POST /cart/items: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// `/metrics` as Prometheus scrapes it, with the scrape credential.
    pub async fn scrape(&self) -> Response {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// GET that must answer 200; its JSON body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> Value {
        let response = self.get(path, token).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap()
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
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 201, "register {email}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
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

// ---- Orders ----

/// A valid US shipping address.
pub fn address() -> Value {
    json!({
        "name": "Ada Lovelace",
        "line1": "1 Main St",
        "city": "Springfield",
        "postal_code": "12345",
        "country": "US"
    })
}

/// A `POST /orders` body for explicit `(product_id, quantity)` lines.
pub fn order_body(lines: &[(&str, i64)], payment_token: &str) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(id, quantity)| json!({"product_id": id, "quantity": quantity}))
        .collect();
    json!({"items": items, "shipping_address": address(), "payment_token": payment_token})
}

/// A `POST /orders` body that buys the cart.
pub fn cart_order_body(payment_token: &str) -> Value {
    json!({"shipping_address": address(), "payment_token": payment_token})
}

pub fn is_terminal(order: &Value) -> bool {
    matches!(
        order["status"].as_str(),
        Some("confirmed" | "failed" | "cancelled")
    )
}

/// The event stream of an order that went through: placed, reserved, paid, committed,
/// confirmed.
pub const CONFIRMED_EVENTS: [&str; 5] = [
    "OrderPlaced",
    "StockReserved",
    "PaymentCaptured",
    "StockCommitted",
    "OrderConfirmed",
];

/// The statuses of `requests`, sent concurrently, in order.
pub async fn statuses(requests: impl IntoIterator<Item: Future<Output = Response>>) -> Vec<u16> {
    futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect()
}

/// How many of `statuses` are each of `wanted`.
pub fn tally(statuses: &[u16], wanted: [u16; 2]) -> (usize, usize) {
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    (count(wanted[0]), count(wanted[1]))
}

/// The `id` of an order (or anything else the API returns with one).
pub fn id_of(order: &Value) -> String {
    order["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {order}"))
        .to_owned()
}

/// The `type` of each item of an order's event stream.
pub fn event_types(events: &Value) -> Vec<String> {
    events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Api {
    /// `POST /api/v1/orders`, with an `Idempotency-Key` if given.
    pub async fn place_order(&self, token: &str, body: &Value, key: Option<&str>) -> Response {
        self.try_place_order(token, body, key).await.unwrap()
    }

    /// Like [`Api::place_order`], but `Err` when no answer came at all (e.g. while
    /// the process behind it is being killed).
    pub async fn try_place_order(
        &self,
        token: &str,
        body: &Value,
        key: Option<&str>,
    ) -> Result<Response, reqwest::Error> {
        let mut req = self
            .client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await
    }

    /// Places an order that must be accepted (201 or 202); returns (status, order).
    pub async fn place_ok(&self, token: &str, body: &Value) -> (u16, Value) {
        let response = self.place_order(token, body, None).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            status == 201 || status == 202,
            "POST /orders {body} answered {status}: {text}"
        );
        (status, serde_json::from_str(&text).unwrap())
    }

    /// `GET /api/v1/orders/{id}`, which must answer 200.
    pub async fn order(&self, token: &str, id: &str) -> Value {
        let response = self.get(&format!("/api/v1/orders/{id}"), Some(token)).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET /orders/{id}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Polls the order (bounded) until `done` holds for it.
    pub async fn wait_for_order(&self, token: &str, id: &str, done: fn(&Value) -> bool) -> Value {
        eventually(&format!("order {id}"), || async {
            let order = self.order(token, id).await;
            if done(&order) {
                Ok(order)
            } else {
                Err(order.to_string())
            }
        })
        .await
    }

    /// Polls the order (bounded) until it is `confirmed`, `failed` or `cancelled`.
    pub async fn wait_until_terminal(&self, token: &str, id: &str) -> Value {
        self.wait_for_order(token, id, is_terminal).await
    }

    /// `GET /api/v1/orders/{id}/events[?as_of=]`, which must answer 200.
    pub async fn order_events(&self, token: &str, id: &str, as_of: Option<&str>) -> Value {
        let mut req = self
            .client
            .get(self.url(&format!("/api/v1/orders/{id}/events")))
            .bearer_auth(token);
        if let Some(as_of) = as_of {
            req = req.query(&[("as_of", as_of)]);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET /orders/{id}/events: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The caller's orders (first page of up to 100).
    pub async fn my_orders(&self, token: &str) -> Vec<Value> {
        let response = self.get("/api/v1/orders?limit=100", Some(token)).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["items"].as_array().expect("items is an array").clone()
    }

    /// A product's available `stock`.
    pub async fn stock(&self, product_id: &str) -> i64 {
        let response = self
            .get(&format!("/api/v1/products/{product_id}"), None)
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["stock"].as_i64().expect("stock is an integer")
    }

    /// Sets a product's stock as the admin.
    pub async fn set_stock(&self, admin: &str, product_id: &str, stock: i64) {
        let response = self
            .put_json(
                &format!("/api/v1/products/{product_id}/stock"),
                &json!({"stock": stock}),
                Some(admin),
            )
            .await;
        assert_eq!(response.status(), 200);
    }

    /// The first `n` products of the catalog.
    pub async fn products(&self, n: u32) -> Vec<Value> {
        let body: Value = self
            .get(&format!("/api/v1/products?limit={n}"), None)
            .await
            .json()
            .await
            .unwrap();
        body["items"].as_array().expect("items is an array").clone()
    }
}

/// The `.eml` files the maildir transport wrote under the data dir, as text.
pub fn emails(data: &DataDir) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data.path().join("mail")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// Opens a module's store (`<data_dir>/<module>.db` read-only, or its schema in the
/// test database), to check what the API cannot show (the payments ledger, the
/// outboxes).
pub async fn open_db(data: &DataDir, module: &'static str) -> sqlx::AnyPool {
    if let Some(url) = data.database_url() {
        return chassis::store::Store::open_postgres(url, module, 1)
            .await
            .expect("the module schema opens")
            .pool()
            .clone();
    }
    sqlx::any::install_default_drivers();
    let path = data.path().join(format!("{module}.db"));
    sqlx::AnyPool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .expect("the module database opens")
}

/// The payments ledger for `order_id`: (capture entries, captured cents, refunded
/// cents).
pub async fn ledger(data: &DataDir, order_id: &str) -> (i64, i64, i64) {
    let pool = open_db(data, "payments").await;
    // SUM over BIGINT is NUMERIC on PostgreSQL: cast back.
    let row: (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(CASE WHEN kind = 'capture' THEN 1 END), \
                CAST(SUM(CASE WHEN kind = 'capture' THEN amount_cents ELSE 0 END) AS BIGINT), \
                CAST(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) AS BIGINT) \
         FROM ledger WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (row.0, row.1.unwrap_or(0), row.2.unwrap_or(0))
}

/// The payloads of the events `module` wrote to its outbox under `topic`.
pub async fn outbox_payloads(app: &TestApp, module: &'static str, topic: &str) -> Vec<Value> {
    let pool = open_db(&app.data_dir, module).await;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT envelope FROM outbox WHERE topic = $1 ORDER BY created_at")
            .bind(topic)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.iter()
        .map(|(envelope,)| {
            let envelope: Value = serde_json::from_str(envelope).unwrap();
            envelope["payload"].clone()
        })
        .collect()
}

/// Runs `bazaar audit` over `data` (and its database) and asserts it finds nothing
/// wrong.
pub async fn assert_audit_clean(data: &DataDir) {
    let mut command = data.bazaar(&["audit"]);
    // It reads while the app may still hold its pools: one connection per module.
    command.env("BAZAAR_DB_MAX_CONNECTIONS", "1");
    let output = tokio::task::spawn_blocking(move || Proc::run(command))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "bazaar audit failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
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

// ---- The real `bazaar` binary: started, stopped and killed by guards. ----

pub const BIN: &str = env!("CARGO_BIN_EXE_bazaar");
pub const SEED: usize = 30;
pub const STARTUP: Duration = Duration::from_secs(30);
pub const EXIT: Duration = Duration::from_secs(30);

/// A `bazaar` command with a clean environment: no inherited `BAZAAR_*` or
/// `RUST_LOG`, a small demo catalog.
pub fn bazaar(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BAZAAR_") {
            command.env_remove(key);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("BAZAAR_SEED_PRODUCTS", SEED.to_string())
        .env("BAZAAR_METRICS_TOKEN", METRICS_TOKEN)
        .env("BAZAAR_PASSWORD_HASH_WAIT_MS", HASH_WAIT_MS.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Copies `reader` line by line into `sink` until EOF, so the child never blocks on
/// a full pipe.
fn collect<R: Read + Send + 'static>(reader: R, sink: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    sink.lock().unwrap().push(line);
                }
            }
        }
    })
}

/// A running child with its output captured; killed on drop.
pub struct Proc {
    pub child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("bazaar starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for the child to exit; then all its output has been read.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = testkit::wait_exit(&mut self.child, limit).unwrap_or_else(|| {
            panic!(
                "bazaar did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            )
        });
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        status
    }

    /// Runs to completion (bounded) and returns what it printed.
    pub fn run(command: Command) -> Output {
        let mut proc = Self::spawn(command);
        let status = proc.wait(EXIT);
        Output {
            status,
            stdout: proc.stdout().join("\n").into_bytes(),
            stderr: proc.stderr().into_bytes(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `bazaar serve` on a fresh port over a [`DataDir`], ready to take requests.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub base: String,
    pub client: Client,
}

impl Server {
    pub async fn start(data: &DataDir, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = data.bazaar(&["serve", "--http-addr", &addr]);
        command.envs(env.iter().copied());
        let mut proc = Proc::spawn(command);
        let base = format!("http://{addr}");
        let client = client();
        eventually_within("bazaar to be ready", STARTUP, || {
            if let Some(status) = proc.child.try_wait().unwrap() {
                proc.wait(EXIT);
                panic!("bazaar exited early ({status}); stderr:\n{}", proc.stderr());
            }
            let stderr = proc.stderr();
            let ready = testkit::answers_ok(&client, &format!("{base}/health/ready"));
            async move { ready.await.map_err(|e| format!("{e}; stderr:\n{stderr}")) }
        })
        .await;
        Self {
            proc,
            port,
            base,
            client,
        }
    }

    /// This server's `/metrics`, as text.
    pub async fn scrape(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then a bounded wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.proc.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        self.proc.wait(EXIT)
    }

    pub async fn register(&self, email: &str, password: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": "Proc"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn products(&self) -> Vec<Value> {
        all_products(&self.client, &self.base, 100).await
    }
}
