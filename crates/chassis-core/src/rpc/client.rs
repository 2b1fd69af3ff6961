//! The calling side: a typed call over any transport.

use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::failure::{RemoteError, RpcFailure};
use super::wire::{Answer, Reply, decode};

/// Carries encoded calls to one peer module and brings its answers back (chassis-http:
/// `POST /internal/v1/<peer>/<method>` with a service credential, the caller's
/// `traceparent` and the time left). It reports a call it could not make, or whose
/// answer never came, as an [`RpcFailure`]; any answer that did come is the
/// [`Answer`], whatever its status.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The peer module's name.
    fn peer(&self) -> &'static str;
    /// Sends `method` with its encoded arguments.
    async fn send(&self, method: &'static str, args: Vec<u8>) -> Result<Answer, RpcFailure>;
}

/// Calls `method` with `args` over `transport`, in a client span named
/// `<peer>.<method>`, counted in `rpc_client_requests_total` and
/// `rpc_client_duration_seconds` by peer, method and outcome.
pub async fn call<A, T, E>(
    transport: &dyn Transport,
    method: &'static str,
    args: &A,
) -> Result<T, E>
where
    A: Serialize + ?Sized,
    T: DeserializeOwned,
    E: RemoteError,
{
    let peer = transport.peer();
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("{peer}.{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        peer,
        method,
    );
    let started = Instant::now();
    let result = async {
        let args = serde_json::to_vec(args).map_err(|e| RpcFailure::Protocol {
            peer,
            message: format!("cannot encode the arguments: {e}"),
        })?;
        let answer = transport.send(method, args).await?;
        decode::<T, E>(peer, &answer)
    }
    .instrument(span.clone())
    .await;
    let outcome = match &result {
        Ok(Reply::Ok(_)) => "ok",
        Ok(Reply::Err(_)) => "error",
        Err(failure) => {
            span.record("otel.status_code", "error");
            span.in_scope(|| {
                tracing::warn!(error = %failure, "call to another module failed");
            });
            failure.outcome()
        }
    };
    let labels = [
        ("peer", peer.to_owned()),
        ("method", method.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("rpc_client_requests_total", &labels).increment(1);
    metrics::histogram!("rpc_client_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(Reply::Ok(value)) => Ok(value),
        Ok(Reply::Err(error)) => Err(error),
        Err(failure) => Err(E::from_failure(failure)),
    }
}
