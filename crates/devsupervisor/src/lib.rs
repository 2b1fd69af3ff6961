//! `bazaar dev --split`: compose without Docker.
//!
//! Starts every module and then the gateway as child processes of this same binary
//! (`bazaar serve --only <module>`) on consecutive local ports, against the PostgreSQL
//! and NATS the configuration names; merges their output with a per-service prefix and
//! stops them all on Ctrl-C or SIGTERM (gateway first, then the modules).
//!
//! A role per module on PostgreSQL (ADR 0008): the database URL given is the
//! administrator's. First each module's migration step (`bazaar migrate`, alone with
//! that URL) makes the module's role `bazaar_<module>`, with a password generated once
//! into the data dir, the owner of its schema; then each module process connects as
//! its role.
//!
//! - `plan`: the ports, and each child's environment and command line;
//! - `secret`: the secrets every child shares, and each module's database password,
//!   generated once into the data dir;
//! - `child`: one child process, watched, signalled, killed when dropped;
//! - `output`: the children's lines merged behind their names;
//! - `supervise`: stages started in order, stopped in reverse. It knows nothing of
//!   bazaar (it takes stages of named commands), so its tests drive it with `sh`.
//!
//! The binary passes the module names in ([`Launch`]), so this crate depends on no
//! module.

mod child;
mod error;
mod output;
mod plan;
mod secret;
mod supervise;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chassis::config::{Config, Overrides};

use crate::child::Spec;
pub use crate::error::DevError;
use crate::output::Output;
use crate::plan::{
    Plan, Planned, Shared, child_command, child_env, migrate_command, migrate_env,
    module_database_url, reachable,
};
use crate::secret::load_or_create_secret;
use crate::supervise::{Control, Settings, supervise};

/// How long each service may take to answer 200 on `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to `shutdown_timeout_secs` before stragglers are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What `bazaar dev` takes from the binary it runs in: the global flags, passed on to
/// every child, and the services to start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `--config`: the configuration file, for this process and every child.
    pub config: Option<PathBuf>,
    /// `--data-dir`: each child gets a directory of its own below it.
    pub data_dir: Option<PathBuf>,
    /// `--log-format` as typed (`json`, `pretty`), passed on to every child.
    pub log_format: Option<String>,
    /// The modules, in the order they get ports (the gateway's port + 1, + 2, ...).
    pub modules: Vec<&'static str>,
    /// The configuration keys the modules own (their descriptors'), so the
    /// configuration loads as `serve` loads it.
    pub module_settings: Vec<&'static str>,
    /// The edge's name in `serve --only`.
    pub gateway: &'static str,
}

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Run each module and the gateway as its own process (the split topology). Required
    /// for now; for the monolith run `bazaar serve`.
    #[arg(long)]
    split: bool,
    /// Where the gateway listens; the modules listen on the same IP at the next eight
    /// ports (identity, catalog, cart, payments, orders, notifications, analytics,
    /// storefront)
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// The first module's port (the modules take PORT..=PORT+6) [default: the gateway's
    /// port + 1].
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// How many processes of each module (a module's replicas take consecutive ports
    /// and every peer is given the list of them); the gateway stays one.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
    /// PostgreSQL, as a role that may create roles (a superuser): each module gets a
    /// role and a schema of its own, made by its migration step with this URL; the
    /// module processes connect as their roles [env: BAZAAR_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// NATS with JetStream, the bus between the processes [env: BAZAAR_NATS_URL].
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// TLS between the processes: a throwaway CA and a certificate per module are made
    /// under `<data dir>/tls` at each start; the modules serve HTTPS and trust only that
    /// CA; the gateway stays plain HTTP towards you.
    #[arg(long)]
    tls: bool,
}

/// The first SIGINT/SIGTERM stops gracefully, the second kills.
fn stop_on_signals(control: &Control) -> Result<(), DevError> {
    use tokio::signal::unix::{SignalKind, signal};
    let handle = |signal_name, kind| {
        signal(kind).map_err(|source| DevError::Signal {
            signal: signal_name,
            source,
        })
    };
    let mut interrupt = handle("SIGINT", SignalKind::interrupt())?;
    let mut terminate = handle("SIGTERM", SignalKind::terminate())?;
    let control = control.clone();
    tokio::spawn(async move {
        for token in [&control.stop, &control.force] {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            token.cancel();
        }
    });
    Ok(())
}

/// Each module's migration step, one module at a time (its first replica's settings):
/// makes the module's role and migrates its schema, before any module starts.
async fn migrate(
    exe: &std::path::Path,
    global_args: &[OsString],
    plan: &Plan,
    shared: &Shared,
    admin_url: &str,
) -> Result<(), DevError> {
    let mut done: Vec<&str> = Vec::new();
    for who in &plan.modules {
        if done.contains(&who.name) {
            continue;
        }
        done.push(who.name);
        let module = who.name;
        let env = migrate_env(plan, who, shared, admin_url);
        // Its logs would repeat the servers'; its error, on stderr, is what matters.
        let status = migrate_command(exe, global_args, &env)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .map_err(|source| DevError::MigrateSpawn { module, source })?;
        if !status.success() {
            return Err(DevError::Migrate { module, status });
        }
    }
    Ok(())
}

/// `bazaar dev`: plans the ports, starts the modules and then the gateway as children
/// of this binary, and runs until Ctrl-C or SIGTERM.
pub async fn run(launch: Launch, args: DevArgs) -> Result<(), DevError> {
    if !args.split {
        return Err(DevError::NotSplit);
    }
    let overrides = Overrides {
        http_addr: args.http_addr,
        data_dir: launch.data_dir.clone(),
        ..Overrides::default()
    };
    let mut config = Config::load(
        launch.config.as_deref(),
        &overrides,
        &launch.module_settings,
    )?;
    if args.database_url.is_some() {
        config.database_url = args.database_url;
    }
    if args.nats_url.is_some() {
        config.nats_url = args.nats_url;
    }
    config.validate()?;
    // The URL given administers: it makes each module's role. An explicit
    // `database_admin_url` is that administrator instead.
    let admin_url = match (&config.database_admin_url, &config.database_url) {
        (Some(admin), _) | (None, Some(admin)) => admin.clone(),
        (None, None) => return Err(DevError::NoDatabase),
    };
    let nats_url = config.nats_url.clone().ok_or(DevError::NoNats)?;
    let plan = Plan::new(
        launch.gateway,
        &launch.modules,
        args.replicas,
        config.http_addr,
        args.base_port,
    )?;
    plan.check_free()?;

    let data_dir = std::path::absolute(&config.data_dir).map_err(|source| DevError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let shared = Shared {
        jwt_secret: load_or_create_secret(
            config.jwt_secret.as_deref(),
            &data_dir.join("jwt-secret"),
        )?,
        // A key pair per service, kept across restarts.
        service_keys: {
            let root = data_dir.join("service-keys");
            // One key per module: its replicas sign as it.
            let mut names: Vec<&str> = plan.all().map(|s| s.name).collect();
            names.dedup();
            chassis::auth::provision_service_keys(&root, &names)?;
            root
        },
        // One scrape credential for every child, so one Prometheus job reads them all.
        metrics_token: load_or_create_secret(
            config.metrics_token.as_deref(),
            &data_dir.join("metrics-token"),
        )?,
        tls: if args.tls {
            let pki = data_dir.join("tls");
            // One certificate per module, which its replicas share.
            let mut modules: Vec<&str> = plan.modules.iter().map(|m| m.name).collect();
            modules.dedup();
            chassis::tls::generate_dev_pki(&pki, &modules)?;
            Some(pki)
        } else {
            None
        },
        database_urls: {
            let mut urls = std::collections::BTreeMap::new();
            for module in plan.modules.iter().map(|m| m.name) {
                if !urls.contains_key(module) {
                    let password = load_or_create_secret(
                        None,
                        &data_dir.join("database-passwords").join(module),
                    )?;
                    urls.insert(module, module_database_url(&admin_url, module, &password)?);
                }
            }
            urls
        },
        data_dir,
        nats_url,
        nats_prefix: config.nats_prefix.clone(),
    };
    for service in plan.all() {
        let dir = shared.data_dir.join(&service.label);
        std::fs::create_dir_all(&dir)
            .map_err(|source| DevError::CreateDir { path: dir, source })?;
    }

    let exe = std::env::current_exe().map_err(DevError::CurrentExe)?;
    let mut global_args: Vec<OsString> = Vec::new();
    if let Some(file) = launch.config {
        global_args.push("--config".into());
        global_args.push(file.into());
    }
    if let Some(format) = launch.log_format {
        global_args.push("--log-format".into());
        global_args.push(format.into());
    }
    migrate(&exe, &global_args, &plan, &shared, &admin_url).await?;
    let probe_tls = match &shared.tls {
        Some(pki) => Some(Arc::new(chassis::tls::client_config(Some(
            &pki.join("ca.pem"),
        ))?)),
        None => None,
    };
    let spec = |service: &Planned| Spec {
        name: service.label.clone(),
        command: child_command(
            &exe,
            &global_args,
            service.name,
            &child_env(&plan, service, &shared),
        ),
        health: Some(reachable(service.listen)),
        // With --tls every module serves HTTPS; the gateway stays plain.
        health_tls: probe_tls
            .clone()
            .filter(|_| service.name != plan.gateway.name),
        url: Some(
            if shared.tls.is_some() && service.name != plan.gateway.name {
                service.url.replacen("http://", "https://", 1)
            } else {
                service.url.clone()
            },
        ),
    };
    let stages = vec![
        plan.modules.iter().map(spec).collect(),
        vec![spec(&plan.gateway)],
    ];
    let settings = Settings {
        ready_timeout: READY_TIMEOUT,
        stop_timeout: Duration::from_secs(config.shutdown_timeout_secs) + STOP_GRACE,
        poll_every: Duration::from_millis(200),
        banner: Some(format!("bazaar is ready at {}", plan.gateway.url)),
    };
    let control = Control::default();
    stop_on_signals(&control)?;
    let output = Output::stdio();
    let result = supervise(stages, &settings, &control, &output).await;
    if let Ok(ended) = &result {
        let unclean: Vec<_> = ended
            .iter()
            .filter(|e| !e.status.is_some_and(|s| s.success()))
            .map(|e| e.name.as_str())
            .collect();
        if unclean.is_empty() {
            output
                .say("[dev] stopped; every service exited cleanly")
                .await;
        } else {
            output
                .say(format!(
                    "[dev] stopped; not cleanly: {}",
                    unclean.join(", ")
                ))
                .await;
        }
    }
    output.flush().await;
    result.map(drop)
}
