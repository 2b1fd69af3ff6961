//! The edge: every public route behind one router, with what the edge owns (CORS,
//! per-client rate limiting, the OpenAPI document and its docs page) on top of the
//! layers every bazaar server has.
//!
//! The gateway knows no module: the composition root (the `bazaar` binary) hands it
//! the modules' routers and OpenAPI documents.

mod browser_errors;
mod client;
mod console;
mod docs;
mod proxy;
mod rate_limit;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use chassis::health::Readiness;
use chassis::http::{HttpSettings, with_common_layers};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::OpenApi;

pub use console::{Location, SERVICES, Service, services_router};
pub use proxy::{DEAD_LETTERS, FAULTS, ProxySettings, Route, proxy_router};
pub use rate_limit::RateLimit;

/// The edge's settings.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub http: HttpSettings,
    /// Allowed CORS origins; `*` allows any, empty allows none.
    pub cors_origins: Vec<String>,
    /// Sustained requests per second per client IP; 0 turns limiting off.
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// The stricter limit on [`AUTH_PREFIXES`] (each request costs a password hash);
    /// 0 turns it off.
    pub auth_rate_per_second: u32,
    pub auth_rate_burst: u32,
    /// Whose `X-Forwarded-For` names the client the limits count (none by default).
    pub trusted_proxies: chassis::forwarded::TrustedProxies,
}

/// The routes that hash passwords, limited apart (one budget per client for both):
/// the API's register and login, and the shop's sign-up and sign-in forms.
pub const AUTH_PREFIXES: &[&str] = &["/api/v1/auth/", "/account/"];

impl EdgeSettings {
    /// The edge's limiters: the general one per client, and the stricter one on
    /// [`AUTH_PREFIXES`]; those turned off are left out.
    pub fn limiters(&self) -> Vec<RateLimit> {
        [
            RateLimit::new(self.rate_per_second, self.rate_burst),
            RateLimit::new(self.auth_rate_per_second, self.auth_rate_burst)
                .map(|limit| limit.only_under(AUTH_PREFIXES)),
        ]
        .into_iter()
        .flatten()
        .map(|limit| limit.behind(self.trusted_proxies.clone()))
        .collect()
    }
}

/// The public OpenAPI document: every module's paths, the ops routes, the shared
/// problem responses and bearer scheme.
pub fn openapi(modules: Vec<OpenApi>) -> OpenApi {
    use utoipa::{Modify, OpenApi as _};
    let mut doc = chassis::openapi::OpsApiDoc::openapi();
    doc.merge(console::ApiDoc::openapi());
    for module in modules {
        doc.merge(module);
    }
    "bazaar".clone_into(&mut doc.info.title);
    env!("CARGO_PKG_VERSION").clone_into(&mut doc.info.version);
    doc.info.description = Some(
        "bazaar's public HTTP API. Errors are RFC 9457 problem+json; money is integer \
         minor units; ids are UUIDv7 strings; lists are `{items, next_cursor}`."
            .to_owned(),
    );
    chassis::openapi::CommonResponses.modify(&mut doc);
    doc
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            chassis::http::REQUEST_ID,
        ])
        .expose_headers([chassis::http::REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// The whole public server: module routes (rate limited), ops routes (never limited:
/// probes and scrapes must get through an overload), the API description, the ops
/// console page, and the common layers around all of it.
pub fn router(
    modules: Router,
    docs: &OpenApi,
    readiness: Readiness,
    settings: &EdgeSettings,
    limiters: Vec<RateLimit>,
    scrape: chassis::http::ScrapeCredential,
) -> Router {
    // At 0 from the start, limiter or not: alerts and dashboards query it.
    chassis::metrics::zero_counter("http_rate_limited_total", &[]);
    let api = limiters.into_iter().fold(modules, |api, limiter| {
        api.layer(axum::middleware::from_fn_with_state(
            limiter,
            rate_limit::enforce,
        ))
    });
    // The split gateway forwards by prefix (catch-all routes): its metrics name the
    // public route template a path is an instance of instead.
    let api = api.layer(axum::middleware::from_fn_with_state(
        chassis::metrics::RouteTemplates::new(docs.paths.paths.keys()),
        chassis::metrics::label_route,
    ));
    let router = Router::new()
        .merge(api)
        .merge(chassis::http::ops_router(readiness, scrape))
        .merge(docs::router(docs))
        .merge(console::page_router());
    // The edge's problems as pages for a browser (outside the common layers, so the
    // fallback's 404 and the budget's 503 are covered). CORS outermost: it must see
    // preflight OPTIONS before routing would answer them 405, and it must add its
    // headers to every response, problems included.
    with_common_layers(router, &settings.http)
        .layer(axum::middleware::from_fn(browser_errors::as_pages))
        .layer(cors(&settings.cors_origins))
}
