//! The catalog store: the [`Products`] port and its SQL adapter.

use chassis::outbox::{OutboxError, enqueue, enqueue_in, envelope};
use chassis::store::{Arg, PageOrder, Statements, Store, is_unique_violation, keyset_page};
use contracts::catalog::{
    Product, ProductChanged, ReservationState, StockCommitted, StockLine, StockReleased,
    StockReserved,
};
use sqlx::AnyPool;

use chassis::page::Cursor;

use crate::domain::NewProduct;

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("duplicate SKU")]
    DuplicateSku,
    #[error(transparent)]
    Store(#[from] StoreFailure),
}

/// The store or its outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error("catalog store failed")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Why a reservation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("product {0} is out of stock")]
    OutOfStock(String),
    #[error("product {0} not found")]
    UnknownProduct(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
}

impl From<sqlx::Error> for ReserveError {
    fn from(e: sqlx::Error) -> Self {
        ReserveError::Store(e.into())
    }
}

impl From<OutboxError> for ReserveError {
    fn from(e: OutboxError) -> Self {
        ReserveError::Store(e.into())
    }
}

/// The outcome of a state change on a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// This call made the change, to these products' stock.
    Done(ReservationState, Vec<String>),
    /// Nothing to do: the reservation is in this state (or absent: `None`).
    Unchanged(Option<ReservationState>),
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
    async fn set_stock(&self, id: &str, available: i64) -> Result<Option<Product>, StoreFailure>;
    async fn count(&self) -> Result<i64, sqlx::Error>;

    /// Reserves all `lines` for `order_id` or none; returns the existing state when
    /// the order already has a reservation.
    async fn reserve(
        &self,
        order_id: &str,
        lines: &[StockLine],
        expires_at: i64,
    ) -> Result<ReservationState, ReserveError>;
    /// Moves an `active` reservation to `to` (released, committed) or a committed one
    /// to restocked, adjusting stock and writing the event, in one transaction.
    async fn transition(
        &self,
        order_id: &str,
        to: ReservationState,
        reason: &str,
    ) -> Result<Transition, StoreFailure>;
    /// Active reservations past their expiry.
    async fn expired(&self, now: i64, limit: i64) -> Result<Vec<String>, sqlx::Error>;
}

fn state_name(state: ReservationState) -> &'static str {
    match state {
        ReservationState::Active => "active",
        ReservationState::Committed => "committed",
        ReservationState::Released => "released",
        ReservationState::Restocked => "restocked",
    }
}

fn parse_state(s: &str) -> Option<ReservationState> {
    Some(match s {
        "active" => ReservationState::Active,
        "committed" => ReservationState::Committed,
        "released" => ReservationState::Released,
        "restocked" => ReservationState::Restocked,
        _ => return None,
    })
}

async fn reservation_state(
    tx: &mut dyn Statements,
    order_id: &str,
) -> Result<Option<ReservationState>, sqlx::Error> {
    let state = tx
        .fetch_text(
            "SELECT state FROM reservations WHERE order_id = $1",
            &[order_id.into()],
        )
        .await?;
    Ok(state.and_then(|s| parse_state(&s)))
}

/// Sums duplicate lines and sorts by product id: every transaction touches product
/// rows in the same order, so concurrent reservations cannot deadlock (PostgreSQL).
fn normalise(lines: &[StockLine]) -> Vec<(String, i64)> {
    let mut merged: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for line in lines {
        *merged.entry(line.product_id.as_str()).or_default() += i64::from(line.quantity);
    }
    merged
        .into_iter()
        .map(|(id, q)| (id.to_owned(), q))
        .collect()
}

#[derive(Debug, Clone)]
pub struct SqlProducts {
    pool: AnyPool,
    /// Reservations and their state changes go through its writer (ADR 0019).
    store: Store,
}

impl SqlProducts {
    pub fn new(store: Store) -> Self {
        Self {
            pool: store.pool().clone(),
            store,
        }
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
        let mut tx = self.pool.begin().await.map_err(StoreFailure::from)?;
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
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    InsertError::DuplicateSku
                } else {
                    InsertError::Store(e.into())
                }
            })?;
        enqueue(
            &mut tx,
            &ProductChanged {
                product_id: id.to_owned(),
            },
        )
        .await
        .map_err(StoreFailure::from)?;
        tx.commit().await.map_err(StoreFailure::from)?;
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
        let (rows, has_more) = keyset_page::<Row>(
            &self.pool,
            &format!("SELECT {COLUMNS} FROM products WHERE 1 = 1"),
            pattern.map(|pattern| ("search_text LIKE $1 ESCAPE '\\'", pattern)),
            after.map(Cursor::last_id),
            PageOrder::OldestFirst,
            limit,
        )
        .await?;
        let items = rows.into_iter().map(product).collect();
        Ok(Page { items, has_more })
    }

    async fn set_stock(&self, id: &str, available: i64) -> Result<Option<Product>, StoreFailure> {
        // Available stock is on hand minus reservations, so on hand becomes
        // `available + reserved` in one statement: no read-then-write race.
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE products SET on_hand = $1 + reserved, updated_at = $2 WHERE id = $3",
        )
        .bind(available)
        .bind(chassis::time::now_micros())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        enqueue(
            &mut tx,
            &ProductChanged {
                product_id: id.to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(self.get(id).await?)
    }

    async fn count(&self) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM products")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    async fn reserve(
        &self,
        order_id: &str,
        lines: &[StockLine],
        expires_at: i64,
    ) -> Result<ReservationState, ReserveError> {
        let now = chassis::time::now_micros();
        let lines = normalise(lines);
        // Built here, on the request's task (its trace context); used if it reserves.
        let reserved = envelope(&StockReserved {
            order_id: order_id.to_owned(),
            lines: lines
                .iter()
                .map(|(product_id, quantity)| StockLine {
                    product_id: product_id.clone(),
                    quantity: u32::try_from(*quantity).unwrap_or(u32::MAX),
                })
                .collect(),
        })?;
        let order_id = order_id.to_owned();
        // One unit of the writer (ADR 0019): an error rolls back every line it took.
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    // The primary key makes a second reservation for the order a no-op.
                    let claimed = tx
                        .run(
                            "INSERT INTO reservations (order_id, state, expires_at, created_at, updated_at) \
                             VALUES ($1, 'active', $2, $3, $3) ON CONFLICT (order_id) DO NOTHING",
                            &[Arg::from(&order_id), expires_at.into(), now.into()],
                        )
                        .await?;
                    if claimed == 0 {
                        let state = reservation_state(tx, &order_id).await?;
                        return Ok(state.unwrap_or(ReservationState::Released));
                    }
                    for (product_id, quantity) in &lines {
                        // The conditional update is the oversell guard: it succeeds only
                        // while enough stock is available, atomically, whatever else runs
                        // concurrently.
                        let updated = tx
                            .run(
                                "UPDATE products SET reserved = reserved + $1, updated_at = $2 \
                                 WHERE id = $3 AND on_hand - reserved >= $1",
                                &[Arg::from(*quantity), now.into(), product_id.into()],
                            )
                            .await?;
                        if updated == 0 {
                            let exists = tx
                                .fetch_text("SELECT id FROM products WHERE id = $1", &[product_id.into()])
                                .await?;
                            return Err(if exists.is_some() {
                                ReserveError::OutOfStock(product_id.clone())
                            } else {
                                ReserveError::UnknownProduct(product_id.clone())
                            });
                        }
                        tx.run(
                            "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ($1, $2, $3)",
                            &[Arg::from(&order_id), product_id.into(), (*quantity).into()],
                        )
                        .await?;
                    }
                    enqueue_in(tx, &reserved).await?;
                    Ok(ReservationState::Active)
                })
            })
            .await
    }

    async fn transition(
        &self,
        order_id: &str,
        to: ReservationState,
        reason: &str,
    ) -> Result<Transition, StoreFailure> {
        let (from, stock_change) = match to {
            // reserved units go back to available
            ReservationState::Released => ("active", "reserved = reserved - $1"),
            // reserved units leave the shelf
            ReservationState::Committed => {
                ("active", "reserved = reserved - $1, on_hand = on_hand - $1")
            }
            // sold units come back
            ReservationState::Restocked => ("committed", "on_hand = on_hand + $1"),
            ReservationState::Active => {
                return Ok(Transition::Unchanged(Some(ReservationState::Active)));
            }
        };
        let now = chassis::time::now_micros();
        let order_id = order_id.to_owned();
        // Built here, on the caller's task (its trace context); used if it moves.
        let event = if to == ReservationState::Committed {
            envelope(&StockCommitted {
                order_id: order_id.clone(),
            })?
        } else {
            envelope(&StockReleased {
                order_id: order_id.clone(),
                reason: reason.to_owned(),
            })?
        };
        let sql = format!("UPDATE products SET {stock_change}, updated_at = $2 WHERE id = $3");
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    // Compare-and-set on the state.
                    let moved = tx
                        .run(
                            "UPDATE reservations SET state = $1, updated_at = $2 WHERE order_id = $3 AND state = $4",
                            &[state_name(to).into(), now.into(), Arg::from(&order_id), from.into()],
                        )
                        .await?;
                    if moved == 0 {
                        let state = reservation_state(tx, &order_id).await?;
                        return Ok(Transition::Unchanged(state));
                    }
                    let lines = tx
                        .fetch_all(
                            "SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id",
                            &[Arg::from(&order_id)],
                        )
                        .await?;
                    let mut products = Vec::with_capacity(lines.len());
                    for line in &lines {
                        let product_id = line.text(0)?;
                        tx.run(&sql, &[line.int(1)?.into(), now.into(), Arg::from(&product_id)])
                            .await?;
                        products.push(product_id);
                    }
                    enqueue_in(tx, &event).await?;
                    Ok(Transition::Done(to, products))
                })
            })
            .await
    }

    async fn expired(&self, now: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT order_id FROM reservations WHERE state = 'active' AND expires_at < $1 \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
