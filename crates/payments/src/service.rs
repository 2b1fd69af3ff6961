//! payments' use cases: charge, refund, get; the ledger totals the audit reads.

use std::sync::Arc;
use std::time::Duration;

use chassis::idempotency::{self, Begin};
use chassis::outbox::{Outbox, enqueue};
use contracts::payments::{
    ChargeRequest, Payment, PaymentCaptured, PaymentDeclined, PaymentError, PaymentRefunded,
    PaymentStatus, PaymentsApi, RefundRequest,
};
use sqlx::AnyPool;

use crate::provider::{PaymentProvider, ProviderError};

const CHARGE_SCOPE: &str = "charge";
const REFUND_SCOPE: &str = "refund";
/// The status codes stored with idempotency records: what an HTTP API would answer.
const STATUS_OK: u16 = 200;
const STATUS_DECLINED: u16 = 402;

/// Money in and out, from the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LedgerTotals {
    pub captured_cents: i64,
    pub refunded_cents: i64,
}

#[derive(Clone)]
pub struct PaymentsService {
    pool: AnyPool,
    outbox: Outbox,
    provider: Arc<dyn PaymentProvider>,
    /// How long one provider call may take before it counts as unavailable.
    timeout: Duration,
}

impl std::fmt::Debug for PaymentsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsService")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn store_err(e: impl std::fmt::Display) -> PaymentError {
    PaymentError::Unavailable(format!("payments store: {e}"))
}

type PaymentRow = (String, String, i64, i64, String, String);

fn payment(row: PaymentRow) -> Payment {
    let (id, order_id, amount_cents, refunded_cents, currency, status) = row;
    Payment {
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
    }
}

const PAYMENT_COLUMNS: &str = "id, order_id, amount_cents, refunded_cents, currency, status";

/// The stored outcome of a keyed request, replayed for repeats.
type Outcome = Result<Payment, PaymentError>;

fn replay(status: u16, body: &str) -> Outcome {
    match serde_json::from_str::<Outcome>(body) {
        Ok(outcome) => outcome,
        Err(_) if status == STATUS_DECLINED => Err(PaymentError::Declined("declined".into())),
        Err(e) => Err(store_err(e)),
    }
}

/// Appends one money movement to the ledger, in the caller's transaction.
async fn ledger_entry(
    conn: &mut sqlx::AnyConnection,
    payment_id: &str,
    order_id: &str,
    kind: &str,
    amount_cents: i64,
    key: &str,
    now: i64,
) -> Result<(), PaymentError> {
    sqlx::query(
        "INSERT INTO ledger (id, payment_id, order_id, kind, amount_cents, idempotency_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(chassis::id::new_id())
    .bind(payment_id)
    .bind(order_id)
    .bind(kind)
    .bind(amount_cents)
    .bind(key)
    .bind(now)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(store_err)
}

impl PaymentsService {
    /// Claims an idempotency key. `Some` is the answer for a key used before (the
    /// stored outcome, a mismatch, or still in progress); `None`: go ahead.
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<Outcome>, PaymentError> {
        Ok(
            match idempotency::begin(&self.pool, scope, key, hash, self.lease())
                .await
                .map_err(store_err)?
            {
                Begin::Proceed => None,
                Begin::Replay { status, body } => Some(replay(status, &body)),
                Begin::Mismatch => Some(Err(PaymentError::KeyMismatch)),
                Begin::InProgress => Some(Err(PaymentError::InProgress)),
            },
        )
    }

    pub fn new(
        pool: AnyPool,
        outbox: Outbox,
        provider: Arc<dyn PaymentProvider>,
        timeout: Duration,
    ) -> Self {
        Self {
            pool,
            outbox,
            provider,
            timeout,
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A crashed request's key is taken over after this long.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(1)
    }

    pub async fn totals(&self) -> Result<LedgerTotals, sqlx::Error> {
        // SUM over BIGINT is NUMERIC on PostgreSQL, which the Any driver cannot
        // decode: cast back (a no-op on SQLite).
        let (captured, refunded): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT CAST(SUM(CASE WHEN kind = 'capture' THEN amount_cents ELSE 0 END) AS BIGINT), \
                    CAST(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) AS BIGINT) \
             FROM ledger",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(LedgerTotals {
            captured_cents: captured.unwrap_or(0),
            refunded_cents: refunded.unwrap_or(0),
        })
    }

    /// Captured minus refunded, per order (for the audit).
    pub async fn net_by_order(&self) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, \
                    CAST(SUM(CASE WHEN kind = 'capture' THEN amount_cents ELSE 0 END) AS BIGINT), \
                    CAST(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) AS BIGINT) \
             FROM ledger GROUP BY order_id",
        )
        .fetch_all(&self.pool)
        .await
    }

    fn validate_charge(req: &ChargeRequest) -> Result<(), PaymentError> {
        if req.idempotency_key.is_empty() || req.idempotency_key.len() > 255 {
            return Err(PaymentError::Invalid(
                "idempotency_key must be 1 to 255 characters".into(),
            ));
        }
        let req = &req;
        if req.amount_cents <= 0 {
            return Err(PaymentError::Invalid(
                "amount_cents must be positive".into(),
            ));
        }
        if req.currency != chassis::money::CURRENCY {
            return Err(PaymentError::Invalid(format!(
                "currency must be {}",
                chassis::money::CURRENCY
            )));
        }
        if req.payment_token.is_empty() {
            return Err(PaymentError::Invalid("payment_token is required".into()));
        }
        Ok(())
    }

    async fn record_capture(
        &self,
        req: &ChargeRequest,
        reference: &str,
    ) -> Result<Payment, PaymentError> {
        let now = chassis::time::now_micros();
        let payment = Payment {
            id: chassis::id::new_id(),
            order_id: req.order_id.clone(),
            amount_cents: req.amount_cents,
            refunded_cents: 0,
            currency: req.currency.clone(),
            status: PaymentStatus::Captured,
        };
        let body = serde_json::to_string(&Outcome::Ok(payment.clone())).map_err(store_err)?;
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        sqlx::query(
            "INSERT INTO payments (id, order_id, idempotency_key, amount_cents, refunded_cents, currency, status, provider_ref, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, $5, 'captured', $6, $7, $7)",
        )
        .bind(&payment.id)
        .bind(&payment.order_id)
        .bind(&req.idempotency_key)
        .bind(payment.amount_cents)
        .bind(&payment.currency)
        .bind(reference)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        ledger_entry(
            &mut tx,
            &payment.id,
            &payment.order_id,
            "capture",
            payment.amount_cents,
            &req.idempotency_key,
            now,
        )
        .await?;
        enqueue(
            &mut tx,
            &PaymentCaptured {
                payment_id: payment.id.clone(),
                order_id: payment.order_id.clone(),
                amount_cents: payment.amount_cents,
                currency: payment.currency.clone(),
            },
        )
        .await
        .map_err(store_err)?;
        idempotency::complete(
            &mut *tx,
            CHARGE_SCOPE,
            &req.idempotency_key,
            STATUS_OK,
            &body,
        )
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        self.outbox.wake();
        metrics::counter!("payments_captured_total").increment(1);
        metrics::counter!("payments_captured_cents_total")
            .increment(u64::try_from(payment.amount_cents).unwrap_or(0));
        Ok(payment)
    }

    async fn record_decline(&self, req: &ChargeRequest, reason: &str) -> Result<(), PaymentError> {
        let outcome: Outcome = Err(PaymentError::Declined(reason.to_owned()));
        let body = serde_json::to_string(&outcome).map_err(store_err)?;
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        idempotency::complete(
            &mut *tx,
            CHARGE_SCOPE,
            &req.idempotency_key,
            STATUS_DECLINED,
            &body,
        )
        .await
        .map_err(store_err)?;
        enqueue(
            &mut tx,
            &PaymentDeclined {
                order_id: req.order_id.clone(),
                amount_cents: req.amount_cents,
                reason: reason.to_owned(),
            },
        )
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        self.outbox.wake();
        metrics::counter!("payments_declined_total").increment(1);
        Ok(())
    }

    async fn load(&self, payment_id: &str) -> Result<Payment, PaymentError> {
        let row: Option<PaymentRow> = sqlx::query_as(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
        ))
        .bind(payment_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_err)?;
        row.map(payment)
            .ok_or_else(|| PaymentError::NotFound(payment_id.to_owned()))
    }

    async fn provider_ref(&self, payment_id: &str) -> Result<String, PaymentError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT provider_ref FROM payments WHERE id = $1")
                .bind(payment_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
        row.map(|(r,)| r)
            .ok_or_else(|| PaymentError::NotFound(payment_id.to_owned()))
    }
}

#[async_trait::async_trait]
impl PaymentsApi for PaymentsService {
    #[tracing::instrument(skip_all, fields(order_id = %req.order_id, key = %req.idempotency_key))]
    async fn charge(&self, req: ChargeRequest) -> Result<Payment, PaymentError> {
        let req = &req;
        Self::validate_charge(req)?;
        let amount = req.amount_cents.to_string();
        let hash =
            idempotency::fingerprint(&[&req.order_id, &amount, &req.currency, &req.payment_token]);
        if let Some(earlier) = self
            .claim(CHARGE_SCOPE, &req.idempotency_key, &hash)
            .await?
        {
            return earlier;
        }
        let call = self.provider.charge(
            &req.payment_token,
            req.amount_cents,
            &req.currency,
            &req.idempotency_key,
        );
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProviderError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        match outcome {
            Ok(reference) => self.record_capture(req, &reference).await,
            Err(ProviderError::Declined(reason)) => {
                self.record_decline(req, &reason).await?;
                Err(PaymentError::Declined(reason))
            }
            Err(ProviderError::Unavailable(reason)) => {
                // Not a result: release the key so a retry asks the provider again
                // (with the same key, so it cannot charge twice).
                metrics::counter!("payments_provider_unavailable_total").increment(1);
                tracing::warn!(reason = %reason, "payment provider unavailable");
                idempotency::abandon(&self.pool, CHARGE_SCOPE, &req.idempotency_key)
                    .await
                    .map_err(store_err)?;
                Err(PaymentError::Unavailable(reason))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(payment_id = %req.payment_id, key = %req.idempotency_key))]
    async fn refund(&self, req: RefundRequest) -> Result<Payment, PaymentError> {
        let req = &req;
        if req.amount_cents <= 0 {
            return Err(PaymentError::Invalid(
                "amount_cents must be positive".into(),
            ));
        }
        let amount = req.amount_cents.to_string();
        let hash = idempotency::fingerprint(&[&req.payment_id, &amount]);
        if let Some(earlier) = self
            .claim(REFUND_SCOPE, &req.idempotency_key, &hash)
            .await?
        {
            return earlier;
        }
        let result = self.refund_inner(req).await;
        if result.is_err() {
            idempotency::abandon(&self.pool, REFUND_SCOPE, &req.idempotency_key)
                .await
                .map_err(store_err)?;
        }
        result
    }

    async fn get(&self, payment_id: String) -> Result<Payment, PaymentError> {
        self.load(&payment_id).await
    }

    async fn find_by_order(&self, order_id: String) -> Result<Option<Payment>, PaymentError> {
        let row: Option<PaymentRow> = sqlx::query_as(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_at LIMIT 1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(row.map(payment))
    }
}

impl PaymentsService {
    async fn refund_inner(&self, req: &RefundRequest) -> Result<Payment, PaymentError> {
        let current = self.load(&req.payment_id).await?;
        if req.amount_cents > current.amount_cents - current.refunded_cents {
            return Err(PaymentError::Invalid(
                "refund exceeds the captured amount not yet refunded".into(),
            ));
        }
        let reference = self.provider_ref(&req.payment_id).await?;
        match tokio::time::timeout(
            self.timeout,
            self.provider
                .refund(&reference, req.amount_cents, &req.idempotency_key),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(PaymentError::Unavailable(e.to_string())),
            Err(_) => return Err(PaymentError::Unavailable("refund timed out".into())),
        }
        let now = chassis::time::now_micros();
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        // Conditional on the remaining amount: concurrent refunds cannot overdraw.
        let updated = sqlx::query(
            "UPDATE payments SET refunded_cents = refunded_cents + $1, \
                 status = CASE WHEN refunded_cents + $1 = amount_cents THEN 'refunded' ELSE 'partially_refunded' END, \
                 updated_at = $2 \
             WHERE id = $3 AND refunded_cents + $1 <= amount_cents",
        )
        .bind(req.amount_cents)
        .bind(now)
        .bind(&req.payment_id)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?
        .rows_affected();
        if updated == 0 {
            return Err(PaymentError::Invalid(
                "refund exceeds the captured amount not yet refunded".into(),
            ));
        }
        ledger_entry(
            &mut tx,
            &req.payment_id,
            &current.order_id,
            "refund",
            req.amount_cents,
            &format!("refund:{}", req.idempotency_key),
            now,
        )
        .await?;
        enqueue(
            &mut tx,
            &PaymentRefunded {
                payment_id: req.payment_id.clone(),
                order_id: current.order_id.clone(),
                amount_cents: req.amount_cents,
                currency: current.currency.clone(),
            },
        )
        .await
        .map_err(store_err)?;
        let row: PaymentRow = sqlx::query_as(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
        ))
        .bind(&req.payment_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_err)?;
        let refunded = payment(row);
        let body = serde_json::to_string(&Outcome::Ok(refunded.clone())).map_err(store_err)?;
        idempotency::complete(
            &mut *tx,
            REFUND_SCOPE,
            &req.idempotency_key,
            STATUS_OK,
            &body,
        )
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        self.outbox.wake();
        metrics::counter!("payments_refunded_total").increment(1);
        Ok(refunded)
    }
}
