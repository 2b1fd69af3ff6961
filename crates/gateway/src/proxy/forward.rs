//! Forwarding: a public request to the upstream owning its path, bodies streamed
//! both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
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

    // The edge's body limit, also for chunked bodies nothing else reads here.
    let body = Body::new(Limited::new(body, chassis::http::BODY_LIMIT_BYTES));
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    proxy.send(upstream, &replica, outgoing).await
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
