//! The cart's contract: what orders may read of a user's cart, and what the
//! storefront may change in it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    pub product_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CartError {
    /// The change is refused (an unknown product, a quantity out of bounds, a full
    /// cart or line), explained for the shopper. Asking again will not help.
    #[error("{0}")]
    Refused(String),
    #[error("cart unavailable: {0}")]
    Unavailable(String),
}

chassis_core::rpc! {
    /// What orders may read of a user's cart, and the storefront change.
    pub trait CartApi as "cart" {
        client CartClient;
        handlers cart_handlers;

        /// The user's cart lines (no prices: those are the catalog's).
        async fn items(&self, user_id: String) -> Result<Vec<CartItem>, CartError>;

        /// Adds `quantity` units of a product to the user's cart (the storefront's
        /// add-to-cart form); the cart's lines after.
        async fn add_item(
            &self,
            user_id: String,
            product_id: String,
            quantity: u32,
        ) -> Result<Vec<CartItem>, CartError>;

        /// Sets a line's quantity; 0 removes it. The cart's lines after.
        async fn set_quantity(
            &self,
            user_id: String,
            product_id: String,
            quantity: u32,
        ) -> Result<Vec<CartItem>, CartError>;
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
