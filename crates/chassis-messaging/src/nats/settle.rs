//! Settling a message with JetStream.

use async_nats::jetstream::{self as js, AckKind};

/// Sends an ack, nak or progress. A lost ack only means a redelivery, which the inbox
/// absorbs; it is logged, not retried.
pub(super) async fn ack(message: &js::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot settle message with JetStream; it will be redelivered");
    }
}
