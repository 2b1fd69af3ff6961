//! cart's event handlers: a confirmed order takes what it bought out of its buyer's
//! cart. Only those quantities: a line added, or raised, after the order was placed
//! keeps what was added.

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
        let bought: Vec<(&str, u32)> = confirmed
            .lines
            .iter()
            .map(|l| (l.product_id.as_str(), l.quantity))
            .collect();
        crate::store::remove_bought(tx, &confirmed.user_id, &bought).await?;
        tracing::info!(
            user_id = %confirmed.user_id,
            order_id = %confirmed.order_id,
            lines = bought.len(),
            "bought lines taken out of the cart"
        );
        Ok(())
    }
}
