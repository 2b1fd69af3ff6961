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

chassis_core::rpc! {
    /// What orders may read of a user's cart.
    pub trait CartApi as "cart" {
        client CartClient;
        handlers cart_handlers;

        /// The user's cart lines (no prices: those are the catalog's).
        async fn items(&self, user_id: String) -> Result<Vec<CartItem>, CartError>;
    }
}

impl chassis_core::rpc::RemoteError for CartError {
    fn from_failure(failure: chassis_core::rpc::RpcFailure) -> Self {
        CartError::Unavailable(failure.to_string())
    }

    fn is_transient(&self) -> bool {
        matches!(self, CartError::Unavailable(_))
    }
}
