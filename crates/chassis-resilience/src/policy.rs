//! How a dependency is guarded: its policy, and the overrides configuration gives.

use serde::{Deserialize, Serialize};

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
