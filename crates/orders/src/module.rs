//! orders, as the composition root sees it.

use std::sync::Arc;
use std::time::Duration;

use chassis::config::{Config, ConfigError};
use chassis::module::{BuildError, Context, Descriptor, Parts};
use chassis::rpc::Contract;
use contracts::cart::CartApi;
use contracts::catalog::CatalogApi;
use contracts::orders::OrdersApi;
use contracts::payments::PaymentsApi;
use serde::Deserialize;

use crate::saga::{CrashPoint, Saga, SagaTiming};
use crate::{MIGRATOR, MODULE, OrdersService};

/// How often open sagas (orders left pending by a crash) are looked for.
const RECOVER_EVERY: Duration = Duration::from_secs(2);

/// orders' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// How long `POST /orders` waits for a terminal state before answering 202.
    pub checkout_wait_ms: u64,
    /// TEST ONLY: abort the process at a checkout step (`after_reserve`,
    /// `after_charge`, `before_publish`) to exercise crash recovery. Never set it in
    /// production; no request can.
    pub fault_abort_at: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            checkout_wait_ms: 3_000,
            fault_abort_at: None,
        }
    }
}

const KEYS: &[&str] = &["checkout_wait_ms", "fault_abort_at"];

/// orders, as the composition root sees it.
pub static DESCRIPTOR: Descriptor = Descriptor {
    settings: KEYS,
    check,
    provides: &[MODULE],
    calls: &[
        <dyn CatalogApi as Contract>::PROVIDER,
        <dyn CartApi as Contract>::PROVIDER,
        <dyn PaymentsApi as Contract>::PROVIDER,
    ],
    routes: &["/api/v1/orders", "/api/v1/admin/sagas"],
    publishes: contracts::orders::EVENTS,
    openapi: Some(<crate::ApiDoc as utoipa::OpenApi>::openapi),
    register_metrics: crate::register_metrics,
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn check(config: &Config) -> Result<(), ConfigError> {
    let settings = config.section::<Settings>()?;
    if let Some(point) = &settings.fault_abort_at {
        if CrashPoint::parse(point).is_none() {
            return Err(ConfigError::Invalid {
                key: "fault_abort_at",
                message: "must be after_reserve, after_charge or before_publish".into(),
            });
        }
    }
    Ok(())
}

/// This process's name on its saga leases: the host and the address it serves on,
/// unique among live replicas (two cannot listen on one host's port), and the same
/// after a restart in place, so a restarted replica resumes its own sagas at once.
fn lease_holder(http_addr: std::net::SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/{http_addr}")
}

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let settings: Settings = context.settings()?;
    let outbox = context.outbox();
    let store = crate::store::SqlOrders::new(context.store().clone());
    let mut saga = Saga::new(
        store.clone(),
        outbox.clone(),
        context.call::<dyn CatalogApi>()?,
        context.call::<dyn PaymentsApi>()?,
        SagaTiming::default(),
        settings
            .fault_abort_at
            .as_deref()
            .and_then(CrashPoint::parse),
        context.shutdown(),
    );
    // On PostgreSQL, replicas may share the store: one driver per order among them.
    if context.config().database_url.is_some() {
        saga = saga.leased_as(lease_holder(context.config().http_addr));
    }
    let saga = Arc::new(saga);
    let service = OrdersService::new(
        store,
        Arc::clone(&saga),
        context.call::<dyn CatalogApi>()?,
        context.call::<dyn CartApi>()?,
        Duration::from_millis(settings.checkout_wait_ms),
    );
    let recovery = Arc::clone(&saga);
    let api: Arc<dyn OrdersApi> = Arc::new(service.clone());
    Ok(Parts::new(service.clone())
        .routes(crate::router(service, context.tokens().clone()))
        .provide(api)
        .outbox(outbox)
        // The saga holds the shutdown signal it was built with.
        .worker(move |_shutdown| recovery.spawn_recovery(RECOVER_EVERY))
        .drain(Arc::new(move |limit| {
            let saga = Arc::clone(&saga);
            Box::pin(async move {
                saga.drain(limit).await;
            })
        })))
}
