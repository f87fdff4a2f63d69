"""Python steps: a step of kind ``python`` calls a function in a worker process.

A template names the function by its dotted path (seed 001's ``handler``)::

    - id: volumes
      kind: python                      # may be left out when ``handler`` is given
      handler: dilution.compute_volumes # <handler dir>/dilution.py, function compute_volumes
      depends_on: [read]

**Where handlers come from.** Only from the handler directories: ``resources/handlers/`` and
``<data dir>/handlers/``, or what ``config.ini`` says (``[HANDLERS] path = DIR[:DIR...]``, relative
to the file; it replaces the defaults). A template can never import anything else: the module's
top-level package must be a file or directory inside one of them. The seeds' Python APIs
(:mod:`core.compat`) hand functions over as objects instead; those are registered with
:func:`register_callable` by the code that owns them and sent to the worker by reference.

**How they run.** In a pool of worker processes (``spawn``), one call per worker at a time, so a
crash, a hang or a blocking call in user code never stops the console. A step timeout or a cancel
kills the worker running it; the next call starts a fresh one. Sync and async functions both work.

**What they get and give.** The function receives one dict: the run's inputs, overlaid with the
outputs of the steps it depends on (in ``depends_on`` order: seed 004's ``on_complete`` passes the
parent's output on), overlaid with the step's own parameters and input mappings. A function whose
first parameter is annotated with a pydantic model gets that model instead (validated; a wrong or
missing field fails the step naming it); one without parameters is called without arguments; a
keyword parameter ``step_outputs`` receives every dependency's outputs by step id. It returns a dict
(or a pydantic model, or None) whose values must be JSON data; those are the step's outputs, which
later steps, conditions and mappings read. A declared output model (the return annotation, or
seed 004's ``Task[In, Out]``) validates the result the same way. An exception fails the attempt
(retried per the step's policy unless it has ``retryable = False``); bad inputs or outputs and a
handler that cannot be found fail it at once.
"""

from __future__ import annotations

import asyncio
import configparser
import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import multiprocessing
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PYTHON_KIND = "python"
HANDLER_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
DEFAULT_HANDLERS = Path(__file__).resolve().parent.parent / "resources" / "handlers"
CONFIG_SECTION = "HANDLERS"
MAX_WORKERS = max(2, min(4, os.cpu_count() or 2))


# ============================================================================ finding handlers


def handler_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a handler path (None if it can)."""
    if not isinstance(name, str) or not HANDLER_PATTERN.match(name):
        return f"handler {name!r} must be a dotted path 'module.function' (e.g. dilution.compute_volumes)"
    return None


def handler_paths(data_dir: Path | None = None, config: Path | None = None) -> tuple[Path, ...]:
    """The handler directories: ``[HANDLERS] path`` of config.ini (./config.ini, then the data
    dir's), else ``resources/handlers`` and ``<data dir>/handlers``."""
    candidates = [config] if config is not None else [Path.cwd() / "config.ini"]
    if config is None and data_dir is not None:
        candidates.append(data_dir / "config.ini")
    for candidate in candidates:
        if candidate is None or not candidate.is_file():
            continue
        parser = configparser.ConfigParser()
        parser.read(candidate, encoding="utf-8")
        if parser.has_option(CONFIG_SECTION, "path"):
            raw = parser.get(CONFIG_SECTION, "path")
            parts = [p.strip() for p in re.split(rf"[\n{re.escape(os.pathsep)}]", raw) if p.strip()]
            return tuple((candidate.parent / p).resolve() for p in parts)
    out = [DEFAULT_HANDLERS]
    if data_dir is not None:
        out.append(data_dir / "handlers")
    return tuple(out)


def find_handler(name: str, paths: Sequence[Path]) -> Path:
    """The file that defines the module of handler ``name``; HandlerNotFound names the paths."""
    problem = handler_problem(name)
    if problem:
        raise HandlerNotFound(problem)
    parts = name.split(".")[:-1]
    for base in paths:
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    raise HandlerNotFound(f"handler '{name}': no module {'.'.join(parts)} in the handler path "
                          f"({', '.join(str(p) for p in paths) or 'empty'})")


def HandlerNotFound(message: str) -> Exception:  # noqa: N802 - reads as the error it makes
    """The step failure for a handler that cannot be found (not retried)."""
    from core.engine.types import StepFailure

    return StepFailure(message, "HandlerNotFound", retryable=False)


@dataclass(frozen=True)
class Registered:
    """A function handed over as an object (seeds 002 and 004), with its declared models."""

    fn: Callable[..., Any]
    in_model: type | None = None
    out_model: type | None = None


_CALLABLES: dict[str, Registered] = {}


def register_callable(fn: Callable[..., Any], in_model: type | None = None,
                      out_model: type | None = None) -> str:
    """Make ``fn`` callable as a Python step; returns the handler name to put in the step.

    ``fn`` goes to the worker by reference, so it must be a module-level function of an
    importable module (not a lambda or a function defined inside another)."""
    qualname = getattr(fn, "__qualname__", "")
    module = getattr(fn, "__module__", None) or ""
    if not callable(fn) or "<" in qualname or not module or module == "__main__":
        raise TypeError(f"{fn!r} cannot run in a worker process: define it at module level of an "
                        "importable module (not a lambda, a nested function or a __main__ script)")
    name = f"{module}.{qualname}"
    _CALLABLES[name] = Registered(fn, in_model, out_model)
    return name


# ============================================================================ the worker side


def _import_restricted(module: str, paths: Sequence[str]) -> Any:
    """Import ``module`` whose top-level package must come from ``paths``."""
    top = module.split(".")[0]
    loaded = sys.modules.get(top)
    origin = getattr(loaded, "__file__", None) or ""
    if loaded is None or not any(origin.startswith(p + os.sep) for p in paths):
        spec = importlib.machinery.PathFinder.find_spec(top, list(paths))
        if spec is None or spec.loader is None:
            raise LookupError(f"no module {top} in the handler path ({', '.join(paths)})")
        mod = importlib.util.module_from_spec(spec)
        for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
            del sys.modules[key]
        sys.modules[top] = mod
        spec.loader.exec_module(mod)
    for p in paths:  # sibling modules of a handler import each other
        if p not in sys.path:
            sys.path.append(p)
    return importlib.import_module(module)


def _is_model(t: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is a dependency
        return False
    return isinstance(t, type) and issubclass(t, BaseModel)


def _field_errors(exc: Any, side: str) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "(value)"
        parts.append(f"{side} field '{where}': {err.get('msg')}")
    return "; ".join(parts)


def _jsonable(value: Any, where: str) -> Any:
    """Outputs as JSON data (dates as ISO text); a value that is not fails naming its key."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if _is_model(type(value)):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"output '{where}' is a {type(value).__name__}, which is not JSON data")


def _call(fn: Callable[..., Any], in_model: Any, out_model: Any, inputs: dict[str, Any],
          step_outputs: dict[str, Any]) -> tuple[Any, ...]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    params = [p for p in (sig.parameters.values() if sig else ())
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "step_outputs"]
    try:
        import typing

        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - annotations that do not resolve are ignored
        hints = {}
    if in_model is None and params and _is_model(hints.get(params[0].name)):
        in_model = hints[params[0].name]
    if out_model is None and _is_model(hints.get("return")):
        out_model = hints["return"]
    args: list[Any] = []
    if params:
        if in_model is not None:
            from pydantic import ValidationError

            try:
                args.append(in_model.model_validate(inputs))
            except ValidationError as exc:
                return ("error", "InputInvalid", f"{in_model.__name__}: {_field_errors(exc, 'input')}", False, "")
        else:
            args.append(dict(inputs))
    kwargs = {"step_outputs": step_outputs} if sig and "step_outputs" in sig.parameters else {}
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            async def wait(aw: Any = result) -> Any:
                return await aw

            result = asyncio.run(wait())
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the engine
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        return ("error", str(getattr(exc, "code", None) or type(exc).__name__),
                f"{type(exc).__name__}: {exc}{where}", bool(getattr(exc, "retryable", True)),
                traceback.format_exc())
    if out_model is not None and result is not None:
        from pydantic import ValidationError

        try:
            data = result.model_dump() if _is_model(type(result)) else result
            result = out_model.model_validate(data)
        except ValidationError as exc:
            return ("error", "OutputInvalid", f"{out_model.__name__}: {_field_errors(exc, 'output')}", False, "")
    if result is None:
        return ("ok", {})
    if _is_model(type(result)):
        return ("ok", result.model_dump(mode="json"))
    if not isinstance(result, Mapping):
        return ("error", "OutputInvalid", f"the handler returned a {type(result).__name__}; a step "
                "returns a dict of outputs (or a pydantic model, or None)", False, "")
    try:
        return ("ok", {str(k): _jsonable(v, str(k)) for k, v in result.items()})
    except TypeError as exc:
        return ("error", "OutputInvalid", str(exc), False, "")


def _run_job(job: tuple[Any, ...]) -> tuple[Any, ...]:
    kind, target, in_model, out_model, inputs, step_outputs = job
    if kind == "path":
        name, paths = target
        module, _, func = name.rpartition(".")
        try:
            fn = getattr(_import_restricted(module, paths), func)
        except AttributeError:
            return ("error", "HandlerNotFound", f"handler '{name}': module {module} has no {func}", False, "")
        except Exception as exc:  # noqa: BLE001 - an import error is the handler's fault
            return ("error", "HandlerNotFound", f"handler '{name}' could not be imported: "
                    f"{type(exc).__name__}: {exc}", False, traceback.format_exc())
        if not callable(fn):
            return ("error", "HandlerNotFound", f"handler '{name}' is not a function", False, "")
    else:
        fn = target
    return _call(fn, in_model, out_model, inputs, step_outputs)


def _worker_main(conn: Connection) -> None:
    """One worker: take a call, answer it, again, until the console closes the pipe."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - a job that cannot be unpickled here
            conn.send(("error", "HandlerNotFound", f"the function could not be loaded in the worker: "
                       f"{type(exc).__name__}: {exc}", False, traceback.format_exc()))
            continue
        conn.send(_run_job(job))


# ============================================================================ the console side


@dataclass
class _Worker:
    process: Any
    conn: Connection


@dataclass
class WorkerPool:
    """Worker processes (``spawn``), at most ``max_workers`` busy at once, idle ones reused."""

    max_workers: int = MAX_WORKERS
    _idle: list[_Worker] = field(default_factory=list)
    _gates: dict[int, asyncio.Semaphore] = field(default_factory=dict)
    started: int = 0
    """Worker processes started so far (tests and the log read it)."""

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(id(loop))
        if gate is None:
            self._gates.clear()  # one loop at a time in practice; forget closed ones
            gate = self._gates[id(loop)] = asyncio.Semaphore(self.max_workers)
        return gate

    def _spawn(self) -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child,), name="labconsole-python-step", daemon=True)
        process.start()
        child.close()
        self.started += 1
        return _Worker(process, parent)

    async def call(self, job: tuple[Any, ...]) -> tuple[Any, ...]:
        """Run ``job`` in a worker; cancelling this kills that worker."""
        async with self._gate():
            worker = self._idle.pop() if self._idle else await asyncio.to_thread(self._spawn)
            try:
                try:
                    worker.conn.send(job)
                except Exception as exc:  # noqa: BLE001 - pickling happens before anything is sent
                    self._idle.append(worker)
                    return ("error", "HandlerNotFound", f"the function cannot be sent to a worker process: "
                            f"{type(exc).__name__}: {exc}", False, "")
                answer: tuple[Any, ...] = await asyncio.to_thread(worker.conn.recv)
            except asyncio.CancelledError:
                self._kill(worker)
                raise
            except (EOFError, OSError):
                await asyncio.to_thread(worker.process.join, 5)  # it has gone: its exit code says how
                code = worker.process.exitcode
                self._kill(worker)
                from core.engine.types import StepFailure

                raise StepFailure(f"the Python step's worker process died (exit code {code})",
                                  "WorkerCrashed", retryable=True) from None
            self._idle.append(worker)
            return answer

    def _kill(self, worker: _Worker) -> None:
        try:
            worker.process.kill()
        except (OSError, ValueError):
            pass
        worker.conn.close()
        try:
            asyncio.get_running_loop().run_in_executor(None, worker.process.join, 10)
        except RuntimeError:
            worker.process.join(10)

    def close(self) -> None:
        """Stop the idle workers."""
        while self._idle:
            worker = self._idle.pop()
            worker.conn.close()
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()


POOL = WorkerPool()
"""The console's worker pool (processes are daemons: they end with the console)."""


async def run_handler(handler: str, inputs: Mapping[str, Any], *, step_outputs: Mapping[str, Any] | None = None,
                      paths: Sequence[Path] = (DEFAULT_HANDLERS,), pool: WorkerPool | None = None) -> dict[str, Any]:
    """Call ``handler`` with ``inputs`` in a worker; its outputs, or StepFailure."""
    registered = _CALLABLES.get(handler)
    deps = {k: dict(v) for k, v in (step_outputs or {}).items()}
    if registered is not None:
        job: tuple[Any, ...] = ("callable", registered.fn, registered.in_model, registered.out_model,
                                dict(inputs), deps)
    else:
        find_handler(handler, paths)
        job = ("path", (handler, [str(p) for p in paths]), None, None, dict(inputs), deps)
    answer = await (pool or POOL).call(job)
    if answer[0] == "ok":
        outputs: dict[str, Any] = answer[1]
        return outputs
    _, code, message, retryable, tb = answer
    if tb:
        log.warning("Python step %s failed: %s\n%s", handler, message, tb.rstrip())
    from core.engine.types import StepFailure

    raise StepFailure(message, code, retryable=retryable)


def step_inputs(run_inputs: Mapping[str, Any], dependencies: Sequence[tuple[str, Mapping[str, Any]]],
                parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What a Python step receives: run inputs < dependency outputs (in order) < parameters."""
    out = dict(run_inputs)
    for _step, outputs in dependencies:
        out.update(outputs)
    out.update(parameters)
    return out


_PATHS: dict[Path, tuple[Path, ...]] = {}


def paths_for(data_dir: Path) -> tuple[Path, ...]:
    """The handler path of a console whose data directory is ``data_dir`` (read once)."""
    if data_dir not in _PATHS:
        _PATHS[data_dir] = handler_paths(data_dir)
    return _PATHS[data_dir]


__all__ = ["HANDLER_PATTERN", "PYTHON_KIND", "POOL", "HandlerNotFound", "WorkerPool", "find_handler",
           "handler_paths", "handler_problem", "paths_for", "register_callable", "run_handler", "step_inputs"]
