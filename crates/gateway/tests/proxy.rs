//! The split topology's edge, end to end: the gateway router (with its common layers)
//! served on a real socket in front of small axum upstreams, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The edge's scrape credential.
const SCRAPE_TOKEN: &str = "scrape-token-for-the-proxy-tests-0000";

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chassis::auth::{
    IDENTITY_HEADER, IDENTITY_REFUSED_HEADER, Principal, Role, ServiceKeys, Tokens,
};
use chassis::health::Readiness;
use chassis::http::HttpSettings;
use futures::StreamExt;
use gateway::{DEAD_LETTERS, EdgeSettings, FAULTS, ProxySettings, Route};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

const JWT_SECRET: &[u8] = b"jwt-secret-jwt-secret-jwt-secret";
const SERVICE_SECRET: &[u8] = b"service-secret-service-secret-xx";
const BIG: usize = 2 * 1024 * 1024;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
    /// Read for the faults routes only.
    body: Vec<u8>,
}

/// How an upstream answers the faults admin routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultAdmin {
    /// The routes do not exist (`fault_admin` off): 404.
    Off,
    /// Like a module with `fault_admin` on: a store of faults by target.
    On,
    /// The routes exist and fail: 500.
    Failing,
}

#[derive(Clone)]
struct Upstream {
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Released by the test to let `/gated` finish its body.
    gate: Arc<Notify>,
    dead_letters: Vec<Value>,
    /// The faults in force here, by (decoded) target.
    faults: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream was called")
    }
}

/// The byte at `i` of the big body: a pattern that shows reordering or loss.
#[allow(clippy::cast_possible_truncation)]
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

async fn upstream_handler(State(up): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if path == FAULTS || path.starts_with(&format!("{FAULTS}/")) {
        // Only reached without the faults routes, as in a module with fault admin off.
        let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap();
        up.seen.lock().unwrap().push(Seen {
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: body.to_vec(),
        });
        return chassis::Problem::not_found("no such route").into_response();
    }
    up.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: Vec::new(),
    });
    if path == DEAD_LETTERS {
        if parts.headers.get(IDENTITY_HEADER).is_none() {
            return chassis::Problem::unauthorized("missing bearer token").into_response();
        }
        return axum::Json(json!({ "items": up.dead_letters })).into_response();
    }
    if path.ends_with("/big") {
        let chunks = (0..BIG / 65536).map(|c| {
            let chunk: Vec<u8> = (c * 65536..(c + 1) * 65536).map(pattern).collect();
            Ok::<_, std::io::Error>(chunk)
        });
        return Body::from_stream(futures::stream::iter(chunks)).into_response();
    }
    if path.ends_with("/gated") {
        let gate = Arc::clone(&up.gate);
        let stream = futures::stream::once(async { Ok::<_, std::io::Error>(b"first".to_vec()) })
            .chain(futures::stream::once(async move {
                gate.notified().await;
                Ok(b"-second".to_vec())
            }));
        return Body::from_stream(stream).into_response();
    }
    if path.ends_with("/broken") {
        // The failure comes after the head and a first chunk have gone out.
        let stream = futures::stream::once(async { Ok(b"partial".to_vec()) }).chain(
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("disk gone"))
            }),
        );
        return Body::from_stream(stream).into_response();
    }
    if path.ends_with("/missing") {
        return chassis::Problem::not_found("no product with id missing").into_response();
    }
    if path.ends_with("/echo-body") {
        let Ok(bytes) = axum::body::to_bytes(body, 8 * 1024 * 1024).await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let intact = bytes.iter().enumerate().all(|(i, b)| *b == pattern(i));
        return axum::Json(json!({ "len": bytes.len(), "intact": intact })).into_response();
    }
    (
        [("x-upstream", up.name), ("keep-alive", "timeout=5")],
        axum::Json(json!({ "upstream": up.name, "uri": parts.uri.to_string() })),
    )
        .into_response()
}

/// `PUT`, `DELETE` of `FAULTS/{target}` and `GET FAULTS`, as a module with fault
/// admin on (or failing) answers them; the target arrives decoded, as axum's `Path`
/// gives it to the real handlers.
async fn faults_handler(
    State((up, admin)): State<(Upstream, FaultAdmin)>,
    target: Option<Path<String>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap()
        .to_vec();
    up.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if admin == FaultAdmin::Failing {
        return chassis::Problem::internal(&std::io::Error::other("fault store gone"))
            .into_response();
    }
    if parts.headers.get(IDENTITY_HEADER).is_none() {
        return chassis::Problem::unauthorized("missing bearer token").into_response();
    }
    let mut faults = up.faults.lock().unwrap();
    match (parts.method, target) {
        (Method::GET, None) => {
            let items: Vec<Value> = faults
                .iter()
                .map(|(target, fault)| {
                    let mut item = fault.clone();
                    item["target"] = json!(target);
                    item
                })
                .collect();
            axum::Json(json!({ "items": items })).into_response()
        }
        (Method::PUT, Some(Path(target))) => {
            let Ok(fault) = serde_json::from_slice::<Value>(&body) else {
                return chassis::Problem::bad_request("not JSON").into_response();
            };
            faults.insert(target.clone(), fault.clone());
            let mut answer = fault;
            answer["target"] = json!(target);
            answer["upstream"] = json!(up.name);
            axum::Json(answer).into_response()
        }
        (Method::DELETE, Some(Path(target))) => {
            faults.remove(&target);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn start_upstream(name: &'static str, dead_letters: Vec<Value>) -> (Upstream, String) {
    start_upstream_with(name, dead_letters, FaultAdmin::Off).await
}

async fn start_upstream_with(
    name: &'static str,
    dead_letters: Vec<Value>,
    fault_admin: FaultAdmin,
) -> (Upstream, String) {
    let up = Upstream {
        name,
        seen: Arc::default(),
        gate: Arc::new(Notify::new()),
        dead_letters,
        faults: Arc::default(),
    };
    let mut router = Router::new();
    if fault_admin != FaultAdmin::Off {
        router = router
            .route(FAULTS, axum::routing::get(faults_handler))
            .route(
                &format!("{FAULTS}/{{target}}"),
                axum::routing::put(faults_handler).delete(faults_handler),
            );
    }
    let router = router
        .with_state((up.clone(), fault_admin))
        .fallback(upstream_handler)
        .with_state(up.clone());
    let (addr, _serving) = testkit::http::serve(router).await;
    (up, format!("http://{addr}"))
}

/// A base URL nothing listens on.
fn closed_port() -> String {
    format!("http://{}", testkit::closed_addr())
}

fn route(prefix: &'static str, upstream: &'static str, base_url: &str) -> Route {
    Route {
        prefix,
        upstream,
        base_url: base_url.to_owned(),
    }
}

struct Edge {
    url: String,
    addr: SocketAddr,
    tokens: Tokens,
    keys: ServiceKeys,
    http: reqwest::Client,
}

impl Edge {
    async fn start(routes: Vec<Route>, fan_out: Vec<&'static str>) -> Edge {
        Edge::start_with(routes, fan_out, Vec::new()).await
    }

    async fn start_with(
        routes: Vec<Route>,
        fan_out: Vec<&'static str>,
        fan_out_writes: Vec<&'static str>,
    ) -> Edge {
        Edge::start_full(routes, fan_out, fan_out_writes, Vec::new()).await
    }

    async fn start_full(
        routes: Vec<Route>,
        fan_out: Vec<&'static str>,
        fan_out_writes: Vec<&'static str>,
        fan_out_only: Vec<(&'static str, String)>,
    ) -> Edge {
        let tokens = Tokens::new(JWT_SECRET, 3600);
        let keys = ServiceKeys::new(SERVICE_SECRET, "gateway");
        let modules = gateway::proxy_router(
            routes,
            ProxySettings {
                tokens: tokens.clone(),
                keys: keys.clone(),
                connect_timeout: Duration::from_secs(2),
                tls: chassis::tls::client_config(None).unwrap(),
                fan_out,
                fan_out_writes,
                fan_out_only,
            },
        );
        let settings = EdgeSettings {
            http: HttpSettings {
                service: "gateway",
                request_timeout: Duration::from_secs(10),
            },
            cors_origins: Vec::new(),
            rate_per_second: 0,
            rate_burst: 0,
            auth_rate_per_second: 0,
            auth_rate_burst: 0,
            trusted_proxies: chassis::forwarded::TrustedProxies::default(),
        };
        let router = gateway::router(
            modules,
            &gateway::openapi(Vec::new()),
            Readiness::new(),
            &settings,
            Vec::new(),
            chassis::http::ScrapeCredential::new(SCRAPE_TOKEN, tokens.clone()),
        );
        let (addr, _serving) = testkit::http::serve(router).await;
        Edge {
            url: format!("http://{addr}"),
            addr,
            tokens,
            keys,
            http: reqwest::Client::new(),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    fn bearer(&self, user: &str, role: Role) -> String {
        format!("Bearer {}", self.tokens.issue(user, role).unwrap())
    }
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        chassis::error::PROBLEM_JSON
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

#[tokio::test]
async fn routes_by_longest_prefix_and_keeps_the_query() {
    let (api, api_url) = start_upstream("api", vec![]).await;
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let (notifications, notifications_url) = start_upstream("notifications", vec![]).await;
    let edge = Edge::start(
        vec![
            route("/api/v1", "api", &api_url),
            route("/api/v1/products", "catalog", &catalog_url),
            route(
                "/api/v1/admin/notifications",
                "notifications",
                &notifications_url,
            ),
        ],
        vec![],
    )
    .await;

    let cases = [
        ("/api/v1/products", "catalog"),
        ("/api/v1/products/", "catalog"),
        ("/api/v1/products/p1/stock", "catalog"),
        ("/api/v1/products?q=red%20shoe&limit=2", "catalog"),
        ("/api/v1/productsx", "api"),
        ("/api/v1/admin/notifications?limit=5", "notifications"),
        ("/api/v1/admin/analytics/sales", "api"),
        ("/api/v1", "api"),
    ];
    for (path, owner) in cases {
        let response = edge.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["upstream"], owner, "{path}");
        assert_eq!(body["uri"], path, "{path}: path and query unchanged");
    }
    assert_eq!(
        catalog.last().uri,
        "/api/v1/products?q=red%20shoe&limit=2",
        "the upstream saw the query string"
    );
    assert_eq!(notifications.seen().len(), 1);

    // Methods and request bodies pass too.
    let response = edge
        .http
        .post(format!("{}/api/v1/products", edge.url))
        .header("content-type", "application/json")
        .body(r#"{"sku":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(catalog.last().method, Method::POST);

    // Unknown paths are the common 404, and reach no upstream.
    let before = api.seen().len();
    problem(edge.get("/nope").send().await.unwrap(), 404).await;
    problem(edge.get("/api").send().await.unwrap(), 404).await;
    assert_eq!(api.seen().len(), before);
}

#[tokio::test]
async fn internal_routes_are_not_reachable() {
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(
        vec![
            route("/api/v1", "catalog", &catalog_url),
            // Refused at construction: internal routes are never proxied.
            route("/internal", "catalog", &catalog_url),
            route("/internal/v1/catalog", "catalog", &catalog_url),
        ],
        vec![],
    )
    .await;

    let response = edge
        .http
        .post(format!("{}/internal/v1/catalog/reserve", edge.url))
        .json(&json!({ "order_id": "o1", "items": [] }))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;

    // Dot segments (which reqwest would resolve client-side) and encoded slashes are
    // refused rather than forwarded for an upstream to normalise.
    for target in [
        "/api/v1/../internal/v1/catalog/reserve",
        "/api/v1/%2e%2e/internal/v1/catalog/reserve",
        "/api/v1/products%2F..%2F..%2Finternal",
    ] {
        let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{target}: {answer}");
        assert!(answer.contains("application/problem+json"), "{target}");
    }
    assert!(catalog.seen().is_empty(), "{:?}", catalog.seen());
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(
        vec![route("/api/v1/products", "catalog", &catalog_url)],
        vec![],
    )
    .await;

    // 2 MiB down, intact.
    let response = edge.get("/api/v1/products/big").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), BIG);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == pattern(i)));

    // Streamed, not buffered: the first chunk arrives while the upstream has not
    // finished its body.
    let response = edge.get("/api/v1/products/gated").send().await.unwrap();
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first chunk arrives before the body is complete")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first");
    catalog.gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"-second");

    // An upstream failing mid-body ends the client's stream with an error, not a
    // complete-looking body.
    let response = edge.get("/api/v1/products/broken").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
    // ...and the route keeps working.
    let response = edge.get("/api/v1/products").send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A chunked upload under the limit arrives intact...
    let upload = 768 * 1024;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..upload / 1024)
        .map(|c| Ok((c * 1024..(c + 1) * 1024).map(pattern).collect()))
        .collect();
    let response = edge
        .http
        .post(format!("{}/api/v1/products/echo-body", edge.url))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "len": upload, "intact": true }));

    // ...and one over it is cut at the edge's limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..2048).map(|_| Ok(vec![0_u8; 1024])).collect();
    let response = edge
        .http
        .post(format!("{}/api/v1/products/echo-body", edge.url))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    // (The client may instead see the connection close while it is still sending.)
    if let Ok(response) = response {
        problem(response, 413).await;
    }
}

#[tokio::test]
async fn the_edge_verifies_the_caller_and_forwards_an_identity() {
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(vec![route("/api/v1/me", "identity", &catalog_url)], vec![]).await;

    let response = edge
        .get("/api/v1/me")
        .header("authorization", edge.bearer("u1", Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = catalog.last();
    assert!(seen.headers.get("authorization").is_none());
    let identities: Vec<_> = seen.headers.get_all(IDENTITY_HEADER).iter().collect();
    assert_eq!(identities.len(), 1);
    let identity = identities[0].to_str().unwrap();
    assert_eq!(
        edge.keys.verify_identity(identity),
        Some(Principal {
            user_id: "u1".into(),
            role: Role::Admin,
            session_id: None,
        })
    );
    // A service with the same secret accepts it; a different secret does not.
    let elsewhere = ServiceKeys::new(SERVICE_SECRET, "catalog");
    assert!(elsewhere.verify_identity(identity).is_some());
    assert!(
        ServiceKeys::new(b"another-secret-another-secret-xx", "catalog")
            .verify_identity(identity)
            .is_none()
    );

    // A client's own identity header never gets through, valid-looking or not.
    let smuggled = edge
        .keys
        .forward_identity(&Principal {
            user_id: "root".into(),
            role: Role::Admin,
            session_id: None,
        })
        .unwrap();
    let response = edge
        .get("/api/v1/me")
        .header(IDENTITY_HEADER, &smuggled)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(catalog.last().headers.get(IDENTITY_HEADER).is_none());

    let response = edge
        .get("/api/v1/me")
        .header(IDENTITY_HEADER, &smuggled)
        .header("authorization", edge.bearer("u2", Role::Customer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = catalog.last();
    assert_eq!(seen.headers.get_all(IDENTITY_HEADER).iter().count(), 1);
    let principal = edge
        .keys
        .verify_identity(seen.headers[IDENTITY_HEADER].to_str().unwrap())
        .unwrap();
    assert_eq!(principal.user_id, "u2");
    assert_eq!(principal.role, Role::Customer);
}

/// The edge refuses a bad bearer once and says why; the service behind decides whether
/// the route needed a caller (public reads do not), as in the monolith. The API suite
/// checks the resulting 401s end to end on both topologies.
#[tokio::test]
async fn a_bad_bearer_is_refused_at_the_edge() {
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(vec![route("/api/v1/cart", "cart", &catalog_url)], vec![]).await;

    let forged = Tokens::new(b"not-the-secret-not-the-secret-xx", 3600)
        .issue("u1", Role::Admin)
        .unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({
            "sub": "u1", "role": "customer", "iat": now - 7200, "exp": now - 3600,
            "iss": chassis::auth::ISSUER, "aud": chassis::auth::AUDIENCE,
        }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap();
    // A service identity is not a user token either.
    let identity = edge
        .keys
        .forward_identity(&Principal {
            user_id: "u1".into(),
            role: Role::Admin,
            session_id: None,
        })
        .unwrap();

    let cases = [
        (format!("Bearer {forged}"), "invalid"),
        (format!("Bearer {expired}"), "invalid"),
        (format!("Bearer {identity}"), "invalid"),
        ("Bearer".to_owned(), "malformed"),
        ("Basic dTE6cHc=".to_owned(), "not_bearer"),
    ];
    for (authorization, code) in &cases {
        let response = edge
            .get("/api/v1/cart")
            .header("authorization", authorization)
            .header(IDENTITY_REFUSED_HEADER.as_str(), "spoofed")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{authorization}");
        let seen = catalog.seen();
        let headers = &seen.last().unwrap().headers;
        assert_eq!(
            headers
                .get_all(IDENTITY_REFUSED_HEADER)
                .iter()
                .collect::<Vec<_>>(),
            [*code],
            "{authorization}"
        );
        assert!(headers.get(IDENTITY_HEADER).is_none());
        assert!(headers.get("authorization").is_none());
        let refusal = chassis::auth::Refusal::from_code(code).unwrap();
        assert_eq!(refusal.code(), *code);
    }
    assert_eq!(catalog.seen().len(), cases.len());
}

#[tokio::test]
async fn an_unreachable_upstream_costs_only_its_routes() {
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(
        vec![
            route("/api/v1/products", "catalog", &catalog_url),
            route("/api/v1/orders", "orders", &closed_port()),
            route("/api/v1/cart", "cart", "http://no-such-host.invalid:8080"),
            route("/api/v1/me", "identity", "https://identity:8443"),
        ],
        vec![],
    )
    .await;

    for _ in 0..2 {
        let body = problem(edge.get("/api/v1/orders/o1").send().await.unwrap(), 503).await;
        assert_eq!(body["detail"], "orders is unavailable");
        let response = edge.get("/api/v1/products").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let body = problem(edge.get("/api/v1/cart").send().await.unwrap(), 503).await;
    assert_eq!(body["detail"], "cart is unavailable");
    let body = problem(edge.get("/api/v1/me").send().await.unwrap(), 503).await;
    assert_eq!(body["detail"], "identity is unavailable");
    assert_eq!(catalog.seen().len(), 2);

    let anonymous = edge.get("/metrics").send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "metrics are not for anonymous clients"
    );
    let metrics = testkit::http::text(edge.get("/metrics").bearer_auth(SCRAPE_TOKEN)).await;
    let counted = |upstream: &str, outcome: &str| {
        metrics.lines().any(|line| {
            line.starts_with("gateway_upstream_requests_total{")
                && line.contains(&format!("upstream=\"{upstream}\""))
                && line.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    assert!(counted("orders", "unavailable"), "{metrics}");
    assert!(counted("catalog", "ok"), "{metrics}");
}

#[tokio::test]
async fn replicas_share_the_requests_and_a_dead_one_costs_no_read() {
    let (first, first_url) = start_upstream("catalog", vec![]).await;
    let (second, second_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(
        vec![route(
            "/api/v1/products",
            "catalog",
            &format!("{first_url}, {}, {second_url}/", closed_port()),
        )],
        vec![],
    )
    .await;
    // A read that finds its replica gone is sent to another one.
    for _ in 0..12 {
        let response = edge.get("/api/v1/products").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let (a, b) = (first.seen().len(), second.seen().len());
    assert_eq!(a + b, 12);
    assert!(a > 0 && b > 0, "both replicas served: {a} and {b}");
    let metrics = testkit::http::text(edge.get("/metrics").bearer_auth(SCRAPE_TOKEN)).await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("replica_ejections_total{") && line.contains("catalog")),
        "{metrics}"
    );
}

#[tokio::test]
async fn request_context_and_headers_are_forwarded() {
    // With telemetry installed (as in production) the request span is the gateway's
    // hop of the client's trace. Only the request span is enabled: tests stay quiet.
    chassis::telemetry::init(
        "gateway",
        chassis::config::LogFormat::Json,
        "off,chassis::http=info",
    );
    let (catalog, catalog_url) = start_upstream("catalog", vec![]).await;
    let edge = Edge::start(
        vec![route("/api/v1/products", "catalog", &catalog_url)],
        vec![],
    )
    .await;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = edge
        .get("/api/v1/products")
        .header("x-request-id", "req-123")
        .header("traceparent", traceparent)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-bazaar-deadline-ms", "999999")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("proxy-authorization", "Basic secret")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    assert_eq!(response.headers()["x-upstream"], "catalog");
    assert!(response.headers().get("keep-alive").is_none());

    let seen = catalog.last().headers;
    assert_eq!(seen["x-request-id"], "req-123");
    let forwarded = seen["traceparent"].to_str().unwrap();
    assert!(
        forwarded.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the trace continues: {forwarded}"
    );
    assert!(
        !forwarded.contains("00f067aa0ba902b7"),
        "the gateway's span is the parent: {forwarded}"
    );
    let deadline: u64 = seen["x-bazaar-deadline-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deadline > 0 && deadline <= 10_000,
        "what is left of the budget: {deadline}"
    );
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-custom"], "kept");
    for hop in ["x-hop", "proxy-authorization", "te", "upgrade"] {
        assert!(seen.get(hop).is_none(), "{hop} was forwarded");
    }
    assert_eq!(seen["host"], catalog_url.trim_start_matches("http://"));

    // A service's problem passes through unchanged.
    let response = edge.get("/api/v1/products/missing").send().await.unwrap();
    let body = problem(response, 404).await;
    assert_eq!(body["detail"], "no product with id missing");
}

/// Replicas of one module: each is asked (a process keeps its own breakers and
/// faults), and what their shared store holds comes back once.
#[tokio::test]
async fn fan_outs_ask_every_replica_and_list_shared_items_once() {
    let shared =
        json!({ "consumer": "orders", "event_id": "e-1", "failed_at": "2025-01-01T00:00:01Z" });
    let own =
        json!({ "consumer": "orders", "event_id": "e-2", "failed_at": "2025-01-01T00:00:02Z" });
    let (first, first_url) = start_upstream("orders", vec![shared.clone()]).await;
    let (second, second_url) = start_upstream("orders", vec![shared, own]).await;
    let edge = Edge::start(
        vec![route(
            "/api/v1/orders",
            "orders",
            &format!("{first_url},{second_url}"),
        )],
        vec![DEAD_LETTERS],
    )
    .await;
    let body: Value = edge
        .get(DEAD_LETTERS)
        .header("authorization", edge.bearer("admin", Role::Admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["e-2", "e-1"], "{body}");
    assert_eq!(body["unavailable"], json!([]));
    assert_eq!((first.seen().len(), second.seen().len()), (1, 1));
}

#[tokio::test]
async fn dead_letters_fan_out_to_every_upstream() {
    let letter = |consumer: &str, failed_at: &str| json!({ "consumer": consumer, "event_id": format!("e-{consumer}"), "failed_at": failed_at });
    let (catalog, catalog_url) =
        start_upstream("catalog", vec![letter("catalog", "2025-01-01T00:00:01Z")]).await;
    let (orders, orders_url) = start_upstream(
        "orders",
        vec![
            letter("orders-a", "2025-01-01T00:00:03Z"),
            letter("orders-b", "2025-01-01T00:00:00Z"),
        ],
    )
    .await;
    // A module with no public route (payments) is asked too.
    let (payments, payments_url) =
        start_upstream("payments", vec![letter("payments", "2025-01-01T00:00:02Z")]).await;
    let edge = Edge::start_full(
        vec![
            route("/api/v1/products", "catalog", &catalog_url),
            route("/api/v1/orders", "orders", &orders_url),
            // Two prefixes of one upstream: asked once.
            route("/api/v1/admin/orders", "orders", &orders_url),
            route("/api/v1/cart", "cart", &closed_port()),
        ],
        vec![DEAD_LETTERS],
        Vec::new(),
        vec![("payments", payments_url.clone())],
    )
    .await;

    let response = edge
        .get(DEAD_LETTERS)
        .header("authorization", edge.bearer("admin", Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let consumers: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(
        consumers,
        ["orders-a", "payments", "catalog", "orders-b"],
        "newest first"
    );
    assert_eq!(body["unavailable"], json!(["cart"]));
    assert_eq!(orders.seen().len(), 1);
    assert_eq!(payments.seen().len(), 1);
    let identity = catalog.last().headers[IDENTITY_HEADER].clone();
    assert_eq!(
        edge.keys
            .verify_identity(identity.to_str().unwrap())
            .unwrap()
            .user_id,
        "admin"
    );

    // The services' refusal is the answer.
    let response = edge.get(DEAD_LETTERS).send().await.unwrap();
    problem(response, 401).await;
}

/// A fan-out edge in front of the given upstreams, each asked once however many
/// prefixes it owns.
async fn faults_edge(routes: Vec<Route>) -> Edge {
    Edge::start_with(routes, vec![DEAD_LETTERS, FAULTS], vec![FAULTS]).await
}

/// The calls an upstream saw on the faults routes.
fn fault_calls(up: &Upstream) -> Vec<Seen> {
    up.seen()
        .into_iter()
        .filter(|s| s.uri.starts_with(FAULTS))
        .collect()
}

#[tokio::test]
async fn fault_writes_reach_every_module_and_lists_merge() {
    let (catalog, catalog_url) = start_upstream_with("catalog", vec![], FaultAdmin::On).await;
    let (orders, orders_url) = start_upstream_with("orders", vec![], FaultAdmin::On).await;
    // Fault admin off there: its 404 is skipped.
    let (cart, cart_url) = start_upstream_with("cart", vec![], FaultAdmin::Off).await;
    catalog.faults.lock().unwrap().insert(
        "GET /api/v1/products/{id}".into(),
        json!({ "latency_ms": 50, "error_rate": 0.0, "hang": false }),
    );
    let edge = faults_edge(vec![
        route("/api/v1/products", "catalog", &catalog_url),
        route("/api/v1/orders", "orders", &orders_url),
        // Two prefixes of one upstream: asked once. The longest prefix is first in
        // route order, so orders is the first upstream.
        route("/api/v1/admin/orders", "orders", &orders_url),
        route("/api/v1/cart", "cart", &cart_url),
    ])
    .await;
    let admin = edge.bearer("admin", Role::Admin);
    let fault = r#"{"latency_ms":0,"error_rate":1.0,"hang":false}"#;

    let response = edge
        .http
        .put(format!("{}{FAULTS}/payments.charge", edge.url))
        .header("authorization", &admin)
        .header("content-type", "application/json")
        .body(fault)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "target": "payments.charge", "latency_ms": 0, "error_rate": 1.0,
                "hang": false, "upstream": "orders" }),
        "the first upstream's answer"
    );
    for up in [&catalog, &orders, &cart] {
        let calls = fault_calls(up);
        assert_eq!(calls.len(), 1, "{}: asked once: {calls:?}", up.name);
        let seen = &calls[0];
        assert_eq!(seen.method, Method::PUT);
        assert_eq!(seen.uri, format!("{FAULTS}/payments.charge"));
        assert_eq!(seen.body, fault.as_bytes(), "{}", up.name);
        assert_eq!(seen.headers["content-type"], "application/json");
        assert!(seen.headers.get("authorization").is_none());
        let identity = seen.headers[IDENTITY_HEADER].to_str().unwrap();
        let principal = edge.keys.verify_identity(identity).unwrap();
        assert_eq!(
            (principal.user_id.as_str(), principal.role),
            ("admin", Role::Admin)
        );
    }
    assert!(
        orders
            .faults
            .lock()
            .unwrap()
            .contains_key("payments.charge")
    );
    assert!(
        catalog
            .faults
            .lock()
            .unwrap()
            .contains_key("payments.charge")
    );

    // The list: every module's faults, merged (one entry per module holding it).
    let response = edge
        .get(FAULTS)
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut targets: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["target"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "GET /api/v1/products/{id}",
            "payments.charge",
            "payments.charge"
        ]
    );
    assert_eq!(body["unavailable"], json!([]));

    // DELETE: 204 once every module with the route has cleared it.
    let response = edge
        .http
        .delete(format!("{}{FAULTS}/payments.charge", edge.url))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    for up in [&catalog, &orders, &cart] {
        let last = fault_calls(up).pop().unwrap();
        assert_eq!(last.method, Method::DELETE, "{}", up.name);
        assert!(last.headers.contains_key(IDENTITY_HEADER), "{}", up.name);
    }
    assert!(orders.faults.lock().unwrap().is_empty());
    assert_eq!(
        catalog.faults.lock().unwrap().keys().collect::<Vec<_>>(),
        ["GET /api/v1/products/{id}"]
    );

    // Refused alike everywhere (no caller), applied nowhere: that refusal is the answer.
    let response = edge
        .http
        .put(format!("{}{FAULTS}/payments.charge", edge.url))
        .body(fault)
        .send()
        .await
        .unwrap();
    problem(response, 401).await;
    assert!(orders.faults.lock().unwrap().is_empty());

    // Other methods on a fault are not fanned out.
    let before = fault_calls(&orders).len();
    let response = edge
        .http
        .post(format!("{}{FAULTS}/payments.charge", edge.url))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(fault_calls(&orders).len(), before);
}

#[tokio::test]
async fn a_fault_write_no_module_takes_is_404() {
    let (catalog, catalog_url) = start_upstream_with("catalog", vec![], FaultAdmin::Off).await;
    let (_orders, orders_url) = start_upstream_with("orders", vec![], FaultAdmin::Off).await;
    let edge = faults_edge(vec![
        route("/api/v1/products", "catalog", &catalog_url),
        route("/api/v1/orders", "orders", &orders_url),
    ])
    .await;
    let admin = edge.bearer("admin", Role::Admin);

    let response = edge
        .http
        .put(format!("{}{FAULTS}/payments", edge.url))
        .header("authorization", &admin)
        .json(&json!({ "latency_ms": 10 }))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    let response = edge
        .http
        .delete(format!("{}{FAULTS}/payments", edge.url))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    assert_eq!(fault_calls(&catalog).len(), 2, "asked, and answered 404");
}

#[tokio::test]
async fn a_fault_write_not_applied_everywhere_is_a_502_naming_the_modules() {
    let (catalog, catalog_url) = start_upstream_with("catalog", vec![], FaultAdmin::On).await;
    let (_cart, cart_url) = start_upstream_with("cart", vec![], FaultAdmin::Failing).await;
    let (_off, off_url) = start_upstream_with("analytics", vec![], FaultAdmin::Off).await;
    let edge = faults_edge(vec![
        route("/api/v1/products", "catalog", &catalog_url),
        route("/api/v1/orders", "orders", &closed_port()),
        route("/api/v1/cart", "cart", &cart_url),
        route("/api/v1/me", "analytics", &off_url),
    ])
    .await;
    let admin = edge.bearer("admin", Role::Admin);

    let response = edge
        .http
        .put(format!("{}{FAULTS}/payments.charge", edge.url))
        .header("authorization", &admin)
        .json(&json!({ "hang": true }))
        .send()
        .await
        .unwrap();
    let body = problem(response, 502).await;
    assert_eq!(body["failed"], json!(["orders", "cart"]));
    assert_eq!(body["applied"], json!(["catalog"]));
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("orders unreachable"), "{detail}");
    assert!(detail.contains("cart answered 500"), "{detail}");
    assert!(detail.contains("applied on catalog"), "{detail}");
    assert!(
        !detail.contains("analytics"),
        "a 404 is not a failure: {detail}"
    );
    // It was applied where it could be: the 502 says so rather than hiding it.
    assert!(
        catalog
            .faults
            .lock()
            .unwrap()
            .contains_key("payments.charge")
    );

    // Only an unreachable module: 502 naming it, for a DELETE too.
    let edge = faults_edge(vec![
        route("/api/v1/products", "catalog", &catalog_url),
        route("/api/v1/orders", "orders", &closed_port()),
    ])
    .await;
    let response = edge
        .http
        .delete(format!("{}{FAULTS}/payments.charge", edge.url))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    let body = problem(response, 502).await;
    assert_eq!(body["failed"], json!(["orders"]));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("orders unreachable"),
        "{body}"
    );
    assert!(catalog.faults.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_fault_target_arrives_byte_for_byte() {
    let (catalog, catalog_url) = start_upstream_with("catalog", vec![], FaultAdmin::On).await;
    let (orders, orders_url) = start_upstream_with("orders", vec![], FaultAdmin::On).await;
    let edge = faults_edge(vec![
        route("/api/v1/products", "catalog", &catalog_url),
        route("/api/v1/orders", "orders", &orders_url),
    ])
    .await;
    let admin = edge.bearer("admin", Role::Admin);

    // A route template: spaces, slashes and braces percent-encoded, in mixed case.
    let raw = "GET%20%2Fapi%2Fv1%2Fproducts%2F%7Bid%7D";
    let mixed = "POST%20%2finternal%2Fv1%2fpayments%2Fcharge";
    for (encoded, decoded) in [
        (raw, "GET /api/v1/products/{id}"),
        (mixed, "POST /internal/v1/payments/charge"),
    ] {
        let response = edge
            .http
            .put(format!("{}{FAULTS}/{encoded}", edge.url))
            .header("authorization", &admin)
            .json(&json!({ "latency_ms": 200 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{encoded}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["target"], decoded);
        for up in [&catalog, &orders] {
            assert_eq!(
                fault_calls(up).pop().unwrap().uri,
                format!("{FAULTS}/{encoded}"),
                "{}",
                up.name
            );
            assert!(up.faults.lock().unwrap().contains_key(decoded));
        }
        let response = edge
            .http
            .delete(format!("{}{FAULTS}/{encoded}", edge.url))
            .header("authorization", &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(
            fault_calls(&orders).pop().unwrap().uri,
            format!("{FAULTS}/{encoded}")
        );
    }
    assert!(orders.faults.lock().unwrap().is_empty());

    // Dot segments, literal or hidden behind encoded slashes, could take an upstream
    // that decodes and normalises out of the faults prefix: refused, reaching no one.
    // (Raw requests: a client would resolve them itself.)
    let before = fault_calls(&orders).len();
    for target in ["..", "%2e%2E", "x%2F..%2F..%2Finternal", "a%5c.", "x%2f%2e"] {
        let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        let request = format!(
            "PUT {FAULTS}/{target} HTTP/1.1\r\nHost: edge\r\nAuthorization: {admin}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{target}: {answer}");
        assert!(answer.contains("application/problem+json"), "{target}");
    }
    assert_eq!(fault_calls(&orders).len(), before);
}

#[tokio::test]
async fn a_write_that_finds_its_replica_gone_goes_to_another_with_its_body() {
    // Found by bench/chaos.sh: with one of two orders replicas killed, checkouts routed
    // to it were answered 503 although nothing had reached it.
    let (first, first_url) = start_upstream("orders", vec![]).await;
    let (second, second_url) = start_upstream("orders", vec![]).await;
    let edge = Edge::start(
        vec![route(
            "/api/v1/orders",
            "orders",
            &format!("{first_url}, {}, {second_url}", closed_port()),
        )],
        vec![],
    )
    .await;
    let body: Vec<u8> = (0..40_000).map(pattern).collect();
    for _ in 0..12 {
        let response = edge
            .http
            .post(format!("{}/api/v1/orders/echo-body", edge.url))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echoed: Value = response.json().await.unwrap();
        assert_eq!(echoed, json!({"len": 40_000, "intact": true}));
    }
    let (a, b) = (first.seen().len(), second.seen().len());
    assert_eq!(a + b, 12);
    // A body the gateway does not keep (chunked) is not resent: its 503 stands.
    let (_, alive) = start_upstream("orders", vec![]).await;
    let edge = Edge::start(
        vec![route(
            "/api/v1/orders",
            "orders",
            &format!("{}, {alive}", closed_port()),
        )],
        vec![],
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(b"{}".to_vec())]);
        let response = edge
            .http
            .post(format!("{}/api/v1/orders/echo-body", edge.url))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
}
