"""The seeds' Python APIs, thin over the one engine, dispatcher and store.

Users arrive with code written for the systems labconsole unites; these adapters let that code
run with only its imports changed:

- :mod:`core.compat.seed001` — ``WorkflowEngine`` / ``WorkflowService`` (template-based engine);
- :mod:`core.compat.seed002` — ``WorkflowStep``, ``WorkflowDefinition``, ``JobOrchestrator``;
- :mod:`core.compat.seed003` — ``OrchestratorEngine``, ``JobQueue`` (CasareRPA orchestrator);
- :mod:`core.compat.seed004` — ``Task``, ``TaskConfig``, ``Workflow``, ``WorkflowConfig`` and
  the ``_workflows`` registry (Moose workflows).

Biosero's ``OrderScheduler`` is :mod:`core.dataservices` itself. Each adapter takes a
:class:`core.runtime.Runtime` where the original took its database or service object. Functions
handed over as objects run as Python steps (:mod:`core.pysteps`) in worker processes.

Calls the seeds make without ``await`` are plain methods here. They never block the event loop:
what needs the store is started at once as a task and later calls (awaited ones, or reads) wait
for it or see it as pending, so the seeds' sequences read naturally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class Record(Mapping[str, Any]):
    """A read-only row that reads both ways: ``row.status`` and ``row["status"]``."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field '{name}' "
                                 f"(fields: {', '.join(self._data)})") from None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


class Background:
    """Tasks that plain (non-awaited) calls start; ``settle`` waits for them and raises the first
    error, so a failure is never lost."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._tasks.append(task)
        return task

    async def settle(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await task


__all__ = ["Background", "Record"]
