//! analytics' public HTTP adapter: the admin sales report.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chassis::auth::{AdminUser, ApiState, Tokens};
use chassis::extract::Json;

use crate::error::AnalyticsError;
use crate::service::{AnalyticsService, MinuteSales, ProductSales, SalesReport};

type AppState = ApiState<AnalyticsService>;

/// Sales aggregates (admin): confirmations, revenue, cancellations, failures, per
/// product and per minute.
#[utoipa::path(get, path = "/api/v1/admin/analytics/sales", tag = "analytics",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The sales report", body = SalesReport),
        (status = 401, description = "No or invalid token", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = chassis::Problem, content_type = "application/problem+json")))]
async fn sales(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> Result<Json<SalesReport>, AnalyticsError> {
    Ok(Json(state.service.sales().await?))
}

/// analytics' public routes.
pub fn router(service: AnalyticsService, tokens: Tokens) -> Router {
    Router::new()
        .route("/api/v1/admin/analytics/sales", get(sales))
        .with_state(AppState { service, tokens })
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(sales),
    components(schemas(SalesReport, ProductSales, MinuteSales))
)]
pub struct ApiDoc;
