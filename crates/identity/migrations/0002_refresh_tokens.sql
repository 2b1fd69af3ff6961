-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see chassis::store).
-- Refresh tokens, stored only as their SHA-256. One family is one sign-in (a
-- session): each refresh rotates to a new token of the same family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- When it was exchanged for its successor; a second use revokes the family.
    used_at    BIGINT,
    -- When logout, a password change or a reuse revoked it.
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
