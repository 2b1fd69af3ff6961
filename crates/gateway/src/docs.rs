//! `/openapi.json` and `/docs`: the API description and a self-contained page that
//! renders it. No CDN and no build-time download (so not swagger-ui): it works offline.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::OpenApi;

pub(crate) fn router(doc: &OpenApi) -> Router {
    let json: Arc<str> = Arc::from(doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned()));
    Router::new()
        .route("/openapi.json", get(spec))
        .route("/docs", get(page))
        .with_state(json)
}

async fn spec(State(json): State<Arc<str>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
}

async fn page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
