//! orders: event-sourced orders and the checkout saga that drives them.
//!
//! `domain` is the pure aggregate (`decide`/`apply`/`next_step`); `published` the
//! pure mapping of its events to the contract events others hear; `store` the event
//! table, projection and outbox; `saga` the orchestrator that performs each step
//! through the catalog and payments contracts; `service` and `http` the public API.

mod api;
mod country;
pub mod domain;
mod error;
mod http;
pub mod module;
pub mod published;
pub mod saga;
mod service;
pub mod store;

pub use error::OrdersError;
pub use http::{ApiDoc, router};
pub use service::{OrderView, OrdersService};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

pub const MODULE: &str = "orders";

/// Describes this module's metrics and registers their known series at zero, so
/// alerts and dashboards never query an absent series.
pub fn register_metrics() {
    use chassis::metrics::zero_counter;
    metrics::describe_counter!(
        "orders_placed_total",
        "Orders created by POST /orders (Idempotency-Key replays not counted)"
    );
    metrics::describe_counter!(
        "orders_total",
        "Orders reaching an outcome (confirmed, failed with a reason, cancelled)"
    );
    metrics::describe_counter!(
        "orders_revenue_cents_total",
        "Sum of confirmed orders' totals, in minor units (cancellations not subtracted)"
    );
    zero_counter("orders_placed_total", &[]);
    zero_counter("orders_revenue_cents_total", &[]);
    zero_counter("orders_total", &[("outcome", "confirmed")]);
    zero_counter("orders_total", &[("outcome", "cancelled")]);
    for reason in [
        domain::reason::OUT_OF_STOCK,
        domain::reason::PRODUCT_UNAVAILABLE,
        domain::reason::PAYMENT_DECLINED,
        domain::reason::PAYMENT_UNAVAILABLE,
        domain::reason::RESERVATION_EXPIRED,
    ] {
        zero_counter("orders_total", &[("outcome", "failed"), ("reason", reason)]);
    }
}
