//! Configuration: defaults < TOML file (`--config`) < `BAZAAR_*` environment < flags.
//!
//! Every key has the same name in all four places (`http_addr` in TOML is
//! `BAZAAR_HTTP_ADDR` in the environment and `--http-addr` on the command line).
//! Unknown keys in the file are rejected; the environment is read only for known keys,
//! so unrelated `BAZAAR_*` variables (test URLs, peers) never break a start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use chassis_store::store::SqliteSync;
pub use chassis_telemetry::LogFormat;

use chassis_resilience::{DependencyPolicy, Fault, PolicyOverrides};

/// The process's configuration: one flat set of keys, each typed with the settings
/// type of the mechanism it configures (`log_format`: chassis-telemetry,
/// `sqlite_synchronous`: chassis-store, `dependencies` and `faults`:
/// chassis-resilience).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the public HTTP server listens.
    pub http_addr: SocketAddr,
    /// Where the embedded databases and generated secrets live.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set.
    pub log_filter: String,
    /// HMAC secret for user tokens (at least 32 bytes). Unset: generated on first
    /// start and kept in `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// Lifetime of issued user (access) tokens: short, since one cannot be revoked
    /// before it expires; clients renew with their refresh token.
    pub token_ttl_secs: u64,
    /// Lifetime of a refresh token (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// With `admin_password`: the admin account created on first start.
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    /// Products seeded into an empty catalog on first start.
    pub seed_products: u32,
    /// Origins allowed by CORS; empty allows none, `["*"]` allows any.
    pub cors_origins: Vec<String>,
    /// Sustained requests per second per client IP at the edge; 0 turns limiting off.
    pub rate_limit_per_second: u32,
    /// Requests a client may burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Sustained requests per second per client IP to `/api/v1/auth/*` (register,
    /// login), on top of the general limit: each one costs a password hash. 0: off.
    pub auth_rate_limit_per_second: u32,
    /// Requests to `/api/v1/auth/*` a client may burst above that rate.
    pub auth_rate_limit_burst: u32,
    /// How long a registration or login waits for a password-hashing slot (there
    /// are as many as cores) before it is shed with 503 and Retry-After.
    pub password_hash_wait_ms: u64,
    /// Failed sign-ins (per account, and per client IP) before the login throttle
    /// makes further attempts wait.
    pub login_free_attempts: u32,
    /// The login throttle's longest wait; waits double from 1 s up to it.
    pub login_backoff_max_secs: u64,
    /// Budget of one public request, after which it is abandoned with a 504.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_timeout_secs: u64,
    /// PostgreSQL for every module's store (`postgres://user@host:5432/db`), each
    /// module in a schema named after it. Unset: SQLite files under `data_dir`.
    pub database_url: Option<String>,
    /// Connections per module pool on PostgreSQL (a process opens one pool per module).
    pub db_max_connections: u32,
    /// Connections per module pool on SQLite. SQLite has one writer per file and sqlx
    /// gives every connection its own thread, so more connections mostly add thread
    /// switching and lock waits: checkout measured 1,119 orders/s with 2, 706 with 4,
    /// 625 with 8 and 666 with 1 (docs/benchmarks.md).
    pub sqlite_max_connections: u32,
    pub sqlite_synchronous: SqliteSync,
    /// How long stock stays reserved for an order that is neither confirmed nor
    /// failed; the sweeper releases it after that.
    pub reservation_ttl_secs: u64,
    /// How long a product read may be served from the catalog's memory (0: off).
    /// Writes through this process invalidate at once; the TTL bounds staleness
    /// between instances.
    pub catalog_cache_ttl_ms: u64,
    /// How long one payment-provider call may take before it counts as unavailable.
    pub payment_timeout_ms: u64,
    /// The simulated provider's added latency (0: none).
    pub payment_provider_latency_ms: u64,
    /// The simulated provider's share of calls that fail as unavailable (0.0 to 1.0).
    pub payment_provider_failure_rate: f64,
    /// How long `POST /orders` waits for a terminal state before answering 202.
    pub checkout_wait_ms: u64,
    /// TEST ONLY: abort the process at a checkout step (`after_reserve`,
    /// `after_charge`, `before_publish`) to exercise crash recovery. Never set it in
    /// production; no request can.
    pub fault_abort_at: Option<String>,
    /// Where emails go: `maildir` (`.eml` files under `<data_dir>/mail`),
    /// `maildir:/some/dir`, or `smtp://[user:pass@]host:port` / `smtps://host:port`.
    pub mail_transport: String,
    /// The From of outgoing email.
    pub mail_from: String,
    /// Split topology: the modules this process runs, comma-separated
    /// (`orders,payments`; `gateway` for the edge alone). Unset: all of them, in
    /// process (the monolith).
    pub only: Option<String>,
    /// Split topology: where each module this process does not run is reached
    /// (`http://catalog:8080`; DNS names work).
    pub peer_identity: Option<String>,
    pub peer_catalog: Option<String>,
    pub peer_cart: Option<String>,
    pub peer_payments: Option<String>,
    pub peer_orders: Option<String>,
    pub peer_notifications: Option<String>,
    pub peer_analytics: Option<String>,
    /// Split topology: NATS with JetStream (`nats://host:4222`), the bus between
    /// processes.
    pub nats_url: Option<String>,
    /// Prefix of the JetStream subjects and stream names (one deployment's events).
    pub nats_prefix: String,
    /// Split topology: HMAC secret (at least 32 bytes) for the short-lived
    /// service-to-service credentials and the identity the gateway forwards. Every
    /// process of one deployment shares it.
    pub service_secret: Option<String>,
    /// Budget of one call to another module over HTTP (shortened by the caller's own
    /// remaining deadline).
    pub rpc_timeout_ms: u64,
    /// How each dependency on another module is guarded (breaker, bulkhead, timeout,
    /// retries), by the called module's name: `[dependencies.payments]
    /// breaker_failures = 3`. Unset fields and dependencies keep their defaults.
    pub dependencies: BTreeMap<String, PolicyOverrides>,
    /// Injected faults (testing, game days), by target: `payments.charge`,
    /// `payments` (every method), or a route `GET /api/v1/products/{id}`.
    pub faults: BTreeMap<String, Fault>,
    /// Serve the faults admin endpoint (`/api/v1/admin/faults`), which changes faults
    /// at run time. Off unless set at start.
    pub fault_admin: bool,
    /// Requests this process works on at once; past it, new ones get 503 with
    /// Retry-After at once (load shedding). Health and metrics are never shed. 0: off.
    pub max_in_flight_requests: u32,
    /// Prometheus metrics (`/metrics`, RED middleware). On by default; off only to
    /// measure what they cost.
    pub metrics_enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            jwt_secret: None,
            token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            admin_email: None,
            admin_password: None,
            seed_products: 1000,
            cors_origins: Vec::new(),
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            auth_rate_limit_per_second: 5,
            auth_rate_limit_burst: 10,
            password_hash_wait_ms: 2_000,
            login_free_attempts: 5,
            login_backoff_max_secs: 300,
            request_timeout_ms: 10_000,
            shutdown_timeout_secs: 30,
            database_url: None,
            db_max_connections: 8,
            sqlite_max_connections: 2,
            sqlite_synchronous: SqliteSync::Normal,
            reservation_ttl_secs: 900,
            catalog_cache_ttl_ms: 1_000,
            payment_timeout_ms: 2_000,
            payment_provider_latency_ms: 0,
            payment_provider_failure_rate: 0.0,
            checkout_wait_ms: 3_000,
            fault_abort_at: None,
            mail_transport: "maildir".to_owned(),
            mail_from: "bazaar <no-reply@bazaar.localhost>".to_owned(),
            only: None,
            peer_identity: None,
            peer_catalog: None,
            peer_cart: None,
            peer_payments: None,
            peer_orders: None,
            peer_notifications: None,
            peer_analytics: None,
            nats_url: None,
            nats_prefix: "bazaar".to_owned(),
            service_secret: None,
            rpc_timeout_ms: 5_000,
            dependencies: BTreeMap::new(),
            faults: BTreeMap::new(),
            fault_admin: false,
            max_in_flight_requests: 1_024,
            metrics_enabled: true,
        }
    }
}

/// Every key, as it is spelled in TOML and (upper-cased, `BAZAAR_`-prefixed) in the
/// environment.
pub const KEYS: &[&str] = &[
    "http_addr",
    "data_dir",
    "log_format",
    "log_filter",
    "jwt_secret",
    "token_ttl_secs",
    "refresh_token_ttl_secs",
    "admin_email",
    "admin_password",
    "seed_products",
    "cors_origins",
    "rate_limit_per_second",
    "rate_limit_burst",
    "auth_rate_limit_per_second",
    "auth_rate_limit_burst",
    "password_hash_wait_ms",
    "login_free_attempts",
    "login_backoff_max_secs",
    "request_timeout_ms",
    "shutdown_timeout_secs",
    "database_url",
    "db_max_connections",
    "sqlite_max_connections",
    "sqlite_synchronous",
    "reservation_ttl_secs",
    "catalog_cache_ttl_ms",
    "payment_timeout_ms",
    "payment_provider_latency_ms",
    "payment_provider_failure_rate",
    "checkout_wait_ms",
    "fault_abort_at",
    "mail_transport",
    "mail_from",
    "only",
    "peer_identity",
    "peer_catalog",
    "peer_cart",
    "peer_payments",
    "peer_orders",
    "peer_notifications",
    "peer_analytics",
    "nats_url",
    "nats_prefix",
    "service_secret",
    "rpc_timeout_ms",
    "dependencies",
    "faults",
    "fault_admin",
    "max_in_flight_requests",
    "metrics_enabled",
];

/// Values given as command-line flags; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Figment(Box<figment::Error>),
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Loads the layers in order and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(Env::prefixed("BAZAAR_").only(KEYS))
            .merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Figment(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The peer address configured for `module` (`peer_<module>`).
    pub fn peer(&self, module: &str) -> Option<&str> {
        match module {
            "identity" => self.peer_identity.as_deref(),
            "catalog" => self.peer_catalog.as_deref(),
            "cart" => self.peer_cart.as_deref(),
            "payments" => self.peer_payments.as_deref(),
            "orders" => self.peer_orders.as_deref(),
            "notifications" => self.peer_notifications.as_deref(),
            "analytics" => self.peer_analytics.as_deref(),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return Err(invalid("jwt_secret", "must be at least 32 bytes"));
            }
        }
        if self.token_ttl_secs == 0 {
            return Err(invalid("token_ttl_secs", "must be positive"));
        }
        if self.refresh_token_ttl_secs == 0 {
            return Err(invalid("refresh_token_ttl_secs", "must be positive"));
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(invalid(
                "rate_limit_burst",
                "must be at least 1 when rate limiting is on",
            ));
        }
        if self.auth_rate_limit_per_second > 0 && self.auth_rate_limit_burst == 0 {
            return Err(invalid(
                "auth_rate_limit_burst",
                "must be at least 1 when auth rate limiting is on",
            ));
        }
        if self.password_hash_wait_ms == 0 {
            return Err(invalid("password_hash_wait_ms", "must be positive"));
        }
        if self.login_backoff_max_secs == 0 {
            return Err(invalid("login_backoff_max_secs", "must be positive"));
        }
        if self.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be positive"));
        }
        if self.payment_timeout_ms == 0 {
            return Err(invalid("payment_timeout_ms", "must be positive"));
        }
        if !(0.0..=1.0).contains(&self.payment_provider_failure_rate) {
            return Err(invalid(
                "payment_provider_failure_rate",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Some(point) = &self.fault_abort_at {
            if !["after_reserve", "after_charge", "before_publish"].contains(&point.as_str()) {
                return Err(invalid(
                    "fault_abort_at",
                    "must be after_reserve, after_charge or before_publish",
                ));
            }
        }
        if self.reservation_ttl_secs == 0 {
            return Err(invalid("reservation_ttl_secs", "must be positive"));
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                // The value itself may carry a password: not echoed.
                return Err(invalid(
                    "database_url",
                    "must start with postgres:// or postgresql://",
                ));
            }
        }
        if self.sqlite_max_connections == 0 {
            return Err(invalid("sqlite_max_connections", "must be at least 1"));
        }
        if self.db_max_connections == 0 {
            return Err(invalid("db_max_connections", "must be at least 1"));
        }
        for origin in &self.cors_origins {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(invalid(
                    "cors_origins",
                    format!("`{origin}` is not a valid origin"),
                ));
            }
        }
        if let Some(secret) = &self.service_secret {
            if secret.len() < 32 {
                return Err(invalid("service_secret", "must be at least 32 bytes"));
            }
        }
        for overrides in self.dependencies.values() {
            if let Some(problem) = overrides.apply(DependencyPolicy::default()).problem() {
                return Err(invalid("dependencies", problem));
            }
        }
        for fault in self.faults.values() {
            if let Some(problem) = fault.problem() {
                return Err(invalid("faults", problem));
            }
        }
        if self.rpc_timeout_ms == 0 {
            return Err(invalid("rpc_timeout_ms", "must be positive"));
        }
        if self.nats_prefix.is_empty()
            || !self
                .nats_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "nats_prefix",
                "must be letters, digits, `_` or `-` (it names subjects and streams)",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
// figment::Jail's closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn sign_in_protection_settings_are_checked() {
        let invalid = |config: Config, key: &str| {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        };
        invalid(
            Config {
                auth_rate_limit_burst: 0,
                ..Config::default()
            },
            "auth_rate_limit_burst",
        );
        // Off, the burst does not matter.
        Config {
            auth_rate_limit_per_second: 0,
            auth_rate_limit_burst: 0,
            ..Config::default()
        }
        .validate()
        .unwrap();
        for (config, key) in [
            (
                Config {
                    password_hash_wait_ms: 0,
                    ..Config::default()
                },
                "password_hash_wait_ms",
            ),
            (
                Config {
                    login_backoff_max_secs: 0,
                    ..Config::default()
                },
                "login_backoff_max_secs",
            ),
            (
                Config {
                    refresh_token_ttl_secs: 0,
                    ..Config::default()
                },
                "refresh_token_ttl_secs",
            ),
        ] {
            invalid(config, key);
        }
    }

    #[test]
    fn file_then_flags_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bazaar.toml",
                "http_addr = \"127.0.0.1:9000\"\nseed_products = 5\n",
            )?;
            let overrides = Overrides {
                http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("bazaar.toml")), &overrides).unwrap();
            assert_eq!(config.http_addr.port(), 9100);
            assert_eq!(config.seed_products, 5);
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bazaar.toml", "seed_products = 5\n")?;
            jail.set_env("BAZAAR_SEED_PRODUCTS", "7");
            jail.set_env("BAZAAR_UNRELATED_THING", "ignored");
            let config =
                Config::load(Some(Path::new("bazaar.toml")), &Overrides::default()).unwrap();
            assert_eq!(config.seed_products, 7);
            Ok(())
        });
    }

    #[test]
    fn database_url_comes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None, &Overrides::default())
                    .unwrap()
                    .database_url,
                None
            );
            jail.set_env("BAZAAR_DATABASE_URL", "postgresql://bazaar@db:5432/shop");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(
                config.database_url.as_deref(),
                Some("postgresql://bazaar@db:5432/shop")
            );
            Ok(())
        });
    }

    #[test]
    fn dependencies_and_faults_from_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bazaar.toml",
                "[dependencies.payments]\nbreaker_failures = 3\n",
            )?;
            jail.set_env(
                "BAZAAR_FAULTS",
                "{\"payments.charge\" = {latency_ms = 200}}",
            );
            let config =
                Config::load(Some(Path::new("bazaar.toml")), &Overrides::default()).unwrap();
            let overrides = &config.dependencies["payments"];
            assert_eq!(overrides.breaker_failures, Some(3));
            // Unset fields keep the dependency's own defaults.
            let payments = overrides.apply(DependencyPolicy {
                retry_attempts: 1,
                ..DependencyPolicy::default()
            });
            assert_eq!(payments.breaker_failures, 3);
            assert_eq!(payments.retry_attempts, 1);
            assert_eq!(
                payments.max_concurrent,
                DependencyPolicy::default().max_concurrent
            );
            assert_eq!(config.faults["payments.charge"].latency_ms, 200);
            jail.set_env("BAZAAR_FAULTS", "{catalog = {error_rate = 2.0}}");
            let err = Config::load(Some(Path::new("bazaar.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("faults"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_REQUEST_TIMEOUT_MS", "soon");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.to_lowercase().contains("request_timeout_ms"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("bazaar.toml", "no_such_key = 1\n")?;
            let err = Config::load(Some(Path::new("bazaar.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("no_such_key"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_DATABASE_URL", "mysql://root@localhost/bazaar");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("database_url"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_JWT_SECRET", "short");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("jwt_secret"), "{err}");
            Ok(())
        });
    }
}
