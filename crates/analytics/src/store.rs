//! The analytics store. Writes are additive upserts run on the consumer's inbox
//! transaction (the `&mut AnyConnection` a handler is given); reads on the pool.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, AnyPool};

use crate::domain::MinuteBucket;

/// The scalar sums kept in `sales_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    OrdersConfirmed,
    RevenueCents,
    OrdersCancelled,
    RefundedCents,
    PaymentDeclines,
    PaymentsCapturedCents,
    PaymentsRefundedCents,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::OrdersConfirmed => "orders_confirmed",
            Counter::RevenueCents => "revenue_cents",
            Counter::OrdersCancelled => "orders_cancelled",
            Counter::RefundedCents => "refunded_cents",
            Counter::PaymentDeclines => "payment_declines",
            Counter::PaymentsCapturedCents => "payments_captured_cents",
            Counter::PaymentsRefundedCents => "payments_refunded_cents",
        }
    }
}

/// `counter += n`.
pub async fn add(conn: &mut AnyConnection, counter: Counter, n: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sales_counters (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = sales_counters.value + excluded.value",
    )
    .bind(counter.as_str())
    .bind(n)
    .execute(conn)
    .await
    .map(|_| ())
}

/// One more failed order for `reason`.
pub async fn add_failure(conn: &mut AnyConnection, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sales_failures (reason, orders) VALUES ($1, 1) \
         ON CONFLICT (reason) DO UPDATE SET orders = sales_failures.orders + excluded.orders",
    )
    .bind(reason)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Adds to a product's sums.
pub async fn add_product(
    conn: &mut AnyConnection,
    product_id: &str,
    units: i64,
    revenue_cents: i64,
    units_cancelled: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sales_by_product (product_id, units, revenue_cents, units_cancelled) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (product_id) DO UPDATE SET \
         units = sales_by_product.units + excluded.units, \
         revenue_cents = sales_by_product.revenue_cents + excluded.revenue_cents, \
         units_cancelled = sales_by_product.units_cancelled + excluded.units_cancelled",
    )
    .bind(product_id)
    .bind(units)
    .bind(revenue_cents)
    .bind(units_cancelled)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Adds confirmations to a minute's bucket.
pub async fn add_minute(
    conn: &mut AnyConnection,
    minute: i64,
    orders: i64,
    revenue_cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sales_by_minute (minute_start, orders, revenue_cents) VALUES ($1, $2, $3) \
         ON CONFLICT (minute_start) DO UPDATE SET orders = sales_by_minute.orders + excluded.orders, \
         revenue_cents = sales_by_minute.revenue_cents + excluded.revenue_cents",
    )
    .bind(minute)
    .bind(orders)
    .bind(revenue_cents)
    .execute(conn)
    .await
    .map(|_| ())
}

/// One product's sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub product_id: String,
    pub units: i64,
    pub revenue_cents: i64,
    pub units_cancelled: i64,
}

/// Everything the report shows, read in one transaction (one snapshot on SQLite).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: BTreeMap<String, i64>,
    pub failures: BTreeMap<String, i64>,
    pub products: Vec<ProductRow>,
    pub minutes: Vec<MinuteBucket>,
}

impl Snapshot {
    pub fn counter(&self, counter: Counter) -> i64 {
        self.counters.get(counter.as_str()).copied().unwrap_or(0)
    }
}

/// The counters, the failures, the `top` products by revenue and the minute
/// buckets from `since_minute` on.
pub async fn snapshot(
    pool: &AnyPool,
    top: u32,
    since_minute: i64,
) -> Result<Snapshot, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let counters: Vec<(String, i64)> = sqlx::query_as("SELECT name, value FROM sales_counters")
        .fetch_all(&mut *tx)
        .await?;
    let failures: Vec<(String, i64)> = sqlx::query_as("SELECT reason, orders FROM sales_failures")
        .fetch_all(&mut *tx)
        .await?;
    let products: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT product_id, units, revenue_cents, units_cancelled FROM sales_by_product \
         ORDER BY revenue_cents DESC, product_id LIMIT $1",
    )
    .bind(i64::from(top))
    .fetch_all(&mut *tx)
    .await?;
    let minutes: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT minute_start, orders, revenue_cents FROM sales_by_minute \
         WHERE minute_start >= $1 ORDER BY minute_start",
    )
    .bind(since_minute)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Snapshot {
        counters: counters.into_iter().collect(),
        failures: failures.into_iter().collect(),
        products: products
            .into_iter()
            .map(
                |(product_id, units, revenue_cents, units_cancelled)| ProductRow {
                    product_id,
                    units,
                    revenue_cents,
                    units_cancelled,
                },
            )
            .collect(),
        minutes: minutes
            .into_iter()
            .map(|(minute, orders, revenue_cents)| MinuteBucket {
                minute,
                orders,
                revenue_cents,
            })
            .collect(),
    })
}

/// One counter's value (0 before any event).
pub async fn counter(pool: &AnyPool, counter: Counter) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT value FROM sales_counters WHERE name = $1")
        .bind(counter.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map_or(0, |(n,)| n))
}
