//! A contract as a type: what the composition root needs to wire any contract the
//! same way, whichever module provides it and wherever that module runs.

use std::sync::Arc;

use super::client::Transport;
use super::guard::Guard;
use super::server::Handler;

/// Implemented by [`rpc!`](crate::rpc!) for `dyn Trait`: the providing module's name,
/// and the three ways to hold the contract (a client over a transport, the same behind
/// a guard, the handlers serving it). The composition root uses it to hand a caller
/// `Arc<dyn Trait>` (local or remote, then guarded) and to serve what a module
/// provides, with no code per contract.
pub trait Contract: Send + Sync + 'static {
    /// The providing module (the `as "name"` of the declaration).
    const PROVIDER: &'static str;
    /// The contract over a transport to the provider in another process.
    fn remote(transport: Arc<dyn Transport>) -> Arc<Self>;
    /// The contract behind `guard`.
    fn guarded<G: Guard>(inner: Arc<Self>, guard: Arc<G>) -> Arc<Self>;
    /// The handlers answering calls to `api`.
    fn handlers(api: Arc<Self>) -> Vec<Handler>;
}
