"""The workflow engine: versioned templates become orders and run as durable DAGs.

A **run** is a parent order; each step is a child order (``parentIdentifier`` = the run,
``runAfterIdentifier`` = the steps it waited for, comma-separated). The engine keeps the run's
state in memory to make decisions, and every change goes through the store (one transaction per
change, group-committed) before the executor is called or an event is published.

Steps whose dependencies are met start concurrently. A false condition skips a step; its
dependants proceed (a skipped step counts as satisfied). A failed step is retried with capped
exponential backoff and jitter (:class:`~core.templates.RetryPolicy`); when it fails for good its
error handler runs (``error_handlers``), then the template's failure policy applies: ``abort``
cancels what is left, ``pause`` waits for the operator, ``continue`` lets other branches go on
and skips the failed step's dependants.

Time is read only through the injected :class:`~core.clock.Clock`; every deadline (step
timeouts, run timeouts, retry back-offs, delay steps) sits in one heap behind one timer task —
no ``asyncio.timeout`` per step (those leave live Qt timers behind under qasync).

On a timeout or cancel the engine first asks the executor (the instrument) to stop, then marks
the step. After a crash, :meth:`Engine.recover_in_flight` resumes every run: finished steps are not
re-run; a step that was executing is re-run only if it is idempotent, otherwise it goes to Error
with "outcome unknown" and the run pauses for the operator.

Steps reach instruments through a :class:`StepExecutor` (the dispatcher implements it);
:class:`SimulatedExecutor` runs steps with simulated durations and seeded failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import logging
import random
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from core.clock import Clock, SystemClock, sleep_or_wake
from core.conditions import ConditionError, evaluate
from core.drivers.base import ProgressSink
from core.errors import (
    DuplicateSubmissionError,
    IllegalTransitionError,
    InputError,
    NotFoundError,
    Problem,
    StateError,
    Where,
)
from core.events import OperatorAction, OrderCreated, RunChanged, StepChanged, StepProgress
from core.facade import Core, os_user
from core.orders import Order, OrderPriority, OrderStatus, Parameter, ParameterValueType
from core.store import StatusChange, Store
from core.templates import (
    FailurePolicy,
    Step,
    WorkflowTemplate,
    descendants,
    template_from_dict,
)

log = logging.getLogger(__name__)

ENGINE = "engine"


class StepStatus(StrEnum):
    """Task states of a step (seed 002), plus ``unknown`` for an outcome the console cannot know."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class RunStatus(StrEnum):
    """Workflow states (seed 002)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RECOVERING = "recovering"


STEP_ORDER_STATUS: dict[StepStatus, OrderStatus] = {
    StepStatus.PENDING: OrderStatus.Created,
    StepStatus.QUEUED: OrderStatus.Scheduled,
    StepStatus.RETRYING: OrderStatus.Scheduled,
    StepStatus.RUNNING: OrderStatus.Running,
    StepStatus.COMPLETED: OrderStatus.Complete,
    StepStatus.FAILED: OrderStatus.Error,
    StepStatus.UNKNOWN: OrderStatus.Error,
    StepStatus.SKIPPED: OrderStatus.Canceled,
    StepStatus.CANCELLED: OrderStatus.Canceled,
}
"""How a step's state shows as the Biosero status of its child order (the one table)."""

RUN_ORDER_STATUS: dict[RunStatus, OrderStatus] = {
    RunStatus.PENDING: OrderStatus.Created,
    RunStatus.RUNNING: OrderStatus.Running,
    RunStatus.RECOVERING: OrderStatus.Running,
    RunStatus.PAUSED: OrderStatus.Paused,
    RunStatus.COMPLETED: OrderStatus.Complete,
    RunStatus.FAILED: OrderStatus.Error,
    RunStatus.CANCELLED: OrderStatus.Canceled,
}

DONE_OK = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
STEP_FINAL = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED,
                        StepStatus.CANCELLED, StepStatus.UNKNOWN})
RUN_FINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


# ============================================================================ executor interface


@dataclass(frozen=True)
class StepRequest:
    """What an executor needs to run one attempt of one step."""

    run_id: str
    step_id: str
    order_id: str
    kind: str
    parameters: dict[str, Any]
    attempt: int
    timeout: float | None
    idempotent: bool
    priority: int
    template_name: str
    template_version: int
    order: Order
    started: Callable[[str | None], None] = lambda instrument: None
    reserve: tuple[str, ...] = ()
    """More capabilities to hold for the whole step (reserved with the main one, atomically)."""
    """The executor calls this when an instrument actually starts the step (Scheduled → Running)."""


class StepExecutor(Protocol):
    """Runs steps on instruments. The dispatcher implements this; so does SimulatedExecutor.

    ``execute`` returns the step's outputs, or raises: a ``DriverError`` (with ``code`` and
    ``retryable``; ``OutcomeUnknown`` when the instrument may or may not have done it) or any
    other exception (treated as retryable). It must call ``await started(request, instrument_id)``
    when the step leaves the queue for an instrument, before the instrument starts it.
    """

    async def execute(self, request: StepRequest, progress: ProgressSink) -> dict[str, Any]: ...

    async def cancel(self, request: StepRequest) -> bool:
        """Ask the instrument to stop; True if it confirmed."""
        ...


async def started(request: StepRequest, instrument: str | None) -> None:
    """Tell the engine the step is starting on ``instrument``; returns once that is committed."""
    pending = request.started(instrument)
    if pending is not None:
        await pending


@dataclass
class StepFailure(Exception):
    """A step attempt failed. ``retryable`` drives the retry policy."""

    message: str
    code: str = "StepFailed"
    retryable: bool = True
    outcome_unknown: bool = False

    def __str__(self) -> str:
        return self.message


def classify(exc: BaseException) -> StepFailure:
    """Turn whatever an executor raised into a StepFailure (code, retryable, outcome unknown)."""
    if isinstance(exc, StepFailure):
        return exc
    code = getattr(exc, "code", None) or type(exc).__name__
    names = {cls.__name__ for cls in type(exc).__mro__}
    unknown = "OutcomeUnknown" in names
    retryable = bool(getattr(exc, "retryable", True)) and not unknown
    return StepFailure(str(exc) or type(exc).__name__, str(code), retryable, unknown)


class SimulatedExecutor:
    """Runs steps with simulated durations and seeded failures (no instruments needed).

    ``durations`` maps a step kind (or ``"*"``) to seconds; ``failure_rate`` fails attempts at
    random (seeded); ``fail_kinds`` maps a kind to the number of its next attempts that fail;
    ``hang_kinds`` never finish (until cancelled or timed out).
    """

    def __init__(self, clock: Clock, *, durations: Mapping[str, float] | None = None,
                 failure_rate: float = 0.0, seed: int = 0, fail_kinds: Mapping[str, int] | None = None,
                 hang_kinds: Iterable[str] = (), outputs: Callable[[StepRequest], dict[str, Any]] | None = None
                 ) -> None:
        self.clock = clock
        self.durations = dict(durations or {})
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.fail_kinds = dict(fail_kinds or {})
        self.hang_kinds = set(hang_kinds)
        self.outputs = outputs
        self.calls: list[StepRequest] = []
        self.cancelled: list[str] = []

    async def execute(self, request: StepRequest, progress: ProgressSink) -> dict[str, Any]:
        self.calls.append(request)
        await started(request, "simulator")
        if request.kind in self.hang_kinds:
            await asyncio.Event().wait()
        seconds = self.durations.get(request.kind, self.durations.get("*", 0.0))
        if seconds:
            await self.clock.sleep(seconds)
        if self.fail_kinds.get(request.kind, 0) > 0:
            self.fail_kinds[request.kind] -= 1
            raise StepFailure(f"{request.kind} failed (simulated)", "SimulatedFailure")
        if self.failure_rate and self.rng.random() < self.failure_rate:
            raise StepFailure(f"{request.kind} failed (simulated, rate {self.failure_rate})",
                              "SimulatedFailure")
        progress(1.0, None)
        if self.outputs is not None:
            return self.outputs(request)
        return {"Success": True, **{f"in_{k}": v for k, v in request.parameters.items()}}

    async def cancel(self, request: StepRequest) -> bool:
        self.cancelled.append(request.order_id)
        return True


# ============================================================================ templates


class TemplateRegistry:
    """Published templates in the store. A published version never changes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[tuple[str, int], WorkflowTemplate] = {}

    async def publish(self, template: WorkflowTemplate, *, who: str = "labconsole") -> WorkflowTemplate:
        """Publish as the next version; identical content to the latest returns the latest."""
        digest = template.content_hash()

        def op(conn: sqlite3.Connection) -> tuple[int, bool]:
            row = conn.execute("SELECT version, content_hash FROM templates WHERE name = ? "
                               "ORDER BY version DESC LIMIT 1", (template.name,)).fetchone()
            if row is not None and row[1] == digest:
                return row[0], False
            version = (row[0] if row else 0) + 1
            body = template.model_copy(update={"version": version})
            conn.execute("INSERT INTO templates (name, version, definition, content_hash, published_at, "
                         "published_by) VALUES (?,?,?,?,strftime('%s','now'),?)",
                         (template.name, version, body.model_dump_json(), digest, who))
            return version, True

        version, new = await self.store.write(op)
        if new:
            await self.store.audit(who, "publish template", template.name, None, {"version": version})
        return self.get(template.name, version)

    def get(self, name: str, version: int | None = None) -> WorkflowTemplate:
        if version is None:  # which version is latest (cheap), then the shared parsed copy
            latest = self.store.read_sync(lambda c: c.execute(
                "SELECT max(version) FROM templates WHERE name = ?", (name,)).fetchone())
            if latest and latest[0] is not None:
                version = latest[0]
        if version is not None and (name, version) in self._cache:
            return self._cache[(name, version)]  # published versions never change: share one copy
        sql = "SELECT definition, version FROM templates WHERE name = ?"
        params: tuple = (name,)
        if version is None:
            sql += " ORDER BY version DESC LIMIT 1"
        else:
            sql += " AND version = ?"
            params = (name, version)
        row = self.store.read_sync(lambda c: c.execute(sql, params).fetchone())
        if row is None:
            known = self.names()
            raise NotFoundError(f"no template '{name}'" + (f" version {version}" if version else "")
                                + (f" (known: {', '.join(known)})" if known else " (none published)"))
        t = WorkflowTemplate.model_validate_json(row[0])
        self._cache[(name, row[1])] = t
        return t

    def names(self) -> list[str]:
        return [r[0] for r in self.store.read_sync(
            lambda c: c.execute("SELECT DISTINCT name FROM templates ORDER BY name").fetchall())]

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every published version of ``name``: version, published_at (epoch s), published_by."""
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT version, published_at, published_by FROM templates WHERE name = ? ORDER BY version",
            (name,)).fetchall())
        return [{"version": r[0], "published_at": float(r[1]), "published_by": r[2]} for r in rows]

    def versions(self, name: str) -> list[int]:
        return [r[0] for r in self.store.read_sync(
            lambda c: c.execute("SELECT version FROM templates WHERE name = ? ORDER BY version",
                                (name,)).fetchall())]

    def latest(self) -> list[WorkflowTemplate]:
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT definition FROM templates t WHERE version = "
            "(SELECT max(version) FROM templates WHERE name = t.name) ORDER BY name").fetchall())
        return [WorkflowTemplate.model_validate_json(r[0]) for r in rows]


# ============================================================================ in-memory run state


@dataclass
class _StepState:
    step: Step
    order_id: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    outputs: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    instrument: str | None = None
    task: asyncio.Task | None = None
    request: StepRequest | None = None
    cancel_reason: str | None = None
    cancel_by: tuple[str, str | None] | None = None
    """(who, why) of an operator's cancel, for the transition log."""
    next_attempt_at: float | None = None
    started: float | None = None
    ended: float | None = None
    timer: _Timer | None = None
    handler_for: str | None = None


@dataclass
class _Run:
    run_id: str
    template: WorkflowTemplate
    input_data: dict[str, Any]
    priority: int
    status: RunStatus = RunStatus.PENDING
    biosero_priority: OrderPriority = OrderPriority.Standard
    steps: dict[str, _StepState] = field(default_factory=dict)
    recovery_attempts: int = 0
    paused: bool = False
    error: str | None = None
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    deadline: float | None = None
    timer: _Timer | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    unfinished: int = 0
    """Steps not in a final state (kept up to date by Engine._set_steps)."""
    children: dict[str, list[str]] = field(default_factory=dict)

    def index(self) -> None:
        """Compute the dependants map and the unfinished count from the steps."""
        self.children = {}
        for sid, state in self.steps.items():
            for dep in state.step.depends_on:
                self.children.setdefault(dep, []).append(sid)
        self.unfinished = sum(1 for s in self.steps.values() if s.status not in STEP_FINAL)

    @property
    def context(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "template_name": self.template.name,
                "template_version": self.template.version,
                "recovery_attempts": self.recovery_attempts,
                "attempts": {sid: s.attempt for sid, s in self.steps.items()}}

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {sid: dict(s.outputs or {}) for sid, s in self.steps.items()
                if s.status in DONE_OK and s.outputs is not None}


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    callback: Callable[[], Any] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


# ============================================================================ engine


class Engine:
    """Runs workflow templates as durable DAGs of orders. See the module docstring."""

    def __init__(self, core: Core, executor: StepExecutor, *, clock: Clock | None = None,
                 registry: TemplateRegistry | None = None, seed: int | None = None,
                 duplicate_window: float = 10.0) -> None:
        self.core = core
        self.store = core.store
        self.executor = executor
        self.clock = clock or SystemClock()
        self.templates = registry or TemplateRegistry(core.store)
        self.rng = random.Random(seed)
        self.duplicate_window = duplicate_window
        """Seconds within which the same template + inputs + requester is refused as a duplicate."""
        self._runs: dict[str, _Run] = {}
        """Runs in flight (and finished ones whose attempts are still winding down)."""
        self._ended: dict[str, RunStatus] = {}
        """Final status of runs this engine finished and released from ``_runs``."""
        self._heap: list[_Timer] = []
        self._seq = itertools.count()
        self._rearm = asyncio.Event()
        self._timer_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.step_dispatch_latencies: deque[float] = deque(maxlen=100_000)
        """Seconds from "step ready" to "executor called", the most recent ones (for benchmarks)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, resume: bool = True) -> None:
        """Start the timer and (``resume``) whatever was in flight when the console last stopped."""
        if self._timer_task is None:
            self._timer_task = asyncio.create_task(self._timer_loop(), name="engine-timers")
        if resume:
            await self.recover_in_flight()

    async def sync_with_store(self) -> tuple[list[str], list[str]]:
        """Pick up changes other processes made to the store (the command line, Data Services).

        Runs created elsewhere and still pending are started; runs this engine is executing that
        were cancelled elsewhere are stopped. Returns (started, stopped) run ids. Cheap: two
        indexed queries.
        """
        rows = await self.store.read(lambda c: c.execute(
            "SELECT run_id, status FROM runs WHERE status IN ('pending', 'cancelled') "
            "ORDER BY created").fetchall())
        started, stopped = [], []
        for run_id, status in rows:
            run = self._runs.get(run_id)
            if status == "pending" and run is None:
                await self.recover_in_flight(only=run_id)
                started.append(run_id)
            elif status == "cancelled" and run is not None and run.status not in RUN_FINAL:
                why = "Canceled outside the console"
                run.error = why
                await self._abort_rest(run, why)
                await self._finish(run, RunStatus.CANCELLED, why)
                stopped.append(run_id)
        return started, stopped

    async def close(self) -> None:
        """Stop timers and detach from running steps (their state stays in the store)."""
        self._closing = True
        if self._timer_task is not None:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
            self._timer_task = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ timers (one heap, one task)

    def _at(self, when: float, callback: Callable[[], Any]) -> _Timer:
        timer = _Timer(when, next(self._seq), callback)
        earliest = self._heap[0].when if self._heap else None
        heapq.heappush(self._heap, timer)
        if earliest is None or when < earliest:
            self._rearm.set()
        return timer

    async def _timer_loop(self) -> None:
        while True:
            now = self.clock.now()
            while self._heap and (self._heap[0].cancelled or self._heap[0].when <= now):
                timer = heapq.heappop(self._heap)
                if not timer.cancelled:
                    try:
                        timer.callback()
                    except Exception:
                        log.exception("engine timer callback failed")
            await sleep_or_wake(self.clock, self._heap[0].when - now if self._heap else None, self._rearm)

    # ------------------------------------------------------------------ templates (seed 001 API)

    async def publish(self, template: WorkflowTemplate, *, who: str = "labconsole") -> WorkflowTemplate:
        return await self.templates.publish(template, who=who)

    async def create_template(self, name: str, definition: dict[str, Any], description: str = "",
                              tags: Iterable[str] = (), *, who: str = "labconsole") -> WorkflowTemplate:
        """Seed 001's ``create_template``: check the definition and publish it as the next version."""
        data = {"name": name, "description": description, "tags": list(tags), "definition": definition}
        return await self.publish(template_from_dict(data, source=f"template '{name}'"), who=who)

    # ------------------------------------------------------------------ creating runs

    def _check_inputs(self, template: WorkflowTemplate, input_data: Mapping[str, Any]) -> dict[str, Any]:
        problems: list[Problem] = []
        declared = {p.name: p for p in template.inputs}
        out: dict[str, Any] = {}
        for name, value in input_data.items():
            if declared and name not in declared:
                problems.append(Problem(Where(f"inputs of {template.name}", name),
                                        f"unknown input (declared: {', '.join(declared)})"))
                continue
            param = declared.get(name)
            try:
                out[name] = param.coerce(value) if param else value
            except (ValueError, TypeError) as exc:
                problems.append(Problem(Where(f"inputs of {template.name}", name),
                                        f"{exc} (expected {param.type.value if param else 'a value'})"))
        for name, param in declared.items():
            if name not in out and not any(p.where.field == name for p in problems):
                if param.default is not None:
                    out[name] = param.default
                elif param.required:
                    problems.append(Problem(Where(f"inputs of {template.name}", name), "required input missing"))
        if problems:
            raise InputError(f"inputs for {template.name} v{template.version} rejected", problems)
        return out

    async def create_instance(self, template_name: str, input_data: Mapping[str, Any] | None = None, *,
                              priority: int = 50, version: int | None = None, who: str = "labconsole",
                              biosero_priority: OrderPriority = OrderPriority.Standard,
                              parent_identifier: str | None = None, requester: str | None = None,
                              allow_duplicate: bool = False) -> str:
        """Create a run (parent order + one child order per step) in one transaction; return its id.

        The same template + inputs + requester within ``duplicate_window`` seconds is refused
        with :class:`DuplicateSubmissionError` naming the earlier run, unless ``allow_duplicate``.
        """
        template = self.templates.get(template_name, version)
        inputs = self._check_inputs(template, input_data or {})
        if not 0 <= priority <= 100:
            raise InputError.at(f"priority must be 0..100, not {priority}", field="priority")
        now = self.clock.now()
        parent = Order(templateName=template.name, templateVersion=str(template.version),
                       inputParameters=[to_parameter(k, v) for k, v in inputs.items()], createdBy=who,
                       priority=biosero_priority, parentIdentifier=parent_identifier,
                       creationTime=_dt(now), estimatedDuration=None)
        store = self.store
        step_ids = [s.id for s in template.steps]
        requester = requester or who
        dedup = hashlib.sha256(json.dumps([template.name, inputs, requester], sort_keys=True,
                                          default=str).encode()).hexdigest()[:24]
        window = 0.0 if allow_duplicate else self.duplicate_window

        def op(conn: sqlite3.Connection) -> tuple[str, list[tuple[Order, tuple]]]:
            if window > 0:
                earlier = conn.execute("SELECT run_id, created FROM runs WHERE dedup_key = ? AND created > ? "
                                       "ORDER BY created DESC LIMIT 1", (dedup, now - window)).fetchone()
                if earlier is not None:
                    raise DuplicateSubmissionError(
                        f"{template.name} with the same inputs was already submitted by {requester} "
                        f"{now - earlier[1]:.0f} s ago as run {earlier[0]} (duplicate window "
                        f"{window:g} s); pass allow_duplicate to run it again", earlier[0])
            made = [store.new_order_op(parent, who=who, why=f"run of {template.name} v{template.version}",
                                       numeric_priority=priority)(conn)]
            run_id = made[0][0].identifier or ""
            ids: dict[str, str] = {}
            for s in template.steps:
                child = Order(parentIdentifier=run_id, templateName=s.kind,
                              restrictToModuleIds=",".join(s.restrict_to) or None,
                              moduleRestrictionStrategy=s.module_restriction,
                              templateVersion=str(template.version), createdBy=run_id,
                              notes=f"{s.id}: {s.label}", creationTime=_dt(now),
                              runAfterIdentifier=",".join(ids.get(d, d) for d in s.depends_on) or None,
                              priority=biosero_priority,
                              inputParameters=[to_parameter(k, v) for k, v in s.parameters.items()])
                made.append(store.new_order_op(child, who=who, numeric_priority=priority)(conn))
                ids[s.id] = made[-1][0].identifier or ""
            conn.execute("INSERT INTO runs (run_id, template_name, template_version, status, priority, "
                         "input_data, context, created, dedup_key, requester) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (run_id, template.name, template.version, RunStatus.PENDING.value, priority,
                          json.dumps(inputs), "{}", now, dedup, requester))
            conn.executemany("INSERT INTO step_runs (run_id, step_id, order_id, status) VALUES (?,?,?,?)",
                             [(run_id, sid, ids[sid], StepStatus.PENDING.value) for sid in step_ids])
            return run_id, made

        run_id, made = await store.write(op)
        for order, row in made:
            self.core.bus.publish(OrderCreated(order_id=order.identifier or "", parent_id=order.parentIdentifier,
                                               template_name=order.templateName, row=row))
        run = _Run(run_id, template, inputs, priority, created=now, biosero_priority=biosero_priority)
        for (order, _row), s in zip(made[1:], template.steps, strict=True):
            run.steps[s.id] = _StepState(s, order.identifier or "")
        run.index()
        self._runs[run_id] = run
        self.core.bus.publish(RunChanged(run_id=run_id, template_name=template.name,
                                         template_version=template.version, status=run.status.value))
        return run_id

    async def execute_workflow(self, instance_id: str, async_execution: bool = True) -> RunStatus:
        """Start a created run. With ``async_execution=False`` wait until it ends."""
        run = await self._reopen(instance_id)
        if run.status is RunStatus.PENDING:
            run.started = self.clock.now()
            if run.template.default_timeout:
                run.deadline = run.started + run.template.default_timeout
                run.timer = self._at(run.deadline, lambda: self._spawn(
                    self._run_timed_out(run), f"timeout-{run.run_id}"))
            await self._set_run(run, RunStatus.RUNNING, "started", who=ENGINE,
                                extra="started = ?, deadline = ?", extra_params=(run.started, run.deadline))
            await self._advance(run)
        if not async_execution:
            await self.wait(instance_id)
        return run.status

    async def start_workflow(self, template_name: str, input_data: Mapping[str, Any] | None = None, *,
                             priority: int = 50, who: str = "labconsole", wait: bool = False,
                             version: int | None = None) -> str:
        run_id = await self.create_instance(template_name, input_data, priority=priority, who=who,
                                            version=version)
        await self.execute_workflow(run_id, async_execution=not wait)
        return run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Wait (real time) until the run ends or pauses for the operator."""
        run = await self._reopen(run_id)
        if timeout is None:
            await run.done.wait()
        else:
            await asyncio.wait_for(run.done.wait(), timeout)
        self._release(run)
        return run.status

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"no active run '{run_id}' (ended runs are read with get_instance)")
        return run

    # ------------------------------------------------------------------ scheduling steps

    async def _advance(self, run: _Run, after: _StepState | None = None) -> None:
        """Start every step whose dependencies are met; finish the run when nothing is left.

        With ``after`` only that step's dependants are looked at (a completion cannot make any
        other step ready), so a wide fan-out costs O(n), not O(n²).
        """
        if self._closing or run.status in RUN_FINAL:
            return
        candidates = [run.steps[c] for c in run.children.get(after.step.id, ())] if after else \
            list(run.steps.values())
        while candidates:
            to_start: list[_StepState] = []
            changed: list[_StepState] = []
            for state in candidates:
                if state.status is not StepStatus.PENDING or state.step.id in run.template.handler_steps \
                        and state.handler_for is None:
                    continue
                if run.paused or run.status is RunStatus.PAUSED:
                    break
                deps = [run.steps[d] for d in state.step.depends_on]
                if any(d.status in (StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.UNKNOWN) for d in deps):
                    if run.template.failure_policy is FailurePolicy.CONTINUE or any(
                            d.status is StepStatus.CANCELLED for d in deps):
                        blocker = next(d for d in deps if d.status not in DONE_OK)
                        await self._set_step(run, state, StepStatus.SKIPPED,
                                             f"Skipped: upstream step '{blocker.step.id}' {blocker.status.value}")
                        changed.append(state)
                    continue
                if not all(d.status in DONE_OK for d in deps):
                    continue
                if state.step.condition:
                    try:
                        ok = evaluate(state.step.condition, step_outputs=run.outputs(),
                                      input_data=run.input_data, context=run.context)
                    except ConditionError as exc:
                        await self._fail_for_good(run, state, StepFailure(str(exc), "ConditionError", False))
                        continue
                    if not ok:
                        await self._set_step(run, state, StepStatus.SKIPPED,
                                             f"Skipped: condition is false: {state.step.condition}")
                        changed.append(state)
                        continue
                to_start.append(state)
            if to_start:
                await self._start_attempts(run, to_start)
            # skipped steps satisfy their dependants: look at those next
            candidates = [run.steps[c] for st in changed for c in run.children.get(st.step.id, ())]
        await self._maybe_finish(run)

    async def _start_attempt(self, run: _Run, state: _StepState) -> None:
        await self._start_attempts(run, [state])

    async def _start_attempts(self, run: _Run, states: list[_StepState]) -> None:
        """Queue the next attempt of each step: one transaction for all, then call the executor."""
        ready_at = self.clock.now()
        batch: list[tuple[_StepState, StepRequest]] = []
        for state in states:
            state.attempt += 1
            state.next_attempt_at = None
            try:
                params = self._resolve_parameters(run, state.step)
            except StepFailure as failure:
                await self._fail_for_good(run, state, failure)
                continue
            batch.append((state, self._request(run, state, params)))
        if not batch:
            return
        await self._set_steps(run, [
            (state, StepStatus.QUEUED, f"attempt {state.attempt}" if state.attempt > 1 else None,
             {"inputParameters": request.order.inputParameters}) for state, request in batch])
        now = self.clock.now()
        for state, request in batch:
            if state.status is not StepStatus.QUEUED or state.request is not request:
                continue  # cancelled while the write was in flight
            self.step_dispatch_latencies.append(now - ready_at)
            state.task = self._spawn(self._run_attempt(run, state, request), f"step-{state.order_id}")

    def _request(self, run: _Run, state: _StepState, params: dict[str, Any]) -> StepRequest:
        step = state.step
        order = Order(identifier=state.order_id, parentIdentifier=run.run_id, templateName=step.kind,
                      templateVersion=str(run.template.version), priority=run.biosero_priority,
                      restrictToModuleIds=",".join(step.restrict_to) or None,
                      moduleRestrictionStrategy=step.module_restriction,
                      inputParameters=[to_parameter(k, v) for k, v in params.items()])

        def started(instrument: str | None, _state: _StepState = state,
                    _attempt: int = state.attempt) -> Awaitable[None] | None:
            """Returns the write of the Running transition; executors await it before the
            instrument starts, so a crash can never leave an executing step recorded as queued."""
            if _state.attempt == _attempt and _state.status is StepStatus.QUEUED:
                _state.instrument = instrument
                return self._mark_running(run, _state, _attempt)
            return None

        request = StepRequest(run.run_id, step.id, state.order_id, step.kind, params, state.attempt,
                              step.timeout, step.idempotent, run.priority, run.template.name,
                              run.template.version, order, started, step.reserve)
        state.request = request
        state.cancel_reason = None
        return request

    async def _mark_running(self, run: _Run, state: _StepState, attempt: int) -> None:
        if state.attempt != attempt or state.status is not StepStatus.QUEUED:
            return
        state.started = self.clock.now()
        if state.step.timeout:
            state.timer = self._at(state.started + state.step.timeout,
                                   lambda: self._on_step_timeout(run, state, attempt))
        await self._set_step(run, state, StepStatus.RUNNING, None,
                             changes={"assignedTo": state.instrument})

    def _resolve_parameters(self, run: _Run, step: Step) -> dict[str, Any]:
        params = dict(step.parameters)
        outputs = run.outputs() if any(v.startswith("step_outputs.") for v in step.input_mapping.values()) else {}
        for name, source in step.input_mapping.items():
            parts = source.split(".")
            try:
                if parts[0] == "input_data":
                    value: Any = run.input_data[parts[1]]
                elif parts[0] == "step_outputs":
                    value = outputs[parts[1]][".".join(parts[2:])]
                else:
                    value = run.context[parts[1]]
            except (KeyError, IndexError):
                raise StepFailure(f"input mapping {name} <- {source}: no such value", "MappingError",
                                  retryable=False) from None
            params[name] = value
        return params

    async def _run_attempt(self, run: _Run, state: _StepState, request: StepRequest) -> None:
        def progress(fraction: float | None, values: Mapping[str, Any] | None) -> None:
            self.core.bus.publish(StepProgress(order_id=request.order_id, instrument_id=state.instrument,
                                               progress=fraction, values=dict(values) if values else None))

        try:
            if request.kind in ("delay", "noop", "prompt"):
                outputs = await self._builtin(run, state, request)
            else:
                outputs = await self.executor.execute(request, progress)
        except asyncio.CancelledError:
            reason = state.cancel_reason
            if reason is None or self._closing:
                raise
            await self._after_cancel(run, state, reason)
            return
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            if state.request is not request:
                return
            await self._on_failure(run, state, classify(exc))
            return
        if state.request is not request:
            return
        if state.timer:
            state.timer.cancel()
        state.outputs = dict(outputs or {})
        state.ended = self.clock.now()
        if state.status is StepStatus.QUEUED:  # an executor that never reported "started"
            state.started = state.started or state.ended
        await self._set_step(run, state, StepStatus.COMPLETED, None,
                             changes={"outputParameters": [to_parameter(k, v) for k, v in state.outputs.items()]})
        await self._advance(run, after=state)

    async def _builtin(self, run: _Run, state: _StepState, request: StepRequest) -> dict[str, Any]:
        await started(request, None)
        if request.kind == "delay":
            seconds = request.parameters.get("seconds", request.parameters.get("duration", 0))
            from core.durations import parse_duration

            wait = parse_duration(seconds)
            done = asyncio.get_running_loop().create_future()
            self._at(self.clock.now() + wait, lambda: done.done() or done.set_result(None))
            await done
            return {"waited_seconds": wait}
        if request.kind == "prompt":
            state.error = str(request.parameters.get("message", "Operator action required"))
            await asyncio.Event().wait()  # ends when the operator skips/completes the step
        return {}

    def _on_step_timeout(self, run: _Run, state: _StepState, attempt: int) -> None:
        if state.attempt == attempt and state.status in (StepStatus.RUNNING, StepStatus.QUEUED):
            self._spawn(self._stop_step(run, state, "timeout"), f"timeout-{state.order_id}")

    async def _stop_step(self, run: _Run, state: _StepState, reason: str) -> None:
        """Ask the instrument to stop first, then cancel the attempt; the attempt records why."""
        task, request = state.task, state.request
        if task is None or task.done() or request is None:
            return
        state.cancel_reason = reason
        try:
            confirmed = await self.executor.cancel(request)
        except Exception as exc:  # noqa: BLE001
            confirmed = False
            log.warning("cancel of %s on its instrument failed: %s", request.order_id, exc)
        if not confirmed:
            log.warning("instrument did not confirm it stopped %s", request.order_id)
        if not task.done():
            task.cancel()

    async def _after_cancel(self, run: _Run, state: _StepState, reason: str) -> None:
        if state.timer:
            state.timer.cancel()
        state.ended = self.clock.now()
        if reason == "timeout":
            policy = run.template.retry_policy(state.step)
            failure = StepFailure(f"timed out after {state.step.timeout:g} s", "Timeout",
                                  retryable=policy.retry_on_timeout)
            await self._on_failure(run, state, failure)
        elif reason == "operator":
            who, why = state.cancel_by or (ENGINE, None)
            await self._set_step(run, state, StepStatus.CANCELLED,
                                 f"Canceled by {who}" + (f": {why}" if why else ""), who=who)
            await self._advance(run)
        # "run": the run's cancel path marks the steps itself

    async def _on_failure(self, run: _Run, state: _StepState, failure: StepFailure) -> None:
        if state.timer:
            state.timer.cancel()
        state.error, state.error_code = failure.message, failure.code
        policy = run.template.retry_policy(state.step)
        retryable = failure.retryable and failure.code not in policy.non_retryable \
            and type(failure).__name__ not in policy.non_retryable
        if failure.outcome_unknown and not state.step.idempotent:
            await self._set_step(run, state, StepStatus.UNKNOWN,
                                 f"Outcome unknown: {failure.message}; the operator decides "
                                 "(retry, skip or recover)")
            await self._apply_failure_policy(run, state, force_pause=True)
            return
        if retryable and state.attempt < policy.max_attempts and run.status not in RUN_FINAL:
            delay = policy.delay(state.attempt, self.rng.random())
            state.next_attempt_at = self.clock.now() + delay
            await self._set_step(run, state, StepStatus.RETRYING,
                                 f"Retry {state.attempt + 1}/{policy.max_attempts} in {delay:.1f} s "
                                 f"after {failure.code}: {failure.message}")
            attempt = state.attempt
            state.timer = self._at(state.next_attempt_at, lambda: self._retry_due(run, state, attempt))
            return
        await self._fail_for_good(run, state, failure)

    def _retry_due(self, run: _Run, state: _StepState, attempt: int) -> None:
        if state.status is StepStatus.RETRYING and state.attempt == attempt:
            if run.paused or run.status in RUN_FINAL:
                return
            self._spawn(self._start_attempt(run, state), f"retry-{state.order_id}")

    async def _fail_for_good(self, run: _Run, state: _StepState, failure: StepFailure) -> None:
        state.error, state.error_code = failure.message, failure.code
        state.ended = self.clock.now()
        await self._set_step(run, state, StepStatus.FAILED, f"{failure.code}: {failure.message}")
        await self._apply_failure_policy(run, state)

    async def _apply_failure_policy(self, run: _Run, state: _StepState, *, force_pause: bool = False) -> None:
        handler_id = run.template.error_handlers.get(state.step.id) or run.template.error_handlers.get("*")
        if handler_id and handler_id != state.step.id and state.handler_for is None:
            handler = run.steps[handler_id]
            if handler.status is StepStatus.PENDING:
                handler.handler_for = state.step.id
                await self._start_attempt(run, handler)
        policy = run.template.failure_policy
        if force_pause or policy is FailurePolicy.PAUSE:
            run.paused = True
            await self._set_run(run, RunStatus.PAUSED, f"step '{state.step.id}' needs the operator: {state.error}",
                                who=ENGINE)
            run.done.set()
        elif policy is FailurePolicy.ABORT:
            await self._abort_rest(run, f"aborted: step '{state.step.id}' failed", keep=handler_id)
            await self._maybe_finish(run)
        else:
            await self._advance(run)

    async def _abort_rest(self, run: _Run, why: str, keep: str | None = None) -> None:
        for other in run.steps.values():
            if other.step.id == keep:
                continue
            if other.status in (StepStatus.PENDING, StepStatus.RETRYING):
                if other.timer:
                    other.timer.cancel()
                await self._set_step(run, other, StepStatus.CANCELLED, why)
            elif other.status in (StepStatus.QUEUED, StepStatus.RUNNING):
                await self._stop_step(run, other, "run")
                await self._set_step(run, other, StepStatus.CANCELLED, why)

    async def _maybe_finish(self, run: _Run) -> None:
        if run.status in RUN_FINAL:
            return
        idle_handlers = sum(1 for h in run.template.handler_steps
                            if run.steps[h].handler_for is None and run.steps[h].status is StepStatus.PENDING)
        if run.unfinished - idle_handlers > 0:
            return
        real = [s for s in run.steps.values() if s.step.id not in run.template.handler_steps or s.handler_for]
        if any(s.status in (StepStatus.FAILED, StepStatus.UNKNOWN) for s in real):
            failed = next(s for s in real if s.status in (StepStatus.FAILED, StepStatus.UNKNOWN))
            status, detail = RunStatus.FAILED, f"step '{failed.step.id}' failed: {failed.error}"
        elif any(s.status is StepStatus.CANCELLED for s in real):
            status, detail = RunStatus.CANCELLED, run.error or "a step was canceled"
        else:
            status, detail = RunStatus.COMPLETED, None
        for handler in run.steps.values():  # handlers that never ran are not part of the run
            if handler.step.id in run.template.handler_steps and handler.status is StepStatus.PENDING:
                await self._set_step(run, handler, StepStatus.SKIPPED, "Skipped: error handler not needed")
        await self._finish(run, status, detail)

    async def _finish(self, run: _Run, status: RunStatus, detail: str | None, who: str = ENGINE) -> None:
        run.ended = self.clock.now()
        run.error = detail if status is not RunStatus.COMPLETED else None
        if run.timer:
            run.timer.cancel()
        outputs = run_outputs(run.template, run.outputs(), status is RunStatus.COMPLETED)
        await self._set_run(run, status, detail, who=who, extra="ended = ?", extra_params=(run.ended,),
                            changes={"outputParameters": [to_parameter(k, v) for k, v in outputs.items()]})
        run.done.set()
        self._release(run)

    def _release(self, run: _Run) -> None:
        """Forget a finished run once none of its steps' attempts is still winding down.

        Everything about it is in the store: :meth:`get_instance` and :meth:`run_status` read it
        there, and an operator's retry, recover or skip loads it again (:meth:`_reopen`).
        """
        if run.status not in RUN_FINAL or self._runs.get(run.run_id) is not run:
            return
        busy = next((s.task for s in run.steps.values() if s.task is not None and not s.task.done()), None)
        if busy is not None:
            busy.add_done_callback(lambda _task: self._release(run))
            return
        del self._runs[run.run_id]
        self._ended[run.run_id] = run.status

    async def _run_timed_out(self, run: _Run) -> None:
        if run.status in RUN_FINAL:
            return
        why = f"run timed out after {run.template.default_timeout:g} s"
        run.error = why
        await self._abort_rest(run, why)
        await self._finish(run, RunStatus.FAILED, why)

    # ------------------------------------------------------------------ persistence

    async def _set_step(self, run: _Run, state: _StepState, status: StepStatus, detail: str | None, *,
                        changes: dict[str, Any] | None = None, who: str = ENGINE) -> None:
        await self._set_steps(run, [(state, status, detail, changes)], who=who)

    async def _set_steps(self, run: _Run, items: list[tuple[_StepState, StepStatus, str | None,
                                                             dict[str, Any] | None]], *, who: str = ENGINE) -> None:
        """Change steps' states in one transaction (step_runs rows + child orders), then publish."""
        store = self.store
        ops = []
        for state, status, detail, changes in items:
            previous = state.status
            state.status = status
            if (previous in STEP_FINAL) != (status in STEP_FINAL):
                run.unfinished += -1 if status in STEP_FINAL else 1
            row = (status.value, state.attempt, json.dumps(state.outputs) if state.outputs is not None else None,
                   state.error if status in (StepStatus.FAILED, StepStatus.UNKNOWN, StepStatus.RETRYING) else None,
                   state.error_code, state.started, state.ended, state.next_attempt_at, state.instrument,
                   run.run_id, state.step.id)
            order_changes = dict(changes or {})
            if detail is not None and status in (StepStatus.QUEUED, StepStatus.RETRYING, StepStatus.PENDING):
                order_changes["statusDetails"] = detail
            order_status = STEP_ORDER_STATUS[status]
            status_op = store.status_op(state.order_id, order_status, who=who, why=detail,
                                        changes=order_changes or None) \
                if order_status is not STEP_ORDER_STATUS[previous] or order_changes or detail else None
            ops.append((row, status_op))

        def op(conn: sqlite3.Connection) -> list[StatusChange | None]:
            out = []
            for row, status_op in ops:
                conn.execute("UPDATE step_runs SET status=?, attempt=?, outputs=?, error=?, error_code=?, "
                             "started=?, ended=?, next_attempt_at=?, instrument=? WHERE run_id=? AND step_id=?",
                             row)
                out.append(status_op(conn) if status_op else None)
            return out

        changes_made = await store.write(op)
        for (state, status, detail, _), change in zip(items, changes_made, strict=True):
            if change is not None:
                self.core.publish_change(change, who, detail)
            self.core.bus.publish(StepChanged(run_id=run.run_id, step_id=state.step.id, order_id=state.order_id,
                                              status=status.value, attempt=state.attempt, detail=detail,
                                              instrument=state.instrument))

    async def _set_run(self, run: _Run, status: RunStatus, detail: str | None, *, who: str,
                       extra: str | None = None, extra_params: tuple = (),
                       changes: dict[str, Any] | None = None,
                       audit: tuple[str, str | None] | None = None) -> None:
        run.status = status
        store = self.store
        order_status = RUN_ORDER_STATUS[status]
        sets = "status = ?, paused = ?, error = ?, recovery_attempts = ?" + (f", {extra}" if extra else "")
        params = (status.value, int(run.paused), run.error, run.recovery_attempts, *extra_params, run.run_id)
        status_op = store.status_op(run.run_id, order_status, who=who, why=detail, changes=changes)
        audit_op = store.audit_op(who, audit[0], run.run_id, audit[1]) if audit else None

        def op(conn: sqlite3.Connection) -> StatusChange:
            conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", params)
            if audit_op:
                audit_op(conn)
            return status_op(conn)

        change = await store.write(op)
        self.core.publish_change(change, who, detail)
        self.core.bus.publish(RunChanged(run_id=run.run_id, template_name=run.template.name,
                                         template_version=run.template.version, status=status.value,
                                         detail=detail))
        if audit:
            self.core.bus.publish(OperatorAction(who=who, action=audit[0], target=run.run_id, reason=audit[1]))

    # ------------------------------------------------------------------ operator control

    async def cancel(self, run_id: str, *, who: str | None = None, reason: str | None = None) -> RunStatus:
        """Cancel a run: stop running steps on their instruments, cancel the rest."""
        who = who or os_user()
        run = await self._reopen(run_id)
        if run.status in RUN_FINAL:
            self._release(run)
            raise IllegalTransitionError(f"run {run_id}", run.status.value, RunStatus.CANCELLED.value)
        why = f"Canceled by {who}" + (f": {reason}" if reason else "")
        run.error = why
        await self._abort_rest(run, why)
        await self._finish(run, RunStatus.CANCELLED, why, who=who)
        await self._audit(who, "cancel run", run_id, reason)
        return run.status

    async def cancel_step(self, run_id: str, step_id: str, *, who: str | None = None,
                          reason: str | None = None) -> StepStatus:
        who = who or os_user()
        run = await self._reopen(run_id)
        state = self._step(run, step_id)
        if state.status in STEP_FINAL:
            raise IllegalTransitionError(f"step {step_id} of {run_id}", state.status.value, "cancelled")
        await self._audit(who, "cancel step", state.order_id, reason)
        if state.status in (StepStatus.QUEUED, StepStatus.RUNNING):
            state.cancel_by = (who, reason)
            await self._stop_step(run, state, "operator")
            if state.task is not None:
                await asyncio.gather(state.task, return_exceptions=True)
        else:
            if state.timer:
                state.timer.cancel()
            await self._set_step(run, state, StepStatus.CANCELLED, f"Canceled by {who}: {reason or ''}".strip(": "))
            await self._advance(run)
        return state.status

    async def pause(self, run_id: str, *, who: str | None = None, reason: str | None = None) -> RunStatus:
        """No new step starts; running steps finish."""
        who = who or os_user()
        run = await self._reopen(run_id)
        if run.status in RUN_FINAL or run.paused:
            self._release(run)
            raise IllegalTransitionError(f"run {run_id}", run.status.value, RunStatus.PAUSED.value)
        run.paused = True
        await self._set_run(run, RunStatus.PAUSED, f"Paused by {who}" + (f": {reason}" if reason else ""),
                            who=who, audit=("pause", reason))
        return run.status

    async def resume(self, run_id: str, *, who: str | None = None, reason: str | None = None) -> RunStatus:
        who = who or os_user()
        run = await self._reopen(run_id)
        if run.status is not RunStatus.PAUSED:
            raise IllegalTransitionError(f"run {run_id}", run.status.value, RunStatus.RUNNING.value)
        blocked = [s.step.id for s in run.steps.values() if s.status is StepStatus.UNKNOWN]
        if blocked:
            raise StateError(f"run {run_id}: step(s) {', '.join(blocked)} have an unknown outcome; "
                             "retry, skip or recover them first")
        run.paused = False
        run.done.clear()
        await self._set_run(run, RunStatus.RUNNING, f"Resumed by {who}", who=who, audit=("resume", reason))
        await self._resume_steps(run)
        await self._advance(run)
        return run.status

    async def _resume_steps(self, run: _Run) -> None:
        for state in run.steps.values():
            if state.status is StepStatus.RETRYING and state.next_attempt_at is not None \
                    and state.next_attempt_at <= self.clock.now():
                await self._start_attempt(run, state)

    async def retry_step(self, run_id: str, step_id: str, *, who: str | None = None,
                         reason: str | None = None) -> RunStatus:
        """Run a failed (or canceled, or unknown-outcome) step again with fresh attempts."""
        who = who or os_user()
        run = await self._reopen(run_id)
        state = self._step(run, step_id)
        if state.status not in (StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.UNKNOWN):
            raise IllegalTransitionError(f"step {step_id} of {run_id}", state.status.value, "retry")
        await self._audit(who, "retry step", state.order_id, reason)
        to_reset = [state] + [run.steps[d] for d in descendants(run.template, step_id)
                              if run.steps[d].status in (StepStatus.SKIPPED, StepStatus.CANCELLED)
                              and (run.steps[d].error is None)]
        await self._reset(run, to_reset, f"Retry requested by {who}")
        return await self._continue(run, who)

    async def recover(self, run_id: str, from_step: str, *, who: str | None = None,
                      reason: str | None = None) -> RunStatus:
        """Seed 002's ``recover_workflow(from_step)``: rerun ``from_step`` and everything after it,
        keeping upstream outputs; counts against ``max_recovery_attempts``."""
        who = who or os_user()
        run = await self._reopen(run_id)
        self._step(run, from_step)
        if run.recovery_attempts >= run.template.max_recovery_attempts:
            raise StateError(f"run {run_id}: recovery limit reached "
                             f"({run.recovery_attempts}/{run.template.max_recovery_attempts})")
        running = [s.step.id for s in run.steps.values() if s.status in (StepStatus.QUEUED, StepStatus.RUNNING)]
        if running:
            raise StateError(f"run {run_id}: steps {', '.join(running)} are still running; "
                             "pause and wait, or cancel them first")
        run.recovery_attempts += 1
        ids = [from_step, *descendants(run.template, from_step)]
        await self._reset(run, [run.steps[s] for s in ids], f"Recovery {run.recovery_attempts} from "
                          f"'{from_step}' by {who}")
        await self._audit(who, "recover", run_id, reason, {"from_step": from_step,
                                                             "attempt": run.recovery_attempts})
        run.status = RunStatus.RECOVERING
        return await self._continue(run, who)

    async def skip_step(self, run_id: str, step_id: str, outputs: Mapping[str, Any] | None = None, *,
                        who: str | None = None, reason: str | None = None) -> RunStatus:
        """Mark a failed (or waiting) step as skipped with the given outputs; dependants proceed."""
        who = who or os_user()
        run = await self._reopen(run_id)
        state = self._step(run, step_id)
        if state.status in (StepStatus.COMPLETED, StepStatus.SKIPPED):
            raise IllegalTransitionError(f"step {step_id} of {run_id}", state.status.value, "skipped")
        if state.status in (StepStatus.QUEUED, StepStatus.RUNNING):
            state.cancel_reason = "skip"
            await self._stop_step(run, state, "skip")
        if state.timer:
            state.timer.cancel()
        state.request = None
        state.outputs = dict(outputs or {})
        state.error = None
        await self._audit(who, "skip step", state.order_id, reason, {"outputs": state.outputs})
        await self._set_step(run, state, StepStatus.SKIPPED, f"Skipped by {who}" + (f": {reason}" if reason else ""),
                             changes={"outputParameters": [to_parameter(k, v) for k, v in state.outputs.items()]})
        for d in descendants(run.template, step_id):
            dep = run.steps[d]
            if dep.status is StepStatus.SKIPPED and (dep.error is None) and dep.outputs is None:
                await self._reset(run, [dep], "upstream step skipped by operator")
        return await self._continue(run, who)

    async def _reopen(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            run = await self._load_run(run_id)
            if run is None:
                raise NotFoundError(f"no run '{run_id}'")
        return run

    async def _continue(self, run: _Run, who: str) -> RunStatus:
        if any(s.status is StepStatus.UNKNOWN for s in run.steps.values()):
            return run.status
        run.paused = False
        run.done.clear()
        run.ended = None
        if run.status is not RunStatus.RUNNING:
            await self._set_run(run, RunStatus.RUNNING, f"Continued by {who}", who=who)
        await self._advance(run)
        return run.status

    async def _reset(self, run: _Run, states: list[_StepState], why: str) -> None:
        for state in states:
            if state.timer:
                state.timer.cancel()
            state.attempt = 0
            state.outputs = None
            state.error = state.error_code = None
            state.started = state.ended = state.next_attempt_at = None
            state.request = None
            state.handler_for = None
            await self._set_step(run, state, StepStatus.PENDING, why,
                                 changes={"outputParameters": [], "actualEndTime": None, "assignedTo": None})

    def _step(self, run: _Run, step_id: str) -> _StepState:
        state = run.steps.get(step_id)
        if state is None:
            raise NotFoundError(f"run {run.run_id} has no step '{step_id}' "
                                f"(steps: {', '.join(run.steps)})")
        return state

    async def _audit(self, who: str, action: str, target: str, reason: str | None,
                     details: dict[str, Any] | None = None) -> None:
        await self.store.audit(who, action, target, reason, details)
        self.core.bus.publish(OperatorAction(who=who, action=action, target=target, reason=reason))

    # ------------------------------------------------------------------ crash recovery

    async def recover_in_flight(self, only: str | None = None) -> list[str]:
        """Resume every run the store says was not finished (or just ``only``). Returns their ids."""
        rows = await self.store.read(lambda c: c.execute(
            "SELECT run_id FROM runs WHERE status IN ('pending', 'running', 'paused', 'recovering') "
            + ("AND run_id = ? " if only else "") + "ORDER BY created", (only,) if only else ()).fetchall())
        resumed = []
        for (run_id,) in rows:
            if run_id in self._runs:
                continue
            run = await self._load_run(run_id)
            if run is None:
                continue
            resumed.append(run_id)
            unknown = False
            rerun: list[_StepState] = []
            for state in run.steps.values():
                if state.status is StepStatus.QUEUED:
                    await self._set_step(run, state, StepStatus.PENDING, "Requeued after restart")
                elif state.status is StepStatus.RUNNING:
                    if state.step.idempotent or state.step.is_builtin:
                        await self._set_step(run, state, StepStatus.PENDING,
                                             "Re-run after restart (idempotent step)")
                        rerun.append(state)
                    else:
                        state.error = ("outcome unknown: the console stopped while this step was executing "
                                       f"on {state.instrument or 'its instrument'}")
                        state.error_code = "OutcomeUnknown"
                        await self._set_step(run, state, StepStatus.UNKNOWN, state.error)
                        unknown = True
                elif state.status is StepStatus.RETRYING and state.next_attempt_at is not None:
                    attempt = state.attempt
                    state.timer = self._at(state.next_attempt_at,
                                           lambda r=run, s=state, a=attempt: self._retry_due(r, s, a))
            if run.deadline is not None:
                run.timer = self._at(run.deadline, lambda r=run: self._spawn(self._run_timed_out(r), "timeout"))
            if unknown:
                run.paused = True
                await self._set_run(run, RunStatus.PAUSED, "waiting for the operator after a restart: "
                                    "a step's outcome is unknown", who=ENGINE)
                run.done.set()
                for state in rerun:  # interrupted idempotent steps finish what they had started
                    await self._start_attempt(run, state)
            elif run.status is RunStatus.PENDING:
                await self.execute_workflow(run_id)
            elif not run.paused:
                if run.status is RunStatus.RECOVERING:
                    await self._set_run(run, RunStatus.RUNNING, "resumed after restart", who=ENGINE)
                await self._advance(run)
        return resumed

    async def _load_run(self, run_id: str) -> _Run | None:
        def read(c: sqlite3.Connection) -> tuple[Any, list[Any]]:
            r = c.execute("SELECT template_name, template_version, status, priority, input_data, "
                          "recovery_attempts, paused, error, created, started, ended, deadline "
                          "FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            steps = c.execute("SELECT step_id, order_id, status, attempt, outputs, error, error_code, "
                              "started, ended, next_attempt_at, instrument FROM step_runs WHERE run_id = ?",
                              (run_id,)).fetchall()
            return r, steps

        r, steps = await self.store.read(read)
        if r is None:
            return None
        template = self.templates.get(r[0], r[1])
        parent = await self.store.read(lambda c: c.execute("SELECT priority FROM orders WHERE id = ?",
                                                           (run_id,)).fetchone())
        run = _Run(run_id, template, json.loads(r[4]), r[3], RunStatus(r[2]), recovery_attempts=r[5],
                   paused=bool(r[6]), error=r[7], created=r[8], started=r[9], ended=r[10], deadline=r[11],
                   biosero_priority=OrderPriority(parent[0]) if parent else OrderPriority.Standard)
        by_id = {s[0]: s for s in steps}
        for step in template.steps:
            s = by_id[step.id]
            run.steps[step.id] = _StepState(step, s[1], StepStatus(s[2]), s[3],
                                            json.loads(s[4]) if s[4] else None, s[5], s[6],
                                            instrument=s[10], started=s[7], ended=s[8], next_attempt_at=s[9])
        run.index()
        if run.status in RUN_FINAL:
            run.done.set()
        self._runs[run_id] = run
        self._ended.pop(run_id, None)
        return run

    # ------------------------------------------------------------------ queries (from the store)

    def get_instance(self, run_id: str) -> dict[str, Any]:
        """The run as stored: template, version, status, inputs, outputs and every step."""
        def read(c: sqlite3.Connection) -> tuple[Any, list[Any]]:
            r = c.execute("SELECT run_id, template_name, template_version, status, priority, input_data, "
                          "recovery_attempts, error, created, started, ended FROM runs WHERE run_id = ?",
                          (run_id,)).fetchone()
            s = c.execute("SELECT step_id, order_id, status, attempt, outputs, error, error_code, started, "
                          "ended, instrument FROM step_runs WHERE run_id = ?", (run_id,)).fetchall()
            return r, s

        r, steps = self.store.read_sync(read)
        if r is None:
            raise NotFoundError(f"no run '{run_id}'")
        template = self.templates.get(r[1], r[2])
        order = {s.id: i for i, s in enumerate(template.steps)}
        steps = sorted(steps, key=lambda s: order.get(s[0], 0))
        return {"id": r[0], "template_name": r[1], "template_version": r[2], "status": r[3],
                "priority": r[4], "input_data": json.loads(r[5]), "recovery_attempts": r[6],
                "error": r[7], "created_at": r[8], "started_at": r[9], "completed_at": r[10],
                "steps": [{"id": s[0], "name": template.step(s[0]).label, "kind": template.step(s[0]).kind,
                           "order_id": s[1], "status": s[2], "attempt": s[3],
                           "outputs": json.loads(s[4]) if s[4] else None, "error": s[5],
                           "error_code": s[6], "started_at": s[7], "completed_at": s[8],
                           "instrument": s[9]} for s in steps]}

    def get_workflow_progress(self, workflow_id: str) -> dict[str, Any]:
        """Seed 002's progress report."""
        inst = self.get_instance(workflow_id)
        steps = inst["steps"]
        total = len(steps)
        done = sum(1 for s in steps if s["status"] in ("completed", "skipped"))
        failed = sum(1 for s in steps if s["status"] in ("failed", "unknown"))
        running = sum(1 for s in steps if s["status"] in ("running", "queued", "retrying"))
        current = next((i for i, s in enumerate(steps) if s["status"] not in ("completed", "skipped")), total - 1)
        template = self.templates.get(inst["template_name"], inst["template_version"])
        return {
            "workflow_id": workflow_id, "job_id": workflow_id, "status": inst["status"],
            "progress": round(100 * done / total) if total else 100, "current_step": current,
            "total_steps": total, "completed_tasks": done, "failed_tasks": failed,
            "running_tasks": running, "total_tasks": total,
            "recovery_attempts": inst["recovery_attempts"],
            "max_recovery_attempts": template.max_recovery_attempts,
            "started_at": _iso(inst["started_at"]), "completed_at": _iso(inst["completed_at"]),
            "tasks": [{"id": s["id"], "order_id": s["order_id"], "name": s["name"], "type": s["kind"],
                       "status": s["status"], "retry_count": max(0, (s["attempt"] or 0) - 1),
                       "error_message": s["error"]} for s in steps],
        }

    def get_statistics(self, template_name: str | None = None) -> dict[str, Any]:
        """Seed 001's statistics, per template or overall (one GROUP BY query)."""
        where, params = ("WHERE template_name = ?", (template_name,)) if template_name else ("", ())
        rows = self.store.read_sync(lambda c: c.execute(
            f"SELECT status, count(*), avg(CASE WHEN ended IS NOT NULL AND started IS NOT NULL "
            f"THEN ended - started END) FROM runs {where} GROUP BY status", params).fetchall())
        counts = {r[0]: r[1] for r in rows}
        total = sum(counts.values())
        completed, failed = counts.get("completed", 0), counts.get("failed", 0)
        finished = completed + failed + counts.get("cancelled", 0)
        durations = [(r[1], r[2]) for r in rows if r[2] is not None and r[0] == "completed"]
        return {
            "total_instances": total,
            "running_instances": counts.get("running", 0) + counts.get("recovering", 0),
            "pending_instances": counts.get("pending", 0),
            "paused_instances": counts.get("paused", 0),
            "completed_instances": completed, "failed_instances": failed,
            "cancelled_instances": counts.get("cancelled", 0),
            "success_rate": round(100.0 * completed / finished, 1) if finished else 0.0,
            "avg_duration_seconds": round(durations[0][1], 3) if durations else 0.0,
        }

    def query_instances(self, status: str | None = None, created_after: float | None = None,
                        priority_min: int | None = None, template: str | None = None,
                        limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Seed 001's ``query_instances`` → (page of runs, total matching), from indexed columns."""
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(RunStatus(status.lower()).value)
        if created_after is not None:
            clauses.append("created > ?")
            params.append(created_after.timestamp() if hasattr(created_after, "timestamp") else created_after)
        if priority_min is not None:
            clauses.append("priority >= ?")
            params.append(priority_min)
        if template is not None:
            clauses.append("template_name = ?")
            params.append(template)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""

        def read(c: sqlite3.Connection) -> tuple[list[Any], int]:
            total = c.execute(f"SELECT count(*) FROM runs {where}", params).fetchone()[0]
            rows = c.execute(f"SELECT run_id, template_name, template_version, status, priority, created, "
                             f"started, ended, error FROM runs {where} ORDER BY created DESC LIMIT ? OFFSET ?",
                             (*params, limit, offset)).fetchall()
            return rows, total

        rows, total = self.store.read_sync(read)
        return ([{"id": r[0], "template_name": r[1], "template_version": r[2], "status": r[3],
                  "priority": r[4], "created_at": r[5], "started_at": r[6], "completed_at": r[7],
                  "error": r[8]} for r in rows], total)

    def run_status(self, run_id: str) -> RunStatus:
        run = self._runs.get(run_id)
        if run is not None:
            return run.status
        ended = self._ended.get(run_id)
        if ended is not None:
            return ended
        return RunStatus(self.get_instance(run_id)["status"])


# ============================================================================ helpers


def run_outputs(template: WorkflowTemplate, step_outputs: Mapping[str, Mapping[str, Any]],
                success: bool) -> dict[str, Any]:
    """A run's output parameters: every step output as ``step.name``; names that only one step
    produces also plain (``absorbance``), the last step in template order winning; and
    ``Success`` (the Biosero convention callers check) from the run's outcome."""
    out: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for step in template.steps:
        for key, value in (step_outputs.get(step.id) or {}).items():
            out[f"{step.id}.{key}"] = value
            plain[key] = value
    for key, value in plain.items():
        out.setdefault(key, value)
    out["Success"] = success
    return out


def to_parameter(name: str, value: Any) -> Parameter:
    """A Data Services parameter for a Python value (string value, valueType from the type)."""
    if isinstance(value, bool):
        return Parameter(name=name, value="True" if value else "False", valueType=ParameterValueType.BOOLEAN)
    if isinstance(value, int):
        return Parameter(name=name, value=str(value), valueType=ParameterValueType.INTEGER)
    if isinstance(value, float):
        return Parameter(name=name, value=repr(value), valueType=ParameterValueType.DOUBLE)
    if isinstance(value, str):
        return Parameter(name=name, value=value)
    return Parameter(name=name, value=json.dumps(value), valueType=ParameterValueType.OTHER)


def _dt(ts: float):  # noqa: ANN202
    from core.clock import to_datetime

    return to_datetime(ts)


def _iso(ts: float | None) -> str | None:
    return _dt(ts).isoformat() if ts is not None else None


__all__ = ["Engine", "RunStatus", "SimulatedExecutor", "StepExecutor", "StepFailure", "StepRequest",
           "StepStatus", "TemplateRegistry", "classify", "RUN_ORDER_STATUS", "STEP_ORDER_STATUS"]

