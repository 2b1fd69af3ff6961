//! A module, declared once: the descriptor each module crate exports, what its build
//! returns, and the registry the composition root derives everything else from
//! (topology, peers, the gateway's routing table, OpenAPI, metrics, the wiring of
//! contracts and, later, deploy files).

mod context;
mod parts;
mod registry;

pub use context::{Context, Wiring};
pub use parts::{Bootstrap, Drain, Parts, Provided, Worker};
pub use registry::{Built, Registry};

use crate::config::{Config, ConfigError};
use crate::resilience::DependencyPolicy;

/// How a module builds its parts on its opened, migrated store (I/O that must wait,
/// such as seeding, goes in the parts' first-start work).
pub type Build = fn(&Context<'_>) -> Result<Parts, BuildError>;

/// One module, as the composition root sees it. Each module crate declares one, as
/// data (`pub static DESCRIPTOR: Descriptor = Descriptor { .., ..Descriptor::new(..) }`):
/// everything here is what it is, except `check` and `build`, what it does. Fields a
/// module does not set keep [`Descriptor::new`]'s empty defaults.
#[derive(Debug)]
pub struct Descriptor {
    /// Its name: its store file or schema, its event stream, `only`, `peers`.
    pub name: &'static str,
    /// The configuration keys it owns (flat, as every key: `catalog_cache_ttl_ms`),
    /// read typed with [`Config::section`].
    pub settings: &'static [&'static str],
    /// Checks its settings; run at start for every registered module, wherever it
    /// runs, so a typo fails on every process alike.
    pub check: fn(&Config) -> Result<(), ConfigError>,
    /// The contracts it provides, each named by its provider (`rpc!`'s `as "name"`).
    pub provides: &'static [&'static str],
    /// The contracts it calls, by provider: in the split topology the processes it
    /// runs in must reach those modules.
    pub calls: &'static [&'static str],
    /// The public path prefixes it owns (the split gateway routes them to it).
    pub routes: &'static [&'static str],
    /// The event types it publishes (its contract's events; its stream is its name).
    pub publishes: &'static [&'static str],
    /// The topics (`<source>.<Type>`) its consumer subscribes to.
    pub consumes: fn() -> Vec<String>,
    /// Its store's migrations.
    pub migrator: &'static sqlx::migrate::Migrator,
    /// Its public routes' OpenAPI document.
    pub openapi: Option<fn() -> utoipa::openapi::OpenApi>,
    /// Registers its own metrics (at zero), where it runs.
    pub register_metrics: fn(),
    /// How callers guard calls to its contract, unless configured.
    pub caller_policy: fn() -> DependencyPolicy,
    /// Builds its service, routes and workers.
    pub build: Build,
}

impl Descriptor {
    /// A module with nothing declared but its name, store and build.
    pub const fn new(
        name: &'static str,
        migrator: &'static sqlx::migrate::Migrator,
        build: Build,
    ) -> Self {
        Self {
            name,
            settings: &[],
            check: |_| Ok(()),
            provides: &[],
            calls: &[],
            routes: &[],
            publishes: &[],
            consumes: Vec::new,
            migrator,
            openapi: None,
            register_metrics: || {},
            caller_policy: DependencyPolicy::default,
            build,
        }
    }
}

/// Why a module could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "no address for {peer}, which {module} calls: set peer_{peer} (BAZAAR_PEER_{upper})",
        upper = peer.to_uppercase()
    )]
    MissingPeer {
        module: &'static str,
        peer: &'static str,
    },
    #[error(transparent)]
    BadPeer(#[from] chassis_http::balance::BadPeerUrl),
    #[error("{module} calls the {contract} contract but does not declare it in `calls`")]
    Undeclared {
        module: &'static str,
        contract: &'static str,
    },
    #[error("{context}")]
    Module {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BuildError {
    /// A module's own failure, with what it was doing.
    pub fn module(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Module {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
