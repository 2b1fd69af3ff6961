//! catalog's use cases, and its in-process implementation of the catalog contract.

use std::sync::Arc;

use std::time::Duration;

use chassis::CancellationToken;
use chassis::outbox::Outbox;
use contracts::catalog::{
    CatalogApi, CatalogError, Product, ProductList, ReservationState, StockLine,
};

use chassis::page;

use crate::cache::ProductCache;
use crate::domain::{NewProduct, QUERY_MAX, Stock, like_pattern};
use crate::error::CatalogFailure;
use crate::seed;
use crate::store::{InsertError, Products, ReserveError, Transition};

/// A page of products as the list route returns it.
#[derive(Debug, Clone)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct CatalogService {
    products: Arc<dyn Products>,
    outbox: Outbox,
    reservation_ttl: Duration,
    cache: Arc<ProductCache>,
}

chassis::debug_fields!(CatalogService {});

impl CatalogService {
    /// `reservation_ttl`: how long stock stays reserved for an order that is neither
    /// committed nor released before the sweeper gives it back.
    /// `cache_ttl`: how long a product read may be served from memory (0: never).
    pub fn new(
        products: Arc<dyn Products>,
        outbox: Outbox,
        reservation_ttl: Duration,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            products,
            outbox,
            reservation_ttl,
            cache: Arc::new(ProductCache::new(cache_ttl)),
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    async fn transition(
        &self,
        order_id: &str,
        to: ReservationState,
        reason: &str,
    ) -> Result<Transition, CatalogError> {
        let result = self
            .products
            .transition(order_id, to, reason)
            .await
            .map_err(|e| CatalogError::Unavailable(e.to_string()))?;
        if let Transition::Done(_, products) = &result {
            self.cache.invalidate(products.iter().map(String::as_str));
            self.outbox.wake();
        }
        Ok(result)
    }

    /// Releases reservations past their expiry; returns how many.
    pub async fn release_expired(&self) -> Result<usize, CatalogError> {
        let expired = self
            .products
            .expired(chassis::time::now_micros(), 100)
            .await
            .map_err(|e| CatalogError::Unavailable(e.to_string()))?;
        let mut released = 0;
        for order_id in expired {
            if let Transition::Done(..) = self
                .transition(&order_id, ReservationState::Released, "expired")
                .await?
            {
                tracing::info!(order_id = %order_id, "reservation expired and released");
                metrics::counter!("catalog_reservations_expired_total").increment(1);
                released += 1;
            }
        }
        Ok(released)
    }

    /// Runs the expiry sweeper every `every` until `shutdown`.
    pub fn spawn_sweeper(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shutdown.cancelled() => break,
                }
                if let Err(e) = service.release_expired().await {
                    tracing::warn!(error = %e, "reservation sweeper failed");
                }
            }
        })
    }

    pub async fn list(
        &self,
        q: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, CatalogFailure> {
        let mut v = chassis::error::Violations::new();
        let limit = v.check("limit", page::limit(limit));
        if q.is_some_and(|q| q.chars().count() > QUERY_MAX) {
            v.push("q", format!("must be at most {QUERY_MAX} characters"));
        }
        v.finish().map_err(|e| CatalogFailure::Invalid(e.into()))?;
        let limit = limit.unwrap_or(page::DEFAULT_LIMIT);
        let cursor = page::cursor(cursor).map_err(|_| CatalogFailure::BadCursor)?;
        let pattern = q.filter(|q| !q.is_empty()).map(like_pattern);
        let page = self
            .products
            .list(pattern.as_deref(), cursor.as_ref(), limit)
            .await?;
        let next_cursor = page::next_cursor(&page.items, page.has_more, |p| &p.id);
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
        if let Some(product) = self.cache.get(id) {
            return Ok(product);
        }
        let product = self
            .products
            .get(id)
            .await?
            .ok_or_else(|| CatalogFailure::NotFound(id.to_owned()))?;
        self.cache.put(&product);
        Ok(product)
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
        .inspect(|_| self.outbox.wake())
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
        let product = self
            .products
            .set_stock(id, stock.units())
            .await?
            .ok_or_else(|| CatalogFailure::NotFound(id.to_owned()))?;
        self.cache.invalidate([id]);
        self.outbox.wake();
        Ok(product)
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
    async fn get_product(&self, id: String) -> Result<Product, CatalogError> {
        Ok(self.get(&id).await?)
    }

    async fn get_products(&self, ids: Vec<String>) -> Result<Vec<Product>, CatalogError> {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| chassis::id::is_uuid(id))
            .collect();
        self.products
            .get_many(&ids)
            .await
            .map_err(|e| CatalogFailure::from(e).into())
    }

    async fn list_products(
        &self,
        q: Option<String>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<ProductList, CatalogError> {
        let page = self
            .list(q.as_deref(), Some(limit), cursor.as_deref())
            .await?;
        Ok(ProductList {
            items: page.items,
            next_cursor: page.next_cursor,
        })
    }

    #[tracing::instrument(skip(self, lines))]
    async fn reserve(
        &self,
        order_id: String,
        lines: Vec<StockLine>,
    ) -> Result<ReservationState, CatalogError> {
        let ttl = i64::try_from(self.reservation_ttl.as_micros()).unwrap_or(i64::MAX);
        let expires_at = chassis::time::now_micros().saturating_add(ttl);
        match self.products.reserve(&order_id, &lines, expires_at).await {
            Ok(state) => {
                self.cache
                    .invalidate(lines.iter().map(|l| l.product_id.as_str()));
                self.outbox.wake();
                Ok(state)
            }
            Err(ReserveError::OutOfStock(id)) => {
                metrics::counter!("catalog_reservations_rejected_total").increment(1);
                Err(CatalogError::OutOfStock(id))
            }
            Err(ReserveError::UnknownProduct(id)) => Err(CatalogError::NotFound(id)),
            Err(ReserveError::Store(e)) => Err(CatalogError::Unavailable(e.to_string())),
        }
    }

    #[tracing::instrument(skip(self))]
    async fn release(&self, order_id: String) -> Result<ReservationState, CatalogError> {
        Ok(
            match self
                .transition(&order_id, ReservationState::Released, "released")
                .await?
            {
                Transition::Done(state, _) => state,
                // Nothing active: already released, expired, or never reserved.
                Transition::Unchanged(state) => state.unwrap_or(ReservationState::Released),
            },
        )
    }

    #[tracing::instrument(skip(self))]
    async fn commit(&self, order_id: String) -> Result<ReservationState, CatalogError> {
        match self
            .transition(&order_id, ReservationState::Committed, "committed")
            .await?
        {
            Transition::Done(state, _)
            | Transition::Unchanged(Some(state @ ReservationState::Committed)) => Ok(state),
            Transition::Unchanged(_) => Err(CatalogError::NoReservation(order_id)),
        }
    }

    #[tracing::instrument(skip(self))]
    async fn restock(&self, order_id: String) -> Result<ReservationState, CatalogError> {
        match self
            .transition(&order_id, ReservationState::Restocked, "restocked")
            .await?
        {
            Transition::Done(state, _)
            | Transition::Unchanged(Some(state @ ReservationState::Restocked)) => Ok(state),
            // Never committed: there is nothing on the order to put back, but an
            // active hold must not outlive the order.
            Transition::Unchanged(Some(ReservationState::Active)) => self.release(order_id).await,
            Transition::Unchanged(_) => Err(CatalogError::NoReservation(order_id)),
        }
    }
}
