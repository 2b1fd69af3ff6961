//! `GET /api/v1/admin/bus`: this process's outboxes and consumers.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chassis_http::auth::{AdminUser, ApiState, Tokens};
use chassis_http::extract::Json;
use chassis_messaging::bus_health::{BusHealth, ConsumerBus, ModuleBus};
use serde::Serialize;

/// The admin path; the split gateway fans it out to every module.
pub const BUS: &str = "/api/v1/admin/bus";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BusReport {
    items: Vec<ModuleBus>,
}

/// Outbox backlog and age, and each consumer's lag, redeliveries and dead letters,
/// per module (split: the gateway asks every module).
#[utoipa::path(get, path = "/api/v1/admin/bus", tag = "ops",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The event bus of every module", body = BusReport)))]
async fn report(
    State(state): State<ApiState<BusHealth>>,
    AdminUser(_admin): AdminUser,
) -> Json<BusReport> {
    Json(BusReport {
        items: state.service.sample().await,
    })
}

pub fn router(health: BusHealth, tokens: Tokens) -> Router {
    Router::new().route(BUS, get(report)).with_state(ApiState {
        service: health,
        tokens,
    })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(report), components(schemas(BusReport, ModuleBus, ConsumerBus)))]
pub struct ApiDoc;
