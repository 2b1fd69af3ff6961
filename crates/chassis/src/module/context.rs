//! What a module's build is given, and how it reaches the contracts it calls.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::BuildError;
use crate::auth::{ServiceKeys, Tokens};
use crate::config::Config;
use crate::http::balance::Replicas;
use crate::outbox::Outbox;
use crate::resilience::{Dependency, DependencyPolicy, Faults, Registry as Dependencies};
use crate::rpc::Contract;
use crate::store::Store;

/// How this process reaches the contracts its modules call: the implementation of a
/// module built here, else its client over HTTP; either way behind one guard per
/// called module, shared by every caller here (cart and orders call the catalog
/// through one breaker).
///
/// A remote module may run as several replicas (its peer is a list, or a name that
/// resolves to several addresses): the HTTP client picks one per call and ejects
/// one that fails ([`Replicas`], one set per module, shared like the guard). The
/// guard stays **per module**, outside the balancing: a failure ejects the replica,
/// and the guard's retry of a transient failure then goes to another one, so the
/// breaker only opens when calls keep failing whichever replica they reach, which is
/// what "the catalog is down" means. A breaker per replica would duplicate what
/// ejection already does and let one module's failures through once per replica.
pub struct Wiring {
    config: Config,
    /// Split topology: this process's service credentials and HTTP client.
    remote: Option<(ServiceKeys, reqwest::Client)>,
    /// The providers' policies for their callers, by module.
    policies: BTreeMap<&'static str, DependencyPolicy>,
    faults: Faults,
    dependencies: Dependencies,
    guards: Mutex<BTreeMap<&'static str, Arc<Dependency>>>,
    replicas: Mutex<BTreeMap<&'static str, Arc<Replicas>>>,
    local: Mutex<BTreeMap<&'static str, Box<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring").finish_non_exhaustive()
    }
}

impl Wiring {
    pub(crate) fn new(
        config: &Config,
        remote: Option<(ServiceKeys, reqwest::Client)>,
        policies: BTreeMap<&'static str, DependencyPolicy>,
    ) -> Self {
        Self {
            config: config.clone(),
            remote,
            policies,
            faults: Faults::new(config.faults.clone()),
            dependencies: Dependencies::default(),
            guards: Mutex::default(),
            replicas: Mutex::default(),
            local: Mutex::default(),
        }
    }

    /// The guarded dependencies on other modules.
    pub fn dependencies(&self) -> &Dependencies {
        &self.dependencies
    }

    /// The faults injected into them (and into routes).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn add_local(&self, provider: &'static str, api: Box<dyn Any + Send + Sync>) {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(provider, api);
    }

    fn guard(&self, module: &'static str) -> Arc<Dependency> {
        let mut guards = self.guards.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(guards.entry(module).or_insert_with(|| {
            // What is configured, over the provider's own defaults.
            let default = self.policies.get(module).copied().unwrap_or_default();
            let policy = self
                .config
                .dependencies
                .get(module)
                .map_or(default, |o| o.apply(default));
            let dependency = Arc::new(Dependency::new(module, policy, self.faults.clone()));
            self.dependencies.add(Arc::clone(&dependency));
            dependency
        }))
    }

    /// The replicas of `module` at its configured peer address(es), resolved again
    /// until `shutdown` when they are names.
    fn replicas(
        &self,
        module: &'static str,
        url: &str,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Replicas>, BuildError> {
        let mut sets = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(replicas) = sets.get(module) {
            return Ok(Arc::clone(replicas));
        }
        let replicas = Arc::new(Replicas::parse(module, url)?);
        // Detached: it ends with the process's shutdown.
        drop(replicas.resolve_periodically(shutdown.clone()));
        sets.insert(module, Arc::clone(&replicas));
        Ok(replicas)
    }

    fn call<C: Contract + ?Sized>(
        &self,
        caller: &'static str,
        shutdown: &CancellationToken,
    ) -> Result<Arc<C>, BuildError> {
        let local = self
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(C::PROVIDER)
            .and_then(|api| api.downcast_ref::<Arc<C>>())
            .cloned();
        let inner = if let Some(local) = local {
            local
        } else {
            let missing = || BuildError::MissingPeer {
                module: caller,
                peer: C::PROVIDER,
            };
            let (keys, http) = self.remote.as_ref().ok_or_else(missing)?;
            let url = self.config.peer(C::PROVIDER).ok_or_else(missing)?;
            C::remote(Arc::new(crate::rpc::Client::new(
                http.clone(),
                self.replicas(C::PROVIDER, url, shutdown)?,
                keys.clone(),
                Duration::from_millis(self.config.rpc_timeout_ms),
            )))
        };
        Ok(C::guarded(inner, self.guard(C::PROVIDER)))
    }
}

/// What a module's [`build`](super::Descriptor::build) works with: the configuration, the
/// module's opened and migrated store, the process's token checker and shutdown
/// signal, and the contracts it declared it calls.
#[derive(Debug)]
pub struct Context<'a> {
    pub(crate) module: &'static str,
    pub(crate) calls: &'static [&'static str],
    pub(crate) config: &'a Config,
    pub(crate) store: Store,
    pub(crate) tokens: Tokens,
    pub(crate) shutdown: CancellationToken,
    pub(crate) wiring: &'a Wiring,
}

impl Context<'_> {
    pub fn config(&self) -> &Config {
        self.config
    }

    /// The module's typed settings.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, BuildError> {
        Ok(self.config.section()?)
    }

    /// Its store, opened and migrated.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A transactional outbox on its store.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.store.module(), self.store.pool().clone())
    }

    /// User tokens as this process checks them.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Cancelled when the process shuts down.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A contract it calls, which it must declare in
    /// [`calls`](super::Descriptor::calls): the provider's implementation when it runs
    /// here, else its HTTP client; guarded either way.
    pub fn call<C: Contract + ?Sized>(&self) -> Result<Arc<C>, BuildError> {
        if !self.calls.contains(&C::PROVIDER) {
            return Err(BuildError::Undeclared {
                module: self.module,
                contract: C::PROVIDER,
            });
        }
        self.wiring.call::<C>(self.module, &self.shutdown)
    }
}
