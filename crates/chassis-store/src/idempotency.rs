//! Idempotency keys with Stripe's semantics, shared by `POST /orders` and payments'
//! `charge`: the first request under a key is stored with its response and replayed
//! for repeats; a repeat with different parameters is refused; a repeat while the
//! first is still running is refused as in-progress. Keys are kept 24 hours.

use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::AnyPool;

use crate::store::Store;
use crate::writer::Statements;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What to do with a request carrying a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use (or a takeover of an abandoned one): run the request, then
    /// [`complete`] or [`abandon`].
    Proceed,
    /// Done before: return this stored response.
    Replay { status: u16, body: String },
    /// Same key, different parameters.
    Mismatch,
    /// The first request is still running.
    InProgress,
}

/// A stable fingerprint of the request parameters.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Claims `key` in `scope` for a request with fingerprint `hash`. An in-progress
/// claim older than `lease` is treated as abandoned by a crashed process and taken
/// over. One unit of [`Store::write`] (the writer's, on SQLite).
pub async fn begin(
    store: &Store,
    scope: &str,
    key: &str,
    hash: &str,
    lease: Duration,
) -> Result<Begin, sqlx::Error> {
    let (scope, key, hash) = (scope.to_owned(), key.to_owned(), hash.to_owned());
    store
        .write(move |tx| Box::pin(async move { begin_in(tx, &scope, &key, &hash, lease).await }))
        .await
}

/// [`begin`] inside the caller's unit of [`Store::write`].
pub async fn begin_in(
    tx: &mut dyn Statements,
    scope: &str,
    key: &str,
    hash: &str,
    lease: Duration,
) -> Result<Begin, sqlx::Error> {
    let now = chassis_core::time::now_micros();
    let inserted = tx
        .run(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, state, created_at, updated_at) \
             VALUES ($1, $2, $3, 'running', $4, $4) ON CONFLICT (scope, idem_key) DO NOTHING",
            &[scope.into(), key.into(), hash.into(), now.into()],
        )
        .await?;
    if inserted == 1 {
        return Ok(Begin::Proceed);
    }
    let row = tx
        .fetch_row(
            "SELECT request_hash, state, status_code, response, updated_at FROM idempotency_keys \
             WHERE scope = $1 AND idem_key = $2",
            &[scope.into(), key.into()],
        )
        .await?;
    let Some(row) = row else {
        // Purged between our insert and select: try once more from the top.
        return Box::pin(begin_in(tx, scope, key, hash, lease)).await;
    };
    if row.text(0)? != hash {
        return Ok(Begin::Mismatch);
    }
    if row.text(1)? == "done" {
        return Ok(Begin::Replay {
            status: row
                .opt_int(2)?
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200),
            body: row.opt_text(3)?.unwrap_or_default(),
        });
    }
    let updated_at = row.int(4)?;
    let lease_micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    if now - updated_at > lease_micros {
        // Compare-and-set on updated_at: of several takers, one wins.
        let taken = tx
            .run(
                "UPDATE idempotency_keys SET updated_at = $1 WHERE scope = $2 AND idem_key = $3 \
                 AND state = 'running' AND updated_at = $4",
                &[now.into(), scope.into(), key.into(), updated_at.into()],
            )
            .await?;
        if taken == 1 {
            return Ok(Begin::Proceed);
        }
    }
    Ok(Begin::InProgress)
}

/// Stores the response of the request that holds `key`, on its own. A request
/// that records an effect uses [`complete_in`] in the effect's unit, so the effect
/// and its replayable response commit together.
pub async fn complete(
    store: &Store,
    scope: &str,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    let (scope, key, body) = (scope.to_owned(), key.to_owned(), body.to_owned());
    store
        .write(move |tx| {
            Box::pin(async move { complete_in(tx, &scope, &key, status, &body).await })
        })
        .await
}

/// [`complete`] through `tx`.
pub async fn complete_in(
    tx: &mut dyn Statements,
    scope: &str,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    tx.run(
        "UPDATE idempotency_keys SET state = 'done', status_code = $1, response = $2, updated_at = $3 \
         WHERE scope = $4 AND idem_key = $5",
        &[
            i64::from(status).into(),
            body.into(),
            chassis_core::time::now_micros().into(),
            scope.into(),
            key.into(),
        ],
    )
    .await
    .map(|_| ())
}

/// Releases `key` without a stored result (a transient failure: the client may retry
/// and the request runs again).
pub async fn abandon(store: &Store, scope: &str, key: &str) -> Result<(), sqlx::Error> {
    let (scope, key) = (scope.to_owned(), key.to_owned());
    store
        .write(move |tx| Box::pin(async move { abandon_in(tx, &scope, &key).await }))
        .await
}

/// [`abandon`] through `tx`.
pub async fn abandon_in(
    tx: &mut dyn Statements,
    scope: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    tx.run(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND state = 'running'",
        &[scope.into(), key.into()],
    )
    .await
    .map(|_| ())
}

/// Forgets keys older than [`RETENTION`].
pub async fn purge_expired(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    let cutoff =
        chassis_core::time::now_micros() - i64::try_from(RETENTION.as_micros()).unwrap_or(i64::MAX);
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteSync;

    async fn pool() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), "t", 2, SqliteSync::Normal)
            .await
            .unwrap();
        store.migrate_platform().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn stripe_semantics() {
        let (_dir, store) = pool().await;
        let p = &store;
        let lease = Duration::from_secs(60);
        let h = fingerprint(&["a", "1"]);
        assert_eq!(
            begin(p, "u1", "k", &h, lease).await.unwrap(),
            Begin::Proceed
        );
        assert_eq!(
            begin(p, "u1", "k", &h, lease).await.unwrap(),
            Begin::InProgress
        );
        assert_eq!(
            begin(p, "u1", "k", &fingerprint(&["a", "2"]), lease)
                .await
                .unwrap(),
            Begin::Mismatch
        );
        // Another scope (user) has its own keys.
        assert_eq!(
            begin(p, "u2", "k", &h, lease).await.unwrap(),
            Begin::Proceed
        );
        complete(p, "u1", "k", 201, "{\"id\":1}").await.unwrap();
        assert_eq!(
            begin(p, "u1", "k", &h, lease).await.unwrap(),
            Begin::Replay {
                status: 201,
                body: "{\"id\":1}".into()
            }
        );
    }

    #[tokio::test]
    async fn abandoned_and_stale_claims_can_be_retried() {
        let (_dir, store) = pool().await;
        let p = &store;
        let h = fingerprint(&["x"]);
        assert_eq!(
            begin(p, "s", "k", &h, Duration::from_secs(60))
                .await
                .unwrap(),
            Begin::Proceed
        );
        abandon(p, "s", "k").await.unwrap();
        assert_eq!(
            begin(p, "s", "k", &h, Duration::from_secs(60))
                .await
                .unwrap(),
            Begin::Proceed
        );
        // A zero lease means any running claim is stale.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(
            begin(p, "s", "k", &h, Duration::ZERO).await.unwrap(),
            Begin::Proceed
        );
    }
}
