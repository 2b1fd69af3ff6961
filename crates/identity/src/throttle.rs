//! Throttling of failed sign-ins, per account and per client IP, in this process's
//! memory (each identity replica throttles on its own).
//!
//! The policy: the first `free_attempts` failures cost nothing; after that each
//! failure blocks further attempts for a backoff that doubles from one second up to
//! `max_backoff`. Attempts during a block are refused without checking the password,
//! and do not extend it, so a block always ends at most `max_backoff` after the last
//! checked failure: an attacker cannot lock an account forever. A client that signed
//! in to the account successfully before (its IP) is not held back by the account's
//! block, so an attack on an account does not lock its owner out; the per-IP block
//! still applies to everyone. A successful sign-in clears the account's failures.
//! Failures are forgotten after `forget_after` without another one; the service's
//! sweeper drops them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// IPs remembered per account as known clients (the most recent successes).
const KNOWN_PER_ACCOUNT: usize = 4;
/// How long a known client stays known without another successful sign-in.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Sign-ins refused by the throttle.
pub(crate) const THROTTLED: &str = "identity_logins_throttled_total";

/// The throttle's numbers.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures (per account, and per IP) before any backoff.
    pub free_attempts: u32,
    /// The first backoff; each further failure doubles it.
    pub base_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// Failures are forgotten after this long without another.
    pub forget_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_attempts: 5,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            forget_after: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<String, Failures>,
    ips: HashMap<IpAddr, Failures>,
    /// Per account: the IPs that signed in to it successfully, newest first.
    known: HashMap<String, (Vec<IpAddr>, Instant)>,
}

#[derive(Debug, Clone)]
pub(crate) struct LoginThrottle {
    policy: ThrottlePolicy,
    state: Arc<Mutex<State>>,
}

/// Whole seconds to wait, rounded up, at least 1 (what `Retry-After` says).
fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Failures {
    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

impl LoginThrottle {
    pub(crate) fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(seconds)` when a sign-in to `account` from `ip` must wait.
    pub(crate) fn check(
        &self,
        account: Option<&str>,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), u64> {
        let state = self.state();
        let by_ip = ip
            .and_then(|ip| state.ips.get(&ip))
            .and_then(|f| f.blocked(now));
        let by_account = account
            .filter(|account| {
                let known = state.known.get(*account);
                !ip.is_some_and(|ip| known.is_some_and(|(ips, _)| ips.contains(&ip)))
            })
            .and_then(|account| state.accounts.get(account))
            .and_then(|f| f.blocked(now));
        match by_ip.max(by_account) {
            Some(wait) => {
                metrics::counter!(THROTTLED).increment(1);
                Err(seconds(wait))
            }
            None => Ok(()),
        }
    }

    fn count(&self, failures: &mut Failures, now: Instant) {
        if now.saturating_duration_since(failures.last) > self.policy.forget_after {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        if let Some(over) = failures.count.checked_sub(self.policy.free_attempts + 1) {
            // 1 s, 2 s, 4 s, … up to the cap (the shift is bounded so it cannot
            // overflow).
            let backoff = self
                .policy
                .base_backoff
                .saturating_mul(1_u32 << over.min(20))
                .min(self.policy.max_backoff);
            failures.blocked_until = Some(now + backoff);
        }
    }

    /// A checked sign-in to `account` from `ip` failed.
    pub(crate) fn failed(&self, account: Option<&str>, ip: Option<IpAddr>, now: Instant) {
        let mut state = self.state();
        let fresh = Failures {
            count: 0,
            last: now,
            blocked_until: None,
        };
        if let Some(account) = account {
            let mut failures = *state.accounts.get(account).unwrap_or(&fresh);
            self.count(&mut failures, now);
            state.accounts.insert(account.to_owned(), failures);
        }
        if let Some(ip) = ip {
            let mut failures = *state.ips.get(&ip).unwrap_or(&fresh);
            self.count(&mut failures, now);
            state.ips.insert(ip, failures);
        }
    }

    /// `account` signed in (or registered) from `ip`: its failures are cleared and
    /// `ip` becomes a known client of it. The IP's own failures stay: one good
    /// account must not reset the count of guesses at others.
    pub(crate) fn succeeded(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let mut state = self.state();
        state.accounts.remove(account);
        if let Some(ip) = ip {
            let (ips, at) = state
                .known
                .entry(account.to_owned())
                .or_insert_with(|| (Vec::new(), now));
            ips.retain(|known| *known != ip);
            ips.insert(0, ip);
            ips.truncate(KNOWN_PER_ACCOUNT);
            *at = now;
        }
    }

    /// Drops what no longer matters: failures past `forget_after` whose block is
    /// over, and known clients not seen for [`KNOWN_FOR`].
    pub(crate) fn sweep(&self, now: Instant) {
        let forget = self.policy.forget_after;
        let stale = |f: &Failures| {
            now.saturating_duration_since(f.last) > forget && f.blocked(now).is_none()
        };
        let mut state = self.state();
        state.accounts.retain(|_, f| !stale(f));
        state.ips.retain(|_, f| !stale(f));
        state
            .known
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= KNOWN_FOR);
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize, usize) {
        let state = self.state();
        (state.accounts.len(), state.ips.len(), state.known.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: Option<&str> = Some("ada@example.com");

    // The throttle takes the client IP as an Option (it may be unknown).
    #[allow(clippy::unnecessary_wraps)]
    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([203, 0, 113, last]))
    }

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottlePolicy {
            free_attempts: 3,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
        })
    }

    #[test]
    fn free_attempts_then_a_doubling_backoff_that_is_capped() {
        let throttle = throttle();
        let mut now = Instant::now();
        for _ in 0..3 {
            assert_eq!(throttle.check(ACCOUNT, ip(1), now), Ok(()));
            throttle.failed(ACCOUNT, ip(1), now);
        }
        assert_eq!(throttle.check(ACCOUNT, ip(1), now), Ok(()));
        let mut waits = Vec::new();
        for _ in 0..6 {
            throttle.failed(ACCOUNT, ip(1), now);
            let wait = throttle.check(ACCOUNT, ip(1), now).unwrap_err();
            waits.push(wait);
            // Refused attempts during the block change nothing.
            assert_eq!(throttle.check(ACCOUNT, ip(1), now), Err(wait));
            now += Duration::from_secs(wait);
            assert_eq!(throttle.check(ACCOUNT, ip(1), now), Ok(()));
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn the_account_block_holds_for_strangers_not_for_a_known_client() {
        let throttle = throttle();
        let now = Instant::now();
        throttle.succeeded("ada@example.com", ip(1), now);
        for _ in 0..5 {
            throttle.failed(ACCOUNT, ip(66), now);
        }
        // The attacker's IP and any other stranger wait; the owner's IP does not.
        assert!(throttle.check(ACCOUNT, ip(66), now).is_err());
        assert!(throttle.check(ACCOUNT, ip(2), now).is_err());
        assert_eq!(throttle.check(ACCOUNT, ip(1), now), Ok(()));
        // Another account from the attacker's IP: the IP's block.
        assert!(
            throttle
                .check(Some("bob@example.com"), ip(66), now)
                .is_err()
        );
        assert_eq!(throttle.check(Some("bob@example.com"), ip(2), now), Ok(()));
        // The owner signs in: the account is clear for everyone, the attacker's IP
        // is still blocked.
        throttle.succeeded("ada@example.com", ip(1), now);
        assert_eq!(throttle.check(ACCOUNT, ip(2), now), Ok(()));
        assert!(throttle.check(ACCOUNT, ip(66), now).is_err());
    }

    #[test]
    fn failures_are_forgotten_and_swept_after_a_quiet_period() {
        let throttle = throttle();
        let mut now = Instant::now();
        for _ in 0..3 {
            throttle.failed(ACCOUNT, ip(1), now);
        }
        throttle.succeeded("bob@example.com", ip(2), now);
        assert_eq!(throttle.tracked(), (1, 1, 1));
        now += Duration::from_secs(61);
        // A failure after the quiet period starts from one again: no block.
        throttle.failed(ACCOUNT, ip(1), now);
        assert_eq!(throttle.check(ACCOUNT, ip(1), now), Ok(()));
        now += Duration::from_secs(61);
        throttle.sweep(now);
        assert_eq!(throttle.tracked(), (0, 0, 1));
        throttle.sweep(now + KNOWN_FOR + Duration::from_secs(1));
        assert_eq!(throttle.tracked(), (0, 0, 0));
    }
}
