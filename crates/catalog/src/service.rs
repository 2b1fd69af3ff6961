//! catalog's use cases, and its in-process implementation of the catalog contract.

use std::sync::Arc;

use contracts::catalog::{CatalogApi, CatalogError, Product};

use crate::domain::{Cursor, NewProduct, PAGE_DEFAULT, PAGE_MAX, QUERY_MAX, Stock, like_pattern};
use crate::error::CatalogFailure;
use crate::seed;
use crate::store::{InsertError, Products};

/// A page of products as the list route returns it.
#[derive(Debug, Clone)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct CatalogService {
    products: Arc<dyn Products>,
}

impl std::fmt::Debug for CatalogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogService").finish_non_exhaustive()
    }
}

impl CatalogService {
    pub fn new(products: Arc<dyn Products>) -> Self {
        Self { products }
    }

    pub async fn list(
        &self,
        q: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, CatalogFailure> {
        let mut v = chassis::error::Violations::new();
        let limit = limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            v.push("limit", format!("must be between 1 and {PAGE_MAX}"));
        }
        if q.is_some_and(|q| q.chars().count() > QUERY_MAX) {
            v.push("q", format!("must be at most {QUERY_MAX} characters"));
        }
        v.finish().map_err(CatalogFailure::Invalid)?;
        let cursor = match cursor {
            Some(raw) => Some(Cursor::decode(raw).ok_or(CatalogFailure::BadCursor)?),
            None => None,
        };
        let pattern = q.filter(|q| !q.is_empty()).map(like_pattern);
        let page = self
            .products
            .list(pattern.as_deref(), cursor.as_ref(), limit)
            .await?;
        let next_cursor = if page.has_more {
            page.items.last().map(|p| Cursor::after(&p.id).encode())
        } else {
            None
        };
        Ok(ProductPage {
            items: page.items,
            next_cursor,
        })
    }

    pub async fn get(&self, id: &str) -> Result<Product, CatalogFailure> {
        // Ids are UUIDs; anything else cannot exist, so skip the query.
        if !chassis::id::is_uuid(id) {
            return Err(CatalogFailure::NotFound(id.to_owned()));
        }
        self.products
            .get(id)
            .await?
            .ok_or_else(|| CatalogFailure::NotFound(id.to_owned()))
    }

    #[tracing::instrument(skip_all)]
    pub async fn create(&self, product: NewProduct) -> Result<Product, CatalogFailure> {
        let id = chassis::id::new_id();
        match self.products.insert(&id, &product).await {
            Ok(created) => {
                tracing::info!(product_id = %created.id, sku = %created.sku, "product created");
                Ok(created)
            }
            Err(InsertError::DuplicateSku) => Err(CatalogFailure::DuplicateSku(
                product.sku.as_str().to_owned(),
            )),
            Err(InsertError::Store(e)) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip(self))]
    pub async fn set_stock(&self, id: &str, stock: i64) -> Result<Product, CatalogFailure> {
        let stock = Stock::parse(stock).map_err(|message| {
            CatalogFailure::Invalid(chassis::Problem::validation(vec![
                chassis::FieldError::new("stock", message),
            ]))
        })?;
        if !chassis::id::is_uuid(id) {
            return Err(CatalogFailure::NotFound(id.to_owned()));
        }
        self.products
            .set_stock(id, stock.units())
            .await?
            .ok_or_else(|| CatalogFailure::NotFound(id.to_owned()))
    }

    /// Seeds the demo catalog into an empty store (first start). Returns how many
    /// products were added.
    pub async fn seed_if_empty(&self, n: u32) -> Result<u64, CatalogFailure> {
        if self.products.count().await? > 0 {
            return Ok(0);
        }
        self.seed(n).await
    }

    /// Adds the first `n` demo products, skipping those already present.
    pub async fn seed(&self, n: u32) -> Result<u64, CatalogFailure> {
        let products = seed::demo_catalog(n).map_err(CatalogFailure::Invalid)?;
        Ok(self.products.insert_missing(&products).await?)
    }
}

#[async_trait::async_trait]
impl CatalogApi for CatalogService {
    async fn get_product(&self, id: &str) -> Result<Product, CatalogError> {
        Ok(self.get(id).await?)
    }

    async fn get_products(&self, ids: &[String]) -> Result<Vec<Product>, CatalogError> {
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| chassis::id::is_uuid(id))
            .cloned()
            .collect();
        self.products
            .get_many(&ids)
            .await
            .map_err(|e| CatalogFailure::from(e).into())
    }
}
