//! orders: event-sourced orders and the checkout saga that drives them.

pub mod domain;

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const MODULE: &str = "orders";
