//! Dead letters: events a consumer gave up on, kept in its own store (the
//! `dead_letters` platform table) until an operator redrives or deletes them.

use chassis_core::events::Envelope;
use sqlx::{AnyConnection, AnyPool};

/// Records `envelope` as dead-lettered by `consumer`, and in its inbox too:
/// redelivery of a dead letter must not run it again. In the caller's transaction.
pub(crate) async fn record(
    tx: &mut AnyConnection,
    consumer: &str,
    envelope: &Envelope,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let text = serde_json::to_string(envelope).unwrap_or_default();
    let now = chassis_core::time::now_micros();
    sqlx::query(
        "INSERT INTO dead_letters (consumer, event_id, topic, envelope, error, attempts, failed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(&envelope.id)
    .bind(envelope.topic())
    .bind(text)
    .bind(error)
    .bind(i64::from(attempts))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(&envelope.id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A dead-lettered event, as the admin endpoint lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub consumer: String,
    pub event_id: String,
    pub topic: String,
    pub error: String,
    pub attempts: i64,
    pub failed_at: String,
    /// The event as it was delivered.
    #[schema(value_type = Object)]
    pub envelope: serde_json::Value,
}

/// Every dead letter in one store, newest first.
pub async fn dead_letters(pool: &AnyPool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT consumer, event_id, topic, error, attempts, failed_at, envelope \
         FROM dead_letters ORDER BY failed_at DESC LIMIT 1000",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(consumer, event_id, topic, error, attempts, failed_at, envelope)| DeadLetter {
                consumer,
                event_id,
                topic,
                error,
                attempts,
                failed_at: chassis_core::time::micros_to_rfc3339(failed_at),
                envelope: serde_json::from_str(&envelope).unwrap_or(serde_json::Value::Null),
            },
        )
        .collect())
}
