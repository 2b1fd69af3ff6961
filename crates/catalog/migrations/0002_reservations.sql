-- Stock reservations for orders: all lines of an order or none.
CREATE TABLE reservations (
    order_id    TEXT PRIMARY KEY,
    -- active | committed | released | restocked
    state       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (state, expires_at);

CREATE TABLE reservation_lines (
    order_id    TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
