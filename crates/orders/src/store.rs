//! The order store: an append-only event table with per-order sequence numbers
//! (optimistic concurrency through the primary key), the read projection rewritten in
//! the same transaction, and the public events written to the outbox there too.

use chassis::events::Envelope;
use chassis::outbox::{OutboxError, enqueue_in, envelope};
use chassis::page::Cursor;
use chassis::store::{Arg, PageOrder, Statements, Store, is_unique_violation, keyset_page};
use sqlx::AnyPool;

use crate::domain::{Event, Line, Order, Status, apply};
use crate::published::{Published, published};

/// One stored event.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sequence: u64,
    pub occurred_at: i64,
    pub event: Event,
}

/// The projection row the read routes serve.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: String,
    pub user_id: String,
    pub status: Status,
    pub total_cents: i64,
    pub currency: String,
    pub lines: Vec<Line>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One order, for `bazaar audit`.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: String,
    pub status: Status,
    pub saga_open: bool,
    pub total_cents: i64,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone appended first: reload and decide again.
    #[error("concurrent update of the order")]
    Conflict,
    /// The idempotency key already placed this other order.
    #[error("the key already placed order {0}")]
    KeyTaken(String),
    #[error("order store failed")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Debug, Clone)]
pub struct SqlOrders {
    store: Store,
    pool: AnyPool,
}

type SummaryRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    i64,
    i64,
);
const SUMMARY_COLUMNS: &str =
    "id, user_id, status, total_cents, currency, lines, failure_reason, created_at, updated_at";

fn summary(row: SummaryRow) -> Summary {
    let (id, user_id, status, total_cents, currency, lines, failure_reason, created_at, updated_at) =
        row;
    Summary {
        id,
        user_id,
        status: Status::parse(&status).unwrap_or(Status::Pending),
        total_cents,
        currency,
        lines: serde_json::from_str(&lines).unwrap_or_default(),
        failure_reason,
        created_at,
        updated_at,
    }
}

/// The contract events other modules hear about, for the domain events just appended,
/// in their envelopes (built here, on the caller's task, with its trace context).
fn envelopes(after: &Order, events: &[Event]) -> Result<Vec<Envelope>, AppendError> {
    published(after, events)
        .into_iter()
        .map(|event| match event {
            Published::Placed(e) => envelope(&e),
            Published::Confirmed(e) => envelope(&e),
            Published::Failed(e) => envelope(&e),
            Published::Cancelled(e) => envelope(&e),
        })
        .collect::<Result<_, _>>()
        .map_err(AppendError::from)
}

/// Records that (user, key) placed `order_id`; `KeyTaken` if it placed another.
async fn claim_key(
    tx: &mut dyn Statements,
    user_id: &str,
    idem_key: &str,
    order_id: &str,
) -> Result<(), AppendError> {
    let claimed = tx
        .run(
            "INSERT INTO order_keys (user_id, idem_key, order_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, idem_key) DO NOTHING",
            &[user_id.into(), idem_key.into(), order_id.into()],
        )
        .await?;
    if claimed == 0 {
        let existing = tx
            .fetch_text(
                "SELECT order_id FROM order_keys WHERE user_id = $1 AND idem_key = $2",
                &[user_id.into(), idem_key.into()],
            )
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        return Err(AppendError::KeyTaken(existing));
    }
    Ok(())
}

/// Rewrites the order's projection row (none before it is placed).
async fn project(tx: &mut dyn Statements, order: &Order, now: i64) -> Result<(), AppendError> {
    let Some(placed) = &order.placed else {
        return Ok(());
    };
    tx.run(
        "INSERT INTO orders (id, user_id, status, saga_open, total_cents, currency, lines, failure_reason, payment_id, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, saga_open = excluded.saga_open, \
             failure_reason = excluded.failure_reason, payment_id = excluded.payment_id, \
             version = excluded.version, updated_at = excluded.updated_at",
        &[
            Arg::from(&order.id),
            Arg::from(&placed.user_id),
            Arg::from(order.status().as_str()),
            Arg::from(i64::from(order.saga_open())),
            Arg::from(placed.total_cents),
            Arg::from(&placed.currency),
            Arg::from(&serde_json::to_string(&placed.lines)?),
            Arg::from(order.failure_reason.as_deref()),
            Arg::from(order.payment_id.as_deref()),
            Arg::from(i64::try_from(order.version).unwrap_or(i64::MAX)),
            Arg::from(now),
        ],
    )
    .await?;
    Ok(())
}

impl SqlOrders {
    pub fn new(store: Store) -> Self {
        Self {
            pool: store.pool().clone(),
            store,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The store, whose writer also takes the placement's idempotency key.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The order's events in sequence order (empty if it does not exist).
    pub async fn events(&self, order_id: &str) -> Result<Vec<Stored>, sqlx::Error> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT sequence, data, occurred_at FROM order_events WHERE order_id = $1 ORDER BY sequence",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(sequence, data, occurred_at)| {
                let event: Event =
                    serde_json::from_str(&data).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok(Stored {
                    sequence: u64::try_from(sequence).unwrap_or(0),
                    occurred_at,
                    event,
                })
            })
            .collect()
    }

    /// The order rebuilt from its events; `None` if it does not exist.
    pub async fn load(&self, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
        let events = self.events(order_id).await?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            events
                .iter()
                .fold(Order::new(order_id), |o, s| apply(o, &s.event)),
        ))
    }

    /// Appends `events` after `before.version`, updates the projection and writes the
    /// public events, atomically. `key`: the (user, Idempotency-Key) that placed it.
    /// One unit of the store's writer on SQLite (ADR 0019), a pooled transaction on
    /// PostgreSQL: the same statements either way.
    pub async fn append(
        &self,
        before: &Order,
        events: &[Event],
        key: Option<(&str, &str)>,
    ) -> Result<Order, AppendError> {
        let now = chassis::time::now_micros();
        // Everything the unit writes is prepared here; the unit only runs statements.
        let mut after = before.clone();
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let sequence = i64::try_from(after.version + 1).unwrap_or(i64::MAX);
            rows.push((sequence, event.name(), serde_json::to_string(event)?));
            after = apply(after, event);
        }
        let outgoing = envelopes(&after, events)?;
        let key = key.map(|(user_id, idem_key)| (user_id.to_owned(), idem_key.to_owned()));
        let order_id = before.id.clone();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    for (sequence, name, data) in &rows {
                        // Write first; the primary key turns a concurrent append into
                        // a conflict instead of a fork.
                        let inserted = tx
                            .run(
                                "INSERT INTO order_events (order_id, sequence, event_type, data, occurred_at) \
                                 VALUES ($1, $2, $3, $4, $5)",
                                &[
                                    Arg::from(&order_id),
                                    Arg::from(*sequence),
                                    Arg::from(*name),
                                    Arg::from(data),
                                    Arg::from(now),
                                ],
                            )
                            .await;
                        match inserted {
                            Ok(_) => {}
                            Err(e) if is_unique_violation(&e) => return Err(AppendError::Conflict),
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if let Some((user_id, idem_key)) = &key {
                        claim_key(tx, user_id, idem_key, &order_id).await?;
                    }
                    project(tx, &after, now).await?;
                    for envelope in &outgoing {
                        enqueue_in(tx, envelope).await?;
                    }
                    Ok(after)
                })
            })
            .await
    }

    pub async fn summary(&self, order_id: &str) -> Result<Option<Summary>, sqlx::Error> {
        let row: Option<SummaryRow> = sqlx::query_as(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM orders WHERE id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(summary))
    }

    /// A user's orders, newest first.
    pub async fn list_for_user(
        &self,
        user_id: &str,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<Summary>, bool), sqlx::Error> {
        let (rows, more) = keyset_page::<SummaryRow>(
            &self.pool,
            &format!("SELECT {SUMMARY_COLUMNS} FROM orders WHERE 1 = 1"),
            Some(("user_id = $1", user_id)),
            before.map(Cursor::last_id),
            PageOrder::NewestFirst,
            limit,
        )
        .await?;
        Ok((rows.into_iter().map(summary).collect(), more))
    }

    /// Takes (or renews) the lease on driving `order_id` for `holder` until
    /// `expires_at`: true when it is `holder`'s now, false while another holder's
    /// lease runs. One statement, so two claimants cannot both win.
    pub async fn claim_saga(
        &self,
        order_id: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, sqlx::Error> {
        let claimed = sqlx::query(
            "INSERT INTO saga_leases (order_id, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (order_id) DO UPDATE SET holder = $2, expires_at = $3 \
             WHERE saga_leases.holder = $2 OR saga_leases.expires_at < $4",
        )
        .bind(order_id)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed > 0)
    }

    /// Gives up `holder`'s lease on `order_id` (its saga is done, or stopped here).
    pub async fn release_saga(&self, order_id: &str, holder: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM saga_leases WHERE order_id = $1 AND holder = $2")
            .bind(order_id)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Orders whose saga still has work, least recently touched first.
    pub async fn open_orders(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM orders WHERE saga_open = 1 ORDER BY updated_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// How many orders are in each status.
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
            .fetch_all(&self.pool)
            .await
    }

    /// How many orders have a saga with work left.
    pub async fn count_open(&self) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE saga_open = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Open orders with their projection times (placed, last event), least recently
    /// touched first.
    pub async fn open_with_times(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, status, created_at, updated_at FROM orders WHERE saga_open = 1 \
             ORDER BY updated_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn order_for_key(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT order_id FROM order_keys WHERE user_id = $1 AND idem_key = $2")
                .bind(user_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Every order as the audit needs it.
    pub async fn audit_rows(&self) -> Result<Vec<AuditRow>, sqlx::Error> {
        let rows: Vec<(String, String, i64, i64, i64)> =
            sqlx::query_as("SELECT id, status, saga_open, total_cents, updated_at FROM orders")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, status, saga_open, total_cents, updated_at)| AuditRow {
                    id,
                    status: Status::parse(&status).unwrap_or(Status::Pending),
                    saga_open: saga_open != 0,
                    total_cents,
                    updated_at,
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use testkit::delivery::TestStore;

    use super::SqlOrders;

    async fn one_holder_at_a_time(orders: &SqlOrders) {
        assert!(orders.claim_saga("o1", "a", 100, 200).await.unwrap());
        // a's lease runs: b cannot take it; a renews it.
        assert!(!orders.claim_saga("o1", "b", 150, 250).await.unwrap());
        assert!(orders.claim_saga("o1", "a", 150, 250).await.unwrap());
        assert!(orders.claim_saga("o2", "b", 150, 250).await.unwrap());
        // Lapsed: anyone may take it.
        assert!(orders.claim_saga("o1", "b", 251, 400).await.unwrap());
        // Only the holder gives it up.
        orders.release_saga("o1", "a").await.unwrap();
        assert!(!orders.claim_saga("o1", "c", 300, 500).await.unwrap());
        orders.release_saga("o1", "b").await.unwrap();
        assert!(orders.claim_saga("o1", "c", 300, 500).await.unwrap());
    }

    #[tokio::test]
    async fn a_saga_lease_has_one_holder_at_a_time_until_it_lapses() {
        let store = TestStore::migrated("orders", &crate::MIGRATOR).await;
        one_holder_at_a_time(&SqlOrders::new((*store).clone())).await;
        if let Some(store) = TestStore::postgres("saga_lease_on_postgres", "orders").await {
            store.migrate(&crate::MIGRATOR).await.unwrap();
            one_holder_at_a_time(&SqlOrders::new((*store).clone())).await;
        }
    }
}
