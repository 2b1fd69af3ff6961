//! The harness of the event-delivery suites: a module's store (SQLite in a temp dir,
//! or PostgreSQL in a throwaway schema) and consumers on it that retry fast.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chassis_messaging::consumer::{Consumer, Handler, RetryPolicy};
use chassis_store::store::{SqliteSync, Store};
use sqlx::migrate::Migrator;
use tempfile::TempDir;

use crate::postgres::TestSchema;

/// Connections of a test store's pool.
const POOL: u32 = 2;

/// Three attempts, milliseconds apart: dead letters without waiting.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    }
}

/// A module's store for one test, with a temp dir (the SQLite file, or anything else
/// the test writes); the PostgreSQL schema is dropped with it. Derefs to [`Store`].
pub struct TestStore {
    store: Store,
    // Dropped after the store: a schema with the pool still open drops all the same.
    _schema: Option<TestSchema>,
    dir: TempDir,
}

impl TestStore {
    /// `<temp dir>/<module>.db`, with `connections` in the pool.
    pub async fn sqlite_with(module: &'static str, connections: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), module, connections, SqliteSync::Normal)
            .await
            .unwrap();
        Self {
            store,
            _schema: None,
            dir,
        }
    }

    /// `<temp dir>/<module>.db`.
    pub async fn sqlite(module: &'static str) -> Self {
        Self::sqlite_with(module, POOL).await
    }

    /// A schema of its own in the database `BAZAAR_TEST_DATABASE_URL` names (the split
    /// topology's store); `None` (and a message) when it is unset.
    pub async fn postgres(test: &str, module: &'static str) -> Option<Self> {
        let url = crate::postgres::url(test)?;
        let schema = TestSchema::new(&url, module);
        // The store creates the schema and keeps its connections to it.
        let store = Store::open_postgres_in(&url, module, &schema.name, POOL)
            .await
            .unwrap();
        Some(Self {
            store,
            _schema: Some(schema),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// [`TestStore::sqlite`] with the platform tables and `migrator` applied.
    pub async fn migrated(module: &'static str, migrator: &'static Migrator) -> Self {
        let store = Self::sqlite(module).await;
        store.migrate(migrator).await.unwrap();
        store
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A consumer reading through this store's inbox, with [`fast_retry`].
    pub fn consumer(
        &self,
        name: &'static str,
        topics: Vec<String>,
        handler: Arc<dyn Handler>,
    ) -> Consumer {
        Consumer::new(
            name,
            topics,
            self.store.pool().clone(),
            handler,
            fast_retry(),
        )
    }
}

impl Deref for TestStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}
