//! Fan-out reads: admin lists every module process keeps for its own state (dead
//! letters, dependencies, injected faults), asked of every upstream and merged.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chassis::Problem;
use chassis::error::chain;

use super::upstream::{Proxy, peer, target, unavailable};

/// Largest body one upstream may answer a fan-out with (1,000 dead letters with their
/// envelopes fit many times over); beyond it that upstream counts as unavailable.
const FAN_OUT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A fan-out path: every distinct upstream is asked the same GET and the `items` of
/// their lists merged, newest `failed_at` first, each item carrying the `service` that
/// listed it (unless it names one itself). An upstream that cannot be reached or
/// answers badly is named in `unavailable`; one answering 404 serves none and is
/// skipped; a 401/403 (every service checks the same identity) is the answer. 503 when
/// no upstream answered at all.
pub(super) async fn fan_out(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    // Only the head is needed, and a body is not `Sync` to borrow across the calls.
    let (parts, _) = request.into_parts();
    match fan_out_inner(&proxy, &parts).await {
        Ok(response) | Err(response) => response,
    }
}

/// Every replica's answer to the same GET (the request's own path and query, the
/// caller's identity forwarded), by upstream name: each replica keeps its own state,
/// so asking one per module would miss the others'.
pub(super) async fn gather(
    proxy: &Proxy,
    request: &axum::http::request::Parts,
) -> Result<Vec<(&'static str, Result<Response, Problem>)>, Response> {
    let headers = proxy
        .upstream_headers(&request.headers, peer(&request.extensions))
        .map_err(IntoResponse::into_response)?;
    let targets = proxy.every_replica();
    let calls = targets.iter().map(|(upstream, replica)| {
        let headers = headers.clone();
        async move {
            let Some(replica) = replica else {
                return (upstream.name, Err(unavailable(upstream.name)));
            };
            let uri = match target(replica.base(), &request.uri) {
                Ok(uri) => uri,
                Err(problem) => return (upstream.name, Err(problem)),
            };
            let mut outgoing = Request::new(Body::empty());
            *outgoing.method_mut() = Method::GET;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            outgoing.headers_mut().remove(header::CONTENT_LENGTH);
            (upstream.name, proxy.send(upstream, replica, outgoing).await)
        }
    });
    Ok(futures::future::join_all(calls).await)
}

async fn fan_out_inner(
    proxy: &Proxy,
    request: &axum::http::request::Parts,
) -> Result<Response, Response> {
    let answers = gather(proxy, request).await?;

    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut unavailable_names: Vec<&'static str> = Vec::new();
    let mut answered = 0_usize;
    for (upstream, answer) in answers {
        let Ok(response) = answer else {
            unavailable_names.push(upstream);
            continue;
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(response);
        }
        if status == StatusCode::NOT_FOUND {
            answered += 1;
            continue;
        }
        match list_items(upstream, response).await {
            Some(list) => {
                answered += 1;
                // Several modules list the same names (cart and orders each guard
                // their own `catalog` dependency): say whose each item is.
                items.extend(list.into_iter().map(|mut item| {
                    if let Some(object) = item.as_object_mut() {
                        object
                            .entry("service")
                            .or_insert_with(|| serde_json::Value::from(upstream));
                    }
                    item
                }));
            }
            None => unavailable_names.push(upstream),
        }
    }
    // Replicas of one module share its store: what it keeps there (dead letters,
    // outbox backlogs) comes back once per replica, and is listed once.
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.to_string()));
    unavailable_names.sort_unstable();
    unavailable_names.dedup();
    if answered == 0 && !unavailable_names.is_empty() {
        return Err(Problem::unavailable(format!(
            "no module answered: {}",
            unavailable_names.join(", ")
        ))
        .into_response());
    }
    items.sort_by(|a, b| {
        let at = |v: &serde_json::Value| {
            v.get("failed_at")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        };
        at(b).cmp(&at(a))
    });
    Ok(
        axum::Json(serde_json::json!({ "items": items, "unavailable": unavailable_names }))
            .into_response(),
    )
}

/// The `items` of one upstream's successful list answer; `None` (logged) otherwise.
pub(super) async fn list_items(
    name: &'static str,
    response: Response,
) -> Option<Vec<serde_json::Value>> {
    let mut value = json_body(name, response).await?;
    if let Some(serde_json::Value::Array(items)) =
        value.get_mut("items").map(serde_json::Value::take)
    {
        Some(items)
    } else {
        tracing::warn!(
            upstream = name,
            "fan-out: the upstream's answer has no items array"
        );
        None
    }
}

/// One upstream's successful JSON answer; `None` (logged) otherwise.
pub(super) async fn json_body(name: &'static str, response: Response) -> Option<serde_json::Value> {
    let status = response.status();
    if !status.is_success() {
        tracing::warn!(upstream = name, %status, "fan-out: upstream answered with an error");
        return None;
    }
    let bytes = match axum::body::to_bytes(response.into_body(), FAN_OUT_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(upstream = name, error = %chain(&error), "fan-out: cannot read the upstream's answer");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(upstream = name, error = %error, "fan-out: the upstream's answer is not JSON");
            None
        }
    }
}

/// Every service checks the same forwarded identity: its refusal is the answer.
pub(super) fn denied(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}
