-- v12: time travel over the transition log (core/timetravel.py). Indexes to find what happened
-- around a moment (transitions, operator actions, instrument states, inbox items by time), and
-- periodic snapshots of the workcell's order state: a jump to a moment loads the snapshot before
-- it and replays the transitions after it. Snapshots are derived data: dropping them loses nothing.
-- covering for a replay (time, seq, order, from, to): a replay reads the index alone, in time
-- order, however the rows were written
CREATE INDEX IF NOT EXISTS transitions_by_at ON transitions (at, seq, order_id, from_status, to_status);
CREATE INDEX IF NOT EXISTS audit_by_at ON audit (at);
CREATE INDEX IF NOT EXISTS instrument_log_by_at ON instrument_log (instrument_id, at);
CREATE INDEX IF NOT EXISTS inbox_by_created ON inbox (created);
CREATE TABLE IF NOT EXISTS timetravel_snapshots (
    at REAL NOT NULL,
    seq INTEGER NOT NULL,
    transitions INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (at, seq)
);
