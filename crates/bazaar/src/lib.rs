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
use chassis::auth::Tokens;
use chassis::bus::{Consumer, InProcBus, RetryPolicy};
use chassis::outbox::Outbox;
use chassis::config::Config;
use chassis::health::Readiness;
use chassis::http::HttpSettings;
use chassis::store::{Store, StoreError};
use tokio::net::TcpListener;

pub use chassis::config;

/// A relay also polls, so an event whose wake-up was missed waits at most this long.
const RELAY_POLL: Duration = Duration::from_millis(500);
/// How often expired reservations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why bazaar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] chassis::auth::TokenError),
    #[error("cannot bootstrap the admin account: {0}")]
    Admin(#[source] identity::IdentityError),
    #[error("cannot seed the catalog: {0}")]
    Seed(#[source] catalog::CatalogFailure),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Every module of the monolith, opened, migrated and wired together.
#[derive(Debug)]
pub struct Modules {
    pub identity: identity::IdentityService,
    pub catalog: catalog::CatalogService,
    pub cart: cart::CartService,
    pub tokens: Tokens,
    bus: Arc<InProcBus>,
    outboxes: Vec<Outbox>,
    stores: Vec<Store>,
}

async fn open_store(
    config: &Config,
    module: &'static str,
    migrator: &'static sqlx::migrate::Migrator,
) -> Result<Store, StoreError> {
    let store = Store::open_sqlite(
        &config.data_dir,
        module,
        config.db_max_connections,
        config.sqlite_synchronous,
    )
    .await?;
    store.migrate(migrator).await?;
    Ok(store)
}

impl Modules {
    /// Opens each module's own database under the data dir and applies its migrations.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let identity_store = open_store(config, identity::MODULE, &identity::MIGRATOR).await?;
        let catalog_store = open_store(config, catalog::MODULE, &catalog::MIGRATOR).await?;
        let cart_store = open_store(config, cart::MODULE, &cart::MIGRATOR).await?;

        let tokens = Tokens::load_or_create(
            config.jwt_secret.as_deref(),
            &config.data_dir,
            config.token_ttl_secs,
        )?;
        let identity = identity::IdentityService::new(
            Arc::new(identity::store::SqlUsers::new(identity_store.pool().clone())),
            tokens.clone(),
            Outbox::new(identity::MODULE, identity_store.pool().clone()),
        );
        let catalog = catalog::CatalogService::new(
            Arc::new(catalog::store::SqlProducts::new(catalog_store.pool().clone())),
            Outbox::new(catalog::MODULE, catalog_store.pool().clone()),
            Duration::from_secs(config.reservation_ttl_secs),
        );
        // cart reaches the catalog only through its contract; in-process here, over
        // the network once the modules run split.
        let cart = cart::CartService::new(
            Arc::new(cart::store::SqlCartItems::new(cart_store.pool().clone())),
            Arc::new(catalog.clone()),
        );
        // The monolith's bus: events go from each module's outbox straight to the
        // consumers in this process.
        let bus = Arc::new(InProcBus::new());
        bus.subscribe(Arc::new(Consumer::new(
            cart::events::CONSUMER,
            cart::events::topics(),
            cart_store.pool().clone(),
            Arc::new(cart::events::CartEvents),
            RetryPolicy::default(),
        )));
        Ok(Self {
            outboxes: vec![identity.outbox().clone(), catalog.outbox().clone()],
            identity,
            catalog,
            cart,
            tokens,
            bus,
            stores: vec![identity_store, catalog_store, cart_store],
        })
    }

    /// First-start work: the admin account (if configured) and the demo catalog.
    pub async fn bootstrap(&self, config: &Config) -> Result<(), StartError> {
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            let outcome = self
                .identity
                .ensure_admin(email, password, "Administrator")
                .await
                .map_err(StartError::Admin)?;
            tracing::info!(?outcome, email = %email, "admin bootstrap");
        }
        let seeded = self
            .catalog
            .seed_if_empty(config.seed_products)
            .await
            .map_err(StartError::Seed)?;
        if seeded > 0 {
            tracing::info!(products = seeded, "seeded the demo catalog");
        }
        Ok(())
    }

    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// Starts the background workers: a relay per outbox and the catalog's
    /// reservation sweeper. They stop with `shutdown`.
    pub fn spawn_workers(&self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let bus: Arc<dyn chassis::bus::Bus> = self.bus.clone();
        let mut workers: Vec<_> = self
            .outboxes
            .iter()
            .map(|outbox| outbox.spawn_relay(Arc::clone(&bus), RELAY_POLL, shutdown.clone()))
            .collect();
        workers.push(self.catalog.spawn_sweeper(SWEEP_EVERY, shutdown.clone()));
        workers
    }

    pub async fn close(&self) {
        for store in &self.stores {
            store.close().await;
        }
    }
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
        let modules = Modules::open(&config).await?;
        modules.bootstrap(&config).await?;

        let readiness = modules
            .stores
            .iter()
            .fold(Readiness::new(), |r, s| r.with_check(Arc::new(s.clone())));
        let docs = gateway::openapi(vec![
            <identity::ApiDoc as utoipa::OpenApi>::openapi(),
            <catalog::ApiDoc as utoipa::OpenApi>::openapi(),
            <cart::ApiDoc as utoipa::OpenApi>::openapi(),
        ]);
        let routes = axum::Router::new()
            .merge(identity::router(modules.identity.clone()))
            .merge(catalog::router(
                modules.catalog.clone(),
                modules.tokens.clone(),
            ))
            .merge(cart::router(modules.cart.clone(), modules.tokens.clone()));
        let settings = gateway::EdgeSettings {
            http: HttpSettings {
                service: "bazaar",
                request_timeout: Duration::from_millis(config.request_timeout_ms),
            },
            cors_origins: config.cors_origins.clone(),
            rate_per_second: config.rate_limit_per_second,
            rate_burst: config.rate_limit_burst,
        };
        let shutdown = CancellationToken::new();
        let limiter = gateway::RateLimit::new(settings.rate_per_second, settings.rate_burst);
        if let Some(limiter) = &limiter {
            limiter.spawn_sweeper(shutdown.clone());
        }
        let router = gateway::router(routes, &docs, readiness.clone(), &settings, limiter);

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
        let workers = modules.spawn_workers(&shutdown);
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
        // Workers finish their current step (relays make a last pass) before the
        // stores close under them.
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
