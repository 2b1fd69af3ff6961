-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).
-- Every row is a sum that events add to with `ON CONFLICT ... DO UPDATE SET n = n +
-- excluded.n`, inside the consumer's inbox transaction: exact under redelivery.

-- Scalar counters: orders_confirmed, revenue_cents, orders_cancelled,
-- refunded_cents, payment_declines, payments_captured_cents, payments_refunded_cents.
CREATE TABLE sales_counters (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);

-- Failed orders per reason (out_of_stock, payment_declined, ...).
CREATE TABLE sales_failures (
    reason  TEXT PRIMARY KEY,
    orders  BIGINT NOT NULL
);

CREATE TABLE sales_by_product (
    product_id       TEXT PRIMARY KEY,
    units            BIGINT NOT NULL,
    revenue_cents    BIGINT NOT NULL,
    units_cancelled  BIGINT NOT NULL
);
CREATE INDEX sales_by_product_revenue ON sales_by_product (revenue_cents);

-- Confirmations per minute of the event's occurred_at (start of the minute, in
-- microseconds since the epoch).
CREATE TABLE sales_by_minute (
    minute_start   BIGINT PRIMARY KEY,
    orders         BIGINT NOT NULL,
    revenue_cents  BIGINT NOT NULL
);
