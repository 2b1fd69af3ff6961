//! What bazaar's test suites share, so that no suite carries its own copy:
//!
//! - [`eventually`] / [`eventually_within`] / [`until`]: bounded polling with a
//!   deadline and a message; [`answers_ok`] (a readiness check); [`wait_exit`] for a
//!   child process.
//! - [`free_port`], [`free_port_run`], [`closed_addr`]: loopback ports.
//! - [`nats`]: `BAZAAR_TEST_NATS_URL`, a throwaway `nats-server -js` of the test's
//!   own ([`nats::NatsServer`]), or a 3-node JetStream cluster ([`nats::NatsCluster`]:
//!   R3 streams, `sync_interval: always`), the test's own or shared by a test binary.
//! - [`postgres`]: `BAZAAR_TEST_DATABASE_URL`, a fresh database
//!   ([`postgres::TestDatabase`]) or schema ([`postgres::TestSchema`]) per test,
//!   dropped with it.
//! - [`http`]: `tower::ServiceExt::oneshot` on a `Router`, with JSON bodies.
//! - `delivery` (feature `delivery`): a module's store (temp SQLite or a PostgreSQL
//!   schema) and a consumer with fast retries, the harness of the event-delivery
//!   suites.
//!
//! A test that needs a server the environment does not name says so ([`skip`]) and
//! passes, except in CI (`CI=true`), where a test that cannot run fails. Everything
//! here panics on failure: it is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "delivery")]
pub mod delivery;
pub mod http;
pub mod nats;
mod net;
pub mod postgres;
mod wait;

pub use net::{closed_addr, free_port, free_port_run};
pub use wait::{PATIENCE, answers_ok, eventually, eventually_within, until, wait_exit};

/// Says that `test` is skipped and why (shown with `--nocapture`); in CI (`CI=true`)
/// it fails instead: there every server a test needs is provided, so a test that
/// cannot run is a broken CI, not a pass.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run in CI: {why}"
    );
    eprintln!("skipping {test}: {why}");
}

/// An environment variable, `None` when unset or empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs the future `work` makes to completion on a thread with a runtime of its own:
/// a `Drop` runs inside the test's runtime, which cannot be blocked on.
fn on_own_runtime<T, F>(work: impl FnOnce() -> F + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, String>>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(work())
    })
    .join()
    .map_err(|_| "the thread panicked".to_owned())?
}

/// Sixteen random hex digits: names no other test (or run) uses.
pub fn unique() -> String {
    format!("{:016x}", rand::random::<u64>())
}
