-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).
-- Prices are not stored: the catalog owns them and is asked when the cart is shown.
CREATE TABLE cart_items (
    user_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
