//! The payments module's contract: charge, refund, get. Internal only: no public
//! route reaches payments except through orders.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// Same key, same parameters → the first result again, never a second charge.
    pub idempotency_key: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub currency: String,
    /// Test-card convention: `tok_visa`, `tok_chargeDeclined`, `tok_timeout`.
    pub payment_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub payment_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Captured,
    Refunded,
    PartiallyRefunded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub refunded_cents: i64,
    pub currency: String,
    pub status: PaymentStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PaymentError {
    /// The card was declined; final for this key.
    #[error("payment declined: {0}")]
    Declined(String),
    /// The provider did not answer in time or is down; retry with the same key.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The key was used before with different parameters.
    #[error("idempotency key reused with different parameters")]
    KeyMismatch,
    /// A request with this key is still running; retry later.
    #[error("a request with this idempotency key is in progress")]
    InProgress,
    #[error("payment {0} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

chassis_core::rpc! {
    /// Charging and refunding, with Stripe-style idempotency keys: a retried charge
    /// with the same key is answered from the record, never charged twice.
    pub trait PaymentsApi as "payments" {
        client PaymentsClient;
        handlers payments_handlers;

        async fn charge(&self, request: ChargeRequest) -> Result<Payment, PaymentError>;
        async fn refund(&self, request: RefundRequest) -> Result<Payment, PaymentError>;
        async fn get(&self, payment_id: String) -> Result<Payment, PaymentError>;
        /// The payment captured for an order, if any.
        async fn find_by_order(&self, order_id: String) -> Result<Option<Payment>, PaymentError>;
    }
}

impl chassis_core::rpc::RemoteError for PaymentError {
    fn from_failure(failure: chassis_core::rpc::RpcFailure) -> Self {
        PaymentError::Unavailable(failure.to_string())
    }

    fn is_transient(&self) -> bool {
        matches!(self, PaymentError::Unavailable(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub payment_id: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub currency: String,
}
crate::event!(PaymentCaptured, "payments", "PaymentCaptured", v 1, |e| e.payment_id);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: String,
    pub order_id: String,
    pub amount_cents: i64,
    pub currency: String,
}
crate::event!(PaymentRefunded, "payments", "PaymentRefunded", v 1, |e| e.payment_id);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub order_id: String,
    pub amount_cents: i64,
    pub reason: String,
}
crate::event!(PaymentDeclined, "payments", "PaymentDeclined", v 1, |e| e.order_id);

/// The events this module publishes (its descriptor's `publishes`).
pub const EVENTS: &[&str] = &[
    <PaymentCaptured as chassis_core::events::DomainEvent>::TYPE,
    <PaymentRefunded as chassis_core::events::DomainEvent>::TYPE,
    <PaymentDeclined as chassis_core::events::DomainEvent>::TYPE,
];
