//! Throttling of failed sign-ins, per account and per client IP, kept in identity's
//! database so that every replica throttles alike (and a restart forgets nothing).
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
//!
//! Times are the replicas' wall clocks in µs: a skew between replicas shifts a wait by
//! as much, which NTP keeps far below the one-second backoff step.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::AnyPool;

/// IPs remembered per account as known clients (the most recent successes).
const KNOWN_PER_ACCOUNT: i64 = 4;
/// How long a known client stays known without another successful sign-in.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

const ACCOUNT: &str = "account";
const IP: &str = "ip";

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

impl ThrottlePolicy {
    /// The block that the `failures`-th failure in a row starts, if any: 1 s, 2 s,
    /// 4 s, … up to the cap.
    fn backoff(&self, failures: i64) -> Option<Duration> {
        let over = u32::try_from(failures)
            .unwrap_or(u32::MAX)
            .checked_sub(self.free_attempts + 1)?;
        // The shift is bounded so it cannot overflow.
        Some(
            self.base_backoff
                .saturating_mul(1_u32 << over.min(20))
                .min(self.max_backoff),
        )
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Whole seconds to wait, rounded up, at least 1 (what `Retry-After` says).
fn seconds(wait_micros: i64) -> u64 {
    u64::try_from(wait_micros).map_or(1, |w| w.div_ceil(1_000_000).max(1))
}

/// Why a sign-in is refused before its password is checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Go,
    /// Wait this many whole seconds (`Retry-After`).
    Wait(u64),
}

#[derive(Debug, Clone)]
pub(crate) struct LoginThrottle {
    policy: ThrottlePolicy,
    pool: AnyPool,
}

impl LoginThrottle {
    pub(crate) fn new(policy: ThrottlePolicy, pool: AnyPool) -> Self {
        Self { policy, pool }
    }

    /// Whether a sign-in to `account` from `ip` may be checked at `now` (µs).
    pub(crate) async fn check(
        &self,
        account: Option<&str>,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<Verdict, sqlx::Error> {
        let ip = ip.map(|ip| ip.to_string());
        // The longest live block among the IP's and (unless this IP is a known
        // client of it) the account's.
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(blocked_until) FROM login_failures WHERE blocked_until > $1 AND \
             ((scope = 'ip' AND subject = $2) OR (scope = 'account' AND subject = $3 \
             AND NOT EXISTS (SELECT 1 FROM login_known_clients \
             WHERE account = $3 AND ip = $2 AND seen_at > $4)))",
        )
        .bind(now)
        .bind(ip)
        .bind(account)
        .bind(now.saturating_sub(micros(KNOWN_FOR)))
        .fetch_one(&self.pool)
        .await?;
        Ok(match until {
            Some(until) => {
                metrics::counter!(THROTTLED).increment(1);
                Verdict::Wait(seconds(until.saturating_sub(now)))
            }
            None => Verdict::Go,
        })
    }

    /// A checked sign-in to `account` from `ip` failed at `now`.
    pub(crate) async fn failed(
        &self,
        account: Option<&str>,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let ip = ip.map(|ip| ip.to_string());
        let subjects = [(ACCOUNT, account), (IP, ip.as_deref())];
        let mut tx = self.pool.begin().await?;
        for (scope, subject) in subjects {
            let Some(subject) = subject else { continue };
            // One statement counts the failure, so replicas failing the same account
            // at once each add theirs; a failure after a quiet period starts again
            // from one.
            let failures: i64 = sqlx::query_scalar(
                "INSERT INTO login_failures (scope, subject, failures, last_at) \
                 VALUES ($1, $2, 1, $3) ON CONFLICT (scope, subject) DO UPDATE SET \
                 failures = CASE WHEN login_failures.last_at < $4 THEN 1 \
                 ELSE login_failures.failures + 1 END, last_at = $3 RETURNING failures",
            )
            .bind(scope)
            .bind(subject)
            .bind(now)
            .bind(now.saturating_sub(micros(self.policy.forget_after)))
            .fetch_one(&mut *tx)
            .await?;
            if let Some(backoff) = self.policy.backoff(failures) {
                sqlx::query(
                    // Never shortens a block a concurrent failure set further out.
                    "UPDATE login_failures SET blocked_until = $1 \
                     WHERE scope = $2 AND subject = $3 \
                     AND (blocked_until IS NULL OR blocked_until < $1)",
                )
                .bind(now.saturating_add(micros(backoff)))
                .bind(scope)
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    /// `account` signed in (or registered) from `ip` at `now`: its failures are
    /// cleared and `ip` becomes a known client of it. The IP's own failures stay: one
    /// good account must not reset the count of guesses at others.
    pub(crate) async fn succeeded(
        &self,
        account: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_failures WHERE scope = 'account' AND subject = $1")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        if let Some(ip) = ip {
            sqlx::query(
                "INSERT INTO login_known_clients (account, ip, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, ip) DO UPDATE SET seen_at = $3",
            )
            .bind(account)
            .bind(ip.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM login_known_clients WHERE account = $1 AND ip NOT IN \
                 (SELECT ip FROM login_known_clients WHERE account = $1 \
                 ORDER BY seen_at DESC LIMIT $2)",
            )
            .bind(account)
            .bind(KNOWN_PER_ACCOUNT)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Drops what no longer matters at `now`: failures past `forget_after` whose
    /// block is over, and known clients not seen for [`KNOWN_FOR`].
    pub(crate) async fn sweep(&self, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM login_failures WHERE last_at < $1 \
             AND (blocked_until IS NULL OR blocked_until <= $2)",
        )
        .bind(now.saturating_sub(micros(self.policy.forget_after)))
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM login_known_clients WHERE seen_at <= $1")
            .bind(now.saturating_sub(micros(KNOWN_FOR)))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[cfg(test)]
    async fn tracked(&self) -> (i64, i64, i64) {
        let count = |sql: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        (
            count("SELECT COUNT(*) FROM login_failures WHERE scope = 'account'").await,
            count("SELECT COUNT(*) FROM login_failures WHERE scope = 'ip'").await,
            count("SELECT COUNT(DISTINCT account) FROM login_known_clients").await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: Option<&str> = Some("ada@example.com");
    const SECOND: i64 = 1_000_000;

    // The throttle takes the client IP as an Option (it may be unknown).
    #[allow(clippy::unnecessary_wraps)]
    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([203, 0, 113, last]))
    }

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_attempts: 3,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
        }
    }

    /// Two throttles on one migrated identity database: two replicas.
    async fn replicas() -> (tempfile::TempDir, LoginThrottle, LoginThrottle) {
        let dir = tempfile::tempdir().unwrap();
        let store = chassis::store::Store::open_sqlite(
            dir.path(),
            "identity",
            2,
            chassis::store::SqliteSync::Normal,
        )
        .await
        .unwrap();
        store.migrate(&crate::MIGRATOR).await.unwrap();
        let pool = store.pool().clone();
        (
            dir,
            LoginThrottle::new(policy(), pool.clone()),
            LoginThrottle::new(policy(), pool),
        )
    }

    #[tokio::test]
    async fn free_attempts_then_a_doubling_backoff_that_is_capped() {
        let (_dir, throttle, _) = replicas().await;
        let mut now = 1_000 * SECOND;
        for _ in 0..3 {
            assert_eq!(
                throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
                Verdict::Go
            );
            throttle.failed(ACCOUNT, ip(1), now).await.unwrap();
        }
        assert_eq!(
            throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
            Verdict::Go
        );
        let mut waits = Vec::new();
        for _ in 0..6 {
            throttle.failed(ACCOUNT, ip(1), now).await.unwrap();
            let Verdict::Wait(wait) = throttle.check(ACCOUNT, ip(1), now).await.unwrap() else {
                panic!("a failure past the free ones blocks");
            };
            waits.push(wait);
            // Refused attempts during the block change nothing.
            assert_eq!(
                throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
                Verdict::Wait(wait)
            );
            now += i64::try_from(wait).unwrap() * SECOND;
            assert_eq!(
                throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
                Verdict::Go
            );
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[tokio::test]
    async fn replicas_share_the_failures_and_the_block() {
        let (_dir, one, two) = replicas().await;
        let now = 1_000 * SECOND;
        // Failures spread over both replicas add up: the fourth blocks on both.
        for throttle in [&one, &two, &one, &two] {
            throttle.failed(ACCOUNT, ip(9), now).await.unwrap();
        }
        assert_eq!(
            one.check(ACCOUNT, ip(9), now).await.unwrap(),
            Verdict::Wait(1)
        );
        assert_eq!(
            two.check(ACCOUNT, ip(9), now).await.unwrap(),
            Verdict::Wait(1)
        );
        // The owner signs in through one replica: the other lets strangers in too.
        one.succeeded("ada@example.com", None, now).await.unwrap();
        assert_eq!(two.check(ACCOUNT, ip(10), now).await.unwrap(), Verdict::Go);
    }

    #[tokio::test]
    async fn the_account_block_holds_for_strangers_not_for_a_known_client() {
        let (_dir, throttle, _) = replicas().await;
        let now = 1_000 * SECOND;
        let blocked = |verdict: Verdict| verdict != Verdict::Go;
        throttle
            .succeeded("ada@example.com", ip(1), now)
            .await
            .unwrap();
        for _ in 0..5 {
            throttle.failed(ACCOUNT, ip(66), now).await.unwrap();
        }
        // The attacker's IP and any other stranger wait; the owner's IP does not.
        assert!(blocked(throttle.check(ACCOUNT, ip(66), now).await.unwrap()));
        assert!(blocked(throttle.check(ACCOUNT, ip(2), now).await.unwrap()));
        assert_eq!(
            throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
            Verdict::Go
        );
        // Another account from the attacker's IP: the IP's block.
        let bob = Some("bob@example.com");
        assert!(blocked(throttle.check(bob, ip(66), now).await.unwrap()));
        assert_eq!(throttle.check(bob, ip(2), now).await.unwrap(), Verdict::Go);
        // The owner signs in: the account is clear for everyone, the attacker's IP
        // is still blocked.
        throttle
            .succeeded("ada@example.com", ip(1), now)
            .await
            .unwrap();
        assert_eq!(
            throttle.check(ACCOUNT, ip(2), now).await.unwrap(),
            Verdict::Go
        );
        assert!(blocked(throttle.check(ACCOUNT, ip(66), now).await.unwrap()));
    }

    #[tokio::test]
    async fn an_account_remembers_only_its_latest_known_clients() {
        let (_dir, throttle, _) = replicas().await;
        let mut now = 1_000 * SECOND;
        for last in 1..=5 {
            throttle
                .succeeded("ada@example.com", ip(last), now)
                .await
                .unwrap();
            now += SECOND;
        }
        for _ in 0..5 {
            throttle.failed(ACCOUNT, ip(66), now).await.unwrap();
        }
        // The first of five is forgotten (four are kept), the latest is known.
        assert_ne!(
            throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
            Verdict::Go
        );
        assert_eq!(
            throttle.check(ACCOUNT, ip(5), now).await.unwrap(),
            Verdict::Go
        );
    }

    #[tokio::test]
    async fn failures_are_forgotten_and_swept_after_a_quiet_period() {
        let (_dir, throttle, _) = replicas().await;
        let mut now = 1_000 * SECOND;
        for _ in 0..3 {
            throttle.failed(ACCOUNT, ip(1), now).await.unwrap();
        }
        throttle
            .succeeded("bob@example.com", ip(2), now)
            .await
            .unwrap();
        assert_eq!(throttle.tracked().await, (1, 1, 1));
        now += 61 * SECOND;
        // A failure after the quiet period starts from one again: no block.
        throttle.failed(ACCOUNT, ip(1), now).await.unwrap();
        assert_eq!(
            throttle.check(ACCOUNT, ip(1), now).await.unwrap(),
            Verdict::Go
        );
        now += 61 * SECOND;
        throttle.sweep(now).await.unwrap();
        assert_eq!(throttle.tracked().await, (0, 0, 1));
        throttle
            .sweep(now + micros(KNOWN_FOR) + SECOND)
            .await
            .unwrap();
        assert_eq!(throttle.tracked().await, (0, 0, 0));
    }
}
