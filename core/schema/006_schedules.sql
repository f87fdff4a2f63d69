-- v5: schedules (created by the schedules module itself before v5, so the table may exist)
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    frequency TEXT NOT NULL,
    cron TEXT,
    at TEXT,
    timezone TEXT NOT NULL,
    inputs TEXT NOT NULL,
    priority INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    next_run REAL,
    last_run REAL,
    last_run_id TEXT,
    created_by TEXT NOT NULL
);
ALTER TABLE schedules ADD COLUMN last_error TEXT;
