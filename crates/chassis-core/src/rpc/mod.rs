//! Calls between modules, declared once.
//!
//! A contract trait written inside [`rpc!`](crate::rpc!) yields, from that one
//! declaration:
//!
//! - the trait itself, which the owning module implements: in the monolith callers
//!   hold an `Arc<dyn Trait>` of the module's service and the call is a function call;
//! - a client implementing the same trait over any [`Transport`] (chassis-http's
//!   HTTP/JSON client in the split topology), so a caller cannot tell which topology
//!   it is in;
//! - the guarded wrapper: the trait implemented for [`Guarded<dyn Trait, G>`](Guarded)
//!   for any [`Guard`] (chassis-resilience's `Dependency`: breaker, bulkhead,
//!   timeout, budgeted retries, injected faults), for either topology;
//! - the server side as a table of [`Handler`]s, one per method, which a transport
//!   serves (chassis-http: `POST /internal/v1/<service>/<method>`);
//! - [`Contract`] for `dyn Trait`, which ties those together so the composition root
//!   wires every contract with the same generic code.
//!
//! The wire format is the contract's, whatever carries it: the arguments travel as
//! one JSON object named by parameter; answers are `{"ok": value}` (status
//! [`ANSWER_OK`]) or `{"err": typed error}` ([`ANSWER_ERR`]). The contract's own
//! error enum survives the round trip, and a failure on the way (unreachable, timed
//! out, refused credential, unexpected answer) becomes that enum's "unavailable" case
//! through [`RemoteError`].
//!
//! This layer names no HTTP, runtime or resilience type: transports and guards plug
//! in through [`Transport`] and [`Guard`].

mod client;
mod contract;
mod failure;
mod guard;
mod macros;
mod server;
mod wire;

pub use client::{Transport, call};
pub use contract::Contract;
pub use failure::{RemoteError, RpcFailure};
pub use guard::{Guard, Guarded};
pub use server::{BoxFuture, Handle, Handler};
pub use wire::{ANSWER_ERR, ANSWER_OK, Answer, Reply, Served, answer, args, decode};

/// What the [`rpc!`](crate::rpc!) expansion needs, re-exported so contract crates do
/// not depend on each piece themselves.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}
