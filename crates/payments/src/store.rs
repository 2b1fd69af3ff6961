//! The payments store: the [`PaymentStore`] port and its SQL adapter. The adapter
//! writes what `domain` decided; each record (payment or refund, its ledger entry,
//! its event in the outbox and the answer stored under its key) is one transaction.

use std::time::Duration;

use chassis::events::DomainEvent;
use chassis::idempotency::{self, Begin};
use chassis::outbox::{Outbox, OutboxError, enqueue};
use contracts::payments::{Payment, PaymentStatus};
use sqlx::{AnyConnection, AnyPool};

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
    outbox: Outbox,
}

impl SqlPayments {
    /// `outbox` is the module's (over the same pool): its relay is woken after each
    /// record.
    pub fn new(pool: AnyPool, outbox: Outbox) -> Self {
        Self { pool, outbox }
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

    /// Ends a record: its event into the outbox and its answer under its key, in its
    /// transaction, then commits and wakes the relay.
    async fn finish<E: DomainEvent>(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        event: &E,
        scope: Scope,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        enqueue(&mut tx, event).await?;
        idempotency::complete(&mut *tx, scope.as_str(), key, answer.status, &answer.body).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(())
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
async fn append(
    conn: &mut AnyConnection,
    entry: &LedgerEntry,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger (id, payment_id, order_id, kind, amount_cents, idempotency_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(chassis::id::new_id())
    .bind(&entry.payment_id)
    .bind(&entry.order_id)
    .bind(entry.kind.as_str())
    .bind(entry.amount.cents())
    .bind(&entry.key)
    .bind(now)
    .execute(conn)
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
        Ok(idempotency::begin(&self.pool, scope.as_str(), key, fingerprint, lease).await?)
    }

    async fn release(&self, scope: Scope, key: &str) -> Result<(), StoreError> {
        Ok(idempotency::abandon(&self.pool, scope.as_str(), key).await?)
    }

    async fn record_capture(&self, capture: &Capture) -> Result<(), StoreError> {
        let now = chassis::time::now_micros();
        let payment = &capture.payment;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO payments (id, order_id, idempotency_key, amount_cents, refunded_cents, currency, status, provider_ref, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&payment.id)
        .bind(&payment.order_id)
        .bind(&capture.key)
        .bind(payment.amount_cents)
        .bind(payment.refunded_cents)
        .bind(&payment.currency)
        .bind(status_str(payment.status))
        .bind(&capture.provider_ref)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append(&mut tx, &capture.entry, now).await?;
        self.finish(
            tx,
            &capture.event,
            Scope::Charge,
            &capture.key,
            &capture.answer,
        )
        .await
    }

    async fn record_decline(&self, decline: &Decline) -> Result<(), StoreError> {
        let tx = self.pool.begin().await?;
        self.finish(
            tx,
            &decline.event,
            Scope::Charge,
            &decline.key,
            &decline.answer,
        )
        .await
    }

    async fn record_refund(&self, refund: &RefundRecord) -> Result<RefundWrite, StoreError> {
        let now = chassis::time::now_micros();
        let payment = &refund.payment;
        let mut tx = self.pool.begin().await?;
        // Only over the balance the refund was decided on: a concurrent refund in
        // between makes this one decide again instead of overdrawing.
        let updated = sqlx::query(
            "UPDATE payments SET refunded_cents = $1, status = $2, updated_at = $3 \
             WHERE id = $4 AND refunded_cents = $5",
        )
        .bind(payment.refunded_cents)
        .bind(status_str(payment.status))
        .bind(now)
        .bind(&payment.id)
        .bind(refund.refunded_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(RefundWrite::Stale);
        }
        append(&mut tx, &refund.entry, now).await?;
        self.finish(
            tx,
            &refund.event,
            Scope::Refund,
            &refund.key,
            &refund.answer,
        )
        .await?;
        Ok(RefundWrite::Written)
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
