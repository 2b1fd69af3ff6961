//! analytics' use cases: the sales report and the audit's count.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::AnyPool;
use utoipa::ToSchema;

use crate::domain::{self, MICROS_PER_MINUTE, WINDOW_MINUTES};
use crate::error::AnalyticsError;
use crate::store::{self, Counter};

/// Products the report lists, by revenue.
pub const TOP_PRODUCTS: u32 = 100;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProductSales {
    pub product_id: String,
    /// Units in confirmed orders.
    pub units: i64,
    /// Revenue of confirmed orders (cancellations not deducted).
    pub revenue_cents: i64,
    /// Units of this product in orders cancelled after confirmation.
    pub units_cancelled: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MinuteSales {
    /// Start of the minute, RFC 3339 UTC.
    #[schema(example = "2026-01-01T12:34:00Z")]
    pub minute: String,
    /// Orders confirmed in that minute.
    pub orders: i64,
    pub revenue_cents: i64,
}

/// Sales aggregates, built from order and payment events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SalesReport {
    /// Orders confirmed, ever (cancellations are counted separately).
    pub orders_confirmed: i64,
    /// Total of confirmed orders.
    pub revenue_cents: i64,
    #[schema(example = "USD")]
    pub currency: String,
    /// Confirmed orders later cancelled.
    pub orders_cancelled: i64,
    /// Refunded to cancelled orders.
    pub refunded_cents: i64,
    /// Failed orders per reason (`out_of_stock`, `payment_declined`, ...).
    pub orders_failed: BTreeMap<String, i64>,
    /// Charges the payment provider declined.
    pub payment_declines: i64,
    /// Captured by payments, as its events report it.
    pub payments_captured_cents: i64,
    /// Refunded by payments, as its events report it.
    pub payments_refunded_cents: i64,
    /// Top 100 products by revenue, highest first.
    pub by_product: Vec<ProductSales>,
    /// The last 60 minutes, oldest first, every minute present (zeros included).
    pub by_minute: Vec<MinuteSales>,
}

#[derive(Debug, Clone)]
pub struct AnalyticsService {
    pool: AnyPool,
}

impl AnalyticsService {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The report as of now.
    pub async fn sales(&self) -> Result<SalesReport, AnalyticsError> {
        self.sales_at(chassis::time::now_micros()).await
    }

    /// The report with its minute window ending at `now_micros`.
    pub async fn sales_at(&self, now_micros: i64) -> Result<SalesReport, AnalyticsError> {
        let since = domain::minute_of(now_micros) - (WINDOW_MINUTES - 1) * MICROS_PER_MINUTE;
        let snap = store::snapshot(&self.pool, TOP_PRODUCTS, since).await?;
        Ok(SalesReport {
            orders_confirmed: snap.counter(Counter::OrdersConfirmed),
            revenue_cents: snap.counter(Counter::RevenueCents),
            currency: chassis::money::CURRENCY.to_owned(),
            orders_cancelled: snap.counter(Counter::OrdersCancelled),
            refunded_cents: snap.counter(Counter::RefundedCents),
            payment_declines: snap.counter(Counter::PaymentDeclines),
            payments_captured_cents: snap.counter(Counter::PaymentsCapturedCents),
            payments_refunded_cents: snap.counter(Counter::PaymentsRefundedCents),
            by_minute: domain::window(now_micros, &snap.minutes)
                .into_iter()
                .map(|b| MinuteSales {
                    minute: chassis::time::micros_to_rfc3339(b.minute),
                    orders: b.orders,
                    revenue_cents: b.revenue_cents,
                })
                .collect(),
            by_product: snap
                .products
                .into_iter()
                .map(|p| ProductSales {
                    product_id: p.product_id,
                    units: p.units,
                    revenue_cents: p.revenue_cents,
                    units_cancelled: p.units_cancelled,
                })
                .collect(),
            orders_failed: snap.failures,
        })
    }

    /// For the audit: confirmed orders counted (should equal orders' confirmed count,
    /// cancelled ones included).
    pub async fn orders_confirmed(&self) -> Result<i64, sqlx::Error> {
        store::counter(&self.pool, Counter::OrdersConfirmed).await
    }

    /// For the audit: revenue of confirmed orders counted.
    pub async fn revenue_cents(&self) -> Result<i64, sqlx::Error> {
        store::counter(&self.pool, Counter::RevenueCents).await
    }
}
