//! `GET /api/v1/admin/traces[/{trace_id}]`: this process's trace buffer
//! ([`TraceBuffer`]).

use axum::Router;
use axum::routing::get;
use serde::Deserialize;

use chassis_http::auth::{AdminUser, Tokens};
use chassis_http::extract::{Json, Path, Query};
use chassis_http::problem::Problem;
use chassis_telemetry::traces::{
    SpanLink, SpanRecord, Trace, TraceBuffer, TraceList, TraceSummary,
};

pub const TRACES: &str = "/api/v1/admin/traces";
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many traces, newest first (1..=500, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

impl ListParams {
    /// The validated limit: 400 problem for anything but 1..=500.
    pub fn limit(&self) -> Result<usize, Problem> {
        match self.limit.as_deref() {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}"
                    ))
                }),
        }
    }
}

/// 400 problem unless `id` is 32 hex digits (the all-zero id, invalid in W3C, is
/// simply never held: 404).
pub fn trace_id(id: &str) -> Result<String, Problem> {
    let id = id.to_ascii_lowercase();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(Problem::bad_request(
            "a trace id is 32 hexadecimal digits, not all zero",
        ))
    }
}

/// Recent traces this process took part in, newest first.
#[utoipa::path(get, path = "/api/v1/admin/traces", tag = "ops",
    params(ListParams),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Recent traces, newest first", body = TraceList),
        (status = 400, description = "Bad limit", body = Problem, content_type = "application/problem+json")))]
async fn list(
    AdminUser(_admin): AdminUser,
    Query(params): Query<ListParams>,
) -> Result<Json<TraceList>, Problem> {
    let limit = params.limit()?;
    Ok(Json(TraceList {
        items: TraceBuffer::global().summaries(limit),
    }))
}

/// Every span of one trace this process holds.
#[utoipa::path(get, path = "/api/v1/admin/traces/{trace_id}", tag = "ops",
    params(("trace_id" = String, Path, description = "W3C trace id, 32 hex digits", pattern = "^[0-9a-fA-F]{32}$")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The trace's spans by start time", body = Trace),
        (status = 400, description = "Not a trace id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No span of it is held", body = Problem, content_type = "application/problem+json")))]
async fn one(AdminUser(_admin): AdminUser, Path(id): Path<String>) -> Result<Json<Trace>, Problem> {
    let trace_id = trace_id(&id)?;
    let spans = TraceBuffer::global().trace(&trace_id);
    if spans.is_empty() {
        return Err(not_found());
    }
    Ok(Json(Trace { trace_id, spans }))
}

pub fn not_found() -> Problem {
    Problem::not_found("no span of this trace is held (it may have been evicted)")
}

pub fn router(tokens: Tokens) -> Router {
    Router::new()
        .route(TRACES, get(list))
        .route(&format!("{TRACES}/{{trace_id}}"), get(one))
        .with_state(tokens)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, one),
    components(schemas(TraceList, Trace, TraceSummary, SpanRecord, SpanLink))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    #[test]
    fn trace_ids_are_validated() {
        assert_eq!(
            super::trace_id("4BF92F3577B34DA6A3CE929D0E0E4736")
                .ok()
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(super::trace_id("4bf92f35").is_err());
    }
}
