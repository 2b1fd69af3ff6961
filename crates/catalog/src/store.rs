//! The catalog store: the [`Products`] port and its SQL adapter.

use std::fmt::Write as _;

use chassis::store::is_unique_violation;
use contracts::catalog::Product;
use sqlx::AnyPool;

use crate::domain::{Cursor, NewProduct};

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("duplicate SKU")]
    DuplicateSku,
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// One page of products and whether more follow.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Product>,
    pub has_more: bool,
}

/// What the catalog's use cases need from storage.
#[async_trait::async_trait]
pub trait Products: Send + Sync {
    async fn insert(&self, id: &str, product: &NewProduct) -> Result<Product, InsertError>;
    /// Inserts many in one transaction, skipping SKUs that exist; returns how many
    /// were new.
    async fn insert_missing(&self, products: &[NewProduct]) -> Result<u64, sqlx::Error>;
    async fn get(&self, id: &str) -> Result<Option<Product>, sqlx::Error>;
    async fn get_many(&self, ids: &[String]) -> Result<Vec<Product>, sqlx::Error>;
    async fn list(
        &self,
        pattern: Option<&str>,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page, sqlx::Error>;
    /// Sets the available stock; `None` if the product does not exist.
    async fn set_stock(&self, id: &str, available: i64) -> Result<Option<Product>, sqlx::Error>;
    async fn count(&self) -> Result<i64, sqlx::Error>;
}

#[derive(Debug, Clone)]
pub struct SqlProducts {
    pool: AnyPool,
}

impl SqlProducts {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

const COLUMNS: &str =
    "id, sku, name, description, price_cents, currency, on_hand - reserved AS stock";

type Row = (String, String, String, String, i64, String, i64);

fn product(row: Row) -> Product {
    let (id, sku, name, description, price_cents, currency, stock) = row;
    Product {
        id,
        sku,
        name,
        description,
        price_cents,
        currency,
        stock,
    }
}

const INSERT: &str = "INSERT INTO products \
    (id, sku, name, description, search_text, price_cents, currency, on_hand, reserved, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)";

/// Ids per `IN (...)` query: well under SQLite's and PostgreSQL's parameter limits.
const BATCH: usize = 100;

#[async_trait::async_trait]
impl Products for SqlProducts {
    async fn insert(&self, id: &str, p: &NewProduct) -> Result<Product, InsertError> {
        let now = chassis::time::now_micros();
        sqlx::query(INSERT)
            .bind(id)
            .bind(p.sku.as_str())
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.search_text())
            .bind(p.price.cents())
            .bind(chassis::money::CURRENCY)
            .bind(p.stock.units())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    InsertError::DuplicateSku
                } else {
                    InsertError::Store(e)
                }
            })?;
        Ok(Product {
            id: id.to_owned(),
            sku: p.sku.as_str().to_owned(),
            name: p.name.clone(),
            description: p.description.clone(),
            price_cents: p.price.cents(),
            currency: chassis::money::CURRENCY.to_owned(),
            stock: p.stock.units(),
        })
    }

    async fn insert_missing(&self, products: &[NewProduct]) -> Result<u64, sqlx::Error> {
        let now = chassis::time::now_micros();
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        let sql = format!("{INSERT} ON CONFLICT (sku) DO NOTHING");
        for p in products {
            inserted += sqlx::query(&sql)
                .bind(chassis::id::new_id())
                .bind(p.sku.as_str())
                .bind(&p.name)
                .bind(&p.description)
                .bind(p.search_text())
                .bind(p.price.cents())
                .bind(chassis::money::CURRENCY)
                .bind(p.stock.units())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get(&self, id: &str) -> Result<Option<Product>, sqlx::Error> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(product))
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Product>, sqlx::Error> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let placeholders = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT {COLUMNS} FROM products WHERE id IN ({placeholders})");
            let mut query = sqlx::query_as::<_, Row>(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(product));
        }
        Ok(found)
    }

    async fn list(
        &self,
        pattern: Option<&str>,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page, sqlx::Error> {
        // One extra row tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        // Placeholders are numbered in the order the optional filters appear.
        let mut sql = format!("SELECT {COLUMNS} FROM products WHERE 1 = 1");
        let mut n = 0;
        if pattern.is_some() {
            n += 1;
            let _ = write!(sql, " AND search_text LIKE ${n} ESCAPE '\\'");
        }
        if after.is_some() {
            n += 1;
            let _ = write!(sql, " AND id > ${n}");
        }
        let _ = write!(sql, " ORDER BY id LIMIT ${}", n + 1);
        let mut query = sqlx::query_as::<_, Row>(&sql);
        if let Some(pattern) = pattern {
            query = query.bind(pattern);
        }
        if let Some(cursor) = after {
            query = query.bind(cursor.last_id());
        }
        let mut items: Vec<Product> = query
            .bind(fetch)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(product)
            .collect();
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(Page { items, has_more })
    }

    async fn set_stock(&self, id: &str, available: i64) -> Result<Option<Product>, sqlx::Error> {
        // Available stock is on hand minus reservations, so on hand becomes
        // `available + reserved` in one statement: no read-then-write race.
        let result = sqlx::query(
            "UPDATE products SET on_hand = $1 + reserved, updated_at = $2 WHERE id = $3",
        )
        .bind(available)
        .bind(chassis::time::now_micros())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        self.get(id).await
    }

    async fn count(&self) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM products")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}
