//! catalog's public HTTP adapter.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use chassis::auth::{AdminUser, ApiState, Tokens};
use chassis::extract::{Json, Path, Query};
use contracts::catalog::Product;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::NewProduct;
use crate::error::CatalogFailure;
use crate::service::CatalogService;

type AppState = ApiState<CatalogService>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Case-insensitive text to find in names and descriptions.
    #[param(max_length = 200)]
    q: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page, as returned (opaque; anything else is 400).
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProductList {
    items: Vec<Product>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProduct {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$",
        example = "MUG-001"
    )]
    sku: String,
    #[schema(min_length = 1, max_length = 200, example = "Enamel Mug")]
    name: String,
    #[serde(default)]
    #[schema(max_length = 2000)]
    description: String,
    #[schema(minimum = 0, maximum = 1_000_000_000, example = 1299)]
    #[serde(deserialize_with = "chassis::extract::integer")]
    price_cents: i64,
    #[schema(pattern = "^USD$", example = "USD")]
    currency: String,
    #[schema(minimum = 0, maximum = 1_000_000, example = 25)]
    #[serde(deserialize_with = "chassis::extract::integer")]
    stock: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetStock {
    /// Units available to buy.
    #[schema(minimum = 0, maximum = 1_000_000)]
    #[serde(deserialize_with = "chassis::extract::integer")]
    stock: i64,
}

/// List products, optionally filtered, in pages.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of products", body = ProductList),
        (status = 422, description = "`limit` or `q` out of range", body = chassis::Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ProductList>, CatalogFailure> {
    let page = state
        .service
        .list(query.q.as_deref(), query.limit, query.cursor.as_deref())
        .await?;
    Ok(Json(ProductList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One product.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "No such product", body = chassis::Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Product>, CatalogFailure> {
    Ok(Json(state.service.get(&id).await?))
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog",
    request_body = CreateProduct,
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Created", body = Product),
        (status = 409, description = "SKU already exists", body = chassis::Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Json(req): Json<CreateProduct>,
) -> Result<(StatusCode, Json<Product>), CatalogFailure> {
    let product = NewProduct::parse(
        &req.sku,
        &req.name,
        &req.description,
        req.price_cents,
        &req.currency,
        req.stock,
    )
    .map_err(CatalogFailure::Invalid)?;
    Ok((
        StatusCode::CREATED,
        Json(state.service.create(product).await?),
    ))
}

/// Set a product's available stock (admin).
#[utoipa::path(put, path = "/api/v1/products/{id}/stock", tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    request_body = SetStock,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Updated product", body = Product),
        (status = 404, description = "No such product", body = chassis::Problem, content_type = "application/problem+json")))]
async fn set_stock(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
    Json(req): Json<SetStock>,
) -> Result<Json<Product>, CatalogFailure> {
    Ok(Json(state.service.set_stock(&id, req.stock).await?))
}

/// catalog's public routes.
pub fn router(service: CatalogService, tokens: Tokens) -> Router {
    Router::new()
        .route("/api/v1/products", get(list).post(create))
        .route("/api/v1/products/{id}", get(get_one))
        .route("/api/v1/products/{id}/stock", put(set_stock))
        .with_state(AppState { service, tokens })
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, get_one, create, set_stock),
    components(schemas(Product, ProductList, CreateProduct, SetStock))
)]
pub struct ApiDoc;
