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
use chassis::config::Config;
use chassis::health::Readiness;
use chassis::http::HttpSettings;
use chassis::outbox::Outbox;
use chassis::store::{Store, StoreError};
use tokio::net::TcpListener;

pub use chassis::config;

pub mod audit;

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
    pub payments: payments::PaymentsService,
    pub orders: orders::OrdersService,
    pub notifications: notifications::NotificationsService,
    pub analytics: analytics::AnalyticsService,
    pub tokens: Tokens,
    saga: Arc<orders::saga::Saga>,
    catalog_pool: sqlx::AnyPool,
    bus: Arc<InProcBus>,
    outboxes: Vec<Outbox>,
    stores: Vec<Store>,
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

fn subscribe(
    bus: &InProcBus,
    name: &'static str,
    topics: Vec<String>,
    store: &Store,
    handler: Arc<dyn chassis::bus::Handler>,
    policy: RetryPolicy,
) {
    bus.subscribe(Arc::new(Consumer::new(
        name,
        topics,
        store.pool().clone(),
        handler,
        policy,
    )));
}

impl Modules {
    /// Opens each module's own database (a SQLite file under the data dir, or its
    /// schema in `database_url`'s PostgreSQL database), applies its migrations
    /// and wires the modules to each other through their contracts (in-process calls
    /// here; the same traits are HTTP clients when the modules run split).
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let identity_store = open_store(config, identity::MODULE, &identity::MIGRATOR).await?;
        let catalog_store = open_store(config, catalog::MODULE, &catalog::MIGRATOR).await?;
        let cart_store = open_store(config, cart::MODULE, &cart::MIGRATOR).await?;
        let payments_store = open_store(config, payments::MODULE, &payments::MIGRATOR).await?;
        let orders_store = open_store(config, orders::MODULE, &orders::MIGRATOR).await?;
        let notifications_store =
            open_store(config, notifications::MODULE, &notifications::MIGRATOR).await?;
        let analytics_store = open_store(config, analytics::MODULE, &analytics::MIGRATOR).await?;
        let shutdown = CancellationToken::new();
        let outbox = |store: &Store| Outbox::new(store.module(), store.pool().clone());

        let tokens = Tokens::load_or_create(
            config.jwt_secret.as_deref(),
            &config.data_dir,
            config.token_ttl_secs,
        )?;
        let identity = identity::IdentityService::new(
            Arc::new(identity::store::SqlUsers::new(
                identity_store.pool().clone(),
            )),
            tokens.clone(),
            outbox(&identity_store),
        );
        let catalog = catalog::CatalogService::new(
            Arc::new(catalog::store::SqlProducts::new(
                catalog_store.pool().clone(),
            )),
            outbox(&catalog_store),
            Duration::from_secs(config.reservation_ttl_secs),
            Duration::from_millis(config.catalog_cache_ttl_ms),
        );
        let cart = cart::CartService::new(
            Arc::new(cart::store::SqlCartItems::new(cart_store.pool().clone())),
            Arc::new(catalog.clone()),
        );
        let payments = payments::PaymentsService::new(
            payments_store.pool().clone(),
            outbox(&payments_store),
            Arc::new(payments::provider::SimulatedProvider::new(
                Duration::from_millis(config.payment_provider_latency_ms),
                config.payment_provider_failure_rate,
            )),
            Duration::from_millis(config.payment_timeout_ms),
        );
        let orders_outbox = outbox(&orders_store);
        let order_store = orders::store::SqlOrders::new(orders_store.pool().clone());
        let saga = Arc::new(orders::saga::Saga::new(
            order_store.clone(),
            orders_outbox.clone(),
            Arc::new(catalog.clone()),
            Arc::new(payments.clone()),
            orders::saga::SagaTiming::default(),
            config
                .fault_abort_at
                .as_deref()
                .and_then(orders::saga::CrashPoint::parse),
            shutdown.clone(),
        ));
        let orders = orders::OrdersService::new(
            order_store,
            Arc::clone(&saga),
            Arc::new(catalog.clone()),
            Arc::new(cart.clone()),
            Duration::from_millis(config.checkout_wait_ms),
        );

        let transport = notifications::transport::from_config(
            &config.mail_transport,
            &config.data_dir,
            config.sqlite_synchronous == chassis::config::SqliteSync::Full,
        )
        .map_err(StartError::Mail)?;
        let notifications =
            notifications::NotificationsService::new(notifications_store.pool().clone(), transport)
                .with_sender(&config.mail_from)
                .map_err(StartError::Mail)?;
        let analytics = analytics::AnalyticsService::new(analytics_store.pool().clone());

        // The monolith's bus: events go from each module's outbox straight to the
        // consumers in this process.
        let bus = Arc::new(InProcBus::new());
        subscribe(
            &bus,
            cart::events::CONSUMER,
            cart::events::topics(),
            &cart_store,
            Arc::new(cart::events::CartEvents),
            RetryPolicy::default(),
        );
        subscribe(
            &bus,
            notifications::events::CONSUMER,
            notifications::events::topics(),
            &notifications_store,
            Arc::new(notifications.events()),
            // An order's email can arrive before its buyer's UserRegistered (another
            // module's relay): retry for longer before dead-lettering.
            RetryPolicy {
                attempts: 10,
                base: Duration::from_millis(50),
                cap: Duration::from_secs(2),
            },
        );
        subscribe(
            &bus,
            analytics::events::CONSUMER,
            analytics::events::topics(),
            &analytics_store,
            Arc::new(analytics::events::AnalyticsEvents),
            RetryPolicy::default(),
        );
        Ok(Self {
            outboxes: vec![
                identity.outbox().clone(),
                catalog.outbox().clone(),
                payments.outbox().clone(),
                orders_outbox,
            ],
            identity,
            catalog,
            cart,
            payments,
            orders,
            notifications,
            analytics,
            tokens,
            saga,
            catalog_pool: catalog_store.pool().clone(),
            bus,
            stores: vec![
                identity_store,
                catalog_store,
                cart_store,
                payments_store,
                orders_store,
                notifications_store,
                analytics_store,
            ],
            shutdown,
        })
    }

    /// The catalog's store (the audit checks its stock invariants).
    pub fn catalog_pool(&self) -> &sqlx::AnyPool {
        &self.catalog_pool
    }

    /// Stops the background workers and every saga of these modules.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// First-start work: the admin account (if configured) and the demo catalog.
    pub async fn bootstrap(&self, config: &Config) -> Result<(), StartError> {
        if config.admin_email.is_some() != config.admin_password.is_some() {
            return Err(StartError::AdminConfig);
        }
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

    /// Starts the background workers: a relay per outbox, the catalog's reservation
    /// sweeper, the saga recovery loop and store maintenance. They stop with the
    /// modules' shutdown token.
    pub fn spawn_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let shutdown = &self.shutdown;
        let bus: Arc<dyn chassis::bus::Bus> = self.bus.clone();
        let mut workers: Vec<_> = self
            .outboxes
            .iter()
            .map(|outbox| outbox.spawn_relay(Arc::clone(&bus), RELAY_POLL, shutdown.clone()))
            .collect();
        workers.push(self.catalog.spawn_sweeper(SWEEP_EVERY, shutdown.clone()));
        workers.push(self.saga.spawn_recovery(RECOVER_EVERY));
        workers.push(spawn_maintenance(
            self.stores.clone(),
            self.outboxes.clone(),
            shutdown.clone(),
        ));
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
            <orders::ApiDoc as utoipa::OpenApi>::openapi(),
            <notifications::ApiDoc as utoipa::OpenApi>::openapi(),
            <analytics::ApiDoc as utoipa::OpenApi>::openapi(),
            <chassis::bus::admin::ApiDoc as utoipa::OpenApi>::openapi(),
        ]);
        let routes = axum::Router::new()
            .merge(identity::router(modules.identity.clone()))
            .merge(catalog::router(
                modules.catalog.clone(),
                modules.tokens.clone(),
            ))
            .merge(cart::router(modules.cart.clone(), modules.tokens.clone()))
            .merge(orders::router(
                modules.orders.clone(),
                modules.tokens.clone(),
            ))
            .merge(notifications::router(
                modules.notifications.clone(),
                modules.tokens.clone(),
            ))
            .merge(analytics::router(
                modules.analytics.clone(),
                modules.tokens.clone(),
            ))
            .merge(chassis::bus::admin::router(
                modules.stores.clone(),
                modules.tokens.clone(),
            ));
        let settings = gateway::EdgeSettings {
            http: HttpSettings {
                service: "bazaar",
                request_timeout: Duration::from_millis(config.request_timeout_ms),
            },
            cors_origins: config.cors_origins.clone(),
            rate_per_second: config.rate_limit_per_second,
            rate_burst: config.rate_limit_burst,
        };
        let shutdown = modules.shutdown_token();
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
        let workers = modules.spawn_workers();
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
