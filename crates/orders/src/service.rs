//! orders' use cases: place (with Idempotency-Key), read, list, events, cancel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chassis::FieldError;
use chassis::auth::{Principal, Role};
use chassis::idempotency::{self, Begin};
use contracts::cart::CartApi;
use contracts::catalog::CatalogApi;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Address, Command, Line, Order, Status, Step, decide, next_step, replay};
use crate::error::OrdersError;
use crate::saga::Saga;
use crate::store::{AppendError, SqlOrders, Summary};

/// Lines and quantities one order may hold.
pub(crate) const MAX_LINES: usize = 100;
pub(crate) const MAX_QUANTITY: u32 = 100;
/// A client's Idempotency-Key claim held by a crashed process is taken over after this.
const KEY_LEASE: Duration = Duration::from_secs(60);

// One line of an order as the API shows it (a plain comment: the OpenAPI document
// keeps the schema `Line` as it was).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Line)]
pub struct ItemView {
    pub product_id: String,
    pub quantity: u32,
    /// Unit price when the order was placed.
    pub price_cents: i64,
}

impl From<Line> for ItemView {
    fn from(line: Line) -> Self {
        Self {
            product_id: line.product_id,
            quantity: line.quantity,
            price_cents: line.price_cents,
        }
    }
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: String,
    /// `pending`, `confirmed`, `failed` or `cancelled`.
    pub status: String,
    pub items: Vec<ItemView>,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

impl From<Summary> for OrderView {
    fn from(s: Summary) -> Self {
        Self {
            id: s.id,
            status: s.status.as_str().to_owned(),
            items: s.lines.into_iter().map(ItemView::from).collect(),
            total_cents: s.total_cents,
            currency: s.currency,
            created_at: chassis::time::micros_to_rfc3339(s.created_at),
            updated_at: chassis::time::micros_to_rfc3339(s.updated_at),
            failure_reason: s.failure_reason,
        }
    }
}

/// One stored event as `GET /orders/{id}/events` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub sequence: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Open sagas `GET /admin/sagas` examines for their next step, least recently
/// touched first: normally a handful, and a bound keeps a backlog from costing more.
const SAGAS_EXAMINED: i64 = 500;
/// Stuck orders listed at most.
const STUCK_LISTED: usize = 100;

/// The saga states of every order, and the open ones that stopped moving.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaReport {
    /// Orders per status (`pending`, `confirmed`, `failed`, `cancelled`; zeros included).
    pub by_status: BTreeMap<String, i64>,
    /// Orders whose saga has work left: pending, or confirmed with a cancellation
    /// under way.
    pub open: i64,
    /// The examined open sagas per next step (`reserve`, `charge`, `release`, `commit`,
    /// `refund`, `restock`; zeros included).
    pub by_step: BTreeMap<String, i64>,
    /// How many open sagas were examined for `by_step` and `stuck` (the least recently
    /// touched, at most 500).
    pub examined: i64,
    /// The threshold used: an open saga with no event for this long is stuck.
    pub stuck_after_secs: u64,
    /// Stuck orders, longest idle first (at most 100).
    pub stuck: Vec<StuckOrder>,
}

/// An order whose saga has work left but recorded nothing for a while.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StuckOrder {
    pub id: String,
    pub status: String,
    /// What the saga must do next.
    pub step: Option<String>,
    pub placed_at: String,
    /// Seconds since the order was placed.
    pub age_secs: f64,
    /// Seconds since its last event.
    pub idle_secs: f64,
    pub last_event: Option<LastEvent>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastEvent {
    pub sequence: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: String,
}

/// A requested line before prices are known.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub product_id: String,
    pub quantity: u32,
}

/// A validated `POST /orders`.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// `None`: take the cart.
    pub items: Option<Vec<Wanted>>,
    pub shipping_address: Address,
    pub payment_token: String,
    /// The request as received, for the idempotency fingerprint.
    pub fingerprint: String,
}

/// The response to a placement: 201 when terminal, 202 while pending.
#[derive(Debug, Clone)]
pub struct Placed {
    pub status: u16,
    pub body: String,
}

#[derive(Clone)]
pub struct OrdersService {
    store: SqlOrders,
    saga: Arc<Saga>,
    catalog: Arc<dyn CatalogApi>,
    cart: Arc<dyn CartApi>,
    /// How long `POST /orders` waits for a terminal state before answering 202.
    wait: Duration,
}

chassis::debug_fields!(OrdersService { wait });

fn redact(mut data: serde_json::Value) -> serde_json::Value {
    if let Some(token) = data.get_mut("payment_token") {
        *token = serde_json::Value::from("[redacted]");
    }
    data
}

fn can_see(principal: &Principal, owner: &str) -> bool {
    principal.role == Role::Admin || principal.user_id == owner
}

impl OrdersService {
    pub fn new(
        store: SqlOrders,
        saga: Arc<Saga>,
        catalog: Arc<dyn CatalogApi>,
        cart: Arc<dyn CartApi>,
        wait: Duration,
    ) -> Self {
        Self {
            store,
            saga,
            catalog,
            cart,
            wait,
        }
    }

    pub fn store(&self) -> &SqlOrders {
        &self.store
    }

    /// Places an order. With an Idempotency-Key, the first response is stored and
    /// replayed; see DESIGN.md "Idempotency".
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn place(
        &self,
        user_id: &str,
        key: Option<&str>,
        request: PlaceOrder,
    ) -> Result<Placed, OrdersError> {
        let Some(key) = key else {
            return self.place_new(user_id, None, request).await;
        };
        let scope = format!("orders:{user_id}");
        let store = self.store.store();
        match idempotency::begin(
            store,
            &scope,
            key,
            &idempotency::fingerprint(&[&request.fingerprint]),
            KEY_LEASE,
        )
        .await?
        {
            Begin::Proceed => {}
            Begin::Replay { status, body } => return Ok(Placed { status, body }),
            Begin::Mismatch => return Err(OrdersError::KeyMismatch),
            Begin::InProgress => return Err(OrdersError::KeyInProgress),
        }
        match self.place_new(user_id, Some(key), request).await {
            Ok(placed) => {
                idempotency::complete(store, &scope, key, placed.status, &placed.body).await?;
                Ok(placed)
            }
            Err(e) => {
                // No order was created: the client may fix the request and retry.
                idempotency::abandon(store, &scope, key).await?;
                Err(e)
            }
        }
    }

    async fn place_new(
        &self,
        user_id: &str,
        key: Option<&str>,
        request: PlaceOrder,
    ) -> Result<Placed, OrdersError> {
        // A crash after the order was written but before the response was stored:
        // the key already names an order; answer with it.
        if let Some(key) = key {
            if let Some(order_id) = self.store.order_for_key(user_id, key).await? {
                return self.respond(&order_id).await;
            }
        }
        let lines = self.price(user_id, request.items).await?;
        let order = Order::new(&chassis::id::new_id());
        let events = decide(
            &order,
            Command::Place {
                user_id: user_id.to_owned(),
                lines,
                currency: chassis::money::CURRENCY.to_owned(),
                shipping_address: request.shipping_address,
                payment_token: request.payment_token,
            },
        )
        .map_err(|e| OrdersError::Invalid(vec![FieldError::new("items", e.to_string())]))?;
        let key_claim = key.map(|k| (user_id, k));
        let (order_id, placed) = match self.store.append(&order, &events, key_claim).await {
            Ok(after) => {
                tracing::info!(order_id = %after.id, "order placed");
                metrics::counter!("orders_placed_total").increment(1);
                (after.id.clone(), Some(after))
            }
            Err(AppendError::KeyTaken(existing)) => (existing, None),
            Err(e) => return Err(e.into()),
        };
        if let Some(handle) = self.saga.spawn_from(&order_id, placed) {
            // Wait briefly for a terminal state; the saga goes on regardless.
            let _ = tokio::time::timeout(self.wait, handle).await;
        }
        self.respond(&order_id).await
    }

    async fn respond(&self, order_id: &str) -> Result<Placed, OrdersError> {
        let summary = self
            .store
            .summary(order_id)
            .await?
            .ok_or_else(|| OrdersError::NotFound(order_id.to_owned()))?;
        let status = if summary.status == Status::Pending {
            202
        } else {
            201
        };
        let body = serde_json::to_string(&OrderView::from(summary))
            .map_err(|e| OrdersError::Unavailable(e.to_string()))?;
        Ok(Placed { status, body })
    }

    /// Resolves the lines (the request's, or the cart's) and prices and names them now.
    async fn price(
        &self,
        user_id: &str,
        items: Option<Vec<Wanted>>,
    ) -> Result<Vec<Line>, OrdersError> {
        let (wanted, field) = match items {
            Some(items) => (items, "items"),
            None => (
                self.cart
                    .items(user_id.to_owned())
                    .await
                    .map_err(|e| OrdersError::Unavailable(e.to_string()))?
                    .into_iter()
                    .map(|i| Wanted {
                        product_id: i.product_id,
                        quantity: i.quantity,
                    })
                    .collect(),
                "cart",
            ),
        };
        if wanted.is_empty() {
            let message = if field == "cart" {
                "the cart is empty; add items or send `items`"
            } else {
                "must contain at least one item"
            };
            return Err(OrdersError::Invalid(vec![FieldError::new(
                "items", message,
            )]));
        }
        if wanted.len() > MAX_LINES {
            return Err(OrdersError::Invalid(vec![FieldError::new(
                "items",
                format!("must contain at most {MAX_LINES} items"),
            )]));
        }
        let ids: Vec<String> = wanted.iter().map(|w| w.product_id.clone()).collect();
        // Price and name as sold now: the order keeps them, whatever the catalog
        // says later.
        let products: HashMap<String, (i64, String)> = self
            .catalog
            .get_products(ids)
            .await
            .map_err(|e| OrdersError::Unavailable(e.to_string()))?
            .into_iter()
            .map(|p| (p.id, (p.price_cents, p.name)))
            .collect();
        let mut errors = Vec::new();
        let mut lines = Vec::with_capacity(wanted.len());
        for (i, w) in wanted.into_iter().enumerate() {
            match products.get(&w.product_id) {
                Some((price_cents, name)) => lines.push(Line {
                    product_id: w.product_id,
                    quantity: w.quantity,
                    price_cents: *price_cents,
                    name: name.clone(),
                }),
                None => errors.push(FieldError::new(
                    format!("items[{i}].product_id"),
                    "no such product",
                )),
            }
        }
        if errors.is_empty() {
            Ok(lines)
        } else {
            Err(OrdersError::Invalid(errors))
        }
    }

    async fn visible(&self, principal: &Principal, order_id: &str) -> Result<Summary, OrdersError> {
        // Someone else's order is reported as missing, not forbidden: ids do not leak.
        match self.store.summary(order_id).await? {
            Some(s) if can_see(principal, &s.user_id) => Ok(s),
            _ => Err(OrdersError::NotFound(order_id.to_owned())),
        }
    }

    pub async fn get(
        &self,
        principal: &Principal,
        order_id: &str,
    ) -> Result<OrderView, OrdersError> {
        Ok(self.visible(principal, order_id).await?.into())
    }

    pub async fn list(
        &self,
        user_id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<(Vec<OrderView>, Option<String>), OrdersError> {
        let limit = chassis::page::limit(limit)
            .map_err(|message| OrdersError::Invalid(vec![FieldError::new("limit", message)]))?;
        let cursor = chassis::page::cursor(cursor).map_err(|_| OrdersError::BadCursor)?;
        let (items, more) = self
            .store
            .list_for_user(user_id, cursor.as_ref(), limit)
            .await?;
        let next = chassis::page::next_cursor(&items, more, |s| &s.id);
        Ok((items.into_iter().map(OrderView::from).collect(), next))
    }

    /// The order's events up to `as_of` (all when `None`), and its state then.
    pub async fn events(
        &self,
        principal: &Principal,
        order_id: &str,
        as_of: Option<i64>,
    ) -> Result<(Vec<EventView>, &'static str), OrdersError> {
        self.visible(principal, order_id).await?;
        let stored: Vec<_> = self
            .store
            .events(order_id)
            .await?
            .into_iter()
            .filter(|s| as_of.is_none_or(|t| s.occurred_at <= t))
            .collect();
        let state = replay(order_id, stored.iter().map(|s| &s.event));
        let status = if stored.is_empty() {
            "not_yet_placed"
        } else {
            state.status().as_str()
        };
        let views = stored
            .into_iter()
            .map(|s| EventView {
                sequence: s.sequence,
                kind: s.event.name().to_owned(),
                occurred_at: chassis::time::micros_to_rfc3339(s.occurred_at),
                data: redact(
                    serde_json::to_value(&s.event)
                        .ok()
                        .and_then(|v| v.get("data").cloned())
                        // Events without a payload have `{}`: `data` is always an object.
                        .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
                ),
            })
            .collect();
        Ok((views, status))
    }

    /// Orders per status and open sagas per step; the open sagas with no event for
    /// `stuck_after` are listed as stuck.
    #[tracing::instrument(skip(self))]
    pub async fn sagas(&self, stuck_after: Duration) -> Result<SagaReport, OrdersError> {
        let mut by_status: BTreeMap<String, i64> = [
            Status::Pending,
            Status::Confirmed,
            Status::Failed,
            Status::Cancelled,
        ]
        .into_iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
        for (status, n) in self.store.count_by_status().await? {
            *by_status.entry(status).or_default() += n;
        }
        let open = self.store.count_open().await?;
        let mut by_step: BTreeMap<String, i64> = Step::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        let now = chassis::time::now_micros();
        let threshold = i64::try_from(stuck_after.as_micros()).unwrap_or(i64::MAX);
        let secs =
            |micros: i64| Duration::from_micros(u64::try_from(micros).unwrap_or(0)).as_secs_f64();
        let rows = self.store.open_with_times(SAGAS_EXAMINED).await?;
        let examined = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let mut stuck = Vec::new();
        for (id, status, created_at, updated_at) in rows {
            let events = self.store.events(&id).await?;
            let order = replay(&id, events.iter().map(|s| &s.event));
            let step = next_step(&order);
            if let Some(step) = &step {
                *by_step.entry(step.as_str().to_owned()).or_default() += 1;
            }
            let last = events.last();
            let last_at = last.map_or(updated_at, |e| e.occurred_at);
            if now.saturating_sub(last_at) >= threshold && stuck.len() < STUCK_LISTED {
                stuck.push(StuckOrder {
                    id,
                    status,
                    step: step.map(|s| s.as_str().to_owned()),
                    placed_at: chassis::time::micros_to_rfc3339(created_at),
                    age_secs: secs(now.saturating_sub(created_at)),
                    idle_secs: secs(now.saturating_sub(last_at)),
                    last_event: last.map(|e| LastEvent {
                        sequence: e.sequence,
                        kind: e.event.name().to_owned(),
                        occurred_at: chassis::time::micros_to_rfc3339(e.occurred_at),
                    }),
                });
            }
        }
        // Rows came least recently touched first: the longest idle already lead.
        Ok(SagaReport {
            by_status,
            open,
            by_step,
            examined,
            stuck_after_secs: stuck_after.as_secs(),
            stuck,
        })
    }

    /// Cancels a confirmed order: refund, then restock. Idempotent.
    #[tracing::instrument(skip(self, principal))]
    pub async fn cancel(
        &self,
        principal: &Principal,
        order_id: &str,
    ) -> Result<OrderView, OrdersError> {
        self.visible(principal, order_id).await?;
        loop {
            let order = self
                .store
                .load(order_id)
                .await?
                .ok_or_else(|| OrdersError::NotFound(order_id.to_owned()))?;
            let events = decide(&order, Command::Cancel)
                .map_err(|e| OrdersError::NotCancellable(e.to_string()))?;
            if !events.is_empty() {
                match self.store.append(&order, &events, None).await {
                    Ok(_) => {}
                    Err(AppendError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            break;
        }
        if let Some(handle) = self.saga.spawn(order_id) {
            let _ = tokio::time::timeout(self.wait, handle).await;
        }
        self.get(principal, order_id).await
    }
}
