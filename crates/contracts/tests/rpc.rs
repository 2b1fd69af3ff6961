//! The RPC layer over real HTTP: `catalog_handlers` served on 127.0.0.1 the way a split
//! catalog process serves them (service-credential guard inside the common layers),
//! called through `CatalogClient`. The catalog itself is a small in-test fake; the
//! transport (chassis::rpc, chassis::http, chassis::deadline, chassis::auth) is real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use chassis::auth::{Role, ServiceKeys, Tokens};
use chassis::http::HttpSettings;
use contracts::catalog::{
    CatalogApi, CatalogClient, CatalogError, Product, ProductList, ReservationState, StockLine,
    catalog_handlers,
};
use serde_json::{Value, json};

const SECRET: &[u8] = b"service-secret-service-secret-xx";
const OTHER_SECRET: &[u8] = b"another-secret-another-secret-xx";
/// The server's own request budget: long, so that only a caller's deadline can end a
/// call early.
const SERVER_BUDGET: Duration = Duration::from_secs(10);
/// The client timeout of tests that are not about time.
const PATIENT: Duration = Duration::from_secs(5);
const GET_PRODUCT: &str = "/internal/v1/catalog/get_product";

fn product(id: &str, stock: i64) -> Product {
    Product {
        id: id.to_owned(),
        sku: format!("SKU-{id}"),
        name: format!("Café mug ☕ {id}"),
        description: "stoneware, \"quoted\", 350 ml".to_owned(),
        price_cents: 1299,
        currency: "USD".to_owned(),
        stock,
    }
}

/// What happened to the fake's slow calls.
#[derive(Debug, Default)]
struct Work {
    started: AtomicUsize,
    finished: AtomicUsize,
    /// When a slow call's future was dropped before it finished.
    cancelled: Mutex<Vec<Instant>>,
}

impl Work {
    fn cancelled(&self) -> Vec<Instant> {
        self.cancelled.lock().unwrap().clone()
    }

    /// The first cancellation, waiting for it at most until `limit`.
    async fn cancelled_by(&self, limit: Instant) -> Option<Instant> {
        loop {
            if let Some(at) = self.cancelled().first() {
                return Some(*at);
            }
            if Instant::now() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Records a cancellation unless disarmed by finishing.
struct DropGuard {
    work: Arc<Work>,
    finished: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.work.cancelled.lock().unwrap().push(Instant::now());
        }
    }
}

/// The catalog stand-in: p1 (3 in stock) and p2 (none); `get_product("slow")` takes
/// `slow`; `get_product("hop")` asks `downstream` for p1.
struct Fake {
    products: Vec<Product>,
    slow: Duration,
    work: Arc<Work>,
    downstream: Option<Arc<dyn CatalogApi>>,
}

impl Fake {
    fn new() -> Self {
        Self {
            products: vec![product("p1", 3), product("p2", 0)],
            slow: Duration::from_secs(2),
            work: Arc::default(),
            downstream: None,
        }
    }

    fn find(&self, id: &str) -> Result<Product, CatalogError> {
        self.products
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| CatalogError::NotFound(id.to_owned()))
    }
}

#[async_trait::async_trait]
impl CatalogApi for Fake {
    async fn get_product(&self, id: String) -> Result<Product, CatalogError> {
        match id.as_str() {
            "slow" => {
                self.work.started.fetch_add(1, Ordering::SeqCst);
                let mut guard = DropGuard {
                    work: Arc::clone(&self.work),
                    finished: false,
                };
                tokio::time::sleep(self.slow).await;
                guard.finished = true;
                self.work.finished.fetch_add(1, Ordering::SeqCst);
                self.find("p1")
            }
            "hop" => {
                let downstream = self.downstream.as_ref().expect("a downstream catalog");
                downstream.get_product("p1".to_owned()).await
            }
            _ => self.find(&id),
        }
    }

    async fn get_products(&self, ids: Vec<String>) -> Result<Vec<Product>, CatalogError> {
        Ok(ids.iter().filter_map(|id| self.find(id).ok()).collect())
    }

    async fn list_products(
        &self,
        q: Option<String>,
        _cursor: Option<String>,
        limit: u32,
    ) -> Result<ProductList, CatalogError> {
        let q = q.unwrap_or_default();
        Ok(ProductList {
            items: self
                .products
                .iter()
                .filter(|p| p.name.contains(&q))
                .take(limit as usize)
                .cloned()
                .collect(),
            next_cursor: None,
        })
    }

    async fn reserve(
        &self,
        _order_id: String,
        lines: Vec<StockLine>,
    ) -> Result<ReservationState, CatalogError> {
        for line in &lines {
            let product = self.find(&line.product_id)?;
            if i64::from(line.quantity) > product.stock {
                return Err(CatalogError::OutOfStock(line.product_id.clone()));
            }
        }
        Ok(ReservationState::Active)
    }

    async fn release(&self, _order_id: String) -> Result<ReservationState, CatalogError> {
        Ok(ReservationState::Released)
    }

    async fn commit(&self, order_id: String) -> Result<ReservationState, CatalogError> {
        if order_id == "o-none" {
            Err(CatalogError::NoReservation(order_id))
        } else {
            Ok(ReservationState::Committed)
        }
    }

    async fn restock(&self, _order_id: String) -> Result<ReservationState, CatalogError> {
        Ok(ReservationState::Restocked)
    }
}

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// Whether the served router sees the caller's deadline header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadlines {
    Honour,
    /// Removed before the common layers, so only the client's timeout can end a call.
    Strip,
}

/// A catalog process on 127.0.0.1, stopped on drop.
struct Server {
    addr: SocketAddr,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }

    fn last_seen(&self) -> HeaderMap {
        self.seen().last().cloned().expect("the server was called")
    }
}

/// Records the headers of every request as they arrive (outside all other layers).
async fn record(
    State((seen, deadlines)): State<(Seen, Deadlines)>,
    mut req: Request,
    next: Next,
) -> Response {
    seen.lock().unwrap().push(req.headers().clone());
    if deadlines == Deadlines::Strip {
        req.headers_mut().remove(chassis::deadline::HEADER);
    }
    next.run(req).await
}

async fn serve(api: Arc<dyn CatalogApi>, keys: ServiceKeys, deadlines: Deadlines) -> Server {
    let seen = Seen::default();
    let router = chassis::http::with_common_layers(
        chassis::rpc::internal(
            chassis::rpc::router(catalog_handlers(api)),
            chassis::auth::Access {
                keys,
                provider: "catalog",
                callers: vec!["orders", "cart"],
            },
        ),
        &HttpSettings {
            service: "catalog",
            request_timeout: SERVER_BUDGET,
        },
    )
    .layer(axum::middleware::from_fn_with_state(
        (Arc::clone(&seen), deadlines),
        record,
    ));
    let (addr, task) = testkit::http::serve(router).await;
    Server { addr, seen, task }
}

/// The keys of the calling process (orders); same deployment secret as the catalog.
fn caller_keys() -> ServiceKeys {
    ServiceKeys::new(SECRET, "orders")
}

fn catalog_keys() -> ServiceKeys {
    ServiceKeys::new(SECRET, "catalog")
}

fn client_at(addr: SocketAddr, keys: ServiceKeys, timeout: Duration) -> CatalogClient {
    CatalogClient::new(chassis::rpc::Client::new(
        chassis::rpc::http_client(chassis::tls::client_config(None).unwrap()).unwrap(),
        std::sync::Arc::new(
            chassis::http::balance::Replicas::parse("catalog", &format!("http://{addr}")).unwrap(),
        ),
        keys,
        timeout,
    ))
}

fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn unavailable(result: Result<impl std::fmt::Debug, CatalogError>) -> String {
    match result {
        Err(CatalogError::Unavailable(message)) => message,
        other => panic!("expected CatalogError::Unavailable, got {other:?}"),
    }
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn assert_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "{}", response.url());
    assert!(
        content_type(&response).starts_with("application/problem+json"),
        "{status}: content type {:?}",
        content_type(&response)
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], json!(status.as_u16()), "{body}");
    body
}

/// 1. The client is a drop-in for the service: same values as the direct call.
#[tokio::test]
async fn same_answers_in_process_and_over_http() {
    let direct: Arc<dyn CatalogApi> = Arc::new(Fake::new());
    let server = serve(Arc::clone(&direct), catalog_keys(), Deadlines::Honour).await;
    let client = client_at(server.addr, caller_keys(), PATIENT);
    let remote: &dyn CatalogApi = &client;

    let local = direct.get_product("p1".into()).await;
    assert_eq!(local, Ok(product("p1", 3)));
    assert_eq!(remote.get_product("p1".into()).await, local);

    for ids in [
        vec!["p2".to_owned(), "unknown".to_owned(), "p1".to_owned()],
        vec![],
    ] {
        let local = direct.get_products(ids.clone()).await;
        assert_eq!(remote.get_products(ids).await, local);
    }
    assert_eq!(
        direct.get_products(vec!["p2".into(), "p1".into()]).await,
        Ok(vec![product("p2", 0), product("p1", 3)])
    );

    let lines = vec![
        StockLine {
            product_id: "p1".into(),
            quantity: 2,
        },
        StockLine {
            product_id: "p2".into(),
            quantity: 0,
        },
    ];
    let local = direct.reserve("o-1".into(), lines.clone()).await;
    assert_eq!(local, Ok(ReservationState::Active));
    assert_eq!(remote.reserve("o-1".into(), lines).await, local);

    // The remaining methods and their enum values travel too.
    assert_eq!(
        remote.release("o-1".into()).await,
        direct.release("o-1".into()).await
    );
    assert_eq!(
        remote.commit("o-1".into()).await,
        direct.commit("o-1".into()).await
    );
    assert_eq!(
        remote.restock("o-1".into()).await,
        Ok(ReservationState::Restocked)
    );
    assert_eq!(server.seen().len(), 7);
}

/// 2. A contract error arrives as the same variant with the same payload.
#[tokio::test]
async fn typed_errors_survive_the_round_trip() {
    let direct: Arc<dyn CatalogApi> = Arc::new(Fake::new());
    let server = serve(Arc::clone(&direct), catalog_keys(), Deadlines::Honour).await;
    let client = client_at(server.addr, caller_keys(), PATIENT);

    let too_many = vec![StockLine {
        product_id: "p1".into(),
        quantity: 99,
    }];
    let expected = Err(CatalogError::OutOfStock("p1".into()));
    assert_eq!(
        direct.reserve("o-2".into(), too_many.clone()).await,
        expected
    );
    assert_eq!(client.reserve("o-2".into(), too_many).await, expected);

    let unknown_line = vec![StockLine {
        product_id: "nope".into(),
        quantity: 1,
    }];
    assert_eq!(
        client.reserve("o-3".into(), unknown_line).await,
        Err(CatalogError::NotFound("nope".into()))
    );
    assert_eq!(
        client.get_product("nope".into()).await,
        Err(CatalogError::NotFound("nope".into()))
    );
    assert_eq!(
        client.commit("o-none".into()).await,
        Err(CatalogError::NoReservation("o-none".into()))
    );
}

/// 3a. Nobody listening: Unavailable naming the peer, promptly.
#[tokio::test]
async fn unreachable_peer_is_unavailable() {
    let closed = testkit::closed_addr();
    let client = client_at(closed, caller_keys(), PATIENT);
    let started = Instant::now();
    let message = unavailable(client.get_product("p1".into()).await);
    assert!(
        message.starts_with("catalog is unreachable"),
        "unexpected message: {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// 3b. A peer slower than the client's timeout: Unavailable (timeout), returned at
/// about the timeout. The server does not see the deadline header here, so it is the
/// client's own timeout that ends the call, not a 504 from the server.
#[tokio::test]
async fn slow_peer_times_out_as_unavailable() {
    let fake = Fake {
        slow: Duration::from_secs(5),
        ..Fake::new()
    };
    let server = serve(Arc::new(fake), catalog_keys(), Deadlines::Strip).await;
    let timeout = Duration::from_millis(300);
    let client = client_at(server.addr, caller_keys(), timeout);

    let started = Instant::now();
    let message = unavailable(client.get_product("slow".into()).await);
    let elapsed = started.elapsed();
    assert_eq!(message, "catalog did not answer within 300 ms");
    assert!(elapsed >= timeout, "returned after {elapsed:?}");
    assert!(elapsed < timeout * 5, "returned after {elapsed:?}");
}

/// 3c. A server of another deployment (other secret) refuses the credential.
#[tokio::test]
async fn other_service_secret_is_unavailable() {
    let server = serve(
        Arc::new(Fake::new()),
        ServiceKeys::new(OTHER_SECRET, "catalog"),
        Deadlines::Honour,
    )
    .await;
    let client = client_at(server.addr, caller_keys(), PATIENT);
    let message = unavailable(client.get_product("p1".into()).await);
    assert_eq!(message, "catalog refused this service's credential");
}

/// 4. Internal routes: a service credential or 401; known paths only; malformed
/// arguments are the caller's fault (400), never a 5xx.
#[tokio::test]
async fn internal_routes_demand_a_service_credential() {
    let server = serve(Arc::new(Fake::new()), catalog_keys(), Deadlines::Honour).await;
    let http = raw_client();
    let credential = caller_keys().credential("catalog").unwrap();
    let args = json!({ "id": "p1" });

    let response = http
        .post(server.url(GET_PRODUCT))
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED).await;

    // A user token signed with the very same secret is still not a service credential.
    let user = Tokens::new(SECRET, 60).issue("u1", Role::Admin).unwrap();
    let response = http
        .post(server.url(GET_PRODUCT))
        .bearer_auth(&user)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED).await;

    let response = http
        .post(server.url(GET_PRODUCT))
        .bearer_auth(&credential)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "ok": product("p1", 3) }));

    // A typed error: 422 {"err": ..}.
    let response = http
        .post(server.url(GET_PRODUCT))
        .bearer_auth(&credential)
        .json(&json!({ "id": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "err": { "NotFound": "nope" } }));

    // Unknown fields are tolerated (a newer caller).
    let response = http
        .post(server.url(GET_PRODUCT))
        .bearer_auth(&credential)
        .json(&json!({ "id": "p1", "newer_argument": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = http
        .post(server.url("/internal/v1/catalog/no_such_method"))
        .bearer_auth(&credential)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND).await;

    // A JSON array too: serde would take `["p1"]` as positional arguments.
    for malformed in [
        "{\"id\": ",
        "not json",
        "{\"id\": 5}",
        "{}",
        "null",
        "",
        "[\"p1\"]",
    ] {
        let response = http
            .post(server.url(GET_PRODUCT))
            .bearer_auth(&credential)
            .header(header::CONTENT_TYPE, "application/json")
            .body(malformed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{malformed:?}");
        let body = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("malformed call arguments"),
            "{malformed:?}: {body}"
        );
    }
}

/// 5a. The time left travels as x-bazaar-deadline-ms: the caller's scope when it has
/// one, else the client's timeout.
#[tokio::test]
async fn deadline_header_carries_the_time_left() {
    let server = serve(Arc::new(Fake::new()), catalog_keys(), Deadlines::Honour).await;
    let client = client_at(server.addr, caller_keys(), PATIENT);

    let within = chassis::deadline::scope(
        tokio::time::Instant::now() + Duration::from_millis(300),
        client.get_product("p1".into()),
    )
    .await;
    assert_eq!(within, Ok(product("p1", 3)));
    let sent = chassis::deadline::from_headers(&server.last_seen()).expect("a deadline header");
    assert!(
        sent <= Duration::from_millis(300) && !sent.is_zero(),
        "{sent:?}"
    );

    assert_eq!(client.get_product("p1".into()).await, Ok(product("p1", 3)));
    let seen = server.last_seen();
    assert_eq!(chassis::deadline::from_headers(&seen), Some(PATIENT));
    // No span ids layer is installed in this test binary, so there is no trace to
    // propagate and no (malformed) traceparent is sent.
    assert!(chassis::telemetry::current_traceparent().is_none());
    assert!(seen.get("traceparent").is_none());
}

/// 5b. No time left: fail fast, without a request.
#[tokio::test]
async fn expired_deadline_fails_without_calling() {
    let server = serve(Arc::new(Fake::new()), catalog_keys(), Deadlines::Honour).await;
    let client = client_at(server.addr, caller_keys(), PATIENT);
    assert!(client.get_product("p1".into()).await.is_ok());
    let before = server.seen().len();

    let started = Instant::now();
    let result =
        chassis::deadline::scope(tokio::time::Instant::now(), client.get_product("p1".into()))
            .await;
    assert_eq!(unavailable(result), "no time left to call catalog");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(server.seen().len(), before);
}

/// 5c. A callee's own calls inherit the deadline it was sent (common layers' scope):
/// the next hop never gets more time than the first.
#[tokio::test]
async fn deadline_shrinks_across_hops() {
    let back = serve(Arc::new(Fake::new()), catalog_keys(), Deadlines::Honour).await;
    let front = Fake {
        downstream: Some(Arc::new(client_at(back.addr, caller_keys(), PATIENT))),
        ..Fake::new()
    };
    let front = serve(Arc::new(front), catalog_keys(), Deadlines::Honour).await;
    let client = client_at(front.addr, caller_keys(), Duration::from_millis(800));

    assert_eq!(client.get_product("hop".into()).await, Ok(product("p1", 3)));
    let first = chassis::deadline::from_headers(&front.last_seen()).unwrap();
    let second = chassis::deadline::from_headers(&back.last_seen()).unwrap();
    assert_eq!(first, Duration::from_millis(800));
    assert!(second <= first && !second.is_zero(), "{second:?}");
}

/// 6a. Through the client: a 200 ms call to a 2 s method, and the server drops the
/// work well before it would have finished.
#[tokio::test]
async fn server_drops_work_when_the_call_runs_out_of_time() {
    let fake = Fake::new();
    let work = Arc::clone(&fake.work);
    let server = serve(Arc::new(fake), catalog_keys(), Deadlines::Honour).await;
    let client = client_at(server.addr, caller_keys(), Duration::from_millis(200));

    let started = Instant::now();
    let message = unavailable(client.get_product("slow".into()).await);
    assert!(message.contains("catalog"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));

    let cancelled = work
        .cancelled_by(started + Duration::from_secs(1))
        .await
        .expect("the slow call was not cancelled within 1 s");
    assert!(cancelled - started < Duration::from_secs(1));
    assert_eq!(work.started.load(Ordering::SeqCst), 1);
    assert_eq!(work.finished.load(Ordering::SeqCst), 0);
}

/// 6b. The server side alone: a patient caller that sends a 200 ms deadline gets a 504
/// problem at about 200 ms, and the handler's future has been dropped by then. (In
/// 6a the client also hangs up at 200 ms, which could cancel the work by itself; here
/// the connection stays open, so only the deadline header can end it.)
#[tokio::test]
async fn server_enforces_the_deadline_it_is_sent() {
    let fake = Fake::new();
    let work = Arc::clone(&fake.work);
    let server = serve(Arc::new(fake), catalog_keys(), Deadlines::Honour).await;

    let started = Instant::now();
    let response = raw_client()
        .post(server.url(GET_PRODUCT))
        .bearer_auth(caller_keys().credential("catalog").unwrap())
        .header(chassis::deadline::HEADER, "200")
        .json(&json!({ "id": "slow" }))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_problem(response, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(work.cancelled().len(), 1, "dropped before the 504 was sent");
    assert_eq!(work.finished.load(Ordering::SeqCst), 0);
}
