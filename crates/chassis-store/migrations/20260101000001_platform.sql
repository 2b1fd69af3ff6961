-- Platform tables every module store has (chassis::outbox, ::inbox, ::idempotency).
-- Versioned far above module migrations (0001, 0002, ...) so both sets share one
-- _sqlx_migrations table without colliding. Portable SQL: SQLite and PostgreSQL.

-- Events written in the same transaction as the state change they describe; the
-- relay publishes unsent rows and stamps sent_at.
CREATE TABLE outbox (
    id          TEXT PRIMARY KEY,
    topic       TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    sent_at     BIGINT
);
CREATE INDEX outbox_unsent ON outbox (sent_at, id);

-- Events a consumer has applied, recorded in the same transaction as the effect.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Events a consumer gave up on after its retries.
CREATE TABLE dead_letters (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    topic      TEXT NOT NULL,
    envelope   TEXT NOT NULL,
    error      TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    failed_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Idempotency keys: the first request's fingerprint and, once done, its response.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,
    status_code  BIGINT,
    response     TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
