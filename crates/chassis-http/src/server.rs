//! The HTTP server every bazaar process runs: its layers, its ops routes and its
//! graceful shutdown.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chassis_telemetry::sampling::{self, Unsampled};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tracing::{Instrument as _, Span};

use crate::health::{self, Readiness};
use crate::problem::Problem;
use crate::red;

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

/// The server span of a request: a child of the caller's span when a `traceparent`
/// came with it (another service, the gateway or an instrumented client). Its name
/// becomes `METHOD route` once the response is known ([`red::Red::finish`]). With it,
/// the head sampler's mark when the request is not traced (then nothing of it is
/// built as an OpenTelemetry span; see `chassis_telemetry::sampling`).
fn request_span(
    service: &'static str,
    req: &Request,
    request_id: &str,
) -> (Span, Option<Unsampled>) {
    let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    // Probes and scrapes are not traced (a debug span: logs only): every few seconds
    // each, they would crowd real requests out of the trace buffer and a backend.
    let path = req.uri().path();
    if path.starts_with("/health/") || path == "/metrics" {
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path,
            request_id,
        );
        return (span, None);
    }
    chassis_telemetry::root_span(header(&TRACEPARENT), header(&TRACESTATE), || {
        tracing::info_span!(
            "request",
            otel.name = %format_args!("{} {}", req.method(), path),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            service,
            method = %req.method(),
            path,
            request_id,
        )
    })
}

/// A request the head sampler did not trace: what its kept server span needs, should
/// it fail or be slow.
struct Untraced {
    mark: Unsampled,
    path: String,
}

impl Untraced {
    /// Exports the request's server span when it failed or was slow (without
    /// children: they were never built).
    fn finish(
        &self,
        service: &'static str,
        red: &red::Red,
        status: axum::http::StatusCode,
        request_id: &HeaderValue,
    ) {
        let elapsed = red.elapsed();
        let Some(reason) = sampling::Kept::reason(status.as_u16(), elapsed) else {
            return;
        };
        let end = std::time::SystemTime::now();
        sampling::keep(
            &self.mark,
            &sampling::Finished {
                name: red.span_name(),
                start: end.checked_sub(elapsed).unwrap_or(end),
                end,
                status: status.as_u16(),
                reason,
                attributes: &[
                    (chassis_telemetry::traces::SERVICE_ATTRIBUTE, service),
                    ("method", red.method()),
                    ("path", &self.path),
                    ("request_id", request_id.to_str().unwrap_or_default()),
                ],
            },
        );
    }
}

/// Wraps `router` in the layers every bazaar server has. The per-request work is one
/// layer ([`Common`]); what it does, in order, is documented there.
pub fn with_common_layers(router: Router, settings: &HttpSettings) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(Common {
                    service: settings.service,
                    budget: settings.request_timeout,
                })
                // Streaming bodies past the limit: the JSON extractor turns the limit
                // into a 413 problem.
                .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)),
        )
}

/// The common layers of every bazaar server, folded into one so a request pays for
/// one boxed future rather than a boxed future and a cloned service per step. What it
/// does to a request, outermost first (outer steps see the request first and the
/// response last):
///
/// 1. **Request id**: the client's `x-request-id`, or a generated one; echoed on the
///    response (problems included), and in the span so every log line carries it.
/// 2. **The request span**: every log line of the request is inside it; a traced
///    request's server span ([`request_span`]), named after the route once known.
/// 3. **RED metrics** ([`red::Red`]), outside the budget, so timed-out and refused
///    requests count.
/// 4. **The request budget**: the configured timeout, shortened by a caller's
///    deadline header; work past it is dropped (504), not left running.
/// 5. **Body limit** by `Content-Length` up front (413); chunked bodies are limited
///    while streaming by [`DefaultBodyLimit`], applied inside this layer.
#[derive(Debug, Clone, Copy)]
struct Common {
    service: &'static str,
    budget: Duration,
}

impl<S> tower::Layer<S> for Common {
    type Service = CommonService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CommonService {
            inner,
            common: *self,
        }
    }
}

#[derive(Debug, Clone)]
struct CommonService<S> {
    inner: S,
    common: Common,
}

impl<S> tower::Service<Request> for CommonService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Common { service, budget } = self.common;
        // 1. Request id.
        let request_id = if let Some(given) = req.headers().get(REQUEST_ID) {
            given.clone()
        } else {
            let id = new_request_id();
            req.headers_mut().insert(REQUEST_ID, id.clone());
            id
        };
        // 2. The span (entered while the inner service is called and polled).
        let (span, unsampled) =
            request_span(service, &req, request_id.to_str().unwrap_or_default());
        let untraced_mark = unsampled;
        let untraced = unsampled.map(|mark| Untraced {
            mark,
            path: req.uri().path().to_owned(),
        });
        let started = std::time::Instant::now();
        // 3. RED.
        let red = red::Red::start(&mut req);
        // 4. The budget: a caller's own deadline can only shorten ours.
        let budget = crate::deadline::from_headers(req.headers()).map_or(budget, |b| b.min(budget));
        let deadline = tokio::time::Instant::now() + budget;
        // 5. Content-Length.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let work = if declared.is_some_and(|len| len > BODY_LIMIT_BYTES as u64) {
            None
        } else {
            // `call` runs outside `sampling::scope` (set on `answer` below): harmless,
            // as the router's `call` only routes and builds the future; the handler's
            // spans, logs and calls happen when it is polled, inside the scope.
            Some(span.in_scope(|| self.inner.call(req)))
        };
        let in_span = span.clone();
        let answer = async move {
            let mut response = match work {
                None => Problem::payload_too_large(BODY_LIMIT_BYTES).into_response(),
                Some(work) => {
                    let work = crate::deadline::scope(deadline, work);
                    match tokio::time::timeout_at(deadline, work).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => timed_out(budget),
                    }
                }
            };
            let status = response.status();
            match &untraced {
                None => red.finish(service, &response, Some(&span)),
                Some(untraced) => {
                    red.finish(service, &response, None);
                    untraced.finish(service, &red, status, &request_id);
                }
            }
            let latency = format_args!("{} μs", started.elapsed().as_micros());
            tracing::debug!(%latency, status = status.as_u16(), "finished processing request");
            if status.is_server_error() {
                tracing::error!(
                    classification = %format_args!("Status code: {status}"),
                    %latency,
                    "response failed"
                );
            }
            if !response.headers().contains_key(REQUEST_ID) {
                response.headers_mut().insert(REQUEST_ID, request_id);
            }
            Ok(response)
        };
        // A request whose future is dropped (the client went away) never reaches
        // `untraced.finish`: if it was not sampled, no span of it is kept, however slow.
        match untraced_mark {
            // Its spans, logs and calls know the trace without OpenTelemetry spans.
            Some(mark) => Box::pin(sampling::scope(mark, answer.instrument(in_span))),
            None => Box::pin(answer.instrument(in_span)),
        }
    }
}

/// A request id for a request that came without one.
fn new_request_id() -> HeaderValue {
    HeaderValue::try_from(chassis_core::id::new_id())
        .unwrap_or_else(|_| HeaderValue::from_static("unidentified"))
}

fn timed_out(budget: Duration) -> Response {
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
