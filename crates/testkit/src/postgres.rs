//! PostgreSQL for tests: the server `BAZAAR_TEST_DATABASE_URL` names, and a fresh
//! database or schema per test in it, dropped (best effort) with its handle, even when
//! the test panics.

use std::time::Duration;

use sqlx::Connection as _;

/// The environment variable naming the PostgreSQL server tests create databases in.
pub const URL_VAR: &str = "BAZAAR_TEST_DATABASE_URL";
/// Leftover test databases (from a run that was killed) older than this are dropped
/// when the next run creates its first one.
const STALE_DATABASE: Duration = Duration::from_secs(3600);
/// The prefix of every test database: `bz_<unix seconds>_<random>`.
const DATABASE_PREFIX: &str = "bz_";

/// `BAZAAR_TEST_DATABASE_URL`, or `None` after saying that `test` is skipped.
pub fn url(test: &str) -> Option<String> {
    let url = crate::env(URL_VAR);
    if url.is_none() {
        crate::skip(test, &format!("{URL_VAR} is not set"));
    }
    url
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let mut url = reqwest::Url::parse(url).expect("BAZAAR_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// `url` with its user replaced by `role` (and its password by `password`).
pub fn as_role(url: &str, role: &str, password: Option<&str>) -> String {
    let mut url = reqwest::Url::parse(url).expect("a database URL");
    url.set_username(role).unwrap();
    url.set_password(password).unwrap();
    url.to_string()
}

/// The role a test deployment's `module` connects as (a role per module, ADR 0008):
/// one name per module for every test, created by the first deployment that needs it
/// and left on the server (roles belong to the server, the schemas they own to each
/// test's database, dropped with it). Under the test server's trust authentication it
/// needs no password.
pub fn module_role(module: &str) -> String {
    format!("bztest_{module}")
}

async fn connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url)
        .await
        .expect("BAZAAR_TEST_DATABASE_URL accepts connections")
}

/// Runs `sql` on `url`; callable from `Drop`.
fn execute_blocking(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    crate::on_own_runtime(move || async move {
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(&sql)
            .execute(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Drops the test databases an interrupted earlier run left behind (only those older
/// than [`STALE_DATABASE`], so a concurrent run keeps its own), once per process.
async fn drop_stale_databases(url: &str) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let mut conn = connect(url).await;
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bz\\_%' ORDER BY datname LIMIT 200",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let cutoff = unix_secs().saturating_sub(STALE_DATABASE.as_secs());
        for (name,) in names {
            let created = name
                .split('_')
                .nth(1)
                .and_then(|secs| secs.parse::<u64>().ok());
            if created.is_some_and(|created| created < cutoff) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    })
    .await;
}

/// A fresh PostgreSQL database on the server `admin_url` names, dropped (best effort,
/// with FORCE: the connections an app still holds end) on drop.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> Self {
        drop_stale_databases(admin_url).await;
        let name = format!("{DATABASE_PREFIX}{}_{}", unix_secs(), crate::unique());
        let mut conn = connect(admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        Self {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = execute_blocking(&self.admin_url, sql) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A PostgreSQL role name no other test uses (`bzt_<random>_<suffix>`), for a module of
/// a test deployment; dropped (best effort) on drop. Not created here. Roles belong to
/// the server, not a database: declare it before the [`TestDatabase`] its objects
/// live in, so the database is dropped first.
pub struct TestRole {
    admin_url: String,
    pub name: String,
}

impl TestRole {
    /// `suffix`: lower-case letters, digits and `_`.
    pub fn new(admin_url: &str, suffix: &str) -> Self {
        Self {
            admin_url: admin_url.to_owned(),
            name: format!("bzt_{}_{suffix}", crate::unique()),
        }
    }

    /// `url` connecting as this role (with `password`).
    pub fn url(&self, url: &str, password: &str) -> String {
        as_role(url, &self.name, Some(password))
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let sql = format!("DROP ROLE IF EXISTS \"{}\"", self.name);
        if let Err(e) = execute_blocking(&self.admin_url, sql) {
            eprintln!("could not drop test role {}: {e}", self.name);
        }
    }
}

/// A schema name no other test uses (`<prefix>_test_<random>`) in the database `url`
/// names, dropped with everything in it (best effort) on drop. Not created here: the
/// store opened in it creates it.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// `prefix`: lower-case letters, digits and `_`.
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("{prefix}_test_{}", crate::unique()),
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) = execute_blocking(&self.url, sql) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database(
                "postgres://u:p@127.0.0.1:5432/test?sslmode=disable",
                "bz_1_a"
            ),
            "postgres://u:p@127.0.0.1:5432/bz_1_a?sslmode=disable"
        );
    }

    async fn exists(url: &str, sql: &str, name: &str) -> bool {
        let mut conn = connect(url).await;
        let (n,): (i64,) = sqlx::query_as(sql)
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n == 1
    }

    #[tokio::test]
    async fn databases_and_schemas_are_dropped_with_their_handles() {
        let Some(admin) = url("databases_and_schemas_are_dropped_with_their_handles") else {
            return;
        };
        let database = TestDatabase::create(&admin).await;
        let name = database.name().to_owned();
        let is_database = "SELECT COUNT(*) FROM pg_database WHERE datname = $1";
        assert!(exists(&admin, is_database, &name).await);

        let schema = TestSchema::new(&database.url, "kit");
        let mut conn = connect(&database.url).await;
        sqlx::query(&format!("CREATE SCHEMA {}", schema.name))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let is_schema = "SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1";
        let schema_name = schema.name.clone();
        assert!(exists(&database.url, is_schema, &schema_name).await);
        drop(schema);
        assert!(!exists(&database.url, is_schema, &schema_name).await);

        drop(database);
        assert!(!exists(&admin, is_database, &name).await);
    }
}
