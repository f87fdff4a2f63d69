-- v3: the embedded Data Services server: order templates, the event log, idempotency keys of
-- order creates. Orders themselves live in the orders table. IF NOT EXISTS keeps this file safe
-- to apply once more should migration numbering shift.
CREATE TABLE IF NOT EXISTS ds_templates (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    is_hidden INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ds_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT,
    created REAL NOT NULL,
    start REAL,
    "end" REAL,
    association_id TEXT,
    actor_id TEXT,
    module_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ds_events_by_topic ON ds_events (topic, created, seq);
CREATE INDEX IF NOT EXISTS ds_events_by_created ON ds_events (created, seq);
CREATE INDEX IF NOT EXISTS ds_events_by_association ON ds_events (association_id, seq);
CREATE TABLE IF NOT EXISTS ds_idempotency (
    key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    created REAL NOT NULL
);
