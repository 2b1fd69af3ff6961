//! What the proxy is configured with: its routes and settings.

use std::time::Duration;

use chassis::auth::{ServiceKeys, Tokens};

/// The fan-out path of dead letters: in the split topology each service keeps its own,
/// so the gateway asks them all (see [`ProxySettings::fan_out`]).
pub use chassis::admin::dead_letters::DEAD_LETTERS;

/// The faults admin path: each module process holds its own injected faults, so the
/// split gateway lists them from every module (a [`ProxySettings::fan_out`] path) and
/// applies `PUT`/`DELETE` of `FAULTS/{target}` to every module (a
/// [`ProxySettings::fan_out_writes`] prefix).
pub use chassis::admin::resilience::FAULTS;

/// One public path prefix and the service that owns it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Matches the path itself and everything below it (`prefix/...`), never a mere
    /// string prefix: `/api/v1/cart` does not take `/api/v1/carts`.
    pub prefix: &'static str,
    /// The module name, for logs, metrics and the 503 detail.
    pub upstream: &'static str,
    /// `http://host:port` or `https://host:port` (DNS names work); a path in it is
    /// prepended.
    pub base_url: String,
}

/// What the proxy needs besides its routes.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Verifies user tokens at the edge.
    pub tokens: Tokens,
    /// Signs the identity forwarded to the services.
    pub keys: ServiceKeys,
    /// How long to wait for a TCP connection to an upstream: a dead peer should cost a
    /// fast 503, not the whole request budget.
    pub connect_timeout: Duration,
    /// Whom `https://` upstreams must prove to be: the deployment's CA
    /// ([`chassis::tls::client_config`]).
    pub tls: chassis::tls::ClientConfig,
    /// GET paths answered by asking every distinct upstream the same path and merging
    /// the `items` of their lists (e.g. [`DEAD_LETTERS`]); empty for none.
    pub fan_out: Vec<&'static str>,
    /// Prefixes whose children take writes on every module: `PUT` and `DELETE` of
    /// `prefix/{segment}` (exactly one path segment below the prefix, sent on raw,
    /// percent-encoded slashes included) go to every distinct upstream, and the answer
    /// is a success only if every upstream that has the route applied it (e.g.
    /// [`FAULTS`]); empty for none. A list at the prefix itself is a separate
    /// [`fan_out`](Self::fan_out) entry. A prefix that is, or owns, a route's prefix
    /// is left out (logged).
    pub fan_out_writes: Vec<&'static str>,
    /// Upstreams that own no public route but answer the fan-out paths too
    /// (`(module, base URL)`: payments, split).
    pub fan_out_only: Vec<(&'static str, String)>,
}
