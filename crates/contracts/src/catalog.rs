//! The catalog's contract: products, prices and stock.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A product as every other module and the public API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// UUIDv7.
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    /// Price in minor units of `currency`.
    pub price_cents: i64,
    /// ISO 4217 code; `USD` today.
    pub currency: String,
    /// Available to buy: on hand minus active reservations.
    pub stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CatalogError {
    #[error("product {0} not found")]
    NotFound(String),
    /// Not enough available stock of this product: nothing was reserved.
    #[error("product {0} is out of stock")]
    OutOfStock(String),
    /// The order has no active reservation (never made, released, or expired).
    #[error("order {0} holds no active reservation")]
    NoReservation(String),
    /// The request itself is wrong (a query too long, a cursor this catalog did not
    /// return): asking again will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The catalog could not answer (its store failed, or, split, it was unreachable).
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

/// One page of products, in the catalog's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductList {
    pub items: Vec<Product>,
    /// Pass back as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// One line to reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: String,
    pub quantity: u32,
}

/// State of an order's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Active,
    Committed,
    Released,
    /// Committed, then put back on the shelf (a cancelled order).
    Restocked,
}

chassis_core::rpc! {
    /// What other modules may ask the catalog.
    pub trait CatalogApi as "catalog" {
        client CatalogClient;
        handlers catalog_handlers;

        async fn get_product(&self, id: String) -> Result<Product, CatalogError>;

        /// The products among `ids` that exist, in no particular order; unknown ids are
        /// left out rather than failing the batch.
        async fn get_products(&self, ids: Vec<String>) -> Result<Vec<Product>, CatalogError>;

        /// A page of products whose name or description contains `q` (all when
        /// `None`), after `cursor`, at most `limit` (the public API's bounds): what the
        /// storefront browses. `Invalid` for a query too long or a foreign cursor.
        async fn list_products(
            &self,
            q: Option<String>,
            cursor: Option<String>,
            limit: u32,
        ) -> Result<ProductList, CatalogError>;

        /// Reserves every line for `order_id`, or nothing (`OutOfStock`, `NotFound`).
        /// Idempotent: reserving again for the same order returns the existing state.
        async fn reserve(
            &self,
            order_id: String,
            lines: Vec<StockLine>,
        ) -> Result<ReservationState, CatalogError>;

        /// Returns reserved units to available stock. Idempotent; a no-op when nothing
        /// is reserved.
        async fn release(&self, order_id: String) -> Result<ReservationState, CatalogError>;

        /// Turns the reservation into a sale (on hand decreases). Idempotent;
        /// `NoReservation` if it was released or expired first.
        async fn commit(&self, order_id: String) -> Result<ReservationState, CatalogError>;

        /// Puts a committed order's units back on hand (cancellation). Idempotent.
        async fn restock(&self, order_id: String) -> Result<ReservationState, CatalogError>;
    }
}

impl chassis_core::rpc::RemoteError for CatalogError {
    fn from_failure(failure: chassis_core::rpc::RpcFailure) -> Self {
        CatalogError::Unavailable(failure.to_string())
    }

    fn is_transient(&self) -> bool {
        matches!(self, CatalogError::Unavailable(_))
    }
}

/// Units were reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub lines: Vec<StockLine>,
}
crate::event!(StockReserved, "catalog", "StockReserved", v 1, |e| e.order_id);

/// An order's reserved units went back to available stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: String,
    /// `released` (compensation), `expired` (the sweeper) or `restocked` (cancel).
    pub reason: String,
}
crate::event!(StockReleased, "catalog", "StockReleased", v 1, |e| e.order_id);

/// An order's reserved units were sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: String,
}
crate::event!(StockCommitted, "catalog", "StockCommitted", v 1, |e| e.order_id);

/// A product was created or its stock set by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductChanged {
    pub product_id: String,
}
crate::event!(ProductChanged, "catalog", "ProductChanged", v 1, |e| e.product_id);

/// The events this module publishes (its descriptor's `publishes`).
pub const EVENTS: &[&str] = &[
    <StockReserved as chassis_core::events::DomainEvent>::TYPE,
    <StockReleased as chassis_core::events::DomainEvent>::TYPE,
    <StockCommitted as chassis_core::events::DomainEvent>::TYPE,
    <ProductChanged as chassis_core::events::DomainEvent>::TYPE,
];
