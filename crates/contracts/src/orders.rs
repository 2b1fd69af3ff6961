//! The orders module's published events.
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
