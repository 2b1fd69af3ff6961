-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).

-- The source of truth: each order's events, numbered. The primary key is the
-- optimistic-concurrency check: two writers appending the same sequence cannot both
-- commit.
CREATE TABLE order_events (
    order_id     TEXT NOT NULL,
    sequence     BIGINT NOT NULL,
    event_type   TEXT NOT NULL,
    data         TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    PRIMARY KEY (order_id, sequence)
);

-- The read projection, rewritten in the same transaction as every append.
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    -- true while the saga still has work to do (pending, or a cancellation running)
    saga_open       BIGINT NOT NULL,
    total_cents     BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    lines           TEXT NOT NULL,
    failure_reason  TEXT,
    payment_id      TEXT,
    version         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, id);
CREATE INDEX orders_open ON orders (saga_open, updated_at);

-- Which order a client's Idempotency-Key created, written with the order itself: a
-- retry after a crash finds the order instead of placing a second one.
CREATE TABLE order_keys (
    user_id   TEXT NOT NULL,
    idem_key  TEXT NOT NULL,
    order_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
