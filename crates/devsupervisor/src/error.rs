//! What can stop `bazaar dev`: configuration it cannot run with, a plan that does not
//! fit, a child that does not start. Each variant's message is what the user reads;
//! the cause follows as its source.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(
        "`bazaar dev` runs the split topology and needs --split (`bazaar dev --split`); \
         for the monolith, run `bazaar serve`"
    )]
    NotSplit,
    #[error(transparent)]
    Config(#[from] chassis::config::ConfigError),
    #[error(
        "bazaar dev --split needs PostgreSQL: set BAZAAR_DATABASE_URL \
         (e.g. postgres://postgres@127.0.0.1:5432/bazaar), database_url in the config file, \
         or --database-url"
    )]
    NoDatabase,
    #[error(
        "bazaar dev --split needs NATS with JetStream: set BAZAAR_NATS_URL \
         (e.g. nats://127.0.0.1:4222), nats_url in the config file, or --nats-url"
    )]
    NoNats,
    #[error("bazaar dev needs a fixed gateway port (--http-addr / BAZAAR_HTTP_ADDR), not port 0")]
    GatewayPortZero,
    #[error("no modules to start")]
    NoModules,
    #[error("too many module processes ({0} modules times --replicas)")]
    TooManyModules(usize),
    #[error("--base-port must not be 0")]
    BasePortZero,
    #[error(
        "the gateway's port is the highest there is: no room for the modules after it (use --base-port)"
    )]
    NoPortAfterGateway,
    #[error("the modules need ports {base} to {last}: past 65535")]
    PortsPastMax { base: u16, last: u32 },
    #[error(
        "the gateway's port {gateway} falls in the modules' ports {base}..={last} (choose another --base-port)"
    )]
    GatewayAmongModules { gateway: u16, base: u16, last: u16 },
    #[error(
        "cannot listen on {listen} for {service}: is another bazaar running? (choose ports with --http-addr and --base-port)"
    )]
    PortTaken {
        listen: SocketAddr,
        service: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad data dir {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a file path", path.display())]
    SecretPath { path: PathBuf },
    #[error(transparent)]
    Secret(#[from] chassis::auth::TokenError),
    #[error(transparent)]
    Tls(#[from] chassis::tls::TlsError),
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the bazaar executable")]
    CurrentExe(#[source] std::io::Error),
    #[error("cannot handle {signal}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A child exited or did not answer ready while starting; the message carries
    /// its last lines.
    #[error("{0}")]
    NotStarted(String),
    #[error("every service has exited")]
    AllExited,
    #[error("the database URL cannot carry a module's role: {0}")]
    DatabaseUrl(String),
    #[error("cannot run the migration of {module}")]
    MigrateSpawn {
        module: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the migration of {module} failed ({status}); its error is above")]
    Migrate {
        module: &'static str,
        status: std::process::ExitStatus,
    },
}
