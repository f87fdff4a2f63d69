"""Dashboard KPIs and time series, kept up to date from the event stream.

:class:`Metrics` subscribes to the :class:`~core.events.EventBus` and updates counters in O(1)
per event (``OrderCreated``, ``OrderStatusChanged``, ``InstrumentStatusChanged``). It never
scans the orders: at start it can be seeded once from the store with :func:`initial_counts`
(one ``GROUP BY`` query plus the ids of today's failures), after that the events are enough::

    metrics = Metrics(clock)
    metrics.seed(store.read_sync(lambda c: initial_counts(c, metrics.day_start)))
    metrics.add_instruments(workcell_instrument_ids)
    metrics.subscribe(bus)
    ...
    metrics.refresh()                       # on the chart timer: roll buckets to clock.now()
    kpis = metrics.dashboard()              # DashboardMetrics (seed 003 fields)
    plot.setData(metrics.times, metrics.throughput)   # numpy views, no copy

Two populations are counted separately. **Jobs** are top-level orders (workflow runs and
stand-alone orders: no ``parentIdentifier``); the :class:`DashboardMetrics` and the
``throughput``/``failures``/``queue_depth``/``running`` series count jobs. **Steps** are
orders with a parent (one step execution of a run); ``step_throughput`` and ``step_duration``
count steps, and ``dashboard(steps=True)`` gives their KPIs.

"Today" is the calendar day of the injected clock in ``tz`` (local time by default); today's
counters reset at midnight. Execution time is measured with the clock from the order's
transition to Running to its completion (falling back to the store's start/end times for
orders that started before the metrics did).

Time series live in fixed-size ring buffers of ``capacity`` buckets of ``bucket_seconds``
each. The last bucket is the one in progress. Each series property is a numpy *view* of the
last ``len(metrics)`` buckets in time order (a double-length buffer written twice makes every
window contiguous), so a chart can draw it without a copy; take ``.copy()`` to keep one.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

import numpy as np

from core.clock import Clock
from core.events import (
    Event,
    EventBus,
    InstrumentStatusChanged,
    OrderCreated,
    OrderStatusChanged,
    Subscription,
)
from core.orders import ModuleStatus, OrderStatus

__all__ = ["DashboardMetrics", "InitialCounts", "Metrics", "initial_counts"]

PENDING = frozenset({OrderStatus.Created, OrderStatus.Validated, OrderStatus.Scheduled})
"""Statuses counted as waiting (pending jobs, queue depth)."""
FAILED = frozenset({OrderStatus.Error, OrderStatus.Invalid})
"""Statuses counted as failed."""

# Columns of core.store.ORDER_ROW_COLUMNS used here.
_PARENT, _STARTED, _ENDED = 1, 9, 10


@dataclass(frozen=True)
class DashboardMetrics:
    """The dashboard's KPIs (field names of seed 003's ``DashboardMetrics``).

    Robots are the workcell's instruments; jobs are orders of one population (jobs or steps,
    see the module docstring). ``*_today`` count the current calendar day.
    """

    total_robots: int = 0
    online_robots: int = 0
    """Instruments not Offline (Ready, Busy or Error)."""
    offline_robots: int = 0
    total_jobs_today: int = 0
    """Created today."""
    completed_jobs_today: int = 0
    """Reached Complete today."""
    failed_jobs_today: int = 0
    """In Error or Invalid now, having failed today (an order retried to success no longer counts)."""
    pending_jobs: int = 0
    """Waiting now: Created, Validated or Scheduled (any day)."""
    running_jobs: int = 0
    """Running now."""
    average_execution_time: float = 0.0
    """Mean seconds from Running to Complete of today's completions (0 if none)."""
    success_rate: float = 0.0
    """Percent (0-100): completed / (completed + failed) today; 0 if neither."""
    cancelled_jobs_today: int = 0
    """Reached Canceled today."""
    busy_robots: int = 0
    """Instruments Busy now."""


@dataclass(frozen=True)
class InitialCounts:
    """Counts to seed :class:`Metrics` with, for one population (see :func:`initial_counts`)."""

    by_status: Mapping[OrderStatus, int] = field(default_factory=dict)
    created_today: int = 0
    completed_today: int = 0
    cancelled_today: int = 0
    failed_ids_today: frozenset[str] = frozenset()
    execution_seconds_today: float = 0.0
    executions_today: int = 0


def initial_counts(conn: sqlite3.Connection, day_start: float) -> tuple[InitialCounts, InitialCounts]:
    """(jobs, steps) counts from the store's ``orders`` table, for :meth:`Metrics.seed`.

    One ``GROUP BY`` over the orders (kind x status) and one indexed look-up of the orders
    that failed since ``day_start`` (epoch seconds; use :attr:`Metrics.day_start`). Run it
    through ``store.read``/``read_sync``.
    """
    rows = conn.execute(
        "SELECT parent_id IS NOT NULL, status, count(*), "
        "       coalesce(sum(created >= :d), 0), coalesce(sum(ended >= :d), 0), "
        "       coalesce(sum(CASE WHEN ended >= :d AND started IS NOT NULL "
        "                         THEN ended - started END), 0), "
        "       coalesce(sum(ended >= :d AND started IS NOT NULL), 0) "
        "FROM orders GROUP BY 1, 2", {"d": day_start}).fetchall()
    failed = conn.execute(
        f"SELECT parent_id IS NOT NULL, id FROM orders WHERE status IN "
        f"({', '.join(str(int(s)) for s in FAILED)}) AND ended >= ?", (day_start,)).fetchall()
    out = []
    for is_step in (0, 1):
        by_status: dict[OrderStatus, int] = {}
        created = completed = cancelled = executions = 0
        seconds = 0.0
        for step, status, count, created_today, ended_today, exec_sum, exec_n in rows:
            if step != is_step:
                continue
            st = OrderStatus(status)
            by_status[st] = count
            created += created_today
            if st is OrderStatus.Complete:
                completed, seconds, executions = ended_today, float(exec_sum), exec_n
            elif st is OrderStatus.Canceled:
                cancelled = ended_today
        out.append(InitialCounts(by_status, created, completed, cancelled,
                                 frozenset(i for step, i in failed if step == is_step),
                                 seconds, executions))
    return out[0], out[1]


class _Tally:
    """Live counts of one population (jobs or steps)."""

    def __init__(self) -> None:
        self.by_status = [0] * (max(int(s) for s in OrderStatus) + 1)
        self.reset_today()

    def reset_today(self) -> None:
        self.created = self.completed = self.cancelled = self.executions = 0
        self.seconds = 0.0
        self.failed: set[str] = set()

    def seed(self, c: InitialCounts) -> None:
        self.by_status = [0] * len(self.by_status)
        for status, count in c.by_status.items():
            self.by_status[int(status)] = count
        self.created, self.completed, self.cancelled = c.created_today, c.completed_today, c.cancelled_today
        self.failed = set(c.failed_ids_today)
        self.seconds, self.executions = c.execution_seconds_today, c.executions_today

    def count(self, statuses: Iterable[OrderStatus]) -> int:
        return sum(self.by_status[int(s)] for s in statuses)


class _Instrument:
    __slots__ = ("busy_acc", "busy_since", "status")

    def __init__(self, status: ModuleStatus) -> None:
        self.status = status
        self.busy_since: float | None = None
        self.busy_acc = 0.0


class Metrics:
    """KPIs and ring-buffered time series, updated incrementally from events.

    Args:
        clock: Source of "now" for bucket times, execution times and "today".
        bucket_seconds: Width of one time-series bucket (default one minute).
        capacity: Number of buckets kept (default 240: four hours of minutes).
        tz: Time zone of "today" (default: the machine's local time).
    """

    def __init__(self, clock: Clock, *, bucket_seconds: float = 60.0, capacity: int = 240,
                 tz: tzinfo | None = None) -> None:
        if bucket_seconds <= 0 or not math.isfinite(bucket_seconds):
            raise ValueError(f"bucket_seconds must be a positive number, got {bucket_seconds!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self.clock = clock
        self.width = float(bucket_seconds)
        self.capacity = capacity
        self.tz = tz
        self.version = 0
        """Grows on every change; a view can skip redrawing when it has not moved."""
        self.drifted = False
        """An order changed status that the counts did not hold (another process wrote it to
        the store): read the counts from the store again (:func:`initial_counts`, :meth:`seed`)."""
        self.jobs = _Tally()
        self.steps = _Tally()
        self._instruments: dict[str, _Instrument] = {}
        self._started: dict[str, float] = {}
        self._subs: list[Subscription] = []
        # ring buffers: every column is 2 * capacity long and written at i and i + capacity
        self._cols: dict[str, np.ndarray] = {}
        self._head = 0
        self._len = 0
        self._bucket: int | None = None
        self._step_sum = 0.0
        self._step_n = 0
        for name in ("times", "throughput", "failures", "queue_depth", "running",
                     "step_throughput", "step_duration"):
            self._cols[name] = np.full(2 * capacity, np.nan)
        self._set_day(clock.now())
        self._roll(clock.now())

    # ------------------------------------------------------------------ wiring

    def subscribe(self, bus: EventBus) -> None:
        """Start following ``bus``. Call once; :meth:`close` stops."""
        self._subs.append(bus.subscribe(self.handle, (OrderCreated, OrderStatusChanged,
                                                      InstrumentStatusChanged)))

    def close(self) -> None:
        """Stop following the bus."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()

    def seed(self, counts: tuple[InitialCounts, InitialCounts]) -> None:
        """Start from counts taken from the store (``(jobs, steps)`` of :func:`initial_counts`)."""
        self.jobs.seed(counts[0])
        self.steps.seed(counts[1])
        self.drifted = False
        self._set_live()
        self.version += 1

    def add_instruments(self, instrument_ids: Iterable[str],
                        status: ModuleStatus = ModuleStatus.Offline) -> None:
        """Make instruments known before their first status event (e.g. from the workcell)."""
        for iid in instrument_ids:
            if iid not in self._instruments:
                self._add_instrument(iid, status)
        self.version += 1

    @property
    def day_start(self) -> float:
        """Epoch seconds of the start of "today"."""
        return self._day_start

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> None:
        """Apply one event (the bus calls this; tests may call it directly)."""
        now = self.clock.now()
        self._roll(now)
        if isinstance(event, OrderStatusChanged):
            self._on_status(event, now)
        elif isinstance(event, OrderCreated):
            tally = self.steps if event.parent_id else self.jobs
            tally.by_status[int(event.status)] += 1
            tally.created += 1
            if event.status in FAILED:
                tally.failed.add(event.order_id)
            self._set_live()
        elif isinstance(event, InstrumentStatusChanged):
            self._on_instrument(event, now)
        else:
            return
        self.version += 1

    def _on_status(self, e: OrderStatusChanged, now: float) -> None:
        is_step = bool(e.row[_PARENT]) if len(e.row) > _PARENT else False
        tally = self.steps if is_step else self.jobs
        if e.from_status is not None:
            before = int(e.from_status)
            if tally.by_status[before] > 0:
                tally.by_status[before] -= 1
            else:  # an order these counts never saw (made by another process): never below 0
                self.drifted = True
        tally.by_status[int(e.to_status)] += 1
        to = e.to_status
        if e.from_status in FAILED:
            tally.failed.discard(e.order_id)
        if to is OrderStatus.Running:
            self._started.setdefault(e.order_id, now)
        elif to is OrderStatus.Complete:
            seconds = self._execution_seconds(e, now)
            tally.completed += 1
            if seconds is not None:
                tally.seconds += seconds
                tally.executions += 1
            per_minute = 60.0 / self.width
            if is_step:
                self._add_last("step_throughput", per_minute)
                if seconds is not None:
                    self._step_sum += seconds
                    self._step_n += 1
                    self._set_last("step_duration", self._step_sum / self._step_n)
            else:
                self._add_last("throughput", per_minute)
        elif to in FAILED:
            tally.failed.add(e.order_id)
            if not is_step:
                self._add_last("failures", 60.0 / self.width)
        elif to is OrderStatus.Canceled:
            tally.cancelled += 1
        if to.is_terminal or to in FAILED:
            self._started.pop(e.order_id, None)
        self._set_live()

    def _execution_seconds(self, e: OrderStatusChanged, now: float) -> float | None:
        start = self._started.get(e.order_id)
        if start is not None:
            return max(0.0, now - start)
        if len(e.row) > _ENDED and e.row[_STARTED] is not None and e.row[_ENDED] is not None:
            return max(0.0, float(e.row[_ENDED]) - float(e.row[_STARTED]))
        return None

    def _on_instrument(self, e: InstrumentStatusChanged, now: float) -> None:
        inst = self._instruments.get(e.instrument_id) or self._add_instrument(e.instrument_id, e.status)
        busy = e.status is ModuleStatus.Busy
        if inst.busy_since is not None and not busy:
            inst.busy_acc += now - max(inst.busy_since, self._bucket_start)
            inst.busy_since = None
        elif inst.busy_since is None and busy:
            inst.busy_since = now
        inst.status = e.status
        self._set_utilisation(e.instrument_id, inst, now)

    def _add_instrument(self, iid: str, status: ModuleStatus) -> _Instrument:
        inst = _Instrument(status)
        self._instruments[iid] = inst
        self._cols[f"util:{iid}"] = np.full(2 * self.capacity, np.nan)
        if status is ModuleStatus.Busy:
            inst.busy_since = self.clock.now()
        return inst

    # ------------------------------------------------------------------ reading

    def refresh(self) -> None:
        """Roll buckets up to the clock's now and update the bucket in progress.

        Cheap (O(instruments)); call it from the chart's frame timer before reading series.
        """
        now = self.clock.now()
        self._roll(now)
        for iid, inst in self._instruments.items():
            self._set_utilisation(iid, inst, now)
        self.version += 1

    def dashboard(self, *, steps: bool = False) -> DashboardMetrics:
        """The KPIs now, for jobs (default) or for steps."""
        self._roll(self.clock.now())
        t = self.steps if steps else self.jobs
        offline = sum(1 for i in self._instruments.values() if i.status is ModuleStatus.Offline)
        busy = sum(1 for i in self._instruments.values() if i.status is ModuleStatus.Busy)
        failed = len(t.failed)
        decided = t.completed + failed
        return DashboardMetrics(
            total_robots=len(self._instruments), online_robots=len(self._instruments) - offline,
            offline_robots=offline, total_jobs_today=t.created, completed_jobs_today=t.completed,
            failed_jobs_today=failed, pending_jobs=t.count(PENDING),
            running_jobs=t.by_status[int(OrderStatus.Running)],
            average_execution_time=t.seconds / t.executions if t.executions else 0.0,
            success_rate=100.0 * t.completed / decided if decided else 0.0,
            cancelled_jobs_today=t.cancelled, busy_robots=busy)

    def status_counts(self, *, steps: bool = False) -> dict[OrderStatus, int]:
        """Orders per status now (jobs by default), without zero entries."""
        t = self.steps if steps else self.jobs
        return {s: t.by_status[int(s)] for s in OrderStatus if t.by_status[int(s)]}

    def __len__(self) -> int:
        """Number of buckets held (at most ``capacity``)."""
        return self._len

    def series(self, name: str) -> np.ndarray:
        """The view of one column: ``times``, ``throughput``, ``failures``, ``queue_depth``,
        ``running``, ``step_throughput``, ``step_duration`` or ``util:<instrument id>``."""
        col = self._cols.get(name)
        if col is None:
            raise KeyError(f"no series {name!r} (series: {', '.join(self._cols)})")
        end = self._head + self.capacity
        return col[end - self._len:end]

    @property
    def times(self) -> np.ndarray:
        """Bucket start times, epoch seconds (the x axis of every series)."""
        return self.series("times")

    @property
    def throughput(self) -> np.ndarray:
        """Jobs completed per minute in each bucket."""
        return self.series("throughput")

    @property
    def failures(self) -> np.ndarray:
        """Jobs failed (Error/Invalid) per minute in each bucket."""
        return self.series("failures")

    @property
    def queue_depth(self) -> np.ndarray:
        """Pending jobs at the end of each bucket (now, for the bucket in progress)."""
        return self.series("queue_depth")

    @property
    def running(self) -> np.ndarray:
        """Running jobs at the end of each bucket."""
        return self.series("running")

    @property
    def step_throughput(self) -> np.ndarray:
        """Steps completed per minute in each bucket."""
        return self.series("step_throughput")

    @property
    def step_duration(self) -> np.ndarray:
        """Mean execution seconds of the steps completed in each bucket (NaN: none)."""
        return self.series("step_duration")

    def utilisation(self, instrument_id: str) -> np.ndarray:
        """Fraction (0..1) of each bucket the instrument was Busy (NaN before it was known)."""
        return self.series(f"util:{instrument_id}")

    @property
    def instruments(self) -> list[str]:
        """Instrument ids known, in the order they became known."""
        return list(self._instruments)

    # ------------------------------------------------------------------ buckets

    @property
    def _bucket_start(self) -> float:
        return (self._bucket or 0) * self.width

    def _set_day(self, now: float) -> None:
        local = datetime.fromtimestamp(now, self.tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.combine(start.date() + timedelta(days=1), start.timetz())
        self._day_start, self._day_end = start.timestamp(), end.timestamp()

    def _roll(self, now: float) -> None:
        if now >= self._day_end:
            self._set_day(now)
            self.jobs.reset_today()
            self.steps.reset_today()
        bucket = math.floor(now / self.width)
        if self._bucket is not None and bucket <= self._bucket:
            return
        if self._bucket is not None:
            # close the bucket in progress, then fill every bucket that passed without events
            end = (self._bucket + 1) * self.width
            for iid, inst in self._instruments.items():
                self._set_utilisation(iid, inst, end)
                inst.busy_acc = 0.0
            first = max(self._bucket + 1, bucket - self.capacity + 1)
        else:
            first = bucket
        for b in range(first, bucket + 1):
            self._bucket = b
            self._append(b)

    def _append(self, bucket: int) -> None:
        i = self._head
        cap = self.capacity
        pending = self.jobs.count(PENDING)
        running = self.jobs.by_status[int(OrderStatus.Running)]
        row = {"times": bucket * self.width, "throughput": 0.0, "failures": 0.0,
               "queue_depth": pending, "running": running, "step_throughput": 0.0,
               "step_duration": np.nan}
        for name, col in self._cols.items():
            if name.startswith("util:"):
                inst = self._instruments[name[5:]]
                value = 1.0 if inst.busy_since is not None else 0.0
            else:
                value = row[name]
            col[i] = col[i + cap] = value
        self._head = (i + 1) % cap
        self._len = min(self._len + 1, cap)
        self._step_sum, self._step_n = 0.0, 0

    def _set_last(self, name: str, value: float) -> None:
        i = (self._head - 1) % self.capacity
        col = self._cols[name]
        col[i] = col[i + self.capacity] = value

    def _add_last(self, name: str, delta: float) -> None:
        i = (self._head - 1) % self.capacity
        col = self._cols[name]
        col[i] += delta
        col[i + self.capacity] = col[i]

    def _set_live(self) -> None:
        self._set_last("queue_depth", self.jobs.count(PENDING))
        self._set_last("running", self.jobs.by_status[int(OrderStatus.Running)])

    def _set_utilisation(self, iid: str, inst: _Instrument, until: float) -> None:
        start = self._bucket_start
        busy = inst.busy_acc
        if inst.busy_since is not None:
            busy += max(0.0, until - max(inst.busy_since, start))
        elapsed = min(self.width, until - start)
        self._set_last(f"util:{iid}", min(1.0, busy / elapsed) if elapsed > 0 else
                       (1.0 if inst.busy_since is not None else 0.0))

    def __repr__(self) -> str:
        d = self.dashboard()
        return (f"Metrics(buckets={self._len}, pending={d.pending_jobs}, running={d.running_jobs}, "
                f"completed_today={d.completed_jobs_today})")
