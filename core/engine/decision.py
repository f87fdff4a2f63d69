"""One engine decision or operator action, committed as one transaction.

A :class:`Decision` collects what one decision changes — step and run states (their rows, their
orders' transitions), order fields, audit entries — while the engine updates its memory. The
engine then commits it: instruments listed in ``stops`` are asked to stop first, every write goes
to the store in one transaction, the events are published after the commit, and ``then``
callbacks (starting attempts, waking waiters) run last. A crash therefore leaves an action either
fully recorded with its audit entry or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from core.engine import tables
from core.engine.state import RunState, StepState
from core.engine.types import StepRequest, StopReason
from core.events import EventBus, OperatorAction, OrderUpdated, RunChanged, StepChanged
from core.ledger import Ledger
from core.states import (
    DONE_OK,
    RUN_ORDER_STATUS,
    STEP_FINAL,
    STEP_ORDER_STATUS,
    RunStatus,
    StepStatus,
)
from core.store import StatusChange, StatusOp, WriteBatch

ENGINE = "engine"
"""*who* of the engine's own decisions in the transition log."""

Write = Callable[[sqlite3.Connection], Any]
Publish = Callable[[Any, EventBus], None]

_DETAIL_KEPT = frozenset({StepStatus.QUEUED, StepStatus.RETRYING, StepStatus.PENDING})
"""Step states whose detail (why it waits) is kept on the order as ``statusDetails``."""


class Decision:
    """The writes, events, instrument stops and follow-ups of one decision (see module doc)."""

    __slots__ = ("ledger", "_writes", "_publish", "stops", "then", "undo")

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._writes: list[Write] = []
        self._publish: list[Publish | None] = []
        self.stops: list[tuple[StepRequest, asyncio.Task[None]]] = []
        """Attempts to stop on their instruments before the commit."""
        self.then: list[Callable[[], object]] = []
        """Run after the commit and its events, in order."""
        self.undo: list[Callable[[], object]] = []
        """Run instead when the commit fails (gives back instruments claimed for it)."""

    def __bool__(self) -> bool:
        return bool(self._writes or self.stops or self.then)

    def write(self, fn: Write, publish: Publish | None = None) -> None:
        self._writes.append(fn)
        self._publish.append(publish)

    # ------------------------------------------------------------------ what a decision records

    def step(self, run: RunState, state: StepState, status: StepStatus, detail: str | None = None, *,
             changes: dict[str, Any] | None = None, who: str = ENGINE) -> None:
        """The step is now ``status``: its ``step_runs`` row and its order's transition."""
        previous = state.status
        state.status = status
        if (previous in STEP_FINAL) != (status in STEP_FINAL):
            run.unfinished += -1 if status in STEP_FINAL else 1
        if (previous in DONE_OK) != (status in DONE_OK):
            for child in run.children.get(state.step.id, ()):
                run.waiting[child] += -1 if status in DONE_OK else 1
        order_changes = dict(changes or {})
        if detail is not None and status in _DETAIL_KEPT:
            order_changes["statusDetails"] = detail
        order_status = STEP_ORDER_STATUS[status]
        status_op = self.ledger.store.status_op(state.order_id, order_status, who=who, why=detail,
                                              changes=order_changes or None) \
            if order_status is not STEP_ORDER_STATUS[previous] or order_changes or detail else None
        row = tables.step_row(run.run_id, state)
        event = StepChanged(run_id=run.run_id, step_id=state.step.id, order_id=state.order_id,
                            status=status, attempt=state.attempt, detail=detail,
                            instrument=state.instrument)

        ledger = self.ledger  # not self: a closure held by the decision would make it a cycle

        def publish(change: StatusChange | None, bus: EventBus) -> None:
            if change is not None:
                ledger.publish_change(change, who, detail)
            bus.publish(event)

        self.write(_RowAndStatus(tables.STEP_UPDATE_SQL, row, status_op), publish)

    def run(self, run: RunState, status: RunStatus, detail: str | None = None, *, who: str = ENGINE,
            changes: dict[str, Any] | None = None) -> None:
        """The run is now ``status``: its ``runs`` row and its parent order's transition."""
        run.status = status
        row = tables.run_row(run)
        status_op = self.ledger.store.status_op(run.run_id, RUN_ORDER_STATUS[status], who=who, why=detail,
                                              changes=changes)
        event = RunChanged(run_id=run.run_id, template_name=run.template.name,
                           template_version=run.template.version, status=status, detail=detail)

        ledger = self.ledger  # not self: a closure held by the decision would make it a cycle

        def publish(change: StatusChange, bus: EventBus) -> None:
            ledger.publish_change(change, who, detail)
            bus.publish(event)

        self.write(_RowAndStatus(tables.RUN_UPDATE_SQL, row, status_op), publish)

    def run_fields(self, run: RunState) -> None:
        """The run's row changed without a status change (priority, recovery count)."""
        self.write(_RowAndStatus(tables.RUN_UPDATE_SQL, tables.run_row(run), None))

    def order_fields(self, order_id: str, changes: dict[str, Any], *,
                     numeric_priority: int | None = None) -> None:
        op = self.ledger.store.update_op(order_id, changes, numeric_priority)
        fields = tuple(changes) or (("priority",) if numeric_priority is not None else ())

        def publish(result: Any, bus: EventBus) -> None:
            bus.publish(OrderUpdated(order_id=order_id, fields=fields, row=result[1]))

        self.write(op, publish)

    def audit(self, who: str, action: str, target: str | None, reason: str | None,
              details: dict[str, Any] | None = None) -> None:
        """An operator action (or an automatic decision made on one's behalf), in the same commit."""
        op = self.ledger.store.audit_op(who, action, target, reason, details)
        event = OperatorAction(who=who, action=action, target=target, reason=reason)
        self.write(op, lambda _seq, bus: bus.publish(event))

    def stop(self, state: StepState, reason: StopReason) -> None:
        """The step's attempt ends with this decision: its own result no longer counts, and its
        instrument is asked to stop before the commit (if the attempt is under way)."""
        request, task = state.request, state.task
        state.stop_reason = reason
        state.request = None
        if request is not None and task is not None and not task.done():
            self.stops.append((request, task))

    # ------------------------------------------------------------------ committing

    def apply(self, conn: sqlite3.Connection) -> list[Any]:
        """Every write, in order (on the writer thread, inside one transaction). Writes that can
        go into a :class:`~core.store.WriteBatch` (status transitions, audit entries, the engine's
        rows, inbox items closed) are written set-based; any other write first flushes what the
        batch holds, so it sees every earlier write."""
        return apply_all([self], conn)[0]

    def batch_keys(self) -> list[tuple[str, Any]]:
        return [key for w in self._writes if (key := getattr(w, "batch_key", None)) is not None]

    def apply_into(self, batch: WriteBatch) -> list[Any]:
        results = []
        for w in self._writes:
            into = getattr(w, "into", None)
            if into is not None:
                results.append(into(batch))
            else:
                batch.flush()
                results.append(w(batch.conn))
        return results

    def published(self, results: list[Any]) -> None:
        bus = self.ledger.bus
        for publish, result in zip(self._publish, results, strict=True):
            if publish is not None:
                publish(result, bus)

    def merge(self, other: Decision) -> None:
        self._writes += other._writes
        self._publish += other._publish
        self.stops += other.stops
        self.then += other.then
        self.undo += other.undo


class _RowAndStatus:
    """A write of the engine's own row (``runs`` or ``step_runs``) with its order's transition,
    alone or into a batch."""

    __slots__ = ("sql", "row", "status_op", "batch_key")

    def __init__(self, sql: str, row: tables.Row, status_op: StatusOp | None) -> None:
        self.sql, self.row, self.status_op = sql, row, status_op
        self.batch_key = ("order", status_op.order_id) if status_op is not None else None

    def __call__(self, conn: sqlite3.Connection) -> StatusChange | None:
        conn.execute(self.sql, self.row)
        return self.status_op(conn) if self.status_op is not None else None

    def into(self, batch: WriteBatch) -> StatusChange | None:
        batch.many(self.sql, self.row)
        return self.status_op.into(batch) if self.status_op is not None else None


def apply_all(decisions: Sequence[Decision], conn: sqlite3.Connection) -> list[list[Any]]:
    """Every write of ``decisions``, in order, through one :class:`~core.store.WriteBatch` (on the
    writer thread, inside one transaction); each decision's results."""
    batch = WriteBatch(conn, [key for d in decisions for key in d.batch_keys()])
    results = [d.apply_into(batch) for d in decisions]
    batch.flush()
    return results
