//! The cart store: the [`CartItems`] port and its SQL adapter.

use chassis::store::{Arg, Statements, Store};
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
    /// Writes go through the store's writer (ADR 0019), as the inbox's removals do:
    /// a pooled write on the same SQLite file would wait for the writer's lock in
    /// SQLite's busy sleeps.
    store: Store,
}

impl SqlCartItems {
    pub fn new(store: Store) -> Self {
        Self {
            pool: store.pool().clone(),
            store,
        }
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
        let changed = self
            .store
            .execute(
                "INSERT INTO cart_items (user_id, product_id, quantity, added_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_items.quantity + excluded.quantity \
                 WHERE cart_items.quantity + excluded.quantity <= $5",
                &[
                    Arg::from(user_id),
                    Arg::from(product_id),
                    Arg::from(i64::from(quantity.get())),
                    Arg::from(chassis::time::now_micros()),
                    Arg::from(i64::from(QUANTITY_MAX)),
                ],
            )
            .await?;
        Ok(if changed == 0 {
            AddOutcome::WouldOverflow
        } else {
            AddOutcome::Added
        })
    }

    async fn remove(&self, user_id: &str, product_id: &str) -> Result<(), sqlx::Error> {
        self.store
            .execute(
                "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2",
                &[Arg::from(user_id), Arg::from(product_id)],
            )
            .await
            .map(|_| ())
    }
}

/// Takes `bought` (product, quantity) out of a user's cart inside the caller's
/// transaction (the inbox's): each line loses that quantity, and goes when nothing is
/// left. The arithmetic is the database's, row by row and guarded, so an add racing
/// with this keeps its units and no line goes below one.
pub async fn remove_bought(
    tx: &mut dyn Statements,
    user_id: &str,
    bought: &[(&str, u32)],
) -> Result<(), sqlx::Error> {
    for (product_id, quantity) in bought {
        let args = [
            Arg::from(user_id),
            Arg::from(*product_id),
            Arg::from(i64::from(*quantity)),
        ];
        tx.run(
            "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2 AND quantity <= $3",
            &args,
        )
        .await?;
        tx.run(
            "UPDATE cart_items SET quantity = quantity - $3 \
             WHERE user_id = $1 AND product_id = $2 AND quantity > $3",
            &args,
        )
        .await?;
    }
    Ok(())
}
