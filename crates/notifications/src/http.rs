//! notifications' public HTTP adapter: the admin list of sent emails.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chassis::auth::{AdminUser, ApiState, Tokens};
use chassis::extract::{Json, Query};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::Kind;
use crate::error::NotificationsError;
use crate::service::{Notification, NotificationPage, NotificationsService};

type AppState = ApiState<NotificationsService>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only emails about this order.
    #[param(max_length = 200)]
    order_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page, as returned (opaque; anything else is 400).
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// Emails sent, newest first (admin).
#[utoipa::path(get, path = "/api/v1/admin/notifications", tag = "notifications",
    params(ListQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "A page of sent emails", body = NotificationPage),
        (status = 400, description = "Malformed query or cursor", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` or `order_id` out of range", body = chassis::Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(query): Query<ListQuery>,
) -> Result<Json<NotificationPage>, NotificationsError> {
    Ok(Json(
        state
            .service
            .list(
                query.order_id.as_deref(),
                query.limit,
                query.cursor.as_deref(),
            )
            .await?,
    ))
}

/// notifications' public routes.
pub fn router(service: NotificationsService, tokens: Tokens) -> Router {
    Router::new()
        .route("/api/v1/admin/notifications", get(list))
        .with_state(AppState { service, tokens })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list), components(schemas(NotificationPage, Notification, Kind)))]
pub struct ApiDoc;
