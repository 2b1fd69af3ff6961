//! The relay: moves a module's unsent outbox rows to the bus, in order, and stamps
//! them sent only once the bus accepted them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chassis_core::events::Envelope;
use futures::future::{BoxFuture, FutureExt as _};
use futures::stream::{FuturesUnordered, StreamExt as _};
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
        let postgres = self.is_postgres();
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
        self.count_dispatched(&envelopes, true);
        let Published { accepted, failure } = bus.publish_batch(&envelopes).await;
        self.count_dispatched(&envelopes, false);
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
    /// On a [`pipelined`](Bus::pipelined) bus over a SQLite outbox, batches overlap
    /// ([`relay_pipelined`](Self::relay_pipelined)); otherwise one pass at a time.
    pub fn spawn_relay(
        &self,
        bus: Arc<dyn Bus>,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let outbox = self.clone();
        if bus.pipelined() && !outbox.is_postgres() {
            return tokio::spawn(async move { outbox.relay_pipelined(bus, poll, shutdown).await });
        }
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            let mut gauges = Gauges::default();
            loop {
                match outbox.relay_once(bus.as_ref()).await {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(module = outbox.module, error = %e, "relay failed; will retry");
                    }
                }
                gauges.sample(&outbox, poll).await;
                tokio::select! {
                    () = outbox.wake.notified(), if failures == 0 => {}
                    () = tokio::time::sleep(wait(failures, poll)) => {}
                    () = shutdown.cancelled() => {
                        outbox.final_pass(bus.as_ref()).await;
                        break;
                    }
                }
            }
        })
    }

    /// The relay for a bus whose publishes may overlap (the in-process bus): it
    /// dispatches a batch without waiting for the ones before it to be accepted (once
    /// they have had [`HOLD`] to settle), up to [`IN_FLIGHT`] rows, and stamps each
    /// batch when the bus accepts it. So a consumer that is behind delays only its own
    /// lane until the window fills, not the others'.
    ///
    /// Rows are read by SQLite's rowid, which is commit order (one writer per file;
    /// a rowid is taken at insert, under the write lock), after the last one
    /// dispatched: no re-read of the rows in flight. A refused batch moves the cursor
    /// back to its first row not accepted, so it is read and published again.
    async fn relay_pipelined(
        &self,
        bus: Arc<dyn Bus>,
        poll: Duration,
        shutdown: CancellationToken,
    ) {
        let mut window = Window::default();
        let mut failures: u32 = 0;
        let mut gauges = Gauges::default();
        // Whether to read before waiting: after a full read, a wake-up or a poll, and
        // while the window is full (until a batch settles and makes room).
        let mut read_more = true;
        // A wake-up that came while batches were in flight: read when one settles or
        // at this deadline, whichever is first.
        let mut held: Option<tokio::time::Instant> = None;
        loop {
            if read_more && window.rows.len() < IN_FLIGHT {
                match self.dispatch(&bus, &mut window).await {
                    Ok(full) => {
                        if window.rows.is_empty() {
                            // Nothing in flight and nothing to send: nothing failing.
                            failures = 0;
                        }
                        read_more = full;
                        if full {
                            continue;
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        read_more = false;
                        tracing::warn!(module = self.module, error = %e, "relay failed; will retry");
                    }
                }
            }
            gauges.sample(self, poll).await;
            tokio::select! {
                Some(done) = window.pending.next(), if !window.pending.is_empty() => {
                    // With the others that are done too: one stamp for them all.
                    let mut settled = vec![done];
                    while let Some(Some(more)) = window.pending.next().now_or_never() {
                        settled.push(more);
                    }
                    match self.settle(settled, &mut window).await {
                        Ok(()) => {
                            failures = 0;
                            read_more |= held.take().is_some();
                        }
                        Err(e) => {
                            // The refused rows go again after the back-off.
                            failures = failures.saturating_add(1);
                            read_more = false;
                            tracing::warn!(module = self.module, error = %e, "relay failed; will retry");
                        }
                    }
                }
                () = self.wake.notified(), if failures == 0 => {
                    if window.pending.is_empty() {
                        read_more = true;
                    } else {
                        held.get_or_insert_with(|| tokio::time::Instant::now() + HOLD);
                    }
                }
                () = tokio::time::sleep_until(held.unwrap_or_else(tokio::time::Instant::now)), if held.is_some() => {
                    held = None;
                    read_more = true;
                }
                () = tokio::time::sleep(wait(failures, poll)) => read_more = true,
                () = shutdown.cancelled() => {
                    // What is in flight is accepted or refused first, then the last
                    // pass finds only rows nobody holds.
                    while let Some(done) = window.pending.next().await {
                        if let Err(e) = self.settle(vec![done], &mut window).await {
                            tracing::warn!(module = self.module, error = %e, "relay failed at shutdown");
                        }
                    }
                    self.final_pass(bus.as_ref()).await;
                    break;
                }
            }
        }
    }

    /// Reads the rows committed after the cursor, up to the window's room, and
    /// publishes them as one batch without waiting for it. `true` when the read was
    /// full (there may be more).
    async fn dispatch(&self, bus: &Arc<dyn Bus>, window: &mut Window) -> Result<bool, sqlx::Error> {
        let room = BATCH.min(IN_FLIGHT - window.rows.len());
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT rowid, id, envelope FROM outbox WHERE sent_at IS NULL AND rowid > $1 \
             ORDER BY rowid LIMIT $2",
        )
        .bind(window.cursor)
        .bind(i64::try_from(room).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let full = rows.len() == room;
        let mut batch = Dispatched::default();
        for (rowid, id, text) in rows {
            window.cursor = window.cursor.max(rowid);
            // Still in flight from before a refused batch moved the cursor back.
            if !window.rows.insert(rowid) {
                continue;
            }
            match serde_json::from_str::<Envelope>(&text) {
                Ok(envelope) => {
                    batch.row_of.push(batch.ids.len());
                    batch.envelopes.push(envelope);
                }
                Err(e) => {
                    tracing::error!(outbox_id = %id, error = %e, "skipping unreadable outbox row");
                }
            }
            batch.rowids.push(rowid);
            batch.ids.push(id);
        }
        if !batch.ids.is_empty() {
            self.count_dispatched(&batch.envelopes, true);
            let bus = Arc::clone(bus);
            window.pending.push(Box::pin(async move {
                batch.published = Some(bus.publish_batch(&batch.envelopes).await);
                batch
            }));
        }
        Ok(full)
    }

    /// Stamps what the bus accepted of dispatched batches (one UPDATE for all of
    /// them) and takes them out of the window; moves the cursor back to the first row
    /// not stamped (refused, or the stamp failed), so it is read again. The first
    /// refusal is the error.
    async fn settle(
        &self,
        batches: Vec<Dispatched>,
        window: &mut Window,
    ) -> Result<(), RelayError> {
        let mut stamp: Vec<String> = Vec::new();
        let mut first_row = i64::MAX;
        let mut refusal = None;
        for batch in batches {
            for rowid in &batch.rowids {
                window.rows.remove(rowid);
            }
            first_row = first_row.min(batch.rowids.first().copied().unwrap_or(i64::MAX));
            self.count_dispatched(&batch.envelopes, false);
            let Published { accepted, failure } = batch.published.unwrap_or_else(|| Published {
                accepted: 0,
                failure: Some(BusError::Unavailable("not published".to_owned())),
            });
            let stamped = match failure {
                Some(_) => batch
                    .row_of
                    .get(accepted)
                    .copied()
                    .unwrap_or(batch.ids.len()),
                None => batch.ids.len(),
            };
            if let Some(&first_refused) = batch.rowids.get(stamped) {
                window.cursor = window.cursor.min(first_refused - 1);
            }
            if refusal.is_none() {
                refusal = failure;
            }
            stamp.extend(batch.ids.into_iter().take(stamped));
        }
        let marked = match self.pool.acquire().await {
            Ok(mut conn) => Self::mark_sent(&mut conn, &stamp).await,
            Err(e) => Err(e),
        };
        if let Err(e) = marked {
            // Not stamped: read and published again (the inboxes absorb the repeat),
            // rather than left unsent behind the cursor until a restart.
            window.cursor = window.cursor.min(first_row.saturating_sub(1));
            return Err(e.into());
        }
        metrics::counter!("outbox_relayed_total", "module" => self.module)
            .increment(stamp.len() as u64);
        refusal.map_or(Ok(()), |e| Err(e.into()))
    }

    /// One last pass so a clean stop leaves nothing behind.
    async fn final_pass(&self, bus: &dyn Bus) {
        if let Err(e) = self.relay_once(bus).await {
            tracing::warn!(module = self.module, error = %e, "final relay pass failed");
        }
    }

    fn is_postgres(&self) -> bool {
        self.pool
            .connect_options()
            .database_url
            .scheme()
            .starts_with("postgres")
    }
}

/// Rows dispatched on a pipelined bus and not yet accepted, at most.
const IN_FLIGHT: usize = 1_000;

/// How long rows committed while batches are in flight wait for one of those to be
/// accepted before they are dispatched anyway. While every consumer keeps up, batches
/// settle well within it and the relay reads once per settle, gathering what was
/// committed meanwhile into one batch (as when it published one batch at a time:
/// fewer, larger inbox and stamp transactions); a consumer slower than this no
/// longer holds the others back by more than this.
const HOLD: Duration = Duration::from_millis(10);

/// A pipelined relay's state: the last rowid dispatched, the rows in flight and the
/// batches being published.
#[derive(Default)]
struct Window {
    cursor: i64,
    rows: BTreeSet<i64>,
    pending: FuturesUnordered<BoxFuture<'static, Dispatched>>,
}

/// One batch on its way: its rows, the envelopes read from them (where each one's
/// row is in `ids`), and once published, what the bus accepted.
#[derive(Default)]
struct Dispatched {
    rowids: Vec<i64>,
    ids: Vec<String>,
    envelopes: Vec<Envelope>,
    row_of: Vec<usize>,
    published: Option<Published>,
}

/// The relay's backlog gauges, at most once per `poll` (under load a pass follows
/// nearly every commit).
#[derive(Default)]
struct Gauges {
    sampled: Option<Instant>,
}

impl Gauges {
    async fn sample(&mut self, outbox: &Outbox, poll: Duration) {
        if self.sampled.is_some_and(|at| at.elapsed() < poll) {
            return;
        }
        self.sampled = Some(Instant::now());
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
}

/// How long the relay waits before its next pass: backing off while the bus is
/// failing, otherwise until `poll` (or a wake-up).
fn wait(failures: u32, poll: Duration) -> Duration {
    if failures > 0 {
        chassis_core::retry::backoff(failures, Duration::from_millis(100), Duration::from_secs(5))
    } else {
        poll
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox store failed")]
    Store(#[from] sqlx::Error),
    #[error("bus refused the event")]
    Bus(#[from] BusError),
}
