"""Read models of runs: frozen views built from the store, in the seeds' shapes.

They never touch the engine's memory, so they work the same for a run in flight, a finished
run and a run another process created.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.clock import to_datetime
from core.engine import tables
from core.engine.registry import TemplateRegistry
from core.errors import NotFoundError
from core.states import DONE_OK, RunStatus, StepStatus
from core.store import Store
from core.windows import Late, late_of


@dataclass(frozen=True, slots=True)
class StepView:
    id: str
    name: str
    kind: str
    order_id: str
    status: StepStatus
    attempt: int
    outputs: dict[str, Any] | None
    error: str | None
    error_code: str | None
    started_at: float | None
    completed_at: float | None
    instrument: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "order_id": self.order_id,
                "status": self.status.value, "attempt": self.attempt, "outputs": self.outputs,
                "error": self.error, "error_code": self.error_code, "started_at": self.started_at,
                "completed_at": self.completed_at, "instrument": self.instrument}


@dataclass(frozen=True, slots=True)
class RunView:
    id: str
    template_name: str
    template_version: int
    status: RunStatus
    priority: int
    input_data: dict[str, Any]
    recovery_attempts: int
    max_recovery_attempts: int
    error: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    steps: tuple[StepView, ...]
    """In template order."""
    late: tuple[Late, ...] = ()
    """Time windows (and the deadline) that did not hold, with by how much (core.windows)."""

    def step(self, step_id: str) -> StepView:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise NotFoundError(f"run {self.id} has no step '{step_id}' "
                            f"(steps: {', '.join(s.id for s in self.steps)})")

    def steps_in(self, *statuses: StepStatus) -> list[StepView]:
        return [s for s in self.steps if s.status in statuses]

    def as_dict(self) -> dict[str, Any]:
        """Seed 001's instance shape."""
        return {"id": self.id, "template_name": self.template_name,
                "template_version": self.template_version, "status": self.status.value,
                "priority": self.priority, "input_data": self.input_data,
                "recovery_attempts": self.recovery_attempts, "error": self.error,
                "created_at": self.created_at, "started_at": self.started_at,
                "completed_at": self.completed_at, "steps": [s.as_dict() for s in self.steps],
                "late": [late.as_dict() for late in self.late]}


class RunViews:
    """Frozen views of runs, statistics and queries, read from the store."""

    def __init__(self, store: Store, templates: TemplateRegistry) -> None:
        self.store = store
        self.templates = templates

    def exists(self, run_id: str) -> bool:
        return self.store.read_sync(lambda c: tables.run_exists(c, run_id))

    def run(self, run_id: str) -> RunView:
        r, steps, _ = self.store.read_sync(lambda c: tables.load(c, run_id))
        if r is None:
            raise NotFoundError(f"no run '{run_id}'")
        template = self.templates.get(r[1], r[2])
        by_id = {s[0]: s for s in steps}
        views = []
        for step in template.steps:
            s = by_id.get(step.id)
            if s is None:
                continue
            views.append(StepView(step.id, step.label, step.kind, s[1], StepStatus(s[2]), s[3],
                                  json.loads(s[4]) if s[4] else None, s[5], s[6], s[7], s[8], s[10]))
        late = late_of(template, {v.id: v.started_at for v in views}, {v.id: v.completed_at for v in views},
                       r[10], r[11]) if template.deadline is not None or any(
                           s.start_within is not None for s in template.steps) else []
        return RunView(r[0], r[1], r[2], RunStatus(r[3]), r[4], json.loads(r[5]), r[6],
                       template.max_recovery_attempts, r[8], r[9], r[10], r[11], tuple(views), tuple(late))

    def progress(self, run_id: str) -> dict[str, Any]:
        """Seed 002's progress report."""
        run = self.run(run_id)
        steps = run.steps
        total = len(steps)
        done = sum(1 for s in steps if s.status in DONE_OK)
        failed = sum(1 for s in steps if s.status.needs_operator)
        running = sum(1 for s in steps if s.status in (StepStatus.RUNNING, StepStatus.QUEUED,
                                                         StepStatus.RETRYING))
        current = next((i for i, s in enumerate(steps) if s.status not in DONE_OK), total - 1)
        return {
            "workflow_id": run_id, "job_id": run_id, "status": run.status.value,
            "progress": round(100 * done / total) if total else 100, "current_step": current,
            "total_steps": total, "completed_tasks": done, "failed_tasks": failed,
            "running_tasks": running, "total_tasks": total,
            "recovery_attempts": run.recovery_attempts,
            "max_recovery_attempts": run.max_recovery_attempts,
            "started_at": _iso(run.started_at), "completed_at": _iso(run.completed_at),
            "tasks": [{"id": s.id, "order_id": s.order_id, "name": s.name, "type": s.kind,
                       "status": s.status.value, "retry_count": max(0, (s.attempt or 0) - 1),
                       "error_message": s.error} for s in steps],
        }

    def statistics(self, template_name: str | None = None) -> dict[str, Any]:
        """Seed 001's statistics, per template or overall (one GROUP BY query)."""
        rows = self.store.read_sync(lambda c: tables.status_counts(c, template_name))
        counts = {r[0]: r[1] for r in rows}
        total = sum(counts.values())
        completed, failed = counts.get("completed", 0), counts.get("failed", 0)
        finished = completed + failed + counts.get("cancelled", 0)
        durations = [r[2] for r in rows if r[2] is not None and r[0] == "completed"]
        return {
            "total_instances": total,
            "running_instances": counts.get("running", 0) + counts.get("recovering", 0),
            "pending_instances": counts.get("pending", 0),
            "paused_instances": counts.get("paused", 0),
            "completed_instances": completed, "failed_instances": failed,
            "cancelled_instances": counts.get("cancelled", 0),
            "success_rate": round(100.0 * completed / finished, 1) if finished else 0.0,
            "avg_duration_seconds": round(durations[0], 3) if durations else 0.0,
        }

    def query(self, status: str | None = None, created_after: float | datetime | None = None,
              priority_min: int | None = None, template: str | None = None,
              limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Seed 001's ``query_instances`` → (page of runs, total matching), from indexed columns."""
        after = created_after.timestamp() if isinstance(created_after, datetime) else created_after
        rows, total = self.store.read_sync(lambda c: tables.query(
            c, status=RunStatus(status.lower()).value if status is not None else None,
            created_after=after, priority_min=priority_min, template=template, limit=limit,
            offset=offset))
        return ([{"id": r[0], "template_name": r[1], "template_version": r[2], "status": r[3],
                  "priority": r[4], "created_at": r[5], "started_at": r[6], "completed_at": r[7],
                  "error": r[8]} for r in rows], total)


def _iso(ts: float | None) -> str | None:
    return to_datetime(ts).isoformat() if ts is not None else None
