-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).
-- The failed-login throttle's state (src/throttle.rs), in the database so that every
-- identity replica throttles alike and a restart forgets nothing. Times in µs.
CREATE TABLE login_failures (
    -- 'account' (the normalised email, whether or not it is registered) or 'ip'.
    scope         TEXT NOT NULL,
    subject       TEXT NOT NULL,
    failures      BIGINT NOT NULL,
    last_at       BIGINT NOT NULL,
    -- Attempts before this are refused without checking the password.
    blocked_until BIGINT,
    PRIMARY KEY (scope, subject)
);
CREATE INDEX login_failures_last ON login_failures (last_at);

-- Per account, the client IPs that signed in to it (or registered it) successfully.
CREATE TABLE login_known_clients (
    account TEXT NOT NULL,
    ip      TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (account, ip)
);
CREATE INDEX login_known_clients_seen ON login_known_clients (seen_at);
