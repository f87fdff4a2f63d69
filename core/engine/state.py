"""The engine's working memory: runs and steps in flight, and the one timer heap.

Everything here is a cache of what the store holds (``runs`` and ``step_runs`` tables, see
:mod:`core.engine.tables`): a run can be dropped from memory and loaded again at any time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.clock import Clock, sleep_or_wake
from core.engine.types import StepRequest, StopReason
from core.orders import OrderPriority
from core.states import DONE_OK, STEP_FINAL, RunStatus, StepStatus
from core.templates import Step, WorkflowTemplate

log = logging.getLogger(__name__)


@dataclass(order=True)
class Timer:
    when: float
    seq: int
    callback: Callable[[], Any] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Every deadline of the engine (step and run timeouts, retry back-offs, delays) in one heap
    behind one task: no ``asyncio.timeout`` per step (those leave live Qt timers under qasync)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._rearm = asyncio.Event()

    def at(self, when: float, callback: Callable[[], Any]) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        earliest = self._heap[0].when if self._heap else None
        heapq.heappush(self._heap, timer)
        if earliest is None or when < earliest:
            self._rearm.set()
        return timer

    async def run(self) -> None:
        """Fire due timers forever (the engine runs this as one task)."""
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


@dataclass
class StepState:
    step: Step
    order_id: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    outputs: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    instrument: str | None = None
    task: asyncio.Task[None] | None = None
    """The current attempt (executor call), while it runs."""
    request: StepRequest | None = None
    """The current attempt's request; None once the engine no longer waits for its result."""
    stop_reason: StopReason | None = None
    next_attempt_at: float | None = None
    started: float | None = None
    ended: float | None = None
    resumed: bool = False
    """Re-run after a restart: a ``delay`` keeps its start and waits only what is left."""
    timer: Timer | None = None
    handler_for: str | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    @property
    def attempt_running(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass
class RunState:
    run_id: str
    template: WorkflowTemplate
    input_data: dict[str, Any]
    priority: int
    status: RunStatus = RunStatus.PENDING
    biosero_priority: OrderPriority = OrderPriority.Standard
    not_before: float | None = None
    """Scheduled start (Data Services ``FirstAvailableSlot``): the run waits for it."""
    steps: dict[str, StepState] = field(default_factory=dict)
    recovery_attempts: int = 0
    paused: bool = False
    ending: bool = False
    """The failure policy aborted the run: it ends once its error handler has run, even while it
    is paused on a step that needs the operator (in memory only: after a restart an operator decides)."""
    error: str | None = None
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    deadline: float | None = None
    timer: Timer | None = None
    _done: asyncio.Event | None = field(default=None, repr=False)
    unfinished: int = 0
    """Steps not in a final state (kept up to date as steps change)."""
    children: dict[str, list[str]] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    """Per step, how many of its dependencies are not completed or skipped (kept up to date as
    steps change), so a completion tells in O(1) whether a dependant of a wide fan-in is ready."""

    @property
    def done(self) -> asyncio.Event:
        """Set while the run is finished or waits for the operator. Made when first used: most
        runs are never waited for, and ten thousand queued runs held 7 MB of idle events."""
        if self._done is None:
            self._done = asyncio.Event()
        return self._done

    def index(self) -> None:
        """Compute the dependants map and the counts from the steps."""
        self.children = {}
        for sid, state in self.steps.items():
            for dep in state.step.depends_on:
                self.children.setdefault(dep, []).append(sid)
        self.unfinished = sum(1 for s in self.steps.values() if s.status not in STEP_FINAL)
        self.waiting = {sid: sum(1 for d in s.step.depends_on if self.steps[d].status not in DONE_OK)
                        for sid, s in self.steps.items()}

    @property
    def context(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "template_name": self.template.name,
                "template_version": self.template.version,
                "recovery_attempts": self.recovery_attempts,
                "attempts": {sid: s.attempt for sid, s in self.steps.items()}}

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {sid: dict(s.outputs or {}) for sid, s in self.steps.items()
                if s.status in DONE_OK and s.outputs is not None}

    def is_handler_waiting(self, state: StepState) -> bool:
        """An error-handler step that no failure has called yet."""
        return state.step.id in self.template.handler_steps and state.handler_for is None
