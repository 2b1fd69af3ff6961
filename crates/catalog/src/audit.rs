//! The catalog's invariants, checked by `bazaar audit`.

use sqlx::AnyPool;

/// Every violated stock invariant, in words.
pub async fn violations(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    let mut found = Vec::new();
    let negative: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, sku, on_hand, reserved FROM products \
         WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand",
    )
    .fetch_all(pool)
    .await?;
    for (id, sku, on_hand, reserved) in negative {
        found.push(format!(
            "product {sku} ({id}): negative stock (on hand {on_hand}, reserved {reserved})"
        ));
    }
    // What a product shows as reserved must be exactly its active reservations.
    // (SUM over BIGINT is NUMERIC on PostgreSQL: cast back for the Any driver.)
    let drift: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT p.id, p.sku, p.reserved, CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) \
         FROM products p \
         LEFT JOIN reservation_lines l ON l.product_id = p.id \
             AND l.order_id IN (SELECT order_id FROM reservations WHERE state = 'active') \
         GROUP BY p.id, p.sku, p.reserved \
         HAVING p.reserved <> COALESCE(SUM(l.quantity), 0)",
    )
    .fetch_all(pool)
    .await?;
    for (id, sku, reserved, active) in drift {
        found.push(format!(
            "product {sku} ({id}): reserved {reserved} but active reservations hold {active}"
        ));
    }
    Ok(found)
}
