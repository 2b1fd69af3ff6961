//! The ops console: `/console`, a static page for operators, and
//! `GET /api/v1/admin/services`, the health of every module as the edge sees it (the
//! page's service map).
//!
//! The page is served as three files compiled in (HTML, CSS, JS: no CDN, no build step,
//! works offline) under a Content-Security-Policy that allows only them and calls to
//! this origin. It holds no data: the operator signs in on it and every panel reads
//! admin-only endpoints with that bearer token.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chassis::auth::{AdminUser, Tokens};
use chassis::error::chain;
use chassis::extract::Json;
use chassis::health::Readiness;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

/// The admin route listing every module's health.
pub const SERVICES: &str = "/api/v1/admin/services";

/// How long a module's `/health/ready` may take before it counts as not ready: the
/// page refreshes every few seconds and one dead module must not stall the list.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A readiness report is a few hundred bytes; more is not one.
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// Only this origin's own files and calls; no inline code, no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Where a module runs, as the edge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In this process (the monolith).
    InProcess,
    /// Another process, at this base URL (`http://host:port`).
    Remote(String),
}

/// A module as the service map draws it.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub location: Location,
    /// The modules it calls through their contracts.
    pub calls: Vec<&'static str>,
    /// The modules whose events it consumes.
    pub consumes: Vec<&'static str>,
}

/// One module's health, as `GET /api/v1/admin/services` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ServiceStatus {
    name: String,
    /// `in-process`, or the base URL the gateway reaches it at.
    location: String,
    /// Its readiness: the process's in the monolith, its own `/health/ready` (asked
    /// with a 1 s timeout) when split.
    ready: bool,
    /// The readiness report (`{status, checks}`), or why the probe failed.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    /// The modules it calls.
    calls: Vec<String>,
    /// The modules whose events it consumes.
    consumes: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ServiceList {
    /// `monolith` or `split`.
    topology: String,
    /// The gateway first, then every module.
    items: Vec<ServiceStatus>,
}

#[derive(Clone)]
struct ConsoleState {
    services: std::sync::Arc<[Service]>,
    readiness: Readiness,
    tokens: Tokens,
    client: crate::client::HttpClient,
}

impl FromRef<ConsoleState> for Tokens {
    fn from_ref(state: &ConsoleState) -> Tokens {
        state.tokens.clone()
    }
}

/// `GET /api/v1/admin/services` over `services`: in-process ones take this process's
/// `readiness`, remote ones are probed. Admin only (`tokens` verify the caller).
pub fn services_router(
    services: Vec<Service>,
    readiness: Readiness,
    tokens: Tokens,
    tls: chassis::tls::ClientConfig,
) -> Router {
    let (builder, connector) = crate::client::builder(PROBE_TIMEOUT, tls);
    let client = builder.build(connector);
    Router::new()
        .route(SERVICES, get(list_services))
        .with_state(ConsoleState {
            services: services.into(),
            readiness,
            tokens,
            client,
        })
}

/// Every module's health: the gateway's own, then each module's, probed at once.
#[utoipa::path(get, path = "/api/v1/admin/services", tag = "ops",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The health of the gateway and every module, with the calls and event subscriptions between them", body = ServiceList)))]
async fn list_services(
    State(state): State<ConsoleState>,
    AdminUser(_admin): AdminUser,
) -> Json<ServiceList> {
    let (local_ready, local_report) = state.readiness.report().await;
    let probes = state.services.iter().map(|service| {
        let client = &state.client;
        let local_report = &local_report;
        async move {
            let (location, (ready, detail)) = match &service.location {
                Location::InProcess => {
                    ("in-process".to_owned(), (local_ready, local_report.clone()))
                }
                // Replicas: the first one answers for the module (each is probed by
                // its own orchestrator; this page is a map, not a monitor).
                Location::Remote(base) => (
                    base.clone(),
                    probe(
                        client,
                        chassis::http::balance::split(base)
                            .next()
                            .unwrap_or_default(),
                    )
                    .await,
                ),
            };
            ServiceStatus {
                name: service.name.to_owned(),
                location,
                ready,
                detail,
                calls: service.calls.iter().map(|&c| c.to_owned()).collect(),
                consumes: service.consumes.iter().map(|&c| c.to_owned()).collect(),
            }
        }
    });
    let items = futures::future::join_all(probes).await;
    let split = state
        .services
        .iter()
        .any(|s| matches!(s.location, Location::Remote(_)));
    Json(ServiceList {
        topology: if split { "split" } else { "monolith" }.to_owned(),
        items,
    })
}

/// Asks `base`'s `/health/ready`: ready on a 200, with its report (or the failure) as
/// the detail. (No span of its own: it runs in the admin request's, and health checks
/// are not traffic worth a trace.)
async fn probe(client: &crate::client::HttpClient, base: &str) -> (bool, serde_json::Value) {
    let failed = |why: String| (false, serde_json::json!({ "error": why }));
    let uri: Uri = match format!("{}/health/ready", base.trim_end_matches('/')).parse() {
        Ok(uri) => uri,
        Err(_) => return failed(format!("unusable base URL {base}")),
    };
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = uri;
    let asked = async {
        let response = client.request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), PROBE_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Err(_) => failed(format!("no answer within {PROBE_TIMEOUT:?}")),
        Ok(Err(why)) => {
            tracing::debug!(base, error = %why, "readiness probe failed");
            failed(why)
        }
        Ok(Ok((status, bytes))) => {
            let detail = serde_json::from_slice(&bytes).unwrap_or_else(
                |_| serde_json::json!({ "status": status.as_u16(), "body": String::from_utf8_lossy(&bytes) }),
            );
            (status == StatusCode::OK, detail)
        }
    }
}

/// The page and its two assets.
pub(crate) fn page_router() -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated on every load: after an upgrade the page and its script must match.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", include_str!("console.html"))
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("console.js"))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_services), components(schemas(ServiceList, ServiceStatus)))]
pub(crate) struct ApiDoc;
