//! analytics' event handler: every order and payment event adds to the sums, inside
//! the consumer's inbox transaction, so a redelivered event adds nothing.

use chassis::bus::{Handler, HandlerError};
use chassis::events::{Envelope, topic_of};
use contracts::orders::{OrderCancelled, OrderConfirmed, OrderFailed};
use contracts::payments::{PaymentCaptured, PaymentDeclined, PaymentRefunded};
use sqlx::AnyConnection;

use crate::domain;
use crate::store::{self, Counter};

/// The consumer name (inbox scope) and the topics it listens to.
pub const CONSUMER: &str = "analytics";

pub fn topics() -> Vec<String> {
    vec![
        topic_of::<OrderConfirmed>(),
        topic_of::<OrderCancelled>(),
        topic_of::<OrderFailed>(),
        topic_of::<PaymentCaptured>(),
        topic_of::<PaymentRefunded>(),
        topic_of::<PaymentDeclined>(),
    ]
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyticsEvents;

/// The minute an event happened in. A malformed `occurred_at` (a producer bug) falls
/// back to now: the counts must stay exact even if one bucket is off.
fn minute_of(event: &Envelope) -> i64 {
    domain::minute_of_rfc3339(&event.occurred_at).unwrap_or_else(|| {
        tracing::warn!(occurred_at = %event.occurred_at, "unparsable occurred_at; bucketing at now");
        domain::minute_of(chassis::time::now_micros())
    })
}

#[async_trait::async_trait]
impl Handler for AnalyticsEvents {
    async fn handle(&self, tx: &mut AnyConnection, event: &Envelope) -> Result<(), HandlerError> {
        if event.is::<OrderConfirmed>() {
            let e: OrderConfirmed = event.decode()?;
            store::add(tx, Counter::OrdersConfirmed, 1).await?;
            store::add(tx, Counter::RevenueCents, e.total_cents).await?;
            for (product_id, units, revenue) in domain::per_product(&e.lines) {
                store::add_product(tx, &product_id, units, revenue, 0).await?;
            }
            store::add_minute(tx, minute_of(event), 1, e.total_cents).await?;
        } else if event.is::<OrderCancelled>() {
            let e: OrderCancelled = event.decode()?;
            store::add(tx, Counter::OrdersCancelled, 1).await?;
            store::add(tx, Counter::RefundedCents, e.refunded_cents).await?;
            for (product_id, units, _) in domain::per_product(&e.lines) {
                store::add_product(tx, &product_id, 0, 0, units).await?;
            }
        } else if event.is::<OrderFailed>() {
            let e: OrderFailed = event.decode()?;
            store::add_failure(tx, &e.reason).await?;
        } else if event.is::<PaymentCaptured>() {
            let e: PaymentCaptured = event.decode()?;
            store::add(tx, Counter::PaymentsCapturedCents, e.amount_cents).await?;
        } else if event.is::<PaymentRefunded>() {
            let e: PaymentRefunded = event.decode()?;
            store::add(tx, Counter::PaymentsRefundedCents, e.amount_cents).await?;
        } else if event.is::<PaymentDeclined>() {
            let _: PaymentDeclined = event.decode()?;
            store::add(tx, Counter::PaymentDeclines, 1).await?;
        } else {
            return Err(HandlerError::Permanent(format!(
                "analytics does not handle {} events",
                event.topic()
            )));
        }
        Ok(())
    }
}
