//! The split topology's edge: public path prefixes forwarded to the module processes
//! that own them.
//!
//! The gateway is where a caller is authenticated: a bearer token is checked here once
//! and replaced by a short-lived identity signed with the service secret
//! ([`chassis::auth::IDENTITY_HEADER`]), which is all the services behind it accept. A
//! token it refuses is replaced by the reason
//! ([`chassis::auth::IDENTITY_REFUSED_HEADER`]), so the service answers a route that
//! needs a caller with the same 401 as the monolith, and one that does not still works.
//! Anything a client sends that only the gateway may say (those two) is dropped.
//! Bodies stream both ways through a pooled HTTP/1 client, so a large response costs
//! the gateway a buffer, not its size.
//!
//! Only configured prefixes are forwarded: `/internal/...` (service-to-service routes)
//! and anything else unknown falls through to the common 404, and paths with dot
//! segments are refused rather than handed to an upstream that might normalise them
//! into a route the gateway never agreed to forward.
//!
//! A few admin paths are answered by every module process, each for its own state
//! (dead letters, dependencies, injected faults): the gateway fans those out to every
//! distinct upstream, GET lists merged ([`ProxySettings::fan_out`]) and writes applied
//! everywhere or reported as failed ([`ProxySettings::fan_out_writes`]).
//!
//! The parts: [`settings`] (routes and settings), the routing table ([`router`]),
//! [`upstream`]s and how one request is sent, [`forward`]ing, [`identity`]
//! forwarding, hop-by-hop headers ([`hop`]), fan-out reads ([`fan_out`]) and writes
//! ([`writes`]), and the edge's traces API ([`traces`]).

mod fan_out;
mod forward;
mod hop;
mod identity;
mod router;
mod settings;
mod traces;
mod upstream;
mod writes;

pub use router::proxy_router;
pub use settings::{DEAD_LETTERS, FAULTS, ProxySettings, Route};
