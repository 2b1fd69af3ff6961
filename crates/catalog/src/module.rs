//! The catalog, as the composition root sees it.

use std::sync::Arc;
use std::time::Duration;

use chassis::config::{Config, ConfigError};
use chassis::module::{BuildError, Context, Descriptor, Parts};
use contracts::catalog::CatalogApi;
use serde::Deserialize;

use crate::{CatalogService, MIGRATOR, MODULE};

/// How often expired reservations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The catalog's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Products seeded into an empty catalog on first start.
    pub seed_products: u32,
    /// How long stock stays reserved for an order that is neither confirmed nor
    /// failed; the sweeper releases it after that.
    pub reservation_ttl_secs: u64,
    /// How long a product read may be served from memory (0: off). Writes through
    /// this process invalidate at once; the TTL bounds staleness between instances.
    pub catalog_cache_ttl_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seed_products: 1000,
            reservation_ttl_secs: 900,
            catalog_cache_ttl_ms: 1_000,
        }
    }
}

const KEYS: &[&str] = &[
    "seed_products",
    "reservation_ttl_secs",
    "catalog_cache_ttl_ms",
];

/// The catalog, as the composition root sees it.
pub static DESCRIPTOR: Descriptor = Descriptor {
    settings: KEYS,
    check,
    provides: &[MODULE],
    routes: &["/api/v1/products"],
    publishes: contracts::catalog::EVENTS,
    openapi: Some(<crate::ApiDoc as utoipa::OpenApi>::openapi),
    register_metrics: crate::register_metrics,
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn check(config: &Config) -> Result<(), ConfigError> {
    if config.section::<Settings>()?.reservation_ttl_secs == 0 {
        return Err(ConfigError::Invalid {
            key: "reservation_ttl_secs",
            message: "must be positive".into(),
        });
    }
    Ok(())
}

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let settings: Settings = context.settings()?;
    let service = CatalogService::new(
        Arc::new(crate::store::SqlProducts::new(context.store().clone())),
        context.outbox(),
        Duration::from_secs(settings.reservation_ttl_secs),
        Duration::from_millis(settings.catalog_cache_ttl_ms),
    );
    let sweeper = service.clone();
    let seeder = service.clone();
    let api: Arc<dyn CatalogApi> = Arc::new(service.clone());
    Ok(Parts::new(service.clone())
        .routes(crate::router(service.clone(), context.tokens().clone()))
        .provide(api)
        .outbox(service.outbox().clone())
        .worker(move |shutdown| sweeper.spawn_sweeper(SWEEP_EVERY, shutdown))
        .bootstrap(move || {
            Box::pin(async move {
                let seeded = seeder
                    .seed_if_empty(settings.seed_products)
                    .await
                    .map_err(|e| BuildError::module("cannot seed the catalog", e))?;
                if seeded > 0 {
                    tracing::info!(products = seeded, "seeded the demo catalog");
                }
                Ok(())
            })
        }))
}
