//! storefront: the customer web shop, a backend-for-frontend over the other modules'
//! contracts.
//!
//! Server-rendered HTML (maud templates, checked at compile time and escaped by
//! default), no JavaScript, its stylesheet compiled into the binary. It owns no data:
//! it calls identity, the catalog, the cart and orders through their contracts, in
//! process in the monolith and over RPC in the split, like any other module. `pages`
//! renders, `http` serves, `session` holds the cookies (session and CSRF).

mod http;
pub mod module;
mod openapi;
mod pages;
mod session;

pub use module::DESCRIPTOR;

pub const MODULE: &str = "storefront";

/// The module's embedded schema migrations: none (it keeps no data), but every
/// module's store is opened and migrated alike.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
