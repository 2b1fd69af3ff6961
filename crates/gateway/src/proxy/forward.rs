//! Forwarding: a public request to the upstream owning its path, bodies streamed
//! both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chassis::Problem;
use http_body_util::Limited;

use super::upstream::{Proxy, peer};

/// The proxy's handler: every configured prefix lands here.
pub(super) async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match forward_inner(&proxy, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn forward_inner(proxy: &Proxy, request: Request) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if has_dot_segment(path) {
        return Err(Problem::not_found("no such route"));
    }
    let upstream = proxy
        .route_for(path)
        .ok_or_else(|| Problem::not_found("no such route"))?;
    let headers = proxy.upstream_headers(&parts.headers, peer(&parts.extensions))?;
    let (replica, uri) = upstream.target(&parts.uri)?;
    // Without a body the request can be sent again: one that found its replica gone
    // (no connection, so nothing reached it) goes to another one, once.
    let bodyless = !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0");
    let again = bodyless.then(|| (parts.method.clone(), headers.clone()));

    // The edge's body limit, also for chunked bodies nothing else reads here.
    let body = Body::new(Limited::new(body, chassis::http::BODY_LIMIT_BYTES));
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    let answer = proxy.send(upstream, &replica, outgoing).await;
    match (answer, again) {
        (Err(problem), Some((method, headers)))
            if problem.status() == StatusCode::SERVICE_UNAVAILABLE
                && upstream
                    .replicas
                    .as_ref()
                    .is_some_and(|r| r.replicas().len() > 1) =>
        {
            let (replica, uri) = upstream.target(&parts.uri)?;
            let mut outgoing = Request::new(Body::empty());
            *outgoing.method_mut() = method;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            proxy.send(upstream, &replica, outgoing).await
        }
        (answer, _) => answer,
    }
}

/// `.` or `..` segments, literal or percent-encoded, or an encoded slash or backslash:
/// an upstream (or anything between) that decodes or normalises them would see a
/// different path from the one routed here.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        lower.contains("%2f")
            || lower.contains("%5c")
            || matches!(lower.replace("%2e", ".").as_str(), "." | "..")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        assert!(has_dot_segment("/api/v1/products/../../internal/v1"));
        assert!(has_dot_segment("/api/v1/products/%2E%2e/x"));
        assert!(has_dot_segment("/api/v1/products/./x"));
        assert!(has_dot_segment("/api/v1/products/a%2Fb"));
        assert!(!has_dot_segment("/api/v1/products/p.1..2"));
        assert!(!has_dot_segment("/api/v1/products"));
    }
}
