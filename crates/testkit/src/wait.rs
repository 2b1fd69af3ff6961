//! Bounded waiting: every loop has a deadline and says what it waited for.

use std::future::Future;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a test waits for something done in the background (a saga step, an event
/// delivery, a sweep) before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a check is run again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it returns `Ok`, failing after [`PATIENCE`] with
/// `what` and the last `Err` (a description of what was seen).
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(what, PATIENCE, check).await
}

/// Like [`eventually`], with a patience of its own.
pub async fn eventually_within<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "gave up after {patience:?} waiting for {what}; last seen: {last}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it holds; fails the test after `patience`.
pub async fn until<F, Fut>(what: &str, patience: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, patience, || {
        let holds = check();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await;
}

/// An [`eventually`] check: `GET url` answers 200; the `Err` says what came instead.
pub fn answers_ok(
    client: &reqwest::Client,
    url: &str,
) -> impl Future<Output = Result<(), String>> + use<> {
    let answer = client.get(url).send();
    async move {
        match answer.await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(format!("{} from {}", response.status(), response.url())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Waits (blocking the thread, bounded by `limit`) for `child` to exit; `None` if it
/// is still running then.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn eventually_returns_the_first_ok() {
        let calls = AtomicU32::new(0);
        let value = eventually_within("the third call", Duration::from_secs(5), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                n @ 2.. => Ok(n),
                n => Err(format!("call {n}")),
            }
        })
        .await;
        assert_eq!(value, 2);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never; last seen: no")]
    async fn eventually_gives_up_with_the_last_answer() {
        eventually_within("never", Duration::from_millis(120), || async {
            Err::<(), _>("no".to_owned())
        })
        .await;
    }

    #[tokio::test]
    async fn answers_ok_is_a_200() {
        use axum::http::StatusCode;
        use axum::routing::get;
        let app = axum::Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route("/no", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
        let (addr, _task) = crate::http::serve(app).await;
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        answers_ok(&client, &format!("{base}/ok")).await.unwrap();
        let refused = answers_ok(&client, &format!("{base}/no"))
            .await
            .unwrap_err();
        assert!(refused.starts_with("503"), "{refused}");
        let closed = format!("http://{}/ok", crate::closed_addr());
        assert!(answers_ok(&client, &closed).await.is_err());
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for false")]
    async fn until_gives_up() {
        until("false", Duration::from_millis(120), || async { false }).await;
    }
}
