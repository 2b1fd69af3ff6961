//! The orders module's published events.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u32,
    pub price_cents: i64,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: String,
    pub user_id: String,
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
