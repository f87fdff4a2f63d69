"""The text index of orders is brought up to date after the write (migration 14): a write only
notes the orders out of date; the writer indexes them when idle, a search catches up first, and
an archived order leaves the index with what it was indexed with. On a real store."""

from __future__ import annotations

import logging
import random
import sqlite3
import time

import core.store as store_module
from core.history import HistoryQuery, HistorySearch
from core.orders import Order, OrderStatus
from core.store import Store, index_pending_text

WORDS = [f"w{n:04d}x" for n in range(400)]


def fts_ids(store: Store, word: str) -> set[str]:
    """Orders whose index entry holds ``word``, read from the index itself (no catch-up)."""
    return {r[0] for r in store.read_sync(lambda c: c.execute(
        "SELECT o.id FROM orders_fts f JOIN orders o ON o.seq = f.rowid WHERE orders_fts MATCH ?",
        (word,)).fetchall())}


def pending(store: Store) -> int:
    return int(store.read_sync(lambda c: c.execute("SELECT count(*) FROM orders_fts_pending").fetchone()[0]))


def test_a_write_notes_the_order_and_leaves_the_indexing_for_later(data_dir):
    store = Store(data_dir / "s.sqlite3").open()
    try:
        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            order, _ = store.new_order_op(Order(templateName="Reader.Read", notes="alpha"), who="t")(conn)
            store.status_op(order.identifier, OrderStatus.Canceled, who="t", why="door beta open")(conn)
            in_index = conn.execute("SELECT count(*) FROM orders_fts WHERE orders_fts MATCH 'beta'").fetchone()[0]
            noted = conn.execute("SELECT count(*) FROM orders_fts_pending").fetchone()[0]
            return in_index, noted

        assert store.write_sync(op) == (0, 1), "not indexed in the write, noted once"
        # a search finds it at once: it catches the index up first
        page = HistorySearch(store).search_sync(HistoryQuery(text="beta"))
        assert len(page.rows) == 1 and pending(store) == 0
    finally:
        store.close()


def test_the_writer_catches_up_when_idle(data_dir):
    store = Store(data_dir / "s.sqlite3").open()
    try:
        ids = [store.write_sync(store.new_order_op(Order(templateName="Sealer.Seal", notes=w), who="t"))[0].identifier
               for w in WORDS[:50]]
        deadline = time.monotonic() + 30
        while pending(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending(store) == 0 and store.text_indexed >= 50
        assert fts_ids(store, WORDS[7]) == {ids[7]}
    finally:
        store.close()


def test_the_index_matches_the_orders_after_changes_deletes_and_catch_ups(data_dir):
    """Random details, instruments and notes changed several times between catch-ups, some
    orders deleted (as the archive does) while out of date: every word finds exactly the
    orders that hold it now."""
    rng = random.Random(14)
    store = Store(data_dir / "s.sqlite3").open()
    try:
        ids = [store.write_sync(store.new_order_op(Order(templateName="Reader.Read", notes=rng.choice(WORDS)),
                                                   who="t"))[0].identifier for _ in range(120)]
        gone: set[str] = set()
        for rnd in range(6):
            def change(conn: sqlite3.Connection, rnd: int = rnd) -> None:
                for oid in rng.sample([i for i in ids if i not in gone], 40):
                    what = rng.random()
                    if what < 0.4:
                        status = OrderStatus.Running if rnd % 2 else OrderStatus.Scheduled
                        store.status_op(oid, status, who="t", why=rng.choice(WORDS))(conn)
                    elif what < 0.7:
                        store.update_op(oid, {"assignedTo": rng.choice(WORDS), "notes": rng.choice(WORDS)})(conn)
                    elif what < 0.8:
                        if rng.random() < 0.5:  # out of date when deleted
                            store.update_op(oid, {"notes": rng.choice(WORDS)})(conn)
                        conn.execute("DELETE FROM orders WHERE id = ?", (oid,))
                        gone.add(oid)
                    else:
                        store.update_op(oid, {"notes": rng.choice(WORDS)})(conn)

            store.write_sync(change)
            if rnd % 2:
                store.write_sync(lambda c: index_pending_text(c, rng.randint(1, 60)))  # part of it
        store.catch_up_text_index_sync()
        assert pending(store) == 0
        now = {oid: store.get_order(oid) for oid in ids if oid not in gone}
        for word in WORDS:
            expected = {oid for oid, o in now.items()
                        if word in (o.statusDetails, o.assignedTo, o.notes)}
            assert fts_ids(store, word) == expected, word
    finally:
        store.close()


def test_a_failed_catch_up_names_the_database_error_and_keeps_the_orders_noted(data_dir, caplog):
    """The text index cannot be written (here: its table is gone): the writer says why, in
    SQLite's words, and the orders stay noted for the next try; the orders themselves are kept."""
    caplog.set_level(logging.WARNING, logger="core.store")
    store = Store(data_dir / "s.sqlite3").open()
    try:
        store.write_sync(lambda c: c.execute("DROP TABLE orders_fts"))
        made = store.write_sync(store.new_order_op(Order(templateName="Sealer.Seal", notes="gamma"), who="t"))[0]

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if "text index not brought up to date" in r.getMessage()]

        deadline = time.monotonic() + 30
        while not said() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said()[0] == (f"{store.path}: text index not brought up to date: no such table: orders_fts "
                             "(next try after the next write)")
        assert pending(store) == 1 and store.get_order(made.identifier).notes == "gamma"
    finally:
        store.close()


def test_the_count_of_orders_indexed_when_idle_adds_up_over_batches(data_dir, monkeypatch):
    """A backlog longer than one batch is indexed in several idle batches; the store's count of
    orders indexed is their sum (12 orders in batches of 5: 5 + 5 + 2)."""
    monkeypatch.setattr(store_module, "TEXT_INDEX_BATCH", 5)
    store = Store(data_dir / "s.sqlite3").open()
    try:
        def twelve(conn: sqlite3.Connection) -> list[str]:
            return [store.new_order_op(Order(templateName="Sealer.Seal", notes=w), who="t")(conn)[0].identifier
                    for w in WORDS[:12]]

        ids = store.write_sync(twelve)
        deadline = time.monotonic() + 30
        while pending(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        store.write_sync(lambda c: None)  # the writer has finished its last idle batch
        assert (pending(store), store.text_indexed) == (0, 12)
        assert fts_ids(store, WORDS[11]) == {ids[11]}
    finally:
        store.close()
