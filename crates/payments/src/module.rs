//! payments, as the composition root sees it.

use std::sync::Arc;
use std::time::Duration;

use chassis::config::{Config, ConfigError};
use chassis::module::{BuildError, Context, Descriptor, Parts};
use chassis::resilience::DependencyPolicy;
use contracts::payments::PaymentsApi;
use serde::Deserialize;

use crate::{MIGRATOR, MODULE, PaymentsService};

/// payments' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// How long one payment-provider call may take before it counts as unavailable.
    pub payment_timeout_ms: u64,
    /// The simulated provider's added latency (0: none).
    pub payment_provider_latency_ms: u64,
    /// The simulated provider's share of calls that fail as unavailable (0.0 to 1.0).
    pub payment_provider_failure_rate: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            payment_timeout_ms: 2_000,
            payment_provider_latency_ms: 0,
            payment_provider_failure_rate: 0.0,
        }
    }
}

const KEYS: &[&str] = &[
    "payment_timeout_ms",
    "payment_provider_latency_ms",
    "payment_provider_failure_rate",
];

/// payments, as the composition root sees it. No public routes: its contract is served
/// on the internal ones.
pub static DESCRIPTOR: Descriptor = Descriptor {
    settings: KEYS,
    check,
    provides: &[MODULE],
    publishes: contracts::payments::EVENTS,
    register_metrics: crate::register_metrics,
    caller_policy,
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn check(config: &Config) -> Result<(), ConfigError> {
    let settings = config.section::<Settings>()?;
    if settings.payment_timeout_ms == 0 {
        return Err(ConfigError::Invalid {
            key: "payment_timeout_ms",
            message: "must be positive".into(),
        });
    }
    if !(0.0..=1.0).contains(&settings.payment_provider_failure_rate) {
        return Err(ConfigError::Invalid {
            key: "payment_provider_failure_rate",
            message: "must be between 0.0 and 1.0".into(),
        });
    }
    Ok(())
}

/// The saga retries charges itself, under one idempotency key and a documented budget
/// of three attempts; retrying in the guard too would multiply them.
fn caller_policy() -> DependencyPolicy {
    DependencyPolicy {
        retry_attempts: 1,
        ..DependencyPolicy::default()
    }
}

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let settings: Settings = context.settings()?;
    let outbox = context.outbox();
    let service = PaymentsService::new(
        Arc::new(crate::store::SqlPayments::new(
            context.store().clone(),
            outbox.clone(),
        )),
        Arc::new(crate::provider::SimulatedProvider::new(
            Duration::from_millis(settings.payment_provider_latency_ms),
            settings.payment_provider_failure_rate,
        )),
        Duration::from_millis(settings.payment_timeout_ms),
    );
    let api: Arc<dyn PaymentsApi> = Arc::new(service.clone());
    Ok(Parts::new(service).provide(api).outbox(outbox))
}
