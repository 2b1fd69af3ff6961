//! The cart store: the [`CartItems`] port and its SQL adapter.

use sqlx::AnyPool;

use crate::domain::{QUANTITY_MAX, Quantity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// The line would exceed the per-line maximum; nothing changed.
    WouldOverflow,
}

/// What the cart's use cases need from storage.
#[async_trait::async_trait]
pub trait CartItems: Send + Sync {
    async fn lines(&self, user_id: &str) -> Result<Vec<Line>, sqlx::Error>;
    async fn add(
        &self,
        user_id: &str,
        product_id: &str,
        quantity: Quantity,
    ) -> Result<AddOutcome, sqlx::Error>;
    async fn remove(&self, user_id: &str, product_id: &str) -> Result<(), sqlx::Error>;
}

#[derive(Debug, Clone)]
pub struct SqlCartItems {
    pool: AnyPool,
}

impl SqlCartItems {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

#[async_trait::async_trait]
impl CartItems for SqlCartItems {
    async fn lines(&self, user_id: &str) -> Result<Vec<Line>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY added_at, product_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(product_id, quantity)| Line {
                product_id,
                quantity: u32::try_from(quantity).unwrap_or(0),
            })
            .collect())
    }

    async fn add(
        &self,
        user_id: &str,
        product_id: &str,
        quantity: Quantity,
    ) -> Result<AddOutcome, sqlx::Error> {
        // One statement: insert, or add to the existing line only while it stays
        // within the maximum. Concurrent adds cannot push a line past 100.
        let result = sqlx::query(
            "INSERT INTO cart_items (user_id, product_id, quantity, added_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_items.quantity + excluded.quantity \
             WHERE cart_items.quantity + excluded.quantity <= $5",
        )
        .bind(user_id)
        .bind(product_id)
        .bind(i64::from(quantity.get()))
        .bind(chassis::time::now_micros())
        .bind(i64::from(QUANTITY_MAX))
        .execute(&self.pool)
        .await?;
        Ok(if result.rows_affected() == 0 {
            AddOutcome::WouldOverflow
        } else {
            AddOutcome::Added
        })
    }

    async fn remove(&self, user_id: &str, product_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
            .bind(user_id)
            .bind(product_id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Takes `bought` (product, quantity) out of a user's cart inside the caller's
/// transaction (the inbox's): each line loses that quantity, and goes when nothing is
/// left. The arithmetic is the database's, row by row and guarded, so an add racing
/// with this keeps its units and no line goes below one.
pub async fn remove_bought(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    bought: &[(&str, u32)],
) -> Result<(), sqlx::Error> {
    for (product_id, quantity) in bought {
        let quantity = i64::from(*quantity);
        sqlx::query(
            "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2 AND quantity <= $3",
        )
        .bind(user_id)
        .bind(*product_id)
        .bind(quantity)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE cart_items SET quantity = quantity - $3 \
             WHERE user_id = $1 AND product_id = $2 AND quantity > $3",
        )
        .bind(user_id)
        .bind(*product_id)
        .bind(quantity)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
