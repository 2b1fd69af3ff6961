//! payments' use cases: charge, refund, get; the ledger totals the audit reads. Each
//! asks `domain` what to do and the [`PaymentStore`] port to record it; the provider
//! is called in between.

use std::sync::Arc;
use std::time::Duration;

use contracts::payments::{ChargeRequest, Payment, PaymentError, PaymentsApi, RefundRequest};

use crate::domain::{self, Charge, Charged, Claim, LedgerTotals, Refund, Scope};
use crate::provider::{PaymentProvider, ProviderError};
use crate::store::{PaymentStore, RefundWrite};

/// Concurrent refunds of one payment decide again after losing a race; this many
/// times at most before answering "unavailable" (retry with the same key).
const REFUND_ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct PaymentsService {
    store: Arc<dyn PaymentStore>,
    provider: Arc<dyn PaymentProvider>,
    /// How long one provider call may take before it counts as unavailable.
    timeout: Duration,
}

chassis::debug_fields!(PaymentsService { timeout });

impl PaymentsService {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        provider: Arc<dyn PaymentProvider>,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            provider,
            timeout,
        }
    }

    /// A crashed request's key is taken over after this long.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(1)
    }

    /// Claims a key; `Some` is the answer for a key used before.
    async fn claim(
        &self,
        scope: Scope,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<domain::Outcome>, PaymentError> {
        let record = self
            .store
            .claim(scope, key, fingerprint, self.lease())
            .await
            .map_err(domain::unavailable)?;
        Ok(match domain::on_claim(record) {
            Claim::Proceed => None,
            Claim::Answer(outcome) => Some(outcome),
        })
    }

    async fn release(&self, scope: Scope, key: &str) -> Result<(), PaymentError> {
        self.store
            .release(scope, key)
            .await
            .map_err(domain::unavailable)
    }

    pub async fn totals(&self) -> Result<LedgerTotals, sqlx::Error> {
        self.store.totals().await
    }

    /// Captured minus refunded, per order (for the audit).
    pub async fn net_by_order(&self) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        self.store.net_by_order().await
    }

    async fn stored(&self, payment_id: &str) -> Result<crate::store::StoredPayment, PaymentError> {
        self.store
            .payment(payment_id)
            .await
            .map_err(domain::unavailable)?
            .ok_or_else(|| PaymentError::NotFound(payment_id.to_owned()))
    }

    /// The provider's answer, or unavailable after the timeout.
    async fn ask_provider(&self, charge: &Charge) -> Result<String, ProviderError> {
        let call = self.provider.charge(
            charge.token(),
            charge.amount().cents(),
            charge.currency(),
            charge.key(),
        );
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(ProviderError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn refund_claimed(&self, refund: &Refund) -> Result<Payment, PaymentError> {
        let current = self.stored(refund.payment_id()).await?;
        // Refused before the provider is asked.
        domain::refund(&current.payment, refund)?;
        match tokio::time::timeout(
            self.timeout,
            self.provider
                .refund(&current.provider_ref, refund.amount().cents(), refund.key()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(PaymentError::Unavailable(e.to_string())),
            Err(_) => return Err(PaymentError::Unavailable("refund timed out".into())),
        }
        let mut payment = current.payment;
        for _ in 0..REFUND_ATTEMPTS {
            let record = domain::refund(&payment, refund)?;
            match self
                .store
                .record_refund(&record)
                .await
                .map_err(domain::unavailable)?
            {
                RefundWrite::Written => {
                    metrics::counter!("payments_refunded_total").increment(1);
                    return Ok(record.payment);
                }
                RefundWrite::Stale => payment = self.stored(refund.payment_id()).await?.payment,
            }
        }
        Err(PaymentError::Unavailable(
            "concurrent refunds of the payment; retry".into(),
        ))
    }
}

#[async_trait::async_trait]
impl PaymentsApi for PaymentsService {
    #[tracing::instrument(skip_all, fields(order_id = %req.order_id, key = %req.idempotency_key))]
    async fn charge(&self, req: ChargeRequest) -> Result<Payment, PaymentError> {
        let charge = Charge::parse(req)?;
        if let Some(earlier) = self
            .claim(Scope::Charge, charge.key(), &charge.fingerprint())
            .await?
        {
            return earlier;
        }
        let answer = self.ask_provider(&charge).await;
        match domain::on_provider(&charge, answer, chassis::id::new_id())? {
            Charged::Captured(capture) => {
                self.store
                    .record_capture(&capture)
                    .await
                    .map_err(domain::unavailable)?;
                metrics::counter!("payments_captured_total").increment(1);
                metrics::counter!("payments_captured_cents_total")
                    .increment(u64::try_from(capture.payment.amount_cents).unwrap_or(0));
                Ok(capture.payment)
            }
            Charged::Declined(decline) => {
                self.store
                    .record_decline(&decline)
                    .await
                    .map_err(domain::unavailable)?;
                metrics::counter!("payments_declined_total").increment(1);
                Err(PaymentError::Declined(decline.reason))
            }
            Charged::NoResult { reason } => {
                metrics::counter!("payments_provider_unavailable_total").increment(1);
                tracing::warn!(reason = %reason, "payment provider unavailable");
                self.release(Scope::Charge, charge.key()).await?;
                Err(PaymentError::Unavailable(reason))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(payment_id = %req.payment_id, key = %req.idempotency_key))]
    async fn refund(&self, req: RefundRequest) -> Result<Payment, PaymentError> {
        let refund = Refund::parse(req)?;
        if let Some(earlier) = self
            .claim(Scope::Refund, refund.key(), &refund.fingerprint())
            .await?
        {
            return earlier;
        }
        let result = self.refund_claimed(&refund).await;
        if result.is_err() {
            self.release(Scope::Refund, refund.key()).await?;
        }
        result
    }

    async fn get(&self, payment_id: String) -> Result<Payment, PaymentError> {
        Ok(self.stored(&payment_id).await?.payment)
    }

    async fn find_by_order(&self, order_id: String) -> Result<Option<Payment>, PaymentError> {
        self.store
            .payment_for_order(&order_id)
            .await
            .map_err(domain::unavailable)
    }
}
