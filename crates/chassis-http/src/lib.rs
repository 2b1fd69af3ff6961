//! The HTTP side of the bazaar platform.
//!
//! Errors as problem+json ([`Problem`]), extractors whose rejections are problems
//! ([`extract`]), user tokens and service credentials ([`auth`]), the deadline
//! carried across hops ([`deadline`]), the client behind proxies ([`forwarded`]), liveness and readiness ([`health`]), the
//! server every process runs with its layers ([`server`]), RED metrics ([`red`]),
//! the RPC transport ([`rpc`]) over the replicas of each peer ([`balance`]) and the OpenAPI pieces every document shares
//! ([`openapi`]).

pub mod auth;
pub mod balance;
pub mod deadline;
pub mod extract;
pub mod forwarded;
pub mod health;
pub mod openapi;
pub mod problem;
pub mod red;
pub mod rpc;
pub mod server;
pub mod tls;

pub use problem::Problem;
