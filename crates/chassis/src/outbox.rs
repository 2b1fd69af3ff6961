//! The transactional outbox and its relay.
//!
//! A module writes its events with [`enqueue`] inside the transaction that changes its
//! state, so an event exists if and only if the change committed. The [`Relay`] moves
//! unsent rows to the bus in order and stamps them sent only once the bus accepted
//! them; after a crash the unsent rows are simply still there.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::events::{DomainEvent, Envelope};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot encode event")]
    Encode(#[from] serde_json::Error),
    #[error("outbox store failed")]
    Store(#[from] sqlx::Error),
}

/// Records `event` in the outbox, in the caller's transaction.
pub async fn enqueue<E: DomainEvent>(
    conn: &mut AnyConnection,
    event: &E,
) -> Result<Envelope, OutboxError> {
    let envelope = Envelope::wrap(event)?;
    enqueue_envelope(conn, &envelope).await?;
    Ok(envelope)
}

pub async fn enqueue_envelope(
    conn: &mut AnyConnection,
    envelope: &Envelope,
) -> Result<(), OutboxError> {
    sqlx::query(
        "INSERT INTO outbox (id, topic, envelope, created_at, sent_at) VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(&envelope.id)
    .bind(envelope.topic())
    .bind(serde_json::to_string(envelope)?)
    .bind(crate::time::now_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// A module's outbox: where its relay reads, and the bell that wakes the relay after
/// a commit (it also polls, so a missed wake-up only costs latency).
#[derive(Debug, Clone)]
pub struct Outbox {
    module: &'static str,
    pool: AnyPool,
    wake: Arc<Notify>,
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
            oldest_age_micros: oldest.map_or(0, |t| (crate::time::now_micros() - t).max(0)),
        })
    }

    /// Publishes unsent rows in order until none are left or the bus refuses one.
    /// Returns how many were sent.
    pub async fn relay_once(&self, bus: &dyn Bus) -> Result<usize, RelayError> {
        const BATCH: i64 = 100;
        let mut sent = 0;
        loop {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT id, envelope FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            )
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(sent);
            }
            // Published rows are stamped sent together, one UPDATE per batch rather
            // than one commit per event. A crash mid-batch re-publishes the batch:
            // consumers' inboxes (and JetStream's dedup window) absorb the repeats.
            let mut published = Vec::with_capacity(rows.len());
            let mut failure = None;
            for (id, text) in rows {
                match serde_json::from_str::<Envelope>(&text) {
                    Ok(envelope) => {
                        if let Err(e) = bus.publish(&envelope).await {
                            failure = Some(e);
                            break;
                        }
                    }
                    // Written by this code from a valid envelope; an unreadable row
                    // can never be sent, so it must not block the ones behind it.
                    Err(e) => {
                        tracing::error!(outbox_id = %id, error = %e, "skipping unreadable outbox row");
                    }
                }
                published.push(id);
            }
            self.mark_sent(&published).await?;
            sent += published.len();
            metrics::counter!("outbox_relayed_total", "module" => self.module)
                .increment(published.len() as u64);
            if let Some(e) = failure {
                return Err(e.into());
            }
        }
    }

    async fn mark_sent(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders = (2..ids.len() + 2)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE outbox SET sent_at = $1 WHERE id IN ({placeholders})");
        let mut query = sqlx::query(&sql).bind(crate::time::now_micros());
        for id in ids {
            query = query.bind(id);
        }
        query.execute(&self.pool).await.map(|_| ())
    }

    /// Deletes sent rows older than `age` (they are only kept for inspection).
    pub async fn purge_sent(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let cutoff = crate::time::now_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Runs the relay until `shutdown`: on every wake-up and at least every `poll`.
    pub fn spawn_relay(
        &self,
        bus: Arc<dyn Bus>,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let outbox = self.clone();
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                match outbox.relay_once(bus.as_ref()).await {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(module = outbox.module, error = %e, "relay failed; will retry");
                    }
                }
                if let Ok(backlog) = outbox.backlog().await {
                    #[allow(clippy::cast_precision_loss)]
                    {
                        metrics::gauge!("outbox_backlog", "module" => outbox.module)
                            .set(backlog.unsent as f64);
                        metrics::gauge!("outbox_oldest_unsent_age_seconds", "module" => outbox.module)
                            .set(backlog.oldest_age_micros as f64 / 1e6);
                    }
                }
                // Back off while the bus is failing; otherwise wait for work.
                let wait = if failures > 0 {
                    crate::retry::backoff(
                        failures,
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                    )
                } else {
                    poll
                };
                tokio::select! {
                    () = outbox.wake.notified(), if failures == 0 => {}
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => {
                        // One last pass so a clean stop leaves nothing behind.
                        if let Err(e) = outbox.relay_once(bus.as_ref()).await {
                            tracing::warn!(module = outbox.module, error = %e, "final relay pass failed");
                        }
                        break;
                    }
                }
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox store failed")]
    Store(#[from] sqlx::Error),
    #[error("bus refused the event")]
    Bus(#[from] crate::bus::BusError),
}
