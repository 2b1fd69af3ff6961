//! The cart's contract: what orders may read of a user's cart.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    pub product_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CartError {
    #[error("cart unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait CartApi: Send + Sync {
    /// The user's cart lines (no prices: those are the catalog's).
    async fn items(&self, user_id: &str) -> Result<Vec<CartItem>, CartError>;
}
