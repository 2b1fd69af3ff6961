//! The orders contract, for the storefront: the public routes' use cases on behalf
//! of one buyer.

use chassis::auth::{Principal, Role};
use contracts::orders::{
    OrderError, OrderPage, OrderSummary, OrdersApi, ShippingAddress, TimelineEntry,
};

use crate::error::OrdersError;
use crate::service::{OrderView, OrdersService};

/// The buyer as the use cases see a caller: a customer, whatever their role (the
/// storefront shows a buyer their own orders only).
fn buyer(user_id: String) -> Principal {
    Principal {
        user_id,
        role: Role::Customer,
        session_id: None,
    }
}

fn summary(view: OrderView) -> OrderSummary {
    OrderSummary {
        id: view.id,
        status: view.status,
        items: view
            .items
            .into_iter()
            .map(|i| contracts::orders::OrderItem {
                product_id: i.product_id,
                quantity: i.quantity,
                price_cents: i.price_cents,
            })
            .collect(),
        total_cents: view.total_cents,
        currency: view.currency,
        created_at: view.created_at,
        updated_at: view.updated_at,
        failure_reason: view.failure_reason,
    }
}

impl From<OrdersError> for OrderError {
    fn from(error: OrdersError) -> Self {
        match error {
            OrdersError::Invalid(errors) => OrderError::Invalid(errors),
            OrdersError::NotFound(id) => OrderError::NotFound(id),
            OrdersError::BadCursor => {
                OrderError::Invalid(vec![chassis::FieldError::new("cursor", error.to_string())])
            }
            OrdersError::NotCancellable(_)
            | OrdersError::KeyMismatch
            | OrdersError::KeyInProgress => OrderError::Refused(error.to_string()),
            OrdersError::Unavailable(_) | OrdersError::Store(_) | OrdersError::Append(_) => {
                OrderError::Unavailable(error.to_string())
            }
        }
    }
}

#[async_trait::async_trait]
impl OrdersApi for OrdersService {
    async fn checkout(
        &self,
        user_id: String,
        idempotency_key: String,
        shipping_address: ShippingAddress,
        payment_token: String,
    ) -> Result<OrderSummary, OrderError> {
        let request = crate::http::checkout_request(shipping_address, payment_token)?;
        let placed = self
            .place(&user_id, Some(&idempotency_key), request)
            .await?;
        // The answer is the public route's body (stored for replays): the order.
        serde_json::from_str(&placed.body)
            .map_err(|e| OrderError::Unavailable(format!("unreadable order: {e}")))
    }

    async fn order(&self, user_id: String, order_id: String) -> Result<OrderSummary, OrderError> {
        Ok(summary(self.get(&buyer(user_id), &order_id).await?))
    }

    async fn timeline(
        &self,
        user_id: String,
        order_id: String,
    ) -> Result<Vec<TimelineEntry>, OrderError> {
        let (events, _) = self.events(&buyer(user_id), &order_id, None).await?;
        Ok(events
            .into_iter()
            .map(|e| TimelineEntry {
                kind: e.kind,
                occurred_at: e.occurred_at,
            })
            .collect())
    }

    async fn orders(
        &self,
        user_id: String,
        cursor: Option<String>,
    ) -> Result<OrderPage, OrderError> {
        let (items, next_cursor) = self.list(&user_id, None, cursor.as_deref()).await?;
        Ok(OrderPage {
            items: items.into_iter().map(summary).collect(),
            next_cursor,
        })
    }

    async fn cancel(&self, user_id: String, order_id: String) -> Result<OrderSummary, OrderError> {
        Ok(summary(
            OrdersService::cancel(self, &buyer(user_id), &order_id).await?,
        ))
    }
}
