//! The transactional outbox.
//!
//! A module writes its events with [`enqueue`] inside the transaction that changes its
//! state, so an event exists if and only if the change committed. The relay
//! ([`relay`](crate::relay)) moves unsent rows to the bus in order and stamps them
//! sent only once the bus accepted them; after a crash the unsent rows are simply
//! still there.

use std::sync::Arc;
use std::time::Duration;

use chassis_core::events::{DomainEvent, Envelope};
use chassis_store::writer::{Arg, Statements};
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot encode event")]
    Encode(#[from] serde_json::Error),
    #[error("outbox store failed")]
    Store(#[from] sqlx::Error),
}

/// Records `event` in the outbox, in the caller's transaction, with the current trace
/// context (consumers continue the trace that produced it).
pub async fn enqueue<E: DomainEvent>(
    conn: &mut AnyConnection,
    event: &E,
) -> Result<Envelope, OutboxError> {
    let envelope = envelope(event)?;
    enqueue_in(conn, &envelope).await?;
    Ok(envelope)
}

/// `event` in its envelope, with the current trace context: built on the task that
/// made the change (a unit of a store's writer runs on the writer's thread, outside
/// the request's span).
pub fn envelope<E: DomainEvent>(event: &E) -> Result<Envelope, OutboxError> {
    Ok(Envelope::wrap(event)?.with_trace_context(chassis_telemetry::current_traceparent()))
}

/// Records `envelope` in the outbox through `tx`: inside a unit of
/// [`Store::write`](chassis_store::store::Store::write) or a sqlx transaction.
pub async fn enqueue_in(tx: &mut dyn Statements, envelope: &Envelope) -> Result<(), OutboxError> {
    tx.run(
        "INSERT INTO outbox (id, topic, envelope, created_at, sent_at) VALUES ($1, $2, $3, $4, NULL)",
        &[
            Arg::from(&envelope.id),
            Arg::from(&envelope.topic()),
            Arg::from(&serde_json::to_string(envelope)?),
            Arg::from(chassis_core::time::now_micros()),
        ],
    )
    .await?;
    Ok(())
}

/// A module's outbox: where its relay reads, and the bell that wakes the relay after
/// a commit (it also polls, so a missed wake-up only costs latency).
#[derive(Debug, Clone)]
pub struct Outbox {
    pub(crate) module: &'static str,
    pub(crate) pool: AnyPool,
    pub(crate) wake: Arc<Notify>,
}

/// Unsent events: how many, and how long the oldest has waited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub unsent: i64,
    pub oldest_age_micros: i64,
}

impl Outbox {
    pub fn new(module: &'static str, pool: AnyPool) -> Self {
        Self {
            module,
            pool,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Tells the relay there is something to send.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let (unsent, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(Backlog {
            unsent,
            oldest_age_micros: oldest.map_or(0, |t| (chassis_core::time::now_micros() - t).max(0)),
        })
    }

    pub(crate) async fn mark_sent(
        conn: &mut AnyConnection,
        ids: &[String],
    ) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders = (2..ids.len() + 2)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE outbox SET sent_at = $1 WHERE id IN ({placeholders})");
        let mut query = sqlx::query(&sql).bind(chassis_core::time::now_micros());
        for id in ids {
            query = query.bind(id);
        }
        query.execute(conn).await.map(|_| ())
    }

    /// Deletes sent rows older than `age` (they are only kept for inspection).
    pub async fn purge_sent(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let cutoff =
            chassis_core::time::now_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
