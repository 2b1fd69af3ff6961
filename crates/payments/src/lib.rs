//! payments: charges and refunds through a [`provider::PaymentProvider`], with
//! idempotency keys (Stripe's semantics) and an append-only ledger.
//!
//! No public routes: orders reaches payments through
//! [`contracts::payments::PaymentsApi`] (in-process, or over HTTP when split).

pub mod provider;
mod service;

pub use service::{LedgerTotals, PaymentsService};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const MODULE: &str = "payments";
