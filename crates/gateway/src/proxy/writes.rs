//! Fan-out writes: `PUT`/`DELETE` of one target below a prefix, applied on every
//! module or reported as failed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chassis::Problem;
use http_body_util::LengthLimitError;

use super::upstream::{Proxy, caused_by, peer, target, unavailable};

/// What one upstream made of a fanned-out write.
enum WriteOutcome {
    /// 2xx: applied there.
    Applied(Response),
    /// 404: the route does not exist there (e.g. fault admin off); nothing to apply.
    Absent,
    /// Another 4xx: that upstream judged the request itself (identity, body) and
    /// applied nothing.
    Refused(Response),
    /// Unreachable, or an answer that says nothing about whether it applied (5xx,
    /// anything else): why, for the problem's detail.
    Failed(String),
}

/// A fan-out write (`PUT`/`DELETE` of `prefix/{target}`): the same request, body
/// included, sent to every replica of every distinct upstream at once (what it
/// writes, an injected fault, lives in each process).
///
/// - every upstream that has the route applied it (2xx, 404s skipped): the first 2xx
///   answer in route order, passed on as it came;
/// - every upstream answered 404: the common 404 problem;
/// - nothing applied and no upstream failed, all refusing with one 4xx status (a bad
///   identity or body, judged alike by every module): the first refusal, as the GET
///   fan-out passes on a 401;
/// - otherwise (an upstream unreachable, a 5xx, or answers that disagree): 502
///   problem+json naming the upstreams that did not apply it, also listed in `failed`
///   (and those that did in `applied`), so a partial apply never looks like success.
///
/// The target segment is sent on byte for byte, percent-encoded slashes included,
/// where [`forward`](super::forward::forward) refuses them: there a path chooses the upstream and the route
/// within it, and an upstream (or anything between) that decoded `%2F` could see a
/// path the gateway never agreed to forward. Here the path chooses nothing: the
/// upstreams are every configured one, and the path is the fixed, configured prefix
/// and one opaque segment (a route template like `GET /api/v1/products/{id}` needs
/// its slashes). What could still move a decoding upstream out of the prefix, a `.`
/// or `..` segment, literal or once decoded, is refused (404).
pub(super) async fn fan_out_write(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match fan_out_write_inner(&proxy, request).await {
        Ok(response) | Err(response) => response,
    }
}

async fn fan_out_write_inner(proxy: &Proxy, request: Request) -> Result<Response, Response> {
    let (parts, body) = request.into_parts();
    let segment = parts.uri.path().rsplit('/').next().unwrap_or_default();
    if leaves_its_segment(segment) {
        return Err(Problem::not_found("no such route").into_response());
    }
    let headers = proxy
        .upstream_headers(&parts.headers, peer(&parts.extensions))
        .map_err(IntoResponse::into_response)?;
    // Read once, sent to every upstream: the edge's body limit applies.
    let body = axum::body::to_bytes(body, chassis::http::BODY_LIMIT_BYTES)
        .await
        .map_err(|error| {
            if caused_by::<LengthLimitError>(&error) {
                Problem::payload_too_large(chassis::http::BODY_LIMIT_BYTES).into_response()
            } else {
                Problem::bad_request("the request body could not be read").into_response()
            }
        })?;

    let targets = proxy.every_replica();
    let calls = targets.iter().map(|(upstream, replica)| {
        let mut headers = headers.clone();
        // The client's framing is not ours: the client sets the length of the bytes.
        headers.remove(header::CONTENT_LENGTH);
        let body = body.clone();
        let method = parts.method.clone();
        let uri = &parts.uri;
        async move {
            let Some(replica) = replica else {
                return (*upstream, Err(unavailable(upstream.name)));
            };
            let uri = match target(replica.base(), uri) {
                Ok(uri) => uri,
                Err(problem) => return (*upstream, Err(problem)),
            };
            let mut outgoing = Request::new(Body::from(body));
            *outgoing.method_mut() = method;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            (*upstream, proxy.send(upstream, replica, outgoing).await)
        }
    });
    let outcomes: Vec<(&'static str, WriteOutcome)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(upstream, answer)| {
            let outcome = match answer {
                Err(problem) if problem.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    WriteOutcome::Failed("unreachable".to_owned())
                }
                Err(_) => WriteOutcome::Failed("no proper answer".to_owned()),
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        WriteOutcome::Applied(response)
                    } else if status == StatusCode::NOT_FOUND {
                        WriteOutcome::Absent
                    } else if status.is_client_error() {
                        WriteOutcome::Refused(response)
                    } else {
                        tracing::warn!(upstream = upstream.name, %status, "fan-out write: upstream answered with an error");
                        WriteOutcome::Failed(format!("answered {}", status.as_u16()))
                    }
                }
            };
            (upstream.name, outcome)
        })
        .collect();
    Ok(write_answer(outcomes))
}

/// The client's answer to a fanned-out write (see [`fan_out_write`]).
fn write_answer(outcomes: Vec<(&'static str, WriteOutcome)>) -> Response {
    // One outcome per replica: a module is named once.
    let mut applied: Vec<&'static str> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, WriteOutcome::Applied(_)))
        .map(|(name, _)| *name)
        .collect();
    applied.dedup();
    let failed_outright = outcomes
        .iter()
        .any(|(_, o)| matches!(o, WriteOutcome::Failed(_)));
    let refusals: Vec<StatusCode> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            WriteOutcome::Refused(response) => Some(response.status()),
            _ => None,
        })
        .collect();
    let unanimous_refusal =
        applied.is_empty() && !failed_outright && refusals.windows(2).all(|w| w[0] == w[1]);

    let mut failed: Vec<&'static str> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut first_applied = None;
    let mut first_refused = None;
    for (name, outcome) in outcomes {
        match outcome {
            WriteOutcome::Applied(response) => {
                first_applied.get_or_insert(response);
            }
            WriteOutcome::Absent => {}
            WriteOutcome::Refused(response) => {
                failed.push(name);
                reasons.push(format!("{name} answered {}", response.status().as_u16()));
                first_refused.get_or_insert(response);
            }
            WriteOutcome::Failed(reason) => {
                failed.push(name);
                reasons.push(format!("{name} {reason}"));
            }
        }
    }
    if let Some(refusal) = first_refused.filter(|_| unanimous_refusal) {
        return refusal;
    }
    failed.dedup();
    if !failed.is_empty() {
        tracing::warn!(?failed, ?applied, "fan-out write not applied everywhere");
        let mut detail = format!("not applied on every module: {}", reasons.join(", "));
        if !applied.is_empty() {
            detail = format!("{detail}; applied on {}", applied.join(", "));
        }
        let problem =
            Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway").with_detail(detail);
        let mut body = serde_json::to_value(&problem).unwrap_or_default();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("failed".to_owned(), serde_json::json!(failed));
            fields.insert("applied".to_owned(), serde_json::json!(applied));
        }
        return (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, chassis::error::PROBLEM_JSON)],
            body.to_string(),
        )
            .into_response();
    }
    first_applied.unwrap_or_else(|| Problem::not_found("no such route").into_response())
}

/// Whether one raw path segment is, or once percent-decoded holds, a `.` or `..`
/// segment (split at decoded slashes and backslashes too): what an upstream that
/// decodes and normalises could resolve to a path outside the segment's prefix.
fn leaves_its_segment(segment: &str) -> bool {
    let decoded = segment
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "\\");
    decoded
        .split(['/', '\\'])
        .any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_targets_may_hold_encoded_slashes_but_no_dot_segment() {
        assert!(!leaves_its_segment(
            "GET%20%2Fapi%2Fv1%2Fproducts%2F%7Bid%7D"
        ));
        assert!(!leaves_its_segment("payments.charge"));
        assert!(!leaves_its_segment("a..b%2F...%2F.c"));
        for target in [
            "..",
            ".",
            "%2E%2e",
            "x%2F..%2Finternal",
            "a%5C..",
            "x%2f%2e",
        ] {
            assert!(leaves_its_segment(target), "{target}");
        }
    }
}
