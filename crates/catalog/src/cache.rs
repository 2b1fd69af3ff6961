//! A small read-through cache of products by id, for the hottest route
//! (`GET /products/{id}`).
//!
//! Why: with SQLite every query crosses to sqlx's connection thread and back, and
//! those two context switches are most of a product read's cost. Every write the
//! catalog makes to a product invalidates its entry; entries also expire after the
//! TTL, which bounds staleness when several catalog instances share one database
//! (split topology) or a read raced a write. Shown stock is advisory either way:
//! reservations decide.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use contracts::catalog::Product;

/// Entries kept at most; past that the cache starts over (cheap, and the hot set
/// refills at once).
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug)]
pub(crate) struct ProductCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Product, Instant)>>,
}

impl ProductCache {
    /// A zero `ttl` turns caching off.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Product> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(p, _)| p.clone())
    }

    pub(crate) fn put(&self, product: &Product) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(product.id.clone(), (product.clone(), Instant::now()));
    }

    pub(crate) fn invalidate<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            entries.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str, stock: i64) -> Product {
        Product {
            id: id.into(),
            sku: "S".into(),
            name: "N".into(),
            description: String::new(),
            price_cents: 1,
            currency: "USD".into(),
            stock,
        }
    }

    #[test]
    fn put_get_invalidate_expire() {
        let cache = ProductCache::new(Duration::from_millis(50));
        cache.put(&product("a", 3));
        assert_eq!(cache.get("a").map(|p| p.stock), Some(3));
        cache.invalidate(["a"]);
        assert!(cache.get("a").is_none());
        cache.put(&product("a", 4));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn zero_ttl_disables() {
        let cache = ProductCache::new(Duration::ZERO);
        cache.put(&product("a", 3));
        assert!(cache.get("a").is_none());
    }
}
