//! The shop's routes: each page asks the contracts, renders, and gets the headers every
//! page of the shop carries.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use contracts::catalog::{CatalogApi, CatalogError};
use serde::Deserialize;

use crate::pages;

/// The public path prefixes the shop owns (the split gateway routes them to it): the
/// home page exactly, the product pages and the assets.
pub(crate) const PREFIXES: &[&str] = &["/", "/products", "/assets"];

/// The stylesheet's path. Compiled in, so a page and its stylesheet always match.
pub(crate) const STYLESHEET: &str = "/assets/shop.css";

/// Products per page on the home page.
const PAGE_SIZE: u32 = 12;

/// No script, no frame, no foreign origin: the pages need only their own stylesheet
/// and to post their forms back to the shop.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// What the pages call.
#[derive(Clone)]
pub(crate) struct Shop {
    pub(crate) catalog: Arc<dyn CatalogApi>,
}

chassis::debug_fields!(Shop {});

pub(crate) fn router(shop: Shop) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/products/{id}", get(product))
        .route(STYLESHEET, get(stylesheet))
        .route("/assets/{*rest}", get(not_found))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(shop)
}

/// The shop's failures, each a page in the shop's style.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShopError {
    #[error("There is no such page.")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("The shop cannot reach one of its services right now. Please try again shortly.")]
    Unavailable(#[source] CatalogError),
}

impl From<CatalogError> for ShopError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound(_) => ShopError::NotFound,
            CatalogError::Invalid(why) => ShopError::BadRequest(why),
            other => ShopError::Unavailable(other),
        }
    }
}

impl IntoResponse for ShopError {
    fn into_response(self) -> Response {
        let status = match &self {
            ShopError::NotFound => StatusCode::NOT_FOUND,
            ShopError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ShopError::Unavailable(e) => {
                tracing::warn!(error = %e, "a page's service call failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, pages::error(status, &self.to_string())).into_response()
    }
}

/// Every shop response: the CSP and its companions, and pages revalidated on every
/// load (they show stock and, later, a session's cart).
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

/// The home page's query: a search and a page.
#[derive(Debug, Default, Deserialize)]
struct Browse {
    q: Option<String>,
    cursor: Option<String>,
}

#[tracing::instrument(skip(shop))]
async fn home(
    State(shop): State<Shop>,
    Query(browse): Query<Browse>,
) -> Result<Response, ShopError> {
    let q = browse.q.filter(|q| !q.trim().is_empty());
    let cursor = browse.cursor.filter(|c| !c.is_empty());
    let first_page = cursor.is_none();
    let page = shop
        .catalog
        .list_products(q.clone(), cursor, PAGE_SIZE)
        .await?;
    Ok(pages::home(q.as_deref(), &page, first_page).into_response())
}

#[tracing::instrument(skip(shop))]
async fn product(State(shop): State<Shop>, Path(id): Path<String>) -> Result<Response, ShopError> {
    let product = shop.catalog.get_product(id).await?;
    Ok(pages::product(&product).into_response())
}

async fn not_found() -> ShopError {
    ShopError::NotFound
}

/// The stylesheet, compiled in; cached for an hour (it changes only with a release).
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("shop.css"),
    )
        .into_response()
}
