//! The composition root: builds every module, wires them through their contracts and
//! serves them behind the gateway. `main` only parses the command line.
//!
//! As in zero2prod, [`Application::build`] binds its own listener (port 0 picks a free
//! one) and [`Application::run_until_stopped`] serves, so the binary and every test
//! start bazaar the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chassis::CancellationToken;
use chassis::auth::ServiceKeys;
use chassis::auth::Tokens;
use chassis::bus::{Consumer, InProcBus, RetryPolicy};
use chassis::config::Config;
use chassis::health::Readiness;
use chassis::http::HttpSettings;
use chassis::nats::{JetStream, NatsBus, NatsSettings};
use chassis::outbox::Outbox;
use chassis::resilience::{Dependency, DependencyPolicy, Faults, Guarded, Registry};
use chassis::store::{Store, StoreError};
use contracts::cart::{CartApi, CartClient, cart_handlers};
use contracts::catalog::{CatalogApi, CatalogClient, catalog_handlers};
use contracts::payments::{PaymentsApi, PaymentsClient, payments_handlers};
use tokio::net::TcpListener;

pub use chassis::config;

pub mod audit;
pub mod topology;

pub use topology::Topology;

/// A relay also polls, so an event whose wake-up was missed waits at most this long.
const RELAY_POLL: Duration = Duration::from_millis(500);
/// How often expired reservations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often open sagas (orders left pending by a crash) are looked for.
const RECOVER_EVERY: Duration = Duration::from_secs(2);
/// How often expired idempotency keys and old sent outbox rows are purged.
const MAINTAIN_EVERY: Duration = Duration::from_secs(600);
/// Sent outbox rows are kept this long for inspection.
const KEEP_SENT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Purges what the stores only keep for a while: idempotency keys past 24 h and sent
/// outbox rows past a week.
fn spawn_maintenance(
    stores: Vec<Store>,
    outboxes: Vec<Outbox>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for store in &stores {
                if let Err(e) = chassis::idempotency::purge_expired(store.pool()).await {
                    tracing::warn!(store = store.module(), error = %e, "purging idempotency keys failed");
                }
            }
            for outbox in &outboxes {
                if let Err(e) = outbox.purge_sent(KEEP_SENT).await {
                    tracing::warn!(module = outbox.module(), error = %e, "purging the outbox failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(MAINTAIN_EVERY) => {}
                () = shutdown.cancelled() => break,
            }
        }
    })
}

/// Why bazaar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] chassis::auth::TokenError),
    #[error("cannot bootstrap the admin account: {0}")]
    Admin(#[source] identity::IdentityError),
    #[error("invalid configuration: admin_email and admin_password must be set together")]
    AdminConfig,
    #[error("invalid mail configuration: {0}")]
    Mail(#[source] notifications::TransportError),
    #[error("cannot seed the catalog: {0}")]
    Seed(#[source] catalog::CatalogFailure),
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error("cannot build the HTTP client for other modules")]
    Http(#[source] reqwest::Error),
    #[error("cannot reach NATS")]
    Nats(#[from] chassis::nats::NatsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The modules this process runs (all of them in the monolith), opened, migrated and
/// wired together: each dependency on another module is that module's service when it
/// runs here, else its contract's HTTP client.
#[derive(Debug)]
pub struct Modules {
    pub identity: Option<identity::IdentityService>,
    pub catalog: Option<catalog::CatalogService>,
    pub cart: Option<cart::CartService>,
    pub payments: Option<payments::PaymentsService>,
    pub orders: Option<orders::OrdersService>,
    pub notifications: Option<notifications::NotificationsService>,
    pub analytics: Option<analytics::AnalyticsService>,
    /// User tokens as this process checks them (behind the gateway: the identity it
    /// forwards).
    pub tokens: Tokens,
    topology: Topology,
    /// Split topology: this process's service credentials.
    keys: Option<ServiceKeys>,
    /// The guarded dependencies on other modules, and the faults injected into them.
    registry: Registry,
    faults: Faults,
    fault_admin: bool,
    saga: Option<Arc<orders::saga::Saga>>,
    consumers: Vec<Arc<Consumer>>,
    outboxes: Vec<Outbox>,
    stores: Vec<Store>,
    /// Outbox backlogs, consumer lag, dead letters and pools: gauges and the admin route.
    bus_health: chassis::bus_health::BusHealth,
    shutdown: CancellationToken,
}

async fn open_store(
    config: &Config,
    module: &'static str,
    migrator: &'static sqlx::migrate::Migrator,
) -> Result<Store, StoreError> {
    let store = match &config.database_url {
        // PostgreSQL: the module's own schema, named after it (see chassis::store).
        Some(url) => Store::open_postgres(url, module, config.db_max_connections).await?,
        None => {
            Store::open_sqlite(
                &config.data_dir,
                module,
                config.sqlite_max_connections,
                config.sqlite_synchronous,
            )
            .await?
        }
    };
    store.migrate(migrator).await?;
    Ok(store)
}

/// How this process reaches other modules: in process, or over HTTP.
struct Peers<'a> {
    config: &'a Config,
    keys: Option<&'a ServiceKeys>,
    http: Option<reqwest::Client>,
}

impl Peers<'_> {
    /// The RPC client of `module` (the topology checked its address is configured).
    fn client(&self, module: &'static str) -> Result<chassis::rpc::Client, StartError> {
        let (Some(keys), Some(http), Some(url)) =
            (self.keys, self.http.as_ref(), self.config.peer(module))
        else {
            return Err(StartError::Topology(topology::TopologyError::missing_peer(
                module,
            )));
        };
        Ok(chassis::rpc::Client::new(
            http.clone(),
            module,
            url,
            keys.clone(),
            Duration::from_millis(self.config.rpc_timeout_ms),
        ))
    }
}

/// The built-in policy for a dependency, unless configured.
fn default_policy(module: &str) -> DependencyPolicy {
    match module {
        // The saga retries charges itself, under one idempotency key and a documented
        // budget of three attempts; retrying here too would multiply them.
        "payments" => DependencyPolicy {
            retry_attempts: 1,
            ..DependencyPolicy::default()
        },
        _ => DependencyPolicy::default(),
    }
}

/// The guards of this process's dependencies: one per called module, shared by every
/// caller here (cart and orders both call the catalog through one breaker).
struct Guards<'a> {
    config: &'a Config,
    faults: Faults,
    registry: Registry,
    built: std::sync::Mutex<std::collections::BTreeMap<&'static str, Arc<Dependency>>>,
}

impl Guards<'_> {
    fn dependency(&self, module: &'static str) -> Arc<Dependency> {
        let mut built = self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(built.entry(module).or_insert_with(|| {
            // What is configured, over the dependency's own defaults.
            let policy = self.config.dependencies.get(module).map_or_else(
                || default_policy(module),
                |o| o.apply(default_policy(module)),
            );
            let dependency = Arc::new(Dependency::new(module, policy, self.faults.clone()));
            self.registry.add(Arc::clone(&dependency));
            dependency
        }))
    }
}

/// A module's consumer of other modules' events.
fn consumer(
    name: &'static str,
    topics: Vec<String>,
    store: &Store,
    handler: Arc<dyn chassis::bus::Handler>,
    policy: RetryPolicy,
) -> Arc<Consumer> {
    Arc::new(Consumer::new(
        name,
        topics,
        store.pool().clone(),
        handler,
        policy,
    ))
}

impl Modules {
    /// Opens the store of each module this process runs (a SQLite file under the data
    /// dir, or its schema in `database_url`'s PostgreSQL database), applies its
    /// migrations and wires the modules to each other through their contracts.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let topology = Topology::from_config(config)?;
        let shutdown = CancellationToken::new();
        let outbox = |store: &Store| Outbox::new(store.module(), store.pool().clone());
        let keys = config
            .service_secret
            .as_deref()
            .map(|secret| ServiceKeys::new(secret.as_bytes(), topology.service_name()));
        let peers = Peers {
            config,
            keys: keys.as_ref(),
            http: if topology.is_split() {
                Some(chassis::rpc::http_client().map_err(StartError::Http)?)
            } else {
                None
            },
        };
        let tokens = if topology.is_split() {
            // The topology checked: the gateway and identity have the shared secret;
            // the others only trust what the gateway forwards.
            let secret = config
                .jwt_secret
                .clone()
                .unwrap_or_else(|| chassis::id::new_id() + &chassis::id::new_id());
            let tokens = Tokens::new(secret.as_bytes(), config.token_ttl_secs);
            match (&keys, topology.is_gateway()) {
                (Some(keys), false) => tokens.behind_gateway(keys.clone()),
                _ => tokens,
            }
        } else {
            Tokens::load_or_create(
                config.jwt_secret.as_deref(),
                &config.data_dir,
                config.token_ttl_secs,
            )?
        };
        let mut stores = Vec::new();
        let mut outboxes = Vec::new();
        let mut consumers = Vec::new();
        let guards = Guards {
            config,
            faults: Faults::new(config.faults.clone()),
            registry: Registry::default(),
            built: std::sync::Mutex::default(),
        };

        let identity = if topology.runs(identity::MODULE) {
            let store = open_store(config, identity::MODULE, &identity::MIGRATOR).await?;
            let service = identity::IdentityService::new(
                Arc::new(identity::store::SqlUsers::new(store.pool().clone())),
                Arc::new(identity::store::SqlSessions::new(store.pool().clone())),
                tokens.clone(),
                outbox(&store),
                &identity::Settings {
                    hash_wait: Duration::from_millis(config.password_hash_wait_ms),
                    throttle: identity::ThrottlePolicy {
                        free_attempts: config.login_free_attempts,
                        max_backoff: Duration::from_secs(config.login_backoff_max_secs),
                        ..identity::ThrottlePolicy::default()
                    },
                    refresh_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
                    ..identity::Settings::default()
                },
            );
            outboxes.push(service.outbox().clone());
            stores.push(store);
            Some(service)
        } else {
            None
        };
        let catalog = if topology.runs(catalog::MODULE) {
            let store = open_store(config, catalog::MODULE, &catalog::MIGRATOR).await?;
            let service = catalog::CatalogService::new(
                Arc::new(catalog::store::SqlProducts::new(store.pool().clone())),
                outbox(&store),
                Duration::from_secs(config.reservation_ttl_secs),
                Duration::from_millis(config.catalog_cache_ttl_ms),
            );
            outboxes.push(service.outbox().clone());
            stores.push(store);
            Some(service)
        } else {
            None
        };
        // Every dependency goes through its guards, local or remote alike.
        let catalog_api =
            |catalog: &Option<catalog::CatalogService>| -> Result<Arc<dyn CatalogApi>, StartError> {
                let inner: Arc<dyn CatalogApi> = match catalog {
                    Some(local) => Arc::new(local.clone()),
                    None => Arc::new(CatalogClient::new(peers.client(catalog::MODULE)?)),
                };
                Ok(Arc::new(Guarded::new(
                    inner,
                    guards.dependency(catalog::MODULE),
                )))
            };
        let cart = if topology.runs(cart::MODULE) {
            let store = open_store(config, cart::MODULE, &cart::MIGRATOR).await?;
            let service = cart::CartService::new(
                Arc::new(cart::store::SqlCartItems::new(store.pool().clone())),
                catalog_api(&catalog)?,
            );
            consumers.push(consumer(
                cart::events::CONSUMER,
                cart::events::topics(),
                &store,
                Arc::new(cart::events::CartEvents),
                RetryPolicy::default(),
            ));
            stores.push(store);
            Some(service)
        } else {
            None
        };
        let payments = if topology.runs(payments::MODULE) {
            let store = open_store(config, payments::MODULE, &payments::MIGRATOR).await?;
            let payments_outbox = outbox(&store);
            let service = payments::PaymentsService::new(
                Arc::new(payments::store::SqlPayments::new(
                    store.pool().clone(),
                    payments_outbox.clone(),
                )),
                Arc::new(payments::provider::SimulatedProvider::new(
                    Duration::from_millis(config.payment_provider_latency_ms),
                    config.payment_provider_failure_rate,
                )),
                Duration::from_millis(config.payment_timeout_ms),
            );
            outboxes.push(payments_outbox);
            stores.push(store);
            Some(service)
        } else {
            None
        };
        let (orders, saga) = if topology.runs(orders::MODULE) {
            let store = open_store(config, orders::MODULE, &orders::MIGRATOR).await?;
            let orders_outbox = outbox(&store);
            let order_store = orders::store::SqlOrders::new(store.pool().clone());
            let payments_api: Arc<dyn PaymentsApi> = match &payments {
                Some(local) => Arc::new(local.clone()),
                None => Arc::new(PaymentsClient::new(peers.client(payments::MODULE)?)),
            };
            let payments_api: Arc<dyn PaymentsApi> = Arc::new(Guarded::new(
                payments_api,
                guards.dependency(payments::MODULE),
            ));
            let cart_api: Arc<dyn CartApi> = match &cart {
                Some(local) => Arc::new(local.clone()),
                None => Arc::new(CartClient::new(peers.client(cart::MODULE)?)),
            };
            let cart_api: Arc<dyn CartApi> =
                Arc::new(Guarded::new(cart_api, guards.dependency(cart::MODULE)));
            let saga = Arc::new(orders::saga::Saga::new(
                order_store.clone(),
                orders_outbox.clone(),
                catalog_api(&catalog)?,
                payments_api,
                orders::saga::SagaTiming::default(),
                config
                    .fault_abort_at
                    .as_deref()
                    .and_then(orders::saga::CrashPoint::parse),
                shutdown.clone(),
            ));
            let service = orders::OrdersService::new(
                order_store,
                Arc::clone(&saga),
                catalog_api(&catalog)?,
                cart_api,
                Duration::from_millis(config.checkout_wait_ms),
            );
            outboxes.push(orders_outbox);
            stores.push(store);
            (Some(service), Some(saga))
        } else {
            (None, None)
        };
        let notifications = if topology.runs(notifications::MODULE) {
            let store = open_store(config, notifications::MODULE, &notifications::MIGRATOR).await?;
            let transport = notifications::transport::from_config(
                &config.mail_transport,
                &config.data_dir,
                config.sqlite_synchronous == chassis::config::SqliteSync::Full,
            )
            .map_err(StartError::Mail)?;
            let service = notifications::NotificationsService::new(store.pool().clone(), transport)
                .with_sender(&config.mail_from)
                .map_err(StartError::Mail)?;
            consumers.push(consumer(
                notifications::events::CONSUMER,
                notifications::events::topics(),
                &store,
                Arc::new(service.events()),
                // An order's email can arrive before its buyer's UserRegistered (another
                // module's relay): retry for longer before dead-lettering.
                RetryPolicy {
                    attempts: 10,
                    base: Duration::from_millis(50),
                    cap: Duration::from_secs(2),
                },
            ));
            stores.push(store);
            Some(service)
        } else {
            None
        };
        let analytics = if topology.runs(analytics::MODULE) {
            let store = open_store(config, analytics::MODULE, &analytics::MIGRATOR).await?;
            consumers.push(consumer(
                analytics::events::CONSUMER,
                analytics::events::topics(),
                &store,
                Arc::new(analytics::events::AnalyticsEvents),
                RetryPolicy::default(),
            ));
            let service = analytics::AnalyticsService::new(store.pool().clone());
            stores.push(store);
            Some(service)
        } else {
            None
        };
        // Each module's own metrics, at zero, where it runs.
        for (module, register) in [
            (identity::MODULE, identity::register_metrics as fn()),
            (orders::MODULE, orders::register_metrics),
            (payments::MODULE, payments::register_metrics),
            (catalog::MODULE, catalog::register_metrics),
            (notifications::MODULE, notifications::register_metrics),
        ] {
            if topology.runs(module) {
                register();
            }
        }
        let bus_health = chassis::bus_health::BusHealth::new(
            topology.service_name(),
            stores.clone(),
            outboxes.clone(),
            consumers.clone(),
        );
        Ok(Self {
            identity,
            catalog,
            cart,
            payments,
            orders,
            notifications,
            analytics,
            tokens,
            topology,
            keys,
            registry: guards.registry,
            faults: guards.faults,
            fault_admin: config.fault_admin,
            saga,
            consumers,
            outboxes,
            stores,
            bus_health,
            shutdown,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Stops the background workers and every saga of these modules.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// First-start work: the admin account (if configured and identity runs here) and
    /// the demo catalog (if the catalog does).
    pub async fn bootstrap(&self, config: &Config) -> Result<(), StartError> {
        if config.admin_email.is_some() != config.admin_password.is_some() {
            return Err(StartError::AdminConfig);
        }
        if let (Some(identity), Some(email), Some(password)) =
            (&self.identity, &config.admin_email, &config.admin_password)
        {
            let outcome = identity
                .ensure_admin(email, password, "Administrator")
                .await
                .map_err(StartError::Admin)?;
            tracing::info!(?outcome, email = %email, "admin bootstrap");
        }
        if let Some(catalog) = &self.catalog {
            let seeded = catalog
                .seed_if_empty(config.seed_products)
                .await
                .map_err(StartError::Seed)?;
            if seeded > 0 {
                tracing::info!(products = seeded, "seeded the demo catalog");
            }
        }
        Ok(())
    }

    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// The store of `module`, if it runs here.
    pub fn store(&self, module: &str) -> Option<&Store> {
        self.stores.iter().find(|s| s.module() == module)
    }

    /// The public routes of the modules here, and in the split topology their
    /// internal (service-to-service) routes, which demand a service credential.
    fn routes(&self) -> axum::Router {
        let tokens = &self.tokens;
        let mut routes = axum::Router::new();
        if let Some(identity) = &self.identity {
            routes = routes.merge(identity::router(identity.clone()));
        }
        if let Some(catalog) = &self.catalog {
            routes = routes.merge(catalog::router(catalog.clone(), tokens.clone()));
        }
        if let Some(cart) = &self.cart {
            routes = routes.merge(cart::router(cart.clone(), tokens.clone()));
        }
        if let Some(orders) = &self.orders {
            routes = routes.merge(orders::router(orders.clone(), tokens.clone()));
        }
        if let Some(notifications) = &self.notifications {
            routes = routes.merge(notifications::router(notifications.clone(), tokens.clone()));
        }
        if let Some(analytics) = &self.analytics {
            routes = routes.merge(analytics::router(analytics.clone(), tokens.clone()));
        }
        if !self.stores.is_empty() {
            routes = routes
                .merge(chassis::admin::dead_letters::router(
                    self.stores.clone(),
                    tokens.clone(),
                ))
                .merge(chassis::admin::bus::router(
                    self.bus_health.clone(),
                    tokens.clone(),
                ))
                .merge(chassis::admin::resilience::router(
                    self.registry.clone(),
                    self.faults.clone(),
                    tokens.clone(),
                    self.fault_admin,
                ))
                // This process's recent spans; the split edge gathers every module's.
                .merge(chassis::admin::traces::router(tokens.clone()));
        }
        // Route faults (`GET /api/v1/products/{id}`); a no-op while none are set.
        let faults = self.faults.clone();
        let with_faults = move |router: axum::Router| {
            router.route_layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                chassis::resilience::inject_route_faults,
            ))
        };
        routes = with_faults(routes);
        if let Some(keys) = self.keys.as_ref().filter(|_| self.topology.is_split()) {
            let mut internal = Vec::new();
            if let Some(catalog) = &self.catalog {
                internal.extend(catalog_handlers(Arc::new(catalog.clone())));
            }
            if let Some(cart) = &self.cart {
                internal.extend(cart_handlers(Arc::new(cart.clone())));
            }
            if let Some(payments) = &self.payments {
                internal.extend(payments_handlers(Arc::new(payments.clone())));
            }
            // (A guard on no routes at all would be a no-op, which axum refuses.)
            if !internal.is_empty() {
                let internal = with_faults(chassis::rpc::router(internal));
                routes = routes.merge(chassis::rpc::internal(internal, keys.clone()));
            }
        }
        routes
    }

    /// Starts the background workers: a relay per outbox onto the bus (in process,
    /// or JetStream when `nats` is given), the consumers, the catalog's reservation
    /// sweeper, the saga recovery loop and store maintenance. They stop with the
    /// modules' shutdown token.
    pub async fn spawn_workers(
        &self,
        nats: Option<&JetStream>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let shutdown = &self.shutdown;
        let mut workers = Vec::new();
        let bus: Arc<dyn chassis::bus::Bus> = if let Some(js) = nats {
            // Create the streams consumed here, so consumers need not wait for their
            // publisher's first event (its relay creates them too).
            let sources: std::collections::BTreeSet<&str> = self
                .consumers
                .iter()
                .flat_map(|c| c.topics().iter())
                .filter_map(|topic| topic.split('.').next())
                .collect();
            for source in sources {
                if let Err(e) = js.ensure_stream(source).await {
                    tracing::warn!(stream = source, error = %e, "cannot create stream yet; consumers will retry");
                }
            }
            for consumer in &self.consumers {
                workers.push(chassis::nats::spawn_consumer(
                    js.clone(),
                    Arc::clone(consumer),
                    shutdown.clone(),
                ));
            }
            Arc::new(NatsBus::new(js.clone()))
        } else {
            // The monolith: events go from each module's outbox straight to the
            // consumers in this process.
            let bus = InProcBus::new();
            for consumer in &self.consumers {
                bus.subscribe(Arc::clone(consumer));
            }
            Arc::new(bus)
        };
        workers.extend(
            self.outboxes
                .iter()
                .map(|outbox| outbox.spawn_relay(Arc::clone(&bus), RELAY_POLL, shutdown.clone())),
        );
        if let Some(catalog) = &self.catalog {
            workers.push(catalog.spawn_sweeper(SWEEP_EVERY, shutdown.clone()));
        }
        if let Some(identity) = &self.identity {
            workers.push(identity.spawn_sweeper(shutdown.clone()));
        }
        if let Some(saga) = &self.saga {
            workers.push(saga.spawn_recovery(RECOVER_EVERY));
        }
        workers.push(
            self.bus_health
                .spawn_sampler(nats.cloned(), shutdown.clone()),
        );
        workers.push(spawn_maintenance(
            self.stores.clone(),
            self.outboxes.clone(),
            shutdown.clone(),
        ));
        workers
    }

    /// After shutdown: waits, at most `limit`, for the sagas running here to stop.
    pub async fn drain_sagas(&self, limit: Duration) {
        if let Some(saga) = &self.saga {
            saga.drain(limit).await;
        }
    }

    pub async fn close(&self) {
        for store in &self.stores {
            store.close().await;
        }
    }
}

/// The public OpenAPI document: every module's, whichever runs where.
pub fn openapi() -> utoipa::openapi::OpenApi {
    gateway::openapi(vec![
        <identity::ApiDoc as utoipa::OpenApi>::openapi(),
        <catalog::ApiDoc as utoipa::OpenApi>::openapi(),
        <cart::ApiDoc as utoipa::OpenApi>::openapi(),
        <orders::ApiDoc as utoipa::OpenApi>::openapi(),
        <notifications::ApiDoc as utoipa::OpenApi>::openapi(),
        <analytics::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::dead_letters::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::bus::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::resilience::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::traces::ApiDoc as utoipa::OpenApi>::openapi(),
    ])
}

/// The resilience admin route, answered by every module process.
pub use chassis::admin::resilience::RESILIENCE;

/// The edge alone: every public route proxied to the module that owns it.
fn edge_routes(config: &Config, modules: &Modules) -> Result<axum::Router, StartError> {
    let keys = modules
        .keys
        .clone()
        .ok_or_else(|| StartError::Topology(topology::TopologyError::missing_secret()))?;
    let mut routes = Vec::new();
    for (prefix, module) in topology::PUBLIC_ROUTES {
        let base_url = config
            .peer(module)
            .ok_or_else(|| StartError::Topology(topology::TopologyError::missing_peer(module)))?;
        routes.push(gateway::Route {
            prefix,
            upstream: module,
            base_url: base_url.to_owned(),
        });
    }
    Ok(gateway::proxy_router(
        routes,
        gateway::ProxySettings {
            tokens: modules.tokens.clone(),
            keys,
            connect_timeout: Duration::from_secs(1),
            // Each service keeps its own dead letters, dependencies and injected
            // faults; the edge lists them all, and changes a fault on every module.
            fan_out: vec![
                gateway::DEAD_LETTERS,
                RESILIENCE,
                gateway::FAULTS,
                chassis::admin::bus::BUS,
            ],
            fan_out_writes: vec![gateway::FAULTS],
            // Every module without a public route of its own.
            fan_out_only: topology::MODULES
                .into_iter()
                .filter(|m| !topology::PUBLIC_ROUTES.iter().any(|(_, owner)| owner == m))
                .filter_map(|m| config.peer(m).map(|url| (m, url.to_owned())))
                .collect(),
        },
    ))
}

/// The deployment as the ops console's service map draws it: the gateway and every
/// module, in this process (the monolith) or at its peer address (the split gateway,
/// which probes them).
fn console_services(config: &Config, topology: &Topology) -> Vec<gateway::Service> {
    let location = |module: &str| {
        if topology.is_gateway() {
            gateway::Location::Remote(config.peer(module).unwrap_or_default().to_owned())
        } else {
            gateway::Location::InProcess
        }
    };
    let mut routed: Vec<&'static str> = Vec::new();
    for (_, owner) in topology::PUBLIC_ROUTES {
        if !routed.contains(owner) {
            routed.push(owner);
        }
    }
    std::iter::once(gateway::Service {
        name: topology::GATEWAY,
        location: gateway::Location::InProcess,
        calls: routed,
        consumes: Vec::new(),
    })
    .chain(
        topology::MODULES
            .into_iter()
            .map(|module| gateway::Service {
                name: module,
                location: location(module),
                calls: topology::calls(module).to_vec(),
                consumes: topology::consumes(module),
            }),
    )
    .collect()
}

/// A built, bound, not yet serving bazaar.
#[derive(Debug)]
pub struct Application {
    addr: SocketAddr,
    listener: TcpListener,
    router: axum::Router,
    modules: Modules,
    shutdown: CancellationToken,
    drain: Duration,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // The metrics recorder first: what modules record while they open (breaker
        // states at 0) would be lost without it.
        if !config.metrics_enabled {
            chassis::metrics::disable();
        }
        drop(chassis::metrics::handle());
        let modules = Modules::open(&config).await?;
        modules.bootstrap(&config).await?;
        let topology = modules.topology().clone();
        let shutdown = modules.shutdown_token();
        chassis::metrics::register_process(topology.service_name());

        let readiness = modules
            .stores
            .iter()
            .fold(Readiness::new(), |r, s| r.with_check(Arc::new(s.clone())));
        let http = HttpSettings {
            service: topology.service_name(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        };
        let shed = |routes| chassis::http::shed_load(routes, config.max_in_flight_requests);
        let router = if topology.is_split() && !topology.is_gateway() {
            // A module behind the gateway: its routes and the ops routes with the
            // common layers; the edge's own (CORS, rate limit, docs) are the gateway's.
            chassis::http::with_common_layers(
                shed(modules.routes()).merge(chassis::http::ops_router(readiness.clone())),
                &http,
            )
        } else {
            let settings = gateway::EdgeSettings {
                http,
                cors_origins: config.cors_origins.clone(),
                rate_per_second: config.rate_limit_per_second,
                rate_burst: config.rate_limit_burst,
                auth_rate_per_second: config.auth_rate_limit_per_second,
                auth_rate_burst: config.auth_rate_limit_burst,
            };
            let limiters = settings.limiters();
            for limiter in &limiters {
                limiter.spawn_sweeper(shutdown.clone());
            }
            let routes = shed(if topology.is_gateway() {
                edge_routes(&config, &modules)?
            } else {
                modules.routes()
            })
            .merge(gateway::services_router(
                console_services(&config, &topology),
                readiness.clone(),
                modules.tokens.clone(),
            ));
            gateway::router(routes, &openapi(), readiness.clone(), &settings, limiters)
        };

        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.http_addr,
            source,
        })?;
        let nats = match (
            &config.nats_url,
            topology.is_split() && !topology.is_gateway(),
        ) {
            (Some(url), true) => Some(
                JetStream::connect(
                    url,
                    topology.service_name(),
                    NatsSettings {
                        prefix: config.nats_prefix.clone(),
                        ..NatsSettings::default()
                    },
                )
                .await?,
            ),
            _ => None,
        };
        let workers = modules.spawn_workers(nats.as_ref()).await;
        readiness.mark_started();
        Ok(Self {
            workers,
            addr,
            listener,
            router,
            modules,
            shutdown,
            drain: Duration::from_secs(config.shutdown_timeout_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// Cancel this to stop the server gracefully (signals do the same).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until shut down, then drains in-flight requests and closes the stores.
    pub async fn run_until_stopped(self) -> Result<(), std::io::Error> {
        let result = chassis::http::serve(
            self.listener,
            self.router,
            self.shutdown.clone(),
            self.drain,
        )
        .await;
        self.shutdown.cancel();
        // Sagas finish and record the step they are in, and workers theirs (relays
        // make a last pass), before the stores close under them.
        self.modules.drain_sagas(self.drain).await;
        for worker in self.workers {
            if let Err(e) = worker.await {
                tracing::warn!(error = %e, "a background worker failed");
            }
        }
        self.modules.close().await;
        tracing::info!("stopped");
        result
    }
}
