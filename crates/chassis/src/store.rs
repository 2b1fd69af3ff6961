//! The store: one database per module, reached through sqlx's `Any` driver so the very
//! same query code runs on embedded SQLite (monolith) and PostgreSQL (split).
//!
//! Portability rules every module's SQL follows: `$1` placeholders (SQLite accepts
//! them too), `TEXT`/`BIGINT` columns only (ids are UUID strings, times are integer
//! microseconds), `ON CONFLICT` upserts, no `AUTOINCREMENT`/`SERIAL`.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use crate::config::SqliteSync;

pub use sqlx::AnyPool as Pool;

/// The platform tables every module store carries.
static PLATFORM: Migrator = sqlx::migrate!("./migrations");

/// A module's database: its pool and the name it is known by in logs and health.
#[derive(Clone, Debug)]
pub struct Store {
    module: &'static str,
    pool: AnyPool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the {module} database")]
    Open {
        module: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the {module} database")]
    Migrate {
        module: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/<module>.db` in WAL mode.
    pub async fn open_sqlite(
        data_dir: &Path,
        module: &'static str,
        max_connections: u32,
        synchronous: SqliteSync,
    ) -> Result<Self, StoreError> {
        install_drivers();
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(format!("{module}.db"));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let sync = match synchronous {
            SqliteSync::Normal => "NORMAL",
            SqliteSync::Full => "FULL",
        };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;"
        );
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|source| StoreError::Open { module, source })?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(pragmas.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { module, source })?;
        Ok(Self { module, pool })
    }

    /// Connects to a PostgreSQL database (the split topology).
    pub async fn open_postgres(
        url: &str,
        module: &'static str,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        install_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| StoreError::Open { module, source })?;
        Ok(Self { module, pool })
    }

    /// Applies the platform tables (outbox, inbox, dead letters, idempotency keys)
    /// and then the module's own embedded migrations.
    pub async fn migrate(&self, migrator: &'static Migrator) -> Result<(), StoreError> {
        self.migrate_platform().await?;
        self.run_migrator(migrator).await
    }

    /// Applies only the platform tables.
    pub async fn migrate_platform(&self) -> Result<(), StoreError> {
        self.run_migrator(&PLATFORM).await
    }

    async fn run_migrator(&self, migrator: &Migrator) -> Result<(), StoreError> {
        // Platform and module migrations share one history table; each set ignores
        // the versions that belong to the other.
        let mut migrator = Migrator {
            migrations: migrator.migrations.clone(),
            ..Migrator::DEFAULT
        };
        migrator.set_ignore_missing(true);
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                module: self.module,
                source,
            })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Reachability, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl crate::health::Check for Store {
    fn name(&self) -> String {
        format!("store:{}", self.module)
    }

    async fn check(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}

/// True when the error is a unique-constraint violation (on either backend).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_accepts_dollar_placeholders_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), "t", 2, SqliteSync::Normal)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (id, n) VALUES ($1, $2)")
            .bind("a")
            .bind(5_i64)
            .execute(store.pool())
            .await
            .unwrap();
        let err = sqlx::query("INSERT INTO t (id, n) VALUES ($1, $2)")
            .bind("a")
            .bind(6_i64)
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(is_unique_violation(&err));
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        store.ping().await.unwrap();
    }
}
