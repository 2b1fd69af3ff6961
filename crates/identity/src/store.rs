//! The identity store: the [`Users`] port and its SQL adapter.

use chassis::auth::Role;
use chassis::store::is_unique_violation;
use sqlx::AnyPool;

/// A stored account, credentials included; never leaves the module.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("email already registered")]
    Duplicate,
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] chassis::outbox::OutboxError),
}

/// What the use cases need from storage.
#[async_trait::async_trait]
pub trait Users: Send + Sync {
    async fn insert(&self, user: &UserRecord) -> Result<(), InsertError>;
    async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, sqlx::Error>;
    async fn by_id(&self, id: &str) -> Result<Option<UserRecord>, sqlx::Error>;
    async fn set_role(&self, id: &str, role: Role) -> Result<(), sqlx::Error>;
    async fn set_password(&self, id: &str, password_hash: &str) -> Result<(), sqlx::Error>;
}

#[derive(Debug, Clone)]
pub struct SqlUsers {
    pool: AnyPool,
}

impl SqlUsers {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

type Row = (String, String, String, String, String, i64);

fn record(row: Row) -> UserRecord {
    let (id, email, name, password_hash, role, created_at) = row;
    UserRecord {
        id,
        email,
        name,
        password_hash,
        // Only this module writes the column; an unknown value is treated as the
        // least privileged role rather than trusted.
        role: Role::parse(&role).unwrap_or(Role::Customer),
        created_at,
    }
}

const COLUMNS: &str = "id, email, name, password_hash, role, created_at";

#[async_trait::async_trait]
impl Users for SqlUsers {
    async fn insert(&self, user: &UserRecord) -> Result<(), InsertError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                InsertError::Duplicate
            } else {
                InsertError::Store(e)
            }
        })?;
        // Published only if the account commits: notifications sends the welcome.
        chassis::outbox::enqueue(
            &mut tx,
            &contracts::identity::UserRegistered {
                user_id: user.id.clone(),
                email: user.email.clone(),
                name: user.name.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, sqlx::Error> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(record))
    }

    async fn by_id(&self, id: &str) -> Result<Option<UserRecord>, sqlx::Error> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(record))
    }

    async fn set_role(&self, id: &str, role: Role) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    async fn set_password(&self, id: &str, password_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// A stored refresh token (its hash only) of one session (`family_id`).
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was live: it is now used, and `next` (same family) replaces it.
    Rotated { user_id: String, family_id: String },
    /// No such token, or it expired or was revoked.
    Dead,
    /// It had been used already: someone holds a copy. Its whole family is now
    /// revoked.
    Reused { family_id: String },
}

/// Refresh tokens: what sessions need from storage.
#[async_trait::async_trait]
pub trait Sessions: Send + Sync {
    async fn insert(&self, token: &RefreshRecord) -> Result<(), sqlx::Error>;
    /// Exchanges the live token `token_hash` for `next_hash` (same family and user,
    /// expiring at `next_expires_at`), atomically: of two concurrent uses, one
    /// rotates and the other is a reuse.
    async fn rotate(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: i64,
        now: i64,
    ) -> Result<Rotation, sqlx::Error>;
    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<(), sqlx::Error>;
    /// Revokes every session of `user_id` but `keep` (the caller's own).
    async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<(), sqlx::Error>;
    /// Deletes tokens expired before `now`; returns how many.
    async fn purge_expired(&self, now: i64) -> Result<u64, sqlx::Error>;
}

#[derive(Debug, Clone)]
pub struct SqlSessions {
    pool: AnyPool,
}

impl SqlSessions {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

const REVOKE_FAMILY: &str =
    "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL";

#[async_trait::async_trait]
impl Sessions for SqlSessions {
    async fn insert(&self, token: &RefreshRecord) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token_hash)
        .bind(&token.family_id)
        .bind(&token.user_id)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    async fn rotate(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: i64,
        now: i64,
    ) -> Result<Rotation, sqlx::Error> {
        // Every step writes before it reads: the first write takes SQLite's write
        // lock, whereas a read first would have to upgrade its snapshot and fail
        // outright (not wait) when another writer committed in between. On
        // PostgreSQL the claim's row lock orders concurrent uses: the second sees
        // the token used.
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL \
             AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            // Used before, and its family not revoked yet: someone holds a copy.
            let revoked = sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 \
                 WHERE revoked_at IS NULL AND family_id = (SELECT family_id \
                 FROM refresh_tokens WHERE token_hash = $2 AND used_at IS NOT NULL \
                 AND revoked_at IS NULL AND expires_at > $1)",
            )
            .bind(now)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if revoked == 0 {
                // Unknown, expired or revoked already.
                return Ok(Rotation::Dead);
            }
            let (family_id,): (String,) =
                sqlx::query_as("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused { family_id });
        }
        let (family_id, user_id): (String, String) =
            sqlx::query_as("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(next_hash)
        .bind(&family_id)
        .bind(&user_id)
        .bind(now)
        .bind(next_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id, family_id })
    }

    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(REVOKE_FAMILY)
            .bind(now)
            .bind(family_id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE user_id = $2 AND revoked_at IS NULL AND family_id <> $3",
        )
        .bind(now)
        .bind(user_id)
        // No family has an empty id: with no session to keep, every one goes.
        .bind(keep.unwrap_or(""))
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, sqlx::Error> {
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }
}
