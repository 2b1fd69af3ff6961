//! orders: event-sourced orders and the checkout saga that drives them.
//!
//! `domain` is the pure aggregate (`decide`/`apply`/`next_step`); `store` the event
//! table, projection and outbox; `saga` the orchestrator that performs each step
//! through the catalog and payments contracts; `service` and `http` the public API.

mod country;
pub mod domain;
mod error;
mod http;
pub mod saga;
mod service;
pub mod store;

pub use error::OrdersError;
pub use http::{ApiDoc, router};
pub use service::{OrderView, OrdersService};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const MODULE: &str = "orders";
