-- v11: notifications of escalated inbox items beyond the window (webhook, e-mail), one row per
-- item and channel: pending (due at `due`, retried with backoff), sent, failed (gave up) or
-- dropped (the item was answered before it went out)
CREATE TABLE inbox_notices (
    item_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    error TEXT,
    sent_at REAL,
    PRIMARY KEY (item_id, channel)
);
CREATE INDEX inbox_notices_due ON inbox_notices (state, due);
