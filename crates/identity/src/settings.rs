//! identity's settings: everything the module reads from configuration, in one place,
//! built by the composition root.

use std::time::Duration;

pub use crate::throttle::ThrottlePolicy;

/// How identity protects its password hashing and sign-ins, and how long sessions
/// last.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Password hashes (argon2id, 19 MiB each) computed at once; more wait.
    pub hash_concurrency: usize,
    /// How long a registration or login waits for a hashing slot before it is shed
    /// with 503 and `Retry-After`.
    pub hash_wait: Duration,
    /// Throttling of failed sign-ins.
    pub throttle: ThrottlePolicy,
    /// How long a refresh token lives (each refresh issues a new one).
    pub refresh_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hash_concurrency: default_hash_concurrency(),
            hash_wait: Duration::from_secs(2),
            throttle: ThrottlePolicy::default(),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// One hash per core: argon2id is CPU- and memory-bound, so more at once only adds
/// memory and latency.
fn default_hash_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
