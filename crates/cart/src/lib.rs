//! cart: one cart per user. Product existence and prices come from the catalog
//! through its contract ([`contracts::catalog::CatalogApi`]), never its tables.

pub mod domain;
mod error;
pub mod events;
mod http;
pub mod module;
mod service;
pub mod store;

pub use error::CartError;
pub use http::{ApiDoc, router};
pub use service::{Cart, CartLine, CartService};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

pub const MODULE: &str = "cart";
