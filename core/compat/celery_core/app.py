"""``celery_core.app`` as seed 002's "Integration with Celery" snippet uses it, without Celery.

The seed offloads heavy work from a step handler::

    from core.compat.celery_core.app import get_celery_app   # seed: from celery_core.app import ...

    app = get_celery_app()

    async def my_task():
        task = app.send_task('backend.tasks.my_task', args=[arg1, arg2])   # dispatch
        result = task.get(timeout=300)                                    # wait for completion
        return result

A labconsole step handler already runs in a worker process of its own (:mod:`core.pysteps`), so
offloading needs no broker: :meth:`CeleryApp.send_task` starts the named task at once in a thread
of the calling process and :meth:`AsyncResult.get` waits for it, at most ``timeout`` seconds
(:class:`TaskTimeoutError`, a :class:`TimeoutError`, like Celery's). A task that raises makes
``get`` raise the same exception (``propagate=False`` returns it instead). The step's own timeout
and cancel still apply: they kill the worker, the task's thread with it.

**Which task runs.** A function registered with ``@app.task`` (under ``name=`` or its
``module.function``), else ``module.function`` found on the handler path, as for Python steps
(``resources/handlers/``, ``<data dir>/handlers/`` or ``config.ini`` ``[HANDLERS] path``; the
data directory of ``$LABCONSOLE_DATA_DIR`` or the default one): ``backend.tasks.my_task`` is
``my_task`` of ``<handler dir>/backend/tasks.py``. Nothing else is imported; an unknown name is
:class:`NotRegistered` naming what was searched.

**Why not Celery itself.** Celery's ``send_task`` always goes through a broker: its eager mode
(``task_always_eager``) covers ``apply_async`` and ``delay`` only (celery/celery#581), so even a
pinned Celery would need a broker and a Celery worker beside the console to run the snippet as
written. A lab with a Celery cluster keeps calling it from its handlers (Celery installed where
the workers run); this module runs seed 002's code on a console without one.

**Never on the console's loop.** ``get`` blocks its thread. In a handler (a worker process) that
is what the snippet asks for; in the console's own process while an event loop runs there it is
refused with a :class:`RuntimeError`, as is every blocking call on that loop.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from core.pysteps import _import_restricted, handler_paths, handler_problem

__all__ = ["AsyncResult", "CeleryApp", "NotRegistered", "TaskTimeoutError", "get_celery_app"]

F = TypeVar("F", bound=Callable[..., Any])

PENDING, STARTED, SUCCESS, FAILURE = "PENDING", "STARTED", "SUCCESS", "FAILURE"
"""Celery's state names for a result."""


class NotRegistered(KeyError):
    """No task of that name (Celery's ``celery.exceptions.NotRegistered``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class TaskTimeoutError(TimeoutError):
    """:meth:`AsyncResult.get` waited ``timeout`` seconds (Celery's ``celery.exceptions.TimeoutError``)."""


class AsyncResult:
    """A task started by :meth:`CeleryApp.send_task`: ``id``, ``state``, ``ready()``, ``get()``."""

    def __init__(self, task_id: str, name: str) -> None:
        self.id = task_id
        self.task_id = task_id
        self.name = name
        self.state = PENDING
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.traceback: str | None = None

    @property
    def status(self) -> str:
        return self.state

    def ready(self) -> bool:
        return self._done.is_set()

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    @property
    def result(self) -> Any:
        """The return value, the exception of a failed task, or None while it runs."""
        return self._error if self._error is not None else self._value

    def get(self, timeout: float | None = None, propagate: bool = True, **_options: Any) -> Any:
        """Wait for the task (at most ``timeout`` seconds) and return its value; a task that
        raised raises the same exception here (``propagate=False``: returns it)."""
        _refuse_on_console_loop(f"AsyncResult.get() of task {self.name!r}")
        if not self._done.wait(timeout):
            raise TaskTimeoutError(f"task {self.name!r} ({self.id}) did not finish within {timeout:g} s")
        if self._error is not None:
            if propagate:
                raise self._error
            return self._error
        return self._value

    wait = get

    def execute(self, fn: Callable[..., Any], args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
        self.state = STARTED
        try:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                async def wait(aw: Any = value) -> Any:
                    return await aw

                value = asyncio.run(wait())
            self._value, self.state = value, SUCCESS
        except BaseException as exc:  # noqa: BLE001 - handed to whoever calls get()
            self._error, self.state = exc, FAILURE
            self.traceback = traceback.format_exc()
        finally:
            self._done.set()

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id} {self.name} {self.state}>"


class CeleryApp:
    """The few parts of a Celery app the seed uses: ``send_task`` and the ``task`` decorator."""

    def __init__(self, main: str = "labconsole", *, handler_dirs: Iterable[Path] | None = None) -> None:
        self.main = main
        self.tasks: dict[str, Callable[..., Any]] = {}
        """Registered tasks by name."""
        self._handler_dirs = tuple(handler_dirs) if handler_dirs is not None else None

    def task(self, fn: F | None = None, *, name: str | None = None, **_options: Any) -> Any:
        """``@app.task`` or ``@app.task(name='backend.tasks.my_task')``: register a task."""
        def register(f: F) -> F:
            self.tasks[name or f"{f.__module__}.{f.__qualname__}"] = f
            return f

        return register(fn) if fn is not None else register

    def handler_dirs(self) -> tuple[Path, ...]:
        """Where task names that are not registered are looked up (the handler path)."""
        if self._handler_dirs is not None:
            return self._handler_dirs
        from core.store import DATA_DIR_ENV, default_data_dir

        return handler_paths(Path(os.environ.get(DATA_DIR_ENV) or default_data_dir()))

    def _lookup(self, name: str) -> Callable[..., Any]:
        if name in self.tasks:
            return self.tasks[name]
        problem = handler_problem(name)
        registered = ", ".join(sorted(self.tasks)) or "none"
        if problem:
            raise NotRegistered(f"task {name!r} is not registered (registered: {registered}) and "
                                f"cannot be looked up: {problem}")
        module, _, func = name.rpartition(".")
        dirs = [str(p) for p in self.handler_dirs()]
        try:
            fn = getattr(_import_restricted(module, dirs), func)
        except (LookupError, ImportError, AttributeError) as exc:
            raise NotRegistered(f"task {name!r} is not registered (registered: {registered}) and is "
                                f"not a function on the handler path ({', '.join(dirs) or 'empty'}): "
                                f"{exc}") from None
        if not callable(fn):
            raise NotRegistered(f"task {name!r}: {name} is not a function")
        return fn  # type: ignore[no-any-return]

    def send_task(self, name: str, args: Iterable[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None, **_options: Any) -> AsyncResult:
        """Start task ``name`` with ``args`` and ``kwargs`` now; returns its :class:`AsyncResult`.
        Routing options (``queue``, ``countdown`` ...) are accepted and have no effect."""
        if not isinstance(name, str):
            raise TypeError(f"send_task: the task name must be a str, got {type(name).__name__}")
        fn = self._lookup(name)
        result = AsyncResult(uuid.uuid4().hex, name)
        threading.Thread(target=result.execute, args=(fn, list(args or ()), dict(kwargs or {})),
                         name=f"task-{name}", daemon=True).start()
        return result


def _refuse_on_console_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop in this thread: blocking is fine
    if multiprocessing.parent_process() is None:
        raise RuntimeError(f"{what} blocks: call it from a step handler (it runs in a worker process), "
                           "not on the console's event loop")


_APP: CeleryApp | None = None
_APP_LOCK = threading.Lock()


def get_celery_app() -> CeleryApp:
    """The process's app (one per process, as the seed's ``get_celery_app`` returns one)."""
    global _APP
    with _APP_LOCK:
        if _APP is None:
            _APP = CeleryApp()
        return _APP
