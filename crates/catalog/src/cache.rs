//! A small read-through cache of products by id, for the hottest route
//! (`GET /products/{id}`).
//!
//! Why: with SQLite every query crosses to sqlx's connection thread and back, and
//! those two context switches are most of a product read's cost. Every write the
//! catalog makes to a product invalidates its entry; entries also expire after the
//! TTL, which bounds staleness when several catalog instances share one database
//! (split topology) or a read raced a write. Shown stock is advisory either way:
//! reservations decide.
//!
//! An expired entry is refreshed by one reader while the others keep getting it:
//! when a hot product's entry expired, every concurrent reader used to miss at once
//! and queue for the (two, on SQLite) connections, and under load that queue made
//! the process shed most requests (measured in docs/benchmarks.md: at 15,000
//! product reads/s, 2,241 answered 200 and 69,239 were shed, against all 75,000 with
//! no expiry). So an entry is at most TTL old when fresh and at most about two TTLs
//! while its refresh runs; a refresh that has not landed within a TTL (the reader
//! failed or gave up) is handed to the next reader.

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
    entries: RwLock<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    product: Product,
    stored: Instant,
    /// When a reader took on refreshing this expired entry.
    refreshing_since: Option<Instant>,
}

impl ProductCache {
    /// A zero `ttl` turns caching off.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The cached product, or `None`: the caller reads the store and [`put`]s what it
    /// read. For an expired entry one caller gets `None` (it refreshes) and the others
    /// the entry as it is.
    ///
    /// [`put`]: ProductCache::put
    pub(crate) fn get(&self, id: &str) -> Option<Product> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Product> {
        if self.ttl.is_zero() {
            return None;
        }
        let refresh_due = |e: &Entry| {
            e.refreshing_since
                .is_none_or(|since| now.saturating_duration_since(since) >= self.ttl)
        };
        {
            let entries = self
                .entries
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = entries.get(id)?;
            if now.saturating_duration_since(entry.stored) < self.ttl || !refresh_due(entry) {
                return Some(entry.product.clone());
            }
        }
        // Expired with no refresh under way: claim it, checking again under the write
        // lock, since another reader may have claimed it (or a write removed it) since.
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.get_mut(id)?;
        if now.saturating_duration_since(entry.stored) < self.ttl || !refresh_due(entry) {
            return Some(entry.product.clone());
        }
        entry.refreshing_since = Some(now);
        None
    }

    pub(crate) fn put(&self, product: &Product) {
        self.put_at(product, Instant::now());
    }

    fn put_at(&self, product: &Product, now: Instant) {
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
        entries.insert(
            product.id.clone(),
            Entry {
                product: product.clone(),
                stored: now,
                refreshing_since: None,
            },
        );
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
    fn an_expired_entry_is_refreshed_by_one_reader_while_the_others_keep_it() {
        let ttl = Duration::from_secs(1);
        let cache = ProductCache::new(ttl);
        let t0 = Instant::now();
        cache.put_at(&product("a", 3), t0);
        assert_eq!(cache.get_at("a", t0 + ttl / 2).map(|p| p.stock), Some(3));

        // Expired: the first reader refreshes, the next ones get the entry meanwhile.
        let expired = t0 + ttl + Duration::from_millis(10);
        assert!(cache.get_at("a", expired).is_none());
        assert_eq!(cache.get_at("a", expired).map(|p| p.stock), Some(3));
        assert_eq!(
            cache
                .get_at("a", expired + Duration::from_millis(500))
                .map(|p| p.stock),
            Some(3)
        );
        // The refresh lands: fresh again.
        cache.put_at(&product("a", 4), expired + Duration::from_millis(600));
        assert_eq!(
            cache
                .get_at("a", expired + Duration::from_millis(700))
                .map(|p| p.stock),
            Some(4)
        );
    }

    #[test]
    fn a_refresh_that_never_lands_is_handed_to_the_next_reader() {
        let ttl = Duration::from_secs(1);
        let cache = ProductCache::new(ttl);
        let t0 = Instant::now();
        cache.put_at(&product("a", 3), t0);
        let expired = t0 + ttl;
        assert!(cache.get_at("a", expired).is_none());
        assert!(cache.get_at("a", expired + ttl / 2).is_some());
        // A TTL after the claim with no put: the next reader refreshes.
        assert!(cache.get_at("a", expired + ttl).is_none());
        assert!(cache.get_at("a", expired + ttl).is_some());
    }

    #[test]
    fn a_write_still_removes_the_entry_at_once() {
        let cache = ProductCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        cache.put_at(&product("a", 3), t0);
        cache.invalidate(["a"]);
        // Every reader misses until the store is read again: no stale stock after a
        // write of this instance's own.
        assert!(cache.get_at("a", t0).is_none());
        assert!(cache.get_at("a", t0).is_none());
    }

    #[test]
    fn zero_ttl_disables() {
        let cache = ProductCache::new(Duration::ZERO);
        cache.put(&product("a", 3));
        assert!(cache.get("a").is_none());
    }
}
