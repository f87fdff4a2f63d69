"""Set-based writes (core/store.py, WriteBatch): the same transitions written through a batch
leave the same rows, the same hash chain and the same results as one statement at a time, and a
bulk action makes one transaction per ``bulk_chunk`` orders with no decision left for the
garbage collector."""

from __future__ import annotations

import asyncio
import gc
import json
import math
from pathlib import Path

import pytest

from core.clock import SystemClock
from core.engine import SimulatedExecutor
from core.engine.decision import Decision
from core.engine.state import RunState, StepState
from core.engine.types import StepRequest
from core.errors import IllegalTransitionError, OrderNotFoundError
from core.orders import Order, OrderStatus
from core.runtime import Runtime
from core.store import DB_FILENAME, Store, WriteBatch, index_pending_text


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
            try:
                commits = rt.store.commit_count
                seen: list[int] = []
                results = await rt.bulk("cancel", runs, who="ann", reason="drill",
                                        progress=lambda n, total: seen.append(n))
                commits = rt.store.commit_count - commits
                for _ in range(3):  # what the cancels set off (attempts winding down) commits too
                    await asyncio.sleep(0.05)
                    await rt.store.drain()
                canceled = set(runs)
                left = [o for o in gc.get_objects() if type(o) in watched and (
                    id(o) not in before or getattr(o, "run_id", None) in canceled
                    or (type(o) is asyncio.Task and o.done()))]
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
