-- v020: history at scale. Indexes for the live window (unfinished orders plus recently finished
-- ones) and for searching all history newest first (by seq) in keyset pages, and an FTS5 index
-- over the text an operator searches for (id, template, instrument, status details, notes).
-- The FTS table is contentless (the text lives in orders): rowid = orders.seq. Triggers keep it
-- current on INSERT, on DELETE and on an UPDATE that changes an indexed value (a transition that
-- changes none of them costs the WHEN test only). Every statement is safe to apply once more.
CREATE INDEX IF NOT EXISTS orders_by_seq ON orders (seq);
CREATE INDEX IF NOT EXISTS orders_by_source ON orders (source_id);
CREATE INDEX IF NOT EXISTS orders_by_ended ON orders (ended);
CREATE INDEX IF NOT EXISTS orders_by_status_seq ON orders (status, seq);
CREATE INDEX IF NOT EXISTS orders_by_template_seq ON orders (template_name, seq);
-- finished without an end time (a step canceled before it started): few, for the live window
CREATE INDEX IF NOT EXISTS orders_unended ON orders (created)
    WHERE ended IS NULL AND status IN (1, 6, 7, 8, 9);
CREATE VIRTUAL TABLE IF NOT EXISTS orders_fts USING fts5 (
    id, template, instrument, details, notes,
    content = '', detail = none, columnsize = 0, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS orders_fts_insert AFTER INSERT ON orders BEGIN
    INSERT INTO orders_fts (rowid, id, template, instrument, details, notes)
    VALUES (new.seq, new.id, new.template_name, new.assigned_to, new.status_details,
            json_extract(new.data, '$.notes'));
END;
CREATE TRIGGER IF NOT EXISTS orders_fts_delete AFTER DELETE ON orders BEGIN
    INSERT INTO orders_fts (orders_fts, rowid, id, template, instrument, details, notes)
    VALUES ('delete', old.seq, old.id, old.template_name, old.assigned_to, old.status_details,
            json_extract(old.data, '$.notes'));
END;
CREATE TRIGGER IF NOT EXISTS orders_fts_update
AFTER UPDATE OF id, seq, template_name, assigned_to, status_details, data ON orders
WHEN old.id IS NOT new.id OR old.seq IS NOT new.seq OR old.template_name IS NOT new.template_name
     OR old.assigned_to IS NOT new.assigned_to OR old.status_details IS NOT new.status_details
     OR json_extract(old.data, '$.notes') IS NOT json_extract(new.data, '$.notes')
BEGIN
    INSERT INTO orders_fts (orders_fts, rowid, id, template, instrument, details, notes)
    VALUES ('delete', old.seq, old.id, old.template_name, old.assigned_to, old.status_details,
            json_extract(old.data, '$.notes'));
    INSERT INTO orders_fts (rowid, id, template, instrument, details, notes)
    VALUES (new.seq, new.id, new.template_name, new.assigned_to, new.status_details,
            json_extract(new.data, '$.notes'));
END;
INSERT INTO orders_fts (orders_fts) VALUES ('delete-all');
INSERT INTO orders_fts (rowid, id, template, instrument, details, notes)
SELECT seq, id, template_name, assigned_to, status_details, json_extract(data, '$.notes') FROM orders;
