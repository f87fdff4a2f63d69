"""Store reads that go in batches, on a real SQLite file: the text index catch-up before a search
(several writes of a bounded size, exactly as many orders as waited), the run made for each order
(500 ids per query, duplicates, the newest of several runs), the runs adopted for other orders,
and what waits for a person (paused runs, failed and outcome-unknown steps of unfinished runs)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

import core.store as store_module
from core.engine import tables
from core.orders import Order, OrderStatus
from core.store import Store


def pending(store: Store) -> int:
    return int(store.read_sync(lambda c: c.execute("SELECT count(*) FROM orders_fts_pending").fetchone()[0]))


def indexed(store: Store) -> int:
    return int(store.read_sync(lambda c: c.execute("SELECT count(*) FROM orders_fts WHERE orders_fts MATCH 'reader'").fetchone()[0]))


@pytest.fixture
def quiet_store(data_dir, monkeypatch):
    """A store whose writer never indexes on its own (it would be idle for an hour first) and whose
    catch-up indexes 7 orders per write, so a handful of orders cross the batch size."""
    monkeypatch.setattr(store_module, "TEXT_INDEX_IDLE", 3600.0)
    monkeypatch.setattr(store_module, "TEXT_INDEX_CATCH_UP", 7)
    store = Store(data_dir / "s.sqlite3").open()
    yield store
    store.close()


def add_orders(store: Store, count: int, **fields) -> list[str]:
    def op(conn: sqlite3.Connection) -> list[str]:
        return [store.new_order_op(Order(templateName="Reader.Read", notes=f"n{i}", **fields), who="t")(conn)[0]
                .identifier for i in range(count)]

    return store.write_sync(op)


@pytest.mark.parametrize("count", [20, 14, 7, 3])
def test_a_catch_up_indexes_every_waiting_order_in_bounded_writes_and_says_how_many(quiet_store, count):
    """20 = 7 + 7 + 6, 14 = 7 + 7 + 0, 7 = 7 + 0, 3: every waiting order is indexed, the count
    returned is exactly theirs, and one write never indexes more than the batch size."""
    store = quiet_store
    add_orders(store, count)
    assert pending(store) == count and indexed(store) == 0
    commits = store.commit_count
    assert store.catch_up_text_index_sync() == count
    assert pending(store) == 0 and indexed(store) == count
    assert store.commit_count - commits == count // 7 + 1, "one write per batch, the last one short"
    assert store.catch_up_text_index_sync() == 0


@pytest.mark.parametrize("count", [20, 14, 3])
def test_the_asynchronous_catch_up_counts_like_the_synchronous_one(quiet_store, count):
    store = quiet_store
    add_orders(store, count)

    async def catch_up() -> tuple[int, int, int]:
        commits = store.commit_count
        first = await store.catch_up_text_index()
        made = store.commit_count - commits
        return first, made, await store.catch_up_text_index()

    first, made, again = asyncio.run(catch_up())
    assert (first, again) == (count, 0)
    assert made == count // 7 + 1
    assert pending(store) == 0 and indexed(store) == count


def test_a_catch_up_with_nothing_waiting_writes_nothing(quiet_store):
    store = quiet_store
    add_orders(store, 3)
    assert store.catch_up_text_index_sync() == 3
    commits = store.commit_count
    assert store.catch_up_text_index_sync() == 0
    assert asyncio.run(store.catch_up_text_index()) == 0
    assert store.commit_count == commits, "an up-to-date index costs no write"


def add_runs(store: Store, pairs: list[tuple[str, str | None]], status: str = "running") -> None:
    """Orders ``run id`` (made for ``parent``, when given) with a run row each."""

    def op(conn: sqlite3.Connection) -> None:
        for i, (run_id, parent) in enumerate(pairs):
            store.new_order_op(Order(identifier=run_id, parentIdentifier=parent, templateName="Plate"), who="t")(conn)
            conn.execute("INSERT INTO runs (run_id, template_name, template_version, status, input_data, context, "
                         "created) VALUES (?, 'Plate', 1, ?, '{}', '{}', ?)", (run_id, status, 1000.0 + i))

    store.write_sync(op)


def test_runs_for_orders_crosses_its_500_id_batches_and_keeps_the_newest_run(store):
    """1,203 orders (three queries of at most 500 ids), each with a run; the first one has a
    second, newer run; ids asked twice and ids without a run are left out quietly."""
    orders = add_orders(store, 1203)
    add_runs(store, [(f"R{i:04d}", oid) for i, oid in enumerate(orders)])
    add_runs(store, [("R-newer", orders[0])])
    asked = [*orders, orders[0], orders[600], "no-such-order", "R0001"]
    found = store.runs_for_orders(asked)
    assert len(found) == 1203
    assert found[orders[0]] == "R-newer"
    assert found[orders[499]] == "R0499" and found[orders[500]] == "R0500"
    assert found[orders[999]] == "R0999" and found[orders[1000]] == "R1000" and found[orders[1202]] == "R1202"
    assert all(found[oid] == f"R{i:04d}" for i, oid in enumerate(orders) if i)
    assert store.runs_for_orders([]) == {}
    assert store.runs_for_orders([orders[1202]]) == {orders[1202]: "R1202"}


def test_adopted_runs_crosses_its_500_id_batches_and_leaves_other_runs_out(store):
    orders = add_orders(store, 1001)
    add_runs(store, [(f"R{i:04d}", oid) for i, oid in enumerate(orders)])
    add_runs(store, [("Own", None)])
    asked = [f"R{i:04d}" for i in range(1001)] + ["Own", orders[3]]
    assert store.adopted_runs(asked) == {f"R{i:04d}": oid for i, oid in enumerate(orders)}
    assert store.adopted_runs(["R1000"]) == {"R1000": orders[1000]}


def put_steps(store: Store, rows: list[tuple[str, str, str, str | None, float | None, float | None]]) -> None:
    """``(run id, step id, status, error, started, ended)`` step rows (order id: ``run/step``)."""

    def op(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO step_runs (run_id, step_id, order_id, status, error, started, ended) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(r, s, f"{r}/{s}", st, e, a, b) for r, s, st, e, a, b in rows])

    store.write_sync(op)


def test_needing_attention_lists_paused_runs_then_failed_and_unknown_steps_of_unfinished_runs(store):
    add_runs(store, [("P1", None)], status="paused")
    add_runs(store, [("P2", None)], status="paused")
    store.write_sync(lambda c: c.execute("UPDATE runs SET error = 'door open' WHERE run_id = 'P2'"))
    store.write_sync(lambda c: c.execute("UPDATE runs SET created = 500.0 WHERE run_id = 'P2'"))  # older
    add_runs(store, [("A", None)])
    add_runs(store, [("Done", None)], status="completed")
    add_runs(store, [("Gone", None)], status="cancelled")
    add_runs(store, [("Failing", None)], status="failed")
    put_steps(store, [
        ("A", "read", "failed", "timeout", 10.0, 30.0),
        ("A", "seal", "unknown", None, 20.0, None),  # no end yet: when it started
        ("A", "wash", "completed", None, 1.0, 2.0),
        ("A", "peel", "running", None, 3.0, None),
        ("Done", "read", "failed", "old", 1.0, 5.0),
        ("Gone", "read", "unknown", None, 1.0, 6.0),
        ("Failing", "read", "failed", "jam", 4.0, 25.0),
    ])
    got = store.needing_attention()
    paused, steps = got[:2], got[2:]
    assert [(k, o, r, s, e) for k, o, r, s, e, _ in paused] == [
        ("paused", "P2", "P2", None, "door open"), ("paused", "P1", "P1", None, None)]
    # a paused run is "since" its latest transition (its creation here: no change after it)
    latest = {t.order_id: t.at for t in store.transitions()}
    assert [since for *_, since in paused] == [latest["P2"], latest["P1"]]
    assert sorted((k, o, r, s, e, since) for k, o, r, s, e, since in steps) == [
        ("failed", "A/read", "A", "read", "timeout", 30.0),
        ("failed", "Failing/read", "Failing", "read", "jam", 25.0),
        ("unknown", "A/seal", "A", "seal", None, 20.0),
    ]
    assert [o for _, o, *_ in steps] == ["A/seal", "Failing/read", "A/read"], "oldest end first"
    assert [o for _, o, *_ in store.needing_attention(limit=1)] == ["P2", "A/seal"], "the limit is per kind"


def test_a_paused_run_without_transitions_is_since_its_creation(store):
    add_runs(store, [("P", None)], status="paused")
    store.write_sync(lambda c: c.execute("DELETE FROM transitions WHERE order_id = 'P'"))
    [(kind, _, _, _, _, since)] = store.needing_attention()
    assert (kind, since) == ("paused", 1000.0)


def test_needing_attention_is_empty_when_nothing_waits(store):
    add_runs(store, [("A", None)])
    put_steps(store, [("A", "read", "completed", None, 1.0, 2.0)])
    assert store.needing_attention() == []


def test_orders_by_id_prefix_finds_each_spelling_with_template_and_status(store):
    """``order_1`` finds ``Order_1…`` (typed, capitalised, upper or lower case), by id, at most
    ``limit``, each as (id, template name, status)."""
    ids = add_orders(store, 12)  # Order_00001 … Order_00012
    store.write_sync(store.status_op(ids[10], OrderStatus.Canceled, who="t"))
    store.write_sync(lambda c: store.new_order_op(Order(identifier="order_lower", templateName="Sealer.Seal"),
                                                  who="t")(c))
    assert store.orders_by_id_prefix("order_0001") == [
        ("Order_00010", "Reader.Read", int(OrderStatus.Created)),
        ("Order_00011", "Reader.Read", int(OrderStatus.Canceled)),
        ("Order_00012", "Reader.Read", int(OrderStatus.Created))]
    assert store.orders_by_id_prefix("ORDER_0000", limit=3) == [
        (f"Order_0000{n}", "Reader.Read", int(OrderStatus.Created)) for n in (1, 2, 3)]
    # two spellings find two each: the first two by id are kept
    assert [r[0] for r in store.orders_by_id_prefix("order_", limit=2)] == ["Order_00001", "Order_00002"]
    assert store.orders_by_id_prefix("Order_l") == [("order_lower", "Sealer.Seal", int(OrderStatus.Created))]
    assert store.orders_by_id_prefix("  ") == [] and store.orders_by_id_prefix("Nothing") == []


def test_scan_order_rows_gives_every_row_in_arrival_order(store):
    ids = add_orders(store, 30)
    store.write_sync(store.update_op(ids[3], {"notes": "changed"}))  # a change keeps its place

    def consume(rows):
        return [(r[0], r[2]) for r in rows]

    assert store.scan_order_rows(consume) == [(oid, "Reader.Read") for oid in ids]
    assert store.scan_order_rows(lambda rows: sum(1 for _ in rows)) == 30


@pytest.mark.parametrize("level, pragma", [("normal", 1), ("Full", 2), ("extra", 3), ("OFF", 0)])
def test_synchronous_is_taken_in_any_case_and_applied(data_dir, level, pragma):
    store = Store(data_dir / "s.sqlite3", synchronous=level).open()
    try:
        assert store.synchronous == level.upper()
        assert store.write_sync(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == pragma
    finally:
        store.close()


def test_a_closed_store_opens_again_and_reads_on_the_same_thread(data_dir):
    """Close drops the calling thread's reader with the others: the store opened again reads
    through a new one (what the writer committed before the close is there). Its writer thread
    is named, for thread dumps."""
    store = Store(data_dir / "s.sqlite3").open()
    try:
        assert "store-writer" in {t.name for t in threading.enumerate()}
        ids = add_orders(store, 3)
        assert store.count_orders() == 3
        store.close()
        store.open()
        more = add_orders(store, 2)
        assert store.count_orders() == 5 and store.get_order(ids[0]).identifier == ids[0]
        assert store.get_order(more[1]).identifier == more[1]
    finally:
        store.close()


def test_a_writer_never_idle_takes_a_batch_of_the_text_backlog_with_its_writes(data_dir, monkeypatch):
    """Past TEXT_INDEX_BEHIND orders out of date, every TEXT_INDEX_CHECK_EVERY-th commit indexes
    a batch along with its write, until the backlog is down to the bound (never idle here)."""
    monkeypatch.setattr(store_module, "TEXT_INDEX_IDLE", 3600.0)
    monkeypatch.setattr(store_module, "TEXT_INDEX_BEHIND", 10)
    monkeypatch.setattr(store_module, "TEXT_INDEX_BATCH", 5)
    monkeypatch.setattr(store_module, "TEXT_INDEX_CHECK_EVERY", 2)
    store = Store(data_dir / "s.sqlite3").open()
    try:
        add_orders(store, 30)  # commit 1: not a check
        seen = [(pending(store), store.text_indexed)]
        for n in range(10):
            store.write_sync(store.audit_op("t", "note", None, f"write {n}"))
            seen.append((pending(store), store.text_indexed))
        assert seen == [(30, 0), (25, 5), (25, 5), (20, 10), (20, 10), (15, 15), (15, 15), (10, 20), (10, 20), (10, 20), (10, 20)]
        assert indexed(store) == 20
    finally:
        store.close()


def test_order_log_tells_each_transition_with_who_and_why(store):
    [oid] = add_orders(store, 1)
    store.write_sync(store.status_op(oid, OrderStatus.Canceled, who="ann", why="plate dropped"))
    texts = [(kind, order, text) for _, kind, order, text in store.order_log([oid])]
    assert texts[:2] == [("transition", oid, "Created by t"),
                         ("transition", oid, "Created → Canceled by ann: plate dropped")]


def test_a_store_in_a_directory_not_made_yet_makes_it_with_its_parents(tmp_path):
    path = tmp_path / "lab" / "console" / "data" / "s.sqlite3"
    store = Store(path).open()
    try:
        add_orders(store, 1)
        assert path.is_file() and store.count_orders() == 1
    finally:
        store.close()


def test_an_orders_log_words_instrument_rows_with_and_without_detail(store):
    """What the dispatcher writes to ``instrument_log`` for an order, in time order: a first row
    (no previous state), a change with its detail and one without."""
    rows = [("Sealer", 10.0, None, "Ready", None, '["O1"]'),
            ("Sealer", 11.0, "Ready", "Busy", "running O1", '["O1", "O2"]'),
            ("Sealer", 12.0, "Busy", "Ready", "", '["O1"]'),
            ("Reader", 13.0, "Ready", "Busy", "running O3", '["O3"]')]
    store.write_sync(lambda c: c.executemany(
        "INSERT INTO instrument_log (instrument_id, at, from_status, to_status, detail, order_ids) "
        "VALUES (?,?,?,?,?,?)", rows))
    store.clock = type("At", (), {"now": staticmethod(lambda: 12.0)})()
    store.write_sync(store.new_order_op(Order(identifier="O1", templateName="Seal"), who="lims"))
    # at the same moment: the transition, then the audit entry, then the instrument (as read)
    store.write_sync(store.audit_op("ann", "note", "O1"))
    assert store.order_log(["O1"]) == [(10.0, "instrument", "O1", "Sealer Ready"),
                                       (11.0, "instrument", "O1", "Sealer Ready → Busy: running O1"),
                                       (12.0, "transition", "O1", "Created by lims"),
                                       (12.0, "audit", "O1", "note by ann"),
                                       (12.0, "instrument", "O1", "Sealer Busy → Ready")]


def test_the_targets_of_a_bulk_action_cross_their_500_id_batches(store):
    """1,001 runs and a step of each, asked in one list (five queries of at most 500 ids): every
    run and every step is found, the 501st and the last included; other ids are left out."""
    runs = [f"R{i:04d}" for i in range(1001)]
    add_runs(store, [(r, None) for r in runs])
    put_steps(store, [(r, "read", "running", None, 1.0, None) for r in runs])
    steps = [f"{r}/read" for r in runs]
    found = store.read_sync(lambda c: tables.targets(c, [*runs, *steps, "no-such-order"]))
    assert len(found) == 2002
    assert found["R0500"] == ("R0500", None) and found["R1000"] == ("R1000", None)
    assert found["R0500/read"] == ("R0500", "read") and found["R0000/read"] == ("R0000", "read")
    assert all(found[r] == (r, None) for r in runs)
    assert all(found[f"{r}/read"] == (r, "read") for r in runs)
    found = store.read_sync(lambda c: tables.targets(c, runs))
    assert sorted(found) == runs
