//! The payment provider port and the simulated provider.
//!
//! A real adapter (Stripe, Adyen) implements [`PaymentProvider`]; it must honour the
//! idempotency key it is given, as those providers do, so that retrying a charge whose
//! outcome was lost (a timeout) never charges twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("declined: {0}")]
    Declined(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges `amount_cents`; returns the provider's reference. Same key → same
    /// outcome, one charge.
    async fn charge(
        &self,
        token: &str,
        amount_cents: i64,
        currency: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError>;

    async fn refund(
        &self,
        reference: &str,
        amount_cents: i64,
        idempotency_key: &str,
    ) -> Result<(), ProviderError>;
}

/// Test-card behaviour, after Stripe's test tokens: `tok_visa` succeeds,
/// `tok_chargeDeclined` is declined, `tok_timeout` never answers. Optional added
/// latency and random failure rate simulate a slow or flaky provider.
#[derive(Debug, Default)]
pub struct SimulatedProvider {
    latency: Duration,
    failure_rate: f64,
    /// key → reference: the provider-side idempotency that makes retries safe.
    charges: Mutex<HashMap<String, String>>,
}

pub const TOKEN_OK: &str = "tok_visa";
pub const TOKEN_DECLINED: &str = "tok_chargeDeclined";
pub const TOKEN_TIMEOUT: &str = "tok_timeout";

impl SimulatedProvider {
    pub fn new(latency: Duration, failure_rate: f64) -> Self {
        Self {
            latency,
            failure_rate: failure_rate.clamp(0.0, 1.0),
            charges: Mutex::new(HashMap::new()),
        }
    }

    async fn network(&self) -> Result<(), ProviderError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.failure_rate > 0.0 && rand::random::<f64>() < self.failure_rate {
            return Err(ProviderError::Unavailable(
                "simulated provider failure".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn charge(
        &self,
        token: &str,
        _amount_cents: i64,
        _currency: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError> {
        self.network().await?;
        match token {
            TOKEN_OK => {
                let mut charges = match self.charges.lock() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                Ok(charges
                    .entry(idempotency_key.to_owned())
                    .or_insert_with(|| format!("ch_{}", chassis::id::new_id().replace('-', "")))
                    .clone())
            }
            TOKEN_DECLINED => Err(ProviderError::Declined("card_declined".into())),
            TOKEN_TIMEOUT => {
                // Hangs far past any sensible timeout; the caller's deadline ends it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(ProviderError::Unavailable("timed out".into()))
            }
            _ => Err(ProviderError::Declined("invalid_payment_token".into())),
        }
    }

    async fn refund(
        &self,
        _reference: &str,
        _amount_cents: i64,
        _idempotency_key: &str,
    ) -> Result<(), ProviderError> {
        self.network().await
    }
}
