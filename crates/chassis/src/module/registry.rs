//! The list of descriptors, what is derived from it, and the modules it builds.

use std::any::Any;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Bootstrap, BuildError, Context, Descriptor, Drain, Parts, Wiring, Worker};
use crate::auth::{ServiceKeys, Tokens};
use crate::bus::Consumer;
use crate::config::{Config, ConfigError};
use crate::outbox::Outbox;
use crate::store::Store;

/// Every module of the deployment, in build order (a module after those it calls).
#[derive(Debug, Clone)]
pub struct Registry {
    modules: Vec<&'static Descriptor>,
}

impl Registry {
    pub fn new(modules: Vec<&'static Descriptor>) -> Self {
        Self { modules }
    }

    pub fn modules(&self) -> impl Iterator<Item = &'static Descriptor> + '_ {
        self.modules.iter().copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.modules().map(|m| m.name).collect()
    }

    pub fn get(&self, name: &str) -> Option<&'static Descriptor> {
        self.modules().find(|m| m.name == name)
    }

    /// The configuration keys the modules own.
    pub fn setting_keys(&self) -> Vec<&'static str> {
        self.modules()
            .flat_map(|m| m.settings.iter().copied())
            .collect()
    }

    /// Every module's settings checked.
    pub fn check(&self, config: &Config) -> Result<(), ConfigError> {
        self.modules().try_for_each(|m| (m.check)(config))
    }

    /// The modules `module` calls.
    pub fn calls(&self, module: &str) -> &'static [&'static str] {
        self.get(module).map_or(&[], |m| m.calls)
    }

    /// The modules whose contract calls `module` (who may call it).
    pub fn callers(&self, module: &str) -> Vec<&'static str> {
        self.modules()
            .filter(|m| m.calls.contains(&module))
            .map(|m| m.name)
            .collect()
    }

    /// The modules whose events `module` consumes (the sources of its topics).
    pub fn consumes(&self, module: &str) -> Vec<&'static str> {
        let topics = self.get(module).map(|m| (m.consumes)()).unwrap_or_default();
        self.modules()
            .map(|m| m.name)
            .filter(|source| {
                topics
                    .iter()
                    .any(|topic| topic.split('.').next() == Some(*source))
            })
            .collect()
    }

    /// Each public path prefix and the module that owns it: the gateway's routing
    /// table.
    pub fn public_routes(&self) -> Vec<(&'static str, &'static str)> {
        self.modules()
            .flat_map(|m| m.routes.iter().map(move |prefix| (*prefix, m.name)))
            .collect()
    }

    /// The modules' OpenAPI documents.
    pub fn openapi(&self) -> Vec<utoipa::openapi::OpenApi> {
        self.modules()
            .filter_map(|m| m.openapi.map(|document| document()))
            .collect()
    }

    /// What does not add up in the declarations, for a test to insist is empty: names
    /// twice, a call to a module that provides no contract or is built later, a
    /// consumed topic no module publishes, a prefix owned twice.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for module in self.modules() {
            let name = module.name;
            if seen.contains(&name) {
                problems.push(format!("{name} is registered twice"));
            }
            for called in module.calls {
                match self.get(called) {
                    Some(provider) if provider.provides.contains(called) => {
                        if !seen.contains(called) {
                            problems
                                .push(format!("{name} calls {called}, which is built after it"));
                        }
                    }
                    _ => problems.push(format!("{name} calls {called}, which no module provides")),
                }
            }
            for topic in (module.consumes)() {
                let (source, kind) = topic.split_once('.').unwrap_or((&topic, ""));
                if !self
                    .get(source)
                    .is_some_and(|publisher| publisher.publishes.contains(&kind))
                {
                    problems.push(format!(
                        "{name} consumes {topic}, which no module publishes"
                    ));
                }
            }
            seen.push(name);
        }
        let routes = self.public_routes();
        for (i, (prefix, owner)) in routes.iter().enumerate() {
            if routes[..i].iter().any(|(p, _)| p == prefix) {
                problems.push(format!("{prefix} is owned twice (again by {owner})"));
            }
        }
        problems
    }

    /// Opens, migrates and builds the modules for which `here` is true, in order,
    /// each calling the others through `wiring`'s guards: in process when built
    /// here, else over HTTP with `remote`'s credentials.
    pub async fn build(
        &self,
        config: &Config,
        here: impl Fn(&str) -> bool,
        tokens: &Tokens,
        remote: Option<(ServiceKeys, reqwest::Client)>,
        shutdown: &CancellationToken,
    ) -> Result<Built, BuildError> {
        let policies = self
            .modules()
            .map(|m| (m.name, (m.caller_policy)()))
            .collect();
        let mut built = Built {
            wiring: Wiring::new(config, remote, policies),
            modules: Vec::new(),
        };
        for module in self.modules().filter(|m| here(m.name)) {
            let store = open_store(config, module).await?;
            let context = Context {
                module: module.name,
                calls: module.calls,
                config,
                store: store.clone(),
                tokens: tokens.clone(),
                shutdown: shutdown.clone(),
                wiring: &built.wiring,
            };
            let parts = (module.build)(&context)?;
            let Parts {
                service,
                router,
                provided,
                outbox,
                consumer,
                workers,
                bootstrap,
                drain,
            } = parts;
            let mut handlers = Vec::new();
            for p in provided {
                built.wiring.add_local(p.provider, p.api);
                handlers.extend(p.handlers);
            }
            let consumer = consumer.map(|(name, handler, policy)| {
                Arc::new(Consumer::new(
                    name,
                    (module.consumes)(),
                    store.pool().clone(),
                    handler,
                    policy,
                ))
            });
            (module.register_metrics)();
            built.modules.push(BuiltModule {
                name: module.name,
                service,
                store,
                router,
                handlers,
                outbox,
                consumer,
                workers,
                bootstrap,
                drain,
            });
        }
        Ok(built)
    }
}

/// A module's store: its SQLite file under the data dir, or its schema in
/// `database_url`'s PostgreSQL database; migrated.
async fn open_store(config: &Config, module: &Descriptor) -> Result<Store, BuildError> {
    let name = module.name;
    if let (Some(admin), Some(url)) = (&config.database_admin_url, &config.database_url) {
        // A role per module: `url`'s user owns this module's schema, and only it.
        Store::provision_postgres_role(admin, url, name)
            .await
            .map_err(|e| BuildError::module(format!("cannot give {name} its role"), e))?;
    }
    let opened = match &config.database_url {
        Some(url) => Store::open_postgres(url, name, config.db_max_connections).await,
        None => {
            Store::open_sqlite(
                &config.data_dir,
                name,
                config.sqlite_max_connections,
                config.sqlite_synchronous,
            )
            .await
        }
    };
    let store = opened.map_err(|e| BuildError::module(format!("cannot open {name}'s store"), e))?;
    store
        .migrate(module.migrator)
        .await
        .map_err(|e| BuildError::module(format!("cannot migrate {name}'s store"), e))?;
    Ok(store)
}

/// One module built here.
struct BuiltModule {
    name: &'static str,
    service: Arc<dyn Any + Send + Sync>,
    store: Store,
    router: Option<axum::Router>,
    handlers: Vec<crate::rpc::Handler>,
    outbox: Option<Outbox>,
    consumer: Option<Arc<Consumer>>,
    workers: Vec<Worker>,
    bootstrap: Vec<Bootstrap>,
    drain: Option<Drain>,
}

/// The modules built in this process, and how they reach the others.
pub struct Built {
    wiring: Wiring,
    modules: Vec<BuiltModule>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field(
                "modules",
                &self.modules.iter().map(|m| m.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Built {
    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    /// The service of type `S` (a module's), if its module runs here.
    pub fn service<S: Any + Send + Sync>(&self) -> Option<&S> {
        self.modules.iter().find_map(|m| m.service.downcast_ref())
    }

    pub fn stores(&self) -> Vec<Store> {
        self.modules.iter().map(|m| m.store.clone()).collect()
    }

    pub fn outboxes(&self) -> Vec<Outbox> {
        self.modules
            .iter()
            .filter_map(|m| m.outbox.clone())
            .collect()
    }

    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.modules
            .iter()
            .filter_map(|m| m.consumer.clone())
            .collect()
    }

    /// The modules' public routes, merged.
    pub fn routes(&self) -> axum::Router {
        self.modules
            .iter()
            .filter_map(|m| m.router.clone())
            .fold(axum::Router::new(), axum::Router::merge)
    }

    /// The handlers of the contracts provided here.
    pub fn handlers(&self) -> Vec<crate::rpc::Handler> {
        self.modules
            .iter()
            .flat_map(|m| m.handlers.iter().cloned())
            .collect()
    }

    /// The modules' workers, to be started once (later calls get none).
    pub fn take_workers(&mut self) -> Vec<Worker> {
        self.modules
            .iter_mut()
            .flat_map(|m| std::mem::take(&mut m.workers))
            .collect()
    }

    /// The modules' first-start work, in build order, to be run once.
    pub fn take_bootstrap(&mut self) -> Vec<Bootstrap> {
        self.modules
            .iter_mut()
            .flat_map(|m| std::mem::take(&mut m.bootstrap))
            .collect()
    }

    pub fn drains(&self) -> Vec<Drain> {
        self.modules
            .iter()
            .filter_map(|m| m.drain.clone())
            .collect()
    }
}
