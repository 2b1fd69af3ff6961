//! The split topology's bus: NATS JetStream, with the same delivery model as
//! [`InProcBus`](crate::bus::InProcBus).
//!
//! - **Publishing** ([`NatsBus`]): an envelope goes to subject `<prefix>.<source>.<type>`
//!   (`bazaar.orders.OrderConfirmed`) with `Nats-Msg-Id` = the envelope id (JetStream
//!   drops a second copy within the stream's duplicate window) and the W3C
//!   `traceparent`. [`Bus::publish`](crate::bus::Bus::publish) returns only once JetStream acknowledged the
//!   message, so the relay keeps an outbox row unsent until it is stored;
//!   [`Bus::publish_batch`](crate::bus::Bus::publish_batch) sends a whole batch, then
//!   awaits the acknowledgements together.
//! - **Streams**: one per publishing module, `<PREFIX>_<SOURCE>` on `<prefix>.<source>.>`,
//!   file storage, created (or brought up to date) idempotently by
//!   [`JetStream::ensure_stream`].
//! - **Consuming** ([`spawn_consumer`]): one durable pull consumer per (consuming module,
//!   source stream), named after the module. Each message is applied through
//!   [`Consumer::deliver`](crate::consumer::Consumer::deliver) (inbox and effect in one transaction, local retries, dead
//!   letters in the module's store) and acknowledged only after that returned; when the
//!   store itself fails the message is nak'ed with a delay and JetStream redelivers it,
//!   at most `max_deliver` times. A message that cannot be decoded, or that is still
//!   failing on its last delivery, is copied to `<prefix>.deadletter.<consumer>` (stream
//!   `<PREFIX>_DEADLETTER`) before it is acknowledged, so nothing disappears silently.
//!
//! Delivery is at-least-once and unordered across redeliveries and in-flight
//! concurrency; the inbox makes the effects exactly-once.
//!
//! Production runs streams with three replicas ([`NatsSettings::replicas`]) on servers
//! configured with `jetstream { sync_interval: always }` (fsync before every ack):
//! that is server configuration, not something a client can ask for, and
//! nats-server 2.9 does not know the option; see `docs/operations.md`.

//!
//! The parts: [`settings`], the connection and its streams and durables
//! ([`jetstream`]), publishing ([`publish`]), the consume loop ([`consume`]), what
//! travels in message headers (`headers`), settling messages (`settle`) and
//! copying the undeliverable to the dead-letter stream (`dead_letter`).

pub mod consume;
mod dead_letter;
pub mod error;
mod headers;
pub mod jetstream;
pub mod publish;
pub mod settings;
mod settle;

pub use consume::spawn_consumer;
pub use error::NatsError;
pub use jetstream::{DEAD_LETTER_SOURCE, JetStream};
pub use publish::NatsBus;
pub use settings::{ConsumerSettings, NatsSettings};
