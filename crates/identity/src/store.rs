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
}
