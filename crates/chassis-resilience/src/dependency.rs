//! Calls to another module, guarded the same way in both topologies.
//!
//! Every dependency a module has on another (orders → payments, orders → catalog, cart
//! → catalog) goes through one [`Dependency`], whether the other module is in this
//! process or behind HTTP. Per call, in this order:
//!
//! 1. **Fault injection** (off unless configured): added latency, an error rate, or a
//!    hang, per `<dependency>.<method>` or for the whole dependency.
//! 2. **Circuit breaker**: after `breaker_failures` consecutive transient failures the
//!    breaker opens and calls fail at once with the contract's "unavailable" error for
//!    `breaker_cool_down`; then one probe is let through (half-open); its success
//!    closes the breaker, its failure opens it again.
//! 3. **Bulkhead**: at most `max_concurrent` calls in flight to the dependency; one
//!    more is refused at once rather than queued, so a hanging dependency holds at
//!    most that many tasks and connections.
//! 4. **Timeout**: each attempt gets `timeout`, shortened to what is left of the
//!    caller's [deadline](chassis_http::deadline); the work is dropped when it runs out.
//! 5. **Retries**, for transient failures only: every contract method is idempotent
//!    (reads, or writes carrying an order id or idempotency key: see the contracts),
//!    so retrying cannot double an effect. Full-jitter backoff, never past the
//!    deadline, and drawn from a **retry budget** (tower's `TpsBudget`: retries may
//!    add at most `retry_budget_percent` of the calls, plus a small floor), so
//!    retries cannot multiply the load on a dependency that is down.
//!
//! The state of every dependency is in the metrics and at
//! `GET /api/v1/admin/resilience`.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chassis_core::rpc::{Guard, RemoteError, RpcFailure};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::breaker::{Admission, Breaker, BreakerState};
use crate::faults::Faults;
use crate::policy::DependencyPolicy;

/// One guarded dependency (see the module docs).
pub struct Dependency {
    name: &'static str,
    policy: DependencyPolicy,
    breaker: Mutex<Breaker>,
    bulkhead: Arc<Semaphore>,
    budget: TpsBudget,
    faults: Faults,
}

chassis_core::debug_fields!(Dependency { name, policy });

/// A dependency as `GET /api/v1/admin/resilience` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DependencyStatus {
    pub name: String,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub in_flight: u32,
    pub max_concurrent: u32,
}

impl Dependency {
    /// `policy` must be valid ([`DependencyPolicy::problem`]); configuration checks it
    /// at start.
    pub fn new(name: &'static str, policy: DependencyPolicy, faults: Faults) -> Self {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            policy.retry_min_per_second,
            policy.retry_budget_percent,
        );
        metrics::gauge!("dependency_breaker_state", "dependency" => name).set(0.0);
        Self {
            name,
            breaker: Mutex::new(Breaker::new(
                policy.breaker_failures,
                Duration::from_millis(policy.breaker_cool_down_ms),
            )),
            bulkhead: Arc::new(Semaphore::new(policy.max_concurrent as usize)),
            budget,
            faults,
            policy,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn status(&self) -> DependencyStatus {
        let breaker = self.lock_breaker();
        let in_flight = self
            .policy
            .max_concurrent
            .saturating_sub(u32::try_from(self.bulkhead.available_permits()).unwrap_or(u32::MAX));
        DependencyStatus {
            name: self.name.to_owned(),
            breaker: breaker.state(Instant::now()),
            consecutive_failures: breaker.consecutive_failures,
            in_flight,
            max_concurrent: self.policy.max_concurrent,
        }
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, method: &'static str, outcome: &'static str) {
        metrics::counter!("dependency_calls_total", "dependency" => self.name, "method" => method, "outcome" => outcome)
            .increment(1);
    }

    /// Calls `attempt` (one try of the real call) under the policy; see the module
    /// docs. `attempt` is called again for each retry.
    pub async fn call<T, E, F, Fut>(&self, method: &'static str, attempt: F) -> Result<T, E>
    where
        E: RemoteError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(method, attempt, true).await
    }

    /// As [`Dependency::call`] but never retried (a method that is not idempotent):
    /// breaker, bulkhead, timeout and faults still apply.
    pub async fn call_once<T, E, F, Fut>(&self, method: &'static str, attempt: F) -> Result<T, E>
    where
        E: RemoteError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(method, attempt, false).await
    }

    async fn call_with<T, E, F, Fut>(
        &self,
        method: &'static str,
        attempt: F,
        retries: bool,
    ) -> Result<T, E>
    where
        E: RemoteError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        use tracing::Instrument as _;
        // The span carries the budget left when the call started.
        let span = tracing::info_span!(
            "call",
            // The guard around one dependency call (all its attempts): named after it
            // in trace views, so a waterfall reads `catalog.reserve`, then the attempt.
            otel.name = %format_args!("call {}.{method}", self.name),
            dependency = self.name,
            method,
            deadline_ms = chassis_http::deadline::remaining()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
        let started = Instant::now();
        let result = self
            .call_inner(method, attempt, retries)
            .instrument(span)
            .await;
        // Whole calls (retries included), the caller's view in either topology.
        metrics::histogram!("dependency_call_duration_seconds", "dependency" => self.name, "method" => method)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn call_inner<T, E, F, Fut>(
        &self,
        method: &'static str,
        mut attempt: F,
        retries: bool,
    ) -> Result<T, E>
    where
        E: RemoteError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let peer = self.name;
        let policy = &self.policy;
        // Each call earns the budget a fraction of a retry.
        self.budget.deposit();
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let budget = chassis_http::deadline::budget(Duration::from_millis(policy.timeout_ms));
            if budget.is_zero() {
                // The caller ran out of time: not the dependency's failure, so the
                // breaker does not hear of it.
                self.count(method, "deadline_exceeded");
                return Err(E::from_failure(RpcFailure::DeadlineExceeded { peer }));
            }
            let admission = self.lock_breaker().admit(Instant::now());
            if admission == Admission::Rejected {
                self.count(method, "breaker_open");
                return Err(E::from_failure(RpcFailure::CircuitOpen { peer }));
            }
            let Ok(permit) = Arc::clone(&self.bulkhead).try_acquire_owned() else {
                self.count(method, "bulkhead_full");
                if admission == Admission::Probe {
                    // The probe never ran: let the next call probe instead.
                    self.lock_breaker().probing = false;
                }
                return Err(E::from_failure(RpcFailure::Rejected { peer }));
            };
            let outcome = tokio::time::timeout(budget, self.attempt(method, &mut attempt)).await;
            drop(permit);
            let result = outcome.unwrap_or_else(|_| {
                Err(E::from_failure(RpcFailure::Timeout {
                    peer,
                    budget_ms: budget.as_millis(),
                }))
            });
            let transient = matches!(&result, Err(e) if e.is_transient());
            let changed = self.lock_breaker().record(
                !transient,
                admission == Admission::Probe,
                Instant::now(),
            );
            if let Some(state) = changed {
                metrics::gauge!("dependency_breaker_state", "dependency" => peer)
                    .set(state.gauge());
                tracing::warn!(dependency = peer, state = ?state, "circuit breaker changed state");
            }
            if !transient {
                self.count(method, if result.is_ok() { "ok" } else { "error" });
                return result;
            }
            let backoff = chassis_core::retry::backoff(
                tries,
                Duration::from_millis(policy.retry_base_ms),
                Duration::from_millis(policy.retry_cap_ms),
            );
            let time_left = chassis_http::deadline::remaining().is_none_or(|left| left > backoff);
            if !retries || tries >= policy.retry_attempts || !time_left {
                self.count(method, "unavailable");
                return result;
            }
            if !self.budget.withdraw() {
                self.count(method, "retry_budget_exhausted");
                return result;
            }
            metrics::counter!("dependency_retries_total", "dependency" => peer, "method" => method)
                .increment(1);
            tokio::time::sleep(backoff).await;
        }
    }

    /// One try, with whatever fault is injected for it.
    async fn attempt<T, E, F, Fut>(&self, method: &'static str, attempt: &mut F) -> Result<T, E>
    where
        E: RemoteError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // A hang lasts until the attempt's timeout drops this future.
        if let Some(fault) = self
            .faults
            .find(|| format!("{}.{method}", self.name), self.name)
        {
            if fault.strike().await {
                return Err(E::from_failure(RpcFailure::Injected { peer: self.name }));
            }
        }
        attempt().await
    }
}

/// The guard `chassis_core::rpc!` wraps every contract call in (see the module docs).
impl Guard for Dependency {
    fn call<T, E, F, Fut>(
        &self,
        method: &'static str,
        attempt: F,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send,
        E: RemoteError,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        Dependency::call(self, method, attempt)
    }

    fn call_once<T, E, F, Fut>(
        &self,
        method: &'static str,
        attempt: F,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send,
        E: RemoteError,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        Dependency::call_once(self, method, attempt)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::faults::Fault;
    /// A contract error as the macro's users have them.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum TestError {
        Unavailable(String),
        Answer,
    }

    impl RemoteError for TestError {
        fn from_failure(failure: RpcFailure) -> Self {
            TestError::Unavailable(failure.to_string())
        }
        fn is_transient(&self) -> bool {
            matches!(self, TestError::Unavailable(_))
        }
    }

    fn dependency(policy: DependencyPolicy) -> Dependency {
        Dependency::new("dep", policy, Faults::default())
    }

    fn quick() -> DependencyPolicy {
        DependencyPolicy {
            retry_base_ms: 1,
            retry_cap_ms: 2,
            ..DependencyPolicy::default()
        }
    }

    /// Calls `dep` once with an attempt that fails transiently `fail_first` times.
    async fn call_failing(
        dep: &Dependency,
        fail_first: u32,
        calls: &std::sync::atomic::AtomicU32,
    ) -> Result<u32, TestError> {
        use std::sync::atomic::Ordering;
        dep.call("m", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < fail_first {
                Err(TestError::Unavailable("down".into()))
            } else {
                Ok(n)
            }
        })
        .await
    }

    #[tokio::test]
    async fn transient_failures_are_retried_answers_are_not() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dep = dependency(quick());
        let calls = AtomicU32::new(0);
        assert_eq!(call_failing(&dep, 2, &calls).await, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let answer: Result<(), _> = dep
            .call("m", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(TestError::Answer)
            })
            .await;
        assert_eq!(answer, Err(TestError::Answer));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_call_once_is_not_retried_even_when_transient() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dep = dependency(quick());
        let calls = AtomicU32::new(0);
        let failed: Result<(), _> = dep
            .call_once("m", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(TestError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(failed, Err(TestError::Unavailable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_empty_retry_budget_allows_no_retries() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dep = dependency(DependencyPolicy {
            retry_budget_percent: 0.0,
            retry_min_per_second: 0,
            ..quick()
        });
        let calls = AtomicU32::new(0);
        assert!(call_failing(&dep, 1, &calls).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_breaker_opens_and_then_fails_fast() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dep = dependency(DependencyPolicy {
            retry_attempts: 1,
            breaker_failures: 3,
            breaker_cool_down_ms: 60_000,
            ..quick()
        });
        let calls = AtomicU32::new(0);
        for _ in 0..3 {
            assert!(call_failing(&dep, u32::MAX, &calls).await.is_err());
        }
        assert_eq!(dep.status().breaker, BreakerState::Open);
        let err = call_failing(&dep, 0, &calls).await.unwrap_err();
        assert!(
            matches!(&err, TestError::Unavailable(m) if m.contains("circuit open")),
            "{err:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the open breaker made no call"
        );
    }

    #[tokio::test]
    async fn a_full_bulkhead_refuses_at_once_and_a_hang_times_out() {
        let dep = Arc::new(dependency(DependencyPolicy {
            max_concurrent: 1,
            timeout_ms: 300,
            retry_attempts: 1,
            ..quick()
        }));
        let hanging = {
            let dep = Arc::clone(&dep);
            tokio::spawn(async move {
                dep.call("m", std::future::pending::<Result<(), TestError>>)
                    .await
            })
        };
        // Let the first call take the only permit.
        while dep.status().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        let refused: Result<(), _> = dep.call("m", || async { Ok(()) }).await;
        assert!(
            matches!(&refused, Err(TestError::Unavailable(m)) if m.contains("too many calls")),
            "{refused:?}"
        );
        // Refused without waiting for the hanging call: it is still in flight.
        assert_eq!(dep.status().in_flight, 1);
        let timed_out = hanging.await.unwrap();
        assert!(
            matches!(&timed_out, Err(TestError::Unavailable(m)) if m.contains("within 300 ms")),
            "{timed_out:?}"
        );
    }

    #[tokio::test]
    async fn no_time_left_is_not_the_dependencys_fault() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dep = dependency(DependencyPolicy {
            breaker_failures: 1,
            ..quick()
        });
        let calls = AtomicU32::new(0);
        let result =
            chassis_http::deadline::scope(Instant::now(), call_failing(&dep, 0, &calls)).await;
        assert!(
            matches!(&result, Err(TestError::Unavailable(m)) if m.contains("no time left")),
            "{result:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(dep.status().breaker, BreakerState::Closed);
    }

    #[tokio::test]
    async fn injected_faults_fail_or_delay_the_call() {
        let faults = Faults::default();
        let dep = Dependency::new(
            "dep",
            DependencyPolicy {
                retry_attempts: 1,
                ..quick()
            },
            faults.clone(),
        );
        faults.set(
            "dep.m".into(),
            Fault {
                error_rate: 1.0,
                ..Fault::default()
            },
        );
        let failed: Result<(), _> = dep.call("m", || async { Ok(()) }).await;
        assert!(
            matches!(&failed, Err(TestError::Unavailable(m)) if m.contains("injected")),
            "{failed:?}"
        );
        // Another method is untouched; clearing the fault heals this one.
        assert_eq!(
            dep.call("other", || async { Ok::<_, TestError>(1) }).await,
            Ok(1)
        );
        assert!(faults.clear("dep.m"));
        assert_eq!(
            dep.call("m", || async { Ok::<_, TestError>(2) }).await,
            Ok(2)
        );
    }
}
