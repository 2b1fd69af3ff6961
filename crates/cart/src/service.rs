//! cart's use cases.

use std::collections::HashMap;
use std::sync::Arc;

use chassis::money::Money;
use contracts::catalog::CatalogApi;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{LINES_MAX, Quantity};
use crate::error::CartError;
use crate::store::{AddOutcome, CartItems, Line};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CartLine {
    pub product_id: String,
    pub quantity: u32,
    /// Current unit price, from the catalog.
    pub price_cents: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cart {
    pub items: Vec<CartLine>,
    pub total_cents: i64,
    pub currency: String,
}

#[derive(Clone)]
pub struct CartService {
    items: Arc<dyn CartItems>,
    catalog: Arc<dyn CatalogApi>,
}

chassis::debug_fields!(CartService {});

impl CartService {
    pub fn new(items: Arc<dyn CartItems>, catalog: Arc<dyn CatalogApi>) -> Self {
        Self { items, catalog }
    }

    /// The cart with current prices. Lines whose product no longer exists are left out.
    pub async fn get(&self, user_id: &str) -> Result<Cart, CartError> {
        let lines = self.items.lines(user_id).await?;
        let ids = lines.iter().map(|l| l.product_id.clone()).collect();
        let prices = self.prices(ids).await?;
        Ok(priced(lines, &prices))
    }

    /// Current prices of `ids` (unknown ones left out), from the catalog.
    async fn prices(&self, ids: Vec<String>) -> Result<HashMap<String, i64>, CartError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .catalog
            .get_products(ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p.price_cents))
            .collect())
    }

    #[tracing::instrument(skip(self))]
    pub async fn add(
        &self,
        user_id: &str,
        product_id: &str,
        quantity: i64,
    ) -> Result<Cart, CartError> {
        let quantity = Quantity::parse(quantity).map_err(|e| {
            CartError::Invalid(vec![chassis::FieldError::new("quantity", e.to_string())])
        })?;
        let lines = self.items.lines(user_id).await?;
        let is_new = !lines.iter().any(|l| l.product_id == product_id);
        if is_new && lines.len() >= LINES_MAX {
            return Err(CartError::CartFull);
        }
        // Existence and prices are the catalog's to say, and asked before the write:
        // a failure after it would answer 503 for a line already added, and the
        // client's retry would add it twice.
        let mut ids: Vec<String> = lines.iter().map(|l| l.product_id.clone()).collect();
        if is_new {
            ids.push(product_id.to_owned());
        }
        let prices = self.prices(ids).await?;
        if !prices.contains_key(product_id) {
            return Err(CartError::UnknownProduct(product_id.to_owned()));
        }
        match self.items.add(user_id, product_id, quantity).await? {
            AddOutcome::Added => Ok(priced(self.items.lines(user_id).await?, &prices)),
            AddOutcome::WouldOverflow => Err(CartError::LineFull),
        }
    }

    /// The raw lines, without prices (the cart contract, used by orders).
    pub async fn lines(&self, user_id: &str) -> Result<Vec<contracts::cart::CartItem>, CartError> {
        Ok(self
            .items
            .lines(user_id)
            .await?
            .into_iter()
            .map(|l| contracts::cart::CartItem {
                product_id: l.product_id,
                quantity: l.quantity,
            })
            .collect())
    }

    /// Sets a product's line to `quantity` (0 removes it): remove, then add. Not one
    /// transaction: a failure between the two leaves the line removed, which the
    /// shopper sees on the cart page they are sent back to.
    #[tracing::instrument(skip(self))]
    pub async fn set(
        &self,
        user_id: &str,
        product_id: &str,
        quantity: i64,
    ) -> Result<Cart, CartError> {
        if quantity == 0 {
            return self.remove(user_id, product_id).await;
        }
        Quantity::parse(quantity).map_err(|e| {
            CartError::Invalid(vec![chassis::FieldError::new("quantity", e.to_string())])
        })?;
        self.items.remove(user_id, product_id).await?;
        self.add(user_id, product_id, quantity).await
    }

    /// Removes a product's line; removing an absent line is not an error.
    #[tracing::instrument(skip(self))]
    pub async fn remove(&self, user_id: &str, product_id: &str) -> Result<Cart, CartError> {
        self.items.remove(user_id, product_id).await?;
        self.get(user_id).await
    }
}

/// `lines` with `prices`; a line whose product has no price (it no longer exists) is
/// left out.
fn priced(lines: Vec<Line>, prices: &HashMap<String, i64>) -> Cart {
    let mut total = Money::ZERO;
    let mut items = Vec::with_capacity(lines.len());
    for line in lines {
        let Some(&price_cents) = prices.get(&line.product_id) else {
            continue;
        };
        let price = Money::parse(price_cents).unwrap_or(Money::ZERO);
        total = total.plus(price.times(line.quantity));
        items.push(CartLine {
            product_id: line.product_id,
            quantity: line.quantity,
            price_cents,
        });
    }
    Cart {
        items,
        total_cents: total.cents(),
        currency: chassis::money::CURRENCY.to_owned(),
    }
}

#[async_trait::async_trait]
impl contracts::cart::CartApi for CartService {
    async fn items(
        &self,
        user_id: String,
    ) -> Result<Vec<contracts::cart::CartItem>, contracts::cart::CartError> {
        self.lines(&user_id)
            .await
            .map_err(|e| contracts::cart::CartError::Unavailable(e.to_string()))
    }

    async fn add_item(
        &self,
        user_id: String,
        product_id: String,
        quantity: u32,
    ) -> Result<Vec<contracts::cart::CartItem>, contracts::cart::CartError> {
        self.add(&user_id, &product_id, i64::from(quantity)).await?;
        Ok(self.lines(&user_id).await?)
    }

    async fn set_quantity(
        &self,
        user_id: String,
        product_id: String,
        quantity: u32,
    ) -> Result<Vec<contracts::cart::CartItem>, contracts::cart::CartError> {
        self.set(&user_id, &product_id, i64::from(quantity)).await?;
        Ok(self.lines(&user_id).await?)
    }
}
