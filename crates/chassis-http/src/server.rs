//! The HTTP server every bazaar process runs: its layers, its ops routes and its
//! graceful shutdown.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::{Level, Span};

use crate::health::{self, Readiness};
use crate::problem::Problem;
use crate::red::{self, ServiceName};

/// The public contract's body limit: 1 MiB, 413 beyond.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What the common layers need to know.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The `service` label of logs and metrics.
    pub service: &'static str,
    /// The budget of one request.
    pub request_timeout: Duration,
}

#[derive(Clone, Copy, Default)]
struct UuidRequestId;

impl MakeRequestId for UuidRequestId {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        chassis_core::id::new_id().parse().ok().map(RequestId::new)
    }
}

/// The server span of a request: a child of the caller's span when a `traceparent`
/// came with it (another service, the gateway or an instrumented client). Its name
/// becomes `METHOD route` once routing matched a route ([`red::track`]).
fn request_span(service: &'static str, req: &axum::http::Request<Body>) -> Span {
    let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let request_id = header(&REQUEST_ID).unwrap_or_default();
    // Probes and scrapes are not traced (a debug span: logs only): every few seconds
    // each, they would crowd real requests out of the trace buffer and a backend.
    let path = req.uri().path();
    if path.starts_with("/health/") || path == "/metrics" {
        return tracing::debug_span!(
            "request",
            method = %req.method(),
            path,
            request_id = %request_id,
        );
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", req.method(), req.uri().path()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        service,
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    );
    if let Some(traceparent) = header(&TRACEPARENT) {
        chassis_telemetry::set_parent(&span, traceparent, header(&TRACESTATE));
    }
    span
}

/// Wraps `router` in the layers every bazaar server has. Order matters and reads
/// top-down: outer layers see the request first and the response last.
pub fn with_common_layers(router: Router, settings: &HttpSettings) -> Router {
    let layers = ServiceBuilder::new()
        // 1. Request id first, so the span and every response carry it (accepted from
        //    the client or generated, and echoed back).
        .layer(SetRequestIdLayer::new(REQUEST_ID, UuidRequestId))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // 2. The request span: every log line of the request is inside it.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with({
                    let service = settings.service;
                    move |req: &axum::http::Request<Body>| request_span(service, req)
                })
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(Level::DEBUG)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        // 3. RED metrics outside the budget, so timed-out and rejected requests count.
        .layer(middleware::from_fn_with_state(
            ServiceName(settings.service),
            red::track,
        ))
        // 4. The request budget: work past it is dropped, not left running.
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            enforce_timeout,
        ))
        // 5. Body limit: by Content-Length up front, and while streaming for chunked
        //    bodies (the JSON extractor turns that into a 413 problem).
        .layer(middleware::from_fn(enforce_content_length))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layers)
}

async fn enforce_timeout(State(budget): State<Duration>, req: Request, next: Next) -> Response {
    // A caller's own deadline (another service, or the gateway) can only shorten ours.
    let budget = crate::deadline::from_headers(req.headers()).map_or(budget, |b| b.min(budget));
    let deadline = tokio::time::Instant::now() + budget;
    let work = crate::deadline::scope(deadline, next.run(req));
    if let Ok(response) = tokio::time::timeout_at(deadline, work).await {
        response
    } else {
        tracing::warn!(
            budget_ms = budget.as_millis(),
            "request exceeded its budget"
        );
        Problem::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "Request timed out",
        )
        .with_detail("the request did not finish within its time budget")
        .into_response()
    }
}

async fn enforce_content_length(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT_BYTES as u64) {
        return Problem::payload_too_large(BODY_LIMIT_BYTES).into_response();
    }
    next.run(req).await
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

/// Load shedding: at most `max_in_flight` requests of `router` at once (0: no limit);
/// one more is answered 503 with `Retry-After` at once, rather than queued into a
/// timeout along with everyone else. Apply it to the API routes only, so health probes
/// and scrapes are never shed.
pub fn shed_load(router: Router, max_in_flight: u32) -> Router {
    if max_in_flight == 0 {
        return router;
    }
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max_in_flight as usize));
    router.layer(middleware::from_fn_with_state(permits, admit))
}

async fn admit(
    State(permits): State<std::sync::Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        metrics::counter!("http_requests_shed_total").increment(1);
        return Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
        )
        .with_detail("too many requests in progress; retry shortly")
        .with_retry_after(1)
        .into_response();
    };
    next.run(req).await
}

/// `/health/live`, `/health/ready` and `/metrics`.
pub fn ops_router(readiness: Readiness, scrape: ScrapeCredential) -> Router {
    // Install the recorder now: metrics recorded before it exists are lost.
    drop(chassis_telemetry::metrics::handle());
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(readiness)
        .route(
            "/metrics",
            get(red::render).route_layer(middleware::from_fn_with_state(
                scrape,
                require_scrape_credential,
            )),
        )
}

/// Who may read `/metrics`: a scraper presenting the scrape credential
/// (`Authorization: Bearer <metrics_token>`), or an admin's user token (the ops
/// console). The metrics include business figures (orders, revenue), so the API port
/// never serves them to anonymous clients.
#[derive(Clone)]
pub struct ScrapeCredential(std::sync::Arc<str>, crate::auth::Tokens);

impl std::fmt::Debug for ScrapeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeCredential(..)")
    }
}

impl ScrapeCredential {
    pub fn new(token: &str, tokens: crate::auth::Tokens) -> Self {
        Self(token.into(), tokens)
    }

    fn admits(&self, headers: &axum::http::HeaderMap) -> bool {
        use subtle::ConstantTimeEq;
        crate::auth::bearer_token(headers)
            .is_ok_and(|presented| bool::from(presented.as_bytes().ct_eq(self.0.as_bytes())))
            || self
                .1
                .principal(headers)
                .is_ok_and(|p| p.role == crate::auth::Role::Admin)
    }
}

async fn require_scrape_credential(
    State(scrape): State<ScrapeCredential>,
    req: Request,
    next: Next,
) -> Response {
    if scrape.admits(req.headers()) {
        next.run(req).await
    } else {
        Problem::unauthorized(
            "/metrics needs the scrape credential (Authorization: Bearer <metrics_token>) or an admin's token",
        )
        .into_response()
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
            () = terminate => tracing::info!("received SIGTERM, shutting down"),
            () = token.cancelled() => return,
        }
        token.cancel();
    });
}

/// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
/// finish for at most `drain`, and returns. HTTPS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let graceful = shutdown.clone();
    // The no-op tap is what gives any listener axum's `ConnectInfo<SocketAddr>`.
    let incoming = crate::tls::Incoming::new(listener, tls)?.tap_io(|_| {});
    let server = axum::serve(
        incoming,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { graceful.cancelled().await })
    .into_future();
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(drain_secs = drain.as_secs(), "in-flight requests did not finish in time; closing");
            Ok(())
        }
    }
}
