//! The orders module's published events, and what the storefront may ask it.
//!
//! Versions: a field added with a default keeps an event's version (consumers ignore
//! fields they do not know, and read a missing one as its default); only a change
//! that old consumers would misread bumps it, since a consumer refuses versions newer
//! than its own.

use serde::{Deserialize, Serialize};

/// One line of an order, as it was bought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u32,
    /// Unit price when the order was placed.
    pub price_cents: i64,
    /// The product's name when the order was placed (the catalog's may change
    /// later). Added in version 1 with a default: empty in events of orders placed
    /// before names were carried, and consumers fall back to the product id.
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub user_id: String,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub currency: String,
}
crate::event!(OrderPlaced, "orders", "OrderPlaced", v 1, |e| e.order_id);

/// An order was paid and its stock taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: String,
    pub user_id: String,
    /// The lines bought: the cart removes exactly these quantities. Always present
    /// since version 1; a payload without them reads as no lines (the cart then
    /// removes nothing, rather than lines the buyer added since).
    #[serde(default)]
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub currency: String,
    pub payment_id: String,
}
crate::event!(OrderConfirmed, "orders", "OrderConfirmed", v 1, |e| e.order_id);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailed {
    pub order_id: String,
    pub user_id: String,
    /// `out_of_stock`, `payment_declined`, `payment_unavailable`, ...
    pub reason: String,
}
crate::event!(OrderFailed, "orders", "OrderFailed", v 1, |e| e.order_id);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    pub user_id: String,
    pub lines: Vec<OrderLine>,
    pub refunded_cents: i64,
    pub currency: String,
}
crate::event!(OrderCancelled, "orders", "OrderCancelled", v 1, |e| e.order_id);

/// The events this module publishes (its descriptor's `publishes`).
pub const EVENTS: &[&str] = &[
    <OrderPlaced as chassis_core::events::DomainEvent>::TYPE,
    <OrderConfirmed as chassis_core::events::DomainEvent>::TYPE,
    <OrderFailed as chassis_core::events::DomainEvent>::TYPE,
    <OrderCancelled as chassis_core::events::DomainEvent>::TYPE,
];

/// Where an order ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `US`.
    pub country: String,
}

/// One line of an order, at the price it was bought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: u32,
    pub price_cents: i64,
}

/// An order as its buyer sees it (the public API's order, field for field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub id: String,
    /// `pending`, `confirmed`, `failed`, `cancelling` or `cancelled`.
    pub status: String,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Why a failed order failed (`payment_declined`, `out_of_stock`, ...).
    #[serde(default)]
    pub failure_reason: Option<String>,
}

/// One page of a buyer's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    pub items: Vec<OrderSummary>,
    pub next_cursor: Option<String>,
}

/// One step of an order's history, as its buyer may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// The event's type: `OrderPlaced`, `StockReserved`, `PaymentCaptured`, ...
    pub kind: String,
    /// RFC 3339.
    pub occurred_at: String,
}

/// Why an order could not be placed, shown or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum OrderError {
    /// Fields that are not acceptable, named as the public API names them
    /// (`shipping_address.city`, `payment_token`, `items`), each explained.
    #[error("invalid order")]
    Invalid(Vec<chassis_core::validation::FieldError>),
    /// No such order, or not the caller's.
    #[error("order {0} not found")]
    NotFound(String),
    /// Not possible in the order's state (cancelling a failed order), or the same
    /// checkout still in progress.
    #[error("{0}")]
    Refused(String),
    /// Orders, or a module it needs, could not answer.
    #[error("orders unavailable: {0}")]
    Unavailable(String),
}

chassis_core::rpc! {
    /// What the storefront may ask orders, always on behalf of one buyer.
    pub trait OrdersApi as "orders" {
        client OrdersClient;
        handlers orders_handlers;

        /// Places an order of the buyer's cart, as `POST /api/v1/orders` without
        /// `items`: answers once it is terminal or the short wait is over (then
        /// `pending`). The same `idempotency_key` with the same request answers the
        /// first order again.
        async fn checkout(
            &self,
            user_id: String,
            idempotency_key: String,
            shipping_address: ShippingAddress,
            payment_token: String,
        ) -> Result<OrderSummary, OrderError>;

        /// The buyer's order; `NotFound` for another buyer's.
        async fn order(&self, user_id: String, order_id: String) -> Result<OrderSummary, OrderError>;

        /// The buyer's order's events, oldest first (what happened, not the data).
        async fn timeline(
            &self,
            user_id: String,
            order_id: String,
        ) -> Result<Vec<TimelineEntry>, OrderError>;

        /// The buyer's orders, newest first, a page after `cursor`.
        async fn orders(
            &self,
            user_id: String,
            cursor: Option<String>,
        ) -> Result<OrderPage, OrderError>;

        /// Cancels the buyer's confirmed order (refund, restock); the order after.
        async fn cancel(&self, user_id: String, order_id: String) -> Result<OrderSummary, OrderError>;
    }
}

impl chassis_core::rpc::RemoteError for OrderError {
    fn from_failure(failure: chassis_core::rpc::RpcFailure) -> Self {
        OrderError::Unavailable(failure.to_string())
    }

    fn is_transient(&self) -> bool {
        matches!(self, OrderError::Unavailable(_))
    }
}
