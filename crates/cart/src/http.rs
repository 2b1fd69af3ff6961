//! cart's public HTTP adapter.

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, post};
use chassis::auth::{ApiState, AuthUser, Tokens};
use chassis::extract::{Json, Path};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::CartError;
use crate::service::{Cart, CartLine, CartService};

type AppState = ApiState<CartService>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddItem {
    product_id: String,
    /// Units to add; the line may hold at most 100.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(deserialize_with = "chassis::extract::integer")]
    quantity: i64,
}

/// The caller's cart with current prices.
#[utoipa::path(get, path = "/api/v1/cart", tag = "cart",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart", body = Cart),
        (status = 503, description = "The catalog is unavailable", body = chassis::Problem, content_type = "application/problem+json")))]
async fn show(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Cart>, CartError> {
    Ok(Json(state.service.get(&user.user_id).await?))
}

/// Add units of a product (adds to an existing line).
#[utoipa::path(post, path = "/api/v1/cart/items", tag = "cart",
    request_body = AddItem,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated cart", body = Cart),
        (status = 404, description = "No such product", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog is unavailable", body = chassis::Problem, content_type = "application/problem+json")))]
async fn add(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Json(req): Json<AddItem>,
) -> Result<Json<Cart>, CartError> {
    Ok(Json(
        state
            .service
            .add(&user.user_id, &req.product_id, req.quantity)
            .await?,
    ))
}

/// Remove a product's line from the cart.
#[utoipa::path(delete, path = "/api/v1/cart/items/{product_id}", tag = "cart",
    params(("product_id" = String, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated cart", body = Cart),
        (status = 503, description = "The catalog is unavailable", body = chassis::Problem, content_type = "application/problem+json")))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(product_id): Path<String>,
) -> Result<Json<Cart>, CartError> {
    Ok(Json(
        state.service.remove(&user.user_id, &product_id).await?,
    ))
}

/// cart's public routes.
pub fn router(service: CartService, tokens: Tokens) -> Router {
    Router::new()
        .route("/api/v1/cart", get(show))
        .route("/api/v1/cart/items", post(add))
        .route("/api/v1/cart/items/{product_id}", delete(remove))
        .with_state(AppState { service, tokens })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(show, add, remove), components(schemas(Cart, CartLine, AddItem)))]
pub struct ApiDoc;
