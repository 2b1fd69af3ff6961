//! The deadline of the work in hand, carried across hops.
//!
//! The edge gives every public request a budget; each call to another service sends
//! what is left of it ([`HEADER`], milliseconds, relative so clocks need not agree),
//! and the service on the other side works within it. Inside a process the deadline
//! is a task-local: code that spawns background work (the saga) leaves it behind on
//! purpose, since that work must outlive the request.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// Milliseconds the receiver has left to answer.
pub const HEADER: HeaderName = HeaderName::from_static("x-bazaar-deadline-ms");

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the current deadline (or the current one, if that is
/// sooner: a callee never gets more time than its caller has).
pub async fn scope<F: Future>(deadline: Instant, work: F) -> F::Output {
    let deadline = current().map_or(deadline, |outer| outer.min(deadline));
    DEADLINE.scope(deadline, work).await
}

/// The current deadline, if the work in hand has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left before the current deadline (zero once it passed).
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// `budget`, shortened to what is left of the current deadline.
pub fn budget(budget: Duration) -> Duration {
    remaining().map_or(budget, |left| left.min(budget))
}

/// The budget a caller sent, if it sent a well-formed one.
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// The header value for a call given `budget`.
pub fn header_value(budget: Duration) -> HeaderValue {
    let millis = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    HeaderValue::from(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inner_scopes_only_shorten() {
        assert!(current().is_none());
        let soon = Instant::now() + Duration::from_millis(100);
        let later = Instant::now() + Duration::from_secs(100);
        scope(soon, async {
            scope(later, async {
                assert!(remaining().unwrap() <= Duration::from_millis(100));
                assert!(budget(Duration::from_secs(5)) <= Duration::from_millis(100));
            })
            .await;
        })
        .await;
        assert_eq!(budget(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn header_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, header_value(Duration::from_millis(1500)));
        assert_eq!(from_headers(&headers), Some(Duration::from_millis(1500)));
        headers.insert(HEADER, HeaderValue::from_static("soon"));
        assert_eq!(from_headers(&headers), None);
    }
}
