-- v5: which remote Data Services order each local order answers (remote mode of the console's
-- Data Services link). Earlier versions created this table on the fly; IF NOT EXISTS lets stores
-- that already have it migrate cleanly.
CREATE TABLE IF NOT EXISTS ds_links (
    local_id TEXT PRIMARY KEY,
    remote_id TEXT NOT NULL,
    adopted INTEGER NOT NULL DEFAULT 0
);
