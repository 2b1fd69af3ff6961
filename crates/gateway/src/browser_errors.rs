//! Errors at the edge, for a browser: a page in the shop's style instead of a JSON
//! problem. A path no module owns (404), the rate limit (429) and an unreachable
//! upstream (5xx) are answered by the edge, not by the storefront, and a module's own
//! problem on a path outside `/api/` (the ops routes, say) is no page either; a shopper
//! who meets one in the browser gets a page that says what happened and links back to
//! the shop. API clients (any `/api/` path, or not asking for HTML first) keep the
//! problem, marked `Vary: Accept`.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The shop's stylesheet (the storefront serves it; without the storefront the page
/// is plain but readable).
const STYLESHEET: &str = "/assets/shop.css";

/// As strict as the shop's pages: its stylesheet, nothing else.
const CSP: &str = "default-src 'none'; style-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Whether the request is a browser's navigation: HTML first in `Accept` (a
/// browser's page loads and form posts; its scripts' fetches ask for `*/*`).
fn asks_for_html(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.trim_start().starts_with("text/html"))
}

/// The edge's problem, as a page: the status's title and what to do.
fn page(status: StatusCode, retry_after: Option<&str>) -> String {
    let (title, detail) = match status {
        StatusCode::NOT_FOUND => (
            "Page not found",
            "There is no such page. It may have moved, or the link is mistyped.".to_owned(),
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "Slow down",
            format!(
                "Too many requests from your address. Wait {} seconds and try again.",
                retry_after.unwrap_or("a few")
            ),
        ),
        _ => (
            "Something went wrong",
            "The shop cannot answer right now. Please try again shortly.".to_owned(),
        ),
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · bazaar</title><link rel=\"stylesheet\" href=\"{STYLESHEET}\"></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\">bazaar</a></header>\
         <main id=\"main\"><h1>{title}</h1><p>{detail}</p>\
         <p><a href=\"/\">Back to the shop</a></p></main></body></html>"
    )
}

/// Replaces 404, 429 and 5xx problems (the edge's own, and a module's on a path
/// outside `/api/`) with a page, for browsers.
pub(crate) async fn as_pages(request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let wants_a_page = asks_for_html(&request);
    let mut response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem
        || !(status == StatusCode::NOT_FOUND
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error())
    {
        return response;
    }
    // From here the answer depends on `Accept`: a shared cache must keep both.
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    if !wants_a_page {
        return response;
    }
    // Only digits go into the page (the header is the edge's own, but still).
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned);
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (parts, page(status, retry_after.as_deref())).into_response()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use chassis::Problem;
    use tower::ServiceExt as _;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route("/limited", get(|| async { Problem::too_many_requests(7) }))
            .route("/api/v1/x", get(|| async { Problem::not_found("nope") }))
            .route("/fine", get(|| async { "fine" }))
            .fallback(|| async { Problem::not_found("no such route") })
            .layer(axum::middleware::from_fn(as_pages))
    }

    async fn send(path: &str, accept: &str) -> Response {
        app()
            .oneshot(
                Request::builder()
                    .uri(path)
                    .header(header::ACCEPT, accept)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
    }

    async fn get_with(path: &str, accept: &str) -> (StatusCode, String, String) {
        let response = send(path, accept).await;
        let status = response.status();
        let kind = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn vary_of(path: &str, accept: &str) -> String {
        let response = send(path, accept).await;
        response.headers()[header::VARY]
            .to_str()
            .unwrap()
            .to_owned()
    }

    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[tokio::test]
    async fn browsers_get_pages_and_api_clients_problems() {
        let (status, kind, body) = get_with("/nothing/here", BROWSER).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(vary_of("/nothing/here", "application/json").await, "accept");
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(body.contains("<h1>Page not found</h1>"), "{body}");

        let (status, _, body) = get_with("/limited", BROWSER).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("Wait 7 seconds"), "{body}");

        // The API, a script's fetch and a client asking for JSON keep the problem.
        for (path, accept) in [
            ("/api/v1/x", BROWSER),
            ("/nothing/here", "*/*"),
            ("/nothing/here", "application/json"),
        ] {
            let (_, kind, _) = get_with(path, accept).await;
            assert_eq!(kind, "application/problem+json", "{path} {accept}");
        }
        let (status, _, body) = get_with("/fine", BROWSER).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    }
}
