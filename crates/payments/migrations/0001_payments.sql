-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents > 0),
    refunded_cents  BIGINT NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0 AND refunded_cents <= amount_cents),
    currency        TEXT NOT NULL,
    -- captured | partially_refunded | refunded
    status          TEXT NOT NULL,
    provider_ref    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id);

-- Append-only money movements: captured - refunded is computed from here.
CREATE TABLE ledger (
    id              TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    -- capture | refund
    kind            TEXT NOT NULL,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents > 0),
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);
