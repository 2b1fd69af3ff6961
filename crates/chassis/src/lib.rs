//! The platform every bazaar module stands on.
//!
//! Modules bring their domain, use cases and adapters; everything that would otherwise
//! be copied between them (configuration, telemetry, the HTTP server and its layers,
//! the store, problem+json errors, authentication extractors) lives here once.

pub mod auth;
pub mod bus;
pub mod bus_health;
pub mod config;
pub mod deadline;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod http;
pub mod id;
pub mod idempotency;
pub mod metrics;
pub mod money;
pub mod nats;
pub mod openapi;
pub mod outbox;
pub mod page;
pub mod private_fs;
pub mod resilience;
pub mod retry;
pub mod rpc;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod traces;

pub use error::{FieldError, Problem};
pub use tokio_util::sync::CancellationToken;
