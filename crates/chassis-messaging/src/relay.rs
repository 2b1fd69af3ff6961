//! The relay: moves a module's unsent outbox rows to the bus, in order, and stamps
//! them sent only once the bus accepted them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chassis_core::events::Envelope;
use sqlx::AnyConnection;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError, Published};
use crate::outbox::Outbox;

/// Outbox rows read per batch: one read, one publish of them all, one UPDATE.
const BATCH: usize = 100;

/// One batch's outcome.
struct Batch {
    read: usize,
    stamped: usize,
    failure: Option<BusError>,
}

impl Outbox {
    /// Publishes unsent rows in order until none are left or the bus refuses one.
    /// Returns how many were sent.
    ///
    /// Several replicas of a module relay the same outbox: on PostgreSQL each batch
    /// is read, published and stamped under a transaction-scoped advisory lock per
    /// outbox (per schema), so one relay at a time publishes, in order, and a row is
    /// stamped before another relay can read it. The others wait for the lock (a
    /// batch's time) and then find only what is still unsent. (`FOR UPDATE SKIP
    /// LOCKED` would let two relays publish different rows at once, out of order.)
    /// SQLite has one process per file, so one relay.
    pub async fn relay_once(&self, bus: &dyn Bus) -> Result<usize, RelayError> {
        let postgres = self
            .pool
            .connect_options()
            .database_url
            .scheme()
            .starts_with("postgres");
        let mut sent = 0;
        loop {
            let batch = if postgres {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "SELECT pg_advisory_xact_lock(hashtext('bazaar outbox ' || current_schema()))",
                )
                .execute(&mut *tx)
                .await?;
                let batch = self.relay_batch(&mut tx, bus).await?;
                tx.commit().await?;
                batch
            } else {
                // No transaction: a SQLite read that later writes could fail to
                // upgrade its lock under load; one process relays anyway.
                let mut conn = self.pool.acquire().await?;
                self.relay_batch(&mut conn, bus).await?
            };
            sent += batch.stamped;
            if let Some(e) = batch.failure {
                return Err(e.into());
            }
            // A short batch was all there was: rows committed since then rang the
            // wake-up bell, so the relay loop comes back for them without a read
            // here that would find nothing.
            if batch.read < BATCH {
                return Ok(sent);
            }
        }
    }

    /// Publishes one batch of unsent rows in order and stamps those published: how
    /// many it read and stamped, and the bus's refusal that ended it early.
    async fn relay_batch(
        &self,
        conn: &mut AnyConnection,
        bus: &dyn Bus,
    ) -> Result<Batch, sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, envelope FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(BATCH).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
        let read = rows.len();
        let mut ids = Vec::with_capacity(read);
        let mut envelopes = Vec::with_capacity(read);
        // Where each envelope's row is in `ids`.
        let mut row_of = Vec::with_capacity(read);
        for (id, text) in rows {
            match serde_json::from_str::<Envelope>(&text) {
                Ok(envelope) => {
                    row_of.push(ids.len());
                    envelopes.push(envelope);
                }
                // Written by this code from a valid envelope; an unreadable row can
                // never be sent, so it must not block the ones behind it.
                Err(e) => {
                    tracing::error!(outbox_id = %id, error = %e, "skipping unreadable outbox row");
                }
            }
            ids.push(id);
        }
        // The whole batch goes to the bus at once (JetStream: sent, then the
        // acknowledgements awaited together). Only the rows before the first refused
        // one are stamped, so a row is never stamped while an earlier one is unsent;
        // the rest are published again on the next pass, where JetStream's
        // duplicate window (by `Nats-Msg-Id`) and the consumers' inboxes absorb any
        // that had been accepted. Stamped together, one UPDATE per batch rather than
        // one commit per event; a crash before it re-publishes the batch likewise.
        let Published { accepted, failure } = bus.publish_batch(&envelopes).await;
        let stamped = match failure {
            Some(_) => row_of.get(accepted).copied().unwrap_or(ids.len()),
            None => ids.len(),
        };
        Self::mark_sent(conn, &ids[..stamped]).await?;
        metrics::counter!("outbox_relayed_total", "module" => self.module)
            .increment(stamped as u64);
        Ok(Batch {
            read,
            stamped,
            failure,
        })
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
            let mut sampled: Option<Instant> = None;
            loop {
                match outbox.relay_once(bus.as_ref()).await {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(module = outbox.module, error = %e, "relay failed; will retry");
                    }
                }
                // The gauges at most once per `poll`, not after every pass: under load
                // a pass follows nearly every commit.
                if sampled.is_none_or(|at| at.elapsed() >= poll) {
                    sampled = Some(Instant::now());
                    if let Ok(backlog) = outbox.backlog().await {
                        #[allow(clippy::cast_precision_loss)]
                        {
                            metrics::gauge!("outbox_backlog", "module" => outbox.module)
                                .set(backlog.unsent as f64);
                            metrics::gauge!("outbox_oldest_unsent_age_seconds", "module" => outbox.module)
                                .set(backlog.oldest_age_micros as f64 / 1e6);
                        }
                    }
                }
                // Back off while the bus is failing; otherwise wait for work.
                let wait = if failures > 0 {
                    chassis_core::retry::backoff(
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
    Bus(#[from] BusError),
}
