//! The traces admin API at the edge: the edge's own spans and every module's,
//! gathered per trace.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::fan_out::{denied, gather, json_body, list_items};
use super::upstream::Proxy;

/// `GET /api/v1/admin/traces`: every process's recent traces, the edge's own
/// included, merged by trace (each process knows only its own spans of a trace).
pub(super) async fn traces_list(
    State(proxy): State<Arc<Proxy>>,
    chassis::extract::Query(params): chassis::extract::Query<chassis::admin::traces::ListParams>,
    request: Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(response) = require_admin(&proxy, &mut parts).await {
        return response;
    }
    let limit = match params.limit() {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    let answers = match gather(&proxy, &parts).await {
        Ok(answers) => answers,
        Err(response) => return response,
    };
    let mut lists = vec![chassis::traces::TraceBuffer::global().summaries(limit)];
    let mut unavailable_names = Vec::new();
    for (upstream, answer) in answers {
        match answer {
            Ok(response) if denied(response.status()) => return response,
            Ok(response) => match list_items(upstream, response).await {
                Some(items) => lists.push(
                    items
                        .into_iter()
                        .filter_map(|item| serde_json::from_value(item).ok())
                        .collect(),
                ),
                None => unavailable_names.push(upstream),
            },
            Err(_) => unavailable_names.push(upstream),
        }
    }
    let items = chassis::traces::merge_summaries(lists, limit);
    axum::Json(serde_json::json!({ "items": items, "unavailable": unavailable_names }))
        .into_response()
}

/// `GET /api/v1/admin/traces/{trace_id}`: the trace's spans from every process.
pub(super) async fn trace_one(
    State(proxy): State<Arc<Proxy>>,
    chassis::extract::Path(id): chassis::extract::Path<String>,
    request: Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(response) = require_admin(&proxy, &mut parts).await {
        return response;
    }
    let trace_id = match chassis::admin::traces::trace_id(&id) {
        Ok(trace_id) => trace_id,
        Err(problem) => return problem.into_response(),
    };
    let answers = match gather(&proxy, &parts).await {
        Ok(answers) => answers,
        Err(response) => return response,
    };
    let mut parts_found = vec![chassis::traces::TraceBuffer::global().trace(&trace_id)];
    let mut unavailable_names = Vec::new();
    for (upstream, answer) in answers {
        match answer {
            Ok(response) if denied(response.status()) => return response,
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {}
            Ok(response) => match json_body(upstream, response).await {
                Some(body) => parts_found.push(
                    body.get("spans")
                        .cloned()
                        .and_then(|spans| serde_json::from_value(spans).ok())
                        .unwrap_or_default(),
                ),
                None => unavailable_names.push(upstream),
            },
            Err(_) => unavailable_names.push(upstream),
        }
    }
    let spans = chassis::traces::merge_spans(parts_found);
    if spans.is_empty() {
        return chassis::admin::traces::not_found().into_response();
    }
    axum::Json(serde_json::json!({
        "trace_id": trace_id,
        "spans": spans,
        "unavailable": unavailable_names,
    }))
    .into_response()
}

/// The edge checks the caller itself before adding its own spans: with every module
/// down, no module would refuse a caller for it.
async fn require_admin(
    proxy: &Proxy,
    parts: &mut axum::http::request::Parts,
) -> Result<(), Response> {
    use axum::extract::FromRequestParts as _;
    chassis::auth::AdminUser::from_request_parts(parts, &proxy.tokens)
        .await
        .map(drop)
        .map_err(IntoResponse::into_response)
}
