//! The payments store: the [`PaymentStore`] port and its SQL adapter. The adapter
//! writes what `domain` decided; each record (payment or refund, its ledger entry,
//! its event in the outbox and the answer stored under its key) is one transaction.

use std::time::Duration;

use chassis::events::DomainEvent;
use chassis::idempotency::{self, Begin};
use chassis::outbox::{Outbox, OutboxError, enqueue_in, envelope};
use chassis::store::{Arg, Statements, Store, UnitFuture};
use contracts::payments::{Payment, PaymentStatus};
use sqlx::AnyPool;

use crate::domain::{
    Capture, Decline, LedgerEntry, LedgerTotals, RefundRecord, Scope, StoredAnswer,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// A payment as stored, with the provider's reference refunds need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayment {
    pub payment: Payment,
    pub provider_ref: String,
}

/// Whether a refund was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundWrite {
    Written,
    /// The payment's refunded amount changed since it was read (a concurrent
    /// refund): nothing was written; read it again and decide again.
    Stale,
}

/// What the use cases need from storage.
#[async_trait::async_trait]
pub trait PaymentStore: Send + Sync {
    /// Claims an idempotency key for a request with this fingerprint; a claim older
    /// than `lease` is taken over (see `chassis::idempotency`).
    async fn claim(
        &self,
        scope: Scope,
        key: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<Begin, StoreError>;
    /// Gives a claimed key up without an answer: a retry runs again.
    async fn release(&self, scope: Scope, key: &str) -> Result<(), StoreError>;
    async fn record_capture(&self, capture: &Capture) -> Result<(), StoreError>;
    async fn record_decline(&self, decline: &Decline) -> Result<(), StoreError>;
    async fn record_refund(&self, refund: &RefundRecord) -> Result<RefundWrite, StoreError>;
    async fn payment(&self, payment_id: &str) -> Result<Option<StoredPayment>, StoreError>;
    /// The first payment captured for an order.
    async fn payment_for_order(&self, order_id: &str) -> Result<Option<Payment>, StoreError>;
    /// The ledger's sums.
    async fn totals(&self) -> Result<LedgerTotals, sqlx::Error>;
    /// The ledger's sums per order: (order id, captured, refunded).
    async fn net_by_order(&self) -> Result<Vec<(String, i64, i64)>, sqlx::Error>;
}

#[derive(Debug, Clone)]
pub struct SqlPayments {
    pool: AnyPool,
    /// Claims and records go through its writer (ADR 0019).
    store: Store,
    outbox: Outbox,
}

impl SqlPayments {
    /// `outbox` is the module's (over the same store): its relay is woken after each
    /// record.
    pub fn new(store: Store, outbox: Outbox) -> Self {
        Self {
            pool: store.pool().clone(),
            store,
            outbox,
        }
    }

    /// The oldest payment matching `condition` (over `$1` = `value`).
    async fn first(
        &self,
        condition: &str,
        value: &str,
    ) -> Result<Option<StoredPayment>, StoreError> {
        let row: Option<PaymentRow> = sqlx::query_as(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE {condition} ORDER BY created_at LIMIT 1"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(stored))
    }

    /// Writes a record in one unit of the store's writer: `effect` (its rows; false:
    /// nothing to record, the unit ends there), then its event into the outbox and its
    /// answer under its key; wakes the relay once committed.
    async fn record<E, F>(
        &self,
        event: &E,
        scope: Scope,
        key: &str,
        answer: &StoredAnswer,
        effect: F,
    ) -> Result<bool, StoreError>
    where
        E: DomainEvent,
        F: for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, bool, sqlx::Error>
            + Send
            + 'static,
    {
        // Built here, on the request's task (its trace context).
        let envelope = envelope(event)?;
        let key = key.to_owned();
        let answer = answer.clone();
        let written = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    if !effect(&mut *tx).await? {
                        return Ok(false);
                    }
                    enqueue_in(tx, &envelope).await?;
                    idempotency::complete_in(tx, scope.as_str(), &key, answer.status, &answer.body)
                        .await?;
                    Ok::<_, StoreError>(true)
                })
            })
            .await?;
        if written {
            self.outbox.wake();
        }
        Ok(written)
    }
}

type PaymentRow = (String, String, i64, i64, String, String, String);

const PAYMENT_COLUMNS: &str =
    "id, order_id, amount_cents, refunded_cents, currency, status, provider_ref";

fn status_str(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Captured => "captured",
        PaymentStatus::PartiallyRefunded => "partially_refunded",
        PaymentStatus::Refunded => "refunded",
    }
}

fn stored(row: PaymentRow) -> StoredPayment {
    let (id, order_id, amount_cents, refunded_cents, currency, status, provider_ref) = row;
    StoredPayment {
        payment: Payment {
            id,
            order_id,
            amount_cents,
            refunded_cents,
            currency,
            status: match status.as_str() {
                "refunded" => PaymentStatus::Refunded,
                "partially_refunded" => PaymentStatus::PartiallyRefunded,
                _ => PaymentStatus::Captured,
            },
        },
        provider_ref,
    }
}

/// Appends one money movement to the ledger, in the caller's transaction.
async fn append(tx: &mut dyn Statements, entry: &LedgerEntry, now: i64) -> Result<(), sqlx::Error> {
    tx.run(
        "INSERT INTO ledger (id, payment_id, order_id, kind, amount_cents, idempotency_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Arg::from(&chassis::id::new_id()),
            Arg::from(&entry.payment_id),
            Arg::from(&entry.order_id),
            Arg::from(entry.kind.as_str()),
            Arg::from(entry.amount.cents()),
            Arg::from(&entry.key),
            Arg::from(now),
        ],
    )
    .await
    .map(|_| ())
}

// SUM over BIGINT is NUMERIC on PostgreSQL, which the Any driver cannot decode: cast
// back (a no-op on SQLite).
const SUMS: &str = "CAST(SUM(CASE WHEN kind = 'capture' THEN amount_cents ELSE 0 END) AS BIGINT), \
                    CAST(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) AS BIGINT)";

#[async_trait::async_trait]
impl PaymentStore for SqlPayments {
    async fn claim(
        &self,
        scope: Scope,
        key: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        Ok(idempotency::begin(&self.store, scope.as_str(), key, fingerprint, lease).await?)
    }

    async fn release(&self, scope: Scope, key: &str) -> Result<(), StoreError> {
        Ok(idempotency::abandon(&self.store, scope.as_str(), key).await?)
    }

    async fn record_capture(&self, capture: &Capture) -> Result<(), StoreError> {
        let now = chassis::time::now_micros();
        let payment = capture.payment.clone();
        let (key, provider_ref, entry) = (
            capture.key.clone(),
            capture.provider_ref.clone(),
            capture.entry.clone(),
        );
        self.record(
            &capture.event,
            Scope::Charge,
            &capture.key,
            &capture.answer,
            move |tx| {
                Box::pin(async move {
                    tx.run(
                        "INSERT INTO payments (id, order_id, idempotency_key, amount_cents, refunded_cents, currency, status, provider_ref, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                        &[
                            Arg::from(&payment.id),
                            Arg::from(&payment.order_id),
                            Arg::from(&key),
                            Arg::from(payment.amount_cents),
                            Arg::from(payment.refunded_cents),
                            Arg::from(&payment.currency),
                            Arg::from(status_str(payment.status)),
                            Arg::from(&provider_ref),
                            Arg::from(now),
                        ],
                    )
                    .await?;
                    append(tx, &entry, now).await?;
                    Ok(true)
                })
            },
        )
        .await
        .map(|_| ())
    }

    async fn record_decline(&self, decline: &Decline) -> Result<(), StoreError> {
        self.record(
            &decline.event,
            Scope::Charge,
            &decline.key,
            &decline.answer,
            |_| Box::pin(async { Ok(true) }),
        )
        .await
        .map(|_| ())
    }

    async fn record_refund(&self, refund: &RefundRecord) -> Result<RefundWrite, StoreError> {
        let now = chassis::time::now_micros();
        let payment = refund.payment.clone();
        let (refunded_before, entry) = (refund.refunded_before, refund.entry.clone());
        let written = self
            .record(
                &refund.event,
                Scope::Refund,
                &refund.key,
                &refund.answer,
                move |tx| {
                    Box::pin(async move {
                        // Only over the balance the refund was decided on: a concurrent
                        // refund in between makes this one decide again instead of
                        // overdrawing.
                        let updated = tx
                            .run(
                                "UPDATE payments SET refunded_cents = $1, status = $2, updated_at = $3 \
                                 WHERE id = $4 AND refunded_cents = $5",
                                &[
                                    Arg::from(payment.refunded_cents),
                                    Arg::from(status_str(payment.status)),
                                    Arg::from(now),
                                    Arg::from(&payment.id),
                                    Arg::from(refunded_before),
                                ],
                            )
                            .await?;
                        if updated == 0 {
                            return Ok(false);
                        }
                        append(tx, &entry, now).await?;
                        Ok(true)
                    })
                },
            )
            .await?;
        Ok(if written {
            RefundWrite::Written
        } else {
            RefundWrite::Stale
        })
    }

    async fn payment(&self, payment_id: &str) -> Result<Option<StoredPayment>, StoreError> {
        self.first("id = $1", payment_id).await
    }

    async fn payment_for_order(&self, order_id: &str) -> Result<Option<Payment>, StoreError> {
        Ok(self
            .first("order_id = $1", order_id)
            .await?
            .map(|stored| stored.payment))
    }

    async fn totals(&self) -> Result<LedgerTotals, sqlx::Error> {
        let (captured, refunded): (Option<i64>, Option<i64>) =
            sqlx::query_as(&format!("SELECT {SUMS} FROM ledger"))
                .fetch_one(&self.pool)
                .await?;
        Ok(LedgerTotals {
            captured_cents: captured.unwrap_or(0),
            refunded_cents: refunded.unwrap_or(0),
        })
    }

    async fn net_by_order(&self) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT order_id, {SUMS} FROM ledger GROUP BY order_id"
        ))
        .fetch_all(&self.pool)
        .await
    }
}
