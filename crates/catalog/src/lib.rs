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
pub mod seed;
mod service;
pub mod store;

pub use error::CatalogFailure;
pub use http::{ApiDoc, router};
pub use service::CatalogService;

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const MODULE: &str = "catalog";
