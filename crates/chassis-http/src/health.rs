//! Liveness and readiness.
//!
//! Live means the process answers. Ready means start-up has finished and every
//! registered check passes: what the process itself serves from (its module stores;
//! in the split, its NATS connection). Peers are deliberately not checked: one
//! module's outage must not make its callers unready in turn. A load balancer routes
//! only to ready instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chassis_core::health::Check;
use serde_json::json;

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn Check>>,
    /// Set once start-up (migrations, seeding) has finished.
    started: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn with_check(mut self, check: Arc<dyn Check>) -> Self {
        self.checks.push(check);
        self
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub async fn report(&self) -> (bool, serde_json::Value) {
        let mut ok = self.started.load(Ordering::Acquire);
        let mut results = serde_json::Map::new();
        for check in &self.checks {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check.check())
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()));
            let value = match outcome {
                Ok(()) => json!("ok"),
                Err(e) => {
                    ok = false;
                    json!(e)
                }
            };
            results.insert(check.name(), value);
        }
        let status = if ok { "ready" } else { "not_ready" };
        (ok, json!({ "status": status, "checks": results }))
    }
}

/// Health of this process.
#[utoipa::path(get, path = "/health/live", tag = "ops",
    responses((status = 200, description = "The process is alive", body = serde_json::Value)))]
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// Readiness of this process: its stores and required dependencies.
#[utoipa::path(get, path = "/health/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = serde_json::Value),
        (status = 503, description = "Not ready; the body says which check failed", body = serde_json::Value)))]
pub async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ok, body) = readiness.report().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
