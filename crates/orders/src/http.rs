//! orders' public HTTP adapter.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chassis::auth::{AdminUser, ApiState, AuthUser, Tokens};
use chassis::error::Violations;
use chassis::extract::{Json, Path, Query};
use chassis::{FieldError, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::Address;
use crate::error::OrdersError;
use crate::service::{
    EventView, LastEvent, MAX_QUANTITY, OrderView, OrdersService, PlaceOrder, SagaReport,
    StuckOrder, Wanted,
};

type AppState = ApiState<OrdersService>;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemRequest {
    product_id: String,
    #[schema(minimum = 1, maximum = 100)]
    #[serde(deserialize_with = "chassis::extract::integer")]
    quantity: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressRequest {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(min_length = 1, max_length = 200)]
    line1: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    line2: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    city: String,
    #[schema(min_length = 1, max_length = 20)]
    postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `US`.
    #[schema(schema_with = country_schema)]
    country: String,
}

/// The country as the schema says it: one of the officially assigned alpha-2 codes
/// the server accepts, so that no well-formed request is refused for `XX` or `us`.
fn country_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("ISO 3166-1 alpha-2, upper case, e.g. `US`."))
        .enum_values(Some(crate::country::CODES.iter().copied()))
        .examples(["US"])
        .build()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceOrderRequest {
    /// The lines to buy (1 to 100); omitted: the cart's.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100)]
    items: Option<Vec<ItemRequest>>,
    shipping_address: AddressRequest,
    /// A payment-method token (test cards: `tok_visa`, `tok_chargeDeclined`,
    /// `tok_timeout`).
    #[schema(min_length = 1, max_length = 200, example = "tok_visa")]
    payment_token: String,
}

fn text(v: &mut Violations, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min || n > max {
        v.push(field, format!("must be {min} to {max} characters"));
    }
}

impl PlaceOrderRequest {
    fn validate(self) -> Result<PlaceOrder, OrdersError> {
        let fingerprint = serde_json::to_string(&self).unwrap_or_default();
        let mut v = Violations::new();
        let a = &self.shipping_address;
        text(&mut v, "shipping_address.name", &a.name, 1, 100);
        text(&mut v, "shipping_address.line1", &a.line1, 1, 200);
        if let Some(line2) = &a.line2 {
            text(&mut v, "shipping_address.line2", line2, 0, 200);
        }
        text(&mut v, "shipping_address.city", &a.city, 1, 100);
        text(
            &mut v,
            "shipping_address.postal_code",
            &a.postal_code,
            1,
            20,
        );
        if !crate::country::is_alpha2(&a.country) {
            v.push(
                "shipping_address.country",
                "must be an ISO 3166-1 alpha-2 code such as US",
            );
        }
        text(&mut v, "payment_token", &self.payment_token, 1, 200);
        let items = self.items.map(|items| {
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let quantity = u32::try_from(item.quantity)
                        .ok()
                        .filter(|q| (1..=MAX_QUANTITY).contains(q));
                    if quantity.is_none() {
                        v.push(
                            &format!("items[{i}].quantity"),
                            format!("must be between 1 and {MAX_QUANTITY}"),
                        );
                    }
                    quantity.map(|quantity| Wanted {
                        product_id: item.product_id,
                        quantity,
                    })
                })
                .collect::<Vec<_>>()
        });
        v.finish().map_err(|p| OrdersError::Invalid(p.errors))?;
        let a = self.shipping_address;
        Ok(PlaceOrder {
            items,
            shipping_address: Address {
                name: a.name,
                line1: a.line1,
                line2: a.line2,
                city: a.city,
                postal_code: a.postal_code,
                country: a.country,
            },
            payment_token: self.payment_token,
            fingerprint,
        })
    }
}

/// The storefront's checkout (the cart's lines to `address`), validated exactly as
/// the public route validates its body, so its field errors name the same fields.
pub(crate) fn checkout_request(
    address: contracts::orders::ShippingAddress,
    payment_token: String,
) -> Result<PlaceOrder, OrdersError> {
    PlaceOrderRequest {
        items: None,
        shipping_address: AddressRequest {
            name: address.name,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            postal_code: address.postal_code,
            country: address.country,
        },
        payment_token,
    }
    .validate()
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
                .with_errors(vec![FieldError::new("Idempotency-Key", "invalid")])
        })?;
    Ok(Some(key.to_owned()))
}

/// Place an order: reserve, charge, confirm.
///
/// Answers 201 when the order reached a terminal state (`confirmed` or `failed`)
/// within a short wait, else 202 with `pending`; poll `GET /orders/{id}`. With an
/// `Idempotency-Key`, a repeat returns the first response.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    request_body = PlaceOrderRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: the first response is replayed",
        min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Order placed and terminal (confirmed or failed)", body = OrderView),
        (status = 202, description = "Order placed, still pending", body = OrderView),
        (status = 409, description = "A request with this Idempotency-Key is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = Problem, content_type = "application/problem+json")))]
async fn place(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Json(req): Json<PlaceOrderRequest>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let request = req.validate()?;
    let placed = state
        .service
        .place(&user.user_id, key.as_deref(), request)
        .await?;
    let status = StatusCode::from_u16(placed.status).unwrap_or(StatusCode::CREATED);
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        placed.body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page, as returned (opaque; anything else is 400).
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrderList {
    items: Vec<OrderView>,
    next_cursor: Option<String>,
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders", body = OrderList),
        (status = 422, description = "`limit` out of range", body = Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<ListQuery>,
) -> Result<Json<OrderList>, OrdersError> {
    let (items, next_cursor) = state
        .service
        .list(&user.user_id, query.limit, query.cursor.as_deref())
        .await?;
    Ok(Json(OrderList { items, next_cursor }))
}

/// One order (its owner or an admin).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "No such order (or not yours)", body = Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, OrdersError> {
    Ok(Json(state.service.get(&user, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// RFC 3339 time: only events up to then, and the state they gave.
    #[param(format = DateTime)]
    as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventList {
    items: Vec<EventView>,
    /// The order's status replayed from these events.
    status: String,
}

/// The order's event stream, in sequence order; `?as_of=` replays its state then.
#[utoipa::path(get, path = "/api/v1/orders/{id}/events", tag = "orders",
    params(("id" = String, Path, description = "Order id"), EventsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The events", body = EventList),
        (status = 404, description = "No such order (or not yours)", body = Problem, content_type = "application/problem+json")))]
async fn events(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventList>, Problem> {
    let as_of = match query.as_of.as_deref() {
        Some(raw) => Some(parse_time(raw).ok_or_else(|| {
            Problem::bad_request("`as_of` must be an RFC 3339 time, e.g. 2026-01-01T12:00:00Z")
        })?),
        None => None,
    };
    let (items, status) = state.service.events(&user, &id, as_of).await?;
    Ok(Json(EventList {
        items,
        status: status.to_owned(),
    }))
}

fn parse_time(raw: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

/// Cancel a confirmed order: the payment is refunded and the stock put back.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, cancelled (or cancelling)", body = OrderView),
        (status = 404, description = "No such order (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Only confirmed orders can be cancelled", body = Problem, content_type = "application/problem+json")))]
async fn cancel(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, OrdersError> {
    Ok(Json(state.service.cancel(&user, &id).await?))
}

/// The stuck threshold of `GET /admin/sagas` unless given.
const STUCK_AFTER_DEFAULT: u64 = 60;
/// Its largest accepted value: a week.
const STUCK_AFTER_MAX: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SagasQuery {
    /// An open saga with no event for this many seconds is listed as stuck (1 to
    /// 604800; default 60).
    #[param(minimum = 1, maximum = 604_800)]
    stuck_after_secs: Option<u64>,
}

/// Saga states: orders per status, open sagas per next step, and the stuck ones
/// (open, with no event for `stuck_after_secs`) with their last event.
#[utoipa::path(get, path = "/api/v1/admin/sagas", tag = "ops",
    params(SagasQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Saga states and stuck orders", body = SagaReport),
        (status = 400, description = "`stuck_after_secs` is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`stuck_after_secs` out of range", body = Problem, content_type = "application/problem+json")))]
async fn sagas(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(query): Query<SagasQuery>,
) -> Result<Json<SagaReport>, OrdersError> {
    let secs = query.stuck_after_secs.unwrap_or(STUCK_AFTER_DEFAULT);
    if !(1..=STUCK_AFTER_MAX).contains(&secs) {
        return Err(OrdersError::Invalid(vec![FieldError::new(
            "stuck_after_secs",
            format!("must be between 1 and {STUCK_AFTER_MAX}"),
        )]));
    }
    Ok(Json(
        state
            .service
            .sagas(std::time::Duration::from_secs(secs))
            .await?,
    ))
}

/// orders' public routes.
pub fn router(service: OrdersService, tokens: Tokens) -> Router {
    Router::new()
        .route("/api/v1/orders", post(place).get(list))
        .route("/api/v1/orders/{id}", get(get_one))
        .route("/api/v1/orders/{id}/events", get(events))
        .route("/api/v1/orders/{id}/cancel", post(cancel))
        .route("/api/v1/admin/sagas", get(sagas))
        .with_state(AppState { service, tokens })
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(place, list, get_one, events, cancel, sagas),
    components(schemas(
        PlaceOrderRequest,
        ItemRequest,
        AddressRequest,
        OrderView,
        OrderList,
        EventView,
        EventList,
        SagaReport,
        StuckOrder,
        LastEvent,
        crate::service::ItemView
    ))
)]
pub struct ApiDoc;
