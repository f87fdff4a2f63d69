-- v4: operator state of instruments, their state history, duplicate-submission keys of runs
CREATE TABLE instruments (
    id TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL DEFAULT 1,
    in_service INTEGER NOT NULL DEFAULT 1,
    updated REAL,
    updated_by TEXT
);
CREATE TABLE instrument_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instrument_id TEXT NOT NULL,
    at REAL NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    detail TEXT,
    order_ids TEXT
);
CREATE INDEX instrument_log_by_instrument ON instrument_log (instrument_id, seq);
ALTER TABLE runs ADD COLUMN dedup_key TEXT;
ALTER TABLE runs ADD COLUMN requester TEXT;
CREATE INDEX runs_by_dedup ON runs (dedup_key, created);
