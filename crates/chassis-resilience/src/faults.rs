//! Injected faults (testing and game days; off unless configured): added latency, an
//! error rate or a hang, per dependency method, per dependency, or per route.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::IntoResponse;
use chassis_http::Problem;
use serde::{Deserialize, Serialize};
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

    /// Applies the fault to the call or request in hand: waits its latency, never
    /// returns if it hangs (the caller's timeout or budget drops the future), and
    /// then says whether this one fails (drawn at the error rate).
    pub async fn strike(&self) -> bool {
        if self.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.latency_ms)).await;
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate
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
    let fault = {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("", axum::extract::MatchedPath::as_str);
        faults.find(|| format!("{} {route}", request.method()), "")
    };
    // A hang is ended by the common layers' budget, with a 504.
    if let Some(fault) = fault {
        if fault.strike().await {
            return Problem::unavailable("injected fault").into_response();
        }
    }
    next.run(request).await
}
