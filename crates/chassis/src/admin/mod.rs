//! The admin API of a process, in one place: every `/api/v1/admin/...` router and its
//! OpenAPI document. Each serves admins only ([`AdminUser`](crate::auth::AdminUser));
//! the state it reads belongs to the mechanism it reports on (a store's dead letters,
//! [`BusHealth`](crate::bus_health::BusHealth), the resilience
//! [`Registry`](crate::resilience::Registry), the trace buffer). The split gateway
//! fans these routes out to every module process and merges the answers.

pub mod bus;
pub mod dead_letters;
pub mod resilience;
pub mod traces;
