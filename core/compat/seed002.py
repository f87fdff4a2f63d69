"""Seed 002's ``WorkflowStep``, ``WorkflowDefinition`` and ``JobOrchestrator`` over the engine.

::

    from core.compat.seed002 import JobOrchestrator, WorkflowDefinition, WorkflowStep

    steps = [WorkflowStep("Download", "download", download, max_retries=3),
             WorkflowStep("Validate", "validate", validate, dependencies=[0])]
    workflow_def = WorkflowDefinition("Dataset Build", steps, max_recovery_attempts=3)
    orchestrator = JobOrchestrator(runtime)       # the seed's repositories are the one store
    workflow = await orchestrator.create_workflow(job_id=1, workflow_def=workflow_def)
    result = await orchestrator.execute_workflow(workflow.id, workflow_def)

A definition becomes a published template of the same name (each step a Python step calling
its ``handler`` in a worker process, dependencies by index, ``max_retries`` retries after the
first attempt, ``timeout`` and ``estimated_duration`` in seconds); a workflow is a run, its
``id`` the run's order id. ``job_id`` and ``metadata`` are kept in the store, so
:meth:`JobOrchestrator.get_workflow_by_job` finds the run after a restart. Statuses are the
seed's (pending, running, paused, completed, failed, cancelled, recovering). ``recover_workflow``
takes the step's index (as ``progress['current_step']`` gives it) or its id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.compat import Record
from core.compat.seed001 import _engine_of
from core.errors import InputError, NotFoundError
from core.pysteps import PYTHON_KIND, register_callable
from core.states import RUN_FINAL, RunStatus
from core.templates import WorkflowTemplate, template_from_dict

_META = "seed002.workflow:"
ACTIVE = ("pending", "running", "paused", "recovering")


@dataclass
class WorkflowStep:
    name: str
    task_type: str
    handler: Callable[..., Any]
    max_retries: int = 3
    timeout: float | None = None
    estimated_duration: float | None = None
    dependencies: list[int] = field(default_factory=list)
    start_within: Mapping[str, Any] | None = None
    """``{"after": step index, "max": seconds or "10m", "min": ...}``: when this step may start."""
    min_delay: float | str | None = None
    """Not sooner than this after its (only) dependency ends."""

    def __post_init__(self) -> None:
        self.handler_name = register_callable(self.handler)  # TypeError now for a lambda


@dataclass
class WorkflowDefinition:
    name: str
    steps: list[WorkflowStep]
    max_recovery_attempts: int = 3
    deadline: float | str | None = None
    """The run should end within this long of its start (seconds or "4h")."""

    def step_ids(self) -> list[str]:
        ids: list[str] = []
        for i, step in enumerate(self.steps):
            base = re.sub(r"\W+", "_", step.name.lower()).strip("_") or "step"
            ids.append(base if base not in ids else f"{base}_{i}")
        return ids

    def to_template(self) -> WorkflowTemplate:
        ids = self.step_ids()
        steps = []
        for i, (sid, s) in enumerate(zip(ids, self.steps, strict=True)):
            for dep in s.dependencies:
                if not isinstance(dep, int) or not 0 <= dep < len(self.steps) or dep == i:
                    raise InputError.at(f"step {i} ({s.name}): dependency {dep!r} is not the index of "
                                        f"another step (0..{len(self.steps) - 1})",
                                        field=f"steps[{i}].dependencies")
            step: dict[str, Any] = {"id": sid, "name": s.name, "kind": PYTHON_KIND, "handler": s.handler_name,
                                    "depends_on": [ids[d] for d in s.dependencies],
                                    "retry_policy": {"max_attempts": s.max_retries + 1}}
            if s.timeout:
                step["timeout_seconds"] = s.timeout
            if s.estimated_duration is not None:
                step["estimated_duration"] = s.estimated_duration
            if s.start_within is not None:
                window = dict(s.start_within)
                after = window.get("after")
                if isinstance(after, int) and not isinstance(after, bool):
                    if not 0 <= after < len(self.steps):
                        raise InputError.at(f"step {i} ({s.name}): start_within after {after} is not the index "
                                            f"of a step (0..{len(self.steps) - 1})",
                                            field=f"steps[{i}].start_within.after")
                    window["after"] = ids[after]
                step["start_within"] = window
            if s.min_delay is not None:
                step["min_delay"] = s.min_delay
            steps.append(step)
        definition: dict[str, Any] = {"steps": steps, "failure_policy": "abort",
                                      "max_recovery_attempts": self.max_recovery_attempts}
        if self.deadline is not None:
            definition["deadline"] = self.deadline
        return template_from_dict({"name": self.name, "tags": ["job-orchestrator"], "definition": definition},
                                  source=f"workflow definition '{self.name}'")


class WorkflowState(Record):
    """A workflow as the seed's ``WorkflowState``: ``id``, ``job_id``, ``name``, ``status``,
    ``metadata`` and the progress figures (``progress``, ``current_step``, ``tasks`` ...)."""


class JobOrchestrator:
    """The seed's orchestrator. Give it the console's Runtime (as any of its repositories)."""

    def __init__(self, *repos: Any) -> None:
        found = [r for r in repos if r is not None]
        if not found:
            raise TypeError("JobOrchestrator needs the console's Runtime (or Engine)")
        self.engine = _engine_of(found[0])
        self.store = self.engine.store

    # ------------------------------------------------------------------ creating and running

    async def create_workflow(self, job_id: int | str, workflow_def: WorkflowDefinition,
                              metadata: Mapping[str, Any] | None = None) -> WorkflowState:
        template = await self.engine.publish(workflow_def.to_template(), who="job orchestrator")
        run_id = await self.engine.create_instance(template.name, {}, allow_duplicate=True,
                                                   who="job orchestrator", requester=f"job {job_id}")
        record = json.dumps({"job_id": job_id, "metadata": dict(metadata or {})})
        await self.store.write(lambda c: c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_META + run_id, record)))
        return self._state(run_id)

    async def execute_workflow(self, workflow_id: str, workflow_def: WorkflowDefinition | None = None) -> WorkflowState:
        """Start the workflow and return it once it has ended (or paused for the operator)."""
        await self.engine.execute_workflow(workflow_id, async_execution=False)
        return self._state(workflow_id)

    async def start_workflow(self, workflow_id: str) -> WorkflowState:
        status = self.engine.run_status(workflow_id)
        if status is RunStatus.PAUSED:
            await self.engine.resume(workflow_id, who="job orchestrator")
        else:
            await self.engine.execute_workflow(workflow_id, async_execution=True)
        return self._state(workflow_id)

    async def pause_workflow(self, workflow_id: str) -> WorkflowState:
        await self.engine.pause(workflow_id, who="job orchestrator")
        return self._state(workflow_id)

    async def cancel_workflow(self, workflow_id: str) -> WorkflowState:
        await self.engine.cancel(workflow_id, who="job orchestrator")
        return self._state(workflow_id)

    async def recover_workflow(self, workflow_id: str, from_step: int | str) -> WorkflowState:
        """Re-run from step ``from_step`` (index or id) on, keeping what came before."""
        steps = self.engine.get_instance(workflow_id)["steps"]
        if isinstance(from_step, int) and not isinstance(from_step, bool):
            if not 0 <= from_step < len(steps):
                raise InputError.at(f"from_step {from_step} is not a step index (0..{len(steps) - 1})",
                                    field="from_step")
            from_step = steps[from_step]["id"]
        await self.engine.recover(workflow_id, str(from_step), who="job orchestrator")
        return self._state(workflow_id)

    # ------------------------------------------------------------------ reading

    async def get_workflow(self, workflow_id: str) -> WorkflowState | None:
        try:
            return self._state(workflow_id)
        except NotFoundError:
            return None

    async def get_workflow_by_job(self, job_id: int | str) -> WorkflowState | None:
        """The latest workflow created for ``job_id``."""
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT key, value FROM meta WHERE key LIKE ? ORDER BY rowid DESC", (_META + "%",)).fetchall())
        for key, value in rows:
            if json.loads(value).get("job_id") == job_id:
                return self._state(key[len(_META):])
        return None

    async def get_workflow_progress(self, workflow_id: str) -> dict[str, Any]:
        progress = self.engine.get_workflow_progress(workflow_id)
        progress["job_id"] = self._meta(workflow_id).get("job_id", progress["job_id"])
        return progress

    async def get_active_workflows(self) -> list[WorkflowState]:
        return self._where(lambda s: s["status"] in ACTIVE)

    async def get_failed_workflows(self) -> list[WorkflowState]:
        return self._where(lambda s: s["status"] == "failed")

    async def get_recoverable_workflows(self) -> list[WorkflowState]:
        """Failed or paused workflows with recovery attempts left."""
        return self._where(lambda s: s["status"] in ("failed", "paused")
                           and s["recovery_attempts"] < s["max_recovery_attempts"])

    def _where(self, keep: Callable[[WorkflowState], bool]) -> list[WorkflowState]:
        out = []
        for status in ("pending", "running", "paused", "recovering", "failed"):
            rows, _ = self.engine.query_instances(status=status, limit=10_000)
            out += [self._state(r["id"]) for r in rows]
        return [s for s in out if keep(s)]

    def _meta(self, run_id: str) -> dict[str, Any]:
        row = self.store.read_sync(lambda c: c.execute("SELECT value FROM meta WHERE key = ?",
                                                       (_META + run_id,)).fetchone())
        return json.loads(row[0]) if row else {}

    def _state(self, run_id: str) -> WorkflowState:
        progress = self.engine.get_workflow_progress(run_id)
        instance = self.engine.get_instance(run_id)
        meta = self._meta(run_id)
        return WorkflowState({**progress, "id": run_id, "job_id": meta.get("job_id"),
                              "metadata": meta.get("metadata", {}), "name": instance["template_name"],
                              "error": instance["error"],
                              "finished": RunStatus(progress["status"]) in RUN_FINAL})


__all__ = ["JobOrchestrator", "WorkflowDefinition", "WorkflowState", "WorkflowStep"]
