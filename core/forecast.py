"""Forecast: when will each run in flight be done?

The forecaster copies the current state — unfinished runs and their steps (running ones with the
time already spent, retrying ones with their next attempt), the instruments in service with
their capacity, and the runs schedules will start within ``horizon`` — and plays the queue forward on a virtual clock with a compact rehearsal of
the dispatcher: ready steps wait in a queue per capability in the dispatcher's order (numeric
priority, higher first, then creation, FIFO), take a free instrument offering the capability
(and the instruments of every ``reserve`` capability, all at once), and hold it for a duration
drawn from :class:`~core.durations_model.DurationsModel` (history, else the declared duration).
It does that ``samples`` times with different draws and gives each run the p10, median and
p90 of its completion time (:class:`RunEta`), and each step the median of its end.

Time windows (``start_within``) are played as the dispatcher keeps them: a step waits for its
window to open, and among the steps of a priority the one whose window closes soonest goes
first. Each window still to come whose forecast start (median of the plays) falls after it
closes, and each run forecast to end past its deadline, is a :class:`WindowRisk` of the result:
a warning before the window breaks. :class:`WindowWarnings` opens an inbox item for each.

A run that cannot finish without someone says why instead of giving a time: it is paused, a
step failed and waits for an operator, no instrument in service offers a capability it needs
(naming the capability and the instruments out of service).

:class:`Forecast` keeps one up to date for the console: it listens to run, step and instrument
events, waits ``debounce`` seconds after the last one, reads the state on a reader thread and
plays it forward on a worker thread — or, with ``process=True`` (the console), in a worker
process, so the play-forward never competes with the event loop for the interpreter — and the
loop only ever pays for an event callback.
``Forecast.eta(run_id)`` gives the latest; listeners are called on the loop with each result.
:func:`forecast` is the pure function underneath (the benchmark times it on 500 queued runs).

Qt-free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import multiprocessing
import random
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.api import RuntimeApi
from core.durations_model import DurationDraw, DurationsModel, runs_locally
from core.events import InstrumentStatusChanged, RunChanged, StepChanged, Subscription
from core.orders import ModuleStatus
from core.states import StepStatus
from core.storefile import connect_readonly
from core.templates import WorkflowTemplate

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SAMPLES = 16
"""Plays forward per forecast: enough for a p10-p90 band, cheap enough for 500 runs in < 1 s."""

HORIZON = 8 * 3600.0
"""Runs that schedules will start within this many seconds join the forecast's queue."""

SCHEDULED_PREFIX = "scheduled:"
"""Run ids of runs a schedule will start: ``scheduled:<schedule id>@<epoch seconds>``."""

DEBOUNCE = 0.5
"""Seconds of quiet after the last change before the forecast is made again."""

_DONE = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.CANCELLED})
_NEVER = float("inf")
_OPERATOR = frozenset({StepStatus.FAILED, StepStatus.UNKNOWN})


# ============================================================================ state


@dataclass(frozen=True, slots=True)
class StepState:
    id: str
    status: StepStatus
    started: float | None = None
    instrument: str | None = None
    next_attempt_at: float | None = None
    ended: float | None = None


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: str
    template: WorkflowTemplate
    status: str
    priority: int
    created: float
    inputs: dict[str, Any]
    steps: dict[str, StepState]
    start_at: float | None = None
    """For a run a schedule will start: when (it holds nothing before)."""
    started: float | None = None
    """When the run started (None: not yet)."""


@dataclass(frozen=True, slots=True)
class InstrumentState:
    id: str
    capabilities: tuple[str, ...]
    capacity: int = 1
    available: bool = True
    why_not: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the forecast starts from: the time, the unfinished runs, the instruments."""

    now: float
    runs: tuple[RunState, ...]
    instruments: tuple[InstrumentState, ...]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Where and when a step is forecast to run (epoch seconds)."""

    start: float
    end: float
    instrument: str | None
    running: bool = False
    """It runs now (its start is the actual one)."""


@dataclass(frozen=True, slots=True)
class RunEta:
    """When a run is forecast to be done (epoch seconds), or why it cannot be."""

    run_id: str
    template: str
    p10: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    problem: str | None = None
    plan: dict[str, StepPlan] = field(default_factory=dict)
    """Each step still to do (or running): median start and end, and the instrument it takes most
    often across the plays (the timeline and the run's forward Gantt draw these)."""

    @property
    def steps(self) -> dict[str, float]:
        """Median end of each step still to do (epoch seconds)."""
        return {step: plan.end for step, plan in self.plan.items()}

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def scheduled(self) -> bool:
        """A run a schedule will start within the horizon (not started yet)."""
        return self.run_id.startswith(SCHEDULED_PREFIX)


@dataclass(frozen=True, slots=True)
class WindowRisk:
    """A time window forecast to break: ``step`` (None: the run's deadline) is forecast to start
    (end, for the deadline) ``late`` seconds (median) after it closes, in ``chance`` of the plays."""

    run_id: str
    template: str
    step: str | None
    after: str | None
    limit: float
    late: float
    chance: float
    closes: float
    """When the window closes (median, epoch seconds)."""

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.step or 'deadline'}"

    @property
    def text(self) -> str:
        from core.durations import format_duration

        if self.step is None:
            return (f"run {self.run_id} ({self.template}) is forecast to end {format_duration(self.late)} past its "
                    f"deadline ({format_duration(self.limit)})")
        return (f"step {self.step} of run {self.run_id} ({self.template}) is forecast to start "
                f"{format_duration(self.late)} after its window closes (at most {format_duration(self.limit)} "
                f"after {self.after} ends; {self.chance * 100:.0f} % of plays)")


@dataclass(frozen=True, slots=True)
class ForecastResult:
    at: float
    """The (clock) time the state was taken."""
    runs: dict[str, RunEta]
    samples: int
    seconds: float
    """Wall-clock seconds the forecast took."""
    windows: tuple[WindowRisk, ...] = ()
    """Windows (and deadlines) forecast to break, most late first."""


# ============================================================================ reading the state


def read_state(conn: sqlite3.Connection) -> list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """(run row, its step rows) of every unfinished run, oldest first (one reader-thread call)."""
    runs = conn.execute(
        "SELECT run_id, template_name, template_version, status, priority, created, input_data, started FROM runs "
        f"WHERE {_UNFINISHED_RUNS} ORDER BY created").fetchall()
    steps: dict[str, list[tuple[Any, ...]]] = {r[0]: [] for r in runs}
    if runs:
        for row in conn.execute(
                "SELECT s.run_id, s.step_id, s.status, s.started, s.instrument, s.next_attempt_at, s.ended "
                "FROM step_runs s "
                f"JOIN runs r ON r.run_id = s.run_id WHERE r.{_UNFINISHED_RUNS}"):
            if row[0] in steps:
                steps[row[0]].append(row)
    return [(r, steps[r[0]]) for r in runs]


_UNFINISHED_RUNS = "status IN ('pending', 'running', 'paused', 'recovering')"


def read_template_keys(conn: sqlite3.Connection) -> list[tuple[str, int | None]]:
    """(template name, version) of the unfinished runs: which templates a forecast needs."""
    return [(r[0], r[1]) for r in conn.execute(
        f"SELECT DISTINCT template_name, template_version FROM runs WHERE {_UNFINISHED_RUNS}")]


def snapshot_from(rows: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]], instruments: Sequence[Any],
                  templates: Callable[[str, int | None], WorkflowTemplate], now: float,
                  scheduled: Sequence[tuple[Any, float]] = ()) -> Snapshot:
    """A :class:`Snapshot` from :func:`read_state` rows, instrument views (``Runtime.instruments()``)
    and the (schedule, time) pairs of runs schedules will start (``Scheduler.occurrences``)."""
    import json

    runs = []
    for r, step_rows in rows:
        try:
            template = templates(r[1], r[2])
        except Exception as exc:  # noqa: BLE001 - a run whose template cannot be read is left out, and said so
            log.warning("forecast: run %s: template %s v%s: %s", r[0], r[1], r[2], exc)
            continue
        steps = {s[1]: StepState(s[1], StepStatus(s[2]), s[3], s[4], s[5], s[6] if len(s) > 6 else None)
                 for s in step_rows}
        try:
            inputs = json.loads(r[6]) if r[6] else {}
        except json.JSONDecodeError:
            inputs = {}
        runs.append(RunState(r[0], template, r[3], r[4] if r[4] is not None else 50, r[5], inputs, steps,
                             started=r[7] if len(r) > 7 else None))
    for schedule, at in scheduled:
        try:
            template = templates(schedule.template, None)
        except Exception as exc:  # noqa: BLE001 - the schedule will fail to start it: nothing to forecast
            log.warning("forecast: schedule %s: template %s: %s", schedule.id, schedule.template, exc)
            continue
        inputs = schedule.inputs if isinstance(schedule.inputs, dict) else {}
        runs.append(RunState(f"{SCHEDULED_PREFIX}{schedule.id}@{at:.0f}", template, "pending", schedule.priority,
                             at, inputs, {}, start_at=at))
    insts = instrument_states(instruments)
    return Snapshot(now, tuple(runs), insts)


def instrument_states(instruments: Sequence[Any]) -> tuple[InstrumentState, ...]:
    """:class:`InstrumentState` of each instrument view (``Runtime.instruments()``); states pass as they are."""
    out = []
    for v in instruments:
        if isinstance(v, InstrumentState):
            out.append(v)
            continue
        reasons = []
        if not v.enabled:
            reasons.append("disabled")
        if not v.in_service or v.draining:
            reasons.append("out of service")
        if v.status in (ModuleStatus.Offline, ModuleStatus.Error):
            reasons.append(v.status.name.lower())
        out.append(InstrumentState(v.id, tuple(v.capabilities), max(1, v.capacity), not reasons, ", ".join(reasons)))
    return tuple(out)


def forecast_rows(rows: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]],
                  instruments: tuple[InstrumentState, ...], templates: dict[tuple[str, int | None], WorkflowTemplate],
                  now: float, scheduled: Sequence[tuple[Any, float]], model: DurationsModel, *,
                  samples: int = SAMPLES, seed: int = 0) -> ForecastResult:
    """:func:`snapshot_from` then :func:`forecast`, with the templates given: what a worker
    process runs, so only plain rows cross over and the snapshot is built there."""

    def lookup(name: str, version: int | None) -> WorkflowTemplate:
        return templates[(name, version)]

    return forecast(snapshot_from(rows, instruments, lookup, now, scheduled), model, samples=samples, seed=seed)


def forecast_stored(path: str, instruments: tuple[InstrumentState, ...],
                    templates: dict[tuple[str, int | None], WorkflowTemplate], now: float,
                    scheduled: Sequence[tuple[Any, float]], model: DurationsModel, *,
                    asked: frozenset[tuple[str, int | None]],
                    samples: int = SAMPLES, seed: int = 0) -> ForecastResult:
    """:func:`forecast_rows` over the state read here from the store file at ``path``.

    What the worker process runs: the unfinished runs' rows are read there, so the console's
    process never holds (nor pickles) them; with 10,000 runs under way they are tens of MB
    every forecast, and the freed memory stayed with the process, which grew by each one.
    ``asked``: the (name, version) keys ``templates`` was gathered for. A run of another key was
    made since and waits for the next forecast (which its creation asks for); a run of a key
    asked for but not found is left out with a warning, as :func:`snapshot_from` says.
    """
    conn = connect_readonly(Path(path))
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        rows = [row for row in read_state(conn) if (row[0][1], row[0][2]) in asked]
    finally:
        conn.close()
    return forecast_rows(rows, instruments, templates, now, scheduled, model, samples=samples, seed=seed)


# ============================================================================ playing forward


class _Node:
    __slots__ = ("run", "step", "capability", "reserve", "allowed", "children", "deps", "key", "samplers",
                 "fixed", "ready_at", "running", "running_on", "elapsed", "fail_p", "retry", "w_after",
                 "w_after_end", "w_min", "w_max", "priority", "created", "rng")

    def __init__(self) -> None:
        self.run = 0
        self.step = ""
        self.capability: str | None = None
        self.priority = 0
        self.created = 0.0
        self.w_after = -1
        """The node whose end opens this step's window (-1: none, or already ended: w_after_end)."""
        self.w_after_end: float | None = None
        self.w_min = 0.0
        self.w_max: float | None = None
        self.children: list[int] = []
        self.deps = 0
        self.reserve: tuple[str, ...] = ()
        self.allowed: frozenset[str] | None = None
        self.samplers: dict[str | None, DurationDraw] = {}
        self.fixed: float | None = None
        self.ready_at = 0.0
        self.fail_p = 0.0
        self.retry: Any = None
        self.running = False
        self.running_on: str | None = None
        self.elapsed = 0.0
        self.rng: random.Random | None = None
        """Its own draws (paired forecasts): the same durations whatever the other steps draw."""


def _plan(snap: Snapshot, model: DurationsModel) -> tuple[list[_Node], list[RunState], dict[str, str]]:
    """The steps still to do as a graph, the runs that can finish, and why the others cannot."""
    available = {i.id: i for i in snap.instruments if i.available}
    by_cap: dict[str, list[str]] = {}
    for x in snap.instruments:
        if x.available:
            for c in x.capabilities:
                by_cap.setdefault(c, []).append(x.id)
    offline = {c: [f"{i.id} ({i.why_not})" for i in snap.instruments if not i.available and c in i.capabilities]
               for c in {c for i in snap.instruments for c in i.capabilities}}
    nodes: list[_Node] = []
    problems: dict[str, str] = {}
    plannable: list[RunState] = []
    for run in snap.runs:
        t = run.template
        if run.status == "paused":
            problems[run.run_id] = "paused: waits for an operator to resume it"
            continue
        handlers = t.handler_steps
        todo = [s for s in t.steps if s.id not in handlers
                and (run.steps.get(s.id) is None or run.steps[s.id].status not in _DONE)]
        stuck = [s.id for s in todo if run.steps.get(s.id) is not None and run.steps[s.id].status in _OPERATOR]
        if stuck:
            problems[run.run_id] = f"step {stuck[0]} failed: waits for an operator (retry, skip or recover)"
            continue
        missing = None
        for s in todo:
            if runs_locally(s):
                if s.kind == "prompt":
                    missing = f"step {s.id} waits for an operator's answer"
                    break
                continue
            for cap in (s.kind, *s.reserve):
                if not by_cap.get(cap):
                    out = offline.get(cap)
                    missing = (f"step {s.id}: no instrument in service offers {cap}"
                               + (f" ({', '.join(out)})" if out else " (no instrument in the workcell has it)"))
                    break
            if missing is None and s.restrict_to and s.module_restriction == "FullRestriction" \
                    and not any(m in available and s.kind in available[m].capabilities for m in s.restrict_to):
                missing = f"step {s.id}: restricted to {', '.join(s.restrict_to)}, none of them in service"
            if missing:
                break
        if missing:
            problems[run.run_id] = missing
            continue
        plannable.append(run)
        index = {s.id: len(nodes) + k for k, s in enumerate(todo)}
        for s in todo:
            node = _Node()
            node.run, node.step = len(plannable) - 1, s.id
            state = run.steps.get(s.id)
            node.capability = None if runs_locally(s) else s.kind
            node.reserve = tuple(s.reserve)
            if s.restrict_to and s.module_restriction == "FullRestriction":
                node.allowed = frozenset(s.restrict_to)
            node.priority, node.created = run.priority, run.created
            if runs_locally(s):
                node.fixed = model.estimate(t.name, s, None, run.inputs).median
            else:
                policy = t.retry_policy(s)
                if policy.max_attempts > 1:
                    node.fail_p, node.retry = model.failure_rate(s.kind), policy
                for inst in by_cap.get(s.kind, ()):
                    node.samplers[inst] = model.sampler(t.name, s, inst, run.inputs)
            node.deps = sum(1 for d in s.depends_on if d in index)
            if state is not None and state.status is StepStatus.RUNNING:
                node.running = True
                node.running_on = state.instrument
                node.elapsed = max(0.0, snap.now - state.started) if state.started else 0.0
                if node.running_on is not None and node.running_on not in node.samplers and not runs_locally(s):
                    node.samplers[node.running_on] = model.sampler(t.name, s, None, run.inputs)
            if state is not None and state.status is StepStatus.RETRYING and state.next_attempt_at:
                node.ready_at = state.next_attempt_at
            if run.start_at is not None:
                node.ready_at = max(node.ready_at, run.start_at)
            nodes.append(node)
        for s in todo:
            for d in s.depends_on:
                if d in index:
                    nodes[index[d]].children.append(index[s.id])
            w = s.start_within
            if w is not None:
                node = nodes[index[s.id]]
                node.w_min, node.w_max = w.min, w.max
                if w.after in index:
                    node.w_after = index[w.after]
                else:
                    done = run.steps.get(w.after)
                    node.w_after_end = done.ended if done is not None else None
    return nodes, plannable, problems


def _under_way(runs: Sequence[RunState]) -> list[float]:
    """When each run started its first step (:data:`_NEVER`: not yet), as the dispatcher reads it."""
    return [min((s.started for s in r.steps.values() if s.started is not None), default=_NEVER) for r in runs]


def _play(nodes: list[_Node], snap: Snapshot, rng: random.Random,
          starts: list[float] | None = None, placed: list[str | None] | None = None,
          under_way: Sequence[float] | None = None, shifts: dict[Any, float] | None = None) -> list[float]:
    """One play-forward: the end time of every node (and its start, into ``starts``, and the
    instrument it took, into ``placed``).

    Ready steps wait in the dispatcher's order: priority, then the window that closes soonest,
    then work in progress (the run under way longest first, ``under_way``: when each run started
    its first step, from :func:`_under_way`; a run that starts in the play is under way from
    then), then creation. ``shifts``: this play's error of the centre of each source of
    durations (by :attr:`DurationDraw.key`), added to every duration drawn from it."""
    shift = shifts or {}
    shared = rng
    now = snap.now
    free = {x.id: x.capacity for x in snap.instruments if x.available}
    by_cap: dict[str, list[str]] = {}
    for x in snap.instruments:
        if x.available:
            for c in x.capabilities:
                by_cap.setdefault(c, []).append(x.id)
    deps = [n.deps for n in nodes]
    ends = [0.0] * len(nodes)
    started = starts if starts is not None else [0.0] * len(nodes)
    place = placed if placed is not None else [None] * len(nodes)
    events: list[tuple[float, int, tuple[str, ...]]] = []
    ready: dict[str, list[tuple[Any, int]]] = {}
    run_start = list(under_way) if under_way is not None else [_NEVER] * (max((n.run for n in nodes), default=-1) + 1)
    keys: list[tuple[int, float, float, float, int]] = [(0, _NEVER, _NEVER, 0.0, 0)] * len(nodes)

    def duration(n: _Node, inst: str | None, fresh: bool = True) -> float:
        if n.fixed is not None:
            return n.fixed
        rng = n.rng or shared
        sampler = n.samplers.get(inst) or next(iter(n.samplers.values()))
        off = shift.get(sampler.key, 0.0)
        total = 0.0
        attempt = 1
        if fresh and n.fail_p:  # failed attempts (cut short part-way) and the backoff before the next
            while attempt < n.retry.max_attempts and rng.random() < n.fail_p:
                total += max(0.0, sampler.draw(rng) + off) * (0.1 + 0.8 * rng.random()) + \
                    n.retry.delay(attempt, rng.random())
                attempt += 1
        return total + max(0.0, sampler.draw(rng) + off)

    def make_ready(i: int, t: float) -> None:
        n = nodes[i]
        ready_at = n.ready_at
        closes = _NEVER
        if n.w_max is not None or n.w_min:
            after_end = ends[n.w_after] if n.w_after >= 0 else n.w_after_end
            if after_end is not None:
                ready_at = max(ready_at, after_end + n.w_min)
                if n.w_max is not None:
                    closes = after_end + n.w_max
        keys[i] = (-n.priority, closes, run_start[n.run], n.created, i)
        if n.capability is None:
            started[i] = max(t, ready_at)
            if started[i] < run_start[n.run]:
                run_start[n.run] = started[i]
            heapq.heappush(events, (started[i] + duration(n, None), i, ()))
        elif ready_at > t:
            heapq.heappush(events, (ready_at, -1 - i, ()))  # wakes the step at its window or next attempt
        else:
            heapq.heappush(ready.setdefault(n.capability, []), (keys[i], i))
            dirty.add(n.capability)

    dirty: set[str] = set()
    for i, n in enumerate(nodes):
        if n.running:
            total = duration(n, n.running_on, fresh=False)
            left = total - n.elapsed if total > n.elapsed else 0.1 * max(total, n.elapsed)
            held: tuple[str, ...] = (n.running_on,) if n.running_on is not None and n.running_on in free else ()
            for inst in held:
                free[inst] -= 1
            heapq.heappush(events, (now + left, i, held))
            started[i] = now - n.elapsed
            place[i] = n.running_on
            deps[i] = -1
    for i in range(len(nodes)):
        if deps[i] == 0:
            make_ready(i, now)
    # a freed instrument wakes its capabilities and those that reserve them; only they dispatch
    wakes: dict[str, set[str]] = {x.id: set(x.capabilities) for x in snap.instruments if x.available}
    for n in nodes:
        if n.capability is not None:
            for extra in n.reserve:
                for m in by_cap.get(extra, ()):
                    wakes[m].add(n.capability)
    t = now
    while True:
        if dirty:  # capabilities by their best waiting step, each as far as instruments allow
            heads = sorted((h[0][0], c) for c in dirty if (h := ready.get(c)))
            dirty.clear()
            for _, cap in heads:
                heap = ready[cap]
                candidates = by_cap[cap]
                while heap:
                    i = heap[0][1]
                    n = nodes[i]
                    main = None
                    for m in candidates:
                        if free[m] > 0 and (n.allowed is None or m in n.allowed):
                            main = m
                            break
                    if main is None:
                        break
                    if n.reserve:  # all the reserved instruments at once, or wait
                        free[main] -= 1
                        taken = [main]
                        for extra in n.reserve:
                            for m in by_cap.get(extra, ()):
                                if free[m] > 0:
                                    free[m] -= 1
                                    taken.append(m)
                                    break
                            else:
                                break
                        if len(taken) < 1 + len(n.reserve):
                            for m in taken:
                                free[m] += 1
                            break
                        held_now: tuple[str, ...] = tuple(taken)
                    else:
                        free[main] -= 1
                        held_now = (main,)
                    heapq.heappop(heap)
                    started[i] = t
                    if t < run_start[n.run]:
                        run_start[n.run] = t
                    place[i] = main
                    heapq.heappush(events, (t + duration(n, main), i, held_now))
        if not events:
            break
        t = events[0][0]
        while events and events[0][0] == t:  # everything that ends now, then one dispatch
            _, i, held = heapq.heappop(events)
            if i < 0:  # a retry's next attempt came
                n = nodes[-1 - i]
                heapq.heappush(ready.setdefault(n.capability or "", []), (keys[-1 - i], -1 - i))
                dirty.add(n.capability or "")
                continue
            for m in held:
                free[m] += 1
                dirty |= wakes[m]
            ends[i] = t
            for child in nodes[i].children:
                deps[child] -= 1
                if deps[child] == 0:
                    make_ready(child, t)
    return ends


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _band(ends_by_run: list[list[float]]) -> list[tuple[float, float, float]]:
    """p10, median and p90 of each run's end over the plays.

    The quantiles are the plays' order statistics at rank ``q·(n + 1)`` (the Weibull plotting
    position): the span between them holds, on average, 80 % of what the distribution the plays
    are drawn from holds. The usual ``q·(n − 1)`` interpolation reads a narrower band from a few
    plays (16 plays: about 71 %)."""
    if not ends_by_run:
        return []
    q = np.quantile(np.asarray(ends_by_run, dtype=float), (0.1, 0.5, 0.9), axis=1, method="weibull")
    return [(float(a), float(b), float(c)) for a, b, c in q.T]


def forecast(snap: Snapshot, model: DurationsModel, *, samples: int = SAMPLES, seed: int = 0,
             paired: bool = False) -> ForecastResult:
    """Play ``snap`` forward ``samples`` times; an ETA (or the reason there is none) per run.

    ``paired``: each step draws its durations from its own generator seeded by ``seed``, its
    run and its id, so two snapshots that differ by one operator action (a what-if) give the
    steps both contain the same durations, and ETAs move only by what the action changes."""
    began = time.perf_counter()
    nodes, runs, problems = _plan(snap, model)
    under_way = _under_way(runs)
    rng = random.Random(seed)
    if paired:
        for n in nodes:
            n.rng = random.Random(f"{seed}/{runs[n.run].run_id}/{n.step}")
    # one error of the centre per source of durations and play, shared by the steps drawing from it
    draws = {d.key: d for n in nodes for d in n.samplers.values() if d.sem > 0}
    keys = list(draws)
    sems = np.array([draws[k].sem for k in keys])
    dfs = np.array([draws[k].df for k in keys], dtype=float)
    centres = [np.random.default_rng(zlib.crc32(f"{seed}/{k}".encode())) for k in keys] if paired else None
    shared = np.random.default_rng(seed)
    ends_by_run: list[list[float]] = [[] for _ in runs]
    step_ends: list[list[float]] = [[] for _ in nodes]
    windowed = [i for i, n in enumerate(nodes) if n.w_max is not None
                and (n.w_after >= 0 or n.w_after_end is not None)]
    lates: dict[int, list[tuple[float, float]]] = {i: [] for i in windowed}
    firsts: list[list[float]] = [[] for _ in runs]
    step_starts: list[list[float]] = [[] for _ in nodes]
    step_places: list[list[str | None]] = [[] for _ in nodes]
    for _ in range(max(1, samples)):
        starts = [0.0] * len(nodes)
        placed: list[str | None] = [None] * len(nodes)
        t = (np.array([g.standard_t(df) for g, df in zip(centres, dfs, strict=True)]) if centres is not None
             else shared.standard_t(dfs)) if keys else dfs
        shifts = dict(zip(keys, (sems * t).tolist(), strict=True))
        ends = _play(nodes, snap, rng, starts, placed, under_way, shifts)
        last = [snap.now] * len(runs)
        first = [_NEVER] * len(runs)
        for i, n in enumerate(nodes):
            if ends[i] > last[n.run]:
                last[n.run] = ends[i]
            if starts[i] < first[n.run]:
                first[n.run] = starts[i]
            step_ends[i].append(ends[i])
            step_starts[i].append(starts[i])
            step_places[i].append(placed[i])
        for i in windowed:
            n = nodes[i]
            closes = (ends[n.w_after] if n.w_after >= 0 else n.w_after_end or 0.0) + (n.w_max or 0.0)
            lates[i].append((starts[i] - closes, closes))
        for r, value in enumerate(last):
            ends_by_run[r].append(value)
            firsts[r].append(first[r])
    per_run_plan: list[dict[str, StepPlan]] = [{} for _ in runs]
    for i, n in enumerate(nodes):
        end = _quantile(step_ends[i], 0.5)
        places = step_places[i]
        where = max(set(places), key=lambda m: (places.count(m), m or "")) if places else None
        per_run_plan[n.run][n.step] = StepPlan(min(_quantile(step_starts[i], 0.5), end), end, where, n.running)
    out: dict[str, RunEta] = {}
    band = _band(ends_by_run)
    for r, run in enumerate(runs):
        p10, p50, p90 = band[r]
        out[run.run_id] = RunEta(run.run_id, run.template.name, p10, p50, p90, None, per_run_plan[r])
    for run in snap.runs:
        if run.run_id in problems:
            out[run.run_id] = RunEta(run.run_id, run.template.name, problem=problems[run.run_id])
    risks: list[WindowRisk] = []
    for i in windowed:
        n, run = nodes[i], runs[nodes[i].run]
        late = _quantile([x for x, _ in lates[i]], 0.5)
        if late > 0:
            w = run.template.step(n.step).start_within
            assert w is not None and w.max is not None
            risks.append(WindowRisk(run.run_id, run.template.name, n.step, w.after, w.max, late,
                                    sum(1 for x, _ in lates[i] if x > 0) / len(lates[i]),
                                    _quantile([c for _, c in lates[i]], 0.5)))
    for r, run in enumerate(runs):
        deadline = run.template.deadline
        if deadline is None:
            continue
        begun = [run.started] * len(firsts[r]) if run.started is not None else \
            [f if f != _NEVER else snap.now for f in firsts[r]]
        over = [end - b - deadline for end, b in zip(ends_by_run[r], begun, strict=True)]
        late = _quantile(over, 0.5)
        if late > 0:
            risks.append(WindowRisk(run.run_id, run.template.name, None, None, deadline, late,
                                    sum(1 for x in over if x > 0) / len(over), _quantile(begun, 0.5) + deadline))
    risks.sort(key=lambda w: -w.late)
    return ForecastResult(snap.now, out, max(1, samples), time.perf_counter() - began, tuple(risks))


# ============================================================================ kept up to date


class Forecast:
    """A forecast of the runtime's runs, made again (debounced, off the loop) after each change."""

    def __init__(self, runtime: RuntimeApi, model: DurationsModel | None = None, *, samples: int = SAMPLES,
                 debounce: float = DEBOUNCE, seed: int = 0, process: bool = False,
                 horizon: float = HORIZON) -> None:
        self.runtime = runtime
        self.model = model or DurationsModel(runtime.workcell, clock=runtime.clock,
                                             templates=runtime.engine.templates.get)
        self.samples = samples
        self.debounce = debounce
        self.horizon = horizon
        self.seed = seed
        self.result: ForecastResult | None = None
        self._listeners: list[Callable[[ForecastResult], Any]] = []
        self._subs: list[Subscription] = []
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_from = 0.0
        """Loop time after which the next forecast is made (``debounce`` after the last change)."""
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        if process:  # spawned, not forked: the console process holds Qt and threads
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.made = 0
        """Forecasts made so far."""

    async def start(self, *, history: bool = True) -> None:
        """Learn from the transition log (if ``history``), listen to changes, make a first forecast."""
        if history:
            await self.model.load(self.runtime.store)
        self._subs.append(self.model.subscribe(self.runtime.ledger.bus))
        self._subs.append(self.runtime.ledger.bus.subscribe(
            self._changed, (RunChanged, StepChanged, InstrumentStatusChanged)))
        self._schedule()

    def stop(self) -> None:
        """Stop listening and forecasting now (without waiting for a forecast in progress)."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        self._listeners.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def close(self) -> None:
        task = self._task
        self.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        self._task = None

    def eta(self, run_id: str) -> RunEta | None:
        """The latest forecast for a run (None: not forecast yet, or finished)."""
        return self.result.runs.get(run_id) if self.result is not None else None

    def add_listener(self, callback: Callable[[ForecastResult], Any]) -> None:
        """Call ``callback(result)`` on the event loop after each new forecast."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[ForecastResult], Any]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _changed(self, _event: Any) -> None:
        self._schedule()

    def _schedule(self) -> None:
        """Move the forecast to ``debounce`` seconds after now; a forecast in progress is followed
        by one more. One timer at most: a change while it is set only notes the time (a bulk
        cancel of 10,000 runs sends 30,000 changes; under qasync each timer is a Qt timer)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        loop = asyncio.get_running_loop()
        self._quiet_from = loop.time() + self.debounce
        if self._timer is None:
            self._timer = loop.call_at(self._quiet_from, self._fire)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._quiet_from:  # changed since the timer was set: wait for quiet
            self._timer = loop.call_at(self._quiet_from, self._fire)
            return
        self._timer = None
        self._task = loop.create_task(self._run(), name="forecast")

    async def _run(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a failed forecast leaves the last one standing
            log.exception("forecast failed")
        if self._again:
            self._again = False
            self._task = None
            self._schedule()

    async def inputs(self, keys: Iterable[tuple[str, int | None]], now: float) -> tuple[
            list[tuple[Any, float]], dict[tuple[str, int | None], WorkflowTemplate]]:
        """The runs schedules will start within the horizon and the templates of ``keys``
        ((name, version) of the runs, :func:`read_template_keys`) and of those runs (read on a
        worker thread)."""
        templates = self.runtime.engine.templates.get
        scheduler = self.runtime.schedules

        def gather() -> tuple[list[tuple[Any, float]], dict[tuple[str, int | None], WorkflowTemplate]]:
            due = scheduler.occurrences(now, now + self.horizon) if scheduler is not None else []
            pairs = [(s, t) for s, t, _ in due]
            found: dict[tuple[str, int | None], WorkflowTemplate] = {}
            for key in set(keys) | {(s.template, None) for s, _ in pairs}:
                try:
                    found[key] = templates(*key)
                except Exception:  # noqa: BLE001 - left out here; snapshot_from says which run lacks it
                    continue
            return pairs, found

        return await asyncio.to_thread(gather)

    def worker_model(self) -> DurationsModel:
        """The durations model as :meth:`offload` can send it (a portable copy for a process)."""
        return self.model.portable() if self._pool is not None else self.model

    async def offload(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` in the forecast's worker process, or on a worker thread."""
        if self._pool is not None:
            return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def refresh(self) -> ForecastResult:
        """Make a forecast now: the state (and the schedules' runs within the horizon) read on
        worker threads, played forward on a worker thread or process."""
        now = self.runtime.clock.now()
        instruments = self.runtime.instruments()
        keys = await self.runtime.store.read(read_template_keys)
        self.seed += 1
        due, found = await self.inputs(keys, now)
        states = instrument_states(instruments)
        result = await self.offload(forecast_stored, str(self.runtime.store.path), states, found, now, due,
                                    self.worker_model(), asked=frozenset(keys), samples=self.samples,
                                    seed=self.seed)
        self.result = result
        self.made += 1
        for callback in list(self._listeners):
            try:
                callback(result)
            except Exception:  # one listener must not stop the others
                log.exception("forecast listener %r failed", callback)
        return result


# ============================================================================ warnings


class WindowWarnings:
    """An inbox item (kind ``window``) for each window or deadline a forecast says will break,
    opened once, before it breaks; closed (answered by the forecast) once a later forecast no
    longer sees the risk — the step started, the run ended or the queue moved."""

    WHO = "forecast"

    def __init__(self, forecast: Forecast, inbox: Any) -> None:
        self.forecast = forecast
        self.inbox = inbox
        self.open: dict[str, int] = {}
        """Risk key (``run/step``) -> its open inbox item."""
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Pick up the items an earlier session left open, then follow each forecast."""
        from core.inbox import read_items

        items = await self.inbox.store.read(lambda c: read_items(c, "open", "window", None, None))
        self.open = {str(i.context.get("key")): i.id for i in items if i.context.get("key")}
        self.forecast.add_listener(self._on_result)
        if self.forecast.result is not None:
            self._on_result(self.forecast.result)

    def stop(self) -> None:
        self.forecast.remove_listener(self._on_result)

    def _on_result(self, result: ForecastResult) -> None:
        task = asyncio.get_running_loop().create_task(self.sync(result), name="window-warnings")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sync(self, result: ForecastResult) -> None:
        """Open items for new risks and close those no longer forecast (one write each)."""
        from core.inbox import WINDOW_FORM, InboxChanged, NewItem, answer_op, open_item_op

        async with self._lock:
            now = self.forecast.runtime.clock.now()
            risks = {w.key: w for w in result.windows if not w.run_id.startswith(SCHEDULED_PREFIX)}
            for key, w in risks.items():
                if key in self.open:
                    continue
                title = (f"Deadline at risk: {w.text}" if w.step is None else f"Window at risk: {w.text}")
                item = NewItem(kind="window", title=title, form=WINDOW_FORM, run_id=w.run_id, step_id=w.step,
                               context={"key": key, "after": w.after, "limit": w.limit, "late": w.late,
                                        "chance": w.chance, "closes": w.closes})
                try:
                    item_id = int(await self.inbox.store.write(open_item_op(item, now)))
                except Exception:  # noqa: BLE001 - the next forecast tries again
                    log.exception("window warning for %s not recorded", key)
                    continue
                self.open[key] = item_id
                self.inbox.bus.publish(InboxChanged(item_id=item_id, run_id=w.run_id, kind="window"))
            for key in [k for k in self.open if k not in risks]:
                item_id = self.open.pop(key)
                try:
                    await self.inbox.store.write(answer_op(
                        item_id, self.WHO, {"action": "no longer forecast to break"}, now))
                except Exception:  # noqa: BLE001 - answered by someone already: nothing to close
                    continue
                self.inbox.bus.publish(InboxChanged(item_id=item_id, state="answered", kind="window"))


# ============================================================================ before a run starts


@dataclass(frozen=True, slots=True)
class Feasibility:
    """Whether a run of a template could finish if started now, given the queue."""

    template: str
    can_finish: bool
    lacking: tuple[str, ...] = ()
    """What no instrument in service offers: ``capability (instrument (why) ...)`` or
    ``capability (no instrument in the workcell has it)``."""
    eta: RunEta | None = None
    risks: tuple[WindowRisk, ...] = ()
    """Its windows (and deadline) forecast to break behind the current queue."""
    note: str | None = None
    """Why there is no ETA although nothing is lacking (an operator's answer is needed)."""
    queued: int = 0
    """Runs ahead of it in the forecast."""

    def lines(self, now: float) -> list[str]:
        """Plain-language summary, most important first."""
        from core.durations import format_duration

        if not self.can_finish:
            return ["Cannot finish: " + "; ".join(self.lacking)]
        out = []
        if self.eta is not None and self.eta.ok:
            out.append(f"Can finish: done in about {format_duration(max(0.0, self.eta.p50 - now))} "
                       f"(p10 {format_duration(max(0.0, self.eta.p10 - now))}, p90 "
                       f"{format_duration(max(0.0, self.eta.p90 - now))}) behind {self.queued} runs in flight")
        else:
            out.append(f"Can finish; no ETA: {self.note}")
        template_windows = [r for r in self.risks if r.step is not None]
        if template_windows:
            out += [f"Window will not hold: step {r.step} would start {format_duration(r.late)} after its window "
                    f"closes (at most {format_duration(r.limit)} after {r.after})" for r in template_windows]
        deadline = [r for r in self.risks if r.step is None]
        if deadline:
            out.append(f"Deadline will not hold: it would end {format_duration(deadline[0].late)} past its "
                       f"deadline ({format_duration(deadline[0].limit)})")
        if not self.risks and self.eta is not None and self.eta.ok:
            out.append("Its time windows and deadline hold with the current queue")
        return out


CANDIDATE = "candidate:"
"""Run id of the run :func:`feasibility` plays forward (never a real run's id)."""


def feasibility(snap: Snapshot, template: WorkflowTemplate, model: DurationsModel, *,
                inputs: dict[str, Any] | None = None, priority: int = 50, samples: int = 8,
                seed: int = 0) -> Feasibility:
    """Add a run of ``template`` started at ``snap.now`` to the queue and play it forward:
    what it lacks, when it would end, which of its windows would break."""
    available = [i for i in snap.instruments if i.available]
    lacking = []
    for s in template.steps:
        if runs_locally(s):
            continue
        for cap in (s.kind, *s.reserve):
            if any(cap in i.capabilities for i in available):
                continue
            out = [f"{i.id} ({i.why_not})" for i in snap.instruments if cap in i.capabilities]
            entry = f"{cap} for step {s.id} (" + (", ".join(out) if out else "no instrument in the workcell has it") + ")"
            if entry not in lacking:
                lacking.append(entry)
    if lacking:
        return Feasibility(template.name, False, tuple(lacking))
    run_id = f"{CANDIDATE}{template.name}"
    candidate = RunState(run_id, template, "pending", priority, snap.now, dict(inputs or {}), {})
    result = forecast(Snapshot(snap.now, (*snap.runs, candidate), snap.instruments), model, samples=samples,
                      seed=seed)
    eta = result.runs.get(run_id)
    risks = tuple(w for w in result.windows if w.run_id == run_id)
    return Feasibility(template.name, True, (), eta, risks, eta.problem if eta is not None else None,
                       sum(1 for r in snap.runs if r.start_at is None))


async def check_feasibility(runtime: Any, template: WorkflowTemplate, inputs: dict[str, Any] | None = None, *,
                            priority: int = 50, model: DurationsModel | None = None,
                            samples: int = 8) -> Feasibility:
    """:func:`feasibility` of a run of ``template`` on ``runtime`` now: the state read on a
    reader thread, the play-forward on a worker thread (the loop only waits)."""
    now = runtime.clock.now()
    instruments = instrument_states(runtime.instruments())
    rows = await runtime.store.read(read_state)
    model = model or DurationsModel(runtime.workcell, clock=runtime.clock, templates=runtime.engine.templates.get)
    lookup = runtime.engine.templates.get

    def play() -> Feasibility:
        snap = snapshot_from(rows, instruments, lookup, now)
        return feasibility(snap, template, model, inputs=inputs, priority=priority, samples=samples)

    return await asyncio.to_thread(play)
