//! catalog: products, prices and stock levels.
//!
//! `domain` parses product input and page cursors (pure); `service` holds the use
//! cases and implements the [`contracts::catalog::CatalogApi`] other modules call;
//! `store` is the SQL adapter; `http` the public routes; `seed` the demo catalog.

pub mod audit;
mod cache;
pub mod domain;
mod error;
mod http;
pub mod module;
pub mod seed;
mod service;
pub mod store;

pub use error::CatalogFailure;
pub use http::{ApiDoc, router};
pub use service::CatalogService;

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

pub const MODULE: &str = "catalog";

/// Describes this module's metrics and registers them at zero, so alerts and
/// dashboards never query an absent series.
pub fn register_metrics() {
    for (name, help) in [
        (
            "catalog_reservations_rejected_total",
            "Reservations refused for lack of stock",
        ),
        (
            "catalog_reservations_expired_total",
            "Reservations released by the sweeper after their TTL",
        ),
    ] {
        metrics::describe_counter!(name, help);
        chassis::metrics::zero_counter(name, &[]);
    }
}
