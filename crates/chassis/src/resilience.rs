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
//!    caller's [deadline](crate::deadline); the work is dropped when it runs out.
//! 5. **Retries**, for transient failures only: every contract method is idempotent
//!    (reads, or writes carrying an order id or idempotency key: see the contracts),
//!    so retrying cannot double an effect. Full-jitter backoff, never past the
//!    deadline, and drawn from a **retry budget** (tower's `TpsBudget`: retries may
//!    add at most `retry_budget_percent` of the calls, plus a small floor), so
//!    retries cannot multiply the load on a dependency that is down.
//!
//! The state of every dependency is in the metrics and at
//! `GET /api/v1/admin/resilience`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::rpc::{RemoteError, RpcFailure};

/// How one dependency is guarded. Defaults suit a call that normally takes
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DependencyPolicy {
    /// Budget of one attempt (shortened by the caller's deadline).
    pub timeout_ms: u64,
    /// Attempts per call, the first included (1: no retries).
    pub retry_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    /// Retries may add at most this share of the calls (0.2: one retry per five
    /// calls), on top of `retry_min_per_second`.
    pub retry_budget_percent: f32,
    pub retry_min_per_second: u32,
    /// Consecutive transient failures that open the breaker (0: no breaker).
    pub breaker_failures: u32,
    /// How long an open breaker fails calls before letting a probe through.
    pub breaker_cool_down_ms: u64,
    /// Calls in flight at most (the bulkhead).
    pub max_concurrent: u32,
}

impl Default for DependencyPolicy {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            retry_attempts: 3,
            retry_base_ms: 20,
            retry_cap_ms: 500,
            retry_budget_percent: 0.2,
            retry_min_per_second: 10,
            breaker_failures: 5,
            breaker_cool_down_ms: 5_000,
            max_concurrent: 64,
        }
    }
}

impl DependencyPolicy {
    /// Why this policy cannot be used, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.timeout_ms == 0 {
            return Some("timeout_ms must be positive");
        }
        if self.retry_attempts == 0 {
            return Some("retry_attempts must be at least 1");
        }
        if !(0.0..=1000.0).contains(&self.retry_budget_percent) {
            return Some("retry_budget_percent must be between 0 and 1000");
        }
        if self.retry_min_per_second >= i32::MAX.unsigned_abs() {
            return Some("retry_min_per_second is too large");
        }
        if self.max_concurrent == 0 {
            return Some("max_concurrent must be at least 1");
        }
        None
    }
}

/// A dependency's policy as configured: only the fields set, applied over the
/// dependency's built-in policy (so `breaker_failures = 3` for payments keeps its
/// single attempt).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyOverrides {
    pub timeout_ms: Option<u64>,
    pub retry_attempts: Option<u32>,
    pub retry_base_ms: Option<u64>,
    pub retry_cap_ms: Option<u64>,
    pub retry_budget_percent: Option<f32>,
    pub retry_min_per_second: Option<u32>,
    pub breaker_failures: Option<u32>,
    pub breaker_cool_down_ms: Option<u64>,
    pub max_concurrent: Option<u32>,
}

impl PolicyOverrides {
    /// `base` with every field set here replaced.
    #[must_use]
    pub fn apply(&self, base: DependencyPolicy) -> DependencyPolicy {
        DependencyPolicy {
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            retry_attempts: self.retry_attempts.unwrap_or(base.retry_attempts),
            retry_base_ms: self.retry_base_ms.unwrap_or(base.retry_base_ms),
            retry_cap_ms: self.retry_cap_ms.unwrap_or(base.retry_cap_ms),
            retry_budget_percent: self
                .retry_budget_percent
                .unwrap_or(base.retry_budget_percent),
            retry_min_per_second: self
                .retry_min_per_second
                .unwrap_or(base.retry_min_per_second),
            breaker_failures: self.breaker_failures.unwrap_or(base.breaker_failures),
            breaker_cool_down_ms: self
                .breaker_cool_down_ms
                .unwrap_or(base.breaker_cool_down_ms),
            max_concurrent: self.max_concurrent.unwrap_or(base.max_concurrent),
        }
    }
}

/// An injected fault (testing and game days only; off unless configured).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Fault {
    /// Added before the call.
    pub latency_ms: u64,
    /// Share of calls (0.0 to 1.0) that fail as unavailable without being made.
    pub error_rate: f64,
    /// The call never answers (until its timeout or deadline).
    pub hang: bool,
}

impl Fault {
    pub fn problem(&self) -> Option<&'static str> {
        (!(0.0..=1.0).contains(&self.error_rate))
            .then_some("error_rate must be between 0.0 and 1.0")
    }
}

/// The faults in force, by target: `<dependency>.<method>`, `<dependency>`, or a
/// route (`GET /api/v1/products/{id}`). Shared by every dependency and the route
/// layer of a process, and changed at run time by the admin endpoint when enabled.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<FaultTable>);

#[derive(Debug, Default)]
struct FaultTable {
    by_target: Mutex<BTreeMap<String, Fault>>,
    /// Whether any fault is set: every call and request checks this, and only then
    /// builds its target name and takes the lock (normally never).
    any: std::sync::atomic::AtomicBool,
}

impl Faults {
    pub fn new(initial: BTreeMap<String, Fault>) -> Self {
        let faults = Self::default();
        *faults.lock() = initial;
        faults.refresh();
        faults
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Fault>> {
        // A panic while holding it leaves a whole map behind: still usable.
        self.0
            .by_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh(&self) {
        let any = !self.lock().is_empty();
        self.0.any.store(any, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether any fault is set at all.
    pub fn any(&self) -> bool {
        self.0.any.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fault for the target `target()` names, else for `fallback` (may be empty:
    /// none). `target` is only called when some fault is set.
    pub fn find(&self, target: impl FnOnce() -> String, fallback: &str) -> Option<Fault> {
        if !self.any() {
            return None;
        }
        let target = target();
        let faults = self.lock();
        faults
            .get(&target)
            .or_else(|| {
                (!fallback.is_empty())
                    .then(|| faults.get(fallback))
                    .flatten()
            })
            .cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Fault> {
        self.lock().clone()
    }

    pub fn set(&self, target: String, fault: Fault) {
        self.lock().insert(target, fault);
        self.refresh();
    }

    pub fn clear(&self, target: &str) -> bool {
        let removed = self.lock().remove(target).is_some();
        self.refresh();
        removed
    }
}

/// What a breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Allowed,
    /// Half-open: this call is the probe.
    Probe,
    Rejected,
}

/// A breaker's state, as the admin endpoint and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// The breaker itself: a pure state machine over the clock it is given, so it is
/// tested without sleeping. (Hand-written: it is small, and it must expose its state
/// and take our clock; see ADR 0010.)
#[derive(Debug, Clone)]
struct Breaker {
    threshold: u32,
    cool_down: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold,
            cool_down,
            consecutive_failures: 0,
            open_until: None,
            probing: false,
        }
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn admit(&mut self, now: Instant) -> Admission {
        match self.state(now) {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => Admission::Rejected,
            // One probe at a time; the others fail fast until it reports.
            BreakerState::HalfOpen if self.probing => Admission::Rejected,
            BreakerState::HalfOpen => {
                self.probing = true;
                Admission::Probe
            }
        }
    }

    /// Records an outcome; returns the new state when it changed.
    fn record(&mut self, success: bool, probe: bool, now: Instant) -> Option<BreakerState> {
        let before = self.state(now);
        if probe {
            self.probing = false;
        }
        if success {
            self.consecutive_failures = 0;
            if probe || before != BreakerState::Closed {
                self.open_until = None;
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            let trips = self.threshold > 0 && self.consecutive_failures >= self.threshold;
            if probe || (trips && before == BreakerState::Closed) {
                self.open_until = Some(now + self.cool_down);
            }
        }
        let after = self.state(now);
        (after != before).then_some(after)
    }
}

/// One guarded dependency (see the module docs).
pub struct Dependency {
    name: &'static str,
    policy: DependencyPolicy,
    breaker: Mutex<Breaker>,
    bulkhead: Arc<Semaphore>,
    budget: TpsBudget,
    faults: Faults,
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

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
        use tracing::Instrument as _;
        // The span carries the budget left when the call started.
        let span = tracing::info_span!(
            "call",
            // The guard around one dependency call (all its attempts): named after it
            // in trace views, so a waterfall reads `catalog.reserve`, then the attempt.
            otel.name = %format_args!("call {}.{method}", self.name),
            dependency = self.name,
            method,
            deadline_ms = crate::deadline::remaining()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
        let started = Instant::now();
        let result = self.call_inner(method, attempt).instrument(span).await;
        // Whole calls (retries included), the caller's view in either topology.
        metrics::histogram!("dependency_call_duration_seconds", "dependency" => self.name, "method" => method)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn call_inner<T, E, F, Fut>(&self, method: &'static str, mut attempt: F) -> Result<T, E>
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
            let budget = crate::deadline::budget(Duration::from_millis(policy.timeout_ms));
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
            let backoff = crate::retry::backoff(
                tries,
                Duration::from_millis(policy.retry_base_ms),
                Duration::from_millis(policy.retry_cap_ms),
            );
            let time_left = crate::deadline::remaining().is_none_or(|left| left > backoff);
            if tries >= policy.retry_attempts || !time_left {
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
        if let Some(fault) = self
            .faults
            .find(|| format!("{}.{method}", self.name), self.name)
        {
            if fault.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
            }
            if fault.hang {
                // Until the attempt's timeout drops this future.
                std::future::pending::<()>().await;
            }
            if fault.error_rate > 0.0 && rand::random::<f64>() < fault.error_rate {
                return Err(E::from_failure(RpcFailure::Injected { peer: self.name }));
            }
        }
        attempt().await
    }
}

/// A contract implementation (the module's service, or its HTTP client) behind a
/// [`Dependency`]'s guards. `chassis::rpc!` implements each contract trait for
/// `Guarded<dyn Trait>`, so callers hold an `Arc<dyn Trait>` as before.
pub struct Guarded<T: ?Sized> {
    inner: Arc<T>,
    dependency: Arc<Dependency>,
}

impl<T: ?Sized> Guarded<T> {
    pub fn new(inner: Arc<T>, dependency: Arc<Dependency>) -> Self {
        Self { inner, dependency }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn dependency(&self) -> &Dependency {
        &self.dependency
    }
}

impl<T: ?Sized> std::fmt::Debug for Guarded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("dependency", &self.dependency.name)
            .finish_non_exhaustive()
    }
}

/// Route faults: a middleware (attach with `Router::route_layer`, so the route template
/// is known) applying the fault configured for `<METHOD> <route template>`
/// (`GET /api/v1/products/{id}`, or on a split module `POST
/// /internal/v1/payments/charge`): latency, a 503 at the error rate, or a hang until
/// the request's budget runs out.
pub async fn inject_route_faults(
    axum::extract::State(faults): axum::extract::State<Faults>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let fault = {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("", axum::extract::MatchedPath::as_str);
        faults.find(|| format!("{} {route}", request.method()), "")
    };
    if let Some(fault) = fault {
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        if fault.hang {
            // The common layers' budget ends it with a 504.
            std::future::pending::<()>().await;
        }
        if fault.error_rate > 0.0 && rand::random::<f64>() < fault.error_rate {
            return crate::Problem::unavailable("injected fault").into_response();
        }
    }
    next.run(request).await
}

/// Every dependency of a process, for the admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<Arc<Dependency>>>>);

impl Registry {
    pub fn add(&self, dependency: Arc<Dependency>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dependency);
    }

    pub fn statuses(&self) -> Vec<DependencyStatus> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|d| d.status())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_failures_then_probes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Admission::Allowed);
            assert_eq!(b.record(false, false, t0), None);
        }
        // A success in between resets the count.
        assert_eq!(b.record(true, false, t0), None);
        for _ in 0..2 {
            b.record(false, false, t0);
        }
        assert_eq!(b.record(false, false, t0), Some(BreakerState::Open));
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Admission::Rejected);

        // Cool-down over: one probe, the rest still fail fast.
        let later = t0 + Duration::from_secs(6);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.admit(later), Admission::Rejected);
        // The probe fails: open again for a whole cool-down.
        assert_eq!(b.record(false, true, later), Some(BreakerState::Open));
        assert_eq!(b.admit(later + Duration::from_secs(4)), Admission::Rejected);
        // The next probe succeeds: closed.
        let much_later = later + Duration::from_secs(6);
        assert_eq!(b.admit(much_later), Admission::Probe);
        assert_eq!(b.record(true, true, much_later), Some(BreakerState::Closed));
        assert_eq!(b.admit(much_later), Admission::Allowed);
    }

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
        let result = crate::deadline::scope(Instant::now(), call_failing(&dep, 0, &calls)).await;
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

    #[test]
    fn a_zero_threshold_never_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(0, Duration::from_secs(5));
        for _ in 0..100 {
            b.record(false, false, t0);
        }
        assert_eq!(b.admit(t0), Admission::Allowed);
    }
}

/// `GET /api/v1/admin/resilience` (every dependency's breaker and bulkhead) and, when
/// enabled at start, the faults endpoints.
pub mod admin {
    use axum::Router;
    use axum::extract::{FromRef, State};
    use axum::http::StatusCode;
    use axum::routing::{get, put};
    use serde::Serialize;

    use super::{DependencyStatus, Fault, Faults, Registry};
    use crate::Problem;
    use crate::auth::{AdminUser, Tokens};
    use crate::extract::{Json, Path};

    #[derive(Clone, Debug)]
    struct AdminState {
        registry: Registry,
        faults: Faults,
        tokens: Tokens,
    }

    impl FromRef<AdminState> for Tokens {
        fn from_ref(state: &AdminState) -> Tokens {
            state.tokens.clone()
        }
    }

    #[derive(Debug, Serialize, utoipa::ToSchema)]
    pub struct ResilienceList {
        items: Vec<DependencyStatus>,
    }

    #[derive(Debug, Serialize, utoipa::ToSchema)]
    pub struct InjectedFault {
        /// `<dependency>.<method>`, `<dependency>` or `<METHOD> <route>`.
        target: String,
        #[serde(flatten)]
        fault: Fault,
    }

    #[derive(Debug, Serialize, utoipa::ToSchema)]
    pub struct FaultList {
        items: Vec<InjectedFault>,
    }

    /// Every guarded dependency of this process (of every process, through the split
    /// gateway): breaker state, consecutive failures, calls in flight.
    #[utoipa::path(get, path = "/api/v1/admin/resilience", tag = "ops",
        security(("bearer" = ["admin"])),
        responses((status = 200, description = "The state of every dependency", body = ResilienceList)))]
    async fn resilience(
        State(state): State<AdminState>,
        AdminUser(_admin): AdminUser,
    ) -> Json<ResilienceList> {
        Json(ResilienceList {
            items: state.registry.statuses(),
        })
    }

    /// The faults in force.
    #[utoipa::path(get, path = "/api/v1/admin/faults", tag = "ops",
        security(("bearer" = ["admin"])),
        responses((status = 200, description = "Injected faults", body = FaultList)))]
    async fn list_faults(
        State(state): State<AdminState>,
        AdminUser(_admin): AdminUser,
    ) -> Json<FaultList> {
        Json(FaultList {
            items: state
                .faults
                .all()
                .into_iter()
                .map(|(target, fault)| InjectedFault { target, fault })
                .collect(),
        })
    }

    /// Injects (or replaces) the fault for a target.
    #[utoipa::path(put, path = "/api/v1/admin/faults/{target}", tag = "ops",
        security(("bearer" = ["admin"])),
        params(("target" = String, Path, description = "`<dependency>.<method>`, `<dependency>` or `<METHOD> <route>`")),
        request_body = Fault,
        responses((status = 200, description = "The fault now in force", body = InjectedFault)))]
    async fn put_fault(
        State(state): State<AdminState>,
        AdminUser(_admin): AdminUser,
        Path(target): Path<String>,
        Json(fault): Json<Fault>,
    ) -> Result<Json<InjectedFault>, Problem> {
        if let Some(problem) = fault.problem() {
            return Err(Problem::validation(vec![crate::FieldError::new(
                "error_rate",
                problem,
            )]));
        }
        state.faults.set(target.clone(), fault.clone());
        tracing::warn!(target = %target, ?fault, "fault injected");
        Ok(Json(InjectedFault { target, fault }))
    }

    /// Removes a target's fault (204 whether or not there was one).
    #[utoipa::path(delete, path = "/api/v1/admin/faults/{target}", tag = "ops",
        security(("bearer" = ["admin"])),
        params(("target" = String, Path, description = "The target to clear")),
        responses((status = 204, description = "No fault for the target any more")))]
    async fn clear_fault(
        State(state): State<AdminState>,
        AdminUser(_admin): AdminUser,
        Path(target): Path<String>,
    ) -> StatusCode {
        if state.faults.clear(&target) {
            tracing::warn!(target = %target, "fault cleared");
        }
        StatusCode::NO_CONTENT
    }

    /// The resilience route, plus the faults routes when `fault_admin` is on.
    pub fn router(registry: Registry, faults: Faults, tokens: Tokens, fault_admin: bool) -> Router {
        let mut router = Router::new().route("/api/v1/admin/resilience", get(resilience));
        if fault_admin {
            router = router
                .route("/api/v1/admin/faults", get(list_faults))
                .route(
                    "/api/v1/admin/faults/{target}",
                    put(put_fault).delete(clear_fault),
                );
        }
        router.with_state(AdminState {
            registry,
            faults,
            tokens,
        })
    }

    /// The public document lists the resilience route only: the faults routes exist
    /// only where `fault_admin` is on (see docs/operations.md).
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(resilience),
        components(schemas(ResilienceList, DependencyStatus))
    )]
    pub struct ApiDoc;
}
