//! The RPC contract layer without any transport of the real world: a contract declared
//! with `rpc!`, its client over an in-memory transport that hands the encoded call to
//! the contract's own handler table, and its guarded wrapper over a counting guard.
//! (The HTTP transport is tested in contracts/tests/rpc.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chassis_core::rpc::{
    Answer, Guard, Guarded, Handler, RemoteError, RpcFailure, Served, Transport,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
enum CounterError {
    #[error("{0} is negative")]
    Negative(i64),
    #[error("counter unavailable: {0}")]
    Unavailable(String),
}

impl RemoteError for CounterError {
    fn from_failure(failure: RpcFailure) -> Self {
        CounterError::Unavailable(failure.to_string())
    }

    fn is_transient(&self) -> bool {
        matches!(self, CounterError::Unavailable(_))
    }
}

chassis_core::rpc! {
    /// A contract with a typed error, several arguments and none.
    trait CounterApi as "counter" {
        client CounterClient;
        handlers counter_handlers;
        once [reset];

        async fn add(&self, by: i64, note: String) -> Result<i64, CounterError>;
        async fn total(&self) -> Result<i64, CounterError>;
        /// Not idempotent as far as the guard knows: tried once.
        async fn reset(&self) -> Result<(), CounterError>;
    }
}

#[derive(Default)]
struct Counter(std::sync::Mutex<i64>);

#[async_trait::async_trait]
impl CounterApi for Counter {
    async fn add(&self, by: i64, note: String) -> Result<i64, CounterError> {
        assert!(!note.is_empty(), "every argument arrives");
        if by < 0 {
            return Err(CounterError::Negative(by));
        }
        let mut total = self.0.lock().unwrap();
        *total += by;
        Ok(*total)
    }

    async fn total(&self) -> Result<i64, CounterError> {
        Ok(*self.0.lock().unwrap())
    }

    async fn reset(&self) -> Result<(), CounterError> {
        *self.0.lock().unwrap() = 0;
        Ok(())
    }
}

/// Serves calls from a handler table in process; `down` answers as a server that is not
/// there.
#[derive(Debug)]
struct InMemory {
    handlers: Vec<Handler>,
    down: bool,
}

#[async_trait::async_trait]
impl Transport for InMemory {
    fn peer(&self) -> &'static str {
        "counter"
    }

    async fn send(&self, method: &'static str, args: Vec<u8>) -> Result<Answer, RpcFailure> {
        if self.down {
            return Err(RpcFailure::Unreachable {
                peer: "counter",
                message: "connection refused".into(),
            });
        }
        let handler = self
            .handlers
            .iter()
            .find(|h| h.service == "counter" && h.method == method)
            .expect("a handler per method");
        match (handler.handle)(&args).await {
            Served::Answer(answer) => Ok(answer),
            Served::Malformed(detail) => Ok(Answer {
                status: 400,
                body: serde_json::to_vec(&serde_json::json!({ "detail": detail })).unwrap(),
            }),
            Served::Unencodable(e) => panic!("{e}"),
        }
    }
}

fn client(down: bool) -> CounterClient {
    CounterClient::new(InMemory {
        handlers: counter_handlers(Arc::new(Counter::default())),
        down,
    })
}

#[tokio::test]
async fn the_client_is_a_drop_in_for_the_service() {
    let remote = client(false);
    assert_eq!(remote.add(2, "a".into()).await, Ok(2));
    assert_eq!(remote.add(3, "b".into()).await, Ok(5));
    assert_eq!(remote.total().await, Ok(5));
    assert_eq!(
        remote.add(-1, "c".into()).await,
        Err(CounterError::Negative(-1))
    );
    assert_eq!(
        client(true).total().await,
        Err(CounterError::Unavailable(
            "counter is unreachable: connection refused".into()
        ))
    );
}

#[tokio::test]
async fn handlers_refuse_malformed_arguments() {
    let handlers = counter_handlers(Arc::new(Counter::default()));
    let add = handlers.iter().find(|h| h.method == "add").unwrap();
    for body in [&b"[1, \"x\"]"[..], b"{\"by\": 1}", b"not json"] {
        match (add.handle)(body).await {
            Served::Malformed(detail) => {
                assert!(detail.starts_with("malformed call arguments"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
    match (add.handle)(br#"{"by": 1, "note": "n", "newer": true}"#).await {
        Served::Answer(answer) => assert_eq!(answer.body, br#"{"ok":1}"#),
        other => panic!("{other:?}"),
    }
}

/// Counts calls and attempts; retries a transient failure once, except in
/// `call_once`, which it counts apart.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicU32,
    attempts: AtomicU32,
    once: AtomicU32,
}

impl Guard for Counting {
    fn call<T, E, F, Fut>(
        &self,
        method: &'static str,
        mut attempt: F,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send,
        E: RemoteError,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        assert!(["add", "total"].contains(&method));
        self.calls.fetch_add(1, Ordering::SeqCst);
        async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            match attempt().await {
                Err(e) if e.is_transient() => {
                    self.attempts.fetch_add(1, Ordering::SeqCst);
                    attempt().await
                }
                other => other,
            }
        }
    }

    fn call_once<T, E, F, Fut>(
        &self,
        method: &'static str,
        mut attempt: F,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send,
        E: RemoteError,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        assert_eq!(method, "reset", "only the methods named `once`");
        self.once.fetch_add(1, Ordering::SeqCst);
        async move { attempt().await }
    }
}

#[tokio::test]
async fn guarded_calls_go_through_the_guard() {
    let guard = Arc::new(Counting::default());
    let local: Arc<dyn CounterApi> = Arc::new(Guarded::new(
        Arc::new(Counter::default()) as Arc<dyn CounterApi>,
        Arc::clone(&guard),
    ));
    assert_eq!(local.add(4, "a".into()).await, Ok(4));
    assert_eq!(
        local.add(-4, "b".into()).await,
        Err(CounterError::Negative(-4))
    );
    assert_eq!(guard.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        guard.attempts.load(Ordering::SeqCst),
        2,
        "answers are not retried"
    );

    let down: Arc<dyn CounterApi> = Arc::new(Guarded::new(
        Arc::new(client(true)) as Arc<dyn CounterApi>,
        Arc::clone(&guard),
    ));
    assert!(down.total().await.is_err());
    assert_eq!(
        guard.attempts.load(Ordering::SeqCst),
        4,
        "a transient failure is"
    );

    // A method named in `once [...]` goes through the guard's call_once.
    assert!(down.reset().await.is_err());
    assert_eq!(guard.once.load(Ordering::SeqCst), 1);
    assert_eq!(guard.attempts.load(Ordering::SeqCst), 4);
}
