-- v13: a read-only role, viewer. SQLite cannot change a CHECK constraint in place: the users
-- table is rebuilt (the store turns foreign keys off for migrations and runs
-- foreign_key_check before committing, so user_tokens keeps pointing at the same names).
CREATE TABLE users_v13 (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'supervisor', 'admin')),
    password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    created_by TEXT NOT NULL,
    updated REAL
);
INSERT INTO users_v13 (name, role, password_hash, enabled, created, created_by, updated)
    SELECT name, role, password_hash, enabled, created, created_by, updated FROM users;
DROP TABLE users;
ALTER TABLE users_v13 RENAME TO users;
