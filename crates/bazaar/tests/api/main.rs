//! The API test binary: every public route, driven over real HTTP against a bazaar
//! built by `Application::build` on a free port with a fresh data dir.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod browser;
mod helpers;

mod cart;
mod catalog;
mod console;
mod crash;
mod data_dir;
mod edge;
mod health;
mod identity;
mod loadgen;
mod metrics;
mod orders;
mod process;
mod registry;
mod resilience;
mod sessions;
mod shop_browser;
mod split;
mod storefront;
mod traces;
