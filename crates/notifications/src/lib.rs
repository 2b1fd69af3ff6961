//! notifications: one email per event — welcome on registration, and order
//! confirmed / failed / cancelled.
//!
//! `domain` renders emails (pure); `transport` is the [`MailTransport`] port with the
//! maildir (default) and SMTP adapters; `events` the bus handler, which sends inside
//! the inbox transaction; `store` the SQL; `service` the admin list and the audit
//! counts; `http` the admin route.

pub mod domain;
mod error;
pub mod events;
mod http;
pub mod module;
mod service;
pub mod store;
pub mod transport;

pub use domain::{Email, Kind, Mailbox};
pub use error::NotificationsError;
pub use http::{ApiDoc, router};
pub use service::{DEFAULT_SENDER, Notification, NotificationPage, NotificationsService};
pub use transport::{MailTransport, MaildirTransport, SmtpTransport, TransportError};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

pub const MODULE: &str = "notifications";

/// Describes this module's metrics and registers them at zero (per kind), so alerts
/// and dashboards never query an absent series.
pub fn register_metrics() {
    metrics::describe_counter!("notifications_sent_total", "Emails sent, by kind");
    for kind in Kind::ALL {
        chassis::metrics::zero_counter("notifications_sent_total", &[("kind", kind.as_str())]);
    }
}
