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

/// One module, as the composition root sees it. Each module crate implements it once
/// (a unit struct, `pub static DESCRIPTOR`); everything here is data except
/// [`build`](Module::build), which opens the module's parts in this process.
#[async_trait::async_trait]
pub trait Module: Send + Sync + std::fmt::Debug + 'static {
    /// Its name: its store file or schema, its event stream, `only`, `peers`.
    fn name(&self) -> &'static str;

    /// The configuration keys it owns (flat, as every key: `catalog_cache_ttl_ms`),
    /// read typed with [`Config::section`].
    fn settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks its settings; run at start for every registered module, wherever it
    /// runs, so a typo fails on every process alike.
    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// The contracts it provides, each named by its provider (`rpc!`'s `as "name"`).
    fn provides(&self) -> &'static [&'static str] {
        &[]
    }

    /// The contracts it calls, by provider: in the split topology the processes it
    /// runs in must reach those modules.
    fn calls(&self) -> &'static [&'static str] {
        &[]
    }

    /// The public path prefixes it owns (the split gateway routes them to it).
    fn routes(&self) -> &'static [&'static str] {
        &[]
    }

    /// The event types it publishes (its contract's events; its stream is its name).
    fn publishes(&self) -> &'static [&'static str] {
        &[]
    }

    /// The topics (`<source>.<Type>`) its consumer subscribes to.
    fn consumes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Its store's migrations.
    fn migrator(&self) -> &'static sqlx::migrate::Migrator;

    /// Its public routes' OpenAPI document.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// Registers its own metrics (at zero), where it runs.
    fn register_metrics(&self) {}

    /// How callers guard calls to its contract, unless configured.
    fn caller_policy(&self) -> DependencyPolicy {
        DependencyPolicy::default()
    }

    /// Builds its service, routes and workers on its opened, migrated store.
    async fn build(&self, context: Context<'_>) -> Result<Parts, BuildError>;
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
