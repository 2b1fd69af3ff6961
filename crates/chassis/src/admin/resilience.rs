//! `GET /api/v1/admin/resilience` (every dependency's breaker and bulkhead) and, when
//! enabled at start, the faults endpoints.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use chassis_core::validation::FieldError;
use chassis_http::auth::{AdminUser, ApiState, Tokens};
use chassis_http::extract::{Json, Path};
use chassis_http::problem::Problem;
use chassis_resilience::{DependencyStatus, Fault, Faults, Registry};
use serde::Serialize;

/// The admin paths; the split gateway fans them out to every module.
pub const RESILIENCE: &str = "/api/v1/admin/resilience";
pub const FAULTS: &str = "/api/v1/admin/faults";

/// What the routes read and change: every guarded dependency, and the faults.
#[derive(Clone, Debug)]
struct Guards {
    registry: Registry,
    faults: Faults,
}

type AdminState = ApiState<Guards>;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResilienceList {
    items: Vec<DependencyStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InjectedFault {
    /// `<dependency>.<method>`, `<dependency>` or `<METHOD> <route>`.
    target: String,
    #[serde(flatten)]
    fault: Fault,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FaultList {
    items: Vec<InjectedFault>,
}

/// Every guarded dependency of this process (of every process, through the split
/// gateway): breaker state, consecutive failures, calls in flight.
#[utoipa::path(get, path = "/api/v1/admin/resilience", tag = "ops",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The state of every dependency", body = ResilienceList)))]
async fn resilience(
    State(state): State<AdminState>,
    AdminUser(_admin): AdminUser,
) -> Json<ResilienceList> {
    Json(ResilienceList {
        items: state.service.registry.statuses(),
    })
}

/// The faults in force.
#[utoipa::path(get, path = "/api/v1/admin/faults", tag = "ops",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Injected faults", body = FaultList)))]
async fn list_faults(
    State(state): State<AdminState>,
    AdminUser(_admin): AdminUser,
) -> Json<FaultList> {
    Json(FaultList {
        items: state
            .service
            .faults
            .all()
            .into_iter()
            .map(|(target, fault)| InjectedFault { target, fault })
            .collect(),
    })
}

/// Injects (or replaces) the fault for a target.
#[utoipa::path(put, path = "/api/v1/admin/faults/{target}", tag = "ops",
    security(("bearer" = ["admin"])),
    params(("target" = String, Path, description = "`<dependency>.<method>`, `<dependency>` or `<METHOD> <route>`")),
    request_body = Fault,
    responses((status = 200, description = "The fault now in force", body = InjectedFault)))]
async fn put_fault(
    State(state): State<AdminState>,
    AdminUser(_admin): AdminUser,
    Path(target): Path<String>,
    Json(fault): Json<Fault>,
) -> Result<Json<InjectedFault>, Problem> {
    if let Some(problem) = fault.problem() {
        return Err(Problem::validation(vec![FieldError::new(
            "error_rate",
            problem,
        )]));
    }
    state.service.faults.set(target.clone(), fault.clone());
    tracing::warn!(target = %target, ?fault, "fault injected");
    Ok(Json(InjectedFault { target, fault }))
}

/// Removes a target's fault (204 whether or not there was one).
#[utoipa::path(delete, path = "/api/v1/admin/faults/{target}", tag = "ops",
    security(("bearer" = ["admin"])),
    params(("target" = String, Path, description = "The target to clear")),
    responses((status = 204, description = "No fault for the target any more")))]
async fn clear_fault(
    State(state): State<AdminState>,
    AdminUser(_admin): AdminUser,
    Path(target): Path<String>,
) -> StatusCode {
    if state.service.faults.clear(&target) {
        tracing::warn!(target = %target, "fault cleared");
    }
    StatusCode::NO_CONTENT
}

/// The resilience route, plus the faults routes when `fault_admin` is on.
pub fn router(registry: Registry, faults: Faults, tokens: Tokens, fault_admin: bool) -> Router {
    let mut router = Router::new().route(RESILIENCE, get(resilience));
    if fault_admin {
        router = router.route(FAULTS, get(list_faults)).route(
            &format!("{FAULTS}/{{target}}"),
            put(put_fault).delete(clear_fault),
        );
    }
    router.with_state(ApiState {
        service: Guards { registry, faults },
        tokens,
    })
}

/// The public document lists the resilience route only: the faults routes exist
/// only where `fault_admin` is on (see docs/operations.md).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(resilience),
    components(schemas(ResilienceList, DependencyStatus))
)]
pub struct ApiDoc;
