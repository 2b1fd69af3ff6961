//! The platform every bazaar module stands on, assembled.
//!
//! Modules bring their domain, use cases and adapters; everything that would otherwise
//! be copied between them lives once in the chassis crates, each on its own seam, with
//! one-way dependencies:
//!
//! - `chassis-core`: ids, money, time, cursors, validation, events, the RPC contract
//!   layer (`rpc!`); no I/O, all that contracts need;
//! - `chassis-telemetry`: logs, traces, the metrics recorder;
//! - `chassis-http`: problem+json, extractors, auth, deadlines, health, the server, RED
//!   metrics, the RPC transport;
//! - `chassis-store`: a module's database and idempotency records;
//! - `chassis-messaging`: outbox, relay, consumers, the in-process bus and JetStream;
//! - `chassis-resilience`: guarded dependencies and injected faults.
//!
//! This crate re-exports them under the paths modules use (`chassis::http`,
//! `chassis::outbox`, `chassis::Problem` ...) and adds what needs several of them: the
//! [`admin`] API, the process [`config`] and the [`module`] descriptor every module
//! crate implements.

pub mod admin;
pub mod config;
pub mod module;

pub use chassis_core::{debug_fields, events, id, money, page, private_fs, retry, time};
pub use chassis_http::{auth, deadline, extract, forwarded, impl_into_response, openapi, tls};
pub use chassis_messaging::{bus_health, nats, outbox, relay};
pub use chassis_store::idempotency;
pub use chassis_telemetry::traces;

pub use chassis_core::validation::FieldError;
pub use chassis_http::Problem;
pub use tokio_util::sync::CancellationToken;

/// Errors as problem+json, and field validation.
pub mod error {
    pub use chassis_core::error::chain;
    pub use chassis_core::validation::{FieldError, Invalid, Violations};
    pub use chassis_http::problem::{PROBLEM_JSON, Problem};
}

/// Liveness and readiness.
pub mod health {
    pub use chassis_core::health::Check;
    pub use chassis_http::health::{Readiness, live, ready};
}

/// The HTTP server every bazaar process runs: its layers, its ops routes and its
/// graceful shutdown.
pub mod http {
    pub use chassis_http::balance;
    pub use chassis_http::server::*;
}

/// Prometheus metrics: the recorder (chassis-telemetry) and the RED middleware and
/// `/metrics` route (chassis-http).
pub mod metrics {
    pub use chassis_http::red::*;
    pub use chassis_telemetry::metrics::*;
}

/// Calls between modules: the contract layer (chassis-core) and its HTTP transport
/// (chassis-http).
pub mod rpc {
    pub use chassis_core::rpc::*;
    pub use chassis_http::rpc::*;
}

/// The event bus and its consumers.
pub mod bus {
    pub use chassis_messaging::bus::*;
    pub use chassis_messaging::consumer::*;
    pub use chassis_messaging::dead_letters::{DeadLetter, dead_letters};
}

/// Guarded calls to other modules, and injected faults.
pub mod resilience {
    pub use chassis_core::rpc::{Guard, Guarded};
    pub use chassis_resilience::*;
}

/// A module's database, and keyset pages of its rows.
pub mod store {
    pub use chassis_store::page::{PageOrder, keyset_page};
    pub use chassis_store::store::*;
    pub use chassis_store::writer::{Arg, Statements, UnitFuture};

    use crate::Problem;

    /// How long a client is told to wait while the database cannot be reached or is
    /// contended.
    const RETRY_AFTER_SECS: u64 = 1;

    /// A module's store failure as its answer. A transaction the database refused for
    /// contention ([`is_contended`]) was rolled back: 503 with `Retry-After`. While
    /// the database cannot be reached
    /// ([`is_unreachable`]), 503, which passes once it is back; with `Retry-After` only
    /// when no statement ran ([`is_never_started`]), so the request can be sent again
    /// as it is (a connection lost mid-way may have written: a write is retried with
    /// its idempotency key, or after a look). Any other failure is a bug, an opaque
    /// 500 with its cause chain logged.
    pub fn problem(error: &(dyn std::error::Error + 'static)) -> Problem {
        if is_contended(error) {
            tracing::warn!(error = %crate::error::chain(error), "store contended");
            return Problem::unavailable("the store is busy with other writes; try again shortly")
                .with_retry_after(RETRY_AFTER_SECS);
        }
        if !is_unreachable(error) {
            return Problem::internal(error);
        }
        tracing::warn!(error = %crate::error::chain(error), "store unreachable");
        if is_never_started(error) {
            Problem::unavailable("the store is unavailable; try again shortly")
                .with_retry_after(RETRY_AFTER_SECS)
        } else {
            Problem::unavailable(
                "the store's connection failed mid-way; whether it was done is unknown",
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use axum::http::StatusCode;

        #[test]
        fn an_unreachable_store_is_503_with_retry_after_and_anything_else_500() {
            let down = super::problem(&sqlx::Error::PoolTimedOut);
            assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
            let response = axum::response::IntoResponse::into_response(down);
            assert_eq!(response.headers()["retry-after"], "1");
            let cut = super::problem(&sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )));
            assert_eq!(cut.status(), StatusCode::SERVICE_UNAVAILABLE);
            let response = axum::response::IntoResponse::into_response(cut);
            assert!(response.headers().get("retry-after").is_none());
            let bug = super::problem(&sqlx::Error::RowNotFound);
            assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
}

/// Logs and traces.
pub mod telemetry {
    pub use chassis_telemetry::propagation::*;
    pub use chassis_telemetry::subscriber::*;
}
