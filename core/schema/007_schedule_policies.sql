-- v7: what a schedule does with runs it missed, and blackout windows in which no schedule fires
ALTER TABLE schedules ADD COLUMN missed TEXT NOT NULL DEFAULT 'once';
ALTER TABLE schedules ADD COLUMN missed_cap INTEGER NOT NULL DEFAULT 10;
CREATE TABLE schedule_blackouts (
    id TEXT PRIMARY KEY,
    start_at REAL NOT NULL,
    end_at REAL NOT NULL,
    policy TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL
);
CREATE INDEX schedule_blackouts_by_end ON schedule_blackouts (end_at);
