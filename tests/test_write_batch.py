"""Set-based writes (core/store.py, WriteBatch): the same transitions written through a batch
leave the same rows, the same hash chain and the same results as one statement at a time, and a
bulk action makes one transaction per ``bulk_chunk`` orders with no decision left for the
garbage collector."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.clock import SystemClock
from core.engine import SimulatedExecutor
from core.engine.decision import Decision
from core.engine.state import RunState, StepState
from core.engine.types import StepRequest
from core.errors import IllegalTransitionError, OrderNotFoundError
from core.history import HistoryQuery, HistorySearch
from core.orders import Order, OrderStatus
from core.runtime import Runtime
from core.store import BATCH_NOTE_TEXT, DB_FILENAME, Store, WriteBatch, index_pending_text


class FixedClock:
    def __init__(self) -> None:
        self.t = 1_790_000_000.25

    def now(self) -> float:
        self.t += 0.5
        return self.t


def _store(path: Path) -> Store:
    store = Store(path / DB_FILENAME).open()
    store.clock = FixedClock()
    for i in range(6):
        order = Order(identifier=f"O{i}", templateName="Reader.Read", parentIdentifier="O0" if i else None,
                      assignedTo="Reader1" if i == 3 else None)
        store.write_sync(store.new_order_op(order, who="lab"))
    return store


def _changes(store: Store) -> list:
    """Transitions and audit entries of every kind the engine writes: an order changed twice,
    field changes, a start, an end, an assignment cleared, audit entries with and without details."""
    return [
        store.status_op("O1", OrderStatus.Running, who="engine", changes={"assignedTo": "Reader1"}),
        store.audit_op("ann", "cancel run", "O0", "wrong plate", {"n": 1}),
        store.status_op("O1", OrderStatus.Canceled, who="ann", why="Canceled by ann: wrong plate"),
        store.status_op("O2", OrderStatus.Canceled, who="ann", why="Canceled by ann: wrong plate"),
        store.status_op("O3", OrderStatus.Canceled, who="ann", why=None, changes={"assignedTo": None}),
        store.status_op("O4", OrderStatus.Error, who="engine", why="Timeout: 5 s",
                        changes={"outputParameters": []}),
        store.audit_op("ann", "note", None, None),
        store.status_op("O0", OrderStatus.Canceled, who="ann", why="Canceled by ann: wrong plate"),
        store.update_op("O5", {}, numeric_priority=90),
        store.update_op("O1", {}, numeric_priority=10),
    ]


def _everything(c) -> tuple:
    """Every row the changes touch, read inside their transaction (the writer's idle text
    indexing cannot run in between)."""
    return (c.execute("SELECT * FROM orders ORDER BY seq").fetchall(),
            c.execute("SELECT * FROM transitions ORDER BY seq").fetchall(),
            c.execute("SELECT * FROM audit ORDER BY seq").fetchall(),
            c.execute("SELECT * FROM orders_fts_pending ORDER BY seq").fetchall())


def _plain(result):
    if hasattr(result, "row"):
        return (result.seq, result.order_id, result.from_status, result.to_status, result.row, result.data)
    if isinstance(result, tuple):  # an order's fields changed: (order, row); a batch builds no order
        return result[1]
    return result


@pytest.mark.parametrize("note_text", [1, 1_000_000])
def test_a_batch_writes_what_one_statement_at_a_time_writes(tmp_path, monkeypatch, note_text):
    """Same orders rows, transitions with the same seq and hash, audit rows, text index notes and
    results; with ``note_text`` 1 the batch notes the changed text itself, otherwise the trigger does."""
    monkeypatch.setattr("core.store.BATCH_NOTE_TEXT", note_text)
    one, many = _store(tmp_path / "one"), _store(tmp_path / "many")
    try:
        def each(conn):
            index_pending_text(conn, 100)  # the text index is up to date: the changes note what changed
            return [op(conn) for op in _changes(one)], _everything(conn)

        def batched(conn):
            index_pending_text(conn, 100)
            ops = _changes(many)
            batch = WriteBatch(conn, [("order", op.order_id) for op in ops if hasattr(op, "order_id")])
            results = [op.into(batch) for op in ops]
            batch.flush()
            return results, _everything(conn)

        alone, rows_alone = one.write_sync(each)
        together, rows_together = many.write_sync(batched)
        assert [_plain(r) for r in together] == [_plain(r) for r in alone]
        assert rows_together == rows_alone
        assert len(rows_alone[3]) == 5  # the text of every order but the one started changed
        assert many.verify_chain().ok and one.verify_chain().ok
        assert json.loads(many.read_sync(lambda c: c.execute(
            "SELECT data FROM orders WHERE id='O1'").fetchone()[0]))["status"] == "Canceled"
    finally:
        one.close()
        many.close()


def test_a_refused_transition_in_a_batch_changes_nothing_and_names_the_order(tmp_path):
    store = _store(tmp_path)
    try:
        def refused(conn):
            batch = WriteBatch(conn, [("order", "O1")])
            store.status_op("O1", OrderStatus.Running, who="engine").into(batch)
            store.status_op("O2", OrderStatus.Running, who="engine", expected=[OrderStatus.Running]).into(batch)

        before = store.read_sync(_everything)[:3]
        with pytest.raises(IllegalTransitionError, match="O2"):
            store.write_sync(refused)
        with pytest.raises(OrderNotFoundError, match="nope"):
            store.write_sync(lambda conn: store.status_op("nope", OrderStatus.Running, who="x").into(WriteBatch(conn)))
        assert store.read_sync(_everything)[:3] == before
    finally:
        store.close()


STEPS = {"steps": [{"id": "hold", "kind": "Hold.Forever"},
                   {"id": "b", "kind": "Reader.Read", "depends_on": ["hold"]}]}


def test_a_bulk_cancel_is_one_transaction_per_bulk_chunk_and_leaves_no_cycles(tmp_path):
    """The transactions of a bulk action hold ``bulk_chunk`` orders however cheap each is to plan
    (they were one per few milliseconds of planning), and a committed decision is freed by
    reference counting (its event closures once referred back to it)."""
    runs_count, chunk = 150, 60

    async def main():
        executor = SimulatedExecutor(SystemClock(), hang_kinds=["Hold.Forever"])
        rt = Runtime.build(tmp_path, executor=executor, workcell=None, metrics=False)
        rt.bulk_chunk = chunk
        await rt.start(templates_dir=None)
        try:
            await rt.engine.create_template("Hold", STEPS)
            runs = [await rt.start_run("Hold", {}, who="lab", allow_duplicate=True) for _ in range(runs_count)]
            while len(executor.calls) < runs_count:  # noqa: ASYNC110 - a plain list the executor fills
                await asyncio.sleep(0.01)
            executor.calls.clear()  # its record of the requests would keep them alive
            await rt.store.drain()
            gc.collect()
            gc.disable()
            watched = (Decision, RunState, StepState, StepRequest, asyncio.Task)
            before = {id(o) for o in gc.get_objects() if type(o) in watched}  # attempts under way hold theirs
            # what the canceled runs are made of (objects of other tests may share their ids' names)
            targets = {id(x) for run in (rt.engine._runs[r] for r in runs)
                       for x in (run, *run.steps.values(), *(s.request for s in run.steps.values() if s.request),
                                 *(s.task for s in run.steps.values() if s.task))}
            try:
                commits = rt.store.commit_count
                seen: list[int] = []
                results = await rt.bulk("cancel", runs, who="ann", reason="drill",
                                        progress=lambda n, total: seen.append(n))
                commits = rt.store.commit_count - commits
                for _ in range(3):  # what the cancels set off (attempts winding down) commits too
                    await asyncio.sleep(0.05)
                    await rt.store.drain()
                left = [o for o in gc.get_objects() if type(o) in watched and (id(o) not in before or id(o) in targets)]
            finally:
                gc.enable()
            return rt.store.verify_chain().ok, results, commits, seen, left, \
                {a.target for a in rt.store.audit_entries() if a.action == "cancel run"}, runs
        finally:
            await rt.close()

    chain_ok, results, commits, seen, left, audited, runs = asyncio.run(main())
    assert all(r.ok for r in results) and len(results) == runs_count
    assert audited == set(runs) and chain_ok
    assert seen == [60, 120, 150]
    # the bulk's transactions and its closing audit entry (other writes may share them)
    assert commits <= math.ceil(runs_count / chunk) + 1, commits
    # canceled runs are freed by reference counting: their attempts' tasks, requests and steps too
    assert left == [], f"{len(left)} decisions, runs, steps, requests or tasks wait for the garbage collector"


# ------------------------------------------------------------------ transitions: through a batch as alone


@contextlib.contextmanager
def _twins(tmp_path: Path, prepare=None):
    """Two stores with the same orders (and the same ``prepare(store)`` writes, clock included)."""
    stores = [_store(tmp_path / "one"), _store(tmp_path / "many")]
    try:
        for store in stores:
            if prepare is not None:
                prepare(store)
        yield stores
    finally:
        for store in stores:
            store.close()


def _alone_and_batched(one: Store, many: Store, make_ops) -> list:
    """``make_ops(store)`` written one at a time in ``one`` and through one WriteBatch in ``many``:
    the results, rows, chain and text notes must be the same; the batch's results."""
    def each(conn):
        index_pending_text(conn, 100)
        return [op(conn) for op in make_ops(one)], _everything(conn)

    def batched(conn):
        index_pending_text(conn, 100)
        ops = make_ops(many)
        batch = WriteBatch(conn, [("order", op.order_id) for op in ops if hasattr(op, "order_id")])
        results = [op.into(batch) for op in ops]
        batch.flush()
        return results, _everything(conn)

    alone, rows_alone = one.write_sync(each)
    together, rows_together = many.write_sync(batched)
    assert [_plain(r) for r in together] == [_plain(r) for r in alone]
    assert rows_together == rows_alone
    assert many.verify_chain().ok and one.verify_chain().ok
    return together


def _at(store: Store, order_id: str) -> list[float]:
    return [t.at for t in store.transitions(order_id)]


ID, STATUS, NPRI, ASSIGNED, CREATED, STARTED, ENDED, DETAILS = 0, 4, 6, 7, 8, 9, 10, 11
"""Positions in an order's light row (core.store.ORDER_ROW_COLUMNS)."""


def test_one_order_through_many_transitions_in_one_batch(tmp_path):
    """Started once (a resume keeps the first start), ended by Error and again by Complete, a retry
    keeps the end it had, ``why`` is the status details except on Running and when None."""
    def ops(store):
        return [
            store.status_op("O1", OrderStatus.Running, who="engine", changes={"assignedTo": "Reader1"}),
            store.status_op("O1", OrderStatus.Paused, who="ann", why="paused by ann"),
            store.status_op("O1", OrderStatus.Running, who="ann", why="resumed by ann"),
            store.status_op("O1", OrderStatus.Error, who="engine", why="Timeout: 5 s"),
            store.status_op("O1", OrderStatus.Running, who="ann"),
            store.status_op("O1", OrderStatus.Complete, who="engine"),
            store.status_op("O2", OrderStatus.Canceled, who="ann"),
        ]

    with _twins(tmp_path) as (one, many):
        results = _alone_and_batched(one, many, ops)
        at = _at(many, "O1")[1:]  # after Created
        rows = [r.row for r in results]
        assert [r.from_status for r in results[:6]] == [OrderStatus.Created, OrderStatus.Running, OrderStatus.Paused,
                                                       OrderStatus.Running, OrderStatus.Error, OrderStatus.Running]
        assert [r.data["status"] for r in results] == ["Running", "Paused", "Running", "Error", "Running",
                                                       "Complete", "Canceled"]
        assert [r[STARTED] for r in rows[:6]] == [at[0]] * 6
        assert [r[ENDED] for r in rows[:6]] == [None, None, None, at[3], at[3], at[5]]
        assert [r[DETAILS] for r in rows[:6]] == [None, "paused by ann", "paused by ann", "Timeout: 5 s",
                                                  "Timeout: 5 s", "Timeout: 5 s"]
        assert {r[ASSIGNED] for r in rows[:6]} == {"Reader1"}
        assert [r.why for r in many.transitions("O1")][1:] == [None, "paused by ann", "resumed by ann",
                                                               "Timeout: 5 s", None, None]
        canceled = rows[6]
        assert (canceled[STARTED], canceled[ENDED], canceled[DETAILS]) == (None, _at(many, "O2")[1], None)
        saved = many.get_order("O1")
        assert saved.status is OrderStatus.Complete and saved.statusDetails == "Timeout: 5 s"
        assert (saved.actualStartTime.timestamp(), saved.actualEndTime.timestamp()) == (at[0], at[5])
        assert many.order_rows("id = ?", ["O1"]) == [rows[5]]
        assert many.order_rows("id = ?", ["O2"]) == [canceled]


def test_a_creation_time_change_in_a_batch_is_the_rows_created(tmp_path):
    moved = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def ops(store):
        return [
            store.status_op("O3", OrderStatus.Running, who="engine"),
            store.status_op("O3", OrderStatus.Paused, who="lims", changes={"creationTime": moved}),
            store.status_op("O3", OrderStatus.Canceled, who="ann", why="Canceled by ann"),
            store.status_op("O4", OrderStatus.Running, who="lims", changes={"creationTime": moved}),
        ]

    with _twins(tmp_path) as (one, many):
        created = many.get_order("O3").creationTime.timestamp()
        results = _alone_and_batched(one, many, ops)
        assert [r.row[CREATED] for r in results] == [created, moved.timestamp(), moved.timestamp(),
                                                     moved.timestamp()]
        assert many.get_order("O3").creationTime == moved == many.get_order("O4").creationTime


def test_a_refused_transition_names_its_order_alone_and_in_a_batch(tmp_path):
    store = _store(tmp_path)
    try:
        op = store.status_op("O2", OrderStatus.Complete, who="engine", expected=[OrderStatus.Running])
        with pytest.raises(IllegalTransitionError, match="order O2: illegal transition Created -> Complete"):
            store.write_sync(op)
        with pytest.raises(IllegalTransitionError, match="order O2: illegal transition Created -> Complete"):
            store.write_sync(lambda conn: op.into(WriteBatch(conn)))
        allowed = store.status_op("O2", OrderStatus.Running, who="engine", expected=[OrderStatus.Created])

        def write(conn):
            batch = WriteBatch(conn)
            change = allowed.into(batch)
            batch.flush()
            return change

        assert store.write_sync(write).from_status is OrderStatus.Created
        with pytest.raises(OrderNotFoundError, match="'nope'"):
            store.write_sync(store.status_op("nope", OrderStatus.Running, who="x"))
        assert [t.to_status for t in store.transitions("O2")] == [OrderStatus.Created, OrderStatus.Running]
    finally:
        store.close()


# ------------------------------------------------------------------ UpdateOp


def _rich(store: Store) -> None:
    """Order R with every field of its light row set: started, then failed."""
    order = Order(identifier="R", parentIdentifier="O0", templateName="Reader.Read", templateVersion="3",
                  priority="Elevated", notes="plate 7")
    store.write_sync(store.new_order_op(order, who="lab", numeric_priority=40))
    store.write_sync(store.status_op("R", OrderStatus.Running, who="engine", changes={"assignedTo": "Washer2"}))
    store.write_sync(store.status_op("R", OrderStatus.Error, who="engine", why="Jammed"))


def _data_and_updated(store: Store, order_id: str) -> tuple[str, float]:
    return store.read_sync(lambda c: c.execute("SELECT data, updated FROM orders WHERE id = ?",
                                               (order_id,)).fetchone())


def test_only_a_numeric_priority_alone_goes_into_a_batch(tmp_path):
    store = _store(tmp_path)
    try:
        assert store.update_op("O1", {}, numeric_priority=5).into is not None
        assert store.update_op("O1", {"notes": "x"}, numeric_priority=5).into is None
        assert store.update_op("O1", {}).into is None
        assert store.update_op("O1", {"notes": "x"}).into is None
        assert store.update_op("O1", {}, numeric_priority=0).into is not None
    finally:
        store.close()


def test_a_reprioritise_in_a_batch_writes_the_priority_and_the_time_only(tmp_path):
    """The order's JSON is neither rebuilt nor rewritten; its row (status, times and details
    parsed from the JSON) is what one update alone returns and what is stored."""
    with _twins(tmp_path, _rich) as (one, many):
        data_before, updated_before = _data_and_updated(many, "R")
        transitions_before = many.transitions()
        saved = many.get_order("R")
        [(order, row)] = _alone_and_batched(one, many, lambda s: [s.update_op("R", {}, numeric_priority=7)])
        assert order is None
        assert row == ("R", "O0", "Reader.Read", "3", int(OrderStatus.Error), -1, 7, "Washer2",
                       saved.creationTime.timestamp(), saved.actualStartTime.timestamp(),
                       saved.actualEndTime.timestamp(), "Jammed")
        assert many.order_rows("id = ?", ["R"]) == [row]
        data_after, updated_after = _data_and_updated(many, "R")
        assert data_after == data_before
        assert updated_after == many.clock.t > updated_before
        assert many.transitions() == transitions_before


@pytest.mark.parametrize("first", ["status", "priority"])
def test_a_reprioritise_and_a_transition_of_one_order_in_one_batch(tmp_path, first):
    def ops(store):
        pair = [store.status_op("R", OrderStatus.Canceled, who="ann", why="drill"),
                store.update_op("R", {}, numeric_priority=9)]
        return pair if first == "status" else pair[::-1]

    with _twins(tmp_path, _rich) as (one, many):
        results = _alone_and_batched(one, many, ops)
        change = results[0] if first == "status" else results[1]
        _, row = results[1] if first == "status" else results[0]
        stored = many.order_rows("id = ?", ["R"])[0]
        assert (stored[STATUS], stored[NPRI], stored[DETAILS]) == (int(OrderStatus.Canceled), 9, "drill")
        assert stored[ENDED] == _at(many, "R")[-1]
        if first == "status":  # the reprioritise sees the transition's status, end and details
            assert row == stored
        else:
            assert change.row == stored


def test_an_update_of_other_fields_is_written_alone_and_keeps_or_sets_the_numeric_priority(tmp_path):
    store = _store(tmp_path)
    try:
        _rich(store)
        order, row = store.write_sync(store.update_op("R", {"notes": "moved to bay 2"}))
        assert order.notes == "moved to bay 2" and order.status is OrderStatus.Error
        assert row[NPRI] == 40 and store.order_rows("id = ?", ["R"]) == [row]
        order, row = store.write_sync(store.update_op("R", {"notes": "bay 3"}, numeric_priority=2))
        assert row[NPRI] == 2 and store.order_rows("id = ?", ["R"]) == [row]
        assert store.get_order("R").notes == "bay 3"
        assert row[ENDED] == store.get_order("R").actualEndTime.timestamp()
        with pytest.raises(OrderNotFoundError, match="'nope'"):
            store.write_sync(store.update_op("nope", {"notes": "x"}))
        with pytest.raises(OrderNotFoundError, match="'nope'"):
            store.write_sync(lambda conn: store.update_op("nope", {}, numeric_priority=1).into(WriteBatch(conn)))
    finally:
        store.close()


# ------------------------------------------------------------------ WriteBatch reads


def _numbered(path: Path, n: int) -> Store:
    """A store with orders B0000 .. B{n-1}, assigned to Reader1, text index up to date."""
    store = Store(path / DB_FILENAME).open()
    store.clock = FixedClock()
    ops = [store.new_order_op(Order(identifier=f"B{i:04d}", templateName="Reader.Read", assignedTo="Reader1"),
                              who="lab") for i in range(n)]
    store.write_sync(lambda conn: [op(conn) for op in ops])
    store.catch_up_text_index_sync()
    return store


def _traced(conn, fn):
    """``fn()`` with every statement ``conn`` runs (values bound in) recorded: (result, statements)."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        return fn(), statements
    finally:
        conn.set_trace_callback(None)


def _ids_in(statement: str) -> list[str]:
    return re.findall(r"'(B\d{4})'", statement)


@pytest.mark.parametrize("announced", [499, 500, 501, 1001])
def test_a_batch_reads_every_announced_order_at_once_in_chunks(tmp_path, announced):
    store = _numbered(tmp_path, 1002)
    try:
        ids = [f"B{i:04d}" for i in range(announced)]

        def reads(conn):
            batch = WriteBatch(conn, [("order", oid) for oid in ids] + [("run", "B1001")])
            first, statements = _traced(conn, lambda: batch.order(ids[-1]))
            again, more = _traced(conn, lambda: [batch.order(oid) for oid in ids])
            late, late_reads = _traced(conn, lambda: batch.order("B1001"))
            with pytest.raises(OrderNotFoundError, match="'nope'"):
                batch.order("nope")
            return first, statements, again, more, late, late_reads

        first, statements, again, more, late, late_reads = store.write_sync(reads)
        assert len(statements) == math.ceil(announced / 500)
        assert sorted(oid for s in statements for oid in _ids_in(s)) == ids
        assert max(len(_ids_in(s)) for s in statements) == min(announced, 500)
        assert more == [] and again[-1] is first
        assert [e.data["identifier"] for e in again] == ids
        assert {(e.status, e.numeric_priority, e.started) for e in again} == {(int(OrderStatus.Created), 50, None)}
        assert {e.indexed for e in again} == {("Reader1", None)}
        assert [_ids_in(s) for s in late_reads] == [["B1001"]] and late.data["identifier"] == "B1001"
    finally:
        store.close()


def test_maybe_asks_once_per_kind_for_every_announced_key_in_chunks(tmp_path):
    store = _numbered(tmp_path, 3)
    try:
        asked: list[tuple[str, list]] = []

        def fetch(kind):
            def run(conn, keys):
                asked.append((kind, list(keys)))
                marks = ",".join("?" * len(keys))
                return {r[0] for r in conn.execute(f"SELECT id FROM orders WHERE id IN ({marks})", keys)}
            return run

        def answers(conn):
            keys = [f"B{i:04d}" for i in range(1001)]
            batch = WriteBatch(conn, [("a", k) for k in keys] + [("b", "B0002")])
            found = [batch.maybe("a", "B0001", fetch("a")), batch.maybe("a", "B0999", fetch("a")),
                     batch.maybe("a", "B0002", fetch("a"))]
            calls_a = [(kind, len(keys)) for kind, keys in asked]
            found += [batch.maybe("a", "B0003", fetch("a")), batch.maybe("a", "zzz", fetch("a")),
                      batch.maybe("b", "B0002", fetch("b")), batch.maybe("b", "B0000", fetch("b")),
                      batch.maybe("c", "B0001", fetch("c"))]  # a kind nobody announced
            batch.flush()
            found.append(batch.maybe("a", "B0001", fetch("a")))
            return found, calls_a

        found, calls_a = store.write_sync(answers)
        assert found == [True, False, True, False, False, True, True, True, True]
        assert calls_a == [("a", 500), ("a", 500), ("a", 2)]
        # announced or asked before: no call; after the flush the announced keys are asked again
        assert asked[3:7] == [("a", ["zzz"]), ("b", ["B0002", "B0002"]), ("b", ["B0000"]), ("c", ["B0001"])]
        assert [(kind, len(keys)) for kind, keys in asked[7:]] == [("a", 500), ("a", 500), ("a", 2)]
    finally:
        store.close()


def test_after_a_flush_a_batch_reads_afresh(tmp_path):
    """A write outside the batch between two flushes (an update alone, a chained row alone) is
    seen by the batch's next read, and the first flush's rows are not written twice."""
    store = _store(tmp_path)
    try:
        def mixed(conn):
            batch = WriteBatch(conn, [("order", "O1")])
            store.status_op("O1", OrderStatus.Running, who="engine").into(batch)
            store.audit_op("ann", "note", "O1").into(batch)
            batch.many("INSERT INTO meta (key, value) VALUES (?, ?)", ("batch.test", "1"))
            batch.flush()
            store.update_op("O1", {"notes": "written alone"})(conn)
            store.audit_op("bob", "note", "O1")(conn)
            store.status_op("O1", OrderStatus.Paused, who="ann", why="lunch").into(batch)
            store.audit_op("ann", "resume", "O1").into(batch)
            batch.flush()
            batch.flush()

        store.write_sync(mixed)
        saved = store.get_order("O1")
        assert (saved.status, saved.notes, saved.statusDetails) == (OrderStatus.Paused, "written alone", "lunch")
        assert [t.to_status for t in store.transitions("O1")] == [OrderStatus.Created, OrderStatus.Running,
                                                                  OrderStatus.Paused]
        assert [(a.who, a.action) for a in store.audit_entries("O1")] == [("ann", "note"), ("bob", "note"),
                                                                         ("ann", "resume")]
        assert store.verify_chain().ok
    finally:
        store.close()


# ------------------------------------------------------------------ text index notes


@pytest.mark.parametrize("changed", [15, 16, 17])
def test_text_changed_in_a_batch_is_found_below_and_at_the_threshold(tmp_path, changed):
    """Below BATCH_NOTE_TEXT changed orders the update trigger notes them for the text index, from
    it on the batch does in one statement; either way the index then finds the new status
    details and instrument and no longer the old instrument."""
    assert BATCH_NOTE_TEXT == 16
    store = _numbered(tmp_path, 20)
    try:
        ids = [f"B{i:04d}" for i in range(changed)]

        def cancel(conn):
            index_pending_text(conn, 100)
            batch = WriteBatch(conn, [("order", oid) for oid in ids])
            for oid in ids:
                store.status_op(oid, OrderStatus.Canceled, who="ann", why="Canceled by ann: spill",
                                changes={"assignedTo": "Washer9"}).into(batch)
            _, statements = _traced(conn, batch.flush)
            notes = [s for s in statements if s.startswith("INSERT OR IGNORE INTO orders_fts_pending (seq, indexed, id")]
            return notes, conn.execute("SELECT indexed, id, instrument, details FROM orders_fts_pending "
                                       "ORDER BY seq").fetchall()

        notes, pending = store.write_sync(cancel)
        if changed >= BATCH_NOTE_TEXT:
            assert [_ids_in(s) for s in notes] == [ids]
        else:
            assert notes == []
        assert pending == [(1, oid, "Reader1", None) for oid in ids]  # what the index holds for each
        search = HistorySearch(store)

        def found(text):
            return sorted(r[ID] for r in search.search_sync(HistoryQuery(text=text)).rows)

        assert found("spill") == ids and found("Washer9") == ids
        assert found("Reader1") == [f"B{i:04d}" for i in range(changed, 20)]
    finally:
        store.close()


def test_transitions_that_change_no_indexed_text_note_nothing(tmp_path):
    store = _numbered(tmp_path, 20)
    try:
        def start(conn):
            index_pending_text(conn, 100)
            batch = WriteBatch(conn, [("order", f"B{i:04d}") for i in range(20)])
            for i in range(20):
                store.status_op(f"B{i:04d}", OrderStatus.Running, who="engine", why="started").into(batch)
            batch.flush()
            return conn.execute("SELECT count(*) FROM orders_fts_pending").fetchone()[0]

        assert store.write_sync(start) == 0
        assert store.count_orders("status = ?", [int(OrderStatus.Running)]) == 20
    finally:
        store.close()


def test_more_changed_text_than_one_read_is_noted_in_chunks(tmp_path):
    store = _numbered(tmp_path, 501)
    try:
        ids = [f"B{i:04d}" for i in range(501)]

        def cancel(conn):
            index_pending_text(conn, 1000)
            batch = WriteBatch(conn, [("order", oid) for oid in ids])
            for oid in ids:
                store.status_op(oid, OrderStatus.Canceled, who="ann", why="bulk").into(batch)
            _, statements = _traced(conn, batch.flush)
            notes = [s for s in statements if s.startswith("INSERT OR IGNORE INTO orders_fts_pending (seq, indexed, id")]
            return [_ids_in(s) for s in notes], conn.execute("SELECT count(*) FROM orders_fts_pending").fetchone()[0]

        notes, pending = store.write_sync(cancel)
        assert notes == [ids[:500], ids[500:]] and pending == 501
        store.catch_up_text_index_sync()
        assert store.read_sync(lambda c: c.execute(
            "SELECT count(*) FROM orders_fts WHERE orders_fts MATCH 'bulk'").fetchone()[0]) == 501
    finally:
        store.close()


# ------------------------------------------------------------------ the chain


def test_a_batchs_chained_rows_verify_and_a_tampered_one_is_named(tmp_path):
    def ops(store):
        return [store.status_op("O1", OrderStatus.Running, who="engine"),
                store.audit_op("ann", "pause run", "O1", "lunch", {"n": 2}),
                store.status_op("O1", OrderStatus.Paused, who="ann", why="lunch"),
                store.status_op("O2", OrderStatus.Running, who="engine"),
                store.audit_op("ann", "note", None, None)]

    with _twins(tmp_path) as (one, many):
        results = _alone_and_batched(one, many, ops)
        seqs = [t.seq for t in many.transitions()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert [a.seq for a in many.audit_entries()] == [results[1], results[4]] == [results[1], results[1] + 1]
        forged = results[2].seq
        with sqlite3.connect(many.path) as raw:
            raw.execute("UPDATE transitions SET why = 'coffee' WHERE seq = ?", (forged,))
        raw.close()
        report = many.verify_chain()
        assert not report.ok
        assert (report.first_problem.table, report.first_problem.seq) == ("transitions", forged)
