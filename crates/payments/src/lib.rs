//! payments: charges and refunds through a [`provider::PaymentProvider`], with
//! idempotency keys (Stripe's semantics) and an append-only ledger.
//!
//! `domain` holds the money rules, pure (the idempotency decision, capture and refund
//! arithmetic, the ledger's entries); `service` the use cases; `store` the
//! [`store::PaymentStore`] port and its SQL adapter; `provider` the provider port
//! and the simulated provider.
//!
//! No HTTP of its own: orders reaches payments through
//! [`contracts::payments::PaymentsApi`], in process or, split, over the internal
//! routes `rpc!` derives from that contract (`contracts::payments::payments_routes`).

pub mod domain;
pub mod module;
pub mod provider;
mod service;
pub mod store;

pub use domain::LedgerTotals;
pub use service::PaymentsService;

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

pub const MODULE: &str = "payments";

/// Describes this module's metrics and registers them at zero, so alerts and
/// dashboards never query an absent series.
pub fn register_metrics() {
    for (name, help) in [
        ("payments_captured_total", "Charges captured"),
        (
            "payments_captured_cents_total",
            "Amount captured, in minor units",
        ),
        (
            "payments_declined_total",
            "Charges declined by the provider",
        ),
        ("payments_refunded_total", "Refunds made"),
        (
            "payments_provider_unavailable_total",
            "Charge attempts that failed because the provider errored or timed out",
        ),
    ] {
        metrics::describe_counter!(name, help);
        chassis::metrics::zero_counter(name, &[]);
    }
}
