//! Identity forwarding: what an upstream is told about the request besides the
//! request itself. The caller's bearer token is judged here, once, and replaced by a
//! short-lived identity signed with the service secret (or the reason it was refused);
//! the trace context, the time left and the forwarding chain travel along.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use chassis::Problem;
use chassis::auth::{IDENTITY_HEADER, IDENTITY_REFUSED_HEADER, ServiceKeys, Tokens};

use super::hop::{connection_listed, is_hop_by_hop};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The headers to send upstream: the client's minus hop-by-hop ones and anything
/// only the gateway may say, plus the caller's identity and the request's
/// context (trace, deadline, forwarding chain). A bad bearer is judged here and the
/// verdict forwarded.
pub(super) fn forwarded_headers(
    tokens: &Tokens,
    keys: &ServiceKeys,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<HeaderMap, Problem> {
    let mut out = HeaderMap::with_capacity(headers.len() + 3);
    let listed = connection_listed(headers);
    for (name, value) in headers {
        if is_hop_by_hop(name)
            || listed.contains(name)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || name == IDENTITY_HEADER
            || name == IDENTITY_REFUSED_HEADER
            || name == X_FORWARDED_FOR
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }

    if headers.contains_key(header::AUTHORIZATION) {
        match tokens.principal(headers) {
            Ok(principal) => {
                let identity = keys
                    .forward_identity(&principal)
                    .map_err(|e| Problem::internal(&e))?;
                let value = HeaderValue::from_str(&identity).map_err(|e| Problem::internal(&e))?;
                out.insert(IDENTITY_HEADER, value);
            }
            // Refused here, once; the service decides whether the route needed a
            // caller (public reads do not), as the monolith does.
            Err(refusal) => {
                out.insert(
                    IDENTITY_REFUSED_HEADER,
                    HeaderValue::from_static(refusal.code()),
                );
            }
        }
    }

    // Our span continues the client's trace; without telemetry installed the
    // client's own traceparent (already copied) is the best we have.
    if let Some(value) =
        chassis::telemetry::current_traceparent().and_then(|tp| HeaderValue::from_str(&tp).ok())
    {
        out.insert(TRACEPARENT, value);
    }
    // The outer layers already shortened the budget to the client's; what is left
    // of it is the upstream's.
    if let Some(left) = chassis::deadline::remaining() {
        out.insert(
            chassis::deadline::HEADER,
            chassis::deadline::header_value(left),
        );
    }

    let mut hops: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let peer = peer.map(|ip| ip.to_string());
    if let Some(peer) = &peer {
        hops.push(peer);
    }
    if !hops.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&hops.join(", ")) {
            out.insert(X_FORWARDED_FOR, value);
        }
    }
    Ok(out)
}
