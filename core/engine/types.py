"""What the engine hands to whoever runs a step, and what it gets back.

The engine never talks to instruments. It hands each attempt of each step to a
:class:`StepExecutor` as a :class:`StepRequest` and gets outputs or an exception back. The
dispatcher is the executor of a real workcell; :class:`~core.engine.simulated.SimulatedExecutor`
runs steps without instruments. This module is the whole contract between the two sides.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from core.drivers.base import ProgressSink
from core.orders import Order, Parameter, ParameterValueType
from core.templates import WorkflowTemplate

StartedCallback = Callable[[str | None], Awaitable[None] | None]
"""``request.started(instrument)``: returns the write of the step's Running transition (or None
when the attempt is no longer current)."""


def _no_start(instrument: str | None) -> Awaitable[None] | None:
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRequest:
    """One attempt of one step, as an executor sees it."""

    run_id: str
    step_id: str
    order_id: str
    """The step's child order: what Data Services and the Jobs panel call it."""
    kind: str
    """The capability (or built-in kind: delay, noop, prompt) the step needs."""
    parameters: dict[str, Any]
    attempt: int
    timeout: float | None = None
    idempotent: bool = False
    """Safe to run twice: an interrupted attempt may be re-run instead of becoming "unknown"."""
    priority: int = 50
    template_name: str = ""
    template_version: int = 0
    order: Order
    started: StartedCallback = _no_start
    """Called by the executor when an instrument takes the step (see :func:`started`)."""
    reserve: tuple[str, ...] = ()
    """More capabilities to hold for the whole step (reserved with the main one, atomically)."""
    not_before: float | None = None
    """The step's window opens then (epoch seconds): the engine hands it over no sooner."""
    window_closes: float | None = None
    """The step should start by then (its ``start_within`` window): served before steps whose
    window closes later, or that have none, of the same priority."""
    run_started: float | None = None
    """When the run's first step started (None: this is its first): work in progress is served
    before new runs of the same priority."""
    next_kinds: tuple[str, ...] = ()
    """Capabilities of the steps that follow this one: when it ends, an instrument for them is
    kept from new runs until the run's next step arrives (work in progress first)."""


class StepExecutor(Protocol):
    """Runs steps on instruments. The dispatcher implements it; so does ``SimulatedExecutor``.

    ``execute(request, progress)``
        Runs one attempt and returns the step's outputs. Before the instrument starts, it must
        ``await started(request, instrument_id)``: that returns once the step's Running
        transition is committed, so a crash can never leave an executing step recorded as
        queued. ``progress(fraction, values)`` may be called any number of times, cheaply.
        It raises to fail the attempt: a ``DriverError`` with ``code`` and ``retryable``
        (``OutcomeUnknown`` when the instrument may or may not have done it), a
        :class:`StepFailure`, or anything else (treated as retryable). It is cancelled (the
        task) when the engine gives up on the attempt, after ``cancel`` was asked.

    ``cancel(request)``
        Asks the instrument to stop the attempt; True once it confirmed. Called before the
        attempt's task is cancelled; it must not raise for an attempt that already ended.
    """

    async def execute(self, request: StepRequest, progress: ProgressSink) -> dict[str, Any]: ...

    async def cancel(self, request: StepRequest) -> bool: ...


class ClaimingExecutor(StepExecutor, Protocol):
    """An executor that can also take an instrument for a step at once, synchronously.

    ``claim(request)``
        Called while the engine decides to queue the step. Returns the instrument now reserved
        for it, or None when the step has to wait its turn (nothing free, others queued ahead,
        a scheduled start). A claimed step's Queued and Running transitions are committed with
        the decision that made it ready, so a chain of steps costs one commit per step; the
        next ``execute(request, ...)`` runs it on that instrument, and ``request.started``
        then returns None (the Running transition is already written).
    ``unclaim(request)``
        The claimed step will not be executed (stopped before it was launched): free the
        instrument. Must not raise for a request that was never claimed.
    ``withdraw(request)``
        Stop the step at once when nothing of it runs on an instrument (waiting in the queue, or
        claimed): True once withdrawn, False when it is not there or already ended, None when it
        runs on an instrument. The engine asks it first and awaits ``cancel`` only for None: a
        bulk cancel of 10,000 queued steps then needs no task per step.
    """

    def claim(self, request: StepRequest) -> str | None: ...

    def unclaim(self, request: StepRequest) -> None: ...

    def withdraw(self, request: StepRequest) -> bool | None: ...


async def started(request: StepRequest, instrument: str | None) -> None:
    """Tell the engine the step is starting on ``instrument``; returns once that is committed."""
    pending = request.started(instrument)
    if pending is not None:
        await pending


class StopReason(Enum):
    """Why the engine stops an attempt that is queued or running on an instrument."""

    TIMEOUT = "timeout"
    """The step's timeout passed: the attempt fails with code ``Timeout`` (retryable per policy)."""
    OPERATOR = "operator"
    """An operator canceled the step."""
    RUN_ENDED = "run ended"
    """The run was canceled, aborted or timed out."""
    SKIPPED = "skipped"
    """An operator skipped the step."""

    @property
    def decided(self) -> bool:
        """The decision that stopped the attempt records its outcome; the attempt records nothing."""
        return self is not StopReason.TIMEOUT


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


def to_parameters(values: Mapping[str, Any]) -> list[Parameter]:
    return [to_parameter(k, v) for k, v in values.items()]


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
