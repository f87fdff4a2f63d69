"""Seed 001's ``WorkflowEngine`` and ``WorkflowService``, over :class:`core.engine.Engine`.

::

    from core.compat.seed001 import WorkflowEngine, WorkflowService

    engine = WorkflowEngine(runtime)            # the seed passes its database session
    template = engine.create_template(name="schedule_generation", definition={...},
                                      description="...", tags=["schedule"])
    instance = engine.create_instance(template_id=template.id, input_data={...}, priority=5)
    await engine.execute_workflow(instance_id=instance.id, async_execution=True)
    print(engine.get_instance(instance.id).status)

Names map as follows: a template's ``id`` is its name (every call takes the latest published
version); an instance is a run (its ``id`` the run's order id); ``handler`` paths are Python
steps found on the handler path (:mod:`core.pysteps`). Statuses are the seed's: pending, running,
completed, failed, cancelled (and paused, recovering). Instances are not refused as duplicates:
code that creates them means each one.

``create_template``, ``create_instance`` and ``start_workflow`` are plain calls, as in the seed.
The definition is checked at once (a bad one raises ``TemplateError`` listing every problem);
the writes go on as tasks. Until a created instance is in the store its ``id`` is provisional
(``pending-N``) and :meth:`WorkflowEngine.get_instance` reports it ``pending``; awaited calls
wait for it, and the reference then carries the run's id.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from core.compat import Background, Record
from core.engine import Engine
from core.errors import NotFoundError
from core.templates import WorkflowTemplate, template_from_dict

_SEQ = itertools.count(1)


def _engine_of(db: Any) -> Engine:
    engine = getattr(db, "engine", db)
    if not isinstance(engine, Engine):
        raise TypeError(f"expected a labconsole Runtime or Engine, not {type(db).__name__}")
    return engine


class TemplateRecord(Record):
    """A published template as the seed's ``WorkflowTemplate`` row (``id`` is the name)."""


class InstanceRef:
    """What ``create_instance`` / ``start_workflow`` return: ``id`` (provisional until the run is
    stored), and ``await ref`` for the instance once it is created (and, for
    ``async_execution=False``, finished)."""

    def __init__(self, key: str, task: asyncio.Task[str], owner: WorkflowEngine, name: str) -> None:
        self._key, self._task, self._owner, self.name = key, task, owner, name

    @property
    def id(self) -> str:
        if self._task.done() and not self._task.cancelled() and self._task.exception() is None:
            return self._task.result()
        return self._key

    @property
    def status(self) -> str:
        return str(self._owner.get_instance(self.id).status)

    def __await__(self) -> Generator[Any, None, Record]:
        async def created() -> Record:
            return self._owner.get_instance(await self._task)

        return created().__await__()

    def __repr__(self) -> str:
        return f"InstanceRef(id={self.id!r}, name={self.name!r})"


class WorkflowEngine:
    """The seed's engine API. ``db``: the console's :class:`core.runtime.Runtime` (or Engine)."""

    def __init__(self, db: Any) -> None:
        self.engine = _engine_of(db)
        self.background = Background()
        self._publishing: dict[str, asyncio.Task[WorkflowTemplate]] = {}
        self._pending: dict[str, asyncio.Task[str]] = {}
        self._names: dict[str, str] = {}

    # ------------------------------------------------------------------ templates

    def create_template(self, name: str, definition: Mapping[str, Any], description: str = "",
                        tags: Iterable[str] | None = None) -> TemplateRecord:
        """Check ``definition`` now (TemplateError lists every problem) and publish it as the
        template's next version. A step without ``handler`` or ``kind`` does nothing (``noop``)."""
        steps = [dict(s, kind="noop") if isinstance(s, Mapping) and not {"kind", "handler"} & set(s) else s
                 for s in definition.get("steps", ())]
        data = {"name": name, "description": description, "tags": list(tags or ()),
                "definition": {**definition, "steps": steps}}
        template = template_from_dict(data, source=f"template '{name}'")
        self._publishing[name] = self.background.start(self.engine.publish(template))
        return TemplateRecord({"id": name, "name": name, "description": description, "tags": list(tags or ()),
                               "definition": dict(definition), "is_active": True})

    # ------------------------------------------------------------------ instances

    def create_instance(self, template_id: str, input_data: Mapping[str, Any] | None = None,
                        priority: int = 50) -> InstanceRef:
        """Create a run of the template named ``template_id`` (pending until executed)."""
        return self._start(template_id, input_data, priority, execute=None)

    def _start(self, name: str, input_data: Mapping[str, Any] | None, priority: int,
               execute: bool | None) -> InstanceRef:
        async def create() -> str:
            publishing = self._publishing.get(name)
            if publishing is not None:
                await publishing
            run_id = await self.engine.create_instance(name, dict(input_data or {}), priority=priority,
                                                       allow_duplicate=True, who="workflow engine")
            if execute is not None:
                await self.engine.execute_workflow(run_id, async_execution=execute)
            return run_id

        key = f"pending-{next(_SEQ)}"
        task = self.background.start(create())
        self._pending[key] = task
        self._names[key] = name
        return InstanceRef(key, task, self, name)

    async def _resolve(self, instance_id: str) -> str:
        task = self._pending.get(instance_id)
        return await task if task is not None else instance_id

    async def execute_workflow(self, instance_id: str, async_execution: bool = True) -> Record:
        """Start the instance; with ``async_execution=False`` return once it has ended."""
        run_id = await self._resolve(instance_id)
        await self.engine.execute_workflow(run_id, async_execution=async_execution)
        return self.get_instance(run_id)

    def get_instance(self, instance_id: str) -> Record:
        """The instance with ``status``, ``input_data``, ``steps`` ... (``pending`` while a plain
        ``create_instance`` is still being written)."""
        task = self._pending.get(instance_id)
        if task is not None:
            if not task.done():
                return Record({"id": instance_id, "status": "pending", "steps": []})
            instance_id = task.result()  # raises what creating it raised
        try:
            data = self.engine.get_instance(instance_id)
        except NotFoundError:
            raise NotFoundError(f"no workflow instance {instance_id}") from None
        return Record({**data, "name": data["template_name"], "template_id": data["template_name"]})

    async def cancel_workflow(self, instance_id: str, reason: str | None = None) -> Record:
        run_id = await self._resolve(instance_id)
        await self.engine.cancel(run_id, who="workflow engine", reason=reason)
        return self.get_instance(run_id)

    # ------------------------------------------------------------------ monitoring

    def query_instances(self, status: str | None = None, created_after: Any = None,
                        priority_min: int | None = None, template_id: str | None = None,
                        limit: int = 100, offset: int = 0) -> tuple[list[Record], int]:
        rows, total = self.engine.query_instances(status, created_after, priority_min, template_id,
                                                  limit, offset)
        return [Record({**r, "name": r.get("template_name")}) for r in rows], total

    def get_statistics(self, template_id: str | None = None) -> dict[str, Any]:
        return self.engine.get_statistics(template_id)


class WorkflowService(WorkflowEngine):
    """The seed's service layer: workflows started by template name, monitoring."""

    def start_workflow(self, template_name: str, input_data: Mapping[str, Any] | None = None,
                       priority: int = 50, async_execution: bool = True) -> InstanceRef:
        """Create and start a run now (a task); ``await`` the result for the instance — with
        ``async_execution=False``, once it has ended."""
        self.engine.templates.get(template_name)  # NotFoundError now, naming the known ones
        return self._start(template_name, input_data, priority, execute=async_execution)

    def get_running_workflows(self) -> list[Record]:
        """Running workflows, and those this service started that are still being written."""
        rows, _ = self.query_instances(status="running", limit=1000)
        known = {r.id for r in rows}
        for key, task in self._pending.items():
            if not task.done():
                rows.append(Record({"id": key, "name": self._names[key], "status": "pending"}))
            elif not task.cancelled() and task.exception() is None and task.result() not in known:
                data = self.get_instance(task.result())
                if data.status == "running":
                    rows.append(data)
        return rows

    def get_statistics(self, template_id: str | None = None, *,
                       template_name: str | None = None) -> dict[str, Any]:
        return self.engine.get_statistics(template_name or template_id)


__all__ = ["InstanceRef", "TemplateRecord", "WorkflowEngine", "WorkflowService"]
