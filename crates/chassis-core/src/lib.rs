//! The core of the bazaar platform: what contracts and pure domain code need, and
//! nothing that does network or database I/O.
//!
//! Identifiers, money, timestamps, list cursors, field validation, event envelopes,
//! retry timing, the readiness check trait and the RPC contract layer ([`rpc!`]); and
//! [`private_fs`], the owner-only files every process that keeps data writes through.
//! No runtime, HTTP, database, bus or telemetry exporter is compiled in: the crates
//! that provide those (chassis-http, chassis-store, chassis-messaging,
//! chassis-telemetry, chassis-resilience) build on this one.

mod debug;
pub mod error;
pub mod events;
pub mod health;
pub mod id;
pub mod list;
pub mod money;
pub mod page;
pub mod private_fs;
pub mod retry;
pub mod rpc;
pub mod time;
pub mod validation;
