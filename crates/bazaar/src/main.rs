//! `bazaar`: the command line. Everything real happens in the library crates; `dev` and
//! `loadgen` are the `devsupervisor` and `loadgen` crates.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bazaar::config::{Config, LogFormat, Overrides};
use bazaar::{Application, Modules};
use clap::{Args, Parser, Subcommand};

// The allocator is a build choice (bench/memory.sh measures each; docs/benchmarks.md).
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bazaar: an e-commerce backend that runs as one process or as microservices.
///
/// Configuration comes from defaults, then a TOML file (--config), then BAZAAR_*
/// environment variables (BAZAAR_HTTP_ADDR, BAZAAR_DATA_DIR, ...), then flags.
#[derive(Debug, Parser)]
#[command(name = "bazaar", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// A TOML file with configuration keys (see README: Configuration).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the embedded databases and generated secrets live [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log output: json (one object per line, default) or pretty (for humans).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run bazaar: every module in this process (the monolith), listening on
    /// --http-addr. On first start it creates the databases, seeds a demo catalog and,
    /// with BAZAAR_ADMIN_EMAIL and BAZAAR_ADMIN_PASSWORD set, an admin account.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        http_addr: Option<SocketAddr>,
        /// Split topology: run only these modules (comma-separated, e.g.
        /// `orders,payments`, or `gateway` for the edge alone); the others are reached
        /// at BAZAAR_PEER_<MODULE>. Unset: every module in this process.
        #[arg(long, value_name = "MODULES")]
        only: Option<String>,
    },
    /// Create or upgrade every module's database schema, then exit.
    Migrate,
    /// Add the first N products of the deterministic demo catalog (existing SKUs are
    /// kept), then exit.
    Seed {
        /// How many demo products the catalog should contain.
        #[arg(long, default_value_t = 1000)]
        products: u32,
    },
    /// Check the invariants (no negative stock, money conserved, every order terminal,
    /// one email per confirmed order, analytics exact) against the stores this
    /// configuration points at. Exit status 1 when one is violated.
    Audit {
        /// An order non-terminal for longer than this counts as stuck.
        #[arg(long, default_value_t = 300)]
        stuck_after_secs: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Development: with --split, run the gateway and every module as child processes
    /// of this binary on local ports (compose without Docker), against the PostgreSQL
    /// and NATS of BAZAAR_DATABASE_URL and BAZAAR_NATS_URL, with their logs merged;
    /// Ctrl-C stops them all.
    Dev(devsupervisor::DevArgs),
    /// Deployment files (Compose, Kubernetes, Terraform for ECS, Prometheus, the
    /// container image, GitHub workflows) derived from the module registry.
    #[command(subcommand)]
    Deploy(DeployCommand),
    /// Exit 0 when URL answers 2xx within the timeout, else 1: the container image's
    /// health check (it has no shell and no curl).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8080/health/ready")]
        url: String,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Drive a running bazaar with a realistic shopper mix at a fixed arrival rate
    /// (--rate, open loop) or with N users back to back (--users, closed loop), then
    /// print latency percentiles and outcomes per operation (--json: also as JSON).
    Loadgen(loadgen::LoadgenArgs),
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Write every deployment file under DIR and the GitHub workflows under
    /// DIR/../.github/workflows (sorted, no timestamps): the committed deploy/ and
    /// .github/workflows are exactly this output, and CI fails on a difference.
    Render {
        /// Where to write (the default is for a run from the repository root).
        #[arg(long, value_name = "DIR", default_value = "deploy")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin account. An existing admin with that email is left alone; an
    /// existing account of another role is refused, never promoted.
    Create {
        #[arg(long)]
        email: String,
        /// At least 8 characters. Prefer BAZAAR_ADMIN_PASSWORD in scripts: flags show
        /// up in process listings.
        #[arg(long, env = "BAZAAR_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
}

fn load_config(
    global: &Global,
    http_addr: Option<SocketAddr>,
    only: Option<String>,
) -> anyhow::Result<Config> {
    let overrides = Overrides {
        http_addr,
        only,
        data_dir: global.data_dir.clone(),
        log_format: global.log_format.map(|f| match f {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Pretty => LogFormat::Pretty,
        }),
    };
    Ok(Config::load(
        global.config.as_deref(),
        &overrides,
        &bazaar::registry().setting_keys(),
    )?)
}

/// The audit found violations (exit status 1; the report says which).
#[derive(Debug)]
struct AuditFailed;

impl std::fmt::Display for AuditFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the audit found violations")
    }
}

impl std::error::Error for AuditFailed {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Dev(args) = cli.command {
        let launch = devsupervisor::Launch {
            config: cli.global.config,
            data_dir: cli.global.data_dir,
            log_format: cli
                .global
                .log_format
                .and_then(|f| clap::ValueEnum::to_possible_value(&f))
                .map(|v| v.get_name().to_owned()),
            modules: bazaar::registry().names(),
            module_settings: bazaar::registry().setting_keys(),
            gateway: bazaar::topology::GATEWAY,
        };
        return Ok(devsupervisor::run(launch, args).await?);
    }
    if let Command::Loadgen(args) = cli.command {
        return Ok(loadgen::run(args).await?);
    }
    // Neither reads the configuration: a health check must not fail on a setting.
    if let Command::Deploy(DeployCommand::Render { out }) = &cli.command {
        // The repository (the current directory) says which crates each workflow watches.
        let crates = bazaar::deploy::CrateGraph::load(std::path::Path::new("."))?;
        let files = bazaar::deploy::render(&bazaar::registry(), &crates);
        bazaar::deploy::write(&files, out)?;
        eprintln!("rendered {} files under {}", files.len(), out.display());
        return Ok(());
    }
    if let Command::Health { url, timeout_secs } = &cli.command {
        return health(url, std::time::Duration::from_secs(*timeout_secs)).await;
    }
    let (http_addr, only) = match &cli.command {
        Command::Serve { http_addr, only } => (*http_addr, only.clone()),
        _ => (None, None),
    };
    let config = load_config(&cli.global, http_addr, only)?;
    // A split process logs as the module(s) it runs; a bad `only` is reported by the
    // start itself, with the reason.
    let service = bazaar::Topology::from_config(&config, &bazaar::registry())
        .map_or("bazaar", |t| t.service_name());
    chassis::telemetry::init(service, config.log_format, &config.log_filter);

    match cli.command {
        Command::Serve { .. } => {
            let app = Application::build(config)
                .await
                .context("bazaar could not start")?;
            chassis::http::cancel_on_signal(app.shutdown_token());
            let scheme = if app.serves_tls() { "https" } else { "http" };
            let url = format!("{scheme}://{}", app.addr());
            tracing::info!(url = %url, "ready");
            // For humans; stdout carries the JSON logs.
            eprintln!("bazaar is ready at {url}  (API docs: {url}/docs)");
            app.run_until_stopped().await.context("server failed")?;
            // Spans still waiting for the OTLP exporter; it blocks on the exporter.
            tokio::task::spawn_blocking(chassis::telemetry::shutdown)
                .await
                .context("flushing spans")?;
        }
        Command::Migrate => {
            let modules = Modules::open(&config).await?;
            for store in modules.stores() {
                eprintln!("migrated {}", store.module());
            }
            modules.close().await;
        }
        Command::Seed { products } => {
            let modules = Modules::open(&config).await?;
            let catalog = modules
                .service::<catalog::CatalogService>()
                .context("the catalog does not run in this process (`only` is set)")?;
            let added = catalog.seed(products).await?;
            eprintln!("seeded {added} new products");
            modules.close().await;
        }
        Command::Audit {
            stuck_after_secs,
            json,
        } => {
            // Auditing must not create an empty deployment and call it clean.
            if let Some(url) = &config.database_url {
                let found = chassis::store::Store::postgres_schema_exists(url, orders::MODULE)
                    .await
                    .context("cannot reach the database")?;
                if !found {
                    anyhow::bail!(
                        "no bazaar data in the database (no {} schema)",
                        orders::MODULE
                    );
                }
            } else {
                let marker = config.data_dir.join(format!("{}.db", orders::MODULE));
                if !marker.exists() {
                    anyhow::bail!(
                        "no bazaar data at {} (no {})",
                        config.data_dir.display(),
                        marker.display()
                    );
                }
            }
            let modules = Modules::open(&config).await?;
            let report =
                bazaar::audit::run(&modules, std::time::Duration::from_secs(stuck_after_secs))
                    .await?;
            modules.close().await;
            let text = if json {
                serde_json::to_string_pretty(&report)?
            } else {
                report.to_string()
            };
            // A closed pipe (`bazaar audit | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            if !report.ok {
                return Err(AuditFailed.into());
            }
        }
        Command::Admin(AdminCommand::Create {
            email,
            password,
            name,
        }) => {
            let modules = Modules::open(&config).await?;
            let outcome = modules
                .service::<identity::IdentityService>()
                .context("identity does not run in this process (`only` is set)")?
                .ensure_admin(&email, &password, &name)
                .await
                .map_err(|e| match e {
                    identity::IdentityError::Invalid(errors) => anyhow::anyhow!(
                        "invalid admin account: {}",
                        errors
                            .iter()
                            .map(|e| format!("{} {}", e.field, e.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    other => anyhow::Error::new(other),
                })?;
            eprintln!("admin {email}: {outcome:?}");
            modules.close().await;
        }
        Command::Dev(_) | Command::Loadgen(_) | Command::Deploy(_) | Command::Health { .. } => {
            unreachable!("these commands return before the configuration is loaded")
        }
    }
    Ok(())
}

/// `bazaar health`: GET `url`, success on a 2xx.
async fn health(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let response = reqwest::Client::builder()
        .timeout(timeout)
        .build()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let auditing = matches!(cli.command, Command::Audit { .. });
    // Boxed: the whole application is built inside this one future.
    match Box::pin(run(cli)).await {
        Ok(()) => ExitCode::SUCCESS,
        // `audit`: 1 means a violated invariant, 2 that the audit could not run.
        Err(error) if error.is::<AuditFailed>() => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(if auditing { 2 } else { 1 })
        }
    }
}
