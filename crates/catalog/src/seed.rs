//! The deterministic demo catalog: the same N products (SKU, name, description,
//! price, stock) on every machine, so walk-throughs and benchmarks are repeatable.

use chassis::Problem;
use chassis::money::CURRENCY;

use crate::domain::NewProduct;

const ADJECTIVES: &[&str] = &[
    "Classic",
    "Rugged",
    "Compact",
    "Deluxe",
    "Vintage",
    "Modern",
    "Handmade",
    "Organic",
    "Wireless",
    "Ergonomic",
    "Recycled",
    "Portable",
    "Artisan",
    "Minimal",
    "Heavy-duty",
    "Featherweight",
];
const MATERIALS: &[&str] = &[
    "Oak", "Steel", "Ceramic", "Linen", "Leather", "Bamboo", "Copper", "Wool", "Glass", "Cotton",
    "Walnut", "Titanium",
];
const NOUNS: &[&str] = &[
    "Mug",
    "Backpack",
    "Lamp",
    "Notebook",
    "Chair",
    "Kettle",
    "Scarf",
    "Headphones",
    "Water Bottle",
    "Desk Organizer",
    "Cutting Board",
    "Umbrella",
    "Wallet",
    "Candle",
    "Plant Pot",
    "Bookshelf",
    "Tea Set",
    "Blanket",
    "Watch",
    "Speaker",
];

/// The `i`-th demo product (0-based). Pure: the same `i` always gives the same product.
pub fn demo_product(i: u32) -> Result<NewProduct, Problem> {
    let i_usize = i as usize;
    let adjective = ADJECTIVES[i_usize % ADJECTIVES.len()];
    let material = MATERIALS[(i_usize / ADJECTIVES.len()) % MATERIALS.len()];
    let noun = NOUNS[(i_usize * 7 + i_usize / 3) % NOUNS.len()];
    // A small multiplicative hash spreads prices between $3.99 and $299.99.
    let h = i64::from(i).wrapping_mul(2_654_435_761).rem_euclid(29_600);
    let price_cents = (399 + h) / 100 * 100 + 99;
    let article = if adjective.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "An"
    } else {
        "A"
    };
    let description = format!(
        "{article} {} {} {} from the bazaar demo catalog, item {}.",
        adjective.to_lowercase(),
        material.to_lowercase(),
        noun.to_lowercase(),
        i + 1
    );
    NewProduct::parse(
        &format!("BZ-{:05}", i + 1),
        &format!("{adjective} {material} {noun}"),
        &description,
        price_cents,
        CURRENCY,
        100,
    )
}

/// The first `n` demo products.
pub fn demo_catalog(n: u32) -> Result<Vec<NewProduct>, Problem> {
    (0..n).map(demo_product).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_unique() {
        let a = demo_catalog(1000).unwrap();
        let b = demo_catalog(1000).unwrap();
        assert_eq!(a.len(), 1000);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.sku, y.sku);
            assert_eq!(x.name, y.name);
            assert_eq!(x.price, y.price);
        }
        let skus: std::collections::HashSet<_> =
            a.iter().map(|p| p.sku.as_str().to_owned()).collect();
        assert_eq!(skus.len(), 1000);
        assert!(a.iter().all(|p| (399..=30_099).contains(&p.price.cents())));
    }
}
