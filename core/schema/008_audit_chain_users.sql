-- v8: tamper-evident audit trail and named users.
-- Every transitions and audit row carries prev_hash and hash (SHA-256 chain per table, see
-- core/audit_chain.py). After these statements the store chains the rows it already has and
-- records the starting point in meta (audit_chain_start), in this migration's transaction.
ALTER TABLE transitions ADD COLUMN prev_hash TEXT;
ALTER TABLE transitions ADD COLUMN hash TEXT;
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;
-- Users with roles; no row: single-user mode (the operating-system user acts, as before).
CREATE TABLE users (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
    password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    created_by TEXT NOT NULL,
    updated REAL
);
-- Data Services bearer tokens of users: only their SHA-256 is kept.
CREATE TABLE user_tokens (
    token_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name),
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX user_tokens_by_user ON user_tokens (user_name);
