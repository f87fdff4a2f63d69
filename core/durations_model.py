"""Step durations learned from history: how long a step really takes.

Two views of the same samples (seconds from Running to Complete of one step attempt):

- per ``(capability, instrument)`` — how long this liquid handler takes to transfer;
- per ``(template, step)`` — how long step ``read`` of "ELISA Readout" takes, whatever ran it.

Each keeps the last :data:`WINDOW` samples, sorted, so its median, p10 and p90 are read in
constant time and updated in O(window) as steps finish (:meth:`DurationsModel.observe`,
driven by :class:`~core.events.StepChanged` events through :meth:`DurationsModel.subscribe`).
:meth:`DurationsModel.load` reads the recent transition log once (on worker threads) to start
from history.

Until a key has :data:`MIN_SAMPLES` samples, the declared duration is the prior: the step's
``estimated_duration``, else the duration its instrument declares in the workcell file (a
``duration_input`` parameter given on the step wins, as on the instrument), with the declared
jitter as the spread; the median moves from the prior to the data as samples arrive
(``(k·prior + n·median) / (k + n)``, ``k`` = :data:`MIN_SAMPLES`).

A forecast draws durations with :meth:`DurationsModel.sampler`. Each :class:`DurationDraw` also
says how uncertain its centre is — the standard error of the mean of the samples behind it
(the prior counting as ``k`` samples) — so a forecast can draw one error of the centre per
source of samples and play, shared by every step that draws from it. Independent draws alone
average out over a queue of steps; an estimate learned from a few samples does not: ten plates
queued on a centrifuge all wait for the same centrifuge, whose learned mean is off by the same
amount for all ten.

Qt-free; time comes from the injected clock, never from the event's wall-clock stamp.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import sqlite3
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.clock import Clock, SystemClock
from core.durations import DurationError, parse_duration
from core.events import EventBus, RunChanged, StepChanged, Subscription
from core.orders import OrderStatus
from core.states import StepStatus
from core.templates import BUILTIN_KINDS, Step, WorkflowTemplate
from core.workcell import Workcell

WINDOW = 200
"""Samples kept per key (the most recent): enough for stable p10/p90, quick to follow drift."""

HISTORY = 200_000
"""Transitions read at start (the most recent): far more than :data:`WINDOW` samples per key."""

MIN_SAMPLES = 5
"""Below this many samples the declared duration still weighs in as much as the data."""


@dataclass(frozen=True, slots=True)
class DurationStats:
    """Median, p10, p90 (seconds) and the number of samples behind them.

    ``source``: ``history`` (enough samples), ``blend`` (a few samples and the prior),
    ``declared`` (the prior only) or ``unknown`` (nothing known: all zero).
    """

    median: float
    p10: float
    p90: float
    count: int
    source: str


UNKNOWN = DurationStats(0.0, 0.0, 0.0, 0, "unknown")

_P10_P90_SIGMAS = 2 * statistics.NormalDist().inv_cdf(0.9)
"""Width of a normal distribution's p10..p90 in standard deviations (about 2.56)."""


class DurationDraw:
    """Plausible durations of one step: ``draw(rng)`` (or calling it) gives one.

    ``key`` names the source of the samples behind it (steps drawing from the same one share
    it); ``sem`` is the standard error of that source's mean (seconds): how far the centre of
    the draws may be from the truth, 0 when the duration is fixed; ``df`` its degrees of freedom
    (samples behind it less one: the error of the centre follows Student's t)."""

    __slots__ = ("df", "hi", "key", "lo", "mid", "sem", "values")

    def __init__(self, key: tuple[Any, ...], sem: float, *, df: int = 1, values: Sequence[float] = (),
                 lo: float = 0.0, mid: float = 0.0, hi: float = 0.0) -> None:
        self.key = key
        self.sem = sem
        self.df = max(1, df)
        self.values = tuple(values)
        self.lo, self.mid, self.hi = lo, mid, hi

    def __call__(self, rng: random.Random) -> float:
        return self.draw(rng)

    def draw(self, rng: random.Random) -> float:
        """From the samples themselves when there are some (bootstrap), else triangular around
        the median reaching a quarter beyond p10 and p90 (the median when there is no spread)."""
        if self.values:
            return self.values[int(rng.random() * len(self.values))]
        if self.hi <= self.lo:
            return self.mid
        return rng.triangular(self.lo - 0.25 * (self.mid - self.lo), self.hi + 0.25 * (self.hi - self.mid), self.mid)

LOCAL_KINDS = BUILTIN_KINDS | {"python"}
"""Step kinds the engine runs itself (no instrument): their time is their own, per step."""


def runs_locally(step: Step) -> bool:
    """Whether the engine runs ``step`` itself (delay, noop, prompt, a Python function)."""
    return step.kind in LOCAL_KINDS


class Samples:
    """The last ``window`` samples of one key, also kept sorted for quantiles."""

    __slots__ = ("order", "sorted", "window")

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def add(self, value: float) -> None:
        if len(self.order) >= self.window:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.order.append(value)
        bisect.insort(self.sorted, value)

    def __len__(self) -> int:
        return len(self.sorted)

    def quantile(self, q: float) -> float:
        """Linear interpolation between closest ranks (q in 0..1)."""
        s = self.sorted
        if not s:
            return 0.0
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _blend(prior: DurationStats | None, samples: Samples | None) -> DurationStats:
    n = len(samples) if samples is not None else 0
    if samples is not None and n >= MIN_SAMPLES or (prior is None and n):
        assert samples is not None
        return DurationStats(samples.quantile(0.5), samples.quantile(0.1), samples.quantile(0.9), n, "history")
    if prior is None:
        return UNKNOWN
    if not n:
        return prior
    assert samples is not None
    k = MIN_SAMPLES
    median = (k * prior.median + n * samples.quantile(0.5)) / (k + n)
    shift = median - prior.median
    return DurationStats(median, min(prior.p10 + shift, samples.quantile(0.1)),
                         max(prior.p90 + shift, samples.quantile(0.9)), n, "blend")


class DurationsModel:
    """Learned step durations with declared priors (see the module docstring)."""

    def __init__(self, workcell: Workcell | None = None, *, clock: Clock | None = None,
                 templates: Callable[[str, int | None], WorkflowTemplate] | None = None,
                 window: int = WINDOW) -> None:
        self.workcell = workcell
        self.clock = clock or SystemClock()
        self.templates = templates
        """``(name, version) -> template``, to learn the capability of a step from its run."""
        self.window = window
        self.by_capability: dict[tuple[str, str], Samples] = {}
        self.by_capability_any: dict[str, Samples] = {}
        self.by_step: dict[tuple[str, str], Samples] = {}
        self.attempts: dict[str, list[int]] = {}
        """Per capability: [attempts that ended, attempts that failed]."""
        self._running: dict[str, float] = {}
        self._runs: dict[str, tuple[str, int]] = {}
        self.observed = 0
        """Samples taken so far (history and live)."""

    def portable(self) -> DurationsModel:
        """A copy that can be sent to another process (no clock, no template look-up, no events)."""
        copy = DurationsModel(self.workcell, window=self.window)
        copy.by_capability = dict(self.by_capability)
        copy.by_capability_any = dict(self.by_capability_any)
        copy.by_step = dict(self.by_step)
        copy.attempts = {k: list(v) for k, v in self.attempts.items()}
        copy.observed = self.observed
        return copy

    # ------------------------------------------------------------------ learning

    def observe(self, seconds: float, *, capability: str | None, instrument: str | None,
                template: str | None, step: str | None) -> None:
        """One finished step attempt that took ``seconds`` (Running → Complete)."""
        if seconds < 0 or seconds != seconds:
            return
        if capability and capability not in LOCAL_KINDS:
            self.by_capability_any.setdefault(capability, Samples(self.window)).add(seconds)
            if instrument:
                self.by_capability.setdefault((capability, instrument), Samples(self.window)).add(seconds)
        if template and step:
            self.by_step.setdefault((template, step), Samples(self.window)).add(seconds)
        self.observed += 1
        if capability:
            self.attempts.setdefault(capability, [0, 0])[0] += 1

    def observe_failure(self, capability: str | None) -> None:
        """One attempt of a step of ``capability`` that ended in an error (it may be retried)."""
        if capability:
            counts = self.attempts.setdefault(capability, [0, 0])
            counts[0] += 1
            counts[1] += 1

    def failure_rate(self, capability: str) -> float:
        """Share of attempts that fail, shrunk towards 0 while there are few."""
        attempts, failed = self.attempts.get(capability, (0, 0))
        return failed / (attempts + MIN_SAMPLES)

    def subscribe(self, bus: EventBus) -> Subscription:
        """Learn from every step that completes from now on (cheap: a dict look-up and an insort)."""
        return bus.subscribe(self._on_event, (StepChanged, RunChanged))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, RunChanged):
            self._runs[event.run_id] = (event.template_name, event.template_version)
            return
        if event.status is StepStatus.RUNNING:
            self._running[event.order_id] = self.clock.now()
        elif event.order_id in self._running:
            started = self._running.pop(event.order_id)
            if event.status is StepStatus.COMPLETED:
                template, capability = self._template_of(event.run_id, event.step_id)
                self.observe(self.clock.now() - started, capability=capability, instrument=event.instrument,
                             template=template, step=event.step_id)
            elif event.status in (StepStatus.RETRYING, StepStatus.FAILED, StepStatus.UNKNOWN):
                self.observe_failure(self._template_of(event.run_id, event.step_id)[1])

    def _template_of(self, run_id: str, step_id: str) -> tuple[str | None, str | None]:
        known = self._runs.get(run_id)
        if known is None or self.templates is None:
            return (known[0] if known else None), None
        try:
            return known[0], self.templates(known[0], known[1]).step(step_id).kind
        except (KeyError, LookupError):
            return known[0], None

    async def load(self, store: Any) -> int:
        """Learn from the transition log (its last :data:`HISTORY` entries, on worker threads);
        returns the samples taken."""
        rows = await store.read(_history)
        return await asyncio.to_thread(self.load_rows, rows)  # a long log must not hold up the loop

    def load_rows(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Rows of (order, to_status, at, step, instrument, template, version), by sequence."""
        before = self.observed
        started: dict[str, float] = {}
        kinds: dict[tuple[str, int, str], str | None] = {}
        for order_id, to_status, at, step_id, instrument, template, version in rows:
            if to_status == OrderStatus.Running.value:
                started[order_id] = at
                continue
            if order_id not in started:
                continue
            key = (template, version, step_id)
            if key not in kinds:
                try:
                    kinds[key] = self.templates(template, version).step(step_id).kind if self.templates else None
                except (KeyError, LookupError):
                    kinds[key] = None
            began = started.pop(order_id)
            if to_status == OrderStatus.Complete.value:
                self.observe(at - began, capability=kinds[key], instrument=instrument, template=template,
                             step=step_id)
            elif to_status == OrderStatus.Error.value:
                self.observe_failure(kinds[key])
        return self.observed - before

    # ------------------------------------------------------------------ reading

    def declared(self, capability: str, instrument: str | None = None, *, step: Step | None = None,
                 inputs: dict[str, Any] | None = None) -> DurationStats | None:
        """The prior: the step's own estimate, else the workcell's duration ± jitter (the slowest
        offering instrument when none is named), None when nothing is declared."""
        if step is not None and step.estimated_duration is not None:
            d = step.estimated_duration
            return DurationStats(d, d, d, 0, "declared")
        if self.workcell is None:
            return None
        offers = [i for i in self.workcell.instruments if capability in i.capabilities
                  and (instrument is None or i.id == instrument)]
        if not offers:
            return None
        best: DurationStats | None = None
        for inst in offers:
            spec = inst.capabilities[capability]
            nominal = spec.duration
            for name in spec.duration_input or ():
                given = (step.parameters.get(name) if step is not None else None)
                if given is None and step is not None and inputs is not None:
                    source = step.input_mapping.get(name, "")
                    if source.startswith("input_data."):
                        given = inputs.get(source.removeprefix("input_data."))
                if given is not None:
                    try:
                        nominal = parse_duration(given)
                    except DurationError:
                        continue
                    break
            spread = spec.jitter.spread(nominal)
            stats = DurationStats(nominal, max(0.0, nominal - 0.8 * spread), nominal + 0.8 * spread, 0, "declared")
            if best is None or stats.median > best.median:
                best = stats
        return best

    def capability(self, capability: str, instrument: str | None = None) -> DurationStats:
        """Stats of a capability on one instrument (or on any), the declared prior blended in."""
        samples = (self.by_capability.get((capability, instrument)) if instrument
                   else self.by_capability_any.get(capability))
        return _blend(self.declared(capability, instrument), samples)

    def step(self, template: str, step: str, *, prior: DurationStats | None = None) -> DurationStats:
        """Stats of one step of a template, ``prior`` blended in until there are enough samples."""
        return _blend(prior, self.by_step.get((template, step)))

    def estimate(self, template: str, step: Step, instrument: str | None = None,
                 inputs: dict[str, Any] | None = None) -> DurationStats:
        """The best estimate for a step: its own history, then its capability's (on the
        instrument, then on any), each over the declared prior."""
        if runs_locally(step):
            if step.kind == "delay":
                try:
                    d = parse_duration(step.parameters.get("seconds", step.parameters.get("duration", 0)))
                except DurationError:
                    d = 0.0
                return DurationStats(d, d, d, 0, "declared")
            d = step.estimated_duration or 0.0  # a Python step: its own history, else its estimate
            return _blend(DurationStats(d, d, d, 0, "declared"), self.by_step.get((template, step.id)))
        prior = self.declared(step.kind, instrument, step=step, inputs=inputs) or \
            self.declared(step.kind, None, step=step, inputs=inputs)
        own = self.by_step.get((template, step.id))
        if own is not None and len(own) >= MIN_SAMPLES:
            return _blend(prior, own)
        cap = self.by_capability.get((step.kind, instrument)) if instrument else None
        if cap is None or len(cap) < MIN_SAMPLES:
            cap = self.by_capability_any.get(step.kind)
        if step.parameters or step.input_mapping:  # parameters may change the duration: own samples first
            return _blend(prior, own if own is not None and len(own) else cap)
        return _blend(prior, cap if cap is not None and len(cap) >= len(own or ()) else own)

    def sampler(self, template: str, step: Step, instrument: str | None = None,
                inputs: dict[str, Any] | None = None) -> DurationDraw:
        """Plausible durations of ``step``: its own samples when there are enough (bootstrap),
        else triangular over the estimate's p10..p90 around its median; with the standard error
        of the mean behind it (the prior weighs as :data:`MIN_SAMPLES` samples, as in the blend)."""
        own = self.by_step.get((template, step.id))
        if own is not None and len(own) >= MIN_SAMPLES:
            values = own.sorted
            return DurationDraw(("step", template, step.id), statistics.stdev(values) / math.sqrt(len(values)),
                                df=len(values) - 1, values=values)
        stats = self.estimate(template, step, instrument, inputs)
        lo, mid, hi = stats.p10, stats.median, stats.p90
        weight = {"history": stats.count, "blend": stats.count + MIN_SAMPLES}.get(stats.source, MIN_SAMPLES)
        sem = (hi - lo) / _P10_P90_SIGMAS / math.sqrt(weight) if hi > lo else 0.0
        return DurationDraw(("estimate", template, step.id, instrument, lo, mid, hi), sem, df=weight - 1,
                            lo=lo, mid=mid, hi=hi)


def _history(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT t.order_id, t.to_status, t.at, s.step_id, s.instrument, r.template_name, r.template_version "
        "FROM transitions t JOIN step_runs s ON s.order_id = t.order_id JOIN runs r ON r.run_id = s.run_id "
        "WHERE t.seq > (SELECT coalesce(max(seq), 0) FROM transitions) - ? AND t.to_status IN (?, ?, ?, ?) "
        "ORDER BY t.seq",
        (HISTORY, OrderStatus.Running.value, OrderStatus.Complete.value, OrderStatus.Error.value,
         OrderStatus.Canceled.value)).fetchall()
