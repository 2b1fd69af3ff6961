//! A module's database: one per module, embedded SQLite (the monolith) or a
//! PostgreSQL schema (split), reached through sqlx's `Any` driver so the very same
//! query code runs on both. Every store carries the platform tables (outbox, inbox,
//! dead letters, idempotency keys: one migration, `migrations/`) next to the module's
//! own; chassis-messaging works on the first three, [`idempotency`] on the last. On
//! SQLite a store also has a [`writer`] thread, which commits the transactions sent
//! through `Store::write` in groups (ADR 0019).

pub mod idempotency;
pub mod page;
pub mod store;
pub mod writer;
