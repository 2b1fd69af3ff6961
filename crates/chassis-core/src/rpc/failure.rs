//! Why a call got no typed answer, and how a contract error carries that.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call to another module got no typed answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcFailure {
    #[error("{peer} is unreachable: {message}")]
    Unreachable { peer: &'static str, message: String },
    #[error("{peer} did not answer within {budget_ms} ms")]
    Timeout { peer: &'static str, budget_ms: u128 },
    #[error("no time left to call {peer}")]
    DeadlineExceeded { peer: &'static str },
    #[error("{peer} refused this service's credential")]
    Unauthorized { peer: &'static str },
    #[error("{peer} answered {status}: {detail}")]
    Status {
        peer: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{peer}: cannot read the answer: {message}")]
    Protocol { peer: &'static str, message: String },
    /// The circuit breaker is open: the call was not made.
    #[error("{peer} is failing; calls are suspended for a while (circuit open)")]
    CircuitOpen { peer: &'static str },
    /// Too many calls to it in flight already (the bulkhead): the call was not made.
    #[error("{peer} has too many calls in flight")]
    Rejected { peer: &'static str },
    /// An injected fault (configuration or the faults admin endpoint).
    #[error("{peer}: injected fault")]
    Injected { peer: &'static str },
}

impl RpcFailure {
    /// The `outcome` label of the client metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            RpcFailure::Unreachable { .. } => "unreachable",
            RpcFailure::Timeout { .. } | RpcFailure::DeadlineExceeded { .. } => "timeout",
            RpcFailure::Unauthorized { .. } => "unauthorized",
            RpcFailure::Status { .. } => "status",
            RpcFailure::Protocol { .. } => "protocol",
            RpcFailure::CircuitOpen { .. } => "circuit_open",
            RpcFailure::Rejected { .. } => "rejected",
            RpcFailure::Injected { .. } => "injected",
        }
    }
}

/// A contract error that can travel: serialisable, and with a case for a call that
/// failed on the way.
pub trait RemoteError: Serialize + DeserializeOwned + Send + 'static {
    fn from_failure(failure: RpcFailure) -> Self;
    /// Whether trying again later could succeed (the dependency was unavailable), as
    /// opposed to an answer (out of stock, declined). Breakers count these; retries
    /// repeat them.
    fn is_transient(&self) -> bool;
}
