//! RED metrics of what an HTTP server answers: requests per route template and RPC
//! calls per method served, and the `/metrics` route that exposes them (the recorder
//! itself is chassis-telemetry's).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chassis_telemetry::metrics::enabled;
/// The route label decided after routing ([`label_route`]): the split gateway forwards
/// by prefix, so the route axum matched there is a catch-all; the public route template
/// it stands for is the useful label. [`Red`] puts an empty slot in the request and
/// reads it after the response, so the label survives a response made outside the
/// router (a 504 from the request budget).
#[derive(Clone, Debug, Default)]
struct RouteSlot(Arc<OnceLock<Arc<str>>>);

/// RED metrics of one request: `http_requests_total` and
/// `http_request_duration_seconds`, labelled by service, method, route template (never
/// the raw path: unbounded cardinality) and status. [`Red::start`] before the request
/// goes in, [`Red::finish`] with its response; the server's common layer calls both.
#[derive(Debug)]
pub(crate) struct Red {
    start: Instant,
    method: axum::http::Method,
    matched: Option<MatchedPath>,
    slot: RouteSlot,
}

impl Red {
    pub(crate) fn start(req: &mut Request) -> Self {
        let slot = RouteSlot::default();
        req.extensions_mut().insert(slot.clone());
        Self {
            start: Instant::now(),
            method: req.method().clone(),
            matched: req.extensions().get::<MatchedPath>().cloned(),
            slot,
        }
    }

    /// The route label: the public template, or `unmatched`.
    fn route(&self) -> &str {
        match (self.slot.0.get(), &self.matched) {
            (Some(label), _) => label,
            // A catch-all never names a series: refused before routing (413), it is
            // not one of the public routes.
            (None, Some(path)) if path.as_str().contains("{*") => "unmatched",
            (None, Some(path)) => path.as_str(),
            (None, None) => "unmatched",
        }
    }

    /// The server span's name, `METHOD route`, as OpenTelemetry's HTTP conventions
    /// ask.
    pub(crate) fn span_name(&self) -> String {
        format!("{} {}", self.method, self.route())
    }

    pub(crate) fn method(&self) -> &str {
        self.method.as_str()
    }

    /// How long since [`Red::start`].
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    /// Records the response, and names the request span (this hop's server span,
    /// when it is traced) after the route, marking it failed on a 5xx.
    pub(crate) fn finish(
        &self,
        service: &'static str,
        response: &Response,
        span: Option<&tracing::Span>,
    ) {
        let route = self.route();
        let status = response.status();
        let method = self.method.as_str();
        if let Some(span) = span {
            span.record("otel.name", format_args!("{method} {route}"));
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        if !enabled() {
            return;
        }
        let labels = [
            ("service", service.to_owned()),
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_str().to_owned()),
        ];
        metrics::counter!("http_requests_total", &labels).increment(1);
        metrics::histogram!("http_request_duration_seconds", &labels)
            .record(self.start.elapsed().as_secs_f64());
    }
}

/// Public route templates (`/api/v1/products/{id}`), to name what a catch-all route
/// matched. A `{param}` segment matches any one non-empty segment; when several
/// templates match, the one with the most literal segments wins.
#[derive(Clone, Debug, Default)]
pub struct RouteTemplates(Arc<Vec<(Arc<str>, Vec<Segment>)>>);

#[derive(Debug)]
enum Segment {
    Literal(String),
    Param,
}

impl RouteTemplates {
    pub fn new<I, S>(templates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = templates
            .into_iter()
            .map(|t| {
                let t = t.as_ref();
                let segments = t
                    .split('/')
                    .map(|s| {
                        if s.starts_with('{') && s.ends_with('}') {
                            Segment::Param
                        } else {
                            Segment::Literal(s.to_owned())
                        }
                    })
                    .collect();
                (Arc::from(t), segments)
            })
            .collect();
        Self(Arc::new(parsed))
    }

    /// The template `path` is an instance of, if any.
    pub fn find(&self, path: &str) -> Option<&Arc<str>> {
        let parts: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .filter(|(_, segments)| {
                segments.len() == parts.len()
                    && segments.iter().zip(&parts).all(|(s, p)| match s {
                        Segment::Literal(l) => l == p,
                        Segment::Param => !p.is_empty(),
                    })
            })
            .max_by_key(|(_, segments)| {
                segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            })
            .map(|(template, _)| template)
    }
}

/// For routes matched by a catch-all (`{*rest}`): labels the response with the public
/// template the path is an instance of, or `unmatched` (so a client inventing paths
/// cannot create series). Other routes keep axum's own template. Attach with
/// `Router::layer` so it runs after routing.
pub async fn label_route(
    State(templates): State<RouteTemplates>,
    req: Request,
    next: Next,
) -> Response {
    let catch_all = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| p.as_str().contains("{*"));
    if !catch_all {
        return next.run(req).await;
    }
    let label = templates
        .find(req.uri().path())
        .map_or_else(|| Arc::from("unmatched"), Arc::clone);
    if let Some(slot) = req.extensions().get::<RouteSlot>() {
        // Set once, by the only layer that labels.
        drop(slot.0.set(label));
    }
    next.run(req).await
}

/// RED metrics of the RPC calls a module serves (`/internal/v1/<service>/<method>`):
/// `rpc_server_requests_total` and `rpc_server_duration_seconds` by service, method
/// and outcome (`ok`, `error` = a typed answer, `bad_request`, `unauthorized`,
/// `timeout`, `unavailable`, `server_error`, `other`). Attach with `route_layer`
/// outside the credential check, so refused calls count too.
pub async fn track_rpc(req: Request, next: Next) -> Response {
    if !enabled() {
        return next.run(req).await;
    }
    let start = Instant::now();
    let (service, method) = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| {
            p.as_str()
                .strip_prefix("/internal/v1/")
                .and_then(|rest| rest.split_once('/'))
                .map(|(s, m)| (s.to_owned(), m.to_owned()))
        })
        .unwrap_or_else(|| ("unknown".to_owned(), "unknown".to_owned()));
    let response = next.run(req).await;
    let outcome = match response.status().as_u16() {
        200 => "ok",
        422 => "error",
        400 | 413 | 415 => "bad_request",
        401 | 403 => "unauthorized",
        504 => "timeout",
        503 => "unavailable",
        500..=599 => "server_error",
        _ => "other",
    };
    let labels = [
        ("service", service),
        ("method", method),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("rpc_server_requests_total", &labels).increment(1);
    metrics::histogram!("rpc_server_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Prometheus text exposition of every metric of this process, for the scrape
/// credential (`metrics_token`) or an admin's token.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "Neither the scrape credential nor an admin's token", body = crate::problem::Problem, content_type = "application/problem+json")))]
pub async fn render() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        chassis_telemetry::metrics::exposition(),
    )
}

#[cfg(test)]
mod tests {
    use super::RouteTemplates;

    #[test]
    fn templates_name_paths_and_prefer_literals() {
        let t = RouteTemplates::new([
            "/api/v1/products",
            "/api/v1/products/{id}",
            "/api/v1/products/{id}/stock",
            "/api/v1/orders/{id}/events",
            "/api/v1/orders/{id}/{action}",
        ]);
        let find = |p: &str| t.find(p).map(ToString::to_string);
        assert_eq!(
            find("/api/v1/products/abc").as_deref(),
            Some("/api/v1/products/{id}")
        );
        assert_eq!(
            find("/api/v1/products/abc/stock").as_deref(),
            Some("/api/v1/products/{id}/stock")
        );
        assert_eq!(
            find("/api/v1/orders/1/events").as_deref(),
            Some("/api/v1/orders/{id}/events")
        );
        assert_eq!(
            find("/api/v1/orders/1/cancel").as_deref(),
            Some("/api/v1/orders/{id}/{action}")
        );
        assert_eq!(find("/api/v1/products/"), None);
        assert_eq!(find("/api/v1/products/a/b/c"), None);
        assert_eq!(find("/api/v1/nope"), None);
    }
}
