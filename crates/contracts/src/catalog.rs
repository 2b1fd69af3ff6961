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
    /// The catalog could not answer (its store failed, or, split, it was unreachable).
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

/// What other modules may ask the catalog.
#[async_trait::async_trait]
pub trait CatalogApi: Send + Sync {
    async fn get_product(&self, id: &str) -> Result<Product, CatalogError>;

    /// The products among `ids` that exist, in no particular order; unknown ids are
    /// left out rather than failing the batch.
    async fn get_products(&self, ids: &[String]) -> Result<Vec<Product>, CatalogError>;
}
