-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).
-- `stock` as the API shows it is on_hand - reserved; reservations arrive with checkout.
CREATE TABLE products (
    id           TEXT PRIMARY KEY,
    sku          TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    -- lower-cased name and description, computed in Rust so search behaves the same
    -- on both backends (SQLite's LOWER() only knows ASCII)
    search_text  TEXT NOT NULL,
    price_cents  BIGINT NOT NULL CHECK (price_cents >= 0),
    currency     TEXT NOT NULL,
    on_hand      BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved     BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
