//! identity: accounts, credentials (argon2id) and user tokens.
//!
//! `domain` is pure parsing; `service` holds the use cases and talks to storage only
//! through the [`store::Users`] port; `http` is the public adapter.

pub mod domain;
mod error;
mod hashing;
mod http;
pub mod module;
mod service;
mod settings;
pub mod store;
mod throttle;

pub use error::IdentityError;
pub use hashing::register_metrics;
pub use http::{ApiDoc, router};
pub use service::{AdminOutcome, IdentityService, Session};
pub use settings::{Settings, ThrottlePolicy};

/// The module's embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use module::DESCRIPTOR;

/// The name of this module's store and log/metric label.
pub const MODULE: &str = "identity";
