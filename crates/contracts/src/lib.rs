//! The contracts between bazaar's modules: for each bounded context, the trait other
//! modules may call, its request/response types, its errors and (later) its events.
//!
//! No logic lives here. A module depends on another module only through this crate,
//! so reaching into another module's internals does not compile.

pub mod catalog;
pub mod identity;
