//! `GET /api/v1/admin/dead-letters`: the dead letters of every store given.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chassis_http::auth::{AdminUser, ApiState, Tokens};
use chassis_http::extract::Json;
use chassis_http::problem::Problem;
use chassis_messaging::dead_letters::{DeadLetter, dead_letters};
use chassis_store::store::Store;
use serde::Serialize;

/// The admin path; the split gateway fans it out to every module.
pub const DEAD_LETTERS: &str = "/api/v1/admin/dead-letters";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    items: Vec<DeadLetter>,
}

/// Events consumers gave up on after their retries, newest first.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters", tag = "ops",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Dead letters of every module", body = DeadLetterList)))]
async fn list(
    State(state): State<ApiState<Vec<Store>>>,
    AdminUser(_admin): AdminUser,
) -> Result<Json<DeadLetterList>, Problem> {
    let mut items = Vec::new();
    for store in &state.service {
        items.extend(
            dead_letters(store.pool())
                .await
                .map_err(|e| Problem::internal(&e))?,
        );
    }
    items.sort_by(|a, b| b.failed_at.cmp(&a.failed_at));
    Ok(Json(DeadLetterList { items }))
}

pub fn router(stores: Vec<Store>, tokens: Tokens) -> Router {
    Router::new()
        .route(DEAD_LETTERS, get(list))
        .with_state(ApiState {
            service: stores,
            tokens,
        })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list), components(schemas(DeadLetterList, DeadLetter)))]
pub struct ApiDoc;
