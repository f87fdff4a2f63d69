-- v14: the text index of orders (orders_fts, v9) is brought up to date after the write, not in
-- it. A transition's commit used to pay for re-indexing the order (an FTS delete and insert) when
-- its status details or instrument changed: about 40 % of the writer's time in a bulk cancel.
-- Now the triggers only note which orders are out of date in orders_fts_pending (with the
-- values the index holds for them, which a contentless FTS table needs to delete an entry), and
-- the store's writer indexes them in batches when it is idle, before a text search, and in the
-- write it is doing once many are waiting (core/store.py, Store.catch_up_text_index).
CREATE TABLE orders_fts_pending (
    seq INTEGER PRIMARY KEY,     -- orders.seq (the index's rowid) of an order not indexed as it is
    indexed INTEGER NOT NULL,    -- 1: the index holds the values below for it; 0: nothing yet
    id TEXT,
    template TEXT,
    instrument TEXT,
    details TEXT,
    notes TEXT
);
DROP TRIGGER orders_fts_insert;
DROP TRIGGER orders_fts_update;
DROP TRIGGER orders_fts_delete;
CREATE TRIGGER orders_fts_insert AFTER INSERT ON orders BEGIN
    INSERT OR IGNORE INTO orders_fts_pending (seq, indexed) VALUES (new.seq, 0);
END;
-- The first change of an indexed value since the order was last indexed records what the index
-- holds; later ones find it pending (one primary-key probe) and cost nothing more.
CREATE TRIGGER orders_fts_update
AFTER UPDATE OF id, seq, template_name, assigned_to, status_details, data ON orders
WHEN NOT EXISTS (SELECT 1 FROM orders_fts_pending WHERE seq = old.seq)
     AND (old.id IS NOT new.id OR old.seq IS NOT new.seq OR old.template_name IS NOT new.template_name
          OR old.assigned_to IS NOT new.assigned_to OR old.status_details IS NOT new.status_details
          OR json_extract(old.data, '$.notes') IS NOT json_extract(new.data, '$.notes'))
BEGIN
    INSERT INTO orders_fts_pending (seq, indexed, id, template, instrument, details, notes)
    VALUES (old.seq, 1, old.id, old.template_name, old.assigned_to, old.status_details,
            json_extract(old.data, '$.notes'));
    INSERT OR IGNORE INTO orders_fts_pending (seq, indexed) SELECT new.seq, 0 WHERE new.seq IS NOT old.seq;
END;
-- A deleted order (archived) leaves the index with the values the index holds for it.
CREATE TRIGGER orders_fts_delete AFTER DELETE ON orders BEGIN
    INSERT INTO orders_fts (orders_fts, rowid, id, template, instrument, details, notes)
    SELECT 'delete', old.seq, id, template, instrument, details, notes
    FROM orders_fts_pending WHERE seq = old.seq AND indexed = 1;
    INSERT INTO orders_fts (orders_fts, rowid, id, template, instrument, details, notes)
    SELECT 'delete', old.seq, old.id, old.template_name, old.assigned_to, old.status_details,
           json_extract(old.data, '$.notes')
    WHERE NOT EXISTS (SELECT 1 FROM orders_fts_pending WHERE seq = old.seq);
    DELETE FROM orders_fts_pending WHERE seq = old.seq;
END;
