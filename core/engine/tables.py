"""Every read and write of the ``runs`` and ``step_runs`` tables (the engine owns them).

Functions take a connection: writes run inside the engine's decisions on the store's writer
thread, reads on a reader connection (``store.read`` / ``store.read_sync``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from core.engine.state import RunState, StepState
from core.states import RunStatus, StepStatus

Row = tuple[Any, ...]

RUN_COLUMNS = ("run_id, template_name, template_version, status, priority, input_data, "
               "recovery_attempts, paused, error, created, started, ended, deadline")
STEP_COLUMNS = ("step_id, order_id, status, attempt, outputs, error, error_code, started, ended, "
                "next_attempt_at, instrument")

_STEP_ERROR_STATES = frozenset({StepStatus.FAILED, StepStatus.UNKNOWN, StepStatus.RETRYING})


# ------------------------------------------------------------------ writes (decisions)


def insert_run(conn: sqlite3.Connection, run_id: str, template_name: str, template_version: int,
               priority: int, inputs: dict[str, Any], created: float, dedup: str, requester: str,
               steps: Sequence[tuple[str, str]]) -> None:
    """A new run (pending) and its steps (``(step_id, order_id)``, pending)."""
    conn.execute("INSERT INTO runs (run_id, template_name, template_version, status, priority, "
                 "input_data, context, created, dedup_key, requester) VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (run_id, template_name, template_version, RunStatus.PENDING.value, priority,
                  json.dumps(inputs), "{}", created, dedup, requester))
    conn.executemany("INSERT INTO step_runs (run_id, step_id, order_id, status) VALUES (?,?,?,?)",
                     [(run_id, sid, oid, StepStatus.PENDING.value) for sid, oid in steps])


def earlier_duplicate(conn: sqlite3.Connection, dedup: str, since: float) -> Row | None:
    """(run_id, created) of the latest run with the same dedup key created after ``since``."""
    found: Row | None = conn.execute("SELECT run_id, created FROM runs WHERE dedup_key = ? AND created > ? "
                                     "ORDER BY created DESC LIMIT 1", (dedup, since)).fetchone()
    return found


def step_row(run_id: str, state: StepState) -> Row:
    """The parameters of :func:`write_step` for the step's current in-memory state."""
    return (state.status.value, state.attempt,
            json.dumps(state.outputs) if state.outputs is not None else None,
            state.error if state.status in _STEP_ERROR_STATES else None, state.error_code,
            state.started, state.ended, state.next_attempt_at, state.instrument, run_id, state.step.id)


STEP_UPDATE_SQL = ("UPDATE step_runs SET status=?, attempt=?, outputs=?, error=?, error_code=?, "
                   "started=?, ended=?, next_attempt_at=?, instrument=? WHERE run_id=? AND step_id=?")
"""The statement :func:`write_step` runs (parameters: :func:`step_row`)."""


def write_step(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(STEP_UPDATE_SQL, row)


def run_row(run: RunState) -> Row:
    """The parameters of :func:`write_run` for the run's current in-memory state."""
    return (run.status.value, int(run.paused), run.error, run.recovery_attempts, run.priority,
            run.started, run.ended, run.deadline, run.run_id)


RUN_UPDATE_SQL = ("UPDATE runs SET status=?, paused=?, error=?, recovery_attempts=?, priority=?, "
                  "started=?, ended=?, deadline=? WHERE run_id=?")
"""The statement :func:`write_run` runs (parameters: :func:`run_row`)."""


def write_run(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(RUN_UPDATE_SQL, row)


# ------------------------------------------------------------------ reads


def load(conn: sqlite3.Connection, run_id: str) -> tuple[Row | None, list[Row], Row | None]:
    """(run row in RUN_COLUMNS order, step rows in STEP_COLUMNS order, (Biosero priority,
    scheduled start) of the run's order)."""
    run = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    steps = conn.execute(f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = ?", (run_id,)).fetchall()
    parent: Row | None = conn.execute("SELECT priority, scheduled FROM orders WHERE id = ?", (run_id,)).fetchone()
    return run, steps, parent


def unfinished(conn: sqlite3.Connection, only: str | None = None) -> list[str]:
    """Runs the store says are not finished (oldest first)."""
    sql = "SELECT run_id FROM runs WHERE status IN ('pending', 'running', 'paused', 'recovering') "
    if only is not None:
        return [r[0] for r in conn.execute(sql + "AND run_id = ?", (only,))]
    return [r[0] for r in conn.execute(sql + "ORDER BY created")]


def pending_or_cancelled(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT run_id, status FROM runs WHERE status IN ('pending', 'cancelled') "
                        "ORDER BY created").fetchall()


def run_exists(conn: sqlite3.Connection, run_id: str) -> bool:
    return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None


def target(conn: sqlite3.Connection, order_id: str) -> tuple[str | None, str | None]:
    """(run_id, step_id) an order stands for: (id, None) for a run, (None, None) if neither."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (order_id,)).fetchone():
        return order_id, None
    step = conn.execute("SELECT run_id, step_id FROM step_runs WHERE order_id = ?", (order_id,)).fetchone()
    return (step[0], step[1]) if step else (None, None)


def status_counts(conn: sqlite3.Connection, template_name: str | None) -> list[Row]:
    """(status, count, mean duration of finished ones) per run status."""
    where, params = ("WHERE template_name = ?", (template_name,)) if template_name else ("", ())
    return conn.execute(
        f"SELECT status, count(*), avg(CASE WHEN ended IS NOT NULL AND started IS NOT NULL "
        f"THEN ended - started END) FROM runs {where} GROUP BY status", params).fetchall()


def query(conn: sqlite3.Connection, *, status: str | None, created_after: float | None,
          priority_min: int | None, template: str | None, limit: int, offset: int
          ) -> tuple[list[Row], int]:
    """A page of runs, newest first, and how many match (indexed columns only)."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (("status = ?", status), ("created > ?", created_after),
                          ("priority >= ?", priority_min), ("template_name = ?", template)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    total = conn.execute(f"SELECT count(*) FROM runs {where}", params).fetchone()[0]
    rows = conn.execute(f"SELECT run_id, template_name, template_version, status, priority, created, "
                        f"started, ended, error FROM runs {where} ORDER BY created DESC LIMIT ? OFFSET ?",
                        (*params, limit, offset)).fetchall()
    return rows, total


def template_usage(conn: sqlite3.Connection) -> list[Row]:
    """(template_name, runs, last created) per template."""
    return conn.execute("SELECT template_name, count(*), max(created) FROM runs "
                        "GROUP BY template_name").fetchall()


def targets(conn: sqlite3.Connection, order_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """What each order stands for: ``order_id -> (run_id, step_id)`` (step_id None for a run);
    orders that are neither are left out. Two indexed queries per 500 ids."""
    out: dict[str, tuple[str, str | None]] = {}
    for i in range(0, len(order_ids), 500):
        part = list(order_ids[i:i + 500])
        marks = ",".join("?" * len(part))
        for (run_id,) in conn.execute(f"SELECT run_id FROM runs WHERE run_id IN ({marks})", part):
            out[run_id] = (run_id, None)
        for run_id, step_id, order_id in conn.execute(
                f"SELECT run_id, step_id, order_id FROM step_runs WHERE order_id IN ({marks})", part):
            out[order_id] = (run_id, step_id)
    return out
