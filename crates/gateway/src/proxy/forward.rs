//! Forwarding: a public request to the upstream owning its path, bodies streamed
//! both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chassis::Problem;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

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
    // A request that found its replica gone (no connection: nothing reached it) goes
    // to another one, once, whatever its method. That needs its body again: a small
    // one of declared length (every JSON write of the API) is read first and kept;
    // a large or chunked one streams through and is not resent.
    let resendable = if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        None
    } else {
        match parts
            .headers
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|v| v.parse::<usize>().ok()))
        {
            // HTTP/1.1 without either header has no body; HTTP/2 may still have one.
            None if parts.version < axum::http::Version::HTTP_2 => Some(0),
            Some(Some(length)) if length <= RESEND_BODY_LIMIT => Some(length),
            // A large, unparsable or (HTTP/2) undeclared length streams through.
            None | Some(_) => None,
        }
    };
    // The edge's body limit, also for chunked bodies nothing else reads here.
    let body = Body::new(Limited::new(body, chassis::http::BODY_LIMIT_BYTES));
    let (body, again) = match resendable {
        Some(length) => {
            let bytes = read_small_body(body, length).await?;
            (
                Body::from(bytes.clone()),
                Some((parts.method.clone(), headers.clone(), bytes)),
            )
        }
        None => (body, None),
    };
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    let answer = proxy.send(upstream, &replica, outgoing).await;
    match (answer, again) {
        // `send` answers 503 only when no connection could be made.
        (Err(problem), Some((method, headers, bytes)))
            if problem.status() == StatusCode::SERVICE_UNAVAILABLE
                && upstream
                    .replicas
                    .as_ref()
                    .is_some_and(|r| r.replicas().len() > 1) =>
        {
            let (replica, uri) = upstream.target(&parts.uri)?;
            let mut outgoing = Request::new(Body::from(bytes));
            *outgoing.method_mut() = method;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            proxy.send(upstream, &replica, outgoing).await
        }
        (answer, _) => answer,
    }
}

/// The largest body the gateway keeps to resend to another replica (the API's JSON
/// bodies are far smaller; uploads beyond stream through).
const RESEND_BODY_LIMIT: usize = 64 * 1024;

/// Reads a body of declared `length` (at most [`RESEND_BODY_LIMIT`]) whole.
async fn read_small_body(body: Body, length: usize) -> Result<Bytes, Problem> {
    let bytes = Limited::new(body, length)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<LengthLimitError>() {
                Problem::bad_request("the body is longer than its Content-Length")
            } else {
                Problem::bad_request("the request body could not be read")
            }
        })?
        .to_bytes();
    Ok(bytes)
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
