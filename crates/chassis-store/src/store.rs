//! The store: one database per module, reached through sqlx's `Any` driver so the very
//! same query code runs on embedded SQLite (monolith) and PostgreSQL (split).
//!
//! Portability rules every module's SQL follows: `$1` placeholders (SQLite accepts
//! them too), `TEXT`/`BIGINT` columns only (ids are UUID strings, times are integer
//! microseconds), `ON CONFLICT` upserts, no `AUTOINCREMENT`/`SERIAL`.

use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor};

use serde::{Deserialize, Serialize};

pub use sqlx::AnyPool as Pool;

use crate::writer::{SqliteWriter, Statements, UnitFuture};

/// SQLite's `synchronous` pragma. See docs/adr/0003: `normal` in WAL mode survives a
/// process crash and loses at most the last transactions on power loss; `full`
/// survives power loss at the cost of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    #[default]
    Normal,
    Full,
}

impl SqliteSync {
    /// The pragma's value, as the pool's connections and the writer's set it.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }

    /// What `PRAGMA synchronous` reads once the value took.
    pub(crate) fn code(self) -> i64 {
        match self {
            Self::Normal => 1,
            Self::Full => 2,
        }
    }
}

/// How long a SQLite connection waits for another's write lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The platform tables every module store carries.
static PLATFORM: Migrator = sqlx::migrate!("./migrations");

/// A module's database: its pool and the name it is known by in logs and health; on
/// SQLite also its writer thread, which [`Store::write`] sends units of work to.
#[derive(Clone, Debug)]
pub struct Store {
    module: &'static str,
    pool: AnyPool,
    writer: Option<Arc<SqliteWriter>>,
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
    #[error("cannot open the {module} database's writer")]
    Writer {
        module: &'static str,
        #[source]
        source: crate::writer::OpenError,
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
    /// Opens (creating if needed) `<data_dir>/<module>.db` in WAL mode; the directory
    /// and the files are owner-only (see [`chassis_core::private_fs`]).
    pub async fn open_sqlite(
        data_dir: &Path,
        module: &'static str,
        max_connections: u32,
        synchronous: SqliteSync,
    ) -> Result<Self, StoreError> {
        install_drivers();
        let path = data_dir.join(format!("{module}.db"));
        chassis_core::private_fs::create_dir(data_dir)
            .and_then(|()| chassis_core::private_fs::prepare_sqlite_file(&path))
            .map_err(|source| StoreError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; \
             PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON;",
            synchronous.pragma(),
            BUSY_TIMEOUT.as_millis()
        );
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|source| StoreError::Open { module, source })?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings a connection before handing it out: for SQLite one more
            // round trip to the connection's thread per use, and it only tells that the
            // thread is alive, which sqlx checks again when the connection comes back
            // (it pings on release whatever this says). A file cannot hang up.
            .test_before_acquire(false)
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
        // Opened after the pool: the file exists and is in WAL mode.
        // Opening a file is blocking I/O: off the runtime's threads.
        let writer = tokio::task::spawn_blocking(move || {
            SqliteWriter::open(&path, module, synchronous, BUSY_TIMEOUT)
        })
        .await
        .map_err(|e| crate::writer::OpenError::Thread(std::io::Error::other(e)))
        .and_then(|opened| opened)
        .map_err(|source| StoreError::Writer { module, source })?;
        Ok(Self {
            module,
            pool,
            writer: Some(Arc::new(writer)),
        })
    }

    /// Connects to a PostgreSQL database (`postgres://` or `postgresql://`) as
    /// `module`: the module's tables live in a schema named after it, created if
    /// missing, and every connection of the pool has `search_path` set to that schema
    /// alone, so the module's unqualified SQL neither sees nor creates tables
    /// anywhere else (another module's schema, `public`).
    pub async fn open_postgres(
        url: &str,
        module: &'static str,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        Self::open_postgres_in(url, module, module, max_connections).await
    }

    /// [`Store::open_postgres`] with the schema named explicitly (tests use a
    /// throwaway schema per run). `schema` must be a plain lower-case identifier.
    pub async fn open_postgres_in(
        url: &str,
        module: &'static str,
        schema: &str,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        install_drivers();
        let open = |source| StoreError::Open { module, source };
        if !is_plain_identifier(schema) {
            return Err(open(sqlx::Error::Configuration(
                format!("`{schema}` is not a valid schema name (a-z, 0-9, _)").into(),
            )));
        }
        let options: AnyConnectOptions = url.parse().map_err(open)?;
        create_schema(&options, schema).await.map_err(open)?;
        // Per connection, before the pool hands it out: a fresh connection after a
        // restart of the server gets it too.
        // NOTICEs ("relation _sqlx_migrations already exists, skipping" on every
        // start) would be logged at info by sqlx: only warnings and up.
        let set_path =
            format!("SET search_path TO \"{schema}\"; SET client_min_messages TO warning");
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    conn.execute(set_path.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open)?;
        Ok(Self {
            module,
            pool,
            writer: None,
        })
    }

    /// A role per module (ADR 0008): as the administrator at `admin_url`, makes the
    /// login role of `module_url` (its user and password) the owner of `schema`, so that
    /// the module, connecting with `module_url`, can use its own schema and nothing
    /// else. The role is created if missing (`LOGIN`, the URL's password) or given the
    /// URL's password; the schema is created owned by it, or handed to it with its
    /// tables (a deployment moving from one shared role); `PUBLIC` gets no rights on
    /// it. Idempotent, and safe for several processes at once.
    pub async fn provision_postgres_role(
        admin_url: &str,
        module_url: &str,
        schema: &str,
    ) -> Result<(), sqlx::Error> {
        install_drivers();
        let config = |what: String| sqlx::Error::Configuration(what.into());
        if !is_plain_identifier(schema) {
            return Err(config(format!("`{schema}` is not a valid schema name")));
        }
        let parsed = url::Url::parse(module_url)
            .map_err(|e| config(format!("the module's database URL: {e}")))?;
        let role = parsed.username();
        if !is_plain_identifier(role) {
            return Err(config(format!(
                "the module's database user must be a plain lower-case name (a-z, 0-9, _), \
                 not `{role}`"
            )));
        }
        let password = parsed
            .password()
            .map(percent_decoded)
            .filter(|p| !p.is_empty());
        let mut conn = sqlx::AnyConnection::connect(admin_url).await?;
        // One at a time per database: replicas migrating at once would otherwise
        // update the same catalog rows together ("tuple concurrently updated").
        // Session-level: released with the connection, whatever happens.
        conn.execute("SELECT pg_advisory_lock(hashtext('bazaar: provision module roles'))")
            .await?;
        let provisioned = provision(&mut conn, role, password.as_deref(), schema).await;
        let _ = conn.close().await;
        provisioned
    }

    /// Whether the PostgreSQL database at `url` has a schema named `schema` (`bazaar
    /// audit` refuses to audit a deployment that was never created).
    pub async fn postgres_schema_exists(url: &str, schema: &str) -> Result<bool, sqlx::Error> {
        install_drivers();
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        let found = schema_exists(&mut conn, schema).await;
        let _ = conn.close().await;
        found
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

    /// Runs `work`, a whole transaction's statements, and commits it: on SQLite as a
    /// unit of the writer thread's next group commit (ADR 0019), on PostgreSQL in a
    /// transaction of the pool's. Either way the answer comes after the commit, and
    /// an error from `work` leaves nothing of it written.
    ///
    /// On SQLite, do not call it while holding a pooled write transaction on the same
    /// file: the writer waits for that transaction's lock, which the caller holds
    /// until this returns, so it stalls for the busy timeout and then fails with
    /// `SQLITE_BUSY`.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, T, E> + Send + 'static,
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        if let Some(writer) = &self.writer {
            return writer.run(work).await;
        }
        let mut tx = self.pool.begin().await?;
        let value = work(&mut *tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// How many group commits the writer made (SQLite), for tests and diagnosis.
    pub fn writer_commits(&self) -> Option<u64> {
        self.writer.as_ref().map(|writer| writer.commits())
    }

    /// Stops the writer thread (SQLite): queued units commit, later ones are refused.
    pub async fn close_writer(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
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
        self.close_writer().await;
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl chassis_core::health::Check for Store {
    fn name(&self) -> String {
        format!("store:{}", self.module)
    }

    async fn check(&self) -> Result<(), String> {
        if let Some(writer) = &self.writer
            && !writer.is_alive()
        {
            return Err("the writer thread has stopped".into());
        }
        self.ping().await.map_err(|e| e.to_string())
    }
}

fn is_plain_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

async fn schema_exists(conn: &mut sqlx::AnyConnection, schema: &str) -> Result<bool, sqlx::Error> {
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(schema)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// `CREATE SCHEMA IF NOT EXISTS`, on a connection of its own (the pool's connections
/// need the schema to exist only when they are used, but `after_connect` must not be
/// where it is created: that would run on every connection).
async fn create_schema(options: &AnyConnectOptions, schema: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::AnyConnection::connect_with(options).await?;
    if schema_exists(&mut conn, schema).await? {
        let _ = conn.close().await;
        return Ok(());
    }
    let created = conn
        .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
        .await;
    let result = match created {
        Ok(_) => Ok(()),
        // Two processes creating the same schema at once: IF NOT EXISTS does not
        // cover the race, the catalog's unique index reports it. The schema is there.
        Err(e) if is_unique_violation(&e) && schema_exists(&mut conn, schema).await? => Ok(()),
        Err(e) => Err(e),
    };
    let _ = conn.close().await;
    result
}

/// A URL's percent-encoded user info, decoded (`%40` is `@`); a malformed escape is
/// kept as it is.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`Store::provision_postgres_role`] on the administrator's connection.
async fn provision(
    conn: &mut sqlx::AnyConnection,
    role: &str,
    password: Option<&str>,
    schema: &str,
) -> Result<(), sqlx::Error> {
    // DDL takes no bound parameters, so the password goes into the statement, where a
    // failing statement would put it in the server's log: it goes as its SCRAM
    // verifier (PostgreSQL stores one as it is), never in clear.
    let password_clause = password
        .map(|p| format!(" PASSWORD '{}'", scram_sha_256_verifier(p, rand::random())))
        .unwrap_or_default();
    if role_exists(conn, role).await? {
        if password.is_some() {
            conn.execute(format!("ALTER ROLE \"{role}\" LOGIN{password_clause}").as_str())
                .await?;
        }
    } else {
        let created = conn
            .execute(format!("CREATE ROLE \"{role}\" LOGIN{password_clause}").as_str())
            .await;
        match created {
            Ok(_) => {}
            // Another process created it just now (roles are per server: so do other
            // databases' deployments with the same module names).
            Err(e) if is_duplicate(&e) && role_exists(conn, role).await? => {}
            Err(e) => return Err(e),
        }
    }
    let owner: Option<(String,)> = sqlx::query_as(
        "SELECT CAST(pg_get_userbyid(nspowner) AS TEXT) FROM pg_namespace WHERE nspname = $1",
    )
    .bind(schema)
    .fetch_optional(&mut *conn)
    .await?;
    match owner {
        Some((owner,)) if owner == role => {}
        Some(_) => {
            conn.execute(format!("ALTER SCHEMA \"{schema}\" OWNER TO \"{role}\"").as_str())
                .await?;
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT CAST(tablename AS TEXT) FROM pg_tables \
                 WHERE schemaname = $1 AND tableowner <> $2",
            )
            .bind(schema)
            .bind(role)
            .fetch_all(&mut *conn)
            .await?;
            for (table,) in tables {
                // Table names come from the catalog, not from a checked setting: quoted
                // with their own double quotes doubled.
                let table = table.replace('"', "\"\"");
                conn.execute(
                    format!("ALTER TABLE \"{schema}\".\"{table}\" OWNER TO \"{role}\"").as_str(),
                )
                .await?;
            }
        }
        None => {
            let created = conn
                .execute(
                    format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\" AUTHORIZATION \"{role}\"")
                        .as_str(),
                )
                .await;
            match created {
                Ok(_) => {}
                Err(e) if is_duplicate(&e) && schema_exists(conn, schema).await? => {}
                Err(e) => return Err(e),
            }
        }
    }
    conn.execute(format!("REVOKE ALL ON SCHEMA \"{schema}\" FROM PUBLIC").as_str())
        .await?;
    // PostgreSQL before 15 lets every role create tables in `public`.
    if schema_exists(conn, "public").await? {
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            .await?;
    }
    Ok(())
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677, 4096
/// iterations as PostgreSQL's default): `SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`.
/// The password is used as its UTF-8 bytes (PostgreSQL's SASLprep leaves ASCII as it is).
fn scram_sha_256_verifier(password: &str, salt: [u8; 16]) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let mac = |key: &[u8], data: &[&[u8]]| -> [u8; 32] {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        for part in data {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    };
    // PBKDF2-HMAC-SHA-256 with one output block (32 bytes, the digest's size).
    let mut u = mac(password.as_bytes(), &[&salt, &1_u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..ITERATIONS {
        u = mac(password.as_bytes(), &[&u]);
        for (s, x) in salted.iter_mut().zip(u) {
            *s ^= x;
        }
    }
    let client_key = mac(&salted, &[b"Client Key"]);
    let stored_key = Sha256::digest(client_key);
    let server_key = mac(&salted, &[b"Server Key"]);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

async fn role_exists(conn: &mut sqlx::AnyConnection, role: &str) -> Result<bool, sqlx::Error> {
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// A unique violation, or PostgreSQL's "already exists" (`42710`, `42P06`): a
/// concurrent creation of the same role or schema.
fn is_duplicate(error: &sqlx::Error) -> bool {
    is_unique_violation(error)
        || matches!(error, sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("42710" | "42P06")))
}

/// True when the error is a unique-constraint violation (on either backend).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when `error`, or an error in its cause chain, says the database could not be
/// reached rather than that it refused the statement: the pool timed out or is closed,
/// the connection failed (I/O, TLS, a crashed SQLite worker), or PostgreSQL dropped
/// it, is shutting down or starting up (SQLSTATE class 08, 57P01 to 57P03). Such a
/// failure passes once the database is back; any other does not.
pub fn is_unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    sql_errors(error).any(|error| match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    })
}

/// True when `error` (or its cause chain) is a failure to get a connection at all
/// (the pool timed out or is closed): no statement ran, so nothing was written and the
/// request can be sent again as it is. A connection lost mid-way leaves the outcome
/// unknown instead.
pub fn is_never_started(error: &(dyn std::error::Error + 'static)) -> bool {
    sql_errors(error)
        .any(|error| matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed))
}

/// True when `error` (or its cause chain) is the database refusing a transaction
/// because another one holds what it needs: SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED`
/// (extended codes included) once the busy timeout is spent, PostgreSQL's
/// serialization failure, deadlock or lock-not-available (`40001`, `40P01`, `55P03`).
/// The transaction was rolled back, so nothing was written and the request can be sent
/// again as it is.
pub fn is_contended(error: &(dyn std::error::Error + 'static)) -> bool {
    sql_errors(error).any(|error| match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(code.as_ref(), "40001" | "40P01" | "55P03")
                // SQLite reports its (extended) result code as a number of at most
                // four digits, PostgreSQL a five-character SQLSTATE (some all digits,
                // such as 22021): the primary code is the low byte (5 = BUSY,
                // 6 = LOCKED; 517 is BUSY_SNAPSHOT, 262 LOCKED_SHAREDCACHE).
                || (code.len() < 5
                    && code.parse::<u32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6)))
        }),
        _ => false,
    })
}

/// The `sqlx` errors in `error`'s cause chain, outermost first.
fn sql_errors<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a sqlx::Error> {
    std::iter::successors(Some(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<sqlx::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::postgres::TestSchema;

    #[derive(Debug, thiserror::Error)]
    enum ModuleError {
        #[error("store failed")]
        Store(#[from] sqlx::Error),
    }

    #[test]
    fn a_scram_verifier_is_postgresqls_stored_form() {
        // Expected from Python's hashlib/hmac with the same salt (RFC 7677's steps).
        let salt: [u8; 16] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        assert_eq!(
            scram_sha_256_verifier("pencil", salt),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y=:dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE="
        );
    }

    #[test]
    fn an_unreachable_database_is_told_from_a_refused_statement() {
        let wrapped = |e: sqlx::Error| ModuleError::Store(e);
        assert!(is_unreachable(&wrapped(sqlx::Error::PoolTimedOut)));
        assert!(is_unreachable(&sqlx::Error::PoolClosed));
        assert!(is_unreachable(&wrapped(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
        ))));
        assert!(!is_unreachable(&wrapped(sqlx::Error::RowNotFound)));
        assert!(!is_unreachable(&wrapped(sqlx::Error::Protocol(
            "bad".into()
        ))));
        // Only a connection never had tells that nothing was written.
        assert!(is_never_started(&wrapped(sqlx::Error::PoolTimedOut)));
        assert!(!is_never_started(&wrapped(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset)
        ))));
    }

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

    /// A writer that finds the database locked past its busy timeout gets SQLITE_BUSY,
    /// which is contention (retry as it is), not a bug and not an outage.
    #[tokio::test]
    async fn sqlite_busy_is_contention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), "t", 2, SqliteSync::Normal)
            .await
            .unwrap();
        let mut holder = store.pool().acquire().await.unwrap();
        let mut waiter = store.pool().acquire().await.unwrap();
        holder.execute("BEGIN IMMEDIATE").await.unwrap();
        waiter.execute("PRAGMA busy_timeout = 0").await.unwrap();
        let err = waiter.execute("BEGIN IMMEDIATE").await.unwrap_err();
        assert!(
            is_contended(&ModuleError::Store(err)),
            "SQLITE_BUSY is contention"
        );
        holder.execute("ROLLBACK").await.unwrap();
        assert!(!is_contended(&ModuleError::Store(sqlx::Error::RowNotFound)));
        assert!(!is_contended(&ModuleError::Store(
            sqlx::Error::PoolTimedOut
        )));
    }

    /// Two modules on one PostgreSQL database: each in its own schema, created on
    /// open, migrated on its own, unable to see the other's tables.
    #[tokio::test]
    async fn postgres_schema_per_module_isolates_modules() {
        let Some(url) = testkit::postgres::url("postgres_schema_per_module_isolates_modules")
        else {
            return;
        };
        // Dropped with everything in them at the end, or when the test fails.
        let (schema_a, schema_b) = (
            TestSchema::new(&url, "store_a"),
            TestSchema::new(&url, "store_b"),
        );
        let (a, b) = (&schema_a.name, &schema_b.name);
        assert!(!Store::postgres_schema_exists(&url, a).await.unwrap());
        let first = Store::open_postgres_in(&url, "a", a, 2).await.unwrap();
        let second = Store::open_postgres_in(&url, "b", b, 2).await.unwrap();
        assert!(Store::postgres_schema_exists(&url, a).await.unwrap());
        // Opening again (a restart, a second process) finds the schema there.
        let again = Store::open_postgres_in(&url, "a", a, 1).await.unwrap();
        again.close().await;

        first.migrate_platform().await.unwrap();
        let (path,): (String,) = sqlx::query_as("SELECT CAST(current_schemas(false) AS TEXT)")
            .fetch_one(first.pool())
            .await
            .unwrap();
        assert_eq!(path, format!("{{{a}}}"));
        sqlx::query("INSERT INTO outbox (id, topic, envelope, created_at) VALUES ($1, $2, $3, $4)")
            .bind("e1")
            .bind("t")
            .bind("{}")
            .bind(1_i64)
            .execute(first.pool())
            .await
            .unwrap();
        // b has no outbox of its own yet, and cannot see a's.
        let err = sqlx::query("SELECT id FROM outbox")
            .execute(second.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        second.migrate_platform().await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM outbox")
            .fetch_all(second.pool())
            .await
            .unwrap();
        assert!(rows.is_empty());
        assert!(matches!(
            Store::open_postgres_in(&url, "x", "Bad-Name", 1).await,
            Err(StoreError::Open { .. })
        ));
        first.close().await;
        second.close().await;
    }

    /// A role per module: each module's pool connects as its own role, which owns its
    /// schema and its tables and has no rights on the other module's.
    #[tokio::test]
    async fn postgres_role_per_module_cannot_touch_another_modules_tables() {
        const TEST: &str = "postgres_role_per_module_cannot_touch_another_modules_tables";
        let Some(server) = testkit::postgres::url(TEST) else {
            return;
        };
        install_drivers();
        // Roles first: dropped after the database that holds their objects.
        let (role_a, role_b) = (
            testkit::postgres::TestRole::new(&server, "a"),
            testkit::postgres::TestRole::new(&server, "b"),
        );
        let db = testkit::postgres::TestDatabase::create(&server).await;
        // A schema of the shared-role era, with a table: handed over with its tables.
        sqlx::query("CREATE SCHEMA b")
            .execute(&mut sqlx::AnyConnection::connect(&db.url).await.unwrap())
            .await
            .unwrap();
        let (url_a, url_b) = (role_a.url(&db.url, "p@ss'a"), role_b.url(&db.url, "b"));
        for _ in 0..2 {
            // Idempotent: the migration step runs at every deployment.
            Store::provision_postgres_role(&db.url, &url_a, "a")
                .await
                .unwrap();
        }
        let a = Store::open_postgres_in(&url_a, "a", "a", 1).await.unwrap();
        a.migrate_platform().await.unwrap();
        let b_before = Store::open_postgres_in(&db.url, "b", "b", 1).await.unwrap();
        b_before.migrate_platform().await.unwrap();
        b_before.close().await;
        Store::provision_postgres_role(&db.url, &url_b, "b")
            .await
            .unwrap();
        let b = Store::open_postgres_in(&url_b, "b", "b", 1).await.unwrap();
        b.migrate_platform().await.unwrap();

        let owners = |schema: &'static str| {
            let url = db.url.clone();
            async move {
                let owners: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT CAST(tableowner AS TEXT) FROM pg_tables WHERE schemaname = $1",
                )
                .bind(schema)
                .fetch_all(&mut sqlx::AnyConnection::connect(&url).await.unwrap())
                .await
                .unwrap();
                owners
            }
        };
        assert_eq!(owners("a").await, vec![(role_a.name.clone(),)]);
        assert_eq!(owners("b").await, vec![(role_b.name.clone(),)]);

        sqlx::query("INSERT INTO outbox (id, topic, envelope, created_at) VALUES ($1, $2, $3, $4)")
            .bind("e1")
            .bind("t")
            .bind("{}")
            .bind(1_i64)
            .execute(a.pool())
            .await
            .unwrap();
        for sql in [
            "SELECT id FROM a.outbox",
            "DELETE FROM a.outbox",
            "INSERT INTO a.outbox (id, topic, envelope, created_at) VALUES ('x', 't', '{}', 1)",
            "CREATE TABLE a.planted (id TEXT)",
            "CREATE TABLE public.planted (id TEXT)",
        ] {
            let err = sqlx::query(sql).execute(b.pool()).await.unwrap_err();
            assert!(
                err.to_string().contains("permission denied"),
                "b ran {sql}: {err}"
            );
        }
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(a.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
        a.close().await;
        b.close().await;
    }
}
