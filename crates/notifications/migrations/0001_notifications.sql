-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).

-- Who to write to. Order events carry only a user id; identity's UserRegistered
-- carries the address, and is kept here (never read from identity's tables).
CREATE TABLE recipients (
    user_id     TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    name        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One row per email sent. The id is the id of the event that caused it, and
-- event_id is unique besides: a redelivered event cannot make a second email.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    -- the address it was sent to
    recipient   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    -- welcome | order_confirmed | order_failed | order_cancelled
    kind        TEXT NOT NULL,
    order_id    TEXT,
    sent_at     BIGINT NOT NULL
);
CREATE INDEX notifications_order ON notifications (order_id, kind);
