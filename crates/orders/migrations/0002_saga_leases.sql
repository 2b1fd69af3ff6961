-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).

-- Who drives an order's saga: one process at a time, for a while. With several
-- replicas of orders each runs the recovery loop; the lease keeps two of them from
-- driving one order at once (correctness never depended on it: every step is
-- idempotent and appends are optimistic, so a lapsed lease costs only duplicate calls).
CREATE TABLE saga_leases (
    order_id    TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
