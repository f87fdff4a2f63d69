"""One way to run background work: named tasks that are kept alive, logged when they fail, and
stopped together.

Every long-lived or fire-and-forget coroutine in the core (engine attempts and timers, dispatcher
ticks, Data Services loops, schedules) runs through a :class:`Supervisor`. A task's failure is
logged once with its name and the context it was started with — never swallowed — and an
optional ``on_error`` callback lets its owner react. ``close()`` cancels what is left and waits.
The GUI wraps one of these for its slots (``panels.base``), so there is one failure behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Supervisor:
    """Holds strong references to its tasks (asyncio keeps only weak ones) and reports failures."""

    def __init__(self, name: str, *, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.name = name
        self.on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()
        self._context: dict[asyncio.Task[Any], str] = {}
        self.closing = False
        self.failures = 0
        """Tasks that ended with an exception (for tests and the status bar)."""

    def spawn(self, coro: Coroutine[Any, Any, T], name: str, *, context: str = "") -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``name``; ``context`` is logged with a failure."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        if context:
            self._context[task] = context
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        context = self._context.pop(task, "")
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self.failures += 1
        log.error("task %s failed%s: %s", task.get_name(), f" ({context})" if context else "", exc,
                  exc_info=exc)
        if self.on_error is not None:
            try:
                self.on_error(task.get_name(), exc)
            except Exception:
                log.exception("failure callback of %s failed", self.name)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait for them to end."""
        self.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (a headless process ends cleanly); nothing happens off the
    main thread, where signal handlers cannot be installed (tests)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
