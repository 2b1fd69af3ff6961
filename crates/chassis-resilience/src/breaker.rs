//! The circuit breaker: a pure state machine over the clock it is given, so it is
//! tested without sleeping. (Hand-written: it is small, and it must expose its state
//! and take our clock; see ADR 0010.)

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// What a breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
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
    pub(crate) fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// The breaker itself.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    pub(crate) consecutive_failures: u32,
    open_until: Option<Instant>,
    pub(crate) probing: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold,
            cool_down,
            consecutive_failures: 0,
            open_until: None,
            probing: false,
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
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
    pub(crate) fn record(
        &mut self,
        success: bool,
        probe: bool,
        now: Instant,
    ) -> Option<BreakerState> {
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
