//! The HTTP transport of chassis-core's RPC layer.
//!
//! A call is `POST /internal/v1/<service>/<method>` with the arguments as one JSON
//! object; the answer is 200 `{"ok": ..}` or 422 `{"err": ..}` (a malformed call is a
//! 400 problem). Every call carries a short-lived service credential
//! ([`ServiceKeys`](crate::auth::ServiceKeys)) whose audience is the module called,
//! the W3C `traceparent` of the calling span and the time left
//! ([`deadline`](crate::deadline)); internal routes refuse calls without a valid
//! credential for their module with 401 and calls from a module the registry does
//! not list as a caller with 403 ([`internal`]), and are never routed by the gateway.
//!
//! [`Client`] is the calling side (a `chassis_core::rpc::Transport`), [`router`] turns
//! a contract's handler table into the serving routes.

mod client;
mod server;

pub use client::{Client, http_client};
pub use server::{PREFIX, internal, router};
