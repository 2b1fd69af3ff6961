//! Events between modules, delivered at least once and applied exactly once.
//!
//! A module writes its events to its [`outbox`] in the transaction that changes its
//! state; the [`relay`] publishes them to a [`bus`]: in process
//! ([`InProcBus`](bus::InProcBus), the monolith) or NATS JetStream ([`nats`], the
//! split topology). A [`consumer`] applies each delivery with its inbox, retries, and
//! dead-letters what it cannot apply ([`dead_letters`]). [`bus_health`] samples how
//! backed up all of it is.

pub mod bus;
pub mod bus_health;
pub mod consumer;
pub mod dead_letters;
pub mod nats;
pub mod outbox;
pub mod relay;
