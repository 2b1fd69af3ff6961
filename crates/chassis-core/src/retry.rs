//! Retry timing shared by every retry loop (relay, consumers, the checkout saga).

use std::time::Duration;

/// Exponential backoff with full jitter: a random wait in `[0, min(cap, base·2^n)]`,
/// so retries from many callers spread out instead of arriving in waves.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1_u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // Never zero: a retry loop should always yield.
    Duration::from_nanos(rand::random::<u64>() % nanos.max(1)).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_the_cap() {
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_millis(10), Duration::from_secs(1));
            assert!(d <= Duration::from_secs(1));
            assert!(d >= Duration::from_millis(1));
        }
    }
}
