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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.api import RuntimeApi
from core.durations_model import DurationsModel, runs_locally
from core.events import InstrumentStatusChanged, RunChanged, StepChanged, Subscription
from core.orders import ModuleStatus
from core.states import StepStatus
from core.templates import WorkflowTemplate

log = logging.getLogger(__name__)

SAMPLES = 16
"""Plays forward per forecast: enough for a p10-p90 band, cheap enough for 500 runs in < 1 s."""

HORIZON = 8 * 3600.0
"""Runs that schedules will start within this many seconds join the forecast's queue."""

SCHEDULED_PREFIX = "scheduled:"
"""Run ids of runs a schedule will start: ``scheduled:<schedule id>@<epoch seconds>``."""

DEBOUNCE = 0.5
"""Seconds of quiet after the last change before the forecast is made again."""

_DONE = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.CANCELLED})
_OPERATOR = frozenset({StepStatus.FAILED, StepStatus.UNKNOWN})


# ============================================================================ state


@dataclass(frozen=True, slots=True)
class StepState:
    id: str
    status: StepStatus
    started: float | None = None
    instrument: str | None = None
    next_attempt_at: float | None = None


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
class RunEta:
    """When a run is forecast to be done (epoch seconds), or why it cannot be."""

    run_id: str
    template: str
    p10: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    problem: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    """Median end of each step still to do (epoch seconds)."""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def scheduled(self) -> bool:
        """A run a schedule will start within the horizon (not started yet)."""
        return self.run_id.startswith(SCHEDULED_PREFIX)


@dataclass(frozen=True, slots=True)
class ForecastResult:
    at: float
    """The (clock) time the state was taken."""
    runs: dict[str, RunEta]
    samples: int
    seconds: float
    """Wall-clock seconds the forecast took."""


# ============================================================================ reading the state


def read_state(conn: sqlite3.Connection) -> list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """(run row, its step rows) of every unfinished run, oldest first (one reader-thread call)."""
    runs = conn.execute(
        "SELECT run_id, template_name, template_version, status, priority, created, input_data FROM runs "
        "WHERE status IN ('pending', 'running', 'paused', 'recovering') ORDER BY created").fetchall()
    steps: dict[str, list[tuple[Any, ...]]] = {r[0]: [] for r in runs}
    if runs:
        for row in conn.execute(
                "SELECT s.run_id, s.step_id, s.status, s.started, s.instrument, s.next_attempt_at FROM step_runs s "
                "JOIN runs r ON r.run_id = s.run_id WHERE r.status IN ('pending', 'running', 'paused', 'recovering')"):
            if row[0] in steps:
                steps[row[0]].append(row)
    return [(r, steps[r[0]]) for r in runs]


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
        steps = {s[1]: StepState(s[1], StepStatus(s[2]), s[3], s[4], s[5]) for s in step_rows}
        try:
            inputs = json.loads(r[6]) if r[6] else {}
        except json.JSONDecodeError:
            inputs = {}
        runs.append(RunState(r[0], template, r[3], r[4] if r[4] is not None else 50, r[5], inputs, steps))
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


# ============================================================================ playing forward


class _Node:
    __slots__ = ("run", "step", "capability", "reserve", "allowed", "children", "deps", "key", "samplers",
                 "fixed", "ready_at", "running", "running_on", "elapsed", "fail_p", "retry")

    def __init__(self) -> None:
        self.run = 0
        self.step = ""
        self.capability: str | None = None
        self.key: tuple[int, float, int] = (0, 0.0, 0)
        self.children: list[int] = []
        self.deps = 0
        self.reserve: tuple[str, ...] = ()
        self.allowed: frozenset[str] | None = None
        self.samplers: dict[str | None, Callable[[random.Random], float]] = {}
        self.fixed: float | None = None
        self.ready_at = 0.0
        self.fail_p = 0.0
        self.retry: Any = None
        self.running = False
        self.running_on: str | None = None
        self.elapsed = 0.0


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
            node.key = (-run.priority, run.created, len(nodes))
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
    return nodes, plannable, problems


def _play(nodes: list[_Node], snap: Snapshot, rng: random.Random) -> list[float]:
    """One play-forward: the end time of every node."""
    now = snap.now
    free = {x.id: x.capacity for x in snap.instruments if x.available}
    by_cap: dict[str, list[str]] = {}
    for x in snap.instruments:
        if x.available:
            for c in x.capabilities:
                by_cap.setdefault(c, []).append(x.id)
    deps = [n.deps for n in nodes]
    ends = [0.0] * len(nodes)
    events: list[tuple[float, int, tuple[str, ...]]] = []
    ready: dict[str, list[tuple[Any, int]]] = {}

    def duration(n: _Node, inst: str | None, fresh: bool = True) -> float:
        if n.fixed is not None:
            return n.fixed
        sampler = n.samplers.get(inst) or next(iter(n.samplers.values()))
        total = 0.0
        attempt = 1
        if fresh and n.fail_p:  # failed attempts (cut short part-way) and the backoff before the next
            while attempt < n.retry.max_attempts and rng.random() < n.fail_p:
                total += max(0.0, sampler(rng)) * (0.1 + 0.8 * rng.random()) + n.retry.delay(attempt, rng.random())
                attempt += 1
        return total + max(0.0, sampler(rng))

    def make_ready(i: int, t: float) -> None:
        n = nodes[i]
        if n.capability is None:
            heapq.heappush(events, (max(t, n.ready_at) + duration(n, None), i, ()))
        elif n.ready_at > t:
            heapq.heappush(events, (n.ready_at, -1 - i, ()))  # wakes the step at its next attempt
        else:
            heapq.heappush(ready.setdefault(n.capability, []), (n.key, i))
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
                    heapq.heappush(events, (t + duration(n, main), i, held_now))
        if not events:
            break
        t = events[0][0]
        while events and events[0][0] == t:  # everything that ends now, then one dispatch
            _, i, held = heapq.heappop(events)
            if i < 0:  # a retry's next attempt came
                n = nodes[-1 - i]
                heapq.heappush(ready.setdefault(n.capability or "", []), (n.key, -1 - i))
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


def forecast(snap: Snapshot, model: DurationsModel, *, samples: int = SAMPLES, seed: int = 0) -> ForecastResult:
    """Play ``snap`` forward ``samples`` times; an ETA (or the reason there is none) per run."""
    began = time.perf_counter()
    nodes, runs, problems = _plan(snap, model)
    rng = random.Random(seed)
    ends_by_run: list[list[float]] = [[] for _ in runs]
    step_ends: list[list[float]] = [[] for _ in nodes]
    for _ in range(max(1, samples)):
        ends = _play(nodes, snap, rng)
        last = [snap.now] * len(runs)
        for i, n in enumerate(nodes):
            if ends[i] > last[n.run]:
                last[n.run] = ends[i]
            step_ends[i].append(ends[i])
        for r, value in enumerate(last):
            ends_by_run[r].append(value)
    per_run_steps: list[dict[str, float]] = [{} for _ in runs]
    for i, n in enumerate(nodes):
        per_run_steps[n.run][n.step] = _quantile(step_ends[i], 0.5)
    out: dict[str, RunEta] = {}
    for r, run in enumerate(runs):
        v = ends_by_run[r]
        out[run.run_id] = RunEta(run.run_id, run.template.name, _quantile(v, 0.1), _quantile(v, 0.5),
                                 _quantile(v, 0.9), None, per_run_steps[r])
    for run in snap.runs:
        if run.run_id in problems:
            out[run.run_id] = RunEta(run.run_id, run.template.name, problem=problems[run.run_id])
    return ForecastResult(snap.now, out, max(1, samples), time.perf_counter() - began)


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
        """(Re)start the debounce timer; a forecast in progress is followed by one more."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="forecast")

    async def _run(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a failed forecast leaves the last one standing
            log.exception("forecast failed")
        if self._again:
            self._again = False
            self._task = None
            self._schedule()

    async def refresh(self) -> ForecastResult:
        """Make a forecast now: the state (and the schedules' runs within the horizon) read on
        worker threads, played forward on a worker thread or process."""
        now = self.runtime.clock.now()
        instruments = self.runtime.instruments()
        rows = await self.runtime.store.read(read_state)
        templates = self.runtime.engine.templates.get
        scheduler = self.runtime.schedules
        self.seed += 1

        def gather() -> tuple[list[tuple[Any, float]], dict[tuple[str, int | None], WorkflowTemplate]]:
            due = scheduler.occurrences(now, now + self.horizon) if scheduler is not None else []
            pairs = [(s, t) for s, t, _ in due]
            found: dict[tuple[str, int | None], WorkflowTemplate] = {}
            for key in {(r[1], r[2]) for r, _ in rows} | {(s.template, None) for s, _ in pairs}:
                try:
                    found[key] = templates(*key)
                except Exception:  # noqa: BLE001 - left out here; snapshot_from says which run lacks it
                    continue
            return pairs, found

        due, found = await asyncio.to_thread(gather)
        states = instrument_states(instruments)
        if self._pool is not None:
            result = await asyncio.wrap_future(self._pool.submit(
                forecast_rows, rows, states, found, now, due, self.model.portable(), samples=self.samples,
                seed=self.seed))
        else:
            result = await asyncio.to_thread(forecast_rows, rows, states, found, now, due, self.model,
                                             samples=self.samples, seed=self.seed)
        self.result = result
        self.made += 1
        for callback in list(self._listeners):
            try:
                callback(result)
            except Exception:  # one listener must not stop the others
                log.exception("forecast listener %r failed", callback)
        return result
