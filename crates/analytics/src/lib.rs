//! analytics: sales aggregates built from order and payment events.
//!
//! `domain` holds the pure parts (minute buckets, per-product sums); `events` the bus
//! handler, which adds to the sums inside the inbox transaction (exact under
//! redelivery); `store` the SQL; `service` the report and the audit's count; `http`
//! the admin route.

pub mod domain;
mod error;
pub mod events;
mod http;
pub mod module;
mod service;
pub mod store;

pub use error::AnalyticsError;
pub use http::{ApiDoc, router};
pub use service::{AnalyticsService, MinuteSales, ProductSales, SalesReport, TOP_PRODUCTS};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

pub const MODULE: &str = "analytics";
