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
use figment::value::Value;
use serde::{Deserialize, Serialize};

pub use chassis_store::store::SqliteSync;
pub use chassis_telemetry::LogFormat;

use chassis_http::forwarded::TrustedProxies;
use chassis_resilience::{DependencyPolicy, Fault, PolicyOverrides};

/// The process's configuration: one flat set of keys, each typed with the settings
/// type of the mechanism it configures (`log_format`: chassis-telemetry,
/// `sqlite_synchronous`: chassis-store, `dependencies` and `faults`:
/// chassis-resilience).
#[derive(Debug, Clone, Serialize, Deserialize)]
// Unknown keys land in `modules` (flatten and deny_unknown_fields do not mix in
// serde) and `load` rejects those no module owns.
#[serde(default)]
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
    /// A second user-token secret that verifies but never signs: the next secret
    /// before a rotation, the previous one after (docs/operations.md, "Rotating
    /// secrets").
    pub jwt_secret_also_accepted: Option<String>,
    /// Lifetime of issued user (access) tokens: short, since one cannot be revoked
    /// before it expires; clients renew with their refresh token.
    pub token_ttl_secs: u64,
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
    /// The proxies in front of bazaar (load balancer, ingress) whose
    /// `X-Forwarded-For` names the client the per-IP limits count: comma-separated
    /// CIDRs or addresses (`10.0.0.0/8,192.168.1.7`). Empty (the default): the header
    /// is never believed and the TCP peer is the client.
    pub trusted_proxies: String,
    /// Budget of one public request, after which it is abandoned with a 504.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_timeout_secs: u64,
    /// PostgreSQL for every module's store (`postgres://user@host:5432/db`), each
    /// module in a schema named after it. Unset: SQLite files under `data_dir`.
    pub database_url: Option<String>,
    /// A role per module on PostgreSQL (ADR 0008): an administrator's URL (a role that
    /// may create roles and schemas). When set, before a module's store opens, the
    /// user of `database_url` (with its password) is made a login role owning the
    /// module's schema and nothing else; the module then connects as that role. Give
    /// it to the migration step only (`bazaar migrate`); the servers need just their
    /// own `database_url`. Unset: no roles are touched.
    pub database_admin_url: Option<String>,
    /// Connections per module pool on PostgreSQL (a process opens one pool per module).
    pub db_max_connections: u32,
    /// Connections per module pool on SQLite. SQLite has one writer per file and sqlx
    /// gives every connection its own thread, so more connections mostly add thread
    /// switching and lock waits: checkout measured 1,119 orders/s with 2, 706 with 4,
    /// 625 with 8 and 666 with 1 (docs/benchmarks.md).
    pub sqlite_max_connections: u32,
    pub sqlite_synchronous: SqliteSync,
    /// Split topology: the modules this process runs, comma-separated
    /// (`orders,payments`; `gateway` for the edge alone). Unset: all of them, in
    /// process (the monolith).
    pub only: Option<String>,
    /// Split topology: NATS with JetStream (`nats://host:4222`), the bus between
    /// processes.
    pub nats_url: Option<String>,
    /// Prefix of the JetStream subjects and stream names (one deployment's events).
    pub nats_prefix: String,
    /// Replicas of each JetStream stream bazaar creates: 1 on a single server, 3 on a
    /// production cluster of three. A stream is reconciled to it at every start.
    pub nats_stream_replicas: u8,
    /// Split topology: HMAC secret (at least 32 bytes) for the short-lived
    /// service-to-service credentials and the identity the gateway forwards. Every
    /// process of one deployment shares it, so any of them can sign as any other:
    /// prefer `service_keys_dir`, which takes precedence when both are set.
    pub service_secret: Option<String>,
    /// Split topology: a directory of per-service Ed25519 keys (`<service>.key`, this
    /// process's private key; `<name>.pub`, the public key of every service whose
    /// credentials it accepts). Each process signs as itself only. `bazaar dev
    /// --split` generates one; deployments mount one per process (see operations).
    pub service_keys_dir: Option<PathBuf>,
    /// This process's TLS certificate chain (PEM): with `tls_key_file`, its listener
    /// speaks HTTPS only. For the split's traffic between services; a deployment with
    /// a private network or a mesh may leave it off.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that `https://` peers' certificates must chain to.
    /// No public roots are trusted.
    pub tls_ca_file: Option<PathBuf>,
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
    /// The scrape credential: `/metrics` answers only `Authorization: Bearer <this>`
    /// (at least 32 bytes). Unset: generated on first start and kept in
    /// `<data_dir>/metrics-token`.
    pub metrics_token: Option<String>,
    /// Split topology: where each module this process does not run is reached, by
    /// module name (`http://catalog:8080`; DNS names work, each address a name
    /// resolves to being a replica), or its replicas as a comma-separated list
    /// (`http://10.0.0.5:8080,http://10.0.0.6:8080`): `[peers] catalog = ...` in the
    /// file, `BAZAAR_PEER_CATALOG` in the environment, or the older file key
    /// `peer_catalog`.
    pub peers: BTreeMap<String, String>,
    /// The modules' own settings, flat keys as everywhere else
    /// (`catalog_cache_ttl_ms`): each module's descriptor names its keys and reads
    /// them, typed, with [`Config::section`]. [`Config::load`] rejects a key no one
    /// owns.
    #[serde(flatten)]
    pub modules: BTreeMap<String, Value>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            jwt_secret: None,
            jwt_secret_also_accepted: None,
            token_ttl_secs: 900,
            cors_origins: Vec::new(),
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            auth_rate_limit_per_second: 5,
            auth_rate_limit_burst: 10,
            trusted_proxies: String::new(),
            request_timeout_ms: 10_000,
            shutdown_timeout_secs: 30,
            database_url: None,
            database_admin_url: None,
            db_max_connections: 8,
            sqlite_max_connections: 2,
            sqlite_synchronous: SqliteSync::Normal,
            only: None,
            nats_url: None,
            nats_prefix: "bazaar".to_owned(),
            nats_stream_replicas: 1,
            service_secret: None,
            service_keys_dir: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            rpc_timeout_ms: 5_000,
            dependencies: BTreeMap::new(),
            faults: BTreeMap::new(),
            fault_admin: false,
            max_in_flight_requests: 1_024,
            metrics_enabled: true,
            metrics_token: None,
            peers: BTreeMap::new(),
            modules: BTreeMap::new(),
        }
    }
}

/// Every key of the process itself, as it is spelled in TOML and (upper-cased,
/// `BAZAAR_`-prefixed) in the environment; modules add their own (see
/// [`Config::load`]) and peers come from `BAZAAR_PEER_<MODULE>`.
pub const KEYS: &[&str] = &[
    "http_addr",
    "data_dir",
    "log_format",
    "log_filter",
    "jwt_secret",
    "jwt_secret_also_accepted",
    "token_ttl_secs",
    "cors_origins",
    "rate_limit_per_second",
    "rate_limit_burst",
    "auth_rate_limit_per_second",
    "auth_rate_limit_burst",
    "trusted_proxies",
    "request_timeout_ms",
    "shutdown_timeout_secs",
    "database_url",
    "database_admin_url",
    "db_max_connections",
    "sqlite_max_connections",
    "sqlite_synchronous",
    "only",
    "nats_url",
    "nats_prefix",
    "nats_stream_replicas",
    "service_secret",
    "service_keys_dir",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
    "rpc_timeout_ms",
    "dependencies",
    "faults",
    "fault_admin",
    "max_in_flight_requests",
    "metrics_enabled",
    "metrics_token",
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
    #[error("unknown configuration key `{0}`")]
    Unknown(String),
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Loads the layers in order and validates the result. `module_keys` are the keys
    /// the modules own (their descriptors name them); any other key in the file is an
    /// error, and the environment is read only for known keys.
    pub fn load(
        file: Option<&Path>,
        overrides: &Overrides,
        module_keys: &[&str],
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let keys: Vec<&str> = KEYS.iter().chain(module_keys).copied().collect();
        figment = figment
            .merge(Env::prefixed("BAZAAR_").only(&keys))
            // `BAZAAR_PEER_CATALOG` is `peers.catalog`.
            .merge(
                Env::prefixed("BAZAAR_PEER_")
                    .map(|key| format!("peers.{}", key.as_str().to_ascii_lowercase()).into()),
            )
            .merge(Serialized::defaults(overrides));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Figment(Box::new(e)))?;
        // The older spelling of a peer, `peer_catalog = "..."`: kept working.
        let older: Vec<String> = config
            .modules
            .keys()
            .filter(|key| key.starts_with("peer_"))
            .cloned()
            .collect();
        for key in older {
            if let Some(value) = config.modules.remove(&key) {
                let module = key.trim_start_matches("peer_").to_owned();
                let url = value.into_string().ok_or_else(|| ConfigError::Invalid {
                    key: "peers",
                    message: format!("`{key}` must be a URL string"),
                })?;
                config.peers.entry(module).or_insert(url);
            }
        }
        if let Some(unknown) = config
            .modules
            .keys()
            .find(|key| !module_keys.contains(&key.as_str()))
        {
            return Err(ConfigError::Unknown(unknown.clone()));
        }
        config.validate()?;
        Ok(config)
    }

    /// The peer address configured for `module`: one base URL or a comma-separated
    /// list of its replicas' (see [`chassis_http::balance::Replicas`]).
    pub fn peer(&self, module: &str) -> Option<&str> {
        self.peers.get(module).map(String::as_str)
    }

    /// The proxies whose `X-Forwarded-For` is believed (checked by [`Config::load`]).
    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::parse(&self.trusted_proxies).unwrap_or_default()
    }

    /// A module's typed settings, read from its keys (unset ones take the type's
    /// defaults). The error names the offending key.
    pub fn section<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        Figment::from(Serialized::defaults(&self.modules))
            .extract()
            .map_err(|e| ConfigError::Figment(Box::new(e)))
    }

    /// Sets a module's key, as the file or the environment would (tests, tools).
    pub fn set(&mut self, key: &str, value: impl Serialize) -> &mut Self {
        // Serialising plain values into figment's tree cannot fail; a value that
        // could would surface when the module reads its section.
        if let Ok(value) = Value::serialize(value) {
            self.modules.insert(key.to_owned(), value);
        }
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if !(1..=5).contains(&self.nats_stream_replicas) {
            return Err(invalid(
                "nats_stream_replicas",
                "must be 1 to 5 (JetStream's limit)",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        if self
            .jwt_secret_also_accepted
            .as_ref()
            .is_some_and(|s| s.len() < 32)
        {
            return Err(invalid(
                "jwt_secret_also_accepted",
                "must be at least 32 bytes",
            ));
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return Err(invalid("jwt_secret", "must be at least 32 bytes"));
            }
        }
        if self.token_ttl_secs == 0 {
            return Err(invalid("token_ttl_secs", "must be positive"));
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
        if self.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be positive"));
        }
        TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|message| invalid("trusted_proxies", message))?;
        for (module, urls) in &self.peers {
            let bad = chassis_http::balance::split(urls)
                .find(|url| !(url.starts_with("http://") || url.starts_with("https://")));
            if bad.is_some() || chassis_http::balance::split(urls).next().is_none() {
                return Err(invalid(
                    "peers",
                    format!(
                        "{module}: one http:// or https:// base URL, or a comma-separated list of them"
                    ),
                ));
            }
        }
        for (key, url) in [
            ("database_url", &self.database_url),
            ("database_admin_url", &self.database_admin_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    // The value itself may carry a password: not echoed.
                    return Err(invalid(key, "must start with postgres:// or postgresql://"));
                }
            }
        }
        if self.database_admin_url.is_some() && self.database_url.is_none() {
            return Err(invalid(
                "database_admin_url",
                "needs database_url (the module's own role)",
            ));
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
        if self.metrics_token.as_ref().is_some_and(|t| t.len() < 32) {
            return Err(invalid("metrics_token", "must be at least 32 bytes"));
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

    /// A module's settings, as a descriptor would declare them.
    const MODULE_KEYS: &[&str] = &["seed_products"];

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Seeding {
        seed_products: u32,
    }

    impl Default for Seeding {
        fn default() -> Self {
            Self {
                seed_products: 1000,
            }
        }
    }

    /// The configuration as a start with `file` (and the jail's environment) loads it.
    fn load(file: Option<&str>) -> Result<Config, ConfigError> {
        Config::load(file.map(Path::new), &Overrides::default(), MODULE_KEYS)
    }

    fn seeded(config: &Config) -> u32 {
        config.section::<Seeding>().unwrap().seed_products
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn stream_replicas_and_tls_files_are_checked() {
        let invalid = |config: Config, key: &str| {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        };
        for replicas in [0, 6] {
            invalid(
                Config {
                    nats_stream_replicas: replicas,
                    ..Config::default()
                },
                "nats_stream_replicas",
            );
        }
        Config {
            nats_stream_replicas: 3,
            ..Config::default()
        }
        .validate()
        .unwrap();
        invalid(
            Config {
                tls_cert_file: Some("/etc/bazaar/tls.crt".into()),
                ..Config::default()
            },
            "tls_cert_file",
        );
    }

    #[test]
    fn the_auth_rate_limit_is_checked() {
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
            let config =
                Config::load(Some(Path::new("bazaar.toml")), &overrides, MODULE_KEYS).unwrap();
            assert_eq!(config.http_addr.port(), 9100);
            assert_eq!(seeded(&config), 5);
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bazaar.toml", "seed_products = 5\n")?;
            jail.set_env("BAZAAR_SEED_PRODUCTS", "7");
            jail.set_env("BAZAAR_UNRELATED_THING", "ignored");
            let config = load(Some("bazaar.toml")).unwrap();
            assert_eq!(seeded(&config), 7);
            Ok(())
        });
    }

    #[test]
    fn database_url_comes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(load(None).unwrap().database_url, None);
            jail.set_env("BAZAAR_DATABASE_URL", "postgresql://bazaar@db:5432/shop");
            let config = load(None).unwrap();
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
            let config = load(Some("bazaar.toml")).unwrap();
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
            let err = load(Some("bazaar.toml")).unwrap_err().to_string();
            assert!(err.contains("faults"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_REQUEST_TIMEOUT_MS", "soon");
            let err = load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("request_timeout_ms"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("bazaar.toml", "no_such_key = 1\n")?;
            let err = load(Some("bazaar.toml")).unwrap_err().to_string();
            assert!(err.contains("no_such_key"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_DATABASE_URL", "mysql://root@localhost/bazaar");
            let err = load(None).unwrap_err().to_string();
            assert!(err.contains("database_url"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_JWT_SECRET", "short");
            let err = load(None).unwrap_err().to_string();
            assert!(err.contains("jwt_secret"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn peers_from_the_environment_the_file_and_the_older_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bazaar.toml",
                "peer_cart = \"http://cart:8080\"\n[peers]\norders = \"http://orders:8080\"\n",
            )?;
            jail.set_env("BAZAAR_PEER_CATALOG", "http://catalog:8080");
            let config = load(Some("bazaar.toml")).unwrap();
            assert_eq!(config.peer("catalog"), Some("http://catalog:8080"));
            assert_eq!(config.peer("cart"), Some("http://cart:8080"));
            assert_eq!(config.peer("orders"), Some("http://orders:8080"));
            assert_eq!(config.peer("payments"), None);
            Ok(())
        });
    }

    #[test]
    fn a_peer_may_be_a_list_of_replicas_and_proxies_are_cidrs() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "BAZAAR_PEER_CATALOG",
                "http://10.0.0.5:8080, http://10.0.0.6:8080",
            );
            jail.set_env("BAZAAR_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.7");
            let config = load(None).unwrap();
            assert_eq!(
                config.peer("catalog"),
                Some("http://10.0.0.5:8080, http://10.0.0.6:8080")
            );
            assert!(!config.trusted_proxies().is_empty());
            jail.set_env("BAZAAR_PEER_CATALOG", "http://10.0.0.5:8080,10.0.0.6:8080");
            let err = load(None).unwrap_err().to_string();
            assert!(err.contains("catalog"), "{err}");
            jail.set_env("BAZAAR_PEER_CATALOG", "http://10.0.0.5:8080");
            jail.set_env("BAZAAR_TRUSTED_PROXIES", "10.0.0.0/40");
            let err = load(None).unwrap_err().to_string();
            assert!(err.contains("trusted_proxies"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn module_keys_are_known_only_when_a_module_declares_them() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bazaar.toml", "seed_products = 5\n")?;
            let err = Config::load(Some(Path::new("bazaar.toml")), &Overrides::default(), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("seed_products"), "{err}");
            jail.set_env("BAZAAR_SEED_PRODUCTS", "soon");
            let config = load(Some("bazaar.toml")).unwrap();
            let err = config.section::<Seeding>().unwrap_err().to_string();
            assert!(err.contains("seed_products"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn set_is_what_a_file_would_say() {
        let mut config = Config::default();
        config.set("seed_products", 3);
        assert_eq!(seeded(&config), 3);
        assert_eq!(seeded(&Config::default()), 1000);
    }
}
