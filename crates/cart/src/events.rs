//! cart's event handlers: a confirmed order empties its buyer's cart.

use chassis::bus::{Handler, HandlerError};
use chassis::events::{Envelope, topic_of};
use contracts::orders::OrderConfirmed;
use sqlx::AnyConnection;

/// The consumer name (inbox scope) and the topics it listens to.
pub const CONSUMER: &str = "cart";

pub fn topics() -> Vec<String> {
    vec![topic_of::<OrderConfirmed>()]
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CartEvents;

#[async_trait::async_trait]
impl Handler for CartEvents {
    async fn handle(&self, tx: &mut AnyConnection, event: &Envelope) -> Result<(), HandlerError> {
        let confirmed: OrderConfirmed = event.decode()?;
        crate::store::clear(tx, &confirmed.user_id).await?;
        tracing::info!(user_id = %confirmed.user_id, order_id = %confirmed.order_id, "cart emptied after order");
        Ok(())
    }
}
