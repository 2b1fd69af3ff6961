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
use chassis::bus::{Consumer, InProcBus};
use chassis::config::Config;
use chassis::health::Readiness;
use chassis::http::HttpSettings;
use chassis::module::{BuildError, Built, Registry};
use chassis::nats::{JetStream, NatsBus, NatsSettings};
use chassis::outbox::Outbox;
use chassis::store::Store;
use tokio::net::TcpListener;

pub use chassis::config;

pub mod audit;
pub mod deploy;
pub mod topology;

pub use topology::Topology;

/// A relay also polls, so an event whose wake-up was missed waits at most this long.
const RELAY_POLL: Duration = Duration::from_millis(500);
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

/// Every module of bazaar, in build order (a module after those it calls): the one
/// list the topology, peers, the gateway's routing table, OpenAPI, metrics and the
/// wiring of contracts are derived from. Adding a module is one crate and one line
/// here.
pub fn registry() -> Registry {
    Registry::new(vec![
        &identity::DESCRIPTOR,
        &catalog::DESCRIPTOR,
        &cart::DESCRIPTOR,
        &payments::DESCRIPTOR,
        &orders::DESCRIPTOR,
        &notifications::DESCRIPTOR,
        &analytics::DESCRIPTOR,
        &storefront::DESCRIPTOR,
    ])
}

/// Why bazaar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] chassis::config::ConfigError),
    #[error(transparent)]
    Token(#[from] chassis::auth::TokenError),
    #[error(transparent)]
    Module(#[from] BuildError),
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error("cannot build the HTTP client for other modules")]
    Http(#[source] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] chassis::tls::TlsError),
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
/// wired together by the registry: each dependency on another module is that
/// module's service when it runs here, else its contract's HTTP client, guarded.
#[derive(Debug)]
pub struct Modules {
    built: Built,
    /// User tokens as this process checks them (behind the gateway: the identity it
    /// forwards).
    pub tokens: Tokens,
    topology: Topology,
    /// Split topology: this process's service credentials.
    keys: Option<ServiceKeys>,
    /// Whom `https://` peers must prove to be (`tls_ca_file`).
    client_tls: chassis::tls::ClientConfig,
    fault_admin: bool,
    consumers: Vec<Arc<Consumer>>,
    outboxes: Vec<Outbox>,
    stores: Vec<Store>,
    /// Outbox backlogs, consumer lag, dead letters and pools: gauges and the admin route.
    bus_health: chassis::bus_health::BusHealth,
    shutdown: CancellationToken,
}

impl Modules {
    /// Opens the store of each module this process runs (a SQLite file under the data
    /// dir, or its schema in `database_url`'s PostgreSQL database), applies its
    /// migrations and wires the modules to each other through their contracts.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let registry = registry();
        registry.check(config)?;
        let topology = Topology::from_config(config, &registry)?;
        let shutdown = CancellationToken::new();
        // Per-service keys when the deployment provides them (a process can sign only
        // as itself); else the shared secret (any process can sign as any other).
        let keys = match (&config.service_keys_dir, &config.service_secret) {
            (Some(dir), _) => Some(ServiceKeys::from_dir(dir, topology.service_name())?),
            (None, Some(secret)) => {
                Some(ServiceKeys::new(secret.as_bytes(), topology.service_name()))
            }
            (None, None) => None,
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
        }
        .also_accepting(config.jwt_secret_also_accepted.as_deref());
        // The client's IP (login throttling) as the edge's limits take it.
        let tokens = tokens.with_trusted_proxies(config.trusted_proxies());
        let client_tls = chassis::tls::client_config(config.tls_ca_file.as_deref())?;
        let remote = match (&keys, topology.is_split()) {
            (Some(keys), true) => Some((
                keys.clone(),
                chassis::rpc::http_client(client_tls.clone()).map_err(StartError::Http)?,
            )),
            _ => None,
        };
        let built = registry
            .build(config, |m| topology.runs(m), &tokens, remote, &shutdown)
            .await?;
        let (stores, outboxes, consumers) = (built.stores(), built.outboxes(), built.consumers());
        let bus_health = chassis::bus_health::BusHealth::new(
            topology.service_name(),
            stores.clone(),
            outboxes.clone(),
            consumers.clone(),
        );
        Ok(Self {
            built,
            tokens,
            topology,
            keys,
            client_tls,
            fault_admin: config.fault_admin,
            consumers,
            outboxes,
            stores,
            bus_health,
            shutdown,
        })
    }

    /// The service of type `S` (`orders::OrdersService` ...), if its module runs here.
    pub fn service<S: std::any::Any + Send + Sync>(&self) -> Option<&S> {
        self.built.service()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Stops the background workers and every saga of these modules.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// First-start work of the modules here (the admin account, the demo catalog),
    /// once.
    pub async fn bootstrap(&mut self) -> Result<(), StartError> {
        for run in self.built.take_bootstrap() {
            run().await?;
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
        let mut routes = self.built.routes();
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
                    self.built.wiring().dependencies().clone(),
                    self.built.wiring().faults().clone(),
                    tokens.clone(),
                    self.fault_admin,
                ))
                // This process's recent spans; the split edge gathers every module's.
                .merge(chassis::admin::traces::router(tokens.clone()));
        }
        // Route faults (`GET /api/v1/products/{id}`); a no-op while none are set.
        let faults = self.built.wiring().faults().clone();
        let with_faults = move |router: axum::Router| {
            router.route_layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                chassis::resilience::inject_route_faults,
            ))
        };
        routes = with_faults(routes);
        if let Some(keys) = self.keys.as_ref().filter(|_| self.topology.is_split()) {
            // Each contract served here is guarded on its own: a credential must name
            // its module as audience and come from a module the registry says calls it.
            // (Only contracts with handlers: a guard on no routes would be a no-op,
            // which axum refuses.)
            let registry = registry();
            let mut handlers = self.built.handlers();
            while let Some(first) = handlers.first() {
                let provider = first.service;
                let (served, rest): (Vec<_>, Vec<_>) =
                    handlers.into_iter().partition(|h| h.service == provider);
                handlers = rest;
                let access = chassis::auth::Access {
                    keys: keys.clone(),
                    provider,
                    callers: registry.callers(provider),
                };
                let internal = with_faults(chassis::rpc::router(served));
                routes = routes.merge(chassis::rpc::internal(internal, access));
            }
        }
        routes
    }

    /// Starts the background workers: a relay per outbox onto the bus (in process,
    /// or JetStream when `nats` is given), the consumers, the catalog's reservation
    /// sweeper, the saga recovery loop and store maintenance. They stop with the
    /// modules' shutdown token.
    pub async fn spawn_workers(
        &mut self,
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
        workers.extend(
            self.built
                .take_workers()
                .into_iter()
                .map(|spawn| spawn(shutdown.clone())),
        );
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

    /// After shutdown: waits, at most `limit`, for the modules' in-flight work (the
    /// sagas running here) to stop.
    pub async fn drain(&self, limit: Duration) {
        for drain in self.built.drains() {
            drain(limit).await;
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
    let mut documents = registry().openapi();
    documents.extend([
        <chassis::admin::dead_letters::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::bus::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::resilience::ApiDoc as utoipa::OpenApi>::openapi(),
        <chassis::admin::traces::ApiDoc as utoipa::OpenApi>::openapi(),
    ]);
    gateway::openapi(documents)
}

/// The resilience admin route, answered by every module process.
pub use chassis::admin::resilience::RESILIENCE;

/// The edge alone: every public route proxied to the module that owns it.
fn edge_routes(config: &Config, modules: &Modules) -> Result<axum::Router, StartError> {
    let keys = modules
        .keys
        .clone()
        .ok_or_else(|| StartError::Topology(topology::TopologyError::missing_secret()))?;
    let registry = modules.topology.registry();
    let public = registry.public_routes();
    let mut routes = Vec::new();
    for &(prefix, module) in &public {
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
            tls: modules.client_tls.clone(),
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
            fan_out_only: registry
                .names()
                .into_iter()
                .filter(|m| !public.iter().any(|(_, owner)| owner == m))
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
    let registry = topology.registry();
    let mut routed: Vec<&'static str> = Vec::new();
    for (_, owner) in registry.public_routes() {
        if !routed.contains(&owner) {
            routed.push(owner);
        }
    }
    std::iter::once(gateway::Service {
        name: topology::GATEWAY,
        location: gateway::Location::InProcess,
        calls: routed,
        consumes: Vec::new(),
    })
    .chain(registry.names().into_iter().map(|module| gateway::Service {
        name: module,
        location: location(module),
        calls: registry.calls(module).to_vec(),
        consumes: registry.consumes(module),
    }))
    .collect()
}

/// A built, bound, not yet serving bazaar.
#[derive(Debug)]
pub struct Application {
    addr: SocketAddr,
    listener: TcpListener,
    tls: Option<std::sync::Arc<chassis::tls::ServerConfig>>,
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
        let mut modules = Modules::open(&config).await?;
        modules.bootstrap().await?;
        let topology = modules.topology().clone();
        let shutdown = modules.shutdown_token();
        chassis::metrics::register_process(topology.service_name());

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
                        replicas: usize::from(config.nats_stream_replicas),
                        ..NatsSettings::default()
                    },
                )
                .await?,
            ),
            _ => None,
        };
        // Ready when what this process serves from is there: its stores and, for a
        // module of the split, its NATS connection; never its peers (docs/operations.md).
        let readiness = modules
            .stores
            .iter()
            .fold(Readiness::new(), |r, s| r.with_check(Arc::new(s.clone())));
        let readiness = match &nats {
            Some(js) => readiness.with_check(Arc::new(js.clone())),
            None => readiness,
        };
        let http = HttpSettings {
            service: topology.service_name(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        };
        let shed = |routes| chassis::http::shed_load(routes, config.max_in_flight_requests);
        let scrape = chassis::http::ScrapeCredential::new(
            &match &config.metrics_token {
                Some(token) => token.clone(),
                None => chassis::auth::load_or_create_secret(&config.data_dir, "metrics-token")?,
            },
            modules.tokens.clone(),
        );
        let router = if topology.is_split() && !topology.is_gateway() {
            // A module behind the gateway: its routes and the ops routes with the
            // common layers; the edge's own (CORS, rate limit, docs) are the gateway's.
            chassis::http::with_common_layers(
                shed(modules.routes()).merge(chassis::http::ops_router(readiness.clone(), scrape)),
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
                trusted_proxies: config.trusted_proxies(),
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
                modules.client_tls.clone(),
            ));
            gateway::router(
                routes,
                &openapi(),
                readiness.clone(),
                &settings,
                limiters,
                scrape,
            )
        };

        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(chassis::tls::server_config(cert, key)?),
            _ => None,
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
        let workers = modules.spawn_workers(nats.as_ref()).await;
        readiness.mark_started();
        Ok(Self {
            workers,
            addr,
            listener,
            tls,
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

    /// Whether the listener speaks HTTPS (`tls_cert_file`).
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// The whole router, every layer included: what the listener serves (in-process
    /// benchmarks call it without a socket: `examples/hotpaths.rs`).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Cancel this to stop the server gracefully (signals do the same).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until shut down, then drains in-flight requests and closes the stores.
    pub async fn run_until_stopped(self) -> Result<(), std::io::Error> {
        let result = chassis::http::serve(
            self.listener,
            self.tls,
            self.router,
            self.shutdown.clone(),
            self.drain,
        )
        .await;
        self.shutdown.cancel();
        // Sagas finish and record the step they are in, and workers theirs (relays
        // make a last pass), before the stores close under them.
        self.modules.drain(self.drain).await;
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
